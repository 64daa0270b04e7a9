"""Round-trip latency of a client request through ``pycorosync.ipc`` against a plain unix-socket round trip.

The service runs in its own process (the echo service behind ``ipc.server.Server``); the baseline is
an echo process on a SOCK_SEQPACKET socketpair, measured in the same run. One JSON object per line:

    {"bench": "ipc_rpc", "path": "conn" | "unix_seqpacket", "size": 64, "n": ..., "p50_us": ..., ...}
    {"bench": "ipc_rpc", "path": "ratio", "size": 64, "p50_ratio": conn/baseline, "p99_ratio": ...}

Usage: python bench/ipc_rpc.py [--n 20000] [--sizes 64,1024,65536]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np

from pycorosync import jitcache
from pycorosync.demo import fork_child, stop_child


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": round(float(np.percentile(arr, 50)), 2),
        "p90_us": round(float(np.percentile(arr, 90)), 2),
        "p99_us": round(float(np.percentile(arr, 99)), 2),
        "max_us": round(float(arr.max()), 2),
    }


def _time_round_trips(one: Callable[[], object], n: int, warmup: int) -> list[int]:
    for _ in range(warmup):
        one()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        one()
        samples.append(clock() - t0)
    return samples


def _echo_server_process(run_dir: str, ready_fd: int) -> None:
    from pycorosync.ipc import echo
    from pycorosync.ipc.server import Server

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = Server(run_dir, echo.SERVICE, echo.EchoService(), request_types=echo.REQUEST_TYPES)
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    server.serve_forever(stop, poll_interval=0.2)


def _socket_echo_process(sock: socket.socket) -> None:
    buf = bytearray(1 << 17)
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            return
        sock.send(memoryview(buf)[:n])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="timed round trips per path and size")
    parser.add_argument("--sizes", default="64,1024,65536", help="payload sizes in bytes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    warmup = max(200, args.n // 20)
    jitcache.configure()

    from pycorosync.ipc import echo
    from pycorosync.ipc.client import connect

    run_dir = tempfile.mkdtemp(prefix="pycorosync-bench-")
    ready_r, ready_w = os.pipe()
    server_pid = fork_child(lambda: _echo_server_process(run_dir, ready_w))
    os.close(ready_w)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    baseline_pid = fork_child(lambda: (ours.close(), _socket_echo_process(theirs))[-1])
    theirs.close()
    try:
        if os.read(ready_r, 1) != b"1":
            raise SystemExit("echo server failed to start")
        with connect(run_dir, echo.SERVICE) as conn:
            for size in sizes:
                payload = os.urandom(size)
                recv_buf = bytearray(size + 64)

                def via_conn(payload: bytes = payload) -> object:
                    return conn.request(echo.ECHO, payload)

                def via_socket(payload: bytes = payload, buf: bytearray = recv_buf) -> object:
                    ours.send(payload)
                    return ours.recv_into(buf)

                results = {}
                # interleave the two paths in blocks so both see the same machine load
                conn_samples: list[int] = []
                sock_samples: list[int] = []
                block = max(1, args.n // 10)
                for _ in range(10):
                    conn_samples += _time_round_trips(via_conn, block, warmup if not conn_samples else 0)
                    sock_samples += _time_round_trips(via_socket, block, warmup if not sock_samples else 0)
                for path, samples in (("conn", conn_samples), ("unix_seqpacket", sock_samples)):
                    stats = _percentiles(samples)
                    results[path] = stats
                    line = {"bench": "ipc_rpc", "path": path, "size": size, "n": len(samples), **stats}
                    line["rate_per_s"] = round(len(samples) / (sum(samples) / 1e9))
                    print(json.dumps(line), flush=True)
                ratio = {
                    "bench": "ipc_rpc",
                    "path": "ratio",
                    "size": size,
                    "p50_ratio": round(results["conn"]["p50_us"] / results["unix_seqpacket"]["p50_us"], 3),
                    "p99_ratio": round(results["conn"]["p99_us"] / results["unix_seqpacket"]["p99_us"], 3),
                }
                print(json.dumps(ratio), flush=True)
    finally:
        ours.close()
        os.close(ready_r)
        stop_child(server_pid)
        stop_child(baseline_pid)
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
