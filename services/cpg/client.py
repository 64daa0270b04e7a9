"""The cpg client library (``pycorosync.cpg``): corosync's libcpg for Python.

    from pycorosync.cpg import CpgClient, CPG_TYPE_AGREED, CS_DISPATCH_ALL

    def on_deliver(group, nodeid, pid, msg): ...
    def on_confchg(group, members, left, joined): ...        # lists of CpgAddress(nodeid, pid, reason)

    with CpgClient(deliver=on_deliver, confchg=on_confchg) as cpg:   # cpg_model_initialize(CPG_MODEL_V1)
        cpg.join(b"mygroup")                                 # one group per handle
        cpg.mcast_joined(b"hello", CPG_TYPE_AGREED)          # up to cpg.max_atomic_msgsize_get() (~16 MiB)
        cpg.dispatch(CS_DISPATCH_ALL)                        # or poll cpg.fileno() first
        for event in cpg.events(timeout=1.0): ...            # or no callbacks: Deliver/ConfChg/TotemConfChg

    async with AsyncCpgClient() as cpg:                      # the same calls, awaitable
        await cpg.join("mygroup")
        async for event in cpg.events(): ...

Every failure raises ``CsError`` with corosync's cs_error code: CS_ERR_TRY_AGAIN when the node cannot
take a message now (flow control, sync in progress: try again), CS_ERR_EXIST / BUSY / NOT_EXIST /
NAME_TOO_LONG from join and leave, CS_ERR_TOO_BIG over the atomic size, CS_ERR_LIBRARY when the service is
gone. Group names are bytes (a str is encoded as UTF-8), at most 128 bytes.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pycorosync.ipc.client import CS_DISPATCH_ALL, Connection, connect, first_event
from pycorosync.ipc.errors import (
    CS_ERR_BAD_FLAGS,
    CS_ERR_NO_SECTIONS,
    CS_ERR_TOO_BIG,
    CS_ERR_TRY_AGAIN,
    CS_OK,
    CsError,
    CsErrorCode,
)
from pycorosync.ipc.framing import decode_response
from pycorosync.services.cpg import protocol as p

__all__ = [
    "CPG_FLOW_CONTROL_DISABLED", "CPG_FLOW_CONTROL_ENABLED", "CPG_ITERATION_ALL", "CPG_ITERATION_NAME_ONLY",
    "CPG_ITERATION_ONE_GROUP", "CPG_MODEL_V1", "CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF", "CPG_REASON_JOIN",
    "CPG_REASON_LEAVE", "CPG_REASON_NODEDOWN", "CPG_REASON_NODEUP", "CPG_REASON_PROCDOWN", "CPG_REASON_UNDEFINED",
    "CPG_TYPE_AGREED", "CPG_TYPE_FIFO", "CPG_TYPE_SAFE", "CPG_TYPE_UNORDERED", "AsyncCpgClient", "ConfChg",
    "CpgAddress", "CpgClient", "CpgEvent", "CpgIterationDescription", "CpgRingId", "Deliver", "TotemConfChg",
]

CPG_TYPE_UNORDERED = p.CpgGuarantee.CPG_TYPE_UNORDERED
CPG_TYPE_FIFO = p.CpgGuarantee.CPG_TYPE_FIFO
CPG_TYPE_AGREED = p.CpgGuarantee.CPG_TYPE_AGREED
CPG_TYPE_SAFE = p.CpgGuarantee.CPG_TYPE_SAFE
CPG_REASON_UNDEFINED = p.CpgReason.CPG_REASON_UNDEFINED
CPG_REASON_JOIN = p.CpgReason.CPG_REASON_JOIN
CPG_REASON_LEAVE = p.CpgReason.CPG_REASON_LEAVE
CPG_REASON_NODEDOWN = p.CpgReason.CPG_REASON_NODEDOWN
CPG_REASON_NODEUP = p.CpgReason.CPG_REASON_NODEUP
CPG_REASON_PROCDOWN = p.CpgReason.CPG_REASON_PROCDOWN
CPG_ITERATION_NAME_ONLY = p.CpgIterationType.CPG_ITERATION_NAME_ONLY
CPG_ITERATION_ONE_GROUP = p.CpgIterationType.CPG_ITERATION_ONE_GROUP
CPG_ITERATION_ALL = p.CpgIterationType.CPG_ITERATION_ALL
CPG_MODEL_V1 = p.CPG_MODEL_V1
CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF = p.CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF
CPG_FLOW_CONTROL_DISABLED = p.CPG_FLOW_CONTROL_DISABLED
CPG_FLOW_CONTROL_ENABLED = p.CPG_FLOW_CONTROL_ENABLED

DEFAULT_TIMEOUT_S = 10.0
#: how long a large message's last piece is retried on CS_ERR_TRY_AGAIN before the error is raised
LAST_PIECE_RETRY_S = 2.0
_PIECE_HEADER = 8
# record types as plain ints: numba types an IntEnum member on a slow path (~0.2 ms per ring push)
_MCAST = int(p.CpgMsg.MCAST)
_MCAST_ASYNC = int(p.CpgMsg.MCAST_ASYNC)
_MCAST_REQ_HEAD = p.MCAST_REQ_HEAD.pack
_GUARANTEE_VALUES = frozenset((0, 1, 2, 3))
#: a message up to this size is joined with its header and pushed by one kernel call (``_send_whole``)
_JOINED_SEND_BYTES = 16 * 1024
_ITER_NEXT = int(p.CpgMsg.ITER_NEXT)
_ITER_FINALIZE = int(p.CpgMsg.ITER_FINALIZE)

CpgAddress = p.Address


@dataclass(frozen=True)
class CpgRingId:
    """``cpg_ring_id``: the ring's representative node id and sequence."""

    nodeid: int
    seq: int


@dataclass(frozen=True)
class Deliver:
    """A group message: ``msg`` sent by process ``pid`` of node ``nodeid``."""

    group: bytes
    nodeid: int
    pid: int
    msg: bytes
    guarantee: int = CPG_TYPE_AGREED


@dataclass(frozen=True)
class ConfChg:
    """A group membership change: ``members`` after it, ``left`` and ``joined`` with their reasons."""

    group: bytes
    members: tuple[CpgAddress, ...]
    left: tuple[CpgAddress, ...]
    joined: tuple[CpgAddress, ...]


@dataclass(frozen=True)
class TotemConfChg:
    """The node ring after a completed sync (to every handle)."""

    ring_id: CpgRingId
    members: tuple[int, ...]


@dataclass(frozen=True)
class CpgIterationDescription:
    """``cpg_iteration_description_t``: nodeid and pid are 0 for CPG_ITERATION_NAME_ONLY."""

    group: bytes
    nodeid: int
    pid: int


CpgEvent = Deliver | ConfChg | TotemConfChg
DeliverFn = Callable[[bytes, int, int, bytes], object]
ConfchgFn = Callable[[bytes, list[CpgAddress], list[CpgAddress], list[CpgAddress]], object]
TotemConfchgFn = Callable[[CpgRingId, list[int]], object]


def group_name(group: bytes | str) -> bytes:
    """A group name as bytes; CS_ERR_NAME_TOO_LONG over 128 bytes."""
    name = group.encode("utf-8") if isinstance(group, str) else bytes(group)
    if len(name) > p.CPG_MAX_NAME_LENGTH:
        raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, f"group name of {len(name)} bytes (at most 128)")
    return name


def _join_iov(msg: bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]) -> bytes | memoryview:
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return memoryview(msg).cast("B") if not isinstance(msg, bytes) else msg
    return b"".join(msg)  # an iovec: the pieces are one message


def _iov_parts(msg: bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview],
               ) -> list[bytes | memoryview]:
    """The message's buffers (an iovec's pieces, or the one buffer), each as bytes or a byte view."""
    pieces = [msg] if isinstance(msg, (bytes, bytearray, memoryview)) else msg
    return [x if isinstance(x, bytes) else memoryview(x).cast("B") for x in pieces]


_new = object.__new__
_setattr = object.__setattr__
_EV_DELIVER = int(p.CpgMsg.EV_DELIVER)
#: a DELIVER event's header (nodeid, pid, piece, guarantee, 0, total) and its group name's length
_WHOLE_HEAD = struct.Struct(p.DELIVER_HEAD.format + "H")


class _Assembler:
    """Turns event records into events, joining the pieces of a large delivery."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def event(self, rtype: int, payload: bytes) -> CpgEvent | None:
        if rtype == _EV_DELIVER and len(payload) >= _WHOLE_HEAD.size:
            # the common event, a whole message, in one unpack (anything else: the checks below)
            nodeid, pid, piece, guarantee, _zero, total, name_len = _WHOLE_HEAD.unpack_from(payload)
            start = _WHOLE_HEAD.size + name_len
            if piece == p.PIECE_WHOLE and name_len <= p.CPG_MAX_NAME_LENGTH and start + total == len(payload):
                # equal to Deliver(...) in every way; a frozen dataclass's __init__ costs one
                # object.__setattr__ per field, and this runs once per message received
                d = _new(Deliver)
                _setattr(d, "__dict__", {"group": payload[_WHOLE_HEAD.size:start], "nodeid": nodeid, "pid": pid,
                                         "msg": payload[start:], "guarantee": guarantee})
                return d
        if rtype == p.CpgMsg.EV_DELIVER:
            nodeid, pid, piece, guarantee, total, group, data = p.decode_deliver(payload)
            if piece == p.PIECE_WHOLE:
                return Deliver(group, nodeid, pid, bytes(data), guarantee)
            if piece & p.PIECE_FIRST:
                self._parts = []
            self._parts.append(bytes(data))
            if not piece & p.PIECE_LAST:
                return None
            msg = b"".join(self._parts)
            self._parts = []
            if len(msg) != total:  # a piece went missing: the service disconnected us mid-message
                return None
            return Deliver(group, nodeid, pid, msg, guarantee)
        if rtype == p.CpgMsg.EV_CONFCHG:
            group, members, left, joined = p.decode_confchg(payload)
            return ConfChg(group, tuple(members), tuple(left), tuple(joined))
        if rtype == p.CpgMsg.EV_TOTEM_CONFCHG:
            rep, seq, nodes = p.decode_totem_confchg(payload)
            return TotemConfChg(CpgRingId(rep, seq), tuple(nodes))
        return None


def _check(response: bytes, what: str) -> bytes:
    code, body = decode_response(response)
    if code != CS_OK:
        raise CsError(code, what)
    return body


class _CpgBase:
    """State and encoding shared by the blocking and the asyncio client."""

    _conn: Connection

    def __init__(self, flags: int, context: Any, timeout: float) -> None:
        self.flags = flags
        self.context = context
        self.timeout = timeout
        self.group: bytes | None = None  # the group this handle joined (or is joining)
        self._joined = False  # between a successful join and a successful leave: mcast is allowed
        self._assembler = _Assembler()

    def _send_whole(self, msg: bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview],
                    guarantee: int) -> bool:
        """A message that fits one request goes without waiting for the service (corosync's asynchronous
        cpg_mcast_joined): True when sent that way, False for a larger message (``_plan_mcast``).

        A small one (up to ``_JOINED_SEND_BYTES``) is laid after its header in one buffer and pushed with
        its wake-up check by one kernel call: per message, that is cheaper than copying the pieces one
        by one. A larger one is copied into the request ring straight from the caller's buffers (an
        iovec's pieces are not joined first; CS_ERR_TRY_AGAIN, when the ring is full, costs no copy)."""
        parts: list[bytes | memoryview] | None = None
        if type(msg) is bytes:
            total = len(msg)
        else:
            parts = _iov_parts(msg)
            total = sum(len(x) for x in parts)
        if guarantee not in _GUARANTEE_VALUES:
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"guarantee {guarantee}")
        if total > p.MAX_ATOMIC_MSGSIZE:
            raise CsError(CS_ERR_TOO_BIG, f"message of {total} bytes (at most {p.MAX_ATOMIC_MSGSIZE})")
        if total > self._conn.max_request_bytes - _PIECE_HEADER:
            return False
        if not self._joined:
            raise CsError(CsErrorCode.CS_ERR_NOT_EXIST, "cpg_mcast_joined: this handle has not joined a group")
        head = _MCAST_REQ_HEAD(guarantee, p.PIECE_WHOLE, 0, total)
        if total <= _JOINED_SEND_BYTES:
            self._conn.send(_MCAST_ASYNC, head + (msg if parts is None else b"".join(parts)))  # type: ignore[operator]
        else:
            self._conn.send_parts(_MCAST_ASYNC, [head, msg] if parts is None else [head, *parts])  # type: ignore[list-item]
        return True

    def _plan_mcast(self, data: bytes | memoryview, guarantee: int) -> list[bytes]:
        """The MCAST request payloads of one message: one, or pieces that fit the request ring."""
        if guarantee not in (0, 1, 2, 3):
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"guarantee {guarantee}")
        total = len(data)
        if total > p.MAX_ATOMIC_MSGSIZE:
            raise CsError(CS_ERR_TOO_BIG, f"message of {total} bytes (at most {p.MAX_ATOMIC_MSGSIZE})")
        piece_bytes = self._conn.max_request_bytes - _PIECE_HEADER
        if total <= piece_bytes:
            return [p.encode_mcast_piece(guarantee, p.PIECE_WHOLE, total, data)]
        view = memoryview(data)
        out = []
        for start in range(0, total, piece_bytes):
            piece = (p.PIECE_FIRST if start == 0 else 0) | (p.PIECE_LAST if start + piece_bytes >= total else 0)
            out.append(p.encode_mcast_piece(guarantee, piece, total, view[start:start + piece_bytes]))
        return out

    def max_atomic_msgsize_get(self) -> int:
        """cpg_max_atomic_msgsize_get: the largest message delivered whole (Totem's 16 MiB less headers)."""
        return p.MAX_ATOMIC_MSGSIZE

    def context_get(self) -> Any:
        """cpg_context_get."""
        return self.context

    def context_set(self, context: Any) -> None:
        """cpg_context_set."""
        self.context = context

    def fileno(self) -> int:
        """cpg_fd_get: readable when events wait (or the service is gone)."""
        return self._conn.fileno()

    def close(self) -> None:
        """cpg_finalize: closes the handle (a joined handle leaves as PROCDOWN on every node)."""
        self._conn.close()

    finalize = close

    @property
    def closed(self) -> bool:
        """True once ``close`` ran."""
        return self._conn.closed


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


class CpgClient(_CpgBase):
    """A blocking cpg handle (``cpg_model_initialize`` with CPG_MODEL_V1); use as a context manager.

    ``deliver(group, nodeid, pid, msg)``, ``confchg(group, members, left, joined)`` and
    ``totem_confchg(ring_id, members)`` run from ``dispatch``; ``flags`` may hold
    CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF (a totem confchg right after the first group confchg).
    Without callbacks, read the events with ``next_event`` / ``events``.
    """

    def __init__(
        self,
        run_dir: str | None = None,
        *,
        deliver: DeliverFn | None = None,
        confchg: ConfchgFn | None = None,
        totem_confchg: TotemConfchgFn | None = None,
        flags: int = 0,
        context: Any = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(flags, context, timeout)
        self.deliver_fn = deliver
        self.confchg_fn = confchg
        self.totem_confchg_fn = totem_confchg
        self._conn = _connect_retrying(run_dir, timeout)

    def __enter__(self) -> CpgClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, msg: int, payload: bytes, what: str) -> bytes:
        _, response = self._conn.request(int(msg), payload, self.timeout)
        return _check(response, what)

    # -- membership ------------------------------------------------------------------------------------
    def join(self, group: bytes | str) -> None:
        """cpg_join: CS_ERR_EXIST (joined or joining), CS_ERR_BUSY (leave pending), CS_ERR_TRY_AGAIN."""
        name = group_name(group)
        self._call(p.CpgMsg.JOIN, p.encode_join(name, self.flags), f"cpg_join {name!r}")
        self.group = name
        self._joined = True

    def leave(self, group: bytes | str | None = None) -> None:
        """cpg_leave (the joined group by default): CS_ERR_NOT_EXIST, CS_ERR_BUSY (join pending)."""
        name = group_name(group) if group is not None else (self.group or b"")
        self._call(p.CpgMsg.LEAVE, p.encode_name(name), f"cpg_leave {name!r}")
        self._joined = False

    def mcast_joined(
        self, msg: bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview],
        guarantee: int = CPG_TYPE_AGREED,
    ) -> None:
        """cpg_mcast_joined: returns once the node has taken the message (a message that fits one request
        record, up to 2 MiB, is queued without waiting for the service, as corosync's asynchronous send);
        CS_ERR_TRY_AGAIN when it cannot now (retry later), CS_ERR_NOT_EXIST when not joined,
        CS_ERR_TOO_BIG over max_atomic_msgsize_get()."""
        if self._send_whole(msg, guarantee):
            return
        pieces = self._plan_mcast(_join_iov(msg), guarantee)
        for payload in pieces[:-1]:
            self._call(p.CpgMsg.MCAST, payload, "cpg_mcast_joined")
        deadline = time.monotonic() + (LAST_PIECE_RETRY_S if len(pieces) > 1 else 0.0)
        while True:
            _, response = self._conn.request(_MCAST, pieces[-1], self.timeout)
            code, _ = decode_response(response)
            if code == CS_OK:
                return
            if code != CS_ERR_TRY_AGAIN or time.monotonic() >= deadline:
                raise CsError(code, "cpg_mcast_joined")
            time.sleep(0.005)  # only a large message's last piece waits here, its other pieces are sent

    def membership_get(self, group: bytes | str | None = None) -> list[CpgAddress]:
        """cpg_membership_get: the members of the group (the joined one by default), reason 0."""
        name = group_name(group) if group is not None else (self.group or b"")
        return p.decode_member_list(self._call(p.CpgMsg.MEMBERSHIP_GET, p.encode_name(name), "cpg_membership_get"))

    def local_get(self) -> int:
        """cpg_local_get: this node's id."""
        return p.decode_u32(self._call(p.CpgMsg.LOCAL_GET, b"", "cpg_local_get"))

    def flow_control_state_get(self) -> int:
        """cpg_flow_control_state_get: CPG_FLOW_CONTROL_ENABLED while sends get CS_ERR_TRY_AGAIN."""
        return p.decode_u32(self._call(p.CpgMsg.FLOW_CONTROL_GET, b"", "cpg_flow_control_state_get"))

    def iteration(
        self, iteration_type: int = CPG_ITERATION_ALL, group: bytes | str | None = None
    ) -> Iterator[CpgIterationDescription]:
        """cpg_iteration_initialize/next/finalize: a snapshot of the node's groups."""
        name = group_name(group) if group is not None else b""
        body = self._call(p.CpgMsg.ITER_INIT, p.encode_iter_init(iteration_type, name), "cpg_iteration_initialize")
        handle = p.encode_u64(p.decode_u64(body))
        try:
            while True:
                _, response = self._conn.request(_ITER_NEXT, handle, self.timeout)
                code, body = decode_response(response)
                if code == CS_ERR_NO_SECTIONS:
                    return
                if code != CS_OK:
                    raise CsError(code, "cpg_iteration_next")
                for g, nodeid, pid in p.decode_iter_items(body):
                    yield CpgIterationDescription(g, nodeid, pid)
        finally:
            if not self._conn.closed and not self._conn.server_gone:
                self._conn.request(_ITER_FINALIZE, handle, self.timeout)

    # -- events ----------------------------------------------------------------------------------------
    def _run_callback(self, event: CpgEvent) -> bool:
        if isinstance(event, Deliver):
            if self.deliver_fn is None:
                return False
            self.deliver_fn(event.group, event.nodeid, event.pid, event.msg)
        elif isinstance(event, ConfChg):
            if self.confchg_fn is None:
                return False
            self.confchg_fn(event.group, list(event.members), list(event.left), list(event.joined))
        else:
            if self.totem_confchg_fn is None:
                return False
            self.totem_confchg_fn(event.ring_id, list(event.members))
        return True

    def dispatch(self, flags: int = CS_DISPATCH_ALL, timeout: float | None = None) -> int:
        """cpg_dispatch: runs the callbacks of waiting events (CS_DISPATCH_ONE/ALL/BLOCKING/ONE_NONBLOCKING,
        as corosync; ONE and BLOCKING wait, up to ``timeout``); returns how many callbacks ran."""
        ran = 0

        def on_record(rtype: int, payload: bytes) -> None:
            nonlocal ran
            event = self._assembler.event(rtype, payload)
            if event is not None and self._run_callback(event):
                ran += 1

        if flags not in (1, 2, 3, 4):
            raise CsError(CS_ERR_BAD_FLAGS, f"dispatch flags {flags}")
        self._conn.dispatch(flags, on_record, timeout)
        return ran

    def next_event(self, timeout: float | None = 0.0) -> CpgEvent | None:
        """The next event (callbacks are not run), waiting up to ``timeout`` seconds (None: forever);
        None when none came."""
        read, assemble = self._conn.read_event, self._assembler.event
        deadline = -1.0  # the clock is read only once there is nothing to return at once
        while True:
            record = read()
            if record is not None:
                event = assemble(*record)
                if event is not None:
                    return event
                continue
            if timeout is not None and timeout <= 0:
                return None
            if deadline < 0:
                deadline = 0.0 if timeout is None else time.monotonic() + timeout
            remaining = None if timeout is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._conn.wait_event(remaining)

    def events(self, timeout: float | None = None) -> Iterator[CpgEvent]:
        """Events as they come; stops after ``timeout`` seconds without one (None: never)."""
        while True:
            event = self.next_event(timeout)
            if event is None:
                return
            yield event


class AsyncCpgClient(_CpgBase):
    """The asyncio cpg handle: ``async with AsyncCpgClient(...) as cpg``, awaitable calls, and
    ``events()``, an async iterator of Deliver / ConfChg / TotemConfChg."""

    def __init__(self, run_dir: str | None = None, *, flags: int = 0, context: Any = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(flags, context, timeout)
        self._run_dir = run_dir

    async def __aenter__(self) -> AsyncCpgClient:
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                self._conn = connect(self._run_dir, p.SERVICE_NAME, timeout=min(self.timeout, 5.0))
                return self
            except CsError as exc:
                if exc.code != CS_ERR_TRY_AGAIN or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _call(self, msg: int, payload: bytes, what: str) -> bytes:
        _, response = await self._conn.request_async(int(msg), payload, self.timeout)
        return _check(response, what)

    async def join(self, group: bytes | str) -> None:
        """cpg_join (see ``CpgClient.join``)."""
        name = group_name(group)
        await self._call(p.CpgMsg.JOIN, p.encode_join(name, self.flags), f"cpg_join {name!r}")
        self.group = name
        self._joined = True

    async def leave(self, group: bytes | str | None = None) -> None:
        """cpg_leave."""
        name = group_name(group) if group is not None else (self.group or b"")
        await self._call(p.CpgMsg.LEAVE, p.encode_name(name), f"cpg_leave {name!r}")
        self._joined = False

    async def mcast_joined(
        self, msg: bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview],
        guarantee: int = CPG_TYPE_AGREED,
    ) -> None:
        """cpg_mcast_joined (see ``CpgClient.mcast_joined``)."""
        if self._send_whole(msg, guarantee):
            return
        pieces = self._plan_mcast(_join_iov(msg), guarantee)
        for payload in pieces[:-1]:
            await self._call(p.CpgMsg.MCAST, payload, "cpg_mcast_joined")
        deadline = time.monotonic() + (LAST_PIECE_RETRY_S if len(pieces) > 1 else 0.0)
        while True:
            _, response = await self._conn.request_async(_MCAST, pieces[-1], self.timeout)
            code, _ = decode_response(response)
            if code == CS_OK:
                return
            if code != CS_ERR_TRY_AGAIN or time.monotonic() >= deadline:
                raise CsError(code, "cpg_mcast_joined")
            await asyncio.sleep(0.005)

    async def membership_get(self, group: bytes | str | None = None) -> list[CpgAddress]:
        """cpg_membership_get."""
        name = group_name(group) if group is not None else (self.group or b"")
        body = await self._call(p.CpgMsg.MEMBERSHIP_GET, p.encode_name(name), "cpg_membership_get")
        return p.decode_member_list(body)

    async def local_get(self) -> int:
        """cpg_local_get."""
        return p.decode_u32(await self._call(p.CpgMsg.LOCAL_GET, b"", "cpg_local_get"))

    async def flow_control_state_get(self) -> int:
        """cpg_flow_control_state_get."""
        return p.decode_u32(await self._call(p.CpgMsg.FLOW_CONTROL_GET, b"", "cpg_flow_control_state_get"))

    async def iteration(
        self, iteration_type: int = CPG_ITERATION_ALL, group: bytes | str | None = None
    ) -> list[CpgIterationDescription]:
        """The whole cpg_iteration snapshot as a list."""
        name = group_name(group) if group is not None else b""
        body = await self._call(p.CpgMsg.ITER_INIT, p.encode_iter_init(iteration_type, name), "cpg_iteration")
        handle = p.encode_u64(p.decode_u64(body))
        out: list[CpgIterationDescription] = []
        try:
            while True:
                _, response = await self._conn.request_async(_ITER_NEXT, handle, self.timeout)
                code, body = decode_response(response)
                if code == CS_ERR_NO_SECTIONS:
                    return out
                if code != CS_OK:
                    raise CsError(code, "cpg_iteration_next")
                out += [CpgIterationDescription(g, n, pid) for g, n, pid in p.decode_iter_items(body)]
        finally:
            if not self._conn.closed and not self._conn.server_gone:
                await self._conn.request_async(_ITER_FINALIZE, handle, self.timeout)

    async def events(self) -> AsyncIterator[CpgEvent]:
        """Every event, in order; ends when the client is closed (CS_ERR_LIBRARY if the service goes)."""
        async for rtype, payload in self._conn.events():
            event = self._assembler.event(rtype, payload)
            if event is not None:
                yield event

    async def next_event(self, timeout: float | None = None) -> CpgEvent:
        """The next event; CS_ERR_TIMEOUT after ``timeout`` seconds."""
        return await first_event(self.events(), timeout, "cpg")
