"""The custom Prometheus collector: a ``NodeReading`` in, metric families out (PROTOTYPES.md §5).

    collector = NodeCollector(reader.read)       # reader: monitoring.sources.NodeReader
    registry = CollectorRegistry(auto_describe=False); registry.register(collector)

``families(reading)`` is pure: the unit tests build readings by hand (or from a stats table they fill)
and check the text a scrape returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from pycorosync.monitoring.metrics import (
    DROP_REASONS,
    EXPORTED,
    TOTEM_STATES,
    TX_DROP_REASONS,
    ExportedMetric,
)
from pycorosync.monitoring.reading import NodeReading

# which processes write a stats-table group; other processes' rows are exported only when non-zero
_GROUP_WRITERS: dict[str, frozenset[str] | None] = {
    "transport": frozenset({"transport"}),
    "totem": frozenset({"totem"}),
    "sam": frozenset({"sam"}),
    "process": None,  # every process
}
_NOT_SERVING = frozenset({"transport", "totem", "exporter", "supervisor"})


def _writes(process: str, column: str) -> bool:
    group = column.split(".", 1)[0]
    if group in _GROUP_WRITERS:
        writers = _GROUP_WRITERS[group]
        return writers is None or process in writers
    return process not in _NOT_SERVING  # ipcs.*, ipc.*, service.*: the processes with clients


def _family(m: ExportedMetric) -> Any:
    if m.kind == "counter":
        return CounterMetricFamily(m.family, m.help, labels=m.labels)
    return GaugeMetricFamily(m.family, m.help, labels=m.labels)


def _table_rows(m: ExportedMetric, reading: NodeReading, node: str) -> Iterator[tuple[list[str], float]]:
    snap = reading.table
    names = {x.name for x in snap.metrics}
    if m.key.endswith("<reason>"):
        reasons = DROP_REASONS if "rx_drop" in m.key else TX_DROP_REASONS
        base = m.key.removesuffix("<reason>")
        for info in snap.slots:
            if not info.pid or not _writes(info.process, base):
                continue
            for why in reasons:
                if base + why in names:
                    yield [node, info.process, why], float(snap.value(info.slot, base + why))
        return
    if m.key not in names:
        return
    for info in snap.slots:
        if not info.pid:
            continue
        value = snap.value(info.slot, m.key)
        if m.key == "process.heartbeat_ns":
            if not value:
                continue
            value = max(0.0, (reading.monotonic_ns - int(value)) / 1e9)
        elif not value and not _writes(info.process, m.key):
            continue
        yield [node, info.process], float(value) * m.scale


def _rows(m: ExportedMetric, reading: NodeReading, node: str) -> Iterator[tuple[list[str], float]]:
    """(label values, value) of one metric; nothing when its source was not read."""
    src = m.source
    if src in ("srp", "runtime"):
        block = reading.srp if src == "srp" else reading.runtime
        if m.key in block:
            yield [node], float(block[m.key]) * m.scale
    elif src == "ring":
        for r in reading.rings:
            if m.key == "submit_pushed" and r.ring.startswith("submit."):
                yield [node, r.ring.removeprefix("submit.")], float(r.pushed)
            elif m.key == "deliver_pushed" and r.ring.startswith("deliver."):
                yield [node, r.ring.removeprefix("deliver.")], float(r.pushed)
            elif m.key in ("used", "capacity", "full"):
                value = {"used": r.used_bytes, "capacity": r.capacity_bytes, "full": r.full}[m.key]
                yield [node, r.ring], float(value)
    elif src == "table":
        if reading.table is not None:
            yield from _table_rows(m, reading, node)
    elif src == "status":
        yield from _status_rows(m, reading, node)
    elif src == "quorum":
        q = reading.quorum
        value = None if q is None else getattr(q, m.key)
        if value is not None:
            yield [node], float(value)
    elif src == "process":
        for p in reading.processes:
            yield [node, p.process], float(
                {"up": 1, "cpu_seconds": p.cpu_seconds, "rss_bytes": p.rss_bytes, "restarts": p.restarts}[m.key]
            )
    elif src == "link":
        for link in reading.links:
            if m.key == "last_heard":
                if link.last_heard_s is None:
                    continue
                value: float = link.last_heard_s
            else:
                value = float(getattr(link, m.key))
            yield [node, str(link.peer)], value
    elif src == "exporter" and m.key == "sources":
        for name, ok in sorted(reading.sources.items()):
            yield [node, name], 1.0 if ok else 0.0


def _status_rows(m: ExportedMetric, reading: NodeReading, node: str) -> Iterator[tuple[list[str], float]]:
    st = reading.status
    if m.key == "state":
        state = st.get("state")
        if isinstance(state, str):
            for name in TOTEM_STATES:
                yield [node, name], 1.0 if state.lower() == name else 0.0
    elif st.get(m.key) is not None:
        yield [node], float(st[m.key])


def families(reading: NodeReading, collect_seconds: float | None = None) -> list[Metric]:
    """Every metric family with at least one sample in this reading."""
    node = str(reading.nodeid)
    out: list[Metric] = []
    for m in EXPORTED:
        if m.kind == "histogram":
            h = reading.token_rotation
            if h is not None:
                fam = HistogramMetricFamily(m.name, m.help, labels=m.labels)
                buckets = [(repr(le), float(n)) for le, n in h.buckets] + [("+Inf", float(h.count))]
                fam.add_metric([node], buckets, h.sum_s)
                out.append(fam)
            continue
        if m.source == "exporter" and m.key == "collect_seconds":
            if collect_seconds is not None:
                fam = _family(m)
                fam.add_metric([node], collect_seconds)
                out.append(fam)
            continue
        rows = list(_rows(m, reading, node))
        if rows:
            fam = _family(m)
            for labels, value in rows:
                fam.add_metric(labels, value)
            out.append(fam)
    return out


class NodeCollector:
    """A prometheus_client collector around a ``read() -> NodeReading`` function."""

    def __init__(self, read: Callable[[], NodeReading]) -> None:
        self._read = read
        self._last_collect_s: float | None = None

    def collect(self) -> Iterable[Metric]:
        t0 = time.perf_counter()
        out = families(self._read(), self._last_collect_s)
        self._last_collect_s = time.perf_counter() - t0
        return out

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on what the node has; nothing to check at registration
