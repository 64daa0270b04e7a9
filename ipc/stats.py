"""The node's stats table: one shared-memory segment, a row per process slot, a column per metric.

Every process of a node writes its own row with plain stores (from Python, or from numba kernels at
the cost of an add); the exporter, ``cmapctl``'s ``stats.*`` keys and tools read a snapshot. Torn reads
of single 8-byte cells cannot happen on x86-64 and a snapshot need not be atomic across cells.

The columns are laid out by :data:`METRICS`, the one registry of metric definitions, grouped by
subsystem: a subsystem adds its metrics there, in its group (appending changes the layout hash, so a
node and its tools must come from the same build to write; readers of another build still read by
name, because the segment stores its own column table). Column ``i`` is ``METRICS[i]``.

    table = StatsTable.create(segment_name(cluster, nodeid, "stats"), n_slots=16)   # supervisor
    table.set_slot(3, "cpg", pid)                                                    # supervisor
    table = StatsTable.attach(name)                                                  # any process
    row = table.row(3)
    row.add("ipc.requests")               # counters: add; gauges: set
    row.set("process.rss_bytes", rss)
    snap = table.snapshot()               # readers: a copy, values by (slot, name)

From numba: pass ``table.cells`` (int64, shape ``(n_slots, n_columns)``; ``u64`` metrics are held as
non-negative int64 so that kernels never mix uint64 with int64, which numba turns into float64) or
``table.f64`` (float64 view of the same cells, for ``f64`` metrics), the slot, and column indices from
``column(name)`` taken at import time, e.g. ``C_TX = stats.column("transport.tx_packets")``; numba
freezes such globals into the compiled kernel, and the keyed cache recompiles when this file changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pycorosync.ipc.segment import Segment, SegmentKind, SegmentLayoutError

_log = logging.getLogger("IPC")

STATS_LAYOUT_VERSION = 1
STATS_MAGIC = 0x54534350  # "PCST" little-endian
SLOT_INFO_BYTES = 64
PROCESS_NAME_BYTES = 40

# magic u32, version u32, n_slots u32, n_columns u32, registry_hash u64,
# names_offset u64, names_bytes u64, slots_offset u64, cells_offset u64   (offsets from the payload start)
_TABLE_HEADER = struct.Struct("<IIIIQQQQQ")
# pid i64, started_ns i64, restarts i64, process name (PROCESS_NAME_BYTES, NUL-padded)
_SLOT = struct.Struct(f"<qqq{SLOT_INFO_BYTES - 24}s")

MetricKind = Literal["counter", "gauge"]
MetricType = Literal["u64", "f64"]


@dataclass(frozen=True)
class Metric:
    """One column: dotted name (``srp.mcast_tx``), counter or gauge, u64 or f64, unit, help text."""

    name: str
    kind: MetricKind
    type: MetricType
    unit: str
    help: str


def _c(name: str, unit: str, help: str) -> Metric:
    return Metric(name, "counter", "u64", unit, help)


def _g(name: str, unit: str, help: str, type: MetricType = "u64") -> Metric:
    return Metric(name, "gauge", type, unit, help)


#: upper bounds of the ``totem.token_rotation_le_*`` buckets (ms), in order; above the last: only in the count
TOKEN_ROTATION_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

# The registry. Add a subsystem's metrics in its group; names are those cmap shows under "stats."
# where corosync has one (srp.*, pg.*, ipcs.*).
METRICS: list[Metric] = [
    # --- process: every slot; written by the process's housekeeping tick or by the supervisor's sampler
    Metric("process.cpu_seconds", "counter", "f64", "seconds", "CPU time used, user + system"),
    _g("process.rss_bytes", "bytes", "Resident set size"),
    _g("process.heartbeat_ns", "nanoseconds", "CLOCK_MONOTONIC at the process's last housekeeping tick"),
    # --- ipc: shared-memory rings and client connections (corosync: stats.ipcs.*)
    _g("ipcs.active", "connections", "Client connections open"),
    _c("ipcs.closed", "connections", "Client connections closed"),
    _c("ipcs.requests", "requests", "Requests received from clients"),
    _c("ipcs.responses", "responses", "Responses sent to clients"),
    _c("ipcs.dispatched", "events", "Events sent to clients"),
    _c("ipcs.invalid_request", "requests", "Malformed requests dropped"),
    _c("ipcs.overload", "records", "Responses or events that did not fit their client ring at once (they wait)"),
    _c("ipcs.flow_control_count", "events", "Times a client was flow-controlled"),
    _c("ipcs.send_retries", "retries", "Backlog flushes that found a client's ring still full"),
    _c("ipcs.try_again", "requests", "Requests answered CS_ERR_TRY_AGAIN (corosync counts these as overload)"),
    _c("ipc.ring_full", "records", "Pushes refused because the ring was full (back-pressure)"),
    _c("ipc.wakeups_sent", "wakeups", "Doorbell writes to a sleeping consumer"),
    _c("ipc.ring_corrupt", "rings", "Rings dropped because the peer wrote impossible records"),
    # --- transport (names as in transports/udp/counters.py)
    _c("transport.tx_packets", "packets", "Datagrams sent"),
    _c("transport.tx_bytes", "bytes", "Bytes sent"),
    _c("transport.tx_batches", "batches", "sendmmsg/GSO calls"),
    _c("transport.tx_gso_segments", "segments", "Datagrams sent as GSO segments"),
    _c("transport.socket_errors", "errors", "Socket errors on send or receive"),
    _c("transport.rx_packets", "packets", "Datagrams received"),
    _c("transport.rx_bytes", "bytes", "Bytes received"),
    _c("transport.rx_batches", "batches", "recvmmsg calls that returned data"),
    _c("transport.rx_gro_segments", "segments", "Datagrams received coalesced by GRO"),
    *(
        _c(f"transport.rx_drop_{why}", "packets", f"Datagrams dropped on receive: {why.replace('_', ' ')}")
        for why in (
            "too_short",
            "bad_header",
            "wrong_cluster",
            "unknown_node",
            "replay",
            "bad_auth",
            "oversized",
            "own",
        )
    ),
    _c("transport.tx_drop_oversized", "frames", "Frames too large to send, dropped"),
    _c("transport.tx_drop_unknown_dest", "frames", "Frames for an unknown node, dropped"),
    _c("transport.rx_delivered", "frames", "Frames handed to totem"),
    _c("transport.rx_ring_full", "frames", "Frames refused by a full rx ring (Totem retransmits them)"),
    _c("transport.rx_wakes", "wakeups", "Doorbell writes to totem"),
    _c("transport.tx_large_frames", "frames",
       "Frames longer than netmtu (commit tokens of large clusters) sent whole, fragmented by IP"),
    # --- totem SRP (corosync: stats.srp.*, stats.pg.*)
    *(
        _c(f"srp.{msg}_{d}", "messages", f"{msg.replace('_', ' ')} messages {'sent' if d == 'tx' else 'received'}")
        for msg in ("orf_token", "memb_merge_detect", "memb_join", "mcast", "memb_commit_token", "token_hold_cancel")
        for d in ("tx", "rx")
    ),
    _c("srp.mcast_retx", "messages", "Multicast messages retransmitted"),
    *(
        _c(f"srp.{state}_{what}", "events", f"{state.upper()} {what.replace('_', ' ')}")
        for state in ("operational", "gather", "commit", "recovery")
        for what in ("entered", "token_lost")
    ),
    _c("srp.consensus_timeouts", "events", "Consensus timeouts"),
    _c("srp.rx_msg_dropped", "messages", "Received messages dropped"),
    _g("srp.continuous_gather", "events", "Consecutive GATHER entries"),
    _g("srp.continuous_sendmsg_failures", "events", "Consecutive send failures"),
    _g("srp.mtt_rx_token", "milliseconds", "Mean time between received tokens", "f64"),
    _g("srp.avg_token_workload", "milliseconds", "Mean time the token is held", "f64"),
    _g("srp.avg_backlog_calc", "messages", "Mean send backlog", "f64"),
    _g("pg.msg_queue_avail", "frames", "Free frames in the send queue"),
    _g("pg.msg_reserved", "frames", "Reserved frames in the send queue"),
    # --- monitoring: what the exporter needs and no other source has (monitoring/README.md says who fills it)
    # service.*: each service process's own row (engine/runtime/service.py), per message it multicasts/receives
    _c("service.mcast_tx_bytes", "bytes", "Body bytes this service multicast through totem"),
    _c("service.delivered_bytes", "bytes", "Body bytes totem delivered to this service"),
    _c("service.flow_control_waits", "events", "Client requests answered CS_ERR_TRY_AGAIN because totem was full"),
    # ipc.ring_*: each IPC server's housekeeping tick, summed over its client connections' rings
    _g("ipc.ring_used_bytes", "bytes", "Bytes waiting in this process's client rings"),
    _g("ipc.ring_capacity_bytes", "bytes", "Capacity of this process's client rings"),
    # totem.token_rotation_*: the totem process, once per token received (a histogram as fixed buckets;
    # bucket i counts rotations <= TOKEN_ROTATION_BUCKETS_MS[i]; +Inf is the count)
    *(
        _c(f"totem.token_rotation_le_{ms}ms", "tokens", f"Token rotations that took at most {ms} ms")
        for ms in TOKEN_ROTATION_BUCKETS_MS
    ),
    _c("totem.token_rotation_count", "tokens", "Token rotations measured"),
    Metric("totem.token_rotation_seconds", "counter", "f64", "seconds", "Sum of the measured token rotations"),
]



#: the environment variable a node's supervisor gives every child (PROTOCOL.md §1: a JSON object whose
#: "stats" member names the node's stats table); read here so that ipc code needs nothing from the engine
NODE_ENV = "PYCOROSYNC_NODE"


def registry_hash(metrics: Sequence[Metric]) -> int:
    """64-bit hash of the column layout (names, kinds, types, order); writers must match it."""
    text = json.dumps([[m.name, m.kind, m.type] for m in metrics]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


def _check_registry(metrics: Sequence[Metric]) -> None:
    seen: set[str] = set()
    for m in metrics:
        if m.name in seen:
            raise ValueError(f"stats registry: metric {m.name!r} is defined twice")
        if m.kind not in ("counter", "gauge") or m.type not in ("u64", "f64"):
            raise ValueError(f"stats registry: metric {m.name!r} has kind {m.kind!r} type {m.type!r}")
        seen.add(m.name)


_check_registry(METRICS)
_COLUMNS = {m.name: i for i, m in enumerate(METRICS)}


def column(name: str) -> int:
    """Column index of a metric of this build's registry (KeyError names the metric)."""
    try:
        return _COLUMNS[name]
    except KeyError:
        raise KeyError(f"no metric {name!r} in the stats registry (ipc/stats.py METRICS)") from None


@dataclass(frozen=True)
class SlotInfo:
    """Who owns a row: process name, pid (0 = free), start time, restarts recorded by the supervisor."""

    slot: int
    process: str
    pid: int
    started_ns: int
    restarts: int


@dataclass(frozen=True)
class StatsSnapshot:
    """A copy of the whole table; ``cells`` is int64 raw bits, read through ``value()``."""

    metrics: tuple[Metric, ...]
    slots: tuple[SlotInfo, ...]
    cells: np.ndarray[Any, Any]
    taken_ns: int

    def index(self, name: str) -> int:
        for i, m in enumerate(self.metrics):
            if m.name == name:
                return i
        raise KeyError(f"no metric {name!r} in this stats table")

    def value(self, slot: int, name: str) -> int | float:
        """The metric's value in a slot, as int (u64) or float (f64)."""
        i = self.index(name)
        cell = self.cells[slot, i]
        if self.metrics[i].type == "f64":
            return float(cell.view(np.float64))
        return int(cell.view(np.uint64))

    def row(self, slot: int) -> dict[str, int | float]:
        """Every metric of one slot by name."""
        return {m.name: self.value(slot, m.name) for m in self.metrics}

    def total(self, name: str) -> int | float:
        """Sum over all owned slots (e.g. a node-wide counter)."""
        return sum(self.value(s.slot, name) for s in self.slots if s.pid)


class StatsRow:
    """One slot's row: ``add``/``set``/``get`` by metric name, or by column index on ``cells``."""

    __slots__ = ("_f64", "_i64", "_metrics", "slot")

    def __init__(self, table: StatsTable, slot: int) -> None:
        self._i64 = table.cells[slot]
        self._f64 = table.f64[slot]
        self._metrics = table.metrics
        self.slot = slot

    def _col(self, name: str) -> tuple[int, bool]:
        col = column(name)
        return col, self._metrics[col].type == "f64"

    def add(self, name: str, n: int | float = 1) -> None:
        col, is_float = self._col(name)
        if is_float:
            self._f64[col] += n
        else:
            self._i64[col] += int(n)

    def set(self, name: str, value: int | float) -> None:
        col, is_float = self._col(name)
        if is_float:
            self._f64[col] = value
        else:
            self._i64[col] = int(value)

    def get(self, name: str) -> int | float:
        col, is_float = self._col(name)
        return float(self._f64[col]) if is_float else int(self._i64[col])

    def store(self, columns: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> None:
        """Copies a local int64 counter array into u64 columns at once (``columns[i]`` gets ``values[i]``)."""
        self._i64[columns] = values


class StatsTable:
    """The mapped stats table (see the module docstring)."""

    def __init__(self, segment: Segment, metrics: Sequence[Metric], n_slots: int, slots_off: int, cells_off: int):
        self.segment = segment
        self.metrics: tuple[Metric, ...] = tuple(metrics)
        self.n_slots = n_slots
        arr = segment.array()
        n_cols = len(self.metrics)
        self._slots = arr[slots_off : slots_off + n_slots * SLOT_INFO_BYTES]
        cells = arr[cells_off : cells_off + n_slots * n_cols * 8]
        self.cells: np.ndarray[Any, Any] = cells.view(np.int64).reshape(n_slots, n_cols)
        self.f64: np.ndarray[Any, Any] = cells.view(np.float64).reshape(n_slots, n_cols)

    @staticmethod
    def _layout(n_slots: int, names: bytes) -> tuple[int, int, int]:
        names_off = 64
        slots_off = (names_off + len(names) + 63) // 64 * 64
        cells_off = slots_off + n_slots * SLOT_INFO_BYTES
        return names_off, slots_off, cells_off

    @classmethod
    def create(cls, name: str, n_slots: int, metrics: Sequence[Metric] = METRICS) -> StatsTable:
        """Creates the named stats segment (supervisor, at node start), all cells zero, all slots free."""
        return cls._init(
            lambda size: Segment.create(name, size, SegmentKind.STATS, STATS_LAYOUT_VERSION), n_slots, metrics
        )

    @classmethod
    def create_anonymous(cls, n_slots: int, metrics: Sequence[Metric] = METRICS) -> StatsTable:
        """A stats table in a memfd (tests; or a process-local table)."""
        return cls._init(
            lambda size: Segment.create_anonymous(size, SegmentKind.STATS, STATS_LAYOUT_VERSION, "pcs-stats"),
            n_slots,
            metrics,
        )

    @classmethod
    def _init(cls, make: Any, n_slots: int, metrics: Sequence[Metric]) -> StatsTable:
        if n_slots < 1:
            raise ValueError(f"stats table needs at least one slot, got {n_slots}")
        _check_registry(metrics)
        names = json.dumps([[m.name, m.kind, m.type, m.unit, m.help] for m in metrics]).encode()
        names_off, slots_off, cells_off = cls._layout(n_slots, names)
        seg: Segment = make(cells_off + n_slots * len(metrics) * 8)
        payload = seg.payload
        payload[names_off : names_off + len(names)] = names
        _TABLE_HEADER.pack_into(
            payload,
            0,
            STATS_MAGIC,
            STATS_LAYOUT_VERSION,
            n_slots,
            len(metrics),
            registry_hash(metrics),
            names_off,
            len(names),
            slots_off,
            cells_off,
        )
        payload.release()
        return cls(seg, metrics, n_slots, slots_off, cells_off)

    @classmethod
    def attach(cls, name: str, writer: bool = True) -> StatsTable:
        """Maps the node's table. A writer must share this build's registry; a reader takes the stored one."""
        return cls.from_segment(Segment.attach(name, SegmentKind.STATS, STATS_LAYOUT_VERSION), writer)

    @classmethod
    def from_segment(cls, seg: Segment, writer: bool = True) -> StatsTable:
        payload = seg.payload
        try:
            magic, version, n_slots, n_cols, rhash, names_off, names_len, slots_off, cells_off = (
                _TABLE_HEADER.unpack_from(payload, 0)
            )
            if magic != STATS_MAGIC or version != STATS_LAYOUT_VERSION:
                raise SegmentLayoutError(
                    f"{seg.name}: stats table version {version}, this build reads {STATS_LAYOUT_VERSION}"
                )
            if cells_off + n_slots * n_cols * 8 > len(payload):
                raise SegmentLayoutError(f"{seg.name}: stats table of {n_slots}x{n_cols} does not fit the segment")
            stored = [Metric(*m) for m in json.loads(bytes(payload[names_off : names_off + names_len]))]
        finally:
            payload.release()
        if writer and rhash != registry_hash(METRICS):
            seg.close()
            raise SegmentLayoutError(
                f"{seg.name}: stats columns differ from this build's registry ({n_cols} stored, {len(METRICS)} here);"
                " a writer needs the same build"
            )
        if len(stored) != n_cols:
            seg.close()
            raise SegmentLayoutError(f"{seg.name}: column table lists {len(stored)} metrics, header says {n_cols}")
        return cls(seg, stored, n_slots, slots_off, cells_off)

    # ------------------------------------------------------------ slots

    def set_slot(self, slot: int, process: str, pid: int) -> None:
        """Gives a slot to a process (supervisor) and zeroes its row.

        Giving it again to the same process name counts a restart in the slot info.
        """
        info = self.slot_info(slot)
        restarts = info.restarts + 1 if info.process == process and info.started_ns else 0
        self.cells[slot] = 0
        encoded = process.encode()[: PROCESS_NAME_BYTES - 1]
        _SLOT.pack_into(self._slots.data, slot * SLOT_INFO_BYTES, pid, time.time_ns(), restarts, encoded)

    def free_slot(self, slot: int) -> None:
        """Marks a slot unowned (pid 0); its values stay readable until the slot is given again."""
        info = self.slot_info(slot)
        _SLOT.pack_into(
            self._slots.data, slot * SLOT_INFO_BYTES, 0, info.started_ns, info.restarts, info.process.encode()
        )

    def slot_info(self, slot: int) -> SlotInfo:
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"stats slot {slot} out of range 0..{self.n_slots - 1}")
        pid, started, restarts, raw = _SLOT.unpack_from(self._slots.data, slot * SLOT_INFO_BYTES)
        name = raw.split(b"\x00", 1)[0].decode(errors="replace")
        return SlotInfo(slot, name, pid, started, restarts)

    def find_slot(self, process: str) -> int | None:
        """The slot given to ``process`` (by name), if any."""
        for s in range(self.n_slots):
            if self.slot_info(s).process == process:
                return s
        return None

    # ------------------------------------------------------------ access

    def column(self, name: str) -> int:
        """Column of a metric in this table (its own registry, which may be another build's)."""
        for i, m in enumerate(self.metrics):
            if m.name == name:
                return i
        raise KeyError(f"no metric {name!r} in stats table {self.segment.name}")

    def columns(self, names: Iterable[str]) -> np.ndarray[Any, Any]:
        """Column indices for ``StatsRow.store`` (e.g. a subsystem's local counter array)."""
        return np.array([self.column(n) for n in names], np.int64)

    def row(self, slot: int) -> StatsRow:
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"stats slot {slot} out of range 0..{self.n_slots - 1}")
        return StatsRow(self, slot)

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            metrics=self.metrics,
            slots=tuple(self.slot_info(s) for s in range(self.n_slots)),
            cells=self.cells.copy(),
            taken_ns=time.time_ns(),
        )

    def close(self) -> None:
        """Drops this table's views and closes the mapping (rows handed out keep it alive until dropped)."""
        del self.cells, self.f64, self._slots
        self.segment.close()

    def unlink(self) -> bool:
        return self.segment.unlink()


def node_process_row(
    process: str, environ: Mapping[str, str] | None = None
) -> tuple[StatsTable, StatsRow] | None:
    """The node's stats table and the row of the slot named ``process``, when this process was started
    by a node (``$PYCOROSYNC_NODE`` names the table); None outside a node, or when the table or the slot
    cannot be had (logged: a process runs on without its row, it never fails for it)."""
    env = os.environ if environ is None else environ
    raw = env.get(NODE_ENV)
    if not raw:
        return None
    try:
        name = json.loads(raw).get("stats") or ""
    except (ValueError, AttributeError):
        _log.warning("$%s is not a JSON object: no stats row for '%s'", NODE_ENV, process)
        return None
    if not name:
        return None
    try:
        table = StatsTable.attach(str(name))
    except Exception as exc:  # gone, another build's layout, no permission
        _log.warning("stats table %s unavailable to '%s': %s", name, process, exc)
        return None
    slot = table.find_slot(process)
    if slot is None:
        _log.debug("stats table %s has no slot named '%s'", name, process)
        table.close()
        return None
    return table, table.row(slot)
