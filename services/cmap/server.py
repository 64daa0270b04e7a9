"""The cmap service: icmap + stats map served on ``<run_dir>/cmap.sock``.

``CmapService`` is what answers clients; inside a node it runs in ``service.py``'s ``CmapProcess``
(rings, sync). ``run_cmap_service`` below is a standalone process of its own for tests and
benchmarks (no rings: it follows the membership in ``totem.status.json`` if one is there).

    python -m pycorosync.services.cmap.server -c corosync.conf --run-dir DIR [--nodeid N]

One epoll loop: the IPC server's descriptors, an optional stop fd (readable = stop), SIGTERM/SIGINT,
and a 1.5 s poll of the stats map for its trackers. ``uidgid.uid.<uid>`` / ``uidgid.gid.<gid>`` (and
their ``uidgid.config.`` twins from the file) feed the IPC access policy live.

Stats keys live now: ``stats.ipcs.global.*`` and ``stats.ipcs.service0.<pid>.<conn>.*`` (this
service's own connections). ``stats.srp.*``, ``stats.pg.*``, other services' ``stats.ipcs.*`` and
``stats.schedmiss.*`` come from providers registered on ``CmapService.stats`` (the stats table
reader, once the Totem runtime and the other services write their rows).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.ipc.creds import AccessPolicy
from pycorosync.ipc.errors import CS_ERR_INVALID_PARAM, CS_OK, CsError, CsErrorCode
from pycorosync.ipc.framing import encode_response
from pycorosync.ipc.server import Server, ServerConnection, ServerLimits
from pycorosync.paths import resolve_run_dir
from pycorosync.services.cmap import loader, protocol as p
from pycorosync.services.cmap.dispatch import CmapDispatcher, CmapSession
from pycorosync.services.cmap.engine import (
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    CmapNotification,
    Icmap,
)
from pycorosync.services.cmap.members import MembershipKeys
from pycorosync.services.cmap.node_stats import StatsTableLink, attach_node_stats
from pycorosync.services.cmap.stats_map import POLL_INTERVAL_S, StatsMap
from pycorosync.services.cmap.view import HEARTBEAT_INTERVAL_NS, IcmapViewWriter

log = logging.getLogger("CMAP")

ConfigKeys = Mapping[str, tuple[ValueType, Value]]
_ENGINE_OWNER = "cmap-engine"


def load_config_keys(path: str | os.PathLike[str], node_id: int | None = None) -> ConfigKeys:
    """The typed keys of a corosync.conf as corosync puts them in icmap (with the local node's keys
    ``nodelist.local_node_pos`` and bind addresses when the local node can be found)."""
    from pycorosync.engine.config import ConfigError, load

    cfg = load(str(path))
    try:
        local = cfg.local_node(node_id, resolve=False)
    except ConfigError:
        local = None
    return cfg.all_keys(local)


class CmapService:
    """The cmap engine of one node: maps, access list, request dispatch (corosync's lib handlers)."""

    def __init__(self, keys: ConfigKeys, node_id: int | None = None, config_path: str | None = None) -> None:
        self.node_id = node_id
        self.config_path = config_path
        self.icmap = Icmap()
        self.stats = StatsMap()
        loader.load_initial(self.icmap, keys, node_id)
        self.dispatcher = CmapDispatcher(self.icmap, self.stats, self.reload if config_path else None)
        self.own_uid = os.geteuid()
        self.server: Server | None = None
        self.table_link: StatsTableLink | None = None
        self._allowed: tuple[frozenset[int], frozenset[int]] | None = None
        self.icmap.track_add("uidgid.", CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX,
                             self._uidgid_changed, _ENGINE_OWNER)
        self.stats.register("stats.ipcs.", self._ipc_stats)
        self.stats.register_clear("ipc", self._clear_ipc_stats)
        self.view: IcmapViewWriter | None = None
        self.members = MembershipKeys(self.icmap, node_id)

    # -- the shared read view (view.py) ----------------------------------------------------------
    def open_view(self) -> IcmapViewWriter:
        """Starts mirroring icmap into a read-only view that clients map for local gets."""
        self.view = IcmapViewWriter(lambda: self.icmap.items())
        self.icmap.track_add("", CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX,
                             self._mirror, _ENGINE_OWNER)
        return self.view

    def close_view(self) -> None:
        """Marks the view closed (its readers turn to requests, which then fail) and frees it."""
        view, self.view = self.view, None
        if view is not None:
            view.close()

    def _mirror(self, n: CmapNotification) -> None:
        # runs inside the icmap change, before the request that made it is answered
        view = self.view
        if view is None:
            return
        try:
            if n.event == CMAP_TRACK_DELETE:
                view.remove(n.key)
            else:
                assert n.new is not None
                view.put(n.key, n.new)
        except Exception:
            # a view that may be stale must not be read: close it, clients fall back to requests
            log.exception("cmap view: cannot mirror %r; clients read through the service from now on", n.key)
            self.close_view()

    def _send_view(self, conn: ServerConnection) -> tuple[int, bytes]:
        """MSG_VIEW: one socket message to the client (b"V" with the view's descriptor, or b"N"), then
        the response; the client reads the socket message before the response. Once per connection:
        a client asking again gets CS_ERR_EXIST and nothing on its socket (which it may not read)."""
        session: CmapSession = conn.context
        if session.view_sent:
            return p.MSG_VIEW, encode_response(int(CsErrorCode.CS_ERR_EXIST), b"")
        session.view_sent = True
        fds = [self.view.reader_fd()] if self.view is not None else []
        try:
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                socket.send_fds(sock, [b"V" if fds else b"N"], fds)
        except OSError as exc:  # the client went away, or filled its socket: it only hurts itself
            log.debug("cmap view: cannot send it to pid %d: %s", conn.pid, exc)
            return p.MSG_VIEW, encode_response(int(CsErrorCode.CS_ERR_LIBRARY), b"")
        return p.MSG_VIEW, encode_response(int(CS_OK) if fds else int(CsErrorCode.CS_ERR_NOT_SUPPORTED), b"")

    # -- access list from uidgid.* -------------------------------------------------------------
    def _uidgid_changed(self, _n: object) -> None:
        self._allowed = None

    def allowed_ids(self) -> tuple[frozenset[int], frozenset[int]]:
        """(uids, gids) admitted by ``uidgid.{,config.}{uid,gid}.<n>`` keys holding u8 1 (cached)."""
        if self._allowed is None:
            uids: set[int] = set()
            gids: set[int] = set()
            for key, (vtype, value) in self.icmap.items("uidgid."):
                parts = key.split(".")
                if parts[1] == "config":
                    parts = parts[1:]
                if len(parts) == 3 and parts[2].isdigit() and vtype == ValueType.UINT8 and value == 1:
                    (uids if parts[1] == "uid" else gids if parts[1] == "gid" else set()).add(int(parts[2]))
            self._allowed = (frozenset(uids), frozenset(gids))
        return self._allowed

    def access_policy(self) -> AccessPolicy:
        """Root, this process's uid, or a uid/gid listed in cmap."""
        return AccessPolicy(uids=lambda: self.allowed_ids()[0], gids=lambda: self.allowed_ids()[1])

    # -- IPC handler -----------------------------------------------------------------------------
    def on_connect(self, conn: ServerConnection) -> int | None:
        conn.context = self.dispatcher.open_session(
            conn.send_event, may_be_engine=conn.uid in (0, self.own_uid), label=f"pid {conn.pid}"
        )
        return None

    def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes]:
        if rtype == p.MSG_VIEW:
            return self._send_view(conn)
        session: CmapSession = conn.context
        code, body = self.dispatcher.handle(session, rtype, payload)
        if code == CS_ERR_INVALID_PARAM:
            conn.stats.invalid_request += 1
        return rtype, encode_response(code, body)

    def on_disconnect(self, conn: ServerConnection) -> None:
        if isinstance(conn.context, CmapSession):
            self.dispatcher.close_session(conn.context)

    # -- stats.ipcs.* ----------------------------------------------------------------------------
    def _ipc_stats(self) -> Iterable[tuple[str, ValueType, Value]]:
        server = self.server
        if server is None:
            return []
        u64, u32 = ValueType.UINT64, ValueType.UINT32
        active, closed = len(server.connections), server.stats.disconnected + server.stats.dropped
        rows: list[tuple[str, ValueType, Value]] = (
            self.table_link.global_ipc_rows(active, closed) if self.table_link is not None else [
                ("stats.ipcs.global.active", u64, active), ("stats.ipcs.global.closed", u64, closed)]
        )
        for conn in server:
            base = f"stats.ipcs.service{p.SERVICE_ID}.{conn.pid}.0x{conn.conn_id:x}."
            s = conn.stats
            rows += [
                (base + "procname", ValueType.STRING, conn.procname()),
                (base + "requests", u64, s.requests),
                (base + "responses", u64, s.responses),
                (base + "dispatched", u64, s.dispatched),
                (base + "overload", u64, s.overload),
                (base + "invalid_request", u64, s.invalid_request),
                (base + "queueing", ValueType.INT32, 1 if s.queued else 0),
                (base + "queued", u32, s.queued),
                (base + "sent", u32, 0),
                (base + "send_retries", u64, s.send_retries),
                (base + "recv_retries", u64, 0),
                (base + "flow_control", u32, s.flow_control),
                (base + "flow_control_count", u64, s.flow_control_count),
            ]
        return rows

    def _clear_ipc_stats(self) -> None:
        if self.server is None:
            return
        for conn in self.server:
            for name in ("requests", "responses", "dispatched", "overload", "invalid_request", "send_retries",
                         "flow_control_count"):
                setattr(conn.stats, name, 0)

    # -- reload ----------------------------------------------------------------------------------
    def reload(self) -> tuple[int, str]:
        """Re-reads the config file into icmap (§7.4); (cs_error, refusal messages)."""
        assert self.config_path is not None
        try:
            keys = load_config_keys(self.config_path, self.node_id)
        except Exception as exc:  # ConfigError, or the file vanished
            loader.record_reload_error(self.icmap, str(exc))
            return int(CsErrorCode.CS_ERR_INVALID_PARAM), str(exc)
        return int(CS_OK), "\n".join(loader.apply_reload(self.icmap, keys, self.node_id))


def run_cmap_service(
    config: str | os.PathLike[str] | ConfigKeys,
    run_dir: str | os.PathLike[str] | None,
    node_id: int | None = None,
    stats_table: Any = None,
    stop_fd: int | None = None,
    ready_fd: int | None = None,
    node: Any = None,
) -> int:
    """Serves cmap until SIGTERM/SIGINT or until ``stop_fd`` becomes readable; returns the exit status.

    ``config`` is a corosync.conf path (reloadable) or already-parsed keys; ``run_dir`` None means
    $PYCOROSYNC_RUN_DIR, then ``system.run_dir``, then the default. ``stats_table`` (an
    ``ipc.stats.StatsTable``) gives node-wide ``stats.ipcs.global.*`` and receives this process's
    ``ipcs.*`` row; ``node`` (``engine.runtime.node.NodeInfo``, inside a node) attaches both the
    table and the totem counters (``stats.srp.*``). ``ready_fd``, if given, gets one byte once the
    socket listens, then is closed.
    """
    config_path = None if isinstance(config, Mapping) else str(config)
    keys = config if isinstance(config, Mapping) else load_config_keys(config, node_id)
    service = CmapService(keys, node_id, config_path)
    if run_dir is None:
        configured = keys.get("system.run_dir")
        run_dir = resolve_run_dir(None, None if configured is None else str(configured[1]))
    keep: list[Any] = []
    if node is not None:
        service.table_link, keep = attach_node_stats(service.stats, node)
    if stats_table is not None:
        service.table_link = StatsTableLink(stats_table)
    ep = select.epoll()
    limits = ServerLimits(max_request_bytes=ServerLimits().request_ring_bytes)
    try:
        server = Server(run_dir, p.SERVICE_NAME, service, access=service.access_policy(), limits=limits, poller=ep)
    except BaseException:
        ep.close()
        raise
    service.server = server
    try:
        service.open_view()
    except OSError as exc:  # no memfd or /proc: clients simply use requests
        log.warning("cmap view unavailable, every get is a request: %s", exc)
    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # signals reach only the main thread; a service run in a thread (tests) stops through stop_fd
    in_main = threading.current_thread() is threading.main_thread()
    old_wakeup = signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False) if in_main else -1
    old_handlers = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    ep.register(sig_r, select.EPOLLIN)
    if stop_fd is not None:
        ep.register(stop_fd, select.EPOLLIN)
    log.info("cmap service listening on %s", server.path)
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"R")
        os.close(ready_fd)
    next_tick = next_stats_poll = next_beat = time.monotonic()
    try:
        while not stopping:
            try:
                ready = ep.poll(0.25)
            except InterruptedError:
                continue
            for fd, events in ready:
                if fd == stop_fd:
                    stopping = True
                elif fd == sig_r:
                    with contextlib.suppress(OSError):
                        os.read(sig_r, 256)
                else:
                    server.handle(fd, events)
            now = time.monotonic()
            if service.view is not None and now >= next_beat:
                service.view.beat()
                next_beat = now + HEARTBEAT_INTERVAL_NS / 1e9
            if now >= next_tick:
                server.tick()
                service.members.poll_status_file(run_dir)
                next_tick = now + 0.25
            if now >= next_stats_poll:
                service.stats.poll()
                if service.table_link is not None:
                    service.table_link.write_own_row(server)
                next_stats_poll = now + POLL_INTERVAL_S
    finally:
        service.close_view()
        server.close()
        ep.close()
        if in_main:
            signal.set_wakeup_fd(old_wakeup)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        os.close(sig_r)
        os.close(sig_w)
        service.table_link = None
        for obj in keep:
            with contextlib.suppress(Exception):
                obj.close()
        log.info("cmap service stopped")
    return 0


def _setup_as_node_child() -> None:
    """Logging as the supervisor configured it, and death with the supervisor (plain logging outside one)."""
    try:
        from pycorosync.engine.supervisor import child, logsetup
    except ImportError:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stderr)
        return
    try:
        logsetup.configure_from_env()
    except ValueError:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stderr)
    if child.child_name() is not None:
        child.die_with_supervisor()


def _node_info() -> Any:
    """The node this process belongs to (``$PYCOROSYNC_NODE``), or None when run on its own."""
    if not os.environ.get("PYCOROSYNC_NODE"):
        return None
    try:
        from pycorosync.engine.runtime.node import NodeInfo

        return NodeInfo.from_env()
    except (ImportError, ValueError) as exc:
        log.warning("running without node statistics: %s", exc)
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m pycorosync.services.cmap.server``: one cmap service for tests and hand runs."""
    ap = argparse.ArgumentParser(prog="pycorosync.services.cmap.server", description="cmap service process")
    ap.add_argument("-c", "--config", required=True, help="corosync.conf")
    ap.add_argument("--run-dir", default=None, help="directory of cmap.sock (default: as pycorosync.paths resolves it)")
    ap.add_argument("--nodeid", type=int, default=None, help="this node's id (for nodelist.local_node_pos)")
    ap.add_argument("--ready-fd", type=int, default=None, help="write one byte to this fd once listening")
    args = ap.parse_args(argv)
    _setup_as_node_child()
    try:
        return run_cmap_service(Path(args.config), args.run_dir, args.nodeid, ready_fd=args.ready_fd,
                                node=_node_info())
    except CsError as exc:
        log.error("cannot start the cmap service: %s", exc)
        return 1
    except Exception as exc:
        if type(exc).__name__ == "ConfigError":
            log.error("%s", exc)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
