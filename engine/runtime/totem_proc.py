"""The totem process: drives the pure ``TotemCore`` with the node's rings, a monotonic clock and epoll.

    python -m pycorosync.engine.runtime.totem_proc      # started by the supervisor, PYCOROSYNC_NODE set

Inputs: ``rx`` (frames from the transport, record type = authenticated source node id) and every
``submit.<svc>``. Outputs: ``tx`` (record type = destination node id, 0 = all) and every
``deliver.<svc>``. Deliveries are routed by the service id in the 4-byte service header; BARRIERs
feed the sync coordinator (PROTOCOL.md §2-§5). The process sleeps in epoll on its doorbell with the
core's next deadline as the timeout: it never spins.

Also: the last ring seq is persisted in ``<state_dir or run_dir>/ringid_<nodeid>`` (u64, as corosync
keeps it) and handed to the core at start; an incarnation counter in ``incarnation_<nodeid>`` grows
by one per start; Totem's counters go to the node segment's stats block; ``totem.status.json`` in the
run dir says the ring, its members and whether sync completed (for tools and tests); SIGTERM makes
the core leave and the leave frames are flushed before exit so peers reconfigure at once. A config
reload (cmap's ``config.totemconfig_reload_in_progress`` back to 0, totem_reload.py) hands the file's
run-time totem values to the core without touching the ring and has every node process re-apply its
logging keys (SIGHUP through the supervisor).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import logging
import os
import select
import signal
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pycorosync.engine.runtime import records as rec
from pycorosync.engine.runtime.kernels import deliver_entries, deliver_frames, scan_entries
from pycorosync.engine.runtime.layout import RUNTIME_BASE, RUNTIME_COUNTERS, NodeRings
from pycorosync.engine.runtime.rxfast import STOP_CORE, STOP_EMPTY, STOP_FRAME, RxPath
from pycorosync.engine.runtime.sync import SendBarrier, SyncCoordinator, SyncLog, ToService
from pycorosync.engine.runtime.totem_reload import ConfigReloadWatch, signal_supervisor_reload
from pycorosync.engine.runtime.totem_stats import SchedMissCheck, SchedMissLog, TokenRotation
from pycorosync.engine.totem import wire
from pycorosync.engine.totem.api import (
    Action,
    ConfigChange,
    ConfigType,
    Deliver,
    DeliverFrame,
    Guarantee,
    LogEvent,
    MessageTooBig,
    QueueFull,
    RingId,
    SendFrame,
    SendRun,
)
from pycorosync.engine.totem.base import OPERATIONAL
from pycorosync.engine.totem.config import RELOADABLE_FIELDS, TotemConfig
from pycorosync.engine.totem.core import TotemCore
from pycorosync.engine.totem.stats import COUNTER_NAMES
from pycorosync.engine.totem.wire import ENTRY_BYTES, KIND_WHOLE, MCAST_HEADER_BYTES
from pycorosync.ipc.ring import RingSet

log = logging.getLogger("TOTEM")
sync_log = logging.getLogger("SYNC")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO + 5, "warning": logging.WARNING,
           "error": logging.ERROR}
_SUBMIT_MCAST_HEADER_BYTES = rec.SUBMIT_MCAST_HEADER.size
SUBMITS_PER_ROUND = 512  # records taken off one submit ring per round: one busy service cannot starve the others
RX_PER_ROUND = 256
TX_BACKLOG_FRAMES = 16384  # frames kept while tx is full; past it the oldest go (Totem retransmits them)
DELIVER_PAUSE_BYTES = 32 << 20  # a deliver backlog this big stops local submits until it drains
STATS_INTERVAL_NS = 1_000_000_000
BLOCKED_POLL_S = 0.005  # a submit refused by a full send queue is retried this often
LEAVE_FLUSH_S = 1.0
_U64 = struct.Struct("<Q")
_LAST_TOKEN_SLOT = RUNTIME_COUNTERS.index("last_token_rx_ns")
_MS_FIELDS = frozenset(["token", "token_retransmit", "hold", "join", "merge", "consensus", "fail_recv_ms",
                        "seqno_unchanged_ms", "token_coefficient"])


class Bells:
    """The node's doorbells by process name; ringing an absent one is a no-op."""

    def __init__(self, fds: Mapping[str, int]) -> None:
        self.fds = dict(fds)

    def ring(self, name: str) -> None:
        fd = self.fds.get(name, -1)
        if fd >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.eventfd_write(fd, 1)


class TotemRuntime:
    """One node's Totem driver over its rings: ``pump(now_ns)`` does all pending work and returns the
    timeout (seconds, None = no timer) to sleep for; the process main owns the epoll around it."""

    def __init__(self, core: TotemCore, rings: NodeRings, bells: Bells, service_ids: Mapping[str, int],
                 sync_services: Sequence[str], status_path: Path | None = None,
                 on_ring: Callable[[int], None] | None = None,
                 stats_table: tuple[Any, int] | None = None, rx_fast: bool = True) -> None:
        self.core = core
        self.rings = rings
        self.bells = bells
        self.nodeid = core.node_id
        self.service_ids = dict(service_ids)  # name -> id, services with rings
        self.service_names = {v: k for k, v in self.service_ids.items()}
        core.frame_delivery = True  # whole frames of messages come as DeliverFrame (see _deliver_frame)
        wire.use_entry_scanner(scan_entries)  # received frames' entries are checked compiled, made when used
        self.sync = SyncCoordinator(core.node_id, [self.service_ids[s] for s in sync_services],
                                    self.service_ids.values())
        self.status_path = status_path
        self.on_ring = on_ring
        self.tx_backlog: collections.deque[tuple[int, bytes]] = collections.deque()
        # submit records taken off their ring that the core did not accept yet (at most one batch per service)
        self.pending_submits: dict[str, collections.deque[tuple[int, bytes]]] = {
            s: collections.deque() for s in self.service_ids}
        self._svc_headers = {s: rec.service_header(sid) for s, sid in self.service_ids.items()}
        self.deliver_backlog: dict[str, collections.deque[tuple[int, bytes]]] = {
            s: collections.deque() for s in self.service_ids}
        self.deliver_backlog_bytes = dict.fromkeys(self.service_ids, 0)
        # the inbound rings, checked and armed with one kernel call: bit 0 the rx ring, bit 1 + i the submit
        # ring of the i-th service of ``_submit_rings``
        self._submit_rings = tuple(rings.submit.items())
        self._inbound = RingSet((rings.rx, *rings.submit.values()))
        self._ready_at_wake = -1  # RingSet.ready() as disarm() found it (-1: read it again)
        # sync control messages to multicast (BARRIER, SERVICE_BUILD) as (ring they belong to, payload)
        self.pending_barriers: list[tuple[RingId, bytes]] = []
        self.counters = dict.fromkeys(RUNTIME_COUNTERS, 0)
        self.last_regular: ConfigChange | None = None
        self.submit_blocked = False
        self._wake: set[str] = set()  # consumers of tx / deliver.<svc> written to in this batch
        self._wake_producer: set[str] = set()  # producers of rx / submit.<svc> waiting for room
        self._bad_logged: set[str] = set()
        self._next_stats_ns = 0
        # measured here, not by the core: token rotations into this process's row of the node stats table
        # (``stats_table`` = (StatsTable, slot); ipc/stats.py), late loop runs into the schedmiss slots
        self.stats_table = None if stats_table is None else stats_table[0]
        if stats_table is None:
            self.rotation = TokenRotation()
        else:
            table, slot = stats_table
            self.rotation = TokenRotation(table.cells[slot], table.f64[slot])
        self._orf_rx_seen = 0
        self.schedmiss = SchedMissLog(rings.stats) if len(rings.stats) else None
        self.sched_check = SchedMissCheck(core.cfg.token, time.monotonic_ns())
        self._tx_blocked_at = -1  # frames_tx when the tx ring first refused a frame (-1: it takes them)
        self.reload_watch: ConfigReloadWatch | None = None  # set by the process main (needs cmap)
        # the compiled receive path (None: every frame through the core's on_frame)
        self.rx_path: RxPath | None = None
        if rx_fast:
            deliver = {sid: rings.deliver[name] for name, sid in self.service_ids.items()}
            self.rx_path = RxPath(core, rings.rx, deliver, rec.KIND_MESSAGE, rec.DELIVER_MESSAGE)
            core.frame_writer = self.rx_path  # the frames of MIDDLE pieces of large messages too
        self._closed_services: frozenset[int] = frozenset()
        self.config_reloads = 0

    # -- one round ------------------------------------------------------------------------------
    def start(self, now_ns: int) -> None:
        self.write_status()
        self.apply(now_ns, self.core.start(now_ns))

    def pump(self, now_ns: int) -> float | None:
        """Does every pending piece of work; returns how long the loop may sleep (seconds, None = forever)."""
        # housekeeping first: a loop kept busy by traffic (the 0.0 return below) must still do it
        if now_ns >= self.sched_check.next_ns:
            self._check_scheduling(now_ns)
        if now_ns >= self._next_stats_ns:
            self.write_stats()
            self._next_stats_ns = now_ns + STATS_INTERVAL_NS
            watch = self.reload_watch
            if watch is not None and watch.client is None:
                watch.tick(now_ns)
                if watch.client is not None:
                    self.write_status()  # says the reload is tracked now
        for _ in range(64):  # bounded: the loop comes back after polling its other fds
            # a pass reads only the inbound rings that hold records (one kernel call tells which); after a
            # pass that did something another one runs, so what came in meanwhile is read before sleeping
            ready = self._ready_at_wake
            if ready < 0:
                ready = self._inbound.ready()
            else:
                self._ready_at_wake = -1  # the mask disarm() read: one kernel call fewer per wake-up
            did = self._flush_outputs() if self.tx_backlog or any(self.deliver_backlog.values()) else False
            # submits first: a token read below then carries every message the services gave so far
            did |= self._read_submits(now_ns, ready)
            if ready & 1:
                did |= self._read_rx(now_ns)
            deadline = self.core.next_deadline_ns()
            if deadline is not None and deadline <= now_ns:
                self.apply(now_ns, self.core.on_timer(now_ns))
                did = True
            if self.pending_barriers:
                did |= self._retry_barriers(now_ns)
            self._ring_bells()
            if not did:
                break
            now_ns = time.monotonic_ns()
        else:
            self._ring_bells()
            return 0.0
        timeout = None
        deadline = self.core.next_deadline_ns()
        if deadline is not None:
            timeout = max(0.0, (deadline - now_ns) / 1e9)
        # the stats tick rides on other wake-ups; it forces one only a whole interval late
        stats_left = max(0.0, (self._next_stats_ns + STATS_INTERVAL_NS - now_ns) / 1e9)
        timeout = stats_left if timeout is None else min(timeout, stats_left)
        timeout = min(timeout, self.sched_check.due_in_s(now_ns))
        if self.submit_blocked or self.pending_barriers or self.tx_backlog:
            timeout = min(timeout, BLOCKED_POLL_S)
        return timeout

    def _token_coming(self) -> bool:
        """True while messages of this node wait for the token of a ring of several nodes: the token's
        arrival wakes this loop, and submitting more changes nothing before it (the core sends no
        hold cancel for a queue that was not empty), so the services need not ring totem per message."""
        core = self.core
        return core.state == OPERATIONAL and len(core.members) > 1 and len(core.sendq) > 0

    def arm(self) -> bool:
        """Before sleeping: arm every inbound ring; False = one has data (do not sleep). The submit rings
        are not armed while ``_token_coming()``: the submits are read when the token comes."""
        return self._inbound.arm(1 if self._token_coming() else None)

    def disarm(self) -> None:
        """After waking: clears the inbound rings' flags; the next pass starts from what they hold now."""
        self._ready_at_wake = self._inbound.disarm()

    # -- actions ----------------------------------------------------------------------------------
    def apply(self, now_ns: int, actions: Sequence[Action]) -> None:
        """Carries out the core's actions: the frames first, in order, and the transport is woken at once;
        then deliveries, configuration changes and logs, in order. So the token goes on
        before this node's deliveries are routed (corosync delivers after forwarding the token too): a
        rotation does not wait for every node's local deliveries. Frames and local deliveries are
        independent: the order that matters, of deliveries and changes among themselves, is kept."""
        later: list[Action] | None = None
        frames: list[tuple[int, bytes]] = []
        me = self.nodeid
        for a in actions:
            if isinstance(a, SendFrame):
                dest = a.dest
                if dest != me:
                    frames.append((0 if dest is None else dest, a.data))
            elif isinstance(a, SendRun):
                if frames:  # the frames before it go first
                    self._send_frames(frames)
                    frames = []
                self._send_run(a)
            elif later is None:
                later = [a]
            else:
                later.append(a)
        if frames:
            self._send_frames(frames)
        if "transport" in self._wake:
            # at once, not at the end of the pass: the token goes on while this loop still works
            self._wake.discard("transport")
            if self.rings.tx.needs_wake():
                self.bells.ring("transport")
        if later is None:
            return
        # service messages are batched per service (one ring write each); anything else first flushes the
        # batch, so every service sees its records in the core's order
        batch: dict[str, list[tuple[int, bytes]]] = {}
        split, header_of = rec.split_service_payload, rec.encode_message_header
        names = self.service_names
        run: list[DeliverFrame] = []  # consecutive whole frames of one ring: one kernel call for all
        for a in later:
            if isinstance(a, DeliverFrame):
                if batch:
                    self._to_services(batch)
                    batch = {}
                if run and a.ring_id != run[0].ring_id:
                    self._deliver_frames(now_ns, run)
                    run = []
                run.append(a)
                continue
            if run:
                self._deliver_frames(now_ns, run)
                run = []
            if isinstance(a, Deliver):
                try:
                    service_id, kind, body = split(a.payload)
                except rec.RecordError as exc:
                    self._bad("delivered", exc)
                    continue
                name = names.get(service_id)
                if kind == rec.KIND_MESSAGE and name is not None:
                    record = (rec.DELIVER_MESSAGE, header_of(a.sender, a.ring_id, int(a.guarantee)) + body)
                    if name in batch:
                        batch[name].append(record)
                    else:
                        batch[name] = [record]
                    continue
            if batch:
                self._to_services(batch)
                batch = {}
            if isinstance(a, Deliver):
                self._route(now_ns, a)
            elif isinstance(a, ConfigChange):
                self._confchg(now_ns, a)
            elif isinstance(a, LogEvent):
                log.log(_LEVELS.get(a.level, logging.INFO), "%s", a.text)
        if run:
            self._deliver_frames(now_ns, run)
        if batch:
            self._to_services(batch)

    def _deliver_frames(self, now_ns: int, run: list[DeliverFrame]) -> None:
        """The messages of consecutive frames of one ring, in order: laid end to end and written by one
        kernel call while they are messages of the service the first one is for (the records
        ``_deliver_frame`` makes); from an entry it does not take on, frame by frame."""
        if len(run) == 1:
            self._deliver_frame(now_ns, run[0])
            return
        buf: np.ndarray[Any, Any] | None = None
        starts = counts = senders = np.zeros(0, np.int64)
        names = self.service_names
        ring_id = run[0].ring_id
        at = MCAST_HEADER_BYTES + ENTRY_BYTES  # the first entry's payload starts with its service id
        i = 0
        while i < len(run):
            d = run[i]
            data = d.frame.raw
            name = names.get(data[at]) if at < len(data) else None
            if name is None or self.deliver_backlog[name]:
                self._deliver_frame(now_ns, d)
                i += 1
                continue
            if buf is None:
                raws = [f.frame.raw for f in run]
                buf = np.frombuffer(b"".join(raws), np.uint8)
                starts = np.fromiter(itertools.accumulate(map(len, raws), initial=0), np.int64, len(run) + 1)
                counts = np.fromiter([f.frame.count for f in run], np.int64, len(run))
                senders = np.fromiter([f.sender for f in run], np.int64, len(run))
            ring = self.rings.deliver[name]
            stop, done, off = deliver_frames(buf, starts, counts, senders, i, MCAST_HEADER_BYTES, ring.array,
                                             ring.offset, ring.capacity, data[at], rec.KIND_MESSAGE, KIND_WHOLE,
                                             rec.DELIVER_MESSAGE, ring_id.rep, ring_id.seq)
            if stop > i or done:
                self._wake.add(name)
            if stop >= len(run):
                return
            self._deliver_frame(now_ns, run[stop], done, off)
            i = stop + 1

    def _deliver_frame(self, now_ns: int, d: DeliverFrame, first: int = 0, off: int = MCAST_HEADER_BYTES) -> None:
        """The messages of one frame, in order (from entry ``first``, at byte ``off``): runs of one
        service's messages written into its deliver ring by a kernel (the records ``_route`` makes),
        anything else (another kind of message, a service with a backlog, a full ring, a malformed
        payload) one at a time through ``_route``."""
        data = d.frame.raw
        count = d.frame.count
        frame: np.ndarray[Any, Any] | None = None
        i = first
        names = self.service_names
        ring_id = d.ring_id
        while i < count:
            # the entry's payload starts with its service id (the kernel takes no payload too short for it)
            at = off + ENTRY_BYTES
            name = names.get(data[at]) if at < len(data) else None
            if name is not None and not self.deliver_backlog[name]:
                ring = self.rings.deliver[name]
                if frame is None:
                    frame = np.frombuffer(data, np.uint8)
                done, off = deliver_entries(frame, off, count - i, ring.array, ring.offset, ring.capacity,
                                            data[at], rec.KIND_MESSAGE, KIND_WHOLE, rec.DELIVER_MESSAGE,
                                            d.sender, ring_id.rep, ring_id.seq)
                if done:
                    self._wake.add(name)
                    i += done
                    continue
            e = d.entries[i]
            self._route(now_ns, Deliver(ring_id, d.sender, e[2], Guarantee(e[1]), e[3]))
            off += ENTRY_BYTES + len(e[3])
            i += 1

    def _send_frames(self, frames: list[tuple[int, bytes]]) -> None:
        """Frames (destination node id, 0 = everyone; bytes) in order into the tx ring with one publish;
        what does not fit waits in ``tx_backlog`` (the oldest dropped past TX_BACKLOG_FRAMES: Totem
        retransmits what a peer misses)."""
        count = len(frames)
        self.counters["frames_tx"] += count
        backlog = self.tx_backlog
        taken = 0
        if not backlog:
            taken = self.rings.tx.push_batch(frames)
            if taken:
                self._wake.add("transport")
            if taken == count:
                return
            self._tx_blocked_at = self.counters["frames_tx"] - count + taken
        backlog.extend(frames[taken:] if taken else frames)
        while len(backlog) > TX_BACKLOG_FRAMES:
            backlog.popleft()

    def _send_run(self, run: SendRun) -> None:
        """The frames of a ``SendRun`` (made and kept by ``rx_path``) in order into the tx ring with one
        publish; what does not fit waits in ``tx_backlog`` as ``_send_frames`` has it."""
        assert self.rx_path is not None
        taken, rest = self.rx_path.push_run(run.ring_key, run.first, run.count,
                                            None if self.tx_backlog else self.rings.tx)
        if taken:
            self.counters["frames_tx"] += taken
            self._wake.add("transport")
        if rest:
            self._send_frames([(0, raw) for raw in rest])

    def _route(self, now_ns: int, d: Deliver) -> None:
        try:
            service_id, kind, body = rec.split_service_payload(d.payload)
            if kind == rec.KIND_BARRIER:
                self._sync_outputs(now_ns, self.sync.on_barrier(d.sender, service_id, rec.decode_ring(body)))
                return
            if kind == rec.KIND_SERVICE_BUILD:
                self._sync_outputs(now_ns, self.sync.on_resync(rec.decode_ring(body, "SERVICE_BUILD")))
                return
            if kind != rec.KIND_MESSAGE:
                return
        except rec.RecordError as exc:
            self._bad("delivered", exc)
            return
        name = self.service_names.get(service_id)
        if name is None:
            self._bad(f"service {service_id}", rec.RecordError(f"message for service {service_id}, not run here"))
            return
        header = rec.encode_message_header(d.sender, d.ring_id, int(d.guarantee))
        self._to_service(name, rec.DELIVER_MESSAGE, header + body)

    def _confchg(self, now_ns: int, change: ConfigChange) -> None:
        record = rec.ConfchgRecord(change.type, change.ring_id, change.members, change.left, change.joined)
        rtype, payload = rec.encode_deliver(record)
        for name in self.service_ids:
            self._to_service(name, rtype, payload)
        self.rotation.restart()
        if change.type == ConfigType.REGULAR:
            self.last_regular = change
            self.counters["ring_seq"] = change.ring_id.seq
            self.counters["members"] = len(change.members)
            if self.on_ring is not None:
                self.on_ring(change.ring_id.seq)
        self._sync_outputs(now_ns, self.sync.on_confchg(change))
        self.write_status()

    def _sync_outputs(self, now_ns: int, outs: Sequence[object]) -> None:
        for out in outs:
            if isinstance(out, ToService):
                name = self.service_names.get(out.service_id)
                if name is not None:
                    rtype, payload = rec.encode_deliver(out.record)
                    self._to_service(name, rtype, payload)
                record = out.record
                if isinstance(record, rec.SyncRecord) and record.rtype == rec.DELIVER_SYNC_COMPLETE:
                    self.counters["sync_completed"] += 1
                    self.write_status()
            elif isinstance(out, SendBarrier):
                self.pending_barriers.append((out.ring_id, rec.barrier_payload(out.service_id, out.ring_id)))
                self._retry_barriers(now_ns)
            elif isinstance(out, SyncLog):
                sync_log.log(_LEVELS.get(out.level, logging.INFO), "%s", out.text)
        self.counters["sync_aborted"] = self.sync.aborted

    def _retry_barriers(self, now_ns: int) -> bool:
        did = False
        while self.pending_barriers:
            ring_id, payload = self.pending_barriers[0]
            if ring_id != self.sync.ring_id:
                self.pending_barriers.pop(0)
                continue
            try:
                actions = self.core.submit(now_ns, payload)
            except QueueFull:
                return did
            self.pending_barriers.pop(0)
            did = True
            self.apply(now_ns, actions)
        return did

    def _to_services(self, batch: Mapping[str, list[tuple[int, bytes]]]) -> None:
        """``_to_service`` for many records: each service's list in one ring write, the rest to its backlog."""
        for name, records in batch.items():
            backlog = self.deliver_backlog[name]
            if not backlog:
                ring = self.rings.deliver[name]
                try:
                    n = ring.push_batch(records)
                except ValueError:  # one is larger than the ring can ever carry: one at a time, it is refused
                    for rtype, payload in records:
                        self._to_service(name, rtype, payload)
                    continue
                if n:
                    self._wake.add(name)
                    if n == len(records):
                        continue
                    records = records[n:]
            backlog.extend(records)
            self.deliver_backlog_bytes[name] += sum(len(p) for _t, p in records)

    def _to_service(self, name: str, rtype: int, payload: bytes) -> None:
        backlog = self.deliver_backlog[name]
        if not backlog:
            try:
                if self.rings.deliver[name].push(rtype, payload):
                    self._wake.add(name)
                    return
            except ValueError as exc:  # larger than the ring can ever carry
                self._bad(f"deliver.{name}", exc)
                return
        backlog.append((rtype, payload))
        self.deliver_backlog_bytes[name] += len(payload)

    # -- rings --------------------------------------------------------------------------------------
    def _flush_outputs(self) -> bool:
        did = False
        tx = self.rings.tx
        while self.tx_backlog:
            dest, frame = self.tx_backlog[0]
            if not tx.push(dest, frame):
                tx.arm_producer(len(frame))
                break
            self.tx_backlog.popleft()
            self._wake.add("transport")
            did = True
        for name, backlog in self.deliver_backlog.items():
            ring = self.rings.deliver[name]
            while backlog:
                rtype, payload = backlog[0]
                if not ring.push(rtype, payload):
                    ring.arm_producer(len(payload))
                    break
                backlog.popleft()
                self.deliver_backlog_bytes[name] -= len(payload)
                self._wake.add(name)
                did = True
        self.counters["tx_backlog"] = len(self.tx_backlog)
        self.counters["deliver_backlog"] = sum(len(b) for b in self.deliver_backlog.values())
        return did

    def _read_rx(self, now_ns: int) -> bool:
        """Up to RX_PER_ROUND frames: runs of in-order frames of whole messages by the compiled path
        (``rxfast``), every other frame through the core's ``on_frame``; True when it read any."""
        rx = self.rings.rx
        core = self.core
        budget = RX_PER_ROUND
        fast = self.rx_path
        while budget > 0:
            if budget < RX_PER_ROUND and rx.empty():
                break  # two plain loads: a frame published meanwhile is seen by the next pass or by arm()
            closed = self._closed_services
            reason = STOP_CORE
            if fast is not None:
                if any(self.deliver_backlog.values()):
                    closed = frozenset(self.service_ids[n] for n, b in self.deliver_backlog.items() if b)
                head = rx.peek()
                if head is None:
                    break
                view = head[1]
                if len(view) > 2 and view[2] == wire.MCAST:
                    taken, written, reason = fast.take(core, budget, closed)
                    if taken:
                        budget -= taken
                        self.counters["frames_rx"] += taken
                        self.counters["frames_rx_compiled"] += taken
                        self._wake.update(self.service_names[sid] for sid in written)
                    if reason == STOP_EMPTY or budget == 0:
                        break
                else:
                    reason = STOP_FRAME  # a token or a membership frame: the core's, no compiled call for it
            # the general way: the frame the compiled path stopped at; while the core does not allow that
            # path, frames one at a time until it does; without it (or while a service has a backlog) a batch
            on_frame = core.on_frame
            actions: list[Action] = []
            if fast is None or closed:
                items = rx.pop_batch(budget)
                for _src, frame in items:
                    actions += on_frame(now_ns, frame)
                n = len(items)
            else:
                n = 0
                while n < budget:
                    item = rx.pop()
                    if item is None:
                        break
                    n += 1
                    actions += on_frame(now_ns, item[1])
                    if reason != STOP_CORE or core.in_order_store() is not None:
                        break
            if not n:
                break
            budget -= n
            self.counters["frames_rx"] += n
            # one apply for the batch: a token behind the multicasts it covers goes on before their deliveries
            self.apply(now_ns, actions)
            # one token circulates: a batch holds at most one that the core took (duplicates are not counted)
            orf_rx = core.stats["orf_token_rx"]
            if orf_rx != self._orf_rx_seen:
                self._orf_rx_seen = orf_rx
                self._token_received(now_ns)
        if budget == RX_PER_ROUND:
            return False
        if rx.producer_needs_wake():
            self._wake_producer.add("transport")
        return True

    def _token_received(self, now_ns: int) -> None:
        self.rotation.record(now_ns)
        stats = self.rings.stats
        if len(stats):
            stats[RUNTIME_BASE + _LAST_TOKEN_SLOT] = now_ns

    def _check_scheduling(self, now_ns: int) -> None:
        """corosync's scheduler-pause check (totem_stats.py): a late run is logged and kept for cmap."""
        gap_ms = self.sched_check.check(now_ns)
        if gap_ms is None:
            return
        stamp_ms = time.time_ns() // 1_000_000
        if self.schedmiss is not None:
            self.schedmiss.record(stamp_ms, gap_ms)
        log.warning("totem process was not scheduled (@%d) for %0.4f ms (threshold is %0.4f ms). "
                    "Consider token timeout increase.", stamp_ms, gap_ms, self.sched_check.threshold_ns / 1e6)

    # -- config reload ------------------------------------------------------------------------------
    def reload_config(self, keys: Mapping[str, object], quiet: bool = False) -> list[tuple[str, object, object]]:
        """A config reload: the run-time totem values of ``keys`` (derived as at start) go to the core; what
        changed is logged corosync-style and shown in the status file. The ring is never re-formed.
        ``quiet``: a check that finds nothing changed says nothing (the re-read after connecting to cmap)."""
        try:
            new = TotemConfig.from_keys(keys)
        except ValueError as exc:
            log.error("config reload: totem settings not applied: %s", exc)
            return []
        changed = self.core.reconfigure(new)
        if quiet and not changed:
            return changed
        self.config_reloads += 1
        for name, old, value in changed:
            unit = " ms" if name in _MS_FIELDS else ""
            log.log(_LEVELS["notice"], "%s changed from %s to %s%s", name, old, value, unit)
        if any(name == "token" for name, _old, _new in changed):
            self.sched_check = SchedMissCheck(self.core.cfg.token, time.monotonic_ns())
        if not changed:
            log.info("config reload: no totem value changed")
        self.write_status()
        return changed

    def _read_submits(self, now_ns: int, ready: int = -1) -> bool:
        """Takes a batch off every submit ring (one publish each) and hands it to the core in order; what
        the core refuses (QueueFull) waits in ``pending_submits`` and no more is read from that ring.
        ``ready``: the ``RingSet.ready()`` mask of the inbound rings; a submit ring whose bit is clear is
        not looked at (its records wait for the next pass)."""
        did = False
        self.submit_blocked = False
        behind = max(self.deliver_backlog_bytes.values(), default=0) > DELIVER_PAUSE_BYTES
        if behind != self.core.throttled:
            self.core.throttled = behind  # slows the whole ring (PROTOCOL.md §5)
            self.counters["deliver_throttled"] += int(behind)
            log.log(logging.INFO if behind else logging.DEBUG,
                    "deliveries to services %s: %s the ring", "behind" if behind else "caught up",
                    "throttling" if behind else "no longer throttling")
        if behind:
            self.submit_blocked = True  # a service is slow: stop feeding the ring from this node
            return False
        bit = 1
        for name, ring in self._submit_rings:
            bit <<= 1
            pending = self.pending_submits[name]
            if not pending:
                if not ready & bit:
                    continue
                items = ring.pop_batch(SUBMITS_PER_ROUND)
                if not items:
                    continue
                did = True
                if ring.producer_needs_wake():
                    self._wake_producer.add(name)
                pending.extend(items)
            sid = self.service_ids[name]
            while pending:
                if pending[0][0] == rec.SUBMIT_MCAST and self._submit_mcast_run(now_ns, name, pending):
                    did = True
                    continue
                rtype, data = pending[0]
                if not self._submit_record(now_ns, name, sid, rtype, data):
                    self.submit_blocked = True
                    break
                pending.popleft()
                did = True
        return did

    def _submit_mcast_run(self, now_ns: int, name: str, pending: collections.deque[tuple[int, bytes]]) -> bool:
        """The SUBMIT_MCAST records at the head of ``pending`` into the core at once, each as
        ``_submit_record`` would; True if some went in. A record it stops at (malformed, too big, the queue
        full) is left at the head for ``_submit_record``, which reports it."""
        header = self._svc_headers[name]
        skip = _SUBMIT_MCAST_HEADER_BYTES
        sendq = self.core.sendq
        room = sendq.room_bytes()  # build no more than can go in
        items: list[tuple[bytes, int]] = []
        for rtype, data in pending:
            if rtype != rec.SUBMIT_MCAST or len(data) < skip or data[0] > 3:
                break
            size = len(header) + len(data) - skip
            if not items and not sendq.takes(size):
                return False  # nothing copied: ``_submit_record`` refuses it the same way, and counts it
            room -= len(data)
            if room < 0 and items:
                break
            items.append((header + memoryview(data)[skip:], data[0]))
        taken, actions = self.core.submit_run(now_ns, items)
        for _ in range(taken):
            pending.popleft()
        self.counters["submits"] += taken
        if actions:
            self.apply(now_ns, actions)
        return taken > 0

    def _submit_record(self, now_ns: int, name: str, sid: int, rtype: int, data: bytes) -> bool:
        """Hands one submit record on; False = the core's queue is full (keep the record for later)."""
        try:
            if rtype == rec.SUBMIT_MCAST:
                guarantee, body = rec.decode_submit_mcast(data)
                header = self._svc_headers[name]
                if not self.core.sendq.takes(len(header) + len(body)):
                    self.counters["submit_queue_full"] += 1
                    return False  # refused before the copy below: a large message waits without costing
                payload = header + body  # one copy: header and body in one bytes
                try:
                    actions = self.core.submit(now_ns, payload, guarantee)
                except QueueFull:
                    self.counters["submit_queue_full"] += 1
                    return False
                except MessageTooBig as exc:
                    self._bad(f"submit.{name}", exc)
                    return True
                self.counters["submits"] += 1
                if actions:
                    self.apply(now_ns, actions)
            elif rtype == rec.SUBMIT_SYNC_DONE:
                self._sync_outputs(now_ns, self.sync.on_sync_done(sid, rec.decode_ring(data, "SUBMIT_SYNC_DONE")))
            elif rtype == rec.SUBMIT_HELLO:
                self._hello(name, now_ns)
            else:
                raise rec.RecordError(f"unknown submit record type {rtype}")
        except rec.RecordError as exc:
            self._bad(f"submit.{name}", exc)
        return True

    def _hello(self, name: str, now_ns: int) -> None:
        """A restarted service: tell it the configuration in force. A sync-capable one lost its state, so
        every member runs the sync of this ring again (SERVICE_BUILD, PROTOCOL.md §7); if it is the one a
        running round waits for, it gets that round's SYNC_INIT again. Others hear that sync is done."""
        change = self.last_regular
        if change is None:
            return
        record = rec.ConfchgRecord(change.type, change.ring_id, change.members, change.left, change.joined)
        self._to_service(name, *rec.encode_deliver(record))
        sid = self.service_ids[name]
        if sid in self.sync.service_ids and self.sync.ring_id == change.ring_id:
            init = self.sync.current_init(sid)
            if init is not None:
                self._to_service(name, *rec.encode_deliver(init))
            self.pending_barriers.append((change.ring_id, rec.resync_payload(sid, change.ring_id)))
            self._retry_barriers(now_ns)
            log.info("service '%s' restarted: asking every member to synchronize ring %s again", name,
                     change.ring_id)
        elif self.sync.completed == change.ring_id:
            self._to_service(name, *rec.encode_deliver(rec.SyncRecord(rec.DELIVER_SYNC_COMPLETE, change.ring_id)))

    def _ring_bells(self) -> None:
        """After a batch: wake the consumers of rings written to (if they sleep), and the producers that
        asked for room (``producer_needs_wake`` already consumed their flag)."""
        rings = self.rings
        wake = self._wake
        producers = self._wake_producer - wake
        # the transport first: it carries the token on, and a woken service may take this core from us
        if "transport" in wake:
            wake.discard("transport")
            if rings.tx.needs_wake():
                self.bells.ring("transport")
        for name in wake:
            ring = rings.deliver.get(name)
            if ring is not None and ring.needs_wake():
                self.bells.ring(name)
        for name in producers:
            self.bells.ring(name)
        wake.clear()
        self._wake_producer.clear()

    def _bad(self, where: str, exc: Exception) -> None:
        self.counters["bad_records"] += 1
        if where not in self._bad_logged:
            self._bad_logged.add(where)
            log.error("dropped a record (%s): %s (further ones there are only counted)", where, exc)

    # -- status ----------------------------------------------------------------------------------
    def write_stats(self) -> None:
        self.rotation.flush()
        stats = self.rings.stats
        if len(stats) == 0:
            return
        for i, name in enumerate(COUNTER_NAMES):
            stats[i] = int(self.core.stats.get(name, 0))
        counters = self.counters
        counters["msg_queue_avail"] = self.core.msg_queue_avail
        counters["msg_reserved"] = self._reserved_frames()
        counters["continuous_sendmsg_failures"] = (counters["frames_tx"] - self._tx_blocked_at
                                                   if self.tx_backlog and self._tx_blocked_at >= 0 else 0)
        for i, name in enumerate(RUNTIME_COUNTERS):
            if i != _LAST_TOKEN_SLOT:  # written as tokens come (_token_received)
                stats[RUNTIME_BASE + i] = int(counters[name])

    def _reserved_frames(self) -> int:
        """Frames that the messages taken from services and not yet in the core's queue will fill
        (corosync's msg_reserved: frames promised to requests not queued yet)."""
        nbytes = sum(len(data) for pending in self.pending_submits.values() for _rtype, data in pending)
        nbytes += sum(len(payload) for _ring, payload in self.pending_barriers)
        frame = max(1, int(getattr(self.core.sendq, "frame_bytes", 1)))
        return -(-nbytes // frame)

    def write_status(self) -> None:
        if self.status_path is None:
            return
        change = self.last_regular
        body = {
            "nodeid": self.nodeid, "pid": os.getpid(), "incarnation": self.core.incarnation,
            "state": self.core.state,
            "ring_id": None if change is None else [change.ring_id.rep, change.ring_id.seq],
            "members": [] if change is None else list(change.members),
            "sync_completed": None if self.sync.completed is None else [self.sync.completed.rep,
                                                                        self.sync.completed.seq],
            "config_reloads": self.config_reloads,
            "reload_tracked": self.reload_watch is not None and self.reload_watch.client is not None,
            "totem": {name: getattr(self.core.cfg, name) for name in RELOADABLE_FIELDS},
        }
        tmp = self.status_path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self.status_path)

    def leave(self, now_ns: int) -> None:
        """Leaves the ring cleanly (SIGTERM) and pushes the leave frames to the transport."""
        self.apply(now_ns, self.core.leave(now_ns))
        self._flush_outputs()
        self._ring_bells()


# -- persistent counters ----------------------------------------------------------------------------

def read_ring_seq(path: Path) -> int:
    """The last ring seq this node used (0 when never persisted or unreadable)."""
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    if len(data) == _U64.size:
        return int(_U64.unpack(data)[0])
    with contextlib.suppress(ValueError):
        return int(data.decode().strip())  # a text file written by hand
    return 0


def write_ring_seq(path: Path, seq: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):
        tmp.write_bytes(_U64.pack(seq))
        os.replace(tmp, path)


def next_incarnation(path: Path) -> int:
    """Increments the node's start counter (u32, never 0); falls back on the clock when not writable."""
    value = 0
    with contextlib.suppress(OSError, ValueError):
        value = int(path.read_text().strip())
    value = (value % 0xFFFFFFFF) + 1
    try:
        path.write_text(str(value))
    except OSError:
        value = (time.time_ns() // 1_000_000) & 0xFFFFFFFF or 1
    return value


# -- process main ----------------------------------------------------------------------------------

def build_runtime(node: Any, keys: Mapping[str, object], state_dir: Path) -> TotemRuntime:
    """The core and runtime of this node from its config keys (plain values) and ``NodeInfo``."""
    from pycorosync.engine.config import load
    from pycorosync.engine.runtime.node import entry_by_name
    from pycorosync.engine.totem.config import TotemConfig
    from pycorosync.transports.udp.plan import plan_from_config

    config = load(node.config)
    plan = plan_from_config(config, node.nodeid)
    cfg = TotemConfig.from_keys(keys)
    cfg = replace(cfg, netmtu=plan.netmtu, transport_overhead_bytes=plan.netmtu - plan.max_frame_bytes,
                  max_message_bytes=cfg.max_message_bytes + rec.SERVICE_HEADER_BYTES)
    ring_path = state_dir / f"ringid_{node.nodeid}"
    incarnation = next_incarnation(state_dir / f"incarnation_{node.nodeid}")
    ring_seq = read_ring_seq(ring_path)
    core = TotemCore(cfg, node.nodeid, [n.nodeid for n in config.nodes], seed=node.nodeid ^ incarnation,
                     ring_seq=ring_seq, incarnation=incarnation)
    # a restarted totem runs with its services down (restart rule NODE): their rings start empty
    reset = [r for s in node.services for r in (f"submit.{s}", f"deliver.{s}")]
    rings = node.attach(reset)
    entries = {s: entry_by_name(s) for s in node.services}
    from pycorosync.ipc.stats import node_process_row

    found = node_process_row("totem")  # this process's row of the node stats table (None outside a node)
    return TotemRuntime(
        core, rings, Bells(node.bells), {s: e.service_id for s, e in entries.items()},
        [s for s, e in entries.items() if e.sync], status_path=Path(node.run_dir) / "totem.status.json",
        on_ring=lambda seq: write_ring_seq(ring_path, seq),
        stats_table=None if found is None else (found[0], found[1].slot),
        # PYCOROSYNC_RX_COMPILED=0: every received frame through the core (bench/cpg.py's A/B of rxfast.py)
        rx_fast=os.environ.get("PYCOROSYNC_RX_COMPILED", "1") != "0",
    )


def serve(rt: TotemRuntime, bell_fd: int, on_ready: Callable[[], object] | None = None) -> int:
    """The epoll loop until SIGTERM/SIGINT; then leave and flush."""
    ep = select.epoll()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    watch = rt.reload_watch
    try:
        ep.register(bell_fd, select.EPOLLIN)
        ep.register(wake_r, select.EPOLLIN)
        watch_fd = -1  # the cmap client's socket while it is in the epoll
        rt.start(time.monotonic_ns())
        if on_ready is not None:
            on_ready()
        while not stopping:
            timeout = rt.pump(time.monotonic_ns())
            if watch is not None and watch.fileno() != watch_fd:
                with contextlib.suppress(OSError, ValueError):  # a closed client's fd left the epoll itself
                    if watch_fd >= 0:
                        ep.unregister(watch_fd)
                watch_fd = watch.fileno()
                if watch_fd >= 0:
                    ep.register(watch_fd, select.EPOLLIN)
            if timeout == 0.0 or not rt.arm():
                continue
            try:
                events = ep.poll(-1 if timeout is None else timeout)
            except InterruptedError:
                events = []
            rt.disarm()
            for fd, _ev in events:
                if fd == watch_fd and watch is not None:
                    watch.on_readable()
                    continue
                with contextlib.suppress(BlockingIOError, OSError):
                    if fd == bell_fd:
                        os.eventfd_read(bell_fd)
                    else:
                        os.read(wake_r, 256)
        _flush_leave(rt)
        return 0
    finally:
        rt.write_stats()
        if watch is not None:
            watch.close()
        signal.set_wakeup_fd(old_wakeup)
        for s, h in old.items():
            signal.signal(s, h)
        ep.close()
        os.close(wake_r)
        os.close(wake_w)


def _send_queued(rt: TotemRuntime, deadline: float) -> None:
    """Before leaving: what the services submitted while they stopped (votequorum's leave message for
    allow_downscale) goes out with the token, until the queue is empty or ``deadline`` (monotonic s)."""
    core = rt.core
    while time.monotonic() < deadline and core.state == OPERATIONAL and len(core.members) > 1:
        rt.pump(time.monotonic_ns())
        if not core.sendq and not any(rt.pending_submits.values()) and all(r.empty() for r in rt.rings.submit.values()):
            return
        time.sleep(0.002)  # bounded by the deadline: waiting for the token to come round


def _flush_leave(rt: TotemRuntime) -> None:
    """Sends what is queued, leaves, then keeps sending (the core resends the leave join) until done or
    LEAVE_FLUSH_S passed."""
    _send_queued(rt, time.monotonic() + LEAVE_FLUSH_S)
    rt.leave(time.monotonic_ns())
    end = time.monotonic() + LEAVE_FLUSH_S
    while time.monotonic() < end:
        now_ns = time.monotonic_ns()
        deadline = rt.core.next_deadline_ns()
        if deadline is not None and deadline <= now_ns:
            rt.apply(now_ns, rt.core.on_timer(now_ns))
        rt._flush_outputs()
        rt._ring_bells()
        if deadline is None and not rt.tx_backlog and rt.rings.tx.empty():
            break
        time.sleep(0.002)  # bounded by LEAVE_FLUSH_S: waiting for the transport to take the frames
    log.info("left the ring; totem stopping")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pycorosync.engine.runtime.totem_proc")
    ap.parse_known_args(argv)
    from pycorosync.engine.runtime.node import NodeInfo, plain_keys, setup_child

    setup_child()
    node = NodeInfo.from_env()
    from pycorosync.engine.config import ConfigError, load
    from pycorosync.engine.supervisor.child import notify_ready

    try:
        config = load(node.config)
        keys = plain_keys(config.all_keys(config.local_node(node.nodeid)))
        state_dir = Path(str(keys.get("system.state_dir") or node.run_dir))
        state_dir.mkdir(parents=True, exist_ok=True)
        rt = build_runtime(node, keys, state_dir)
    except (ConfigError, OSError, ValueError) as exc:
        log.error("cannot start totem: %s", exc)
        return 1
    log.info("totem of node %d starting: ring seq %d, incarnation %d, services %s", node.nodeid,
             rt.core.max_ring_seq, rt.core.incarnation, ", ".join(node.services) or "none")
    if "cmap" in node.services:
        def on_reload(new_keys: Mapping[str, object], catch_up: bool) -> None:
            rt.reload_config(new_keys, quiet=catch_up)
            if not catch_up:
                signal_supervisor_reload(node.run_dir)  # every process re-applies its logging keys

        rt.reload_watch = ConfigReloadWatch(node.run_dir, node.config, node.nodeid, on_reload)
    try:
        from pycorosync.engine.runtime.profiling import run_profiled

        rc: int = run_profiled("totem", node.nodeid, lambda: serve(rt, node.bells["totem"], on_ready=notify_ready))
        return rc
    finally:
        rt.rings.close()


if __name__ == "__main__":
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(main())
