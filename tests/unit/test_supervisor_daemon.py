"""The daemon around the node: signals, pid file and lock, background mode, idle cost. Real processes only."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pycorosync.engine.supervisor.pidfile import PID_FILE_NAME, AlreadyRunning, PidFile, running_pid
from tests.unit.supervisor_standin import child_argv

REPO = str(Path(__file__).resolve().parents[2])


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def wait_gone(pid: int, timeout_s: float) -> bool:
    """True once ``pid`` has exited (works for processes that are not our children)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)


def event_lines(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines()] if path.exists() else []  # type: ignore[misc]


class Nodes:
    """Launches node processes (stand-in children) and kills every process they leave, also on failure."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.daemon_pids: list[int] = []
        self.watched: set[int] = set()

    def plan(self, *children: dict[str, object], log_keys: dict[str, str] | None = None) -> Path:
        path = self.tmp / f"plan{len(self.procs)}.json"
        body: dict[str, object] = {"children": list(children), "sample_interval_s": 1.0}
        if log_keys is not None:
            body["log_keys"] = log_keys
        path.write_text(json.dumps(body))
        return path

    def launch(self, plan: Path, run_dir: Path, *, background: bool = False) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "tests.unit.supervisor_standin", "node", "--plan", str(plan), "--run-dir", str(run_dir)]
        if background:
            argv.append("--background")
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def remember_tree(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self.watched.add(pid)
            self.watched.update(p.pid for p in psutil.Process(pid).children(recursive=True))

    def cleanup(self) -> None:
        for proc in self.procs:
            self.remember_tree(proc.pid)
        for pid in self.daemon_pids:
            self.remember_tree(pid)
        for pid in self.watched:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
        for pid in self.watched:
            wait_gone(pid, 5.0)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.cleanup()


def child(name: str, ev: Path, *extra: str, **kw: object) -> dict[str, object]:
    return {"name": name, "argv": list(child_argv(name, ev, *extra)), "cwd": REPO, **kw}


def ready_count(ev: Path) -> int:
    return sum(1 for what, _ in event_lines(ev) if what == "ready")


def test_sigterm_stops_children_in_reverse_order_killing_one_that_ignores_sigterm(tmp_path: Path, nodes: Nodes) -> None:
    ev = tmp_path / "events"
    plan = nodes.plan(
        child("A", ev),
        child("stubborn", ev, "--ignore-term", stop_timeout_s=0.5, depends_on=["A"]),
        child("C", ev, depends_on=["stubborn"]),
    )
    proc = nodes.launch(plan, tmp_path / "run")
    wait_for(lambda: ready_count(ev) == 3, 20.0, "the node to be ready")
    nodes.remember_tree(proc.pid)
    stubborn_pid = int(next(line.split()[2] for line in ev.read_text().splitlines() if " stubborn " in line))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    took = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert [name for what, name in event_lines(ev) if what == "term"] == ["C", "A"]
    assert wait_gone(stubborn_pid, 0.1), "the child ignoring SIGTERM must have been killed"
    assert took >= 0.5
    assert "did not exit within 0.5 s of SIGTERM; killed it" in err
    assert "pycorosync Cluster Engine exiting normally" in err
    assert not (tmp_path / "run" / PID_FILE_NAME).exists()


def test_second_daemon_on_the_same_run_dir_is_refused_with_the_first_ones_pid(tmp_path: Path, nodes: Nodes) -> None:
    ev = tmp_path / "events"
    run_dir = tmp_path / "run"
    first = nodes.launch(nodes.plan(child("A", ev)), run_dir)
    wait_for(lambda: ready_count(ev) == 1, 20.0, "the first node to be ready")
    second = nodes.launch(nodes.plan(child("B", ev)), run_dir)
    _, err = second.communicate(timeout=20)
    assert second.returncode == 1
    assert f"another pycorosync daemon (pid {first.pid}) is running on {run_dir}" in err
    assert ("start", "B") not in event_lines(ev)
    assert first.poll() is None, "the first daemon keeps running"
    assert running_pid(run_dir) == first.pid


def test_stale_pid_file_of_a_dead_daemon_is_taken_over(tmp_path: Path, nodes: Nodes) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / PID_FILE_NAME).write_text(f"{dead.pid}\n")
    ev = tmp_path / "events"
    proc = nodes.launch(nodes.plan(child("A", ev)), run_dir)
    wait_for(lambda: ready_count(ev) == 1, 20.0, "the node to be ready")
    assert (run_dir / PID_FILE_NAME).read_text().strip() == str(proc.pid)
    assert running_pid(run_dir) == proc.pid


def test_background_mode_returns_0_only_once_the_node_is_ready_and_the_daemon_runs_on(tmp_path: Path, nodes: Nodes) -> None:
    ev = tmp_path / "events"
    run_dir = tmp_path / "run"
    plan = nodes.plan(child("A", ev, "--ready-delay", "0.3"), child("B", ev, "--ready-delay", "0.2", depends_on=["A"]))
    launcher = nodes.launch(plan, run_dir, background=True)
    _, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, err
    assert ready_count(ev) == 2, "the launcher must return only after every child is ready"
    daemon_pid = int((run_dir / PID_FILE_NAME).read_text())
    nodes.daemon_pids.append(daemon_pid)
    nodes.remember_tree(daemon_pid)
    assert daemon_pid != launcher.pid
    daemon = psutil.Process(daemon_pid)
    assert daemon.is_running()
    sid = os.getsid(daemon_pid)
    assert sid != os.getsid(0), "the daemon left the launcher's session"
    assert sid != daemon_pid, "not a session leader (second fork): it can never acquire a terminal"
    os.kill(daemon_pid, signal.SIGTERM)
    assert wait_gone(daemon_pid, 20.0)
    assert [name for what, name in event_lines(ev) if what == "term"] == ["B", "A"]


def test_background_mode_exits_1_with_the_start_error(tmp_path: Path, nodes: Nodes) -> None:
    ev = tmp_path / "events"
    # bad starts once A is ready: A then has its SIGTERM handler, and the stop it gets is seen (without the
    # order, a bad child quicker than A's start-up had A killed before it could note the SIGTERM)
    plan = nodes.plan(child("A", ev), child("bad", ev, "--exit-before-ready", "--exit-after", "0", "--exit-code", "7",
                                            depends_on=["A"]))
    launcher = nodes.launch(plan, tmp_path / "run", background=True)
    _, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 1
    assert "child 'bad' failed to start: it exited with status 7" in err
    assert [name for what, name in event_lines(ev) if what == "term"] == ["A"]


def test_idle_supervisor_uses_less_than_one_percent_cpu(tmp_path: Path, nodes: Nodes) -> None:
    ev = tmp_path / "events"
    proc = nodes.launch(nodes.plan(child("A", ev), child("B", ev), child("C", ev)), tmp_path / "run")
    wait_for(lambda: ready_count(ev) == 3, 20.0, "the node to be ready")
    sup = psutil.Process(proc.pid)
    sup.cpu_percent(None)
    t0 = time.monotonic()
    before = sup.cpu_times()
    time.sleep(3.0)  # the measurement window itself, not a wait for an event
    after = sup.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    percent = 100.0 * used / (time.monotonic() - t0)
    assert percent < 1.0, f"idle supervisor used {percent:.2f} % CPU"


def test_sighup_makes_the_daemon_reopen_its_log_file(tmp_path: Path, nodes: Nodes) -> None:
    ev = tmp_path / "events"
    log = tmp_path / "corosync.log"
    keys = {"logging.to_syslog": "no", "logging.to_stderr": "no", "logging.to_logfile": "yes", "logging.logfile": str(log)}
    proc = nodes.launch(nodes.plan(child("A", ev), log_keys=keys), tmp_path / "run")
    wait_for(lambda: log.exists() and "node ready" in log.read_text(), 20.0, "the node ready line in the log")
    log.rename(tmp_path / "corosync.log.1")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log.exists(), 10.0, "the log file to be reopened")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "exiting normally" in log.read_text()
    assert "exiting normally" not in (tmp_path / "corosync.log.1").read_text()


def test_pid_file_lock_refuses_a_second_holder_and_is_released_on_release(tmp_path: Path) -> None:
    first = PidFile(tmp_path)
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning, match=f"another pycorosync daemon \\(pid {os.getpid()}\\) is running on"):
            PidFile(tmp_path).acquire()
        assert running_pid(tmp_path) == os.getpid()
    finally:
        first.release()
    assert not (tmp_path / PID_FILE_NAME).exists()
    assert running_pid(tmp_path) is None
    with PidFile(tmp_path) as again:
        assert again.held


def test_children_keep_compiled_bytecode_in_the_cache_dir_when_the_environment_forbids_writing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pycorosync.engine.supervisor.daemon import bytecode_env

    monkeypatch.setenv("PYCOROSYNC_NUMBA_CACHE_ROOT", str(tmp_path / "numba"))
    env = bytecode_env({"PYTHONDONTWRITEBYTECODE": "1"})
    assert env == {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}
    assert bytecode_env({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/x"})["PYTHONPYCACHEPREFIX"] == "/x"
    assert bytecode_env({}) == {}, "without the variable the children write bytecode as Python always does"
