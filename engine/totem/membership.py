"""Membership: GATHER (joins, consensus), COMMIT (commit token), RECOVERY entry and installation (EVS).

The new ring's members agree through joins carrying proc and fail sets; the lowest live node
creates the commit token, which makes two rotations: the first collects every member's old-ring
state (old ring id, aru, highest seq, safe seq), the second moves everyone to RECOVERY. In
RECOVERY the old-ring frames some transitional member lacks are resent, encapsulated, in the new
ring; installation then delivers the old ring's messages in two steps around the transitional
configuration change and starts the new regular configuration.
"""

from __future__ import annotations

from collections import deque

from pycorosync.engine.totem.api import Action, ConfigChange, ConfigType, RingId, SendFrame
from pycorosync.engine.totem.base import (
    COMMIT,
    GATHER,
    OPERATIONAL,
    RECOVERY,
    T_CONSENSUS,
    T_HOLD,
    T_JOIN,
    T_RETRANSMIT,
    T_TOKEN,
    T_WARNING,
    CoreBase,
)
from pycorosync.engine.totem.ordering import RingStore, deliver_frames
from pycorosync.engine.totem.wire import (
    MCAST_ENCAPSULATED,
    CommitEntry,
    CommitToken,
    Join,
    Token,
    encode_commit,
    encode_join,
)

_NO_LIMIT = 1 << 63


def _ids(nodes: object) -> str:
    return " ".join(str(n) for n in sorted(nodes)) if nodes else ""  # type: ignore[call-overload]


class Membership(CoreBase):
    """GATHER / COMMIT / RECOVERY entry / installation."""

    # -- GATHER ----------------------------------------------------------------------------------

    def _send_join(self, out: list[Action]) -> None:
        out.append(SendFrame(None, encode_join(self.node_id, self.incarnation, self.ring_id, self.max_ring_seq,
                                               frozenset(self.proc), frozenset(self.fail))))
        self.stats["memb_join_tx"] += 1

    def _enter_gather(self, now_ns: int, out: list[Action], why: str) -> None:
        """(Re)start GATHER: send my join, restart the join and consensus timers. ``why`` is logged (debug)
        when the state changes, as corosync's "entering GATHER state from ..." line."""
        # The consensus timer runs from the start of the round: a peer whose joins keep changing my sets
        # must not postpone it forever (corosync's endless GATHER, COROSYNC.md §12).
        if self.state == GATHER:
            self.stats["continuous_gather"] += 1
        else:
            self._log(out, "debug", f"entering GATHER state from {self.state} ({why}).")
            if self.state in (COMMIT, RECOVERY):
                self._abandon_new_ring()
            self._cancel(T_CONSENSUS)
            self.heard = set()
            self._disagree_rounds = 0
        self.state = GATHER
        self.stats["gather_entered"] += 1
        self.proc.add(self.node_id)
        self.proc |= set(self.members)
        self.fail.discard(self.node_id)
        self.agreed = {self.node_id}
        self._commit_created = False
        self._held_token = None
        self._self_token = None
        self._last_sent = None
        self._cancel(T_TOKEN, T_WARNING, T_RETRANSMIT, T_HOLD)
        self._send_join(out)
        self._arm(T_JOIN, now_ns + self._ms(self.cfg.join))
        if T_CONSENSUS not in self._timers:
            self._arm(T_CONSENSUS, now_ns + self._ms(self.cfg.consensus))

    def _abandon_new_ring(self) -> None:
        """Leave COMMIT/RECOVERY without installing: the old ring's state is kept as it is.

        The fail set was the last round's verdict; a new round gives every node a fresh chance (a node
        that does not answer is failed again at the consensus timeout). Keeping it let a node that
        never installed spread stale failures into every later round and lock a healed node out.
        """
        self.fail = set()
        self._fail_ring.clear()
        self.new_ring_id = None
        self.new_members = ()
        self.trans_members = ()
        self.new_store = None
        self.recovery_queue.clear()
        self._last_commit_token_seq = -1

    def _live(self) -> set[int]:
        return self.proc - self.fail

    def _on_join_gather(self, now_ns: int, j: Join, out: list[Action]) -> None:
        """Corosync's join processing (COROSYNC.md §2.9)."""
        sender = j.sender
        if j.leave:
            if sender not in self.fail:
                self.left_cleanly.add(sender)
                self.proc.add(sender)
                self.fail.add(sender)
                self._enter_gather(now_ns, out, "leave message")
            return
        if sender in self.fail:
            # A node failed in this round stays failed, unless it has installed a ring of its own since:
            # then its sets are new too. Two nodes that failed each other (each one took the other's
            # last verdict) would otherwise ignore each other's new joins and fail each other again,
            # round after round, each in a ring of its own (a pause of both processes can do that).
            then = self._fail_ring.setdefault(sender, j.ring_id)
            if then == j.ring_id or j.ring_id.seq <= then.seq or self.node_id in j.fail:
                return
            self.fail.discard(sender)
            del self._fail_ring[sender]
            self._enter_gather(now_ns, out, f"node {sender} installed a new ring")
        self.heard.add(sender)
        if j.proc == self.proc and j.fail == self.fail:
            self.agreed.add(sender)
            self._check_consensus(now_ns, out)
            return
        if j.proc <= self.proc and j.fail <= self.fail:
            return  # it knows less than I do; my next join tells it
        before = (len(self.proc), len(self.fail))
        self.proc |= j.proc
        # A join whose sender had not yet heard of my current ring carries the fail set of an older
        # round (a late join, or one written before its sender's own last install). Taking it would
        # fail nodes alive now, the failed node answers in kind, and live nodes lock each other out
        # round after round. Only its proc set counts; my join tells it my ring seq, its next join
        # counts in full, and a node that never agrees is failed at the consensus timeout.
        current = j.ring_seq >= self.ring_id.seq
        if current and self.node_id in j.fail:
            self.fail.add(sender)
        elif current and sender in self.members:
            self.fail |= j.fail - {self.node_id}
        if (len(self.proc), len(self.fail)) != before:  # sets only grow: same sizes, nothing new to say
            self._enter_gather(now_ns, out, "join with new information")

    def _check_consensus(self, now_ns: int, out: list[Action]) -> None:
        live = self._live()
        if not live <= self.agreed or self._commit_created:
            return
        if min(live) == self.node_id:
            self._commit_created = True
            self._log(out, "debug", "Creating commit token because I am the rep.")
            seq = max(self.max_ring_seq, self.ring_id.seq) + 4
            self.max_ring_seq = seq
            ct = CommitToken(self.node_id, self.incarnation, RingId(self.node_id, seq), 0, 1, 0,
                             [CommitEntry(n) for n in sorted(live)])
            self._on_commit_token(now_ns, ct, out, created=True)

    def _on_join_timeout(self, now_ns: int, out: list[Action]) -> None:
        self._send_join(out)
        self._arm(T_JOIN, now_ns + self._ms(self.cfg.join))
        self._check_consensus(now_ns, out)

    def _on_consensus_timeout(self, now_ns: int, out: list[Action]) -> None:
        self.stats["consensus_timeouts"] += 1
        live = self._live()
        # Fail the silent. When everyone talks but some still disagree (their sets were still moving),
        # give them one more round before failing them, so that progress is still guaranteed.
        missing = live - self.heard - {self.node_id}
        if missing:
            self._disagree_rounds = 0
        elif live - self.agreed:
            self._disagree_rounds += 1
            if self._disagree_rounds >= 2:
                missing = live - self.agreed
                self._disagree_rounds = 0
        self.heard = set()
        if missing:
            self._log(out, "notice", f"Consensus timeout: failing {_ids(missing)} (no agreeing join)")
            self.fail |= missing
        self._enter_gather(now_ns, out, "consensus expired")

    # -- COMMIT ------------------------------------------------------------------------------------

    def _accepts_commit(self, ct: CommitToken) -> bool:
        if self.node_id not in ct.members:
            return False
        if self.state == GATHER:
            # a first-rotation token from another rep, reaching me before my row is filled; a token of a
            # ring I created and gave up (a late duplicate) is not taken back
            idx = ct.members.index(self.node_id)
            return (ct.rotation == 1 and ct.ring_id.rep != self.node_id and ct.ring_id.seq > self.ring_id.seq
                    and not ct.entries[idx].filled and all(e.filled for e in ct.entries[:idx])
                    and ct.members == tuple(sorted(self._live())))
        if self.state in (COMMIT, RECOVERY):
            return ct.ring_id == self.new_ring_id and ct.token_seq > self._last_commit_token_seq
        return False

    def _on_commit_token(self, now_ns: int, ct: CommitToken, out: list[Action], created: bool = False) -> None:
        if not created and not self._accepts_commit(ct):
            self.stats["rx_msg_dropped"] += 1
            return
        members = ct.members
        idx = members.index(self.node_id)
        if ct.memb_index != idx:
            self.stats["rx_msg_dropped"] += 1
            return
        if not created:
            self.stats["memb_commit_token_rx"] += 1
            self._token_seen()
        self._last_commit_token_seq = ct.token_seq
        mine = ct.entries[idx]
        if ct.rotation == 1 and not mine.filled:
            self._fill_commit_entry(mine)
            self._enter_commit(now_ns, ct)
            self._log(out, "debug", f"entering COMMIT state (ring {ct.ring_id}, members {_ids(ct.members)}).")
        elif ct.rotation == 1 and idx == 0 and all(e.filled for e in ct.entries):
            ct.rotation = 2
            self._enter_recovery(now_ns, ct, out)
        elif ct.rotation == 2 and self.state == COMMIT:
            self._enter_recovery(now_ns, ct, out)
        elif ct.rotation == 2 and idx == 0 and self.state == RECOVERY:
            self._start_first_token(now_ns, out)
            return
        else:
            return
        ct.token_seq += 1
        ct.memb_index = (idx + 1) % len(members)
        dest = members[ct.memb_index]
        if dest == self.node_id:
            self._on_commit_token(now_ns, ct, out, created=True)
            return
        self._send_unicast_token(now_ns, dest, encode_commit(ct, self.node_id, self.incarnation), out)
        self.stats["memb_commit_token_tx"] += 1

    def _fill_commit_entry(self, e: CommitEntry) -> None:
        e.incarnation = self.incarnation
        if not self.fresh:
            e.old_rep, e.old_seq = self.ring_id.rep, self.ring_id.seq
        e.old_aru = self.store.my_aru
        e.high_seq = self.store.high_seq
        e.safe_seq = min(self.safe_seq, e.old_aru)
        e.filled = True

    def _enter_commit(self, now_ns: int, ct: CommitToken) -> None:
        self.state = COMMIT
        self.stats["commit_entered"] += 1
        self.new_ring_id = ct.ring_id
        self.new_members = ct.members
        self.max_ring_seq = max(self.max_ring_seq, ct.ring_id.seq)
        self._cancel(T_JOIN, T_CONSENSUS)
        self._reset_token_timeout(now_ns)

    # -- RECOVERY ----------------------------------------------------------------------------------

    def _enter_recovery(self, now_ns: int, ct: CommitToken, out: list[Action]) -> None:
        """Plan which old-ring frames to resend so that every transitional member ends with the same set."""
        self.state = RECOVERY
        self.stats["recovery_entered"] += 1
        self._log(out, "debug", f"entering RECOVERY state (ring {ct.ring_id}).")
        self._commit_entries = [CommitEntry(e.node, e.incarnation, e.old_rep, e.old_seq, e.old_aru, e.high_seq,
                                            e.safe_seq, e.filled) for e in ct.entries]
        old = None if self.fresh else self.ring_id
        peers = [e for e in ct.entries if e.node == self.node_id or (old is not None and e.old_ring_id == old)]
        self.trans_members = tuple(sorted(e.node for e in peers))
        low = min(e.old_aru for e in peers)
        max_aru = max(e.old_aru for e in peers)
        max_high = max(e.high_seq for e in peers)
        # a SAFE old-ring message may be delivered before the transitional change if any mover knew it safe
        self._old_safe_seq = max(e.safe_seq for e in peers)
        designated = min(e.node for e in peers if e.old_aru == max_aru)
        self.recovery_queue = deque()
        if old is not None and low < max_high:
            for m in self.store.held_in(low, self.store.high_seq):
                if m.flags & MCAST_ENCAPSULATED:
                    continue  # a placeholder of my old ring's own RECOVERY: its content was delivered at that install
                if m.seq > max_aru or designated == self.node_id:
                    self.recovery_queue.append(m.raw)
        self.new_store = RingStore(ct.ring_id)
        self._my_set_retrans_flg = False
        self._retrans_flg_count = 0
        self._install_seq = 0
        self._new_ring_counters()
        self._reset_token_timeout(now_ns)

    def _new_ring_counters(self) -> None:
        self._last_token_seq = -1
        self._forwarded_seq = 0
        self._sent_prev = 0
        self._backlog_prev = 0
        self._seq_unchanged = 0
        self._last_visit_seq = -1
        self._safe_all_seen = False
        self._last_token_aru = -1
        self._fail_recv_count = 0
        self._held_token = None

    def _start_first_token(self, now_ns: int, out: list[Action]) -> None:
        """The commit token made its second rotation: the representative creates the new ring's token."""
        assert self.new_ring_id is not None
        tok = Token(self.node_id, self.incarnation, self.new_ring_id)
        self._last_sent = None
        self._self_token = tok

    def _recovery_progress(self, tok: Token) -> bool:
        """Corosync's retrans_flg protocol; True when this node may install the new ring now."""
        if self.recovery_queue and tok.retrans_flg == 0:
            tok.retrans_flg = 1
            self._my_set_retrans_flg = True
        elif not self.recovery_queue and self._my_set_retrans_flg:
            tok.retrans_flg = 0
            self._my_set_retrans_flg = False
        if tok.retrans_flg == 0:
            self._retrans_flg_count += 1
        else:
            self._retrans_flg_count = 0
        if self._retrans_flg_count == 2:
            self._install_seq = tok.seq
        # safe_seq >= install_seq: every member holds every recovery frame, so every mover has the same set
        return self._retrans_flg_count >= 3 and tok.safe_seq >= self._install_seq

    def _install(self, now_ns: int, out: list[Action]) -> None:
        """Deliver the old ring's messages around the transitional change, then start the new ring."""
        assert self.new_ring_id is not None and self.new_store is not None
        new_ring = self.new_ring_id
        old_store = self.store
        trans = self.trans_members
        prev = set(self.members)
        whole = self.frame_delivery
        n = deliver_frames(old_store, old_store.high_seq, self._old_safe_seq, self.assembler, self.ring_id, out,
                           whole_frames=whole)
        left = tuple(sorted(prev - set(trans)))
        out.append(ConfigChange(ConfigType.TRANSITIONAL, new_ring, trans, left, ()))
        n += deliver_frames(old_store, old_store.high_seq, _NO_LIMIT, self.assembler, new_ring, out,
                            only_senders=frozenset(trans), whole_frames=whole)
        self.stats["messages_delivered"] += n
        self.stats["fragments_dropped"] += self.assembler.reset()
        self.sendq.restart_partial()
        joined = tuple(sorted(set(self.new_members) - set(trans)))
        out.append(ConfigChange(ConfigType.REGULAR, new_ring, self.new_members, (), joined))
        text = f"A new membership ({new_ring}) was formed. Members"
        text += f" joined: {_ids(joined)}" if joined else ""
        text += f" left: {_ids(left)}" if left else ""
        self._log(out, "notice", text)
        unclean = set(left) - self.left_cleanly
        if unclean:
            self._log(out, "notice", f"Failed to receive the leave message. failed: {_ids(unclean)}")
        self.ring_id = new_ring
        self.fresh = False
        self.members = self.new_members
        self.store = self.new_store
        self.safe_seq = 0
        self.max_ring_seq = max(self.max_ring_seq, new_ring.seq)
        self.proc = set(self.members)
        self.fail = set()
        self._fail_ring.clear()
        self.left_cleanly = set()
        self.new_ring_id = None
        self.new_store = None
        self.recovery_queue.clear()
        self.state = OPERATIONAL
        self.stats["operational_entered"] += 1
        self._cancel(T_JOIN, T_CONSENSUS)
        self._reset_token_timeout(now_ns)
