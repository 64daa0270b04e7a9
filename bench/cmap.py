"""cmap service round trips: get, set and track notification latency, 1 and 4 clients.

Prints one JSON object per line:
    {"bench": "cmap", "op": "get"|"set"|"track_notify"|"unix_socket_rtt", "clients": N,
     "ops_per_s": ..., "p50_us": ..., "p99_us": ...}
    {"bench": "cmap", "op": "ratio", "clients": N, "of": OP, "ops_per_s_ratio": OP/baseline, "p50_ratio": ...}
The baseline ("op": "unix_socket_rtt") is one Python AF_UNIX SOCK_SEQPACKET request/response
between two processes, measured in the same run (before and after the cases; ratios use their
mean): compare ratios, not absolute figures.

"get" is the client as applications get it (served from the service's shared read view, with its
cache); "get_rpc" forces a round trip per get (``local_reads=False``); "get_while_set" is "get"
while one more client sets another key as fast as it can, so the view changes between most gets
and the client's cache answers less often; "get_nocache" probes the view on every get (no client
cache: the cost of a get right after any change in the key space).

``--rings compiled|plain`` makes every client use that ring path (the default: the library's, plain
for cmap), for an A/B of ``ipc/plainring.py`` against the numba kernels; the JSON lines say which.

    python bench/cmap.py [--ops 20000] [--rings default|compiled|plain]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

CONF = textwrap.dedent("""\
    totem {
        version: 2
        cluster_name: bench
        transport: udpu
    }
    nodelist {
        node {
            nodeid: 1
            ring0_addr: 127.0.0.1
        }
    }
    """)
KEY = "bench.value"
TRACKED = "bench.tracked"


RINGS_ENV = "PYCOROSYNC_BENCH_CMAP_RINGS"  # main() hands --rings to the workers through it


# -- workers (run as separate processes: python bench/cmap.py --worker ...) ---------------------------
def _wait_go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def worker(kind: str, run_dir: str, ops: int, out: str) -> None:
    from pycorosync.cmap import CMAP_TRACK_ADD, CMAP_TRACK_MODIFY, CS_DISPATCH_ONE, CmapClient, ValueType
    from pycorosync.ipc.client import use_compiled_rings

    rings = os.environ.get(RINGS_ENV, "default")
    if rings != "default":
        use_compiled_rings(rings == "compiled")

    lat = np.zeros(ops, np.int64)
    clock = time.perf_counter_ns
    with CmapClient(run_dir, local_reads=kind != "get_rpc") as cmap:
        if kind == "get_nocache" and cmap._view is not None:
            cmap._view.use_cache = False
        if kind in ("get", "get_rpc", "get_nocache"):
            cmap.set(KEY, 1, ValueType.UINT64)
            _wait_go()
            t0 = clock()
            for i in range(ops):
                s = clock()
                cmap.get(KEY)
                lat[i] = clock() - s
        elif kind == "set":
            key = f"{KEY}.{os.getpid()}"
            _wait_go()
            t0 = clock()
            for i in range(ops):
                s = clock()
                cmap.set(key, i, ValueType.UINT64)
                lat[i] = clock() - s
        elif kind == "watch":  # notification latency: the setter puts its send time in the value
            got = 0

            def on_event(ev: object) -> None:
                nonlocal got
                if got < ops:
                    lat[got] = clock() - int(ev.new_value)  # type: ignore[attr-defined]
                got += 1

            cmap.track_add(TRACKED, CMAP_TRACK_ADD | CMAP_TRACK_MODIFY, on_event)
            _wait_go()
            t0 = clock()
            while got < ops:
                cmap.dispatch(CS_DISPATCH_ONE, timeout=30)
        elif kind == "churn":  # sets until told to stop (stdin closed)
            _wait_go()
            t0 = clock()
            i = 0
            while not select.select([sys.stdin], [], [], 0)[0]:
                cmap.set(f"{KEY}.churn", i, ValueType.UINT64)
                i += 1
        elif kind == "setter":
            _wait_go()
            t0 = clock()
            for i in range(ops):
                s = clock()
                cmap.set(TRACKED, s, ValueType.UINT64)
                lat[i] = clock() - s
        else:
            raise SystemExit(f"unknown worker {kind}")
        elapsed = clock() - t0
    np.save(out, lat)
    print(json.dumps({"elapsed_ns": elapsed}), flush=True)


def echo_server(path: str) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.path.exists(path):
        os.unlink(path)
    srv.bind(path)
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    while data := conn.recv(256):
        conn.send(data)


# -- driver ---------------------------------------------------------------------------------------
def _spawn(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], 60)[0] or proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"worker {args} did not start")
    return proc


RESULTS: list[dict[str, object]] = []


def _report(op: str, clients: int, lat_ns: np.ndarray, ops_per_s: float) -> None:
    row: dict[str, object] = {
        "bench": "cmap", "op": op, "clients": clients, "rings": os.environ.get(RINGS_ENV, "default"),
        "ops_per_s": round(ops_per_s),
        "p50_us": round(float(np.percentile(lat_ns, 50)) / 1e3, 2),
        "p99_us": round(float(np.percentile(lat_ns, 99)) / 1e3, 2),
    }
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def _ratios() -> None:
    base = [r for r in RESULTS if r["op"] == "unix_socket_rtt"]
    base_rate = sum(float(r["ops_per_s"]) for r in base) / len(base)  # type: ignore[arg-type]
    base_p50 = sum(float(r["p50_us"]) for r in base) / len(base)  # type: ignore[arg-type]
    for r in RESULTS:
        if r["op"] == "unix_socket_rtt":
            continue
        print(json.dumps({
            "bench": "cmap", "op": "ratio", "of": r["op"], "clients": r["clients"], "rings": r["rings"],
            "ops_per_s_ratio": round(float(r["ops_per_s"]) / base_rate, 2),  # type: ignore[arg-type]
            "p50_ratio": round(float(r["p50_us"]) / base_p50, 3),  # type: ignore[arg-type]
        }), flush=True)


def run_case(run_dir: str, tmp: Path, kind: str, clients: int, ops: int, op: str) -> None:
    churn = None
    if kind == "watch":
        procs = [_spawn("--worker", "watch", run_dir, str(ops), str(tmp / f"w{i}.npy")) for i in range(clients)]
        procs.append(_spawn("--worker", "setter", run_dir, str(ops), str(tmp / "setter.npy")))
    elif kind == "get_while_set":
        procs = [_spawn("--worker", "get", run_dir, str(ops), str(tmp / f"w{i}.npy")) for i in range(clients)]
        churn = _spawn("--worker", "churn", run_dir, "1", str(tmp / "churn.npy"))
    else:
        procs = [_spawn("--worker", kind, run_dir, str(ops), str(tmp / f"w{i}.npy")) for i in range(clients)]
    t0 = time.perf_counter()
    for proc in [*procs, *([churn] if churn else [])]:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.wait(300)
    if churn is not None:
        assert churn.stdin is not None
        churn.stdin.close()
        churn.wait(60)
    wall = time.perf_counter() - t0
    lat = np.concatenate([np.load(tmp / f"w{i}.npy") for i in range(clients)])
    elapsed = [json.loads(p.stdout.read() or "{}").get("elapsed_ns", 0) for p in procs[:clients]]  # type: ignore[union-attr]
    busy = max(elapsed) / 1e9 if elapsed and max(elapsed) else wall
    _report(op, clients, lat, clients * ops / busy)


def baseline(tmp: Path, ops: int) -> None:
    path = str(tmp / "echo.sock")
    srv = _spawn("--echo", path)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        msg = b"x" * 32
        lat = np.zeros(ops, np.int64)
        clock = time.perf_counter_ns
        t0 = clock()
        for i in range(ops):
            s = clock()
            sock.send(msg)
            sock.recv(256)
            lat[i] = clock() - s
        elapsed = (clock() - t0) / 1e9
        sock.close()
        _report("unix_socket_rtt", 1, lat, ops / elapsed)
    finally:
        srv.kill()
        srv.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--echo":
        echo_server(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=20000, help="operations per client and case")
    ap.add_argument("--rings", choices=["default", "compiled", "plain"], default="default",
                    help="ring path of every client (default: the cmap library's)")
    args = ap.parse_args()
    os.environ[RINGS_ENV] = args.rings
    from pycorosync.localcluster import cmap_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-cmap-"))
    try:
        with cmap_service(tmp, CONF) as (run_dir_path, _conf):
            run_dir = str(run_dir_path)
            baseline(tmp, args.ops)
            for clients in (1, 4):
                run_case(run_dir, tmp, "get", clients, args.ops, "get")
                run_case(run_dir, tmp, "get_rpc", clients, args.ops, "get_rpc")
                run_case(run_dir, tmp, "get_while_set", clients, args.ops, "get_while_set")
                run_case(run_dir, tmp, "get_nocache", clients, args.ops, "get_nocache")
                run_case(run_dir, tmp, "set", clients, args.ops, "set")
                run_case(run_dir, tmp, "watch", clients, max(1000, args.ops // 4), "track_notify")
            baseline(tmp, args.ops)
            _ratios()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
