"""The cfg service process (corosync service 1): node administration on ``ServiceProcess`` (PROTOCOL.md §6).

Node-local requests (local_get, get_node_addrs, node_status_get, ring_status_get, trackstart/stop,
reopen_log_files) are answered at once. The rest use the cluster:

- KILLNODE multicasts (SAFE) a kill for a current member; that node logs "Killed by node N : reason"
  and stops its node.
- TRYSHUTDOWN runs the tracking protocol (``shutdown.ShutdownTracker``); a granted shutdown multicasts
  SHUTDOWN, every node logs "Node N was shut down by sysadmin", and the sender stops its node.
- RELOAD_CONFIG multicasts a reload; every node has its cmap service re-read the config file, and the
  sender answers its client with its own node's result once it has reloaded.

Stopping the node = SIGTERM to the supervisor, which stops the processes in reverse order (the totem
process leaves the ring, so the others see a leave). Reopening log files = SIGHUP to the supervisor.
"""

from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from pycorosync.engine.runtime.service import ServiceProcess, TimerHandle
from pycorosync.engine.supervisor.logsetup import NOTICE
from pycorosync.engine.totem.api import ConfigType, Guarantee, RingId
from pycorosync.ipc.errors import CS_OK, CsError, CsErrorCode
from pycorosync.ipc.framing import encode_response
from pycorosync.ipc.server import ServerConnection
from pycorosync.services.cfg import protocol as p, shutdown as sd
from pycorosync.services.cfg.status import LinkTableReader, NodeLinks, brief_status, links_from_config, node_status

RETRY_S = 0.01  # a cluster message of ours that found the submit ring full is retried this often
#: once our own SHUTDOWN is sent, stop even if it is never delivered back (no ring to carry it)
SHUTDOWN_FALLBACK_S = 5.0
RELOAD_TIMEOUT_S = 10.0
PID_FILE_NAME = "pycorosync.pid"

_INVALID = int(CsErrorCode.CS_ERR_INVALID_PARAM)
_TRY_AGAIN = int(CsErrorCode.CS_ERR_TRY_AGAIN)


@dataclass
class _Session:
    """Per client connection."""

    conn_id: int


def supervisor_pid(run_dir: str) -> int | None:
    """The node's supervisor: from the environment the supervisor gave us, else the run dir's pid file,
    else our parent (None when that is init: we are not supervised)."""
    from pycorosync.engine.supervisor.child import SUPERVISOR_PID_ENV

    for text in (os.environ.get(SUPERVISOR_PID_ENV, ""), _read(Path(run_dir) / PID_FILE_NAME)):
        if text.strip().isdigit() and int(text) > 1:
            return int(text)
    parent = os.getppid()
    return parent if parent > 1 else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class CfgService(ServiceProcess):
    """The configuration service (see the module docstring)."""

    name = p.SERVICE_NAME
    service_id = p.SERVICE_ID

    def exec_init(self) -> None:
        from pycorosync.engine.config import ConfigError, load

        self.tracker = sd.ShutdownTracker()
        self._shutdown_timer: TimerHandle | None = None
        self._stopping_node = False
        self._outbox: list[p.ClusterMessage] = []  # cluster messages waiting for room in the submit ring
        self._outbox_timer: TimerHandle | None = None
        self._reload_ids = itertools.count(1)
        self._reloads: dict[int, int] = {}  # request id -> conn id of the client waiting for it
        self.bad_messages = 0
        try:
            self.links: NodeLinks = links_from_config(load(self.node.config), self.nodeid)
        except (ConfigError, OSError, ValueError) as exc:
            self.log.error("cannot read the nodelist (%s): node addresses and link status are unknown", exc)
            self.links = NodeLinks(self.nodeid, str(self.keys.get("totem.transport") or "knet"), {}, 0)
        self.link_reader = LinkTableReader(self.node.cluster, self.nodeid)

    @property
    def shutdown_timeout_ms(self) -> int:
        """``cfg.shutdown_timeout`` (ms) as cmap holds it now (corosync reads the live map, so that an
        admin can change it with cmapctl), else the default."""
        from pycorosync.services.cmap.client import CmapClient

        try:
            with CmapClient(self.node.run_dir, timeout=2.0) as cmap:
                value, _vtype = cmap.get("cfg.shutdown_timeout")
            return max(0, int(str(value)))
        except (CsError, ValueError):
            return p.DEFAULT_SHUTDOWN_TIMEOUT_MS

    # -- clients ---------------------------------------------------------------------------------------
    def lib_init(self, conn: ServerConnection) -> int | None:
        conn.context = _Session(conn.conn_id)
        return None

    def lib_exit(self, conn: ServerConnection) -> None:
        self._run(self.tracker.lib_exit(conn.conn_id))
        for rid, cid in list(self._reloads.items()):
            if cid == conn.conn_id:
                del self._reloads[rid]

    def lib_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        if not isinstance(conn.context, _Session):
            return rtype, encode_response(CsErrorCode.CS_ERR_BAD_HANDLE)
        try:
            result = self._request(conn, rtype, payload)
        except CsError as exc:
            result = exc.code, b""
        if result is None:
            return None  # answered later (TRYSHUTDOWN, RELOAD_CONFIG)
        code, body = result
        if code == _INVALID:
            conn.stats.invalid_request += 1
        return rtype, encode_response(code, body)

    def _request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        m = p.CfgMsg
        if rtype == m.LOCAL_GET:
            return CS_OK, p.encode_u32(self.nodeid)
        if rtype == m.GET_NODE_ADDRS:
            nodeid = p.decode_u32(payload, "GET_NODE_ADDRS") or self.nodeid
            addrs = self.links.addrs.get(nodeid)
            if not addrs:
                return int(CsErrorCode.CS_ERR_NOT_EXIST), b""
            return CS_OK, p.encode_str_list(list(addrs))
        if rtype == m.NODESTATUSGET:
            nodeid, version = p.decode_two_u32(payload, "NODESTATUSGET")
            st = node_status(self.links, nodeid, self.link_reader.heard(), self.members)
            if st is None:
                return int(CsErrorCode.CS_ERR_FAILED_OPERATION), b""
            if version != p.CFG_NODE_STATUS_V1:
                return int(CsErrorCode.CS_ERR_NOT_SUPPORTED), b""
            return CS_OK, p.encode_node_status(st)
        if rtype == m.RINGSTATUSGET:
            status = brief_status(self.links, self.link_reader.heard(), self.members)
            return CS_OK, p.encode_ring_status([(f"0 {self.links.local_addr}", status)])
        if rtype == m.RINGREENABLE:
            return int(CsErrorCode.CS_ERR_NOT_SUPPORTED), b""
        if rtype == m.TRACKSTART:
            p.decode_u32(payload, "TRACKSTART")
            self._run(self.tracker.track_start(conn.conn_id))
            return CS_OK, b""
        if rtype == m.TRACKSTOP:
            self._run(self.tracker.track_stop(conn.conn_id))
            return CS_OK, b""
        if rtype == m.TRYSHUTDOWN:
            flags = p.decode_u32(payload, "TRYSHUTDOWN")
            if flags not in p.SHUTDOWN_FLAGS:
                return _INVALID, b""
            self._run(self.tracker.try_shutdown(conn.conn_id, flags, self.shutdown_timeout_ms))
            return None
        if rtype == m.REPLYTOSHUTDOWN:
            code, actions = self.tracker.reply(conn.conn_id, bool(p.decode_u32(payload, "REPLYTOSHUTDOWN")))
            self._run(actions)
            return code, b""
        if rtype == m.KILLNODE:
            nodeid, reason = p.decode_killnode(payload)
            if nodeid not in self.members:
                return int(CsErrorCode.CS_ERR_NOT_EXIST), b""
            return self._mcast_now(p.KillNode(nodeid, reason)), b""
        if rtype == m.RELOAD_CONFIG:
            return self._reload_request(conn)
        if rtype == m.REOPEN_LOG_FILES:
            # the supervisor reopens its own log file and forwards SIGHUP to every ready child (this one too)
            self.log.debug("Reopening logging files")
            return self._signal_supervisor(signal.SIGHUP, "reopen the log files"), b""
        return _INVALID, b""

    def _reload_request(self, conn: ServerConnection) -> tuple[int, bytes] | None:
        rid = next(self._reload_ids)
        code = self._mcast_now(p.ReloadConfig(rid))
        if code != CS_OK:
            return code, b""
        self._reloads[rid] = conn.conn_id
        return None

    def _mcast_now(self, msg: p.ClusterMessage) -> int:
        """Multicasts a client-initiated message: CS_ERR_TRY_AGAIN before the node's first completed sync
        or while the submit ring is full."""
        if not self.synced or not self.mcast(p.encode_cluster(msg), Guarantee.SAFE):
            return _TRY_AGAIN
        return CS_OK

    # -- shutdown protocol actions ---------------------------------------------------------------------
    def _run(self, actions: list[sd.Action]) -> None:
        for action in actions:
            if isinstance(action, sd.Respond):
                self._respond(action.conn_id, p.CfgMsg.TRYSHUTDOWN, action.error)
            elif isinstance(action, sd.AskTrackers):
                self._ask(action)
            elif isinstance(action, sd.StartTimer):
                self._cancel_shutdown_timer()
                self._shutdown_timer = self.call_later(action.delay_ms / 1000.0, self._shutdown_timer_fired)
            elif isinstance(action, sd.CancelTimer):
                self._cancel_shutdown_timer()
            elif isinstance(action, sd.SendShutdown):
                self.log.log(NOTICE, "shutdown granted; telling the other nodes")
                self._send(p.Shutdown())
                self.call_later(SHUTDOWN_FALLBACK_S, lambda: self._stop_node("own shutdown message never came back"))

    def _ask(self, action: sd.AskTrackers) -> None:
        server = self.server
        if server is None:
            return
        event = p.encode_two_u32(action.status, action.flags)
        for cid in action.conn_ids:
            conn = server.connections.get(cid)
            if conn is not None:
                conn.send_event(p.CfgMsg.EV_TESTSHUTDOWN, event)

    def _respond(self, conn_id: int, rtype: int, error: int) -> None:
        conn = self.server.connections.get(conn_id) if self.server is not None else None
        if conn is not None:
            conn.send_response(rtype, encode_response(error))

    def _cancel_shutdown_timer(self) -> None:
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
            self._shutdown_timer = None

    def _shutdown_timer_fired(self) -> None:
        self._shutdown_timer = None
        self.log.info("not every tracker answered the shutdown request within cfg.shutdown_timeout")
        self._run(self.tracker.timer_expired())

    # -- cluster messages ------------------------------------------------------------------------------
    def _send(self, msg: p.ClusterMessage) -> None:
        """Multicasts a message of the service itself, retrying until the submit ring takes it."""
        self._outbox.append(msg)
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        self._outbox_timer = None
        while self._outbox and self.mcast(p.encode_cluster(self._outbox[0]), Guarantee.SAFE):
            self._outbox.pop(0)
        if self._outbox and self._outbox_timer is None:
            self._outbox_timer = self.call_later(RETRY_S, self._flush_outbox)

    def deliver(self, sender_nodeid: int, ring_id: RingId, body: bytes) -> None:
        try:
            msg = p.decode_cluster(body)
        except p.ProtocolError as exc:
            self.bad_messages += 1
            if self.bad_messages == 1:
                self.log.warning("dropped a cfg message from node %d: %s (further ones are only counted)",
                                 sender_nodeid, exc)
            return
        if isinstance(msg, p.KillNode):
            self.log.debug("request to kill node %d (us=%d)", msg.nodeid, self.nodeid)
            if msg.nodeid == self.nodeid:
                self.log.log(NOTICE, "Killed by node %d : %s", sender_nodeid, msg.reason)
                self._stop_node(f"killed by node {sender_nodeid}")
        elif isinstance(msg, p.Shutdown):
            self.log.log(NOTICE, "Node %d was shut down by sysadmin", sender_nodeid)
            if sender_nodeid == self.nodeid:
                self._stop_node("shut down by sysadmin")
        else:
            self._deliver_reload(sender_nodeid, msg)

    def _deliver_reload(self, sender_nodeid: int, msg: p.ReloadConfig) -> None:
        self.log.log(NOTICE, "Config reload requested by node %d", sender_nodeid)
        code = self._reload_local()
        if sender_nodeid == self.nodeid:
            conn_id = self._reloads.pop(msg.request_id, None)
            if conn_id is not None:
                self._respond(conn_id, p.CfgMsg.RELOAD_CONFIG, code)

    def _reload_local(self) -> int:
        """Has this node's cmap service re-read the config file; the cs_error of that."""
        from pycorosync.services.cmap.client import CmapClient

        try:
            with CmapClient(self.node.run_dir, engine=True, timeout=RELOAD_TIMEOUT_S) as cmap:
                refused = cmap.reload()
        except CsError as exc:
            self.log.error("config reload failed: %s", exc)
            return exc.code
        for line in filter(None, refused.splitlines()):
            self.log.log(NOTICE, "%s", line)
        return CS_OK

    def confchg(self, type: ConfigType, ring_id: RingId, members: tuple[int, ...], left: tuple[int, ...],
                joined: tuple[int, ...]) -> None:
        """cfg keeps no cluster state: ``self.members`` (the base class) is all it needs."""

    # -- the node --------------------------------------------------------------------------------------
    def _signal_supervisor(self, sig: int, what: str) -> int:
        pid = supervisor_pid(self.node.run_dir)
        if pid is None:
            self.log.error("cannot %s: no supervisor found", what)
            return int(CsErrorCode.CS_ERR_LIBRARY)
        try:
            os.kill(pid, sig)
        except OSError as exc:
            self.log.error("cannot %s: signal to supervisor pid %d failed: %s", what, pid, exc)
            return int(CsErrorCode.CS_ERR_LIBRARY)
        return CS_OK

    def _stop_node(self, why: str) -> None:
        if self._stopping_node:
            return
        self._stopping_node = True
        self.log.log(NOTICE, "stopping this node: %s", why)
        if self._signal_supervisor(signal.SIGTERM, "stop the node") != CS_OK:
            self.stop()  # at least this service goes; the supervisor will notice

    def exec_exit(self) -> None:
        for timer in (self._shutdown_timer, self._outbox_timer):
            if timer is not None:
                timer.cancel()
