"""Faults on client connections: killed clients, hostile ring contents, full rings in both directions."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycorosync.ipc import echo, ring_kernels as rk, wakeup as wake
from pycorosync.ipc.client import CS_DISPATCH_ALL, Connection, connect
from pycorosync.ipc.errors import CS_ERR_LIBRARY, CS_ERR_TRY_AGAIN, CsError
from pycorosync.ipc.server import Server, ServerConnection, ServerLimits, ServerThread, create_segment
from tests.unit.test_conn import DEADLINE_S, RecordingEcho, run_dir, start_server

__all__ = ["run_dir", "start_server"]  # fixtures shared with test_conn

SMALL = ServerLimits(request_ring_bytes=4096, response_ring_bytes=4096, event_ring_bytes=4096)


def _open_fds() -> dict[int, str]:
    """This process's descriptors and what they point at."""
    gc.collect()  # objects of earlier tests closing their fds in __del__ must not blur the picture
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def _assert_freed(before: dict[int, str], after: dict[int, str], conn_id: int | None) -> None:
    """Nothing new is open; with ``conn_id``, that connection's socket, eventfds and memory were closed."""
    opened = {fd: target for fd, target in after.items() if before.get(fd) != target}
    assert not opened, f"descriptors leaked: {opened}"
    if conn_id is not None:
        closed = sorted(target.split(":")[0] for fd, target in before.items() if after.get(fd) != target)
        memfd = f"/memfd:pcs-{echo.SERVICE}#{conn_id} (deleted)"
        assert memfd in [t for fd, t in before.items() if after.get(fd) != t], f"mapping not freed: {closed}"
        assert closed.count("anon_inode") >= 2 and closed.count("socket") >= 1, f"closed only {closed}"


def _wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    """Polls a condition owned by another thread, with a deadline (short sleeps between looks)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def killable_client(run_dir: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts client processes that send requests in a loop; all are killed and reaped at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    code = textwrap.dedent(
        f"""
        from pycorosync.ipc.client import connect
        from pycorosync.ipc.errors import CsError
        conn = connect({str(run_dir)!r}, "echo", timeout=10)
        payload = b"k" * 700
        while True:
            try:
                conn.send(1, payload)
            except CsError:
                pass
            conn.read_response(timeout=10)
        """
    )

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(DEADLINE_S)
        if proc.stderr:
            proc.stderr.close()


def test_client_killed_while_writing_requests_is_dropped_and_frees_everything(
    start_server: Callable[..., tuple[Server, RecordingEcho]],
    killable_client: Callable[[], subprocess.Popen[bytes]],
) -> None:
    server, handler = start_server()
    with connect(server.run_dir, echo.SERVICE) as bystander:
        assert bystander.call(echo.ECHO, b"before", timeout=DEADLINE_S) == b"before"
        shm_before = set(os.listdir("/dev/shm"))
        fds_before = _open_fds()
        proc = killable_client()
        if not handler.wait_for(lambda: len(handler.connected) == 2, timeout=60):
            proc.kill()
            pytest.fail(f"child never connected: {proc.communicate(timeout=DEADLINE_S)[1].decode()[-2000:]}")
        victim = handler.connected[1]
        assert victim.pid == proc.pid
        baseline = handler.requests
        assert _wait_until(lambda: handler.requests > baseline + 200), "child is not sending requests"
        proc.send_signal(signal.SIGKILL)
        proc.wait(DEADLINE_S)
        assert proc.stderr is not None
        proc.stderr.close()  # our end of the child's stderr pipe is not the server's to free
        assert handler.wait_for(lambda: victim in handler.disconnected), "server did not notice the death"
        assert victim.closed and victim.conn_id not in server.connections
        assert bystander.call(echo.ECHO, b"after", timeout=DEADLINE_S) == b"after"
        _assert_freed(fds_before, _open_fds(), None)
        # other test runs share this machine's /dev/shm: look only for what this server or the child could own
        ours = (str(os.getpid()), str(proc.pid), echo.SERVICE)
        assert not [n for n in set(os.listdir("/dev/shm")) - shm_before if any(tag in n for tag in ours)]


# ---------------------------------------------------------------------------------------- hostile rings
def _ring_base(conn: Connection, ring: str) -> int:
    return int(getattr(conn.layout, f"{ring}_offset"))


def _poke(conn: Connection, offset: int, fmt: str, *values: int) -> None:
    # a hostile client writes its shared memory directly; the connection's array is that memory
    struct.pack_into(fmt, conn._mm, offset, *values)


def _publish_garbage(conn: Connection, header: tuple[int, int], tail_delta: int, skew: int = 0) -> None:
    """Writes a record header where the server reads next (moved by ``skew``) and publishes a tail."""
    base = _ring_base(conn, "request")
    (read_pos,) = struct.unpack_from("<q", conn._mm, base + rk.OFF_TAIL)  # all earlier records consumed
    read_pos += skew
    _poke(conn, base + rk.RING_HEADER_BYTES + (read_pos & (conn.layout.request_capacity - 1)), "<II", *header)
    if skew:
        _poke(conn, base + rk.OFF_RHEAD, "<q", read_pos)
        _poke(conn, base + rk.OFF_CACHED_TAIL, "<q", read_pos)
    _poke(conn, base + rk.OFF_WTAIL, "<q", read_pos + tail_delta)
    _poke(conn, base + rk.OFF_TAIL, "<q", read_pos + tail_delta)
    wake.ring_eventfd(conn._doorbell)


HOSTILE_REQUESTS: dict[str, tuple[Callable[[Connection], None], str]] = {
    "length past the end": (lambda c: _publish_garbage(c, (0x7FFF0000, 1), 64), "corrupt request ring"),
    "record longer than published": (lambda c: _publish_garbage(c, (100, 1), 16), "corrupt request ring"),
    "wrap pad in the wrong place": (lambda c: _publish_garbage(c, (rk.PAD_LEN, 0), 16), "corrupt request ring"),
    "tail behind the read position": (lambda c: _publish_garbage(c, (8, 1), -8), "corrupt request ring"),
    "tail a ring ahead": (lambda c: _publish_garbage(c, (8, 1), 4096 * 5), "corrupt request ring"),
    # the server may run between our stores of the read position and of the tail, and so see either a
    # record of type 77 at the skewed position or a nonsense one: both must end the connection
    "read position scribbled": (lambda c: _publish_garbage(c, (0, 77), 16, skew=3), "unknown request type|corrupt"),
    "unknown type": (lambda c: c.send(999, b"what"), "unknown request type 999"),
    "bytes on the socket": (lambda c: c._sock.send(b"hello?"), "unexpected 6-byte message on the socket"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_REQUESTS))
def test_client_writing_garbage_is_disconnected_and_the_server_serves_others(
    start_server: Callable[..., tuple[Server, RecordingEcho]], caplog: pytest.LogCaptureFixture, case: str
) -> None:
    corrupt, reason = HOSTILE_REQUESTS[case]
    server, handler = start_server(limits=SMALL)
    with connect(server.run_dir, echo.SERVICE) as bystander, connect(server.run_dir, echo.SERVICE) as hostile:
        fds_before = _open_fds()
        assert hostile.call(echo.ECHO, b"honest first", timeout=DEADLINE_S) == b"honest first"
        victim = handler.connected[1]
        corrupt(hostile)
        assert handler.wait_for(lambda: victim in handler.disconnected), f"{case}: not disconnected"
        assert "dropping connection" in caplog.text and re.search(reason, caplog.text), caplog.text
        assert server.stats.dropped == 1
        assert bystander.call(echo.ECHO, b"still served", timeout=DEADLINE_S) == b"still served"
        with pytest.raises(CsError) as err:
            hostile.call(echo.ECHO, b"again", timeout=DEADLINE_S)
        assert err.value.code == CS_ERR_LIBRARY
        # socket, two eventfds and the mapping's descriptor (Python's mmap keeps a dup of the memfd)
        _assert_freed(fds_before, _open_fds(), victim.conn_id)


def test_scribbled_write_index_of_a_server_ring_does_not_crash_the_server(
    start_server: Callable[..., tuple[Server, RecordingEcho]],
) -> None:
    server, _ = start_server(limits=SMALL)
    with connect(server.run_dir, echo.SERVICE) as hostile:
        for ring in ("response", "event"):
            base = _ring_base(hostile, ring)
            _poke(hostile, base + rk.OFF_WTAIL, "<q", 4096 - 3)  # unaligned, 3 bytes before the end
            _poke(hostile, base + rk.OFF_CACHED_HEAD, "<q", 4096 - 3)
        # whatever the client gets from the rings it broke; the server is what matters
        with contextlib.suppress(CsError):
            hostile.call(echo.EMIT, echo.emit_payload(3, 40), timeout=0.5)
    with connect(server.run_dir, echo.SERVICE) as honest:
        assert honest.call(echo.ECHO, b"alive", timeout=DEADLINE_S) == b"alive"


# ------------------------------------------------------------------------------------------ full rings
def _seq(i: int) -> bytes:
    return i.to_bytes(4, "little") * 100


def test_full_request_ring_is_try_again_and_nothing_is_lost(
    start_server: Callable[..., tuple[Server, RecordingEcho]],
) -> None:
    gate = threading.Event()

    class GatedEcho(RecordingEcho):
        def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
            gate.wait(DEADLINE_S)  # the service is busy: requests pile up in the ring
            return super().on_request(conn, rtype, payload)

    limits = ServerLimits(request_ring_bytes=4096, response_ring_bytes=1 << 16, event_ring_bytes=4096)
    server, _ = start_server(GatedEcho(), limits=limits)
    with connect(server.run_dir, echo.SERVICE) as conn:
        sent = 0
        with pytest.raises(CsError) as err:
            for sent in range(1000):  # the count reached is the result
                conn.send(echo.ECHO, _seq(sent))
        assert err.value.code == CS_ERR_TRY_AGAIN and 5 <= sent < 1000
        gate.set()
        for i in range(sent):
            assert conn.read_response(DEADLINE_S)[1][4:] == _seq(i)
        assert conn.call(echo.ECHO, b"flowing again", timeout=DEADLINE_S) == b"flowing again"


def test_full_response_ring_pauses_requests_then_delivers_every_response_in_order(
    start_server: Callable[..., tuple[Server, RecordingEcho]],
) -> None:
    server, handler = start_server(limits=SMALL)
    with connect(server.run_dir, echo.SERVICE) as conn:
        sent = 0
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            try:
                conn.send(echo.ECHO, _seq(sent))
            except CsError as exc:
                assert exc.code == CS_ERR_TRY_AGAIN
                sconn = handler.connected[0]
                if sconn.stats.flow_control:  # the server has stopped reading: both rings are full
                    break
                continue
            sent += 1
        else:
            pytest.fail("the rings never filled up")
        assert sconn.stats.flow_control_count >= 1 and sconn.stats.overload >= 1
        for i in range(sent):
            rtype, payload = conn.read_response(DEADLINE_S)
            assert (rtype, payload[4:]) == (echo.ECHO, _seq(i))
        assert conn.call(echo.ECHO, b"flowing again", timeout=DEADLINE_S) == b"flowing again"
        assert sconn.stats.flow_control == 0 and sconn.stats.responses == sent + 1


def test_full_event_ring_holds_events_back_until_the_client_reads(
    start_server: Callable[..., tuple[Server, RecordingEcho]],
) -> None:
    server, handler = start_server(limits=SMALL)
    with connect(server.run_dir, echo.SERVICE) as conn:
        conn.call(echo.EMIT, echo.emit_payload(300, 64), timeout=DEADLINE_S)
        sconn = handler.connected[0]
        assert sconn.stats.overload > 0 and sconn.stats.queued > 0
        seen: list[int] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(seen) < 300 and time.monotonic() < deadline:
            conn.wait_event(max(0.0, deadline - time.monotonic()))
            conn.dispatch(CS_DISPATCH_ALL, lambda rtype, payload: seen.append(echo.event_index(payload)))
        assert seen == list(range(300))
        assert _wait_until(lambda: sconn.stats.queued == 0)


def test_client_that_never_reads_events_is_dropped_when_its_backlog_overflows(
    start_server: Callable[..., tuple[Server, RecordingEcho]], caplog: pytest.LogCaptureFixture
) -> None:
    limits = ServerLimits(request_ring_bytes=4096, response_ring_bytes=4096, event_ring_bytes=4096, backlog_records=50)
    server, handler = start_server(limits=limits)
    with connect(server.run_dir, echo.SERVICE) as bystander, connect(server.run_dir, echo.SERVICE) as deaf:
        sconn = handler.connected[1]
        with pytest.raises(CsError) as err:
            deaf.call(echo.EMIT, echo.emit_payload(500, 64), timeout=DEADLINE_S)
        assert err.value.code == CS_ERR_LIBRARY
        assert handler.wait_for(lambda: sconn in handler.disconnected)
        assert "event backlog over its limit" in caplog.text
        assert bystander.call(echo.ECHO, b"unaffected", timeout=DEADLINE_S) == b"unaffected"


def test_connection_memory_cannot_be_shrunk_by_a_client() -> None:
    # a client that truncated the memfd would turn the server's next ring access into a SIGBUS
    fd, segment = create_segment(SMALL, "seal-test")
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, segment.layout.total_bytes * 2)
    finally:
        os.close(fd)
        segment.release()


def test_service_killed_with_sigkill_can_be_restarted_on_the_same_run_dir(run_dir: Path) -> None:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the service process: listens, then waits to be killed
        try:
            os.close(ready_r)
            Server(run_dir, echo.SERVICE, echo.EchoService())
            os.write(ready_w, b"1")
            signal.pause()
        finally:
            os._exit(1)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
    finally:
        os.close(ready_r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert (run_dir / "echo.sock").exists(), "a killed service leaves its socket file behind"
    with ServerThread(Server(run_dir, echo.SERVICE, RecordingEcho())), connect(run_dir, echo.SERVICE) as conn:
        assert conn.call(echo.ECHO, b"restarted", timeout=DEADLINE_S) == b"restarted"
