"""What the totem process measures about itself: token rotations (stats-table histogram), corosync's
stats.pg.* and the schedmiss events (node segment stats block)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from pycorosync.engine.runtime.layout import (
    RUNTIME_BASE,
    RUNTIME_COUNTERS,
    SCHEDMISS_EVENTS,
    SCHEDMISS_KEPT,
    STATS_SLOTS,
)
from pycorosync.engine.runtime.totem_stats import SchedMissCheck, SchedMissLog, TokenRotation
from pycorosync.ipc.stats import TOKEN_ROTATION_BUCKETS_MS, StatsTable
from tests.unit.test_runtime_totem import _node, _run, _Service

MS = 1_000_000


def _runtime_counter(block: np.ndarray, name: str) -> int:
    return int(block[RUNTIME_BASE + RUNTIME_COUNTERS.index(name)])


def test_each_rotation_counts_in_the_bucket_of_its_upper_bound_and_all_count_in_total() -> None:
    rot = TokenRotation()
    t = 10_000 * MS
    rot.record(t)  # the first token starts a rotation, it is not one
    assert rot.count == 0
    for gap_ms in (0.5, 1.0, 1.5, 5.0, 7.0, 5000.0, 6000.0):
        t += int(gap_ms * MS)
        rot.record(t)
    expected = dict.fromkeys(TOKEN_ROTATION_BUCKETS_MS, 0)
    expected.update({1: 2, 2: 1, 5: 1, 10: 1, 5000: 1})  # "le" bounds are inclusive; 6000 ms only in the count
    assert rot.buckets() == tuple(expected[ms] for ms in TOKEN_ROTATION_BUCKETS_MS)
    assert rot.count == 7
    assert rot.seconds == pytest.approx(11.015)


def test_a_ring_change_is_not_counted_as_a_rotation() -> None:
    rot = TokenRotation()
    rot.record(1 * MS)
    rot.restart()
    rot.record(900 * MS)
    rot.record(902 * MS)
    assert rot.count == 1 and rot.seconds == pytest.approx(0.002)


@pytest.fixture
def table() -> Iterator[StatsTable]:
    t = StatsTable.create_anonymous(3)
    t.set_slot(1, "totem", 1234)
    yield t
    t.close()


def test_rotations_are_written_into_the_totem_row_for_the_exporter(table: StatsTable) -> None:
    rot = TokenRotation(table.cells[1], table.f64[1])
    for t_ms in (0, 3, 6, 6006):
        rot.record(t_ms * MS)
    assert table.snapshot().value(1, "totem.token_rotation_count") == 0  # written at the stats tick
    rot.flush()
    snap = table.snapshot()
    assert snap.value(1, "totem.token_rotation_le_5ms") == 2
    assert snap.value(1, "totem.token_rotation_count") == 3
    assert snap.value(1, "totem.token_rotation_seconds") == pytest.approx(6.006)
    assert snap.value(0, "totem.token_rotation_count") == 0  # other rows untouched
    # a restarted totem process continues from what its row holds
    again = TokenRotation(table.cells[1], table.f64[1])
    again.record(0)
    again.record(4 * MS)
    again.flush()
    snap = table.snapshot()
    assert snap.value(1, "totem.token_rotation_le_5ms") == 3
    assert snap.value(1, "totem.token_rotation_count") == 4
    assert snap.value(1, "totem.token_rotation_seconds") == pytest.approx(6.010)


def test_schedmiss_keeps_the_last_ten_events_newest_first() -> None:
    log = SchedMissLog(np.zeros(STATS_SLOTS, np.int64))
    assert log.events() == []
    for k in range(13):
        log.record(1_700_000_000_000 + k, 400.0 + k + 0.25)
    events = log.events()
    assert len(events) == SCHEDMISS_KEPT
    assert events[0] == (1_700_000_000_012, 412.25)
    assert events[-1] == (1_700_000_000_003, 403.25)
    assert int(log.block[SCHEDMISS_EVENTS]) == 13


def test_cleared_schedmiss_events_are_hidden_and_new_ones_shown() -> None:
    log = SchedMissLog(np.zeros(STATS_SLOTS, np.int64))
    log.record(1000, 500.0)
    log.record(2000, 600.0)
    log.clear(2000)
    assert log.events() == []
    log.record(3000, 700.5)
    assert log.events() == [(3000, 700.5)]


def test_the_scheduling_check_reports_only_gaps_above_four_fifths_of_the_token() -> None:
    check = SchedMissCheck(token_ms=400, now_ns=0)
    assert check.period_ns == pytest.approx(133.33 * MS, rel=1e-3)
    assert check.check(100 * MS) is None  # not due yet
    assert check.check(140 * MS) is None  # on time
    assert check.check(140 * MS + 320 * MS) is None  # exactly the threshold: not a miss
    gap = check.check(460 * MS + 321 * MS)
    assert gap == pytest.approx(321.0)
    # due one period later; the loop is forced awake a period after that (other wake-ups run it sooner)
    assert check.due_in_s(781 * MS) == pytest.approx(0.2667, rel=1e-3)
    # the longest gap the forced wake-up allows stays under the threshold: no false miss on an idle node
    assert check.check(781 * MS + int(check.due_in_s(781 * MS) * 1e9)) is None


def test_a_running_ring_publishes_rotations_pg_counters_and_the_last_token_time() -> None:
    nodes = {1: _node(1), 2: _node(2)}
    services = {n: _Service(rt) for n, rt in nodes.items()}
    assert _run(nodes, services, lambda: all(s.completed() for s in services.values())
                and nodes[1].core.members == (1, 2), 10)
    for k in range(20):
        assert services[1].mcast(b"r%d" % k)
    assert _run(nodes, services, lambda: len(services[2].messages()) == 20 and nodes[1].rotation.count >= 5, 10)
    rt = nodes[1]
    rt.write_stats()
    block = rt.rings.stats
    assert 0 < _runtime_counter(block, "last_token_rx_ns") <= time.monotonic_ns()
    assert _runtime_counter(block, "msg_queue_avail") == rt.core.msg_queue_avail > 0
    assert _runtime_counter(block, "msg_reserved") == 0  # nothing waits to enter the queue
    assert _runtime_counter(block, "continuous_sendmsg_failures") == 0
    assert sum(rt.rotation.buckets()) <= rt.rotation.count
    assert rt.rotation.seconds > 0


def test_a_late_loop_run_is_kept_as_a_schedmiss_event() -> None:
    rt = _node(1)
    rt.start(time.monotonic_ns())
    late = rt.sched_check.last_ns + rt.sched_check.threshold_ns + 50 * MS  # token 200 ms: 210 ms late
    before_ms = time.time_ns() // 1_000_000
    rt.pump(late)
    assert rt.schedmiss is not None
    events = rt.schedmiss.events()
    assert len(events) == 1
    stamp_ms, delay_ms = events[0]
    assert stamp_ms >= before_ms
    assert delay_ms == pytest.approx(rt.sched_check.threshold_ns / 1e6 + 50, abs=0.01)
    rt.pump(late + 1 * MS)  # the next run is on time
    assert len(rt.schedmiss.events()) == 1


class _FullAfter:
    """A submit ring that takes ``room`` records, then is full."""

    def __init__(self, room: int) -> None:
        self.room = room

    def used_bytes(self) -> int:
        return 0

    def push(self, _rtype: int, _payload: bytes) -> bool:
        self.room -= 1
        return self.room >= 0

    def needs_wake(self) -> bool:
        return False


def test_a_service_counts_bytes_sent_and_delivered_and_each_client_request_that_met_a_full_totem() -> None:
    from types import SimpleNamespace

    from pycorosync.engine.runtime.service import ServiceProcess
    from pycorosync.engine.totem.api import RingId

    class Echo(ServiceProcess):
        name = "statsecho"
        service_id = 201

        def lib_request(self, conn: object, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
            for _ in range(3):  # a request whose retries inside one call count once
                if self.mcast(payload):
                    return rtype, b"ok"
            return rtype, b"try again"

    svc = Echo(SimpleNamespace(nodeid=1, services=("statsecho",), bells={}))  # type: ignore[arg-type]
    svc._submit = _FullAfter(room=2)
    assert svc.on_request(None, 1, b"abcd") == (1, b"ok")  # type: ignore[arg-type]
    assert svc.on_request(None, 1, b"efghij") == (1, b"ok")  # type: ignore[arg-type]
    assert svc.on_request(None, 1, b"klm") == (1, b"try again")  # type: ignore[arg-type]
    assert (svc.mcast_tx_bytes, svc.flow_control_waits) == (10, 1)
    assert not svc.mcast(b"internal") and svc.flow_control_waits == 1  # not a client request
    from pycorosync.engine.runtime import records as rec

    svc._dispatch(rec.MessageRecord(2, RingId(1, 8), 2, b"x" * 7))
    assert svc.delivered_bytes == 7


def test_cmap_shows_schedmiss_events_as_corosync_names_them_and_clears_them() -> None:
    from pycorosync.engine.config.types import ValueType
    from pycorosync.services.cmap.node_stats import schedmiss_rows, srp_runtime_provider
    from pycorosync.services.cmap.stats_map import StatsMap

    block = np.zeros(STATS_SLOTS, np.int64)
    log = SchedMissLog(block)
    stats = StatsMap()
    stats.register("stats.schedmiss.", lambda: schedmiss_rows(log))
    stats.register_clear("schedmiss", lambda: log.clear(time.time_ns() // 1_000_000))
    stats.register("stats.srp.", srp_runtime_provider(block, RUNTIME_BASE, RUNTIME_COUNTERS))
    assert stats.items("stats.schedmiss.") == []
    log.record(1_000, 512.5)
    log.record(2_000, 640.0)
    assert stats.items("stats.schedmiss.") == [
        ("stats.schedmiss.0.delay", (ValueType.FLOAT, 640.0)),
        ("stats.schedmiss.0.timestamp", (ValueType.UINT64, 2_000)),
        ("stats.schedmiss.1.delay", (ValueType.FLOAT, 512.5)),
        ("stats.schedmiss.1.timestamp", (ValueType.UINT64, 1_000)),
    ]
    stats.set("stats.clear.schedmiss", ValueType.UINT8, 1)
    assert stats.items("stats.schedmiss.") == []
    assert stats.get("stats.srp.time_since_token_last_received") == (ValueType.UINT64, 0)  # no token yet
    block[RUNTIME_BASE + RUNTIME_COUNTERS.index("last_token_rx_ns")] = time.monotonic_ns() - 250 * MS
    assert 250 <= int(stats.get("stats.srp.time_since_token_last_received")[1]) < 10_000  # type: ignore[call-overload]
    assert stats.get("stats.srp.continuous_sendmsg_failures") == (ValueType.UINT32, 0)
