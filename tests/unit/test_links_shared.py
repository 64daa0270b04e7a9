"""The transport's link table as the cfg service reads it: by name, afresh each time, and never fatal."""

from __future__ import annotations

import os
import time

from pycorosync.ipc import segment as shm
from pycorosync.services.cfg.status import LinkTableReader
from pycorosync.transports import links
from pycorosync.transports.udp.node import shared_link_table


def test_the_cfg_reader_sees_what_the_transport_marks_connected() -> None:
    cluster = f"test{os.getpid()}lk"
    reader = LinkTableReader(cluster, 1)
    assert reader.heard() is None  # no transport yet: unknown, not an error
    table, seg = shared_link_table(cluster, 1, [3, 1, 2])
    try:
        now = time.monotonic_ns()
        table.table[1, links.COL_LAST_HEARD_NS] = now  # node 2 heard just now, node 3 long ago
        table.table[2, links.COL_LAST_HEARD_NS] = now - 5_000_000_000
        table.update_connected(now, 1_000_000_000)
        assert reader.heard() == {1: False, 2: True, 3: False}
    finally:
        del table
        seg.close()
        shm.unlink(shm.segment_name(cluster, 1, "links"))


def test_a_restarted_transport_makes_a_fresh_table_that_the_reader_follows() -> None:
    cluster = f"test{os.getpid()}lr"
    reader = LinkTableReader(cluster, 1)
    table, seg = shared_link_table(cluster, 1, [1, 2])
    try:
        table.table[1, links.COL_CONNECTED] = 1
        assert reader.heard() == {1: False, 2: True}
        del table
        seg.close()
        table, seg = shared_link_table(cluster, 1, [1, 2])  # the old incarnation's numbers are gone
        assert reader.heard() == {1: False, 2: False}
    finally:
        del table
        seg.close()
        shm.unlink(shm.segment_name(cluster, 1, "links"))
