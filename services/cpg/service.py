"""The cpg service process: ``CpgEngine`` on the node runtime's ``ServiceProcess`` (PROTOCOL.md §6).

Client requests are decoded here and handed to the engine; cluster messages go to Totem through the
submit ring and come back in total order through ``deliver``; the engine's events are encoded onto each
client's event ring. A message larger than a request ring record arrives in pieces and is multicast as
ONE Totem message once its last piece is in (never corosync's non-atomic PARTIAL_MCAST); a delivery
larger than an event ring record goes out in consecutive pieces the client library joins again.
"""

from __future__ import annotations

import collections
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pycorosync.engine.runtime import records as rec
from pycorosync.engine.runtime.service import SUBMIT_HIGH_WATER_BYTES, ServiceProcess
from pycorosync.engine.totem.api import ConfigType, Guarantee, RingId
from pycorosync.ipc.errors import CS_OK, CsError, CsErrorCode
from pycorosync.ipc.fastpath import RingIO
from pycorosync.ipc.framing import encode_response
from pycorosync.ipc.server import ServerConnection, ServerLimits
from pycorosync.services.cpg import protocol as p
from pycorosync.services.cpg.engine import (
    ConfchgEvent,
    CpdState,
    CpgEngine,
    DeliverEvent,
    Event,
    TotemConfchgEvent,
)
from pycorosync.services.cpg.kernels import deliver_mcasts, move_mcasts

REQUEST_RING_BYTES = 4 << 20  # a 1 MiB message is one record: pipelined, no round trip
RESPONSE_RING_BYTES = 1 << 20
EVENT_RING_BYTES = 4 << 20
#: the data of one DELIVER event record; larger messages go in pieces (a record is at most half a ring)
DELIVER_PIECE_BYTES = 1 << 20
DELIVER_RUN_RECORDS = 256  #: records ``_deliver_run`` moves per call at most (as DELIVER_PER_ROUND)
ITER_BATCH_BYTES = 64 << 10
FLUSH_RETRY_S = 0.002
#: events waiting for one client's full event ring before deliveries pause for everyone (flow control)
SLOW_CLIENT_RECORDS = 64
#: how long a client may leave that backlog unread before it is disconnected and deliveries go on
SLOW_CLIENT_GRACE_S = 5.0
MAX_ITERATORS = 64

_INVALID = int(CsErrorCode.CS_ERR_INVALID_PARAM)
# event record types as plain ints: numba types an IntEnum member on a slow path (~0.2 ms per ring push)
_EV_DELIVER = int(p.CpgMsg.EV_DELIVER)
#: a DELIVER_MESSAGE record holding a cpg MCAST: the record header (sender, ring, guarantee), then the
#: cluster message (id, guarantee, 0, pid, name length), then the name and the data
_FAST_MCAST = struct.Struct(rec.MESSAGE_HEADER.format + p.EXEC_MCAST_HEAD.format.lstrip("<") + "H")
_BODY_AT = rec.MESSAGE_HEADER.size  # where the cluster message starts
_NAME_AT = _BODY_AT + p.EXEC_MCAST_HEAD.size  # the name's length field: from here the record is the event's tail
_MID_MCAST = int(p.ExecMsg.MCAST)
_DELIVER_HEAD = p.DELIVER_HEAD
_MCAST_REQ_HEAD = p.MCAST_REQ_HEAD
#: a SUBMIT_MCAST record holding a cpg MCAST: the submit header (guarantee), the cluster message's header
#: (id, guarantee, 0, pid) and its name's length; the name and the data follow
_EXEC_MCAST_HEAD = struct.Struct(rec.SUBMIT_MCAST_HEADER.format + p.EXEC_MCAST_HEAD.format.lstrip("<") + "H")
_SUBMIT_MCAST_HEAD = rec.SUBMIT_MCAST_HEADER.size
_SUBMIT_MCAST = rec.SUBMIT_MCAST
_EV_CONFCHG = int(p.CpgMsg.EV_CONFCHG)
_EV_TOTEM_CONFCHG = int(p.CpgMsg.EV_TOTEM_CONFCHG)
_MCAST_ASYNC = int(p.CpgMsg.MCAST_ASYNC)
_TRY_AGAIN = int(CsErrorCode.CS_ERR_TRY_AGAIN)
#: requests that change what the cluster sees: they stay in order behind held pipelined messages
_ORDERED = frozenset({int(p.CpgMsg.JOIN), int(p.CpgMsg.LEAVE), int(p.CpgMsg.MCAST), _MCAST_ASYNC})
_LIB_EXIT = -1  # a held entry: the client went away after requests that are still held


@dataclass
class _Session:
    """What the service keeps per client connection besides the engine's cpd."""

    assembly: bytearray | None = None  # a message arriving in pieces
    assembly_total: int = 0
    assembly_guarantee: int = 0
    iterators: dict[int, tuple[list[tuple[bytes, int, int]], int]] = field(default_factory=dict)
    next_iterator: int = 1


class _Link:
    """The engine's transport: Totem through the service's submit ring, events onto client rings."""

    def __init__(self, service: CpgService) -> None:
        self.service = service
        self._last_event: Event | None = None
        self._last_records: list[tuple[int, bytes]] = []

    def mcast(self, msg: p.ClusterMessage) -> bool:
        guarantee = msg.guarantee if isinstance(msg, p.Mcast) else Guarantee.AGREED
        return self.service.mcast(p.encode_cluster(msg), int(guarantee))

    def send_event(self, conn_id: int, event: Event) -> None:
        server = self.service.server
        conn = server.connections.get(conn_id) if server is not None else None
        if conn is None:
            return
        if event is not self._last_event:  # the same event usually goes to several handles: encode once
            self._last_event = event
            self._last_records = encode_event(event)
        for rtype, payload in self._last_records:
            conn.send_event(rtype, payload)


def encode_event(event: Event) -> list[tuple[int, bytes]]:
    """The event ring records of one engine event (several for a large delivery)."""
    if isinstance(event, DeliverEvent):
        data = memoryview(event.data)
        total = len(data)
        if total <= DELIVER_PIECE_BYTES:
            head = p.encode_deliver_head(event.nodeid, event.pid, p.PIECE_WHOLE, event.guarantee, total, event.group)
            return [(_EV_DELIVER, head + data)]
        records: list[tuple[int, bytes]] = []
        for start in range(0, total, DELIVER_PIECE_BYTES):
            piece = (p.PIECE_FIRST if start == 0 else 0) | (p.PIECE_LAST if start + DELIVER_PIECE_BYTES >= total else 0)
            head = p.encode_deliver_head(event.nodeid, event.pid, piece, event.guarantee, total, event.group)
            records.append((_EV_DELIVER, head + data[start:start + DELIVER_PIECE_BYTES]))
        return records
    if isinstance(event, ConfchgEvent):
        return [(_EV_CONFCHG, p.encode_confchg(event.group, list(event.members), list(event.left),
                                                        list(event.joined)))]
    assert isinstance(event, TotemConfchgEvent)
    return [(_EV_TOTEM_CONFCHG, p.encode_totem_confchg(event.ring_id[0], event.ring_id[1], event.members))]


class CpgService(ServiceProcess):
    """Closed process groups (corosync service 2)."""

    name = "cpg"
    service_id = p.SERVICE_ID
    server_limits = ServerLimits(
        request_ring_bytes=REQUEST_RING_BYTES, response_ring_bytes=RESPONSE_RING_BYTES,
        event_ring_bytes=EVENT_RING_BYTES, max_request_bytes=REQUEST_RING_BYTES // 2,
        # a slow reader may fall this far behind (16 MiB messages included) before it is disconnected
        backlog_records=1 << 16, backlog_bytes=96 << 20,
    )

    def exec_init(self) -> None:
        self.engine = CpgEngine(self.nodeid, _Link(self))
        self.deliver_fast = self._deliver_fast
        self.deliver_run = self._deliver_run
        #: the group ``_deliver_fast`` last gave a message to one local handle: ``_deliver_run`` tries it first
        self._hot_group = b""
        self._hot_name = np.zeros(0, np.uint8)
        self._flush_timer: Any = None
        self.invalid_requests = 0
        #: requests taken off client rings that cannot be carried out yet (submit ring full, sync running),
        #: in arrival order; while any wait, client requests are not read (bounded by the request rings)
        self._held: collections.deque[tuple[ServerConnection, _Session | None, int, bytes]] = collections.deque()
        self.async_mcast_errors = 0
        self._slow_since: dict[int, float] = {}  # conn_id -> when its backlog passed SLOW_CLIENT_RECORDS
        self.slow_clients_dropped = 0

    def deliveries_held(self) -> bool:
        """A client whose event ring is full and backlog long pauses deliveries (the deliver ring fills and
        Totem slows every sender); one that reads nothing for SLOW_CLIENT_GRACE_S is disconnected."""
        server = self.server
        if server is None or not (self._slow_since or any(
                c.stats.queued > SLOW_CLIENT_RECORDS for c in server.connections.values())):
            return False
        slow = False
        now = time.monotonic()
        for conn in list(server.connections.values()):
            if conn.stats.queued <= SLOW_CLIENT_RECORDS:
                self._slow_since.pop(conn.conn_id, None)
                continue
            since = self._slow_since.setdefault(conn.conn_id, now)
            if now - since > SLOW_CLIENT_GRACE_S:
                self._slow_since.pop(conn.conn_id, None)
                self.slow_clients_dropped += 1
                self.log.warning("client pid %d read no event for %.0f s with %d waiting: disconnected", conn.pid,
                                 now - since, conn.stats.queued)
                conn.close("reads no events (flow control)")
                continue
            slow = True
        for conn_id in [c for c in self._slow_since if c not in server.connections]:
            del self._slow_since[conn_id]
        return slow

    # -- clients ---------------------------------------------------------------------------------------
    def lib_init(self, conn: ServerConnection) -> int | None:
        if not self.engine.synced:
            return int(CsErrorCode.CS_ERR_TRY_AGAIN)  # as corosync: no client before the first sync
        self.engine.lib_init(conn.conn_id, conn.pid)
        conn.context = _Session()
        return None

    def lib_exit(self, conn: ServerConnection) -> None:
        if isinstance(conn.context, _Session):
            if any(entry[0] is conn for entry in self._held):
                self._held.append((conn, None, _LIB_EXIT, b""))  # its accepted messages go first
                return
            self.engine.lib_exit(conn.conn_id)
            self._flush_soon()

    def lib_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        session = conn.context
        if not isinstance(session, _Session):
            if rtype == _MCAST_ASYNC:
                self._async_error(conn, "request before the connection was admitted")
                return None
            return rtype, encode_response(CsErrorCode.CS_ERR_BAD_HANDLE)
        if self._held and rtype in _ORDERED:
            self._held.append((conn, session, rtype, bytes(payload)))
            self.hold_requests()
            return None  # answered (if it has an answer) when its turn comes
        if rtype == _MCAST_ASYNC:
            if self._mcast_fast(conn.conn_id, session, payload):
                return None
            if not self._mcast_async(conn, session, payload):
                self._held.append((conn, session, rtype, bytes(payload)))
                self.hold_requests(len(payload) + 64)
            return None
        return self._answer(conn, session, rtype, payload)

    def _answer(self, conn: ServerConnection, session: _Session, rtype: int, payload: bytes) -> tuple[int, bytes]:
        try:
            code, body = self._request(conn.conn_id, session, rtype, payload)
        except CsError as exc:
            code, body = exc.code, b""
        if code == _INVALID:
            self.invalid_requests += 1
            conn.stats.invalid_request += 1
        return rtype, encode_response(code, body)

    def _sending_cpd(self, conn_id: int) -> Any:
        """The handle's cpd when a fast path may send for it now (joined or joining, no sync running), else None."""
        engine = self.engine
        cpd = engine.cpds.get(conn_id)
        if cpd is None or engine.blocked or (cpd.state is not CpdState.JOIN_COMPLETED
                                             and cpd.state is not CpdState.JOIN_STARTED):
            return None
        return cpd

    def _mcast_fast(self, conn_id: int, session: _Session, payload: bytes) -> bool:
        """The common pipelined cpg_mcast_joined: a whole message of a joined handle that Totem takes at
        once, put on the submit ring without decoding it into objects (the same record ``_mcast_async``
        makes). False when it is anything else or Totem refuses it: ``_mcast_async`` then does it all."""
        size = len(payload)
        if size < _MCAST_REQ_HEAD.size:
            return False
        guarantee, piece, _zero, total = _MCAST_REQ_HEAD.unpack_from(payload)
        if (piece != p.PIECE_WHOLE or guarantee > p.CpgGuarantee.CPG_TYPE_SAFE or total != size - _MCAST_REQ_HEAD.size
                or total > p.MAX_ATOMIC_MSGSIZE):
            return False
        engine = self.engine
        cpd = self._sending_cpd(conn_id)
        if cpd is None:
            return False
        submit = self._submit
        group = cpd.group
        body_bytes = _EXEC_MCAST_HEAD.size - _SUBMIT_MCAST_HEAD + len(group) + total
        if submit is None or submit.used_bytes() > SUBMIT_HIGH_WATER_BYTES:
            return False
        record = b"".join((_EXEC_MCAST_HEAD.pack(guarantee, _MID_MCAST, guarantee, 0, cpd.pid, len(group)), group,
                           memoryview(payload)[_MCAST_REQ_HEAD.size:]))
        if not submit.push(_SUBMIT_MCAST, record):
            return False
        session.assembly = None
        engine._submit_refused = False
        self.mcast_tx_bytes += body_bytes
        self._notify_totem()
        return True

    def drain_requests(self, conn: ServerConnection, ring: RingIO, budget: int, max_request_bytes: int) -> int:
        """The server's batch read (``ipc.server.DRAIN_REQUESTS``): a run of requests ``_mcast_fast`` would
        take goes from the client's request ring onto the submit ring in one kernel call, the same records it
        makes. 0 when the next request is anything else, or while requests are held, the handle has not
        joined, sync runs or the submit ring is high: the server then hands that request to ``lib_request``."""
        if self._held:
            return 0
        session = conn.context
        submit = self._submit
        engine = self.engine
        cpd = self._sending_cpd(conn.conn_id)
        if submit is None or not isinstance(session, _Session) or cpd is None:
            return 0
        group = cpd.group
        prefix = _EXEC_MCAST_HEAD.pack(0, _MID_MCAST, 0, 0, cpd.pid, len(group)) + group
        src = ring.ring
        moved, data_bytes = move_mcasts(
            src.array, src.offset, src.capacity, submit.array, submit.offset, submit.capacity,
            np.frombuffer(prefix, np.uint8), _MCAST_ASYNC, _SUBMIT_MCAST, p.PIECE_WHOLE, max_request_bytes,
            p.MAX_ATOMIC_MSGSIZE, SUBMIT_HIGH_WATER_BYTES, budget)
        if moved:
            session.assembly = None
            engine._submit_refused = False
            self.mcast_tx_bytes += moved * (len(prefix) - _SUBMIT_MCAST_HEAD) + data_bytes
            self._notify_totem()
        return int(moved)

    def _mcast_async(self, conn: ServerConnection, session: _Session, payload: bytes) -> bool:
        """A pipelined cpg_mcast_joined; False = Totem cannot take it now (hold it). Errors have no client
        to go to (as corosync's asynchronous mcast): they are counted and logged."""
        try:
            code = self._mcast(conn.conn_id, session, payload)
        except CsError as exc:
            code = int(exc.code)
        if code == _TRY_AGAIN:
            return False
        if code != CS_OK:
            self._async_error(conn, CsErrorCode(code).name)
        return True

    def _async_error(self, conn: ServerConnection, what: str) -> None:
        self.async_mcast_errors += 1
        conn.stats.invalid_request += 1
        if self.async_mcast_errors == 1 or self.async_mcast_errors % 1000 == 0:
            self.log.warning("dropped a pipelined message of pid %d: %s (%d so far)", conn.pid, what,
                             self.async_mcast_errors)

    def retry_held(self) -> None:
        """Carries out held requests in order while Totem takes them; reads requests again once none wait."""
        held = self._held
        while held:
            conn, session, rtype, payload = held[0]
            if rtype == _LIB_EXIT:
                held.popleft()
                self.engine.lib_exit(conn.conn_id)
                self._flush_soon()
                continue
            assert session is not None
            if rtype == _MCAST_ASYNC:
                if conn.conn_id in self.engine.cpds and not self._mcast_async(conn, session, payload):
                    self.hold_requests(len(payload) + 64)
                    return
                held.popleft()
                continue
            held.popleft()
            answer = self._answer(conn, session, rtype, payload)
            if not conn.closed:
                conn.send_response(*answer)
        self.release_requests()

    def _request(self, conn_id: int, session: _Session, rtype: int, payload: bytes) -> tuple[int, bytes]:
        eng = self.engine
        if rtype == p.CpgMsg.MCAST:
            return self._mcast(conn_id, session, payload), b""
        if rtype == p.CpgMsg.JOIN:
            group, flags = p.decode_join(payload)
            return eng.lib_join(conn_id, group, flags), b""
        if rtype == p.CpgMsg.LEAVE:
            return eng.lib_leave(conn_id, p.decode_name(payload, "LEAVE")), b""
        if rtype == p.CpgMsg.MEMBERSHIP_GET:
            return CS_OK, p.encode_member_list(eng.membership(p.decode_name(payload, "MEMBERSHIP_GET")))
        if rtype == p.CpgMsg.LOCAL_GET:
            return CS_OK, p.encode_u32(self.nodeid)
        if rtype == p.CpgMsg.FLOW_CONTROL_GET:
            return CS_OK, p.encode_u32(eng.flow_control)
        if rtype == p.CpgMsg.ITER_INIT:
            itype, group = p.decode_iter_init(payload)
            if len(session.iterators) >= MAX_ITERATORS:
                return int(CsErrorCode.CS_ERR_NO_RESOURCES), b""
            handle = session.next_iterator
            session.next_iterator += 1
            session.iterators[handle] = (eng.iteration(itype, group), 0)
            return CS_OK, p.encode_u64(handle)
        if rtype == p.CpgMsg.ITER_NEXT:
            return self._iter_next(session, p.decode_u64(payload))
        if rtype == p.CpgMsg.ITER_FINALIZE:
            if session.iterators.pop(p.decode_u64(payload), None) is None:
                return int(CsErrorCode.CS_ERR_BAD_HANDLE), b""
            return CS_OK, b""
        return _INVALID, b""

    def _iter_next(self, session: _Session, handle: int) -> tuple[int, bytes]:
        found = session.iterators.get(handle)
        if found is None:
            return int(CsErrorCode.CS_ERR_BAD_HANDLE), b""
        items, pos = found
        if pos >= len(items):
            return int(CsErrorCode.CS_ERR_NO_SECTIONS), b""
        end, size = pos, 0
        while end < len(items) and (end == pos or size + len(items[end][0]) + 16 <= ITER_BATCH_BYTES):
            size += len(items[end][0]) + 16
            end += 1
        session.iterators[handle] = (items, end)
        return CS_OK, p.encode_iter_items(items[pos:end])

    def _mcast(self, conn_id: int, session: _Session, payload: bytes) -> int:
        guarantee, piece, total, data = p.decode_mcast_piece(payload)
        if total > p.MAX_ATOMIC_MSGSIZE:
            session.assembly = None
            return int(CsErrorCode.CS_ERR_TOO_BIG)
        if piece == p.PIECE_WHOLE:
            session.assembly = None
            return self.engine.lib_mcast(conn_id, guarantee, data)
        if piece & p.PIECE_FIRST:
            cpd = self.engine.cpds[conn_id]
            if cpd.state not in (CpdState.JOIN_STARTED, CpdState.JOIN_COMPLETED):
                session.assembly = None
                return int(CsErrorCode.CS_ERR_NOT_EXIST)  # before the client sends megabytes for nothing
            session.assembly = bytearray()
            session.assembly_total, session.assembly_guarantee = total, guarantee
        buf = session.assembly
        if buf is None or total != session.assembly_total or len(buf) + len(data) > total:
            session.assembly = None
            return _INVALID  # a piece without its first, or more bytes than announced
        if not piece & p.PIECE_LAST:
            buf += data
            return CS_OK
        if len(buf) + len(data) != total:
            session.assembly = None
            return _INVALID
        code = self.engine.lib_mcast(conn_id, session.assembly_guarantee, b"".join((buf, data)))
        if code != int(CsErrorCode.CS_ERR_TRY_AGAIN):
            session.assembly = None  # else the client sends the last piece again
        return code

    # -- cluster ---------------------------------------------------------------------------------------
    def _deliver_fast(self, payload: bytes) -> bool:
        """The common delivery: a whole MCAST of a known sender to a group with local handles, turned into
        its DELIVER event without decoding it into objects. The event is the same bytes ``encode_event``
        makes: the cluster message's name and data follow the event header as they are. Anything else
        (other messages, malformed ones, unknown senders, pieces) returns False for the general path."""
        size = len(payload)
        if size < _FAST_MCAST.size or payload[_BODY_AT] != _MID_MCAST:
            return False
        sender, _rep, _seq, _g, _mid, guarantee, _zero, pid, name_len = _FAST_MCAST.unpack_from(payload)
        data_at = _FAST_MCAST.size + name_len
        if name_len > p.CPG_MAX_NAME_LENGTH or data_at > size or size - data_at > DELIVER_PIECE_BYTES:
            return False
        group = payload[_FAST_MCAST.size:data_at]
        engine = self.engine
        entries = engine.groups.get(group)
        if not entries:
            return False
        for nodeid, _pid in entries:
            if nodeid == sender:
                break
        else:
            return False
        self.delivered_bytes += size - _BODY_AT
        handles = engine._local.get(group)
        server = self.server
        if not handles or server is None:
            return True
        event = b""
        connections = server.connections
        for cpd in handles.values():
            if cpd.state is CpdState.JOIN_COMPLETED or cpd.state is CpdState.LEAVE_STARTED:
                conn = connections.get(cpd.conn_id)
                if conn is not None:
                    if not event:
                        event = _DELIVER_HEAD.pack(sender, pid, p.PIECE_WHOLE, guarantee, 0, size - data_at) \
                            + payload[_NAME_AT:]
                    conn.send_event(_EV_DELIVER, event)
        if len(handles) == 1 and group != self._hot_group:
            self._hot_group = bytes(group)
            self._hot_name = np.frombuffer(self._hot_group, np.uint8)
        return True

    def _deliver_run(self, ring: Any) -> int:
        """The deliver ring's leading run of whole MCASTs to the group last delivered to one local handle
        (``_hot_group``), written by ``deliver_mcasts`` straight into that handle's event ring: what
        ``_deliver_fast`` does for each of them, without a Python step per message. Returns how many, or -1
        when there is no such group or handle now."""
        group = self._hot_group
        server = self.server
        if not group or server is None:
            return -1
        engine = self.engine
        entries = engine.groups.get(group)
        handles = engine._local.get(group)
        if not entries or not handles or len(handles) != 1:
            return -1
        (cpd,) = handles.values()
        if cpd.state is not CpdState.JOIN_COMPLETED and cpd.state is not CpdState.LEAVE_STARTED:
            return -1
        conn = server.connections.get(cpd.conn_id)
        events = conn.event_ring() if conn is not None else None
        if conn is None or events is None:
            return -1
        senders = np.fromiter({nodeid for nodeid, _pid in entries}, np.uint32)
        moved, carried = deliver_mcasts(
            ring.array, ring.offset, ring.capacity, events.array, events.offset, events.capacity, self._hot_name,
            senders, rec.DELIVER_MESSAGE, _EV_DELIVER, _MID_MCAST, p.PIECE_WHOLE, DELIVER_PIECE_BYTES,
            DELIVER_RUN_RECORDS)
        if moved:
            self.delivered_bytes += carried
            conn.events_written(moved)
        return int(moved)

    def deliver(self, sender_nodeid: int, ring_id: RingId, body: bytes) -> None:
        self.engine.deliver(sender_nodeid, body, (ring_id.rep, ring_id.seq))

    def confchg(self, type: ConfigType, ring_id: RingId, members: tuple[int, ...], left: tuple[int, ...],
                joined: tuple[int, ...]) -> None:
        self.engine.confchg(type == ConfigType.REGULAR, (ring_id.rep, ring_id.seq), members)

    def sync_init(self, ring_id: RingId, members: tuple[int, ...], transitional: tuple[int, ...]) -> None:
        self.engine.sync_init((ring_id.rep, ring_id.seq), members, transitional)

    def sync_process(self) -> bool:
        return self.engine.sync_process()

    def sync_activate(self) -> None:
        self.engine.sync_activate()

    def sync_abort(self) -> None:
        self.engine.sync_abort()

    def sync_complete(self) -> None:
        self.engine.sync_complete()
        self._flush_soon()
        if self._held:
            self.retry_held()

    def _flush_soon(self) -> None:
        """Retries the engine's own messages (PROCDOWN of dead clients) until Totem has taken them all."""
        if self.engine.flush() or self._flush_timer is not None:
            return

        def retry() -> None:
            self._flush_timer = None
            self._flush_soon()

        self._flush_timer = self.call_later(FLUSH_RETRY_S, retry)
