"""The simulator's machinery, exercised with the stand-in sequencer core (correct on a fault-free network)."""

from __future__ import annotations

import json

import pytest

from tests.sim import __main__ as cli
from tests.sim.cluster import Simulator
from tests.sim.faults import FAULT_KINDS, parse_faults
from tests.sim.network import MS, Network
from tests.sim.runner import RunPlan, run
from tests.sim.standin import SequencerCore, standin_factory
from tests.sim.workload import WorkloadParams, decode_payload, encode_payload, keys_in_frame


def _trace(result):  # type: ignore[no-untyped-def]
    return [(inst, [(t, k, repr(d)) for t, k, d in log.events]) for inst, log in sorted(result.record.logs.items())]


def test_payload_round_trips_and_detects_corruption() -> None:
    for size in (1, 24, 25, 1000, 3 * 1024 * 1024):
        p = encode_payload(3, 1, 77, 2, size)
        assert len(p) == max(size, 24)
        d = decode_payload(p)
        assert d.error is None and d.key == (3, 1, 77) and d.size == len(p)
        if len(p) > 24:
            assert decode_payload(p[:-1] + bytes([p[-1] ^ 1])).error is not None
            assert decode_payload(p[:-1]).error is not None
    assert keys_in_frame(b"xx" + encode_payload(1, 0, 5, 3, 40) + encode_payload(2, 1, 6, 2, 30)) == [
        (1, 0, 5), (2, 1, 6)]


def test_same_seed_replays_the_same_run_and_another_seed_does_not() -> None:
    plan = RunPlan(seed=11, nodes=4, faults=parse_faults("dup,reorder,delay"), core="standin", duration_ms=800)
    a, b = run(plan), run(plan)
    c = run(RunPlan(seed=12, nodes=4, faults=plan.faults, core="standin", duration_ms=800))
    assert _trace(a) == _trace(b)
    assert _trace(a) != _trace(c)


@pytest.mark.parametrize("nodes", [1, 2, 3, 5, 16])
def test_standin_core_keeps_every_guarantee_on_a_fault_free_network(nodes: int) -> None:
    result = run(RunPlan(seed=nodes, nodes=nodes, core="standin", duration_ms=500))
    assert result.ok, result.report()
    st = result.record.stats
    assert st.accepted > 50 and st.delivered >= st.accepted * nodes


def test_standin_core_keeps_every_guarantee_with_duplication_reordering_and_delay() -> None:
    dup = reordered = 0
    for seed in range(3):
        result = run(RunPlan(seed=seed, nodes=4, faults=parse_faults("dup,reorder,delay"), core="standin"))
        assert result.ok, result.report()
        dup += result.record.net_stats.duplicated
        reordered += result.record.net_stats.reordered
    assert dup and reordered


def test_loss_breaks_the_standin_and_the_failure_says_how_to_replay() -> None:
    result = run(RunPlan(seed=1, nodes=4, faults=parse_faults("loss"), core="standin"))
    assert not result.ok
    text = result.report()
    assert "replay with: python -m tests.sim --seed 1 --nodes 4 --faults loss --core standin" in text
    assert "last events of" in text


@pytest.mark.parametrize(("bug", "prop"), [("swap", "agreement"), ("skip", "agreement"), ("dup", "integrity"),
                                            ("corrupt", "integrity")])
def test_a_planted_core_bug_is_reported(bug: str, prop: str) -> None:
    result = run(RunPlan(seed=3, nodes=3, core="standin", duration_ms=300), bug=bug)
    assert prop in {v.prop for v in result.violations}, result.report()


def test_flow_control_pushback_is_retried_and_loses_no_accepted_message() -> None:
    wl = WorkloadParams(burst_prob=0.5, burst_min=50, burst_max=100, safe_prob=0.0)
    result = run(RunPlan(seed=5, nodes=3, core="standin", duration_ms=300, workload=wl), queue_limit=8)
    st = result.record.stats
    assert st.queue_full > 100
    assert result.ok, result.report()


def test_too_big_messages_are_counted_and_never_delivered() -> None:
    wl = WorkloadParams(big_prob=0.3, safe_prob=0.0)
    result = run(RunPlan(seed=6, nodes=2, core="standin", duration_ms=300, workload=wl), max_message=60_000)
    assert result.record.stats.too_big > 0
    assert result.ok, result.report()


def test_restarted_node_gets_a_new_incarnation_and_its_persisted_ring_seq() -> None:
    made: list[tuple[int, int, int]] = []
    inner = standin_factory()

    def factory(node_id, nodelist, seed, ring_seq, incarnation):  # type: ignore[no-untyped-def]
        made.append((node_id, ring_seq, incarnation))
        return inner(node_id, nodelist, seed, ring_seq, incarnation)

    sim = Simulator(factory, [1, 2], seed=1)
    sim.start(1)
    sim.start(2)
    sim.run_until(100 * MS)
    sim.crash(2)
    sim.run_until(200 * MS)
    sim.start(2)
    assert made == [(1, 0, 0), (2, 0, 0), (2, 4, 1)]
    assert set(sim.logs) == {(1, 0), (2, 0), (2, 1)}
    assert sim.logs[(2, 0)].events[-1][1] == "X"


def test_timers_fire_at_the_core_deadline_in_virtual_time() -> None:
    sim = Simulator(standin_factory(), [1], seed=1)
    sim.start(1)
    sim.run_until(1000 * MS)
    core = sim.nodes[1].core
    assert isinstance(core, SequencerCore)
    assert core.ticks == 20  # every 50 ms for 1 s


class _BusyCore(SequencerCore):
    def next_deadline_ns(self) -> int | None:
        return 0


class _RaisingCore(SequencerCore):
    def on_timer(self, now_ns: int) -> list[object]:
        raise RuntimeError("boom")


def test_a_busy_looping_core_exhausts_the_event_budget_instead_of_hanging() -> None:
    sim = Simulator(lambda n, nl, s, r, i: _BusyCore(n, nl), [1], seed=1, max_events=10_000)
    sim.start(1)
    sim.run_until(1000 * MS)
    assert sim.errors and "event budget" in sim.errors[0]


def test_a_core_that_raises_is_reported_not_fatal() -> None:
    sim = Simulator(lambda n, nl, s, r, i: _RaisingCore(n, nl), [1], seed=1)
    sim.start(1)
    sim.run_until(1000 * MS)
    assert sim.errors and "boom" in sim.errors[0] and "on_timer" in sim.errors[0]


# network ------------------------------------------------------------------------------------
class _Wire:
    def __init__(self) -> None:
        self.got: list[tuple[int, int, int, bytes]] = []

    def __call__(self, t: int, dst: int, src: int, data: bytes) -> None:
        self.got.append((t, dst, src, data))


def _net(**kw):  # type: ignore[no-untyped-def]
    import random

    wire = _Wire()
    return Network(random.Random(1), [1, 2, 3], wire, **kw), wire


def test_multicast_is_one_copy_per_receiver_sender_included() -> None:
    net, wire = _net()
    net.send(0, 1, None, b"m")
    assert sorted(d for _t, d, _s, _x in wire.got) == [1, 2, 3]


def test_partition_and_asymmetric_block_and_receive_only() -> None:
    net, wire = _net()
    net.partition([[1], [2, 3]])
    net.send(0, 1, None, b"m")
    assert sorted(d for _t, d, _s, _x in wire.got) == [1]
    net.heal()
    net.link(1, 2).blocked = True
    wire.got.clear()
    net.send(0, 1, 2, b"a")
    net.send(0, 2, 1, b"b")
    assert [(d, s) for _t, d, s, _x in wire.got] == [(1, 2)]
    net.recv_only.add(3)
    wire.got.clear()
    net.send(0, 3, None, b"c")
    net.send(0, 1, 3, b"d")
    assert [(d, s) for _t, d, s, _x in wire.got] == [(3, 3), (3, 1)]


def test_links_stay_fifo_without_a_reorder_fault_and_lose_at_the_set_rate() -> None:
    net, wire = _net(jitter_ns=5 * MS)
    for i in range(200):
        net.send(i * 1000, 1, 2, bytes([i % 256]))
    times = [t for t, *_ in wire.got]
    assert times == sorted(times) and len(times) == 200
    wire.got.clear()
    net.link(1, 2).loss = 0.3
    for _ in range(2000):
        net.send(0, 1, 2, b"x")
    assert 1200 < len(wire.got) < 1600


def test_token_loss_drops_only_token_frames() -> None:
    net, wire = _net(token_frame=lambda d: d == b"T")
    net.drop_tokens = 1
    net.send(0, 1, 2, b"M")
    net.send(0, 1, 2, b"T")
    net.send(0, 1, 2, b"T")
    assert [x for *_r, x in wire.got] == [b"M", b"T"]


def test_every_fault_kind_can_be_selected() -> None:
    assert parse_faults("all") == tuple(sorted(FAULT_KINDS))
    assert parse_faults("loss, dup") == ("dup", "loss")
    with pytest.raises(ValueError, match="unknown fault kind"):
        parse_faults("gremlins")


def test_cli_json_summary_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--seeds", "2", "--core", "standin", "--faults", "none", "--duration-ms", "200", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["seeds"] == 2 and summary["violations"] == 0 and summary["sim_msgs_delivered"] > 0
    assert set(summary["detect_ms"]) == {"min", "p50", "max"}
    assert cli.main(["--seed", "1", "--nodes", "4", "--core", "standin", "--faults", "loss", "--json"]) == 1
    assert "replay with: python -m tests.sim --seed 1 --nodes 4 --faults loss" in capsys.readouterr().err


def test_a_commit_token_longer_than_one_netmtu_datagram_is_no_error_and_seven_nodes_form_one_ring() -> None:
    # the UDP transport sends such a control frame whole (IP fragments it); only multicast frames must fit
    from pycorosync.engine.totem.wire import COMMIT_BODY, COMMIT_ENTRY, HEADER
    from tests.sim.cores import real_core_factory

    factory = real_core_factory(7, netmtu=400)
    assert HEADER.size + COMMIT_BODY.size + 7 * COMMIT_ENTRY.size > factory.config.frame_payload_bytes
    sim = Simulator(factory, list(range(1, 8)), seed=5)
    for i in range(1, 8):
        sim.start(i)
    sim.workload_on = True
    sim.run_until(3000 * MS)
    assert not sim.errors
    cores = [node.core for node in sim.nodes.values()]
    assert {(c.state, tuple(c.members)) for c in cores} == {("OPERATIONAL", tuple(range(1, 8)))}
    assert sim.stats.delivered > 0
