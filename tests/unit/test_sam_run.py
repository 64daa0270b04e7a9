"""``pycorosync sam run``: any program (here shell scripts) supervised with SAM's policies."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.unit import test_sam_support as support
from tests.unit.test_sam_support import ProcTree, pid_alive, start_sam_run

proc_trees = support.proc_trees  # the fixture
SLACK_S = 0.6


def script(tmp_path: Path, body: str, name: str = "app.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def test_sam_run_restarts_a_killed_shell_script(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    run = start_sam_run(proc_trees, ["--", script(tmp_path, 'echo "up $SAM_INSTANCE_ID $$ $SAM_HC_FD"\n'
                                                           "exec sleep 60\n")])
    first = run.expect("up 1 ")
    assert 2 < int(first.split()[3]) < 10  # a shell writes `>&N` for a single digit only
    os.kill(int(first.split()[2]), signal.SIGKILL)
    second = run.expect("up 2 ")
    assert second.split()[2] != first.split()[2]
    assert pid_alive(run.pid)


def test_sam_run_restarts_a_script_that_stops_sending_heartbeats(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    # stamps from /proc/uptime with the shell's own `read` (10 ms steps): no process start inside the measurement
    body = (
        'if [ "$SAM_INSTANCE_ID" = 1 ]; then\n'
        "  for i in 1 2 3; do echo hb >&$SAM_HC_FD; sleep 0.05; done\n"
        "  read T _ < /proc/uptime\n"
        "  echo hb >&$SAM_HC_FD\n"  # the last heartbeat comes after the stamp
        '  echo "hung 1 $$ $T"\n'
        "  exec sleep 60\n"
        "fi\n"
        "read T _ < /proc/uptime\n"
        'echo "up $SAM_INSTANCE_ID $$ $T"\n'
        "while true; do echo hb >&$SAM_HC_FD; sleep 0.1; done\n"
    )
    run = start_sam_run(proc_trees, ["--interval", "1000", "--", script(tmp_path, body)])
    hung = run.expect("hung 1 ")
    up = run.expect("up 2 ")
    assert 1.0 - 0.01 <= float(up.split()[3]) - float(hung.split()[3]) < 1.0 + SLACK_S
    with pytest.raises(AssertionError):
        run.expect("up 3", timeout=2.5)  # heartbeats every 100 ms keep instance 2


def test_a_program_that_never_sends_a_heartbeat_is_healthy_while_alive(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    run = start_sam_run(proc_trees, ["--interval", "100", "--", script(tmp_path, 'echo "up $SAM_INSTANCE_ID"\n'
                                                                                 "exec sleep 60\n")])
    run.expect("up 1")
    with pytest.raises(AssertionError):
        run.expect("up 2", timeout=0.8)


def test_sam_run_quit_policy_exits_with_the_programs_status(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    run = start_sam_run(proc_trees, ["--policy", "quit", "--", script(tmp_path, 'echo "up $SAM_INSTANCE_ID"\n'
                                                                                "exit 4\n")])
    assert run.wait() == 4
    assert run.lines == ["up 1"]


def test_sam_run_ends_with_status_0_when_the_program_finishes(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    run = start_sam_run(proc_trees, ["--", script(tmp_path, 'echo "up $SAM_INSTANCE_ID"\nexit 0\n')])
    assert run.wait() == 0
    assert run.lines == ["up 1"]


def test_sam_run_gives_up_on_the_sixth_restart_within_60_s_by_default(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    run = start_sam_run(proc_trees, ["--", script(tmp_path, 'echo "up $SAM_INSTANCE_ID"\nexit 3\n')])
    assert run.wait(timeout=20) == 3
    assert run.lines == [f"up {i}" for i in range(1, 7)]  # the first start and 5 restarts
    assert b"failed 6 times within 60 s (restart storm); giving up" in run.stderr


def test_sam_run_restarts_a_program_over_its_rss_limit(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    hog = tmp_path / "hog.py"
    hog.write_text(textwrap.dedent("""\
        import os, time
        print("up", os.environ["SAM_INSTANCE_ID"], flush=True)
        if os.environ["SAM_INSTANCE_ID"] == "1":
            ballast = bytearray(b"x" * (120 << 20))
        time.sleep(60)
    """))
    run = start_sam_run(proc_trees, ["--max-rss", "80M", "--sample-period", "100", "--interval", "200", "--",
                                     sys.executable, str(hog)])
    run.expect("up 1")
    run.expect("up 2", timeout=10)
    assert b"over the limit of 83886080" in run.stderr
    with pytest.raises(AssertionError):
        run.expect("up 3", timeout=0.8)


def test_sam_run_passes_sigterm_to_the_program_and_exits_with_its_status(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    body = 'trap "echo got-term; exit 9" TERM\necho "up $SAM_INSTANCE_ID"\nsleep 60 &\nwait\n'
    run = start_sam_run(proc_trees, ["--", script(tmp_path, body)])
    run.expect("up 1")
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait() == 9
    assert "got-term" in run.lines and "up 2" not in run.lines


@pytest.mark.parametrize(("args", "message"), [
    ([], b"no command given"),
    (["--max-restarts", "five", "--", "true"], b"N/SECONDS"),
    (["--max-rss", "lots", "--", "true"], b"--max-rss must be a byte count"),
    (["--warn-signal", "SIGNOPE", "--", "true"], b"unknown signal"),
])
def test_sam_run_refuses_bad_options_with_a_message_and_status_1(
    proc_trees: list[ProcTree], args: list[str], message: bytes
) -> None:
    run = start_sam_run(proc_trees, args)
    assert run.wait() == 1
    assert message in run.stderr and b"Traceback" not in run.stderr


def test_sam_run_cmap_flag_without_a_cmap_service_is_a_clear_error(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    run = ProcTree([sys.executable, "-m", "pycorosync", "--run-dir", str(tmp_path), "sam", "run", "--cmap", "--",
                    "true"])
    proc_trees.append(run)
    assert run.wait() == 1
    assert b"--cmap: CS_ERR_LIBRARY:" in run.stderr and b"no 'cmap' service is running there" in run.stderr
    assert b"Traceback" not in run.stderr


def test_sam_run_of_a_missing_program_exits_127(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    run = start_sam_run(proc_trees, ["--", str(tmp_path / "nope")])
    started = time.monotonic()
    assert run.wait() == 127
    assert time.monotonic() - started < 10
    assert b"cannot start child 'nope'" in run.stderr
