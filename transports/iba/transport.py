"""The ``iba`` transport: tx ring -> RC queue pairs -> rx ring, with the UDP transport's frames, ring
records, drop checks, counters and link table (transports/README.md), so totem cannot tell them apart.

Why one RC QP per peer, not UD: corosync's old iba transport used UD for multicast, but UD messages are
limited to the path MTU (2-4 KiB, so Totem's frames would need another fragmentation layer), UD has no
flow control (a slow receiver drops, the sender never learns), and multicast groups need a subnet
manager. RC gives reliable, ordered messages up to 2 GiB, hardware retransmission and a clean
disconnect event when a peer dies. A cluster has at most tens of nodes, so N-1 QPs per node are cheap;
a multicast frame is posted once per connected peer from the same bytes (the tx ring record).

Connections: the node with the lower id connects (rdma_cm, port ``mcastport`` on the peer's ring0
address, an IPoIB address as in corosync 1.x), the higher one accepts. Both send a HELLO (node id,
boot id, cluster hash) first; a link carries frames once the peer's HELLO arrived. A HELLO from a
newer incarnation of a peer replaces the old link (the peer restarted). Lost connections are retried
with a doubling backoff by the connecting side.

Flow control, per link: each side posts ``recv_depth`` (W) receives and gives the peer W credits. Every
message (frame, credit update or HELLO) costs the sender one credit and the receiver one buffer; the
receiver reposts a buffer only after its frame went into the rx ring, and returns the credit in the
immediate data of its next message (``imm = kind << 24 | credits``). A frame needs 2 credits, a
credit-only message 1 and at least W/4 credits to return: the last credit is kept for credit updates,
so two peers can never both wait for credits (proof in transports/iba/README.md). A peer whose rx ring
is full so stops its senders without a single drop; a peer that stops returning credits for longer than
half a token timeout gets its queued frames dropped (counted), as a lossy network would, so that one
stuck node never stalls the ring for the others.

Zero copy on tx: the tx ring region is one memory region; a frame's SGEs are its header (a small
registered slab) and the ring record itself (HMAC: plus the MAC). The ring head is published only up
to the oldest record still referenced by a queued or posted send. AES-GCM seals out of the ring into a
registered slab (the ciphertext has to live somewhere). rx: frames land in registered receive buffers
and are checked, opened and copied into the rx ring.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pycorosync.ipc.ring_kernels import (
    RING_HEADER_BYTES,
    ring_arm,
    ring_arm_producer,
    ring_disarm,
    ring_needs_wake,
    ring_publish,
    ring_write,
)
from pycorosync.transports import links as lk
from pycorosync.transports.crypto import HEADER, HEADER_BYTES, MODE_AEAD, MODE_HMAC, FrameCodec, check_header
from pycorosync.transports.iba import ringtx
from pycorosync.transports.iba.verbs import (
    CM_FAILURES,
    CmEventType,
    Completion,
    Sge,
    VerbsError,
    WcStatus,
)
from pycorosync.transports.peers import NEW_INCARNATION, REPLAY, PeerState
from pycorosync.transports.udp.counters import COUNTER_NAMES, DROP_NAMES
from pycorosync.transports.udp.plan import TransportPlan
from pycorosync.transports.udp.transport import bell_fd, ring_triple

log = logging.getLogger("TOTEM")

HELLO = struct.Struct("<IIIQ")  # magic, cluster hash, node id, boot id
HELLO_MAGIC = 0x4F4C4548  # "HELO"
IMM_FRAME, IMM_CREDIT, IMM_HELLO = 0, 1, 2
IMM_CREDIT_MASK = 0xFFFFFF
WR_RECV, WR_FRAME, WR_CTRL = 0, 1, 2

#: counters the UDP transport does not have (kept in ``IbaTransport.extra``, logged, not in the stats table)
EXTRA_NAMES = (
    "connects", "accepts", "links_up", "links_down", "wc_errors", "post_errors", "credit_updates",
    "credit_stalls", "tx_drop_no_link", "tx_drop_stalled", "hello_refused",
)

DEFAULT_RECV_DEPTH = 64
DEFAULT_INFLIGHT = 1024  # tx ring records referenced at once (power of two)
PEER_QUEUE_LIMIT = 512  # frames waiting for credits per peer; beyond, the oldest is dropped
TX_BATCH = 64
IDLE_POLLS = 32
HOUSEKEEPING_S = 0.25
CM_CHECK_PASSES = 16  # while busy, look at the CM channel every this many passes
DROP_LOG_INTERVAL_S = 5.0
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 1.0


def wr_id(serial: int, kind: int, idx: int) -> int:
    """Work request id: connection serial (stale completions of an old connection are recognised),
    kind, and the buffer or ring slot index."""
    return (serial << 32) | (kind << 28) | idx


@dataclass(eq=False)
class PeerLink:
    """One RC connection and its flow-control state."""

    serial: int
    conn: Any
    active: bool
    expected: int  # nodelist index we connected to; -1 for an accepted connection
    recv: np.ndarray  # (recv_depth + 1, slot) receive buffers; the last row holds our HELLO
    mr: Any
    credits: int
    peer: int = -1  # nodelist index once its HELLO arrived
    peer_boot: int = 0
    state: str = "connecting"  # connecting -> up (both HELLOs: ours posted, the peer's received); dead
    hello_sent: bool = False
    to_return: int = 0
    queue: collections.deque[int] = field(default_factory=collections.deque)  # entry seqs awaiting credits
    posted: collections.deque[int] = field(default_factory=collections.deque)  # entry seqs posted, in order
    stalled: bool = False


class IbaTransport:
    """One node's verbs link between its tx/rx rings and its peers (see the module docstring)."""

    def __init__(
        self, plan: TransportPlan, tx_ring: Any, rx_ring: Any, tx_bell: Any, rx_bell: Any, backend: Any,
        boot_id: int | None = None, link_table: lk.LinkTable | None = None,
        stats_row: np.ndarray | None = None, stats_columns: list[int] | None = None,
        recv_depth: int = DEFAULT_RECV_DEPTH, inflight: int = DEFAULT_INFLIGHT,
        drop_log_interval_s: float = DROP_LOG_INTERVAL_S, queue_age_s: float | None = None,
    ) -> None:
        assert inflight & (inflight - 1) == 0, "inflight must be a power of two"
        assert recv_depth >= 4, "recv_depth below 4 leaves no room for the credit reserve"
        self.plan = plan
        self.node_id = plan.node_id
        self.txr = ring_triple(tx_ring)
        self.rxr = ring_triple(rx_ring)
        self.tx_bell = bell_fd(tx_bell)
        self.rx_bell = bell_fd(rx_bell)
        self.boot_id = boot_id or time.time_ns()
        self.codec = FrameCodec(plan.crypto, plan.node_id, self.boot_id)
        self.mode = self.codec.mode
        self.peers = PeerState(plan.node_ids)
        self.node_ids = self.peers.node_ids
        self.self_idx = self.peers.index(plan.node_id)
        self.addr_of = dict(plan.nodes)
        self.links = link_table or lk.LinkTable.local(self.node_ids)
        self.C = {name: i for i, name in enumerate(COUNTER_NAMES)}
        self.ctr = np.zeros(len(COUNTER_NAMES), dtype=np.int64)
        self.extra: collections.Counter[str] = collections.Counter({n: 0 for n in EXTRA_NAMES})
        self.stats_row = stats_row
        self.stats_columns = np.array(stats_columns if stats_columns is not None else range(len(COUNTER_NAMES)))
        self.drop_log_interval_s = drop_log_interval_s
        self.queue_age_ns = int((queue_age_s if queue_age_s is not None else plan.token_ms / 2000) * 1e9)
        self.recv_depth = recv_depth
        self.credit_threshold = max(1, recv_depth // 4)
        self.max_datagram = plan.max_datagram_bytes
        self.slot_bytes = (self.max_datagram + 63) & ~63
        n_peers = max(1, len(self.node_ids) - 1)
        self.backend = backend
        self.ep = backend.open(
            plan.local_addr, plan.port_of(plan.node_id), send_depth=recv_depth + 8, recv_depth=recv_depth + 1,
            cq_depth=n_peers * (2 * recv_depth + 16) + 64, max_send_sge=3,
        )
        # tx: the ring region itself is registered (frames are posted from it), plus header/seal slabs
        buf, base, cap = self.txr
        self.tx_region = buf[base : base + RING_HEADER_BYTES + cap]
        self.tx_mr = self.ep.reg_mr(self.tx_region)
        self.tx_addr0 = int(buf.ctypes.data)  # address of buf[0]: a record's payload is at + hdr + 8
        self.inflight = inflight
        self.mask = inflight - 1
        hdr_slot = 32 if self.mode != MODE_HMAC else HEADER_BYTES + self.codec.trailer
        slab_slot = self.slot_bytes if self.mode == MODE_AEAD else (hdr_slot + 63) & ~63
        self.slab = np.zeros(inflight * slab_slot, dtype=np.uint8)
        self.slab_slot = slab_slot
        self.slab_mv = memoryview(self.slab)  # type: ignore[arg-type]
        self.slab_mr = self.ep.reg_mr(self.slab)
        self.ent_end = np.zeros(inflight, dtype=np.int64)
        self.ent_refs = np.zeros(inflight, dtype=np.int64)
        self.ent_time = np.zeros(inflight, dtype=np.int64)
        self.ent_sges: list[tuple[Sge, ...]] = [()] * inflight
        self.ent_bytes = np.zeros(inflight, dtype=np.int64)
        self.ent_head = 0
        self.ent_tail = 0
        self.scan_out = np.zeros((TX_BATCH, ringtx.SCAN_COLUMNS), dtype=np.int64)
        # rx
        self.scratch = np.zeros(self.slot_bytes, dtype=np.uint8)
        self.scratch_mv = memoryview(self.scratch)  # type: ignore[arg-type]
        self.rx_backlog: collections.deque[tuple[PeerLink, int, int]] = collections.deque()
        # links
        self._serials = iter(range(1, 1 << 30))
        self.by_serial: dict[int, PeerLink] = {}
        self.by_conn: dict[int, PeerLink] = {}
        self.peer_link: list[PeerLink | None] = [None] * len(self.node_ids)
        self.connecting: list[PeerLink | None] = [None] * len(self.node_ids)
        self.next_connect = [0.0] * len(self.node_ids)
        self.backoff = [RECONNECT_MIN_S] * len(self.node_ids)
        self.stop_requested = False
        self._passes = 0
        self._drop_logged = np.zeros(len(DROP_NAMES), dtype=np.int64)
        self._oversized_logged = 0
        self._last_drop_log = 0.0
        self._c_drop = self.C["rx_drop_too_short"]
        log.info("iba transport (%s backend): node %d on %s port %d, recv depth %d, max frame %d",
                 getattr(backend, "name", "?"), plan.node_id, plan.local_addr, plan.port_of(plan.node_id),
                 recv_depth, plan.max_frame_bytes)

    # -- links -----------------------------------------------------------------------------------------
    def _new_link(self, conn: Any, active: bool, expected: int) -> PeerLink:
        recv = np.zeros((self.recv_depth + 1) * self.slot_bytes, dtype=np.uint8)
        mr = self.ep.reg_mr(recv)
        link = PeerLink(next(self._serials), conn, active, expected, recv.reshape(self.recv_depth + 1, -1), mr,
                        credits=self.recv_depth)
        self.by_serial[link.serial] = link
        self.by_conn[id(conn)] = link
        for idx in range(self.recv_depth):
            conn.post_recv(wr_id(link.serial, WR_RECV, idx), self._recv_sge(link, idx))
        return link

    def _recv_sge(self, link: PeerLink, idx: int) -> Sge:
        return Sge(link.mr.addr + idx * self.slot_bytes, self.slot_bytes, link.mr.lkey)

    def connect_due(self, now: float) -> None:
        """Starts connections to the higher-numbered peers we have no link to (at their backoff deadline)."""
        for p, nid in enumerate(self.node_ids.tolist()):
            if nid <= self.node_id or self.peer_link[p] is not None or self.connecting[p] is not None:
                continue
            if now < self.next_connect[p]:
                continue
            self.next_connect[p] = now + self.backoff[p]
            self.backoff[p] = min(self.backoff[p] * 2, RECONNECT_MAX_S)
            try:
                conn = self.ep.connect(self.addr_of[nid], self.plan.port_of(nid))
                self.connecting[p] = self._new_link(conn, True, p)
            except VerbsError as exc:
                log.debug("iba: connect to node %d failed: %s", nid, exc)
                continue
            self.extra["connects"] += 1

    def handle_cm(self) -> int:
        """Processes pending rdma_cm events; returns how many."""
        events = self.ep.get_cm_events()
        for ev in events:
            if ev.kind == CmEventType.CONNECT_REQUEST:
                self._accept(ev.conn)
                continue
            link = self.by_conn.get(id(ev.conn))
            if link is None or link.state == "dead":
                continue  # an event of a connection already torn down
            if ev.kind == CmEventType.ESTABLISHED:
                # the passive side may have the peer's HELLO already (the active side sends on its own event)
                if not link.hello_sent:
                    self._send_hello(link)
                if link.state == "connecting" and link.peer >= 0:
                    self._link_up(link)
            elif ev.kind in CM_FAILURES:
                self._teardown(link, ev.kind.name.lower())
        return len(events)

    def _accept(self, conn: Any) -> None:
        try:
            self._new_link(conn, False, -1)
            self.ep.accept(conn)
        except VerbsError as exc:
            log.warning("iba: could not accept a connection: %s", exc)
            link = self.by_conn.get(id(conn))
            if link is not None:
                self._teardown(link, "accept failed")
            else:
                with contextlib.suppress(VerbsError):
                    self.ep.reject(conn)
            return
        self.extra["accepts"] += 1

    def _send_hello(self, link: PeerLink) -> None:
        row = link.recv[self.recv_depth]
        HELLO.pack_into(row, 0, HELLO_MAGIC, self.codec.cluster_hash, self.node_id, self.boot_id)
        sge = Sge(link.mr.addr + self.recv_depth * self.slot_bytes, HELLO.size, link.mr.lkey)
        link.hello_sent = True
        self._post_ctrl(link, IMM_HELLO, [sge])

    def _post_ctrl(self, link: PeerLink, kind: int, sges: list[Sge]) -> None:
        give = min(link.to_return, IMM_CREDIT_MASK)
        try:
            link.conn.post_send(wr_id(link.serial, WR_CTRL, kind), sges, (kind << 24) | give)
        except VerbsError as exc:
            self.extra["post_errors"] += 1
            self._teardown(link, f"post_send: {exc}")
            return
        link.credits -= 1
        link.to_return -= give

    def _on_hello(self, link: PeerLink, idx: int, n: int) -> None:
        if n < HELLO.size:
            self._refuse(link, "short HELLO")
            return
        magic, chash, nid, boot = HELLO.unpack_from(link.recv[idx], 0)
        p = self.peers.index(nid)
        if magic != HELLO_MAGIC or chash != self.codec.cluster_hash:
            self._refuse(link, "HELLO of another cluster or protocol")
            return
        if p < 0 or nid == self.node_id or (link.active and p != link.expected):
            self._refuse(link, f"HELLO from node {nid}, not an expected peer")
            return
        old = self.peer_link[p]
        if old is not None and old is not link:
            if old.peer_boot > boot:
                self._refuse(link, f"HELLO of an older incarnation of node {nid}")
                return
            self._teardown(old, "replaced by a new connection")
        if link.active and self.connecting[p] is link:
            self.connecting[p] = None
        self.peer_link[p] = link
        link.peer = p
        link.peer_boot = boot
        if link.hello_sent:
            self._link_up(link)

    def _link_up(self, link: PeerLink) -> None:
        link.state = "up"
        nid = int(self.node_ids[link.peer])
        self.backoff[link.peer] = RECONNECT_MIN_S
        self.extra["links_up"] += 1
        log.info("iba: link to node %d up (%s, QP %d)", nid, "connected" if link.active else "accepted",
                 link.conn.qp_num)

    def _refuse(self, link: PeerLink, why: str) -> None:
        self.extra["hello_refused"] += 1
        log.warning("iba: connection refused: %s", why)
        self._teardown(link, why)

    def _teardown(self, link: PeerLink, why: str) -> None:
        """Drops a connection: its queued and posted frames free their ring records, its buffers go."""
        if link.state == "dead":
            return
        was_up = link.state == "up"
        link.state = "dead"
        self.by_serial.pop(link.serial, None)
        self.by_conn.pop(id(link.conn), None)
        with contextlib.suppress(VerbsError, OSError):
            link.conn.disconnect()
        with contextlib.suppress(VerbsError, OSError):
            link.conn.close()  # the QP is destroyed: the HCA touches none of its buffers any more
        lost = len(link.queue) + len(link.posted)
        for seq in (*link.posted, *link.queue):
            self.ent_refs[seq & self.mask] -= 1
        link.queue.clear()
        link.posted.clear()
        self.extra["tx_drop_no_link"] += lost
        link.mr.close()
        p = link.peer if link.peer >= 0 else link.expected
        if link.peer >= 0 and self.peer_link[link.peer] is link:
            self.peer_link[link.peer] = None
        if link.active and p >= 0 and self.connecting[p] is link:
            self.connecting[p] = None
        if was_up:
            self.extra["links_down"] += 1
            log.warning("iba: link to node %d down (%s)", int(self.node_ids[link.peer]), why)
        self._release_done()

    # -- tx ----------------------------------------------------------------------------------------------
    def pump_tx(self, now_ns: int) -> int:
        """Takes a batch of tx ring records and queues each frame to its peers; returns records taken."""
        free = self.inflight - (self.ent_tail - self.ent_head)
        if free <= 0:
            return 0
        buf, base, cap = self.txr
        out = self.scan_out[: min(free, TX_BATCH)]
        k = int(ringtx.scan_records(buf, base, cap, out))
        C = self.C
        for j in range(k):
            hdr, dest, n, end = (int(v) for v in out[j])
            seq = self.ent_tail
            self.ent_tail += 1
            slot = seq & self.mask
            self.ent_end[slot] = end
            self.ent_refs[slot] = 0
            self.ent_time[slot] = now_ns
            if n > self.plan.max_frame_bytes:
                self.ctr[C["tx_drop_oversized"]] += 1
                continue
            d = -1
            if dest != 0:
                d = self.peers.index(dest)
                if d < 0:
                    self.ctr[C["tx_drop_unknown_dest"]] += 1
                    continue
            self._stamp(slot, hdr + 8, n)
            for p in ([d] if d >= 0 else range(len(self.node_ids))):
                if p == self.self_idx:
                    continue
                link = self.peer_link[p]
                if link is None or link.state != "up":
                    self.extra["tx_drop_no_link"] += 1
                    continue
                if len(link.queue) >= PEER_QUEUE_LIMIT:
                    self.ent_refs[link.queue.popleft() & self.mask] -= 1
                    self.extra["tx_drop_stalled"] += 1
                link.queue.append(seq)
                self.ent_refs[slot] += 1
        if k:
            self.ctr[C["tx_batches"]] += 1
            self._release_done()
        return k

    def _stamp(self, slot: int, payload_off: int, n: int) -> None:
        """The frame's header (and MAC, or its whole sealed form) in the slab; its SGE list."""
        buf = self.txr[0]
        o = slot * self.slab_slot
        a = self.slab_mr.addr + o
        payload = Sge(self.tx_addr0 + payload_off, n, self.tx_mr.lkey)
        if self.mode == MODE_AEAD:
            ln = self.codec.seal_from(memoryview(buf[payload_off : payload_off + n]), self.slab_mv, o)
            sges: tuple[Sge, ...] = (Sge(a, ln, self.slab_mr.lkey),)
        else:
            self.codec.stamp_header(self.slab_mv, o)
            ln = HEADER_BYTES + n
            sges = (Sge(a, HEADER_BYTES, self.slab_mr.lkey), payload) if n else (Sge(a, HEADER_BYTES, self.slab_mr.lkey),)
            if self.mode == MODE_HMAC:
                t = self.codec.trailer
                mac = self.codec.mac(self.slab_mv[o : o + HEADER_BYTES], memoryview(buf[payload_off : payload_off + n]))
                self.slab[o + HEADER_BYTES : o + HEADER_BYTES + t] = np.frombuffer(mac, np.uint8)
                sges = (*sges, Sge(a + HEADER_BYTES, t, self.slab_mr.lkey))
                ln += t
        self.ent_sges[slot] = sges
        self.ent_bytes[slot] = ln

    def flush_links(self) -> int:
        """Posts queued frames while credits allow, and credit updates; returns messages posted."""
        posted = 0
        C = self.C
        for link in self.peer_link:
            if link is None or link.state != "up":
                continue
            while link.queue and link.credits >= 2:
                seq = link.queue[0]
                slot = seq & self.mask
                give = min(link.to_return, IMM_CREDIT_MASK)
                try:
                    link.conn.post_send(wr_id(link.serial, WR_FRAME, slot), self.ent_sges[slot],
                                        (IMM_FRAME << 24) | give)
                except VerbsError as exc:
                    self.extra["post_errors"] += 1
                    self.ctr[C["socket_errors"]] += 1
                    self._teardown(link, f"post_send: {exc}")
                    break
                link.queue.popleft()
                link.posted.append(seq)
                link.credits -= 1
                link.to_return -= give
                nbytes = int(self.ent_bytes[slot])
                self.ctr[C["tx_packets"]] += 1
                self.ctr[C["tx_bytes"]] += nbytes
                row = self.links.table[link.peer]
                row[lk.COL_TX_PACKETS] += 1
                row[lk.COL_TX_BYTES] += nbytes
                posted += 1
                link.stalled = False
            if link.state != "up":
                continue
            if link.queue and link.credits < 2 and not link.stalled:
                link.stalled = True
                self.extra["credit_stalls"] += 1
            if link.to_return >= self.credit_threshold and link.credits >= 1:
                self._post_ctrl(link, IMM_CREDIT, [])
                self.extra["credit_updates"] += 1
                posted += 1
        return posted

    def _release_done(self) -> None:
        """Frees the tx ring up to the oldest record a send still references."""
        end = -1
        while self.ent_head < self.ent_tail:
            slot = self.ent_head & self.mask
            if self.ent_refs[slot] > 0:
                break
            end = int(self.ent_end[slot])
            self.ent_sges[slot] = ()
            self.ent_head += 1
        if end >= 0:
            buf, base, _cap = self.txr
            ringtx.publish_head_to(buf, base, end)

    def drop_stale(self, now_ns: int) -> None:
        """Frames that waited longer than half a token timeout for credits are dropped (the peer is stuck)."""
        limit = now_ns - self.queue_age_ns
        for link in self.peer_link:
            if link is None:
                continue
            while link.queue and self.ent_time[link.queue[0] & self.mask] < limit:
                self.ent_refs[link.queue.popleft() & self.mask] -= 1
                self.extra["tx_drop_stalled"] += 1
        self._release_done()

    # -- completions and rx --------------------------------------------------------------------------
    def poll_completions(self) -> int:
        """Handles every completion waiting in the CQ; returns how many."""
        total = 0
        while True:
            wcs = self.ep.poll_cq(64)
            if not wcs:
                return total
            for wc in wcs:
                self._on_completion(wc)
            total += len(wcs)

    def _on_completion(self, wc: Completion) -> None:
        serial = wc.wr_id >> 32
        kind = (wc.wr_id >> 28) & 0xF
        idx = wc.wr_id & 0x0FFFFFFF
        link = self.by_serial.get(serial)
        if link is None:
            return  # a connection already torn down: its references were dropped then
        if wc.status != WcStatus.SUCCESS:
            if wc.status != WcStatus.WR_FLUSH_ERR:
                self.extra["wc_errors"] += 1
                self.ctr[self.C["socket_errors"]] += 1
                log.warning("iba: work completion error %s on QP %d", WcStatus(wc.status).name, wc.qp_num)
            self._teardown(link, f"completion {WcStatus(wc.status).name}")
            return
        if kind == WR_FRAME:
            seq = link.posted.popleft()
            assert seq & self.mask == idx, "RC completions come back in posting order"
            self.ent_refs[idx] -= 1
            if self.ent_refs[idx] == 0 and seq == self.ent_head:
                self._release_done()
        elif kind == WR_RECV:
            link.credits += wc.imm & IMM_CREDIT_MASK
            what = wc.imm >> 24
            if what == IMM_FRAME:
                self.ctr[self.C["rx_packets"]] += 1
                self.ctr[self.C["rx_bytes"]] += wc.byte_len
                self.rx_backlog.append((link, idx, wc.byte_len))
            elif what == IMM_HELLO:
                self._on_hello(link, idx, wc.byte_len)
                self._repost(link, idx)
            else:
                self._repost(link, idx)

    def _repost(self, link: PeerLink, idx: int) -> None:
        if link.state == "dead":
            return
        try:
            link.conn.post_recv(wr_id(link.serial, WR_RECV, idx), self._recv_sge(link, idx))
        except VerbsError as exc:
            self.extra["post_errors"] += 1
            self._teardown(link, f"post_recv: {exc}")
            return
        link.to_return += 1

    def flush_backlog(self, now_ns: int) -> int:
        """Checks and pushes received frames into the rx ring in arrival order; stops at a full ring."""
        if not self.rx_backlog:
            return 0
        rbuf, rbase, _ = self.rxr
        pushed = 0
        done = 0
        self.ctr[self.C["rx_batches"]] += 1
        while self.rx_backlog:
            link, idx, n = self.rx_backlog[0]
            verdict = self._deliver(link, idx, n, now_ns)
            if verdict is None:
                self.ctr[self.C["rx_ring_full"]] += 1
                break
            self.rx_backlog.popleft()
            self._repost(link, idx)
            pushed += verdict
            done += 1
        if pushed:
            ring_publish(rbuf, rbase)
            self.ctr[self.C["rx_delivered"]] += pushed
            if ring_needs_wake(rbuf, rbase):
                self.ctr[self.C["rx_wakes"]] += 1
                if self.rx_bell >= 0:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_write(self.rx_bell, 1)
        return done

    def _drop(self, reason: str) -> int:
        self.ctr[self._c_drop + DROP_NAMES.index(reason)] += 1
        return 0

    def _deliver(self, link: PeerLink, idx: int, n: int, now_ns: int) -> int | None:
        """1 when the frame went into the rx ring, 0 when dropped (counted), None when the ring is full."""
        row = link.recv[idx]
        data = memoryview(row)[:n]
        reason = check_header(data, self.mode, self.codec.cluster_hash, self.max_datagram)
        if reason is not None:
            return self._drop(reason)
        _m, _v, _mode, _h, sender, _r, boot, counter = HEADER.unpack_from(data, 0)
        i = self.peers.index(sender)
        if sender == self.node_id:
            return self._drop("own")
        if i < 0 or i != link.peer:
            return self._drop("unknown_node")  # a frame in another node's name on this connection
        verdict = self.peers.verdict(i, boot, counter)
        if verdict == REPLAY:
            return self._drop("replay")
        if self.mode == MODE_AEAD or self.mode == MODE_HMAC:
            m = self.codec.open_into(data, sender, boot, counter, self.scratch_mv)
            if m < 0:
                return self._drop("bad_auth")
            src, off = self.scratch, 0
        else:
            src, off, m = row, HEADER_BYTES, n - HEADER_BYTES
        rbuf, rbase, rcap = self.rxr
        if not ring_write(rbuf, rbase, rcap, int(sender), src, off, m):
            return None
        if verdict == NEW_INCARNATION and self.peers.boot[i] > 0:
            self.codec.forget(int(sender), int(self.peers.boot[i]))
        self.peers.mark(i, boot, counter)
        t = self.links.table[i]
        t[lk.COL_LAST_HEARD_NS] = now_ns
        t[lk.COL_RX_PACKETS] += 1
        t[lk.COL_RX_BYTES] += m
        t[lk.COL_BOOT_ID] = boot
        return 1

    # -- loop ----------------------------------------------------------------------------------------
    def step(self, now_ns: int | None = None) -> int:
        """One pass of work without sleeping: tx ring, completions, rx ring, credits. Returns work done."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        did = self.pump_tx(now_ns)
        did += self.poll_completions()
        did += self.flush_backlog(now_ns)
        did += self.flush_links()
        did += self.poll_completions()
        self._passes += 1
        if self._passes % CM_CHECK_PASSES == 0 and _readable(self.ep.cm_fd):
            did += self.handle_cm()
        return did

    def run(
        self, stop_fd: int = -1, should_stop: Callable[[], bool] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        """Serves until SIGTERM/SIGINT, ``stop_fd`` readable, or ``should_stop()``; returns the exit status."""
        ep = select.epoll()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = -1
        old_handlers: dict[signal.Signals, Any] = {}
        try:
            with contextlib.suppress(ValueError):  # only the main thread may install handlers
                old_wakeup = signal.set_wakeup_fd(wake_w)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    old_handlers[sig] = signal.signal(sig, self._on_signal)
            fds = {wake_r, self.ep.cm_fd, self.ep.comp_fd}
            if stop_fd >= 0:
                fds.add(stop_fd)
            if self.tx_bell >= 0:
                fds.add(self.tx_bell)
            for fd in fds:
                ep.register(fd, select.EPOLLIN)
            if on_ready is not None:
                on_ready()
            self.handle_cm()
            self.connect_due(time.monotonic())
            next_house = time.monotonic()
            idle = 0
            buf, base, _cap = self.txr
            while not self.stop_requested and not (should_stop and should_stop()):
                did = self.step()
                now = time.monotonic()
                if now >= next_house:
                    self.housekeeping(now)
                    next_house = now + HOUSEKEEPING_S
                if did:
                    idle = 0
                    continue
                idle += 1
                if idle < IDLE_POLLS:
                    continue
                idle = 0
                if not ring_arm(buf, base):
                    continue
                self.ep.req_notify_cq()
                if self.poll_completions():  # arrived before arming: no event will come for them
                    ring_disarm(buf, base)
                    continue
                if self.rx_backlog:
                    rbuf, rbase, rcap = self.rxr
                    if not ring_arm_producer(rbuf, rbase, rcap, self.plan.max_frame_bytes):
                        ring_disarm(buf, base)
                        continue
                timeout = max(0.0, min(next_house, self._next_connect_deadline()) - time.monotonic())
                events = ep.poll(timeout)
                ring_disarm(buf, base)
                for fd, _ev in events:
                    if fd == self.tx_bell:
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(self.tx_bell)
                    if fd == self.ep.comp_fd:
                        self.ep.get_cq_event()
                    if fd == self.ep.cm_fd:
                        self.handle_cm()
                    if fd == wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 64)
                    if fd == stop_fd:
                        self.stop_requested = True
            self.housekeeping(time.monotonic())
            log.info("iba transport node %d stopping; counters: %s", self.node_id,
                     " ".join(f"{k}={v}" for k, v in self.counters().items() if v))
            return 0
        finally:
            ep.close()
            if old_handlers:
                signal.set_wakeup_fd(old_wakeup)
                for sig, h in old_handlers.items():
                    signal.signal(sig, h)
            os.close(wake_r)
            os.close(wake_w)

    def _next_connect_deadline(self) -> float:
        due = [self.next_connect[p] for p, nid in enumerate(self.node_ids.tolist())
               if nid > self.node_id and self.peer_link[p] is None and self.connecting[p] is None]
        return min(due, default=float("inf"))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True

    def housekeeping(self, now: float) -> None:
        """Connection retries, stale queue drops, counters to the stats row, link health, drop logs."""
        now_ns = time.monotonic_ns()
        self.handle_cm()
        self.connect_due(now)
        self.drop_stale(now_ns)
        if self.stats_row is not None:
            self.stats_row[self.stats_columns] = self.ctr
        self.links.update_connected(now_ns, self.plan.token_ms * 1_000_000)
        if now - self._last_drop_log < self.drop_log_interval_s:
            return
        oversized = int(self.ctr[self.C["tx_drop_oversized"]])
        if oversized != self._oversized_logged:
            self._last_drop_log = now
            log.error("iba: dropped %d frames from totem longer than the %d bytes a frame can carry (a bug: please "
                      "report it)", oversized - self._oversized_logged, self.plan.max_frame_bytes)
            self._oversized_logged = oversized
        drops = self.ctr[self._c_drop : self._c_drop + len(DROP_NAMES)]
        delta = drops - self._drop_logged
        if delta.any():
            self._last_drop_log = now
            self._drop_logged = drops.copy()
            parts = ", ".join(f"{name} {int(d)}" for name, d in zip(DROP_NAMES, delta) if d)
            log.warning("iba: dropped invalid frames: %s", parts)

    def counters(self) -> dict[str, int]:
        """The UDP transport's counters, then the verbs-only ones."""
        out = {name: int(v) for name, v in zip(COUNTER_NAMES, self.ctr)}
        out.update(self.extra)
        return out

    def link_states(self) -> dict[int, str]:
        """Node id -> "up" / "down" for every peer."""
        return {int(nid): ("up" if (lnk := self.peer_link[p]) is not None and lnk.state == "up" else "down")
                for p, nid in enumerate(self.node_ids.tolist()) if p != self.self_idx}

    def close(self) -> None:
        for link in list(self.by_serial.values()):
            self._teardown(link, "transport stopping")
        for mr in (self.tx_mr, self.slab_mr):
            mr.close()
        self.ep.close()


def _readable(fd: int) -> bool:
    r, _, _ = select.select([fd], [], [], 0)
    return bool(r)
