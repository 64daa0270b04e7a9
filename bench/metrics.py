"""Cost of the Prometheus exporter: scrape time, and data-path throughput with and without scraping.

A synthetic node in shared memory (the node segment with its rings and totem's block, a stats table
with every slot in use and every column non-zero) is read by the real collector (monitoring.sources +
monitoring.collector) in an exporter process serving HTTP. The data path is a producer process pushing
256-byte records through the node segment's ``submit.cpg`` ring to a consumer process, as a service
does to totem. Phases alternate (no scrape, a 1 Hz scrape, a 10 Hz scrape; the order rotates each round,
so that a drift of the machine's load does not favour one case); the no-scrape phases are the in-run
baseline for the throughput ratios. "collect" is what the exporter serves (collector.exposition);
"collect_prometheus_client" renders the same families with prometheus_client's writer, for comparison.
"exporter_cpu_ms_per_scrape" is what a scrape takes from the machine (the HTTP wall time on a loaded
2-core machine is mostly waiting for a core).

Prints one JSON object per line:
    {"bench": "metrics", "case": "collect"|"collect_prometheus_client", "series": N, "p50_ms": ..., "p99_ms": ...}
    {"bench": "metrics", "case": "scrape_http", "load": "none"|"ring", "p50_ms": ..., "p99_ms": ...,
     "exporter_cpu_ms_per_scrape": ...}
    {"bench": "metrics", "case": "ring", "scrape_hz": 0|1|10, "records_per_s": ..., "ratio_to_no_scrape": ...}
    {"bench": "metrics", "case": "cluster", "scrape_hz": 0|1, "mcasts_per_s": ..., "ratio_to_no_scrape": ...,
     "scrape_p50_ms": ...}                                                 (or "skipped": why)

The cluster case runs a real 3-node cluster on loopback with every node's exporter: node 1 multicasts
1 KiB messages through the testecho service as fast as flow control accepts them (its client drains the
deliveries), while node 1's exporter is scraped at 0 or 1 Hz, alternating.

    python bench/metrics.py [--seconds 3] [--rounds 3] [--no-cluster]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECORD = 256
SERVICES = ["cfg", "cpg", "quorum"]
CAPACITY = 4 << 20


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "metrics", **fields}), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rotated(cases: tuple[int, ...], by: int) -> tuple[int, ...]:
    k = by % len(cases)
    return cases[k:] + cases[:k]


def make_node(prefix: str) -> tuple[Any, Any]:
    """The node segment and a stats table, every slot owned and every cell non-zero (the scrape's worst case)."""
    from pycorosync.engine.runtime.node import node_layout
    from pycorosync.ipc.stats import StatsTable

    seg = node_layout(SERVICES, CAPACITY).create(prefix + "rings")
    table = StatsTable.create(prefix + "stats", n_slots=16)
    names = ["transport", "totem", "cmap", "cfg", "cpg", "quorum", "sam", "exporter"]
    for slot in range(16):
        table.set_slot(slot, names[slot] if slot < len(names) else f"extra{slot}", os.getpid())
    table.cells[:] = 12345
    return seg, table


def spec(prefix: str) -> Any:
    from pycorosync.monitoring.sources import NodeSpec

    return NodeSpec(nodeid=1, cluster="bench", run_dir=Path("/nonexistent"), segment=prefix + "rings",
                    stats=prefix + "stats", services=tuple(SERVICES), ring_capacity=CAPACITY,
                    supervisor_pid=os.getpid(), configured_nodes=3, token_s=1.0)


def exporter_proc(prefix: str, port_q: Any, stop: Any) -> None:
    from pycorosync.monitoring.exporter import Exporter
    from pycorosync.monitoring.sources import NodeReader

    exporter = Exporter("127.0.0.1", 0, NodeReader(spec(prefix)))
    port_q.put(exporter.port)
    import threading

    threading.Thread(target=lambda: (stop.wait(), exporter.stop()), daemon=True).start()
    try:
        exporter.run()
    finally:
        exporter.close()


def producer_proc(prefix: str, stop: Any) -> None:
    from pycorosync.engine.runtime.node import node_layout

    rings = node_layout(SERVICES, CAPACITY).attach(prefix + "rings")
    ring = rings.submit["cpg"]
    payload = bytes(RECORD)
    while not stop.is_set():
        for _ in range(256):
            ring.push(1, payload)
    ring.close()
    del ring
    rings.close()


def consumer_proc(prefix: str, stop: Any, counter: Any) -> None:
    from pycorosync.engine.runtime.node import node_layout

    rings = node_layout(SERVICES, CAPACITY).attach(prefix + "rings")
    ring = rings.submit["cpg"]
    n = 0
    while not stop.is_set():
        got = len(ring.pop_batch(256))
        n += got
        if got == 0:
            counter.value = n
            continue
        if n & 0x3FF == 0:
            counter.value = n
    counter.value = n
    rings.close()


def scrape(port: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read()
    return (time.perf_counter() - t0) * 1000, len(body)


def scrape_burst(port: int, exporter_pid: int, n: int = 50) -> dict[str, float]:
    """Wall time of ``n`` back-to-back scrapes, and the exporter's CPU time per scrape (its 10 Hz tick
    included, measured apart over the same time without scrapes)."""
    import psutil

    proc = psutil.Process(exporter_pid)

    def cpu() -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)

    c0, t0 = cpu(), time.perf_counter()
    wall = [scrape(port)[0] for _ in range(n)]
    c1, elapsed = cpu(), time.perf_counter() - t0
    time.sleep(elapsed)
    idle = cpu() - c1
    return {"p50_ms": round(pct(wall, 0.5), 3), "p99_ms": round(pct(wall, 0.99), 3),
            "exporter_cpu_ms_per_scrape": round(max(0.0, (c1 - c0) - idle) * 1000 / n, 3)}


def ring_phase(counter: Any, port: int, hz: int, seconds: float, scrape_ms: list[float]) -> float:
    start_n, t0 = counter.value, time.perf_counter()
    next_scrape = t0
    while (now := time.perf_counter()) - t0 < seconds:
        if hz and now >= next_scrape:
            scrape_ms.append(scrape(port)[0])
            next_scrape += 1.0 / hz
        time.sleep(0.005)
    return (counter.value - start_n) / (time.perf_counter() - t0)


def cluster_case(seconds: float, rounds: int) -> None:
    """Cluster traffic with node 1's exporter scraped at 0 and 1 Hz (see the module docstring)."""
    import socket
    import tempfile

    from pycorosync.engine.runtime import testservice as ts
    from pycorosync.ipc.client import CS_DISPATCH_ALL
    from pycorosync.ipc.errors import CS_ERR_TRY_AGAIN, CsError
    from pycorosync.ipc.framing import check_response
    from pycorosync.localcluster import Cluster

    ports = {}
    for i in (1, 2, 3):
        with socket.socket() as s:
            s.bind((f"127.0.0.{i}", 0))
            ports[i] = s.getsockname()[1]
    base = Path(tempfile.mkdtemp(prefix="pcs-bench-metrics-"))
    cluster = Cluster(base, 3, extra_config="monitoring {\n    prometheus: 127.0.0.1:9405\n}\n",
                      env={i: {"PYCOROSYNC_PROMETHEUS": f"127.0.0.{i}:{p}"} for i, p in ports.items()})
    try:
        try:
            cluster.start()
            cluster.wait_ring()
        except AssertionError as exc:
            emit(case="cluster", skipped=f"the cluster did not form: {str(exc).splitlines()[0]}")
            return
        conn = cluster.nodes[1].connect("testecho")
        body = bytes([2]) + bytes(1024)
        address = f"127.0.0.1:{ports[1]}"

        def phase(hz: int, scrape_ms: list[float]) -> float:
            sent, t0 = 0, time.perf_counter()
            next_scrape = t0
            while (now := time.perf_counter()) - t0 < seconds:
                if hz and now >= next_scrape:
                    t1 = time.perf_counter()
                    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
                        resp.read()
                    scrape_ms.append((time.perf_counter() - t1) * 1000)
                    next_scrape += 1.0 / hz
                try:
                    check_response(conn.request(ts.MCAST, body, timeout=10)[1])
                    sent += 1
                except CsError as exc:
                    if exc.code != CS_ERR_TRY_AGAIN:
                        raise
                conn.dispatch(CS_DISPATCH_ALL, lambda _t, _p: None)
            return sent / (time.perf_counter() - t0)

        scrapes: list[float] = []
        phase(0, scrapes)  # warm-up: the exporter's first collection, the client's first rings
        rates: dict[int, list[float]] = {0: [], 1: []}
        for r in range(rounds):
            for hz in rotated((0, 1), r):
                rates[hz].append(phase(hz, scrapes))
        base_rate = statistics.median(rates[0])
        for hz in (0, 1):
            med = statistics.median(rates[hz])
            emit(case="cluster", scrape_hz=hz, body_bytes=1024, mcasts_per_s=round(med),
                 ratio_to_no_scrape=round(med / base_rate, 3) if base_rate else None,
                 rounds=[round(r) for r in rates[hz]],
                 **({"scrape_p50_ms": round(pct(scrapes, 0.5), 3)} if hz and scrapes else {}))
        conn.close()
    finally:
        cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput phase")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (none, 1 Hz, 10 Hz)")
    ap.add_argument("--no-cluster", action="store_true", help="skip the 3-node cluster case")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from prometheus_client import CollectorRegistry, generate_latest

    from pycorosync.monitoring.collector import NodeCollector, exposition
    from pycorosync.monitoring.sources import NodeReader

    prefix = f"/pcs-bench-{os.getpid()}-mon-"
    seg, table = make_node(prefix)
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    procs: list[Any] = []
    try:
        # in-process collection: what the exporter serves, and prometheus_client's writer as the baseline
        reader = NodeReader(spec(prefix))
        reader.refresh_slow()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(NodeCollector(reader.read))  # type: ignore[arg-type]
        for case, render in (("collect", lambda: exposition(reader.read()).encode()),
                             ("collect_prometheus_client", lambda: generate_latest(registry))):
            times, text = [], b""
            for _ in range(200):
                t0 = time.perf_counter()
                text = render()
                times.append((time.perf_counter() - t0) * 1000)
            series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
            emit(case=case, series=series, p50_ms=round(pct(times, 0.5), 3), p99_ms=round(pct(times, 0.99), 3))
        reader.close()

        port_q = ctx.Queue()
        procs.append(ctx.Process(target=exporter_proc, args=(prefix, port_q, stop), daemon=True))
        procs[-1].start()
        port = int(port_q.get(timeout=60))
        emit(case="scrape_http", load="none", **scrape_burst(port, procs[0].pid))

        counter = ctx.Value("q", 0)
        procs.append(ctx.Process(target=consumer_proc, args=(prefix, stop, counter), daemon=True))
        procs.append(ctx.Process(target=producer_proc, args=(prefix, stop), daemon=True))
        for p in procs[1:]:
            p.start()
        time.sleep(1.0)  # both sides past their imports
        rates: dict[int, list[float]] = {0: [], 1: [], 10: []}
        loaded: list[float] = []
        for r in range(args.rounds):
            for hz in rotated((0, 1, 10), r):  # each case takes each position in turn: load drifts
                rates[hz].append(ring_phase(counter, port, hz, args.seconds, loaded))
        emit(case="scrape_http", load="ring", **scrape_burst(port, procs[0].pid),
             p50_ms_at_1_and_10_hz=round(pct(loaded, 0.5), 3))
        base = statistics.median(rates[0])
        for hz in (0, 1, 10):
            med = statistics.median(rates[hz])
            emit(case="ring", scrape_hz=hz, record_bytes=RECORD, records_per_s=round(med),
                 ratio_to_no_scrape=round(med / base, 3) if base else None, rounds=[round(r) for r in rates[hz]])
    finally:
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        seg.close()
        seg.unlink()
        table.close()
        table.unlink()
    if not args.no_cluster:
        cluster_case(args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
