"""An IPC server's connection stats in the node's stats table, and the cmap keys made from them."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycorosync.engine.config.types import ValueType
from pycorosync.ipc import echo
from pycorosync.ipc.client import connect
from pycorosync.ipc.errors import CS_ERR_TRY_AGAIN, CsError
from pycorosync.ipc.framing import encode_response
from pycorosync.ipc.server import Server, ServerConnection, ServerThread
from pycorosync.ipc.stats import NODE_ENV, StatsRow, StatsTable, node_process_row
from pycorosync.services.cmap.node_stats import StatsTableLink
from tests.conftest import unique_prefix

DEADLINE_S = 10.0
BUSY = 7  # a request type the echo variant below refuses with CS_ERR_TRY_AGAIN


class BusyEcho(echo.EchoService):
    """Echo that answers BUSY with CS_ERR_TRY_AGAIN, as a service does while totem is full."""

    def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        if rtype == BUSY:
            return BUSY, encode_response(CS_ERR_TRY_AGAIN)
        return super().on_request(conn, rtype, payload)


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pcs-ipcstats-"))
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


@pytest.fixture
def table() -> Iterator[StatsTable]:
    t = StatsTable.create_anonymous(4)
    t.set_slot(0, "transport", os.getpid())
    t.set_slot(1, "echo", os.getpid())
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def serve(run_dir: Path) -> Iterator[Callable[[StatsRow | None], Server]]:
    threads: list[ServerThread] = []

    def start(row: StatsRow | None) -> Server:
        server = Server(run_dir, echo.SERVICE, BusyEcho(), request_types={echo.ECHO, echo.EMIT, BUSY}, stats_row=row)
        thread = ServerThread(server)
        threads.append(thread)
        thread.__enter__()
        return server

    yield start
    for thread in threads:
        thread.stop()


def test_server_publishes_its_connection_totals_into_its_row_at_housekeeping_rate(
    table: StatsTable, serve: Callable[[StatsRow | None], Server], run_dir: Path
) -> None:
    row = table.row(1)
    serve(row)
    with connect(run_dir, echo.SERVICE) as conn:
        for i in range(5):
            conn.call(echo.ECHO, b"x%d" % i, timeout=DEADLINE_S)
        conn.call(echo.EMIT, echo.emit_payload(3, 64), timeout=DEADLINE_S)
        assert wait_until(lambda: row.get("ipcs.requests") == 6 and row.get("ipcs.active") == 1)
        assert row.get("ipcs.responses") == 6
        assert row.get("ipcs.dispatched") == 3
        # the three events wait unread in the event ring: ring fill shows them; capacity is the three rings
        assert row.get("ipc.ring_used_bytes") >= 3 * 64
        assert row.get("ipc.ring_capacity_bytes") >= 3 * (1 << 20)
        assert row.get("process.heartbeat_ns") > 0
    # a closed connection's counts stay in the totals: the counters never go back
    assert wait_until(lambda: row.get("ipcs.active") == 0 and row.get("ipcs.closed") == 1)
    assert row.get("ipcs.requests") == 6 and row.get("ipcs.dispatched") == 3
    assert row.get("ipc.ring_used_bytes") == 0 and row.get("ipc.ring_capacity_bytes") == 0
    assert table.row(0).get("ipcs.requests") == 0  # other rows untouched


def test_try_again_answers_are_counted_apart_from_ring_overload(
    table: StatsTable, serve: Callable[[StatsRow | None], Server], run_dir: Path
) -> None:
    row = table.row(1)
    server = serve(row)
    with connect(run_dir, echo.SERVICE) as conn:
        for _ in range(2):
            with pytest.raises(CsError) as err:
                conn.call(BUSY, b"", timeout=DEADLINE_S)
            assert err.value.code == CS_ERR_TRY_AGAIN
        conn.call(echo.ECHO, b"ok", timeout=DEADLINE_S)
        assert wait_until(lambda: row.get("ipcs.try_again") == 2 and row.get("ipcs.requests") == 3)
        assert row.get("ipcs.overload") == 0
        (sconn,) = list(server)
        assert sconn.stats.try_again == 2


def test_server_without_a_row_publishes_nothing_and_totals_still_add_up(
    serve: Callable[[StatsRow | None], Server], run_dir: Path
) -> None:
    server = serve(None)
    assert server.stats_row is None
    with connect(run_dir, echo.SERVICE) as conn:
        conn.call(echo.ECHO, b"a", timeout=DEADLINE_S)
    assert wait_until(lambda: server.totals()["closed"] == 1)
    totals = server.totals()
    assert totals["requests"] == 1 and totals["responses"] == 1 and totals["active"] == 0


def test_a_process_of_a_node_finds_the_row_named_after_it_from_the_node_environment() -> None:
    name = unique_prefix("ipcstats") + "-stats"
    table = StatsTable.create(name, n_slots=3)
    try:
        table.set_slot(2, "cpg", os.getpid())
        env = {NODE_ENV: json.dumps({"stats": name, "nodeid": 1})}
        found = node_process_row("cpg", env)
        assert found is not None
        other, row = found
        try:
            assert row.slot == 2
            row.set("ipcs.active", 4)
            assert table.row(2).get("ipcs.active") == 4  # the same shared memory
        finally:
            del row
            other.close()
        assert node_process_row("quorum", env) is None  # no slot of that name
        assert node_process_row("cpg", {}) is None  # not started by a node
        assert node_process_row("cpg", {NODE_ENV: "not json"}) is None
        assert node_process_row("cpg", {NODE_ENV: json.dumps({"stats": "/pcs-test-nosuchtable"})}) is None
    finally:
        table.close()
        table.unlink()


def test_service_keys_show_each_services_published_totals_under_its_corosync_id(table: StatsTable) -> None:
    table.set_slot(2, "cpg", 4321)
    cpg = table.row(2)
    cpg.set("ipcs.active", 2)
    cpg.set("ipcs.requests", 40)
    cpg.set("ipc.ring_used_bytes", 128)
    cpg.set("process.heartbeat_ns", 1)
    table.set_slot(3, "quorum", 4322)  # never published: its keys are absent, not zero
    table.row(0).set("process.heartbeat_ns", 1)  # the transport is not a service
    rows = {key: (vtype, value) for key, vtype, value in StatsTableLink(table).service_ipc_rows()}
    assert rows["stats.ipcs.service2.active"] == (ValueType.UINT64, 2)
    assert rows["stats.ipcs.service2.requests"] == (ValueType.UINT64, 40)
    assert rows["stats.ipcs.service2.ring_used_bytes"] == (ValueType.UINT64, 128)
    assert rows["stats.ipcs.service2.try_again"] == (ValueType.UINT64, 0)
    assert not any(k.startswith("stats.ipcs.service3.") for k in rows)
    assert all(k.startswith("stats.ipcs.service2.") for k in rows)


def test_client_connection_exposes_its_socket_read_only(
    serve: Callable[[StatsRow | None], Server], run_dir: Path
) -> None:
    serve(None)
    with connect(run_dir, echo.SERVICE) as conn:
        assert isinstance(conn.sock, socket.socket)
        assert conn.sock.family == socket.AF_UNIX
        with pytest.raises(AttributeError):
            setattr(conn, "sock", None)  # noqa: B010


def test_server_in_a_node_keeps_a_per_connection_file_and_removes_it_at_close(
    table: StatsTable, run_dir: Path
) -> None:
    from pycorosync.ipc import connfile

    server = Server(run_dir, echo.SERVICE, BusyEcho(), request_types={echo.ECHO, echo.EMIT, BUSY},
                    stats_row=table.row(1))
    thread = ServerThread(server)
    with thread:
        with connect(run_dir, echo.SERVICE) as conn:
            conn.call(echo.ECHO, b"a", timeout=DEADLINE_S)
            conn.call(echo.ECHO, b"b", timeout=DEADLINE_S)
            assert wait_until(lambda: [c.get("requests") for c in connfile.read(run_dir, echo.SERVICE)] == [2])
            (row,) = connfile.read(run_dir, echo.SERVICE)
            assert row["pid"] == os.getpid() and row["conn"] == conn.conn_id and row["responses"] == 2
        assert wait_until(lambda: connfile.read(run_dir, echo.SERVICE) == [])
    assert not connfile.path_for(run_dir, echo.SERVICE).exists()


def test_a_connection_file_of_a_dead_or_broken_writer_reads_as_no_connections(run_dir: Path) -> None:
    from pycorosync.ipc import connfile

    path = connfile.path_for(run_dir, "cpg")
    writer = connfile.ConnectionFile(run_dir, "cpg", interval_s=0.0)
    assert writer.update([{"pid": 7, "conn": 1, "requests": 3}])
    assert not writer.update([{"pid": 7, "conn": 1, "requests": 3}])  # unchanged: not rewritten
    slow = connfile.ConnectionFile(run_dir, "quorum", interval_s=3600.0)
    assert slow.update([{"pid": 7, "conn": 1, "requests": 1}])
    assert not slow.update([{"pid": 7, "conn": 1, "requests": 2}])  # changed, but too soon after the last write
    assert connfile.read(run_dir, "quorum") == [{"pid": 7, "conn": 1, "requests": 1}]
    slow.remove()
    assert connfile.read(run_dir, "cpg") == [{"pid": 7, "conn": 1, "requests": 3}]
    path.write_text(json.dumps({"pid": 2**22 + 12345, "service": "cpg", "connections": [{"pid": 7}]}))
    assert connfile.read(run_dir, "cpg") == []  # no such writer process
    path.write_text("{not json")
    assert connfile.read(run_dir, "cpg") == []
    writer.remove()
    assert connfile.read(run_dir, "cpg") == []


def test_per_connection_keys_have_corosyncs_names_and_types() -> None:
    from pycorosync.services.cmap.node_stats import connection_rows

    rows = {k: (t, v) for k, t, v in connection_rows(2, [
        {"pid": os.getpid(), "conn": 26, "requests": 5, "queued": 2, "flow_control": 1, "overload": "junk"}])}
    base = f"stats.ipcs.service2.{os.getpid()}.0x1a."
    assert rows[base + "requests"] == (ValueType.UINT64, 5)
    assert rows[base + "queueing"] == (ValueType.INT32, 1)
    assert rows[base + "queued"] == (ValueType.UINT32, 2)
    assert rows[base + "flow_control"] == (ValueType.UINT32, 1)
    assert rows[base + "overload"] == (ValueType.UINT64, 0)  # not a number: shown as 0, never a crash
    assert rows[base + "procname"][0] == ValueType.STRING and rows[base + "procname"][1]
    assert sorted(k[len(base):] for k in rows) == sorted([
        "procname", "requests", "responses", "dispatched", "overload", "invalid_request", "queueing", "queued",
        "sent", "send_retries", "recv_retries", "flow_control", "flow_control_count"])


def test_a_server_that_cannot_listen_leaves_the_running_servers_row_alone(
    table: StatsTable, serve: Callable[[StatsRow | None], Server], run_dir: Path
) -> None:
    row = table.row(1)
    serve(row)
    with connect(run_dir, echo.SERVICE):
        assert wait_until(lambda: row.get("ipcs.active") == 1)
        with pytest.raises(CsError):
            Server(run_dir, echo.SERVICE, BusyEcho(), stats_row=table.row(1))  # the service runs already
        assert row.get("ipcs.active") == 1
