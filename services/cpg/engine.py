"""The pure CPG state machine of one node: group membership, local handles, sync reconciliation.

No I/O: the service process (server.py) feeds it client requests (``lib_*``), cluster messages in
total order (``deliver``) and the sync calls, and gives it a ``CpgTransport`` to multicast cluster
messages and to queue events for local handles. corosync's names are kept: a *cpd* is a client
handle's state, the *process_info* list is the node's view of every group member in the cluster.

Rules (COROSYNC.md §5.2-5.3):
- join: PROCJOIN multicast; on delivery every node adds (node, pid) and sends its local members of the
  group a confchg with ``joined = [(node, pid, JOIN)]``; the joiner's own handle becomes JOIN_COMPLETED on
  it, so its first confchg lists itself. leave: PROCLEAVE (LEAVE); a handle that goes away without leaving:
  PROCLEAVE (PROCDOWN).
- deliveries reach local handles in JOIN_COMPLETED or LEAVE_STARTED, and only when the sending node has a
  known member in the group.
- sync: ``sync_init`` computes the nodes that left since the last activated configuration (accumulated
  across aborted rounds); ``sync_process`` multicasts DOWNLIST and JOINLIST (this node's processes, as they
  will be once its own in-flight joins and leaves are delivered); ``sync_activate`` (1) removes members of
  departed nodes (NODEDOWN), (2) adds JOINLIST entries not known yet (NODEUP), (3) removes remote members
  their own node did not list (PROCDOWN), one confchg per group and step, then (4) sends the totem
  confchg to every handle.
- member order: every entry carries the stamp of its PROCJOIN's delivery (ring, index in that ring), the
  same at every node that delivered it, and JOINLISTs carry it along; groups are kept in stamp order, so
  every node of a configuration lists the same members in the same order (join order), even after merges.
- JOINLISTs describe their sender at the moment they are delivered: a PROCJOIN/PROCLEAVE of that node
  delivered later in the same sync round updates its list, so a process that dies during sync is not
  brought back at activation.
"""

from __future__ import annotations

import collections
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pycorosync.ipc.errors import CsErrorCode
from pycorosync.services.cpg import protocol as p
from pycorosync.services.cpg.protocol import Address, CpgReason

log = logging.getLogger("CPG")

Entry = tuple[int, int]  # (nodeid, pid)
RingKey = tuple[int, int]  # (rep, seq)
Stamp = tuple[int, int, int]  # see protocol.Stamp
ListEntry = tuple[int, bytes]  # (pid, group) in a JOINLIST

CS_OK = int(CsErrorCode.CS_OK)
TRY_AGAIN = int(CsErrorCode.CS_ERR_TRY_AGAIN)


class CpdState(enum.IntEnum):
    """A client handle's state (corosync's ``cpd_state``)."""

    UNJOINED = 0
    JOIN_STARTED = 1
    JOIN_COMPLETED = 2
    LEAVE_STARTED = 3


# -- events to local handles -----------------------------------------------------------------------
@dataclass(frozen=True)
class DeliverEvent:
    """A group message for one local handle."""

    group: bytes
    nodeid: int
    pid: int
    guarantee: int
    data: bytes | memoryview


@dataclass(frozen=True)
class ConfchgEvent:
    """A group membership change: ``members`` after the change, then who left and who joined."""

    group: bytes
    members: tuple[Address, ...]
    left: tuple[Address, ...]
    joined: tuple[Address, ...]


@dataclass(frozen=True)
class TotemConfchgEvent:
    """The ring after a completed sync."""

    ring_id: RingKey
    members: tuple[int, ...]


Event = DeliverEvent | ConfchgEvent | TotemConfchgEvent


class CpgTransport(Protocol):
    """What the engine needs from its process: multicast (False = cannot take it now) and local events."""

    def mcast(self, msg: p.ClusterMessage) -> bool: ...

    def send_event(self, conn_id: int, event: Event) -> None: ...


@dataclass
class Cpd:
    """One client handle (corosync's ``cpg_pd``)."""

    conn_id: int
    pid: int
    state: CpdState = CpdState.UNJOINED
    group: bytes = b""
    flags: int = 0
    initial_totem_conf_sent: bool = False


@dataclass
class EngineStats:
    """Counters of things dropped rather than acted on."""

    malformed: int = 0
    unknown_node: int = 0
    stale_sync: int = 0
    unknown_leave: int = 0


@dataclass
class _SyncRound:
    ring_id: RingKey
    members: tuple[int, ...]
    trans: tuple[int, ...]
    down_nodes: tuple[int, ...]
    sent: bool = False
    # sender -> its processes (pid, group) with their join stamps, in JOINLIST delivery order
    joinlists: dict[int, dict[ListEntry, Stamp]] = field(default_factory=dict)


class CpgEngine:
    """The CPG service state of node ``nodeid`` (see the module docstring)."""

    def __init__(self, nodeid: int, transport: CpgTransport) -> None:
        self.nodeid = nodeid
        self.transport = transport
        self.stats = EngineStats()
        # process_info: group -> (nodeid, pid) -> join stamp, kept in stamp order
        self.groups: dict[bytes, dict[Entry, Stamp]] = {}
        self._stamp_ring: RingKey = (0, 0)
        self._stamp_index = 0
        self.cpds: dict[int, Cpd] = {}
        self._local: dict[bytes, dict[int, Cpd]] = {}  # group -> handles bound to it
        self.ring_id: RingKey = (0, 0)  # last activated configuration
        self.members: tuple[int, ...] = ()
        self.synced = False  # a first sync completed: client traffic may flow
        self.sync_running = False
        self._sync: _SyncRound | None = None
        self._down_entries: set[tuple[int, int, bytes]] = set()  # to remove as NODEDOWN at the next activation
        self._outbox: collections.deque[p.ClusterMessage] = collections.deque()
        self._inflight: list[p.ProcJoin | p.ProcLeave] = []  # own PROCJOIN/PROCLEAVE not delivered back yet
        self._submit_refused = False

    # ---------------------------------------------------------------------------------- queries
    @property
    def blocked(self) -> bool:
        """True while cluster-bound client requests get CS_ERR_TRY_AGAIN (no sync done yet, or sync running)."""
        return not self.synced or self.sync_running or bool(self._outbox)

    @property
    def flow_control(self) -> int:
        """CPG_FLOW_CONTROL_ENABLED while sends would get CS_ERR_TRY_AGAIN."""
        return p.CPG_FLOW_CONTROL_ENABLED if self.blocked or self._submit_refused else p.CPG_FLOW_CONTROL_DISABLED

    def membership(self, group: bytes) -> list[Address]:
        """cpg_membership_get: the members of ``group`` as this node knows them (reason 0)."""
        return [Address(n, pid) for n, pid in self.groups.get(group, ())]

    def iteration(self, itype: int, group: bytes = b"") -> list[tuple[bytes, int, int]]:
        """A snapshot for cpg_iteration_*: (group, nodeid, pid); NAME_ONLY gives nodeid = pid = 0."""
        if itype == p.CpgIterationType.CPG_ITERATION_NAME_ONLY:
            return [(g, 0, 0) for g in self.groups]
        if itype == p.CpgIterationType.CPG_ITERATION_ONE_GROUP:
            return [(group, n, pid) for n, pid in self.groups.get(group, ())]
        return [(g, n, pid) for g, entries in self.groups.items() for n, pid in entries]

    def view(self) -> dict[bytes, tuple[Entry, ...]]:
        """Every group with its ordered members (tests compare nodes' views with it)."""
        return {g: tuple(entries) for g, entries in self.groups.items()}

    # ------------------------------------------------------------------------------ lib side
    def lib_init(self, conn_id: int, pid: int) -> None:
        """A client connected."""
        self.cpds[conn_id] = Cpd(conn_id, pid)

    def lib_exit(self, conn_id: int) -> None:
        """A client closed or died: if it was in a group (and not already leaving), PROCLEAVE(PROCDOWN)."""
        cpd = self.cpds.pop(conn_id, None)
        if cpd is None:
            return
        self._unbind(cpd)
        if cpd.group and cpd.state != CpdState.LEAVE_STARTED:
            self._queue(p.ProcLeave(cpd.group, cpd.pid, CpgReason.CPG_REASON_PROCDOWN))

    def lib_join(self, conn_id: int, group: bytes, flags: int = 0) -> int:
        """cpg_join: CS_OK once PROCJOIN is on its way; EXIST/BUSY/TRY_AGAIN/NAME_TOO_LONG as corosync."""
        cpd = self.cpds[conn_id]
        for other in self.cpds.values():
            if other.pid == cpd.pid and other.group == group and other.state != CpdState.UNJOINED:
                return int(CsErrorCode.CS_ERR_EXIST)
        if (self.nodeid, cpd.pid) in self.groups.get(group, ()):
            return TRY_AGAIN  # a leave of the same pid and group is not delivered yet
        if len(group) > p.CPG_MAX_NAME_LENGTH:
            return int(CsErrorCode.CS_ERR_NAME_TOO_LONG)
        if cpd.state == CpdState.LEAVE_STARTED:
            return int(CsErrorCode.CS_ERR_BUSY)
        if cpd.state != CpdState.UNJOINED:
            return int(CsErrorCode.CS_ERR_EXIST)
        if self.blocked or not self._send(p.ProcJoin(group, cpd.pid)):
            return TRY_AGAIN
        cpd.state = CpdState.JOIN_STARTED
        cpd.group = group
        cpd.flags = flags
        self._local.setdefault(group, {})[conn_id] = cpd
        return CS_OK

    def lib_leave(self, conn_id: int, group: bytes) -> int:
        """cpg_leave: NOT_EXIST when not joined (or another group), BUSY while the join is pending."""
        cpd = self.cpds[conn_id]
        if cpd.state == CpdState.JOIN_STARTED:
            return int(CsErrorCode.CS_ERR_BUSY)
        if cpd.state != CpdState.JOIN_COMPLETED or cpd.group != group:
            return int(CsErrorCode.CS_ERR_NOT_EXIST)
        if self.blocked or not self._send(p.ProcLeave(group, cpd.pid, CpgReason.CPG_REASON_LEAVE)):
            return TRY_AGAIN
        cpd.state = CpdState.LEAVE_STARTED
        return CS_OK

    def lib_mcast(self, conn_id: int, guarantee: int, data: bytes | memoryview) -> int:
        """cpg_mcast_joined: allowed once the join was requested; TRY_AGAIN when it cannot be sent now."""
        cpd = self.cpds[conn_id]
        if cpd.state not in (CpdState.JOIN_STARTED, CpdState.JOIN_COMPLETED):
            return int(CsErrorCode.CS_ERR_NOT_EXIST)
        if len(data) > p.MAX_ATOMIC_MSGSIZE:
            return int(CsErrorCode.CS_ERR_TOO_BIG)
        if self.blocked or not self._send(p.Mcast(cpd.group, cpd.pid, guarantee, data)):
            return TRY_AGAIN
        return CS_OK

    # ------------------------------------------------------------------------------ sending
    def _send(self, msg: p.ClusterMessage) -> bool:
        if not self.transport.mcast(msg):
            self._submit_refused = True
            return False
        self._submit_refused = False
        if isinstance(msg, (p.ProcJoin, p.ProcLeave)):
            self._inflight.append(msg)
        return True

    def _queue(self, msg: p.ClusterMessage) -> None:
        """A message of the service itself: never refused, sent in order as soon as Totem takes it."""
        self._outbox.append(msg)
        self.flush()

    def flush(self) -> bool:
        """Sends what the outbox holds while Totem takes it; True when it is empty."""
        while self._outbox:
            if not self._send(self._outbox[0]):
                return False
            self._outbox.popleft()
        return True

    # ------------------------------------------------------------------------------ exec side
    def deliver(self, sender: int, body: bytes | memoryview, ring_id: RingKey) -> None:
        """A cpg cluster message delivered in total order in ring ``ring_id`` (any bytes: a malformed one
        is counted and dropped)."""
        try:
            msg = p.decode_cluster(body)
        except p.MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("dropping a malformed cpg message from node %d: %s", sender, exc)
            return
        self.deliver_message(sender, msg, ring_id)

    def deliver_message(self, sender: int, msg: p.ClusterMessage, ring_id: RingKey) -> None:
        """``deliver`` for an already decoded message."""
        if isinstance(msg, p.Mcast):
            self._on_mcast(sender, msg)
        elif isinstance(msg, p.ProcJoin):
            if ring_id != self._stamp_ring:
                self._stamp_ring, self._stamp_index = ring_id, 0
            self._stamp_index += 1
            stamp = (ring_id[1], ring_id[0], self._stamp_index)
            self._own_delivered(sender, msg)
            self._track(sender, msg.pid, msg.group, stamp)
            self._proc_join(msg.group, sender, msg.pid, msg.reason, stamp)
        elif isinstance(msg, p.ProcLeave):
            self._own_delivered(sender, msg)
            self._track(sender, msg.pid, msg.group, None)
            self._down_entries.discard((sender, msg.pid, msg.group))
            self._proc_leave(msg.group, sender, msg.pid, msg.reason)
        elif isinstance(msg, p.JoinList):
            self._on_joinlist(sender, msg)
        else:
            log.debug("downlist from node %d for ring %x.%x: %s", sender, msg.rep, msg.seq, list(msg.nodeids))

    def _own_delivered(self, sender: int, msg: p.ProcJoin | p.ProcLeave) -> None:
        if sender != self.nodeid:
            return
        for i, pending in enumerate(self._inflight):
            if pending == msg:
                del self._inflight[i]
                return

    def _track(self, sender: int, pid: int, group: bytes, stamp: Stamp | None) -> None:
        """Keeps the JOINLIST of ``sender`` in this sync round current with its later joins (a stamp) and
        leaves (None)."""
        if self._sync is None or sender not in self._sync.joinlists:
            return
        entries = self._sync.joinlists[sender]
        if stamp is not None:
            entries.setdefault((pid, group), stamp)
        else:
            entries.pop((pid, group), None)

    def _on_mcast(self, sender: int, msg: p.Mcast) -> None:
        entries = self.groups.get(msg.group)
        if not entries or not any(n == sender for n, _ in entries):
            self.stats.unknown_node += 1
            log.debug("Unknown node -> we will not deliver message (node %d, group %r)", sender, msg.group)
            return
        handles = self._local.get(msg.group)
        if not handles:
            return
        event = DeliverEvent(msg.group, sender, msg.pid, msg.guarantee, msg.data)
        for cpd in handles.values():
            if cpd.state in (CpdState.JOIN_COMPLETED, CpdState.LEAVE_STARTED):
                self.transport.send_event(cpd.conn_id, event)

    def _proc_join(self, group: bytes, nodeid: int, pid: int, reason: int, stamp: Stamp) -> None:
        entries = self.groups.get(group)
        if entries is not None and (nodeid, pid) in entries:
            return
        self._insert(group, nodeid, pid, stamp)
        self._notify(group, joined=(Address(nodeid, pid, reason),))

    def _insert(self, group: bytes, nodeid: int, pid: int, stamp: Stamp) -> None:
        entries = self.groups.setdefault(group, {})
        last = next(reversed(entries.values()), None)
        entries[(nodeid, pid)] = stamp
        if last is not None and stamp < last:  # an older join learned late (a merge): back in stamp order
            self.groups[group] = dict(sorted(entries.items(), key=lambda kv: (kv[1], kv[0])))

    def _proc_leave(self, group: bytes, nodeid: int, pid: int, reason: int) -> None:
        entries = self.groups.get(group)
        if entries is None or (nodeid, pid) not in entries:
            self.stats.unknown_leave += 1
            if nodeid == self.nodeid:  # our handle still waits for its leave to complete
                self._complete_local_leave(group, pid, reason)
            return
        del entries[(nodeid, pid)]
        if not entries:
            del self.groups[group]
        self._notify(group, left=(Address(nodeid, pid, reason),))

    def _complete_local_leave(self, group: bytes, pid: int, reason: int) -> None:
        if reason != CpgReason.CPG_REASON_LEAVE:
            return
        for cpd in list(self._local.get(group, {}).values()):
            if cpd.pid == pid:
                self._unbind(cpd)
                cpd.state = CpdState.UNJOINED

    def _unbind(self, cpd: Cpd) -> None:
        handles = self._local.get(cpd.group)
        if handles is not None:
            handles.pop(cpd.conn_id, None)
            if not handles:
                del self._local[cpd.group]
        if cpd.conn_id in self.cpds:  # still connected: the handle may join again
            cpd.group = b""

    def _notify(self, group: bytes, left: tuple[Address, ...] = (), joined: tuple[Address, ...] = ()) -> None:
        """corosync's notify_lib_joinlist: one confchg to every local handle of ``group`` that is a member
        (the joiner's own handle becomes one here); a leaver's handle returns to UNJOINED after it."""
        handles = self._local.get(group)
        if not handles:
            return
        event = ConfchgEvent(group, tuple(self.membership(group)), left, joined)
        for cpd in list(handles.values()):
            if cpd.state == CpdState.JOIN_STARTED and any(
                a.nodeid == self.nodeid and a.pid == cpd.pid for a in joined
            ):
                cpd.state = CpdState.JOIN_COMPLETED
            if cpd.state in (CpdState.JOIN_COMPLETED, CpdState.LEAVE_STARTED):
                self.transport.send_event(cpd.conn_id, event)
                if cpd.flags & p.CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF and not cpd.initial_totem_conf_sent:
                    cpd.initial_totem_conf_sent = True
                    self.transport.send_event(cpd.conn_id, TotemConfchgEvent(self.ring_id, self.members))
            if any(
                a.nodeid == self.nodeid and a.pid == cpd.pid and a.reason == CpgReason.CPG_REASON_LEAVE for a in left
            ):
                self._unbind(cpd)
                cpd.state = CpdState.UNJOINED

    # ------------------------------------------------------------------------------ sync
    def confchg(self, regular: bool, ring_id: RingKey, members: Iterable[int]) -> None:
        """A Totem configuration change: client traffic waits from a REGULAR one until sync completes."""
        if regular:
            self.sync_running = True
        log.debug("confchg %s ring %x.%x members %s", "regular" if regular else "transitional",
                  ring_id[0], ring_id[1], list(members))

    def sync_init(self, ring_id: RingKey, members: Iterable[int], trans: Iterable[int]) -> None:
        """A sync round for ring ``ring_id`` starts; the nodes gone since the last activation are noted."""
        members_t, trans_t = tuple(members), tuple(trans)
        self.sync_running = True
        known_nodes = set(self.members) | {n for entries in self.groups.values() for n, _ in entries}
        down = sorted(known_nodes - set(trans_t) - {self.nodeid})
        down_set = set(down)
        for group, entries in self.groups.items():
            for n, pid in entries:
                if n in down_set:
                    self._down_entries.add((n, pid, group))
        self._drop_sync_messages()
        self._sync = _SyncRound(ring_id, members_t, trans_t, tuple(down))

    def sync_process(self) -> bool:
        """Multicasts DOWNLIST and JOINLIST once; True when both are in Totem's hands."""
        rnd = self._sync
        if rnd is None:
            return self.flush()
        if not rnd.sent:
            rnd.sent = True
            self._outbox.append(p.DownList(rnd.ring_id[0], rnd.ring_id[1], rnd.down_nodes))
            self._outbox.append(p.JoinList(rnd.ring_id[0], rnd.ring_id[1], tuple(self._own_joinlist())))
        return self.flush()

    def _own_joinlist(self) -> list[tuple[int, bytes, Stamp]]:
        """This node's processes once its own in-flight joins and leaves (sent before the JOINLIST) land;
        an in-flight join has no stamp yet (every member of the ring delivers it before the JOINLIST)."""
        entries = {(pid, group): stamp for group, members in self.groups.items()
                   for (n, pid), stamp in members.items() if n == self.nodeid}
        for msg in [*self._inflight, *self._outbox]:
            if isinstance(msg, p.ProcJoin):
                entries.setdefault((msg.pid, msg.group), p.STAMP_PENDING)
            elif isinstance(msg, p.ProcLeave):
                entries.pop((msg.pid, msg.group), None)
        return [(pid, group, stamp) for (pid, group), stamp in entries.items()]

    def _on_joinlist(self, sender: int, msg: p.JoinList) -> None:
        rnd = self._sync
        if rnd is None or (msg.rep, msg.seq) != rnd.ring_id or sender not in rnd.members:
            self.stats.stale_sync += 1
            return
        entries: dict[ListEntry, Stamp] = {}
        for pid, group, stamp in msg.entries:
            entries.setdefault((pid, group), stamp)
        rnd.joinlists[sender] = entries

    def sync_abort(self) -> None:
        """The round's ring changed before activation: its state goes (departed nodes stay noted)."""
        self._sync = None
        self._drop_sync_messages()

    def _drop_sync_messages(self) -> None:
        self._outbox = collections.deque(m for m in self._outbox if not isinstance(m, (p.JoinList, p.DownList)))

    def sync_activate(self) -> None:
        """Every member finished sync_process: reconcile groups (NODEDOWN, NODEUP, PROCDOWN), totem confchg."""
        rnd = self._sync
        if rnd is None:
            return
        me = self.nodeid
        members = set(rnd.members)
        # (1) members of departed nodes
        gone: dict[bytes, list[Address]] = {}
        for group, entries in self.groups.items():
            for n, pid in entries:
                if n != me and ((n, pid, group) in self._down_entries or n not in members):
                    gone.setdefault(group, []).append(Address(n, pid, CpgReason.CPG_REASON_NODEDOWN))
        self._remove_and_notify(gone)
        # (2) processes other nodes listed that this node did not know
        came: dict[bytes, list[Address]] = {}
        for sender, listed_entries in rnd.joinlists.items():
            if sender == me:
                continue
            for (pid, group), stamp in listed_entries.items():
                if (sender, pid) not in self.groups.get(group, ()):
                    self._insert(group, sender, pid, stamp)
                    came.setdefault(group, []).append(Address(sender, pid, CpgReason.CPG_REASON_NODEUP))
        for group in sorted(came):
            self._notify(group, joined=tuple(came[group]))
        # (3) remote processes their own node no longer lists
        listed = {(n, pid, group) for n, listed_entries in rnd.joinlists.items() for pid, group in listed_entries}
        zombies: dict[bytes, list[Address]] = {}
        for group, entries in self.groups.items():
            for n, pid in entries:
                if n != me and n in rnd.joinlists and (n, pid, group) not in listed:
                    zombies.setdefault(group, []).append(Address(n, pid, CpgReason.CPG_REASON_PROCDOWN))
        self._remove_and_notify(zombies)
        # (4) the new ring to every handle
        self._down_entries.clear()
        self.ring_id = rnd.ring_id
        self.members = rnd.members
        self._sync = None
        event = TotemConfchgEvent(self.ring_id, self.members)
        for cpd in self.cpds.values():
            self.transport.send_event(cpd.conn_id, event)

    def _remove_and_notify(self, removals: dict[bytes, list[Address]]) -> None:
        for group in sorted(removals):
            entries = self.groups[group]
            for a in removals[group]:
                entries.pop((a.nodeid, a.pid), None)
            if not entries:
                del self.groups[group]
            self._notify(group, left=tuple(removals[group]))

    def sync_complete(self) -> None:
        """Every service is synchronized: client traffic flows again."""
        self.sync_running = False
        self.synced = True
        self.flush()
