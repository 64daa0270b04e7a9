"""The Totem core driven by a lossless in-process pump: forming, ordering, packing, fragments, hold, leave."""

from __future__ import annotations

import pytest

from pycorosync.engine.totem.api import ConfigType, Guarantee, MessageTooBig, QueueFull
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.loopback import LoopbackNet

MS = 1_000_000
S = 1000 * MS


def config(nodes: int = 3, **kw: object) -> TotemConfig:
    return TotemConfig.defaults_for(token=200, node_count=nodes, token_coefficient=0, **kw)


def formed(nodes: list[int], **kw: object) -> LoopbackNet:
    net = LoopbackNet(config(len(nodes), **kw), nodes)
    assert net.run_until(net.operational, 5 * S), [(c.state, c.members) for c in net.cores.values()]
    return net


def payloads(net: LoopbackNet, node: int) -> list[tuple[int, int, bytes]]:
    return [(d.sender, d.msg_id, d.payload) for d in net.delivered[node]]


def wait_delivered(net: LoopbackNet, nodes: list[int], count: int, within_ns: int = 10 * S) -> None:
    ok = net.run_until(lambda: all(len(net.delivered[n]) >= count for n in nodes), net.now_ns + within_ns)
    assert ok, {n: len(net.delivered[n]) for n in nodes}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_nodes_started_together_form_one_ring_with_transitional_then_regular_change(n: int) -> None:
    nodes = list(range(1, n + 1))
    net = formed(nodes)
    ring = net.cores[1].ring_id
    assert ring.rep == 1 and ring.seq > 0
    for node in nodes:
        kinds = [c.type for c in net.configs[node]]
        assert kinds == [ConfigType.TRANSITIONAL, ConfigType.REGULAR]
        regular = net.configs[node][-1]
        assert regular.members == tuple(nodes) and regular.ring_id == ring
        assert regular.joined == tuple(x for x in nodes if x != node)


def test_every_member_delivers_every_message_in_the_same_total_order() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    for i in range(300):
        net.submit(nodes[i % 3], b"m%d" % i)
    wait_delivered(net, nodes, 300)
    first = payloads(net, 1)
    assert len(first) == 300 and len(set(first)) == 300
    assert payloads(net, 2) == first and payloads(net, 3) == first
    for sender in nodes:  # per-sender FIFO
        ids = [m for s, m, _p in first if s == sender]
        assert ids == sorted(ids)
    assert all(d.ring_id == net.cores[1].ring_id for d in net.delivered[1])
