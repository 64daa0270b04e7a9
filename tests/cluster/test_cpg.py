"""CPG on real 3-node clusters on loopback: joins, leaves, order, crashes, restarts, large messages."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from pycorosync.cpg import (
    CPG_REASON_JOIN,
    CPG_REASON_LEAVE,
    CPG_REASON_NODEDOWN,
    CPG_REASON_NODEUP,
    CPG_REASON_PROCDOWN,
    ConfChg,
    CpgAddress,
    CpgClient,
    CpgEvent,
    CsError,
    CsErrorCode,
)
from tests.cluster.conftest import Cluster

GROUP = b"cluster-test"


def cpg(cluster: Cluster, nodeid: int) -> CpgClient:
    return CpgClient(str(cluster.nodes[nodeid].run_dir), timeout=10.0)


def next_of(c: CpgClient, kind: type, timeout: float = 15.0, keep: list[CpgEvent] | None = None) -> CpgEvent:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        event = c.next_event(max(0.0, left))
        assert event is not None, f"no {kind.__name__} within {timeout}s (kept {keep})"
        if keep is not None:
            keep.append(event)
        if isinstance(event, kind):
            return event


def send(c: CpgClient, msg: bytes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            c.mcast_joined(msg)
            return
        except CsError as exc:
            if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.002)


def join(c: CpgClient, group: bytes = GROUP, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            c.join(group)
            return
        except CsError as exc:
            if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


@pytest.fixture
def clients() -> Iterator[Callable[[CpgClient], CpgClient]]:
    with ExitStack() as stack:
        yield lambda c: stack.enter_context(c)


def test_join_and_leave_are_seen_on_every_node_in_the_same_order(
        shared3: Cluster, clients: Callable[[CpgClient], CpgClient], group: bytes) -> None:
    handles = {n: clients(cpg(shared3, n)) for n in (1, 2, 3)}
    for n in (1, 2, 3):
        join(handles[n], group)
        next_of(handles[n], ConfChg)  # its own join
    # every node's handle saw the later joins: node 1 saw 2 and 3 join, in one order
    seen1 = [next_of(handles[1], ConfChg), next_of(handles[1], ConfChg)]
    seen2 = [next_of(handles[2], ConfChg)]
    assert [e.joined[0].nodeid for e in seen1] == [2, 3]  # type: ignore[union-attr]
    assert seen2[0] == seen1[1]
    members = handles[3].membership_get()
    assert [(a.nodeid, a.pid) for a in members] == [(m.nodeid, m.pid) for m in seen1[1].members]  # type: ignore[union-attr]
    handles[2].leave()
    left = [next_of(handles[n], ConfChg) for n in (1, 2, 3)]
    assert left[0] == left[1] == left[2]
    assert left[0].left == (CpgAddress(2, os.getpid(), CPG_REASON_LEAVE),)  # type: ignore[union-attr]
    assert all(a.reason == 0 for a in left[0].members)  # type: ignore[union-attr]
    assert handles[1].local_get() == 1 and handles[3].local_get() == 3
    assert CPG_REASON_JOIN == 1


# -- worker processes: one cpg handle each (a process may hold one handle per group) ----------------------
WORKER = r"""
import hashlib, json, os, select, sys, time
from pycorosync.cpg import CpgClient, ConfChg, Deliver, TotemConfChg, CsError, CsErrorCode

run_dir, group = sys.argv[1], sys.argv[2].encode()
out = sys.stdout
def emit(**kw):
    out.write(json.dumps(kw) + "\n"); out.flush()
c = CpgClient(run_dir, timeout=20)
chain = b""
count = 0
stalled = False

def drain(limit=None):
    global chain, count
    n = 0
    while limit is None or n < limit:
        ev = c.next_event(0)
        if ev is None:
            return
        n += 1
        if isinstance(ev, Deliver):
            chain = hashlib.sha256(chain + hashlib.sha256(ev.msg).digest()).digest()
            count += 1
            emit(ev="deliver", nodeid=ev.nodeid, pid=ev.pid, len=len(ev.msg), count=count, chain=chain.hex()[:16],
                 head=ev.msg[:24].decode("latin-1"))
        elif isinstance(ev, ConfChg):
            f = lambda l: [[a.nodeid, a.pid, a.reason] for a in l]
            emit(ev="confchg", group=ev.group.decode(), members=f(ev.members), left=f(ev.left), joined=f(ev.joined),
                 t=time.monotonic())
        elif isinstance(ev, TotemConfChg):
            emit(ev="totem", ring=[ev.ring_id.nodeid, ev.ring_id.seq], members=list(ev.members))

def retry(fn, *a):
    deadline = time.monotonic() + 30
    while True:
        try:
            return fn(*a)
        except CsError as exc:
            if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                raise
        if not stalled:
            drain(64)
        time.sleep(0.001)

emit(ev="ready", pid=os.getpid(), nodeid=c.local_get())
buf = b""
while True:
    ready, _, _ = select.select([0] if stalled else [0, c.fileno()], [], [], 0.2)
    if 0 in ready:
        data = os.read(0, 4096)
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode().split()
            if cmd[0] == "join":
                retry(c.join, group); emit(ev="joined")
            elif cmd[0] == "leave":
                retry(c.leave); emit(ev="left")
            elif cmd[0] == "send":
                n, size = int(cmd[1]), int(cmd[2])
                for i in range(n):
                    head = f"{c.local_get() if i == 0 else ''}:{os.getpid()}:{i}:".encode()
                    body = (head * (size // len(head) + 1))[:size] if size > len(head) else head
                    retry(c.mcast_joined, body)
                    if not stalled:
                        drain(16)
                emit(ev="sent", n=n)
            elif cmd[0] == "stall":
                stalled = True; emit(ev="stalled")
            elif cmd[0] == "members":
                emit(ev="members", members=[[a.nodeid, a.pid] for a in c.membership_get()])
            elif cmd[0] == "quit":
                c.close(); emit(ev="bye"); sys.exit(0)
    if not stalled:
        drain()
"""


class Worker:
    """A child process with one cpg handle on a node; commands on stdin, JSON events on stdout."""

    def __init__(self, cluster: Cluster, nodeid: int, group: bytes = GROUP) -> None:
        self.nodeid = nodeid
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(cluster.nodes[nodeid].run_dir), group.decode()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.pid = self.wait(lambda e: e["ev"] == "ready", 30)["pid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """The first event (already seen or coming) matching ``pred``; consumed events stay in ``events``."""
        for e in self.events:
            if not e.get("_taken") and pred(e):
                e["_taken"] = True
                return e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.01, left))
            except queue.Empty:
                line = None
            if line == b"":
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"worker on node {self.nodeid} exited: {err[-2000:]}")
            if line is not None:
                e = json.loads(line)
                self.events.append(e)
                if pred(e):
                    e["_taken"] = True
                    return e
            if time.monotonic() >= deadline:
                raise AssertionError(f"worker on node {self.nodeid}: no matching event within {timeout}s; "
                                     f"last events {self.events[-5:]}")

    def confchg(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait(lambda e: e["ev"] == "confchg", timeout)

    def deliveries(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        self.wait(lambda e: e["ev"] == "deliver" and e["count"] >= count, timeout)
        return [e for e in self.events if e["ev"] == "deliver"]

    def join(self) -> dict[str, Any]:
        self.command("join")
        self.wait(lambda e: e["ev"] == "joined")
        return self.confchg()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


@pytest.fixture
def group(request: pytest.FixtureRequest) -> bytes:
    """A CPG group of this test's own: tests on the module's shared cluster never see each other's."""
    return b"t-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16].encode()


@pytest.fixture
def workers(group: bytes) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(cluster: Cluster, nodeid: int, grp: bytes | None = None) -> Worker:
        w = Worker(cluster, nodeid, grp or group)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def joined_all(cluster: Cluster, make: Callable[..., Worker], nodes: tuple[int, ...] = (1, 2, 3)) -> list[Worker]:
    """One worker per node, all joined, every one having seen every join."""
    ws = [make(cluster, n) for n in nodes]
    for w in ws:
        w.join()
    for w in ws:
        last = [e for e in w.events if e["ev"] == "confchg"][-1]
        if len(last["members"]) != len(ws):
            w.wait(lambda e: e["ev"] == "confchg" and len(e["members"]) == len(ws))
    for w in ws:  # the joins are history: later waits look at what comes next
        for e in w.events:
            e["_taken"] = True
    return ws


def test_concurrent_senders_are_seen_in_one_order_on_every_node(
        shared3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(shared3, workers)
    for w in ws:
        w.command("send 150 200")
    total = 450
    chains = [w.deliveries(total)[total - 1]["chain"] for w in ws]
    assert chains[0] == chains[1] == chains[2]
    heads = [[e["head"] for e in w.events if e["ev"] == "deliver"] for w in ws]
    assert heads[0] == heads[1] == heads[2]
    senders = {e["pid"] for e in ws[0].events if e["ev"] == "deliver"}
    assert senders == {w.pid for w in ws}


def test_two_concurrent_senders_same_order_and_fifo_per_sender(
        shared3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(shared3, workers)
    ws[0].command("send 200 64")
    ws[2].command("send 200 64")
    chains = [w.deliveries(400)[399]["chain"] for w in ws]
    assert chains[0] == chains[1] == chains[2]
    for sender in (ws[0], ws[2]):
        idx = [int(e["head"].split(":")[2]) for e in ws[1].events if e["ev"] == "deliver" and e["pid"] == sender.pid]
        assert idx == list(range(200))


def test_killed_node_is_nodedown_on_every_survivor_within_token_plus_consensus(
        cluster3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(cluster3, workers)
    victim = ws[2]
    t0 = time.monotonic()
    cluster3.nodes[3].kill()
    limit = (cluster3.token_ms + cluster3.consensus_ms) / 1000
    for w in ws[:2]:
        e = w.wait(lambda e: e["ev"] == "confchg" and bool(e["left"]), timeout=30)
        assert e["left"] == [[3, victim.pid, CPG_REASON_NODEDOWN]]
        assert sorted(m[0] for m in e["members"]) == [1, 2]
        elapsed = e["t"] - t0
        # detection takes token + consensus; sync and delivery to the client are allowed one more token
        assert elapsed < limit + cluster3.token_ms / 1000 + 1.0, f"NODEDOWN after {elapsed:.2f}s"
        totem = w.wait(lambda e: e["ev"] == "totem" and e["members"] == [1, 2])
        assert totem["ring"][1] > 0


def test_killed_client_is_procdown_on_every_node(shared3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(shared3, workers)
    ws[1].proc.kill()
    ws[1].proc.wait(10)
    for w in (ws[0], ws[2]):
        e = w.wait(lambda e: e["ev"] == "confchg" and bool(e["left"]), timeout=20)
        assert e["left"] == [[2, ws[1].pid, CPG_REASON_PROCDOWN]]


def test_sigterm_of_a_daemon_is_seen_as_a_leave_quickly(cluster3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(cluster3, workers)
    t0 = time.monotonic()
    cluster3.nodes[2].stop()
    for w in (ws[0], ws[2]):
        e = w.wait(lambda e: e["ev"] == "confchg" and bool(e["left"]), timeout=20)
        assert e["left"][0][:2] == [2, ws[1].pid]
        assert e["left"][0][2] in (CPG_REASON_NODEDOWN, CPG_REASON_PROCDOWN)
        # the daemon stops its services (its clients leave) and totem leaves the ring: no token timeout
        assert e["t"] - t0 < cluster3.token_ms / 1000 + 1.0, f"leave seen after {e['t'] - t0:.2f}s"


def test_restarted_node_comes_back_and_its_new_processes_are_seen(
        cluster3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(cluster3, workers)
    cluster3.nodes[3].kill()
    ws[0].wait(lambda e: e["ev"] == "confchg" and bool(e["left"]), timeout=30)
    cluster3.nodes[3].start()
    cluster3.wait_ring([1, 2, 3])
    ws[0].wait(lambda e: e["ev"] == "totem" and e["members"] == [1, 2, 3], timeout=30)
    back = workers(cluster3, 3)
    back.join()
    e = ws[0].wait(lambda e: e["ev"] == "confchg" and bool(e["joined"]), timeout=30)
    assert e["joined"][0][:2] == [3, back.pid]
    assert e["joined"][0][2] in (CPG_REASON_JOIN, CPG_REASON_NODEUP)


def test_paused_node_is_nodedown_then_nodeup_and_views_agree(
        cluster3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(cluster3, workers)
    totem3 = cluster3.nodes[3].child_pid("totem")
    assert totem3 is not None
    os.kill(totem3, signal.SIGSTOP)
    try:
        down = ws[0].wait(lambda e: e["ev"] == "confchg" and bool(e["left"]), timeout=30)
        assert down["left"] == [[3, ws[2].pid, CPG_REASON_NODEDOWN]]
    finally:
        os.kill(totem3, signal.SIGCONT)
    up = ws[0].wait(lambda e: e["ev"] == "confchg" and bool(e["joined"]), timeout=60)
    assert up["joined"] == [[3, ws[2].pid, CPG_REASON_NODEUP]]
    # node 3's member saw the others go and come back the same way
    w3_left = ws[2].wait(lambda e: e["ev"] == "confchg" and bool(e["left"]), timeout=30)
    assert {tuple(a[:2]) for a in w3_left["left"]} == {(1, ws[0].pid), (2, ws[1].pid)}
    w3_up = ws[2].wait(lambda e: e["ev"] == "confchg" and bool(e["joined"]), timeout=30)
    assert all(a[2] == CPG_REASON_NODEUP for a in w3_up["joined"])
    # node 2's member must have seen the rejoin too before its view is compared
    w2_up = ws[1].wait(lambda e: e["ev"] == "confchg" and bool(e["joined"]) and e["joined"][0][2] == CPG_REASON_NODEUP,
                       timeout=30)
    assert w2_up["joined"] == [[3, ws[2].pid, CPG_REASON_NODEUP]]
    for w in ws:
        w.command("members")
    views = [w.wait(lambda e: e["ev"] == "members")["members"] for w in ws]
    assert views[0] == views[1] == views[2] == [m[:2] for m in up["members"]] and len(views[0]) == 3


def test_largest_message_is_delivered_whole_on_every_node(shared3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(shared3, workers)
    size = 16 * 1024 * 1024 - 256
    ws[0].command(f"send 1 {size}")
    ws[0].command("send 1 10")
    for w in ws:
        got = w.deliveries(2, timeout=120)
        assert [e["len"] for e in got] == [size, 10]
    assert len({w.events[-1]["chain"] for w in ws if w.events[-1]["ev"] == "deliver"}) == 1


def test_slow_client_does_not_stall_the_others(shared3: Cluster, workers: Callable[..., Worker]) -> None:
    ws = joined_all(shared3, workers)
    slow = workers(shared3, 2)
    slow.join()
    slow.command("stall")
    slow.wait(lambda e: e["ev"] == "stalled")
    # far more than the slow client's event ring holds
    ws[0].command("send 48 262144")
    for w in ws:
        assert len(w.deliveries(48, timeout=120)) == 48
