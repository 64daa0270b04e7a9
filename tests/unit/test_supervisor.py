"""The node supervisor with real stand-in processes: start order, start failures, restarts, storms, stop."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycorosync.engine.supervisor.node import NodePlan, NodeSupervisor, StartError
from pycorosync.engine.supervisor.policy import RestartPolicy
from pycorosync.engine.supervisor.process import ChildSpec, RestartRule
from tests.conftest import unique_prefix
from tests.unit.supervisor_standin import child_argv

REPO = str(Path(__file__).resolve().parents[2])
FAST_POLICY = RestartPolicy(max_restarts=5, window_s=60.0, backoff_initial_s=0.01, backoff_max_s=0.05)


def events(path: Path) -> list[tuple[str, str, int]]:
    """(event, child name, pid) in the order the children wrote them."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, name, pid, _restarts = line.split()
        out.append((what, name, int(pid)))
    return out


def spec(name: str, ev: Path, *extra: str, **kw: object) -> ChildSpec:
    return ChildSpec(name, child_argv(name, ev, *extra), cwd=REPO, **kw)  # type: ignore[arg-type]


@pytest.fixture
def make_node() -> Iterator[Callable[..., NodeSupervisor]]:
    """Builds supervisors that are stopped and reaped after the test, whatever happens."""
    made: list[NodeSupervisor] = []

    def make(*specs: ChildSpec, **kw: object) -> NodeSupervisor:
        kw.setdefault("restart_policy", FAST_POLICY)
        sup = NodeSupervisor(NodePlan(tuple(specs), **kw), forward_stderr_fd=None)  # type: ignore[arg-type]
        made.append(sup)
        return sup

    yield make
    for sup in made:
        try:
            sup.stop()
        finally:
            sup.close()


def test_children_start_in_plan_order_each_only_after_the_previous_is_ready(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(
        spec("A", ev, "--ready-delay", "0.3"),
        spec("B", ev, "--ready-delay", "0.1", depends_on=("A",)),
        spec("C", ev, depends_on=("B",)),
    )
    sup.start()
    seq = [(what, name) for what, name, _ in events(ev)]
    assert seq == [("start", "A"), ("ready", "A"), ("start", "B"), ("ready", "B"), ("start", "C"), ("ready", "C")]
    assert all(sup.child(n).ready for n in "ABC")


def test_children_that_do_not_depend_on_each_other_start_together_once_their_dependency_is_ready(
    tmp_path: Path, make_node
) -> None:
    ev = tmp_path / "events"
    sup = make_node(
        spec("totem", ev, "--ready-delay", "0.2"),
        *(spec(name, ev, "--ready-delay", "0.4", depends_on=("totem",)) for name in ("cmap", "cpg", "quorum")),
    )
    sup.start()
    seq = [(what, name) for what, name, _ in events(ev)]
    assert seq[:2] == [("start", "totem"), ("ready", "totem")]
    services = [sup.child(n) for n in ("cmap", "cpg", "quorum")]
    assert all(c.ready for c in services)
    assert max(c.started_s for c in services) < min(c.ready_s or 0.0 for c in services), (
        "every service is spawned before the first one is ready"
    )
    assert min(c.started_s for c in services) >= (sup.child("totem").ready_s or 0.0)


def test_stop_terminates_children_in_reverse_order_and_exits_cleanly(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(spec("A", ev), spec("B", ev, depends_on=("A",)), spec("C", ev, depends_on=("B",)))
    sup.start()
    sup.stop()
    terms = [name for what, name, _ in events(ev) if what == "term"]
    assert terms == ["C", "B", "A"]
    assert all(sup.child(n).exit_status.returncode == 0 for n in "ABC")


def test_stop_stops_independent_children_together_then_what_they_depend_on(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(
        spec("transport", ev),
        spec("totem", ev, depends_on=("transport",)),
        spec("cpg", ev, "--ignore-term", depends_on=("totem",), stop_timeout_s=1.0),
        spec("cmap", ev, "--ignore-term", depends_on=("totem",), stop_timeout_s=1.0),
    )
    sup.start()
    t0 = time.monotonic()
    sup.stop()
    took = time.monotonic() - t0
    terms = [name for what, name, _ in events(ev) if what == "term"]
    assert terms == ["totem", "transport"], "the two services ignore SIGTERM: killed, no term event"
    assert sup.child("cpg").exit_status.signal == signal.SIGKILL
    assert sup.child("cmap").exit_status.signal == signal.SIGKILL
    assert 1.0 <= took < 2.0, f"the services' stop timeouts ran one after the other ({took:.2f} s)"


def test_child_that_exits_before_ready_fails_the_start_naming_it_with_status_and_stderr(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(
        spec("A", ev),
        spec("B", ev, "--exit-after", "0", "--exit-before-ready", "--exit-code", "3", "--stderr", "boom: bad ring0_addr",
             depends_on=("A",)),
        spec("C", ev, depends_on=("B",)),
    )
    with pytest.raises(StartError) as err:
        sup.start()
    text = str(err.value)
    assert "child 'B' failed to start" in text
    assert "exited with status 3" in text
    assert "boom: bad ring0_addr" in text
    seq = [(what, name) for what, name, _ in events(ev)]
    assert ("term", "A") in seq, "the children already started must be stopped"
    assert ("start", "C") not in seq
    assert sup.pids() == {}


def test_child_that_never_signals_ready_is_killed_after_its_ready_timeout(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(spec("A", ev), spec("slow", ev, "--no-ready", ready_timeout_s=0.5, stop_timeout_s=0.2))
    t0 = time.monotonic()
    with pytest.raises(StartError, match=r"child 'slow' \(pid \d+\) did not signal ready within 0.5 s"):
        sup.start()
    assert 0.5 <= time.monotonic() - t0 < 5.0
    assert sup.pids() == {}


def test_killed_child_is_detected_at_once_and_restarted_in_place(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(spec("A", ev), spec("B", ev, restart=RestartRule.IN_PLACE), spec("C", ev))
    sup.start()
    before = sup.pids()
    os.kill(before["B"], signal.SIGKILL)
    t0 = time.monotonic()
    sup.run(until=lambda: sup.restarts("B") == 1 and sup.child("B").ready, timeout_s=5.0)
    took = time.monotonic() - t0
    after = sup.pids()
    assert after["B"] != before["B"]
    assert (after["A"], after["C"]) == (before["A"], before["C"]), "an in-place restart touches no other child"
    assert took < 2.0, f"restart took {took:.2f} s"
    assert sup.child("B").restart_count == 1


def test_totem_loss_restarts_it_and_every_process_that_depends_on_it_in_order(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(
        spec("transport", ev),
        spec("totem", ev, restart=RestartRule.NODE, depends_on=("transport",)),
        spec("cpg", ev, restart=RestartRule.REJOIN, depends_on=("totem",)),
        spec("cmap", ev, restart=RestartRule.REJOIN, depends_on=("totem",)),
    )
    sup.start()
    before = sup.pids()
    os.kill(before["totem"], signal.SIGKILL)
    sup.run(until=lambda: sup.child("cmap").pid != before["cmap"] and sup.child("cmap").ready, timeout_s=5.0)
    after = sup.pids()
    assert after["transport"] == before["transport"]
    assert all(after[n] != before[n] for n in ("totem", "cpg", "cmap"))
    seq = [(what, name) for what, name, pid in events(ev) if pid not in before.values() or what == "term"]
    assert sorted(seq[:2]) == [("term", "cmap"), ("term", "cpg")]
    assert seq[2:4] == [("start", "totem"), ("ready", "totem")]
    assert sorted(seq[4:]) == [("ready", "cmap"), ("ready", "cpg"), ("start", "cmap"), ("start", "cpg")]
    cpg, cmap, totem = sup.child("cpg"), sup.child("cmap"), sup.child("totem")
    assert min(cpg.started_s, cmap.started_s) >= (totem.ready_s or 0.0)
    assert max(cpg.started_s, cmap.started_s) < min(cpg.ready_s or 0.0, cmap.ready_s or 0.0), (
        "the services start together after totem"
    )


def test_restart_storm_gives_up_after_max_restarts_in_the_window_and_stops_the_node(
    tmp_path: Path, make_node, caplog: pytest.LogCaptureFixture
) -> None:
    ev = tmp_path / "events"
    policy = RestartPolicy(max_restarts=3, window_s=60.0, backoff_initial_s=0.01, backoff_max_s=0.02)
    sup = make_node(spec("A", ev), spec("flappy", ev, "--exit-after", "0.05", "--exit-code", "1"), restart_policy=policy)
    caplog.set_level(logging.INFO, logger="MAIN")
    sup.start()
    code = sup.run(timeout_s=10.0)
    assert code == 1
    assert sup.restarts("flappy") == 3
    assert "child 'flappy' failed 4 times within 60 s (restart storm); giving up on it" in caplog.text
    sup.stop()
    assert [name for what, name, _ in events(ev) if what == "term"] == ["A"]


def test_a_child_that_ignores_sigterm_is_killed_after_its_stop_timeout(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(spec("A", ev), spec("stubborn", ev, "--ignore-term", stop_timeout_s=0.4))
    sup.start()
    t0 = time.monotonic()
    sup.stop()
    took = time.monotonic() - t0
    assert sup.child("stubborn").exit_status.signal == signal.SIGKILL
    assert sup.child("A").exit_status.returncode == 0
    assert 0.4 <= took < 3.0


def test_node_shm_segments_stale_ones_removed_at_start_and_all_at_stop(tmp_path: Path, make_node) -> None:
    prefix = unique_prefix("sup") + "-"
    stale = Path("/dev/shm") / (prefix.lstrip("/") + "stats")
    stale.write_bytes(b"old")
    sup = make_node(spec("A", tmp_path / "ev"), shm_prefix=prefix)
    sup.start()
    assert not stale.exists()
    fresh = Path("/dev/shm") / (prefix.lstrip("/") + "ring")
    fresh.write_bytes(b"new")
    sup.stop()
    assert not fresh.exists()


def test_children_are_sampled_for_cpu_rss_and_threads(tmp_path: Path, make_node) -> None:
    sup = make_node(spec("A", tmp_path / "ev"), spec("B", tmp_path / "ev"), sample_interval_s=0.1)
    sup.start()
    sup.run(until=lambda: len(sup.samples) == 2, timeout_s=5.0)
    samples = sup.samples
    assert set(samples) == {"A", "B"}
    assert samples["A"].pid == sup.pids()["A"]
    assert samples["A"].rss_bytes > 1_000_000 and samples["A"].num_threads >= 1


def test_never_rule_child_death_stops_the_node_with_status_1(tmp_path: Path, make_node) -> None:
    ev = tmp_path / "events"
    sup = make_node(spec("A", ev), spec("B", ev, restart=RestartRule.NEVER))
    sup.start()
    os.kill(sup.pids()["B"], signal.SIGKILL)
    assert sup.run(timeout_s=5.0) == 1
    assert "child 'B' failed" in (sup.stop_reason or "")


def test_plan_rejects_a_dependency_listed_after_its_dependent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'B' depends on 'A', which is not listed before it"):
        NodePlan((spec("B", tmp_path, depends_on=("A",)), spec("A", tmp_path)))


def test_ready_fd_placeholder_in_argv_lets_a_child_signal_ready_through_an_argument(tmp_path: Path, make_node) -> None:
    script = "import os, sys, signal; os.write(int(sys.argv[1]), b'R'); signal.pause()"
    import sys

    sup = make_node(ChildSpec("argfd", (sys.executable, "-c", script, "{ready_fd}"), ready_timeout_s=5.0))
    sup.start()
    assert sup.child("argfd").ready


def test_program_that_cannot_be_executed_fails_the_start_naming_the_child(tmp_path: Path, make_node) -> None:
    sup = make_node(ChildSpec("ghost", (str(tmp_path / "no-such-program"),)))
    with pytest.raises(StartError, match=r"child 'ghost' failed to start: .*No such file"):
        sup.start()


def test_children_get_the_node_description_with_their_own_ready_fd_and_every_doorbell(tmp_path: Path, make_node) -> None:
    import sys

    from pycorosync.engine.supervisor.resources import NODE_ENV, NodeResources

    res = NodeResources.create(
        config=tmp_path / "corosync.conf", nodeid=1, cluster="c", run_dir=tmp_path, shm_prefix="/pcs-c-1-",
        services=("cpg",), processes=("totem", "cpg"),
    )  # fmt: skip
    script = (
        "import json, os, signal; n = json.loads(os.environ['PYCOROSYNC_NODE']); "
        "os.eventfd_write(n['bells']['totem'], 5); os.write(n['ready_fd'], b'R'); signal.pause()"
    )
    try:
        sup = make_node(
            ChildSpec("cpg", (sys.executable, "-c", script), env=res.env(), pass_fds=res.pass_fds, ready_timeout_s=5.0)
        )
        sup.start()
        assert sup.child("cpg").ready
        assert os.eventfd_read(res.bells["totem"]) == 5
        assert "{ready_fd}" in res.env()[NODE_ENV], "the placeholder is filled per child, not in the plan"
    finally:
        res.close()


def test_segments_are_created_after_the_stale_ones_are_removed_and_unlinked_at_stop(tmp_path: Path, make_node) -> None:
    prefix = unique_prefix("seg") + "-"
    seg = Path("/dev/shm") / (prefix.lstrip("/") + "rings")
    seg.write_bytes(b"stale")

    def create() -> None:
        assert not seg.exists(), "stale segments go first"
        seg.write_bytes(b"fresh")

    sup = make_node(spec("A", tmp_path / "ev"), shm_prefix=prefix, create_segments=create)
    sup.start()
    assert seg.read_bytes() == b"fresh"
    sup.stop()
    assert not seg.exists()
