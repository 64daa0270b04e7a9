"""``pycorosync sam run``: the supervised program dies with its supervisor, even one killed with SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pycorosync.services.sam import deathsig
from tests.unit import test_sam_support as support
from tests.unit.test_sam_support import ProcTree, pid_alive, start_sam_run

proc_trees = support.proc_trees  # the fixture
DEADLINE_S = 10.0


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "app.sh"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def wait_gone(pid: int, timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def path_without_setpriv(tmp_path: Path) -> str:
    """A PATH holding only what the test script needs (``sleep``): no setpriv, so the python wrapper runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sleep = shutil.which("sleep")
    assert sleep is not None
    (bin_dir / "sleep").symlink_to(sleep)
    return str(bin_dir)


@pytest.mark.parametrize("wrapper", ["setpriv", "python"])
def test_program_is_killed_when_sam_run_is_sigkilled(proc_trees: list[ProcTree], tmp_path: Path, wrapper: str) -> None:
    if wrapper == "setpriv" and deathsig._setpriv() is None:
        pytest.skip("no setpriv with --pdeathsig on this machine")
    env = {"PATH": path_without_setpriv(tmp_path)} if wrapper == "python" else None
    run = start_sam_run(proc_trees, ["--", script(tmp_path, 'echo "up $SAM_INSTANCE_ID $$"\nexec sleep 60\n')], env)
    program = int(run.expect("up 1 ").split()[2])
    assert pid_alive(program)
    if wrapper == "python":  # the wrapper exec'd the program in place: the pid sam run watches is the program's
        assert wait_exec(program, "sleep")
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    assert wait_gone(program), f"program {program} outlived its SIGKILLed supervisor"


def wait_exec(pid: int, name: str, timeout: float = DEADLINE_S) -> bool:
    """True once ``pid`` runs ``name`` (its exec happened); False if it is gone or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                return True
        except OSError:
            return False
        time.sleep(0.02)
    return False


def test_program_still_ends_normally_and_sam_run_reports_its_status(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    run = start_sam_run(proc_trees, ["--policy", "quit", "--", script(tmp_path, 'echo "up $SAM_INSTANCE_ID"\nexit 3\n')])
    run.expect("up 1")
    assert run.wait() == 3


def test_a_missing_program_is_refused_before_any_wrapper_starts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cannot start child 'app' \(.*nope\)"):
        deathsig.wrap_argv([str(tmp_path / "nope")], "app")
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("x")
    with pytest.raises(PermissionError, match="Permission denied"):
        deathsig.wrap_argv([str(not_executable)], "app")


def test_the_wrapper_runs_the_program_itself_with_its_arguments() -> None:
    argv = deathsig.wrap_argv(["sleep", "1"], "app")
    assert argv[-2:] == ["--", "sleep", "1"][-2:] and argv[0] in (deathsig._setpriv(), sys.executable)


def test_the_fallback_wrapper_refuses_to_run_for_a_parent_that_is_already_gone() -> None:
    # pid 1 is not the wrapper's parent here: it behaves as if its supervisor had died before the prctl
    wrapper = [sys.executable, "-m", "pycorosync.services.sam.deathsig"]
    assert subprocess.run([*wrapper, "1", "true"], timeout=DEADLINE_S, check=False).returncode == 1
    assert subprocess.run([*wrapper, str(os.getpid()), "true"], timeout=DEADLINE_S, check=False).returncode == 0
    bad = subprocess.run([*wrapper, "not-a-pid", "true"], timeout=DEADLINE_S, check=False, capture_output=True)
    assert bad.returncode == 127 and b"usage" in bad.stderr
