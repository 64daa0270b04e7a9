"""``pycorosync demo``: a real cluster on loopback forms, carries CPG traffic in one order, detects a
killed node, takes it back, reports JSON, and leaves nothing behind (also when interrupted)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

SHM_DIR = Path("/dev/shm")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory: the demo's unix sockets live below it (108 bytes at most)."""
    path = Path(tempfile.mkdtemp(prefix="pcsdemo", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _leftover_processes(tmp_path: Path) -> list[str]:
    """Processes whose command line names a file under ``tmp_path`` (the demo's daemons do)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(tmp_path) in cmd and proc.info["pid"] != os.getpid():
            found.append(f"{proc.info['pid']}: {cmd}")
    return found


def _demo_segments(pid: int) -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(f"pcs-demo{pid}x*"))


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pycorosync", "demo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "TMPDIR": str(tmp_path)})


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def test_demo_forms_a_cluster_keeps_one_order_detects_a_killed_node_and_its_rejoin(short_tmp: Path) -> None:
    tmp_path = short_tmp
    proc = _start(tmp_path, "--nodes", "3", "--seconds", "6", "--json")
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        _reap(proc)
    assert proc.returncode == 0, err[-6000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["nodes"] == 3 and result["order_ok"] is True, err[-6000:]
    assert result["delivered"] > 0 and result["msgs_per_s"] > 0
    assert 0 < result["nodedown_detected_s"] < 30 and 0 < result["rejoin_s"] < 90
    for shown in ("ring formed", "msg/s", "chain@", "NODEDOWN node 3", "new membership [1, 2]", "NODEUP node 3",
                  "rejoined the group", "same order everywhere; nothing lost"):
        assert shown in err, f"{shown!r} not shown:\n{err[-4000:]}"
    assert not list(tmp_path.iterdir()), "the demo must remove its configs and run directories"
    assert not _leftover_processes(tmp_path)
    assert not _demo_segments(proc.pid)


def test_demo_interrupted_with_ctrl_c_stops_every_process_and_removes_everything(short_tmp: Path) -> None:
    tmp_path = short_tmp
    proc = _start(tmp_path, "--nodes", "3", "--seconds", "60")
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 180
        seen = ""
        while "msg/s" not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"the demo never showed traffic:\n{seen[-4000:]}"
            try:
                seen += lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                assert proc.poll() is None, f"the demo ended early:\n{seen[-4000:]}"
        assert _leftover_processes(tmp_path), "the demo's daemons should be running"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3 * 2 + 3, "daemons, their service processes and the cpg processes"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 130
    finally:
        _reap(proc)
    reader.join(10)
    while not lines.empty():
        seen += lines.get()
    assert "interrupted" in seen
    assert not _leftover_processes(tmp_path)
    assert not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not list(tmp_path.iterdir()), "the demo must remove its configs and run directories"
    assert not _demo_segments(proc.pid)
