"""A restarted cpg service process: the whole cluster's group view is made right again by a new sync
round of the same ring (SERVICE_BUILD), not left with the dead process's clients as ghosts."""

from __future__ import annotations

import time
from collections.abc import Callable

from pycorosync.cpg import CPG_REASON_PROCDOWN
from tests.cluster.conftest import Cluster
from tests.cluster.test_cpg import Worker, group, joined_all, workers  # noqa: F401  (group, workers: fixtures)


def _restarted_worker(cluster: Cluster, make: Callable[..., Worker], nodeid: int, old_pid: int,
                      timeout: float = 60.0) -> Worker:
    """A worker on ``nodeid`` once its cpg service runs again under a new pid and takes clients."""
    deadline = time.monotonic() + timeout
    while True:
        pid = cluster.nodes[nodeid].child_pid("cpg")
        if pid is not None and pid != old_pid:
            try:
                return make(cluster, nodeid)
            except AssertionError:  # the worker could not connect yet (socket not there): try again
                if time.monotonic() > deadline:
                    raise
        assert time.monotonic() < deadline, f"the cpg service of node {nodeid} was not restarted"
        time.sleep(0.1)


def test_restarted_cpg_service_resyncs_so_no_node_keeps_ghost_members(
        cluster3: Cluster, workers: Callable[..., Worker]) -> None:  # noqa: F811
    ws = joined_all(cluster3, workers)
    old_cpg = cluster3.nodes[3].child_pid("cpg")
    assert old_cpg is not None
    cluster3.nodes[3].kill_child("cpg")
    # the dead service's client is gone with it: every other node sees it leave
    for w in ws[:2]:
        e = w.wait(lambda e: e["ev"] == "confchg" and bool(e["left"]), timeout=60)
        assert e["left"] == [[3, ws[2].pid, CPG_REASON_PROCDOWN]]
    back = _restarted_worker(cluster3, workers, 3, old_cpg)
    back.join()
    for w in ws[:2]:
        e = w.wait(lambda e: e["ev"] == "confchg" and bool(e["joined"]), timeout=30)
        assert e["joined"][0][:2] == [3, back.pid]
    # the restarted service learned the other nodes' members in the resync: every view is the same
    expected = [[1, ws[0].pid], [2, ws[1].pid], [3, back.pid]]
    for w in (ws[0], ws[1], back):
        w.command("members")
        assert sorted(w.wait(lambda e: e["ev"] == "members")["members"]) == expected
