"""Stats-map providers fed by the node's shared memory, when cmap runs inside a node.

Two sources (PROTOCOL.md §1): the node segment's stats block, where the totem process writes its
counters in ``engine.totem.stats.COUNTER_NAMES`` order (-> ``stats.srp.*``), and the node's stats
table (ipc/stats.py), a row per process (-> node-wide ``stats.ipcs.global.*``; this process also
writes its own ``ipcs.*`` row there for the exporter).

A third: the transport's link table (``transports/links.py``, segment ``<prefix>links``) gives
``stats.knet.node<id>.link0.{enabled,connected,tx_total_packets,tx_total_bytes,rx_total_packets,
rx_total_bytes}`` (pycorosync's udp transport has one link; its counters are every datagram, so
only corosync's ``*_total_*`` names are shown).

Every service's IPC server (ipc/server.py) publishes its connection totals into its own row; from those
rows come ``stats.ipcs.service<id>.{active,closed,requests,responses,dispatched,invalid_request,
overload,flow_control_count,send_retries,try_again,ring_used_bytes,ring_capacity_bytes}`` (per service:
the table has one row per process, not per connection).

Per connection, corosync's ``stats.ipcs.service<id>.<pid>.<conn>.*`` of the other services come from
the files their servers keep in the run dir (``ipc/connfile.py``; cmap's own from its live server).

The totem runtime's counters (``layout.RUNTIME_COUNTERS`` in the same block) give ``stats.pg.*`` and
``stats.srp.{continuous_sendmsg_failures,time_since_token_last_received}``; its schedmiss slots
(``layout.SCHEDMISS_*``) give ``stats.schedmiss.<0..9>.{timestamp,delay}``, 0 newest, a key pair per
event kept, as corosync adds them; ``stats.clear.schedmiss`` hides the events recorded so far.

Not available from any source yet, so not shown: the rest of ``stats.knet.*`` (mtu, latency, up/down
counts, ping/pong/pmtu split, ``stats.knet.handle.*``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.services.cmap.stats_map import StatsMap

log = logging.getLogger("CMAP")

# corosync's types for the srp keys that are not u64
_SRP_TYPES: dict[str, ValueType] = {
    "continuous_gather": ValueType.UINT32,
    "mtt_rx_token": ValueType.UINT32,
    "avg_token_workload": ValueType.UINT32,
    "avg_backlog_calc": ValueType.UINT32,
}
# COUNTER_NAMES entries that are corosync keys (the rest are pycorosync's own, shown under stats.srp.pcs_*)
_COROSYNC_SRP_COUNT = 27
_FIREWALL_GATHERS = 3  # corosync: firewall_enabled_or_nic_failure = continuous_gather > 3

Row = tuple[str, ValueType, Value]
# the ipcs.* counters an IPC server publishes (ipc/server.py), shown per service as stats.ipcs.service<id>.<name>
_TABLE_COUNTERS = ("requests", "responses", "dispatched", "invalid_request", "overload", "flow_control_count",
                   "send_retries", "try_again")
SERVICE_KEYS = ("active", "closed", *_TABLE_COUNTERS, "ring_used_bytes", "ring_capacity_bytes")


def srp_provider(block: Any, names: Iterable[str]) -> Callable[[], list[Row]]:
    """``stats.srp.*`` from the totem process's stats block (an int64 array, ``names`` in order)."""
    ordered = list(names)

    def rows() -> list[Row]:
        values = [int(v) for v in block[: len(ordered)]]
        out: list[Row] = []
        for i, (name, value) in enumerate(zip(ordered, values)):
            key = f"stats.srp.{name}" if i < _COROSYNC_SRP_COUNT else f"stats.srp.pcs_{name}"
            vtype = _SRP_TYPES.get(name, ValueType.UINT64)
            out.append((key, vtype, max(0, min(value, 2**32 - 1)) if vtype == ValueType.UINT32 else max(0, value)))
        gathers = dict(zip(ordered, values)).get("continuous_gather", 0)
        out.append(("stats.srp.firewall_enabled_or_nic_failure", ValueType.UINT8, int(gathers > _FIREWALL_GATHERS)))
        return out

    return rows


class StatsTableLink:
    """This process's use of the node stats table: node-wide IPC totals in, its own ``ipcs.*`` row out."""

    def __init__(self, table: Any, process: str = "cmap") -> None:
        self.table = table
        self.slot = table.find_slot(process)
        self._own_closed = 0

    def global_ipc_rows(self, own_active: int, own_closed: int) -> list[Row]:
        """``stats.ipcs.global.{active,closed}``: other processes' rows plus this one's live numbers."""
        snap = self.table.snapshot()
        active, closed = own_active, own_closed
        names = {m.name for m in snap.metrics}
        if {"ipcs.active", "ipcs.closed"} <= names:
            for info in snap.slots:
                if info.pid and info.slot != self.slot:
                    active += int(snap.value(info.slot, "ipcs.active"))
                    closed += int(snap.value(info.slot, "ipcs.closed"))
        return [("stats.ipcs.global.active", ValueType.UINT64, active),
                ("stats.ipcs.global.closed", ValueType.UINT64, closed)]

    def service_ipc_rows(self) -> list[Row]:
        """``stats.ipcs.service<id>.<name>`` for every service whose IPC server published its row (each
        service's totals over all its connections; corosync itself shows only the per-connection keys)."""
        snap = self.table.snapshot()
        names = {m.name for m in snap.metrics}
        if "process.heartbeat_ns" not in names:
            return []
        out: list[Row] = []
        for info in snap.slots:
            service_id = _service_id(info.process)
            if not info.pid or service_id is None or not snap.value(info.slot, "process.heartbeat_ns"):
                continue  # not a service, or its server never wrote the row
            base = f"stats.ipcs.service{service_id}."
            for key in SERVICE_KEYS:
                column = f"ipc.{key}" if key.startswith("ring_") else f"ipcs.{key}"
                if column in names:
                    out.append((base + key, ValueType.UINT64, max(0, int(snap.value(info.slot, column)))))
        return out

    def write_own_row(self, server: Any) -> None:
        """Copies the IPC server's counters into this process's row (called from the housekeeping tick).

        A server that has a row of its own (``ipc.server.Server.stats_row``: inside a node) publishes
        itself from its tick; this writes only for a server given a table by hand (tests, standalone cmap).
        """
        if self.slot is None or server is None:
            return
        if getattr(server, "stats_row", None) is not None:
            return
        with contextlib.suppress(KeyError, IndexError):
            row = self.table.row(self.slot)
            totals = server.totals() if hasattr(server, "totals") else None
            if totals is None:
                return
            row.set("ipcs.active", totals["active"])
            row.set("ipcs.closed", totals["closed"])
            for name in _TABLE_COUNTERS:
                row.set(f"ipcs.{name}", totals[name])
            row.set("ipc.ring_used_bytes", totals["ring_used_bytes"])
            row.set("ipc.ring_capacity_bytes", totals["ring_capacity_bytes"])
            row.set("process.heartbeat_ns", time.monotonic_ns())


def connection_rows(service_id: int, conns: Iterable[Mapping[str, Any]]) -> list[Row]:
    """corosync's ``stats.ipcs.service<id>.<pid>.<conn>.*`` keys (with its types) from the connection
    stats a server wrote (``ipc.connfile``); numbers that are not numbers are shown as 0."""
    u64, u32 = ValueType.UINT64, ValueType.UINT32

    def num(conn: Mapping[str, Any], name: str) -> int:
        value = conn.get(name, 0)
        return max(0, int(value)) if isinstance(value, int) else 0

    out: list[Row] = []
    for conn in conns:
        pid = num(conn, "pid")
        base = f"stats.ipcs.service{service_id}.{pid}.0x{num(conn, 'conn'):x}."
        out += [
            (base + "procname", ValueType.STRING, _procname(pid)),
            (base + "requests", u64, num(conn, "requests")),
            (base + "responses", u64, num(conn, "responses")),
            (base + "dispatched", u64, num(conn, "dispatched")),
            (base + "overload", u64, num(conn, "overload")),
            (base + "invalid_request", u64, num(conn, "invalid_request")),
            (base + "queueing", ValueType.INT32, 1 if num(conn, "queued") else 0),
            (base + "queued", u32, min(num(conn, "queued"), 2**32 - 1)),
            (base + "sent", u32, 0),
            (base + "send_retries", u64, num(conn, "send_retries")),
            (base + "recv_retries", u64, 0),
            (base + "flow_control", u32, min(num(conn, "flow_control"), 1)),
            (base + "flow_control_count", u64, num(conn, "flow_control_count")),
        ]
    return out


def _procname(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def connections_provider(run_dir: str, services: Iterable[str]) -> Callable[[], list[Row]]:
    """Per-connection keys of the other services of the node, from the files their servers keep
    (``ipc.connfile``; cmap's own connections come from its live server)."""
    ids = [(name, sid) for name in services if name != "cmap" and (sid := _service_id(name)) is not None]

    def rows() -> list[Row]:
        from pycorosync.ipc import connfile

        out: list[Row] = []
        for name, sid in ids:
            out += connection_rows(sid, connfile.read(run_dir, name))
        return out

    return rows


def _service_id(process: str) -> int | None:
    """corosync's service id of a node process named after its service (None: transport, totem...)."""
    from pycorosync.engine.runtime.node import entry_by_name

    try:
        return entry_by_name(process).service_id
    except KeyError:
        return None


# corosync's stats.pg.* (u32), read from the totem runtime's counters when it publishes them
PG_COUNTERS = ("msg_queue_avail", "msg_reserved")


def pg_provider(block: Any, runtime_base: int, runtime_names: Iterable[str]) -> Callable[[], list[Row]] | None:
    """``stats.pg.*`` from the runtime part of the totem stats block, or None when the runtime does not
    publish those counters (then the keys are absent, not a misleading 0 = "queue full")."""
    names = list(runtime_names)
    slots = [(name, runtime_base + names.index(name)) for name in PG_COUNTERS if name in names]
    if not slots:
        return None

    def rows() -> list[Row]:
        return [(f"stats.pg.{name}", ValueType.UINT32, max(0, min(int(block[slot]), 2**32 - 1)))
                for name, slot in slots]

    return rows


def srp_runtime_provider(block: Any, runtime_base: int, runtime_names: Iterable[str]) -> Callable[[], list[Row]]:
    """``stats.srp.{time_since_token_last_received,continuous_sendmsg_failures}`` from the runtime counters
    (absent when this build's runtime does not publish them)."""
    names = list(runtime_names)
    last = runtime_base + names.index("last_token_rx_ns") if "last_token_rx_ns" in names else None
    fails = runtime_base + names.index("continuous_sendmsg_failures") if "continuous_sendmsg_failures" in names else None

    def rows() -> list[Row]:
        out: list[Row] = []
        if last is not None:
            stamp = int(block[last])  # CLOCK_MONOTONIC ns of the last token, 0 = none yet (corosync: 0)
            since_ms = max(0, (time.monotonic_ns() - stamp) // 1_000_000) if stamp > 0 else 0
            out.append(("stats.srp.time_since_token_last_received", ValueType.UINT64, since_ms))
        if fails is not None:
            out.append(("stats.srp.continuous_sendmsg_failures", ValueType.UINT32,
                        max(0, min(int(block[fails]), 2**32 - 1))))
        return out

    return rows


def schedmiss_rows(log: Any) -> list[Row]:
    """``stats.schedmiss.<n>.{timestamp,delay}`` (u64 epoch ms, float ms; 0 newest) of a SchedMissLog."""
    out: list[Row] = []
    for n, (stamp_ms, delay_ms) in enumerate(log.events()):
        out.append((f"stats.schedmiss.{n}.timestamp", ValueType.UINT64, stamp_ms))
        out.append((f"stats.schedmiss.{n}.delay", ValueType.FLOAT, float(delay_ms)))
    return out


def link_rows(rows: Any) -> list[Row]:
    """``stats.knet.node<id>.link0.*`` from the rows of a link table (int64[n, 8], transports/links.py)."""
    from pycorosync.transports import links

    u8, u64 = ValueType.UINT8, ValueType.UINT64
    out: list[Row] = []
    for row in rows:
        base = f"stats.knet.node{int(row[links.COL_NODEID])}.link0."
        out += [
            (base + "enabled", u8, 1),
            (base + "connected", u8, int(bool(row[links.COL_CONNECTED]))),
            (base + "rx_total_packets", u64, max(0, int(row[links.COL_RX_PACKETS]))),
            (base + "rx_total_bytes", u64, max(0, int(row[links.COL_RX_BYTES]))),
            (base + "tx_total_packets", u64, max(0, int(row[links.COL_TX_PACKETS]))),
            (base + "tx_total_bytes", u64, max(0, int(row[links.COL_TX_BYTES]))),
        ]
    return out


def knet_provider(segment_name: str) -> Callable[[], list[Row]]:
    """``stats.knet.*`` read from the transport's shared link table, mapped afresh on every read (a
    restarted transport makes a new table; an old mapping would keep a dead process's numbers)."""

    def rows() -> list[Row]:
        from pycorosync.ipc.segment import Segment, SegmentKind
        from pycorosync.transports import links

        try:
            seg = Segment.attach(segment_name, SegmentKind.RAW, links.SEGMENT_LAYOUT_VERSION)
        except (OSError, ValueError):
            return []  # no transport running (yet): no keys
        try:
            table = links.LinkTable.attach(seg.array())
            snapshot = table.table.copy()
            del table
        except ValueError:
            return []
        finally:
            with contextlib.suppress(BufferError):
                seg.close()
        return link_rows(snapshot)

    return rows


def attach_node_stats(stats: StatsMap, node: Any) -> tuple[StatsTableLink | None, list[Any]]:
    """Registers the providers a node offers; returns (table link or None, objects to close at exit).

    ``node`` is the ``engine.runtime.node.NodeInfo`` of this process. A source that cannot be opened is
    logged and skipped: cmap keeps serving without those keys.
    """
    keep: list[Any] = []
    link: StatsTableLink | None = None
    if node.segment and node.services:
        try:
            from pycorosync.engine.totem.stats import COUNTER_NAMES

            rings = node.layout().attach(node.segment)
            keep.append(rings)
            stats.register("stats.srp.", srp_provider(rings.stats, COUNTER_NAMES))
            from pycorosync.engine.runtime.layout import RUNTIME_BASE, RUNTIME_COUNTERS

            pg = pg_provider(rings.stats, RUNTIME_BASE, RUNTIME_COUNTERS)
            if pg is not None:
                stats.register("stats.pg.", pg)
            stats.register("stats.srp.", srp_runtime_provider(rings.stats, RUNTIME_BASE, RUNTIME_COUNTERS))
            from pycorosync.engine.runtime.totem_stats import SchedMissLog

            schedmiss = SchedMissLog(rings.stats)
            stats.register("stats.schedmiss.", lambda: schedmiss_rows(schedmiss))
            stats.register_clear("schedmiss", lambda: schedmiss.clear(time.time_ns() // 1_000_000))
        except Exception as exc:  # the node segment is the supervisor's; its absence must not stop cmap
            log.warning("stats.srp.* unavailable: cannot attach node segment %s: %s", node.segment, exc)
    if getattr(node, "cluster", None) and getattr(node, "nodeid", None) is not None:
        from pycorosync.ipc.segment import segment_name

        stats.register("stats.knet.", knet_provider(segment_name(node.cluster, node.nodeid, "links")))
    if node.stats:
        try:
            from pycorosync.ipc.stats import StatsTable

            table = StatsTable.attach(node.stats, writer=False)
            keep.append(table)
            link = StatsTableLink(table)
            stats.register("stats.ipcs.service", link.service_ipc_rows)
            if getattr(node, "run_dir", None):
                stats.register("stats.ipcs.service", connections_provider(str(node.run_dir), node.services))
        except Exception as exc:
            log.warning("node stats table %s unavailable: %s", node.stats, exc)
    return link, keep
