"""Client connections to a service: handshake, requests, events, asyncio, access rules, versions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycorosync.ipc import client as client_mod, conn as proto, echo
from pycorosync.ipc.client import (
    CS_DISPATCH_ALL,
    CS_DISPATCH_BLOCKING,
    CS_DISPATCH_ONE,
    CS_DISPATCH_ONE_NONBLOCKING,
    Connection,
    connect,
)
from pycorosync.ipc.creds import AccessPolicy, PeerCred
from pycorosync.ipc.errors import (
    CS_ERR_ACCESS,
    CS_ERR_EXIST,
    CS_ERR_INVALID_PARAM,
    CS_ERR_LIBRARY,
    CS_ERR_TIMEOUT,
    CS_ERR_TOO_BIG,
    CS_ERR_TRY_AGAIN,
    CS_ERR_VERSION,
    CS_OK,
    CsError,
    CsErrorCode,
    cs_strerror,
)
from pycorosync.ipc.fastpath import RingIO
from pycorosync.ipc.framing import decode_response, encode_response
from pycorosync.ipc.ring import RecordTooLargeError, RingLayoutError
from pycorosync.ipc.server import Server, ServerConnection, ServerLimits, ServerThread
from tests.unit.forked import forked_report

DEADLINE_S = 10.0
NOBODY = 65534


class RecordingEcho(echo.EchoService):
    """The echo service, noting who connected and left (events other threads can wait on)."""

    def __init__(self) -> None:
        super().__init__()
        self.connected: list[ServerConnection] = []
        self.disconnected: list[ServerConnection] = []
        self.changed = threading.Condition()
        self.verdict: int | None = None

    def on_connect(self, conn: ServerConnection) -> int | None:
        with self.changed:
            self.connected.append(conn)
            self.changed.notify_all()
        super().on_connect(conn)
        return self.verdict

    def on_disconnect(self, conn: ServerConnection) -> None:
        super().on_disconnect(conn)
        with self.changed:
            self.disconnected.append(conn)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


@pytest.fixture(autouse=True, params=["compiled", "plain"])
def ring_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs with the client's rings through the numba kernels and through plain Python."""
    before = client_mod.use_compiled_rings(request.param == "compiled")
    try:
        yield str(request.param)
    finally:
        client_mod.use_compiled_rings(before)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # world-traversable, unlike pytest's tmp_path: the access tests connect as another user
    path = Path(tempfile.mkdtemp(prefix="pcs-ipc-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


@pytest.fixture
def start_server(run_dir: Path) -> Iterator[Callable[..., tuple[Server, RecordingEcho]]]:
    """Starts echo servers in threads; all are stopped at the end of the test."""
    threads: list[ServerThread] = []

    def start(handler: RecordingEcho | None = None, **kwargs: object) -> tuple[Server, RecordingEcho]:
        handler = handler or RecordingEcho()
        kwargs.setdefault("request_types", echo.REQUEST_TYPES)
        server = Server(run_dir, echo.SERVICE, handler, **kwargs)  # type: ignore[arg-type]
        thread = ServerThread(server)
        threads.append(thread)
        thread.__enter__()
        return server, handler

    yield start
    for thread in threads:
        thread.stop()


def test_cs_error_codes_are_corosyncs_numbers_and_names() -> None:
    assert CS_OK == 1 and CS_ERR_TRY_AGAIN == 6 and CS_ERR_ACCESS == 11 and CsErrorCode.CS_ERR_SECURITY == 100
    assert cs_strerror(CS_ERR_LIBRARY) == "CS_ERR_LIBRARY"
    assert cs_strerror(29) == "CS_ERR_UNKNOWN(29)"
    err = CsError(CS_ERR_TRY_AGAIN, "ring full")
    assert err.code == 6 and err.name == "CS_ERR_TRY_AGAIN" and "ring full" in str(err)


def test_access_policy_admits_root_own_uid_and_allow_lists_only() -> None:
    allowed_gids = {500}
    policy = AccessPolicy(uids={1000}, gids=lambda: allowed_gids, own_uid=4242)
    assert policy.allows(PeerCred(1, 0, 99)) and policy.allows(PeerCred(1, 99, 0))
    assert policy.allows(PeerCred(1, 4242, 99)) and policy.allows(PeerCred(1, 1000, 99))
    assert policy.allows(PeerCred(1, 7, 500))
    assert not policy.allows(PeerCred(1, 7, 8))
    allowed_gids.add(8)  # a callable source follows cmap changes without a new policy
    assert policy.allows(PeerCred(1, 7, 8))


def test_request_gets_its_response_and_errors_come_back_as_codes(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server()
    with connect(server.run_dir, echo.SERVICE) as conn:
        assert conn.call(echo.ECHO, b"ping", timeout=DEADLINE_S) == b"ping"
        big = os.urandom(200_000)
        assert conn.call(echo.ECHO, big, timeout=DEADLINE_S) == big
        with pytest.raises(CsError) as err:
            conn.call(echo.EMIT, b"short", timeout=DEADLINE_S)
        assert err.value.code == CS_ERR_INVALID_PARAM
        assert conn.call(echo.ECHO, b"still fine", timeout=DEADLINE_S) == b"still fine"


def test_request_larger_than_the_ring_can_ever_hold_is_too_big(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server()
    with connect(server.run_dir, echo.SERVICE) as conn, pytest.raises(CsError) as err:
        conn.request(echo.ECHO, bytes(conn.max_request_bytes + 1), timeout=DEADLINE_S)
    assert err.value.code == CS_ERR_TOO_BIG


def test_connection_stats_count_requests_responses_and_events(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server()
    with connect(server.run_dir, echo.SERVICE) as conn:
        for _ in range(5):
            conn.call(echo.ECHO, b"x", timeout=DEADLINE_S)
        conn.call(echo.EMIT, echo.emit_payload(3), timeout=DEADLINE_S)
        (sconn,) = handler.connected
        assert sconn.pid == os.getpid() and sconn.uid == os.geteuid()
        stats = sconn.stats.as_dict()
        assert stats["requests"] == 6 and stats["responses"] == 6 and stats["dispatched"] == 3
        assert stats["invalid_request"] == 0 and stats["overload"] == 0


def test_events_are_dispatched_in_order_with_each_dispatch_mode(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server()
    seen: list[int] = []

    def on_event(rtype: int, payload: bytes) -> None:
        assert rtype == echo.EVENT
        seen.append(echo.event_index(payload))

    with connect(server.run_dir, echo.SERVICE) as conn:
        with pytest.raises(CsError) as err:
            conn.dispatch(CS_DISPATCH_ONE_NONBLOCKING, on_event)
        assert err.value.code == CS_ERR_TRY_AGAIN
        assert conn.dispatch(CS_DISPATCH_ALL, on_event) == 0

        conn.call(echo.EMIT, echo.emit_payload(5), timeout=DEADLINE_S)
        assert select.select([conn], [], [], DEADLINE_S)[0] == [conn]
        assert conn.dispatch(CS_DISPATCH_ONE, on_event, timeout=DEADLINE_S) == 1
        assert conn.dispatch(CS_DISPATCH_ONE_NONBLOCKING, on_event) == 1
        assert select.select([conn], [], [], 0)[0] == [conn], "events left: the fd must stay readable"
        assert conn.dispatch(CS_DISPATCH_ALL, on_event) == 3
        assert seen == [0, 1, 2, 3, 4]
        assert select.select([conn], [], [], 0)[0] == [], "nothing left: the fd must not be readable"

        with pytest.raises(CsError) as err:
            conn.dispatch(CS_DISPATCH_ONE, on_event, timeout=0.05)
        assert err.value.code == CS_ERR_TIMEOUT


def test_blocking_dispatch_runs_until_a_callback_closes_the_connection(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server()
    conn = connect(server.run_dir, echo.SERVICE)
    seen: list[int] = []

    def on_event(rtype: int, payload: bytes) -> None:
        seen.append(echo.event_index(payload))
        if len(seen) == 4:
            conn.close()

    conn.call(echo.EMIT, echo.emit_payload(4), timeout=DEADLINE_S)
    assert conn.dispatch(CS_DISPATCH_BLOCKING, on_event, timeout=DEADLINE_S) == 4
    assert seen == [0, 1, 2, 3] and conn.closed


def test_close_is_idempotent_and_the_server_sees_the_hangup(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server()
    conn = connect(server.run_dir, echo.SERVICE)
    with conn:
        conn.call(echo.ECHO, b"x", timeout=DEADLINE_S)
    conn.close()
    assert conn.closed
    with pytest.raises(CsError) as err:
        conn.request(echo.ECHO, b"x")
    assert err.value.code == CS_ERR_LIBRARY
    assert handler.wait_for(lambda: len(handler.disconnected) == 1)
    assert not server.connections


def test_server_going_away_is_cs_err_library_for_requests_and_dispatch(run_dir: Path) -> None:
    running = ServerThread(Server(run_dir, echo.SERVICE, RecordingEcho()))
    server = running.__enter__()
    conn = connect(server.run_dir, echo.SERVICE)
    try:
        conn.call(echo.ECHO, b"x", timeout=DEADLINE_S)
        running.stop()  # to the client this looks like the service process exiting
        assert conn.wait_event(DEADLINE_S), "the event fd must wake on the server's death"
        with pytest.raises(CsError) as err:
            conn.dispatch(CS_DISPATCH_ALL, lambda r, p: None)
        assert err.value.code == CS_ERR_LIBRARY
        with pytest.raises(CsError) as err:
            conn.request(echo.ECHO, b"x", timeout=DEADLINE_S)
        assert err.value.code == CS_ERR_LIBRARY
    finally:
        conn.close()
        running.stop()


def test_connect_without_a_running_service_is_cs_err_library(run_dir: Path) -> None:
    with pytest.raises(CsError) as err:
        connect(run_dir, "nosuch")
    assert err.value.code == CS_ERR_LIBRARY and "nosuch" in str(err.value)


def test_service_can_refuse_a_client_until_it_is_ready(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server()
    handler.verdict = CS_ERR_TRY_AGAIN
    with pytest.raises(CsError) as err:
        connect(server.run_dir, echo.SERVICE)
    assert err.value.code == CS_ERR_TRY_AGAIN
    handler.verdict = None
    with connect(server.run_dir, echo.SERVICE) as conn:
        assert conn.call(echo.ECHO, b"ok", timeout=DEADLINE_S) == b"ok"


def test_timed_out_request_does_not_shift_later_responses(start_server: Callable[..., tuple]) -> None:
    gate = threading.Event()

    class SlowEcho(RecordingEcho):
        def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
            if payload == b"slow":
                gate.wait(DEADLINE_S)
            return super().on_request(conn, rtype, payload)

    server, _ = start_server(SlowEcho())
    with connect(server.run_dir, echo.SERVICE) as conn:
        with pytest.raises(CsError) as err:
            conn.call(echo.ECHO, b"slow", timeout=0.05)
        assert err.value.code == CS_ERR_TIMEOUT
        gate.set()
        assert conn.call(echo.ECHO, b"next", timeout=DEADLINE_S) == b"next"


def test_asyncio_request_and_event_iterator(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server()

    async def scenario() -> list[int]:
        with connect(server.run_dir, echo.SERVICE) as conn:
            rtype, payload = await conn.request_async(echo.ECHO, b"async", timeout=DEADLINE_S)
            assert rtype == echo.ECHO and decode_response(payload) == (CS_OK, b"async")
            await conn.call_async(echo.EMIT, echo.emit_payload(3), timeout=DEADLINE_S)
            seen = []
            async with asyncio.timeout(DEADLINE_S):
                async for _, ev in conn.events():
                    seen.append(echo.event_index(ev))
                    if len(seen) == 3:
                        break
            return seen

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_asyncio_event_iterator_wakes_on_events_sent_later(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server()

    async def scenario() -> int:
        with connect(server.run_dir, echo.SERVICE) as conn:
            assert handler.wait_for(lambda: len(handler.connected) == 1)
            sconn = handler.connected[0]

            async def later() -> None:
                await asyncio.sleep(0)
                # send from the loop thread of the server's point of view does not matter: rings are SPSC
                # per direction and only this task produces events now
                sconn.send_event(echo.EVENT, (7).to_bytes(8, "little"))

            task = asyncio.create_task(later())
            async with asyncio.timeout(DEADLINE_S):
                async for _, ev in conn.events():
                    await task
                    return echo.event_index(ev)
        return -1

    assert asyncio.run(scenario()) == 7


def test_second_server_on_the_same_run_dir_is_refused(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server()
    with pytest.raises(CsError) as err:
        Server(server.run_dir, echo.SERVICE, RecordingEcho())
    assert err.value.code == CS_ERR_EXIST and "already running" in str(err.value)
    with connect(server.run_dir, echo.SERVICE) as conn:  # the first one is unharmed
        assert conn.call(echo.ECHO, b"x", timeout=DEADLINE_S) == b"x"


def test_live_listener_without_the_lock_is_refused_and_a_stale_socket_is_replaced(run_dir: Path) -> None:
    path = run_dir / proto.socket_name(echo.SERVICE)
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    squatter.bind(str(path))
    squatter.listen(1)
    try:
        with pytest.raises(CsError) as err:
            Server(run_dir, echo.SERVICE, RecordingEcho())
        assert err.value.code == CS_ERR_EXIST and f"pid {os.getpid()}" in str(err.value)
    finally:
        squatter.close()  # the file stays: now it is a stale socket
    assert path.exists()
    with ServerThread(Server(run_dir, echo.SERVICE, RecordingEcho())), connect(run_dir, echo.SERVICE) as conn:
        assert conn.call(echo.ECHO, b"x", timeout=DEADLINE_S) == b"x"
    assert not path.exists(), "a closed server removes its socket"


def test_client_speaking_another_protocol_version_gets_cs_err_version(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server()
    with pytest.raises(CsError) as err:
        connect(server.run_dir, echo.SERVICE, protocol_version=proto.IPC_PROTOCOL_VERSION + 1)
    assert err.value.code == CS_ERR_VERSION
    assert f"server speaks IPC protocol {proto.IPC_PROTOCOL_VERSION}" in str(err.value)
    assert server.stats.version_mismatch == 1 and not handler.connected


def _child_connect(run_dir: Path, uid: int, gid: int) -> list[str]:
    """Connects from a forked child that dropped to uid:gid; returns the words it reported."""

    def body() -> str:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        try:
            with connect(run_dir, echo.SERVICE, timeout=DEADLINE_S) as conn:
                reply = conn.call(echo.ECHO, f"as-{os.getuid()}".encode(), timeout=DEADLINE_S)
                return f"OK {reply.decode()}"
        except CsError as exc:
            return f"ERR {exc.code}"

    return forked_report(body, 3 * DEADLINE_S).split()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another user needs root (setuid)")


@needs_root
def test_user_not_on_the_allow_list_is_denied_and_logged(
    start_server: Callable[..., tuple], caplog: pytest.LogCaptureFixture
) -> None:
    server, handler = start_server()
    assert _child_connect(server.run_dir, NOBODY, NOBODY) == ["ERR", str(int(CS_ERR_ACCESS))]
    assert f"Denied connection attempt from {NOBODY}:{NOBODY}" in caplog.text
    assert server.stats.denied == 1 and not handler.connected


@needs_root
@pytest.mark.parametrize("allow", ["uid", "gid"])
def test_user_on_the_allow_list_is_admitted(start_server: Callable[..., tuple], allow: str) -> None:
    gid = 4321
    access = AccessPolicy(uids={NOBODY}) if allow == "uid" else AccessPolicy(gids={gid})
    server, handler = start_server(access=access)
    assert _child_connect(server.run_dir, NOBODY, gid) == ["OK", f"as-{NOBODY}"]
    assert handler.connected[0].cred == PeerCred(handler.connected[0].pid, NOBODY, gid)


def test_small_rings_are_configurable(start_server: Callable[..., tuple]) -> None:
    limits = ServerLimits(request_ring_bytes=4096, response_ring_bytes=8192, event_ring_bytes=1 << 16)
    server, _ = start_server(limits=limits)
    with connect(server.run_dir, echo.SERVICE) as conn:
        assert conn.layout.request_capacity == 4096 and conn.layout.event_capacity == 1 << 16
        assert conn.max_request_bytes == 4096 // 2 - 8
        assert conn.call(echo.ECHO, b"y" * 1000, timeout=DEADLINE_S) == b"y" * 1000


def test_framing_helpers_round_trip() -> None:
    assert decode_response(encode_response(CS_ERR_ACCESS, b"body")) == (CS_ERR_ACCESS, b"body")
    with pytest.raises(CsError):
        decode_response(b"\x01")


def test_connection_type_is_usable_in_select(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server()
    with connect(server.run_dir, echo.SERVICE) as conn:
        assert isinstance(conn, Connection)
        assert select.select([conn], [], [], 0)[0] == []


def test_busy_client_cannot_starve_another(start_server: Callable[..., tuple]) -> None:
    gate = threading.Event()
    order: list[int] = []

    class OrderedEcho(RecordingEcho):
        def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
            if payload == b"gate":
                gate.wait(DEADLINE_S)  # holds the server while both clients queue up their requests
            else:
                order.append(conn.conn_id)
            return super().on_request(conn, rtype, payload)

    server, _ = start_server(OrderedEcho(), limits=ServerLimits(requests_per_round=16))
    with (
        connect(server.run_dir, echo.SERVICE) as gatekeeper,
        connect(server.run_dir, echo.SERVICE) as busy,
        connect(server.run_dir, echo.SERVICE) as quiet,
    ):
        gatekeeper.send(echo.ECHO, b"gate")
        for _ in range(100):
            busy.send(echo.ECHO, b"busy")
        for _ in range(3):
            quiet.send(echo.ECHO, b"quiet")
        gate.set()
        for _ in range(3):
            quiet.read_response(DEADLINE_S)
        for _ in range(100):
            busy.read_response(DEADLINE_S)
        gatekeeper.read_response(DEADLINE_S)
    last_quiet = max(i for i, conn_id in enumerate(order) if conn_id == quiet.conn_id)
    assert last_quiet < 2 * 16 + 3, f"the quiet client waited behind {last_quiet} requests of the busy one"


def test_server_runs_in_a_callers_epoll_loop(run_dir: Path) -> None:
    loop_poller = select.epoll()
    handler = RecordingEcho()
    server = Server(run_dir, echo.SERVICE, handler, poller=loop_poller)
    stop = threading.Event()
    foreign_r, foreign_w = os.pipe()
    loop_poller.register(foreign_r, select.EPOLLIN)
    foreign_seen = threading.Event()

    def service_loop() -> None:  # what a service process's main loop does with its other fds
        while not stop.is_set():
            for fd, events in loop_poller.poll(0.05):
                if not server.handle(fd, events):
                    assert fd == foreign_r
                    os.read(foreign_r, 1)
                    foreign_seen.set()
            server.tick()

    thread = threading.Thread(target=service_loop)
    thread.start()
    try:
        assert server.listen_fd in server.fds() and server.doorbell_fd in server.fds()
        with connect(run_dir, echo.SERVICE) as conn:
            assert conn.call(echo.ECHO, b"via the caller's loop", timeout=DEADLINE_S) == b"via the caller's loop"
            assert handler.connected[0].fileno() in server.fds()
        os.write(foreign_w, b"x")
        assert foreign_seen.wait(DEADLINE_S), "fds that are not the server's stay the loop's"
        with pytest.raises(ValueError):
            server.fileno()
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        server.close()
        loop_poller.close()
        os.close(foreign_r)
        os.close(foreign_w)


def test_silent_connection_is_closed_after_the_handshake_timeout(start_server: Callable[..., tuple]) -> None:
    server, _ = start_server(limits=ServerLimits(handshake_timeout_s=0.2))
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as silent:
        silent.settimeout(DEADLINE_S)
        silent.connect(str(server.path))
        assert silent.recv(64) == b"", "the server must hang up on a client that never says HELLO"
    assert server.stats.bad_handshake == 1


def test_connections_over_the_limit_are_refused_with_no_resources(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server(limits=ServerLimits(max_connections=2))
    with connect(server.run_dir, echo.SERVICE), connect(server.run_dir, echo.SERVICE):
        with pytest.raises(CsError) as err:
            connect(server.run_dir, echo.SERVICE)
        assert err.value.code == CsErrorCode.CS_ERR_NO_RESOURCES
    assert handler.wait_for(lambda: len(handler.disconnected) == 2)
    with connect(server.run_dir, echo.SERVICE) as conn:  # room again once the others left
        assert conn.call(echo.ECHO, b"x", timeout=DEADLINE_S) == b"x"


def test_asyncio_events_and_requests_run_concurrently_and_see_the_server_die(run_dir: Path) -> None:
    running = ServerThread(Server(run_dir, echo.SERVICE, RecordingEcho()))
    server = running.__enter__()

    async def scenario() -> tuple[list[int], int]:
        with connect(server.run_dir, echo.SERVICE) as conn:
            seen: list[int] = []

            async def listen() -> int:
                try:
                    async for _, ev in conn.events():
                        seen.append(echo.event_index(ev))
                except CsError as exc:
                    return exc.code
                return CS_OK

            listener = asyncio.create_task(listen())
            for _ in range(3):
                await conn.call_async(echo.EMIT, echo.emit_payload(2), timeout=DEADLINE_S)
            async with asyncio.timeout(DEADLINE_S):
                while len(seen) < 6:
                    await asyncio.sleep(0.01)
            await asyncio.get_running_loop().run_in_executor(None, running.stop)
            async with asyncio.timeout(DEADLINE_S):
                return seen, await listener

    try:
        seen, ending = asyncio.run(scenario())
    finally:
        running.stop()
    assert seen == [0, 1, 0, 1, 0, 1] and ending == CS_ERR_LIBRARY


def _fake_server(run_dir: Path, segment: bytes) -> threading.Thread:
    """A one-shot server that admits a client with ``segment`` as its connection memory."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(run_dir / proto.socket_name(echo.SERVICE)))
    listener.listen(1)

    def serve() -> None:
        with listener:
            listener.settimeout(DEADLINE_S)
            peer, _ = listener.accept()
            with peer:
                peer.recv(256)
                memfd = os.memfd_create("fake")
                efds = [os.eventfd(0) for _ in range(3)]
                try:
                    os.write(memfd, segment)
                    welcome = proto.Welcome(proto.IPC_PROTOCOL_VERSION, CS_OK, 1, os.getpid()).pack()
                    socket.send_fds(peer, [welcome], [memfd, *efds])
                    peer.recv(1)  # until the client hangs up
                finally:
                    for fd in (memfd, *efds):
                        os.close(fd)

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("layout_version", "code"), [(proto.SEGMENT_LAYOUT_VERSION + 1, CS_ERR_VERSION), (None, CS_ERR_LIBRARY)]
)
def test_client_refuses_connection_memory_it_cannot_read_and_leaks_nothing(
    run_dir: Path, layout_version: int | None, code: int
) -> None:
    layout = proto.SegmentLayout.plan(4096, 4096, 4096, lambda cap: 4096 + cap)
    header = bytearray(layout.pack_header(1))
    if layout_version is None:
        header[:8] = b"NOTCONN\0"
    else:
        header[8:12] = layout_version.to_bytes(4, "little")
    fds_before = set(os.listdir("/proc/self/fd"))
    thread = _fake_server(run_dir, bytes(header) + bytes(layout.total_bytes - len(header)))
    try:
        with pytest.raises(CsError) as err:
            connect(run_dir, echo.SERVICE)
        assert err.value.code == code
    finally:
        thread.join(DEADLINE_S)
    assert set(os.listdir("/proc/self/fd")) == fds_before


def test_ring_size_the_ring_cannot_take_is_refused_when_the_server_starts(run_dir: Path) -> None:
    with pytest.raises(RingLayoutError, match="power of two"):
        Server(run_dir, echo.SERVICE, RecordingEcho(), limits=ServerLimits(event_ring_bytes=5000))
    assert not (run_dir / proto.socket_name(echo.SERVICE)).exists()


def test_deferred_event_wakes_wake_a_sleeping_client_once_for_a_batch(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server()
    with connect(server.run_dir, echo.SERVICE) as conn:
        assert handler.wait_for(lambda: len(handler.connected) == 1)
        sconn = handler.connected[0]
        assert conn.read_event() is None  # empty: the client's event ring is armed, as before it sleeps
        wakes_before = conn._events.counters().wakes
        server.defer_event_wakes()
        for i in range(5):
            assert sconn.send_event(echo.EVENT, i.to_bytes(8, "little"))
        assert select.select([conn.fileno()], [], [], 0)[0] == [], "woken before the batch ended"
        server.flush_event_wakes()
        assert select.select([conn.fileno()], [], [], DEADLINE_S)[0] == [conn.fileno()]
        assert conn._events.counters().wakes - wakes_before == 1
        got = []
        while (ev := conn.read_event()) is not None:
            got.append(echo.event_index(ev[1]))
        assert got == [0, 1, 2, 3, 4]
        # outside a deferral every event may wake the client at once, as before
        sconn.send_event(echo.EVENT, (9).to_bytes(8, "little"))
        assert select.select([conn.fileno()], [], [], DEADLINE_S)[0] == [conn.fileno()]


def test_a_deferred_batch_larger_than_the_event_ring_waits_in_the_backlog_and_arrives_whole_in_order(
        start_server: Callable[..., tuple]) -> None:
    server, handler = start_server(limits=ServerLimits(event_ring_bytes=4096))
    with connect(server.run_dir, echo.SERVICE) as conn:
        assert handler.wait_for(lambda: len(handler.connected) == 1)
        sconn = handler.connected[0]
        server.defer_event_wakes()
        for i in range(100):  # 100 x 216 bytes: five times what the ring holds
            assert sconn.send_event(echo.EVENT, i.to_bytes(8, "little") + bytes(200))
        with pytest.raises(RecordTooLargeError):  # refused at once, as outside a deferral
            sconn.send_event(echo.EVENT, bytes(5000))
        server.flush_event_wakes()
        assert sconn._event_backlog, "the ring cannot hold the batch: the rest must wait in the backlog"
        got: list[int] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < 100 and time.monotonic() < deadline:
            while (ev := conn.read_event()) is not None:
                got.append(echo.event_index(ev[1]))
            select.select([conn.fileno()], [], [], 0.05)
        assert got == list(range(100))
        assert not sconn.closed


def test_events_are_read_off_the_ring_a_batch_at_a_time_and_the_channel_stays_readable(
        start_server: Callable[..., tuple]) -> None:
    server, handler = start_server()
    with connect(server.run_dir, echo.SERVICE) as conn:
        assert handler.wait_for(lambda: len(handler.connected) == 1)
        sconn = handler.connected[0]
        assert conn.read_event() is None
        # an empty read leaves the ring armed; the next empty reads find it so and do nothing else
        assert conn._events.armed() and conn.read_event() is None and conn.read_event() is None
        assert select.select([conn.fileno()], [], [], 0)[0] == []
        n = client_mod.EVENT_BATCH + 6
        for i in range(n):
            assert sconn.send_event(echo.EVENT, i.to_bytes(8, "little"))
        assert select.select([conn.fileno()], [], [], DEADLINE_S)[0] == [conn.fileno()]
        first = conn.read_event()
        assert first is not None and echo.event_index(first[1]) == 0
        # one read took a whole batch off the ring: its room is free for the server already
        assert conn._events.used_bytes() < 8 * 24, "the batch was not released in one go"
        got = [0]
        while len(got) < n:
            # events still wait (in the batch or the ring): the channel must stay readable for select users
            assert select.select([conn.fileno()], [], [], 0)[0] == [conn.fileno()], f"not readable after {len(got)}"
            ev = conn.read_event()
            assert ev is not None
            got.append(echo.event_index(ev[1]))
        assert got == list(range(n))
        assert conn.read_event() is None
        assert select.select([conn.fileno()], [], [], 0)[0] == [], "readable with nothing left"
        # an event after empty reads of an armed ring wakes the channel as before
        assert conn.read_event() is None
        assert sconn.send_event(echo.EVENT, (77).to_bytes(8, "little"))
        assert select.select([conn.fileno()], [], [], DEADLINE_S)[0] == [conn.fileno()]
        ev = conn.read_event()
        assert ev is not None and echo.event_index(ev[1]) == 77


class BatchingEcho(RecordingEcho):
    """Echo with the server's batch hook: it takes runs of ECHO requests starting with b"b" (no response),
    notes every request in the order it saw them, and fails on b"boom"."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []
        self.budgets: list[int] = []

    def drain_requests(self, conn: ServerConnection, ring: RingIO, budget: int, max_request_bytes: int) -> int:
        self.budgets.append(budget)
        taken = 0
        while taken < budget:
            record = ring.ring.peek()
            if record is None or record[0] != echo.ECHO or not bytes(record[1]).startswith(b"b"):
                break
            if bytes(record[1]) == b"boom":
                raise RuntimeError("boom")
            assert len(record[1]) <= max_request_bytes
            self._note(bytes(record[1]))
            ring.ring.release()
            taken += 1
        return taken

    def _note(self, payload: bytes) -> None:
        with self.changed:
            self.seen.append(payload)
            self.changed.notify_all()

    def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        self._note(bytes(payload))
        return super().on_request(conn, rtype, payload)


def test_a_handlers_batch_hook_takes_runs_of_requests_in_order_within_the_round_budget(
    start_server: Callable[..., tuple],
) -> None:
    server, handler = start_server(BatchingEcho(), limits=ServerLimits(requests_per_round=16))
    sent = [b"b%d" % i if i % 7 else b"s%d" % i for i in range(200)]
    with connect(server.run_dir, echo.SERVICE) as c:
        for payload in sent:
            c.send(echo.ECHO, payload)
        answers = [c.read_response(DEADLINE_S) for payload in sent if payload.startswith(b"s")]
        assert [decode_response(a[1])[1] for a in answers] == [p for p in sent if p.startswith(b"s")]
        assert handler.wait_for(lambda: len(handler.seen) == len(sent))
        assert handler.seen == sent, "batch-taken and single requests keep the client's order"
        conn = next(iter(server.connections.values()))
        # the server counts a batch when the hook has returned, just after the hook noted its requests
        deadline = time.monotonic() + DEADLINE_S
        while conn.stats.requests < len(sent) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert conn.stats.requests == len(sent)
    assert handler.budgets and max(handler.budgets) <= 16


def test_a_batch_hook_that_fails_drops_only_its_connection(start_server: Callable[..., tuple]) -> None:
    server, handler = start_server(BatchingEcho())
    with connect(server.run_dir, echo.SERVICE) as bad, connect(server.run_dir, echo.SERVICE) as good:
        bad.send(echo.ECHO, b"boom")
        assert handler.wait_for(lambda: len(handler.disconnected) == 1)
        assert handler.disconnected[0].conn_id == bad.conn_id
        assert server.stats.dropped == 1
        good.send(echo.ECHO, b"still served")
        assert decode_response(good.read_response(DEADLINE_S)[1])[1] == b"still served"


def test_a_plain_connection_never_imports_numba(run_dir: Path, ring_path: str) -> None:
    """The client library with plain rings is usable in a process that never loads numba (the tools)."""
    if ring_path != "plain":
        pytest.skip("the compiled path loads numba by design")
    script = (
        "import sys\n"
        "from pycorosync.ipc import client\n"
        "client.use_compiled_rings(False)\n"
        # the echo module itself imports the server (numba): its numbers are passed in
        f"with client.connect({str(run_dir)!r}, {echo.SERVICE!r}) as conn:\n"
        f"    body = conn.call({echo.ECHO}, b'ping', timeout=10)\n"
        f"    conn.call({echo.EMIT}, {echo.emit_payload(500, 64)!r}, timeout=10)\n"
        "    seen = []\n"
        "    while len(seen) < 500 and conn.wait_event(10):\n"
        "        conn.dispatch(client.CS_DISPATCH_ALL, lambda t, p: seen.append(int.from_bytes(p[:8], 'little')))\n"
        "print(body.decode(), seen == list(range(500)), 'numba' in sys.modules)\n"
    )
    server = Server(run_dir, echo.SERVICE, echo.EchoService(), request_types=echo.REQUEST_TYPES)
    with ServerThread(server):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ping", "True", "False"]


def test_a_tool_run_in_process_leaves_the_ring_path_as_it_found_it(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cli.main`` of a tool picks plain rings for its own run only (tests and embedders call it in-process)."""
    from pycorosync.cli import main

    before = client_mod.use_compiled_rings(None)
    client_mod.use_compiled_rings(before)
    assert main(["--run-dir", str(run_dir), "cmapctl", "totem.token"]) != 0  # no cmap service there
    assert "cmap" in capsys.readouterr().err
    assert client_mod.use_compiled_rings(before) == before


def test_by_default_only_high_rate_services_get_compiled_rings(run_dir: Path) -> None:
    """With no choice made, a cpg or echo connection is compiled and a cmap/quorum/sam/cfg one is plain
    (the same echo engine serves under each name here)."""
    from pycorosync.ipc.plainring import PlainRing

    before = client_mod.use_compiled_rings(None)
    servers = [Server(run_dir, name, echo.EchoService(), request_types=echo.REQUEST_TYPES)
               for name in ("echo", "cpg", "cmap", "quorum")]
    try:
        with contextlib.ExitStack() as stack:
            for server in servers:
                stack.enter_context(ServerThread(server))
            plain = {}
            for name in ("echo", "cpg", "cmap", "quorum"):
                with connect(run_dir, name) as conn:
                    assert conn.call(echo.ECHO, name.encode(), timeout=DEADLINE_S) == name.encode()
                    plain[name] = isinstance(conn._request, PlainRing)
                with connect(run_dir, name, compiled=True) as conn:
                    assert not isinstance(conn._request, PlainRing)
    finally:
        client_mod.use_compiled_rings(before)
    assert plain == {"echo": False, "cpg": False, "cmap": True, "quorum": True}
