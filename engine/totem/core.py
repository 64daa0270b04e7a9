"""TotemCore: the sans-IO Totem Single Ring Protocol state machine (see ``api.py`` for the contract).

This module holds the public calls, frame dispatch, the ORF token visit (sequencing,
retransmission, flow control, safe delivery, token hold) and the timers. Membership
(GATHER/COMMIT/RECOVERY/installation) is in ``membership.py``.
"""

from __future__ import annotations

from pycorosync.engine.totem.api import (
    Action,
    Guarantee,
    LogEvent,
    MessageTooBig,
    QueueFull,
    RingId,
    SendFrame,
    SendRun,
)
from pycorosync.engine.totem.base import (
    COMMIT,
    GATHER,
    INIT,
    LEFT,
    OPERATIONAL,
    RECOVERY,
    T_CONSENSUS,
    T_HOLD,
    T_JOIN,
    T_LEAVE,
    T_RETRANSMIT,
    T_TOKEN,
    T_WARNING,
)
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.flow import frames_allowed
from pycorosync.engine.totem.membership import Membership
from pycorosync.engine.totem.ordering import (
    RingStore,
    deliver_frames,
    make_deliver,
    make_deliver_frame,
    make_sendframe,
)
from pycorosync.engine.totem.wire import (
    HEADER,
    KIND_WHOLE,
    MCAST,
    MCAST_BODY,
    MCAST_ENCAPSULATED,
    MCAST_SAFE,
    MEMB_MERGE_DETECT,
    RTR_MAX,
    TOKEN_HOLD_CANCEL,
    CommitToken,
    Control,
    Join,
    Mcast,
    Token,
    WireError,
    decode,
    decode_mcast,
    encode_control,
    encode_encapsulated,
    encode_join,
)

__all__ = ["QueueFull", "MessageTooBig", "TotemCore"]

_MCAST_PREFIX = bytes((0xC5, 1, MCAST))
_GUARANTEES = tuple(Guarantee)
_LEAVE_RESENDS = 2


class TotemCore(Membership):
    """One node's Totem SRP protocol engine. Frames and ticks in, actions out; never raises on frame content.

    Accessors: ``state`` (corosync's state name), ``ring_id``, ``members``, ``my_aru``, ``high_seq``,
    ``stats`` (corosync's ``stats.srp.*`` names), ``queue_fill()``, ``msg_queue_avail``.

    ``throttled`` (set by the driver while this node's services are behind on deliveries): each token
    visit is held for a short while (a quarter of ``token_retransmit``, at most 20 ms) before it goes on,
    which slows every sender of the ring instead of letting this node buffer without bound.
    """

    throttled = False

    # -- public calls ----------------------------------------------------------------------------

    def start(self, now_ns: int) -> list[Action]:
        """Begin GATHER: announce myself and look for the others."""
        out: list[Action] = []
        if self.state != INIT:
            return out
        self._enter_gather(now_ns, out, "start")
        return out

    def submit(self, now_ns: int, payload: bytes, guarantee: Guarantee | int = Guarantee.AGREED) -> list[Action]:
        """Queue a message for total-order delivery; raises QueueFull or MessageTooBig (nothing queued)."""
        if self.state == LEFT:
            raise QueueFull("this node left the ring")
        g = int(guarantee)
        if not 0 <= g <= 3:
            raise ValueError(f"guarantee {guarantee!r} is not a cpg_guarantee_t value")
        was_empty = len(self.sendq) == 0
        self.sendq.push(bytes(payload), g)
        out: list[Action] = []
        if self.state == OPERATIONAL and was_empty:
            self._first_queued(now_ns, out)
        return out

    def submit_run(self, now_ns: int, items: list[tuple[bytes, int]]) -> tuple[int, list[Action]]:
        """``submit`` for each (payload, guarantee 0..3) in order until one would raise; returns how many
        were queued and the actions. The caller submits the one it stopped at alone, to get its error."""
        if self.state == LEFT:
            return 0, []
        was_empty = len(self.sendq) == 0
        taken = self.sendq.push_run(items)
        out: list[Action] = []
        if taken and was_empty and self.state == OPERATIONAL:
            self._first_queued(now_ns, out)
        return taken, out

    def _first_queued(self, now_ns: int, out: list[Action]) -> None:
        """A message went into an empty send queue of a ring in operation: get the token here soon."""
        if self._held_token is not None:
            if not self.throttled:
                self._release_hold(now_ns, out)
        elif self.node_id != self.members[0] and not self._hold_cancel_sent and self._ring_looks_idle(now_ns):
            # the ring looked idle on my last visit: the representative probably holds the token
            out.append(SendFrame(None, encode_control(TOKEN_HOLD_CANCEL, self.node_id, self.incarnation,
                                                      self.ring_id)))
            self.stats["token_hold_cancel_tx"] += 1
            self._hold_cancel_sent = True

    def leave(self, now_ns: int) -> list[Action]:
        """Leave cleanly: a join listing myself as failed lets peers reconfigure without a token timeout."""
        out: list[Action] = []
        if self.state in (LEFT, INIT):
            self.state = LEFT
            self._timers.clear()
            return out
        proc = frozenset(self.proc | set(self.members) | {self.node_id})
        fail = frozenset(self.fail | {self.node_id})
        self._leave_frame = encode_join(self.node_id, self.incarnation, self.ring_id, self.max_ring_seq, proc, fail,
                                        leave=True)
        out.append(SendFrame(None, self._leave_frame))
        self.stats["memb_join_tx"] += 1
        self.state = LEFT
        self.sendq.clear()
        self._timers.clear()
        self._held_token = None
        self._leave_resends = _LEAVE_RESENDS
        self._arm(T_LEAVE, now_ns + self._ms(self.cfg.join))
        self._log(out, "notice", "Leaving the ring")
        return out

    def reconfigure(self, config: TotemConfig) -> list[tuple[str, object, object]]:
        """A config reload: takes the run-time changeable values of ``config`` (``RELOADABLE_FIELDS``) and
        returns what changed as (field, old, new). Timers armed already keep their deadline; every later
        arm uses the new value, window_size/max_messages count from the next token. The ring stays."""
        new = self.cfg.reloaded(config)
        changed = self.cfg.changes(new)
        self.cfg = new
        return changed

    def on_timer(self, now_ns: int) -> list[Action]:
        """Run every timer due at ``now_ns``."""
        out: list[Action] = []
        for name, at in sorted(self._timers.items(), key=lambda kv: kv[1]):
            if at > now_ns or self._timers.get(name) != at:
                continue
            del self._timers[name]
            self._fire(now_ns, name, out)
        self._run_self_token(now_ns, out)
        return out

    def on_frame(self, now_ns: int, data: bytes) -> list[Action]:
        """Handle one frame from the network; malformed or foreign frames are counted and dropped."""
        out: list[Action] = []
        if self.state in (LEFT, INIT):
            return out
        try:
            frame: Mcast | Token | Join | CommitToken | Control
            if data[:3] == _MCAST_PREFIX:
                m = decode_mcast(data)
                store = self.store
                if (self.state == OPERATIONAL and m.ring_key == store.ring_key
                        and m.incarnation == self.known_incarnation.get(m.sender)):
                    # the hot path: a known peer's frame in my ring, next in order, nothing held or pending
                    seq = m.seq
                    if m.flags or seq != store.high_seq + 1 or store.delivered != store.high_seq \
                            or store.my_aru != store.high_seq:
                        self._on_mcast(now_ns, m, out)
                        return out
                    store.frames[seq] = m
                    store.high_seq = store.my_aru = seq
                    if store.miss_counts:
                        store.miss_counts.pop(seq, None)
                    stats = self.stats
                    stats["mcast_rx"] += 1
                    if self._last_sent is not None and seq > self._forwarded_seq:
                        self._token_seen()
                    if self.frame_delivery and m.whole:
                        out.append(make_deliver_frame(self.ring_id, m.sender, m))
                        store.delivered = seq
                        stats["messages_delivered"] += m.count
                        return out
                    entries = m.entries
                    if len(entries) == 1 and entries[0][0] == KIND_WHOLE:
                        e = entries[0]
                        out.append(make_deliver(self.ring_id, m.sender, e[2], _GUARANTEES[e[1]], e[3]))
                        store.delivered = seq
                        stats["messages_delivered"] += 1
                    elif len(entries) == 1:  # one piece of a large message: what _deliver does, directly
                        kind, guarantee, msg_id, piece, total = entries[0]
                        done = self.assembler.feed(m.sender, kind, guarantee, msg_id, piece, total)
                        store.delivered = seq
                        if done is not None:
                            out.append(make_deliver(self.ring_id, m.sender, done[0], _GUARANTEES[done[1]], done[2]))
                            stats["messages_delivered"] += 1
                    elif all(e[0] == KIND_WHOLE for e in entries):
                        ring, sender, make = self.ring_id, m.sender, make_deliver
                        out.extend([make(ring, sender, e[2], _GUARANTEES[e[1]], e[3]) for e in entries])
                        store.delivered = seq
                        stats["messages_delivered"] += len(entries)
                    else:
                        self._deliver(out)
                    return out
                frame = m
            else:
                frame = decode(data)
        except WireError:
            self.stats["rx_malformed"] += 1
            self.stats["rx_msg_dropped"] += 1
            return out
        sender = frame.sender
        if sender not in self._nodeset:
            self.stats["rx_msg_dropped"] += 1
            return out
        if sender == self.node_id:
            if frame.incarnation != self.incarnation:
                self.stats["rx_stale_incarnation"] += 1
                self.stats["rx_msg_dropped"] += 1
            return out  # my own multicast looped back: already handled when sent
        known = self.known_incarnation.get(sender)
        inc = frame.incarnation
        if known is None:
            self.known_incarnation[sender] = inc
        elif inc != known:
            # Only a join announces another incarnation (a restart); the latest join wins, so one bad
            # frame cannot lock a node out. Other frames of another incarnation are replays: dropped.
            if not isinstance(frame, Join):
                self.stats["rx_stale_incarnation"] += 1
                self.stats["rx_msg_dropped"] += 1
                return out
            self.known_incarnation[sender] = inc
            if inc > known and self.state == OPERATIONAL and sender in self.members:
                self._log(out, "notice", f"Node {sender} restarted (incarnation {inc})")
                self.stats["memb_join_rx"] += 1
                self._foreign(now_ns, sender, out)
                self._on_join_gather(now_ns, frame, out)
                return out
        if isinstance(frame, Mcast):
            self._on_mcast(now_ns, frame, out)
        elif isinstance(frame, Token):
            self._on_token(now_ns, frame, out)
        elif isinstance(frame, Join):
            self.stats["memb_join_rx"] += 1
            self._on_join(now_ns, frame, out)
        elif isinstance(frame, CommitToken):
            self._on_commit_token(now_ns, frame, out)
        else:
            self._on_control(now_ns, frame, out)
        self._run_self_token(now_ns, out)
        return out

    def in_order_store(self) -> RingStore | None:
        """The store a driver may extend itself with the next frames in order (see ``took_in_order``):
        the current ring's while OPERATIONAL with every frame received delivered and none missed, and
        the driver takes whole frames (``frame_delivery``); None otherwise."""
        store = self.store
        if (self.state != OPERATIONAL or not self.frame_delivery or store.miss_counts
                or store.delivered != store.high_seq or store.my_aru != store.high_seq):
            return None
        return store

    def took_in_order(self, high_seq: int, frames: int, messages: int) -> None:
        """The driver stored (in ``store.slab``) and delivered the ``frames`` frames after ``high_seq``
        of ``in_order_store()``, up to ``high_seq`` now, completing ``messages`` messages (the pieces
        of one it assembles itself, ``Assembler.external``): the state ``on_frame`` leaves after the
        same frames. Each was a well-formed MCAST of the current ring, without flags, from another node
        of its known incarnation, with the next seq."""
        store = self.store
        store.high_seq = store.my_aru = store.delivered = high_seq
        stats = self.stats
        stats["mcast_rx"] += frames
        stats["messages_delivered"] += messages
        if self._last_sent is not None and high_seq > self._forwarded_seq:
            self._token_seen()

    # -- frames ----------------------------------------------------------------------------------

    def _foreign(self, now_ns: int, sender: int, out: list[Action]) -> None:
        """A node of another ring showed up: gather with it (OPERATIONAL/GATHER); ignored in COMMIT/RECOVERY."""
        self.stats["rx_foreign"] += 1
        if self.state == OPERATIONAL or (self.state == GATHER and sender not in self.proc and sender not in self.fail):
            self.proc.add(sender)
            self._enter_gather(now_ns, out, f"foreign message from node {sender}")

    def _is_stale(self, sender: int, ring_id: RingId) -> bool:
        """A frame of an older ring of one of my members: late, not foreign."""
        return sender in self.members and ring_id.seq < self.ring_id.seq

    def _on_mcast(self, now_ns: int, m: Mcast, out: list[Action]) -> None:
        state = self.state
        if state == OPERATIONAL and m.ring_key == self.store.ring_key:
            store = self.store
            if not store.add(m):
                self.stats["rx_duplicate"] += 1
                return
            self.stats["mcast_rx"] += 1
            if self._last_sent is not None and m.seq > self._forwarded_seq:
                self._token_seen()
            if store.my_aru > store.delivered:
                self._deliver(out)
        elif state == RECOVERY and self.new_store is not None and m.ring_key == self.new_store.ring_key:
            if not self.new_store.add(m):
                self.stats["rx_duplicate"] += 1
                return
            self.stats["mcast_rx"] += 1
            if m.seq > self._forwarded_seq:
                self._token_seen()
            if m.flags & MCAST_ENCAPSULATED:
                self._unwrap(m)
        elif state == GATHER and m.ring_key == self.store.ring_key and not self.fresh:
            if self.store.add(m):  # a late frame of my old ring: it may spare a resend in RECOVERY
                self.stats["mcast_rx"] += 1
        elif state in (OPERATIONAL, GATHER) and not self._is_stale(m.sender, m.ring_id):
            self._foreign(now_ns, m.sender, out)
        else:
            self.stats["rx_msg_dropped"] += 1

    def _unwrap(self, m: Mcast) -> None:
        """An old-ring frame resent in RECOVERY: keep it if it belongs to my old ring."""
        try:
            inner = decode_mcast(m.raw[HEADER.size + MCAST_BODY.size:])
        except WireError:
            self.stats["rx_malformed"] += 1
            return
        if not self.fresh and inner.ring_key == self.store.ring_key and not inner.flags & MCAST_ENCAPSULATED:
            self.store.add(inner)

    def _on_join(self, now_ns: int, j: Join, out: list[Action]) -> None:
        self.max_ring_seq = max(self.max_ring_seq, j.ring_seq)
        state = self.state
        if state == GATHER:
            self._on_join_gather(now_ns, j, out)
        elif state == OPERATIONAL:
            if j.leave:
                if j.sender in self.members:
                    self.left_cleanly.add(j.sender)
                    self.fail.add(j.sender)
                    self._enter_gather(now_ns, out, f"leave message from node {j.sender}")
                return
            if self.node_id in j.fail or (j.sender in self.members and j.ring_seq < self.ring_id.seq):
                return  # it fails me, or a stale join from before my ring was formed
            self._enter_gather(now_ns, out, f"join from node {j.sender} during OPERATIONAL")
            self._on_join_gather(now_ns, j, out)
        elif state in (COMMIT, RECOVERY):
            assert self.new_ring_id is not None
            if not j.leave and j.ring_id == self.new_ring_id:
                # Its sender already installed the ring I am recovering into and gathers again. The
                # token that let it install lets me install too: aborting now would leave us in
                # different rings. It repeats its join every `join` ms; once installed I take it.
                return
            if j.sender in self.new_members and (j.leave or j.ring_seq >= self.new_ring_id.seq):
                self._log(out, "notice", f"Node {j.sender} restarted membership during {state}: back to GATHER")
                self._enter_gather(now_ns, out, f"join from node {j.sender} during {state}")
                self._on_join_gather(now_ns, j, out)

    def _on_control(self, now_ns: int, c: Control, out: list[Action]) -> None:
        if c.type == MEMB_MERGE_DETECT:
            self.stats["memb_merge_detect_rx"] += 1
            if c.ring_id != self.ring_id and not self._is_stale(c.sender, c.ring_id):
                self._foreign(now_ns, c.sender, out)
        elif c.type == TOKEN_HOLD_CANCEL:
            self.stats["token_hold_cancel_rx"] += 1
            if c.ring_id == self.ring_id and self._held_token is not None and not self.throttled:
                self._release_hold(now_ns, out)

    # -- the ORF token -----------------------------------------------------------------------------

    def _on_token(self, now_ns: int, tok: Token, out: list[Action]) -> None:
        if self.state == OPERATIONAL:
            store = self.store
        elif self.state == RECOVERY and self.new_store is not None:
            store = self.new_store
        else:
            self.stats["rx_msg_dropped"] += 1
            return
        if tok.ring_id != store.ring_id or tok.token_seq <= self._last_token_seq or tok.seq < store.high_seq:
            self.stats["rx_msg_dropped"] += 1
            return
        self.stats["orf_token_rx"] += 1
        self._visit(now_ns, tok, out)

    def _run_self_token(self, now_ns: int, out: list[Action]) -> None:
        """A one-node ring passes the token to itself; also the new ring's first token at the rep."""
        guard = 0
        while self._self_token is not None and guard < 100_000:
            tok = self._self_token
            self._self_token = None
            guard += 1
            self._visit(now_ns, tok, out)

    def _visit(self, now_ns: int, tok: Token, out: list[Action]) -> None:
        """My turn with the token (COROSYNC.md §2.3)."""
        stats = self.stats
        self._token_seen()
        self._last_token_seq = tok.token_seq
        if self._last_token_rx_ns is not None:
            gap_ms = (now_ns - self._last_token_rx_ns) // 1_000_000
            stats["mtt_rx_token"] = (stats["mtt_rx_token"] * 7 + gap_ms) // 8
        self._last_token_rx_ns = now_ns
        self._hold_cancel_sent = False
        recovering = self.state == RECOVERY
        if recovering and self._recovery_progress(tok):
            self._install(now_ns, out)
            recovering = False
        members = self.new_members if recovering else self.members
        store = self.new_store if recovering else self.store
        assert store is not None
        is_rep = members[0] == self.node_id
        if is_rep:
            tok.safe_seq = max(tok.safe_seq, min(tok.aru_acc, tok.seq))
            tok.aru_acc = store.my_aru
        if tok.safe_seq > self.safe_seq and not recovering:
            self.safe_seq = tok.safe_seq
        store.free(tok.safe_seq)
        backlog_now = len(self.recovery_queue) if recovering else self.sendq.backlog_frames
        allowed = frames_allowed(self.cfg.window_size, self.cfg.max_messages, tok.fcc, tok.backlog, backlog_now,
                                 self._backlog_prev, self._sent_prev)
        sent = 0
        if tok.rtr_list:
            keep = []
            for s in tok.rtr_list:
                m = store.get(s)
                if m is not None and sent < allowed:
                    out.append(SendFrame(None, m.raw))
                    stats["mcast_retx"] += 1
                    sent += 1
                else:
                    keep.append(s)
            tok.rtr_list = keep
        if allowed > sent and (self.recovery_queue if recovering else self.sendq):
            sent += self._send_new(tok, store, allowed - sent, recovering, out)
        if not is_rep:
            tok.aru_acc = min(tok.aru_acc, store.my_aru)
        # nothing can be missing when I hold every frame the token knows of (the common visit)
        missing = store.missing(tok.seq, self.cfg.miss_count_const) if tok.seq > store.my_aru else None
        if missing:
            rtr = tok.rtr_list
            added = [s for s in missing if s not in rtr][: RTR_MAX - len(rtr)]
            if added:
                rtr.extend(added)
                self._log(out, "debug", "Retransmit List: " + " ".join(f"{s:x}" for s in added))
        if store.my_aru < tok.aru or tok.aru_addr in (self.node_id, 0):
            tok.aru = store.my_aru
            tok.aru_addr = 0 if tok.aru == tok.seq else self.node_id
        if self._failed_to_receive(now_ns, tok, members, out):
            return
        tok.fcc = max(0, tok.fcc + sent - self._sent_prev)
        tok.backlog = max(0, tok.backlog + backlog_now - self._backlog_prev)
        self._sent_prev, self._backlog_prev = sent, backlog_now
        stats["avg_backlog_calc"] = (stats["avg_backlog_calc"] * 7 + tok.backlog) // 8
        stats["avg_token_workload"] = (stats["avg_token_workload"] * 7 + sent) // 8
        idle = tok.seq == self._last_visit_seq
        if idle:
            self._seq_unchanged += 1
        else:
            self._seq_unchanged = 0
            self._seq_changed_ns = now_ns
        self._last_visit_seq = tok.seq
        safe_all_seen_before = self._safe_all_seen
        self._safe_all_seen = tok.safe_seq >= tok.seq
        if not recovering:
            self._deliver(out)
        tok.token_seq += 1
        self._reset_token_timeout(now_ns)
        if is_rep and not recovering:
            if idle:
                self._maybe_merge_detect(now_ns, out)
            if self._should_hold(now_ns, tok, safe_all_seen_before):
                self._held_token = tok
                self._arm(T_HOLD, now_ns + self._ms(self.cfg.hold))
                return
        if self.throttled and not recovering and len(members) > 1:
            self._held_token = tok  # my services cannot keep up: the ring waits a little for them
            self._arm(T_HOLD, now_ns + self._ms(max(1, min(self.cfg.token_retransmit // 4, 20))))
            return
        if len(members) == 1 and not recovering and not self.sendq:
            self._held_token = tok  # a one-node ring: nothing to do until a submit or the hold timer
            self._arm(T_HOLD, now_ns + self._ms(self.cfg.hold))
            return
        self._forward_token(now_ns, tok, members, out)

    def _send_new(self, tok: Token, store: RingStore, budget: int, recovering: bool, out: list[Action]) -> int:
        """Multicast up to ``budget`` new frames, each with the next seq; returns how many."""
        me, inc, ring = self.node_id, self.incarnation, store.ring_id
        key = store.ring_key
        sent = 0
        if recovering:
            queue = self.recovery_queue
            while queue and sent < budget:
                seq = tok.seq + 1
                tok.seq = seq
                raw = encode_encapsulated(me, inc, ring, seq, queue.popleft())
                store.add(Mcast(me, inc, key, seq, MCAST_ENCAPSULATED, raw, ()))
                out.append(SendFrame(None, raw))
                sent += 1
        else:
            # the common header differs only in its flags between this visit's frames
            headers = {f: HEADER.pack(0xC5, 1, MCAST, f, me, inc, ring.rep, ring.seq) for f in (0, MCAST_SAFE)}
            pack_body = MCAST_BODY.pack
            sendq = self.sendq
            # a ring of one node visits its own token again before the driver sends what it wrote, and
            # frees those frames meanwhile: the frame writer is for rings of several nodes
            writer = self.frame_writer if len(self.members) > 1 else None
            while sent < budget:
                if writer is not None and sendq.head_begun():
                    # MIDDLE pieces of a large message: the driver makes and keeps those frames itself
                    plan = sendq.middle_run(budget - sent)
                    if plan is not None:
                        first = tok.seq + 1
                        n = writer.write_middles(store, plan, me, inc, first)
                        if n > 0:
                            sendq.advance(n * plan[2])
                            tok.seq = first + n - 1
                            store.add_run(first, tok.seq)
                            out.append(SendRun(key, first, n))
                            sent += n
                            continue
                packed = sendq.pack(budget - sent, stop_begun=writer is not None)
                if not packed:
                    break
                for flags, count, parts, whole, done in packed:
                    seq = tok.seq + 1
                    tok.seq = seq
                    parts.insert(0, headers[flags] + pack_body(seq, count))
                    raw = b"".join(parts)
                    m = Mcast(me, inc, key, seq, flags, raw, None, count, whole)  # entries made when used
                    if not whole:
                        m.own = done  # delivered from the messages themselves, not reassembled from the pieces
                    store.add(m)
                    out.append(make_sendframe(None, raw))
                    sent += 1
                if writer is None:
                    break
        self.stats["mcast_tx"] += sent
        return sent

    def _deliver(self, out: list[Action]) -> None:
        store = self.store
        if store.delivered >= store.my_aru:
            return  # every frame held in order was delivered already
        self.stats["messages_delivered"] += deliver_frames(store, store.my_aru, self.safe_seq, self.assembler,
                                                           self.ring_id, out, whole_frames=self.frame_delivery)

    def _failed_to_receive(self, now_ns: int, tok: Token, members: tuple[int, ...], out: list[Action]) -> bool:
        """The ring aru stuck on me for too long: I cannot receive; form a ring alone and merge back later."""
        if tok.aru == self._last_token_aru and tok.aru_addr != 0 and tok.aru < tok.seq:
            self._fail_recv_count += 1
        else:
            self._fail_recv_count = 0
            self._aru_stuck_since_ns = now_ns
        self._last_token_aru = tok.aru
        if tok.aru_addr != self.node_id or len(members) == 1 or self.state != OPERATIONAL:
            return False
        by_visits = self._fail_recv_count > self.cfg.fail_recv_const
        by_time = self._fail_recv_count > 2 and now_ns - self._aru_stuck_since_ns > self._ms(self.cfg.fail_recv_limit_ms)
        if not (by_visits or by_time):
            return False
        self.stats["failed_to_recv"] += 1
        self._log(out, "error", "FAILED TO RECEIVE")
        self.proc = {self.node_id}
        self.fail = set(members) - {self.node_id}
        self._enter_gather(now_ns, out, "failed to receive")
        return True

    def _should_hold(self, now_ns: int, tok: Token, safe_all_seen_before: bool) -> bool:
        """The representative keeps the token of an idle ring (COROSYNC.md §2.3): after more than
        ``seqno_unchanged_const`` rotations without a new message, as corosync; or, sooner, once the ring
        has been idle ``seqno_unchanged_ms`` (pycorosync): a ring of separate processes turns about ten
        times slower than corosync's, so the same count of rotations lasts ten times longer and a lightly
        loaded ring would never rest. The sooner hold also waits until nothing is left to finish: no
        retransmission asked, every member holding every frame, and the last frame safe on a token that
        has been all the way round (so every member delivered its SAFE messages)."""
        if self.sendq or (self.cfg.cancel_token_hold_on_retransmit and tok.rtr_list):
            return False
        if self._seq_unchanged > self.cfg.seqno_unchanged_const:
            return True
        ms = self.cfg.seqno_unchanged_ms
        return (ms > 0 and self._seq_unchanged >= 2 and safe_all_seen_before and not tok.rtr_list
                and tok.aru >= tok.seq and now_ns - self._seq_changed_ns >= self._ms(ms))

    def _ring_looks_idle(self, now_ns: int) -> bool:
        """Whether the representative may be holding the token, as my last visits saw the ring: then a
        message of mine asks for it (TOKEN_HOLD_CANCEL). A cancel it does not need is ignored; one it
        needed and did not get costs a wait of up to ``hold`` ms, so this errs toward sending one."""
        if self._seq_unchanged >= self.cfg.seqno_unchanged_const:
            return True
        ms = self.cfg.seqno_unchanged_ms
        return ms > 0 and self._seq_unchanged >= 1 and now_ns - self._seq_changed_ns >= self._ms(ms) // 2

    def _release_hold(self, now_ns: int, out: list[Action]) -> None:
        tok = self._held_token
        if tok is None:
            return
        self._held_token = None
        self._cancel(T_HOLD)
        if len(self.members) == 1:
            self._self_token = tok
            self._run_self_token(now_ns, out)
        elif self.sendq and not self.throttled and self.state == OPERATIONAL:
            # my own messages wait: visit the held token again instead of sending it round the ring first
            # (a rotation of length zero). The others added nothing to aru_acc since my last visit, so it
            # must not raise the safe point: it restarts from what every member is known to hold.
            tok.aru_acc = min(tok.aru_acc, tok.safe_seq)
            self._visit(now_ns, tok, out)
        else:
            self._forward_token(now_ns, tok, self.members, out)

    def _maybe_merge_detect(self, now_ns: int, out: list[Action]) -> None:
        last = self._last_merge_detect_ns
        if last is not None and now_ns - last < self._ms(self.cfg.merge):
            return
        self._last_merge_detect_ns = now_ns
        out.append(SendFrame(None, encode_control(MEMB_MERGE_DETECT, self.node_id, self.incarnation, self.ring_id)))
        self.stats["memb_merge_detect_tx"] += 1

    # -- timers ------------------------------------------------------------------------------------

    def _fire(self, now_ns: int, name: str, out: list[Action]) -> None:
        state = self.state
        if name == T_TOKEN:
            if state in (OPERATIONAL, COMMIT, RECOVERY):
                self.stats[f"{state.lower()}_token_lost"] += 1
                if state == OPERATIONAL:
                    self._log(out, "notice", f"A processor failed, forming new configuration: token timed out "
                                             f"({self.cfg.token} ms), waiting {self.cfg.consensus} ms for consensus.")
                self._enter_gather(now_ns, out, f"the token was lost in the {state} state")
        elif name == T_WARNING:
            if state == OPERATIONAL and not self._warned:
                self._warned = True
                waited = self.cfg.token * self.cfg.token_warning // 100
                self._log(out, "warning", f"Token has not been received in {waited} ms")
        elif name == T_RETRANSMIT:
            if self._last_sent is not None and state in (OPERATIONAL, COMMIT, RECOVERY):
                dest, frame = self._last_sent
                out.append(SendFrame(dest, frame))
                self.stats["token_retx"] += 1
                self._arm(T_RETRANSMIT, now_ns + self._ms(self.cfg.token_retransmit))
        elif name == T_HOLD:
            self._release_hold(now_ns, out)
        elif name == T_JOIN:
            if state == GATHER:
                self._on_join_timeout(now_ns, out)
        elif name == T_CONSENSUS:
            if state == GATHER:
                self._on_consensus_timeout(now_ns, out)
        elif name == T_LEAVE and state == LEFT and self._leave_resends > 0:
            self._leave_resends -= 1
            out.append(SendFrame(None, self._leave_frame))
            if self._leave_resends:
                self._arm(T_LEAVE, now_ns + self._ms(self.cfg.join))

    def log_event(self, text: str) -> LogEvent:
        """A LogEvent at notice level (helper for drivers that want to log in the core's voice)."""
        return LogEvent("notice", text)
