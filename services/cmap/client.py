"""The cmap client library (``pycorosync.cmap``): corosync's libcmap for Python.

    from pycorosync.cmap import CmapClient, ValueType, CMAP_TRACK_MODIFY

    with CmapClient() as cmap:                       # run_dir: --run-dir / $PYCOROSYNC_RUN_DIR / default
        token = cmap.get_u32("runtime.config.totem.token")
        cmap.set("resources.demo.state", "running")  # str -> STRING, bytes -> BINARY, float -> DOUBLE
        cmap.set("resources.demo.count", 7, ValueType.UINT32)   # ints need their type
        for key, vtype, value in cmap.iter("totem."):
            ...
        handle = cmap.track_add("resources.demo.", CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX, print)
        cmap.dispatch(CS_DISPATCH_ALL)               # or poll cmap.fileno() first

    async with AsyncCmapClient() as cmap:            # same calls, awaitable
        await cmap.track_add("totem.", CMAP_TRACK_ADD | CMAP_TRACK_PREFIX)
        async for event in cmap.notifications(): ...

Every failure raises ``CsError`` with corosync's cs_error code (``CS_ERR_NOT_EXIST`` for a missing
key, ``CS_ERR_ACCESS`` for a read-only one...). A lost service is ``CS_ERR_LIBRARY``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.ipc.client import CS_DISPATCH_ALL, Connection, connect
from pycorosync.ipc.errors import CS_ERR_INVALID_PARAM, CS_ERR_NO_SECTIONS, CS_ERR_NOT_EXIST, CS_OK, CsError
from pycorosync.ipc.framing import decode_response
from pycorosync.services.cmap import protocol as p
from pycorosync.services.cmap.engine import (
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    Entry,
)
from pycorosync.services.cmap.view import ASK_SERVICE, IcmapViewReader

__all__ = [
    "CMAP_MAP_DEFAULT", "CMAP_MAP_ICMAP", "CMAP_MAP_STATS", "CMAP_TRACK_ADD", "CMAP_TRACK_DELETE",
    "CMAP_TRACK_MODIFY", "CMAP_TRACK_PREFIX", "AsyncCmapClient", "CmapClient", "CmapTrackEvent", "ValueType",
]

CMAP_MAP_DEFAULT = p.CMAP_MAP_DEFAULT
CMAP_MAP_ICMAP = p.CMAP_MAP_ICMAP
CMAP_MAP_STATS = p.CMAP_MAP_STATS
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CmapTrackEvent:
    """One tracked change (corosync's ``cmap_notify_fn_t`` arguments).

    ``event`` is CMAP_TRACK_ADD, _DELETE or _MODIFY; ``new_type``/``old_type`` are None where that
    side does not exist (type 0 in corosync), and then the value is None too.
    """

    track_handle: int
    event: int
    key: str
    new_type: ValueType | None
    new_value: Value | None
    old_type: ValueType | None
    old_value: Value | None
    user_data: Any = None


TrackCallback = Callable[[CmapTrackEvent], object]


def infer_type(value: object, vtype: ValueType | int | None) -> ValueType:
    """The type to store ``value`` with: explicit, or str → STRING, bytes → BINARY, float → DOUBLE."""
    if vtype is not None:
        return ValueType(vtype)
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ValueType.BINARY
    if isinstance(value, float):
        return ValueType.DOUBLE
    if isinstance(value, int):
        raise CsError(CS_ERR_INVALID_PARAM, f"an integer value ({value}) needs an explicit type (ValueType.UINT32...)")
    raise CsError(CS_ERR_INVALID_PARAM, f"cannot store a {type(value).__name__} in cmap")


def _body(response: bytes, what: str) -> bytes:
    code, body = decode_response(response)
    if code != CS_OK:
        raise CsError(code, what)
    return body


class _CmapBase:
    """Request encoding and notification decoding shared by the blocking and asyncio clients."""

    _conn: Connection

    def __init__(self, run_dir: str | None, cmap_map: int, engine: bool, timeout: float, local_reads: bool) -> None:
        self.timeout = timeout
        self.cmap_map = cmap_map
        self._contexts = itertools.count(1)
        self._tracks: dict[int, tuple[TrackCallback | None, Any]] = {}  # context -> (callback, user_data)
        self._handle_context: dict[int, int] = {}
        self._view: IcmapViewReader | None = None
        self._conn = connect(run_dir, p.SERVICE_NAME, timeout=min(timeout, 5.0))
        self._init_payload = (
            p.encode_initialize_map(cmap_map, p.INIT_FLAG_ENGINE if engine else 0)
            if cmap_map != CMAP_MAP_DEFAULT or engine else None
        )
        if local_reads and cmap_map == CMAP_MAP_DEFAULT:
            try:
                self._view = self._open_view()
            except BaseException:
                self.close()
                raise

    def _open_view(self) -> IcmapViewReader | None:
        """Asks the service for its read view (view.py); None when it has none (gets are requests then).

        Runs before anything else uses the connection: the descriptor comes as a message on the
        connection's socket, which must be read here before the response is waited for (waiting
        reads and discards whatever the socket holds).
        """
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if not isinstance(sock, socket.socket):
            return None
        conn.send(p.MSG_VIEW, b"")
        fds: list[int] = []
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 16, 1)
        except OSError:  # TimeoutError included: a service without views never sends the message
            msg = b""
        view = None
        try:
            if msg == b"V" and len(fds) == 1:
                with contextlib.suppress(ValueError, OSError):
                    view = IcmapViewReader(fds[0])
        finally:
            for fd in fds:
                os.close(fd)
        try:
            _, response = conn.read_response(self.timeout, "cmap view")
        except CsError:
            if view is not None:
                view.close()
            raise
        if decode_response(response)[0] != CS_OK and view is not None:
            view.close()
            view = None
        return view

    def _local_get(self, key: str) -> tuple[Value, ValueType] | None:
        """A get answered from the view, or None when the service must be asked."""
        view = self._view
        if view is None:
            return None
        entry = view.lookup(key)
        if entry is ASK_SERVICE:
            return None
        if entry is None:
            raise CsError(CS_ERR_NOT_EXIST, f"cmap get {key!r}")
        vtype, value = entry  # type: ignore[misc]
        return value, vtype

    @staticmethod
    def _value_of(key: str, entry: Entry, vtype: ValueType | None) -> Value:
        if vtype is not None and entry[0] != vtype:
            raise CsError(CS_ERR_INVALID_PARAM, f"cmap key {key!r} is {entry[0].name}, not {vtype.name}")
        return entry[1]

    def _event_of(self, rtype: int, payload: bytes) -> tuple[CmapTrackEvent, TrackCallback | None] | None:
        """Decodes a NOTIFY record; None for a tracker already deleted or an unknown record."""
        if rtype != p.MSG_NOTIFY:
            return None
        handle, context, event, key, new, old = p.decode_notify(payload)
        track = self._tracks.get(context)
        if track is None:
            return None
        return CmapTrackEvent(
            handle, event, key,
            None if new is None else new[0], None if new is None else new[1],
            None if old is None else old[0], None if old is None else old[1],
            track[1],
        ), track[0]

    def fileno(self) -> int:
        """Readable when notifications wait (or the service is gone): poll it, then ``dispatch``."""
        return self._conn.fileno()

    def service_alive(self) -> bool:
        """False once the cmap service hung up (stopped or restarted): then make a new client."""
        if self._conn.closed:
            return False
        self._conn.wait_event(0)
        return not self._conn.server_gone

    def close(self) -> None:
        """cmap_finalize: closes the connection (the service drops this handle's iterators and trackers)."""
        view, self._view = self._view, None
        if view is not None:
            view.close()
        self._conn.close()


class CmapClient(_CmapBase):
    """A blocking cmap handle (``cmap_initialize`` / ``cmap_initialize_map``); use as a context manager.

    ``cmap_map``: CMAP_MAP_DEFAULT (icmap) or CMAP_MAP_STATS. ``engine=True`` is for the node's own
    service processes: it lets them write read-only keys (``runtime.services.*``...), and needs the
    service's own uid (or root). ``local_reads`` (default): icmap gets are answered from the service's
    shared read-only view of the key space without a round trip whenever it can answer for certain
    (services/cmap/view.py), with the same results; False makes every get a request.
    """

    def __init__(
        self,
        run_dir: str | None = None,
        cmap_map: int = CMAP_MAP_DEFAULT,
        *,
        engine: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        local_reads: bool = True,
    ) -> None:
        super().__init__(run_dir, cmap_map, engine, timeout, local_reads)
        try:
            if self._init_payload is not None:
                self._call(p.MSG_INITIALIZE_MAP, self._init_payload, "cmap initialize_map")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> CmapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, msg: int, payload: bytes, what: str) -> bytes:
        _, response = self._conn.request(msg, payload, self.timeout)
        return _body(response, what)

    # -- get -------------------------------------------------------------------------------------
    def get(self, key: str) -> tuple[Value, ValueType]:
        """cmap_get: ``(value, type)``; CS_ERR_NOT_EXIST when the key is missing."""
        local = self._local_get(key)
        if local is not None:
            return local
        vtype, value = p.decode_entry(self._call(p.MSG_GET, p.encode_key(key), f"cmap get {key!r}"))
        return value, vtype

    def get_typed(self, key: str, vtype: ValueType) -> Value:
        """The value of ``key``, which must have type ``vtype`` (else CS_ERR_INVALID_PARAM)."""
        value, actual = self.get(key)
        return self._value_of(key, (actual, value), vtype)

    def get_i8(self, key: str) -> int:
        """cmap_get_int8."""
        return int(self.get_typed(key, ValueType.INT8))

    def get_u8(self, key: str) -> int:
        """cmap_get_uint8."""
        return int(self.get_typed(key, ValueType.UINT8))

    def get_i16(self, key: str) -> int:
        """cmap_get_int16."""
        return int(self.get_typed(key, ValueType.INT16))

    def get_u16(self, key: str) -> int:
        """cmap_get_uint16."""
        return int(self.get_typed(key, ValueType.UINT16))

    def get_i32(self, key: str) -> int:
        """cmap_get_int32."""
        return int(self.get_typed(key, ValueType.INT32))

    def get_u32(self, key: str) -> int:
        """cmap_get_uint32."""
        return int(self.get_typed(key, ValueType.UINT32))

    def get_i64(self, key: str) -> int:
        """cmap_get_int64."""
        return int(self.get_typed(key, ValueType.INT64))

    def get_u64(self, key: str) -> int:
        """cmap_get_uint64."""
        return int(self.get_typed(key, ValueType.UINT64))

    def get_float(self, key: str) -> float:
        """cmap_get_float."""
        return float(self.get_typed(key, ValueType.FLOAT))

    def get_double(self, key: str) -> float:
        """cmap_get_double."""
        return float(self.get_typed(key, ValueType.DOUBLE))

    def get_string(self, key: str) -> str:
        """cmap_get_string."""
        return str(self.get_typed(key, ValueType.STRING))

    def get_binary(self, key: str) -> bytes:
        """A BINARY key's bytes."""
        value = self.get_typed(key, ValueType.BINARY)
        assert isinstance(value, bytes)
        return value

    # -- set / delete / inc / dec ----------------------------------------------------------------
    def set(self, key: str, value: Value, vtype: ValueType | int | None = None) -> None:
        """cmap_set: creates or replaces ``key`` (its type may change). Ints need ``vtype``."""
        vt = infer_type(value, vtype)
        try:
            payload = p.encode_set(key, vt, value if vt != ValueType.BINARY else bytes(value))  # type: ignore[arg-type]
        except Exception as exc:  # struct.error for an int out of range, ...
            raise CsError(CS_ERR_INVALID_PARAM, f"cmap set {key!r}: {value!r:.60} is not a valid {vt.name}") from exc
        self._call(p.MSG_SET, payload, f"cmap set {key!r}")

    def set_u8(self, key: str, value: int) -> None:
        """cmap_set_uint8."""
        self.set(key, value, ValueType.UINT8)

    def set_u32(self, key: str, value: int) -> None:
        """cmap_set_uint32."""
        self.set(key, value, ValueType.UINT32)

    def set_u64(self, key: str, value: int) -> None:
        """cmap_set_uint64."""
        self.set(key, value, ValueType.UINT64)

    def set_i32(self, key: str, value: int) -> None:
        """cmap_set_int32."""
        self.set(key, value, ValueType.INT32)

    def set_string(self, key: str, value: str) -> None:
        """cmap_set_string."""
        self.set(key, value, ValueType.STRING)

    def delete(self, key: str) -> None:
        """cmap_delete; CS_ERR_NOT_EXIST when missing, CS_ERR_ACCESS when read-only."""
        self._call(p.MSG_DELETE, p.encode_key(key), f"cmap delete {key!r}")

    def inc(self, key: str) -> None:
        """cmap_inc: integer keys only (wraps); CS_ERR_INVALID_PARAM otherwise."""
        self._call(p.MSG_INC, p.encode_key(key), f"cmap inc {key!r}")

    def dec(self, key: str) -> None:
        """cmap_dec."""
        self._call(p.MSG_DEC, p.encode_key(key), f"cmap dec {key!r}")

    # -- iteration -------------------------------------------------------------------------------
    def iter(self, prefix: str = "") -> Iterator[tuple[str, ValueType, Value]]:
        """cmap_iter_init/next/finalize: ``(key, type, value)`` in key order under ``prefix``."""
        body = self._call(p.MSG_ITER_INIT, p.encode_key(prefix), f"cmap iter_init {prefix!r}")
        handle = p.encode_u64(p.decode_u64(body))
        try:
            while True:
                _, response = self._conn.request(p.MSG_ITER_NEXT, handle, self.timeout)
                code, body = decode_response(response)
                if code == CS_ERR_NO_SECTIONS:
                    return
                if code != CS_OK:
                    raise CsError(code, f"cmap iter_next {prefix!r}")
                key, (vtype, value) = p.decode_iter_item(body)
                yield key, vtype, value
        finally:
            if not self._conn.closed and not self._conn.server_gone:
                self._conn.request(p.MSG_ITER_FINALIZE, handle, self.timeout)

    def keys(self, prefix: str = "") -> list[str]:
        """Names of the keys under ``prefix``, sorted."""
        return [key for key, _, _ in self.iter(prefix)]

    # -- tracking --------------------------------------------------------------------------------
    def track_add(self, key: str, flags: int, callback: TrackCallback | None = None, user_data: Any = None) -> int:
        """cmap_track_add: ``callback(CmapTrackEvent)`` runs from ``dispatch``; returns the track handle."""
        context = next(self._contexts)
        self._tracks[context] = (callback, user_data)
        try:
            body = self._call(p.MSG_TRACK_ADD, p.encode_track_add(key, flags, context), f"cmap track_add {key!r}")
        except BaseException:
            del self._tracks[context]
            raise
        handle = p.decode_u64(body)
        self._handle_context[handle] = context
        return handle

    def track_delete(self, handle: int) -> None:
        """cmap_track_delete; events of this tracker still queued are dropped."""
        self._call(p.MSG_TRACK_DELETE, p.encode_u64(handle), f"cmap track_delete {handle}")
        context = self._handle_context.pop(handle, None)
        self._tracks.pop(context or 0, None)

    def dispatch(self, flags: int = CS_DISPATCH_ALL, timeout: float | None = None) -> int:
        """cmap_dispatch: runs the callbacks of waiting notifications (CS_DISPATCH_ONE/ALL/BLOCKING/
        ONE_NONBLOCKING, as corosync); returns how many ran."""
        ran = 0

        def on_record(rtype: int, payload: bytes) -> None:
            nonlocal ran
            decoded = self._event_of(rtype, payload)
            if decoded is not None and decoded[1] is not None:
                decoded[1](decoded[0])
                ran += 1

        self._conn.dispatch(flags, on_record, timeout)
        return ran

    def reload(self) -> str:
        """Re-reads corosync.conf into cmap (COROSYNC.md §7.4; what ``cfgtool -R`` runs on every node).

        Needs ``engine=True`` (CS_ERR_ACCESS otherwise). Keys that may change at run time are applied
        with their track notifications; keys that may not keep their old value, and each gets one line
        "Modified entry 'KEY' in corosync.conf cannot be changed at run-time" in the returned text (and
        the service's log); the return is empty when nothing was refused. A file that does not parse
        changes nothing: CsError(CS_ERR_INVALID_PARAM) whose message, also left in
        ``config.reload_error_message``, says what and where. CS_ERR_NOT_SUPPORTED from a service
        started without a config file.
        """
        try:
            return self._call(p.MSG_RELOAD_CONFIG, b"", "cmap reload").decode("utf-8", "replace")
        except CsError as exc:
            if exc.code != CS_ERR_INVALID_PARAM:
                raise
            try:
                reason = self.get_string(p.RELOAD_ERROR_KEY)
            except CsError:
                raise exc from None
            raise CsError(exc.code, f"cmap reload: {reason}") from None

    reload_config = reload  # the earlier name


class AsyncCmapClient(_CmapBase):
    """The asyncio cmap handle: ``async with AsyncCmapClient(...) as cmap``, awaitable calls, and
    ``notifications()``, an async iterator of CmapTrackEvent for trackers added without a callback
    (trackers with a callback have it called instead)."""

    def __init__(
        self, run_dir: str | None = None, cmap_map: int = CMAP_MAP_DEFAULT, *, engine: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S, local_reads: bool = True,
    ) -> None:
        super().__init__(run_dir, cmap_map, engine, timeout, local_reads)

    async def __aenter__(self) -> AsyncCmapClient:
        try:
            if self._init_payload is not None:
                await self._call(p.MSG_INITIALIZE_MAP, self._init_payload, "cmap initialize_map")
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _call(self, msg: int, payload: bytes, what: str) -> bytes:
        _, response = await self._conn.request_async(msg, payload, self.timeout)
        return _body(response, what)

    async def get(self, key: str) -> tuple[Value, ValueType]:
        """cmap_get: ``(value, type)``."""
        local = self._local_get(key)
        if local is not None:
            return local
        vtype, value = p.decode_entry(await self._call(p.MSG_GET, p.encode_key(key), f"cmap get {key!r}"))
        return value, vtype

    async def set(self, key: str, value: Value, vtype: ValueType | int | None = None) -> None:
        """cmap_set (see ``CmapClient.set``)."""
        vt = infer_type(value, vtype)
        try:
            payload = p.encode_set(key, vt, value if vt != ValueType.BINARY else bytes(value))  # type: ignore[arg-type]
        except Exception as exc:
            raise CsError(CS_ERR_INVALID_PARAM, f"cmap set {key!r}: {value!r:.60} is not a valid {vt.name}") from exc
        await self._call(p.MSG_SET, payload, f"cmap set {key!r}")

    async def delete(self, key: str) -> None:
        """cmap_delete."""
        await self._call(p.MSG_DELETE, p.encode_key(key), f"cmap delete {key!r}")

    async def inc(self, key: str) -> None:
        """cmap_inc."""
        await self._call(p.MSG_INC, p.encode_key(key), f"cmap inc {key!r}")

    async def dec(self, key: str) -> None:
        """cmap_dec."""
        await self._call(p.MSG_DEC, p.encode_key(key), f"cmap dec {key!r}")

    async def iter(self, prefix: str = "") -> AsyncIterator[tuple[str, ValueType, Value]]:
        """``(key, type, value)`` in key order under ``prefix``."""
        body = await self._call(p.MSG_ITER_INIT, p.encode_key(prefix), f"cmap iter_init {prefix!r}")
        handle = p.encode_u64(p.decode_u64(body))
        try:
            while True:
                _, response = await self._conn.request_async(p.MSG_ITER_NEXT, handle, self.timeout)
                code, body = decode_response(response)
                if code == CS_ERR_NO_SECTIONS:
                    return
                if code != CS_OK:
                    raise CsError(code, f"cmap iter_next {prefix!r}")
                key, (vtype, value) = p.decode_iter_item(body)
                yield key, vtype, value
        finally:
            if not self._conn.closed and not self._conn.server_gone:
                await self._conn.request_async(p.MSG_ITER_FINALIZE, handle, self.timeout)

    async def track_add(
        self, key: str, flags: int, callback: TrackCallback | None = None, user_data: Any = None
    ) -> int:
        """cmap_track_add; without a callback the events come out of ``notifications()``."""
        context = next(self._contexts)
        self._tracks[context] = (callback, user_data)
        try:
            body = await self._call(
                p.MSG_TRACK_ADD, p.encode_track_add(key, flags, context), f"cmap track_add {key!r}"
            )
        except BaseException:
            del self._tracks[context]
            raise
        handle = p.decode_u64(body)
        self._handle_context[handle] = context
        return handle

    async def track_delete(self, handle: int) -> None:
        """cmap_track_delete."""
        await self._call(p.MSG_TRACK_DELETE, p.encode_u64(handle), f"cmap track_delete {handle}")
        context = self._handle_context.pop(handle, None)
        self._tracks.pop(context or 0, None)

    async def reload(self) -> str:
        """Re-reads corosync.conf into cmap (see ``CmapClient.reload``)."""
        try:
            body = await self._call(p.MSG_RELOAD_CONFIG, b"", "cmap reload")
        except CsError as exc:
            if exc.code != CS_ERR_INVALID_PARAM:
                raise
            try:
                value, _ = await self.get(p.RELOAD_ERROR_KEY)
            except CsError:
                raise exc from None
            raise CsError(exc.code, f"cmap reload: {value}") from None
        return body.decode("utf-8", "replace")

    reload_config = reload

    async def notifications(self) -> AsyncIterator[CmapTrackEvent]:
        """Every notification of a callback-less tracker; ends when the client is closed."""
        async for rtype, payload in self._conn.events():
            decoded = self._event_of(rtype, payload)
            if decoded is None:
                continue
            event, callback = decoded
            if callback is None:
                yield event
            else:
                callback(event)
