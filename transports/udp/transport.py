"""The UDP transport process: tx ring -> seal -> sockets, sockets -> open -> rx ring.

One thread around one ``epoll`` on the tx ring's doorbell eventfd, the receive socket(s), the stop fd and
a signal wake-up pipe (SIGTERM/SIGINT). A pass drains the tx ring when its doorbell rang and reads the
sockets epoll reported, again at once after a full batch; then it arms the tx ring's waiting flag and
sleeps in epoll. Housekeeping (stats, link health, rate-limited
drop logs) runs every ``HOUSEKEEPING_S`` from the epoll timeout.

A full rx ring is back-pressure: the datagrams already read stay staged, the socket is not read until
they fit (the kernel's receive buffer absorbs the rest), and each refusal is counted (``rx_ring_full``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pycorosync.ipc.ring_kernels import ring_arm, ring_arm_producer, ring_disarm
from pycorosync.transports.crypto import HEADER_BYTES, MODE_AEAD, MODE_PLAIN, FrameCodec
from pycorosync.transports.links import LinkTable
from pycorosync.transports.peers import PeerState
from pycorosync.transports.udp import batch, evp, frames
from pycorosync.transports.udp.counters import COUNTER_NAMES, DROP_NAMES
from pycorosync.transports.udp.plan import TransportPlan
from pycorosync.transports.udp.sockets import LinkSockets, open_udp_multicast, open_udpu, peer_sockaddr

log = logging.getLogger("TOTEM")
_TX_OVERSIZED = COUNTER_NAMES.index("tx_drop_oversized")

TX_FRAMES = 64  # frames per send batch
RX_ENTRIES = 32  # recvmmsg entries per receive batch (each up to a 64 KiB GRO train)
RX_SEGMENTS = 2048
# After a pass that found nothing the loop sleeps at once. Polling longer was measured (bench/cpg.py and
# per-process schedstat, 3 nodes on 2 cores): 32 empty passes while traffic was dense cost each transport
# about 140 us of CPU per wake-up, twice its useful work at 1 KiB, taken from the cores totem and the
# services need, and CPG 1 KiB throughput rose ~10 % without them. A node has more busy processes than cores.
HOUSEKEEPING_S = 0.5  # link health is judged on the token timeout (seconds); 2 Hz keeps an idle node quiet
BLOCKED_RETRY_S = 0.001
DROP_LOG_INTERVAL_S = 5.0


def ring_triple(ring: Any) -> tuple[np.ndarray, int, int]:
    """(uint8 buffer, byte offset, capacity) of an ``ipc.ring.Ring``, or of such a tuple."""
    if isinstance(ring, tuple):
        return ring[0], int(ring[1]), int(ring[2])
    return ring.array, int(ring.offset), int(ring.capacity)


def bell_fd(bell: Any) -> int:
    """The eventfd of a doorbell given as an int or an object with ``fd``/``fileno()``."""
    if bell is None:
        return -1
    if isinstance(bell, int):
        return bell
    if hasattr(bell, "fileno"):
        return int(bell.fileno())
    return int(bell.fd)


class UdpTransport:
    """One node's UDP link between its tx/rx rings and the network."""

    def __init__(
        self, plan: TransportPlan, tx_ring: Any, rx_ring: Any, tx_bell: Any, rx_bell: Any,
        boot_id: int | None = None, link_table: LinkTable | None = None,
        stats_row: np.ndarray | None = None, stats_columns: list[int] | None = None,
        use_gso: bool = True, use_gro: bool = True, drop_log_interval_s: float = DROP_LOG_INTERVAL_S,
        use_evp: bool = True,
    ) -> None:
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
        self.links = link_table or LinkTable.local(self.node_ids)
        self.ctr = np.zeros(len(COUNTER_NAMES), dtype=np.int64)
        self.stats_row = stats_row
        self.stats_columns = np.array(stats_columns if stats_columns is not None else range(len(COUNTER_NAMES)))
        self.drop_log_interval_s = drop_log_interval_s
        self.sockets = self._open_sockets(use_gso, use_gro)
        self.max_segs = batch.GSO_MAX_SEGMENTS if self.sockets.gso else 1
        self.gso_failed = np.zeros(1, dtype=np.int64)
        names, namelens, self.mcast_idx = self._peer_names()
        slot = HEADER_BYTES + plan.max_frame_bytes + self.codec.trailer
        self.tx = batch.TxBatch(TX_FRAMES, slot, names, namelens)
        self.tx_mv = memoryview(self.tx.stage.reshape(-1))  # type: ignore[arg-type]
        self.tx_counter = np.zeros(1, dtype=np.int64)
        self.tx_plain = np.zeros_like(self.tx.stage)  # AEAD plaintext staging (GCM cannot work in place)
        self.tx_plain_mv = memoryview(self.tx_plain.reshape(-1))  # type: ignore[arg-type]
        # frames longer than netmtu allows (control frames of large clusters) go one at a time, whole, through
        # a stage of their own; the IP layer fragments them (see TransportPlan.max_large_frame_bytes)
        self.max_large_frame = plan.max_large_frame_bytes  # at least max_frame_bytes: netmtu is capped at UDP's
        self.max_rx_datagram = self.max_large_frame + plan.crypto.overhead
        self.tx_large_flag = np.zeros(1, dtype=np.int64)
        self.tx_big: batch.TxBatch | None = None  # made at the first large frame (64 KiB and its plaintext copy)
        self.tx_big_plain = np.zeros((0, 0), dtype=np.uint8)
        self.rx = batch.RxBatch(RX_ENTRIES, RX_SEGMENTS)
        self.rx_mv = memoryview(self.rx.flat)  # type: ignore[arg-type]
        self.verdict = np.zeros(RX_SEGMENTS, dtype=np.int64)
        self.plain_len = np.zeros(RX_SEGMENTS, dtype=np.int64)
        self.scratch = np.zeros_like(self.rx.flat)
        self.scratch_mv = memoryview(self.scratch)  # type: ignore[arg-type]
        self.wake = np.zeros(1, dtype=np.int64)
        self.retired = np.zeros(len(self.node_ids), dtype=np.int64)  # boot ids replaced by a newer one
        self.pending = 0  # staged datagrams from index `pending_start` not yet in the rx ring
        self.pending_start = 0
        self.pending_n = 0
        self.stop_requested = False
        # AES-GCM inside the kernels through libcrypto when it is there, else per frame through 'cryptography'
        self.evp = self.mode == MODE_AEAD and use_evp and evp.available()
        self.rx_fused = False  # the staged batch opens inside evp.open_accept (see _open_sealed)
        self.outl = np.zeros(2, dtype=np.int32)
        self.rx_ctx_ptr = np.zeros(len(self.node_ids), dtype=np.int64)
        self.rx_ctx_boot = np.zeros(len(self.node_ids), dtype=np.int64)
        self._rx_ctx: list[evp.GcmContext | None] = [None] * len(self.node_ids)
        self._tx_ctx = evp.GcmContext(self.codec.key_for(self.node_id, self.boot_id), False) if self.evp else None
        self._drop_logged = np.zeros(len(DROP_NAMES), dtype=np.int64)
        self._oversized_logged = 0
        self._last_drop_log = 0.0
        log.info(
            "UDP transport %s: node %d bound to %s port %d, %s%s, rcvbuf %d bytes, GSO %s, GRO %s, max frame %d",
            plan.transport, plan.node_id, plan.local_addr, plan.port_of(plan.node_id), _mode_name(plan),
            " (OpenSSL EVP in the kernels)" if self.evp else "", self.sockets.rcvbuf_bytes,
            "on" if self.sockets.gso else "off", "on" if self.sockets.gro else "off", plan.max_frame_bytes,
        )

    # -- setup -----------------------------------------------------------------------------------------
    def _open_sockets(self, use_gso: bool, use_gro: bool) -> LinkSockets:
        p = self.plan
        if p.transport == "udp":
            return open_udp_multicast(p.family, p.local_addr, p.group, p.mcastport, p.ttl, True, use_gso, use_gro)
        return open_udpu(p.family, p.local_addr, p.port_of(p.node_id), use_gso, use_gro)

    def _peer_names(self) -> tuple[np.ndarray, np.ndarray, int]:
        p = self.plan
        addr_of = dict(p.nodes)
        rows = [peer_sockaddr(p.family, addr_of[int(n)], p.port_of(int(n))) for n in self.node_ids]
        mcast_idx = -1
        if p.transport == "udp":
            rows.append(peer_sockaddr(p.family, p.group, p.mcastport))
            mcast_idx = len(rows) - 1
        names = np.zeros((len(rows), 28), dtype=np.uint8)
        namelens = np.zeros(len(rows), dtype=np.int64)
        for i, raw in enumerate(rows):
            names[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
            namelens[i] = len(raw)
        return names, namelens, mcast_idx

    @property
    def rx_fds(self) -> list[int]:
        socks = [self.sockets.rx, *self.sockets.extra]
        return [s.fileno() for s in socks]

    # -- tx ----------------------------------------------------------------------------------------------
    def pump_tx(self) -> int:
        """Drains one batch from the tx ring onto the wire, and a large frame that stopped it; returns frames
        taken."""
        n = self._drain_and_send(self.tx, self.tx_plain, self.tx_mv, self.tx_plain_mv, TX_FRAMES,
                                 self.plan.max_frame_bytes, self.max_large_frame, self.max_segs)
        if self.tx_large_flag[0]:
            self.tx_large_flag[0] = 0
            n += self._send_large()
        return n

    def _send_large(self) -> int:
        """The frame at the head of the tx ring is longer than a netmtu datagram: one datagram of its own."""
        big = self.tx_big
        if big is None:
            slot = HEADER_BYTES + self.max_large_frame + self.codec.trailer
            big = self.tx_big = batch.TxBatch(1, slot, self.tx.names, self.tx.namelens)
            self.tx_big_plain = np.zeros_like(big.stage)
        sent = self._drain_and_send(big, self.tx_big_plain, memoryview(big.stage.reshape(-1)),  # type: ignore[arg-type]
                                    memoryview(self.tx_big_plain.reshape(-1)),  # type: ignore[arg-type]
                                    1, self.max_large_frame, 0, 1)
        self.ctr[frames.C_TX_LARGE] += sent
        return sent

    def _drain_and_send(self, t: batch.TxBatch, plain: np.ndarray, stage_mv: memoryview, plain_mv: memoryview,
                        max_frames: int, max_payload: int, large_payload: int, max_segs: int) -> int:
        buf, base, cap = self.txr
        if self._tx_ctx is not None:  # sealed straight out of the ring (no plaintext copy)
            n = evp.drain_seal(
                self._tx_ctx.ptr, buf, base, cap, t.stage, t.lens, t.dests, max_frames, max_payload, large_payload,
                self.tx_large_flag, self.node_ids, self.codec.cluster_hash, self.node_id, self.boot_id,
                self.tx_counter, self.ctr, self.outl,
            )
            assert n >= 0, "EVP refused a GCM nonce: OpenSSL state is broken"
        else:
            n = frames.tx_drain(
                buf, base, cap, t.stage, plain, t.lens, t.dests, max_frames, max_payload, large_payload,
                self.tx_large_flag, self.node_ids, self.mode, self.codec.cluster_hash, self.node_id, self.boot_id,
                self.tx_counter, self.ctr,
            )
        if n <= 0:
            return 0
        if self._tx_ctx is None and self.mode != MODE_PLAIN:
            t.lens[:n] = self.codec.seal_batch(stage_mv, plain_mv, t.slot_bytes, t.lens[:n].tolist())
        batch.send_frames(
            self.sockets.tx.fileno(), t.stage, t.lens, t.dests, n, t.names, t.namelens, self.self_idx,
            self.mcast_idx, t.hdrs, t.iov, t.ctrl, max_segs, self.ctr, self.links.tx_view, self.gso_failed,
        )
        if self.gso_failed[0] and self.max_segs > 1:
            self.max_segs = 1
            log.warning("UDP GSO refused at send time (EIO/EINVAL): sending one datagram per frame from now on")
        return n

    # -- rx ----------------------------------------------------------------------------------------------
    def pump_rx(self, fd: int, now_ns: int) -> int:
        """Reads one batch from socket ``fd`` into the rx ring; returns datagrams read (0: nothing waiting)."""
        if self.pending:
            return 0
        r = self.rx
        m = batch.recv_batch(fd, r.hdrs, r.iov, r.ctrl, self.ctr)
        if m <= 0:
            return 0
        nseg = batch.split_segments(r.hdrs, r.ctrl, m, batch.RX_SLOT_BYTES, r.seg_off, r.seg_len, self.ctr)
        st = self.peers
        frames.rx_classify(
            r.flat, r.seg_off, r.seg_len, nseg, self.mode, self.codec.cluster_hash, self.max_rx_datagram,
            self.node_id, self.node_ids, st.boot, st.top, st.bits, self.verdict, self.ctr, self.links.table, now_ns,
        )
        if self.mode != MODE_PLAIN:
            self._open_sealed(nseg)
        self.pending, self.pending_start, self.pending_n = 1, 0, nseg
        self.flush_pending(now_ns)
        return nseg

    def _open_sealed(self, nseg: int) -> None:
        """Authenticates/decrypts every datagram that passed the header checks into ``scratch``."""
        r, verdict, plen = self.rx, self.verdict, self.plain_len
        # every sender has a context: decrypt straight into the rx ring when the batch is accepted
        self.rx_fused = self.evp and not evp.needs_python(
            self.rx_ctx_ptr, self.rx_ctx_boot, r.flat, r.seg_off, r.seg_len, verdict, nseg)
        if self.rx_fused:
            return
        if self.evp:
            evp.open_batch(self.rx_ctx_ptr, self.rx_ctx_boot, r.flat, self.scratch, r.seg_off, r.seg_len, verdict,
                           plen, nseg, self.outl)
            idx = np.flatnonzero((verdict[:nseg] >= 0) & (plen[:nseg] == evp.NEEDS_PYTHON))
        else:
            idx = np.flatnonzero(verdict[:nseg] >= 0)
        if idx.size:
            # first frames of a sender incarnation (or the whole batch without EVP): through 'cryptography'
            senders = self.node_ids[verdict[idx]].tolist()
            offs = r.seg_off[idx].tolist()
            res = np.array(self.codec.open_batch(
                self.rx_mv, self.scratch_mv, offs, r.seg_len[idx].tolist(), senders), dtype=np.int64)
            plen[idx] = res
            if self.evp:
                for j in np.flatnonzero(res >= 0).tolist():
                    self._install_rx_context(int(verdict[idx[j]]), senders[j], offs[j])
        bad = np.flatnonzero((verdict[:nseg] >= 0) & (plen[:nseg] < 0))
        if bad.size:
            verdict[bad] = -1 - frames.R_BAD_AUTH
            self.ctr[frames.C_DROP_BASE + frames.R_BAD_AUTH] += bad.size

    def _install_rx_context(self, i: int, sender: int, off: int) -> None:
        """An incarnation authenticated through the slow path: later frames open inside the kernel."""
        boot_id = int.from_bytes(self.rx_mv[off + 16 : off + 24], "little")
        if boot_id <= self.rx_ctx_boot[i]:
            return
        old = self._rx_ctx[i]
        ctx = evp.GcmContext(self.codec.key_for(sender, boot_id), True)
        self._rx_ctx[i] = ctx
        self.rx_ctx_ptr[i] = ctx.ptr
        self.rx_ctx_boot[i] = boot_id
        if old is not None:
            old.free()

    def flush_pending(self, now_ns: int) -> bool:
        """Pushes staged datagrams into the rx ring; True when all fit (the socket may be read again)."""
        if not self.pending:
            return True
        r = self.rx
        buf, base, cap = self.rxr
        self.wake[0] = 0
        if self.mode == MODE_PLAIN:
            s = frames.rx_push(
                r.flat, r.seg_off, r.seg_len, self.verdict, self.pending_start, self.pending_n, buf, base, cap,
                self.node_ids, self.ctr, self.wake,
            )
        else:
            s = self._accept_sealed(now_ns)
        if self.wake[0] and self.rx_bell >= 0:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_write(self.rx_bell, 1)
        self.pending_start = s
        if s >= self.pending_n:
            self.pending = 0
            return True
        return False

    def _accept_sealed(self, now_ns: int) -> int:
        if self.rx_fused:
            s = evp.open_accept(
                self.rx_ctx_ptr, self.rx.flat, self.rx.seg_off, self.rx.seg_len, self.verdict, self.pending_start,
                self.pending_n, self.peers.boot, self.peers.top, self.peers.bits, self.links.table, now_ns,
                self.rxr[0], self.rxr[1], self.rxr[2], self.node_ids, self.ctr, self.wake, self.retired, self.outl,
            )
        else:
            s = frames.rx_accept(
                self.rx.flat, self.scratch, self.rx.seg_off, self.plain_len, self.verdict, self.pending_start,
                self.pending_n, self.peers.boot, self.peers.top, self.peers.bits, self.links.table, now_ns,
                self.rxr[0], self.rxr[1], self.rxr[2], self.node_ids, self.ctr, self.wake, self.retired,
            )
        # an incarnation that was replaced: its cached key is no longer needed
        for i in range(self.retired.shape[0]):
            if self.retired[i]:
                self.codec.forget(int(self.node_ids[i]), int(self.retired[i]))
                self.retired[i] = 0
        return int(s)

    # -- loop --------------------------------------------------------------------------------------------
    def run(
        self, stop_fd: int = -1, should_stop: Callable[[], bool] | None = None,
        on_ready: Callable[[], object] | None = None,
    ) -> int:
        """Serves until SIGTERM/SIGINT, ``stop_fd`` readable, or ``should_stop()``; returns the exit status.

        ``on_ready`` is called once the signal handlers and the epoll set are in place.
        """
        ep = select.epoll()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = -1
        old_handlers: dict[int, Any] = {}
        try:
            with contextlib.suppress(ValueError):  # only the main thread may install handlers
                old_wakeup = signal.set_wakeup_fd(wake_w)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    old_handlers[sig] = signal.signal(sig, self._on_signal)
            ep.register(wake_r, select.EPOLLIN)
            if stop_fd >= 0:
                ep.register(stop_fd, select.EPOLLIN)
            if self.tx_bell >= 0:
                ep.register(self.tx_bell, select.EPOLLIN)
            rx_fds = self.rx_fds
            for fd in rx_fds:
                ep.register(fd, select.EPOLLIN)
            if on_ready is not None:
                on_ready()
            next_house = time.monotonic()
            # what a pass reads: the tx ring when its doorbell rang (or arming found a record), the sockets
            # epoll says are readable; a full batch is read again at once. So a wake-up for one frame does
            # one drain or one recvmmsg, not both and then an empty pass of each
            tx_due = True
            rx_due = list(rx_fds)
            rx_watched = True  # the sockets are in the epoll set (not while the rx ring is full)
            while not self.stop_requested and not (should_stop and should_stop()):
                now = time.monotonic()
                now_ns = time.monotonic_ns()
                if tx_due:
                    tx_due = self.pump_tx() >= TX_FRAMES
                if self.pending:
                    self.flush_pending(now_ns)
                if not self.pending and rx_due:
                    again = []
                    for fd in rx_due:
                        if self.pump_rx(fd, now_ns) >= RX_ENTRIES or self.pending:
                            again.append(fd)  # maybe more waiting; after a full rx ring, read it first
                    rx_due = again
                if now >= next_house:
                    self.housekeeping(now)
                    next_house = now + HOUSEKEEPING_S
                if tx_due or (rx_due and not self.pending):
                    continue
                buf, base, _cap = self.txr
                if not ring_arm(buf, base):
                    tx_due = True
                    continue  # a record arrived while arming
                # housekeeping rides on traffic wake-ups; it forces one only an interval late
                timeout = max(0.0, next_house + HOUSEKEEPING_S - time.monotonic())
                if self.pending:
                    # rx ring full: totem rings our doorbell once it frees room (PROTOCOL.md §1); the sockets
                    # leave the epoll set meanwhile, or their pending datagrams would wake it at once
                    rbuf, rbase, rcap = self.rxr
                    if not ring_arm_producer(rbuf, rbase, rcap, self.max_large_frame):
                        ring_disarm(buf, base)
                        continue
                    if rx_watched:
                        for fd in rx_fds:
                            ep.modify(fd, 0)
                        rx_watched = False
                    if self.tx_bell < 0:
                        timeout = min(timeout, BLOCKED_RETRY_S)  # nobody can ring us: poll
                elif not rx_watched:
                    for fd in rx_fds:
                        ep.modify(fd, select.EPOLLIN)
                    rx_watched = True
                events = ep.poll(timeout)
                ring_disarm(buf, base)
                for fd, _ev in events:
                    if fd == self.tx_bell:
                        tx_due = True
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(self.tx_bell)
                    elif fd == wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 64)
                    elif fd == stop_fd:
                        self.stop_requested = True
                    elif fd not in rx_due:
                        rx_due.append(fd)
                if self.pending:
                    tx_due = True  # the bell may be totem's "room again" or a frame to send: both are looked at
            self.housekeeping(time.monotonic())
            log.info("UDP transport node %d stopping", self.node_id)
            return 0
        finally:
            ep.close()
            if old_handlers:
                signal.set_wakeup_fd(old_wakeup)
                for sig, h in old_handlers.items():
                    signal.signal(sig, h)
            os.close(wake_r)
            os.close(wake_w)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True

    # -- housekeeping ------------------------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """Publishes counters to the stats row and logs drops once per interval."""
        if self.stats_row is not None:
            self.stats_row[self.stats_columns] = self.ctr
        self.links.update_connected(time.monotonic_ns(), self.plan.token_ms * 1_000_000)
        if now - self._last_drop_log < self.drop_log_interval_s:
            return
        oversized = int(self.ctr[_TX_OVERSIZED])
        if oversized != self._oversized_logged:
            self._last_drop_log = now
            log.error("Dropped %d frames from totem longer than the %d bytes a frame can carry (a bug: please "
                      "report it)", oversized - self._oversized_logged, self.max_large_frame)
            self._oversized_logged = oversized
        drops = self.ctr[frames.C_DROP_BASE : frames.C_DROP_BASE + len(DROP_NAMES)]
        delta = drops - self._drop_logged
        if not delta.any():
            return
        self._last_drop_log = now
        self._drop_logged = drops.copy()
        parts = ", ".join(f"{name} {int(d)}" for name, d in zip(DROP_NAMES, delta) if d and name != "own")
        if not parts:
            return
        bad_auth = int(delta[frames.R_BAD_AUTH])
        if bad_auth:
            log.warning(
                "Received %d frames that failed authentication (%s): a peer has a different authkey or "
                "crypto_cipher/crypto_hash, or someone is sending forged frames. Dropped: %s",
                bad_auth, _mode_name(self.plan), parts,
            )
        else:
            log.warning("Dropped invalid frames: %s", parts)

    def close(self) -> None:
        self.sockets.close()
        for ctx in [self._tx_ctx, *self._rx_ctx]:
            if ctx is not None:
                ctx.free()
        self.rx_ctx_ptr[:] = 0

    def counters(self) -> dict[str, int]:
        return {name: int(v) for name, v in zip(COUNTER_NAMES, self.ctr)}


def _mode_name(plan: TransportPlan) -> str:
    c = plan.crypto
    if c.cipher == "none" and c.hash == "none":
        return "crypto off"
    return f"crypto_cipher {c.cipher}, crypto_hash {c.hash}"


def run_transport(
    plan: TransportPlan, tx_ring: Any, rx_ring: Any, tx_bell: Any, rx_bell: Any,
    stats_row: np.ndarray | None = None, stop_fd: int = -1, link_table: LinkTable | None = None,
    stats_columns: list[int] | None = None,
) -> int:
    """Process main for the supervisor: serve until SIGTERM or ``stop_fd``; returns the exit status."""
    t = UdpTransport(plan, tx_ring, rx_ring, tx_bell, rx_bell, link_table=link_table, stats_row=stats_row,
                     stats_columns=stats_columns)
    try:
        return t.run(stop_fd)
    finally:
        t.close()


__all__ = ["UdpTransport", "run_transport", "socket"]
