"""``system.sched_rr`` / ``system.priority`` / ``system.sched_batch``: what the config asks for, and what a process gets.

``apply`` changes the calling process, so it runs in a forked child that reports its scheduling back.
"""

from __future__ import annotations

import json
import logging
import os
import select

import pytest

from pycorosync.engine.supervisor import sched
from pycorosync.engine.supervisor.sched import Scheduling
from tests.unit.forked import forked_report

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="realtime scheduling and negative nice need root")


def test_the_config_keys_map_to_corosyncs_meaning() -> None:
    assert Scheduling.from_keys({}) == Scheduling(True, None), "corosync's default: sched_rr yes"
    assert Scheduling.from_keys({"system.sched_rr": "no"}) == Scheduling(False, None, batch=True)
    assert Scheduling.from_keys({"system.sched_rr": "no", "system.sched_batch": "no"}) == Scheduling(False, None, False)
    assert Scheduling.from_keys({"system.sched_rr": "no", "system.priority": "max"}).priority == -20
    assert Scheduling.from_keys({"system.sched_rr": "no", "system.priority": "min"}).priority == 19
    assert Scheduling.from_keys({"system.sched_rr": "no", "system.priority": "-7"}).priority == -7
    with pytest.raises(ValueError, match=r"nice level -20\.\.19"):
        Scheduling.from_keys({"system.priority": "20"})


def _in_child(scheduling: Scheduling, uid: int | None = None) -> dict[str, object]:
    """Runs ``apply`` in a forked child (as ``uid`` if given): its answer, policy, priorities, warnings."""

    def body() -> str:
        warnings: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                warnings.append(record.getMessage())

        logging.getLogger("pycorosync.main").addHandler(Keep(logging.WARNING))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        said = sched.apply(scheduling)
        return json.dumps({"said": said, "policy": os.sched_getscheduler(0),
                           "rt_priority": os.sched_getparam(0).sched_priority,
                           "nice": os.getpriority(os.PRIO_PROCESS, 0), "warnings": warnings})

    text = forked_report(body, 30)
    assert text.startswith("{"), text
    result: dict[str, object] = json.loads(text)
    return result


@needs_root
def test_sched_rr_gives_round_robin_realtime_at_the_highest_priority() -> None:
    got = _in_child(Scheduling(True, None))
    top = os.sched_get_priority_max(os.SCHED_RR)
    assert (got["policy"], got["rt_priority"], got["warnings"]) == (os.SCHED_RR, top, [])
    assert got["said"] == f"SCHED_RR at priority {top}"


@needs_root
def test_without_sched_rr_the_priority_is_a_nice_level() -> None:
    got = _in_child(Scheduling(False, -5))
    assert (got["policy"], got["nice"], got["warnings"]) == (os.SCHED_BATCH, -5, [])
    assert got["said"] == "SCHED_BATCH at nice -5"
    got = _in_child(Scheduling(False, -5, batch=False))
    assert (got["policy"], got["nice"], got["warnings"]) == (os.SCHED_OTHER, -5, [])
    got = _in_child(Scheduling(False, None, batch=False))
    assert (got["policy"], got["nice"]) == (os.SCHED_OTHER, os.getpriority(os.PRIO_PROCESS, 0))


def test_without_sched_rr_the_node_runs_sched_batch_which_needs_no_rights() -> None:
    got = _in_child(Scheduling(False, None), uid=NOBODY if os.geteuid() == 0 else None)
    assert (got["policy"], got["warnings"]) == (os.SCHED_BATCH, [])
    assert got["nice"] == os.getpriority(os.PRIO_PROCESS, 0), "the nice level is kept"
    got = _in_child(Scheduling(False, 10), uid=NOBODY if os.geteuid() == 0 else None)
    assert (got["policy"], got["nice"], got["said"]) == (os.SCHED_BATCH, 10, "SCHED_BATCH at nice 10")


@needs_root
def test_a_refused_sched_rr_is_logged_as_corosync_does_and_falls_back_to_nice_minus_20() -> None:
    got = _in_child(Scheduling(True, None), uid=NOBODY)  # an unprivileged node: both are refused
    assert got["policy"] == os.SCHED_BATCH, "it still gets what needs no rights"
    warnings = got["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 2, warnings
    top = os.sched_get_priority_max(os.SCHED_RR)
    assert warnings[0].startswith(f"Could not set SCHED_RR at priority {top}: ")
    assert warnings[1].startswith("Could not set priority -20: ")
    # a higher nice level needs no rights
    got = _in_child(Scheduling(False, 10), uid=NOBODY)
    assert (got["nice"], got["warnings"]) == (10, [])


@needs_root
def test_drop_realtime_puts_a_child_back_to_ordinary_scheduling() -> None:
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
            select.select([], [], [], 30)
        finally:
            os._exit(0)
    try:
        for _ in range(1000):
            if os.sched_getscheduler(pid) == os.SCHED_RR:
                break
            select.select([], [], [], 0.01)
        assert os.sched_getscheduler(pid) == os.SCHED_RR
        sched.drop_realtime(pid)
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    sched.drop_realtime(pid)  # gone: nothing happens
