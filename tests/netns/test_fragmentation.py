"""A ring whose commit token is longer than the links' MTU: the UDP transport sends such a control frame whole
and the kernel cuts it into real IP fragments (veths with MTU 400 here), as corosync's udpu does. Without it
a cluster of more than 31 nodes could never form a ring at MTU 1500 (the commit token carries 45 bytes per
node); seven nodes at netmtu 400 need the same."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pycorosync.engine.totem.wire import COMMIT_BODY, COMMIT_ENTRY, HEADER
from pycorosync.localcluster import Cluster
from pycorosync.netlab import NetnsLab
from pycorosync.transports.udp.transport import HOUSEKEEPING_S
from tests.cluster.conftest import EchoClient
from tests.cluster.test_stats_columns import table_value
from tests.netns.test_faults import _assert_one_order, _close, _send_interleaved

pytestmark = pytest.mark.timeout(420)

MakeCluster = Callable[..., tuple[Cluster, NetnsLab]]
NODES = list(range(1, 8))
MTU = 400
FRAME_BYTES = MTU - 28 - 32  # IPv4 + UDP headers, the transport's header, no crypto


def test_a_commit_token_longer_than_the_link_mtu_goes_in_ip_fragments_and_seven_nodes_form_one_ring(
    netns_cluster: MakeCluster,
) -> None:
    commit_bytes = HEADER.size + COMMIT_BODY.size + len(NODES) * COMMIT_ENTRY.size
    assert commit_bytes > FRAME_BYTES, "the test needs a commit token longer than one frame"
    cluster, lab = netns_cluster(len(NODES), mtu=MTU, totem={"netmtu": MTU})
    senders = (1, 4, 7)
    clients = {i: EchoClient(cluster.nodes[i]) for i in NODES}
    try:
        _send_interleaved(clients, senders, 40, b"frag")
        _assert_one_order(clients, senders, 40, b"frag")

        def counter(i: int, name: str) -> int:
            return int(table_value(cluster.name, i, "transport", f"transport.{name}"))

        # every member forwards the commit token (twice round the ring): each one sent large frames. A
        # transport publishes its counters every HOUSEKEEPING_S, at most two intervals late: the last
        # commit token may have gone round just now
        deadline = time.monotonic() + 10 * HOUSEKEEPING_S
        while not all(large := {i: counter(i, "tx_large_frames") for i in NODES}.values()):
            assert time.monotonic() < deadline, f"transports that sent no frame longer than netmtu: {large}"
            time.sleep(0.05)
        assert not any(counter(i, "tx_drop_oversized") for i in NODES)
        assert not any(counter(i, "rx_drop_oversized") for i in NODES)
        ip = {i: lab.ip_stats(i) for i in NODES}
        assert all(s["FragCreates"] > 0 for s in ip.values()), f"no IP fragments made: {ip}"
        assert all(s["ReasmOKs"] > 0 for s in ip.values()), f"no datagram reassembled: {ip}"
        print(f"netns MTU {MTU}: commit token {commit_bytes} bytes > {FRAME_BYTES}; large frames sent {large}; "
              f"IP fragments made {[s['FragCreates'] for s in ip.values()]}")
    finally:
        _close(clients)

