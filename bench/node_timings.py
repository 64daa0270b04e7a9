"""Node timings on loopback: start to a synchronized 3-node ring, failure detection (SIGKILL of a
node's totem), clean leave (SIGTERM of a node's totem), rejoin. One JSON object per line.

Baselines measured in the same run: a bare interpreter start (``python -c pass``) and one with the
imports every node process pays (numpy + numba); the configured token and consensus timeouts are
printed next to the detection times.

    .venv/bin/python bench/node_timings.py [--token 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
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


def _wait_regular(client: EchoClient, members: list[int], timeout: float) -> float:
    wait_for(lambda: any(e["type"] == "regular" and e["members"] == members for e in client.confchgs)
             or client.poll(0.005) < 0, timeout, f"configuration {members}")
    return time.monotonic()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps({"bench": "baseline", "python_start_s": round(_interp_s("pass"), 3),
                      "python_numpy_numba_import_s": round(_interp_s("import numpy, numba"), 3)}))
    base = Path(tempfile.mkdtemp(prefix="pcs-bench-"))
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
            detect_s = _wait_regular(watcher, [1, 2], 30) - t1
            t2 = time.monotonic()
            cluster.wait_ring([1, 2, 3], timeout=120)
            rejoin_s = time.monotonic() - t2
            watcher.confchgs.clear()
            t3 = time.monotonic()
            cluster.nodes[2].kill_child("totem", 15)
            leave_s = _wait_regular(watcher, [1, 3], 30) - t3
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
