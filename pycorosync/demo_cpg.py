"""The demo's processes: ``fork_child``/``stop_child`` (children that never outlive the demo), and the cpg
process run for each node (it joins the demo group, multicasts numbered messages, records every delivery
with a hash chain and reports as JSON lines on a pipe), with ``Worker``, the parent's view of one, and
``check_order``, the comparison of the delivery sequences they recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1


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


GROUP = b"pycorosync-demo"
_MSG = struct.Struct("<IIQ")  # nodeid, pid, seq (then padding to MSG_BYTES)
MSG_BYTES = 64
MARKER_EVERY = 200  # node 1's messages with seq % MARKER_EVERY == 0 are the chain checkpoints
STATS_EVERY_S = 0.25
DRAIN_TIMEOUT_S = 30.0
RATE_PER_NODE = 1500  # messages/s each node's process offers (paced: the daemons need CPU too)
FIN_SEQ = 0xFFFFFFFFFFFFFFFF


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


class Worker:
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


def check_order(seqs: dict[str, list[int]]) -> tuple[bool, str]:
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
