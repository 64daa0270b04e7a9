"""CPG on real 3-node clusters on loopback: joins, leaves, order, crashes, restarts, large messages."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from pycorosync.cpg import (
    CPG_REASON_JOIN,
    CPG_REASON_LEAVE,
    ConfChg,
    CpgAddress,
    CpgClient,
    CpgEvent,
    CsError,
    CsErrorCode,
)
from tests.cluster.conftest import Cluster

GROUP = b"cluster-test"


def cpg(cluster: Cluster, nodeid: int) -> CpgClient:
    return CpgClient(str(cluster.nodes[nodeid].run_dir), timeout=10.0)


def next_of(c: CpgClient, kind: type, timeout: float = 15.0, keep: list[CpgEvent] | None = None) -> CpgEvent:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        event = c.next_event(max(0.0, left))
        assert event is not None, f"no {kind.__name__} within {timeout}s (kept {keep})"
        if keep is not None:
            keep.append(event)
        if isinstance(event, kind):
            return event


def send(c: CpgClient, msg: bytes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            c.mcast_joined(msg)
            return
        except CsError as exc:
            if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.002)


def join(c: CpgClient, group: bytes = GROUP, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            c.join(group)
            return
        except CsError as exc:
            if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


@pytest.fixture
def clients() -> Iterator[Callable[[CpgClient], CpgClient]]:
    with ExitStack() as stack:
        yield lambda c: stack.enter_context(c)


def test_join_and_leave_are_seen_on_every_node_in_the_same_order(
        cluster3: Cluster, clients: Callable[[CpgClient], CpgClient]) -> None:
    handles = {n: clients(cpg(cluster3, n)) for n in (1, 2, 3)}
    for n in (1, 2, 3):
        join(handles[n])
        next_of(handles[n], ConfChg)  # its own join
    # every node's handle saw the later joins: node 1 saw 2 and 3 join, in one order
    seen1 = [next_of(handles[1], ConfChg), next_of(handles[1], ConfChg)]
    seen2 = [next_of(handles[2], ConfChg)]
    assert [e.joined[0].nodeid for e in seen1] == [2, 3]  # type: ignore[union-attr]
    assert seen2[0] == seen1[1]
    members = handles[3].membership_get()
    assert [(a.nodeid, a.pid) for a in members] == [(m.nodeid, m.pid) for m in seen1[1].members]  # type: ignore[union-attr]
    handles[2].leave()
    left = [next_of(handles[n], ConfChg) for n in (1, 2, 3)]
    assert left[0] == left[1] == left[2]
    assert left[0].left == (CpgAddress(2, os.getpid(), CPG_REASON_LEAVE),)  # type: ignore[union-attr]
    assert all(a.reason == 0 for a in left[0].members)  # type: ignore[union-attr]
    assert handles[1].local_get() == 1 and handles[3].local_get() == 3
    assert CPG_REASON_JOIN == 1
