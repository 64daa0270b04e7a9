"""The exporter's collector, sources and HTTP endpoint against stats tables and node segments filled by hand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pycorosync.ipc import stats as table_stats
from pycorosync.ipc.stats import StatsTable
from pycorosync.monitoring import metrics
from pycorosync.monitoring.collector import NodeCollector, exposition
from pycorosync.monitoring.reading import NodeReading, ProcessSample, QuorumState
from pycorosync.monitoring.rotation import TokenRotationEstimator
from pycorosync.monitoring.sam_source import sam_state
from tests.conftest import unique_prefix

REPO = Path(__file__).resolve().parents[2]


def scrape(reading: NodeReading) -> str:
    """What the exporter serves for this reading."""
    return exposition(reading)


def scrape_with_prometheus_client(reading: NodeReading) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(lambda: reading))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def table() -> Iterator[StatsTable]:
    t = StatsTable.create_anonymous(n_slots=8)
    try:
        yield t
    finally:
        t.close()


def filled_reading(table: StatsTable) -> NodeReading:
    pid = os.getpid()
    for slot, name in enumerate(("transport", "totem", "cpg")):
        table.set_slot(slot, name, pid)
    tr, cpg = table.row(0), table.row(2)
    tr.set("transport.tx_packets", 500)
    tr.set("transport.rx_bytes", 123456)
    tr.set("transport.rx_drop_bad_auth", 7)
    tr.set("transport.rx_drop_replay", 2)
    cpg.set("ipcs.active", 3)
    cpg.set("service.mcast_tx_bytes", 4096)
    return NodeReading(
        nodeid=2, table=table.snapshot(),
        srp={"mcast_tx": 40, "mcast_retx": 3, "mtt_rx_token": 250}, runtime={"members": 3, "ring_seq": 12},
        status={"state": "OPERATIONAL", "configured_nodes": 3, "ring_rep": 1, "sync_completed": 1, "token_s": 1.0},
        quorum=QuorumState(True, 3, 3, 2, 1),
        processes=(ProcessSample("cpg", pid, 1.5, 10 << 20, 2),),
        sam=sam_state([
            ("resources.process.100.state", 11, "running"), ("resources.process.100.restarts", 6, 3),
            ("resources.process.200.state", 11, "failed"), ("resources.process.200.restarts", 6, 2),
            ("resources.process.300.state", 11, "running"), ("resources.process.300.recovery", 11, "restart"),
        ]),
        sources={"quorum": True},
    )


def test_each_process_row_of_the_stats_table_is_a_series_labelled_with_node_and_process(table: StatsTable) -> None:
    text = scrape(filled_reading(table))
    assert value(text, "pycorosync_transport_tx_packets_total", node="2", process="transport") == 500
    assert value(text, "pycorosync_transport_rx_bytes_total", node="2", process="transport") == 123456
    assert value(text, "pycorosync_ipc_connections", node="2", process="cpg") == 3
    assert value(text, "pycorosync_service_sent_bytes_total", node="2", process="cpg") == 4096



def test_sam_instances_by_state_and_their_restarts_come_from_cmap_resources_process(table: StatsTable) -> None:
    text = scrape(filled_reading(table))
    assert value(text, "pycorosync_sam_instances", node="2", state="running") == 2
    assert value(text, "pycorosync_sam_instances", node="2", state="failed") == 1
    assert value(text, "pycorosync_sam_instances", node="2", state="waiting for quorum") == 0
    assert value(text, "pycorosync_sam_restarts_total", node="2") == 5


def test_transport_drops_are_one_counter_with_a_reason_label(table: StatsTable) -> None:
    text = scrape(filled_reading(table))
    got = {labels: v for (name, labels), v in samples(text).items()
           if name == "pycorosync_transport_rx_dropped_packets_total"}
    reasons = {dict(labels)["reason"]: v for labels, v in got.items()}
    assert set(reasons) == set(metrics.DROP_REASONS)
    assert reasons["bad_auth"] == 7 and reasons["replay"] == 2 and reasons["own"] == 0


def test_zero_rows_of_processes_that_never_write_a_group_are_left_out(table: StatsTable) -> None:
    text = scrape(filled_reading(table))
    series = samples(text)
    # the transport's row has no IPC server; the cpg row has no transport counters
    assert ("pycorosync_ipc_connections", (("node", "2"), ("process", "transport"))) not in series
    assert ("pycorosync_transport_tx_packets_total", (("node", "2"), ("process", "cpg"))) not in series
    # the cpg row is exported even at zero: it is a writer of ipcs.* (a rate needs the series from the start)
    assert value(text, "pycorosync_ipc_requests_total", node="2", process="cpg") == 0


def test_membership_quorum_and_totem_counters_use_base_units(table: StatsTable) -> None:
    text = scrape(filled_reading(table))
    assert value(text, "pycorosync_cluster_members", node="2") == 3
    assert value(text, "pycorosync_cluster_nodes_configured", node="2") == 3
    assert value(text, "pycorosync_ring_seq", node="2") == 12
    assert value(text, "pycorosync_quorate", node="2") == 1
    assert value(text, "pycorosync_quorum_expected_votes", node="2") == 3
    assert value(text, "pycorosync_srp_mcast_retx_total", node="2") == 3
    assert value(text, "pycorosync_srp_mtt_rx_token_seconds", node="2") == pytest.approx(0.25)
    assert value(text, "pycorosync_totem_state", node="2", state="operational") == 1
    assert value(text, "pycorosync_totem_state", node="2", state="gather") == 0
    assert value(text, "pycorosync_process_restarts_total", node="2", process="cpg") == 2
    assert value(text, "pycorosync_process_resident_memory_bytes", node="2", process="cpg") == 10 << 20


def test_a_source_that_could_not_be_read_leaves_its_metrics_out_instead_of_reporting_zero() -> None:
    text = scrape(NodeReading(nodeid=1, runtime={"members": 2}, sources={"quorum": False, "stats_table": False}))
    names = {name for name, _ in samples(text)}
    assert "pycorosync_quorate" not in names
    assert not any(n.startswith("pycorosync_transport_") for n in names)
    assert value(text, "pycorosync_exporter_source_up", node="1", source="quorum") == 0
    assert value(text, "pycorosync_cluster_members", node="1") == 2


def test_token_rotation_estimate_spreads_tokens_over_the_time_since_the_last_one() -> None:
    est = TokenRotationEstimator()
    est.observe(0, 100)  # baseline
    est.observe(100_000_000, 150)  # 50 tokens in 100 ms: 2 ms each
    est.observe(200_000_000, 150)  # none
    est.observe(1_300_000_000, 151)  # one token 1.2 s after the previous ones
    h = est.histogram()
    assert h is not None and h.count == 51 and h.sum_s == pytest.approx(1.3)
    cumulative = dict(h.buckets)
    assert cumulative[0.002] == 50 and cumulative[1.0] == 50 and cumulative[2.0] == 51
    est.observe(1_400_000_000, 3)  # totem restarted: counters start again, nothing is counted
    assert est.histogram() == h


def test_served_text_has_the_same_samples_and_types_as_prometheus_clients_writer(table: StatsTable) -> None:
    est = TokenRotationEstimator()
    est.observe(0, 0)
    est.observe(10_000_000, 2)
    reading = filled_reading(table)
    reading = NodeReading(**{**reading.__dict__, "token_rotation": est.histogram()})
    ours, theirs = scrape(reading), scrape_with_prometheus_client(reading)
    assert samples(ours) == samples(theirs)
    types = {f.name: f.type for f in text_string_to_metric_families(ours)}
    assert types == {f.name: f.type for f in text_string_to_metric_families(theirs)}
    assert len(samples(ours)) > 50


def test_token_rotation_is_a_histogram_in_seconds(table: StatsTable) -> None:
    est = TokenRotationEstimator()
    est.observe(0, 0)
    est.observe(10_000_000, 2)
    text = scrape(NodeReading(nodeid=1, token_rotation=est.histogram()))
    assert value(text, "pycorosync_token_rotation_seconds_bucket", node="1", le="0.005") == 2
    assert value(text, "pycorosync_token_rotation_seconds_bucket", node="1", le="+Inf") == 2
    assert value(text, "pycorosync_token_rotation_seconds_count", node="1") == 2


def test_every_table_metric_names_a_column_of_the_stats_registry() -> None:
    columns = {m.name for m in table_stats.METRICS}
    for m in metrics.EXPORTED:
        if m.source != "table":
            continue
        if m.key.endswith("<reason>"):
            base = m.key.removesuffix("<reason>")
            reasons = metrics.DROP_REASONS if "rx_drop" in base else metrics.TX_DROP_REASONS
            assert {base + r for r in reasons} <= columns, m.name
        else:
            assert m.key in columns, m.name


def test_the_readme_documents_every_exported_metric() -> None:
    readme = (REPO / "monitoring" / "README.md").read_text()
    assert metrics.markdown_table() in readme, "regenerate: python -m pycorosync.monitoring.metrics"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make sysdeps installs it)")
def test_promtool_check_metrics_accepts_a_scrape(table: StatsTable) -> None:
    text = scrape(filled_reading(table))
    done = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


class _FixedReader:
    def __init__(self, reading: NodeReading) -> None:
        self.reading = reading
        self.closed = False

    def read(self) -> NodeReading:
        return self.reading

    def refresh_slow(self) -> None:
        pass

    def sample_token(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_exporter_serves_the_collector_on_http() -> None:
    from pycorosync.monitoring.exporter import Exporter

    reader = _FixedReader(NodeReading(nodeid=4, runtime={"members": 5}))
    exporter = Exporter("127.0.0.1", 0, reader)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        exporter.close()
    assert value(text, "pycorosync_cluster_members", node="4") == 5
    assert reader.closed


def test_parse_address_takes_ipv4_and_ipv6_and_names_a_bad_value() -> None:
    from pycorosync.monitoring.exporter import parse_address

    assert parse_address("127.0.0.1:9405") == ("127.0.0.1", 9405)
    assert parse_address("[::1]:9405") == ("::1", 9405)
    with pytest.raises(ValueError, match="ADDRESS:PORT"):
        parse_address("9405")


def test_node_reader_reads_totem_block_rings_stats_table_and_status_file(tmp_path: Path) -> None:
    from pycorosync.engine.runtime.layout import RUNTIME_BASE, RUNTIME_COUNTERS
    from pycorosync.engine.runtime.node import node_layout
    from pycorosync.engine.totem.stats import COUNTER_NAMES
    from pycorosync.monitoring.sources import NodeReader, NodeSpec

    prefix = unique_prefix("mon")
    layout = node_layout(["cpg"], 1 << 16)
    seg = layout.create(prefix + "rings")
    table = StatsTable.create(prefix + "stats", n_slots=4)
    reader = None
    try:
        rings = layout.attach(prefix + "rings")
        rings.stats[COUNTER_NAMES.index("orf_token_rx")] = 9
        rings.stats[RUNTIME_BASE + RUNTIME_COUNTERS.index("members")] = 3
        assert rings.submit["cpg"].push(1, b"x" * 100)
        table.set_slot(0, "transport", os.getpid())
        table.row(0).set("transport.tx_packets", 11)
        (tmp_path / "totem.status.json").write_text(json.dumps(
            {"state": "OPERATIONAL", "ring_id": [1, 8], "members": [1, 2, 3], "sync_completed": [1, 8]}))
        spec = NodeSpec(nodeid=1, cluster="c", run_dir=tmp_path, segment=prefix + "rings", stats=prefix + "stats",
                        services=("cpg",), ring_capacity=1 << 16, supervisor_pid=os.getpid(), configured_nodes=3)
        reader = NodeReader(spec)
        reader.refresh_slow()
        reading = reader.read()
        rings.close()
    finally:
        if reader is not None:
            reader.close()
        seg.close()
        seg.unlink()
        table.close()
        table.unlink()
    assert reading.srp["orf_token_rx"] == 9 and reading.runtime["members"] == 3
    submit = {r.ring: r for r in reading.rings}["submit.cpg"]
    assert submit.pushed == 1 and submit.used_bytes >= 108
    assert reading.table is not None and reading.table.value(0, "transport.tx_packets") == 11
    assert reading.status["ring_rep"] == 1 and reading.status["sync_completed"] == 1
    assert reading.status["members"] == (1, 2, 3)
    assert reading.sources["node_segment"] and reading.sources["stats_table"] and not reading.sources["quorum"]
    text = scrape(reading)
    assert value(text, "pycorosync_service_messages_sent_total", node="1", service="cpg") == 1
    assert value(text, "pycorosync_ring_member", node="1", member="3") == 1


def test_exporter_whose_port_is_taken_says_ready_and_serves_once_the_port_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket
    import threading

    from pycorosync.monitoring import exporter as exp

    monkeypatch.setattr(exp, "BIND_RETRY_S", 0.05)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    ready, stop, result = threading.Event(), threading.Event(), []
    worker = threading.Thread(target=lambda: result.append(exp._bind("127.0.0.1", port, stop, ready.set)))
    worker.start()
    try:
        assert ready.wait(10), "the exporter must not hold up the node while its port is taken"
        assert worker.is_alive() and not result
        blocker.close()
        worker.join(10)
        assert result and result[0] is not None and result[0].port == port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200 and resp.read() == b""  # no reader yet: an empty scrape
    finally:
        stop.set()
        blocker.close()
        worker.join(10)
        if result and result[0] is not None:
            result[0].close()
