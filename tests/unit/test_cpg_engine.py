"""The CPG engine as a script of events on simulated nodes: joins, leaves, process death, delivery rules,
errors, and the DOWNLIST/JOINLIST sync after crashes, partitions, merges and syncs cut short.

``SimCluster`` plays Totem for several ``CpgEngine``s: every node of a component (a ring) receives the
component's messages in one total order; a configuration change runs the sync hooks on every member
(sync_init, sync_process, the round's messages, sync_activate, sync_complete), or stops half-way.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable

import pytest

from pycorosync.ipc.errors import CsErrorCode
from pycorosync.services.cpg import protocol as p
from pycorosync.services.cpg.engine import (
    ConfchgEvent,
    CpdState,
    CpgEngine,
    DeliverEvent,
    Event,
    TotemConfchgEvent,
)
from pycorosync.services.cpg.protocol import Address, CpgReason

OK = CsErrorCode.CS_OK
JOIN, LEAVE, NODEDOWN, NODEUP, PROCDOWN = (CpgReason.CPG_REASON_JOIN, CpgReason.CPG_REASON_LEAVE,
                                           CpgReason.CPG_REASON_NODEDOWN, CpgReason.CPG_REASON_NODEUP,
                                           CpgReason.CPG_REASON_PROCDOWN)


class SimNode:
    """One node: its engine, the events its handles received, and a switch that makes Totem refuse sends."""

    def __init__(self, cluster: SimCluster, nodeid: int) -> None:
        self.cluster = cluster
        self.nodeid = nodeid
        self.engine = CpgEngine(nodeid, self)
        self.events: dict[int, list[Event]] = collections.defaultdict(list)
        self.refuse = False
        self.alive = True

    def mcast(self, msg: p.ClusterMessage) -> bool:
        if self.refuse:
            return False
        # through the wire encoding, as the real service does
        self.cluster.submit(self.nodeid, p.encode_cluster(msg))
        return True

    def send_event(self, conn_id: int, event: Event) -> None:
        self.events[conn_id].append(event)

    def take(self, conn_id: int) -> list[Event]:
        out = self.events.pop(conn_id, [])
        return out

    def confchgs(self, conn_id: int) -> list[ConfchgEvent]:
        return [e for e in self.take(conn_id) if isinstance(e, ConfchgEvent)]


class SimCluster:
    """Totem for the engines: components with one message order each, configuration changes with sync."""

    def __init__(self, nodeids: Iterable[int]) -> None:
        self.nodes: dict[int, SimNode] = {}
        self.component: dict[int, tuple[int, ...]] = {}
        self.ring: dict[int, tuple[int, int]] = {}
        self.pending: dict[int, list[tuple[int, bytes]]] = collections.defaultdict(list)  # by component leader
        self.seq = itertools.count(4, 4)
        self.conn_ids = itertools.count(1)
        for n in nodeids:
            self.nodes[n] = SimNode(self, n)
        self.form([sorted(self.nodes)])

    # -- Totem --------------------------------------------------------------------------------------------
    def submit(self, sender: int, body: bytes) -> None:
        self.pending[sender].append((sender, body))

    def pump(self) -> None:
        """Delivers every submitted message to the sender's component, in submit order per component."""
        while any(self.pending.values()):
            queue = sorted(
                ((sender, i, body) for sender, msgs in self.pending.items() for i, (_, body) in enumerate(msgs)),
                key=lambda t: t[1],
            )
            self.pending.clear()
            for sender, _, body in queue:
                if not self.nodes[sender].alive:
                    continue
                for n in self.component[sender]:
                    if self.nodes[n].alive:
                        self.nodes[n].engine.deliver(sender, body, self.ring[sender])

    def form(self, components: list[list[int]], complete: bool = True) -> tuple[int, int]:
        """New rings, one per component; runs sync to completion unless ``complete`` is False."""
        seq = next(self.seq)
        for comp in components:
            members = tuple(sorted(comp))
            ring = (members[0], seq)
            for n in members:
                node = self.nodes[n]
                old = self.component.get(n, (n,))
                trans = tuple(m for m in old if m in members)
                node.engine.confchg(False, ring, trans)
                node.engine.confchg(True, ring, members)
            for n in members:
                self.component[n] = members
                self.ring[n] = ring
            for n in members:
                self.nodes[n].engine.sync_init(ring, members, tuple(m for m in self._old(n) if m in members))
        if complete:
            self.finish_sync(components)
        return (components[0][0], seq)

    def _old(self, n: int) -> tuple[int, ...]:
        return self._trans_base.get(n, (n,))

    _trans_base: dict[int, tuple[int, ...]] = {}

    def finish_sync(self, components: list[list[int]]) -> None:
        nodes = [self.nodes[n] for comp in components for n in comp]
        for _ in range(100):
            done = [node.engine.sync_process() for node in nodes]
            self.pump()
            if all(done):
                break
        else:
            raise AssertionError("sync_process never finished")
        for node in nodes:
            node.engine.sync_activate()
        for node in nodes:
            node.engine.sync_complete()
        self.pump()
        for comp in components:
            for n in comp:
                self._trans_base[n] = tuple(sorted(comp))

    def crash(self, nodeid: int) -> None:
        self.nodes[nodeid].alive = False
        self.pending.pop(nodeid, None)

    def restart(self, nodeid: int) -> SimNode:
        node = SimNode(self, nodeid)
        self.nodes[nodeid] = node
        self.component[nodeid] = (nodeid,)
        self.ring[nodeid] = (nodeid, 0)
        # a new incarnation: no ring the others remember had it
        self._trans_base = {n: tuple(m for m in base if m != nodeid) for n, base in self._trans_base.items()}
        self._trans_base[nodeid] = (nodeid,)
        return node

    # -- clients ------------------------------------------------------------------------------------------
    def connect(self, nodeid: int, pid: int) -> int:
        conn = next(self.conn_ids)
        self.nodes[nodeid].engine.lib_init(conn, pid)
        return conn

    def joined(self, nodeid: int, pid: int, group: bytes = b"g") -> int:
        conn = self.connect(nodeid, pid)
        assert self.nodes[nodeid].engine.lib_join(conn, group) == OK
        self.pump()
        return conn

    def views(self, nodeids: Iterable[int]) -> list[dict[bytes, tuple[tuple[int, int], ...]]]:
        return [self.nodes[n].engine.view() for n in nodeids]


@pytest.fixture
def sim() -> SimCluster:
    SimCluster._trans_base = {}
    return SimCluster([1, 2, 3])


def addrs(*triples: tuple[int, int, int]) -> tuple[Address, ...]:
    return tuple(Address(*t) for t in triples)


def members(*pairs: tuple[int, int]) -> tuple[Address, ...]:
    return tuple(Address(n, pid) for n, pid in pairs)


# ------------------------------------------------------------------------------------------------ join / leave
def test_joiner_first_confchg_lists_itself_and_every_member_sees_the_join(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    assert sim.nodes[1].confchgs(a) == [ConfchgEvent(b"g", members((1, 100)), (), addrs((1, 100, JOIN)))]
    b = sim.joined(2, 200)
    expected = ConfchgEvent(b"g", members((1, 100), (2, 200)), (), addrs((2, 200, JOIN)))
    assert sim.nodes[1].confchgs(a) == [expected]
    assert sim.nodes[2].confchgs(b) == [expected]
    assert sim.nodes[1].engine.cpds[a].state == CpdState.JOIN_COMPLETED
    assert sim.views([1, 2, 3])[0] == sim.views([1, 2, 3])[1] == sim.views([1, 2, 3])[2]


def test_join_is_pending_until_its_procjoin_is_delivered(sim: SimCluster) -> None:
    a = sim.connect(1, 100)
    assert sim.nodes[1].engine.lib_join(a, b"g") == OK
    assert sim.nodes[1].engine.cpds[a].state == CpdState.JOIN_STARTED
    assert sim.nodes[1].engine.lib_join(a, b"g") == CsErrorCode.CS_ERR_EXIST
    assert sim.nodes[1].engine.lib_leave(a, b"g") == CsErrorCode.CS_ERR_BUSY
    sim.pump()
    assert sim.nodes[1].engine.cpds[a].state == CpdState.JOIN_COMPLETED


def test_join_errors_exist_busy_try_again_and_name_too_long(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    a = sim.joined(1, 100)
    assert eng.lib_join(a, b"g") == CsErrorCode.CS_ERR_EXIST  # joined
    assert eng.lib_join(a, b"other") == CsErrorCode.CS_ERR_EXIST  # one group per handle
    same_pid = sim.connect(1, 100)
    assert eng.lib_join(same_pid, b"g") == CsErrorCode.CS_ERR_EXIST  # same pid and group on another handle
    assert eng.lib_leave(a, b"g") == OK
    assert eng.lib_join(a, b"g") == CsErrorCode.CS_ERR_EXIST  # the handle still holds the group (leaving)
    assert eng.lib_join(a, b"h") == CsErrorCode.CS_ERR_BUSY  # leave pending
    fresh = sim.connect(1, 101)
    assert eng.lib_join(fresh, b"x" * 129) == CsErrorCode.CS_ERR_NAME_TOO_LONG
    assert eng.lib_join(fresh, b"x" * 128) == OK


def test_join_of_a_pid_whose_procdown_is_undelivered_gets_try_again(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    a = sim.joined(1, 100)
    eng.lib_exit(a)  # PROCLEAVE(PROCDOWN) submitted, not delivered yet
    again = sim.connect(1, 100)
    assert eng.lib_join(again, b"g") == CsErrorCode.CS_ERR_TRY_AGAIN
    sim.pump()
    assert eng.lib_join(again, b"g") == OK


def test_cluster_requests_get_try_again_before_the_first_sync_and_while_sync_runs() -> None:
    SimCluster._trans_base = {}
    sim = SimCluster([1, 2])
    fresh = CpgEngine(9, sim.nodes[1])
    fresh.lib_init(1, 100)
    assert fresh.lib_join(1, b"g") == CsErrorCode.CS_ERR_TRY_AGAIN  # never synchronized
    assert fresh.flow_control == p.CPG_FLOW_CONTROL_ENABLED
    a = sim.joined(1, 100)
    sim.form([[1, 2]], complete=False)
    eng = sim.nodes[1].engine
    b = sim.connect(1, 101)
    assert eng.lib_join(b, b"g") == CsErrorCode.CS_ERR_TRY_AGAIN
    assert eng.lib_mcast(a, 2, b"x") == CsErrorCode.CS_ERR_TRY_AGAIN
    assert eng.lib_leave(a, b"g") == CsErrorCode.CS_ERR_TRY_AGAIN
    assert eng.membership(b"g") == [Address(1, 100)]  # node-local queries are always served
    sim.finish_sync([[1, 2]])
    assert eng.lib_join(b, b"g") == OK
    assert eng.flow_control == p.CPG_FLOW_CONTROL_DISABLED


def test_full_submit_ring_is_try_again_and_changes_nothing(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    a = sim.connect(1, 100)
    sim.nodes[1].refuse = True
    assert eng.lib_join(a, b"g") == CsErrorCode.CS_ERR_TRY_AGAIN
    assert eng.cpds[a].state == CpdState.UNJOINED
    assert eng.flow_control == p.CPG_FLOW_CONTROL_ENABLED
    sim.nodes[1].refuse = False
    assert eng.lib_join(a, b"g") == OK


def test_leave_errors_and_the_leaver_sees_its_own_leave(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    a = sim.connect(1, 100)
    assert eng.lib_leave(a, b"g") == CsErrorCode.CS_ERR_NOT_EXIST
    a = sim.joined(1, 100, b"g")
    b = sim.joined(2, 200, b"g")
    sim.nodes[1].take(a)
    sim.nodes[2].take(b)
    assert eng.lib_leave(a, b"other") == CsErrorCode.CS_ERR_NOT_EXIST
    assert eng.lib_leave(a, b"g") == OK
    assert eng.lib_leave(a, b"g") == CsErrorCode.CS_ERR_NOT_EXIST  # leave already started
    sim.pump()
    expected = ConfchgEvent(b"g", members((2, 200)), addrs((1, 100, LEAVE)), ())
    assert sim.nodes[1].confchgs(a) == [expected]
    assert sim.nodes[2].confchgs(b) == [expected]
    assert eng.cpds[a].state == CpdState.UNJOINED
    assert eng.lib_join(a, b"h") == OK  # the handle may join again, any group


def test_handle_that_goes_away_without_leaving_is_procdown_everywhere(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    b = sim.joined(2, 200)
    c = sim.joined(3, 300)
    for n, conn in ((2, b), (3, c)):
        sim.nodes[n].take(conn)
    sim.nodes[1].engine.lib_exit(a)
    sim.pump()
    expected = ConfchgEvent(b"g", members((2, 200), (3, 300)), addrs((1, 100, PROCDOWN)), ())
    assert sim.nodes[2].confchgs(b) == [expected]
    assert sim.nodes[3].confchgs(c) == [expected]


def test_handle_that_dies_while_its_procdown_cannot_be_sent_is_sent_later_in_order(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    b = sim.joined(2, 200)
    sim.nodes[2].take(b)
    sim.nodes[1].refuse = True
    sim.nodes[1].engine.lib_exit(a)
    other = sim.connect(1, 101)
    assert sim.nodes[1].engine.lib_join(other, b"g") == CsErrorCode.CS_ERR_TRY_AGAIN  # behind the outbox
    sim.nodes[1].refuse = False
    assert sim.nodes[1].engine.flush()
    sim.pump()
    assert sim.nodes[2].confchgs(b) == [ConfchgEvent(b"g", members((2, 200)), addrs((1, 100, PROCDOWN)), ())]


# ------------------------------------------------------------------------------------------------ delivery rules
def test_messages_reach_joined_and_leaving_handles_only(sim: SimCluster) -> None:
    eng1 = sim.nodes[1].engine
    a = sim.joined(1, 100)
    leaving = sim.joined(2, 200)
    pending = sim.connect(2, 201)
    outsider = sim.joined(3, 300, b"other")
    assert sim.nodes[2].engine.lib_leave(leaving, b"g") == OK
    assert sim.nodes[2].engine.lib_join(pending, b"g") == OK
    assert eng1.lib_mcast(a, p.CpgGuarantee.CPG_TYPE_SAFE, b"hello") == OK
    for n, conn in ((1, a), (2, leaving), (2, pending), (3, outsider)):
        sim.nodes[n].take(conn)
    # deliver only the mcast: the leave and the pending join stay queued behind it on node 2
    node2_queue = sim.pending.pop(2)
    sim.pump()
    delivered = DeliverEvent(b"g", 1, 100, p.CpgGuarantee.CPG_TYPE_SAFE, b"hello")
    assert [e for e in sim.nodes[1].take(a) if isinstance(e, DeliverEvent)] == [delivered]
    got = [e for e in sim.nodes[2].take(leaving) if isinstance(e, DeliverEvent)]
    assert [bytes(e.data) for e in got] == [b"hello"]
    assert sim.nodes[2].take(pending) == []
    assert sim.nodes[3].take(outsider) == []
    sim.pending[2] = node2_queue
    sim.pump()


def test_mcast_needs_a_join_request_and_is_allowed_while_the_join_is_pending(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    a = sim.connect(1, 100)
    assert eng.lib_mcast(a, 2, b"x") == CsErrorCode.CS_ERR_NOT_EXIST
    assert eng.lib_join(a, b"g") == OK
    assert eng.lib_mcast(a, 2, b"early") == OK  # FIFO: delivered right after its own PROCJOIN
    sim.pump()
    assert [bytes(e.data) for e in sim.nodes[1].take(a) if isinstance(e, DeliverEvent)] == [b"early"]
    assert eng.lib_mcast(a, 2, b"x" * (p.MAX_ATOMIC_MSGSIZE + 1)) == CsErrorCode.CS_ERR_TOO_BIG


def test_message_from_a_node_without_members_in_the_group_is_dropped(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    sim.nodes[1].take(a)
    sim.nodes[1].engine.deliver(3, p.encode_cluster(p.Mcast(b"g", 999, 2, b"intruder")), sim.ring[1])
    assert sim.nodes[1].take(a) == []
    assert sim.nodes[1].engine.stats.unknown_node == 1


def test_malformed_cluster_messages_are_counted_and_dropped(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    for body in (b"", b"\x00", b"\x09\x00\x00\x00", b"\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\xff\xff"):
        eng.deliver(2, body, sim.ring[1])
    assert eng.stats.malformed == 4


def test_deliver_initial_totem_conf_follows_the_first_group_confchg(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    a = sim.connect(1, 100)
    assert eng.lib_join(a, b"g", p.CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF) == OK
    sim.pump()
    events = sim.nodes[1].take(a)
    assert isinstance(events[0], ConfchgEvent)
    assert events[1] == TotemConfchgEvent(eng.ring_id, (1, 2, 3))
    sim.joined(2, 200)
    assert [type(e) for e in sim.nodes[1].take(a)] == [ConfchgEvent]  # only once


# ------------------------------------------------------------------------------------------------ sync
def test_crashed_node_processes_leave_as_nodedown_in_one_confchg_per_group(sim: SimCluster) -> None:
    a = sim.joined(1, 100, b"g")
    h = sim.joined(1, 101, b"h")
    sim.joined(3, 300, b"g")
    sim.joined(3, 301, b"g")
    sim.joined(3, 302, b"h")
    sim.nodes[1].take(a)
    sim.nodes[1].take(h)
    sim.crash(3)
    ring = sim.form([[1, 2]])
    ev_a = sim.nodes[1].take(a)
    assert ev_a == [
        ConfchgEvent(b"g", members((1, 100)), addrs((3, 300, NODEDOWN), (3, 301, NODEDOWN)), ()),
        TotemConfchgEvent(ring, (1, 2)),
    ]
    assert sim.nodes[1].take(h)[0] == ConfchgEvent(b"h", members((1, 101)), addrs((3, 302, NODEDOWN)), ())
    assert sim.views([1])[0] == sim.views([2])[0] == {b"g": ((1, 100),), b"h": ((1, 101),)}


def test_every_handle_gets_the_totem_confchg_after_sync(sim: SimCluster) -> None:
    idle = sim.connect(2, 200)
    ring = sim.form([[1, 2, 3]])
    assert sim.nodes[2].take(idle) == [TotemConfchgEvent(ring, (1, 2, 3))]


def test_partition_then_merge_gives_nodedown_then_nodeup_and_one_view(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    c = sim.joined(3, 300)
    sim.form([[1, 2], [3]])
    assert sim.nodes[1].confchgs(a)[-1] == ConfchgEvent(b"g", members((1, 100)), addrs((3, 300, NODEDOWN)), ())
    assert sim.nodes[3].confchgs(c)[-1] == ConfchgEvent(b"g", members((3, 300)), addrs((1, 100, NODEDOWN)), ())
    # both sides go on independently
    b = sim.joined(2, 200)
    sim.joined(3, 301)
    sim.form([[1, 2, 3]])
    got1 = sim.nodes[1].confchgs(a)[-1]
    assert got1.joined == addrs((3, 300, NODEUP), (3, 301, NODEUP))
    got3 = sim.nodes[3].confchgs(c)[-1]
    assert got3.joined == addrs((1, 100, NODEUP), (2, 200, NODEUP))
    views = sim.views([1, 2, 3])
    assert views[0] == views[1] == views[2]
    # join order (by the ring and position each join was delivered in), the same everywhere
    assert list(views[0][b"g"]) == [(1, 100), (3, 300), (2, 200), (3, 301)]
    assert [(a.nodeid, a.pid) for a in got1.members] == [(1, 100), (3, 300), (2, 200), (3, 301)]
    assert sim.nodes[2].engine.cpds[b].state == CpdState.JOIN_COMPLETED


def test_restarted_node_processes_come_back_as_nodeup(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    sim.joined(3, 300)
    sim.crash(3)
    sim.form([[1, 2]])
    sim.restart(3)
    sim.form([[3]])
    sim.joined(3, 333)
    sim.nodes[1].take(a)
    sim.form([[1, 2, 3]])
    assert sim.nodes[1].confchgs(a)[0].joined == addrs((3, 333, NODEUP))


def test_node_restarted_before_its_departure_was_noticed_is_nodedown_then_nodeup(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    sim.joined(3, 300)
    sim.nodes[1].take(a)
    sim.crash(3)
    sim.restart(3)
    sim.form([[3]])
    sim.joined(3, 301)
    sim.form([[1, 2, 3]])  # 3 was not in the transitional set of 1 and 2
    changes = sim.nodes[1].confchgs(a)
    assert changes[0].left == addrs((3, 300, NODEDOWN))
    assert changes[1].joined == addrs((3, 301, NODEUP))
    views = sim.views([1, 2, 3])
    assert views[0] == views[1] == views[2] == {b"g": ((1, 100), (3, 301))}


def test_node_lost_during_sync_restarts_the_round_and_views_agree(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    sim.joined(2, 200)
    sim.joined(3, 300)
    sim.form([[1, 2], [3]])
    sim.nodes[1].take(a)
    # merge starts; 3's JOINLIST never arrives (node 3 dies before it sends it)
    sim.form([[1, 2, 3]], complete=False)
    for n in (1, 2):
        sim.nodes[n].engine.sync_process()
    sim.crash(3)
    sim.pump()
    for n in (1, 2):
        sim.nodes[n].engine.sync_abort()
    sim.form([[1, 2]])
    changes = sim.nodes[1].confchgs(a)
    assert all(not c.joined for c in changes)  # 3's processes never appeared
    assert sim.views([1])[0] == sim.views([2])[0] == {b"g": ((1, 100), (2, 200))}


def test_joined_node_lost_during_sync_leaves_no_ghost_members() -> None:
    SimCluster._trans_base = {}
    sim = SimCluster([1, 2, 3])
    sim.form([[1, 2], [3]])
    sim.joined(3, 300)
    a = sim.joined(1, 100)
    # a ring with 3 forms and a PROCJOIN from 3 is delivered in it before the sync is cut short
    sim.form([[1, 2, 3]], complete=False)
    sim.nodes[3].engine.sync_process()
    sim.pump()
    for n in (1, 2):
        sim.nodes[n].engine.sync_abort()
    sim.crash(3)
    sim.form([[1, 2]])
    assert sim.views([1])[0] == sim.views([2])[0] == {b"g": ((1, 100),)}
    assert all(not c.joined or c.joined[0].nodeid != 3 for c in sim.nodes[1].confchgs(a))


def test_process_that_dies_during_sync_is_not_brought_back_by_its_joinlist(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    b = sim.joined(2, 200)
    sim.form([[1, 2, 3]], complete=False)
    for n in (1, 2, 3):
        assert sim.nodes[n].engine.sync_process()
    sim.pump()  # every JOINLIST delivered
    sim.nodes[2].engine.lib_exit(b)  # dies during sync: PROCLEAVE(PROCDOWN) after its JOINLIST
    sim.pump()
    sim.finish_sync([[1, 2, 3]])
    views = sim.views([1, 2, 3])
    assert views[0] == views[1] == views[2] == {b"g": ((1, 100),)}
    assert sim.nodes[1].engine.cpds[a].state == CpdState.JOIN_COMPLETED


def test_join_sent_just_before_a_partition_survives_the_merge_sync(sim: SimCluster) -> None:
    a = sim.connect(1, 100)
    assert sim.nodes[1].engine.lib_join(a, b"g") == OK  # in flight: delivered in the new ring, during sync
    sim.form([[1, 2, 3]], complete=False)
    for n in (1, 2, 3):
        sim.nodes[n].engine.sync_process()  # node 1's JOINLIST already counts the in-flight join
    sim.finish_sync([[1, 2, 3]])
    views = sim.views([1, 2, 3])
    assert views[0] == views[1] == views[2] == {b"g": ((1, 100),)}
    assert sim.nodes[1].engine.cpds[a].state == CpdState.JOIN_COMPLETED


def test_remote_member_missing_from_its_own_joinlist_is_removed_as_procdown(sim: SimCluster) -> None:
    a = sim.joined(1, 100)
    sim.nodes[1].take(a)
    # node 1 believes in a process of node 2 that node 2 does not have (a lost leave)
    sim.nodes[1].engine.deliver_message(2, p.ProcJoin(b"g", 222), sim.ring[1])
    sim.nodes[1].take(a)
    sim.form([[1, 2, 3]])
    assert sim.nodes[1].confchgs(a) == [ConfchgEvent(b"g", members((1, 100)), addrs((2, 222, PROCDOWN)), ())]


def test_stale_joinlist_of_an_older_ring_is_ignored(sim: SimCluster) -> None:
    eng = sim.nodes[1].engine
    sim.form([[1, 2, 3]], complete=False)
    eng.deliver_message(2, p.JoinList(1, 0, ((999, b"ghost", (0, 1, 1)),)), sim.ring[1])
    assert eng.stats.stale_sync == 1
    sim.finish_sync([[1, 2, 3]])
    assert b"ghost" not in eng.view()


def test_membership_and_iteration_snapshots(sim: SimCluster) -> None:
    sim.joined(1, 100, b"g")
    sim.joined(2, 200, b"g")
    sim.joined(2, 201, b"h")
    eng = sim.nodes[3].engine
    assert eng.membership(b"g") == [Address(1, 100), Address(2, 200)]
    assert eng.membership(b"none") == []
    assert eng.iteration(p.CpgIterationType.CPG_ITERATION_NAME_ONLY) == [(b"g", 0, 0), (b"h", 0, 0)]
    assert eng.iteration(p.CpgIterationType.CPG_ITERATION_ONE_GROUP, b"h") == [(b"h", 2, 201)]
    assert eng.iteration(p.CpgIterationType.CPG_ITERATION_ALL) == [(b"g", 1, 100), (b"g", 2, 200), (b"h", 2, 201)]
