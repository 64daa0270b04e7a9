"""cfg on a real 3-node loopback cluster: request latency, and how soon a killed node shows disconnected.

Prints one JSON object per line:
    {"bench": "cfg", "op": "local_get"|"node_status_get", "n": N, "p50_us": ..., "p99_us": ...}
    {"bench": "cfg", "op": "ratio", "of": "node_status_get", "p50_ratio": ...}
    {"bench": "cfg", "op": "kill_to_disconnected", "seconds": ..., "token_ms": ..., "consensus_ms": ...,
     "ratio_to_token_plus_consensus": ...}
The baseline is ``local_get`` (a round trip that does no work) measured in the same run; node_status_get
also maps the transport's link table. The kill figure is judged against the token + consensus timeouts
the cluster runs with (the time Totem needs to drop a dead member).

    python bench/cfg.py [--n 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pycorosync.cfg import CfgClient
from pycorosync.localcluster import Cluster, wait_for


def _latencies(call: object, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter_ns()
        call()  # type: ignore[operator]
        out[i] = (time.perf_counter_ns() - t) / 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="requests per measured call")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cfg-") as base:
        cluster = Cluster(Path(base), 3, test_services=())
        try:
            cluster.start()
            cluster.wait_ring()
            with CfgClient(str(cluster.nodes[1].run_dir)) as cfg:
                p50 = {}
                for op, call in (("local_get", cfg.local_get), ("node_status_get", lambda: cfg.node_status_get(2)),
                                 ("local_get", cfg.local_get)):
                    lat = _latencies(call, args.n)
                    p50.setdefault(op, []).append(float(np.percentile(lat, 50)))
                    print(json.dumps({"bench": "cfg", "op": op, "n": args.n, "p50_us": round(p50[op][-1], 1),
                                      "p99_us": round(float(np.percentile(lat, 99)), 1)}), flush=True)
                base_p50 = sum(p50["local_get"]) / len(p50["local_get"])
                print(json.dumps({"bench": "cfg", "op": "ratio", "of": "node_status_get",
                                  "p50_ratio": round(p50["node_status_get"][0] / base_p50, 3)}), flush=True)
                cluster.nodes[3].kill()
                killed = time.monotonic()
                wait_for(lambda: not cfg.node_status_get(3).link(0).connected, 60, "node 3 disconnected", 0.005)
                took = time.monotonic() - killed
            limit = (cluster.token_ms + cluster.consensus_ms) / 1000
            print(json.dumps({"bench": "cfg", "op": "kill_to_disconnected", "seconds": round(took, 3),
                              "token_ms": cluster.token_ms, "consensus_ms": cluster.consensus_ms,
                              "ratio_to_token_plus_consensus": round(took / limit, 3)}), flush=True)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
