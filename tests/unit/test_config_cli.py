"""``pycorosync config``: end to end through a subprocess, as an administrator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "data" / "conf"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycorosync", "config", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_config_prints_every_key_sorted_in_cmapctl_format() -> None:
    result = _run("-c", str(CONF / "reference_udpu.conf"), "--nodeid", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == (CONF / "reference_udpu.expected").read_text().splitlines()
    assert lines == sorted(lines)


def test_config_without_a_matching_local_node_leaves_local_keys_out() -> None:
    result = _run("-c", str(CONF / "demo3_udpu.conf"))
    assert result.returncode == 0, result.stderr
    assert "runtime.config.totem.token (u32) = 3650" in result.stdout.splitlines()
    assert "nodelist.local_node_pos" not in result.stdout


def test_config_refuses_a_broken_file_with_status_1_and_the_error_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "corosync.conf"
    path.write_text("totem {\n    version: 2\n    token: 3s\n}\n")
    result = _run("-c", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"{path}:3: totem.token must be an integer in ms, got '3s'"


def test_config_with_an_unknown_nodeid_fails() -> None:
    result = _run("-c", str(CONF / "demo3_udpu.conf"), "--nodeid", "9")
    assert result.returncode == 1
    assert "nodeid 9 is not in the nodelist" in result.stderr


def test_config_passes_non_utf8_bytes_of_a_value_through_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "corosync.conf"
    text = (CONF / "demo3_udpu.conf").read_bytes().replace(b"cluster_name: demo3", b"cluster_name: d\xe9mo")
    path.write_bytes(text)
    result = subprocess.run(
        [sys.executable, "-m", "pycorosync", "config", "-c", str(path)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert b"totem.cluster_name (str) = d\xe9mo\n" in result.stdout
