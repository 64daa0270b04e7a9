"""A stand-in core for testing the simulator itself: a fixed sequencer, correct on a fault-free network.

Every node sends its messages to the lowest node id, which numbers them in each sender's order
and multicasts them; every node delivers in number order. A sender resends what is not yet
delivered back every tick, so a lost or early submit is harmless. One static configuration of
the whole nodelist is announced at start. It tolerates reordering and duplication, not the loss
of an ordered message nor crashes, so such a run must make the checker complain. ``bug`` plants a fault on node 2 to prove the checker sees it.
"""

from __future__ import annotations

import struct
from typing import Any

from pycorosync.engine.totem.api import (
    ConfigChange,
    ConfigType,
    Deliver,
    Guarantee,
    MessageTooBig,
    QueueFull,
    RingId,
    SendFrame,
)

_SUBMIT = struct.Struct(">cIIB")  # b"S", sender, msg_id, guarantee
_ORDERED = struct.Struct(">cQIIB")  # b"O", seq, sender, msg_id, guarantee
TICK_NS = 50_000_000


class SequencerCore:
    """Implements the TotemCore calls; ``bug`` in {None, 'swap', 'dup', 'skip', 'corrupt'} acts on node 2."""

    def __init__(
        self,
        node_id: int,
        nodelist: list[int],
        seed: int = 0,
        ring_seq: int = 0,
        incarnation: int = 0,
        queue_limit: int = 64,
        max_message: int = 1 << 20,
        bug: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.nodelist = sorted(nodelist)
        self.sequencer = self.nodelist[0]
        self.ring_id = RingId(self.sequencer, 4)
        self.queue_limit = queue_limit
        self.max_message = max_message
        self.bug = bug if node_id == 2 else None
        self.next_msg_id = 0
        self.outstanding = 0  # own messages submitted, not yet delivered back
        self.next_seq = 0  # sequencer: next number to hand out
        self.expect = 0  # receiver: next number to deliver
        self.buffer: dict[int, tuple[int, int, int, bytes]] = {}
        self.unsent: dict[int, bytes] = {}  # own msg_id -> submit frame, until delivered back
        self.next_from: dict[int, int] = {}  # sequencer: next msg_id to number, per sender
        self.early: dict[tuple[int, int], bytes] = {}  # sequencer: submits that overtook an earlier one
        self.deadline: int | None = None
        self.ticks = 0
        self.held: Deliver | None = None

    def start(self, now_ns: int) -> list[Any]:
        self.deadline = now_ns + TICK_NS
        others = tuple(n for n in self.nodelist if n != self.node_id)
        me = (self.node_id,)
        return [
            ConfigChange(ConfigType.TRANSITIONAL, self.ring_id, me, (), ()),
            ConfigChange(ConfigType.REGULAR, self.ring_id, tuple(self.nodelist), (), others),
        ]

    def submit(self, now_ns: int, payload: bytes, guarantee: Any) -> list[Any]:
        if len(payload) > self.max_message:
            raise MessageTooBig(f"{len(payload)} B > {self.max_message} B")
        if self.outstanding >= self.queue_limit:
            raise QueueFull(f"{self.outstanding} messages in flight")
        self.outstanding += 1
        frame = _SUBMIT.pack(b"S", self.node_id, self.next_msg_id, int(guarantee)) + payload
        self.unsent[self.next_msg_id] = frame
        self.next_msg_id += 1
        if self.node_id == self.sequencer:
            return self.on_frame(now_ns, frame)
        return [SendFrame(self.sequencer, frame)]

    def on_frame(self, now_ns: int, data: bytes) -> list[Any]:
        if data[:1] == b"S" and len(data) >= _SUBMIT.size and self.node_id == self.sequencer:
            _c, sender, msg_id, _g = _SUBMIT.unpack_from(data)
            if msg_id >= self.next_from.get(sender, 0):
                self.early[(sender, msg_id)] = data
            out: list[Any] = []
            while (sender, self.next_from.get(sender, 0)) in self.early:
                frame = self.early.pop((sender, self.next_from.get(sender, 0)))
                self.next_from[sender] = self.next_from.get(sender, 0) + 1
                _c, sender, msg_id, g = _SUBMIT.unpack_from(frame)
                out.append(SendFrame(None, _ORDERED.pack(b"O", self.next_seq, sender, msg_id, g) + frame[_SUBMIT.size :]))
                self.next_seq += 1
            return out
        if data[:1] == b"O" and len(data) >= _ORDERED.size:
            _c, seq, sender, msg_id, g = _ORDERED.unpack_from(data)
            if seq >= self.expect and seq not in self.buffer:
                self.buffer[seq] = (sender, msg_id, g, data[_ORDERED.size :])
            return self._deliver_ready()
        return []  # garbage never crashes a core

    def _deliver_ready(self) -> list[Any]:
        out: list[Any] = []
        while self.expect in self.buffer:
            sender, msg_id, g, payload = self.buffer.pop(self.expect)
            seq = self.expect
            self.expect += 1
            if sender == self.node_id:
                self.outstanding -= 1
                self.unsent.pop(msg_id, None)
            d = Deliver(self.ring_id, sender, msg_id, Guarantee(g), payload)
            if self.bug == "skip" and seq == 3:
                continue
            if self.bug == "dup" and seq == 3:
                out.append(d)
            if self.bug == "corrupt" and seq == 3:
                d = Deliver(self.ring_id, sender, msg_id, Guarantee(g), payload[:-1] + bytes([payload[-1] ^ 1]))
            if self.bug == "swap" and seq == 3:
                self.held = d
                continue
            out.append(d)
            if self.held is not None and seq == 4:
                out.append(self.held)
                self.held = None
        return out

    def on_timer(self, now_ns: int) -> list[Any]:
        self.ticks += 1
        self.deadline = now_ns + TICK_NS
        if self.node_id == self.sequencer:
            return [a for frame in self.unsent.values() for a in self.on_frame(now_ns, frame)]
        return [SendFrame(self.sequencer, frame) for frame in self.unsent.values()]

    def leave(self, now_ns: int) -> list[Any]:
        self.deadline = None
        return []

    def next_deadline_ns(self) -> int | None:
        return self.deadline


def standin_factory(bug: str | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
    """A CoreFactory building SequencerCores."""

    def make(node_id: int, nodelist: list[int], seed: int, ring_seq: int, incarnation: int) -> SequencerCore:
        return SequencerCore(node_id, nodelist, seed, ring_seq, incarnation, bug=bug, **kwargs)

    return make
