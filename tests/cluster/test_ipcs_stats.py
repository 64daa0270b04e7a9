"""Every service's IPC stats on a real node: stats.ipcs.service<id>.* in cmap, and the exporter's metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from pycorosync.cmap import CMAP_MAP_STATS, CmapClient
from pycorosync.cpg import CpgClient
from tests.cluster.conftest import exported, sample, wait_until

DEADLINE_S = 30.0


def cmapctl_stats(run_dir: str, prefix: str) -> dict[str, str]:
    """``pycorosync cmapctl -m stats PREFIX`` as {key: value text}."""
    out = subprocess.run([sys.executable, "-m", "pycorosync", "--run-dir", run_dir, "cmapctl", "-m", "stats", prefix],
                         capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert out.returncode == 0, out.stderr
    keys = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" = ")
        keys[key.split(" (")[0]] = value
    return keys


def test_a_cpg_client_moves_the_cpg_services_ipc_stats_in_cmap_and_the_exporter(
    make_cluster: Callable[..., Any],
) -> None:
    cluster = make_cluster(1)
    node = cluster.nodes[1]
    run_dir = str(node.run_dir)
    with CpgClient(run_dir) as cpg:
        cpg.join("ipcs-stats")
        for _ in range(3):
            cpg.local_get()
        with CmapClient(run_dir, CMAP_MAP_STATS) as stats:
            # the cpg server publishes at its housekeeping tick (1 s): wait for it, no sleep
            wait_until(lambda: stats.get_u64("stats.ipcs.service2.active") == 1, DEADLINE_S, "cpg's open connection")
            wait_until(lambda: stats.get_u64("stats.ipcs.service2.requests") >= 4, DEADLINE_S, "cpg's requests")
            assert stats.get_u64("stats.ipcs.service2.responses") >= 4
            assert stats.get_u64("stats.ipcs.service2.ring_capacity_bytes") > 0
            # the global totals count the cpg client and this cmap client
            assert stats.get_u64("stats.ipcs.global.active") >= 2
            # per connection, as corosync names them: this process is the cpg client (that file is rewritten at
            # most every 2 s: wait for the count, not only the key)
            mine = f"stats.ipcs.service2.{os.getpid()}."
            conn_requests = wait_until(
                lambda: [v for k, _, v in stats.iter(mine) if k.endswith(".requests") and int(v) >= 4],
                DEADLINE_S, "the cpg connection's own keys")
            assert len(conn_requests) == 1
            assert len([k for k, _, _ in stats.iter(mine) if k.endswith(".procname")]) == 1
        keys = cmapctl_stats(run_dir, "stats.ipcs.")
        assert int(keys["stats.ipcs.service2.active"]) == 1
        assert int(keys["stats.ipcs.service2.requests"]) >= 4
        # every service's server publishes, with or without clients: cmap 0, cfg 1, cpg 2, quorum 3
        for service_id in (0, 1, 3):
            assert f"stats.ipcs.service{service_id}.active" in keys, sorted(keys)
        text = exported(cluster.name, 1, run_dir)
        assert (sample(text, "pycorosync_ipc_connections", node="1", process="cpg") or 0) == 1
        assert (sample(text, "pycorosync_ipc_requests_total", node="1", process="cpg") or 0) >= 4
        assert (sample(text, "pycorosync_ipc_ring_capacity_bytes", node="1", process="cpg") or 0) > 0
    # the client left: the connection is closed, and the counters do not go back
    with CmapClient(run_dir, CMAP_MAP_STATS) as stats:
        wait_until(lambda: stats.get_u64("stats.ipcs.service2.closed") >= 1, DEADLINE_S, "cpg's closed connection")
        assert stats.get_u64("stats.ipcs.service2.active") == 0
        assert stats.get_u64("stats.ipcs.service2.requests") >= 4
        wait_until(lambda: not list(stats.iter(f"stats.ipcs.service2.{os.getpid()}.")), DEADLINE_S,
                   "the closed connection's keys gone")
