"""A hostile client cannot crash a service: arbitrary handshakes, arbitrary bytes in its shared rings."""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pycorosync.ipc import conn as proto, echo, ring_kernels as rk, wakeup as wake
from pycorosync.ipc.client import CS_DISPATCH_ALL, Connection, connect
from pycorosync.ipc.errors import CS_OK, CsError
from pycorosync.ipc.server import Server, ServerLimits, ServerThread

DEADLINE_S = 10.0
RING_BYTES = 4096
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    run_dir = Path(tempfile.mkdtemp(prefix="pcs-ipc-fuzz-"))
    limits = ServerLimits(
        request_ring_bytes=RING_BYTES,
        response_ring_bytes=RING_BYTES,
        event_ring_bytes=RING_BYTES,
        backlog_records=256,
        handshake_timeout_s=0.5,
    )
    srv = Server(run_dir, echo.SERVICE, echo.EchoService(), limits=limits, request_types=echo.REQUEST_TYPES)
    with ServerThread(srv):
        yield srv
    for child in run_dir.iterdir():
        child.unlink()
    run_dir.rmdir()


def _still_serves(server: Server) -> None:
    with connect(server.run_dir, echo.SERVICE, timeout=DEADLINE_S) as honest:
        assert honest.call(echo.ECHO, b"alive", timeout=DEADLINE_S) == b"alive"


def _raw_exchange(server: Server, first: bytes, then: bytes | None) -> tuple[bytes, list[int]]:
    """Sends raw messages to the service socket; returns its answer (b'' = hung up) and any descriptors."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(DEADLINE_S)
        sock.connect(str(server.path))
        try:
            sock.send(first)
            if then is not None:
                sock.send(then)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 256, proto.FD_COUNT)
        except ConnectionResetError:
            return b"", []
    return msg, fds


hellos = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda magic, version, flags, name: struct.pack("<8sII32s", magic, version, flags, name),
        st.sampled_from([proto.HELLO_MAGIC, b"PCSHELLX", b"\0" * 8]),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.one_of(st.just(b"echo"), st.binary(max_size=32)),
    ),
)


@FUZZ
@given(first=hellos, then=st.one_of(st.none(), st.binary(min_size=1, max_size=64)))
def test_arbitrary_handshakes_are_refused_or_answered_and_never_crash_the_server(
    server: Server, first: bytes, then: bytes | None
) -> None:
    if not first:
        first = b"\0"  # a zero-length datagram is what a hang-up looks like; covered by the killed-client tests
    msg, fds = _raw_exchange(server, first, then)
    for fd in fds:
        os.close(fd)
    if msg:
        welcome = proto.Welcome.unpack(msg, "fuzz")
        if welcome.error == CS_OK:
            # only a well-formed HELLO of this protocol and service may be admitted
            hello = proto.Hello.unpack(first)
            assert (hello.version, hello.service) == (proto.IPC_PROTOCOL_VERSION, echo.SERVICE)
            assert len(fds) == proto.FD_COUNT
        else:
            assert not fds
    _still_serves(server)


# a scribble: (which ring, offset inside the ring's header page and data, bytes)
scribbles = st.lists(
    st.tuples(
        st.sampled_from(["request", "response", "event"]),
        st.one_of(
            st.sampled_from(
                [rk.OFF_HEAD, rk.OFF_RHEAD, rk.OFF_CACHED_TAIL, rk.OFF_TAIL, rk.OFF_WTAIL, rk.OFF_CACHED_HEAD]
            ),
            st.integers(0, rk.RING_HEADER_BYTES + RING_BYTES - 8),
        ),
        st.one_of(
            st.binary(min_size=1, max_size=64),
            st.integers(-(2**63), 2**63 - 1).map(lambda v: struct.pack("<q", v)),
            st.integers(0, 2 * RING_BYTES).map(lambda v: struct.pack("<q", v)),
        ),
    ),
    min_size=1,
    max_size=8,
)


def _scribble(conn: Connection, where: list[tuple[str, int, bytes]]) -> None:
    for ring, offset, data in where:
        base = int(getattr(conn.layout, f"{ring}_offset"))
        end = base + rk.RING_HEADER_BYTES + RING_BYTES
        start = base + offset
        stop = min(end, start + len(data))
        conn._mm[start:stop] = data[: stop - start]  # the mapping: the same on either ring path


@FUZZ
@given(where=scribbles, honest_first=st.booleans())
def test_arbitrary_bytes_in_a_clients_rings_never_crash_the_server(
    server: Server, where: list[tuple[str, int, bytes]], honest_first: bool
) -> None:
    with connect(server.run_dir, echo.SERVICE, timeout=DEADLINE_S) as hostile:
        if honest_first:
            hostile.call(echo.EMIT, echo.emit_payload(3, 16), timeout=DEADLINE_S)
        _scribble(hostile, where)
        wake.ring_eventfd(hostile._doorbell)
        try:
            hostile.send(echo.EMIT, echo.emit_payload(20, 100))
            hostile.read_response(timeout=0.2)
            hostile.dispatch(CS_DISPATCH_ALL, lambda rtype, payload: None)
        except CsError:
            pass  # the client broke its own rings: any error is fair, the server is what is tested
    _still_serves(server)
