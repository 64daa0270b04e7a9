"""Producer and consumer in two processes: every record arrives, in order, byte for byte."""

from __future__ import annotations

import pytest

from tests.unit.peer_procs import result, shared_ring


@pytest.mark.parametrize(
    ("capacity", "count", "max_len"),
    [
        (1 << 20, 2_000_000, 200),  # millions of small records through a roomy ring
        (4096, 200_000, 1500),  # a small ring: constant wraps, full ring, producer sleeps
    ],
    ids=["1MiB-2M-records", "4KiB-ring-wraps"],
)
def test_records_cross_processes_in_order_without_loss(capacity: int, count: int, max_len: int) -> None:
    with shared_ring("xproc", capacity) as shared:
        consumer = shared.spawn("consumer", count=count, max_len=max_len)
        producer = shared.spawn("producer", count=count, max_len=max_len)
        sent = result(producer, timeout=120)
        got = result(consumer, timeout=120)
    assert sent["sent"] == count
    assert got["bad_seq"] == -1, f"record {got['bad_seq']} arrived wrong"
    assert got["received"] == count
    assert (sent["timeouts"], got["timeouts"]) == (0, 0), "a sleeper was not woken"
