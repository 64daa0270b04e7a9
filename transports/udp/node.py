"""A transport's shared memory in one segment, and its plan as JSON: how tests, the bench and the
``python -m pycorosync.transports.udp`` entry point wire a transport process without the supervisor.

Segment payload: tx ring | rx ring | counters (int64 x 64) | link table (transports.links).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from pycorosync.ipc.ring import Ring
from pycorosync.ipc.segment import Segment, SegmentKind
from pycorosync.transports import links
from pycorosync.transports.crypto import CryptoSettings
from pycorosync.transports.udp.plan import TransportPlan

LAYOUT_VERSION = 1
COUNTER_SLOTS = 64


class TransportSegment:
    """The rings, counters and link table one transport process shares with its totem (or a test)."""

    def __init__(self, seg: Segment, capacity: int, n_nodes: int, created: bool, node_ids: list[int]) -> None:
        self.segment = seg
        arr = seg.array()
        ring_bytes = Ring.layout_bytes(capacity)
        if created:
            self.tx = Ring.create(arr, capacity, 0, "tx")
            self.rx = Ring.create(arr, capacity, ring_bytes, "rx")
        else:
            self.tx = Ring.attach(arr, 0, "tx", capacity)
            self.rx = Ring.attach(arr, ring_bytes, "rx", capacity)
        off = 2 * ring_bytes
        self.counters = arr[off : off + COUNTER_SLOTS * 8].view(np.int64)
        off += COUNTER_SLOTS * 8
        lbuf = arr[off : off + links.table_bytes(n_nodes)]
        self.links = links.LinkTable.create(lbuf, node_ids) if created else links.LinkTable.attach(lbuf)

    @staticmethod
    def payload_bytes(capacity: int, n_nodes: int) -> int:
        return 2 * Ring.layout_bytes(capacity) + COUNTER_SLOTS * 8 + links.table_bytes(n_nodes)

    @classmethod
    def create(cls, name: str, capacity: int, node_ids: list[int]) -> TransportSegment:
        seg = Segment.create(name, cls.payload_bytes(capacity, len(node_ids)), SegmentKind.RAW, LAYOUT_VERSION)
        return cls(seg, capacity, len(node_ids), True, node_ids)

    @classmethod
    def attach(cls, name: str, capacity: int, node_ids: list[int]) -> TransportSegment:
        seg = Segment.attach(name, SegmentKind.RAW, LAYOUT_VERSION)
        return cls(seg, capacity, len(node_ids), False, node_ids)

    def close(self, unlink: bool = False) -> None:
        """Drops every view, unmaps, and (creator) removes the name."""
        self.tx.close()
        self.rx.close()
        self.counters = np.zeros(0, np.int64)
        self.links = links.LinkTable(np.zeros((0, links.COLUMNS), np.int64))
        if unlink:
            self.segment.unlink()
        self.segment.close()


def plan_to_json(plan: TransportPlan) -> str:
    d = asdict(plan)
    d["crypto"] = {**asdict(plan.crypto), "authkey": plan.crypto.authkey.hex()}
    d["nodes"] = [list(n) for n in plan.nodes]
    return json.dumps(d)


def plan_from_json(text: str) -> TransportPlan:
    d: dict[str, Any] = json.loads(text)
    c = d.pop("crypto")
    crypto = CryptoSettings(c["cipher"], c["hash"], c["cluster_name"], bytes.fromhex(c["authkey"]))
    d["nodes"] = tuple((int(a), str(b)) for a, b in d["nodes"])
    return TransportPlan(crypto=crypto, **d)
