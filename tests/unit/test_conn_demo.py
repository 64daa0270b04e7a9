"""``pycorosync demo --ipc`` (the IPC-layer demo; the cluster demo is tested in tests/cluster/test_demo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_exchanges_messages_survives_a_killed_client_and_reports_json(tmp_path: Path) -> None:
    env_tmp = {"TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "pycorosync", "demo", "--ipc", "--nodes", "2", "--seconds", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env_tmp},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["clients"] == 2 and result["requests"] > 0 and result["events"] > 0
    assert result["killed_and_replaced"] is not None and result["server_connections"] == 3
    assert "requests" in out.stderr and "msg/s" in out.stderr
    assert not list(tmp_path.iterdir()), "the demo must remove its run directory"


def test_demo_rejects_a_bad_client_count() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pycorosync", "demo", "--ipc", "--nodes", "0"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "--nodes" in out.stderr


def test_cluster_demo_rejects_a_bad_node_count() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pycorosync", "demo", "--nodes", "1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "--nodes" in out.stderr
