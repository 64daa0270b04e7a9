"""The quorum service's hooks driven without processes: three QuorumService objects whose multicasts are delivered
to all three in one order (as Totem would), and client requests answered through fake connections."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pycorosync.engine.runtime.node import NodeInfo
from pycorosync.engine.totem.api import ConfigType, RingId
from pycorosync.ipc.errors import CsErrorCode
from pycorosync.ipc.framing import decode_response
from pycorosync.services.quorum import protocol as p
from pycorosync.services.quorum.client import ExpectedVotesEvent, NodelistEvent, QuorumEvent, decode_event
from pycorosync.services.quorum.service import QuorumService, read_ev_barrier

CONFIG = """totem {{
    version: 2
    cluster_name: qtest
    transport: udpu
}}
nodelist {{
{nodes}
}}
{quorum}
"""


class FakeConn:
    """What the service uses of an admitted client connection."""

    def __init__(self, conn_id: int) -> None:
        self.conn_id = conn_id
        self.context: Any = None
        self.stats = SimpleNamespace(invalid_request=0)
        self.events: list[Any] = []

    def send_event(self, rtype: int, payload: bytes) -> bool:
        self.events.append(decode_event(rtype, payload))
        return True


class Harness(QuorumService):
    """A QuorumService whose multicasts go to ``sent`` instead of a submit ring."""

    def mcast(self, body: bytes, guarantee: int = 2) -> bool:
        self.sent.append(body)
        return True


class Cluster:
    """Services of node ids 1..n sharing one simulated Totem order."""

    def __init__(self, tmp_path: Path, n: int, quorum: str) -> None:
        nodes = "\n".join(f"    node {{\n        ring0_addr: 127.0.0.{i}\n        nodeid: {i}\n    }}"
                          for i in range(1, n + 1))
        self.services: dict[int, Harness] = {}
        self.seq = 0
        for nodeid in range(1, n + 1):
            run_dir = tmp_path / f"n{nodeid}"
            run_dir.mkdir()
            config = run_dir / "corosync.conf"
            config.write_text(CONFIG.format(nodes=nodes, quorum=quorum))
            info = NodeInfo(config=str(config), nodeid=nodeid, cluster="qtest", run_dir=str(run_dir), segment="",
                            stats="", services=(), bells={}, ring_capacity=1 << 20)
            keys = {"quorum.provider": "corosync_votequorum"} if "votequorum" in quorum else {}
            svc = Harness(info, keys)
            svc.sent = []
            svc.exec_init()
            svc.server = SimpleNamespace(connections={})
            self.services[nodeid] = svc

    def ring(self, members: list[int]) -> RingId:
        """A new ring of ``members``: confchg, sync (every NodeInfo delivered to every member), activate."""
        self.seq += 4
        ring = RingId(members[0], self.seq)
        group = [self.services[m] for m in members]
        for svc in group:
            svc.ring_id, svc.members = ring, tuple(members)
            svc.confchg(ConfigType.REGULAR, ring, tuple(members), (), ())
            svc.sync_init(ring, tuple(members), ())
            assert svc.sync_process()
        self.flush(members, ring)
        for svc in group:
            svc.sync_activate()
            svc.sync_complete()
            svc.first_sync_done = True
        return ring

    def flush(self, members: list[int], ring: RingId) -> None:
        """Delivers every queued multicast of the members to every member, sender by sender."""
        for sender in members:
            svc = self.services[sender]
            bodies, svc.sent = svc.sent, []
            for body in bodies:
                for member in members:
                    self.services[member].deliver(sender, ring, body)

    def client(self, nodeid: int) -> FakeConn:
        svc = self.services[nodeid]
        conn = FakeConn(len(svc.server.connections) + 1)
        assert svc.lib_init(conn) is None  # type: ignore[arg-type]
        svc.server.connections[conn.conn_id] = conn
        return conn


def request(svc: QuorumService, conn: FakeConn, msg: int, payload: bytes = b"") -> tuple[int, bytes]:
    result = svc.lib_request(conn, msg, payload)  # type: ignore[arg-type]
    assert result is not None
    return decode_response(result[1])


VOTEQUORUM = "quorum {\n    provider: corosync_votequorum\n}\n"


def test_members_votes_make_every_node_quorate_and_trackers_hear_ring_and_members(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, VOTEQUORUM)
    ring = cluster.ring([1, 2, 3])
    conn = cluster.client(1)
    svc = cluster.services[1]
    assert request(svc, conn, p.Msg.Q_INITIALIZE) == (CsErrorCode.CS_OK, p.encode_u32(p.QUORUM_SET))
    assert request(svc, conn, p.Msg.Q_GETQUORATE) == (CsErrorCode.CS_OK, p.encode_u32(1))
    assert request(svc, conn, p.Msg.Q_TRACKSTART, p.encode_u32(p.CS_TRACK_CHANGES))[0] == CsErrorCode.CS_OK
    assert conn.events == [QuorumEvent(True, (ring.rep, ring.seq), (1, 2, 3))]  # type: ignore[arg-type]
    assert request(svc, conn, p.Msg.Q_TRACKSTART, p.encode_u32(p.CS_TRACK_CHANGES))[0] == CsErrorCode.CS_ERR_EXIST
    conn.events.clear()
    ring2 = cluster.ring([1])
    quorum_events = [e for e in conn.events if isinstance(e, QuorumEvent)]
    assert quorum_events == [QuorumEvent(False, (ring2.rep, ring2.seq), (1,))]  # type: ignore[arg-type]
    assert NodelistEvent((ring2.rep, ring2.seq), (1,), (), (2, 3)) in conn.events  # type: ignore[arg-type]


def test_getinfo_of_any_node_and_unknown_node_is_not_exist(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, VOTEQUORUM)
    cluster.ring([1, 2, 3])
    svc = cluster.services[2]
    conn = cluster.client(2)
    code, body = request(svc, conn, p.Msg.VQ_GETINFO, p.encode_u32(3))
    info = p.decode_info(body)
    assert code == CsErrorCode.CS_OK and (info.node_id, info.node_votes, info.total_votes, info.quorum) == (3, 1, 3, 2)
    assert request(svc, conn, p.Msg.VQ_GETINFO, p.encode_u32(0))[1][:4] == p.encode_u32(2)
    assert request(svc, conn, p.Msg.VQ_GETINFO, p.encode_u32(9))[0] == CsErrorCode.CS_ERR_NOT_EXIST


def test_setvotes_is_applied_on_every_node_when_its_message_is_delivered(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, VOTEQUORUM)
    ring = cluster.ring([1, 2, 3])
    conn = cluster.client(1)
    svc = cluster.services[1]
    assert request(svc, conn, p.Msg.VQ_TRACKSTART, p.encode_vq_trackstart(77, p.CS_TRACK_CHANGES_ONLY))[0] == 1
    assert request(svc, conn, p.Msg.VQ_SETVOTES, p.encode_setvotes(3, 3))[0] == CsErrorCode.CS_OK
    assert svc.vq is not None and svc.vq.getinfo(3).node_votes == 1  # type: ignore[union-attr]
    cluster.flush([1, 2, 3], ring)
    for node in cluster.services.values():
        assert node.vq is not None
        own, third = node.vq.getinfo(0), node.vq.getinfo(3)
        assert own is not None and third is not None
        assert (third.node_votes, own.total_votes, own.node_expected_votes, own.quorum) == (3, 5, 5, 3)
    assert ExpectedVotesEvent(77, 5) in conn.events


def test_setexpected_below_total_votes_is_invalid_and_sends_nothing(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, VOTEQUORUM)
    cluster.ring([1, 2, 3])
    svc = cluster.services[1]
    conn = cluster.client(1)
    assert request(svc, conn, p.Msg.VQ_SETEXPECTED, p.encode_u32(2))[0] == CsErrorCode.CS_ERR_INVALID_PARAM
    assert svc.sent == []
    assert request(svc, conn, p.Msg.VQ_SETVOTES, p.encode_setvotes(42, 1))[0] == CsErrorCode.CS_ERR_NAME_NOT_FOUND


@pytest.mark.parametrize("msg", sorted(p.QDEVICE_REQUESTS))
def test_qdevice_calls_are_not_supported(tmp_path: Path, msg: int) -> None:
    cluster = Cluster(tmp_path, 1, VOTEQUORUM)
    cluster.ring([1])
    conn = cluster.client(1)
    assert request(cluster.services[1], conn, msg, b"dev")[0] == CsErrorCode.CS_ERR_NOT_SUPPORTED


def test_without_a_provider_quorum_is_free_and_votequorum_is_absent(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 2, "")
    ring = cluster.ring([1, 2])
    svc = cluster.services[1]
    conn = cluster.client(1)
    assert request(svc, conn, p.Msg.Q_INITIALIZE) == (CsErrorCode.CS_OK, p.encode_u32(p.QUORUM_FREE))
    assert request(svc, conn, p.Msg.Q_GETQUORATE)[1] == p.encode_u32(1)
    assert request(svc, conn, p.Msg.VQ_INITIALIZE)[0] == CsErrorCode.CS_ERR_LIBRARY
    request(svc, conn, p.Msg.Q_TRACKSTART, p.encode_u32(p.CS_TRACK_CURRENT))
    assert conn.events == [QuorumEvent(True, (ring.rep, ring.seq), (1, 2))]  # type: ignore[arg-type]
    cluster.ring([1])
    assert svc.quorate  # alone, and still quorate: nothing decides quorum


def test_clients_wait_for_the_first_sync(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 1, VOTEQUORUM)
    assert cluster.services[1].lib_init(FakeConn(1)) == CsErrorCode.CS_ERR_TRY_AGAIN  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01" * 9])
def test_malformed_requests_are_invalid_param_and_counted(tmp_path: Path, payload: bytes) -> None:
    cluster = Cluster(tmp_path, 1, VOTEQUORUM)
    cluster.ring([1])
    svc = cluster.services[1]
    conn = cluster.client(1)
    for msg in (p.Msg.VQ_GETINFO, p.Msg.VQ_SETVOTES, p.Msg.VQ_TRACKSTART, p.Msg.Q_TRACKSTART):
        assert request(svc, conn, msg, payload)[0] == CsErrorCode.CS_ERR_INVALID_PARAM
    assert svc.invalid_requests == 4 and conn.stats.invalid_request == 4


def test_malformed_cluster_messages_are_counted_and_dropped(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 2, VOTEQUORUM)
    ring = cluster.ring([1, 2])
    svc = cluster.services[1]
    svc.deliver(2, ring, b"\x07junk")
    svc.deliver(2, ring, b"")
    from pycorosync.services.quorum import cluster_msg
    from pycorosync.services.quorum.votequorum import NodeInfo

    svc.deliver(2, ring, cluster_msg.encode(NodeInfo(1, 9, 9, 0)))  # a node speaking for another
    assert svc.bad_messages == 3 and svc.quorate


def test_expected_votes_tracking_barrier_is_stored_in_the_state_dir(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, "quorum {\n    provider: corosync_votequorum\n    expected_votes_tracking: 1\n}\n")
    cluster.ring([1, 2, 3])
    ring = cluster.ring([1, 2, 3])
    conn = cluster.client(1)
    request(cluster.services[1], conn, p.Msg.VQ_SETVOTES, p.encode_setvotes(2, 2))
    cluster.flush([1, 2, 3], ring)
    assert read_ev_barrier(tmp_path / "n1" / "ev_tracking") == 4
    assert read_ev_barrier(tmp_path / "missing") == 0


def test_cancel_wait_for_all_in_cmap_ends_the_wait(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, "quorum {\n    provider: corosync_votequorum\n    wait_for_all: 1\n}\n")
    ring = cluster.ring([1, 2])  # node 3 never came: waiting for all
    svc = cluster.services[1]
    assert not svc.quorate
    svc.cmap_keys.cancel_wait_for_all = lambda: True  # type: ignore[method-assign]
    svc.housekeeping()  # set on node 1 only: a cluster message ends the wait on both
    cluster.flush([1, 2], ring)
    for node in (cluster.services[1], cluster.services[2]):
        assert node.quorate and node.vq is not None and not node.vq.wait_for_all_status


def test_runtime_keys_name_the_configured_expected_votes_ev_barrier(tmp_path: Path) -> None:
    from pycorosync.engine.config.types import ValueType
    from pycorosync.services.quorum.cmap_keys import runtime_keys

    cluster = Cluster(tmp_path, 3, "quorum {\n    provider: corosync_votequorum\n    expected_votes_tracking: 1\n}\n")
    ring = cluster.ring([1, 2, 3])
    keys = runtime_keys(1, cluster.services[1].vq)
    assert keys["runtime.votequorum.ev_barrier"] == (3, ValueType.UINT32)
    assert keys["runtime.votequorum.ev_tracking_barrier"] == (3, ValueType.UINT32)
    assert keys["runtime.votequorum.this_node_id"] == (1, ValueType.UINT32)
    assert keys["runtime.votequorum.lowest_node_id"] == (1, ValueType.UINT32)
    conn = cluster.client(1)
    request(cluster.services[1], conn, p.Msg.VQ_SETEXPECTED, p.encode_u32(5))
    cluster.flush([1, 2, 3], ring)
    assert runtime_keys(1, cluster.services[1].vq)["runtime.votequorum.ev_barrier"] == (5, ValueType.UINT32)
