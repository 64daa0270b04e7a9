"""Where every ring of a node lives in the node segment ``/pcs-<cluster>-<nodeid>-rings`` (PROTOCOL.md §1).

Every process computes the same layout from the same inputs (the service list and the capacities),
so nothing else has to be passed around::

    layout = NodeLayout.compute(["cmap", "cpg"], ring_capacity=4 << 20, service_capacity={"cpg": 1 << 26})
    seg = layout.create(name)            # the supervisor: segment + every ring initialised
    rings = layout.attach(name)          # a child: NodeRings with .tx .rx .submit[svc] .deliver[svc] .stats

Payload: a stats block (``STATS_SLOTS`` int64: Totem's ``stats.srp.*`` counters in
``engine.totem.stats.COUNTER_NAMES`` order, the schedmiss entries from ``SCHEDMISS_BASE``, pycorosync's
runtime counters from ``RUNTIME_BASE``), then ``tx``, ``rx``,
then ``submit.<svc>`` and ``deliver.<svc>`` for each service in list order. Ring capacities are powers
of two; a ring carries records up to half its capacity, so a service that must pass 16 MiB messages
in one record needs 64 MiB rings (the pages are only touched as they are used).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pycorosync.ipc.segment import Segment, SegmentKind

LAYOUT_VERSION = 1
STATS_SLOTS = 128
STATS_BYTES = STATS_SLOTS * 8
#: runtime counters after the Totem ones: slot = RUNTIME_BASE + index
RUNTIME_BASE = 96
RUNTIME_COUNTERS = (
    "frames_rx", "frames_tx", "tx_backlog", "deliver_backlog", "submits", "submit_queue_full",
    "bad_records", "sync_completed", "sync_aborted", "ring_seq", "members", "deliver_throttled",
    # corosync's stats.pg.*: free frames in the core's send queue; frames of messages totem took from its
    # services that wait to enter that queue (corosync: frames reserved for requests being admitted)
    "msg_queue_avail", "msg_reserved",
    # CLOCK_MONOTONIC (ns, shared by the node's processes) of the last ORF token received, 0 = none yet;
    # frames in a row that the tx ring could not take at once (stats.srp.continuous_sendmsg_failures)
    "last_token_rx_ns", "continuous_sendmsg_failures",
    # of frames_rx, those the compiled receive path took (rxfast.py)
    "frames_rx_compiled",
)
#: corosync's stats.schedmiss.*: the last SCHEDMISS_KEPT times the totem loop ran late (totem_stats.py).
#: Slots: events recorded (ever), epoch ms of the last ``stats.clear.schedmiss`` (written by cmap only),
#: then SCHEDMISS_KEPT entries of (epoch ms, delay in microseconds), entry = event number % SCHEDMISS_KEPT
SCHEDMISS_BASE = 64
SCHEDMISS_KEPT = 10
SCHEDMISS_EVENTS = SCHEDMISS_BASE
SCHEDMISS_CLEARED_MS = SCHEDMISS_BASE + 1
SCHEDMISS_ENTRIES = SCHEDMISS_BASE + 2


def _check_stats_block() -> None:
    from pycorosync.engine.totem.stats import COUNTER_NAMES

    if len(COUNTER_NAMES) > SCHEDMISS_BASE:
        raise AssertionError(f"{len(COUNTER_NAMES)} Totem counters overlap the schedmiss slots at {SCHEDMISS_BASE}")
    if SCHEDMISS_ENTRIES + 2 * SCHEDMISS_KEPT > RUNTIME_BASE or RUNTIME_BASE + len(RUNTIME_COUNTERS) > STATS_SLOTS:
        raise AssertionError("node stats block: schedmiss or runtime counters do not fit their slots")


_check_stats_block()


@dataclass(frozen=True)
class RingSlot:
    """One ring's place in the segment payload."""

    name: str
    offset: int
    capacity: int


def _ring_bytes(capacity: int) -> int:
    from pycorosync.ipc.ring import Ring

    return int(Ring.layout_bytes(capacity))


@dataclass(frozen=True)
class NodeLayout:
    """The ring offsets of one node (see the module docstring)."""

    services: tuple[str, ...]
    slots: tuple[RingSlot, ...]
    payload_bytes: int

    @classmethod
    def compute(cls, services: Sequence[str], ring_capacity: int,
                service_capacity: Mapping[str, int] | None = None) -> NodeLayout:
        """Offsets for ``tx``, ``rx`` and each service's ``submit.<svc>`` and ``deliver.<svc>``."""
        if len(set(services)) != len(services):
            raise ValueError(f"node layout: a service is listed twice in {list(services)}")
        caps = dict(service_capacity or {})
        slots: list[RingSlot] = []
        offset = STATS_BYTES
        names = [("tx", ring_capacity), ("rx", ring_capacity)]
        for svc in services:
            cap = caps.get(svc, ring_capacity)
            names += [(f"submit.{svc}", cap), (f"deliver.{svc}", cap)]
        for name, cap in names:
            slots.append(RingSlot(name, offset, cap))
            offset += _ring_bytes(cap)
        return cls(tuple(services), tuple(slots), offset)

    def slot(self, name: str) -> RingSlot:
        for s in self.slots:
            if s.name == name:
                return s
        raise KeyError(f"node layout has no ring '{name}' (services: {', '.join(self.services) or 'none'})")

    def create(self, name: str) -> Segment:
        """Creates the named segment (O_EXCL, 0600) with every ring empty; the caller owns and unlinks it."""
        from pycorosync.ipc.ring import Ring

        seg = Segment.create(name, self.payload_bytes, SegmentKind.RINGS, LAYOUT_VERSION)
        try:
            arr = seg.array()
            for s in self.slots:
                Ring.create(arr, s.capacity, s.offset, s.name).close()
            del arr
        except BaseException:
            seg.close()
            seg.unlink()
            raise
        return seg

    def attach(self, name: str, reset: Sequence[str] = (), fd: int | None = None) -> NodeRings:
        """Maps the node segment and its rings; the rings named in ``reset`` are emptied first
        (only their consumer and producer being both stopped makes that safe).

        With ``fd`` (an inherited descriptor of the segment, duplicated here) the name is not looked
        up: a process that starts after the name was removed by mistake still finds its node."""
        if fd is None:
            seg = Segment.attach(name, SegmentKind.RINGS, LAYOUT_VERSION)
        else:
            seg = Segment.attach_fd(os.dup(fd), SegmentKind.RINGS, LAYOUT_VERSION, name.lstrip("/"),
                                    require_sealed=False)
        return NodeRings(self, seg, reset)


class NodeRings:
    """A process's view of the node segment: ``tx``, ``rx``, ``submit[svc]``, ``deliver[svc]``, ``stats``."""

    def __init__(self, layout: NodeLayout, segment: Segment, reset: Sequence[str] = ()) -> None:
        from pycorosync.ipc.ring import Ring

        self.layout = layout
        self.segment = segment
        arr = segment.array()
        if len(arr) < layout.payload_bytes:
            segment.close()
            raise ValueError(f"node segment holds {len(arr)} bytes; this layout needs {layout.payload_bytes}")
        self.stats: np.ndarray[Any, Any] = arr[:STATS_BYTES].view(np.int64)
        rings: dict[str, Ring] = {}
        for s in layout.slots:
            if s.name in reset:
                rings[s.name] = Ring.create(arr, s.capacity, s.offset, s.name)
            else:
                rings[s.name] = Ring.attach(arr, s.offset, s.name, s.capacity)
        self.rings = rings
        self.tx = rings["tx"]
        self.rx = rings["rx"]
        self.submit = {svc: rings[f"submit.{svc}"] for svc in layout.services}
        self.deliver = {svc: rings[f"deliver.{svc}"] for svc in layout.services}

    def runtime_slot(self, name: str) -> int:
        return RUNTIME_BASE + RUNTIME_COUNTERS.index(name)

    def close(self) -> None:
        """Drops every view and unmaps the segment (it stays; the supervisor unlinks it)."""
        for ring in self.rings.values():
            ring.close()
        self.rings = {}
        self.submit = {}
        self.deliver = {}
        self.stats = np.zeros(0, np.int64)
        self.segment.close()
