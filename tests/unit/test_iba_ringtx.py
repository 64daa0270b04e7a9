"""The verbs transport's ring kernels against the ring's own scan: same records, and the head freed exactly
up to a chosen record (what lets a posted record stay put until its send completes)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from pycorosync.ipc.ring import Ring
from pycorosync.ipc.ring_kernels import record_bytes, ring_scan
from pycorosync.transports.iba.ringtx import SCAN_COLUMNS, publish_head_to, scan_records

CAP = 1 << 12


def _ring_with(records: list[tuple[int, bytes]], skip: int) -> Ring:
    ring = Ring.create(np.zeros(Ring.layout_bytes(CAP), np.uint8), CAP, label="tx")
    for _ in range(skip):  # move the positions so that records wrap around the end
        assert ring.push(1, bytes(200))
        assert ring.pop() is not None
    for rtype, body in records:
        assert ring.push(rtype, body)
    return ring


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.tuples(st.integers(0, 9), st.binary(min_size=0, max_size=300)), min_size=1, max_size=10),
    skip=st.integers(0, 25),
    keep=st.integers(0, 10),
)
def test_scan_records_matches_ring_scan_and_frees_exactly_up_to_a_record(
        records: list[tuple[int, bytes]], skip: int, keep: int) -> None:
    ring = _ring_with(records, skip)
    twin = _ring_with(records, skip)
    out = np.zeros((16, SCAN_COLUMNS), np.int64)
    n = scan_records(ring.array, ring.offset, ring.capacity, out)
    ref = np.zeros((16, 3), np.int64)
    m = ring_scan(twin.array, twin.offset, twin.capacity, ref)
    assert n == m == len(records)
    assert (out[:n, :3] == ref[:m]).all()
    for k, (rtype, body) in enumerate(records):
        hdr, typ, ln = (int(v) for v in out[k, :3])
        assert (typ, ln) == (rtype, len(body))
        assert bytes(ring.array[hdr + 8 : hdr + 8 + ln]) == body
    used = ring.used_bytes()
    assert used >= sum(record_bytes(len(b)) for _t, b in records)  # nothing freed by the scan
    done = min(keep, n)
    if done:
        publish_head_to(ring.array, ring.offset, int(out[done - 1, 3]))
    still = ring.used_bytes()
    assert still <= used
    if done == n:
        assert still == 0
    else:
        # what is left starts at the first record not released
        assert still >= sum(record_bytes(len(b)) for _t, b in records[done:])
    assert scan_records(ring.array, ring.offset, ring.capacity, out) == 0  # each record is scanned once
