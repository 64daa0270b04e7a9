"""numba kernels between the rings and the UDP batches: frame headers, drop checks, ring copies.

tx: :func:`tx_drain` pops up to a batch of records from the tx ring (type = destination node id, 0 = all)
into the send stage, payload at offset 32; in plain mode it also writes the header. Sealed modes leave the
header to ``FrameCodec.seal_into``.

rx: :func:`rx_classify` checks each received datagram's header (length, magic, cluster, sender, replay)
and writes a verdict: the sender's nodelist index, or ``-1 - reason``. In plain mode the replay window is
marked and link health updated here; sealed modes do both after authentication. :func:`rx_push` copies
accepted plain frames into the rx ring (type = sender node id) until the ring is full.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from pycorosync.ipc.ring_kernels import (
    ring_needs_wake,
    ring_peek,
    ring_publish,
    ring_publish_head,
    ring_read,
    ring_release,
    ring_write,
)
from pycorosync.transports.crypto import HEADER_BYTES, MAGIC, MODE_AEAD, MODE_PLAIN, VERSION
from pycorosync.transports.peers import REPLAY, peer_index, replay_mark, replay_verdict

# drop reasons: the same order as crypto.DROP_REASONS (verdict = -1 - reason)
R_TOO_SHORT = 0
R_BAD_HEADER = 1
R_WRONG_CLUSTER = 2
R_UNKNOWN_NODE = 3
R_REPLAY = 4
R_BAD_AUTH = 5
R_OVERSIZED = 6
R_OWN = 7  # our own multicast looped back: not an error, not delivered
N_REASONS = 8

# local counter indices after batch.N_KERNEL_COUNTERS (see transports/udp/counters.py)
C_DROP_BASE = 9  # C_DROP_BASE + reason
C_TX_OVERSIZED = C_DROP_BASE + N_REASONS
C_TX_UNKNOWN_DEST = C_TX_OVERSIZED + 1
C_RX_DELIVERED = C_TX_UNKNOWN_DEST + 1
C_RX_RING_FULL = C_RX_DELIVERED + 1
C_RX_WAKES = C_RX_RING_FULL + 1
C_TX_LARGE = C_RX_WAKES + 1  # counted by the transport's Python side (one per large frame sent)
N_COUNTERS = C_TX_LARGE + 1

# link table columns (per nodelist index)
L_LAST_HEARD_NS = 0
L_RX_PACKETS = 1
L_RX_BYTES = 2
L_TX_PACKETS = 3
L_TX_BYTES = 4
L_BOOT_ID = 5
N_LINK_COLUMNS = 8


@njit(cache=True, nogil=True, inline="always")
def _get(buf: Any, off: int, nbytes: int) -> int:
    v = 0
    for k in range(nbytes - 1, -1, -1):
        v = (v << 8) | np.int64(buf[off + k])
    return v


@njit(cache=True, nogil=True, inline="always")
def _put(buf: Any, off: int, nbytes: int, value: int) -> None:
    for k in range(nbytes):
        buf[off + k] = np.uint8((value >> (8 * k)) & 0xFF)


@njit(cache=True, nogil=True)
def write_header(row: Any, mode: int, chash: int, node_id: int, boot_id: int, counter: int) -> None:
    """The 32-byte frame header at ``row[0:32]`` (the layout ``FrameCodec`` reads)."""
    _put(row, 0, 2, MAGIC)
    row[2] = np.uint8(VERSION)
    row[3] = np.uint8(mode)
    _put(row, 4, 4, chash)
    _put(row, 8, 4, node_id)
    _put(row, 12, 4, 0)
    _put(row, 16, 8, boot_id)
    _put(row, 24, 8, counter)


TX_DROPPED = -2
TX_LARGE = -3


@njit(cache=True, nogil=True)
def tx_dest_or_drop(
    rbuf: Any, rbase: int, rcap: int, rtype: int, n: int, max_payload: int, room: int, large_payload: int,
    node_ids: Any, ctr: Any,
) -> int:
    """The destination of the tx record just peeked: its nodelist index, -1 for every node, TX_LARGE (left
    in the ring) when it is longer than ``max_payload``/``room`` but at most ``large_payload`` (it goes out
    through the large-frame path), or TX_DROPPED when it is longer still or for a node id not in the
    nodelist (then released and counted: totem's bug, not the network's)."""
    if n > max_payload or n > room:
        if n <= large_payload:
            return TX_LARGE
        ring_release(rbuf, rbase, rcap, n)
        ctr[C_TX_OVERSIZED] += 1
        return TX_DROPPED
    if rtype == 0:
        return -1
    d = peer_index(node_ids, rtype)
    if d < 0:
        ring_release(rbuf, rbase, rcap, n)
        ctr[C_TX_UNKNOWN_DEST] += 1
        return TX_DROPPED
    return d


@njit(cache=True, nogil=True)
def tx_drain(
    rbuf: Any, rbase: int, rcap: int, stage: Any, plain: Any, lens: Any, dests: Any, max_frames: int,
    max_payload: int, large_payload: int, large: Any, node_ids: Any, mode: int, chash: int, node_id: int,
    boot_id: int, tx_counter: Any, ctr: Any,
) -> int:
    """Pops up to ``max_frames`` records and writes each frame's header into ``stage``; returns how many.

    The payload goes to ``stage[i, 32:]`` (plain, HMAC) or to ``plain[i, :]`` (AEAD: GCM cannot encrypt
    in place). ``lens[i]`` is the datagram length in plain mode, the payload length otherwise. A record
    for an unknown node id or longer than ``large_payload`` is dropped and counted (totem's bug, not the
    network's). The batch stops at a record longer than ``max_payload`` but not than ``large_payload``: it
    stays in the ring and ``large[0]`` is set (the caller sends it through its large-frame stage).
    """
    k = 0
    got = 0
    aead = mode == MODE_AEAD
    room = stage.shape[1] - HEADER_BYTES
    while k < max_frames:
        hdr, rtype, n = ring_peek(rbuf, rbase, rcap)
        if hdr < 0:
            break  # EMPTY, or CORRUPT (totem's ring is trusted; the next call reports it again)
        d = tx_dest_or_drop(rbuf, rbase, rcap, rtype, n, max_payload, room, large_payload, node_ids, ctr)
        if d == TX_LARGE:
            large[0] = 1
            break
        got += 1
        if d == TX_DROPPED:
            continue
        row = stage[k]
        if aead:
            ring_read(rbuf, rbase, rcap, plain[k], 0)
        else:
            ring_read(rbuf, rbase, rcap, row, HEADER_BYTES)
        dests[k] = d
        c = tx_counter[0] + 1
        tx_counter[0] = c
        write_header(row, mode, chash, node_id, boot_id, c)
        lens[k] = n + HEADER_BYTES if mode == MODE_PLAIN else n
        k += 1
    if got > 0:
        ring_publish_head(rbuf, rbase)
    return k


@njit(cache=True, nogil=True)
def rx_classify(
    flat: Any, seg_off: Any, seg_len: Any, nseg: int, mode: int, chash: int, max_datagram: int, self_id: int,
    node_ids: Any, boot: Any, top: Any, bits: Any, verdict: Any, ctr: Any, link: Any, now_ns: int,
) -> int:
    """Writes each datagram's verdict (sender index, or -1 - reason); returns how many passed."""
    ok = 0
    overhead_min = HEADER_BYTES
    for s in range(nseg):
        off = seg_off[s]
        ln = seg_len[s]
        r = -1
        if ln > max_datagram:
            r = R_OVERSIZED
        elif ln < overhead_min:
            r = R_TOO_SHORT
        elif _get(flat, off, 2) != MAGIC or flat[off + 2] != VERSION:
            r = R_BAD_HEADER
        elif _get(flat, off + 4, 4) != chash:
            r = R_WRONG_CLUSTER
        elif flat[off + 3] != mode:
            r = R_BAD_AUTH
        else:
            sender = _get(flat, off + 8, 4)
            i = peer_index(node_ids, sender)
            if sender == self_id:
                r = R_OWN
            elif i < 0:
                r = R_UNKNOWN_NODE
            else:
                b = _get(flat, off + 16, 8)
                c = _get(flat, off + 24, 8)
                v = replay_verdict(boot, top, bits, i, b, c)
                if v == REPLAY:
                    r = R_REPLAY
                else:
                    verdict[s] = i
                    ok += 1
                    if mode == MODE_PLAIN:
                        replay_mark(boot, top, bits, i, b, c)
                        link[i, L_LAST_HEARD_NS] = now_ns
                        link[i, L_RX_PACKETS] += 1
                        link[i, L_RX_BYTES] += ln
                        link[i, L_BOOT_ID] = b
                    continue
        verdict[s] = -1 - r
        ctr[C_DROP_BASE + r] += 1
    return ok


@njit(cache=True, nogil=True)
def rx_push(
    flat: Any, seg_off: Any, seg_len: Any, verdict: Any, start: int, nseg: int, rbuf: Any, rbase: int, rcap: int,
    node_ids: Any, ctr: Any, wake: Any,
) -> int:
    """Copies accepted plain frames from ``start`` into the rx ring; returns the first index not pushed.

    Stops at a full ring (the caller stops reading the socket until there is room). ``wake[0]`` is set
    to 1 when the consumer must be woken.
    """
    s = start
    pushed = 0
    while s < nseg:
        i = verdict[s]
        if i >= 0:
            # int(): a no-op compiled; as plain Python (NUMBA_DISABLE_JIT) the ring helpers want Python ints
            off = int(seg_off[s]) + HEADER_BYTES
            n = int(seg_len[s]) - HEADER_BYTES
            if not ring_write(rbuf, rbase, rcap, int(node_ids[i]), flat, off, n):
                ctr[C_RX_RING_FULL] += 1
                break
            pushed += 1
        s += 1
    if pushed > 0:
        ring_publish(rbuf, rbase)
        ctr[C_RX_DELIVERED] += pushed
        if ring_needs_wake(rbuf, rbase):
            wake[0] = 1
            ctr[C_RX_WAKES] += 1
    return s


@njit(cache=True, nogil=True)
def rx_accept(
    flat: Any, scratch: Any, seg_off: Any, plain_len: Any, verdict: Any, start: int, nseg: int,
    boot: Any, top: Any, bits: Any, link: Any, now_ns: int, rbuf: Any, rbase: int, rcap: int,
    node_ids: Any, ctr: Any, wake: Any, retired: Any,
) -> int:
    """Sealed modes: pushes authenticated frames (plaintext in ``scratch`` at the datagram's offset).

    The replay window is checked again (a duplicate inside one batch passed the first check twice) and
    marked only once the frame is in the ring. Returns the first index not pushed (ring full).
    ``retired[i]`` receives a boot id replaced by a newer incarnation (its key can be dropped).
    """
    s = start
    pushed = 0
    while s < nseg:
        i = verdict[s]
        if i >= 0:
            off = int(seg_off[s])
            b = _get(flat, off + 16, 8)
            c = _get(flat, off + 24, 8)
            if replay_verdict(boot, top, bits, i, b, c) == REPLAY:
                verdict[s] = -1 - R_REPLAY
                ctr[C_DROP_BASE + R_REPLAY] += 1
            else:
                n = int(plain_len[s])
                if not ring_write(rbuf, rbase, rcap, int(node_ids[i]), scratch, off, n):
                    ctr[C_RX_RING_FULL] += 1
                    break
                pushed += 1
                note_accepted(boot, top, bits, link, retired, i, b, c, n, now_ns)
        s += 1
    finish_accept(rbuf, rbase, pushed, ctr, wake)
    return s


@njit(cache=True, nogil=True)
def note_accepted(
    boot: Any, top: Any, bits: Any, link: Any, retired: Any, i: int, b: int, c: int, n: int, now_ns: int
) -> None:
    """Bookkeeping of a sealed frame from peer ``i`` (boot id ``b``, counter ``c``, ``n`` bytes) now in the ring."""
    if b > boot[i] and boot[i] > 0:
        retired[i] = boot[i]
    replay_mark(boot, top, bits, i, b, c)
    link[i, L_LAST_HEARD_NS] = now_ns
    link[i, L_RX_PACKETS] += 1
    link[i, L_RX_BYTES] += n
    link[i, L_BOOT_ID] = b


@njit(cache=True, nogil=True)
def finish_accept(rbuf: Any, rbase: int, pushed: int, ctr: Any, wake: Any) -> None:
    """Publishes ``pushed`` new rx records; ``wake[0]`` = 1 when totem sleeps on the ring."""
    if pushed > 0:
        ring_publish(rbuf, rbase)
        ctr[C_RX_DELIVERED] += pushed
        if ring_needs_wake(rbuf, rbase):
            wake[0] = 1
            ctr[C_RX_WAKES] += 1


def classify_reference(
    datagram: bytes, mode: int, chash: int, max_datagram: int, self_id: int, node_ids: list[int]
) -> int:
    """Reference of rx_classify's header checks for one datagram (replay not included): reason or index."""
    from pycorosync.transports.crypto import check_header

    reason = check_header(datagram, mode, chash, max_datagram)
    names = ("too_short", "bad_header", "wrong_cluster", "unknown_node", "replay", "bad_auth", "oversized")
    if reason is not None:
        return -1 - names.index(reason)
    sender = int.from_bytes(datagram[8:12], "little")
    if sender == self_id:
        return -1 - R_OWN
    if sender not in node_ids:
        return -1 - R_UNKNOWN_NODE
    return sorted(node_ids).index(sender)


def warm() -> None:
    """Compiles every kernel of this module on a small in-memory ring."""
    from pycorosync.ipc.ring_kernels import RING_HEADER_BYTES, ring_push

    cap = 4096
    ring = np.zeros(RING_HEADER_BYTES + cap, np.uint8)
    ring_push(ring, 0, cap, 0, np.zeros(16, np.uint8))
    stage = np.zeros((2, 128), np.uint8)
    lens = np.zeros(2, np.int64)
    dests = np.zeros(2, np.int64)
    ids = np.array([1, 2], np.int64)
    ctr = np.zeros(N_COUNTERS, np.int64)
    tcount = np.zeros(1, np.int64)
    n = tx_drain(ring, 0, cap, stage, stage, lens, dests, 2, 64, 64, np.zeros(1, np.int64), ids, MODE_PLAIN, 7, 1, 9,
                 tcount, ctr)
    flat = stage.reshape(-1)
    seg_off = np.array([0, 128], np.int64)
    seg_len = lens.copy()
    verdict = np.zeros(2, np.int64)
    link = np.zeros((2, N_LINK_COLUMNS), np.int64)
    boot = np.zeros(2, np.int64)
    top = np.zeros(2, np.int64)
    bits = np.zeros((2, 16), np.uint64)
    rx_classify(flat, seg_off, seg_len, n, MODE_PLAIN, 7, 1500, 2, ids, boot, top, bits, verdict, ctr, link, 1)
    wake = np.zeros(1, np.int64)
    rx_push(flat, seg_off, seg_len, verdict, 0, n, ring, 0, cap, ids, ctr, wake)
    plen = np.zeros(2, np.int64)
    retired = np.zeros(2, np.int64)
    rx_accept(flat, flat.copy(), seg_off, plen, verdict, 0, n, boot, top, bits, link, 1, ring, 0, cap, ids, ctr, wake,
              retired)
