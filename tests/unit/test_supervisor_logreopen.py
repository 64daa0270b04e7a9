"""Log reopen (logrotate, ``cfgtool -L``): a SIGHUP to the supervisor reopens its log file and, forwarded,
every ready child's; a child keeps running and writes to the fresh file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycorosync.engine.supervisor.logsetup import LOGGING_ENV
from pycorosync.engine.supervisor.node import NodePlan, NodeSupervisor
from pycorosync.engine.supervisor.process import ChildSpec

# a node child as far as logging goes: configure_from_env, ready, then a line every 20 ms
CHILD = """
import logging, sys, time
from pycorosync.engine.supervisor import child, logsetup
logsetup.configure_from_env()
child.notify_ready()
n = 0
while True:
    n += 1
    logging.getLogger("TOTEM").info("tick %d", n)
    time.sleep(0.02)
"""


def _log_env(path: Path) -> dict[str, str]:
    keys = {"logging.to_logfile": "yes", "logging.logfile": str(path), "logging.to_stderr": "no",
            "logging.to_syslog": "no"}
    return {LOGGING_ENV: json.dumps(keys)}


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.02)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(10)


def test_sighup_makes_a_node_child_reopen_its_log_file_and_keep_running(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "node.log"
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env={**os.environ, **_log_env(log)},
                            stdin=subprocess.DEVNULL)
    procs.append(proc)
    _wait(lambda: "tick" in _text(log), 30, "the child's first lines")
    rotated = tmp_path / "node.log.1"
    log.rename(rotated)  # what logrotate does before it asks for a reopen
    proc.send_signal(signal.SIGHUP)
    _wait(lambda: "tick" in _text(log), 10, "lines in the reopened log file")
    assert f"log file {log} reopened" in _text(log)
    assert proc.poll() is None, "SIGHUP must not end a node child"
    size = rotated.stat().st_size
    time.sleep(0.1)  # lines keep coming: none of them go to the rotated file any more
    assert rotated.stat().st_size == size


def test_supervisor_forwards_sighup_to_its_ready_children_which_reopen_their_logs(tmp_path: Path) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    specs = tuple(
        ChildSpec(name, (sys.executable, "-c", CHILD), env=_log_env(path), reload_signal=signal.SIGHUP,
                  ready_timeout_s=30.0, stop_timeout_s=2.0)
        for name, path in logs.items()
    )
    reopened: list[bool] = []
    sup = NodeSupervisor(NodePlan(specs, sample_interval_s=0), forward_stderr_fd=None,
                         on_reload=lambda: reopened.append(True))
    try:
        sup.install_signal_handlers()
        sup.start()
        sup.run(until=lambda: all("tick" in _text(p) for p in logs.values()), timeout_s=10)
        for path in logs.values():
            path.rename(path.with_suffix(".old"))
        os.kill(os.getpid(), signal.SIGHUP)
        sup.run(until=lambda: all("reopened" in _text(p) for p in logs.values()), timeout_s=10)
        assert reopened == [True], "the supervisor reopens its own log file too"
        for path in logs.values():
            assert "reopened" in _text(path), f"{path.name} was not reopened"
        assert set(sup.pids()) == {"a", "b"} and sup.restarts("a") == sup.restarts("b") == 0
    finally:
        sup.stop()
        sup.close()
