"""The totem process's compiled receive path: in-order frames of whole messages taken from the rx ring
straight into the services' deliver rings, without a Python object per frame.

While the Totem core is OPERATIONAL with everything it received delivered (``TotemCore.in_order_store``),
the next frame of the ring is handled by ``on_frame``'s hot path in a fixed way: stored for
retransmission, and its messages delivered at once. :func:`rx_take` does exactly that for a run of
frames at the head of the rx ring: each one a well-formed MCAST of the current ring without flags, from
another node of its known incarnation, with the next seq, whose entries are all whole messages of one
service that has no backlog; it writes their DELIVER_MESSAGE records (the ones ``kernels.deliver_entries``
writes) into that service's deliver ring, keeps the raw frame in a :class:`Slab`, and consumes it from
the rx ring. It stops at the first frame it does not take (a token, a frame of another kind or ring, a
gap, a fragment, a full deliver ring or slab...), which the caller then hands to ``on_frame``, so the
order of frames, of deliveries and of everything else is the one of the general path. Afterwards the
caller tells the core (``TotemCore.took_in_order``), which then reads the stored frames from the slab
when a peer asks for one again or a new ring is formed (``RingStore.slab``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from pycorosync.engine.runtime.kernels import SERVICE_HEADER_BYTES, _write_entries
from pycorosync.engine.totem.ordering import SORT_QUEUE_SPAN, RingStore
from pycorosync.engine.totem.wire import ENTRY_BYTES, KIND_WHOLE, MAGIC, MCAST, MCAST_HEADER_BYTES, VERSION
from pycorosync.ipc import ring_kernels as rk

if TYPE_CHECKING:
    from pycorosync.engine.totem.core import TotemCore

#: bytes of raw frames a slab holds (a frame the slab has no room for goes the general way)
SLAB_BYTES = 1 << 22
#: service ids are one byte (records.service_header)
SERVICE_IDS = 256

# why rx_take stopped: ``limit`` frames taken, the rx ring is empty, a frame it does not take, no room
# for a frame (in the slab or the deliver ring); and RxPath.take's: the core does not allow it now
STOP_LIMIT, STOP_EMPTY, STOP_FRAME, STOP_ROOM, STOP_CORE = 0, 1, 2, 3, 4

_W, _FREE = 0, 1  # slab meta: write position, oldest position held (both only grow)


# the fields as int64 (numba types get_u32 uint64, and mixing it with int64 makes a float)
@njit(cache=True, nogil=True, inline="always")
def _u32(buf: Any, at: int) -> Any:
    return np.int64(rk.get_u32(buf, at))


@njit(cache=True, nogil=True, inline="always")
def _u64(buf: Any, at: int) -> Any:
    return np.int64(rk.get_u32(buf, at) | (rk.get_u32(buf, at + 4) << 32))


@njit(cache=True, nogil=True)
def rx_take(buf: Any, rx_base: int, rx_cap: int, limit: int, me: int, rep: int, ring_seq: int, nodes: Any,
            incs: Any, high_seq: int, freed_to: int, svc_base: Any, svc_cap: Any, touched: Any, message_kind: int,
            record_type: int, slab: Any, meta: Any, idx_seq: Any, idx_pos: Any,
            idx_len: Any) -> tuple[int, int, int, int]:
    """Takes up to ``limit`` frames from the head of the rx ring (at ``rx_base`` of ``buf``, the node
    segment), as the module says. ``nodes``/``incs``: the known incarnation of each node; ``high_seq``
    and ``freed_to``: the store's; ``svc_base``/``svc_cap``: each service id's deliver ring in ``buf``
    (base -1: not taken here); ``touched[sid]`` is set to 1 for each service id written to. Returns
    (frames taken, messages delivered, the last seq taken, why it stopped)."""
    taken = 0
    messages = 0
    seq = high_seq
    size = slab.shape[0]
    span = idx_seq.shape[0]
    reason = STOP_LIMIT
    while taken < limit:
        hdr, _src, n = rk.ring_peek(buf, rx_base, rx_cap)
        if hdr < 0:
            reason = STOP_EMPTY
            break
        reason = STOP_FRAME
        p = hdr + rk.RECORD_HEADER_BYTES
        if n < MCAST_HEADER_BYTES + ENTRY_BYTES:
            break
        if buf[p] != MAGIC or buf[p + 1] != VERSION or buf[p + 2] != MCAST or buf[p + 3] != 0:
            break
        sender = _u32(buf, p + 4)
        if sender == 0 or sender == me:
            break
        inc = _u32(buf, p + 8)
        known = False
        for k in range(nodes.shape[0]):
            if nodes[k] == sender:
                known = incs[k] == inc
                break
        if not known or _u32(buf, p + 12) != rep or _u64(buf, p + 16) != ring_seq:
            break
        fseq = _u64(buf, p + 24)
        if fseq != seq + 1 or fseq - freed_to >= span:
            break
        count: Any = np.int64(buf[p + 32]) | (np.int64(buf[p + 33]) << 8)
        sid: Any = np.int64(buf[p + MCAST_HEADER_BYTES + ENTRY_BYTES])  # the first entry's service id (checked below)
        if count == 0 or svc_base[sid] < 0:
            break
        # room for the raw frame in the slab, kept whole (a frame that would cross the end starts over)
        w = meta[_W]
        pos = w & (size - 1)
        if pos + n > size:
            w += size - pos
            pos = 0
        if w + n - meta[_FREE] > size:
            reason = STOP_ROOM
            break
        # its messages, all or none: the records of a frame that does not go in whole are taken back
        rbase = svc_base[sid]
        mark_w, mark_n = rk.ring_mark(buf, rbase)
        frame = buf[p:p + n]
        done, off = _write_entries(frame, MCAST_HEADER_BYTES, count, buf, rbase, svc_cap[sid], sid, message_kind,
                                   KIND_WHOLE, record_type, sender, rep, ring_seq)
        if done != count or off != n:
            rk.ring_rollback(buf, rbase, mark_w, mark_n)
            if done == count:
                break  # bytes after the last entry: a malformed frame, for the general path to count
            # an entry it does not take, or one it would take with room in the ring
            q = off + ENTRY_BYTES
            if q + 1 < n and frame[off] == KIND_WHOLE and frame[off + 1] <= 3 and frame[q] == sid \
                    and frame[q + 1] == message_kind and _u32(frame, off + 2) >= SERVICE_HEADER_BYTES:
                reason = STOP_ROOM
            break
        rk._copy(slab, pos, buf, p, n)
        slot = fseq & (span - 1)
        idx_seq[slot] = fseq
        idx_pos[slot] = w
        idx_len[slot] = n
        meta[_W] = w + n
        rk.ring_consume(buf, rx_base, rx_cap, n)
        touched[sid] = 1
        seq = fseq
        taken += 1
        messages += count
    if taken > 0:
        rk.ring_publish_head(buf, rx_base)
        for k in range(SERVICE_IDS):
            if touched[k] != 0:
                rk.ring_publish(buf, svc_base[k])
    return taken, messages, seq, reason


@njit(cache=True, nogil=True)
def slab_free(meta: Any, idx_seq: Any, idx_pos: Any, idx_len: Any, after: int, upto: int) -> None:
    """Frees the frames with after < seq <= upto (and the slab bytes up to the end of the last one)."""
    span = idx_seq.shape[0]
    end = -1
    # rx_take stores no seq ``span`` or more past the freed ones: every frame held is below after + span
    for s in range(after + 1, min(upto, after + span - 1) + 1):
        i = s & (span - 1)
        if idx_seq[i] == s:
            end = idx_pos[i] + idx_len[i]
            idx_seq[i] = 0
    if end > meta[_FREE]:
        meta[_FREE] = end


class Slab:
    """Raw frames by seq in one byte buffer used as a ring (``RingStore.slab``): what :func:`rx_take`
    stored, for as long as the core keeps the frame (``free``); at most ``SORT_QUEUE_SPAN`` seqs apart."""

    def __init__(self, nbytes: int = SLAB_BYTES, span: int = SORT_QUEUE_SPAN) -> None:
        assert nbytes & (nbytes - 1) == 0 and span & (span - 1) == 0, "sizes are powers of two"
        self.data = np.zeros(nbytes, np.uint8)
        self.meta = np.zeros(2, np.int64)
        self.idx_seq = np.zeros(span, np.int64)
        self.idx_pos = np.zeros(span, np.int64)
        self.idx_len = np.zeros(span, np.int64)

    def get(self, seq: int) -> bytes | None:
        i = seq & (len(self.idx_seq) - 1)
        if int(self.idx_seq[i]) != seq:
            return None
        pos = int(self.idx_pos[i]) & (len(self.data) - 1)
        return self.data[pos:pos + int(self.idx_len[i])].tobytes()

    def free(self, after: int, upto: int) -> None:
        slab_free(self.meta, self.idx_seq, self.idx_pos, self.idx_len, after, upto)

    def held_bytes(self) -> int:
        """Bytes of the buffer in use (frames and the gaps before a wrap)."""
        return int(self.meta[_W] - self.meta[_FREE])


class RxPath:
    """:func:`rx_take` for one totem process: its tables (the deliver ring of each service id, the known
    incarnations) and the slab of the core's current store."""

    def __init__(self, rx: Any, deliver: Mapping[int, Any], message_kind: int, record_type: int) -> None:
        self.buf = rx.array
        self.rx_base, self.rx_cap = rx.offset, rx.capacity
        # the deliver rings in the rx ring's buffer (the node segment: all of them)
        at = (self.buf.ctypes.data, self.buf.shape)
        self.rings = {sid: r for sid, r in deliver.items()
                      if 0 <= sid < SERVICE_IDS and (r.array.ctypes.data, r.array.shape) == at}
        self.message_kind, self.record_type = message_kind, record_type
        self.svc_base = np.full(SERVICE_IDS, -1, np.int64)
        self.svc_cap = np.zeros(SERVICE_IDS, np.int64)
        self.touched = np.zeros(SERVICE_IDS, np.uint8)
        self._closed: frozenset[int] | None = None  # service ids left out of svc_base (a backlog)
        self._incs: dict[int, int] = {}
        self.nodes = np.zeros(0, np.int64)
        self.incs = np.zeros(0, np.int64)
        self._store: RingStore | None = None
        self.slab = Slab()

    def _tables(self, known: Mapping[int, int], closed: frozenset[int]) -> None:
        if closed != self._closed:
            self._closed = closed
            self.svc_base.fill(-1)
            for sid, ring in self.rings.items():
                if sid not in closed:
                    self.svc_base[sid], self.svc_cap[sid] = ring.offset, ring.capacity
        if known != self._incs:
            self._incs = dict(known)
            self.nodes = np.array(list(known), np.int64)
            self.incs = np.array(list(known.values()), np.int64)

    def take(self, core: TotemCore, limit: int, closed: frozenset[int]) -> tuple[int, Sequence[int], int]:
        """Runs :func:`rx_take` when the core allows it (``in_order_store``) and tells the core what it
        took; ``closed``: service ids whose deliveries must go the general way (a backlog). Returns
        (frames taken, the service ids written to, why it stopped)."""
        store = core.in_order_store()
        if store is None:
            return 0, (), STOP_CORE
        if store is not self._store:
            # a new ring: its own slab (the old store keeps its one for the recovery of its frames)
            if store.slab is None:
                store.slab = self.slab if self._store is None else Slab()
            self._store = store
            slab = store.slab
            assert isinstance(slab, Slab)
            self.slab = slab
        self._tables(core.known_incarnation, closed)
        slab = self.slab
        rep, ring_seq = store.ring_key
        touched = self.touched
        taken, messages, high, reason = rx_take(
            self.buf, self.rx_base, self.rx_cap, limit, core.node_id, rep, ring_seq, self.nodes, self.incs,
            store.high_seq, store.freed_to, self.svc_base, self.svc_cap, touched, self.message_kind, self.record_type,
            slab.data, slab.meta, slab.idx_seq, slab.idx_pos, slab.idx_len)
        if not taken:
            return 0, (), reason
        core.took_in_order(high, taken, messages)
        written = [sid for sid in self.rings if touched[sid]]
        touched[written] = 0
        return taken, written, reason


def warm() -> None:
    """Compiles ``rx_take`` and ``slab_free`` for the argument types the totem process uses."""
    from pycorosync.ipc.ring import Ring

    cap = 4096
    buf = np.zeros(2 * Ring.layout_bytes(cap), np.uint8)
    rx = Ring.create(buf, cap, 0, "rx")
    deliver = Ring.create(buf, cap, Ring.layout_bytes(cap), "deliver")
    entry = bytes((KIND_WHOLE, 1)) + (6).to_bytes(4, "little") + bytes(8) + bytes((2, 0, 0, 0)) + b"hi"
    head = bytes((MAGIC, VERSION, MCAST, 0)) + (2).to_bytes(4, "little") + (7).to_bytes(4, "little")
    head += (1).to_bytes(4, "little") + (5).to_bytes(8, "little") + (1).to_bytes(8, "little") + (1).to_bytes(2, "little")
    rx.push(2, head + entry)
    svc_base = np.full(SERVICE_IDS, -1, np.int64)
    svc_cap = np.zeros(SERVICE_IDS, np.int64)
    svc_base[2], svc_cap[2] = deliver.offset, deliver.capacity
    slab = Slab(1 << 16, 64)
    got = rx_take(buf, rx.offset, rx.capacity, 8, 1, 1, 5, np.array([2], np.int64), np.array([7], np.int64), 0,
                  0, svc_base, svc_cap, np.zeros(SERVICE_IDS, np.uint8), 0, 1, slab.data, slab.meta, slab.idx_seq, slab.idx_pos, slab.idx_len)
    assert got[:3] == (1, 1, 1), got
    assert slab.get(1) == head + entry
    slab.free(0, 1)
    assert slab.get(1) is None and slab.held_bytes() == 0
