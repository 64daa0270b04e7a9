"""``pycorosync demo --ipc``: the client-connection layer alone. One echo service process and ``--nodes``
client processes send requests and receive events through their shared-memory rings; half-way one client
is killed with SIGKILL and replaced; a summary (``--json``: a last line of JSON) says what was served.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
from typing import Any

from pycorosync.demo_cpg import fork_child, stop_child

_SLOT = struct.Struct("<qqqq")  # per client: requests, events, p50 ns, p99 ns
_SERVER = struct.Struct("<qqqq")  # server: accepted, dropped, disconnected, requests
PAYLOAD_BYTES = 64
EVENTS_EVERY = 256  # requests between two EMIT bursts
EVENTS_PER_BURST = 8


def _server_main(run_dir: str, shared: Any, ready_fd: int) -> int:
    from pycorosync.ipc import echo
    from pycorosync.ipc.server import Server

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    service = echo.EchoService()
    with Server(run_dir, echo.SERVICE, service, request_types=echo.REQUEST_TYPES) as server:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        while not stopping:
            server.poll(0.1)
            server.tick()
            st = server.stats
            _SERVER.pack_into(shared, 0, st.accepted, st.dropped, st.disconnected, service.requests)
    shutil.rmtree(run_dir, ignore_errors=True)  # also when the parent was killed and cannot
    return 0


def _client_main(run_dir: str, shared: Any, slot: int, deadline: float) -> int:
    from pycorosync.ipc import echo
    from pycorosync.ipc.client import CS_DISPATCH_ALL, connect

    offset = _SERVER.size + slot * _SLOT.size
    events = 0

    def on_event(rtype: int, payload: bytes) -> None:
        nonlocal events
        events += 1

    samples: list[int] = []
    payload = os.urandom(PAYLOAD_BYTES)
    clock = time.perf_counter_ns
    requests = 0
    with connect(run_dir, echo.SERVICE) as conn:
        while time.monotonic() < deadline:
            t0 = clock()
            body = conn.call(echo.ECHO, payload, timeout=5.0)
            samples.append(clock() - t0)
            if body != payload:
                raise RuntimeError("echo answered with another payload")
            requests += 1
            if requests % EVENTS_EVERY == 0:
                conn.call(echo.EMIT, echo.emit_payload(EVENTS_PER_BURST), timeout=5.0)
                conn.dispatch(CS_DISPATCH_ALL, on_event)
            if requests % 64 == 0:
                _SLOT.pack_into(shared, offset, requests, events, 0, 0)
        conn.dispatch(CS_DISPATCH_ALL, on_event)
    samples.sort()
    p50 = samples[len(samples) // 2] if samples else 0
    p99 = samples[min(len(samples) - 1, len(samples) * 99 // 100)] if samples else 0
    _SLOT.pack_into(shared, offset, requests, events, p50, p99)
    return 0


def run_ipc(args: argparse.Namespace) -> int:
    """The IPC demo (``args``: nodes = client processes, seconds, json); returns the exit code."""
    if args.seconds is None:
        args.seconds = 5.0
    if not 1 <= args.nodes <= 64:
        print("demo: --nodes must be between 1 and 64", file=sys.stderr)
        return 1
    if not 0 < args.seconds <= 3600:
        print("demo: --seconds must be between 0 and 3600", file=sys.stderr)
        return 1
    import mmap

    from pycorosync import jitcache

    jitcache.configure()
    jitcache.check_warm("demo")
    # load the kernels once here, so that every forked child starts with them in memory
    from pycorosync.ipc import fastpath, ring_kernels, wakeup

    ring_kernels.warm()
    wakeup.warm()
    fastpath.warm()

    # Ctrl-C, or a SIGTERM from a supervisor, stops the demo with cleanup (SIGINT may arrive ignored
    # when the demo was started in the background by a shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    slots = args.nodes + 1  # one more for the client that replaces the killed one
    shared = mmap.mmap(-1, _SERVER.size + slots * _SLOT.size)  # anonymous: nothing named to clean up
    run_dir = tempfile.mkdtemp(prefix="pycorosync-demo-")
    children: dict[int, int] = {}  # pid -> slot (-1: the server)
    out = sys.stderr
    live = out.isatty()
    started = time.monotonic()
    killed: tuple[int, int] | None = None
    statuses: dict[int, int] = {}
    try:
        ready_r, ready_w = os.pipe()
        server_pid = fork_child(lambda: _server_main(run_dir, shared, ready_w))
        os.close(ready_w)
        children[server_pid] = -1
        if os.read(ready_r, 1) != b"1":
            print("demo: the echo service did not start", file=sys.stderr)
            return 1
        os.close(ready_r)
        print(
            f"demo: IPC layer: service 'echo' (pid {server_pid}) on {run_dir}, "
            f"{args.nodes} client process(es), {args.seconds:g}s",
            file=out,
        )
        deadline = time.monotonic() + args.seconds
        for slot in range(args.nodes):
            pid = fork_child(lambda slot=slot: _client_main(run_dir, shared, slot, deadline))  # type: ignore[misc]
            children[pid] = slot
        last_total, last_t = 0, time.monotonic()
        half = started + args.seconds / 2
        while True:
            time.sleep(0.5 if live else 1.0)
            now = time.monotonic()
            if killed is None and args.nodes >= 2 and args.seconds >= 2 and now >= half:
                victim = next(pid for pid, slot in children.items() if slot == 0)
                os.kill(victim, signal.SIGKILL)
                statuses[victim] = os.waitpid(victim, 0)[1]
                del children[victim]
                replacement = fork_child(lambda: _client_main(run_dir, shared, args.nodes, deadline))
                children[replacement] = args.nodes
                killed = (victim, replacement)
                print(f"\ndemo: killed client {victim} with SIGKILL; started client {replacement}", file=out)
            totals = [_SLOT.unpack_from(shared, _SERVER.size + i * _SLOT.size) for i in range(slots)]
            total = sum(t[0] for t in totals)
            rate = (total - last_total) / max(1e-9, now - last_t)
            last_total, last_t = total, now
            line = f"  {now - started:5.1f}s  requests {total:>10,}  {rate / 1000:7.1f}k msg/s  events {sum(t[1] for t in totals):,}"
            print(f"\r{line}" if live else line, end="" if live else "\n", file=out, flush=True)
            clients_left = [pid for pid, slot in children.items() if slot >= 0]
            for pid in clients_left:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = status
                    del children[pid]
            if not any(slot >= 0 for slot in children.values()) or now > deadline + 15:
                break
        if live:
            print(file=out)
    except KeyboardInterrupt:
        print("\ndemo: interrupted, stopping", file=sys.stderr)
        return 130
    finally:
        for pid in sorted(children, key=lambda pid: -children[pid]):  # clients first, the service last
            statuses[pid] = stop_child(pid)
        shutil.rmtree(run_dir, ignore_errors=True)
    return _summary(args, shared, slots, statuses, killed, time.monotonic() - started)


def _summary(
    args: argparse.Namespace,
    shared: Any,
    slots: int,
    statuses: dict[int, int],
    killed: tuple[int, int] | None,
    elapsed: float,
) -> int:
    accepted, dropped, disconnected, served = _SERVER.unpack_from(shared, 0)
    clients = [_SLOT.unpack_from(shared, _SERVER.size + i * _SLOT.size) for i in range(slots)]
    finished = [c for c in clients if c[2] > 0]
    requests = sum(c[0] for c in clients)
    events = sum(c[1] for c in clients)
    p50_us = sorted(c[2] for c in finished)[len(finished) // 2] / 1000 if finished else 0.0
    p99_us = max((c[3] for c in finished), default=0) / 1000
    victim = killed[0] if killed else None
    failed = [pid for pid, status in statuses.items() if pid != victim and status != 0]
    ok = not failed and requests > 0
    rate = requests / args.seconds
    print(
        f"demo: {requests:,} requests ({rate / 1000:.1f}k/s) and {events:,} events over {args.nodes} client(s); "
        f"round trip p50 {p50_us:.1f} us, p99 {p99_us:.1f} us\n"
        f"demo: service saw {accepted} connections, {disconnected} closed, {dropped} dropped; "
        f"it served {served:,} requests; {'all clients finished cleanly' if ok else f'failed children: {failed}'}",
        file=sys.stderr,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "demo": "ipc",
                    "clients": args.nodes,
                    "seconds": args.seconds,
                    "elapsed_s": round(elapsed, 2),
                    "requests": requests,
                    "rate_per_s": round(rate),
                    "events": events,
                    "p50_us": round(p50_us, 1),
                    "p99_us": round(p99_us, 1),
                    "killed_and_replaced": list(killed) if killed else None,
                    "server_connections": accepted,
                    "server_dropped": dropped,
                    "ok": ok,
                }
            )
        )
    return 0 if ok else 1
