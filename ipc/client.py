"""The application side of a service connection: synchronous requests, an event channel, asyncio.

    with connect(run_dir, "cpg") as conn:
        rtype, payload = conn.request(MSG_JOIN, body, timeout=5.0)     # CsError on failure
        select.select([conn], [], [])                                  # fileno(): the event channel
        conn.dispatch(CS_DISPATCH_ALL, on_event)                       # on_event(rtype, payload)

Requests go into the connection's request ring and ring the service's doorbell only when the service
sleeps; the response comes back in the response ring, waited for on the response eventfd. A full
request ring is CS_ERR_TRY_AGAIN (back-pressure, never loss); a server that is gone is CS_ERR_LIBRARY,
as corosync's libraries report it. One connection is meant for one thread (or one asyncio task at a
time for requests; ``request_async`` serialises its callers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import mmap
import os
import select
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pycorosync.ipc import conn as proto, plainring
from pycorosync.ipc.errors import (
    CS_ERR_BAD_FLAGS,
    CS_ERR_LIBRARY,
    CS_ERR_TIMEOUT,
    CS_ERR_TOO_BIG,
    CS_ERR_TRY_AGAIN,
    CS_ERR_VERSION,
    CS_OK,
    CsError,
)
from pycorosync.ipc.eventfds import clear_eventfd, ring_eventfd
from pycorosync.ipc.framing import check_response
from pycorosync.ipc.ring_layout import RecordTooLargeError, RingCorruptError
from pycorosync.paths import resolve_run_dir


class CsDispatchFlags(enum.IntEnum):
    """``cs_dispatch_flags_t``: how much ``dispatch`` runs and whether it blocks."""

    CS_DISPATCH_ONE = 1
    CS_DISPATCH_ALL = 2
    CS_DISPATCH_BLOCKING = 3
    CS_DISPATCH_ONE_NONBLOCKING = 4


CS_DISPATCH_ONE = CsDispatchFlags.CS_DISPATCH_ONE
CS_DISPATCH_ALL = CsDispatchFlags.CS_DISPATCH_ALL
CS_DISPATCH_BLOCKING = CsDispatchFlags.CS_DISPATCH_BLOCKING
CS_DISPATCH_ONE_NONBLOCKING = CsDispatchFlags.CS_DISPATCH_ONE_NONBLOCKING
#: events taken off the event ring in one go by ``read_event``
EVENT_BATCH = 64

EventCallback = Callable[[int, bytes], object]

#: services whose clients may send at a high rate (CPG traffic; the IPC layer's echo benchmark): their
#: connections use the compiled rings unless told otherwise. The others (cmap, quorum, votequorum, cfg,
#: sam) answer a request now and then, and a round trip costs the same on either path (two process
#: wake-ups dominate), so their clients never load numba: about half a second and 115 MB less per process.
COMPILED_SERVICES = frozenset({"cpg", "echo"})

_compiled_default: bool | None = None


def use_compiled_rings(compiled: bool | None) -> bool | None:
    """Chooses how this process's new connections reach their rings, unless ``connect`` is told; returns
    the previous choice.

    None (the default): by service, compiled for ``COMPILED_SERVICES``, plain for the others. True: numba
    kernels for every service (the first connection pays for loading them, about half a second). False:
    plain Python (``ipc.plainring``) for every service, numba never imported, as the command-line tools do.
    """
    global _compiled_default
    previous, _compiled_default = _compiled_default, compiled
    return previous


def connect(
    run_dir: str | os.PathLike[str] | None,
    service: str,
    timeout: float = 5.0,
    protocol_version: int = proto.IPC_PROTOCOL_VERSION,
    compiled: bool | None = None,
) -> Connection:
    """Connects to ``<run_dir>/<service>.sock`` (run_dir None: ``pycorosync.paths.resolve_run_dir``).

    ``compiled``: the connection's rings through numba kernels (True) or plain Python (False); None
    takes the process's choice (``use_compiled_rings``), by default the service's. Plain rings are used
    on x86-64 only (their fences rely on it): elsewhere a connection is always compiled.

    Raises CsError: CS_ERR_LIBRARY (no such service running), CS_ERR_ACCESS (credentials refused),
    CS_ERR_VERSION (the server speaks another protocol), CS_ERR_TRY_AGAIN (service not ready yet),
    CS_ERR_TIMEOUT (no answer within ``timeout`` seconds). ``protocol_version`` exists for tests.
    """
    service = proto.check_service_name(service)
    path = Path(resolve_run_dir(None if run_dir is None else str(run_dir))) / proto.socket_name(service)
    where = f"{path}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    fds: list[int] = []
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise CsError(CS_ERR_LIBRARY, f"{where}: no '{service}' service is running there") from None
        except TimeoutError:
            raise CsError(
                CS_ERR_TIMEOUT, f"{where}: the '{service}' service did not accept within {timeout}s"
            ) from None
        except BlockingIOError:  # its listen backlog is full
            raise CsError(CS_ERR_TRY_AGAIN, f"{where}: the '{service}' service is not accepting now") from None
        except OSError as exc:
            raise CsError(CS_ERR_LIBRARY, f"{where}: {exc.strerror or exc}") from None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # a refusal may already be waiting for us; read it rather than report a broken pipe
            sock.send(proto.Hello(protocol_version, service).pack())
        try:
            msg, fds, flags, _ = socket.recv_fds(sock, 256, proto.FD_COUNT)
        except TimeoutError:
            raise CsError(CS_ERR_TIMEOUT, f"{where}: no answer to the handshake within {timeout}s") from None
        except ConnectionResetError:
            msg, flags = b"", 0
        if not msg:
            raise CsError(
                CS_ERR_LIBRARY, f"{where}: the '{service}' service closed the connection during the handshake"
            )
        welcome = proto.Welcome.unpack(msg, where)
        if welcome.error == CS_ERR_VERSION or (welcome.error == CS_OK and welcome.version != protocol_version):
            raise CsError(
                CS_ERR_VERSION, f"{where}: server speaks IPC protocol {welcome.version}, this client {protocol_version}"
            )
        if welcome.error != CS_OK:
            raise CsError(welcome.error, f"{where}: the '{service}' service refused the connection")
        if len(fds) != proto.FD_COUNT or flags & socket.MSG_CTRUNC:
            raise CsError(
                CS_ERR_LIBRARY, f"{where}: handshake carried {len(fds)} descriptors, expected {proto.FD_COUNT}"
            )
        memfd, doorbell, response_efd, event_efd = fds
        fds = []  # the connection owns them from here on, and closes them itself if it fails
        if compiled is None:
            compiled = service in COMPILED_SERVICES if _compiled_default is None else _compiled_default
        return Connection(sock, service, path, welcome, memfd, doorbell, response_efd, event_efd,
                          compiled or not plainring.SAFE_HERE)
    except BaseException:
        for fd in fds:
            os.close(fd)
        sock.close()
        raise


class Connection:
    """A connection to one service (see the module docstring). Use ``connect`` to make one."""

    # numba's Ring and RingIO (compiled) or a PlainRing each (plain): the same methods
    _request: Any
    _response: Any
    _events: Any
    _request_io: Any
    _response_io: Any
    _event_io: Any

    def __init__(
        self,
        sock: socket.socket,
        service: str,
        path: Path,
        welcome: proto.Welcome,
        memfd: int,
        doorbell: int,
        response_efd: int,
        event_efd: int,
        compiled: bool = True,
    ) -> None:
        self.service = service
        self.path = path
        self.conn_id = welcome.conn_id
        self.server_pid = welcome.server_pid
        self._sock = sock
        self._doorbell = doorbell
        self._response_efd = response_efd
        self._event_efd = event_efd
        self._closed = False
        self._server_gone = False
        self._stale_responses = 0  # responses still owed to requests that timed out: skipped when they come
        self._async_lock: asyncio.Lock | None = None
        self._response_poll: select.epoll | None = None
        self._event_poll: select.epoll | None = None
        self._mm: mmap.mmap | None = None
        try:
            size = os.fstat(memfd).st_size
            self._mm = mmap.mmap(memfd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.layout = layout = proto.SegmentLayout.read_header(self._mm[: proto.PAGE], size, str(path))
            label = f"{service}#{self.conn_id}"
            self._pending_events: collections.deque[tuple[int, bytes]] = collections.deque()
            if compiled:
                self._attach_compiled(layout, label)
            else:
                self._attach_plain(layout, label)
            self.max_request_bytes = self._request.max_payload
            # two private epolls: "a response or the server's death" and "an event or the server's death",
            # each a single fd that poll/select/epoll/asyncio can wait on
            self._response_poll = select.epoll()
            # edge-triggered: no read to reset the count per response (only the server writes this eventfd)
            self._response_poll.register(response_efd, select.EPOLLIN | select.EPOLLET)
            self._response_poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            self._event_poll = select.epoll()
            self._event_poll.register(event_efd, select.EPOLLIN)
            self._event_poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            self._response.arm()
            if not self._events.arm():
                ring_eventfd(event_efd)  # events sent while we were admitted: make fileno() readable
        except BaseException:
            os.close(memfd)
            self.close()
            raise
        os.close(memfd)  # the mapping keeps the memory

    def _attach_compiled(self, layout: proto.SegmentLayout, label: str) -> None:
        import numpy as np

        from pycorosync.ipc import fastpath, wakeup
        from pycorosync.ipc.ring import Ring

        assert self._mm is not None
        self._array = array = np.frombuffer(self._mm, dtype=np.uint8)
        backlog_addr = int(array.ctypes.data) + proto.BACKLOG_OFFSET
        self._backlog_raised: Callable[[], bool] = functools.partial(wakeup.flag_raised, backlog_addr)
        self._request = Ring.attach(array, layout.request_offset, f"{label} request", layout.request_capacity)
        self._response = Ring.attach(array, layout.response_offset, f"{label} response", layout.response_capacity)
        self._events = Ring.attach(array, layout.event_offset, f"{label} event", layout.event_capacity)
        self._request_io = fastpath.RingIO(self._request)
        scratch = fastpath.scratch_for(self._response, self._events)  # both are read by this thread only
        self._response_io = fastpath.RingIO(self._response, scratch)
        self._event_io = fastpath.RingIO(self._events, scratch)

    def _attach_plain(self, layout: proto.SegmentLayout, label: str) -> None:
        assert self._mm is not None
        mm = self._mm
        self._backlog = backlog = memoryview(mm)[proto.BACKLOG_OFFSET : proto.BACKLOG_OFFSET + 4].cast("I")
        self._backlog_raised = functools.partial(plainring.flag_raised, backlog)
        attach = plainring.PlainRing.attach
        self._request = attach(mm, layout.request_offset, f"{label} request", layout.request_capacity)
        self._response = attach(mm, layout.response_offset, f"{label} response", layout.response_capacity)
        self._events = attach(mm, layout.event_offset, f"{label} event", layout.event_capacity)
        # a plain ring is its own fast path: push(rtype, payload, efd), notify(efd), pop()
        self._request_io = self._request
        self._response_io = self._response
        self._event_io = self._events

    # ------------------------------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sock(self) -> socket.socket:
        """The connection's socket (read-only: a service may pass extra descriptors on it, e.g. cmap's
        read view). Its hang-up is the server's death; do not read or close it while requests are in flight."""
        return self._sock

    @property
    def server_gone(self) -> bool:
        """True once the server's end of the socket hung up."""
        return self._server_gone

    def _check_usable(self) -> None:
        if self._closed:
            raise CsError(CS_ERR_LIBRARY, f"{self.path}: connection is closed")

    def _server_lost(self) -> CsError:
        return CsError(CS_ERR_LIBRARY, f"{self.path}: the '{self.service}' service is gone")

    def _note_socket(self, ready: list[tuple[int, int]]) -> None:
        """Reads the socket when a private epoll reported it: EOF or an error means the server is gone."""
        sock_fd = self._sock.fileno()
        if not any(fd == sock_fd for fd, _ in ready):
            return
        try:
            data = self._sock.recv(64, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._server_gone = True

    def _after_read(self) -> None:
        # the server may hold responses or events back for lack of ring space: tell it there is some now
        if self._backlog_raised():
            ring_eventfd(self._doorbell)

    # --------------------------------------------------------------------------------------- requests
    def send(self, rtype: int, payload: bytes = b"") -> None:
        """Queues one request without waiting for its response (``request`` and ``request_async`` use it).

        CS_ERR_TRY_AGAIN when the request ring is full, CS_ERR_TOO_BIG when the request can never fit,
        CS_ERR_LIBRARY when the server is gone.
        """
        self._check_usable()
        if self._server_gone:
            raise self._server_lost()
        try:
            pushed = self._request_io.push(rtype, payload, self._doorbell)
        except RecordTooLargeError as exc:
            raise CsError(CS_ERR_TOO_BIG, str(exc)) from None
        if not pushed:
            self._request_full()

    def send_parts(self, rtype: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """``send`` of the record ``parts`` make end to end (each a bytes-like object of bytes), copied
        into the request ring straight from them: nothing is joined first, and a full ring costs no copy."""
        self._check_usable()
        if self._server_gone:
            raise self._server_lost()
        ring = self._request
        total = sum(len(x) for x in parts)
        try:
            view = ring.claim(total)
        except RecordTooLargeError as exc:
            raise CsError(CS_ERR_TOO_BIG, str(exc)) from None
        if view is None:
            self._request_full()
        at = 0
        for x in parts:
            n = len(x)
            view[at:at + n] = x
            at += n
        ring.commit(rtype)
        self._request_io.notify(self._doorbell)

    def _request_full(self) -> NoReturn:
        # a ring that stays full may mean nobody reads it any more: tell that apart from back-pressure
        assert self._response_poll is not None
        self._note_socket(self._response_poll.poll(0))
        if self._server_gone:
            raise self._server_lost()
        raise CsError(CS_ERR_TRY_AGAIN, f"{self.path}: request ring full ({self._request.capacity} bytes)")

    def _pop(self, io: Any) -> tuple[int, bytes] | None:
        try:
            record: tuple[int, bytes] | None = io.pop()
            return record
        except RingCorruptError as exc:  # only this process can have broken it; the server would not
            raise CsError(CS_ERR_LIBRARY, str(exc)) from None

    def _take_response(self) -> tuple[int, bytes] | None:
        while True:
            record = self._pop(self._response_io)
            if record is None:
                return None
            self._after_read()
            if self._stale_responses:
                self._stale_responses -= 1
                continue
            return record

    def read_response(self, timeout: float | None = None, what: str = "request") -> tuple[int, bytes]:
        """Waits for the response to the oldest request sent with ``send`` and not answered yet.

        CS_ERR_TIMEOUT after ``timeout`` seconds (None: as long as the server lives); the late response
        is then skipped when it comes, so the next call gets the next request's answer.
        """
        return self._wait_response(timeout, what, look_first=True)

    def _wait_response(self, timeout: float | None, what: str, look_first: bool) -> tuple[int, bytes]:
        self._check_usable()
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = self._response_poll
        assert poller is not None
        while True:
            if look_first:
                record = self._take_response()
                if record is not None:
                    return record
                if self._server_gone:
                    raise self._server_lost()
            look_first = True
            if not self._response.arm():
                continue
            remaining = -1.0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and remaining <= 0:
                self._stale_responses += 1
                raise CsError(CS_ERR_TIMEOUT, f"{self.path}: no response to {what} within {timeout}s")
            try:
                ready = poller.poll(remaining)
            except InterruptedError:
                ready = []
            self._note_socket(ready)

    def request(self, rtype: int, payload: bytes = b"", timeout: float | None = None) -> tuple[int, bytes]:
        """Sends a request and waits for its response: ``(rtype, payload)`` of the response.

        CS_ERR_TIMEOUT after ``timeout`` seconds (None: wait as long as the server lives).
        """
        self.send(rtype, payload)
        # a response cannot be there yet: arm at once instead of looking into an empty ring first
        return self._wait_response(timeout, f"request type {rtype}", look_first=False)

    def call(self, rtype: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """``request`` for services that use ``ipc.framing``: the response body, or CsError with its code."""
        _, response = self.request(rtype, payload, timeout)
        return check_response(response, f"{self.service} request type {rtype}")

    # ----------------------------------------------------------------------------------------- events
    def fileno(self) -> int:
        """The event channel: readable when an event waits or the server is gone (then ``dispatch`` raises)."""
        self._check_usable()
        assert self._event_poll is not None
        return self._event_poll.fileno()

    def read_event(self) -> tuple[int, bytes] | None:
        """The next event, or None (never blocks). CS_ERR_LIBRARY when none is left and the server is gone.

        Events are taken off the ring a batch at a time (one scan and one release for up to
        ``EVENT_BATCH`` records, never more bytes than the ring holds) and handed out one by one; the
        event channel stays readable until both the batch and the ring are empty."""
        if self._closed:  # ``_check_usable`` inline: this runs once per event
            self._check_usable()
        pending = self._pending_events
        if pending:
            return pending.popleft()
        try:
            batch: list[tuple[int, bytes]] = self._events.pop_batch(EVENT_BATCH)
        except RingCorruptError as exc:  # only this process can have broken it; the server would not
            raise CsError(CS_ERR_LIBRARY, str(exc)) from None
        if batch:
            self._after_read()
            if len(batch) > 1:
                pending.extend(batch)
                return pending.popleft()
            return batch[0]
        # empty. Still armed by an earlier empty read: no event was published since (the server takes the
        # flag when it rings), so the channel is clear and armed already; a caller polling between its
        # sends costs no system call here
        if self._events.armed():
            if self._server_gone:
                raise self._server_lost()
            return None
        # the event channel must stop being readable unless an event slipped in meanwhile
        clear_eventfd(self._event_efd)
        if not self._events.arm():
            ring_eventfd(self._event_efd)
            return self.read_event()
        if self._server_gone:
            raise self._server_lost()
        return None

    def wait_event(self, timeout: float | None = None) -> bool:
        """Waits until ``fileno()`` is readable (an event, or the server gone); False on timeout."""
        self._check_usable()
        assert self._event_poll is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready = self._event_poll.poll(remaining)
            except InterruptedError:
                continue
            self._note_socket(ready)
            if ready or self._server_gone:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def dispatch(self, flags: int, callback: EventCallback, timeout: float | None = None) -> int:
        """Runs ``callback(rtype, payload)`` for events, as corosync's ``X_dispatch``; returns how many ran.

        ONE: waits for one event (up to ``timeout``), runs it. ALL: runs every waiting event, never waits.
        BLOCKING: runs events until the connection is closed (e.g. by a callback). ONE_NONBLOCKING: runs
        one waiting event, CS_ERR_TRY_AGAIN if there is none. CS_ERR_LIBRARY once the server is gone and
        no event is left.
        """
        if flags == CS_DISPATCH_ONE_NONBLOCKING:
            record = self.read_event()
            if record is None:
                raise CsError(CS_ERR_TRY_AGAIN, f"{self.path}: no event waiting")
            callback(*record)
            return 1
        if flags == CS_DISPATCH_ALL:
            count = 0
            while (record := self.read_event()) is not None:
                callback(*record)
                count += 1
            return count
        if flags not in (CS_DISPATCH_ONE, CS_DISPATCH_BLOCKING):
            raise CsError(CS_ERR_BAD_FLAGS, f"dispatch flags {flags}")
        count = 0
        while not self._closed:
            record = self.read_event()
            if record is None:
                if not self.wait_event(timeout):
                    raise CsError(CS_ERR_TIMEOUT, f"{self.path}: no event within {timeout}s")
                continue
            callback(*record)
            count += 1
            if flags == CS_DISPATCH_ONE:
                break
        return count

    # ---------------------------------------------------------------------------------------- asyncio
    async def _readable(self, poller: select.epoll, timeout: float | None) -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def on_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(poller.fileno(), on_ready)
        try:
            await asyncio.wait_for(ready, timeout)
        finally:
            loop.remove_reader(poller.fileno())
        return poller.poll(0)

    async def request_async(self, rtype: int, payload: bytes = b"", timeout: float | None = None) -> tuple[int, bytes]:
        """``request`` for asyncio: waits on the response eventfd with ``loop.add_reader``."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            self.send(rtype, payload)
            deadline = None if timeout is None else time.monotonic() + timeout
            poller = self._response_poll
            assert poller is not None
            while True:
                record = self._take_response()
                if record is not None:
                    return record
                if self._server_gone:
                    raise self._server_lost()
                if not self._response.arm():
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                try:
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError
                    ready = await self._readable(poller, remaining)
                except (TimeoutError, asyncio.CancelledError) as exc:
                    self._stale_responses += 1
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    raise CsError(
                        CS_ERR_TIMEOUT, f"{self.path}: no response to request type {rtype} within {timeout}s"
                    ) from None
                self._note_socket(ready)

    async def call_async(self, rtype: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """``call`` for asyncio."""
        _, response = await self.request_async(rtype, payload, timeout)
        return check_response(response, f"{self.service} request type {rtype}")

    async def events(self) -> AsyncIterator[tuple[int, bytes]]:
        """Every event as ``(rtype, payload)``, waiting with ``loop.add_reader``; ends when the connection
        is closed, raises CsError(CS_ERR_LIBRARY) when the server is gone."""
        while not self._closed:
            record = self.read_event()
            if record is not None:
                yield record
                continue
            assert self._event_poll is not None
            self._note_socket(await self._readable(self._event_poll, None))

    # ---------------------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Closes the connection (the server sees the hang-up and frees the rings). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for poller in (self._response_poll, self._event_poll):
            if poller is not None:
                poller.close()
        self._sock.close()
        for fd in (self._doorbell, self._response_efd, self._event_efd):
            with contextlib.suppress(OSError):
                os.close(fd)
        for name in ("_request_io", "_response_io", "_event_io"):
            io = self.__dict__.pop(name, None)
            if io is not None and not isinstance(io, plainring.PlainRing):
                io.release()
        for name in ("_request", "_response", "_events"):
            ring = self.__dict__.pop(name, None)
            if ring is not None:
                ring.close()
        backlog = self.__dict__.pop("_backlog", None)
        if backlog is not None:
            backlog.release()
        self.__dict__.pop("_backlog_raised", None)
        self.__dict__.pop("_array", None)
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("server gone" if self._server_gone else "open")
        return f"<Connection {self.service}#{self.conn_id} {self.path} {state}>"


_E = TypeVar("_E")


async def first_event(events: AsyncIterator[_E], timeout: float | None, what: str) -> _E:
    """The first item of a client's async event iterator (its ``next_event``): CsError(CS_ERR_TIMEOUT)
    after ``timeout`` seconds, or when the iterator ends because the handle was closed."""

    async def first() -> _E:
        async for event in events:
            return event
        raise CsError(CS_ERR_TIMEOUT, f"{what} handle closed")

    try:
        return await asyncio.wait_for(first(), timeout)
    except TimeoutError:
        raise CsError(CS_ERR_TIMEOUT, f"no {what} event within {timeout}s") from None
