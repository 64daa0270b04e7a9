"""A real Prometheus server scraping the exporters of a real 3-node cluster on loopback.

Each node's exporter listens on its own address (``$PYCOROSYNC_PROMETHEUS`` per node; the config has
``monitoring.prometheus``). Prometheus scrapes every second and evaluates ``monitoring/prometheus/alerts.yml``
every second, with each rule's ``for:`` shortened to 2 s so that the test waits seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import Cluster, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                                reason="Prometheus server/promtool not installed (make sysdeps installs Debian's)")

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"


def free_tcp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


class Prometheus:
    """A Prometheus server in a temporary directory; ``query`` and ``alerts`` through its HTTP API."""

    def __init__(self, base: Path, targets: list[str]) -> None:
        base.mkdir(parents=True, exist_ok=True)
        rules = base / "alerts.yml"
        rules.write_text(re.sub(r"(?m)^(\s*)for: \S+$", r"\1for: 2s", ALERTS.read_text()))
        self.port = free_tcp_port("127.0.0.1")
        config = base / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  scrape_timeout: 900ms\n"
            f"rule_files: [{json.dumps(str(rules))}]\n"
            "scrape_configs:\n  - job_name: pycorosync\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        self.log_path = base / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={base / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.url = f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {self.log_path.read_text()[-2000:]}"
        try:
            return "Ready" in http_get(self.url + "/-/ready", 2)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant vector: node label (or instance) -> value."""
        out = {}
        for item in self.api("query", query=expr)["result"]:
            labels = item["metric"]
            out[labels.get("node", labels.get("instance", ""))] = float(item["value"][1])
        return out

    def firing(self) -> list[dict[str, str]]:
        return [a["labels"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


@pytest.fixture
def monitored_cluster(make_cluster: Callable[..., Cluster]) -> Iterator[tuple[Cluster, dict[int, str]]]:
    """Three nodes with votequorum, each with an exporter on 127.0.0.<id>:<free port>."""
    exporters = {i: f"127.0.0.{i}:{free_tcp_port(f'127.0.0.{i}')}" for i in (1, 2, 3)}
    cluster = make_cluster(
        3, extra_config="monitoring {\n    prometheus: 127.0.0.1:9405\n}\nquorum {\n    provider: corosync_votequorum\n}\n",
        env={i: {"PYCOROSYNC_PROMETHEUS": addr} for i, addr in exporters.items()},
    )
    yield cluster, exporters


@pytest.fixture
def prometheus(tmp_path: Path, monitored_cluster: tuple[Cluster, dict[int, str]]) -> Iterator[Prometheus]:
    _, exporters = monitored_cluster
    server = Prometheus(tmp_path / "prometheus", [exporters[i] for i in sorted(exporters)])
    try:
        wait_for(server.ready, 60, "the Prometheus server to be ready", interval=0.2)
        yield server
    finally:
        server.stop()


def scrape(address: str) -> tuple[str, dict[str, float]]:
    """One scrape of an exporter: the text, and the value of every series without labels but ``node``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = http_get(f"http://{address}/metrics")
    values = {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
              if set(s.labels) == {"node"}}
    return text, values


def test_a_live_scrape_passes_promtool_and_pycorosync_status_shows_the_same_node(
    monitored_cluster: tuple[Cluster, dict[int, str]]
) -> None:
    cluster, exporters = monitored_cluster
    last: list[str] = [""]

    def three_members() -> str | None:
        with contextlib.suppress(OSError):
            last[0], values = scrape(exporters[1])
            if values.get("pycorosync_cluster_members") == 3:
                return last[0]
        return None

    try:
        text = wait_for(three_members, 30, "node 1's exporter to report 3 members")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last scrape:\n{last[0][-3000:]}") from None
    done = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    for name in ("pycorosync_srp_orf_token_rx_total", "pycorosync_process_cpu_seconds_total",
                 "pycorosync_service_messages_delivered_total", "pycorosync_ring_used_bytes"):
        assert name in text, f"{name} missing from a live scrape"
    # the stats table is shared: the transport's row counts the ring's traffic, cmap's its clients
    from prometheus_client.parser import text_string_to_metric_families

    labelled = {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert labelled[("pycorosync_exporter_source_up", (("node", "1"), ("source", "stats_table")))] == 1
    assert labelled[("pycorosync_transport_tx_packets_total", (("node", "1"), ("process", "transport")))] > 0

    view = subprocess.run([sys.executable, "-m", "pycorosync", "--run-dir", str(cluster.nodes[1].run_dir), "status",
                           "--interval", "0.5"], capture_output=True, timeout=120)
    out = view.stdout.decode()
    assert view.returncode == 0, out + view.stderr.decode()
    assert f"pycorosync node 1 of cluster {cluster.name!r}" in out
    assert "OPERATIONAL" in out and "members 3/3" in out and "quorate   votes 3  expected 3" in out, out


def test_prometheus_sees_three_quorate_members_then_fires_node_down_when_one_is_killed(
    monitored_cluster: tuple[Cluster, dict[int, str]], prometheus: Prometheus
) -> None:
    cluster, exporters = monitored_cluster
    everyone = {"1": 1.0, "2": 1.0, "3": 1.0}
    want = {"pycorosync_cluster_members": 3, "pycorosync_quorate": 1, "pycorosync_quorum_votes": 3,
            "pycorosync_quorum_expected_votes": 3}
    seen: dict[str, dict[str, float]] = {}

    def all_nodes_report() -> bool:
        seen.update({name: prometheus.query(name) for name in want})
        return all(seen[name] == {k: v * n for k, v in everyone.items()} for name, n in want.items())

    try:
        wait_for(all_nodes_report, 90, "every node to report 3 members, quorate and 3 of 3 votes through Prometheus")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answers {seen}") from None
    assert prometheus.query("up") == {exporters[i]: 1.0 for i in (1, 2, 3)}
    assert not [a for a in prometheus.firing() if a["alertname"] in ("PycorosyncNodeDown", "PycorosyncQuorumLost")]

    cluster.nodes[3].kill()

    def node_down_firing() -> set[tuple[str, str]]:
        got = {(a["alertname"], a.get("node") or a.get("instance", "")) for a in prometheus.firing()}
        want = {("PycorosyncNodeDown", "1"), ("PycorosyncNodeDown", "2"), ("PycorosyncNodeUnreachable", exporters[3])}
        return got if want <= got else set()

    firing = wait_for(node_down_firing, 60, "NodeDown on nodes 1 and 2 and NodeUnreachable for node 3")
    assert ("PycorosyncQuorumLost", "1") not in firing, "two of three nodes keep quorum"
    assert prometheus.query("pycorosync_cluster_members") == {"1": 2.0, "2": 2.0}
    assert prometheus.query("pycorosync_quorate") == {"1": 1.0, "2": 1.0}
