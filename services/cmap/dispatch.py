"""Maps cmap requests (bytes in) onto the maps and returns (cs_error, response body).

Pure and transport-free, so the fuzz tests can throw arbitrary records at it: any malformed
request becomes an error code and a counter, never an exception out of ``handle``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.services.cmap import protocol as p
from pycorosync.services.cmap.engine import CmapNotification, Icmap
from pycorosync.services.cmap.stats_map import StatsMap

log = logging.getLogger("CMAP")

OK = int(CsErrorCode.CS_OK)
EventSender = Callable[[int, bytes], bool]  # (record type, payload) -> False when it had to wait for ring space
ReloadHook = Callable[[], tuple[int, str]]  # -> (cs_error, messages)


@dataclass(eq=False)
class CmapSession:
    """One client connection's cmap state: which map it talks to and whether it is part of the node."""

    send_event: EventSender
    may_be_engine: bool = False
    engine: bool = False
    map_id: int = p.CMAP_MAP_DEFAULT
    label: str = "client"
    notifications_sent: int = 0
    notifications_delayed: int = 0
    track_contexts: dict[int, int] = field(default_factory=dict)
    view_sent: bool = False  # the read view's descriptor went to this connection (once only)


class CmapDispatcher:
    """The cmap service's request handlers over one icmap and one stats map."""

    def __init__(self, icmap: Icmap, stats: StatsMap, reload_hook: ReloadHook | None = None) -> None:
        self.icmap = icmap
        self.stats = stats
        self.reload_hook = reload_hook
        self.invalid_requests = 0
        self.internal_errors = 0
        self._handlers: dict[int, Callable[[CmapSession, bytes | memoryview], bytes]] = {
            p.MSG_GET: self._get,
            p.MSG_SET: self._set,
            p.MSG_DELETE: self._delete,
            p.MSG_INC: self._inc,
            p.MSG_DEC: self._dec,
            p.MSG_ITER_INIT: self._iter_init,
            p.MSG_ITER_NEXT: self._iter_next,
            p.MSG_ITER_FINALIZE: self._iter_finalize,
            p.MSG_TRACK_ADD: self._track_add,
            p.MSG_TRACK_DELETE: self._track_delete,
            p.MSG_INITIALIZE_MAP: self._initialize_map,
            p.MSG_RELOAD_CONFIG: self._reload,
        }

    def open_session(self, send_event: EventSender, *, may_be_engine: bool = False, label: str = "client") -> CmapSession:
        """State for a new connection; ``may_be_engine`` if its peer may ask for engine rights."""
        return CmapSession(send_event=send_event, may_be_engine=may_be_engine, label=label)

    def close_session(self, session: CmapSession) -> None:
        """The connection is gone: drop its iterators and trackers in both maps."""
        self.icmap.drop_owner(session)
        self.stats.drop_owner(session)

    def handle(self, session: CmapSession, rtype: int, payload: bytes | memoryview) -> tuple[int, bytes]:
        """Runs one request; returns (cs_error, body). Never raises."""
        handler = self._handlers.get(rtype)
        if handler is None:
            self.invalid_requests += 1
            return int(CsErrorCode.CS_ERR_INVALID_PARAM), b""
        try:
            return OK, handler(session, payload)
        except CsError as exc:
            if exc.code == CsErrorCode.CS_ERR_INVALID_PARAM:
                self.invalid_requests += 1
            return exc.code, b""
        except Exception:  # a bug must cost one request, not the service
            self.internal_errors += 1
            log.exception("cmap request %d from %s failed", rtype, session.label)
            return int(CsErrorCode.CS_ERR_LIBRARY), b""

    def _map(self, session: CmapSession) -> Icmap | StatsMap:
        return self.stats if session.map_id == p.CMAP_MAP_STATS else self.icmap

    # -- handlers: each returns the response body or raises CsError ----------------------------
    def _get(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        return p.encode_entry(self._map(session).get(p.decode_key(payload)))

    def _set(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        key, (vtype, value) = p.decode_set(payload)
        self._map(session).set(key, vtype, value, internal=session.engine)
        return b""

    def _delete(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        self._map(session).delete(p.decode_key(payload), internal=session.engine)
        return b""

    def _inc(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        self._map(session).inc(p.decode_key(payload), internal=session.engine)
        return b""

    def _dec(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        self._map(session).dec(p.decode_key(payload), internal=session.engine)
        return b""

    def _iter_init(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        return p.encode_u64(self._map(session).iterators.open(p.decode_key(payload), session))

    def _iter_next(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        key, entry = self._map(session).iter_next(p.decode_u64(payload), session)
        return p.encode_iter_item(key, entry)

    def _iter_finalize(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        self._map(session).iterators.close(p.decode_u64(payload), session)
        return b""

    def _track_add(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        key, flags, context = p.decode_track_add(payload)

        def sink(n: CmapNotification) -> None:
            data = p.encode_notify(n.track_handle, context, n.event, n.key, n.new, n.old)
            if session.send_event(p.MSG_NOTIFY, data):
                session.notifications_sent += 1
            else:
                session.notifications_delayed += 1

        handle = self._map(session).track_add(key, flags, sink, session)
        session.track_contexts[handle] = context
        return p.encode_u64(handle)

    def _track_delete(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        handle = p.decode_u64(payload)
        self._map(session).track_delete(handle, session)
        session.track_contexts.pop(handle, None)
        return b""

    def _initialize_map(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        cmap_map, flags = p.decode_initialize_map(payload)
        if cmap_map not in (p.CMAP_MAP_ICMAP, p.CMAP_MAP_STATS) or flags & ~p.INIT_FLAG_ENGINE:
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"unknown cmap map {cmap_map} or flags 0x{flags:x}")
        if flags & p.INIT_FLAG_ENGINE and not session.may_be_engine:
            raise CsError(CsErrorCode.CS_ERR_ACCESS, "engine rights need the node's own uid")
        if cmap_map != session.map_id:
            self._map(session).drop_owner(session)
            session.track_contexts.clear()
        session.map_id = cmap_map
        session.engine = bool(flags & p.INIT_FLAG_ENGINE)
        return b""

    def _reload(self, session: CmapSession, payload: bytes | memoryview) -> bytes:
        if not session.engine:
            raise CsError(CsErrorCode.CS_ERR_ACCESS, "config reload is for node services (cfg)")
        if self.reload_hook is None:
            raise CsError(CsErrorCode.CS_ERR_NOT_SUPPORTED, "this cmap service has no config file to reload")
        code, messages = self.reload_hook()
        if code != OK:
            raise CsError(code, messages)
        return messages.encode("utf-8", "replace")
