"""Reading a node for the exporter and ``pycorosync status``: shared memory on every call, the slower
sources (quorum service, psutil, status file) from a cache a background tick refreshes.

    reader = NodeReader(NodeSpec.from_node_info(NodeInfo.from_env(), config))
    reader.refresh_slow()       # once a second (sampler thread): quorum, SAM in cmap, processes, status
    reader.sample_token()       # ten times a second: the token rotation estimate
    reading = reader.read()     # per scrape: shm now + the cached slow values

Nothing here raises for a missing source: it is absent from the reading and ``sources[name]`` is False,
and a segment that is not there yet is looked for again on the next slow refresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycorosync.engine.supervisor.node import REGISTRY_NAME, read_registry
from pycorosync.monitoring.quorum_source import QuorumSource
from pycorosync.monitoring.reading import (
    Histogram,
    LinkSample,
    NodeReading,
    ProcessSample,
    QuorumState,
    RingSample,
    SamState,
)
from pycorosync.monitoring.rotation import TokenRotationEstimator
from pycorosync.monitoring.sam_source import SamSource

log = logging.getLogger("MON")

CHILD_NAME_ENV = "PYCOROSYNC_CHILD_NAME"
RESTART_COUNT_ENV = "PYCOROSYNC_RESTART_COUNT"


@dataclass(frozen=True)
class NodeSpec:
    """Where a node's sources are: names of its segments, its run dir, its supervisor, config facts."""

    nodeid: int
    cluster: str
    run_dir: Path
    segment: str = ""  # the node segment (rings + totem's stats block)
    stats: str = ""  # the stats table
    links: str = ""  # the transport's link table
    services: tuple[str, ...] | None = ()  # None: the ring list is unknown, read totem's block only
    ring_capacity: int = 4 << 20
    segment_fd: int | None = None
    supervisor_pid: int | None = None
    configured_nodes: int | None = None
    token_s: float | None = None

    @classmethod
    def from_node_info(cls, node: Any, config: Any | None = None) -> NodeSpec:
        """From a child's ``engine.runtime.node.NodeInfo`` (and the loaded config, for nodelist and token)."""
        from pycorosync.ipc.segment import segment_name

        sup = os.environ.get("PYCOROSYNC_SUPERVISOR_PID", "")
        return cls(
            nodeid=node.nodeid, cluster=node.cluster, run_dir=Path(node.run_dir), segment=node.segment,
            stats=node.stats, links=segment_name(node.cluster, node.nodeid, "links"), services=tuple(node.services),
            ring_capacity=node.ring_capacity, segment_fd=node.segment_fd,
            supervisor_pid=int(sup) if sup.isdigit() else os.getppid(),
            configured_nodes=None if config is None else len(config.nodes),
            token_s=None if config is None else config.totem.token_ms / 1000,
        )


class _Attached:
    """A shared-memory source opened on first use and again after a failure (at most every ``retry_s``)."""

    def __init__(self, name: str, opener: Callable[[], Any], retry_s: float = 1.0) -> None:
        self.name = name
        self._opener = opener
        self._retry_s = retry_s
        self._next_try = 0.0
        self.value: Any = None
        self._logged = False

    def get(self, now: float) -> Any:
        if self.value is None and now >= self._next_try:
            self._next_try = now + self._retry_s
            try:
                self.value = self._opener()
            except Exception as exc:  # absent or another layout: the exporter serves without it
                if not self._logged:
                    self._logged = True
                    log.info("monitoring source %s not available yet: %s", self.name, exc)
        return self.value

    def drop(self) -> None:
        value, self.value = self.value, None
        if value is not None:
            with contextlib.suppress(Exception):
                value.close()


@dataclass
class _SlowState:
    status: Mapping[str, Any] = field(default_factory=dict)
    quorum: QuorumState | None = None
    processes: tuple[ProcessSample, ...] = ()
    sam: SamState | None = None
    sources: dict[str, bool] = field(default_factory=dict)


class NodeReader:
    """All sources of one node (see the module docstring); thread-safe between the tick and scrapes."""

    def __init__(self, spec: NodeSpec, quorum: QuorumSource | None = None, sam: SamSource | None = None) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._rings = _Attached("node segment", self._open_rings)
        self._table = _Attached("stats table", self._open_table)
        self._links = _Attached("link table", self._open_links)
        self._quorum = quorum if quorum is not None else QuorumSource(str(spec.run_dir))
        self._sam = sam if sam is not None else SamSource(str(spec.run_dir))
        self._psutil: dict[int, Any] = {}
        self._slow = _SlowState()
        self.rotation = TokenRotationEstimator()

    # -- opening ---------------------------------------------------------------------------------
    def _open_rings(self) -> Any:
        if not self.spec.segment:
            raise FileNotFoundError("no node segment named")
        if self.spec.services is None:
            return _StatsBlock(self.spec.segment)
        from pycorosync.engine.runtime.node import node_layout

        layout = node_layout(self.spec.services, self.spec.ring_capacity)
        return layout.attach(self.spec.segment, fd=self.spec.segment_fd)

    def _open_table(self) -> Any:
        if not self.spec.stats:
            raise FileNotFoundError("no stats table named")
        from pycorosync.ipc.stats import StatsTable

        return StatsTable.attach(self.spec.stats, writer=False)

    def _open_links(self) -> Any:
        if not self.spec.links:
            raise FileNotFoundError("no link table named")
        return _LinkSegment(self.spec.links)

    # -- fast sources (every scrape) -------------------------------------------------------------
    def _read_block(self, now: float) -> tuple[dict[str, int], dict[str, int], tuple[RingSample, ...], bool]:
        from pycorosync.engine.runtime.layout import RUNTIME_BASE, RUNTIME_COUNTERS
        from pycorosync.engine.totem.stats import COUNTER_NAMES

        rings = self._rings.get(now)
        if rings is None:
            return {}, {}, (), False
        try:
            block = rings.stats.copy()
            srp = {name: int(block[i]) for i, name in enumerate(COUNTER_NAMES)}
            runtime = {name: int(block[RUNTIME_BASE + i]) for i, name in enumerate(RUNTIME_COUNTERS)}
            samples = []
            for name, ring in rings.rings.items():
                c = ring.counters()
                samples.append(RingSample(name, ring.used_bytes(), ring.capacity, c.pushed, c.full))
        except (ValueError, IndexError):  # closed or shorter than this build's layout
            self._rings.drop()
            return {}, {}, (), False
        return srp, runtime, tuple(samples), True

    def read(self) -> NodeReading:
        """One reading: shared memory now, the slow sources as of the last ``refresh_slow``."""
        now = time.monotonic()
        with self._lock:
            srp, runtime, rings, seg_ok = self._read_block(now)
            table = self._table.get(now)
            snap = None
            if table is not None:
                try:
                    snap = table.snapshot()
                except (ValueError, IndexError):
                    self._table.drop()
            links = self._read_links(now)
            slow = self._slow
            rotation = self._table_rotation(snap) or self.rotation.histogram()
        sources = {**slow.sources, "node_segment": seg_ok, "stats_table": snap is not None,
                   "link_table": links is not None}
        return NodeReading(
            nodeid=self.spec.nodeid, srp=srp, runtime=runtime, rings=rings, table=snap, status=slow.status,
            quorum=slow.quorum, processes=slow.processes, links=links or (), token_rotation=rotation, sam=slow.sam,
            sources=sources, monotonic_ns=time.monotonic_ns(),
        )

    def _read_links(self, now: float) -> tuple[LinkSample, ...] | None:
        seg = self._links.get(now)
        if seg is None:
            return None
        try:
            samples: tuple[LinkSample, ...] = seg.samples(time.monotonic_ns(), self.spec.nodeid)
            return samples
        except (ValueError, IndexError):
            self._links.drop()
            return None

    @staticmethod
    def _table_rotation(snap: Any) -> Histogram | None:
        """The totem row's exact histogram, once totem fills it (else the estimate is used)."""
        if snap is None:
            return None
        from pycorosync.ipc.stats import TOKEN_ROTATION_BUCKETS_MS

        names = {m.name for m in snap.metrics}
        if "totem.token_rotation_count" not in names:
            return None
        for info in snap.slots:
            if info.pid and info.process == "totem":
                count = int(snap.value(info.slot, "totem.token_rotation_count"))
                if not count:
                    return None
                buckets = []
                cumulative = 0
                for ms in TOKEN_ROTATION_BUCKETS_MS:
                    cumulative += int(snap.value(info.slot, f"totem.token_rotation_le_{ms}ms"))
                    buckets.append((ms / 1000, cumulative))
                return Histogram(tuple(buckets), count, float(snap.value(info.slot, "totem.token_rotation_seconds")))
        return None

    # -- ticks -----------------------------------------------------------------------------------
    def sample_token(self) -> None:
        """Feeds the token rotation estimate from totem's orf_token_rx counter (call at ~10 Hz)."""
        from pycorosync.engine.totem.stats import COUNTER_NAMES

        rings = self._rings.get(time.monotonic())
        if rings is None:
            return
        try:
            tokens = int(rings.stats[COUNTER_NAMES.index("orf_token_rx")])
        except (ValueError, IndexError):
            return
        with self._lock:
            self.rotation.observe(time.monotonic_ns(), tokens)

    def refresh_slow(self) -> None:
        """Re-reads the status file, the quorum service and the processes (call about once a second)."""
        status = self._read_status()
        quorum = self._quorum.read()
        processes = self._sample_processes()
        sam = self._sam.read()
        with self._lock:
            self._slow = _SlowState(status, quorum, processes, sam, {
                "status_file": bool(status.get("state")), "quorum": quorum is not None,
                "processes": bool(processes), "cmap": sam is not None,
            })

    def _read_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.spec.configured_nodes is not None:
            out["configured_nodes"] = self.spec.configured_nodes
        if self.spec.token_s is not None:
            out["token_s"] = self.spec.token_s
        try:
            body = json.loads((self.spec.run_dir / "totem.status.json").read_text())
        except (OSError, ValueError):
            return out
        if not isinstance(body, dict):
            return out
        ring = body.get("ring_id")
        out["state"] = body.get("state")
        members = body.get("members")
        if isinstance(members, list) and all(isinstance(m, int) for m in members):
            out["members"] = tuple(members)
        if isinstance(ring, list) and len(ring) == 2:
            out["ring_rep"] = ring[0]
            out["sync_completed"] = int(body.get("sync_completed") == ring)
        return out

    def _sample_processes(self) -> tuple[ProcessSample, ...]:
        """psutil of the supervisor and its children (names and restart counts from the supervisor's registry,
        or from their environment when they were exec'd)."""
        try:
            import psutil
        except ImportError:
            return ()
        pid = self.spec.supervisor_pid
        if pid is None:
            return ()
        out = []
        try:
            sup = self._process(psutil, pid)
            pids = [("supervisor", pid), *((None, c) for c in _children(pid, sup))]
        except psutil.Error:
            return ()
        alive = set()
        registry: dict[int, tuple[str, int]] | None = None
        for name, child in pids:
            try:
                cached = self._psutil.get(child)
                if cached is None:
                    proc = self._process(psutil, child)
                    if registry is None:
                        registry = read_registry(self.spec.run_dir / REGISTRY_NAME)
                    if name is None and child in registry:
                        cached = self._psutil[child] = (proc, *registry[child])
                    else:  # a child started by exec has its name in its environment
                        env = proc.environ()
                        cached = (proc, name or env.get(CHILD_NAME_ENV, ""), int(env.get(RESTART_COUNT_ENV, "0") or 0))
                        if cached[1] or env.get(CHILD_NAME_ENV) is not None or child in registry:
                            self._psutil[child] = cached
                        # else: maybe a child forked an instant ago, not in the registry yet: ask again next time
                proc, pname, restarts = cached
                alive.add(child)
                if not pname:
                    continue  # not a node process (e.g. a cache warm-up)
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    rss = proc.memory_info().rss
                out.append(ProcessSample(pname, child, float(cpu.user + cpu.system), int(rss), restarts,
                                         sched_of(child)))
            except (psutil.Error, ValueError, OSError):
                continue
        for gone in set(self._psutil) - alive:
            del self._psutil[gone]
        return tuple(sorted(out, key=lambda p: p.process))

    def _process(self, psutil: Any, pid: int) -> Any:
        cached = self._psutil.get(pid)
        return cached[0] if cached is not None else psutil.Process(pid)

    def close(self) -> None:
        with self._lock:
            for src in (self._rings, self._table, self._links):
                src.drop()
        self._quorum.close()
        self._sam.close()


def sched_of(pid: int) -> str:
    """How ``pid`` is scheduled, for people: "RR 99" / "FIFO 10" (realtime policy, priority), "batch nice N"
    (``SCHED_BATCH``, ``system.sched_batch``) or "nice N" (``system.sched_rr`` / ``system.priority``); ""
    when it cannot be read."""
    try:
        policy = os.sched_getscheduler(pid)
        if policy in (os.SCHED_RR, os.SCHED_FIFO):
            return f"{'RR' if policy == os.SCHED_RR else 'FIFO'} {os.sched_getparam(pid).sched_priority}"
        batch = "batch " if policy == os.SCHED_BATCH else ""
        return f"{batch}nice {os.getpriority(os.PRIO_PROCESS, pid)}"
    except OSError:
        return ""


def _children(pid: int, proc: Any) -> list[int]:
    """Pids of a process's children: the kernel's list (one small read), else psutil's scan of every process."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return [c.pid for c in proc.children()]


class _StatsBlock:
    """Totem's stats block of the node segment alone (for a reader that does not know the ring layout)."""

    def __init__(self, name: str) -> None:
        import numpy as np

        from pycorosync.engine.runtime.layout import LAYOUT_VERSION, STATS_BYTES
        from pycorosync.ipc.segment import Segment, SegmentKind

        self.segment = Segment.attach(name, SegmentKind.RINGS, LAYOUT_VERSION)
        self.stats = self.segment.array()[:STATS_BYTES].view(np.int64)
        self.rings: dict[str, Any] = {}

    def close(self) -> None:
        del self.stats
        self.segment.close()


class _LinkSegment:
    """The transport's shared link table, read-only."""

    def __init__(self, name: str) -> None:
        from pycorosync.ipc.segment import Segment, SegmentKind
        from pycorosync.transports import links

        self.segment = Segment.attach(name, SegmentKind.RAW, links.SEGMENT_LAYOUT_VERSION)
        try:
            self.table = links.LinkTable.attach(self.segment.array())
        except ValueError:
            self.segment.close()
            raise

    def samples(self, now_ns: int, local: int) -> tuple[LinkSample, ...]:
        return tuple(
            LinkSample(s.nodeid, s.connected, None if s.last_heard_ms_ago is None else s.last_heard_ms_ago / 1000,
                       s.rx_bytes, s.tx_bytes)
            for s in self.table.statuses(now_ns) if s.nodeid != local
        )

    def close(self) -> None:
        del self.table
        self.segment.close()

