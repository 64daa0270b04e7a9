"""The cpg client library against the cpg service over real IPC, on a one-node loopback ring.

``LoopbackCpg`` is the real ``CpgService`` with Totem replaced by a loop back to itself (its own
messages delivered in submit order from its event loop): every request, event, piece and error goes
through the real rings, the real service and the real client.
"""

from __future__ import annotations

import array
import asyncio
import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycorosync.cpg import (
    CPG_FLOW_CONTROL_DISABLED,
    CPG_ITERATION_ALL,
    CPG_ITERATION_NAME_ONLY,
    CPG_ITERATION_ONE_GROUP,
    CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    CPG_REASON_JOIN,
    CPG_REASON_LEAVE,
    CPG_REASON_PROCDOWN,
    CPG_TYPE_SAFE,
    CS_DISPATCH_ALL,
    CS_DISPATCH_BLOCKING,
    CS_DISPATCH_ONE,
    CS_DISPATCH_ONE_NONBLOCKING,
    AsyncCpgClient,
    ConfChg,
    CpgAddress,
    CpgClient,
    CpgIterationDescription,
    CpgRingId,
    CsError,
    CsErrorCode,
    Deliver,
    TotemConfChg,
)
from pycorosync.engine.runtime.node import NodeInfo
from pycorosync.engine.totem.api import ConfigType, RingId
from pycorosync.ipc.client import connect
from pycorosync.ipc.framing import decode_response
from pycorosync.services.cpg import client as cpg_client, protocol as p
from pycorosync.services.cpg.service import CpgService

NODEID = 7
RING = RingId(NODEID, 4)


class LoopbackCpg(CpgService):
    """CpgService whose Totem is itself: mcast queues, the loop delivers (unless ``hold``)."""

    def exec_init(self) -> None:
        super().exec_init()
        self.queue: collections.deque[bytes] = collections.deque()
        self.refuse = False
        self.hold = False
        self.confchg(ConfigType.TRANSITIONAL, RING, (NODEID,), (), ())
        self.confchg(ConfigType.REGULAR, RING, (NODEID,), (), (NODEID,))
        self.sync_init(RING, (NODEID,), (NODEID,))
        assert self.sync_process()
        self.pump()
        self.sync_activate()
        self.sync_complete()

    def mcast(self, body: bytes, guarantee: int = 2) -> bool:
        if self.refuse:
            return False
        self.queue.append(bytes(body))
        self.call_later(0, self.pump)
        return True

    def pump(self) -> None:
        while self.queue and not self.hold:
            self.deliver(NODEID, RING, self.queue.popleft())


class Running:
    """A LoopbackCpg served from a thread; ``call(fn)`` runs fn on the service's loop thread."""

    def __init__(self, run_dir: Path) -> None:
        node = NodeInfo(config="", nodeid=NODEID, cluster="t", run_dir=str(run_dir), segment="", stats="",
                        services=(), bells={}, ring_capacity=0)
        self.service = LoopbackCpg(node)
        self.run_dir = str(run_dir)
        self._stop_r, self._stop_w = os.pipe()
        ready = threading.Event()
        self.thread = threading.Thread(target=self.service.run, kwargs={"on_ready": ready.set, "stop_fd": self._stop_r},
                                       daemon=True)
        self.thread.start()
        assert ready.wait(10), "cpg service did not start"

    def call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            fn()  # type: ignore[operator]
            done.set()

        self.service.call_later(0, run)
        assert done.wait(5), "the service loop did not run the call"

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self.thread.join(10)
        os.close(self._stop_r)
        os.close(self._stop_w)


@pytest.fixture
def cpg_node(tmp_path: Path) -> Iterator[Running]:
    node = Running(tmp_path)
    try:
        yield node
    finally:
        node.stop()


def client(node: Running, **kw: object) -> CpgClient:
    return CpgClient(node.run_dir, timeout=5.0, **kw)  # type: ignore[arg-type]


def wait_event(c: CpgClient, kind: type, timeout: float = 5.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        event = c.next_event(max(0.0, deadline - time.monotonic()))
        assert event is not None, f"no {kind.__name__} within {timeout}s"
        if isinstance(event, kind):
            return event


# ---------------------------------------------------------------------------------------------------------
def test_join_mcast_leave_round_trip_with_callbacks(cpg_node: Running) -> None:
    seen: list[tuple[str, object]] = []
    with client(cpg_node, deliver=lambda g, n, pid, m: seen.append(("deliver", (g, n, pid, m))),
                confchg=lambda g, m, left, j: seen.append(("confchg", (g, m, left, j)))) as c:
        c.join(b"grp")
        assert c.dispatch(CS_DISPATCH_ONE, timeout=5) == 1
        me = CpgAddress(NODEID, os.getpid())
        assert seen == [("confchg", (b"grp", [me], [], [CpgAddress(NODEID, os.getpid(), CPG_REASON_JOIN)]))]
        c.mcast_joined(b"hello", CPG_TYPE_SAFE)
        c.mcast_joined([b"two ", b"parts"])  # an iovec is one message
        while len(seen) < 3:
            c.dispatch(CS_DISPATCH_ONE, timeout=5)
        assert seen[1:] == [("deliver", (b"grp", NODEID, os.getpid(), b"hello")),
                            ("deliver", (b"grp", NODEID, os.getpid(), b"two parts"))]
        c.leave()
        c.dispatch(CS_DISPATCH_ONE, timeout=5)
        assert seen[-1] == ("confchg", (b"grp", [], [CpgAddress(NODEID, os.getpid(), CPG_REASON_LEAVE)], []))


def test_any_buffers_of_an_iovec_make_one_message_byte_for_byte(cpg_node: Running) -> None:
    words = array.array("H", [1, 2, 0xFFFF])
    parts = [memoryview(words), bytearray(b"ba"), b"", memoryview(b"view")[1:], b"end"]
    with client(cpg_node) as c:
        c.join(b"iov")
        wait_event(c, ConfChg)
        c.mcast_joined(parts)
        c.mcast_joined(memoryview(words))
        want = words.tobytes() + b"ba" + b"iew" + b"end"
        assert wait_event(c, Deliver).msg == want  # type: ignore[attr-defined]
        assert wait_event(c, Deliver).msg == words.tobytes()  # type: ignore[attr-defined]
        # either side of the size up to which a message is joined with its header before the push
        for size in (cpg_client._JOINED_SEND_BYTES, cpg_client._JOINED_SEND_BYTES + 1):
            body = bytes(i % 251 for i in range(size))
            c.mcast_joined(body)
            c.mcast_joined([memoryview(body)[:7], bytearray(body[7:])])
            assert wait_event(c, Deliver).msg == body  # type: ignore[attr-defined]
            assert wait_event(c, Deliver).msg == body  # type: ignore[attr-defined]


def test_events_api_without_callbacks(cpg_node: Running) -> None:
    with client(cpg_node) as a, client(cpg_node) as b:
        a.join("g")
        ev = wait_event(a, ConfChg)
        assert isinstance(ev, ConfChg) and ev.group == b"g"
        b.join(b"other")
        a.mcast_joined(b"m")
        got = wait_event(a, Deliver)
        assert got == Deliver(b"g", NODEID, os.getpid(), b"m", 2)
        assert b.next_event(0.2) == ConfChg(b"other", (CpgAddress(NODEID, os.getpid()),), (),
                                            (CpgAddress(NODEID, os.getpid(), CPG_REASON_JOIN),))
        assert b.next_event(0.1) is None  # the message to "g" is not for b


def test_join_and_leave_errors_come_back_as_cs_errors(cpg_node: Running) -> None:
    with client(cpg_node) as a, client(cpg_node) as b:
        with pytest.raises(CsError) as exc:
            a.leave(b"g")
        assert exc.value.code == CsErrorCode.CS_ERR_NOT_EXIST
        with pytest.raises(CsError) as exc:
            a.join(b"x" * 129)
        assert exc.value.code == CsErrorCode.CS_ERR_NAME_TOO_LONG
        with pytest.raises(CsError) as exc:
            a.mcast_joined(b"not joined")
        assert exc.value.code == CsErrorCode.CS_ERR_NOT_EXIST
        cpg_node.call(lambda: setattr(cpg_node.service, "hold", True))
        a.join(b"g")
        with pytest.raises(CsError) as exc:
            a.leave(b"g")
        assert exc.value.code == CsErrorCode.CS_ERR_BUSY  # join not delivered yet
        with pytest.raises(CsError) as exc:
            a.join(b"g")
        assert exc.value.code == CsErrorCode.CS_ERR_EXIST
        with pytest.raises(CsError) as exc:
            b.join(b"g")  # same process, same group, another handle
        assert exc.value.code == CsErrorCode.CS_ERR_EXIST

        def release() -> None:
            cpg_node.service.hold = False
            cpg_node.service.pump()

        cpg_node.call(release)
        wait_event(a, ConfChg)
        cpg_node.call(lambda: setattr(cpg_node.service, "hold", True))
        a.leave()
        with pytest.raises(CsError) as exc:
            a.join(b"h")
        assert exc.value.code == CsErrorCode.CS_ERR_BUSY  # leave pending
        cpg_node.call(release)


def test_full_totem_queue_holds_pipelined_messages_and_fills_the_request_ring_to_try_again(cpg_node: Running) -> None:
    with client(cpg_node) as a:
        a.join(b"g")
        wait_event(a, ConfChg)
        assert a.flow_control_state_get() == CPG_FLOW_CONTROL_DISABLED
        cpg_node.call(lambda: setattr(cpg_node.service, "refuse", True))
        body = b"y" * 65536
        sent = 0
        with pytest.raises(CsError) as exc:
            for sent in range(1, 10_000):  # the service holds the first and stops reading: the ring fills
                # half of them as an iovec: copied into the ring piece by piece, nothing of a refused one
                a.mcast_joined([b"%06d" % sent, body] if sent % 2 else b"%06d" % sent + body)
        assert exc.value.code == CsErrorCode.CS_ERR_TRY_AGAIN
        sent -= 1  # the last call was refused
        assert 16 <= sent < 200  # a few MiB of request ring, then back-pressure (not unbounded buffering)
        # while messages are held the service reads no request at all (libqb's rate limiting does the same)
        cpg_node.call(lambda: setattr(cpg_node.service, "refuse", False))
        # the service drains the full ring once it reads again: until then a send is refused, never lost
        deadline = time.monotonic() + 10.0
        while True:
            try:
                a.mcast_joined(b"last")
                break
            except CsError as again:
                assert again.code == CsErrorCode.CS_ERR_TRY_AGAIN and time.monotonic() < deadline, again
                time.sleep(0.002)
        got = [wait_event(a, Deliver).msg for _ in range(sent + 1)]  # type: ignore[attr-defined]
        assert [m[:6] for m in got[:-1]] == [b"%06d" % i for i in range(1, sent + 1)]  # none lost, in order
        assert got[-1] == b"last"
        assert a.flow_control_state_get() == CPG_FLOW_CONTROL_DISABLED


def test_leave_after_held_messages_waits_for_them(cpg_node: Running) -> None:
    with client(cpg_node) as a:
        a.join(b"g")
        wait_event(a, ConfChg)
        cpg_node.call(lambda: setattr(cpg_node.service, "refuse", True))
        a.mcast_joined(b"held 1")
        a.mcast_joined(b"held 2")
        cpg_node.call(lambda: setattr(cpg_node.service, "refuse", False))
        a.leave()  # pipelined messages accepted before the leave are multicast before it
        events = [a.next_event(5.0) for _ in range(3)]
        assert [type(e).__name__ for e in events] == ["Deliver", "Deliver", "ConfChg"]
        assert [e.msg for e in events[:2]] == [b"held 1", b"held 2"]  # type: ignore[union-attr]
        with pytest.raises(CsError) as exc:
            a.mcast_joined(b"after leave")
        assert exc.value.code == CsErrorCode.CS_ERR_NOT_EXIST


def test_largest_atomic_message_goes_through_the_rings_in_pieces_and_arrives_whole(cpg_node: Running) -> None:
    with client(cpg_node) as a:
        assert a.max_atomic_msgsize_get() == p.MAX_ATOMIC_MSGSIZE >= 16 * 1024 * 1024 - 256
        a.join(b"big")
        wait_event(a, ConfChg)
        big = (os.urandom(1 << 16) * ((p.MAX_ATOMIC_MSGSIZE >> 16) + 1))[:p.MAX_ATOMIC_MSGSIZE]
        assert len(big) == p.MAX_ATOMIC_MSGSIZE
        a.mcast_joined(big)
        a.mcast_joined(b"after")
        got = wait_event(a, Deliver, timeout=30)
        assert isinstance(got, Deliver) and len(got.msg) == len(big) and got.msg == big
        after = wait_event(a, Deliver)
        assert isinstance(after, Deliver) and after.msg == b"after"
        with pytest.raises(CsError) as exc:
            a.mcast_joined(b"x" * (p.MAX_ATOMIC_MSGSIZE + 1))
        assert exc.value.code == CsErrorCode.CS_ERR_TOO_BIG


def test_membership_local_and_iteration(cpg_node: Running) -> None:
    with client(cpg_node) as a, client(cpg_node) as b:
        assert a.local_get() == NODEID
        a.join(b"g1")
        wait_event(a, ConfChg)
        child = subprocess.Popen([sys.executable, "-c", _JOIN_AND_WAIT, cpg_node.run_dir, "g1"],
                                 stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline() == b"joined\n"
            b.join(b"g2")
            wait_event(b, ConfChg)
            me, other = os.getpid(), child.pid
            assert a.membership_get() == [CpgAddress(NODEID, me), CpgAddress(NODEID, other)]
            assert b.membership_get(b"nothing") == []
            assert list(a.iteration(CPG_ITERATION_NAME_ONLY)) == [
                CpgIterationDescription(b"g1", 0, 0), CpgIterationDescription(b"g2", 0, 0)]
            assert list(a.iteration(CPG_ITERATION_ONE_GROUP, b"g2")) == [CpgIterationDescription(b"g2", NODEID, me)]
            assert len(list(a.iteration(CPG_ITERATION_ALL))) == 3
        finally:
            child.kill()
            child.wait()


_JOIN_AND_WAIT = """
import sys
from pycorosync.cpg import CpgClient
c = CpgClient(sys.argv[1], timeout=5)
c.join(sys.argv[2].encode())
for ev in c.events(timeout=5):
    if type(ev).__name__ == "ConfChg":
        break
print("joined", flush=True)
sys.stdin.read()
c.close()
"""


def test_killed_client_is_procdown_for_the_group(cpg_node: Running) -> None:
    with client(cpg_node) as a:
        a.join(b"g")
        wait_event(a, ConfChg)
        child = subprocess.Popen([sys.executable, "-c", _JOIN_AND_WAIT, cpg_node.run_dir, "g"],
                                 stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline() == b"joined\n"
            joined = wait_event(a, ConfChg)
            assert isinstance(joined, ConfChg) and joined.joined[0].pid == child.pid
        finally:
            child.kill()
            child.wait()
        left = wait_event(a, ConfChg)
        assert left == ConfChg(b"g", (CpgAddress(NODEID, os.getpid()),),
                               (CpgAddress(NODEID, child.pid, CPG_REASON_PROCDOWN),), ())


def test_dispatch_flags_behave_as_corosync(cpg_node: Running) -> None:
    ran: list[object] = []
    with client(cpg_node, deliver=lambda *a: ran.append(a), confchg=lambda *a: ran.append(a)) as c:
        with pytest.raises(CsError) as exc:
            c.dispatch(CS_DISPATCH_ONE_NONBLOCKING)
        assert exc.value.code == CsErrorCode.CS_ERR_TRY_AGAIN
        c.join(b"g")
        c.dispatch(CS_DISPATCH_ONE, timeout=5)
        for i in range(3):
            c.mcast_joined(b"%d" % i)
        deadline = time.monotonic() + 5
        while len(ran) < 4 and time.monotonic() < deadline:
            c.dispatch(CS_DISPATCH_ALL)
        assert [a[3] for a in ran[1:]] == [b"0", b"1", b"2"]
        c.mcast_joined(b"last")

        def stop_on_last(*a: object) -> None:
            ran.append(a)
            c.close()  # BLOCKING runs until the handle is finalized

        c.deliver_fn = stop_on_last
        c.dispatch(CS_DISPATCH_BLOCKING, timeout=5)
        assert ran[-1][3] == b"last"
        with pytest.raises(CsError):
            c.dispatch(99)


def test_initial_totem_conf_flag_and_totem_confchg_callback(cpg_node: Running) -> None:
    rings: list[tuple[CpgRingId, list[int]]] = []
    with client(cpg_node, flags=CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF, confchg=lambda *a: None,
                totem_confchg=lambda r, m: rings.append((r, m))) as c:
        c.join(b"g")
        c.dispatch(CS_DISPATCH_ONE, timeout=5)
        c.dispatch(CS_DISPATCH_ONE, timeout=5)
        assert rings == [(CpgRingId(NODEID, 4), [NODEID])]
        assert c.context_get() is None
        c.context_set("ctx")
        assert c.context_get() == "ctx"


def test_malformed_requests_get_error_codes_and_the_service_lives_on(cpg_node: Running) -> None:
    with connect(cpg_node.run_dir, "cpg") as conn:
        for rtype, payload in ((p.CpgMsg.JOIN, b""), (p.CpgMsg.JOIN, b"\0\0\0\0\xff\xff"), (p.CpgMsg.LEAVE, b"\1"),
                               (p.CpgMsg.MCAST, b"\x09\3\0\0\0\0\0\0"), (p.CpgMsg.ITER_INIT, b"\5\0\0\0\0\0"),
                               (p.CpgMsg.ITER_NEXT, b"\1\2"), (p.CpgMsg.ITER_NEXT, b"\0" * 8), (999, b"")):
            _, response = conn.request(rtype, payload, 5)
            code, _ = decode_response(response)
            assert code in (CsErrorCode.CS_ERR_INVALID_PARAM, CsErrorCode.CS_ERR_BAD_HANDLE), (rtype, payload)
        # a middle piece without its first
        _, response = conn.request(p.CpgMsg.MCAST, p.encode_mcast_piece(2, 0, 10, b"abc"), 5)
        assert decode_response(response)[0] == CsErrorCode.CS_ERR_NOT_EXIST or \
            decode_response(response)[0] == CsErrorCode.CS_ERR_INVALID_PARAM
    with client(cpg_node) as c:
        assert c.local_get() == NODEID


def test_asyncio_client_joins_sends_and_iterates_events(cpg_node: Running) -> None:
    async def main() -> list[object]:
        async with AsyncCpgClient(cpg_node.run_dir, timeout=5) as c:
            await c.join("ag")
            out: list[object] = [await c.next_event(5)]
            await c.mcast_joined(b"async hello")
            out.append(await c.next_event(5))
            out.append(await c.membership_get())
            out.append(await c.local_get())
            out.append(len(await c.iteration()))
            await c.leave()
            out.append(await c.next_event(5))
            return out

    confchg, deliver, members, nodeid, count, left = asyncio.run(main())
    assert isinstance(confchg, ConfChg) and confchg.group == b"ag"
    assert deliver == Deliver(b"ag", NODEID, os.getpid(), b"async hello", 2)
    assert members == [CpgAddress(NODEID, os.getpid())]
    assert nodeid == NODEID and count == 1
    assert isinstance(left, ConfChg) and left.left[0].reason == CPG_REASON_LEAVE


def test_closing_a_joined_handle_without_leaving_is_procdown_for_the_others(cpg_node: Running) -> None:
    with client(cpg_node) as a:
        a.join(b"g")
        wait_event(a, ConfChg)
        child = subprocess.Popen([sys.executable, "-c", _JOIN_AND_WAIT, cpg_node.run_dir, "g"],
                                 stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline() == b"joined\n"
            wait_event(a, ConfChg)
            child.communicate(b"", timeout=10)  # stdin closed: the child closes its handle and exits
        finally:
            child.kill()
            child.wait()
        left = wait_event(a, ConfChg)
        assert isinstance(left, ConfChg) and left.left == (CpgAddress(NODEID, child.pid, CPG_REASON_PROCDOWN),)


def test_totem_confchg_event_type_is_exported() -> None:
    assert TotemConfChg(CpgRingId(1, 2), (1,)).ring_id.seq == 2
