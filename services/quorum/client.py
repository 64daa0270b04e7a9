"""The quorum and votequorum client libraries (``pycorosync.quorum``, ``pycorosync.votequorum``).

    from pycorosync.quorum import QuorumClient, CS_TRACK_CHANGES

    with QuorumClient() as q:                      # run_dir: --run-dir / $PYCOROSYNC_RUN_DIR / default
        q.quorum_type                              # QUORUM_SET (votequorum) or QUORUM_FREE (always quorate)
        q.getquorate()                             # bool
        q.trackstart(CS_TRACK_CURRENT | CS_TRACK_CHANGES)
        for event in q.events(timeout=5.0): ...    # QuorumEvent(quorate, ring_id, members), NodelistEvent
        q.dispatch()                               # or with notify=/nodelist= callbacks; poll q.fileno() first

    with VotequorumClient() as vq:
        vq.getinfo(0)                              # VoteInfo of this node (any node id: its info)
        vq.setexpected(3); vq.setvotes(2, 1)
        vq.trackstart(context=7)                   # VotequorumEvent / VotequorumNodelistEvent / ExpectedVotesEvent

    async with AsyncQuorumClient() as q:           # same calls, awaitable; events() is an async iterator
        async for event in q.events(): ...

Every failure raises ``CsError`` with corosync's cs_error code: CS_ERR_LIBRARY when no node runs here (or,
for votequorum, when ``quorum.provider`` is not corosync_votequorum), CS_ERR_NOT_SUPPORTED for the
quorum device calls, CS_ERR_INVALID_PARAM / CS_ERR_NAME_NOT_FOUND / CS_ERR_NOT_EXIST as corosync answers.
Connecting waits (up to ``timeout``) while the node has not finished its first sync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from pycorosync.ipc.client import CS_DISPATCH_ALL, Connection, connect, first_event
from pycorosync.ipc.errors import CS_ERR_BAD_FLAGS, CS_ERR_TRY_AGAIN, CsError

from . import protocol as p
from .votequorum import NodeState, VoteInfo

DEFAULT_TIMEOUT_S = 10.0


class RingId(NamedTuple):
    """``quorum_ring_id`` / ``votequorum_ring_id``: the ring's representative node id and sequence."""

    nodeid: int
    seq: int


@dataclass(frozen=True)
class QuorumEvent:
    """quorum_notify: the node's quorum state after a membership change (or at trackstart)."""

    quorate: bool
    ring_id: RingId
    members: tuple[int, ...]


@dataclass(frozen=True)
class NodelistEvent:
    """quorum nodelist_notify (model V1): the new ring's members, who joined and who left."""

    ring_id: RingId
    members: tuple[int, ...]
    joined: tuple[int, ...]
    left: tuple[int, ...]


@dataclass(frozen=True)
class VotequorumEvent:
    """votequorum quorum_notify: quorate, and every node votequorum knows with its state."""

    context: int
    quorate: bool
    nodes: tuple[tuple[int, NodeState], ...]


@dataclass(frozen=True)
class VotequorumNodelistEvent:
    """votequorum nodelist_notify: the members of a new ring."""

    context: int
    ring_id: RingId
    members: tuple[int, ...]


@dataclass(frozen=True)
class ExpectedVotesEvent:
    """votequorum expectedvotes_notify."""

    context: int
    expected_votes: int


QuorumClientEvent = QuorumEvent | NodelistEvent
VotequorumClientEvent = VotequorumEvent | VotequorumNodelistEvent | ExpectedVotesEvent
AnyEvent = QuorumClientEvent | VotequorumClientEvent


def decode_event(rtype: int, payload: bytes) -> AnyEvent | None:
    """The event of one event record; None for a record this library does not know or cannot read."""
    try:
        if rtype == p.Msg.EV_Q_NOTIFY:
            quorate, ring, members = p.decode_q_notify(payload)
            return QuorumEvent(quorate, RingId(*ring), members)
        if rtype == p.Msg.EV_Q_NODELIST:
            ring, members, joined, left = p.decode_q_nodelist(payload)
            return NodelistEvent(RingId(*ring), members, joined, left)
        if rtype == p.Msg.EV_VQ_QUORUM:
            context, quorate, nodes = p.decode_vq_quorum(payload)
            return VotequorumEvent(context, quorate, nodes)
        if rtype == p.Msg.EV_VQ_NODELIST:
            context, ring, members = p.decode_vq_nodelist(payload)
            return VotequorumNodelistEvent(context, RingId(*ring), members)
        if rtype == p.Msg.EV_VQ_EXPECTEDVOTES:
            context, expected = p.decode_vq_expected(payload)
            return ExpectedVotesEvent(context, expected)
    except ValueError:
        return None
    return None


def _connect_retrying(run_dir: str | None, timeout: float) -> Connection:
    """Connects, waiting (up to ``timeout``) while the node's first sync is not done (CS_ERR_TRY_AGAIN)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return connect(run_dir, p.SERVICE_NAME, timeout=min(timeout, 5.0))
        except CsError as exc:
            if exc.code != CS_ERR_TRY_AGAIN or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


async def _connect_retrying_async(run_dir: str | None, timeout: float) -> Connection:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return connect(run_dir, p.SERVICE_NAME, timeout=min(timeout, 5.0))
        except CsError as exc:
            if exc.code != CS_ERR_TRY_AGAIN or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


class _Blocking:
    """Connection, calls and event reading shared by the blocking clients."""

    _conn: Connection
    timeout: float

    def _call(self, msg: int, payload: bytes, what: str) -> bytes:
        try:
            return self._conn.call(msg, payload, self.timeout)
        except CsError as exc:
            raise CsError(exc.code, what) from None

    def _run_callback(self, event: AnyEvent) -> bool:
        raise NotImplementedError

    def fileno(self) -> int:
        """X_fd_get: readable when notifications wait (or the service is gone): poll it, then ``dispatch``."""
        return self._conn.fileno()

    def dispatch(self, flags: int = CS_DISPATCH_ALL, timeout: float | None = None) -> int:
        """X_dispatch: runs the callbacks of waiting notifications (CS_DISPATCH_ONE/ALL/BLOCKING/
        ONE_NONBLOCKING, as corosync; ONE and BLOCKING wait up to ``timeout``); returns how many ran."""
        ran = 0

        def on_record(rtype: int, payload: bytes) -> None:
            nonlocal ran
            event = decode_event(rtype, payload)
            if event is not None and self._run_callback(event):
                ran += 1

        if flags not in (1, 2, 3, 4):
            raise CsError(CS_ERR_BAD_FLAGS, f"dispatch flags {flags}")
        self._conn.dispatch(flags, on_record, timeout)
        return ran

    def _next(self, timeout: float | None) -> AnyEvent | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self._conn.read_event()
            if record is not None:
                event = decode_event(*record)
                if event is not None:
                    return event
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._conn.wait_event(remaining)

    def service_alive(self) -> bool:
        """False once the quorum service hung up (stopped or restarted): then make a new client."""
        if self._conn.closed:
            return False
        self._conn.wait_event(0)
        return not self._conn.server_gone

    def close(self) -> None:
        """X_finalize: closes the connection (trackers stop with it)."""
        self._conn.close()

    finalize = close

    @property
    def closed(self) -> bool:
        """True once ``close`` ran."""
        return self._conn.closed


class QuorumClient(_Blocking):
    """A blocking quorum handle (``quorum_initialize``); use as a context manager.

    ``notify(event: QuorumEvent)`` and ``nodelist(event: NodelistEvent)`` run from ``dispatch``; without
    callbacks read the events with ``next_event`` / ``events``. ``quorum_type`` is QUORUM_SET when a quorum
    provider runs, QUORUM_FREE (always quorate) when none is configured.
    """

    def __init__(
        self,
        run_dir: str | None = None,
        *,
        notify: Callable[[QuorumEvent], object] | None = None,
        nodelist: Callable[[NodelistEvent], object] | None = None,
        context: Any = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.timeout = timeout
        self.context = context
        self.notify_fn = notify
        self.nodelist_fn = nodelist
        self._conn = _connect_retrying(run_dir, timeout)
        try:
            self.quorum_type = p.decode_u32(self._call(p.Msg.Q_INITIALIZE, b"", "quorum_initialize"), "type")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> QuorumClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def getquorate(self) -> bool:
        """quorum_getquorate: True when this node's partition is quorate."""
        return bool(p.decode_u32(self._call(p.Msg.Q_GETQUORATE, b"", "quorum_getquorate"), "quorate"))

    def trackstart(self, flags: int = p.CS_TRACK_CURRENT | p.CS_TRACK_CHANGES) -> None:
        """quorum_trackstart: CS_TRACK_CURRENT sends the state now, CS_TRACK_CHANGES now and on every change,
        CS_TRACK_CHANGES_ONLY only on changes. CS_ERR_EXIST when already tracking."""
        self._call(p.Msg.Q_TRACKSTART, p.encode_u32(flags), "quorum_trackstart")

    def trackstop(self) -> None:
        """quorum_trackstop: CS_ERR_NOT_EXIST when not tracking."""
        self._call(p.Msg.Q_TRACKSTOP, b"", "quorum_trackstop")

    def _run_callback(self, event: AnyEvent) -> bool:
        if isinstance(event, QuorumEvent) and self.notify_fn is not None:
            self.notify_fn(event)
            return True
        if isinstance(event, NodelistEvent) and self.nodelist_fn is not None:
            self.nodelist_fn(event)
            return True
        return False

    def next_event(self, timeout: float | None = 0.0) -> QuorumClientEvent | None:
        """The next notification (callbacks are not run), waiting up to ``timeout`` s (None: forever)."""
        while True:
            event = self._next(timeout)
            if event is None or isinstance(event, (QuorumEvent, NodelistEvent)):
                return event

    def events(self, timeout: float | None = None) -> Iterator[QuorumClientEvent]:
        """Notifications as they come; stops after ``timeout`` seconds without one (None: never)."""
        while (event := self.next_event(timeout)) is not None:
            yield event

    def wait_quorate(self, quorate: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
        """Polls getquorate until it equals ``quorate`` (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self.getquorate() != quorate:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        return True


class VotequorumClient(_Blocking):
    """A blocking votequorum handle (``votequorum_initialize``); use as a context manager.

    Callbacks ``quorum(VotequorumEvent)``, ``nodelist(VotequorumNodelistEvent)``,
    ``expectedvotes(ExpectedVotesEvent)`` run from ``dispatch``; without them use ``next_event`` / ``events``.
    """

    def __init__(
        self,
        run_dir: str | None = None,
        *,
        quorum: Callable[[VotequorumEvent], object] | None = None,
        nodelist: Callable[[VotequorumNodelistEvent], object] | None = None,
        expectedvotes: Callable[[ExpectedVotesEvent], object] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.timeout = timeout
        self.quorum_fn = quorum
        self.nodelist_fn = nodelist
        self.expectedvotes_fn = expectedvotes
        self._conn = _connect_retrying(run_dir, timeout)
        try:
            self._call(p.Msg.VQ_INITIALIZE, b"", "votequorum_initialize")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VotequorumClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def getinfo(self, nodeid: int = 0) -> VoteInfo:
        """votequorum_getinfo: ``nodeid`` 0 = this node; CS_ERR_NOT_EXIST for a node never seen."""
        return p.decode_info(self._call(p.Msg.VQ_GETINFO, p.encode_u32(nodeid), f"votequorum_getinfo {nodeid}"))

    def setexpected(self, expected_votes: int) -> None:
        """votequorum_setexpected: CS_ERR_INVALID_PARAM below the total votes or if it would unquorate."""
        self._call(p.Msg.VQ_SETEXPECTED, p.encode_u32(expected_votes), f"votequorum_setexpected {expected_votes}")

    def setvotes(self, nodeid: int, votes: int) -> None:
        """votequorum_setvotes (``nodeid`` 0 = this node): CS_ERR_NAME_NOT_FOUND, CS_ERR_INVALID_PARAM."""
        self._call(p.Msg.VQ_SETVOTES, p.encode_setvotes(nodeid, votes), f"votequorum_setvotes {nodeid} {votes}")

    def trackstart(self, context: int = 0, flags: int = p.CS_TRACK_CURRENT | p.CS_TRACK_CHANGES) -> None:
        """votequorum_trackstart: ``context`` comes back in every event."""
        self._call(p.Msg.VQ_TRACKSTART, p.encode_vq_trackstart(context, flags), "votequorum_trackstart")

    def trackstop(self) -> None:
        """votequorum_trackstop."""
        self._call(p.Msg.VQ_TRACKSTOP, b"", "votequorum_trackstop")

    def qdevice_register(self, name: str) -> None:
        """votequorum_qdevice_register: quorum devices are not supported (CS_ERR_NOT_SUPPORTED)."""
        self._call(p.Msg.VQ_QDEVICE_REGISTER, name.encode(), "votequorum_qdevice_register")

    def _run_callback(self, event: AnyEvent) -> bool:
        if isinstance(event, VotequorumEvent) and self.quorum_fn is not None:
            self.quorum_fn(event)
        elif isinstance(event, VotequorumNodelistEvent) and self.nodelist_fn is not None:
            self.nodelist_fn(event)
        elif isinstance(event, ExpectedVotesEvent) and self.expectedvotes_fn is not None:
            self.expectedvotes_fn(event)
        else:
            return False
        return True

    def next_event(self, timeout: float | None = 0.0) -> VotequorumClientEvent | None:
        """The next notification (callbacks are not run), waiting up to ``timeout`` s (None: forever)."""
        while True:
            event = self._next(timeout)
            if event is None or isinstance(event, (VotequorumEvent, VotequorumNodelistEvent, ExpectedVotesEvent)):
                return event

    def events(self, timeout: float | None = None) -> Iterator[VotequorumClientEvent]:
        """Notifications as they come; stops after ``timeout`` seconds without one (None: never)."""
        while (event := self.next_event(timeout)) is not None:
            yield event


class _Async:
    """Connection and calls shared by the asyncio clients."""

    _conn: Connection

    def __init__(self, run_dir: str | None, timeout: float) -> None:
        self._run_dir = run_dir
        self.timeout = timeout

    async def _open(self) -> None:
        self._conn = await _connect_retrying_async(self._run_dir, self.timeout)

    async def _call(self, msg: int, payload: bytes, what: str) -> bytes:
        try:
            return await self._conn.call_async(msg, payload, self.timeout)
        except CsError as exc:
            raise CsError(exc.code, what) from None

    def fileno(self) -> int:
        """Readable when notifications wait."""
        return self._conn.fileno()

    def close(self) -> None:
        """Closes the connection."""
        self._conn.close()

    async def _events(self) -> AsyncIterator[AnyEvent]:
        async for rtype, payload in self._conn.events():
            event = decode_event(rtype, payload)
            if event is not None:
                yield event

    async def next_event(self, timeout: float | None = None) -> AnyEvent:
        """The next notification; CS_ERR_TIMEOUT after ``timeout`` seconds."""
        return await first_event(self._events(), timeout, "quorum")


class AsyncQuorumClient(_Async):
    """The asyncio quorum handle: ``async with AsyncQuorumClient() as q``, awaitable calls, and ``events()``,
    an async iterator of QuorumEvent / NodelistEvent."""

    quorum_type: int

    def __init__(self, run_dir: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(run_dir, timeout)

    async def __aenter__(self) -> AsyncQuorumClient:
        await self._open()
        try:
            self.quorum_type = p.decode_u32(await self._call(p.Msg.Q_INITIALIZE, b"", "quorum_initialize"), "type")
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def getquorate(self) -> bool:
        """quorum_getquorate."""
        return bool(p.decode_u32(await self._call(p.Msg.Q_GETQUORATE, b"", "quorum_getquorate"), "quorate"))

    async def trackstart(self, flags: int = p.CS_TRACK_CURRENT | p.CS_TRACK_CHANGES) -> None:
        """quorum_trackstart (see ``QuorumClient.trackstart``)."""
        await self._call(p.Msg.Q_TRACKSTART, p.encode_u32(flags), "quorum_trackstart")

    async def trackstop(self) -> None:
        """quorum_trackstop."""
        await self._call(p.Msg.Q_TRACKSTOP, b"", "quorum_trackstop")

    async def events(self) -> AsyncIterator[QuorumClientEvent]:
        """Every notification, in order; ends when the client is closed (CS_ERR_LIBRARY if the service goes)."""
        async for event in self._events():
            if isinstance(event, (QuorumEvent, NodelistEvent)):
                yield event


class AsyncVotequorumClient(_Async):
    """The asyncio votequorum handle: ``async with AsyncVotequorumClient() as vq``, awaitable calls, and
    ``events()``, an async iterator of VotequorumEvent / VotequorumNodelistEvent / ExpectedVotesEvent."""

    def __init__(self, run_dir: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(run_dir, timeout)

    async def __aenter__(self) -> AsyncVotequorumClient:
        await self._open()
        try:
            await self._call(p.Msg.VQ_INITIALIZE, b"", "votequorum_initialize")
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def getinfo(self, nodeid: int = 0) -> VoteInfo:
        """votequorum_getinfo."""
        return p.decode_info(await self._call(p.Msg.VQ_GETINFO, p.encode_u32(nodeid), "votequorum_getinfo"))

    async def setexpected(self, expected_votes: int) -> None:
        """votequorum_setexpected."""
        await self._call(p.Msg.VQ_SETEXPECTED, p.encode_u32(expected_votes), "votequorum_setexpected")

    async def setvotes(self, nodeid: int, votes: int) -> None:
        """votequorum_setvotes."""
        await self._call(p.Msg.VQ_SETVOTES, p.encode_setvotes(nodeid, votes), "votequorum_setvotes")

    async def trackstart(self, context: int = 0, flags: int = p.CS_TRACK_CURRENT | p.CS_TRACK_CHANGES) -> None:
        """votequorum_trackstart."""
        await self._call(p.Msg.VQ_TRACKSTART, p.encode_vq_trackstart(context, flags), "votequorum_trackstart")

    async def trackstop(self) -> None:
        """votequorum_trackstop."""
        await self._call(p.Msg.VQ_TRACKSTOP, b"", "votequorum_trackstop")

    async def events(self) -> AsyncIterator[VotequorumClientEvent]:
        """Every notification, in order; ends when the client is closed."""
        async for event in self._events():
            if isinstance(event, (VotequorumEvent, VotequorumNodelistEvent, ExpectedVotesEvent)):
                yield event
