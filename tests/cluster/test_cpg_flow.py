"""End-to-end flow control of CPG: a client that stops reading slows the ring for a bounded time, then
is disconnected; nothing accepted is lost for the others and nothing is buffered without bound."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.cluster.conftest import Cluster
from tests.cluster.test_cpg import Worker, group, joined_all, workers  # noqa: F401  (group, workers: fixtures)


def test_client_that_stops_reading_is_disconnected_and_the_others_get_every_message(
        cluster3: Cluster, workers: Callable[..., Worker]) -> None:  # noqa: F811
    from pycorosync.services.cpg.service import EVENT_RING_BYTES, SLOW_CLIENT_GRACE_S, SLOW_CLIENT_RECORDS

    ws = joined_all(cluster3, workers)
    stalled = workers(cluster3, 2)
    stalled.join()
    stalled.command("stall")
    stalled.wait(lambda e: e["ev"] == "stalled")
    size = 256 * 1024
    count = 2 * (EVENT_RING_BYTES + SLOW_CLIENT_RECORDS * size) // size  # twice what the stalled one may hold
    t0 = time.monotonic()
    ws[0].command(f"send {count} {size}")
    chains = [w.deliveries(count, timeout=180)[count - 1]["chain"] for w in ws]
    took = time.monotonic() - t0
    assert chains[0] == chains[1] == chains[2]  # none lost, one order
    # flow control held the ring for the stalled client at most about its grace period
    assert took < SLOW_CLIENT_GRACE_S + 60
    log = (cluster3.nodes[2].log_path).read_text(errors="replace")
    assert "read no event" in log and "disconnected" in log
    stalled.command("members")  # its handle is gone: the library reports the lost service
    with pytest.raises(AssertionError, match="exited"):
        stalled.wait(lambda e: e["ev"] == "members", timeout=30)
