"""cmap inside real nodes: membership keys, sync, link stats, local reads, a restarted cmap process."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pycorosync.cmap import CMAP_MAP_STATS, CmapClient, ValueType
from tests.cluster.conftest import wait_until


def test_members_and_links_of_a_two_node_ring_show_in_cmap(make_cluster: Callable[..., Any]) -> None:
    cluster = make_cluster(2)
    node1 = cluster.nodes[1]
    with CmapClient(str(node1.run_dir)) as cmap, CmapClient(str(node1.run_dir), CMAP_MAP_STATS) as stats:
        assert cmap._view is not None  # local reads inside a node too
        wait_until(lambda: cmap.get_string("runtime.members.2.status") == "joined", 10, "node 2 joined")
        assert cmap.get_string("runtime.members.1.ip") == f"r(0) ip({node1.address}) "
        assert cmap.get_u32("runtime.members.2.join_count") == 1
        assert cmap.get("runtime.members.1.config_version") == (0, ValueType.UINT64)
        # from cmap's sync: every member's totem.config_version
        wait_until(lambda: cmap.get("runtime.members.2.config_version") == (0, ValueType.UINT64), 10,
                   "node 2's config_version")
        wait_until(lambda: stats.get_u8("stats.knet.node2.link0.connected") == 1, 10, "link to node 2")
        assert stats.get_u64("stats.knet.node2.link0.rx_total_packets") > 0
        cluster.nodes[2].stop()
        wait_until(lambda: cmap.get_string("runtime.members.2.status") == "left", 30, "node 2 left")
        cluster.nodes[2].start()
        wait_until(lambda: cmap.get_u32("runtime.members.2.join_count") == 2, 60, "node 2 rejoined")
        assert cmap.get_string("runtime.members.2.status") == "joined"
        # config reload inside the node (what cfgtool -R asks of every node): file keys change,
        # runtime keys stay
        conf = node1.config_path
        conf.write_text(re.sub(r"\btoken: \d+", "token: 450", conf.read_text(), count=1))
        with CmapClient(str(node1.run_dir), engine=True) as cfg:
            assert cfg.reload() == ""
        assert cmap.get_u32("totem.token") == 450
        assert cmap.get_string("runtime.members.2.status") == "joined"
        # a killed cmap process: its clients lose it, the supervisor restarts it, and the new one
        # learns the configuration in force again (totem answers its hello with the current ring)
        node1.kill_child("cmap")
        wait_until(lambda: not cmap.service_alive(), 10, "the old connection failing")

    def restarted() -> bool:
        with CmapClient(str(node1.run_dir)) as fresh:
            return (fresh.get_string("runtime.members.2.status") == "joined"
                    and fresh.get("runtime.members.2.config_version") == (0, ValueType.UINT64)
                    and fresh.get_u32("totem.token") > 0)

    wait_until(restarted, 60, "a restarted cmap with the membership")
