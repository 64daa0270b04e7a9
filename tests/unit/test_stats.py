"""The shm stats table: registry layout, writers from Python and numba, snapshots, versioning."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from numba import njit

from pycorosync.ipc import stats
from pycorosync.ipc.segment import HEADER_BYTES, Segment, SegmentKind, SegmentLayoutError
from pycorosync.ipc.stats import METRICS, Metric, StatsTable
from tests.conftest import unique_prefix


@pytest.fixture
def table() -> Iterator[StatsTable]:
    t = StatsTable.create_anonymous(n_slots=4)
    yield t
    t.close()


def test_registry_names_are_unique_and_columns_follow_their_order() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    assert [stats.column(n) for n in names] == list(range(len(names)))
    with pytest.raises(KeyError, match="no metric 'nope' in the stats registry"):
        stats.column("nope")


def test_registry_covers_every_udp_transport_counter() -> None:
    from pycorosync.transports.udp.counters import COUNTER_NAMES

    missing = [n for n in COUNTER_NAMES if f"transport.{n}" not in {m.name for m in METRICS}]
    assert missing == []


def test_a_duplicate_metric_is_refused() -> None:
    dup = [*METRICS[:2], METRICS[0]]
    with pytest.raises(ValueError, match="defined twice"):
        StatsTable.create_anonymous(2, dup)


def test_rows_are_written_by_name_and_read_in_a_snapshot(table: StatsTable) -> None:
    table.set_slot(1, "cpg", 1234)
    row = table.row(1)
    row.add("ipcs.requests")
    row.add("ipcs.requests", 4)
    row.set("process.rss_bytes", 7 << 20)
    row.add("process.cpu_seconds", 0.25)
    row.add("process.cpu_seconds", 0.5)
    assert row.get("ipcs.requests") == 5
    snap = table.snapshot()
    assert snap.value(1, "ipcs.requests") == 5
    assert snap.value(1, "process.rss_bytes") == 7 << 20
    assert snap.value(1, "process.cpu_seconds") == 0.75
    assert snap.value(0, "ipcs.requests") == 0
    assert snap.slots[1].process == "cpg" and snap.slots[1].pid == 1234
    row.add("ipcs.requests")
    assert snap.value(1, "ipcs.requests") == 5  # a snapshot is a copy


def test_store_copies_a_local_counter_array(table: StatsTable) -> None:
    cols = table.columns(["transport.tx_packets", "transport.rx_packets"])
    table.row(2).store(cols, np.array([10, 20], np.int64))
    assert table.snapshot().row(2)["transport.rx_packets"] == 20


def test_numba_kernels_add_to_the_cells_directly(table: StatsTable) -> None:
    col = stats.column("transport.tx_packets")

    @njit
    def count_packets(cells, slot, n):  # type: ignore[no-untyped-def]
        for _ in range(n):
            cells[slot, col] += 1

    count_packets(table.cells, 3, 1000)
    assert table.snapshot().value(3, "transport.tx_packets") == 1000


def test_slot_reuse_zeroes_the_row_and_counts_restarts(table: StatsTable) -> None:
    table.set_slot(0, "cmap", 10)
    table.row(0).add("ipcs.requests", 3)
    table.set_slot(0, "cmap", 11)  # restarted
    info = table.slot_info(0)
    assert (info.pid, info.restarts) == (11, 1)
    assert table.row(0).get("ipcs.requests") == 0
    table.free_slot(0)
    assert table.slot_info(0).pid == 0
    assert table.find_slot("cmap") == 0 and table.find_slot("cpg") is None
    with pytest.raises(IndexError, match="stats slot 4 out of range"):
        table.row(4)


def test_totals_sum_owned_slots(table: StatsTable) -> None:
    for slot, pid in ((0, 1), (1, 2)):
        table.set_slot(slot, f"p{slot}", pid)
        table.row(slot).add("srp.mcast_tx", 10)
    assert table.snapshot().total("srp.mcast_tx") == 20


def test_another_process_sees_writes_through_the_named_segment() -> None:
    name = unique_prefix("stats") + "-stats"
    writer = StatsTable.create(name, n_slots=2)
    try:
        writer.set_slot(0, "totem", os.getpid())
        writer.row(0).add("srp.orf_token_rx", 42)
        reader = StatsTable.attach(name, writer=False)
        try:
            assert reader.snapshot().value(0, "srp.orf_token_rx") == 42
            assert reader.metrics == tuple(METRICS)
        finally:
            reader.close()
    finally:
        writer.unlink()
        writer.close()


def test_a_reader_of_another_build_reads_by_the_stored_names_but_a_writer_is_refused() -> None:
    other_build = [Metric("custom.thing", "counter", "u64", "things", "a metric this build does not know")]
    t = StatsTable.create_anonymous(1, other_build)
    try:
        t.row(0)._i64[0] = 9
        seg = Segment.attach_fd(os.dup(t.segment.fileno()), SegmentKind.STATS, stats.STATS_LAYOUT_VERSION)
        reader = StatsTable.from_segment(seg, writer=False)
        assert reader.snapshot().value(0, "custom.thing") == 9
        reader.close()
        seg2 = Segment.attach_fd(os.dup(t.segment.fileno()), SegmentKind.STATS, stats.STATS_LAYOUT_VERSION)
        with pytest.raises(SegmentLayoutError, match="differ from this build's registry"):
            StatsTable.from_segment(seg2, writer=True)
    finally:
        t.close()


def test_a_stats_segment_of_another_layout_version_is_refused_with_its_name() -> None:
    name = unique_prefix("stats") + "-stats"
    seg = Segment.create(name, 4096, SegmentKind.STATS, 3)
    try:
        with pytest.raises(SegmentLayoutError, match=f"^{name}: layout version 3, this build reads 1$"):
            StatsTable.attach(name)
    finally:
        seg.unlink()
        seg.close()


def test_the_table_header_is_where_layout_md_says() -> None:
    t = StatsTable.create_anonymous(3)
    try:
        raw = np.frombuffer(t.segment.payload, np.uint8)
        magic, version, n_slots, n_cols = struct.unpack_from("<IIII", raw, 0)
        assert (magic, version, n_slots, n_cols) == (stats.STATS_MAGIC, 1, 3, len(METRICS))
        assert t.segment.size >= HEADER_BYTES
        del raw
    finally:
        t.close()
