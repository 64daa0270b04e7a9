"""The exported metrics: Prometheus name <-> where the value is read <-> corosync's cmap name.

One list, :data:`EXPORTED`, drives the collector, the README table and the dashboard test. Each entry
names its *source* (where the exporter reads it) and the key there:

| source | what | key |
|---|---|---|
| ``srp`` | the node segment's stats block, written by totem (``engine.totem.stats.COUNTER_NAMES``) | counter name |
| ``runtime`` | the same block from ``layout.RUNTIME_BASE`` (``layout.RUNTIME_COUNTERS``) | counter name |
| ``ring`` | headers of the node segment's rings (``tx``, ``rx``, ``submit.<svc>``, ``deliver.<svc>``) | field |
| ``table`` | the node stats table (ipc/stats.py), one row per process | column name |
| ``status`` | totem's ``totem.status.json`` and the config | field |
| ``quorum`` | the quorum service (its client; cmap ``runtime.votequorum.*`` before it exists) | field |
| ``process`` | psutil samples of the node's processes (children of the supervisor) | field |
| ``link`` | the transport's link table (``/pcs-<cluster>-<nodeid>-links``) | column |
| ``sam`` | SAM supervisors' keys in cmap (``resources.process.<pid>.*``) | field |
| ``exporter`` | the exporter itself | field |

Every metric carries ``node`` (the node id); the others have bounded label sets: ``process`` (the node
plan's names), ``ring`` (2 + 2 per service), ``service`` (the service table), ``peer`` (the nodelist),
``reason`` (a fixed list), ``state`` (4 Totem states), ``member`` (the nodelist's ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pycorosync.ipc import stats as table_stats

Kind = Literal["counter", "gauge", "histogram"]

PREFIX = "pycorosync_"


@dataclass(frozen=True)
class ExportedMetric:
    """One Prometheus metric family: its name (counters end in ``_total``), kind, help, source and key."""

    name: str
    kind: Kind
    help: str
    source: str
    key: str
    cmap: str = ""
    labels: tuple[str, ...] = ("node",)
    scale: float = 1.0  # multiplies the source value (ms -> s)

    @property
    def family(self) -> str:
        """The name without ``_total`` (prometheus_client adds it to counters)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _m(name: str, kind: Kind, help: str, source: str, key: str, cmap: str = "",
       labels: tuple[str, ...] = ("node",), scale: float = 1.0) -> ExportedMetric:
    return ExportedMetric(PREFIX + name, kind, help, source, key, cmap, labels, scale)


# Totem's counters as corosync names them (stats.srp.*); the block also holds pycorosync's own
_SRP_COUNTERS = (
    "orf_token_tx", "orf_token_rx", "memb_merge_detect_tx", "memb_merge_detect_rx", "memb_join_tx", "memb_join_rx",
    "mcast_tx", "mcast_rx", "memb_commit_token_tx", "memb_commit_token_rx", "token_hold_cancel_tx",
    "token_hold_cancel_rx", "mcast_retx", "operational_entered", "operational_token_lost", "gather_entered",
    "gather_token_lost", "commit_entered", "commit_token_lost", "recovery_entered", "recovery_token_lost",
    "consensus_timeouts", "rx_msg_dropped",
)
_SRP_OWN = (
    ("rx_malformed", "Totem frames dropped as malformed"),
    ("rx_stale_incarnation", "Totem frames from an earlier incarnation of their sender, dropped"),
    ("rx_foreign", "Totem frames of another ring, dropped"),
    ("rx_duplicate", "Totem messages received twice"),
    ("fragments_dropped", "Message fragments dropped (incomplete at a configuration change)"),
    ("failed_to_recv", "Messages given up after FAIL_TO_RECV_CONST token rotations"),
    ("token_retx", "Tokens retransmitted"),
    ("messages_delivered", "Messages delivered to services, all services"),
)

#: transport drop reasons (stats table columns transport.rx_drop_<reason>), one label value each
DROP_REASONS = ("too_short", "bad_header", "wrong_cluster", "unknown_node", "replay", "bad_auth", "oversized", "own")
TX_DROP_REASONS = ("oversized", "unknown_dest")

TOTEM_STATES = ("operational", "gather", "commit", "recovery")

#: token rotation histogram bounds (seconds), the stats table's buckets
TOKEN_ROTATION_BUCKETS_S = tuple(ms / 1000 for ms in table_stats.TOKEN_ROTATION_BUCKETS_MS)

_P = ("node", "process")


def _build() -> list[ExportedMetric]:
    out = [
        # ---- cluster and membership
        _m("cluster_members", "gauge", "Members of the ring this node is in", "runtime", "members",
           "runtime.members.<id>.status (count of joined)"),
        _m("cluster_nodes_configured", "gauge", "Nodes in the nodelist of the config", "status", "configured_nodes",
           "nodelist.node.<pos>.nodeid (count)"),
        _m("ring_member", "gauge", "1 for each node id in the ring this node is in", "status", "members",
           "runtime.members.<id>.status (joined)", ("node", "member")),
        _m("ring_seq", "gauge", "Sequence number of the current ring id", "runtime", "ring_seq",
           "runtime.totem.pg.mrp.srp.ring_id (seq part)"),
        _m("ring_representative", "gauge", "Node id of the current ring's representative", "status", "ring_rep"),
        _m("totem_state", "gauge", "1 for the Totem state this node is in", "status", "state",
           labels=("node", "state")),
        _m("sync_completed", "gauge", "1 when service synchronization completed for the current ring", "status",
           "sync_completed"),
        _m("totem_token_timeout_seconds", "gauge", "Token timeout in force (totem.token)", "status", "token_s",
           "runtime.config.totem.token"),
        # ---- quorum
        _m("quorate", "gauge", "1 when this node's partition is quorate (from the quorum service)", "quorum",
           "quorate", "(quorum_getquorate)"),
        _m("quorum_votes", "gauge", "Votes of the current members (votequorum total_votes)", "quorum", "total_votes"),
        _m("quorum_expected_votes", "gauge", "Expected votes (votequorum expected_votes)", "quorum", "expected_votes"),
        _m("quorum_needed_votes", "gauge", "Votes needed for quorum (votequorum quorum)", "quorum", "quorum"),
        _m("quorum_node_votes", "gauge", "Votes of this node", "quorum", "node_votes"),
        # ---- totem (node segment block)
        *(
            _m(f"srp_{name}_total", "counter", f"Totem {name.replace('_', ' ')}", "srp", name, f"stats.srp.{name}")
            for name in _SRP_COUNTERS
        ),
        *(_m(f"srp_{name}_total", "counter", text, "srp", name, f"stats.srp.pcs_{name}") for name, text in _SRP_OWN),
        _m("srp_continuous_gather", "gauge", "Consecutive GATHER entries", "srp", "continuous_gather",
           "stats.srp.continuous_gather"),
        _m("srp_mtt_rx_token_seconds", "gauge", "Mean time between received tokens", "srp", "mtt_rx_token",
           "stats.srp.mtt_rx_token", scale=1e-3),
        _m("srp_avg_token_workload_seconds", "gauge", "Mean time the token is held", "srp", "avg_token_workload",
           "stats.srp.avg_token_workload", scale=1e-3),
        _m("srp_avg_backlog_messages", "gauge", "Mean send backlog", "srp", "avg_backlog_calc",
           "stats.srp.avg_backlog_calc"),
        _m("token_rotation_seconds", "histogram", "Time for the token to come back to this node", "srp",
           "token_rotation", "stats.srp.mtt_rx_token (mean only)"),
        # ---- totem runtime (node segment block)
        _m("totem_frames_received_total", "counter", "Frames totem read from the transport", "runtime", "frames_rx"),
        _m("totem_frames_received_compiled_total", "counter",
           "Of the frames received, those the compiled receive path delivered", "runtime", "frames_rx_compiled"),
        _m("totem_frames_sent_total", "counter", "Frames totem handed to the transport", "runtime", "frames_tx"),
        _m("totem_tx_backlog_frames", "gauge", "Frames waiting for room in the tx ring", "runtime", "tx_backlog"),
        _m("totem_deliver_backlog_messages", "gauge", "Deliveries waiting for room in a service's ring", "runtime",
           "deliver_backlog"),
        _m("totem_submits_total", "counter", "Messages services submitted to totem", "runtime", "submits"),
        _m("flow_control_waits_total", "counter", "Times totem left a submit unread because its queue was full",
           "runtime", "submit_queue_full", "stats.pg.msg_queue_avail (0 = full)"),
        _m("totem_bad_records_total", "counter", "Malformed records between the node's processes, dropped",
           "runtime", "bad_records"),
        _m("sync_completed_total", "counter", "Service synchronizations completed", "runtime", "sync_completed"),
        _m("sync_aborted_total", "counter", "Service synchronizations aborted by a new configuration", "runtime",
           "sync_aborted"),
        # ---- rings of the node segment: per service sent/delivered, fill, back-pressure
        _m("service_messages_sent_total", "counter", "Messages a service multicast (its submit ring's records)",
           "ring", "submit_pushed", "runtime.services.<svc>.<fn>.tx (summed)", ("node", "service")),
        _m("service_messages_delivered_total", "counter", "Records totem delivered to a service", "ring",
           "deliver_pushed", "runtime.services.<svc>.<fn>.rx (summed)", ("node", "service")),
        _m("ring_used_bytes", "gauge", "Bytes waiting in a ring of the node segment", "ring", "used",
           labels=("node", "ring")),
        _m("ring_capacity_bytes", "gauge", "Capacity of a ring of the node segment", "ring", "capacity",
           labels=("node", "ring")),
        _m("ring_full_total", "counter", "Pushes refused by a full ring (back-pressure, never loss)", "ring", "full",
           labels=("node", "ring")),
        # ---- stats table: per service bytes, IPC, transport, SAM
        _m("service_sent_bytes_total", "counter", "Body bytes a service multicast", "table", "service.mcast_tx_bytes",
           labels=_P),
        _m("service_delivered_bytes_total", "counter", "Body bytes delivered to a service", "table",
           "service.delivered_bytes", labels=_P),
        _m("service_flow_control_waits_total", "counter", "Client requests answered CS_ERR_TRY_AGAIN (totem full)",
           "table", "service.flow_control_waits", labels=_P),
        _m("ipc_connections", "gauge", "Client connections open", "table", "ipcs.active", "stats.ipcs.global.active",
           _P),
        _m("ipc_connections_closed_total", "counter", "Client connections closed", "table", "ipcs.closed",
           "stats.ipcs.global.closed", _P),
        *(
            _m(f"ipc_{name}_total", "counter", text, "table", f"ipcs.{name}", f"stats.ipcs.service<id>.<pid>.<c>.{name}",
               _P)
            for name, text in (
                ("requests", "Requests received from clients"),
                ("responses", "Responses sent to clients"),
                ("dispatched", "Events sent to clients"),
                ("invalid_request", "Malformed client requests dropped"),
                ("overload", "Client requests refused with CS_ERR_TRY_AGAIN"),
                ("flow_control_count", "Times a client was flow-controlled"),
            )
        ),
        _m("ipc_ring_full_total", "counter", "Client ring pushes refused (ring full)", "table", "ipc.ring_full",
           labels=_P),
        _m("ipc_ring_used_bytes", "gauge", "Bytes waiting in client rings", "table", "ipc.ring_used_bytes", labels=_P),
        _m("ipc_ring_capacity_bytes", "gauge", "Capacity of client rings", "table", "ipc.ring_capacity_bytes",
           labels=_P),
        *(
            _m(f"transport_{name}_total", "counter", text, "table", f"transport.{name}",
               f"stats.knet.node<id>.link0.{knet}" if knet else "", _P)
            for name, text, knet in (
                ("tx_packets", "Datagrams sent", "tx_total_packets"),
                ("tx_bytes", "Bytes sent", "tx_total_bytes"),
                ("rx_packets", "Datagrams received", "rx_total_packets"),
                ("rx_bytes", "Bytes received", "rx_total_bytes"),
                ("socket_errors", "Socket errors on send or receive", "tx_data_errors"),
                ("rx_delivered", "Frames handed to totem", ""),
                ("rx_ring_full", "Frames refused by a full rx ring (Totem retransmits them)", ""),
                ("tx_large_frames", "Frames longer than netmtu (commit tokens of large clusters) sent whole, "
                                    "fragmented by IP", ""),
            )
        ),
        _m("transport_rx_dropped_packets_total", "counter", "Datagrams dropped on receive, by reason", "table",
           "transport.rx_drop_<reason>", labels=("node", "process", "reason")),
        _m("transport_tx_dropped_frames_total", "counter", "Frames dropped before sending, by reason", "table",
           "transport.tx_drop_<reason>", labels=("node", "process", "reason")),
        _m("sam_instances", "gauge", "SAM supervisors on this node, by state", "sam", "instances",
           "resources.process.<pid>.state (count)", ("node", "state")),
        _m("sam_restarts_total", "counter", "Restarts by the SAM supervisors on this node (their sum)", "sam",
           "restarts", "resources.process.<pid>.restarts (sum)"),
        # ---- processes (psutil, and the supervisor's restart count)
        _m("process_up", "gauge", "1 while the node process runs", "process", "up", labels=_P),
        _m("process_cpu_seconds_total", "counter", "CPU time used, user + system", "process", "cpu_seconds",
           labels=_P),
        _m("process_resident_memory_bytes", "gauge", "Resident set size", "process", "rss_bytes", labels=_P),
        _m("process_restarts_total", "counter", "Restarts of this node process by the supervisor", "process",
           "restarts", labels=_P),
        _m("process_heartbeat_age_seconds", "gauge", "Time since the process's last housekeeping tick", "table",
           "process.heartbeat_ns", labels=_P),
        # ---- links (transport link table)
        _m("link_connected", "gauge", "1 while the link to a peer is up", "link", "connected",
           "stats.knet.node<id>.link<n>.connected", ("node", "peer")),
        _m("link_last_heard_seconds", "gauge", "Time since the last datagram from a peer", "link", "last_heard",
           labels=("node", "peer")),
        _m("link_rx_bytes_total", "counter", "Bytes received from a peer", "link", "rx_bytes",
           "stats.knet.node<id>.link<n>.rx_total_bytes", ("node", "peer")),
        _m("link_tx_bytes_total", "counter", "Bytes sent to a peer", "link", "tx_bytes",
           "stats.knet.node<id>.link<n>.tx_total_bytes", ("node", "peer")),
        # ---- the exporter
        _m("exporter_source_up", "gauge", "1 when the exporter could read this source", "exporter", "sources",
           labels=("node", "source")),
        _m("exporter_collect_seconds", "gauge", "Time the previous collection took", "exporter", "collect_seconds"),
    ]
    return out


EXPORTED: tuple[ExportedMetric, ...] = tuple(_build())
BY_NAME = {m.name: m for m in EXPORTED}


def _check() -> None:
    seen: set[str] = set()
    for m in EXPORTED:
        assert m.name not in seen, f"metric {m.name} listed twice"
        assert (m.kind == "counter") == m.name.endswith("_total"), f"{m.name}: only counters end in _total"
        seen.add(m.name)


_check()


def sample_names(metric: ExportedMetric) -> Iterator[str]:
    """The series names a family produces (a histogram has _bucket, _sum, _count)."""
    if metric.kind == "histogram":
        yield from (f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count")
    else:
        yield metric.name


def all_sample_names() -> set[str]:
    """Every series name the exporter can produce (for dashboards and alert rules)."""
    return {name for m in EXPORTED for name in sample_names(m)}


def markdown_table() -> str:
    """The README table: metric, type, labels, source, key, cmap name."""
    lines = [
        "| metric | type | labels | source | key | cmap |",
        "|---|---|---|---|---|---|",
    ]
    for m in EXPORTED:
        labels = ", ".join(m.labels)
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {m.source} | `{m.key}` | {m.cmap and f'`{m.cmap}`'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
