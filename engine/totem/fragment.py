"""Packing small messages into frames, fragmenting big ones, and reassembling them per sender.

A frame (one seq) holds as many whole messages as fit in ``netmtu`` minus the transport overhead;
a message that does not fit even in an empty frame is cut into FIRST / MIDDLE... / LAST fragments,
carried by consecutive frames of its sender. Frames of one sender are totally ordered, so receivers
assemble per sender and deliver the message at the position of its LAST fragment.

Atomicity across configuration changes: receivers drop every partial assembly at a configuration
change, and a sender restarts from the FIRST fragment any message it had not completely sent in the
old ring (:meth:`SendQueue.restart_partial`). So a message is delivered whole in one configuration.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterator
from typing import Protocol

from pycorosync.engine.totem.api import MessageTooBig, QueueFull
from pycorosync.engine.totem.wire import (
    ENTRY,
    ENTRY_BYTES,
    FIRST_TOTAL,
    KIND_FIRST,
    KIND_LAST,
    KIND_MIDDLE,
    KIND_WHOLE,
    MCAST_BODY,
    MCAST_HEADER_BYTES,
    MCAST_SAFE,
)

#: a fragment smaller than this is not started at the end of a frame: the frame is closed instead
_MIN_FRAGMENT_BYTES = 64
_SAFE = 3

#: one packed frame before it gets its seq: (flags, entry_count, encoded body parts, every entry whole, the
#: messages this node delivers at the frame's place in the order: (msg_id, guarantee, payload) of each whole
#: one and of the one a LAST piece completes)
PackedFrame = tuple[int, int, list[bytes], bool, list[tuple[int, int, bytes]]]


class SendQueue:
    """The bounded queue of messages waiting for the token (all or nothing per message).

    A message goes in only if all of it fits under the bound; one message bigger than the whole bound
    (up to ``max_message_bytes``) is taken when the queue is empty, so big messages are never refused forever.
    """

    __slots__ = ("_queue", "frame_bytes", "limit_bytes", "max_message_bytes", "next_msg_id", "queued_bytes")

    def __init__(self, frame_payload_bytes: int, limit_frames: int, max_message_bytes: int) -> None:
        self._queue: deque[list[object]] = deque()  # [payload, msg_id, guarantee, offset]
        #: bytes of entries (headers + payload) one frame carries. A frame may have to be resent whole inside a
        #: new ring's frame in RECOVERY (one more MCAST header): room for it is kept, else the transport would
        #: drop the resent frame as oversized and RECOVERY could never finish.
        self.frame_bytes = frame_payload_bytes - 2 * MCAST_HEADER_BYTES
        self.limit_bytes = limit_frames * self.frame_bytes
        self.max_message_bytes = max_message_bytes
        self.queued_bytes = 0
        self.next_msg_id = 1

    def __len__(self) -> int:
        return len(self._queue)

    def _cost(self, size: int) -> int:
        if size + ENTRY_BYTES <= self.frame_bytes:
            return size + ENTRY_BYTES
        return size + (ENTRY_BYTES + 4) * (size // max(1, self.frame_bytes - ENTRY_BYTES - 4) + 1)

    def push(self, payload: bytes, guarantee: int) -> int:
        """Queue a message; returns its msg_id. Raises MessageTooBig or QueueFull (nothing queued)."""
        size = len(payload)
        if size > self.max_message_bytes:
            raise MessageTooBig(f"message of {size} bytes exceeds the maximum of {self.max_message_bytes} bytes")
        cost = self._cost(size)
        if self.queued_bytes + cost > self.limit_bytes and self._queue:
            raise QueueFull(f"totem send queue holds {self.queued_bytes} of {self.limit_bytes} bytes; "
                            f"a {size}-byte message does not fit")
        msg_id = self.next_msg_id
        self.next_msg_id = msg_id + 1
        self._queue.append([payload, msg_id, guarantee, 0])
        self.queued_bytes += cost
        return msg_id

    def push_run(self, items: list[tuple[bytes, int]]) -> int:
        """``push`` for each (payload, guarantee) in order until one would raise (too big, or the queue is
        full); returns how many went in. The guarantees are already checked (0..3)."""
        frame_bytes = self.frame_bytes
        limit = self.limit_bytes
        max_bytes = self.max_message_bytes
        queue = self._queue
        queued = self.queued_bytes
        msg_id = self.next_msg_id
        taken = 0
        for payload, guarantee in items:
            size = len(payload)
            if size > max_bytes:
                break
            cost = size + ENTRY_BYTES if size + ENTRY_BYTES <= frame_bytes else self._cost(size)
            if queued + cost > limit and queue:
                break
            queue.append([payload, msg_id, guarantee, 0])
            msg_id += 1
            queued += cost
            taken += 1
        self.queued_bytes = queued
        self.next_msg_id = msg_id
        return taken

    @property
    def backlog_frames(self) -> int:
        """Frames the queue would fill (corosync's backlog unit)."""
        return -(-self.queued_bytes // self.frame_bytes)

    def fill(self) -> float:
        """Queue fill 0..1 (drives client flow control)."""
        return min(1.0, self.queued_bytes / self.limit_bytes) if self.limit_bytes else 1.0

    def room_bytes(self) -> int:
        """Bytes of messages (with their entry headers) the queue still takes."""
        return max(0, self.limit_bytes - self.queued_bytes)

    def takes(self, size: int) -> bool:
        """A message of ``size`` bytes would go in now (``push`` raises QueueFull otherwise; a message over
        ``max_message_bytes`` counts as taken: ``push`` then raises MessageTooBig)."""
        return not self._queue or size > self.max_message_bytes or self.queued_bytes + self._cost(size) <= self.limit_bytes

    def avail_frames(self) -> int:
        """Whole frames still free in the queue (cmap's msg_queue_avail)."""
        return max(0, (self.limit_bytes - self.queued_bytes) // self.frame_bytes)

    def restart_partial(self) -> None:
        """The ring changed: the message at the head restarts from its FIRST fragment."""
        if self._queue and self._queue[0][3]:
            self._queue[0][3] = 0

    def clear(self) -> None:
        """Drop everything (the node left)."""
        self._queue.clear()
        self.queued_bytes = 0

    def middle_run(self, max_frames: int) -> tuple[bytes, int, int, int, int, int] | None:
        """The frames ``pack`` would make next that each carry one MIDDLE piece of the message at the
        head (begun, not SAFE), up to ``max_frames``: (payload, offset, piece length, frames, msg_id,
        guarantee); None when the next frame is not one. ``advance`` takes them off."""
        if not self._queue:
            return None
        payload, msg_id, guarantee, off = self._queue[0]
        assert isinstance(payload, bytes) and isinstance(off, int)
        if off == 0 or guarantee == _SAFE:
            return None
        piece = self.frame_bytes - ENTRY_BYTES
        count = min(max_frames, (len(payload) - off - 1) // piece)  # the last piece is a LAST
        if count <= 0:
            return None
        return payload, off, piece, count, msg_id, guarantee  # type: ignore[return-value]

    def advance(self, nbytes: int) -> None:
        """The first ``nbytes`` from the head message's offset went out as MIDDLE pieces (``middle_run``)."""
        item = self._queue[0]
        item[3] = item[3] + nbytes  # type: ignore[operator]

    def head_begun(self) -> bool:
        """The message at the head went out in part (its FIRST piece and maybe more)."""
        return bool(self._queue) and self._queue[0][3] != 0

    def pack(self, max_frames: int, stop_begun: bool = False) -> list[PackedFrame]:
        """Take up to ``max_frames`` frames' worth of messages off the queue; with ``stop_begun``, none
        after a frame that leaves the head message begun (``middle_run`` may take on from there)."""
        out: list[PackedFrame] = []
        queue = self._queue
        frame_bytes = self.frame_bytes
        pack_entry = ENTRY.pack
        while queue and len(out) < max_frames:
            parts: list[bytes] = []  # entry header, payload, entry header, payload...
            done: list[tuple[int, int, bytes]] = []
            space = frame_bytes
            flags = 0
            whole = True
            while queue:
                item = queue[0]
                payload: bytes = item[0]  # type: ignore[assignment]
                msg_id: int = item[1]  # type: ignore[assignment]
                guarantee: int = item[2]  # type: ignore[assignment]
                off: int = item[3]  # type: ignore[assignment]
                size = len(payload)
                if off == 0 and size + ENTRY_BYTES <= space:
                    parts.append(pack_entry(KIND_WHOLE, guarantee, size, msg_id))
                    parts.append(payload)
                    done.append((msg_id, guarantee, payload))
                    if guarantee == _SAFE:
                        flags = MCAST_SAFE
                    space -= size + ENTRY_BYTES
                    queue.popleft()
                    self.queued_bytes -= size + ENTRY_BYTES  # _cost of a message that fits a frame
                    continue
                if parts and (space < _MIN_FRAGMENT_BYTES + ENTRY_BYTES + 4
                              or (off == 0 and size + ENTRY_BYTES <= frame_bytes)):
                    break  # close this frame; the message starts (or fits whole) in the next one
                hdr = ENTRY_BYTES + (4 if off == 0 else 0)
                take = min(size - off, space - hdr)
                piece = payload[off:off + take]
                whole = False
                if guarantee == _SAFE:
                    flags = MCAST_SAFE
                if off == 0:
                    kind = KIND_FIRST
                    parts.append(pack_entry(kind, guarantee, take, msg_id) + FIRST_TOTAL.pack(size))
                else:
                    kind = KIND_LAST if off + take == size else KIND_MIDDLE
                    parts.append(pack_entry(kind, guarantee, take, msg_id))
                parts.append(piece)
                space -= hdr + take
                if kind == KIND_LAST:
                    queue.popleft()
                    self.queued_bytes -= self._cost(size)
                    done.append((msg_id, guarantee, payload))
                    continue
                item[3] = off + take
                break  # a FIRST or MIDDLE fills the frame
            out.append((flags, len(parts) // 2, parts, whole, done))
            if stop_begun and queue and queue[0][3]:
                break
        return out


def mcast_body_prefix(seq: int, entry_count: int) -> bytes:
    """The MCAST body fields that follow the common header."""
    return MCAST_BODY.pack(seq, entry_count)


class Partials(Protocol):
    """Assemblies a driver keeps past the core (the totem process's compiled receive path)."""

    def take(self, sender: int) -> tuple[int, int, int, bytearray] | None:
        """The sender's open assembly as (msg_id, guarantee, total, bytes so far), handed over: the
        driver no longer continues it."""

    def reset(self) -> int:
        """Drop every open assembly; returns how many."""

    def senders(self) -> Iterator[int]:
        """Senders with an open assembly."""


class Assembler:
    """Per-sender reassembly of fragmented messages, with bounds on every piece."""

    __slots__ = ("_partial", "dropped", "external", "max_message_bytes")

    def __init__(self, max_message_bytes: int) -> None:
        self._partial: dict[int, tuple[int, int, int, bytearray]] = {}  # sender -> (msg_id, guarantee, total, buf)
        self.max_message_bytes = max_message_bytes
        self.dropped = 0
        #: assemblies a driver continued itself; a sender's is taken over here when its next piece comes here
        self.external: Partials | None = None

    def feed(self, sender: int, kind: int, guarantee: int, msg_id: int, piece: bytes,
             total: int) -> tuple[int, int, bytes] | None:
        """Add a FIRST/MIDDLE/LAST piece; returns (msg_id, guarantee, payload) when a message completes."""
        if self.external is not None:
            held = self.external.take(sender)
            if held is not None:
                self._partial[sender] = held
        if kind == KIND_FIRST:
            if sender in self._partial:
                self.dropped += 1  # the previous one can never complete
            if total > self.max_message_bytes or len(piece) >= total:
                self.dropped += 1
                self._partial.pop(sender, None)
                return None
            buf = bytearray(piece)
            self._partial[sender] = (msg_id, guarantee, total, buf)
            return None
        cur = self._partial.get(sender)
        if cur is None or cur[0] != msg_id:
            self.dropped += 1  # continuation of a message whose start this node never had
            if cur is not None:
                del self._partial[sender]
            return None
        buf = cur[3]
        buf += piece
        if len(buf) > cur[2] or (kind == KIND_LAST) != (len(buf) == cur[2]):
            self.dropped += 1
            del self._partial[sender]
            return None
        if kind == KIND_LAST:
            del self._partial[sender]
            return msg_id, cur[1], bytes(buf)
        return None

    def reset(self) -> int:
        """Configuration change: drop every partial assembly; returns how many were dropped."""
        n = len(self._partial)
        self._partial.clear()
        if self.external is not None:
            n += self.external.reset()
        return n

    def senders(self) -> Iterator[int]:
        """Senders with a partial assembly (for diagnostics), the driver's included."""
        if self.external is None:
            return iter(self._partial)
        return iter(sorted(set(self._partial) | set(self.external.senders())))

    def held_here(self) -> Collection[int]:
        """Senders whose open assembly this object holds (not the driver)."""
        return self._partial.keys()

    def peek(self, sender: int) -> tuple[int, int, int, bytearray] | None:
        """The sender's open assembly held here: (msg_id, guarantee, total, bytes so far)."""
        return self._partial.get(sender)

    def hand_over(self, sender: int) -> tuple[int, int, int, bytearray] | None:
        """The sender's open assembly held here, given up to the driver to continue (``external``)."""
        return self._partial.pop(sender, None)
