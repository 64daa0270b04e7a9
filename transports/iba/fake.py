"""A fake verbs backend: RC queue pairs, memory regions, a CQ with its channel, rdma_cm events, over
local SOCK_SEQPACKET sockets, in one process or across processes.

No machine of this project has an RDMA device (PROTOTYPES.md §4), so the ``iba`` transport's logic is
tested here. What is modelled, and how:

* The fabric is a name: an endpoint listens on the abstract unix socket ``pcs-iba/<fabric>/<addr>/<port>``;
  processes with the same fabric name (``$PYCOROSYNC_IBA_FABRIC``) reach each other. One connected
  SEQPACKET socket is one RC connection: reliable, ordered, message boundaries kept, like an RC QP.
* QP states: a connection's QP is created in INIT (receives may be posted), goes RTR -> RTS when the
  connection is established, ERR on any failure. Posting a send before RTS raises (EINVAL); posting on
  an ERR QP completes at once with WR_FLUSH_ERR; going to ERR flushes every posted WR with WR_FLUSH_ERR.
* Memory: ``reg_mr`` registers caller memory; SGEs are checked against the MR of their lkey when the
  "HCA" touches them (a bad one completes with LOC_PROT_ERR and breaks the QP), and bytes are gathered
  only when the send goes on the wire, so a caller that reuses a buffer before its completion is caught.
* Receives: a message is taken off the wire only while a receive is posted (the RNR wait of an RC QP
  with infinite rnr_retry: the sender's message waits in the socket). A message longer than the posted
  buffer completes with LOC_LEN_ERR and breaks the connection.
* Sends complete (SUCCESS) once written to the socket; a peer that is gone turns into DISCONNECTED on
  both sides, and a connect to an address nobody listens on into UNREACHABLE.
* The "HCA" runs inside ``poll_cq``/``get_cm_events``/``get_cq_event``: ``comp_fd`` and ``cm_fd`` are epoll
  fds that turn readable when the wire has work or a completion/CM event is due, so a transport that
  sleeps in its own epoll on them wakes exactly as with a completion channel.

Fault injection for tests: ``FakeConnection.fail_next_send(status)``, ``FakeEndpoint.crash()`` (every socket
closed without a word, as a killed process), ``FakeEndpoint.registered_mrs``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import select
import socket
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from pycorosync.transports.iba.verbs import (
    CmEvent,
    CmEventType,
    Completion,
    QpState,
    Sge,
    VerbsError,
    WcOpcode,
    WcStatus,
    check_transition,
)

MSG_REQ = b"Q"
MSG_REP = b"P"
MSG_REJ = b"J"
MSG_DATA = b"D"
MSG_DREQ = b"X"
DATA_HEADER = struct.Struct("<cI")  # b"D", imm
MAX_MESSAGE = 1 << 20

_qp_numbers = itertools.count(0x100)
_lkeys = itertools.count(0x1000)


def fabric_address(fabric: str, addr: str, port: int) -> bytes:
    """The abstract socket name of an endpoint (no file, nothing to clean up)."""
    return b"\0" + f"pcs-iba/{fabric}/{addr}/{port}".encode()


class FakeMemoryRegion:
    """Registered caller memory: ``addr`` is the array's real address, as ibv_reg_mr's ``addr``."""

    def __init__(self, endpoint: FakeEndpoint, array: np.ndarray) -> None:
        if array.dtype != np.uint8 or array.ndim != 1 or not array.flags.c_contiguous:
            raise VerbsError("reg_mr: a contiguous one-dimensional uint8 array is required")
        self.array = array
        self.addr = int(array.ctypes.data)
        self.length = int(array.shape[0])
        self.lkey = next(_lkeys)
        self._endpoint: FakeEndpoint | None = endpoint

    def view(self, sge: Sge) -> np.ndarray | None:
        """The bytes an SGE names, or None when it is outside this region."""
        off = sge.addr - self.addr
        if off < 0 or sge.length < 0 or off + sge.length > self.length:
            return None
        return self.array[off : off + sge.length]

    def close(self) -> None:
        """ibv_dereg_mr."""
        if self._endpoint is not None:
            self._endpoint.mrs.pop(self.lkey, None)
            self._endpoint = None


class FakeConnection:
    """An rdma_cm id with its RC QP."""

    def __init__(self, endpoint: FakeEndpoint, sock: socket.socket, active: bool) -> None:
        self.endpoint = endpoint
        self.sock: socket.socket | None = sock
        self.active = active
        self.qp_num = next(_qp_numbers)
        self._state = QpState.RESET
        self.phase = "connecting" if active else "await_request"
        self.recvq: collections.deque[tuple[int, Sge]] = collections.deque()
        self.sendq: collections.deque[tuple[int, tuple[Sge, ...], int]] = collections.deque()
        self._fail_next: WcStatus | None = None
        self.modify(QpState.INIT)

    # -- QP ------------------------------------------------------------------------------------------
    @property
    def state(self) -> QpState:
        return self._state

    def modify(self, new: QpState) -> None:
        """ibv_modify_qp's state change (rdma_cm does it for connected ids)."""
        check_transition(self._state, new)
        self._state = new
        if new == QpState.ERR:
            self._flush()

    def _flush(self) -> None:
        ep = self.endpoint
        while self.recvq:
            ep._complete(self.recvq.popleft()[0], WcStatus.WR_FLUSH_ERR, WcOpcode.RECV, self)
        while self.sendq:
            ep._complete(self.sendq.popleft()[0], WcStatus.WR_FLUSH_ERR, WcOpcode.SEND, self)

    def post_send(self, wr_id: int, sges: Sequence[Sge], imm: int) -> None:
        """IBV_WR_SEND_WITH_IMM, signalled."""
        if self._state == QpState.ERR:
            self.endpoint._complete(wr_id, WcStatus.WR_FLUSH_ERR, WcOpcode.SEND, self)
            return
        if self._state != QpState.RTS:
            raise VerbsError(f"post_send on QP {self.qp_num} in state {self._state.name} (needs RTS)")
        if len(self.sendq) >= self.endpoint.send_depth:
            raise VerbsError(f"post_send: send queue of QP {self.qp_num} is full ({self.endpoint.send_depth})")
        if len(sges) > self.endpoint.max_send_sge:
            raise VerbsError(f"post_send: {len(sges)} SGEs, the QP takes {self.endpoint.max_send_sge}")
        self.sendq.append((wr_id, tuple(sges), int(imm) & 0xFFFFFFFF))
        self.endpoint._dirty.add(self)

    def post_recv(self, wr_id: int, sge: Sge) -> None:
        """A receive buffer for one incoming message."""
        if self._state == QpState.ERR:
            self.endpoint._complete(wr_id, WcStatus.WR_FLUSH_ERR, WcOpcode.RECV, self)
            return
        if self._state == QpState.RESET:
            raise VerbsError(f"post_recv on QP {self.qp_num} in state RESET")
        if len(self.recvq) >= self.endpoint.recv_depth:
            raise VerbsError(f"post_recv: receive queue of QP {self.qp_num} is full ({self.endpoint.recv_depth})")
        self.recvq.append((wr_id, sge))
        self.endpoint._interest(self)

    def fail_next_send(self, status: WcStatus) -> None:
        """Test hook: the next send that reaches the wire completes with ``status`` and breaks the QP."""
        self._fail_next = status

    # -- CM ------------------------------------------------------------------------------------------
    def disconnect(self) -> None:
        """rdma_disconnect: the peer sees DISCONNECTED, our QP goes to ERR (posted WRs flush)."""
        if self.phase == "established":
            self._send_raw(MSG_DREQ)
            self.endpoint._cm_event(CmEventType.DISCONNECTED, self)
        self.phase = "closed"
        if self._state != QpState.ERR:
            self.modify(QpState.ERR)
        self.endpoint._drop_socket(self)

    def close(self) -> None:
        """rdma_destroy_qp + rdma_destroy_id: nothing of this connection completes any more."""
        self.recvq.clear()
        self.sendq.clear()
        self.phase = "closed"
        self._state = QpState.RESET
        self.endpoint._drop_socket(self)

    def _send_raw(self, msg: bytes) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.send(msg)
            return True
        except OSError:
            return False

    def __repr__(self) -> str:
        return f"FakeConnection(qp {self.qp_num}, {self.phase}, {self._state.name})"


class FakeEndpoint:
    """A listening rdma_cm id on one address, with its PD, CQ + completion channel and CM event channel."""

    def __init__(self, fabric: str, addr: str, port: int, send_depth: int, recv_depth: int, cq_depth: int,
                 max_send_sge: int) -> None:
        self.fabric = fabric
        self.addr = addr
        self.port = port
        self.send_depth = send_depth
        self.recv_depth = recv_depth
        self.cq_depth = cq_depth
        self.max_send_sge = max_send_sge
        self.mrs: dict[int, FakeMemoryRegion] = {}
        self.cq: collections.deque[Completion] = collections.deque()
        self.cq_overruns = 0
        self._cm_events: list[CmEvent] = []
        self._armed = False
        self._conns: dict[int, FakeConnection] = {}
        self._dirty: set[FakeConnection] = set()
        self._scratch = bytearray(MAX_MESSAGE)
        self._closed = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
        try:
            self.listener.bind(fabric_address(fabric, addr, port))
        except OSError as exc:
            self.listener.close()
            raise VerbsError(f"rdma_bind_addr {addr} port {port} on fake fabric '{fabric}': {exc}") from None
        self.listener.listen(64)
        self._wire = select.epoll()
        self._cm_bell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._cq_bell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._cm_ep = select.epoll()
        self._cq_ep = select.epoll()
        self._wire.register(self.listener.fileno(), select.EPOLLIN)  # accepted only when one is waiting
        self._cm_ep.register(self._cm_bell, select.EPOLLIN)
        self._cm_ep.register(self._wire.fileno(), select.EPOLLIN)
        self._cq_ep.register(self._cq_bell, select.EPOLLIN)
        self._cq_ep.register(self._wire.fileno(), select.EPOLLIN)
        self.cm_fd = self._cm_ep.fileno()
        self.comp_fd = self._cq_ep.fileno()

    # -- resources -----------------------------------------------------------------------------------
    def reg_mr(self, array: Any) -> FakeMemoryRegion:
        mr = FakeMemoryRegion(self, array)
        self.mrs[mr.lkey] = mr
        return mr

    @property
    def registered_mrs(self) -> int:
        return len(self.mrs)

    def connect(self, addr: str, port: int) -> FakeConnection:
        """rdma_resolve_addr/route + rdma_create_qp + rdma_connect: ESTABLISHED or a failure event follows."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
        conn = FakeConnection(self, sock, active=True)
        self._conns[sock.fileno()] = conn
        self._wire.register(sock.fileno(), select.EPOLLIN)
        try:
            sock.connect(fabric_address(self.fabric, addr, port))
        except OSError:
            # nobody listens there (or its backlog is full): rdma_cm reports it asynchronously
            self._broken(conn, CmEventType.UNREACHABLE)
            return conn
        conn.phase = "request_sent"
        conn._send_raw(MSG_REQ)
        return conn

    def accept(self, conn: FakeConnection) -> None:
        """rdma_accept: QP to RTR then RTS, the peer gets ESTABLISHED (and so do we)."""
        if conn.phase != "requested":
            raise VerbsError(f"accept of a connection in phase {conn.phase}")
        conn.modify(QpState.RTR)
        conn.modify(QpState.RTS)
        conn.phase = "established"
        conn._send_raw(MSG_REP)
        self._cm_event(CmEventType.ESTABLISHED, conn)
        self._interest(conn)

    def reject(self, conn: FakeConnection) -> None:
        conn._send_raw(MSG_REJ)
        conn.phase = "closed"
        self._drop_socket(conn)

    # -- events and completions ----------------------------------------------------------------------
    def get_cm_events(self) -> list[CmEvent]:
        self.progress()
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._cm_bell)
        out, self._cm_events = self._cm_events, []
        return out

    def poll_cq(self, max_entries: int) -> list[Completion]:
        self.progress()
        out: list[Completion] = []
        while self.cq and len(out) < max_entries:
            out.append(self.cq.popleft())
        return out

    def req_notify_cq(self) -> None:
        self._armed = True

    def get_cq_event(self) -> bool:
        """Consumes the completion channel's event (ibv_get_cq_event + ibv_ack_cq_events); False if none."""
        self.progress()
        try:
            os.eventfd_read(self._cq_bell)
            return True
        except BlockingIOError:
            return False

    def _complete(self, wr_id: int, status: WcStatus, opcode: WcOpcode, conn: FakeConnection, byte_len: int = 0,
                  imm: int = 0) -> None:
        if len(self.cq) >= self.cq_depth:
            self.cq_overruns += 1  # a real CQ overrun is a fatal async event; the transport sizes its CQ
        self.cq.append(Completion(wr_id, status, opcode, byte_len, imm, conn.qp_num))
        if self._armed:
            self._armed = False
            with contextlib.suppress(BlockingIOError):
                os.eventfd_write(self._cq_bell, 1)

    def _cm_event(self, kind: CmEventType, conn: FakeConnection) -> None:
        self._cm_events.append(CmEvent(kind, conn))
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(self._cm_bell, 1)

    # -- the "HCA" -----------------------------------------------------------------------------------
    def progress(self) -> None:
        """Moves what the wire allows: new connections, messages in, sends out."""
        if self._closed:
            return
        listener = self.listener.fileno()
        for fd, ev in self._wire.poll(0):
            if fd == listener:
                self._accept_all()
                continue
            conn = self._conns.get(fd)
            if conn is None:
                continue
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self._read(conn)
            if ev & select.EPOLLOUT:
                self._dirty.add(conn)
            if ev & (select.EPOLLHUP | select.EPOLLERR) and conn.sock is not None and conn.phase != "closed":
                self._broken(conn, CmEventType.DISCONNECTED if conn.phase == "established" else CmEventType.UNREACHABLE)
        for conn in list(self._dirty):
            self._dirty.discard(conn)
            self._send_queued(conn)

    def _accept_all(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # BlockingIOError: none left
                return
            sock.setblocking(False)
            conn = FakeConnection(self, sock, active=False)
            self._conns[sock.fileno()] = conn
            self._wire.register(sock.fileno(), select.EPOLLIN)

    def _read(self, conn: FakeConnection) -> None:
        while conn.sock is not None:
            if conn.phase == "established" and not conn.recvq:
                break  # RNR: the message waits on the wire until a receive is posted
            try:
                n = conn.sock.recv_into(self._scratch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                n = 0
            if n == 0:
                if conn.phase != "closed":
                    kind = CmEventType.DISCONNECTED if conn.phase == "established" else CmEventType.UNREACHABLE
                    self._broken(conn, kind)
                return
            self._message(conn, memoryview(self._scratch)[:n])
        self._interest(conn)

    def _message(self, conn: FakeConnection, msg: memoryview) -> None:
        kind = bytes(msg[:1])
        if kind == MSG_REQ and conn.phase == "await_request":
            conn.phase = "requested"
            self._cm_event(CmEventType.CONNECT_REQUEST, conn)
        elif kind == MSG_REP and conn.phase == "request_sent":
            conn.modify(QpState.RTR)
            conn.modify(QpState.RTS)
            conn.phase = "established"
            self._cm_event(CmEventType.ESTABLISHED, conn)
        elif kind == MSG_REJ and conn.phase == "request_sent":
            self._broken(conn, CmEventType.REJECTED)
        elif kind == MSG_DREQ:
            self._broken(conn, CmEventType.DISCONNECTED)
        elif kind == MSG_DATA and conn.phase == "established" and conn.recvq:
            _k, imm = DATA_HEADER.unpack_from(msg)
            payload = msg[DATA_HEADER.size :]
            wr_id, sge = conn.recvq.popleft()
            mr = self.mrs.get(sge.lkey)
            dst = mr.view(sge) if mr is not None else None
            if dst is None:
                self._complete(wr_id, WcStatus.LOC_PROT_ERR, WcOpcode.RECV, conn)
                self._broken(conn, CmEventType.DISCONNECTED)
            elif len(payload) > sge.length:
                self._complete(wr_id, WcStatus.LOC_LEN_ERR, WcOpcode.RECV, conn)
                self._broken(conn, CmEventType.DISCONNECTED)
            else:
                dst[: len(payload)] = np.frombuffer(payload, np.uint8)
                self._complete(wr_id, WcStatus.SUCCESS, WcOpcode.RECV, conn, len(payload), imm)
        # anything else (a message in the wrong phase) is a protocol error of the peer: ignored

    def _send_queued(self, conn: FakeConnection) -> None:
        while conn.sendq and conn.sock is not None and conn._state == QpState.RTS:
            wr_id, sges, imm = conn.sendq[0]
            parts = [DATA_HEADER.pack(MSG_DATA, imm)]
            bad = False
            for sge in sges:
                mr = self.mrs.get(sge.lkey)
                src = mr.view(sge) if mr is not None else None
                if src is None:
                    bad = True
                    break
                parts.append(src.tobytes())
            status = WcStatus.LOC_PROT_ERR if bad else conn._fail_next
            if status is not None:
                conn._fail_next = None
                conn.sendq.popleft()
                self._complete(wr_id, status, WcOpcode.SEND, conn)
                self._broken(conn, CmEventType.DISCONNECTED)
                return
            try:
                conn.sock.send(b"".join(parts))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._broken(conn, CmEventType.DISCONNECTED)
                return
            conn.sendq.popleft()
            self._complete(wr_id, WcStatus.SUCCESS, WcOpcode.SEND, conn, sum(s.length for s in sges))
        self._interest(conn)

    def _interest(self, conn: FakeConnection) -> None:
        if conn.sock is None:
            return
        mask = 0
        if conn.phase != "established" or conn.recvq:
            mask |= select.EPOLLIN
        if conn.sendq and conn.phase == "established":
            mask |= select.EPOLLOUT
        with contextlib.suppress(OSError):
            self._wire.modify(conn.sock.fileno(), mask)

    def _broken(self, conn: FakeConnection, kind: CmEventType) -> None:
        """The connection is gone: one CM event, the QP to ERR (posted WRs flush), the socket closed."""
        if conn.phase == "closed":
            return
        conn.phase = "closed"
        self._cm_event(kind, conn)
        if conn.state != QpState.ERR:
            conn.modify(QpState.ERR)
        self._drop_socket(conn)

    def _drop_socket(self, conn: FakeConnection) -> None:
        self._dirty.discard(conn)
        if conn.sock is None:
            return
        fd = conn.sock.fileno()
        self._conns.pop(fd, None)
        with contextlib.suppress(OSError):
            self._wire.unregister(fd)
        conn.sock.close()
        conn.sock = None

    # -- teardown ------------------------------------------------------------------------------------
    def crash(self) -> None:
        """Test hook: every socket closed without a disconnect request, as when the process is killed."""
        for conn in list(self._conns.values()):
            self._drop_socket(conn)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._conns.values()):
            self._drop_socket(conn)
        self.listener.close()
        for ep in (self._cm_ep, self._cq_ep, self._wire):
            ep.close()
        for fd in (self._cm_bell, self._cq_bell):
            os.close(fd)
        self.mrs.clear()


class FakeBackend:
    """Endpoints on one fake fabric (a name shared by the processes that should see each other)."""

    name = "fake"

    def __init__(self, fabric: str = "default") -> None:
        self.fabric = fabric

    def open(self, local_addr: str, port: int, *, send_depth: int = 128, recv_depth: int = 128,
             cq_depth: int = 1024, max_send_sge: int = 4) -> FakeEndpoint:
        return FakeEndpoint(self.fabric, local_addr, port, send_depth, recv_depth, cq_depth, max_send_sge)
