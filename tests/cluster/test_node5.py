"""Five real nodes on loopback: the ring forms, crashes of one and of two nodes at once are agreed on by the
survivors within token + consensus, the crashed nodes rejoin, a SIGTERM is a leave (seen before any crash
could be), and three concurrent senders are delivered in one order everywhere."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import time
from collections.abc import Callable

import pytest

from tests.cluster.conftest import Cluster, EchoClient, order_chain, wait_regular

pytestmark = pytest.mark.timeout(300)

# scheduling slack on a shared 2-core machine running 35 node processes: the protocol bound is token + consensus
SLACK_S = 1.5


def _crash(cluster: Cluster, *ids: int) -> float:
    """SIGKILL of every process of the given nodes at once (children first); returns the time of the first kill."""
    pids = [(i, cluster.nodes[i].pids()) for i in ids]
    t0 = time.monotonic()
    for _i, by_name in pids:
        for _name, pid in sorted(by_name.items(), key=lambda kv: kv[0] == "supervisor"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for i in ids:
        cluster.nodes[i].kill()  # reaps the daemon and any stray
    return t0


def _clients(cluster: Cluster, ids: list[int]) -> dict[int, EchoClient]:
    return {i: EchoClient(cluster.nodes[i]) for i in ids}


def _close(clients: dict[int, EchoClient]) -> None:
    for client in clients.values():
        client.close()


def test_five_nodes_form_one_ring_and_three_concurrent_senders_are_delivered_in_one_order(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(5)
    ring = cluster.ring_of([1, 2, 3, 4, 5])
    assert ring is not None
    clients = _clients(cluster, [1, 2, 3, 4, 5])
    senders = (1, 3, 5)
    per_sender = 200
    try:
        # interleaved submits: the three senders' messages compete for the same token rotations
        for k in range(per_sender):
            for i in senders:
                clients[i].mcast(struct.pack("<II", i, k) + os.urandom(k % 300))
        total = per_sender * len(senders)
        for client in clients.values():
            client.wait_delivered(total, timeout=90)
        chains = {i: order_chain(c.delivered) for i, c in clients.items()}
        assert len(set(chains.values())) == 1, f"the nodes delivered different sequences: {chains}"
        for i, client in clients.items():
            for s in senders:
                seqs = [struct.unpack_from("<II", b)[1] for sender, _r, b in client.delivered if sender == s]
                assert seqs == list(range(per_sender)), f"node {i}: node {s}'s messages lost or out of order"
            assert {tuple(r) for _s, r, _b in client.delivered} == {tuple(ring)}
    finally:
        _close(clients)


def test_crash_of_one_then_of_two_nodes_at_once_is_agreed_within_token_plus_consensus_and_they_rejoin(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(5)
    limit_s = (cluster.token_ms + cluster.consensus_ms) / 1000 + SLACK_S
    clients = _clients(cluster, [1, 2, 3, 4, 5])
    try:
        t0 = _crash(cluster, 5)
        clients.pop(5).close()
        wait_regular(clients, [1, 2, 3, 4], timeout=limit_s + 10)
        one_s = time.monotonic() - t0
        assert one_s < limit_s, f"the 4 survivors agreed after {one_s:.2f} s (limit {limit_s:.2f} s)"
        for client in clients.values():
            trans = [e for e in client.confchgs if e["type"] == "transitional" and e["members"] == [1, 2, 3, 4]]
            assert trans and trans[-1]["left"] == [5], "the transitional configuration names the crashed node"

        t0 = _crash(cluster, 2, 4)
        for gone in (2, 4):
            clients.pop(gone).close()
        wait_regular(clients, [1, 3], timeout=limit_s + 10)
        two_s = time.monotonic() - t0
        assert two_s < limit_s, f"the 2 survivors agreed after {two_s:.2f} s (limit {limit_s:.2f} s)"
        print(f"5 nodes: crash of one agreed in {one_s:.2f} s, of two at once in {two_s:.2f} s "
              f"(token + consensus {limit_s - SLACK_S:.2f} s)")
        for client in clients.values():
            trans = [e for e in client.confchgs if e["type"] == "transitional" and e["members"] == [1, 3]]
            assert trans and trans[-1]["left"] == [2, 4], "both crashed nodes leave in one configuration change"

        cluster.start([2, 4, 5])
        ring = cluster.wait_ring([1, 2, 3, 4, 5], timeout=90)
        assert wait_regular(clients, [1, 2, 3, 4, 5], timeout=10) == ring
        # the rejoined ring carries traffic: a message from a restarted node reaches the old survivors
        back = EchoClient(cluster.nodes[4])
        clients[4] = back
        back.mcast(b"after the rejoin")
        for client in clients.values():
            client.wait_delivered(1, timeout=30)
            assert client.delivered[-1][0] == 4 and client.delivered[-1][2] == b"after the rejoin"
    finally:
        _close(clients)


def test_sigterm_of_a_daemon_is_a_leave_the_four_others_see_before_a_crash_could_be_noticed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(5, totem={"token": 3000})
    crash_s = (cluster.token_ms + cluster.consensus_ms) / 1000  # 6.6 s: a crash is noticed only then
    clients = _clients(cluster, [1, 2, 3, 4])
    try:
        t0 = time.monotonic()
        cluster.nodes[5].terminate()  # the daemon: its services stop together, then totem leaves, then the transport
        wait_regular(clients, [1, 2, 3, 4], timeout=20)
        leave_s = time.monotonic() - t0
        # on a quiet machine this is about half a second: the services' exit, then the leave message
        assert leave_s < crash_s, f"the leave was seen after {leave_s:.2f} s: a timeout, not a leave"
        print(f"5 nodes: SIGTERM leave seen by the others after {leave_s:.2f} s (token {cluster.token_ms} ms)")
        assert cluster.nodes[5].stop(timeout=30) == 0
    finally:
        _close(clients)
