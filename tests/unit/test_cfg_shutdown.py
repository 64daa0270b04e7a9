"""The cfg shutdown tracking protocol (services/cfg/shutdown.py), as corosync's exec/cfg.c runs it."""

from __future__ import annotations

from pycorosync.ipc.errors import CS_OK, CsErrorCode
from pycorosync.services.cfg.protocol import (
    COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE,
    COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS,
    COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST,
)
from pycorosync.services.cfg.shutdown import (
    AskTrackers,
    CancelTimer,
    Respond,
    SendShutdown,
    ShutdownTracker,
    StartTimer,
)

BUSY = int(CsErrorCode.CS_ERR_BUSY)
REQUEST, REGARDLESS, IMMEDIATE = (
    COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST, COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS, COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE)


def test_without_trackers_a_request_is_granted_at_once() -> None:
    t = ShutdownTracker()
    assert t.try_shutdown(1, REQUEST, 5000) == [Respond(1, CS_OK), SendShutdown()]
    assert not t.in_progress


def test_every_tracker_but_the_requester_is_asked_and_all_yes_grants_it() -> None:
    t = ShutdownTracker()
    for c in (1, 2, 3):
        t.track_start(c)
    assert t.try_shutdown(3, REQUEST, 5000) == [StartTimer(5000), AskTrackers((1, 2), REQUEST, CS_OK)]
    assert t.reply(1, True) == (CS_OK, [])
    assert t.reply(2, True) == (CS_OK, [CancelTimer(), Respond(3, CS_OK), SendShutdown()])


def test_one_no_refuses_the_request_with_busy() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.track_start(2)
    t.try_shutdown(9, REQUEST, 5000)
    t.reply(1, False)
    assert t.reply(2, True)[1] == [CancelTimer(), Respond(9, BUSY)]


def test_silence_until_the_timeout_counts_as_no_and_trackers_hear_of_the_timeout() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.try_shutdown(9, REQUEST, 100)
    assert t.timer_expired() == [CancelTimer(), Respond(9, BUSY),
                                 AskTrackers((1,), REQUEST, int(CsErrorCode.CS_ERR_TIMEOUT))]


def test_regardless_goes_down_once_everyone_answered_even_no() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.try_shutdown(9, REGARDLESS, 5000)
    assert t.reply(1, False)[1] == [CancelTimer(), Respond(9, CS_OK), SendShutdown()]


def test_regardless_goes_down_at_the_timeout_when_someone_is_silent() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.try_shutdown(9, REGARDLESS, 5000)
    assert t.timer_expired()[:3] == [CancelTimer(), Respond(9, CS_OK), SendShutdown()]


def test_immediate_asks_nobody() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    assert t.try_shutdown(9, IMMEDIATE, 5000) == [Respond(9, CS_OK), SendShutdown()]


def test_a_second_request_while_one_is_open_gets_exist() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.try_shutdown(8, REQUEST, 5000)
    assert t.try_shutdown(9, REQUEST, 5000) == [Respond(9, int(CsErrorCode.CS_ERR_EXIST))]


def test_a_tracker_that_leaves_counts_as_yes_even_after_saying_no() -> None:
    t = ShutdownTracker()
    for c in (1, 2, 3):
        t.track_start(c)
    t.try_shutdown(9, REQUEST, 5000)
    t.reply(1, False)
    t.reply(2, True)
    assert t.track_stop(1) == []  # its no became a yes; tracker 3 still has to answer
    assert t.lib_exit(3) == [CancelTimer(), Respond(9, CS_OK), SendShutdown()]


def test_a_requester_that_disconnects_cancels_its_request() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.try_shutdown(9, REQUEST, 5000)
    assert t.lib_exit(9) == [CancelTimer()]
    assert not t.in_progress
    assert t.reply(1, True) == (int(CsErrorCode.CS_ERR_ACCESS), [])


def test_a_tracker_joining_during_a_request_is_asked_too() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.try_shutdown(9, REQUEST, 5000)
    assert t.track_start(2) == [AskTrackers((2,), REQUEST, CS_OK)]
    t.reply(1, True)
    assert t.reply(2, True)[1][-1] == SendShutdown()


def test_double_answers_and_strangers_do_not_count() -> None:
    t = ShutdownTracker()
    t.track_start(1)
    t.track_start(2)
    t.try_shutdown(9, REQUEST, 5000)
    assert t.reply(1, True) == (CS_OK, [])
    assert t.reply(1, True) == (CS_OK, [])
    assert t.reply(7, True) == (CS_OK, [])
    assert t.in_progress
