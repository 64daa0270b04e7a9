"""The cfg client library (``pycorosync.cfg``): corosync's libcfg for Python.

    from pycorosync.cfg import CfgClient, COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST, COROSYNC_CFG_SHUTDOWN_FLAG_YES

    def on_shutdown(cfg, flags):                       # corosync_cfg_shutdown_callback
        cfg.replyto_shutdown(COROSYNC_CFG_SHUTDOWN_FLAG_YES)

    with CfgClient(shutdown=on_shutdown) as cfg:       # corosync_cfg_initialize
        cfg.local_get()                                # this node's id
        cfg.get_node_addrs(2)                          # ["10.0.0.2"], one address per link
        cfg.node_status_get(2)                         # CfgNodeStatus: reachable, link_status[8]
        cfg.trackstart()                               # be asked before this node shuts down
        cfg.dispatch(CS_DISPATCH_ALL)                  # or poll cfg.fileno() first; runs on_shutdown
        cfg.try_shutdown(COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST)   # CS_ERR_BUSY if a tracker said no
        cfg.kill_node(3, "reason")                     # node 3 stops
        cfg.reload_config()                            # every node re-reads its corosync.conf
        cfg.reopen_log_files()

    async with AsyncCfgClient() as cfg:                # the same calls, awaitable;
        async for request in cfg.events(): ...         # ShutdownRequest events

Every failure raises ``CsError`` with corosync's cs_error code (CS_ERR_LIBRARY when no daemon runs).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pycorosync.ipc.client import CS_DISPATCH_ALL, Connection, connect, first_event
from pycorosync.ipc.errors import CS_ERR_BAD_FLAGS, CS_OK, CsError, CsErrorCode
from pycorosync.ipc.framing import decode_response
from pycorosync.services.cfg import protocol as p
from pycorosync.services.cfg.protocol import (
    CFG_NODE_STATUS_V1,
    COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE,
    COROSYNC_CFG_SHUTDOWN_FLAG_NO,
    COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS,
    COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST,
    COROSYNC_CFG_SHUTDOWN_FLAG_YES,
    CfgLinkStatus,
    CfgNodeStatus,
)

__all__ = [
    "CFG_NODE_STATUS_V1", "COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE", "COROSYNC_CFG_SHUTDOWN_FLAG_NO",
    "COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS", "COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST", "COROSYNC_CFG_SHUTDOWN_FLAG_YES",
    "AsyncCfgClient", "CfgClient", "CfgLinkStatus", "CfgNodeStatus", "ShutdownRequest",
]

DEFAULT_TIMEOUT_S = 10.0
#: a shutdown request waits for every tracker (cfg.shutdown_timeout, 5 s by default) before it is answered
SHUTDOWN_WAIT_S = 120.0


@dataclass(frozen=True)
class ShutdownRequest:
    """The shutdown callback's event: a shutdown of this node was requested (``status`` CS_OK: answer
    with ``replyto_shutdown``), or the request you were asked about timed out (CS_ERR_TIMEOUT)."""

    flags: int
    status: int = CS_OK


ShutdownFn = Callable[[Any, int], object]  # (client, flags), as corosync's (handle, flags)


def _event(rtype: int, payload: bytes) -> ShutdownRequest | None:
    if rtype != p.CfgMsg.EV_TESTSHUTDOWN:
        return None
    try:
        status, flags = p.decode_two_u32(payload, "shutdown event")
    except CsError:
        return None
    return ShutdownRequest(flags, status)


def _body(response: bytes, what: str) -> bytes:
    code, body = decode_response(response)
    if code != CS_OK:
        raise CsError(code, what)
    return body


def _check_flags(flags: int) -> None:
    if flags not in p.SHUTDOWN_FLAGS:
        raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"shutdown flags {flags}")


class _CfgBase:
    """Encoding and state shared by the blocking and the asyncio client."""

    _conn: Connection

    def __init__(self, context: Any, timeout: float) -> None:
        self.context = context
        self.timeout = timeout

    def fileno(self) -> int:
        """corosync_cfg_fd_get: readable when a shutdown event waits (or the service is gone)."""
        return self._conn.fileno()

    def context_get(self) -> Any:
        """corosync_cfg_context_get."""
        return self.context

    def context_set(self, context: Any) -> None:
        """corosync_cfg_context_set."""
        self.context = context

    def close(self) -> None:
        """corosync_cfg_finalize (a tracker that goes counts as a yes to a pending shutdown)."""
        self._conn.close()

    finalize = close

    @property
    def closed(self) -> bool:
        return self._conn.closed


def _connect(run_dir: str | None, timeout: float) -> Connection:
    return connect(run_dir, p.SERVICE_NAME, timeout=min(timeout, 5.0))


class CfgClient(_CfgBase):
    """A blocking cfg handle (``corosync_cfg_initialize``); use as a context manager.

    ``shutdown(client, flags)`` runs from ``dispatch`` when this node is asked to shut down (after
    ``trackstart``); it should answer with ``replyto_shutdown``. Without it, read ``ShutdownRequest``
    events with ``next_event``.
    """

    def __init__(self, run_dir: str | None = None, *, shutdown: ShutdownFn | None = None, context: Any = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(context, timeout)
        self.shutdown_fn = shutdown
        self._conn = _connect(run_dir, timeout)

    def __enter__(self) -> CfgClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, msg: int, payload: bytes, what: str, timeout: float | None = None) -> bytes:
        _, response = self._conn.request(msg, payload, self.timeout if timeout is None else timeout)
        return _body(response, what)

    # -- node information --------------------------------------------------------------------------------
    def local_get(self) -> int:
        """corosync_cfg_local_get: this node's id."""
        return p.decode_u32(self._call(p.CfgMsg.LOCAL_GET, b"", "corosync_cfg_local_get"), "local_get")

    def get_node_addrs(self, nodeid: int = 0) -> list[str]:
        """corosync_cfg_get_node_addrs: the node's address on each link (0 = this node);
        CS_ERR_NOT_EXIST for a node not in the nodelist."""
        body = self._call(p.CfgMsg.GET_NODE_ADDRS, p.encode_u32(nodeid), f"corosync_cfg_get_node_addrs {nodeid}")
        return p.decode_str_list(body, "node addresses")

    def node_status_get(self, nodeid: int, version: int = CFG_NODE_STATUS_V1) -> CfgNodeStatus:
        """corosync_cfg_node_status_get: reachability and link status; CS_ERR_FAILED_OPERATION for a node
        not in the nodelist, CS_ERR_NOT_SUPPORTED for another structure version."""
        body = self._call(p.CfgMsg.NODESTATUSGET, p.encode_two_u32(nodeid, version),
                          f"corosync_cfg_node_status_get {nodeid}")
        return p.decode_node_status(body)

    def ring_status_get(self) -> list[tuple[str, str]]:
        """corosync_cfg_ring_status_get: (``"<link> <address>"``, status string) per link (legacy)."""
        return p.decode_ring_status(self._call(p.CfgMsg.RINGSTATUSGET, b"", "corosync_cfg_ring_status_get"))

    # -- administration ------------------------------------------------------------------------------------
    def kill_node(self, nodeid: int, reason: str) -> None:
        """corosync_cfg_kill_node: node ``nodeid`` logs ``reason`` and stops; CS_ERR_NOT_EXIST when it is
        not a member of the current ring."""
        self._call(p.CfgMsg.KILLNODE, p.encode_killnode(nodeid, reason), f"corosync_cfg_kill_node {nodeid}")

    def try_shutdown(self, flags: int = COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST) -> None:
        """corosync_cfg_try_shutdown: returns once this node's shutdown is granted (the node then stops);
        CS_ERR_BUSY when a tracker refused (or did not answer in time), CS_ERR_EXIST when a request is
        already open."""
        _check_flags(flags)
        self._call(p.CfgMsg.TRYSHUTDOWN, p.encode_u32(flags), "corosync_cfg_try_shutdown",
                   max(self.timeout, SHUTDOWN_WAIT_S))

    def replyto_shutdown(self, response: int) -> None:
        """corosync_cfg_replyto_shutdown: COROSYNC_CFG_SHUTDOWN_FLAG_YES or _NO to the open request
        (CS_ERR_ACCESS when none is open)."""
        self._call(p.CfgMsg.REPLYTOSHUTDOWN, p.encode_u32(int(bool(response))), "corosync_cfg_replyto_shutdown")

    def trackstart(self, flags: int = 0) -> None:
        """corosync_cfg_trackstart: be asked (shutdown callback) before this node shuts down."""
        self._call(p.CfgMsg.TRACKSTART, p.encode_u32(flags), "corosync_cfg_trackstart")

    def trackstop(self) -> None:
        """corosync_cfg_trackstop."""
        self._call(p.CfgMsg.TRACKSTOP, b"", "corosync_cfg_trackstop")

    def reload_config(self) -> None:
        """corosync_cfg_reload_config: every node re-reads corosync.conf; returns once this node did
        (its error, e.g. CS_ERR_INVALID_PARAM for a file that does not parse; the message is left in
        cmap ``config.reload_error_message``)."""
        self._call(p.CfgMsg.RELOAD_CONFIG, b"", "corosync_cfg_reload_config", max(self.timeout, 30.0))

    def reopen_log_files(self) -> None:
        """corosync_cfg_reopen_log_files: the node reopens its log files (after a logrotate)."""
        self._call(p.CfgMsg.REOPEN_LOG_FILES, b"", "corosync_cfg_reopen_log_files")

    # -- events --------------------------------------------------------------------------------------------
    def dispatch(self, flags: int = CS_DISPATCH_ALL, timeout: float | None = None) -> int:
        """corosync_cfg_dispatch: runs the shutdown callback for waiting events (CS_DISPATCH_ONE/ALL/
        BLOCKING/ONE_NONBLOCKING); returns how many callbacks ran."""
        ran = 0

        def on_record(rtype: int, payload: bytes) -> None:
            nonlocal ran
            event = _event(rtype, payload)
            if event is not None and event.status == CS_OK and self.shutdown_fn is not None:
                self.shutdown_fn(self, event.flags)
                ran += 1

        if flags not in (1, 2, 3, 4):
            raise CsError(CS_ERR_BAD_FLAGS, f"dispatch flags {flags}")
        self._conn.dispatch(flags, on_record, timeout)
        return ran

    def next_event(self, timeout: float | None = 0.0) -> ShutdownRequest | None:
        """The next event (no callback run), waiting up to ``timeout`` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self._conn.read_event()
            if record is not None:
                event = _event(*record)
                if event is not None:
                    return event
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._conn.wait_event(remaining)

    def events(self, timeout: float | None = None) -> Iterator[ShutdownRequest]:
        """Events as they come; stops after ``timeout`` seconds without one (None: never)."""
        while (event := self.next_event(timeout)) is not None:
            yield event


class AsyncCfgClient(_CfgBase):
    """The asyncio cfg handle: ``async with AsyncCfgClient() as cfg``, awaitable calls, ``events()``."""

    def __init__(self, run_dir: str | None = None, *, context: Any = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(context, timeout)
        self._run_dir = run_dir

    async def __aenter__(self) -> AsyncCfgClient:
        self._conn = _connect(self._run_dir, self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _call(self, msg: int, payload: bytes, what: str, timeout: float | None = None) -> bytes:
        _, response = await self._conn.request_async(msg, payload, self.timeout if timeout is None else timeout)
        return _body(response, what)

    async def local_get(self) -> int:
        """corosync_cfg_local_get."""
        return p.decode_u32(await self._call(p.CfgMsg.LOCAL_GET, b"", "corosync_cfg_local_get"), "local_get")

    async def get_node_addrs(self, nodeid: int = 0) -> list[str]:
        """corosync_cfg_get_node_addrs."""
        body = await self._call(p.CfgMsg.GET_NODE_ADDRS, p.encode_u32(nodeid), "corosync_cfg_get_node_addrs")
        return p.decode_str_list(body, "node addresses")

    async def node_status_get(self, nodeid: int, version: int = CFG_NODE_STATUS_V1) -> CfgNodeStatus:
        """corosync_cfg_node_status_get."""
        body = await self._call(p.CfgMsg.NODESTATUSGET, p.encode_two_u32(nodeid, version),
                                "corosync_cfg_node_status_get")
        return p.decode_node_status(body)

    async def kill_node(self, nodeid: int, reason: str) -> None:
        """corosync_cfg_kill_node."""
        await self._call(p.CfgMsg.KILLNODE, p.encode_killnode(nodeid, reason), "corosync_cfg_kill_node")

    async def try_shutdown(self, flags: int = COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST) -> None:
        """corosync_cfg_try_shutdown (see ``CfgClient.try_shutdown``)."""
        _check_flags(flags)
        await self._call(p.CfgMsg.TRYSHUTDOWN, p.encode_u32(flags), "corosync_cfg_try_shutdown",
                         max(self.timeout, SHUTDOWN_WAIT_S))

    async def replyto_shutdown(self, response: int) -> None:
        """corosync_cfg_replyto_shutdown."""
        await self._call(p.CfgMsg.REPLYTOSHUTDOWN, p.encode_u32(int(bool(response))), "corosync_cfg_replyto_shutdown")

    async def trackstart(self, flags: int = 0) -> None:
        """corosync_cfg_trackstart."""
        await self._call(p.CfgMsg.TRACKSTART, p.encode_u32(flags), "corosync_cfg_trackstart")

    async def trackstop(self) -> None:
        """corosync_cfg_trackstop."""
        await self._call(p.CfgMsg.TRACKSTOP, b"", "corosync_cfg_trackstop")

    async def reload_config(self) -> None:
        """corosync_cfg_reload_config."""
        await self._call(p.CfgMsg.RELOAD_CONFIG, b"", "corosync_cfg_reload_config", max(self.timeout, 30.0))

    async def reopen_log_files(self) -> None:
        """corosync_cfg_reopen_log_files."""
        await self._call(p.CfgMsg.REOPEN_LOG_FILES, b"", "corosync_cfg_reopen_log_files")

    async def events(self) -> AsyncIterator[ShutdownRequest]:
        """Every ShutdownRequest, in order; ends when the client is closed (CS_ERR_LIBRARY if the service goes)."""
        async for rtype, payload in self._conn.events():
            event = _event(rtype, payload)
            if event is not None:
                yield event

    async def next_event(self, timeout: float | None = None) -> ShutdownRequest:
        """The next ShutdownRequest; CS_ERR_TIMEOUT after ``timeout`` seconds."""
        return await first_event(self.events(), timeout, "cfg")

