"""Children forked from a preloaded supervisor (engine/supervisor/forkstart.py): what they inherit and what not.

Each test runs a supervisor stand-in in a fresh interpreter (tests/unit/forkstart_probe.py) that holds
what a real supervisor holds when it forks (files, sockets, signal handlers and wakeup fd, a blocked
signal, a logging handler) and reads what its child saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = str(Path(__file__).resolve().parents[2])


def run_probe(out: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parent report, child report) of one probe run."""
    done = subprocess.run([sys.executable, "-m", "tests.unit.forkstart_probe", "parent", "--out", str(out), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    parent = json.loads((out / "parent.json").read_text())
    child_file = out / "child.json"
    child = json.loads(child_file.read_text()) if child_file.exists() else {}
    return parent, child


def test_a_forked_child_runs_its_module_as_main_with_its_own_argv_env_and_fds_and_nothing_else_of_the_parent(
        tmp_path: Path) -> None:
    parent, child = run_probe(tmp_path)
    assert parent["returncode"] == 0
    assert child["pid"] == parent["child_pid"]
    assert child["name"] == "__main__"
    assert child["argv"][0].endswith("forkstart_probe.py"), "as python -m sets it"
    assert child["argv"][1:] == ["child", "--out", str(tmp_path), "--exit", "0"]
    assert child["env"] == "from-spec"
    assert child["parent_only_env"] == "x", "the environment is the parent's at spawn, plus the spec's"
    assert child["cwd"] == str(tmp_path)
    assert child["pgid"] == child["pid"], "a child runs in its own process group"
    assert child["comm"] == "pcs-probe"
    # signals: a fresh interpreter's dispositions, nothing blocked, no wakeup fd of the parent
    assert child["sigterm"] == repr(signal.SIG_DFL)
    assert child["sighup"] == repr(signal.SIG_DFL)
    assert child["sigint_default"]
    assert child["blocked"] == []
    assert child["wakeup_fd"] == -1
    assert child["root_handlers"] == 0, "the parent's logging handlers are dropped"
    # descriptors: the passed one kept, stdin on /dev/null, stderr on the supervisor's pipe
    fds = {int(k): v for k, v in child["fds"].items()}
    held = parent["parent_fds"]
    assert fds[held["passed"]].startswith("pipe:")
    assert fds[0] == "/dev/null"
    assert fds[2].startswith("pipe:")
    for what in ("file", "socket", "wakeup", "wakeup_peer"):
        assert fds.get(held[what], "/dev/null") == "/dev/null", f"the parent's {what} reached the child"
    assert not any("held-by-parent" in t or t.startswith("socket:") for t in fds.values()), fds
    assert "probe child says goodbye" in parent["stderr"]


@pytest.mark.parametrize(("how", "code"), [("3", 3), ("raise", 1), ("kill", -signal.SIGKILL)])
def test_a_forked_childs_exit_status_is_what_an_exec_d_one_would_report(tmp_path: Path, how: str, code: int) -> None:
    parent, _child = run_probe(tmp_path, "--child-exit", how)
    assert parent["returncode"] == code
    if how == "raise":
        assert any("RuntimeError: probe child failed on purpose" in line for line in parent["stderr"])


def test_without_preload_the_same_spec_runs_in_a_fresh_interpreter(tmp_path: Path) -> None:
    parent, child = run_probe(tmp_path, "--exec")
    assert parent["returncode"] == 0
    assert child["comm"] != "pcs-probe"
    cmdline = child["argv"]
    assert cmdline[0].endswith("forkstart_probe.py"), "python -m sets argv[0] to the module's file"
    assert child["env"] == "from-spec"


def test_the_fork_switch_turns_forking_off(tmp_path: Path) -> None:
    env = {**os.environ, "PYCOROSYNC_FORK_CHILDREN": "0"}
    done = subprocess.run([sys.executable, "-m", "tests.unit.forkstart_probe", "parent", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    child = json.loads((tmp_path / "child.json").read_text())
    assert child["comm"] != "pcs-probe"
