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
    def create_anonymous(cls, capacity: int, node_ids: list[int]) -> TransportSegment:
        """A memfd segment: nothing named, so nothing to leak or collide with; pass ``fileno()`` on."""
        seg = Segment.create_anonymous(
            cls.payload_bytes(capacity, len(node_ids)), SegmentKind.RAW, LAYOUT_VERSION, "pcs-transport"
        )
        return cls(seg, capacity, len(node_ids), True, node_ids)

    @classmethod
    def attach_fd(cls, fd: int, capacity: int, node_ids: list[int]) -> TransportSegment:
        """Maps a memfd segment inherited from the creator (takes ownership of ``fd``)."""
        seg = Segment.attach_fd(fd, SegmentKind.RAW, LAYOUT_VERSION, "pcs-transport")
        return cls(seg, capacity, len(node_ids), False, node_ids)

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
    d["ports"] = [list(n) for n in plan.ports]
    return json.dumps(d)


def plan_from_json(text: str) -> TransportPlan:
    d: dict[str, Any] = json.loads(text)
    c = d.pop("crypto")
    crypto = CryptoSettings(c["cipher"], c["hash"], c["cluster_name"], bytes.fromhex(c["authkey"]))
    d["nodes"] = tuple((int(a), str(b)) for a, b in d["nodes"])
    d["ports"] = tuple((int(a), int(b)) for a, b in d.get("ports", ()))
    return TransportPlan(crypto=crypto, **d)


class TransportProcess:
    """A ``python -m pycorosync.transports.udp`` child with its segment and doorbells (tests, bench).

    ``module`` runs another transport with the same command line (``pycorosync.transports.iba``);
    ``env`` is added to the child's environment.

    Without ``segment_name`` the segment is an anonymous memfd inherited by the child (preferred). With
    ``wait=False`` the constructor returns at once (start several in parallel, then ``wait_ready()``).

    ``stop()`` closes the stop pipe (the child exits), waits with a deadline, kills if it must, and
    always unlinks the segment: use it in a finally/fixture finalizer.
    """

    def __init__(self, plan: TransportPlan, segment_name: str | None = None, capacity: int = 1 << 22,
                 extra_args: list[str] | None = None, ready_timeout_s: float = 120.0,
                 stderr: Any = None, wait: bool = True, module: str = "pycorosync.transports.udp",
                 env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys

        from pycorosync.ipc.doorbell import Doorbell

        self.plan = plan
        self.capacity = capacity
        if segment_name:
            self.seg = TransportSegment.create(segment_name, capacity, plan.node_ids)
            where = ["--segment", segment_name]
        else:
            self.seg = TransportSegment.create_anonymous(capacity, plan.node_ids)
            where = ["--segment-fd", str(self.seg.segment.fileno())]
        self.tx_bell = Doorbell()  # we ring it after pushing to tx
        self.rx_bell = Doorbell()  # the child rings it after pushing to rx
        stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        fds = (self.tx_bell.fileno(), self.rx_bell.fileno(), stop_r, ready_w)
        if not segment_name:
            fds = (*fds, self.seg.segment.fileno())
        cmd = [
            sys.executable, "-m", module, "--plan", plan_to_json(plan), *where,
            "--capacity", str(capacity), "--tx-bell", str(fds[0]), "--rx-bell", str(fds[1]), "--stop-fd", str(stop_r),
            "--ready-fd", str(ready_w), *(extra_args or []),
        ]
        self.proc: Any = None
        self._ready_r = -1
        self.info: dict[str, Any] = {}
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=fds, stderr=stderr,
                                         env=None if env is None else {**os.environ, **env})
        except BaseException:
            for fd in (stop_r, ready_w, ready_r):
                os.close(fd)
            self.stop()
            raise
        os.close(stop_r)
        os.close(ready_w)
        self._ready_r = ready_r
        if wait:
            self.wait_ready(ready_timeout_s)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Blocks until the child said it serves (its JSON line: gso, gro, rcvbuf, pid); stops it on failure."""
        import os
        import select

        if self._ready_r < 0:
            return
        try:
            ready, _, _ = select.select([self._ready_r], [], [], timeout_s)
            line = os.read(self._ready_r, 4096) if ready else b""
            if not line:
                raise RuntimeError(f"transport node {self.plan.node_id} did not start (exit {self.proc.poll()})")
            self.info = json.loads(line)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(self._ready_r)
            self._ready_r = -1

    def push(self, dest: int, payload: bytes) -> bool:
        """Producer side of the tx ring (as totem would be)."""
        if not self.seg.tx.push(dest, payload):
            self.tx_bell.notify(self.seg.tx)
            return False
        self.tx_bell.notify(self.seg.tx)
        return True

    def pop_batch(self, max_records: int = 256) -> list[tuple[int, bytes]]:
        """Consumer side of the rx ring (as totem would be): frees room and wakes a transport blocked on it."""
        out = self.seg.rx.pop_batch(max_records)
        if out and self.seg.rx.producer_needs_wake():
            self.tx_bell.ring()  # the transport's own doorbell
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def counters(self) -> dict[str, int]:
        from pycorosync.transports.udp.counters import COUNTER_NAMES

        return {name: int(self.seg.counters[i]) for i, name in enumerate(COUNTER_NAMES)}

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stops the child (closing the stop pipe), reaps it, unlinks the segment; returns its exit code."""
        import os
        import subprocess

        rc = None
        if self._stop_w >= 0:
            os.close(self._stop_w)
            self._stop_w = -1
        if getattr(self, "_ready_r", -1) >= 0:
            os.close(self._ready_r)
            self._ready_r = -1
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait(timeout_s)
        if self.seg is not None:
            self.seg.close(unlink=self.seg.segment.fileno() < 0)
            self.seg = None  # type: ignore[assignment]
        self.tx_bell.close()
        self.rx_bell.close()
        return rc


def shared_link_table(cluster: str, nodeid: int, node_ids: list[int]) -> tuple[links.LinkTable, Segment]:
    """The link table in ``/pcs-<cluster>-<nodeid>-links`` (remade at every transport start; the supervisor
    removes it with the node's prefix), for cfg to read. Keep the segment open while the table is used."""
    from pycorosync.ipc import segment as shm

    name = shm.segment_name(cluster, nodeid, "links")
    shm.unlink(name)  # a previous incarnation's table
    seg = Segment.create(name, links.table_bytes(len(node_ids)), SegmentKind.RAW, links.SEGMENT_LAYOUT_VERSION)
    return links.LinkTable.create(seg.array(), node_ids), seg


def stats_row_for(stats_name: str, process: str = "transport") -> tuple[np.ndarray | None, list[int] | None]:
    """This process's row of the node's stats table and the columns of the transport counters, or (None, None)
    (logged) when there is no table or no slot: the counters then stay local."""
    import logging

    from pycorosync.ipc.stats import StatsTable
    from pycorosync.transports.udp.counters import COUNTER_NAMES

    log = logging.getLogger("TOTEM")
    if not stats_name:
        return None, None
    try:
        table = StatsTable.attach(stats_name)
    except (FileNotFoundError, ValueError) as exc:
        log.warning("transport: no stats table (%s); counters stay local", exc)
        return None, None
    slot = table.find_slot(process)
    if slot is None:
        log.warning("transport: the stats table has no slot for '%s'; counters stay local", process)
        return None, None
    return table.cells[slot], table.columns(f"transport.{n}" for n in COUNTER_NAMES).tolist()
