"""The quorum service process: corosync's quorum (service 3) and votequorum (service 5) in one process.

The votequorum state is the pure ``Votequorum`` machine (votequorum.py), fed here by the node runtime:
``sync_init`` of every new ring multicasts this node's NodeInfo (in ``sync_process``), every member's NodeInfo
comes back through ``deliver`` in Totem order, ``sync_activate`` recalculates quorum. The
last_man_standing window runs on the base's ``call_later`` timers. Clients of both APIs connect to one
socket, ``<run_dir>/quorum.sock`` (protocol.py). Without ``quorum.provider: corosync_votequorum`` the
quorum API is QUORUM_FREE (always quorate) and the votequorum API answers CS_ERR_LIBRARY, as a node
without the votequorum service would.

The totem runtime takes part in sync for service id 3 only: votequorum's messages travel as quorum's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycorosync.engine.runtime.service import ServiceProcess, TimerHandle
from pycorosync.engine.totem.api import RingId
from pycorosync.ipc.errors import CS_OK, CsError, CsErrorCode
from pycorosync.ipc.framing import encode_response
from pycorosync.ipc.server import ServerConnection

from . import cluster_msg, protocol as p
from .cmap_keys import RuntimeKeys
from .settings import QuorumSettings
from .votequorum import (
    Action,
    ExpectedVotesNotification,
    Multicast,
    NodeInfo,
    NodelistNotification,
    QuorumNotification,
    Reconfigure,
    StoreExpectedVotes,
    VoteError,
    Votequorum,
)

EV_TRACKING_FILE = "ev_tracking"
_U32 = struct.Struct("<I")
OUTBOX_RETRY_S = 0.005

_E = CsErrorCode
NOTICE = 25  # corosync's notice level (between INFO and WARNING), as the node's log setup names it
vlog = logging.getLogger("VOTEQ")


@dataclass
class _Session:
    """Per client: the trackers it started."""

    q_track: int = 0  # CS_TRACK_* of quorum_trackstart, 0 = not tracking
    vq_track: int = 0
    vq_context: int = 0


def read_ev_barrier(path: Path) -> int:
    """The expected_votes_tracking barrier stored in ``path``: a u32, as corosync stores it (0 when absent or
    unreadable)."""
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    return int(_U32.unpack(data)[0]) if len(data) == _U32.size else 0


def write_ev_barrier(path: Path, expected_votes: int) -> None:
    """Stores the barrier atomically (a crash leaves the old value or the new one, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_U32.pack(expected_votes))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class QuorumService(ServiceProcess):
    """quorum + votequorum (see the module docstring)."""

    name = p.SERVICE_NAME
    service_id = p.SERVICE_ID
    request_types = p.REQUEST_TYPES

    # -- start and stop ------------------------------------------------------------------------------
    def exec_init(self) -> None:
        from pycorosync.engine.config import load

        self.provider = str(self.keys.get("quorum.provider") or "")
        self.vq: Votequorum | None = None
        self.state_dir = Path(str(self.keys.get("system.state_dir") or self.node.run_dir))
        self.ev_path = self.state_dir / EV_TRACKING_FILE
        if self.provider == p.PROVIDER_VOTEQUORUM:
            settings = QuorumSettings.from_config(load(self.node.config), self.nodeid)
            if settings.expected_votes <= 0:
                # corosync refuses to start votequorum so: a lone node would otherwise be quorate
                vlog.error("configuration error: nodelist or quorum.expected_votes must be configured!")
                raise SystemExit(1)
            barrier = read_ev_barrier(self.ev_path) if settings.expected_votes_tracking else 0
            self.vq = Votequorum(self.nodeid, settings, ev_barrier=barrier)
        elif self.provider:
            self.log.error("quorum.provider '%s' is not supported (corosync_votequorum); running without quorum",
                           self.provider)
        self.quorate = self.vq is None  # QUORUM_FREE: always quorate
        self.quorum_ring: tuple[int, int] = (0, 0)
        self.quorum_members: tuple[int, ...] = ()
        self.nodelist_members: tuple[int, ...] = ()
        self.first_sync_done = False
        self.bad_messages = 0
        self.invalid_requests = 0
        self._bad_logged = False
        self._sync_out: list[bytes] = []
        self._outbox: list[bytes] = []
        self._outbox_timer: TimerHandle | None = None
        self._lms_timer: TimerHandle | None = None
        self.cmap_keys = RuntimeKeys(self.node.run_dir, self.nodeid, self.vq)
        # not before the loop runs: cmap may still be starting, and the node waits for this service's readiness
        self.call_later(0.0, self.housekeeping)

    def exec_exit(self) -> None:
        if self.vq is not None and self.vq.settings.allow_downscale and self.has_rings:
            # a clean shutdown: the others lower expected votes for us (allow_downscale)
            self.mcast(cluster_msg.encode(self.vq.prepare_leave().message))
        self.cmap_keys.close()

    # -- clients -------------------------------------------------------------------------------------
    def lib_init(self, conn: ServerConnection) -> int | None:
        if not self.first_sync_done:
            return int(_E.CS_ERR_TRY_AGAIN)  # as corosync: no client before the first sync
        conn.context = _Session()
        return None

    def lib_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        session = conn.context
        if not isinstance(session, _Session):
            return rtype, encode_response(_E.CS_ERR_BAD_HANDLE)
        try:
            code, body = self._request(conn, session, rtype, payload)
        except CsError as exc:
            code, body = exc.code, b""
        if code == _E.CS_ERR_INVALID_PARAM:
            self.invalid_requests += 1
            conn.stats.invalid_request += 1
        return rtype, encode_response(code, body)

    def _request(self, conn: ServerConnection, session: _Session, rtype: int, payload: bytes) -> tuple[int, bytes]:
        if rtype == p.Msg.Q_INITIALIZE:
            return CS_OK, p.encode_u32(p.QUORUM_FREE if self.vq is None else p.QUORUM_SET)
        if rtype == p.Msg.Q_GETQUORATE:
            return CS_OK, p.encode_u32(int(self.quorate))
        if rtype == p.Msg.Q_TRACKSTART:
            flags = p.decode_u32(payload, "Q_TRACKSTART")
            if session.q_track:
                return int(_E.CS_ERR_EXIST), b""
            if flags & ~p.TRACK_FLAGS or not flags:
                return int(_E.CS_ERR_INVALID_PARAM), b""
            if flags & (p.CS_TRACK_CURRENT | p.CS_TRACK_CHANGES):
                self._send_quorum(conn)
            if flags & (p.CS_TRACK_CHANGES | p.CS_TRACK_CHANGES_ONLY):
                session.q_track = flags
            return CS_OK, b""
        if rtype == p.Msg.Q_TRACKSTOP:
            if not session.q_track:
                return int(_E.CS_ERR_NOT_EXIST), b""
            session.q_track = 0
            return CS_OK, b""
        return self._vq_request(conn, session, rtype, payload)

    def _vq_request(self, conn: ServerConnection, session: _Session, rtype: int,
                    payload: bytes) -> tuple[int, bytes]:
        vq = self.vq
        if vq is None:
            return int(_E.CS_ERR_LIBRARY), b""  # votequorum is not loaded on this node
        if rtype in p.QDEVICE_REQUESTS:
            return int(_E.CS_ERR_NOT_SUPPORTED), b""
        if rtype == p.Msg.VQ_INITIALIZE:
            return CS_OK, b""
        if rtype == p.Msg.VQ_GETINFO:
            info = vq.getinfo(p.decode_u32(payload, "VQ_GETINFO"))
            if info is None:
                return int(_E.CS_ERR_NOT_EXIST), b""
            return CS_OK, p.encode_info(info)
        if rtype == p.Msg.VQ_SETEXPECTED:
            return self._admin(vq.setexpected(p.decode_u32(payload, "VQ_SETEXPECTED"))), b""
        if rtype == p.Msg.VQ_SETVOTES:
            nodeid, votes = p.decode_setvotes(payload)
            return self._admin(vq.setvotes(nodeid, votes)), b""
        if rtype == p.Msg.VQ_TRACKSTART:
            context, flags = p.decode_vq_trackstart(payload)
            if flags & ~p.TRACK_FLAGS:
                return int(_E.CS_ERR_INVALID_PARAM), b""
            session.vq_context = context
            if flags & (p.CS_TRACK_CURRENT | p.CS_TRACK_CHANGES):
                conn.send_event(p.Msg.EV_VQ_QUORUM, p.encode_vq_quorum(context, vq.quorate, vq.node_states()))
                conn.send_event(p.Msg.EV_VQ_NODELIST, p.encode_vq_nodelist(context, vq.ring_id, vq.members))
            session.vq_track = flags & (p.CS_TRACK_CHANGES | p.CS_TRACK_CHANGES_ONLY)
            return CS_OK, b""
        if rtype == p.Msg.VQ_TRACKSTOP:
            if not session.vq_track:
                return int(_E.CS_ERR_NOT_EXIST), b""
            session.vq_track = 0
            return CS_OK, b""
        return int(_E.CS_ERR_INVALID_PARAM), b""

    def _admin(self, result: VoteError | Multicast) -> int:
        """setexpected / setvotes: the refusal, or the cluster message sent (applied when delivered)."""
        if isinstance(result, VoteError):
            return int(_E[str(result.value)])
        if not self.mcast(cluster_msg.encode(result.message)):
            return int(_E.CS_ERR_TRY_AGAIN)
        return CS_OK

    # -- notifications -------------------------------------------------------------------------------
    def _sessions(self) -> list[tuple[ServerConnection, _Session]]:
        if self.server is None:
            return []
        return [(c, c.context) for c in list(self.server.connections.values()) if isinstance(c.context, _Session)]

    def _send_quorum(self, conn: ServerConnection) -> None:
        conn.send_event(p.Msg.EV_Q_NOTIFY, p.encode_q_notify(self.quorate, self.quorum_ring, self.quorum_members))

    def _quorum_changed(self, quorate: bool, ring_id: tuple[int, int], members: tuple[int, ...]) -> None:
        was = self.quorate
        self.quorate, self.quorum_ring, self.quorum_members = quorate, ring_id, members
        if was != quorate or not self.first_sync_done:
            if quorate:
                self.log.log(NOTICE, "This node is within the primary component and will provide service.")
            else:
                self.log.log(NOTICE, "This node is within the non-primary component and will NOT provide service.")
        self.log.log(NOTICE, "Members[%d]: %s", len(members), " ".join(str(m) for m in members))
        payload = p.encode_q_notify(quorate, ring_id, members)
        for conn, session in self._sessions():
            if session.q_track:
                conn.send_event(p.Msg.EV_Q_NOTIFY, payload)

    def _nodelist_changed(self, ring_id: tuple[int, int], members: tuple[int, ...]) -> None:
        joined = tuple(m for m in members if m not in self.nodelist_members)
        left = tuple(m for m in self.nodelist_members if m not in members)
        self.nodelist_members = members
        q_payload = p.encode_q_nodelist(ring_id, members, joined, left)
        for conn, session in self._sessions():
            if session.q_track:
                conn.send_event(p.Msg.EV_Q_NODELIST, q_payload)
            if session.vq_track:
                conn.send_event(p.Msg.EV_VQ_NODELIST, p.encode_vq_nodelist(session.vq_context, ring_id, members))

    def _handle(self, actions: list[Action]) -> None:
        """Carries out what the votequorum machine asked for."""
        vq = self.vq
        assert vq is not None
        for action in actions:
            if isinstance(action, Multicast):
                self._outbox.append(cluster_msg.encode(action.message))
            elif isinstance(action, QuorumNotification):
                for conn, session in self._sessions():
                    if session.vq_track:
                        conn.send_event(p.Msg.EV_VQ_QUORUM,
                                        p.encode_vq_quorum(session.vq_context, action.quorate, action.nodes))
                self._quorum_changed(action.quorate, action.ring_id, action.members)
            elif isinstance(action, NodelistNotification):
                self._nodelist_changed(action.ring_id, action.members)
            elif isinstance(action, ExpectedVotesNotification):
                for conn, session in self._sessions():
                    if session.vq_track:
                        conn.send_event(p.Msg.EV_VQ_EXPECTEDVOTES,
                                        p.encode_vq_expected(session.vq_context, action.expected_votes))
            elif isinstance(action, StoreExpectedVotes):
                try:
                    write_ev_barrier(self.ev_path, action.expected_votes)
                except OSError as exc:
                    vlog.error("cannot store expected votes in %s: %s", self.ev_path, exc)
        recalculated = any(isinstance(action, QuorumNotification) for action in actions)
        if recalculated and vq.settings.wait_for_all and vq.wait_for_all_status and not vq.quorate:
            vlog.log(NOTICE, "Waiting for all cluster members. Current votes: %d expected_votes: %d",
                      vq.total_votes(), vq.expected_votes)
        self._flush_outbox()
        self._arm_lms_timer()
        self.cmap_keys.update()

    def _flush_outbox(self) -> None:
        while self._outbox and self.mcast(self._outbox[0]):
            self._outbox.pop(0)
        if self._outbox and self._outbox_timer is None:
            def retry() -> None:
                self._outbox_timer = None
                self._flush_outbox()

            self._outbox_timer = self.call_later(OUTBOX_RETRY_S, retry)

    def _arm_lms_timer(self) -> None:
        assert self.vq is not None
        if self._lms_timer is not None:
            self._lms_timer.cancel()
            self._lms_timer = None
        deadline = self.vq.next_deadline_ms()
        if deadline is not None:
            self._lms_timer = self.call_later(max(0, deadline - _now_ms()) / 1000.0, self._on_lms_timer)

    def _on_lms_timer(self) -> None:
        self._lms_timer = None
        if self.vq is not None:
            self._handle(self.vq.tick(_now_ms()))

    def housekeeping(self) -> None:
        """From the loop's 1 s tick (and once at start): runtime keys, the cancel_wait_for_all key."""
        self.cmap_keys.update()
        self.cmap_keys.resync()
        if self.vq is not None and self.vq.settings.wait_for_all and self.cmap_keys.cancel_wait_for_all():
            # as corosync: a cluster message, so that every member stops waiting
            self._handle([self.vq.request_cancel_wait_for_all()])

    # -- cluster -------------------------------------------------------------------------------------
    def deliver(self, sender_nodeid: int, ring_id: RingId, body: bytes) -> None:
        message = cluster_msg.decode(body)
        if message is None or self.vq is None or (isinstance(message, NodeInfo) and message.nodeid != sender_nodeid):
            self.bad_messages += 1
            if not self._bad_logged:
                self._bad_logged = True
                self.log.warning("dropped a malformed votequorum message from node %d (further ones are not logged)",
                                 sender_nodeid)
            return
        if isinstance(message, Reconfigure) and message.cancel_wait_for_all:
            vlog.info("wait_for_all_status reset by user on node %d.", message.nodeid)
        self._handle(self.vq.deliver(sender_nodeid, message))

    def sync_init(self, ring_id: RingId, members: tuple[int, ...], transitional: tuple[int, ...]) -> None:
        self.log.info("Sync members[%d]: %s", len(members), " ".join(str(m) for m in members))
        self._sync_out = []
        if self.vq is not None:
            for action in self.vq.sync_init((ring_id.rep, ring_id.seq), members, _now_ms()):
                if isinstance(action, Multicast):
                    self._sync_out.append(cluster_msg.encode(action.message))

    def sync_process(self) -> bool:
        while self._sync_out:
            if not self.mcast(self._sync_out[0]):
                return False  # submit ring full: called again
            self._sync_out.pop(0)
        return True

    def sync_activate(self) -> None:
        if self.vq is not None:
            self._handle(self.vq.sync_activate(_now_ms()))
        elif self.ring_id is not None:
            ring = (self.ring_id.rep, self.ring_id.seq)
            self._nodelist_changed(ring, self.members)
            self._quorum_changed(True, ring, self.members)

    def sync_abort(self) -> None:
        self._sync_out = []

    def sync_complete(self) -> None:
        if not self.first_sync_done and self.ring_id is not None and self.quorum_ring == (0, 0):
            self._catch_up(self.ring_id)
        self.first_sync_done = True

    def _catch_up(self, ring_id: RingId) -> None:
        """A restarted service process learns the ring from totem without a sync of its own: take the members'
        votes from the nodelist (their NodeInfo comes again at the next membership change)."""
        ring = (ring_id.rep, ring_id.seq)
        if self.vq is None:
            self._nodelist_changed(ring, self.members)
            self._quorum_changed(True, ring, self.members)
            return
        vq = self.vq
        self.log.info("joining ring %x.%x without a sync: members' votes taken from the configuration", *ring)
        actions = vq.sync_init(ring, self.members, _now_ms())
        expected = vq.settings.expected_votes
        for nodeid in self.members:
            if nodeid != self.nodeid:
                votes = int(str(self._node_votes().get(nodeid, 1)))
                vq.deliver(nodeid, NodeInfo(nodeid, votes, expected, 0))
        self._handle([a for a in actions if isinstance(a, Multicast)] + vq.sync_activate(_now_ms()))

    def _node_votes(self) -> dict[int, Any]:
        votes: dict[int, Any] = {}
        for key, value in self.keys.items():
            if key.startswith("nodelist.node.") and key.endswith(".nodeid"):
                prefix = key[: -len("nodeid")]
                with contextlib.suppress(ValueError):
                    votes[int(str(value))] = self.keys.get(prefix + "quorum_votes", 1)
        return votes
