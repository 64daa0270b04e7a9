"""runtime.members.* kept from the membership, and stats.knet.* rows from the transport's link table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pycorosync.engine.config.types import ValueType
from pycorosync.services.cmap.engine import Icmap
from pycorosync.services.cmap.members import STATUS_FILE, MembershipKeys, member_ip_string
from pycorosync.services.cmap.node_stats import link_rows, pg_provider
from pycorosync.transports import links


def icmap_with_nodelist() -> Icmap:
    icmap = Icmap()
    for pos, (nodeid, addr) in enumerate([(1, "10.0.0.1"), (2, "10.0.0.2"), (3, "10.0.0.3")]):
        icmap.set(f"nodelist.node.{pos}.nodeid", ValueType.UINT32, nodeid, internal=True)
        icmap.set(f"nodelist.node.{pos}.ring0_addr", ValueType.STRING, addr, internal=True)
    icmap.set("nodelist.node.1.ring1_addr", ValueType.STRING, "192.168.0.2", internal=True)
    icmap.set("totem.config_version", ValueType.UINT64, 4, internal=True)
    return icmap


def value(icmap: Icmap, key: str) -> object:
    return icmap.get(key)[1]


def test_ip_string_lists_every_link_of_the_node_as_corosync_does() -> None:
    icmap = icmap_with_nodelist()
    assert member_ip_string(icmap, 1) == "r(0) ip(10.0.0.1) "
    assert member_ip_string(icmap, 2) == "r(0) ip(10.0.0.2) r(1) ip(192.168.0.2) "
    assert member_ip_string(icmap, 9) == ""


def test_joins_count_up_leaves_mark_left_and_the_own_config_version_is_kept() -> None:
    icmap = icmap_with_nodelist()
    keys = MembershipKeys(icmap, nodeid=1)
    keys.apply([1, 2, 3])
    assert value(icmap, "runtime.members.2.status") == "joined"
    assert icmap.get("runtime.members.2.join_count") == (ValueType.UINT32, 1)
    assert value(icmap, "runtime.members.3.ip") == "r(0) ip(10.0.0.3) "
    assert icmap.get("runtime.members.1.config_version") == (ValueType.UINT64, 4)
    assert "runtime.members.2.config_version" not in icmap  # needs cmap's sync (not built)
    keys.apply([1, 2])
    assert value(icmap, "runtime.members.3.status") == "left"
    assert value(icmap, "runtime.members.3.join_count") == 1
    keys.apply([1, 2, 3])
    assert value(icmap, "runtime.members.3.status") == "joined"
    assert value(icmap, "runtime.members.3.join_count") == 2
    assert value(icmap, "runtime.members.1.join_count") == 1


def test_the_totem_status_file_is_read_when_it_changes_and_garbage_is_skipped(tmp_path: Path) -> None:
    icmap = icmap_with_nodelist()
    keys = MembershipKeys(icmap, nodeid=1)
    status = tmp_path / STATUS_FILE
    assert keys.poll_status_file(tmp_path) is False  # no totem yet
    status.write_text(json.dumps({"nodeid": 1, "members": [1, 2], "ring_id": [1, 8]}))
    assert keys.poll_status_file(tmp_path) is True
    assert keys.poll_status_file(tmp_path) is False  # unchanged
    assert value(icmap, "runtime.members.2.status") == "joined"
    status.write_text("{not json")
    os.utime(status, ns=(1, 1))
    assert keys.poll_status_file(tmp_path) is False
    assert keys.bad_status_files == 1
    status.write_text(json.dumps({"nodeid": 1, "members": [1]}))
    os.utime(status, ns=(2, 2))
    assert keys.poll_status_file(tmp_path) is True
    assert value(icmap, "runtime.members.2.status") == "left"


def test_link_table_rows_become_corosync_knet_link_keys() -> None:
    table = links.LinkTable.local([1, 2])
    table.table[1, links.COL_RX_PACKETS] = 10
    table.table[1, links.COL_RX_BYTES] = 1000
    table.table[1, links.COL_TX_PACKETS] = 7
    table.table[1, links.COL_CONNECTED] = 1
    rows = {k: (t, v) for k, t, v in link_rows(np.asarray(table.table))}
    assert rows["stats.knet.node2.link0.connected"] == (ValueType.UINT8, 1)
    assert rows["stats.knet.node2.link0.rx_total_packets"] == (ValueType.UINT64, 10)
    assert rows["stats.knet.node2.link0.rx_total_bytes"] == (ValueType.UINT64, 1000)
    assert rows["stats.knet.node2.link0.tx_total_packets"] == (ValueType.UINT64, 7)
    assert rows["stats.knet.node1.link0.connected"] == (ValueType.UINT8, 0)
    assert rows["stats.knet.node1.link0.enabled"] == (ValueType.UINT8, 1)


def test_pg_keys_appear_only_when_the_totem_runtime_publishes_its_send_queue() -> None:
    block = np.zeros(128, np.int64)
    assert pg_provider(block, 96, ("frames_rx", "ring_seq")) is None  # today's runtime: no stats.pg.* keys
    block[96 + 2] = 17
    block[96 + 3] = 2
    rows = pg_provider(block, 96, ("frames_rx", "ring_seq", "msg_queue_avail", "msg_reserved"))
    assert rows is not None
    assert rows() == [("stats.pg.msg_queue_avail", ValueType.UINT32, 17),
                      ("stats.pg.msg_reserved", ValueType.UINT32, 2)]
