"""The service side of client connections: listen, admit, hand out rings, drain requests, notice death.

One ``Server`` per service process (cpg, cmap, quorum, cfg). It is driven by an epoll loop: the server
registers its descriptors (listen socket, the service doorbell, each client socket) in a poller it is
given (a ``select.epoll`` or anything with ``register``/``unregister``) and the loop hands every ready
descriptor back to ``handle(fd, events)``. ``serve_forever`` is that loop for simple services and tests.

Every client shares its rings' memory with the server and can change any byte of it at any moment,
so everything read from a request ring is copied out, then checked; a client that breaks the ring
format is disconnected with a logged reason and the server carries on with the others.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import logging
import mmap
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pycorosync.ipc import conn as proto, connfile, fastpath, ring_kernels as rk, stats as node_stats, wakeup as wake
from pycorosync.ipc.creds import AccessPolicy, PeerCred, peer_cred
from pycorosync.ipc.errors import (
    CS_ERR_ACCESS,
    CS_ERR_EXIST,
    CS_ERR_NO_RESOURCES,
    CS_ERR_NOT_EXIST,
    CS_ERR_TRY_AGAIN,
    CS_ERR_VERSION,
    CS_OK,
    CsError,
)
from pycorosync.ipc.fastpath import RingIO
from pycorosync.ipc.ring import Ring

log = logging.getLogger("MAIN")

_HANGUP = select.EPOLLHUP | select.EPOLLRDHUP | select.EPOLLERR
_SOCKET_EVENTS = select.EPOLLIN | select.EPOLLRDHUP
_I64 = struct.Struct("<q")
# a framed response (ipc.framing) that starts with this refuses its request with CS_ERR_TRY_AGAIN
_TRY_AGAIN_HEADER = int(CS_ERR_TRY_AGAIN).to_bytes(4, "little")
#: the connection stats reach the node's stats table at most this often (from ``tick``, never per message)
STATS_PUBLISH_INTERVAL_S = 0.5
# ConnStats counters summed into the stats table's ipcs.<name> columns (queued and flow_control are states)
_PUBLISHED_COUNTERS = (
    "requests",
    "responses",
    "dispatched",
    "invalid_request",
    "overload",
    "flow_control_count",
    "send_retries",
    "try_again",
)


class Poller(Protocol):
    """What the server needs from an event loop's poller (``select.epoll`` fits)."""

    def register(self, fd: int, eventmask: int = ...) -> None: ...

    def unregister(self, fd: int) -> None: ...


class ServiceHandler(Protocol):
    """The service engine's side of its client connections (corosync's lib_init / lib_engine / lib_exit)."""

    def on_connect(self, conn: ServerConnection) -> int | None:
        """A client passed the credential check; return None or CS_OK to admit it, or a cs_error_t to refuse
        (e.g. CS_ERR_TRY_AGAIN until the first sync completed). Events sent here reach the client first."""

    def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        """One request; return ``(rtype, payload)`` to answer now, or None and answer later with
        ``conn.send_response``. Every request must get exactly one response."""

    def on_disconnect(self, conn: ServerConnection) -> None:
        """The client closed, died, or was dropped; ``conn`` can no longer send."""


#: optional on a handler: ``drain_requests(conn, ring, budget, max_request_bytes) -> int`` takes a run of
#: requests off ``conn``'s request ring (a ``fastpath.RingIO``) in one call, at most ``budget``, each at most
#: ``max_request_bytes``, none with a response, and returns how many; 0 when the next one is not for it (the
#: server then reads that one and hands it to ``on_request``)
DRAIN_REQUESTS = "drain_requests"


@dataclass
class ConnStats:
    """Per-connection counters, named as corosync's ``stats.ipcs.<service>.<pid>.<conn>.*`` keys."""

    requests: int = 0
    responses: int = 0
    dispatched: int = 0
    send_retries: int = 0
    flow_control: int = 0  # 1 while this client's requests are not read (its responses do not fit)
    flow_control_count: int = 0
    queued: int = 0  # responses and events waiting for ring space now
    invalid_request: int = 0
    overload: int = 0  # event or response that did not fit its ring at once
    try_again: int = 0  # responses refusing a request with CS_ERR_TRY_AGAIN (corosync's "overload")

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ServerStats:
    """Counters of one service's listener."""

    accepted: int = 0
    denied: int = 0
    bad_handshake: int = 0
    version_mismatch: int = 0
    refused: int = 0
    dropped: int = 0
    disconnected: int = 0


class ServerConnection:
    """One admitted client: its rings, its credentials and its counters.

    ``context`` is the service's own per-connection state (corosync's ``private_data``).
    """

    def __init__(
        self,
        server: Server,
        conn_id: int,
        sock: socket.socket,
        cred: PeerCred,
        segment: _Segment,
        response_efd: int,
        event_efd: int,
    ) -> None:
        self.server = server
        self.conn_id = conn_id
        self.cred = cred
        self.stats = ConnStats()
        self.context: Any = None
        self.closed = False
        self._sock = sock
        self._segment = segment
        self._response_efd = response_efd
        self._event_efd = event_efd
        self._response_backlog: collections.deque[tuple[int, bytes]] = collections.deque()
        self._event_backlog: collections.deque[tuple[int, bytes]] = collections.deque()
        self._backlog_bytes = 0
        self._deferred_events: list[tuple[int, bytes]] = []  # given during a deferral (Server.defer_event_wakes)

    # identity ---------------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.cred.pid

    @property
    def uid(self) -> int:
        return self.cred.uid

    @property
    def gid(self) -> int:
        return self.cred.gid

    @property
    def service(self) -> str:
        return self.server.service

    def fileno(self) -> int:
        """The client socket (its hang-up is the client's death)."""
        return self._sock.fileno()

    def procname(self) -> str:
        """The client's process name (``/proc/<pid>/comm``), or '' when it is gone."""
        try:
            return Path(f"/proc/{self.pid}/comm").read_text().strip()
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<ServerConnection {self.service}#{self.conn_id} pid {self.pid} uid:gid {self.cred}>"

    # sending ----------------------------------------------------------------------------------------------------
    def send_response(self, rtype: int, payload: bytes) -> bool:
        """Answers the oldest unanswered request. Never lost: a response that does not fit waits in a
        bounded backlog (and requests stop being read) until the client frees space. False if it had
        to wait, or if the connection is closed."""
        if self.closed:
            return False
        self.stats.responses += 1
        if payload[:4] == _TRY_AGAIN_HEADER:
            self.stats.try_again += 1
        if not self._response_backlog and self._push(self._segment.response_io, self._response_efd, rtype, payload):
            return True
        self.stats.overload += 1
        self._queue(self._response_backlog, rtype, payload, "response")
        return False

    def send_event(self, rtype: int, payload: bytes) -> bool:
        """Queues a callback event for the client's dispatch. False if the event ring was full: the event
        then waits in a bounded backlog, and a client that lets it overflow is disconnected. Between
        ``Server.defer_event_wakes`` and ``flush_event_wakes`` the events are kept in order and written at
        the flush, all in one ring write (the ring-full case is then handled there, as here)."""
        if self.closed:
            return False
        self.stats.dispatched += 1
        if not self._event_backlog:
            deferred = self.server._deferred_wakes
            io = self._segment.event_io
            if deferred is None:
                if self._push(io, self._event_efd, rtype, payload):
                    return True
            else:
                if len(payload) > io.max_payload:
                    io.check_size(len(payload))
                self._deferred_events.append((rtype, payload))
                deferred[self.conn_id] = self
                return True
        self.stats.overload += 1
        self._queue(self._event_backlog, rtype, payload, "event")
        return False

    def event_ring(self) -> Ring | None:
        """The event ring, for a service that writes a run of events into it directly (a batch kernel),
        then calls ``events_written``; None while events must go through ``send_event`` to keep their
        order (closed, a backlog, or events deferred)."""
        if self.closed or self._event_backlog or self._deferred_events:
            return None
        return self._segment.event_io.ring

    def events_written(self, count: int) -> None:
        """After ``count`` events were written into ``event_ring()``: counted, and the client woken if it sleeps."""
        self.stats.dispatched += count
        if self._event_efd >= 0:
            self._segment.event_io.notify(self._event_efd)

    def _write_deferred_events(self) -> None:
        """The events given during a deferral into the event ring, in one write; what does not fit goes to
        the backlog, in order. Then the client is woken if it sleeps."""
        events, self._deferred_events = self._deferred_events, []
        if self.closed or not events:
            return
        io = self._segment.event_io
        n = io.push_batch(events) if not self._event_backlog else 0
        for rtype, payload in events[n:]:
            self.stats.overload += 1
            self._queue(self._event_backlog, rtype, payload, "event")
            if self.closed:
                return
        if n and self._event_efd >= 0:
            io.notify(self._event_efd)

    def close(self, reason: str = "closed by the service") -> None:
        """Disconnects this client (``on_disconnect`` is called)."""
        self.server._drop(self, reason)

    # internals --------------------------------------------------------------------------------------------------
    @staticmethod
    def _push(io: RingIO, efd: int, rtype: int, payload: bytes) -> bool:
        return io.push(rtype, payload, efd)

    def _queue(self, backlog: collections.deque[tuple[int, bytes]], rtype: int, payload: bytes, what: str) -> None:
        limits = self.server.limits
        backlog.append((rtype, payload))
        self._backlog_bytes += len(payload)
        self.stats.queued = len(self._response_backlog) + len(self._event_backlog)
        if self.stats.queued > limits.backlog_records or self._backlog_bytes > limits.backlog_bytes:
            self.server._drop(
                self,
                f"{what} backlog over its limit ({self.stats.queued} records, {self._backlog_bytes} bytes): "
                "client does not read its rings",
            )
            return
        # raise the flag, then try once more: if the client drained in between, it may not have seen the flag
        wake.raise_flag(self._segment.backlog_addr)
        self._flush()

    def _flush(self) -> None:
        """Moves waiting responses and events into their rings while they fit."""
        seg = self._segment
        for backlog, io, efd in (
            (self._response_backlog, seg.response_io, self._response_efd),
            (self._event_backlog, seg.event_io, self._event_efd),
        ):
            while backlog:
                rtype, payload = backlog[0]
                if not self._push(io, efd, rtype, payload):
                    self.stats.send_retries += 1
                    break
                backlog.popleft()
                self._backlog_bytes -= len(payload)
        self.stats.queued = len(self._response_backlog) + len(self._event_backlog)
        if not self.stats.queued:
            wake.lower_flag(seg.backlog_addr)

    @property
    def _has_backlog(self) -> bool:
        return bool(self._response_backlog or self._event_backlog)


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of one server: ring sizes and the queues that hold what does not fit."""

    request_ring_bytes: int = proto.DEFAULT_RING_BYTES
    response_ring_bytes: int = proto.DEFAULT_RING_BYTES
    event_ring_bytes: int = proto.DEFAULT_RING_BYTES
    max_request_bytes: int = proto.DEFAULT_RING_BYTES // 2
    backlog_records: int = 4096  # per connection, responses + events waiting for ring space
    backlog_bytes: int = 16 << 20
    max_connections: int = 1024
    max_pending_handshakes: int = 64
    handshake_timeout_s: float = 2.0
    requests_per_round: int = 64  # per connection and doorbell round: one busy client cannot starve others
    accepts_per_round: int = 64


class _Segment:
    """The memfd mapping of one connection and the rings inside it (server side)."""

    def __init__(
        self, layout: proto.SegmentLayout, mm: mmap.mmap, label: str, scratch: np.ndarray[Any, Any] | None
    ) -> None:
        self.layout = layout
        self.mm = mm
        self.array = np.frombuffer(mm, dtype=np.uint8)
        self.backlog_addr = int(self.array.ctypes.data) + proto.BACKLOG_OFFSET
        self.request = Ring.create(self.array, layout.request_capacity, layout.request_offset, f"{label} request")
        self.response = Ring.create(self.array, layout.response_capacity, layout.response_offset, f"{label} response")
        self.event = Ring.create(self.array, layout.event_capacity, layout.event_offset, f"{label} event")
        self.request_io = RingIO(self.request, scratch if scratch is not None else fastpath.scratch_for(self.request))
        self.response_io = RingIO(self.response)
        self.event_io = RingIO(self.event)
        # where the stats tick reads each ring's indices (tail, head) and the server's refused pushes
        self._fill_at = tuple(
            (r.offset + rk.OFF_TAIL, r.offset + rk.OFF_HEAD, r.capacity) for r in (self.request, self.response, self.event)
        )
        self._full_at = (self.response.offset + rk.OFF_N_FULL, self.event.offset + rk.OFF_N_FULL)

    def fill(self) -> tuple[int, int, int]:
        """(bytes waiting in the three rings, their capacity, pushes the server found no room for). The
        client can write any value into the indices: each ring's fill is clamped to its capacity."""
        mm, read = self.mm, _I64.unpack_from
        used = capacity = 0
        for tail_at, head_at, cap in self._fill_at:
            used += max(0, min(read(mm, tail_at)[0] - read(mm, head_at)[0], cap))
            capacity += cap
        full = max(0, read(mm, self._full_at[0])[0]) + max(0, read(mm, self._full_at[1])[0])
        return used, capacity, full

    def release(self) -> None:
        # numpy views pin the mapping: drop them before unmapping (else BufferError)
        for io in (self.request_io, self.response_io, self.event_io):
            io.release()
        del self.request, self.response, self.event, self.request_io, self.response_io, self.event_io, self.array
        with contextlib.suppress(BufferError):
            self.mm.close()


def create_segment(
    limits: ServerLimits, label: str, scratch: np.ndarray[Any, Any] | None = None
) -> tuple[int, _Segment]:
    """A sealed memfd with the three rings of one connection: (memfd, mapping). The caller closes the fd
    once it has been passed on. Sealing against shrinking matters: a client that truncated the file would
    make the server's next access to the rings a SIGBUS."""
    layout = proto.SegmentLayout.plan(
        limits.request_ring_bytes, limits.response_ring_bytes, limits.event_ring_bytes, Ring.layout_bytes
    )
    fd = os.memfd_create(f"pcs-{label}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    mm: mmap.mmap | None = None
    try:
        os.ftruncate(fd, layout.total_bytes)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        mm = mmap.mmap(fd, layout.total_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        header = layout.pack_header(os.getpid())
        mm[: len(header)] = header
        return fd, _Segment(layout, mm, label, scratch)
    except BaseException:
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()
        os.close(fd)
        raise


@dataclass
class _Pending:
    """An accepted socket whose HELLO has not arrived yet."""

    sock: socket.socket
    cred: PeerCred
    deadline: float
    refusal: int = CS_OK  # answer to give once the HELLO is read (not before: see _handle_hello)


class Server:
    """Listens on ``<run_dir>/<service>.sock`` and serves that service's clients.

    Raises CsError(CS_ERR_EXIST) when another server of the same service lives on that run directory.
    A service loop registers nothing itself: it passes its epoll as ``poller``, hands every ready fd to
    ``handle(fd, events)`` (False: not the server's) and calls ``tick()`` a few times a second. The
    server is not thread-safe: call it, and the connections' ``send_*``, from the loop's thread only.
    Per connection it holds four descriptors: the socket, two eventfds and its memory mapping.

    Stats: ``stats_row`` (an ``ipc.stats.StatsRow``), or inside a node the slot of the node's stats table
    named after ``service``, receives ``totals()`` from ``tick`` (``publish_stats``), and the connections'
    own counters go to ``<run_dir>/<service>.ipcs.json`` (``ipc.connfile``). Neither happens without a row.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        service: str,
        handler: ServiceHandler,
        access: AccessPolicy | None = None,
        limits: ServerLimits | None = None,
        request_types: Collection[int] | None = None,
        poller: Poller | None = None,
        stats_row: node_stats.StatsRow | None = None,
    ) -> None:
        self.service = proto.check_service_name(service)
        self.handler = handler
        self.access = access or AccessPolicy()
        self.limits = limits or ServerLimits()
        # ring sizes the ring cannot take fail here, with the ring's message, not at the first client
        proto.SegmentLayout.plan(
            self.limits.request_ring_bytes,
            self.limits.response_ring_bytes,
            self.limits.event_ring_bytes,
            Ring.layout_bytes,
        )
        self.request_types = frozenset(request_types) if request_types is not None else None
        self._drain_batch: Callable[[ServerConnection, RingIO, int, int], int] | None = getattr(
            handler, DRAIN_REQUESTS, None)
        self.stats = ServerStats()
        # what closed connections counted, so that the published counters never go back when one closes
        self.closed_totals = ConnStats()
        self._closed_ring_full = 0
        self._stats_table: node_stats.StatsTable | None = None
        self.stats_row = stats_row
        self._conn_file: connfile.ConnectionFile | None = None
        self._next_publish = 0.0
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / proto.socket_name(service)
        self.connections: dict[int, ServerConnection] = {}
        self._by_fd: dict[int, ServerConnection] = {}
        self._pending: dict[int, _Pending] = {}
        self._order: collections.deque[int] = collections.deque()  # conn ids, rotated for fairness
        self._ids = itertools.count(1)
        # requests are copied out of their ring one at a time: one scratch buffer serves every connection
        self._scratch = np.empty(fastpath.max_payload(self.limits.request_ring_bytes), np.uint8)
        self._own_epoll: select.epoll | None = None
        if poller is None:
            self._own_epoll = select.epoll()
            poller = self._own_epoll
        self._poller = poller
        self._closed = False
        #: between ``defer_event_wakes`` and ``flush_event_wakes``: connections given events, not yet woken
        self._deferred_wakes: dict[int, ServerConnection] | None = None
        self._lock_fd = -1
        self._listen: socket.socket | None = None
        self._doorbell = -1
        try:
            if self.stats_row is None:
                # inside a node: this process's slot (named as the service) of the node's stats table
                found = node_stats.node_process_row(self.service)
                if found is not None:
                    self._stats_table, self.stats_row = found
            listen = self._bind()
            if self.stats_row is not None:
                self._conn_file = connfile.ConnectionFile(self.run_dir, self.service)
            self._doorbell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._poller.register(listen.fileno(), select.EPOLLIN)
            self._poller.register(self._doorbell, select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    # setup --------------------------------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        self.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        # the lock makes "one server per service and run dir" atomic; the socket probe covers a
        # listener that holds no lock (an older build, or a hand-made socket)
        self._lock_fd = os.open(self.run_dir / f"{self.service}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CsError(
                CS_ERR_EXIST, f"{self.path}: another '{self.service}' server is already running on this run directory"
            ) from None
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o666)  # access is decided by SO_PEERCRED, not by file mode
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listen = sock
        return sock

    def _remove_stale_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise CsError(CS_ERR_EXIST, f"{self.path}: exists and is not a socket; not removing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("%s: removing stale socket", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except OSError as exc:
            raise CsError(CS_ERR_EXIST, f"{self.path}: cannot tell whether a server listens there: {exc}") from None
        else:
            owner = peer_cred(probe)
            raise CsError(
                CS_ERR_EXIST, f"{self.path}: another '{self.service}' server (pid {owner.pid}) is listening there"
            )
        finally:
            probe.close()

    # descriptors for the loop -----------------------------------------------------------------------------------
    def fileno(self) -> int:
        """The server's own epoll (when it was not given a poller): readable when something is ready."""
        if self._own_epoll is None:
            raise ValueError("this server registers its descriptors in the caller's poller")
        return self._own_epoll.fileno()

    @property
    def listen_fd(self) -> int:
        return self._listen.fileno() if self._listen else -1

    @property
    def doorbell_fd(self) -> int:
        return self._doorbell

    def fds(self) -> list[int]:
        """Every descriptor the server has registered in its poller right now."""
        return [self.listen_fd, self._doorbell, *self._pending, *self._by_fd]

    # event handling ---------------------------------------------------------------------------------------------
    def handle(self, fd: int, events: int) -> bool:
        """Handles one ready descriptor from the poller; False if it is not one of this server's."""
        if fd == self.listen_fd:
            self.handle_listen()
        elif fd == self._doorbell:
            self.handle_doorbell()
        elif fd in self._by_fd:
            conn = self._by_fd[fd]
            if events & _HANGUP:
                self.handle_hangup(conn)
            else:
                self._handle_conn_readable(conn)
        elif fd in self._pending:
            self._handle_hello(self._pending[fd], events)
        else:
            return False
        return True

    def handle_listen(self) -> None:
        """Accepts waiting clients (a bounded number per call) and checks their credentials."""
        if self._listen is None:
            return
        for _ in range(self.limits.accepts_per_round):
            try:
                sock, _ = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE/ENFILE: keep serving the clients we have
                log.error("%s: accept failed: %s", self.path, exc)
                return
            sock.setblocking(False)
            try:
                cred = peer_cred(sock)
            except OSError:
                sock.close()
                continue
            if len(self._pending) >= self.limits.max_pending_handshakes:
                self.stats.refused += 1
                log.warning("%s: hanging up on pid %d: too many handshakes in progress", self.service, cred.pid)
                sock.close()
                continue
            refusal = CS_OK
            if not self.access.allows(cred):
                self.stats.denied += 1
                log.warning("Denied connection attempt from %s", cred)
                refusal = CS_ERR_ACCESS
            elif len(self.connections) + len(self._pending) >= self.limits.max_connections:
                self.stats.refused += 1
                log.warning("%s: refusing pid %d: too many connections", self.service, cred.pid)
                refusal = CS_ERR_NO_RESOURCES
            deadline = time.monotonic() + self.limits.handshake_timeout_s
            self._pending[sock.fileno()] = _Pending(sock, cred, deadline, refusal)
            self._poller.register(sock.fileno(), _SOCKET_EVENTS)

    def handle_doorbell(self) -> None:
        """Reads requests from every connection with pending data, at most ``requests_per_round`` each, then
        re-arms. If work is left, the doorbell rings itself so the loop comes back after its other fds."""
        wake.clear_eventfd(self._doorbell)
        more = False
        for _ in range(len(self._order)):
            conn_id = self._order[0]
            self._order.rotate(-1)
            conn = self.connections.get(conn_id)
            if conn is None:
                continue
            if conn._has_backlog:
                conn._flush()
            if not conn.closed and self._drain(conn):
                more = True
        self._order.rotate(1)  # the next round starts with another connection: fair under load
        for conn in list(self.connections.values()):
            if conn.closed or conn._response_backlog:
                continue  # paused; the client's doorbell after it reads resumes it
            try:
                armed = conn._segment.request.arm()
            except Exception as exc:  # a client can corrupt its ring header under us
                self._drop(conn, f"corrupt request ring: {exc}")
                continue
            if not armed:
                more = True
        if more:
            wake.ring_eventfd(self._doorbell)

    def handle_hangup(self, conn: ServerConnection) -> None:
        """The client's socket hung up: the client closed or died."""
        self._drop(conn, "", hangup=True)

    def defer_event_wakes(self) -> None:
        """From now until ``flush_event_wakes``, ``send_event`` does not wake the clients: a batch of
        deliveries then wakes each client once instead of once per event (a client that wakes per event
        costs a context switch per message, on a core the service shares)."""
        if self._deferred_wakes is None:
            self._deferred_wakes = {}

    def flush_event_wakes(self) -> None:
        """Writes the events given since ``defer_event_wakes`` (one ring write per client) and wakes every
        such client once (if it sleeps); ends the deferral."""
        pending, self._deferred_wakes = self._deferred_wakes, None
        if not pending:
            return
        for conn in pending.values():
            conn._write_deferred_events()

    def tick(self) -> None:
        """Housekeeping a loop should call a few times a second: expires slow handshakes and retries
        backlogs (a safety net: the client's doorbell after reading is the normal trigger)."""
        now = time.monotonic()
        for fd, pend in list(self._pending.items()):
            if now >= pend.deadline:
                self.stats.bad_handshake += 1
                log.warning(
                    "%s: no HELLO from pid %d within %.1fs",
                    self.service,
                    pend.cred.pid,
                    self.limits.handshake_timeout_s,
                )
                self._forget_pending(fd)
        for conn in list(self.connections.values()):
            if conn._has_backlog:
                conn._flush()
                if not conn._response_backlog:
                    wake.ring_eventfd(self._doorbell)
        if self.stats_row is not None and now >= self._next_publish:
            self._next_publish = now + STATS_PUBLISH_INTERVAL_S
            self.publish_stats()

    # stats ------------------------------------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        """This server's counters over every connection it ever had (``ConnStats`` names plus ``active``,
        ``closed``, ``ring_full``, and ``ring_used_bytes`` / ``ring_capacity_bytes`` summed over the
        open connections' request, response and event rings)."""
        out = {name: getattr(self.closed_totals, name) for name in _PUBLISHED_COUNTERS}
        ring_full, used, capacity = self._closed_ring_full, 0, 0
        for conn in self.connections.values():
            for name in _PUBLISHED_COUNTERS:
                out[name] += getattr(conn.stats, name)
            conn_used, conn_capacity, conn_full = conn._segment.fill()
            used += conn_used
            capacity += conn_capacity
            ring_full += conn_full
        out["active"] = len(self.connections)
        out["closed"] = self.stats.disconnected + self.stats.dropped
        out["ring_full"] = ring_full
        out["ring_used_bytes"] = used
        out["ring_capacity_bytes"] = capacity
        return out

    def publish_stats(self) -> None:
        """Writes ``totals()`` into this process's row of the node's stats table (``ipcs.*``, ``ipc.ring_*``);
        ``tick`` calls it every STATS_PUBLISH_INTERVAL_S. A no-op without a row."""
        row = self.stats_row
        if row is None:
            return
        t = self.totals()
        row.set("ipcs.active", t["active"])
        row.set("ipcs.closed", t["closed"])
        for name in _PUBLISHED_COUNTERS:
            row.set(f"ipcs.{name}", t[name])
        row.set("ipc.ring_full", t["ring_full"])
        row.set("ipc.ring_used_bytes", t["ring_used_bytes"])
        row.set("ipc.ring_capacity_bytes", t["ring_capacity_bytes"])
        row.set("process.heartbeat_ns", time.monotonic_ns())
        if self._conn_file is not None:
            self._conn_file.update(
                {"pid": c.pid, "conn": c.conn_id, **c.stats.as_dict()} for c in self.connections.values()
            )

    def poll(self, timeout: float) -> int:
        """One round of the server's own epoll; returns the number of events handled."""
        if self._own_epoll is None:
            raise ValueError("this server registers its descriptors in the caller's poller")
        try:
            ready = self._own_epoll.poll(timeout)
        except InterruptedError:
            return 0
        for fd, events in ready:
            self.handle(fd, events)
        return len(ready)

    def serve_forever(self, stop_event: threading.Event, poll_interval: float = 0.05) -> None:
        """Serves until ``stop_event`` is set (checked every ``poll_interval`` seconds), then closes."""
        try:
            last_tick = time.monotonic()
            while not stop_event.is_set():
                self.poll(poll_interval)
                now = time.monotonic()
                if now - last_tick >= poll_interval:
                    self.tick()
                    last_tick = now
        finally:
            self.close()

    # connections ------------------------------------------------------------------------------------------------
    def _handle_hello(self, pend: _Pending, events: int) -> None:
        sock = pend.sock
        try:
            data = sock.recv(proto.HELLO.size + 64)  # larger than HELLO: an oversized message shows as too long
        except (BlockingIOError, InterruptedError):
            if events & _HANGUP:
                self._forget_pending(sock.fileno())
            return
        except OSError:
            self._forget_pending(sock.fileno())
            return
        fd = sock.fileno()
        del self._pending[fd]
        self._poller.unregister(fd)
        if not data:
            sock.close()
            return
        if pend.refusal != CS_OK:
            # answered only now: closing a socket with the client's HELLO still unread would make the
            # client's read fail with ECONNRESET before it could see the reason
            self._refuse(sock, pend.refusal)
            return
        try:
            hello = proto.Hello.unpack(data)
        except ValueError as exc:
            self.stats.bad_handshake += 1
            log.warning("%s: bad handshake from pid %d uid:gid %s: %s", self.service, pend.cred.pid, pend.cred, exc)
            sock.close()
            return
        if hello.version != proto.IPC_PROTOCOL_VERSION:
            self.stats.version_mismatch += 1
            log.warning(
                "%s: pid %d speaks IPC protocol %d, this server %d",
                self.service,
                pend.cred.pid,
                hello.version,
                proto.IPC_PROTOCOL_VERSION,
            )
            self._refuse(sock, CS_ERR_VERSION)
            return
        if hello.service != self.service:
            self.stats.bad_handshake += 1
            self._refuse(sock, CS_ERR_NOT_EXIST)
            return
        self._admit(sock, pend.cred)

    def _admit(self, sock: socket.socket, cred: PeerCred) -> None:
        conn_id = next(self._ids)
        memfd = -1
        efds: list[int] = []
        try:
            memfd, segment = create_segment(self.limits, f"{self.service}#{conn_id}", self._scratch)
            efds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(2)]
        except OSError as exc:
            log.error("%s: cannot create rings for pid %d: %s", self.service, cred.pid, exc)
            for fd in efds:
                os.close(fd)
            if memfd >= 0:
                os.close(memfd)
            self._refuse(sock, CS_ERR_NO_RESOURCES)
            return
        conn = ServerConnection(self, conn_id, sock, cred, segment, efds[0], efds[1])
        segment.request.arm()  # the first request must ring the doorbell
        try:
            verdict = self.handler.on_connect(conn)
        except Exception:
            log.exception("%s: on_connect failed for pid %d", self.service, cred.pid)
            verdict = CS_ERR_NO_RESOURCES
        if verdict is not None and verdict != CS_OK:
            self.stats.refused += 1
            self._refuse(sock, int(verdict))
            self._free(conn)
            return
        welcome = proto.Welcome(proto.IPC_PROTOCOL_VERSION, CS_OK, conn_id, os.getpid()).pack()
        try:
            socket.send_fds(sock, [welcome], [memfd, self._doorbell, efds[0], efds[1]])
        except OSError as exc:
            log.warning("%s: pid %d left during the handshake: %s", self.service, cred.pid, exc)
            os.close(memfd)
            self._free(conn)
            self._call_disconnect(conn)
            return
        os.close(memfd)  # the mapping keeps the memory; the client holds its own descriptor
        self.connections[conn_id] = conn
        self._by_fd[sock.fileno()] = conn
        self._order.append(conn_id)
        self._poller.register(sock.fileno(), _SOCKET_EVENTS)
        self.stats.accepted += 1
        log.debug("%s: connection %d from pid %d uid:gid %s", self.service, conn_id, cred.pid, cred)
        # a request may have been pushed between WELCOME and now: look at once
        wake.ring_eventfd(self._doorbell)

    def _drain(self, conn: ServerConnection) -> bool:
        """Reads up to one round's worth of requests; True if the budget ran out with data left."""
        ring = conn._segment.request_io
        batch = self._drain_batch
        budget = self.limits.requests_per_round
        while budget > 0:
            if conn.closed:
                return False
            if conn._response_backlog:
                if not conn.stats.flow_control:
                    conn.stats.flow_control = 1
                    conn.stats.flow_control_count += 1
                return False
            conn.stats.flow_control = 0
            if batch is not None:
                try:
                    moved = batch(conn, ring, budget, self.limits.max_request_bytes)
                except Exception:
                    log.exception("%s: batch read of the requests of pid %d failed", self.service, conn.pid)
                    conn.stats.invalid_request += 1
                    self._drop(conn, "service failed on a batch of requests")
                    return False
                if moved > 0:
                    conn.stats.requests += moved
                    budget -= moved
                    continue
            budget -= 1
            try:
                record = ring.pop()
            except Exception as exc:  # the ring's own checks found a broken record or index
                conn.stats.invalid_request += 1
                self._drop(conn, f"corrupt request ring: {exc}")
                return False
            if record is None:
                return False
            rtype, payload = record
            conn.stats.requests += 1
            if self.request_types is not None and rtype not in self.request_types:
                conn.stats.invalid_request += 1
                self._drop(conn, f"unknown request type {rtype}")
                return False
            if len(payload) > self.limits.max_request_bytes:
                conn.stats.invalid_request += 1
                self._drop(conn, f"request of {len(payload)} bytes over {self.limits.max_request_bytes}")
                return False
            try:
                response = self.handler.on_request(conn, rtype, payload)
            except CsError as exc:
                # the service refused the request in the corosync way: answer with the code
                log.debug("%s: request %d of pid %d: %s", self.service, rtype, conn.pid, exc)
                response = (rtype, _error_payload(exc.code))
            except Exception:
                log.exception("%s: handler failed on request type %d of pid %d", self.service, rtype, conn.pid)
                conn.stats.invalid_request += 1
                self._drop(conn, f"service failed on request type {rtype}")
                return False
            if response is not None and not conn.closed:
                conn.send_response(response[0], response[1])
        return True

    def _handle_conn_readable(self, conn: ServerConnection) -> None:
        # after the handshake a client has nothing to say on the socket; EOF is its normal goodbye
        try:
            data = conn._sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.handle_hangup(conn)
        else:
            conn.stats.invalid_request += 1
            self._drop(conn, f"unexpected {len(data)}-byte message on the socket after the handshake")

    def _drop(self, conn: ServerConnection, reason: str, hangup: bool = False) -> None:
        if conn.closed:
            return
        if hangup:
            self.stats.disconnected += 1
            log.debug("%s: connection %d (pid %d) closed", self.service, conn.conn_id, conn.pid)
        else:
            self.stats.dropped += 1
            log.warning(
                "%s: dropping connection %d of pid %d uid:gid %s: %s",
                self.service,
                conn.conn_id,
                conn.pid,
                conn.cred,
                reason,
            )
        self.connections.pop(conn.conn_id, None)
        for name in _PUBLISHED_COUNTERS:
            setattr(self.closed_totals, name, getattr(self.closed_totals, name) + getattr(conn.stats, name))
        self._closed_ring_full += conn._segment.fill()[2]
        fd = conn._sock.fileno()
        if self._by_fd.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._poller.unregister(fd)
        with contextlib.suppress(ValueError):
            self._order.remove(conn.conn_id)
        self._free(conn)
        self._call_disconnect(conn)

    def _call_disconnect(self, conn: ServerConnection) -> None:
        try:
            self.handler.on_disconnect(conn)
        except Exception:
            log.exception("%s: on_disconnect failed for connection %d", self.service, conn.conn_id)

    @staticmethod
    def _free(conn: ServerConnection) -> None:
        conn.closed = True
        conn._response_backlog.clear()
        conn._event_backlog.clear()
        conn._sock.close()
        for fd in (conn._response_efd, conn._event_efd):
            with contextlib.suppress(OSError):
                os.close(fd)
        conn._response_efd = conn._event_efd = -1
        conn._segment.release()

    def _refuse(self, sock: socket.socket, error: int) -> None:
        with contextlib.suppress(OSError):
            sock.send(proto.Welcome(proto.IPC_PROTOCOL_VERSION, int(error), 0, os.getpid()).pack())
        sock.close()

    def _forget_pending(self, fd: int) -> None:
        pend = self._pending.pop(fd, None)
        if pend is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._poller.unregister(fd)
            pend.sock.close()

    # shutdown ---------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Disconnects every client, stops listening and removes the socket file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for conn in list(self.connections.values()):
            self._drop(conn, "", hangup=True)
        for fd in list(self._pending):
            self._forget_pending(fd)
        if self._listen is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._poller.unregister(self._listen.fileno())
            self._listen.close()
            self._listen = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._doorbell >= 0:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._poller.unregister(self._doorbell)
            os.close(self._doorbell)
            self._doorbell = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._own_epoll is not None:
            self._own_epoll.close()
        if self._conn_file is not None:  # only a server that got to listen: never overwrite a live one's row
            with contextlib.suppress(Exception):
                self.publish_stats()  # the row outlives this server: show no client left
            self._conn_file.remove()
            self._conn_file = None
        if self._stats_table is not None:
            self.stats_row = None
            self._stats_table.close()
            self._stats_table = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[ServerConnection]:
        return iter(list(self.connections.values()))


def _error_payload(code: int) -> bytes:
    from pycorosync.ipc.framing import encode_response

    return encode_response(code)


__all__ = [
    "ConnStats",
    "Poller",
    "Server",
    "ServerConnection",
    "ServerLimits",
    "ServerStats",
    "ServerThread",
    "ServiceHandler",
    "create_segment",
]


class ServerThread:
    """Runs ``server.serve_forever`` in a background thread; leaving the ``with`` stops and closes it.

    For tests and small tools: a service process runs the server in its own epoll loop instead.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=server.serve_forever, args=(self._stop,), name=f"ipc-{server.service}", daemon=True
        )

    def __enter__(self) -> Server:
        self._thread.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the loop and waits for it (the server is closed on the way out)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
