"""The cfg service's hooks driven without processes: three CfgService objects whose multicasts are delivered to
all three in one order (as Totem would), clients as fake connections, and the supervisor as a list of signals."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from pycorosync.engine.runtime.node import NodeInfo
from pycorosync.engine.totem.api import RingId
from pycorosync.ipc.errors import CS_OK, CsErrorCode
from pycorosync.ipc.framing import decode_response
from pycorosync.services.cfg import protocol as p
from pycorosync.services.cfg.service import CfgService

CONFIG = """totem {{
    version: 2
    cluster_name: cfgtest
    transport: knet
}}
nodelist {{
{nodes}
}}
"""
RING = RingId(1, 8)


class FakeConn:
    """What the service uses of an admitted client connection."""

    def __init__(self, conn_id: int) -> None:
        self.conn_id = conn_id
        self.pid = 1000 + conn_id
        self.context: Any = None
        self.stats = SimpleNamespace(invalid_request=0)
        self.responses: list[tuple[int, int]] = []
        self.events: list[tuple[int, int]] = []

    def send_response(self, rtype: int, payload: bytes) -> bool:
        self.responses.append((rtype, decode_response(payload)[0]))
        return True

    def send_event(self, rtype: int, payload: bytes) -> bool:
        self.events.append(p.decode_two_u32(payload, "event"))
        return True


class Harness(CfgService):
    """A CfgService whose multicasts go to ``sent`` and whose supervisor signals go to ``signals``."""

    def mcast(self, body: bytes, guarantee: int = 2) -> bool:
        self.sent.append(body)
        return True

    def _signal_supervisor(self, sig: int, what: str) -> int:
        self.signals.append(sig)
        return CS_OK


class Cluster:
    def __init__(self, tmp_path: Path, n: int = 3) -> None:
        nodes = "\n".join(f"    node {{\n        ring0_addr: 10.9.0.{i}\n        nodeid: {i}\n    }}"
                          for i in range(1, n + 1))
        self.services: dict[int, Harness] = {}
        for nodeid in range(1, n + 1):
            run_dir = tmp_path / f"n{nodeid}"
            run_dir.mkdir()
            config = run_dir / "corosync.conf"
            config.write_text(CONFIG.format(nodes=nodes))
            info = NodeInfo(config=str(config), nodeid=nodeid, cluster="cfgtest", run_dir=str(run_dir), segment="",
                            stats="", services=(), bells={}, ring_capacity=1 << 20)
            svc = Harness(info, {})
            svc.sent, svc.signals = [], []
            svc.exec_init()
            svc.server = SimpleNamespace(connections={})
            svc.ring_id, svc.members, svc.synced = RING, tuple(range(1, n + 1)), True
            self.services[nodeid] = svc

    def flush(self) -> None:
        """Delivers every queued multicast to every member, sender by sender."""
        for sender, svc in self.services.items():
            bodies, svc.sent = svc.sent, []
            for body in bodies:
                for member in self.services.values():
                    member.deliver(sender, RING, body)

    def client(self, nodeid: int) -> FakeConn:
        svc = self.services[nodeid]
        conn = FakeConn(len(svc.server.connections) + 1)
        assert svc.lib_init(conn) is None  # type: ignore[arg-type]
        svc.server.connections[conn.conn_id] = conn
        return conn


def request(svc: CfgService, conn: FakeConn, msg: int, payload: bytes = b"") -> tuple[int, bytes] | None:
    result = svc.lib_request(conn, msg, payload)  # type: ignore[arg-type]
    return None if result is None else decode_response(result[1])


def test_local_get_addresses_and_node_status(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc, conn = c.services[1], c.client(1)
    assert request(svc, conn, p.CfgMsg.LOCAL_GET) == (CS_OK, p.encode_u32(1))
    code, body = request(svc, conn, p.CfgMsg.GET_NODE_ADDRS, p.encode_u32(3)) or (0, b"")
    assert (code, p.decode_str_list(body, "addrs")) == (CS_OK, ["10.9.0.3"])
    assert request(svc, conn, p.CfgMsg.GET_NODE_ADDRS, p.encode_u32(7))[0] == CsErrorCode.CS_ERR_NOT_EXIST  # type: ignore[index]
    code, body = request(svc, conn, p.CfgMsg.NODESTATUSGET, p.encode_two_u32(2, 1)) or (0, b"")
    st2 = p.decode_node_status(body)
    assert code == CS_OK and st2.reachable and st2.link(0).src_ipaddr == "10.9.0.1" and st2.link(0).dst_ipaddr == "10.9.0.2"
    assert request(svc, conn, p.CfgMsg.NODESTATUSGET, p.encode_two_u32(2, 9))[0] == CsErrorCode.CS_ERR_NOT_SUPPORTED  # type: ignore[index]
    assert request(svc, conn, p.CfgMsg.NODESTATUSGET, p.encode_two_u32(7, 1))[0] == CsErrorCode.CS_ERR_FAILED_OPERATION  # type: ignore[index]


def test_a_killed_node_asks_its_supervisor_to_stop_and_the_others_do_nothing(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc, conn = c.services[1], c.client(1)
    assert request(svc, conn, p.CfgMsg.KILLNODE, p.encode_killnode(3, "maintenance")) == (CS_OK, b"")
    c.flush()
    assert [s.signals for s in c.services.values()] == [[], [], [signal.SIGTERM]]


def test_killing_a_node_outside_the_ring_is_not_exist_and_sends_nothing(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc = c.services[1]
    svc.members = (1, 2)
    assert request(svc, c.client(1), p.CfgMsg.KILLNODE, p.encode_killnode(3, "x"))[0] == CsErrorCode.CS_ERR_NOT_EXIST  # type: ignore[index]
    assert svc.sent == []


def test_kill_and_reload_wait_for_the_first_sync(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc = c.services[1]
    svc.synced = False
    conn = c.client(1)
    assert request(svc, conn, p.CfgMsg.KILLNODE, p.encode_killnode(2, "x"))[0] == CsErrorCode.CS_ERR_TRY_AGAIN  # type: ignore[index]
    assert request(svc, conn, p.CfgMsg.RELOAD_CONFIG)[0] == CsErrorCode.CS_ERR_TRY_AGAIN  # type: ignore[index]
    assert svc.sent == []


def test_a_refused_shutdown_is_busy_and_a_granted_one_stops_only_the_requesting_node(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc = c.services[2]
    tracker, admin = c.client(2), c.client(2)
    assert request(svc, tracker, p.CfgMsg.TRACKSTART, p.encode_u32(0)) == (CS_OK, b"")
    assert request(svc, admin, p.CfgMsg.TRYSHUTDOWN, p.encode_u32(p.COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST)) is None
    assert tracker.events == [(CS_OK, p.COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST)]
    assert request(svc, tracker, p.CfgMsg.REPLYTOSHUTDOWN, p.encode_u32(0)) == (CS_OK, b"")
    assert admin.responses == [(p.CfgMsg.TRYSHUTDOWN, CsErrorCode.CS_ERR_BUSY)] and svc.sent == []

    assert request(svc, admin, p.CfgMsg.TRYSHUTDOWN, p.encode_u32(p.COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS)) is None
    request(svc, tracker, p.CfgMsg.REPLYTOSHUTDOWN, p.encode_u32(0))
    assert admin.responses[-1] == (p.CfgMsg.TRYSHUTDOWN, CS_OK)
    c.flush()
    assert [s.signals for s in c.services.values()] == [[], [signal.SIGTERM], []]


def test_reply_without_a_request_is_access(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc = c.services[1]
    assert request(svc, c.client(1), p.CfgMsg.REPLYTOSHUTDOWN, p.encode_u32(1))[0] == CsErrorCode.CS_ERR_ACCESS  # type: ignore[index]


def test_a_reload_without_a_cmap_service_answers_its_error_to_the_requester_only(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc, conn = c.services[1], c.client(1)
    assert request(svc, conn, p.CfgMsg.RELOAD_CONFIG) is None
    c.flush()
    assert conn.responses == [(p.CfgMsg.RELOAD_CONFIG, CsErrorCode.CS_ERR_LIBRARY)]


def test_reopen_log_files_signals_the_supervisor_with_sighup(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc = c.services[1]
    assert request(svc, c.client(1), p.CfgMsg.REOPEN_LOG_FILES) == (CS_OK, b"")
    assert svc.signals == [signal.SIGHUP]


_SERVICES: dict[Path, Harness] = {}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rtype=st.integers(0, 120), payload=st.binary(max_size=64))
def test_malformed_requests_are_answered_never_raised(tmp_path: Path, rtype: int, payload: bytes) -> None:
    if tmp_path not in _SERVICES:
        _SERVICES[tmp_path] = Cluster(tmp_path, 1).services[1]
    svc = _SERVICES[tmp_path]
    conn = FakeConn(99)
    svc.lib_init(conn)  # type: ignore[arg-type]
    result = svc.lib_request(conn, rtype, payload)  # type: ignore[arg-type]
    if result is not None:
        code, _ = decode_response(result[1])
        assert code in {int(c) for c in CsErrorCode}


def test_malformed_cluster_messages_are_counted_and_dropped(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    svc = c.services[1]
    for body in (b"", b"\x07\0\0\0", p.encode_cluster(p.KillNode(1, "x"))[:-1]):
        svc.deliver(2, RING, body)
    assert svc.bad_messages == 3 and svc.signals == []
