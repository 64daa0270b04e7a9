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


def test_small_messages_are_packed_many_per_frame() -> None:
    nodes = [1, 2]
    net = formed(nodes)
    before = net.cores[1].stats["mcast_tx"]
    for i in range(200):
        net.submit(1, b"x" * 40 + b"%d" % i)
    wait_delivered(net, nodes, 200)
    frames = net.cores[1].stats["mcast_tx"] - before
    assert frames <= 200 * 56 // 1300 + 2, f"{frames} frames for 200 small messages"
    assert [p for _s, _m, p in payloads(net, 2)] == [b"x" * 40 + b"%d" % i for i in range(200)]


@pytest.mark.parametrize("size", [1, 1411, 1412, 1413, 5000, 70_000, 1 << 20, 16 * 1024 * 1024])
def test_messages_of_any_size_up_to_the_maximum_are_delivered_whole(size: int) -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    big = bytes(range(256)) * (size // 256) + bytes(size % 256)
    net.submit(2, big)
    net.submit(3, b"after")
    wait_delivered(net, nodes, 2, within_ns=600 * S)
    for n in nodes:
        got = payloads(net, n)
        assert len(got) == 2
        assert got[0][2] == big or got[1][2] == big
        assert {p for _s, _m, p in got} == {big, b"after"}


def test_fragments_of_concurrent_big_messages_from_several_senders_do_not_mix() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    sent = {n: [bytes([n, i]) * 9000 for i in range(3)] for n in nodes}
    for i in range(3):
        for n in nodes:
            net.submit(n, sent[n][i])
    wait_delivered(net, nodes, 9, within_ns=60 * S)
    order = payloads(net, 1)
    for n in nodes:
        assert payloads(net, n) == order
        assert [p for s, _m, p in order if s == n] == sent[n]


def test_too_big_and_queue_full_are_refused_without_queueing_anything() -> None:
    net = formed([1, 2], send_queue_frames=4, max_message_bytes=100_000)
    core = net.cores[1]
    with pytest.raises(MessageTooBig):
        core.submit(net.now_ns, bytes(100_001), Guarantee.AGREED)
    net.apply(1, core.submit(net.now_ns, bytes(3000), Guarantee.AGREED))
    fill = core.queue_fill()
    assert 0 < fill <= 1
    with pytest.raises(QueueFull):
        for _ in range(10):
            net.apply(1, core.submit(net.now_ns, bytes(1000), Guarantee.AGREED))
    queued = core.sendq.queued_bytes
    with pytest.raises(QueueFull):
        core.submit(net.now_ns, bytes(3000), Guarantee.AGREED)
    assert core.sendq.queued_bytes == queued
    assert core.msg_queue_avail >= 0
    wait_delivered(net, [1, 2], 1)
    net.run_until(lambda: len(core.sendq) == 0, net.now_ns + 10 * S)
    assert core.queue_fill() == 0


def test_an_oversized_message_is_taken_when_the_queue_is_empty() -> None:
    net = formed([1, 2], send_queue_frames=4)
    net.submit(1, bytes(100_000))
    wait_delivered(net, [1, 2], 1)
    assert len(net.delivered[2][0].payload) == 100_000


def test_an_idle_ring_sends_about_one_token_per_hold_period() -> None:
    net = formed([1, 2, 3])
    net.run_for(5 * S)  # let the ring notice it is idle
    cfg = net.config
    sent = net.frames_sent
    net.run_for(10 * S)
    frames = net.frames_sent - sent
    rotations = 10_000 / cfg.hold
    # per rotation: 3 token hops, plus one merge detect per rotation at most
    assert frames <= rotations * 4 + 8, f"{frames} frames in 10 s idle (hold {cfg.hold} ms)"
    assert frames >= rotations  # but the token does keep turning
    assert net.operational()


def test_a_submit_on_an_idle_ring_is_delivered_quickly_through_token_hold_cancel() -> None:
    net = formed([1, 2, 3])
    net.run_for(5 * S)
    t0 = net.now_ns
    net.submit(3, b"wake up")
    wait_delivered(net, [1, 2, 3], 1)
    assert net.now_ns - t0 < net.config.hold * MS // 2


def test_the_representative_holding_the_idle_token_sends_its_own_message_at_once() -> None:
    net = formed([1, 2, 3])
    rep = net.cores[1]
    assert net.run_until(lambda: rep._held_token is not None, net.now_ns + 5 * S), \
        "an idle ring's token rests at the representative"
    net.submit(1, b"from the holder")
    # delivered by the sender in the submit call itself (no frame has travelled yet), sent before the token
    assert payloads(net, 1) == [(1, 1, b"from the holder")]
    assert rep._held_token is None
    wait_delivered(net, [1, 2, 3], 1)
    assert payloads(net, 2) == payloads(net, 3) == payloads(net, 1)


def _rep_visits_until_hold(net: LoopbackNet, within_ns: int) -> int:
    rep = net.cores[1]
    start = rep.stats["orf_token_rx"]
    assert net.run_until(lambda: rep._held_token is not None, net.now_ns + within_ns), "the token never rested"
    return rep.stats["orf_token_rx"] - start


@pytest.mark.parametrize("idle_ms", [0, 2])
def test_a_lightly_loaded_ring_rests_once_idle_for_seqno_unchanged_ms(idle_ms: int) -> None:
    nodes = [1, 2, 3]
    net = formed(nodes, seqno_unchanged_ms=idle_ms)
    rotation_ns = 3 * net.latency_ns
    net.submit(2, b"one message", Guarantee.SAFE)
    wait_delivered(net, nodes, 1)
    visits = _rep_visits_until_hold(net, 5 * S)
    const = net.config.seqno_unchanged_const
    if idle_ms == 0:  # corosync: only after more than seqno_unchanged_const idle rotations
        assert visits >= const
    else:  # about idle_ms worth of rotations, a few more for the safe point to go round, far fewer than const
        assert visits <= idle_ms * MS // rotation_ns + 4 < const, visits
    # resting changed nothing for anyone: every member delivered the SAFE message before it
    assert all(len(net.delivered[n]) == 1 for n in nodes)


def test_an_early_rest_waits_until_every_member_delivered_its_safe_messages() -> None:
    # hops of 2 ms: seqno_unchanged_ms (1) has passed at the first idle visit, so only the other conditions
    # (the safe point gone all the way round) keep the token turning
    nodes = [1, 2, 3]
    net = LoopbackNet(config(3, seqno_unchanged_ms=1), nodes, latency_ns=2 * MS)
    assert net.run_until(net.operational, 5 * S)
    rep = net.cores[1]
    assert net.run_until(lambda: rep._held_token is not None, net.now_ns + 5 * S)  # formed, idle, resting
    net.submit(2, b"safe", Guarantee.SAFE)
    assert net.run_until(lambda: rep._held_token is None, net.now_ns + S)  # node 2's hold cancel
    while rep._held_token is None:
        assert net.step()
    assert all(len(net.delivered[n]) == 1 for n in nodes), {n: len(net.delivered[n]) for n in nodes}


def test_the_ring_does_not_rest_early_while_a_member_lacks_a_frame() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes, seqno_unchanged_ms=1)
    blocked = [True]
    net.drop = lambda src, dest, to, data: blocked[0] and to == 3 and data[2] == 1
    net.submit(2, b"node 3 misses this")
    wait_delivered(net, [1, 2], 1)
    # the early rest waits for every member to hold every frame: only the rotation count applies
    visits = _rep_visits_until_hold(net, 10 * S)
    assert visits >= net.config.seqno_unchanged_const
    blocked[0] = False
    wait_delivered(net, nodes, 1)


def test_a_message_soon_after_an_early_rest_gets_the_token_through_hold_cancel() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes, seqno_unchanged_ms=2)
    net.submit(1, b"first")
    wait_delivered(net, nodes, 1)
    _rep_visits_until_hold(net, 5 * S)
    sent = net.cores[3].stats["token_hold_cancel_tx"]
    t0 = net.now_ns
    net.submit(3, b"right after the ring came to rest")
    wait_delivered(net, nodes, 2)
    assert net.cores[3].stats["token_hold_cancel_tx"] == sent + 1
    assert net.now_ns - t0 < 10 * 3 * net.latency_ns, "waited for the hold timer instead of cancelling it"


def test_a_safe_message_of_the_token_holder_still_waits_for_every_member() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    assert net.run_until(lambda: net.cores[1]._held_token is not None, net.now_ns + 5 * S)
    lost = []

    def drop(src: int, dest: int | None, to: int, data: bytes) -> bool:
        if to == 3 and data[2] == 1 and not lost:  # node 3 loses the SAFE frame once
            lost.append(data)
            return True
        return False

    net.drop = drop
    net.submit(1, b"safe from the holder", Guarantee.SAFE)
    assert net.delivered[1] == [], "a SAFE message is not delivered on the holder's own visit"
    while not net.delivered[1]:
        assert net.step()
        if net.delivered[1]:
            assert net.cores[3].my_aru >= net.cores[1].my_aru, "delivered before node 3 held it"
    wait_delivered(net, nodes, 1)


def test_a_revisit_of_the_held_token_never_claims_a_frame_a_lagging_member_lacks() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    blocked = [True]
    # every copy of every multicast to node 3 is lost for now: it lags behind the others
    net.drop = lambda src, dest, to, data: blocked[0] and to == 3 and data[2] == 1
    net.submit(2, b"node 3 misses this")
    wait_delivered(net, [1, 2], 1)
    rep, lagging = net.cores[1], net.cores[3]
    # the ring goes idle (the retransmit list alone does not keep the token turning) and rests at the rep
    assert net.run_until(lambda: rep._held_token is not None, net.now_ns + 10 * S)
    assert lagging.my_aru < rep.my_aru
    net.submit(1, b"sent on the re-visit", Guarantee.SAFE)
    assert rep.safe_seq <= lagging.my_aru, "the safe point passed a frame node 3 does not hold"
    assert rep.store.get(lagging.my_aru + 1) is not None, "a frame node 3 still needs was freed"
    blocked[0] = False
    wait_delivered(net, nodes, 2)
    assert payloads(net, 1) == payloads(net, 2) == payloads(net, 3)


def test_safe_messages_are_delivered_in_total_order_with_agreed_ones() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    for i in range(60):
        net.submit(nodes[i % 3], b"s%d" % i, Guarantee.SAFE if i % 2 else Guarantee.AGREED)
    wait_delivered(net, nodes, 60)
    order = payloads(net, 1)
    assert payloads(net, 2) == order and payloads(net, 3) == order
    assert {d.guarantee for d in net.delivered[1]} == {Guarantee.SAFE, Guarantee.AGREED}


def test_a_safe_message_waits_until_every_member_holds_it() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    held_back = []

    def drop(src: int, dest: int | None, to: int, data: bytes) -> bool:
        if to == 3 and data[2] == 1 and not held_back:  # the first mcast frame to node 3 is lost once
            held_back.append(data)
            return True
        return False

    net.drop = drop
    net.submit(1, b"safe", Guarantee.SAFE)
    # node 1 must not deliver before node 3 got the frame (via retransmission)
    while not net.delivered[1]:
        assert net.step()
        if net.delivered[1]:
            assert net.cores[3].my_aru >= 1
    wait_delivered(net, nodes, 1)


def test_a_clean_leave_reconfigures_the_others_without_waiting_for_token_timeout() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    t0 = net.now_ns
    net.apply(2, net.cores[2].leave(net.now_ns))
    assert net.run_until(lambda: net.operational([1, 3]), net.now_ns + 10 * S)
    assert net.now_ns - t0 < net.config.token * MS
    for n in (1, 3):
        trans, reg = net.configs[n][-2:]
        assert trans.type == ConfigType.TRANSITIONAL and trans.members == (1, 3) and trans.left == (2,)
        assert reg.type == ConfigType.REGULAR and reg.members == (1, 3) and reg.joined == ()
    assert not any("Failed to receive the leave" in e.text for e in net.logs[1])


def test_a_crashed_node_is_removed_after_token_timeout_and_consensus() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    net.stop(3)
    t0 = net.now_ns
    assert net.run_until(lambda: net.operational([1, 2]), net.now_ns + 20 * S)
    assert net.now_ns - t0 < (net.config.token + net.config.consensus + 500) * MS
    texts = [e.text for e in net.logs[1]]
    assert any(t.startswith("A processor failed, forming new configuration: token timed out") for t in texts)
    assert any("Failed to receive the leave message. failed: 3" in t for t in texts)


def test_a_late_node_joins_the_running_ring_and_members_see_it_joined() -> None:
    cfg = config(3)
    net = LoopbackNet(cfg, [1, 2, 3], start=False)
    net.start(1)
    net.start(2)
    assert net.run_until(lambda: net.operational([1, 2]), 5 * S)
    for i in range(5):
        net.submit(1, b"before %d" % i)
    wait_delivered(net, [1, 2], 5)
    net.start(3)
    assert net.run_until(lambda: net.operational([1, 2, 3]), net.now_ns + 10 * S)
    reg = net.configs[1][-1]
    assert reg.members == (1, 2, 3) and reg.joined == (3,)
    net.submit(3, b"hello from 3")
    wait_delivered(net, [3], 1)
    wait_delivered(net, [1], 6)
    assert net.delivered[3][-1].payload == b"hello from 3"
    assert net.delivered[1][-1].payload == b"hello from 3"
    assert len(net.delivered[3]) == 1  # the old ring's messages are not replayed to a newcomer


def test_messages_in_flight_at_a_failure_are_delivered_by_all_survivors_before_the_new_ring() -> None:
    nodes = [1, 2, 3, 4]
    net = formed(nodes)
    for i in range(400):
        net.submit(nodes[i % 4], b"m%d" % i + bytes(300))
    net.run_for(3 * MS)  # some traffic is in flight...
    net.stop(4)  # ...when node 4 dies
    assert net.run_until(lambda: net.operational([1, 2, 3]), net.now_ns + 30 * S)
    net.run_for(2 * S)
    seqs = {n: payloads(net, n) for n in (1, 2, 3)}
    assert seqs[1] == seqs[2] == seqs[3]
    mine = {p for s, _m, p in seqs[1] if s != 4}
    assert len(mine) == 300  # every survivor's message got through


def test_a_restarted_node_with_the_same_id_rejoins_with_a_higher_ring_seq() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    seq_before = net.cores[1].ring_id.seq
    net.stop(2)
    net.add_node(2, ring_seq=net.cores[2].max_ring_seq, incarnation=1)
    assert net.run_until(lambda: net.operational(nodes), net.now_ns + 30 * S)
    assert net.cores[1].ring_id.seq > seq_before
    trans = [c for c in net.configs[1] if c.type == ConfigType.TRANSITIONAL][-1]
    assert 2 not in trans.members  # the old incarnation left...
    assert 2 in net.configs[1][-1].joined  # ...and the new one joined


def test_partitioned_halves_merge_back_into_one_ring() -> None:
    nodes = [1, 2, 3, 4]
    net = formed(nodes)
    side = {1: 0, 2: 0, 3: 1, 4: 1}
    net.drop = lambda src, dest, to, data: side[src] != side[to]
    assert net.run_until(lambda: net.operational([1, 2]) and net.operational([3, 4]), net.now_ns + 30 * S)
    net.submit(1, b"left side")
    net.submit(3, b"right side")
    net.drop = None
    assert net.run_until(lambda: net.operational(nodes), net.now_ns + 30 * S)
    net.submit(4, b"together")
    wait_delivered(net, nodes, 1)
    assert net.run_until(lambda: all(net.delivered[n][-1].payload == b"together" for n in nodes),
                         net.now_ns + 5 * S)
    assert net.configs[1][-1].joined == (3, 4)


def test_a_lost_token_hop_is_resent_without_a_membership_change() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    ring = net.cores[1].ring_id
    dropped: list[bytes] = []

    def drop(src: int, dest: int | None, to: int, data: bytes) -> bool:
        if dest is not None and data[2] == 0 and not dropped:  # one ORF token hop
            dropped.append(data)
            return True
        return False

    net.drop = drop
    net.submit(2, b"during token loss")
    wait_delivered(net, nodes, 1)
    assert dropped and all(net.cores[n].ring_id == ring for n in nodes)
    assert sum(net.cores[n].stats["token_retx"] for n in nodes) >= 1
    assert sum(net.cores[n].stats["operational_token_lost"] for n in nodes) == 0


def test_lost_multicasts_are_recovered_through_the_retransmit_list() -> None:
    nodes = [1, 2, 3]
    net = formed(nodes)
    lost: set[int] = set()

    def drop(src: int, dest: int | None, to: int, data: bytes) -> bool:
        if dest is None and data[2] == 1 and to == 3 and len(lost) < 5 and hash(data) % 3 == 0:
            lost.add(hash(data))
            return True
        return False

    net.drop = drop
    for i in range(100):
        net.submit(1 + i % 2, b"r%d" % i + bytes(1000))
    wait_delivered(net, nodes, 100)
    assert lost
    assert payloads(net, 3) == payloads(net, 1)
    assert sum(net.cores[n].stats["mcast_retx"] for n in nodes) >= len(lost)
    assert any(e.text.startswith("Retransmit List:") for e in net.logs[3])


def test_a_throttled_member_slows_the_whole_ring_and_loses_nothing() -> None:
    nodes = [1, 2, 3]
    sizes = {}
    for throttled in (False, True):
        net = formed(nodes)
        net.cores[3].throttled = throttled  # node 3's services are behind on deliveries
        start = net.now_ns
        for i in range(400):
            net.submit(1, b"y" * 1000 + b"%d" % i)
        wait_delivered(net, nodes, 400, within_ns=60 * S)
        sizes[throttled] = net.now_ns - start
        assert [p for _s, _m, p in payloads(net, 3)] == [b"y" * 1000 + b"%d" % i for i in range(400)]
        assert all(c.state == "OPERATIONAL" and c.members == (1, 2, 3) for c in net.cores.values())
    assert sizes[True] > 3 * sizes[False], sizes  # every rotation waited at node 3


def test_a_submitted_run_queues_what_single_submits_queue_and_stops_where_they_would_raise() -> None:
    sizes = [10, 2000, 64, 1000, 1000, 1000, 1000, 1000, 5, 100_001, 7]
    runs, singles = formed([1, 2], send_queue_frames=4, max_message_bytes=100_000), \
        formed([1, 2], send_queue_frames=4, max_message_bytes=100_000)
    items = [(bytes([i]) * size, i % 4) for i, size in enumerate(sizes)]
    core = runs.cores[1]
    taken_total = 0
    while True:  # as the runtime does: a run, then the record it stopped at alone
        taken, actions = core.submit_run(runs.now_ns, items[taken_total:])
        runs.apply(1, actions)
        taken_total += taken
        if taken_total == len(items):
            break
        try:
            runs.apply(1, core.submit(runs.now_ns, *items[taken_total]))
            taken_total += 1
        except (QueueFull, MessageTooBig) as exc:
            refused_run = (taken_total, type(exc))
            break
    single = singles.cores[1]
    for i, (payload, g) in enumerate(items):
        try:
            singles.apply(1, single.submit(singles.now_ns, payload, g))
        except (QueueFull, MessageTooBig) as exc:
            assert (i, type(exc)) == refused_run
            break
    assert refused_run[1] is QueueFull, "the queue of 4 frames fills before the too-big message"
    assert core.sendq.queued_bytes == single.sendq.queued_bytes and core.sendq.next_msg_id == single.sendq.next_msg_id
    for net in (runs, singles):
        wait_delivered(net, [1, 2], refused_run[0])
    assert payloads(runs, 2) == payloads(singles, 2)
    assert [d.guarantee for d in runs.delivered[2]] == [g for _p, g in items[:refused_run[0]]]


def test_a_submitted_run_stops_at_a_message_too_big_and_takes_nothing_after_leaving() -> None:
    net = formed([1, 2], max_message_bytes=1000)
    core = net.cores[1]
    taken, actions = core.submit_run(net.now_ns, [(b"a", 1), (bytes(1001), 1), (b"c", 1)])
    net.apply(1, actions)
    assert taken == 1
    with pytest.raises(MessageTooBig):
        core.submit(net.now_ns, bytes(1001), 1)
    wait_delivered(net, [1, 2], 1)
    net.apply(1, core.leave(net.now_ns))
    assert core.submit_run(net.now_ns, [(b"late", 1)]) == (0, [])
