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


class _TableView:
    """One stats snapshot as Python values: column name -> value per slot, and the owned slots."""

    def __init__(self, snap: Any) -> None:
        import numpy as np

        u64 = snap.cells.view(np.uint64).T.tolist()
        f64 = snap.cells.view(np.float64).T.tolist()
        self.columns = {m.name: (f64[i] if m.type == "f64" else u64[i]) for i, m in enumerate(snap.metrics)}
        self.owned = [(info.slot, info.process) for info in snap.slots if info.pid]


def _table_rows(m: ExportedMetric, view: _TableView, node: str, now_ns: int) -> Iterator[tuple[list[str], float]]:
    cols = view.columns
    if m.key.endswith("<reason>"):
        reasons = DROP_REASONS if "rx_drop" in m.key else TX_DROP_REASONS
        base = m.key.removesuffix("<reason>")
        present = [(why, cols[base + why]) for why in reasons if base + why in cols]
        for slot, process in view.owned:
            if _writes(process, base):
                for why, column in present:
                    yield [node, process, why], float(column[slot])
        return
    column = cols.get(m.key)
    if column is None:
        return
    for slot, process in view.owned:
        value = column[slot]
        if m.key == "process.heartbeat_ns":
            if not value:
                continue
            value = max(0.0, (now_ns - int(value)) / 1e9)
        elif not value and not _writes(process, m.key):
            continue
        yield [node, process], float(value) * m.scale


def _rows(m: ExportedMetric, reading: NodeReading, node: str, view: _TableView | None) -> Iterator[tuple[list[str], float]]:
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
                fill = {"used": r.used_bytes, "capacity": r.capacity_bytes, "full": r.full}[m.key]
                yield [node, r.ring], float(fill)
    elif src == "table":
        if view is not None:
            yield from _table_rows(m, view, node, reading.monotonic_ns)
    elif src == "status":
        yield from _status_rows(m, reading, node)
    elif src == "quorum":
        q = reading.quorum
        answer = None if q is None else getattr(q, m.key)
        if answer is not None:
            yield [node], float(answer)
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
                yield [node, str(link.peer)], link.last_heard_s
            else:
                yield [node, str(link.peer)], float(getattr(link, m.key))
    elif src == "sam":
        sam = reading.sam
        if sam is not None and m.key == "instances":
            for state, n in sam.instances.items():
                yield [node, state], float(n)
        elif sam is not None:
            yield [node], float(sam.restarts)
    elif src == "exporter" and m.key == "sources":
        for name, ok in sorted(reading.sources.items()):
            yield [node, name], 1.0 if ok else 0.0


def _status_rows(m: ExportedMetric, reading: NodeReading, node: str) -> Iterator[tuple[list[str], float]]:
    st = reading.status
    if m.key == "members":
        for member in st.get("members") or ():
            yield [node, str(member)], 1.0
    elif m.key == "state":
        state = st.get("state")
        if isinstance(state, str):
            for name in TOTEM_STATES:
                yield [node, name], 1.0 if state.lower() == name else 0.0
    elif st.get(m.key) is not None:
        yield [node], float(st[m.key])


def series(reading: NodeReading, collect_seconds: float | None = None) -> Iterator[tuple[ExportedMetric, Any]]:
    """Each metric with samples in this reading: (metric, [(label values, value)]), or for the
    histogram (metric, Histogram)."""
    node = str(reading.nodeid)
    view = None if reading.table is None else _TableView(reading.table)
    for m in EXPORTED:
        if m.kind == "histogram":
            if reading.token_rotation is not None:
                yield m, reading.token_rotation
        elif m.source == "exporter" and m.key == "collect_seconds":
            if collect_seconds is not None:
                yield m, [([node], collect_seconds)]
        else:
            rows = list(_rows(m, reading, node, view))
            if rows:
                yield m, rows


def families(reading: NodeReading, collect_seconds: float | None = None) -> list[Metric]:
    """Every metric family with at least one sample, as prometheus_client objects."""
    node = str(reading.nodeid)
    out: list[Metric] = []
    for m, rows in series(reading, collect_seconds):
        if m.kind == "histogram":
            fam = HistogramMetricFamily(m.name, m.help, labels=m.labels)
            buckets = [(repr(le), float(n)) for le, n in rows.buckets] + [("+Inf", float(rows.count))]
            fam.add_metric([node], buckets, rows.sum_s)
        else:
            fam = _family(m)
            for labels, value in rows:
                fam.add_metric(labels, value)
        out.append(fam)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: list[str], extra: str = "") -> str:
    body = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + body + (("," if body else "") + extra if extra else "") + "}"


def exposition(reading: NodeReading, collect_seconds: float | None = None) -> str:
    """The Prometheus text format (0.0.4) of a reading, written directly: the same samples as
    ``generate_latest`` over ``families`` at a fraction of its cost (the scrape path)."""
    node = str(reading.nodeid)
    out: list[str] = []
    for m, rows in series(reading, collect_seconds):
        out.append(f"# HELP {m.name} {m.help}\n# TYPE {m.name} {m.kind}\n")
        if m.kind == "histogram":
            bounds = [(repr(float(le)), n) for le, n in rows.buckets] + [("+Inf", rows.count)]
            for le, n in bounds:
                le_label = 'le="' + le + '"'
                out.append(f"{m.name}_bucket{_labels(m.labels, [node], le_label)} {float(n)!r}\n")
            out.append(f"{m.name}_count{_labels(m.labels, [node])} {float(rows.count)!r}\n")
            out.append(f"{m.name}_sum{_labels(m.labels, [node])} {float(rows.sum_s)!r}\n")
        else:
            out.extend(f"{m.name}{_labels(m.labels, labels)} {float(value)!r}\n" for labels, value in rows)
    return "".join(out)


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
