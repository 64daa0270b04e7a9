"""pycorosync.sam (libsam): a real application forks under its supervisor; deaths, hangs and policies.

Each test runs a small SAM application as its own process tree (``test_sam_support``), talks to it
through the lines it prints, and reaps the whole tree at teardown.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pycorosync.ipc.errors import CsError
from pycorosync.services.sam.library import Sam, SamState
from tests.unit import test_sam_support as support
from tests.unit.test_sam_support import ProcTree, pid_alive, start_app

proc_trees = support.proc_trees  # the fixture

SLACK_S = 0.6  # scheduling noise on a shared 2-core machine


def field(line: str, index: int) -> str:
    return line.split()[index]


def test_killed_child_is_restarted_with_the_data_it_stored(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    app = start_app(proc_trees, tmp_path, """
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_RESTART)
        iid = sam.register()
        say("child", iid, os.getpid(), os.getppid(), sam.data_restore().decode() or "-", time.monotonic())
        sam.start()
        sam.data_store(b"state-of-%d" % iid)
        say("stored", iid)
        time.sleep(60)
    """)
    first = app.expect("child 1 ")
    app.expect("stored 1")
    pid1, supervisor = int(field(first, 2)), int(field(first, 3))
    assert supervisor == app.pid and field(first, 4) == "-"
    killed = time.monotonic()
    os.kill(pid1, signal.SIGKILL)
    second = app.expect("child 2 ")
    assert field(second, 4) == "state-of-1"
    assert int(field(second, 2)) != pid1 and int(field(second, 3)) == app.pid
    assert float(field(second, 5)) - killed < 1.0  # detected through its pidfd, forked at once
    assert pid_alive(app.pid)


def test_hung_child_is_warned_and_restarted_within_the_interval(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    app = start_app(proc_trees, tmp_path, """
        sam.initialize(300, sam.SAM_RECOVERY_POLICY_RESTART)
        iid = sam.register()
        say("child", iid, time.monotonic())
        sam.start()
        for _ in range(3):
            sam.hc_send()
            time.sleep(0.05)
        sam.hc_send()
        say("hung", iid, time.monotonic())
        time.sleep(60)   # SIGTERM's default action ends it
    """)
    hung = app.expect("hung 1")
    second = app.expect("child 2 ")
    gap = float(field(second, 2)) - float(field(hung, 2))
    assert 0.3 <= gap < 0.3 + SLACK_S, gap


def test_child_that_ignores_the_warn_signal_is_killed_one_interval_later(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    app = start_app(proc_trees, tmp_path, """
        sam.initialize(300, sam.SAM_RECOVERY_POLICY_RESTART)
        iid = sam.register()
        signal.signal(signal.SIGUSR1, lambda *_: say("warned", iid, time.monotonic()))
        say("child", iid, time.monotonic())
        if iid == 1:
            sam.warn_signal_set(signal.SIGUSR1)
        sam.start()
        sam.hc_send()
        say("hung", iid, time.monotonic())
        while True:
            time.sleep(60)
    """)
    hung = app.expect("hung 1")
    warned = app.expect("warned 1")
    second = app.expect("child 2 ")
    assert 0.3 <= float(field(warned, 2)) - float(field(hung, 2)) < 0.3 + SLACK_S
    assert 0.3 <= float(field(second, 2)) - float(field(warned, 2)) < 0.3 + SLACK_S
    # the warn signal set by instance 1 stays with the supervisor: instance 2 gets SIGUSR1 too
    app.expect("warned 2", timeout=3)


@pytest.mark.parametrize(("how", "status"), [("sys.exit(7)", 7), ("os.kill(os.getpid(), signal.SIGKILL)", 137)])
def test_quit_policy_ends_the_supervisor_with_the_childs_status(
    proc_trees: list[ProcTree], tmp_path: Path, how: str, status: int
) -> None:
    app = start_app(proc_trees, tmp_path, f"""
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_QUIT)
        iid = sam.register()
        say("child", iid)
        sam.start()
        {how}
    """)
    assert app.wait() == status
    assert [line for line in app.lines if line.startswith("child")] == ["child 1"]


def test_exit_before_start_or_after_stop_ends_the_supervisor_even_under_restart(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    before = start_app(proc_trees, tmp_path, """
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_RESTART)
        say("child", sam.register())
        sys.exit(5)
    """, name="before.py")
    after = start_app(proc_trees, tmp_path, """
        sam.initialize(100, sam.SAM_RECOVERY_POLICY_RESTART)
        say("child", sam.register())
        sam.start(); sam.stop(); time.sleep(0.3)   # stopped: no health checks are due
        sam.finalize()
        sys.exit(6)
    """, name="after.py")
    assert before.wait() == 5 and after.wait() == 6
    assert before.lines == ["child 1"] and after.lines == ["child 1"]


def test_restart_storm_gives_up_and_the_supervisor_exits_non_zero(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    app = start_app(proc_trees, tmp_path, """
        from pycorosync.engine.supervisor.policy import RestartPolicy
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_RESTART,
                       restart_policy=RestartPolicy(max_restarts=2, window_s=60, backoff_initial_s=0))
        say("child", sam.register())
        sam.start()
        os._exit(3)
    """)
    assert app.wait() == 3
    assert app.lines == ["child 1", "child 2", "child 3"]
    assert b"failed 3 times within 60 s (restart storm); giving up" in app.stderr


def test_health_check_callback_keeps_a_healthy_child_and_recovers_an_unhealthy_one(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    app = start_app(proc_trees, tmp_path, """
        sam.initialize(200, sam.SAM_RECOVERY_POLICY_RESTART)
        iid = sam.register()
        born = time.monotonic()
        sam.hc_callback_register(lambda: 1 if iid == 1 and time.monotonic() - born > 0.8 else 0)
        say("child", iid, born)
        sam.start()
        time.sleep(60)   # never calls hc_send itself
    """)
    first = app.expect("child 1 ")
    second = app.expect("child 2 ", timeout=5)
    lived = float(field(second, 2)) - float(field(first, 2))
    assert 0.8 <= lived < 0.8 + 0.2 + 0.2 + SLACK_S, lived  # healthy for 0.8 s, then one interval (+ callback tick)
    with pytest.raises(AssertionError):
        app.expect("child 3", timeout=1.0)  # instance 2 stays healthy through 5 intervals


def test_calls_in_the_wrong_state_or_with_bad_arguments_fail_with_corosyncs_codes(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    app = start_app(proc_trees, tmp_path, """
        def code(call, *args):
            try:
                call(*args)
                return "CS_OK"
            except CsError as exc:
                return exc.name
        say("pre", code(sam.start), code(sam.register), code(sam.hc_send))
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_RESTART)
        say("init", code(sam.initialize, 0, sam.SAM_RECOVERY_POLICY_RESTART), code(sam.start),
            code(sam.warn_signal_set, 0), code(sam.data_store, b"before"))
        iid = sam.register()
        say("child", iid, sam.data_restore().decode(), code(sam.hc_send), code(sam.hc_callback_register, print),
            code(sam.mark_failed), code(sam.register), code(sam.stop))
        sam.start()
        say("started", code(sam.start), code(sam.hc_send), code(sam.data_store, None), sam.data_getsize())
        sam.finalize()
        say("final", code(sam.hc_send), code(sam.finalize))
    """)
    assert app.wait() == 0
    assert app.lines == [
        "pre CS_ERR_BAD_HANDLE CS_ERR_BAD_HANDLE CS_ERR_BAD_HANDLE",
        "init CS_ERR_BAD_HANDLE CS_ERR_BAD_HANDLE CS_ERR_INVALID_PARAM CS_OK",
        "child 1 before CS_ERR_BAD_HANDLE CS_ERR_INVALID_PARAM CS_ERR_INVALID_PARAM CS_ERR_BAD_HANDLE "
        "CS_ERR_BAD_HANDLE",
        "started CS_ERR_BAD_HANDLE CS_OK CS_OK 0",
        "final CS_ERR_BAD_HANDLE CS_ERR_BAD_HANDLE",
    ]


def test_cmap_flag_without_a_cmap_service_raises_a_clear_cs_error(proc_trees: list[ProcTree], tmp_path: Path) -> None:
    app = start_app(proc_trees, tmp_path, """
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_RESTART | sam.SAM_RECOVERY_POLICY_CMAP, run_dir=sys.argv[0] + ".d")
        try:
            sam.register()
        except CsError as exc:
            say("error", exc.name, str(exc))
    """)
    assert app.wait() == 0
    assert app.lines[0].startswith("error CS_ERR_LIBRARY ") and "no 'cmap' service is running there" in app.lines[0]


@pytest.mark.parametrize("policy", [0, 3, 8, 0x10, 0x20 | 1])
def test_initialize_refuses_an_invalid_recovery_policy(policy: int) -> None:
    handle = Sam()
    with pytest.raises(CsError) as err:
        handle.initialize(100, policy)
    assert err.value.name == "CS_ERR_INVALID_PARAM" and handle.state == SamState.NOT_INITIALIZED


FIFO_QUORUM = """
class FifoQuorum:
    # quorate = the last byte written to the fifo is b"1"
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.quorate = False
    def fileno(self):
        return self.fd
    def dispatch(self):
        try:
            data = os.read(self.fd, 64)
        except BlockingIOError:
            return
        if data[-1:] == b"x":
            self.quorate = False
            raise CsError(2, "quorum service gone")
        if data:
            self.quorate = data[-1:] == b"1"
    def close(self):
        os.close(self.fd)
"""


@pytest.fixture
def quorum_fifo(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "quorum.fifo"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    yield path, lambda quorate: os.write(fd, b"1" if quorate else b"0")
    os.close(fd)


def test_quorum_restart_policy_starts_only_when_quorate_and_recovers_on_quorum_loss(
    proc_trees: list[ProcTree], tmp_path: Path, quorum_fifo: tuple[Path, object]
) -> None:
    path, set_quorate = quorum_fifo
    app = start_app(proc_trees, tmp_path, FIFO_QUORUM + f"""
sam.initialize(0, sam.SAM_RECOVERY_POLICY_QUORUM_RESTART, quorum_source=FifoQuorum({str(path)!r}))
iid = sam.register()
say("registered", iid)
sam.start()
say("started", iid, time.monotonic())
time.sleep(60)
""")
    app.expect("registered 1")
    with pytest.raises(AssertionError):
        app.expect("started", timeout=0.4)  # not quorate: start() waits
    set_quorate(True)  # type: ignore[operator]
    app.expect("started 1")
    lost = time.monotonic()
    set_quorate(False)  # type: ignore[operator]
    app.expect("registered 2")  # killed (SIGTERM) and restarted ...
    with pytest.raises(AssertionError):
        app.expect("started 2", timeout=0.4)  # ... but it waits for quorum again
    assert time.monotonic() - lost < 0.4 + 1.0
    set_quorate(True)  # type: ignore[operator]
    app.expect("started 2")


def test_quorum_quit_policy_exits_when_quorum_is_lost(
    proc_trees: list[ProcTree], tmp_path: Path, quorum_fifo: tuple[Path, object]
) -> None:
    path, set_quorate = quorum_fifo
    set_quorate(True)  # type: ignore[operator]
    app = start_app(proc_trees, tmp_path, FIFO_QUORUM + f"""
sam.initialize(0, sam.SAM_RECOVERY_POLICY_QUORUM_QUIT, quorum_source=FifoQuorum({str(path)!r}))
iid = sam.register()
sam.start()
say("started", iid)
time.sleep(60)
""")
    app.expect("started 1")
    set_quorate(False)  # type: ignore[operator]
    assert app.wait() == 128 + signal.SIGTERM


def test_sigterm_to_the_supervisor_stops_the_child_without_restart_and_exits_with_its_status(
    proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    app = start_app(proc_trees, tmp_path, """
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_RESTART)
        iid = sam.register()
        signal.signal(signal.SIGTERM, lambda *_: (say("term", iid), sys.exit(11)))
        sam.start()
        say("started", iid, os.getpid())
        while True:
            time.sleep(60)
    """)
    os.kill(int(app.expect("started 1").split()[2]), signal.SIGKILL)
    # after a fork the supervisor must still hear its signals (the child shares its epoll instance)
    child = int(app.expect("started 2").split()[2])
    os.kill(app.pid, signal.SIGTERM)
    assert app.wait() == 11
    assert "term 2" in app.lines and not [line for line in app.lines if line.startswith("started 3")]
    assert not pid_alive(child)


def test_a_lost_quorum_service_counts_as_quorum_loss_and_the_next_start_fails(
    proc_trees: list[ProcTree], tmp_path: Path, quorum_fifo: tuple[Path, object]
) -> None:
    path, set_quorate = quorum_fifo
    set_quorate(True)  # type: ignore[operator]
    app = start_app(proc_trees, tmp_path, FIFO_QUORUM + f"""
sam.initialize(0, sam.SAM_RECOVERY_POLICY_QUORUM_RESTART, quorum_source=FifoQuorum({str(path)!r}))
iid = sam.register()
try:
    sam.start()
except CsError as exc:
    say("start-error", iid, exc.name)
    sys.exit(3)
say("started", iid)
time.sleep(60)
""")
    app.expect("started 1")
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"x")  # the fake source raises CsError: the service is gone
    os.close(fd)
    app.expect("start-error 2 CS_ERR_LIBRARY")
    assert app.wait() == 3  # an exit before start: the supervisor ends with that status
