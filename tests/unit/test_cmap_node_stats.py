"""Stats-map providers fed by the node's shared memory (totem stats block, node stats table)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from pycorosync.engine.config.types import ValueType
from pycorosync.engine.totem.stats import COUNTER_NAMES
from pycorosync.ipc.stats import StatsTable
from pycorosync.services.cmap.node_stats import StatsTableLink, srp_provider
from pycorosync.services.cmap.stats_map import StatsMap

REFERENCE_SRP = {
    "avg_backlog_calc", "avg_token_workload", "commit_entered", "commit_token_lost", "consensus_timeouts",
    "continuous_gather", "firewall_enabled_or_nic_failure", "gather_entered", "gather_token_lost", "mcast_retx",
    "mcast_rx", "mcast_tx", "memb_commit_token_rx", "memb_commit_token_tx", "memb_join_rx", "memb_join_tx",
    "memb_merge_detect_rx", "memb_merge_detect_tx", "mtt_rx_token", "operational_entered", "operational_token_lost",
    "orf_token_rx", "orf_token_tx", "recovery_entered", "recovery_token_lost", "rx_msg_dropped",
    "token_hold_cancel_rx", "token_hold_cancel_tx",
}


def test_srp_keys_come_from_the_totem_stats_block_with_corosyncs_names_and_types() -> None:
    block = np.zeros(128, np.int64)
    block[COUNTER_NAMES.index("mcast_tx")] = 22
    block[COUNTER_NAMES.index("continuous_gather")] = 4
    stats = StatsMap()
    stats.register("stats.srp.", srp_provider(block, COUNTER_NAMES))
    assert stats.get("stats.srp.mcast_tx") == (ValueType.UINT64, 22)
    assert stats.get("stats.srp.continuous_gather") == (ValueType.UINT32, 4)
    assert stats.get("stats.srp.firewall_enabled_or_nic_failure") == (ValueType.UINT8, 1)
    corosync_names = {k[len("stats.srp."):] for k, _ in stats.items("stats.srp.") if ".pcs_" not in k}
    # every key shown is corosync's; all but continuous_sendmsg_failures and time_since_token_last_received
    assert corosync_names <= REFERENCE_SRP
    assert REFERENCE_SRP - corosync_names == set()
    block[COUNTER_NAMES.index("mcast_tx")] = 23  # computed on read
    assert stats.get("stats.srp.mcast_tx") == (ValueType.UINT64, 23)


@pytest.fixture
def table() -> Iterator[StatsTable]:
    t = StatsTable.create_anonymous(4)
    try:
        yield t
    finally:
        t.close()


def test_global_ipc_keys_add_other_processes_rows_to_this_ones(table: StatsTable) -> None:
    table.set_slot(0, "cpg", 1234)
    table.row(0).set("ipcs.active", 3)
    table.row(0).set("ipcs.closed", 5)
    table.set_slot(1, "cmap", os.getpid())
    table.row(1).set("ipcs.active", 99)  # this process's own row is replaced by its live numbers
    link = StatsTableLink(table)
    assert link.slot == 1
    assert link.global_ipc_rows(own_active=2, own_closed=1) == [
        ("stats.ipcs.global.active", ValueType.UINT64, 5), ("stats.ipcs.global.closed", ValueType.UINT64, 6)]


def test_the_cmap_service_writes_its_ipc_row_and_serves_node_wide_totals(table: StatsTable, tmp_path: object) -> None:
    from pycorosync.cmap import CMAP_MAP_STATS, CmapClient
    from pycorosync.services.cmap.server import run_cmap_service

    table.set_slot(0, "cpg", 1234)
    table.row(0).set("ipcs.active", 3)
    table.set_slot(1, "cmap", os.getpid())
    run_dir = str(tmp_path)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    keys = {"totem.cluster_name": (ValueType.STRING, "t")}
    thread = threading.Thread(target=run_cmap_service, args=(keys, run_dir, 1),
                              kwargs={"stats_table": table, "stop_fd": stop_r, "ready_fd": ready_w})
    thread.start()
    try:
        assert os.read(ready_r, 1) == b"R"
        with CmapClient(run_dir, CMAP_MAP_STATS) as stats:
            assert stats.get_u64("stats.ipcs.global.active") == 4
            deadline = time.monotonic() + 10
            while table.row(1).get("ipcs.active") != 1:
                assert time.monotonic() < deadline, "cmap did not write its stats row"
                time.sleep(0.05)
            assert table.row(1).get("ipcs.requests") >= 1
    finally:
        os.write(stop_w, b"x")
        thread.join(30)
        for fd in (ready_r, stop_r, stop_w):
            os.close(fd)
    assert not thread.is_alive()
