"""The receive side of one ring: frames by seq, my_aru, high_seq, and in-order delivery."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from pycorosync.engine.totem.api import Action, Deliver, DeliverFrame, Guarantee, RingId, SendFrame
from pycorosync.engine.totem.fragment import Assembler
from pycorosync.engine.totem.wire import KIND_WHOLE, MCAST_ENCAPSULATED, MCAST_SAFE, Mcast, decode_mcast

#: how far beyond my_aru a frame may be stored (corosync's sort queue spans 16384 seqs)
SORT_QUEUE_SPAN = 16384
_GUARANTEES = tuple(Guarantee)


def _make_deliver_fast(ring_id: RingId, sender: int, msg_id: int, guarantee: Guarantee, payload: bytes) -> Deliver:
    # Deliver is a frozen dataclass whose __init__ costs one object.__setattr__ per field; on the
    # delivery hot path the instance dict is set in one go instead (equal to Deliver(...) in every way).
    d = _new(Deliver)
    _setattr(d, "__dict__", {"ring_id": ring_id, "sender": sender, "msg_id": msg_id, "guarantee": guarantee,
                             "payload": payload})
    return d


def _make_deliver_frame_fast(ring_id: RingId, sender: int, frame: Mcast) -> DeliverFrame:
    f = _new(DeliverFrame)
    _setattr(f, "__dict__", {"ring_id": ring_id, "sender": sender, "frame": frame})
    return f


def _make_sendframe_fast(dest: int | None, data: bytes) -> SendFrame:
    f = _new(SendFrame)
    _setattr(f, "__dict__", {"dest": dest, "data": data})
    return f


_new = object.__new__
_setattr = object.__setattr__
#: constructors equal to Deliver(...) / SendFrame(...), cheaper for frozen dataclasses with an instance dict
make_deliver = Deliver if hasattr(Deliver, "__slots__") else _make_deliver_fast
make_sendframe = SendFrame if hasattr(SendFrame, "__slots__") else _make_sendframe_fast
make_deliver_frame = DeliverFrame if hasattr(DeliverFrame, "__slots__") else _make_deliver_frame_fast


class FrameSlab(Protocol):
    """Where a driver keeps the frames it stored past the core, raw, by seq: frames it received and
    delivered (the totem process's compiled receive path, each at or below my_aru), and frames of this
    node carrying a MIDDLE piece of one of its messages (its frame writer, ``RingStore.add_run``), which
    deliver nothing."""

    def get(self, seq: int) -> bytes | None:
        """The raw frame with this seq, if held."""

    def has(self, seq: int) -> bool:
        """A frame with this seq is held."""

    def free(self, after: int, upto: int) -> None:
        """Forget the frames with after < seq <= upto."""


class FrameWriter(Protocol):
    """A driver that makes the frames of MIDDLE pieces of this node's messages itself, keeps them in the
    store's slab (``RingStore.add_run``) and sends them on a ``SendRun``."""

    def write_middles(self, store: RingStore, plan: tuple[bytes, int, int, int, int, int], sender: int,
                      incarnation: int, first_seq: int) -> int:
        """Makes the frames of ``plan`` (``SendQueue.middle_run``: payload, offset, piece length, frames,
        msg_id, guarantee) with seqs from ``first_seq`` on in ``store.slab``; returns how many it made,
        from the first (fewer when its slab has no room for more)."""


class RingStore:
    """Frames of one ring that this node holds, and how far it has received and delivered them.

    Invariants: ``freed_to <= delivered <= my_aru <= high_seq``; seqs only grow.
    """

    __slots__ = ("delivered", "frames", "freed_to", "high_seq", "miss_counts", "my_aru", "ring_id", "ring_key",
                 "slab")

    def __init__(self, ring_id: RingId) -> None:
        self.ring_id = ring_id
        self.ring_key = (ring_id.rep, ring_id.seq)
        self.frames: dict[int, Mcast] = {}
        #: frames a driver stored itself (raw bytes, see ``FrameSlab``)
        self.slab: FrameSlab | None = None
        self.my_aru = 0
        self.high_seq = 0
        self.delivered = 0
        self.freed_to = 0
        self.miss_counts: dict[int, int] = {}

    def add(self, m: Mcast) -> bool:
        """Store a frame; False if it is a duplicate, already freed, or beyond the sort queue."""
        seq = m.seq
        if seq == self.high_seq + 1 and self.my_aru == self.high_seq and not self.miss_counts:
            # the next frame of a store that holds everything (a sender's own new frames): nothing above
            # high_seq is held, so it is no duplicate, and my_aru moves onto it
            self.frames[seq] = m
            self.high_seq = self.my_aru = seq
            return True
        slab = self.slab
        if seq <= self.my_aru or seq in self.frames or seq > self.my_aru + SORT_QUEUE_SPAN \
                or (slab is not None and slab.has(seq)):
            return False
        self.frames[seq] = m
        if seq > self.high_seq:
            self.high_seq = seq
        if seq == self.my_aru + 1:
            self._advance(seq)
        elif seq in self.miss_counts:
            del self.miss_counts[seq]
        assert self.my_aru <= self.high_seq
        return True

    def add_run(self, first: int, last: int) -> None:
        """The frames with seqs first..last, of this node, are in the slab now (a frame writer made them)."""
        if last > self.high_seq:
            self.high_seq = last
        if first == self.my_aru + 1:
            self._advance(last)

    def _advance(self, aru: int) -> None:
        # everything up to ``aru`` is held: my_aru goes on over what follows it
        frames, slab = self.frames, self.slab
        while aru + 1 in frames or (slab is not None and slab.has(aru + 1)):
            aru += 1
        self.my_aru = aru
        if self.miss_counts:
            for s in [s for s in self.miss_counts if s <= aru]:
                del self.miss_counts[s]

    def get(self, seq: int) -> Mcast | None:
        """The frame with this seq, if held."""
        m = self.frames.get(seq)
        if m is None and self.slab is not None and seq > self.freed_to:
            raw = self.slab.get(seq)
            if raw is not None:
                return decode_mcast(raw)
        return m

    def free(self, upto: int) -> None:
        """Forget frames every member holds and this node delivered (seq <= upto)."""
        upto = min(upto, self.delivered)
        if upto <= self.freed_to:
            return
        frames = self.frames
        if frames:
            for s in range(self.freed_to + 1, upto + 1):
                frames.pop(s, None)
        if self.slab is not None:
            self.slab.free(self.freed_to, upto)
        self.freed_to = upto

    def missing(self, upto: int, miss_count_const: int) -> list[int]:
        """Seqs in (my_aru, upto] not held and missed on ``miss_count_const`` token visits."""
        out = []
        counts = self.miss_counts
        frames, slab = self.frames, self.slab
        for s in range(self.my_aru + 1, min(upto, self.my_aru + SORT_QUEUE_SPAN) + 1):
            if s in frames or (slab is not None and slab.has(s)):
                continue
            c = counts.get(s, 0) + 1
            counts[s] = c
            if c >= miss_count_const:
                out.append(s)
        return out

    def held_in(self, low: int, high: int) -> list[Mcast]:
        """Frames held with low < seq <= high, in seq order."""
        if self.slab is None:
            frames = self.frames
            return [frames[s] for s in range(low + 1, high + 1) if s in frames]
        held = (self.get(s) for s in range(max(low, self.freed_to) + 1, high + 1))
        return [m for m in held if m is not None]


def deliver_frames(store: RingStore, upto: int, safe_seq: int, assembler: Assembler, deliver_ring: RingId,
                   out: list[Action], only_senders: Collection[int] | None = None, whole_frames: bool = False) -> int:
    """Deliver held frames after ``store.delivered`` up to ``upto`` in seq order; returns messages delivered.

    Stops at the first missing seq, and at a frame carrying a SAFE message whose seq is above
    ``safe_seq`` (not yet known to be held by every member). With ``only_senders`` (the transitional
    configuration), missing seqs are skipped and frames of other senders are dropped. With
    ``whole_frames``, a frame whose entries are all whole messages is one ``DeliverFrame``.
    """
    frames, slab = store.frames, store.slab
    seq = store.delivered
    count = 0
    append = out.append
    feed = assembler.feed
    guarantees = _GUARANTEES
    make = make_deliver
    while seq < upto:
        m = frames.get(seq + 1)
        if m is None:
            if slab is not None and slab.has(seq + 1):
                seq += 1  # a MIDDLE piece of this node's (above what was delivered, none received is there)
                continue
            if only_senders is None:
                break
            seq += 1
            continue
        if m.flags & MCAST_SAFE and m.seq > safe_seq:
            break
        seq += 1
        if m.flags & MCAST_ENCAPSULATED:
            continue  # recovery traffic: unwrapped into the old ring's store on receipt
        sender = m.sender
        if only_senders is not None and sender not in only_senders:
            continue
        if whole_frames and m.whole:
            append(make_deliver_frame(deliver_ring, sender, m))
            count += m.count
            continue
        own = m.own
        if own is not None:
            for msg_id, guarantee, payload in own:
                append(make(deliver_ring, sender, msg_id, guarantees[guarantee], payload))
            count += len(own)
            continue
        for kind, guarantee, msg_id, payload, total in m.entries:
            if kind == KIND_WHOLE:
                append(make(deliver_ring, sender, msg_id, guarantees[guarantee], payload))
                count += 1
            else:
                done = feed(sender, kind, guarantee, msg_id, payload, total)
                if done is not None:
                    append(make(deliver_ring, sender, done[0], guarantees[done[1]], done[2]))
                    count += 1
    store.delivered = seq
    return count
