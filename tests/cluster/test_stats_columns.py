"""The statistics the totem and service processes fill, on real nodes: the stats table's token-rotation
histogram and service.* columns, the exporter's metrics from them, and cmap's stats.pg.*, stats.srp.*
and stats.schedmiss.* keys."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pycorosync.cmap import CMAP_MAP_STATS, CmapClient, CsError
from pycorosync.cpg import CpgClient, CsErrorCode, Deliver
from tests.cluster.conftest import exported, sample, wait_until

DEADLINE_S = 30.0
GROUP = b"stats-columns"


def table_value(cluster_name: str, nodeid: int, process: str, metric: str) -> int | float:
    """One cell of a node's stats table, read as the exporter reads it."""
    from pycorosync.ipc.segment import segment_name
    from pycorosync.ipc.stats import StatsTable

    table = StatsTable.attach(segment_name(cluster_name, nodeid, "stats"), writer=False)
    try:
        slot = table.find_slot(process)
        assert slot is not None, f"no '{process}' row in node {nodeid}'s stats table"
        return table.snapshot().value(slot, metric)
    finally:
        table.close()


def retry(call: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except CsError as exc:
            if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def test_cpg_traffic_fills_rotation_service_and_pg_statistics(make_cluster: Callable[..., Any]) -> None:
    cluster = make_cluster(2)
    name = cluster.name
    run1 = cluster.nodes[1].run_dir
    body = bytes(256 << 10)
    count = 48  # 12 MiB in a burst: more than the 4 MiB a service lets wait in its submit ring
    with CpgClient(str(run1), timeout=10.0) as sender:
        retry(lambda: sender.join(GROUP))
        for _ in range(count):
            retry(lambda: sender.mcast_joined(body))
        delivered = 0
        deadline = time.monotonic() + DEADLINE_S
        while delivered < count:
            assert time.monotonic() < deadline, f"{delivered} of {count} delivered back to the sender"
            event = sender.next_event(1.0)
            delivered += isinstance(event, Deliver)
    sent = count * len(body)
    for nodeid in (1, 2):
        wait_until(lambda n=nodeid: table_value(name, n, "cpg", "service.delivered_bytes") >= sent, DEADLINE_S,
                   f"node {nodeid}'s cpg delivered bytes")
        wait_until(lambda n=nodeid: table_value(name, n, "totem", "totem.token_rotation_count") > 0, DEADLINE_S,
                   f"node {nodeid}'s token rotations")
    assert table_value(name, 1, "cpg", "service.mcast_tx_bytes") >= sent
    assert table_value(name, 2, "cpg", "service.mcast_tx_bytes") < sent  # node 2 sent only cpg's own messages
    waits = table_value(name, 1, "cpg", "service.flow_control_waits")
    rotations = table_value(name, 1, "totem", "totem.token_rotation_count")
    assert table_value(name, 1, "totem", "totem.token_rotation_seconds") > 0
    buckets = sum(table_value(name, 1, "totem", f"totem.token_rotation_le_{ms}ms") for ms in (1, 2, 5, 10, 20, 50,
                                                                                                 100, 200, 500))
    assert 0 < buckets <= rotations  # a 400 ms token: every rotation of a live ring is under 500 ms

    text = exported(name, 1, run1)
    assert (sample(text, "pycorosync_token_rotation_seconds_count", node="1") or 0) >= rotations
    assert (sample(text, "pycorosync_service_sent_bytes_total", node="1", process="cpg") or 0) >= sent
    assert (sample(text, "pycorosync_service_delivered_bytes_total", node="1", process="cpg") or 0) >= sent
    if waits:
        assert (sample(text, "pycorosync_service_flow_control_waits_total", node="1", process="cpg") or 0) == waits

    with CmapClient(str(run1), CMAP_MAP_STATS) as stats:
        # totem copies these counters at its 1 s stats tick: the one after the burst shows the queue drained
        deadline = time.monotonic() + 10.0
        while not (stats.get_u32("stats.pg.msg_queue_avail") > 0 and stats.get_u32("stats.pg.msg_reserved") == 0
                   and stats.get_u32("stats.srp.continuous_sendmsg_failures") == 0):
            assert time.monotonic() < deadline, (
                f"queue not shown drained within 10 s: avail {stats.get_u32('stats.pg.msg_queue_avail')}, "
                f"reserved {stats.get_u32('stats.pg.msg_reserved')}, "
                f"sendmsg failures {stats.get_u32('stats.srp.continuous_sendmsg_failures')}")
            time.sleep(0.05)
        assert stats.get_u64("stats.srp.time_since_token_last_received") < 60_000
    assert waits > 0, "the burst never met a full submit ring (the machine was fast enough to keep up)"


def test_a_paused_totem_process_is_a_schedmiss_event_in_cmap_until_cleared(make_cluster: Callable[..., Any]) -> None:
    cluster = make_cluster(1)
    node = cluster.nodes[1]
    run_dir = str(node.run_dir)
    pid = node.kill_child("totem", signal.SIGSTOP)
    try:
        # a deliberate pause of 2.5x the threshold (0.8 * token 400 ms), not a wait for something
        time.sleep(0.8)
    finally:
        node.kill_child("totem", signal.SIGCONT)
    assert node.child_pid("totem") == pid
    with CmapClient(run_dir, CMAP_MAP_STATS) as stats:
        delay = wait_until(lambda: stats.get("stats.schedmiss.0.delay")[0], DEADLINE_S, "the schedmiss event")
        assert delay >= 700.0
        assert stats.get_u64("stats.schedmiss.0.timestamp") >= (time.time_ns() // 1_000_000) - 60_000
        out = subprocess.run([sys.executable, "-m", "pycorosync", "--run-dir", run_dir, "cmapctl", "-C", "schedmiss"],
                             capture_output=True, text=True, timeout=DEADLINE_S, check=False)
        assert out.returncode == 0, out.stderr
        assert not [k for k, _, _ in stats.iter("stats.schedmiss.")]
    assert "was not scheduled" in (node.log_path.read_text(errors="replace"))
