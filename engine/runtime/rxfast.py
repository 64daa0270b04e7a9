"""The totem process's compiled receive path: in-order frames taken from the rx ring straight into the
services' deliver rings, without a Python object per frame.

While the Totem core is OPERATIONAL with everything it received delivered (``TotemCore.in_order_store``),
the next frame of the ring is handled by ``on_frame`` in a fixed way: stored for retransmission, its
whole messages delivered at once, its pieces of a large message added to the sender's assembly (the
message delivered at its LAST piece). :func:`rx_take` does exactly that for a run of frames at the head
of the rx ring: each one a well-formed MCAST of the current ring without flags, from another node of its
known incarnation, with the next seq, whose messages all belong to one service that has no backlog. It
writes their DELIVER_MESSAGE records (the ones ``TotemRuntime._route`` makes) into that service's deliver
ring, keeps each node's assembly in :class:`Assemblies` and the raw frame in a :class:`Slab`, and
consumes the frame from the rx ring. It stops at the first frame it does not take (a token, a frame of
another kind or ring, a gap, a piece the core's assembler must see, a full deliver ring or slab...),
which the caller then hands to ``on_frame``, so the order of frames, of deliveries and of everything
else is the one of the general path. Afterwards the caller tells the core (``TotemCore.took_in_order``),
which reads the stored frames from the slab when a peer asks for one again or a new ring is formed
(``RingStore.slab``), and takes a node's assembly over when that node's next piece comes its way
(``Assembler.external``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from pycorosync.engine.runtime.kernels import MESSAGE_HEADER_BYTES, SERVICE_HEADER_BYTES, message_header
from pycorosync.engine.totem.ordering import SORT_QUEUE_SPAN, RingStore
from pycorosync.engine.totem.wire import (
    ENTRY,
    ENTRY_BYTES,
    HEADER,
    KIND_FIRST,
    KIND_LAST,
    KIND_MIDDLE,
    KIND_WHOLE,
    MAGIC,
    MCAST,
    MCAST_BODY,
    MCAST_HEADER_BYTES,
    VERSION,
)
from pycorosync.ipc import ring_kernels as rk

if TYPE_CHECKING:
    from pycorosync.engine.totem.core import TotemCore

#: bytes of raw frames a slab holds (a frame the slab has no room for goes the general way)
SLAB_BYTES = 1 << 22
#: service ids are one byte (records.service_header)
SERVICE_IDS = 256
#: the largest message (service header included) the compiled path assembles; a larger one, the core
ASSEMBLY_BYTES = 4 << 20

# why rx_take stopped: ``limit`` frames taken, the rx ring is empty, a frame it does not take, no room
# for a frame (in the slab or the deliver ring); and RxPath.take's: the core does not allow it now
STOP_LIMIT, STOP_EMPTY, STOP_FRAME, STOP_ROOM, STOP_CORE = 0, 1, 2, 3, 4

_W, _FREE = 0, 1  # slab meta: write position, oldest position held (both only grow)
#: an assembly's state (a row of ``asm`` per node): open, msg_id, guarantee, total length, bytes held
A_ACTIVE, A_MSGID, A_GUARANTEE, A_TOTAL, A_FILL = 0, 1, 2, 3, 4


# the fields as int64 (numba types get_u32 uint64, and mixing it with int64 makes a float)
@njit(cache=True, nogil=True, inline="always")
def _u32(buf: Any, at: int) -> Any:
    return np.int64(rk.get_u32(buf, at))


@njit(cache=True, nogil=True, inline="always")
def _u64(buf: Any, at: int) -> Any:
    return np.int64(rk.get_u32(buf, at) | (rk.get_u32(buf, at + 4) << 32))


@njit(cache=True, nogil=True, inline="always")
def _slab_place(meta: Any, size: int, n: int) -> Any:
    """Where a frame of ``n`` bytes goes in a slab of ``size`` bytes (a position that only grows; one that
    would cross the end starts over at 0), or -1 when the slab has no room for it."""
    w = meta[_W]
    pos = w & (size - 1)
    if pos + n > size:
        w += size - pos
    if w + n - meta[_FREE] > size:
        return -1
    return w


@njit(cache=True, nogil=True)
def _check_frame(buf: Any, p: int, n: int, count: int, k: int, svc_base: Any, message_kind: int, asm: Any,
                 arena: Any, slot_bytes: int, py_holds: Any) -> tuple[int, int]:
    """(service id, records it makes) of the frame at ``buf[p:p + n]`` of the node in slot ``k``, or
    records -1 when it is not taken here. Taken: the entries fill the frame exactly; they are
    [LAST] [WHOLE...] [FIRST] or one MIDDLE, as the packer lays them out; every message is a
    ``message_kind`` one of the same service, whose ring is open; a LAST or MIDDLE continues this
    node's assembly here, a FIRST starts one when none is left open (the Python assembler holds none of
    the node's: ``py_holds[k]``), with the checks ``fragment.Assembler.feed`` makes."""
    end = p + n
    off = p + MCAST_HEADER_BYTES
    sid = -1
    records = 0
    base = k * slot_bytes
    active = asm[k, A_ACTIVE] != 0
    for e in range(count):
        if off + ENTRY_BYTES > end:
            return -1, -1
        kind = buf[off]
        g = buf[off + 1]
        length = _u32(buf, off + 2)
        q = off + ENTRY_BYTES
        total = 0
        if kind == KIND_FIRST:
            if q + 4 > end:
                return -1, -1
            total = _u32(buf, q)
            q += 4
        if g > 3 or kind > KIND_LAST or q + length > end:
            return -1, -1
        s: Any = -1
        if kind == KIND_WHOLE:
            if length < SERVICE_HEADER_BYTES or buf[q + 1] != message_kind:
                return -1, -1
            s = np.int64(buf[q])
        elif kind == KIND_FIRST:
            if e != count - 1 or active or py_holds[k] != 0 or total > slot_bytes or length >= total \
                    or length < SERVICE_HEADER_BYTES or buf[q + 1] != message_kind:
                return -1, -1
        else:  # a continuation of the open assembly, with the msg_id it started with
            if e != 0 or not active or py_holds[k] != 0 or _u64(buf, off + 6) != asm[k, A_MSGID]:
                return -1, -1
            fill = asm[k, A_FILL] + length
            if kind == KIND_LAST:
                if fill != asm[k, A_TOTAL]:
                    return -1, -1
                s = np.int64(arena[base])
                active = False
            elif count != 1 or fill >= asm[k, A_TOTAL]:
                return -1, -1
        if s >= 0:
            if sid < 0:
                sid = s
            if s != sid or svc_base[s] < 0:
                return -1, -1
            records += 1
        off = q + length
    if off != end:
        return -1, -1
    return sid, records


@njit(cache=True, nogil=True)
def _write_frame(buf: Any, p: int, n: int, count: int, k: int, rbase: int, rcap: int, record_type: int,
                 sender: int, rep: int, ring_seq: int, asm: Any, arena: Any, slot_bytes: int) -> bool:
    """Writes the DELIVER_MESSAGE records of a frame ``_check_frame`` took (its whole messages, and the
    one its LAST completes, from the assembly and the piece) into the ring at ``rbase``; False when the
    ring has no room for one (the caller takes back what was written)."""
    off = p + MCAST_HEADER_BYTES
    base = k * slot_bytes
    for _ in range(count):
        kind = buf[off]
        g = buf[off + 1]
        length = _u32(buf, off + 2)
        q = off + ENTRY_BYTES + (4 if kind == KIND_FIRST else 0)
        if kind == KIND_WHOLE:
            body = length - SERVICE_HEADER_BYTES
            dst = rk.ring_reserve(buf, rbase, rcap, MESSAGE_HEADER_BYTES + body)
            if dst < 0:
                return False
            message_header(buf, dst + rk.RECORD_HEADER_BYTES, sender, rep, ring_seq, g)
            rk._copy(buf, dst + rk.RECORD_HEADER_BYTES + MESSAGE_HEADER_BYTES, buf, q + SERVICE_HEADER_BYTES, body)
            rk.ring_commit(buf, rbase, rcap, record_type, MESSAGE_HEADER_BYTES + body)
        elif kind == KIND_LAST:
            held = asm[k, A_FILL] - SERVICE_HEADER_BYTES
            body = held + length
            dst = rk.ring_reserve(buf, rbase, rcap, MESSAGE_HEADER_BYTES + body)
            if dst < 0:
                return False
            at = dst + rk.RECORD_HEADER_BYTES
            message_header(buf, at, sender, rep, ring_seq, asm[k, A_GUARANTEE])
            rk._copy(buf, at + MESSAGE_HEADER_BYTES, arena, base + SERVICE_HEADER_BYTES, held)
            rk._copy(buf, at + MESSAGE_HEADER_BYTES + held, buf, q, length)
            rk.ring_commit(buf, rbase, rcap, record_type, MESSAGE_HEADER_BYTES + body)
        off = q + length
    return True


@njit(cache=True, nogil=True)
def _assemble(buf: Any, p: int, n: int, count: int, k: int, asm: Any, arena: Any, slot_bytes: int) -> None:
    """The assembly of slot ``k`` after a frame ``_check_frame`` took (and whose records are written):
    a LAST closes it, a MIDDLE adds its piece, a FIRST opens it with its piece."""
    off = p + MCAST_HEADER_BYTES
    base = k * slot_bytes
    for _ in range(count):
        kind = buf[off]
        length = _u32(buf, off + 2)
        q = off + ENTRY_BYTES
        if kind == KIND_FIRST:
            asm[k, A_ACTIVE] = 1
            asm[k, A_MSGID] = _u64(buf, off + 6)
            asm[k, A_GUARANTEE] = buf[off + 1]
            asm[k, A_TOTAL] = _u32(buf, q)
            asm[k, A_FILL] = length
            rk._copy(arena, base, buf, q + 4, length)
            q += 4
        elif kind == KIND_MIDDLE:
            fill = asm[k, A_FILL]
            rk._copy(arena, base + fill, buf, q, length)
            asm[k, A_FILL] = fill + length
        elif kind == KIND_LAST:
            asm[k, A_ACTIVE] = 0
        off = q + length


@njit(cache=True, nogil=True)
def rx_take(buf: Any, rx_base: int, rx_cap: int, limit: int, me: int, rep: int, ring_seq: int, nodes: Any,
            incs: Any, high_seq: int, freed_to: int, svc_base: Any, svc_cap: Any, touched: Any, message_kind: int,
            record_type: int, slab: Any, meta: Any, idx_seq: Any, idx_pos: Any, idx_len: Any, asm: Any,
            arena: Any, slot_bytes: int, py_holds: Any) -> tuple[int, int, int, int]:
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
        slot = -1
        for k in range(nodes.shape[0]):
            if nodes[k] == sender:
                slot = k
                break
        if slot < 0 or incs[slot] != inc or _u32(buf, p + 12) != rep or _u64(buf, p + 16) != ring_seq:
            break
        fseq = _u64(buf, p + 24)
        if fseq != seq + 1 or fseq - freed_to >= span:
            break
        count: Any = np.int64(buf[p + 32]) | (np.int64(buf[p + 33]) << 8)
        # room for the raw frame in the slab, kept whole
        w = _slab_place(meta, size, n)
        if w < 0:
            reason = STOP_ROOM
            break
        pos = w & (size - 1)
        sid, records = _check_frame(buf, p, n, count, slot, svc_base, message_kind, asm, arena, slot_bytes, py_holds)
        if records < 0:
            break
        if records > 0:
            # its messages, all or none: the records of a frame that does not go in whole are taken back
            rbase = svc_base[sid]
            mark_w, mark_n = rk.ring_mark(buf, rbase)
            if not _write_frame(buf, p, n, count, slot, rbase, svc_cap[sid], record_type, sender, rep, ring_seq,
                                asm, arena, slot_bytes):
                rk.ring_rollback(buf, rbase, mark_w, mark_n)
                reason = STOP_ROOM
                break
            touched[sid] = 1
        _assemble(buf, p, n, count, slot, asm, arena, slot_bytes)
        rk._copy(slab, pos, buf, p, n)
        slot = fseq & (span - 1)
        idx_seq[slot] = fseq
        idx_pos[slot] = w
        idx_len[slot] = n
        meta[_W] = w + n
        rk.ring_consume(buf, rx_base, rx_cap, n)
        seq = fseq
        taken += 1
        messages += records
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


@njit(cache=True, nogil=True)
def write_middles(slab: Any, meta: Any, idx_seq: Any, idx_pos: Any, idx_len: Any, freed_to: int, payload: Any,
                  off: int, piece: int, count: int, head: Any, first_seq: int) -> int:
    """Makes up to ``count`` frames, each ``head`` (an MCAST header, body and MIDDLE entry, with the
    frame's seq written at byte 24) and the next ``piece`` bytes of ``payload`` from ``off`` on, with
    seqs from ``first_seq`` on, into the slab; returns how many (it stops where the slab has no room,
    or a seq would be ``span`` or more past the freed ones)."""
    size = slab.shape[0]
    span = idx_seq.shape[0]
    hn = head.shape[0]
    n = hn + piece
    made = 0
    while made < count:
        seq = first_seq + made
        if seq - freed_to >= span:
            break
        w = _slab_place(meta, size, n)
        if w < 0:
            break
        pos = w & (size - 1)
        rk._copy(slab, pos, head, 0, hn)
        for i in range(8):
            slab[pos + 24 + i] = (seq >> (8 * i)) & 0xFF
        rk._copy(slab, pos + hn, payload, off + made * piece, piece)
        slot = seq & (span - 1)
        idx_seq[slot] = seq
        idx_pos[slot] = w
        idx_len[slot] = n
        meta[_W] = w + n
        made += 1
    return made


@njit(cache=True, nogil=True)
def tx_from_slab(buf: Any, tx_base: int, tx_cap: int, slab: Any, idx_seq: Any, idx_pos: Any, idx_len: Any,
                 first: int, count: int) -> int:
    """Writes the slab's frames with seqs ``first``.. (``count``) into the tx ring at ``tx_base`` of ``buf``
    as records for every node (type 0), with one publish; returns how many went in."""
    size = slab.shape[0]
    span = idx_seq.shape[0]
    pushed = 0
    for k in range(count):
        seq = first + k
        i = seq & (span - 1)
        if idx_seq[i] != seq:
            break
        if not rk.ring_write(buf, tx_base, tx_cap, 0, slab, idx_pos[i] & (size - 1), idx_len[i]):
            break
        pushed += 1
    if pushed > 0:
        rk.ring_publish(buf, tx_base)
    return pushed


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

    def has(self, seq: int) -> bool:
        return int(self.idx_seq[seq & (len(self.idx_seq) - 1)]) == seq

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


class Assemblies:
    """The assemblies :func:`rx_take` continues, one row per node of the nodelist (``fragment.Partials``
    for the core's ``Assembler``, which takes a node's over when that node's next piece goes its way).
    A message larger than ``slot_bytes`` is assembled by the core."""

    def __init__(self, nodes: Sequence[int], slot_bytes: int) -> None:
        self.nodes = np.array(nodes, np.int64)
        self.slot_of = {n: k for k, n in enumerate(nodes)}
        self.slot_bytes = slot_bytes
        self.state = np.zeros((len(nodes), 5), np.int64)
        self.arena = np.zeros(len(nodes) * slot_bytes, np.uint8)  # pages are only mapped once written
        self.py_holds = np.zeros(len(nodes), np.uint8)

    def take(self, sender: int) -> tuple[int, int, int, bytearray] | None:
        k = self.slot_of.get(sender)
        if k is None or not self.state[k, A_ACTIVE]:
            return None
        msg_id, guarantee, total, fill = (int(x) for x in self.state[k, 1:])
        self.state[k, A_ACTIVE] = 0
        base = k * self.slot_bytes
        return msg_id, guarantee, total, bytearray(self.arena[base:base + fill])

    def put(self, k: int, held: tuple[int, int, int, bytearray]) -> None:
        """Continues here the assembly (msg_id, guarantee, total, bytes so far) of the node in slot ``k``."""
        msg_id, guarantee, total, buf = held
        base = k * self.slot_bytes
        self.arena[base:base + len(buf)] = np.frombuffer(buf, np.uint8)
        self.state[k] = (1, msg_id, guarantee, total, len(buf))

    def reset(self) -> int:
        n = int(np.count_nonzero(self.state[:, A_ACTIVE]))
        self.state[:, A_ACTIVE] = 0
        return n

    def senders(self) -> Iterator[int]:
        return (int(self.nodes[k]) for k in np.flatnonzero(self.state[:, A_ACTIVE]))


class RxPath:
    """:func:`rx_take` for one totem process: its tables (the deliver ring of each service id, the known
    incarnation of each node), the slab of the core's current store and the assemblies it continues
    (handed to the core's ``Assembler`` as its ``external`` ones)."""

    def __init__(self, core: TotemCore, rx: Any, deliver: Mapping[int, Any], message_kind: int,
                 record_type: int) -> None:
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
        self.asm = Assemblies(core.nodelist, min(core.assembler.max_message_bytes, ASSEMBLY_BYTES))
        core.assembler.external = self.asm
        self.incs = np.full(len(core.nodelist), -1, np.int64)  # by nodelist slot; -1: none known yet
        self._store: RingStore | None = None
        self.slab = Slab()
        self._run_slab: tuple[tuple[int, int], Slab] = ((0, 0), self.slab)  # where the last SendRun's frames are

    def _slab_for(self, store: RingStore) -> Slab:
        if store is not self._store:
            # a new ring: its own slab (the old store keeps its one for the recovery of its frames)
            if store.slab is None:
                store.slab = self.slab if self._store is None else Slab()
            self._store = store
            slab = store.slab
            assert isinstance(slab, Slab)
            self.slab = slab
        return self.slab

    # -- the frame writer (ordering.FrameWriter) ---------------------------------------------------
    def write_middles(self, store: RingStore, plan: tuple[bytes, int, int, int, int, int], sender: int,
                      incarnation: int, first_seq: int) -> int:
        payload, off, piece, count, msg_id, guarantee = plan
        slab = self._slab_for(store)
        rep, ring_seq = store.ring_key
        head = (HEADER.pack(MAGIC, VERSION, MCAST, 0, sender, incarnation, rep, ring_seq) + MCAST_BODY.pack(0, 1)
                + ENTRY.pack(KIND_MIDDLE, guarantee, piece, msg_id))
        made = write_middles(slab.data, slab.meta, slab.idx_seq, slab.idx_pos, slab.idx_len, store.freed_to,
                             np.frombuffer(payload, np.uint8), off, piece, count, np.frombuffer(head, np.uint8),
                             first_seq)
        self._run_slab = (store.ring_key, slab)
        return int(made)

    def push_run(self, ring_key: tuple[int, int], first: int, count: int, tx: Any) -> tuple[int, list[bytes]]:
        """The frames of a ``SendRun`` into the tx ring: (how many went in, the rest as bytes)."""
        key, slab = self._run_slab
        assert key == ring_key, f"a SendRun of ring {ring_key} after frames written for ring {key}"
        n = 0
        if tx is not None:
            n = int(tx_from_slab(tx.array, tx.offset, tx.capacity, slab.data, slab.idx_seq, slab.idx_pos,
                                 slab.idx_len, first, count))
        rest = [slab.get(seq) for seq in range(first + n, first + count)]
        assert all(r is not None for r in rest)
        return n, rest  # type: ignore[return-value]

    def _tables(self, known: Mapping[int, int], closed: frozenset[int]) -> None:
        if closed != self._closed:
            self._closed = closed
            self.svc_base.fill(-1)
            for sid, ring in self.rings.items():
                if sid not in closed:
                    self.svc_base[sid], self.svc_cap[sid] = ring.offset, ring.capacity
        if known != self._incs:
            self._incs = dict(known)
            self.incs.fill(-1)
            for node, inc in known.items():
                k = self.asm.slot_of.get(node)
                if k is not None:
                    self.incs[k] = inc

    def take(self, core: TotemCore, limit: int, closed: frozenset[int]) -> tuple[int, Sequence[int], int]:
        """Runs :func:`rx_take` when the core allows it (``in_order_store``) and tells the core what it
        took; ``closed``: service ids whose deliveries must go the general way (a backlog). Returns
        (frames taken, the service ids written to, why it stopped)."""
        store = core.in_order_store()
        if store is None:
            return 0, (), STOP_CORE
        self._slab_for(store)
        self._tables(core.known_incarnation, closed)
        asm = self.asm
        held = core.assembler.held_here()
        if held:
            # an assembly the core continued (a piece went its way): continued here from now on if it is
            # one rx_take would have begun (a message of a service, not too large); else the core goes on
            # seeing that node's pieces
            assembler = core.assembler
            for node in list(held):
                k = asm.slot_of.get(node)
                partial = assembler.peek(node)
                if k is None or partial is None:
                    continue
                _msg_id, _g, total, buf = partial
                if total <= asm.slot_bytes and len(buf) >= SERVICE_HEADER_BYTES and buf[1] == self.message_kind:
                    assembler.hand_over(node)
                    asm.put(k, partial)
                else:
                    asm.py_holds[k] = 1
            held = assembler.held_here()
        slab = self.slab
        rep, ring_seq = store.ring_key
        touched = self.touched
        taken, messages, high, reason = rx_take(
            self.buf, self.rx_base, self.rx_cap, limit, core.node_id, rep, ring_seq, asm.nodes, self.incs,
            store.high_seq, store.freed_to, self.svc_base, self.svc_cap, touched, self.message_kind, self.record_type,
            slab.data, slab.meta, slab.idx_seq, slab.idx_pos, slab.idx_len, asm.state, asm.arena, asm.slot_bytes,
            asm.py_holds)
        if held:
            asm.py_holds.fill(0)
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
    asm = Assemblies([2], 1 << 12)
    got = rx_take(buf, rx.offset, rx.capacity, 8, 1, 1, 5, asm.nodes, np.array([7], np.int64), 0, 0, svc_base,
                  svc_cap, np.zeros(SERVICE_IDS, np.uint8), 0, 1, slab.data, slab.meta, slab.idx_seq, slab.idx_pos,
                  slab.idx_len, asm.state, asm.arena, asm.slot_bytes, asm.py_holds)
    assert got[:3] == (1, 1, 1), got
    assert slab.get(1) == head + entry
    slab.free(0, 1)
    assert slab.get(1) is None and slab.held_bytes() == 0
    pay = np.frombuffer(bytes(300), np.uint8)
    middle = np.frombuffer(bytes(MCAST_HEADER_BYTES + ENTRY_BYTES), np.uint8)
    assert write_middles(slab.data, slab.meta, slab.idx_seq, slab.idx_pos, slab.idx_len, 1, pay, 0, 100, 2, middle,
                         2) == 2
    assert tx_from_slab(buf, rx.offset, rx.capacity, slab.data, slab.idx_seq, slab.idx_pos, slab.idx_len, 2, 2) == 2
