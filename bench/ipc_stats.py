"""What publishing IPC stats costs a service: the tick's publish, and request round trips with and without it.

Prints one JSON object per line:
    {"bench": "ipc_stats", "case": "rtt", "stats_row": bool, "p50_us": ..., "ops_per_s": ...}
        echo round trips (64 bytes) to a server in another process that has (or has not) a stats row; the
        server publishes every STATS_PUBLISH_INTERVAL_S from its tick, as in a node. Rounds alternate.
    {"bench": "ipc_stats", "case": "rtt_ratio", "p50_ratio": with/without, "ops_ratio": with/without}
    {"bench": "ipc_stats", "case": "publish", "connections": N, "us_per_publish": ...}
        one ``publish_stats()`` with N open connections (the per-connection file is rewritten at most every
        connfile.WRITE_INTERVAL_S, so most publishes here only write the table row)
    {"bench": "ipc_stats", "case": "connfile_write", "us_per_write": ...}   one forced rewrite of that file
    {"bench": "ipc_stats", "case": "try_again_check", "ns_per_response": ...}
        the per-response CS_ERR_TRY_AGAIN test, against the measured round trip

    python bench/ipc_stats.py [--ops 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
import timeit
from typing import Any


def _serve(run_dir: str, with_row: bool, ready: Any, stop: Any) -> None:
    from pycorosync.ipc import echo
    from pycorosync.ipc.server import Server
    from pycorosync.ipc.stats import StatsTable

    table = StatsTable.create_anonymous(2) if with_row else None
    if table is not None:
        table.set_slot(0, echo.SERVICE, os.getpid())
    row = table.row(0) if table is not None else None
    server = Server(run_dir, echo.SERVICE, echo.EchoService(), request_types=echo.REQUEST_TYPES, stats_row=row)
    ready.set()
    last = time.monotonic()
    while not stop.is_set():
        server.poll(0.05)
        now = time.monotonic()
        if now - last >= 0.05:
            server.tick()
            last = now
    server.close()


def rtt(ops: int, with_row: bool) -> dict[str, Any]:
    from pycorosync.ipc import echo
    from pycorosync.ipc.client import connect

    run_dir = tempfile.mkdtemp(prefix="pcs-bench-ipcstats-")
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(run_dir, with_row, ready, stop))
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("echo server did not start")
        samples = []
        with connect(run_dir, echo.SERVICE) as conn:
            payload = b"x" * 64
            for _ in range(200):
                conn.call(echo.ECHO, payload, timeout=10)
            start = time.perf_counter()
            for _ in range(ops):
                t0 = time.perf_counter_ns()
                conn.call(echo.ECHO, payload, timeout=10)
                samples.append(time.perf_counter_ns() - t0)
            elapsed = time.perf_counter() - start
        return {"p50_us": statistics.median(samples) / 1e3, "ops_per_s": ops / elapsed}
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        shutil.rmtree(run_dir, ignore_errors=True)


def publish_cost(n_conns: int, repeat: int) -> float:
    from pycorosync.ipc import echo
    from pycorosync.ipc.client import connect
    from pycorosync.ipc.server import Server, ServerThread
    from pycorosync.ipc.stats import StatsTable

    run_dir = tempfile.mkdtemp(prefix="pcs-bench-ipcstats-")
    table = StatsTable.create_anonymous(2)
    table.set_slot(0, echo.SERVICE, os.getpid())
    server = Server(run_dir, echo.SERVICE, echo.EchoService(), request_types=echo.REQUEST_TYPES,
                    stats_row=table.row(0))
    conns = []
    try:
        with ServerThread(server):
            for _ in range(n_conns):
                conns.append(connect(run_dir, echo.SERVICE))
            for i, c in enumerate(conns):
                c.call(echo.ECHO, b"%d" % i, timeout=10)
            # measured from this thread while the server thread idles in its poll (publish only reads the
            # connections); a counter changes before each publish, as on a busy server: the per-connection
            # file is still rewritten only once per connfile.WRITE_INTERVAL_S
            first = next(iter(server.connections.values()))
            t0 = time.perf_counter()
            for _ in range(repeat):
                first.stats.requests += 1
                server.publish_stats()
            return (time.perf_counter() - t0) / repeat * 1e6
    finally:
        for c in conns:
            c.close()
        table.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for r in range(args.rounds):
        for with_row in ((False, True) if r % 2 == 0 else (True, False)):
            res = rtt(args.ops, with_row)
            results[with_row].append(res)
            print(json.dumps({"bench": "ipc_stats", "case": "rtt", "stats_row": with_row, "round": r,
                              **{k: round(v, 2) for k, v in res.items()}}), flush=True)
    p50 = {k: statistics.median(x["p50_us"] for x in v) for k, v in results.items()}
    ops = {k: statistics.median(x["ops_per_s"] for x in v) for k, v in results.items()}
    print(json.dumps({"bench": "ipc_stats", "case": "rtt_ratio", "p50_ratio": round(p50[True] / p50[False], 3),
                      "ops_ratio": round(ops[True] / ops[False], 3)}), flush=True)
    for n in (1, 16, 64):
        us = publish_cost(n, 200)
        print(json.dumps({"bench": "ipc_stats", "case": "publish", "connections": n,
                          "us_per_publish": round(us, 1)}), flush=True)
    from pycorosync.ipc import connfile

    run_dir = tempfile.mkdtemp(prefix="pcs-bench-ipcstats-")
    try:
        writer = connfile.ConnectionFile(run_dir, "cpg", interval_s=0.0)
        t0 = time.perf_counter()
        for i in range(100):
            writer.update([{"pid": 1, "conn": c, "requests": i} for c in range(16)])
        us = (time.perf_counter() - t0) / 100 * 1e6
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps({"bench": "ipc_stats", "case": "connfile_write", "connections": 16, "us_per_write": round(us, 1),
                      "every_s": connfile.WRITE_INTERVAL_S, "dir": "tempfile default"}), flush=True)
    hdr = (6).to_bytes(4, "little")
    payload = b"\0" * 68
    ns = min(timeit.repeat(lambda: payload[:4] == hdr, number=200_000, repeat=5)) / 200_000 * 1e9
    empty = min(timeit.repeat(lambda: None, number=200_000, repeat=5)) / 200_000 * 1e9
    print(json.dumps({"bench": "ipc_stats", "case": "try_again_check", "ns_per_response": round(ns - empty, 1),
                      "rtt_p50_ns": round(p50[False] * 1e3)}), flush=True)


if __name__ == "__main__":
    main()
