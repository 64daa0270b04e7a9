"""``pycorosync demo``: a real cluster on this machine.

Starts ``--nodes`` daemons on loopback (127.0.0.1..N, a free UDP port, temporary configs and run
directories, short totem timers), shows the ring forming, runs one CPG process per node that multicasts
numbered messages and checks the delivery order (a hash chain per node, compared live at checkpoints;
at the end every two nodes' delivery sequences are compared message by message), kills one node with
SIGKILL (NODEDOWN and the new membership), restarts it (NODEUP and the rejoin of its CPG process), and
prints a summary (``--json``: a last line of JSON). Everything is stopped and removed at the end, also
on Ctrl-C.

``--ipc``: the client-connection layer alone: one echo service process, ``--nodes`` client processes
sending requests and receiving events through their shared-memory rings, one client killed and replaced.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

_SLOT = struct.Struct("<qqqq")  # per client: requests, events, p50 ns, p99 ns
_SERVER = struct.Struct("<qqqq")  # server: accepted, dropped, disconnected, requests
PAYLOAD_BYTES = 64
EVENTS_EVERY = 256  # requests between two EMIT bursts
EVENTS_PER_BURST = 8
_PR_SET_PDEATHSIG = 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="a local cluster demonstration: nodes on loopback, CPG traffic, a node crash and its rejoin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=3, metavar="N", help="cluster nodes (--ipc: client processes); 3")
    p.add_argument("--seconds", type=float, default=None, metavar="N",
                   help="how long traffic runs (default 10; --ipc: 5)")
    p.add_argument("--json", action="store_true", help="end with one line of JSON with the results")
    p.add_argument("--ipc", action="store_true", help="the IPC-only demo: one echo service and client processes")
    p.set_defaults(func=_run)


# ---------------------------------------------------------------------------------------------- children
def fork_child(child: Callable[[], int | None]) -> int:
    """Runs ``child()`` in a forked process and returns its pid. The child ignores Ctrl-C (the parent
    handles it), dies on SIGTERM, and gets SIGTERM when the parent dies, so nothing outlives a killed
    demo or benchmark. Fork before starting any thread."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() == parent:  # else the parent died before prctl took effect
                code = child() or 0
        except BaseException as exc:
            with contextlib.suppress(Exception):
                sys.stderr.write(f"demo: child {os.getpid()} failed: {exc!r}\n")
        finally:
            os._exit(code)
    return pid


def stop_child(pid: int, grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``; reaps the child and returns its wait status."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


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


# -------------------------------------------------------------------------------------------------- main
def _run_ipc(args: argparse.Namespace) -> int:
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


# ============================================================================================ cluster demo
GROUP = b"pycorosync-demo"
DEMO_TOTEM = {"token": 1000, "token_coefficient": 0, "join": 50}
_MSG = struct.Struct("<IIQ")  # nodeid, pid, seq (then padding to MSG_BYTES)
MSG_BYTES = 64
MARKER_EVERY = 200  # node 1's messages with seq % MARKER_EVERY == 0 are the chain checkpoints
STATS_EVERY_S = 0.25
DRAIN_TIMEOUT_S = 30.0
RATE_PER_NODE = 1500  # messages/s each node's process offers (paced: the daemons need CPU too)
FIN_SEQ = 0xFFFFFFFFFFFFFFFF
MAX_BASE_CHARS = 64


def _msg_id(nodeid: int, pid: int, seq: int) -> int:
    return (nodeid & 0xFF) << 56 | (pid & 0xFFFFFF) << 32 | (seq & 0xFFFFFFFF)


def _worker_main(run_dir: str, out_fd: int, ids_path: str) -> int:
    """One cpg process of one node: joins GROUP, multicasts numbered messages until SIGUSR1, records every
    delivery (its id into ``ids_path``, a hash chain reset at each group confchg) and reports on ``out_fd``."""
    import array
    import hashlib

    from pycorosync.cpg import CPG_TYPE_AGREED, ConfChg, CpgClient, CsError, CsErrorCode, Deliver, TotemConfChg

    phase = "wait"  # SIGUSR2: start sending (once every member sees every other), SIGUSR1: stop and drain

    def start_sending(*_: object) -> None:
        nonlocal phase
        if phase == "wait":
            phase = "send"

    def stop_sending(*_: object) -> None:
        nonlocal phase
        phase = "drain"

    signal.signal(signal.SIGUSR2, start_sending)
    signal.signal(signal.SIGUSR1, stop_sending)

    def report(obj: dict[str, Any]) -> None:
        os.write(out_fd, (json.dumps(obj) + "\n").encode())

    ids = array.array("Q")
    sent = 0
    chain = b""
    marker: tuple[int, str] | None = None
    pid = os.getpid()
    status = "done"
    try:
        cpg = CpgClient(run_dir, timeout=10.0)
    except CsError as exc:
        report({"ev": "error", "what": f"cpg connect: {exc}"})
        return 1
    with cpg:
        nodeid = cpg.local_get()
        join_deadline = time.monotonic() + 20
        while True:
            try:
                cpg.join(GROUP)
                break
            except CsError as exc:
                if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > join_deadline:
                    report({"ev": "error", "what": f"cpg_join: {exc}"})
                    return 1
                time.sleep(0.02)
        report({"ev": "joined", "nodeid": nodeid, "pid": pid})
        pad = bytes(MSG_BYTES - _MSG.size)
        next_stats = time.monotonic()
        next_send = time.monotonic()
        members: set[tuple[int, int]] = set()
        fins: set[tuple[int, int]] = set()
        fin_sent = False
        drain_deadline = None

        def handle(event: Any) -> None:
            nonlocal chain, marker, members
            if isinstance(event, Deliver):
                n, p_, seq = _MSG.unpack_from(event.msg)
                if seq == FIN_SEQ:
                    fins.add((n, p_))
                    return
                mid = _msg_id(n, p_, seq)
                ids.append(mid)
                chain = hashlib.blake2b(chain + mid.to_bytes(8, "little"), digest_size=8).digest()
                if n == 1 and seq % MARKER_EVERY == 0:
                    marker = (seq, chain.hex())
            elif isinstance(event, ConfChg):
                chain = b""  # every member delivers the same messages after the same confchg
                members = {(a.nodeid, a.pid) for a in event.members}
                report({"ev": "confchg", "t": time.monotonic(), "members": [[a.nodeid, a.pid] for a in event.members],
                        "left": [[a.nodeid, a.pid, int(a.reason)] for a in event.left],
                        "joined": [[a.nodeid, a.pid, int(a.reason)] for a in event.joined]})
            elif isinstance(event, TotemConfChg):
                report({"ev": "totem", "t": time.monotonic(), "members": list(event.members),
                        "ring_id": [event.ring_id.nodeid, event.ring_id.seq]})

        def send(seq: int) -> bool:
            try:
                cpg.mcast_joined([_MSG.pack(nodeid, pid, seq), pad], CPG_TYPE_AGREED)
                return True
            except CsError as exc:
                if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN:
                    raise
                return False

        try:
            while True:
                while (event := cpg.next_event(0.0)) is not None:
                    handle(event)
                now = time.monotonic()
                if phase == "wait":
                    event = cpg.next_event(0.05)
                    if event is not None:
                        handle(event)
                    next_send = now
                elif phase == "send":
                    if now < next_send:
                        event = cpg.next_event(next_send - now)
                        if event is not None:
                            handle(event)
                    elif send(sent):
                        sent += 1
                        next_send = max(next_send + 1.0 / RATE_PER_NODE, now - 0.1)
                    else:
                        event = cpg.next_event(0.002)  # flow control: deliveries first
                        if event is not None:
                            handle(event)
                else:
                    # after its last message each process multicasts a FIN; in one total order, the FINs
                    # of every member mean that every member's messages were delivered here
                    if drain_deadline is None:
                        drain_deadline = now + DRAIN_TIMEOUT_S
                    if not fin_sent:
                        fin_sent = send(FIN_SEQ)
                    if (fin_sent and members <= fins) or now > drain_deadline:
                        status = "done" if members <= fins else f"drain timed out: FINs {sorted(fins)} of {sorted(members)}"
                        break
                    event = cpg.next_event(0.05)
                    if event is not None:
                        handle(event)
                if now >= next_stats:
                    next_stats = now + STATS_EVERY_S
                    report({"ev": "stats", "sent": sent, "delivered": len(ids), "marker": marker})
        except CsError as exc:
            status = f"node gone ({exc.code.name if hasattr(exc.code, 'name') else exc.code})"
    with open(ids_path, "wb") as f:
        ids.tofile(f)
    report({"ev": "stats", "sent": sent, "delivered": len(ids), "marker": marker})
    report({"ev": "done", "status": status, "sent": sent})
    return 0


class _Worker:
    """The parent's view of one worker process."""

    def __init__(self, nodeid: int, gen: int, run_dir: str, ids_path: str) -> None:
        self.nodeid, self.gen, self.ids_path = nodeid, gen, ids_path
        r, w = os.pipe()
        self.pid = fork_child(lambda: _worker_main(run_dir, w, ids_path))
        os.close(w)
        os.set_blocking(r, False)
        self.fd = r
        self.buf = b""
        self.stats: dict[str, Any] = {"sent": 0, "delivered": 0, "marker": None}
        self.events: list[dict[str, Any]] = []
        self.joined = False
        self.members = 0  # group size in the last confchg it reported
        self.done: dict[str, Any] | None = None
        self.status: int | None = None

    def read(self) -> list[dict[str, Any]]:
        """New events (stats are folded into ``stats``)."""
        new: list[dict[str, Any]] = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                ev = obj.get("ev")
                if ev == "stats":
                    self.stats = obj
                elif ev == "joined":
                    self.joined = True
                elif ev == "done":
                    self.done = obj
                else:
                    if ev == "confchg":
                        self.members = len(obj["members"])
                    new.append(obj)
                    self.events.append(obj)
        return new

    def signal(self, sig: int) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def reap(self, block: bool = False) -> bool:
        if self.status is None:
            done, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            if done:
                self.status = status
        return self.status is not None

    def stop(self) -> None:
        if self.status is None:
            self.status = stop_child(self.pid)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _Show:
    """Output: a live progress line on a terminal, plain lines otherwise (all on stderr)."""

    def __init__(self) -> None:
        self.out = sys.stderr
        self.live = self.out.isatty()
        self.dirty = False

    def say(self, text: str) -> None:
        if self.dirty:
            print(file=self.out)
            self.dirty = False
        print(f"demo: {text}", file=self.out, flush=True)

    def progress(self, text: str) -> None:
        if self.live:
            print(f"\r{text}\x1b[K", end="", file=self.out, flush=True)
            self.dirty = True
        else:
            print(text, file=self.out, flush=True)


def _wait(cond: Callable[[], Any], timeout: float, what: str, tick: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        if tick is not None:
            tick()
        time.sleep(0.05)


def _ring_or_dead(cluster: Any, ids: Any) -> list[int] | None:
    """The synchronized ring of exactly ``ids``; RuntimeError as soon as one of their daemons exited."""
    dead = [i for i in ids if not cluster.nodes[i].alive]
    if dead:
        raise RuntimeError(f"the daemon of node(s) {dead} exited (logs below)")
    ring = cluster.ring_of(ids)
    return list(ring) if ring else None


def _check_order(seqs: dict[str, list[int]]) -> tuple[bool, str]:
    """Every two delivery sequences list the messages they share in the same order."""
    names = list(seqs)
    sets = {k: set(v) for k, v in seqs.items()}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sets[a] & sets[b]
            fa = [m for m in seqs[a] if m in common]
            fb = [m for m in seqs[b] if m in common]
            if fa != fb:
                at = next(k for k, (x, y) in enumerate(zip(fa, fb, strict=True)) if x != y)
                return False, f"{a} and {b} differ at their common message {at} of {len(fa)}"
    return True, "same order everywhere"


def _run(args: argparse.Namespace) -> int:
    if args.ipc:
        return _run_ipc(args)
    if args.seconds is None:
        args.seconds = 10.0
    if not 2 <= args.nodes <= 16:
        print("demo: --nodes must be between 2 and 16", file=sys.stderr)
        return 1
    if not 2 <= args.seconds <= 3600:
        print("demo: --seconds must be between 2 and 3600", file=sys.stderr)
        return 1
    from pathlib import Path

    from pycorosync import jitcache
    from pycorosync.localcluster import SHM_DIR, Cluster

    jitcache.configure()
    jitcache.check_warm("demo")
    from pycorosync.ipc import fastpath, ring_kernels, wakeup

    ring_kernels.warm()  # once here, so that every forked worker starts with the kernels loaded
    wakeup.warm()
    fastpath.warm()

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    show = _Show()
    base = Path(tempfile.mkdtemp(prefix="pycorosync-demo-"))
    if len(str(base)) > MAX_BASE_CHARS:  # the nodes' unix sockets live below it (108 bytes at most)
        base.rmdir()
        base = Path(tempfile.mkdtemp(prefix="pycorosync-demo-", dir="/tmp"))
    cluster = Cluster(base, args.nodes, totem=DEMO_TOTEM, test_services=(), name_prefix="demo")
    workers: list[_Worker] = []
    victim_id = args.nodes
    result: dict[str, Any] = {"nodes": args.nodes}
    ok = False
    try:
        show.say(f"starting {args.nodes} nodes on 127.0.0.1-{args.nodes}, UDP port {cluster.port}, "
                 f"token {DEMO_TOTEM['token']} ms (run dirs under {base})")
        t0 = time.monotonic()
        cluster.start()
        ring = _wait(lambda: _ring_or_dead(cluster, cluster.nodes), 90, "the ring to form")
        show.say(f"ring formed in {time.monotonic() - t0:.1f} s: members {sorted(cluster.nodes)}, "
                 f"ring id {ring[0]}.{ring[1]}")

        def spawn(nodeid: int, gen: int) -> _Worker:
            w = _Worker(nodeid, gen, str(cluster.nodes[nodeid].run_dir), str(base / f"ids-{nodeid}-{gen}.bin"))
            workers.append(w)
            return w

        for i in cluster.nodes:
            spawn(i, 0)
        live = {w.nodeid: w for w in workers}
        survivors = [i for i in cluster.nodes if i != victim_id]
        events: list[tuple[int, dict[str, Any]]] = []

        def pump() -> None:
            for w in workers:
                events.extend((w.nodeid, e) for e in w.read())

        def joined_all() -> bool:
            pump()
            bad = [w for w in workers if w.reap() and not w.joined]
            if bad:
                raise RuntimeError(f"the cpg process of node {bad[0].nodeid} failed: {bad[0].events[-1:]}")
            return all(w.joined for w in workers)

        _wait(joined_all, 30, "every node's cpg process to join")
        _wait(lambda: (pump(), all(w.members == args.nodes for w in workers))[1], 30,
              "every cpg process to see the whole group")
        for w in workers:
            w.signal(signal.SIGUSR2)
        show.say(f"one cpg process per node joined group {GROUP.decode()!r}; sending {MSG_BYTES}-byte messages "
                 f"from every node")
        t_traffic = time.monotonic()
        last = {"t": t_traffic, "n": 0}

        def chain_state() -> str:
            marks: dict[int, set[str]] = {}
            for w in live.values():
                m = w.stats.get("marker")
                if m:
                    marks.setdefault(m[0], set()).add(m[1])
            shared = [s for s in sorted(marks) if len(marks[s]) > 0]
            if not shared:
                return "chain -"
            s = shared[-1]
            return f"chain@{s} {'ok' if len(marks[s]) == 1 else 'DIFFERS'}"

        def tick() -> None:
            pump()
            now = time.monotonic()
            if now - last["t"] < (0.5 if show.live else 1.0):
                return
            n = live[1].stats["delivered"]
            rate = (n - last["n"]) / (now - last["t"])
            last.update(t=now, n=n)
            per_node = " ".join(f"n{i}:{live[i].stats['delivered']}" for i in sorted(live))
            show.progress(f"  {now - t_traffic:5.1f}s  {rate:8.0f} msg/s  delivered {per_node}  {chain_state()}")

        # -- crash one node -------------------------------------------------------------------------------
        end_first = t_traffic + args.seconds * 0.3
        while time.monotonic() < end_first:
            tick()
            time.sleep(0.05)
        node = cluster.nodes[victim_id]
        pids = node.pids()
        t_kill = time.monotonic()
        node.kill()
        show.say(f"SIGKILL to node {victim_id} (pids {sorted(pids.values())})")

        def nodedown_seen() -> float | None:
            for nid, e in events:
                if nid == 1 and e["ev"] == "confchg" and e["t"] >= t_kill and any(
                        a[0] == victim_id and a[2] == 3 for a in e["left"]):  # CPG_REASON_NODEDOWN
                    return float(e["t"])
            return None

        t_down = _wait(nodedown_seen, 60, f"NODEDOWN of node {victim_id}", tick)
        result["nodedown_detected_s"] = round(t_down - t_kill, 2)
        ring = _wait(lambda: _ring_or_dead(cluster, survivors), 30, "the survivors' ring", tick)
        show.say(f"NODEDOWN node {victim_id} seen after {t_down - t_kill:.2f} s; new membership {survivors}, "
                 f"ring id {ring[0]}.{ring[1]}")
        live[victim_id].reap(block=False)

        # -- restart it -----------------------------------------------------------------------------------
        t_restart = time.monotonic()
        node.start()
        show.say(f"restarting node {victim_id}")

        def node_up() -> float | None:
            for nid, e in events:
                if nid == 1 and e["ev"] == "totem" and e["t"] >= t_restart and victim_id in e["members"]:
                    return float(e["t"])
            return None

        t_up = _wait(node_up, 90, f"node {victim_id} back in the ring", tick)
        _wait(lambda: _ring_or_dead(cluster, cluster.nodes), 30, "the full ring", tick)
        show.say(f"NODEUP node {victim_id}: back in the ring after {t_up - t_restart:.2f} s; members "
                 f"{sorted(cluster.nodes)}")
        live[victim_id] = spawn(victim_id, 1)

        def rejoined() -> float | None:
            for nid, e in events:
                if nid == 1 and e["ev"] == "confchg" and e["t"] >= t_restart and any(
                        a[0] == victim_id for a in e["joined"]):
                    return float(e["t"])
            return None

        t_join = _wait(rejoined, 30, f"node {victim_id}'s cpg process to rejoin the group", tick)
        _wait(lambda: live[victim_id].members == args.nodes, 30, f"node {victim_id}'s process to see the group", tick)
        live[victim_id].signal(signal.SIGUSR2)
        result["rejoin_s"] = round(t_join - t_restart, 2)
        show.say(f"node {victim_id}'s cpg process rejoined the group {t_join - t_restart:.2f} s after the restart")

        # -- run on, then stop the traffic and compare ----------------------------------------------------
        end = max(t_traffic + args.seconds, time.monotonic() + 1.5)
        while time.monotonic() < end:
            tick()
            time.sleep(0.05)
        t_stop = time.monotonic()
        for w in workers:
            w.signal(signal.SIGUSR1)
        _wait(lambda: (pump(), all(w.reap() for w in workers))[1], DRAIN_TIMEOUT_S + 10, "the cpg processes to drain", None)
        pump()
        show.say(f"traffic stopped after {t_stop - t_traffic:.1f} s")
        seqs: dict[str, list[int]] = {}
        for w in workers:
            with contextlib.suppress(OSError):
                import array

                a = array.array("Q")
                a.frombytes(Path(w.ids_path).read_bytes())
                seqs[f"node {w.nodeid}" + (" (restarted)" if w.gen else " (killed)" if w.nodeid == victim_id else "")] \
                    = a.tolist()
        order_ok, why = _check_order(seqs)
        undrained = [f"node {w.nodeid}: {w.done and w.done['status']}" for w in workers
                     if w.nodeid != victim_id or w.gen == 1 if not (w.done and w.done["status"] == "done")]
        # a message a survivor's process sent was delivered to every survivor, exactly once
        full = {w.nodeid: w for w in workers if w.gen == 0 and w.nodeid != victim_id}
        lost = []
        for i in full:
            got = seqs.get(f"node {i}", [])
            if len(set(got)) != len(got):
                lost.append(f"node {i} delivered a message twice")
            for j, s in full.items():
                sent_j = s.done["sent"] if s.done else -1
                mine = {m & 0xFFFFFFFF for m in got if m >> 56 == j and (m >> 32) & 0xFFFFFF == (s.pid & 0xFFFFFF)}
                if len(mine) != sent_j:
                    missing = sorted(set(range(max(sent_j, 0))) - mine)
                    lost.append(f"node {i} delivered {len(mine)} of node {j}'s {sent_j} messages "
                                f"(missing seq {missing[:5]})")
        delivered = len(seqs.get("node 1", []))
        result.update(delivered=delivered, order_ok=order_ok and not lost,
                      msgs_per_s=round(delivered / max(1e-9, t_stop - t_traffic)))
        lost += undrained
        show.say(f"order check: {why}" + (f"; PROBLEMS: {lost}" if lost else "; nothing lost"))
        ok = bool(result["order_ok"]) and delivered > 0
    except KeyboardInterrupt:
        show.say("interrupted, stopping")
        return 130
    except (TimeoutError, RuntimeError) as exc:
        show.say(f"FAILED: {exc}")
        with contextlib.suppress(Exception):
            sys.stderr.write(cluster.logs(tail=15) + "\n")
    finally:
        for w in workers:
            w.stop()
        cluster.stop()
        leftovers = sorted(p.name for p in SHM_DIR.glob(f"pcs-{cluster.name}-*"))
        shutil.rmtree(base, ignore_errors=True)
        if leftovers:
            show.say(f"left behind: {leftovers}")
    show.say(f"summary: {args.nodes} nodes, {result.get('delivered', 0):,} messages delivered in one order "
             f"({result.get('msgs_per_s', 0):,} msg/s), NODEDOWN detected in {result.get('nodedown_detected_s')} s, "
             f"rejoin in {result.get('rejoin_s')} s; cluster stopped and cleaned up")
    if args.json:
        print(json.dumps({"nodes": args.nodes, "delivered": result.get("delivered", 0),
                          "order_ok": bool(result.get("order_ok")), "msgs_per_s": result.get("msgs_per_s", 0),
                          "nodedown_detected_s": result.get("nodedown_detected_s"),
                          "rejoin_s": result.get("rejoin_s")}))
    return 0 if ok else 1
