"""The cpg service's fast paths do exactly what its general paths do.

``_mcast_fast`` (a whole pipelined cpg_mcast_joined straight onto the submit ring) and ``_deliver_fast`` (a
delivered MCAST straight into DELIVER events) skip the decoding into objects. Here one real ``CpgService``
(no event loop: its hooks are called directly, its submit ring is a real ring in memory, its clients are
recorders) handles the same requests and deliveries once with the fast paths and once without, and the
records, events and counters must be equal byte for byte; for everything a fast path does not take
(pieces, unknown senders, other groups, malformed records, sync running, a full ring) it must decline.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import numpy as np
import pytest

from pycorosync.engine.runtime import records as rec
from pycorosync.engine.runtime.node import NodeInfo
from pycorosync.engine.totem.api import ConfigType, RingId
from pycorosync.ipc import fastpath
from pycorosync.ipc.errors import CS_OK
from pycorosync.ipc.fastpath import RingIO
from pycorosync.ipc.ring import Ring
from pycorosync.services.cpg import protocol as p
from pycorosync.services.cpg.service import CpgService

NODEID = 1
PEER = 2
RING = RingId(NODEID, 8)
MCAST_ASYNC = int(p.CpgMsg.MCAST_ASYNC)
_ids = itertools.count(1)


class Conn:
    """What the service needs of a client connection: ids, a context, and a recorder of its events."""

    def __init__(self, pid: int) -> None:
        self.conn_id = next(_ids)
        self.pid = pid
        self.context: Any = None
        self.closed = False
        self.events: list[tuple[int, bytes]] = []
        self.stats = type("Stats", (), {"invalid_request": 0, "queued": 0})()

    def send_event(self, rtype: int, payload: bytes) -> bool:
        self.events.append((rtype, bytes(payload)))
        return True


class Server:
    def __init__(self) -> None:
        self.connections: dict[int, Conn] = {}


class Node:
    """One service brought to a synchronized 2-node ring, with local handles joined to groups."""

    def __init__(self, fast: bool) -> None:
        info = NodeInfo(config="", nodeid=NODEID, cluster="t", run_dir="/nonexistent", segment="", stats="",
                        services=(), bells={}, ring_capacity=0)
        self.svc = CpgService(info)
        self.svc.exec_init()
        if not fast:
            self.svc.deliver_fast = None
            self.svc._mcast_fast = lambda *a: False  # type: ignore[method-assign]
        cap = 1 << 22
        self.ring = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
        self.svc._submit = self.ring
        self.server = Server()
        self.svc.server = self.server  # type: ignore[assignment]
        svc = self.svc
        svc._dispatch(rec.ConfchgRecord(ConfigType.TRANSITIONAL, RING, (NODEID,), (), ()))
        svc._dispatch(rec.ConfchgRecord(ConfigType.REGULAR, RING, (NODEID, PEER), (), (PEER,)))
        svc.sync_init(RING, (NODEID, PEER), (NODEID,))
        assert svc.sync_process()
        self.loop_back()
        svc.deliver(PEER, RING, p.encode_cluster(p.JoinList(RING.rep, RING.seq, [])))
        svc.sync_activate()
        svc.sync_complete()

    def submitted(self) -> list[tuple[int, bytes]]:
        return self.ring.pop_batch(1 << 16)

    def loop_back(self) -> None:
        """Delivers what this node submitted back to it, through the deliver path under test."""
        for rtype, payload in self.submitted():
            assert rtype == rec.SUBMIT_MCAST
            guarantee, body = rec.decode_submit_mcast(payload)
            self.deliver(NODEID, bytes(body), guarantee)

    def deliver(self, sender: int, body: bytes, guarantee: int = 1) -> bool | None:
        """Hands one DELIVER_MESSAGE record to the service as its loop does; the fast path's answer."""
        record = rec.encode_message_header(sender, RING, guarantee) + body
        fast = self.svc.deliver_fast
        if fast is not None and fast(record):
            return True
        self.svc._dispatch(rec.decode_deliver(rec.DELIVER_MESSAGE, record))
        return False if fast is not None else None

    def connect(self, pid: int) -> Conn:
        conn = Conn(pid)
        self.server.connections[conn.conn_id] = conn
        assert self.svc.lib_init(conn) is None  # type: ignore[arg-type]
        return conn

    def join(self, conn: Conn, group: bytes) -> None:
        code, _ = self.svc._request(conn.conn_id, conn.context, int(p.CpgMsg.JOIN), p.encode_join(group, 0))
        assert code == CS_OK
        self.loop_back()

    def mcast(self, conn: Conn, data: bytes, guarantee: int = 1, piece: int = p.PIECE_WHOLE,
              total: int | None = None) -> None:
        header = p.MCAST_REQ_HEAD.pack(guarantee, piece, 0, len(data) if total is None else total)
        assert self.svc.lib_request(conn, MCAST_ASYNC, header + data) is None  # type: ignore[arg-type]


def both() -> list[Node]:
    return [Node(fast=True), Node(fast=False)]


def setup_group(node: Node) -> tuple[Conn, Conn, Conn]:
    a, b, other = node.connect(100), node.connect(101), node.connect(102)
    node.join(a, b"g")
    node.join(b, b"g")
    node.join(other, b"other")
    # the peer's process joins g too (its PROCJOIN comes from the network)
    node.deliver(PEER, p.encode_cluster(p.ProcJoin(b"g", 900, int(p.CpgReason.CPG_REASON_JOIN))))
    for c in (a, b, other):
        c.events.clear()
    return a, b, other


@pytest.mark.parametrize("size", [0, 1, 64, 1024, 70_000])
@pytest.mark.parametrize("guarantee", [0, 1, 3])
def test_a_whole_mcast_gives_the_same_submit_record_and_events_on_both_paths(size: int, guarantee: int) -> None:
    results = []
    for node in both():
        a, b, other = setup_group(node)
        data = bytes((i * 7 + size) & 0xFF for i in range(size))
        node.mcast(a, data, guarantee)
        records = node.submitted()
        tx_bytes = node.svc.mcast_tx_bytes
        answers = [node.deliver(NODEID, bytes(rec.decode_submit_mcast(r[1])[1]), guarantee) for r in records]
        # and a message of the peer's process in g
        peer_body = p.encode_cluster(p.Mcast(b"g", 900, guarantee, data[::-1]))
        answers.append(node.deliver(PEER, peer_body, guarantee))
        results.append((records, tx_bytes, a.events, b.events, other.events, node.svc.delivered_bytes, answers))
    fast, slow = results
    assert fast[:6] == slow[:6]
    assert fast[6] == [True, True], "the fast path took both deliveries"
    records, _, a_events, b_events, other_events, _, _ = fast
    assert len(records) == 1 and len(a_events) == 2 and a_events == b_events and other_events == []
    nodeid, pid, piece, g, _total, group, data_view = p.decode_deliver(a_events[0][1])
    assert (nodeid, pid, piece, g, group, bytes(data_view)) == (NODEID, 100, p.PIECE_WHOLE, guarantee, b"g",
                                                                 bytes((i * 7 + size) & 0xFF for i in range(size)))


def test_what_the_fast_paths_decline_takes_the_general_path_with_the_same_outcome() -> None:
    results = []
    for node in both():
        a, b, other = setup_group(node)
        fast_answers = []
        # a message in pieces (first + last), which the fast path leaves to the assembler
        node.mcast(a, b"x" * 10, piece=p.PIECE_FIRST, total=20)
        node.mcast(a, b"y" * 10, piece=p.PIECE_LAST, total=20)
        # a bad guarantee and a length that does not match: counted, nothing sent
        node.mcast(a, b"z", guarantee=9)
        node.mcast(a, b"zz", total=5)
        # a handle that never joined
        node.mcast(node.connect(103), b"nobody")
        records = node.submitted()
        for _, payload in records:
            fast_answers.append(node.deliver(NODEID, bytes(rec.decode_submit_mcast(payload)[1])))
        # deliveries the fast path declines: an unknown sender node, a group without members, a malformed
        # message, a PROCLEAVE
        fast_answers.append(node.deliver(3, p.encode_cluster(p.Mcast(b"g", 5, 1, b"from node 3"))))
        fast_answers.append(node.deliver(PEER, p.encode_cluster(p.Mcast(b"nobody-here", 5, 1, b"?"))))
        body = bytearray(p.encode_cluster(p.Mcast(b"g", 900, 1, b"bad")))
        struct.pack_into("<H", body, 8, 200)  # a name length beyond the message
        fast_answers.append(node.deliver(PEER, bytes(body)))
        fast_answers.append(node.deliver(PEER, p.encode_cluster(p.ProcLeave(b"g", 900, 1))))
        stats = node.svc.engine.stats
        results.append((records, a.events, b.events, other.events, node.svc.delivered_bytes,
                        node.svc.async_mcast_errors, stats.unknown_node, stats.malformed, fast_answers))
    fast, slow = results
    assert fast[:8] == slow[:8]
    records = fast[0]
    assert len(records) == 1, "only the message in pieces was sent"
    assert fast[8][0] is True, "the reassembled message is whole on the wire: the fast deliver path took it"
    assert fast[8][1:] == [False, False, False, False]
    assert fast[5] == 3 and fast[6] == 2 and fast[7] == 1  # errors; unknown node or group; malformed


def test_while_sync_runs_or_the_ring_is_full_the_fast_path_declines_and_the_message_is_held() -> None:
    node = Node(fast=True)
    a, _, _ = setup_group(node)
    node.svc.engine.sync_running = True
    node.mcast(a, b"held")
    assert node.submitted() == [] and len(node.svc._held) == 1
    node.svc.engine.sync_running = False
    node.svc.retry_held()
    assert len(node.submitted()) == 1 and not node.svc._held
    for size in (60_000, 1_000, 1):
        while node.ring.push(rec.SUBMIT_MCAST, b"f" * size):
            pass
    node.mcast(a, b"after full")
    assert len(node.svc._held) == 1, "refused by the full ring: held in order, not lost"
    assert node.svc.engine.flow_control == p.CPG_FLOW_CONTROL_ENABLED
    node.submitted()
    node.svc.retry_held()
    assert not node.svc._held
    assert [bytes(rec.decode_submit_mcast(r[1])[1])[-10:] for r in node.submitted()] == [b"after full"]


# -- the batch read: a run of pipelined requests straight from the request ring ---------------------------------

def request_ring(records: list[tuple[int, bytes]]) -> RingIO:
    cap = 1 << 20
    ring = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    for rtype, payload in records:
        assert ring.push(rtype, payload)
    return RingIO(ring, fastpath.scratch_for(ring))


def mcast_request(data: bytes, guarantee: int = 1, piece: int = p.PIECE_WHOLE, total: int | None = None
                  ) -> tuple[int, bytes]:
    return MCAST_ASYNC, p.MCAST_REQ_HEAD.pack(guarantee, piece, 0, len(data) if total is None else total) + data


def test_a_batch_read_makes_the_records_and_counts_the_per_request_path_makes() -> None:
    requests = [mcast_request(bytes((i + n) & 0xFF for i in range(n)), guarantee=n % 4)
                for n in (0, 1, 7, 64, 255, 256, 1024, 70_000, 3)]
    batch, single = Node(fast=True), Node(fast=False)
    a, _, _ = setup_group(batch)
    a2, _, _ = setup_group(single)
    io = request_ring(requests)
    assert batch.svc.drain_requests(a, io, 64, 1 << 22) == len(requests)  # type: ignore[arg-type]
    assert io.pop() is None, "every request was taken off the ring"
    for rtype, payload in requests:
        assert single.svc.lib_request(a2, rtype, payload) is None  # type: ignore[arg-type]
    records = batch.submitted()
    assert records == single.submitted()
    assert len(records) == len(requests)
    assert batch.svc.mcast_tx_bytes == single.svc.mcast_tx_bytes > 0
    assert [rec.decode_submit_mcast(r[1])[0] for r in records] == [n % 4 for n in (0, 1, 7, 64, 255, 256, 1024,
                                                                                 70_000, 3)]


def test_a_batch_read_stops_at_the_first_request_it_does_not_take_and_leaves_it_in_the_ring() -> None:
    node = Node(fast=True)
    a, _, _ = setup_group(node)
    good = mcast_request(b"good")
    stoppers = [
        mcast_request(b"piece", piece=p.PIECE_FIRST, total=20),
        mcast_request(b"g9", guarantee=9),
        mcast_request(b"short", total=9),
        (int(p.CpgMsg.LOCAL_GET), b""),
        (MCAST_ASYNC, b"\x01\x03"),  # shorter than the request header
    ]
    for stopper in stoppers:
        io = request_ring([good, good, stopper, good])
        assert node.svc.drain_requests(a, io, 64, 1 << 22) == 2  # type: ignore[arg-type]
        assert node.svc.drain_requests(a, io, 64, 1 << 22) == 0, stopper  # type: ignore[arg-type]
        assert io.pop() == stopper
        assert node.svc.drain_requests(a, io, 64, 1 << 22) == 1  # type: ignore[arg-type]
        assert len(node.submitted()) == 3
    # over the server's request limit, and the budget
    io = request_ring([good, mcast_request(b"x" * 100), good])
    assert node.svc.drain_requests(a, io, 64, 99) == 1  # type: ignore[arg-type]
    assert io.pop() == mcast_request(b"x" * 100)
    io = request_ring([good] * 10)
    assert node.svc.drain_requests(a, io, 4, 1 << 22) == 4  # type: ignore[arg-type]
    assert node.svc.drain_requests(a, io, 64, 1 << 22) == 6  # type: ignore[arg-type]


def test_a_batch_read_takes_nothing_when_the_per_request_path_would_decline() -> None:
    node = Node(fast=True)
    a, _, _ = setup_group(node)
    good = mcast_request(b"good")
    io = request_ring([good])
    assert node.svc.drain_requests(node.connect(103), io, 64, 1 << 22) == 0, "not joined"  # type: ignore[arg-type]
    node.svc.engine.sync_running = True
    assert node.svc.drain_requests(a, io, 64, 1 << 22) == 0, "sync runs"  # type: ignore[arg-type]
    node.mcast(a, b"held")
    assert len(node.svc._held) == 1
    node.svc.engine.sync_running = False
    assert node.svc.drain_requests(a, io, 64, 1 << 22) == 0, "a held message goes first"  # type: ignore[arg-type]
    node.svc.retry_held()
    assert node.svc.drain_requests(a, io, 64, 1 << 22) == 1  # type: ignore[arg-type]
    assert [bytes(rec.decode_submit_mcast(r[1])[1])[-4:] for r in node.submitted()] == [b"held", b"good"]
    for size in (60_000, 1_000, 1):
        while node.ring.push(rec.SUBMIT_MCAST, b"f" * size):
            pass
    io = request_ring([good])
    assert node.svc.drain_requests(a, io, 64, 1 << 22) == 0, "submit ring full"  # type: ignore[arg-type]
    assert io.pop() == good


class RingConn(Conn):
    """A client connection whose events go into a real event ring, as the server's do (no deferral)."""

    def __init__(self, pid: int, capacity: int = 1 << 20) -> None:
        super().__init__(pid)
        self.ring = Ring.create(np.zeros(Ring.layout_bytes(capacity), np.uint8), capacity)
        self.backlog: list[tuple[int, bytes]] = []
        self.written = 0

    def send_event(self, rtype: int, payload: bytes) -> bool:
        if not self.backlog and self.ring.push(rtype, payload):
            return True
        self.backlog.append((rtype, bytes(payload)))
        return False

    def event_ring(self) -> Ring | None:
        return None if self.backlog else self.ring

    def events_written(self, count: int) -> None:
        self.written += count

    def all_events(self) -> list[tuple[int, bytes]]:
        return [(t, bytes(b)) for t, b in self.ring.pop_batch(1 << 16)] + self.backlog


def _delivery_run(batch: bool, event_capacity: int) -> tuple[Any, ...]:
    """One node's service reading a deliver ring of mixed records through ``_read_deliver``, with its batch
    path (``deliver_run``) or only the per-message fast path; what its clients got and its counters."""
    node = Node(fast=True)
    node.server.defer_event_wakes = lambda: None  # type: ignore[attr-defined]
    node.server.flush_event_wakes = lambda: None  # type: ignore[attr-defined]
    if not batch:
        node.svc.deliver_run = None
    a = RingConn(100, event_capacity)
    node.server.connections[a.conn_id] = a  # type: ignore[assignment]
    assert node.svc.lib_init(a) is None  # type: ignore[arg-type]
    node.join(a, b"g")  # type: ignore[arg-type]
    other = node.connect(102)
    node.join(other, b"other")
    node.deliver(PEER, p.encode_cluster(p.ProcJoin(b"g", 900, int(p.CpgReason.CPG_REASON_JOIN))))
    node.deliver(PEER, p.encode_cluster(p.Mcast(b"g", 900, 1, b"first")))  # g is now the group of one handle
    a.all_events()
    other.events.clear()

    def m(sender: int, group: bytes, data: bytes, guarantee: int = 1) -> tuple[int, bytes]:
        body = p.encode_cluster(p.Mcast(group, 900 if sender == PEER else 100, guarantee, data))
        return rec.DELIVER_MESSAGE, rec.encode_message_header(sender, RING, guarantee) + body

    records = [m(PEER, b"g", bytes([k]) * (k * 37 % 3000), k % 4) for k in range(40)]
    records += [m(NODEID, b"other", b"to the other group"), m(3, b"g", b"unknown node"), m(PEER, b"g", b"x" * 5)]
    records += [(rec.DELIVER_MESSAGE, rec.encode_message_header(PEER, RING, 1)
                 + p.encode_cluster(p.ProcLeave(b"gone", 901, 1)))]
    records += [m(NODEID, b"g", bytes([k]) * 100) for k in range(30)]
    cap = 1 << 20
    deliver = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    for rtype, payload in records:
        assert deliver.push(rtype, payload)
    node.svc._deliver = deliver
    for _ in range(1000):
        if not node.svc._read_deliver():
            break
    return (a.all_events(), other.events, node.svc.delivered_bytes, node.svc.engine.stats.unknown_node), a.written


@pytest.mark.parametrize("event_capacity", [1 << 20, 8192])
def test_a_run_of_deliveries_to_one_local_member_gives_the_events_of_the_per_message_path(
        event_capacity: int) -> None:
    batch, written = _delivery_run(True, event_capacity)
    single, none_written = _delivery_run(False, event_capacity)
    assert batch == single
    events = batch[0]
    assert len(events) == 40 + 1 + 30, "g's messages of the known nodes (not node 3's), in order"
    assert [bytes(p.decode_deliver(e[1])[6]) for e in events[:40]] == [bytes([k]) * (k * 37 % 3000) for k in range(40)]
    assert len(batch[1]) == 1, "the other group's message reached its member"
    # (with the small event ring, the rest waits in the connection's backlog: the general path's)
    assert written > (30 if event_capacity > 8192 else 0) and none_written == 0, "the batch path took the runs"
