"""What one collection read from a node: plain frozen data, built by ``monitoring.sources`` and turned into
metric families by ``monitoring.collector`` (so the collector can be tested on a reading made by hand)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RingSample:
    """One ring of the node segment: ``tx``, ``rx``, ``submit.<svc>`` or ``deliver.<svc>``."""

    ring: str
    used_bytes: int
    capacity_bytes: int
    pushed: int
    full: int


@dataclass(frozen=True)
class ProcessSample:
    """One process of the node as psutil and the supervisor's environment see it."""

    process: str
    pid: int
    cpu_seconds: float
    rss_bytes: int
    restarts: int
    sched: str = ""  # "RR 99" (realtime policy and priority) or "nice N"; "" when unknown


@dataclass(frozen=True)
class QuorumState:
    """The quorum service's answer (votequorum getinfo of this node, or quorum_getquorate alone)."""

    quorate: bool
    total_votes: int | None = None
    expected_votes: int | None = None
    quorum: int | None = None
    node_votes: int | None = None


@dataclass(frozen=True)
class LinkSample:
    """The link to one peer (the transport's link table)."""

    peer: int
    connected: bool
    last_heard_s: float | None
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class SamState:
    """SAM supervisors of the node (cmap ``resources.process.*``): instances per state, restarts summed."""

    instances: Mapping[str, int]
    restarts: int


@dataclass(frozen=True)
class Histogram:
    """Cumulative buckets ``(upper bound s, count)`` without +Inf, total ``count`` and ``sum_s``."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum_s: float


@dataclass(frozen=True)
class NodeReading:
    """Everything one collection found; a source that could not be read is absent (and False in ``sources``)."""

    nodeid: int
    srp: Mapping[str, int] = field(default_factory=dict)
    runtime: Mapping[str, int] = field(default_factory=dict)
    rings: tuple[RingSample, ...] = ()
    table: Any = None  # ipc.stats.StatsSnapshot
    status: Mapping[str, Any] = field(default_factory=dict)
    quorum: QuorumState | None = None
    processes: tuple[ProcessSample, ...] = ()
    links: tuple[LinkSample, ...] = ()
    token_rotation: Histogram | None = None
    sam: SamState | None = None
    sources: Mapping[str, bool] = field(default_factory=dict)
    monotonic_ns: int = 0
