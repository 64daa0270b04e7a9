"""A peer that scribbles over the shared ring cannot crash the other side or make it touch other memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pycorosync.ipc import ring_kernels as rk
from pycorosync.ipc.plainring import PlainRing
from pycorosync.ipc.ring import Ring, RingCorruptError

CAP = 256
GUARD = 256
FIELDS = [rk.OFF_HEAD, rk.OFF_RHEAD, rk.OFF_CACHED_TAIL, rk.OFF_TAIL, rk.OFF_WTAIL, rk.OFF_CACHED_HEAD]

scribble = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(FIELDS), st.integers(-(2**63), 2**63 - 1)),
    # positions next to the int64 limit: the next advance overflows (the kernels wrap, plain Python must too)
    st.tuples(st.just("field"), st.sampled_from(FIELDS), st.integers(2**63 - 4 * CAP, 2**63 - 1)),
    st.tuples(st.just("small"), st.sampled_from(FIELDS), st.integers(-3 * CAP, 3 * CAP)),
    st.tuples(st.just("data"), st.integers(0, CAP - 4), st.integers(0, 2**32 - 1)),
)
op = st.one_of(
    st.tuples(st.just("push"), st.integers(0, CAP // 2 - 8), st.just(0)),
    st.tuples(st.just("pop"), st.just(0), st.just(0)),
    st.tuples(st.just("drain"), st.just(0), st.just(0)),
    st.tuples(st.just("peek"), st.just(0), st.just(0)),
    st.tuples(st.just("claim"), st.integers(0, CAP // 2 - 8), st.just(0)),
)


@pytest.mark.parametrize("kind", [Ring, PlainRing], ids=["kernels", "plain"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(scribble, op), max_size=60))
def test_scribbled_ring_reports_corruption_and_stays_in_bounds(kind: type, steps: list[tuple[str, int, int]]) -> None:
    buf = np.full(GUARD + Ring.layout_bytes(CAP) + GUARD, 0xAB, np.uint8)
    ring = kind.create(buf, CAP, offset=GUARD)
    base = GUARD + rk.RING_HEADER_BYTES
    for step, a, b in steps:
        if step in ("field", "small"):
            buf[GUARD + a : GUARD + a + 8] = np.frombuffer(int(b).to_bytes(8, "little", signed=True), np.uint8)
            continue
        if step == "data":
            buf[base + a : base + a + 4] = np.frombuffer(int(b).to_bytes(4, "little"), np.uint8)
            continue
        try:
            if step == "push":
                ring.push(7, bytes([0x11]) * a)
            elif step == "pop":
                ring.pop()
            elif step == "drain":
                ring.drain(lambda t, v: v.tobytes())
            elif step == "peek":
                if ring.peek() is not None:
                    ring.release()
            elif step == "claim" and (view := ring.claim(a)) is not None:
                view[:] = bytes([0x22]) * a
                ring.commit(8)
        except RingCorruptError:
            pass  # the owner drops such a ring; what matters is that nothing else was touched
        assert (buf[:GUARD] == 0xAB).all(), f"wrote before the ring after {step}"
        assert (buf[GUARD + Ring.layout_bytes(CAP) :] == 0xAB).all(), f"wrote after the ring after {step}"
