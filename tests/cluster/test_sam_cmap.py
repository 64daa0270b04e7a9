"""SAM with the CMAP flag against a real node: resources.process.<pid>.* keys appear, change and end as corosync's do."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycorosync.cmap import CmapClient, CsError, ValueType
from pycorosync.localcluster import Cluster, wait_for
from tests.unit import test_sam_support as support
from tests.unit.test_sam_support import ProcTree, start_app

proc_trees = support.proc_trees  # the fixture

# A SAM application driven through a fifo: one command a line, one "ok <command>" line back.
DRIVER = """
sam.initialize(300, sam.SAM_RECOVERY_POLICY_RESTART | sam.SAM_RECOVERY_POLICY_CMAP,
               run_dir=os.environ["RUN_DIR"], sample_period_ms=100)
iid = sam.register()
say("child", iid, os.getpid())
fifo = open(os.environ["CONTROL"], "rb", buffering=0)
buf = b""
while True:
    while b"\\n" not in buf:
        chunk = fifo.read(256)
        if not chunk:
            time.sleep(0.01)
        buf += chunk
    line, buf = buf.split(b"\\n", 1)
    cmd, *arg = line.decode().split()
    if cmd == "start":
        sam.hc_callback_register(lambda: 0)
        sam.start()
    elif cmd == "stop":
        sam.stop()
    elif cmd == "fail":
        sam.mark_failed()
    elif cmd == "exit":
        sam.finalize()
        sys.exit(int(arg[0]))
    say("ok", cmd, iid)
"""


@pytest.fixture
def node(make_cluster: Callable[..., Cluster]) -> Any:
    return make_cluster(1).nodes[1]


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], None]]]:
    path = tmp_path / "control.fifo"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    yield path, lambda line: os.write(fd, line.encode() + b"\n") and None
    os.close(fd)


def keys_of(run_dir: Path, prefix: str) -> dict[str, tuple[object, ValueType]]:
    with CmapClient(str(run_dir)) as cmap:
        return {key[len(prefix):]: (value, vtype) for key, vtype, value in cmap.iter(prefix)}


def wait_key(run_dir: Path, prefix: str, name: str, pred: Callable[[object], bool], what: str) -> object:
    def check() -> object:
        value = keys_of(run_dir, prefix).get(name)
        return value if value is not None and pred(value[0]) else None
    try:
        return wait_for(check, 20, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; keys under {prefix}: {keys_of(run_dir, prefix)}") from None


def start_driver(trees: list[ProcTree], tmp_path: Path, node: Any, control_path: Path) -> ProcTree:
    return start_app(trees, tmp_path, DRIVER, env={"RUN_DIR": str(node.run_dir), "CONTROL": str(control_path)})


def test_resources_keys_appear_follow_the_child_and_are_removed_on_a_clean_exit(
    proc_trees: list[ProcTree], tmp_path: Path, node: Any, control: tuple[Path, Callable[[str], None]]
) -> None:
    path, send = control
    app = start_driver(proc_trees, tmp_path, node, path)
    pid1 = int(app.expect("child 1 ").split()[2])
    prefix = f"resources.process.{app.pid}."
    keys = keys_of(node.run_dir, prefix)
    assert keys["recovery"] == ("restart", ValueType.STRING)
    assert keys["poll_period"] == (300, ValueType.UINT64)
    assert keys["state"] == ("stopped", ValueType.STRING)
    assert keys["pid"] == (pid1, ValueType.UINT32) and keys["restarts"] == (0, ValueType.UINT32)

    send("start")
    app.expect("ok start 1")
    assert keys_of(node.run_dir, prefix)["state"][0] == "running"
    first = wait_key(node.run_dir, prefix, "last_updated", lambda v: isinstance(v, int) and v > 0, "last_updated")
    wait_key(node.run_dir, prefix, "last_updated", lambda v: v != first[0], "last_updated to move")  # type: ignore[index]
    wait_key(node.run_dir, prefix, "rss", lambda v: isinstance(v, int) and v > 1 << 20, "rss of the child")
    keys = keys_of(node.run_dir, prefix)
    assert keys["threads"][0] >= 2 and keys["threads"][1] == ValueType.UINT32  # type: ignore[operator]
    assert keys["cpu"][1] == ValueType.DOUBLE

    os.kill(pid1, signal.SIGKILL)
    pid2 = int(app.expect("child 2 ").split()[2])
    wait_key(node.run_dir, prefix, "restarts", lambda v: v == 1, "restarts = 1")
    keys = keys_of(node.run_dir, prefix)
    assert keys["pid"][0] == pid2 and keys["state"][0] == "stopped"

    send("exit 0")
    assert app.wait() == 0
    assert keys_of(node.run_dir, prefix) == {}


def test_recovery_policy_changed_in_cmap_takes_effect_and_a_quit_recovery_leaves_state_failed(
    proc_trees: list[ProcTree], tmp_path: Path, node: Any, control: tuple[Path, Callable[[str], None]]
) -> None:
    path, send = control
    app = start_driver(proc_trees, tmp_path, node, path)
    pid1 = int(app.expect("child 1 ").split()[2])
    prefix = f"resources.process.{app.pid}."
    send("start")
    app.expect("ok start 1")
    with CmapClient(str(node.run_dir)) as cmap:
        cmap.set(prefix + "recovery", "sometimes")  # refused: written back
        wait_key(node.run_dir, prefix, "recovery", lambda v: v == "restart", "bad value written back")
        cmap.set(prefix + "recovery", "quit")
    wait_key(node.run_dir, prefix, "recovery", lambda v: v == "quit", "recovery = quit")
    os.kill(pid1, signal.SIGKILL)
    assert app.wait() == 128 + signal.SIGKILL
    assert not [line for line in app.lines if line.startswith("child 2")]
    keys = keys_of(node.run_dir, prefix)
    assert keys["state"][0] == "failed" and keys["recovery"][0] == "quit"
    with CmapClient(str(node.run_dir)) as cmap:
        for key in list(keys):
            cmap.delete(prefix + key)


def test_mark_failed_kills_the_child_and_ends_supervision_with_state_failed(
    proc_trees: list[ProcTree], tmp_path: Path, node: Any, control: tuple[Path, Callable[[str], None]]
) -> None:
    path, send = control
    app = start_driver(proc_trees, tmp_path, node, path)
    app.expect("child 1 ")
    prefix = f"resources.process.{app.pid}."
    send("start")
    app.expect("ok start 1")
    send("fail")
    assert app.wait() == 128 + signal.SIGKILL
    assert keys_of(node.run_dir, prefix)["state"][0] == "failed"
    with CmapClient(str(node.run_dir)) as cmap:
        for key in cmap.keys(prefix):
            cmap.delete(key)



def test_sam_run_with_cmap_publishes_its_program_and_removes_the_keys_when_stopped(
    proc_trees: list[ProcTree], tmp_path: Path, node: Any
) -> None:
    script = tmp_path / "beat.sh"
    script.write_text("#!/bin/sh\necho up $SAM_INSTANCE_ID $$\nwhile true; do echo hb >&$SAM_HC_FD; sleep 0.1; done\n")
    script.chmod(0o755)
    run = ProcTree([sys.executable, "-m", "pycorosync", "--run-dir", str(node.run_dir), "sam", "run", "--cmap",
                    "--interval", "500", "--sample-period", "100", "--", str(script)])
    proc_trees.append(run)
    pid1 = int(run.expect("up 1 ", timeout=30).split()[2])
    prefix = f"resources.process.{run.pid}."
    try:
        wait_key(node.run_dir, prefix, "pid", lambda v: v == pid1, "pid of the program")
    except AssertionError as exc:
        run.kill_tree()
        raise AssertionError(f"{exc}\nsam run said: {run.stderr.decode(errors='replace')}") from None
    keys = keys_of(node.run_dir, prefix)
    assert keys["state"][0] == "running" and keys["recovery"][0] == "restart" and keys["poll_period"][0] == 500
    first = wait_key(node.run_dir, prefix, "last_updated", lambda v: isinstance(v, int) and v > 0, "last_updated")
    wait_key(node.run_dir, prefix, "last_updated", lambda v: v != first[0], "heartbeats to move last_updated")  # type: ignore[index]
    wait_key(node.run_dir, prefix, "rss", lambda v: isinstance(v, int) and v > 0, "rss of the program")

    os.kill(pid1, signal.SIGKILL)
    pid2 = int(run.expect("up 2 ").split()[2])
    wait_key(node.run_dir, prefix, "restarts", lambda v: v == 1, "restarts = 1")
    assert keys_of(node.run_dir, prefix)["pid"][0] == pid2

    os.kill(run.pid, signal.SIGTERM)
    assert run.wait() == 128 + signal.SIGTERM
    assert keys_of(node.run_dir, prefix) == {}


def test_keys_and_the_recovery_tracker_come_back_after_the_cmap_service_restarts(
    proc_trees: list[ProcTree], tmp_path: Path, node: Any, control: tuple[Path, Callable[[str], None]]
) -> None:
    path, send = control
    app = start_driver(proc_trees, tmp_path, node, path)
    pid1 = int(app.expect("child 1 ").split()[2])
    prefix = f"resources.process.{app.pid}."
    send("start")
    app.expect("ok start 1")
    old_cmap = node.child_pid("cmap")
    node.kill_child("cmap")
    wait_for(lambda: node.child_pid("cmap") not in (None, old_cmap), 60, "cmap restarted by the node")

    def back() -> bool:
        try:
            keys = keys_of(node.run_dir, prefix)
        except CsError:
            return False
        return keys.get("state", ("",))[0] == "running" and keys.get("pid", (0,))[0] == pid1
    try:
        wait_for(back, 60, "SAM keys written again")  # the node restarts cmap first (seconds on a loaded machine)
    except AssertionError as exc:
        app.kill_tree()
        raise AssertionError(f"{exc}; app: {app.lines} {app.stderr.decode(errors='replace')[-3000:]}") from None
    with CmapClient(str(node.run_dir)) as cmap:
        cmap.set(prefix + "recovery", "quit")  # tracked again on the new connection
    wait_key(node.run_dir, prefix, "recovery", lambda v: v == "quit", "recovery = quit")
    os.kill(pid1, signal.SIGKILL)
    assert app.wait() == 128 + signal.SIGKILL
    with CmapClient(str(node.run_dir)) as cmap:
        for key in cmap.keys(prefix):
            cmap.delete(key)
