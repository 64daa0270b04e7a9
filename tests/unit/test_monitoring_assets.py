"""The Grafana dashboard and the Prometheus alert rules: valid, and naming only metrics the exporter has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pycorosync.monitoring import metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "monitoring" / "grafana" / "pycorosync.json"
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"
METRIC_NAME = re.compile(r"\bpycorosync_[a-z0-9_]+")
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (make sysdeps installs Debian's prometheus)")


def dashboard_panels() -> list[dict[str, object]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_is_importable_json_with_a_uid_a_node_variable_and_the_five_sections() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] == "pycorosync"
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "node"}
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Cluster overview", "Per node: totem", "Transport", "IPC", "Processes", "SAM"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_dashboard_panel_queries_only_metrics_the_exporter_produces() -> None:
    known = metrics.all_sample_names()
    for panel in dashboard_panels():
        targets = panel["targets"]
        assert isinstance(targets, list) and targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            names = set(METRIC_NAME.findall(target["expr"]))
            # Prometheus's own ``up`` is the only other series a panel may use
            assert names or "up{" in target["expr"], f"panel {panel['title']!r}: {target['expr']!r} names no metric"
            assert names <= known, f"panel {panel['title']!r} queries unknown metrics {sorted(names - known)}"


def test_alert_rules_cover_the_required_cases_and_name_only_exported_metrics() -> None:
    text = ALERTS.read_text()
    alerts = set(re.findall(r"^\s*- alert: (\w+)", text, re.M))
    assert {"PycorosyncQuorumLost", "PycorosyncNodeDown", "PycorosyncRetransmitStorm", "PycorosyncTokenRotationSlow",
            "PycorosyncSamRestartStorm"} <= alerts
    names = set(METRIC_NAME.findall(text))
    assert names and names <= metrics.all_sample_names(), sorted(names - metrics.all_sample_names())


@needs_promtool
def test_promtool_check_rules_accepts_the_alert_rules() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


# promtool's rule unit tests: synthetic series in, the alerts expected at given times out
RULE_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'pycorosync_quorate{{node="1", job="pycorosync", instance="a"}}'
        values: '1 1 0 0 0'
      - series: 'pycorosync_cluster_members{{node="1", job="pycorosync", instance="a"}}'
        values: '3 3 2 2 2 2'
      - series: 'pycorosync_cluster_nodes_configured{{node="1", job="pycorosync", instance="a"}}'
        values: '3 3 3 3 3 3'
      - series: 'up{{job="pycorosync", instance="b"}}'
        values: '1 0 0 0 0 0'
      - series: 'pycorosync_sam_restarts_total{{node="1", job="pycorosync", instance="a"}}'
        values: '0 2 4 6 8 10'
    alert_rule_test:
      - eval_time: 15s
        alertname: PycorosyncQuorumLost
        exp_alerts: []
      - eval_time: 45s
        alertname: PycorosyncQuorumLost
        exp_alerts:
          - exp_labels: {{severity: critical, node: "1", job: pycorosync, instance: a}}
            exp_annotations:
              summary: "Node 1 is not quorate"
              description: "Node 1 reports 0 for quorate; its partition holds fewer votes than needed."
      - eval_time: 30s
        alertname: PycorosyncNodeDown
        exp_alerts: []
      - eval_time: 75s
        alertname: PycorosyncNodeDown
        exp_alerts:
          - exp_labels: {{severity: warning, node: "1", job: pycorosync, instance: a}}
            exp_annotations:
              summary: "Node 1 sees 2 ring members, fewer than configured"
              description: "A configured node is out of the ring (down, partitioned or not started); pycorosync_ring_member shows which ids are in."
      - eval_time: 60s
        alertname: PycorosyncNodeUnreachable
        exp_alerts:
          - exp_labels: {{severity: warning, job: pycorosync, instance: b}}
            exp_annotations:
              summary: "Exporter b does not answer"
              description: "Prometheus cannot scrape b; the node or its exporter is down."
      - eval_time: 75s
        alertname: PycorosyncSamRestartStorm
        exp_alerts:
          - exp_labels: {{severity: warning, node: "1", job: pycorosync, instance: a}}
            exp_annotations:
              summary: "SAM on node 1 restarted 10 instances in 5 minutes"
              description: "Supervised processes keep failing; look at their logs and at resources.process.* in cmap."
  - interval: 15s
    input_series:
      - series: 'pycorosync_srp_mcast_retx_total{{node="2", job="pycorosync", instance="a"}}'
        values: '0+1200x12'
      - series: 'pycorosync_srp_mcast_tx_total{{node="2", job="pycorosync", instance="a"}}'
        values: '0+3000x12'
      - series: 'pycorosync_token_rotation_seconds_bucket{{node="2", le="0.1", job="pycorosync", instance="a"}}'
        values: '0+10x12'
      - series: 'pycorosync_token_rotation_seconds_bucket{{node="2", le="1", job="pycorosync", instance="a"}}'
        values: '0+100x12'
      - series: 'pycorosync_token_rotation_seconds_bucket{{node="2", le="+Inf", job="pycorosync", instance="a"}}'
        values: '0+100x12'
      - series: 'pycorosync_totem_token_timeout_seconds{{node="2", job="pycorosync", instance="a"}}'
        values: '1x12'
    alert_rule_test:
      - eval_time: 3m
        alertname: PycorosyncRetransmitStorm
        exp_alerts:
          - exp_labels: {{severity: warning, node: "2", job: pycorosync, instance: a}}
            exp_annotations:
              summary: "Node 2 retransmits 80 messages/s"
              description: "Frames are being lost on the ring (network loss, full receive buffers or an overloaded node)."
      - eval_time: 3m
        alertname: PycorosyncTokenRotationSlow
        exp_alerts:
          - exp_labels: {{severity: warning, node: "2", job: pycorosync, instance: a}}
            exp_annotations:
              summary: "Token rotation on node 2 is 900ms (p90)"
              description: "The token takes more than half of totem.token to come back; the ring is close to a token loss."
"""


@needs_promtool
def test_alerts_fire_on_quorum_loss_node_down_retransmit_storm_slow_token_and_sam_restarts(tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(RULE_TESTS.format(alerts=json.dumps(str(ALERTS))))
    done = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_no_node_process_imports_the_monitoring_package() -> None:
    """The exporter reads the node from outside: nothing on the data path may depend on it."""
    pattern = re.compile(r"^\s*(from|import)\s+pycorosync\.monitoring\b", re.M)
    offenders = [str(path.relative_to(REPO)) for folder in ("engine", "ipc", "transports", "services")
                 for path in (REPO / folder).rglob("*.py") if pattern.search(path.read_text())]
    assert offenders == []
