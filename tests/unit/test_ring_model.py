"""The numba ring and the plain-Python reference agree on every result and every byte of shared memory."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from pycorosync.ipc.plainring import PlainRing
from pycorosync.ipc.ring import RecordTooLargeError, Ring, RingCounters

CAPACITIES = [64, 128, 256, 1024, 4096]


def _payload(seq: int, n: int) -> bytes:
    return bytes((seq * 31 + i) & 0xFF for i in range(n))


def _sizes(cap: int) -> st.SearchStrategy[int]:
    big = cap // 2 - 8
    return st.one_of(st.integers(0, 24), st.integers(0, big), st.sampled_from([big, big + 1, 255, 256, 257]))


@st.composite
def scenario(draw: Any) -> tuple[int, list[tuple[Any, ...]]]:
    cap = draw(st.sampled_from(CAPACITIES))
    size = _sizes(cap)
    op = st.one_of(
        st.tuples(st.just("push"), size, st.integers(0, 2**32 - 1)),
        st.tuples(st.just("push_many"), st.lists(size, max_size=6)),
        st.tuples(st.just("claim"), size, st.integers(0, 300)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("peek_release")),
        st.tuples(st.just("drain"), st.integers(1, 8)),
        st.tuples(st.just("pop_batch"), st.integers(1, 8)),
        st.tuples(st.just("arm")),
        st.tuples(st.just("disarm")),
        st.tuples(st.just("needs_wake")),
        st.tuples(st.just("arm_producer"), size),
        st.tuples(st.just("producer_needs_wake")),
    )
    return cap, draw(st.lists(op, min_size=1, max_size=80))


def _apply(ring: Any, op: tuple[Any, ...], seq: int) -> object:
    kind = op[0]
    try:
        if kind == "push":
            return ring.push(op[2], _payload(seq, op[1]))
        if kind == "push_many":
            return ring.push_many([(seq + i, _payload(seq + i, n)) for i, n in enumerate(op[1])])
        if kind == "claim":
            view = ring.claim(op[1])
            if view is None:
                return None
            view[:] = _payload(seq, op[1])
            used = min(op[2], op[1])
            ring.commit(seq & 0xFFFF, used)
            return used
        if kind == "pop":
            return ring.pop()
        if kind == "peek_release":
            item = ring.peek()
            if item is None:
                return None
            out = (item[0], item[1].tobytes())
            ring.release()
            return out
        if kind == "drain":
            seen: list[tuple[int, bytes]] = []
            ring.drain(lambda t, v: seen.append((t, v.tobytes())), op[1])
            return seen
        if kind == "pop_batch":
            return ring.pop_batch(op[1])
        if kind == "arm_producer":
            return ring.arm_producer(op[1])
        return getattr(ring, kind)()
    except RecordTooLargeError:
        return "too-large"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_numba_ring_matches_the_reference_byte_for_byte(case: tuple[int, list[tuple[Any, ...]]]) -> None:
    cap, ops = case
    fast_buf = np.zeros(Ring.layout_bytes(cap), np.uint8)
    ref_buf = bytearray(Ring.layout_bytes(cap))
    fast = Ring.create(fast_buf, cap)
    ref = PlainRing.create(ref_buf, cap)
    for step, op in enumerate(ops):
        got, want = _apply(fast, op, step), _apply(ref, op, step)
        assert got == want, f"step {step} {op}: numba {got!r}, reference {want!r}"
        assert fast_buf.tobytes() == bytes(ref_buf), f"shared memory differs after step {step} {op}"
        assert (fast.used_bytes(), fast.free_bytes(), fast.empty()) == (ref.used_bytes(), ref.free_bytes(), ref.empty())
    assert fast.counters() == ref.counters()


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CAPACITIES), st.lists(st.integers(0, 600), min_size=1, max_size=200))
def test_every_record_pushed_is_popped_once_in_order(cap: int, sizes: list[int]) -> None:
    ring = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    expected: list[tuple[int, bytes]] = []
    got: list[tuple[int, bytes]] = []
    for seq, n in enumerate(sizes):
        n = min(n, ring.max_payload)
        payload = _payload(seq, n)
        while not ring.push(seq, payload):
            item = ring.pop()
            assert item is not None, "a push was refused on an empty ring"
            got.append(item)
        expected.append((seq, payload))
    got.extend(ring.pop_batch(len(sizes) + 1))
    assert got == expected
    assert ring.counters() == RingCounters(len(sizes), len(sizes), ring.counters().full, 0)
