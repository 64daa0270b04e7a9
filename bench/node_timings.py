"""Node timings on loopback: one node's start until every service is ready, start to a synchronized
3-node ring, failure detection (SIGKILL of a node's totem), clean leave (SIGTERM of a node's totem),
rejoin. One JSON object per line.

Baselines measured in the same run: a bare interpreter start (``python -c pass``) and one with the
imports every node process pays (numpy + numba); for the node start, the same node with every child a
fresh interpreter (``PYCOROSYNC_FORK_CHILDREN=0``, the start before children were forked from the
preloaded supervisor), alternated with the normal start; the configured token and consensus timeouts are printed next to the
detection times.

    .venv/bin/python bench/node_timings.py [--token 400] [--rounds 3] [--start-only]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.conftest import Cluster, EchoClient, wait_for


def _interp_s(code: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.monotonic() - t0


def _wait_config(client: EchoClient, kind: str, members: list[int], timeout: float) -> float:
    """When ``client`` saw a ``kind`` ("transitional" or "regular") configuration of ``members``."""
    wait_for(lambda: any(e["type"] == kind and e["members"] == members for e in client.confchgs)
             or client.poll(0.005) < 0, timeout, f"{kind} configuration {members}")
    return time.monotonic()


_READY = re.compile(r"node ready: (\d+) processes running \(started in (\d+) ms\)")


_MODES = {"exec": {"PYCOROSYNC_FORK_CHILDREN": "0"}, "fork": {}}


def _node_start(base: Path, mode: str) -> tuple[float, float, int]:
    """(s from the daemon's launch to its "node ready" line, s the supervisor spent starting children,
    processes) for a one-node cluster of the production services, its children forked from the
    preloaded supervisor (``fork``) or each a fresh interpreter (``exec``)."""
    cluster = Cluster(base, 1, env={1: _MODES[mode]}, test_services=())
    node = cluster.nodes[1]
    try:
        t0 = time.monotonic()
        node.start()
        match = wait_for(lambda: _READY.search(node.log_path.read_text(errors="replace"))
                         if node.log_path.exists() else None, 120, "the node ready line", 0.005)
        wall_s = time.monotonic() - t0
        return wall_s, int(match.group(2)) / 1000, int(match.group(1))
    finally:
        cluster.stop()


def bench_node_start(base: Path, rounds: int) -> None:
    results: dict[str, list[tuple[float, float, int]]] = {m: [] for m in _MODES}
    _node_start(base, "fork")  # a first start pays for cold file caches; not counted
    for _ in range(rounds):
        for mode in _MODES:
            results[mode].append(_node_start(base, mode))
    med = {m: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for m, rs in results.items()}
    print(json.dumps({
        "bench": "node_start", "rounds": rounds, "processes": results["fork"][0][2],
        "exec_launch_to_ready_s": round(med["exec"][0], 3), "exec_children_s": round(med["exec"][1], 3),
        "fork_launch_to_ready_s": round(med["fork"][0], 3), "fork_children_s": round(med["fork"][1], 3),
        "ratio_fork_to_exec": round(med["fork"][0] / med["exec"][0], 3),
        "all_launch_to_ready_s": {m: [round(r[0], 3) for r in rs] for m, rs in results.items()}}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--start-only", action="store_true", help="only the one-node start (fork vs exec)")
    args = ap.parse_args()
    print(json.dumps({"bench": "baseline", "python_start_s": round(_interp_s("pass"), 3),
                      "python_numpy_numba_import_s": round(_interp_s("import numpy, numba"), 3)}))
    base = Path(tempfile.mkdtemp(prefix="pcs-bench-"))
    bench_node_start(base, args.rounds)
    if args.start_only:
        return 0
    for r in range(args.rounds):
        cluster = Cluster(base, 3, totem={"token": args.token})
        try:
            t0 = time.monotonic()
            cluster.start()
            cluster.wait_ring(timeout=120)
            start_s = time.monotonic() - t0
            watcher = EchoClient(cluster.nodes[1])
            t1 = time.monotonic()
            cluster.nodes[3].kill_child("totem")
            # the supervisor restarts the killed totem at once, and the new incarnation may join in the same
            # configuration change: the failure shows as the transitional configuration without node 3
            detect_s = _wait_config(watcher, "transitional", [1, 2], 30) - t1
            t2 = time.monotonic()
            cluster.wait_ring([1, 2, 3], timeout=120)
            rejoin_s = time.monotonic() - t2
            watcher.confchgs.clear()
            t3 = time.monotonic()
            cluster.nodes[2].kill_child("totem", 15)
            leave_s = _wait_config(watcher, "transitional", [1, 3], 30) - t3
            watcher.close()
            print(json.dumps({
                "bench": "node_timings", "round": r, "token_ms": cluster.token_ms,
                "consensus_ms": cluster.consensus_ms, "cluster_start_to_synced_ring_s": round(start_s, 3),
                "kill9_totem_detect_s": round(detect_s, 3), "restart_rejoin_s": round(rejoin_s, 3),
                "sigterm_totem_leave_seen_s": round(leave_s, 3)}))
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
