"""Random and mutated frames fed to a running core: never an exception, and the ring still works after."""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from pycorosync.engine.totem.api import SendFrame
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.loopback import LoopbackNet

MS = 1_000_000
S = 1000 * MS
NODES = [1, 2, 3]


def _net() -> LoopbackNet:
    cfg = TotemConfig.defaults_for(token=200, node_count=3, token_coefficient=0)
    net = LoopbackNet(cfg, NODES)
    assert net.run_until(net.operational, 5 * S)
    return net


@functools.cache
def corpus() -> tuple[bytes, ...]:
    """Real frames of every type, captured from a ring that forms, carries traffic, loses and regains a node."""
    seen: list[bytes] = []
    cfg = TotemConfig.defaults_for(token=200, node_count=3, token_coefficient=0)
    net = LoopbackNet(cfg, NODES, start=False, ring_seqs={n: 0x100 for n in NODES})  # an older ring's frames
    original = net.apply

    def capture(src: int, actions: object) -> None:
        acts = list(actions)  # type: ignore[call-overload]
        seen.extend(a.data for a in acts if isinstance(a, SendFrame))
        original(src, acts)

    net.apply = capture  # type: ignore[method-assign]
    for n in NODES:
        net.start(n)
    net.run_until(net.operational, 5 * S)
    for i in range(30):
        net.submit(NODES[i % 3], bytes([i]) * (i * 211), 2 + i % 2)
    net.run_for(1 * S)
    net.apply(3, net.cores[3].leave(net.now_ns))
    net.run_for(2 * S)
    return tuple(dict.fromkeys(seen))  # unique, in order


def _still_works(net: LoopbackNet) -> None:
    """After the garbage: one ring of all nodes again, and a fresh message reaches everyone."""
    assert net.run_until(net.operational, net.now_ns + 60 * S), [
        (n, c.state, c.members, c.ring_id) for n, c in net.cores.items()]
    counts = {n: len(net.delivered[n]) for n in NODES}
    net.submit(1, b"still alive")
    assert net.run_until(lambda: all(net.delivered[n][counts[n]:] and net.delivered[n][-1].payload == b"still alive"
                                     for n in NODES), net.now_ns + 30 * S)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("byte"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("extend"), st.integers(1, 64), st.integers(0, 255)),
)


def mutate(frame: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(frame)
    for op, pos, val in ops:
        if not data:
            break
        i = pos % len(data)
        if op == "flip":
            data[i] ^= val
        elif op == "byte":
            data[i] = val
        elif op == "cut":
            del data[i:]
        else:
            data.extend(bytes([val]) * pos)
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # shrinking whole-ring runs takes minutes
@given(st.lists(st.tuples(st.integers(0, 10_000), st.lists(mutation, min_size=1, max_size=4)), min_size=1,
                max_size=12), st.sampled_from(NODES))
def test_mutated_real_frames_never_raise_and_the_ring_recovers(picks: list[tuple[int, list]], target: int) -> None:
    frames = corpus()
    net = _net()
    for idx, ops in picks:
        bad = mutate(frames[idx % len(frames)], ops)
        net.apply(target, net.cores[target].on_frame(net.now_ns, bad))
        net.step()
    _still_works(net)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # shrinking whole-ring runs takes minutes
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20), st.sampled_from(NODES))
def test_random_bytes_never_raise_and_the_ring_keeps_working(blobs: list[bytes], target: int) -> None:
    net = _net()
    for blob in blobs:
        for prefix in (b"", b"\xc5\x01", b"\xc5\x01\x01\x00"):
            net.apply(target, net.cores[target].on_frame(net.now_ns, prefix + blob))
    net.step()
    _still_works(net)


def test_replayed_frames_of_every_type_are_harmless() -> None:
    net = _net()
    frames = corpus()
    for n in NODES:
        for f in frames:
            net.apply(n, net.cores[n].on_frame(net.now_ns, f))
    _still_works(net)


def test_malformed_frames_are_counted() -> None:
    net = _net()
    core = net.cores[2]
    before = core.stats["rx_msg_dropped"]
    for junk in (b"", b"\xc5", b"\xc5\x01\x01" + bytes(40), b"\x00" * 64, b"\xc5\x02" + bytes(60)):
        assert core.on_frame(net.now_ns, junk) == []
    assert core.stats["rx_msg_dropped"] == before + 5
    assert core.stats["rx_malformed"] >= 5
