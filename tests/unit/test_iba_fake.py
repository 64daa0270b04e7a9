"""The fake verbs backend behaves like RC queue pairs on rdma_cm: states, completions, errors, disconnects."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from pycorosync.transports.iba.fake import FakeBackend, FakeConnection, FakeEndpoint
from pycorosync.transports.iba.verbs import (
    CmEventType,
    Completion,
    QpState,
    Sge,
    VerbsError,
    WcOpcode,
    WcStatus,
    check_transition,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fabric() -> Iterator[Callable[..., FakeEndpoint]]:
    backend = FakeBackend(f"unit{os.getpid()}x{time.monotonic_ns()}")
    made: list[FakeEndpoint] = []

    def open_ep(addr: str, port: int = 7000, **kw: int) -> FakeEndpoint:
        ep = backend.open(addr, port, **kw)
        made.append(ep)
        return ep

    yield open_ep
    for ep in made:
        ep.close()


def wait_events(ep: FakeEndpoint, kinds: set[CmEventType], timeout: float = 5.0) -> list:
    """CM events of ``ep`` until one of ``kinds`` arrives (each endpoint's "HCA" runs inside its own calls)."""
    out: list = []
    deadline = time.monotonic() + timeout
    while not any(e.kind in kinds for e in out):
        assert time.monotonic() < deadline, f"no {kinds} (got {out})"
        out += ep.get_cm_events()
        select.select([ep.cm_fd], [], [], 0.01)
    return out


def completions(ep: FakeEndpoint, n: int, others: tuple[FakeEndpoint, ...] = (), timeout: float = 5.0) -> list[Completion]:
    out: list[Completion] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} completions: {out}"
        for o in others:
            o.progress()
        out += ep.poll_cq(64)
    return out


def connected_pair(open_ep: Callable[..., FakeEndpoint]) -> tuple[FakeEndpoint, FakeConnection, FakeEndpoint, FakeConnection]:
    a = open_ep("10.0.0.1")
    b = open_ep("10.0.0.2")
    ca = a.connect("10.0.0.2", 7000)
    req = next(e for e in wait_events(b, {CmEventType.CONNECT_REQUEST}) if e.kind == CmEventType.CONNECT_REQUEST)
    cb = req.conn
    b.accept(cb)
    wait_events(a, {CmEventType.ESTABLISHED})
    return a, ca, b, cb


def region(ep: FakeEndpoint, nbytes: int) -> tuple[np.ndarray, object]:
    arr = np.zeros(nbytes, np.uint8)
    return arr, ep.reg_mr(arr)


def test_connect_and_accept_take_both_qps_from_init_to_rts(fabric) -> None:
    a = fabric("10.0.0.1")
    b = fabric("10.0.0.2")
    ca = a.connect("10.0.0.2", 7000)
    assert ca.state == QpState.INIT  # receives may be posted before the peer can send
    req = wait_events(b, {CmEventType.CONNECT_REQUEST})[-1]
    assert req.conn.state == QpState.INIT
    b.accept(req.conn)
    assert req.conn.state == QpState.RTS
    assert wait_events(a, {CmEventType.ESTABLISHED})[-1].conn is ca
    assert ca.state == QpState.RTS


def test_qp_refuses_sends_before_rts_and_transitions_the_spec_forbids() -> None:
    with pytest.raises(VerbsError, match="RESET -> RTS"):
        check_transition(QpState.RESET, QpState.RTS)
    with pytest.raises(VerbsError, match="INIT -> RTS"):
        check_transition(QpState.INIT, QpState.RTS)
    check_transition(QpState.RTS, QpState.ERR)
    check_transition(QpState.ERR, QpState.RESET)
    with pytest.raises(VerbsError):
        check_transition(QpState.ERR, QpState.RTS)


def test_post_send_on_a_connecting_qp_raises(fabric) -> None:
    a = fabric("10.0.0.1")
    fabric("10.0.0.2")
    ca = a.connect("10.0.0.2", 7000)
    _arr, mr = region(a, 64)
    with pytest.raises(VerbsError, match="needs RTS"):
        ca.post_send(1, [Sge(mr.addr, 8, mr.lkey)], 0)


def test_send_lands_in_the_posted_receive_with_its_immediate_and_both_complete(fabric) -> None:
    a, ca, b, cb = connected_pair(fabric)
    src, smr = region(a, 64)
    dst, dmr = region(b, 64)
    src[:5] = np.frombuffer(b"hello", np.uint8)
    src[10:13] = np.frombuffer(b"abc", np.uint8)
    cb.post_recv(7, Sge(dmr.addr + 8, 32, dmr.lkey))
    ca.post_send(9, [Sge(smr.addr, 5, smr.lkey), Sge(smr.addr + 10, 3, smr.lkey)], 0x01000005)
    (send,) = completions(a, 1)
    assert (send.wr_id, send.status, send.opcode) == (9, WcStatus.SUCCESS, WcOpcode.SEND)
    (recv,) = completions(b, 1)
    assert (recv.wr_id, recv.status, recv.opcode, recv.byte_len, recv.imm) == (
        7, WcStatus.SUCCESS, WcOpcode.RECV, 8, 0x01000005)
    assert bytes(dst[8:16]) == b"helloabc"


def test_a_message_waits_on_the_wire_until_a_receive_is_posted(fabric) -> None:
    a, ca, b, cb = connected_pair(fabric)
    _src, smr = region(a, 16)
    _dst, dmr = region(b, 16)
    ca.post_send(1, [Sge(smr.addr, 4, smr.lkey)], 0)
    completions(a, 1)
    for _ in range(5):
        assert b.poll_cq(8) == []  # receiver not ready: nothing lost, nothing completed
    cb.post_recv(2, Sge(dmr.addr, 16, dmr.lkey))
    (recv,) = completions(b, 1)
    assert recv.byte_len == 4 and recv.status == WcStatus.SUCCESS


def test_a_message_longer_than_the_receive_buffer_is_loc_len_err_and_breaks_the_connection(fabric) -> None:
    a, ca, b, cb = connected_pair(fabric)
    _src, smr = region(a, 64)
    _dst, dmr = region(b, 64)
    cb.post_recv(1, Sge(dmr.addr, 8, dmr.lkey))
    cb.post_recv(2, Sge(dmr.addr + 8, 8, dmr.lkey))
    ca.post_send(3, [Sge(smr.addr, 20, smr.lkey)], 0)
    got = completions(b, 2, others=(a,))
    assert [(c.wr_id, c.status) for c in got] == [(1, WcStatus.LOC_LEN_ERR), (2, WcStatus.WR_FLUSH_ERR)]
    assert cb.state == QpState.ERR
    assert any(e.kind == CmEventType.DISCONNECTED for e in wait_events(a, {CmEventType.DISCONNECTED}))


def test_an_sge_outside_any_registered_region_is_loc_prot_err(fabric) -> None:
    a, ca, _b, _cb = connected_pair(fabric)
    _src, smr = region(a, 16)
    ca.post_send(1, [Sge(smr.addr + 8, 16, smr.lkey)], 0)  # runs past the region's end
    (c,) = completions(a, 1)
    assert c.status == WcStatus.LOC_PROT_ERR and ca.state == QpState.ERR
    _smr2_arr, smr2 = region(a, 16)
    smr2.close()  # deregistered: its lkey is no longer valid
    assert a.registered_mrs == 1


def test_bytes_are_read_when_the_send_goes_out_not_when_it_is_posted(fabric) -> None:
    a, ca, b, cb = connected_pair(fabric)
    src, smr = region(a, 8)
    dst, dmr = region(b, 8)
    cb.post_recv(1, Sge(dmr.addr, 8, dmr.lkey))
    src[:] = 1
    ca.post_send(2, [Sge(smr.addr, 8, smr.lkey)], 0)
    src[:] = 2  # a caller that reuses a buffer before its completion sends what is there at DMA time
    completions(a, 1)
    completions(b, 1)
    assert bytes(dst) == bytes([2] * 8)


def test_disconnect_flushes_posted_work_and_the_peer_sees_disconnected(fabric) -> None:
    a, ca, b, cb = connected_pair(fabric)
    _dst, dmr = region(a, 32)
    ca.post_recv(1, Sge(dmr.addr, 16, dmr.lkey))
    ca.post_recv(2, Sge(dmr.addr + 16, 16, dmr.lkey))
    ca.disconnect()
    got = completions(a, 2)
    assert {(c.wr_id, c.status) for c in got} == {(1, WcStatus.WR_FLUSH_ERR), (2, WcStatus.WR_FLUSH_ERR)}
    assert ca.state == QpState.ERR
    ca.post_recv(3, Sge(dmr.addr, 16, dmr.lkey))  # on an ERR QP a post completes at once, flushed
    assert completions(a, 1)[0].status == WcStatus.WR_FLUSH_ERR
    assert wait_events(b, {CmEventType.DISCONNECTED})[-1].conn is cb
    assert cb.state == QpState.ERR


def test_connect_to_an_address_nobody_listens_on_is_unreachable(fabric) -> None:
    a = fabric("10.0.0.1")
    conn = a.connect("10.0.0.9", 7000)
    ev = wait_events(a, {CmEventType.UNREACHABLE})[-1]
    assert ev.conn is conn and conn.state == QpState.ERR


def test_a_crashed_endpoint_is_disconnected_for_its_peer(fabric) -> None:
    a, ca, b, _cb = connected_pair(fabric)
    b.crash()
    assert wait_events(a, {CmEventType.DISCONNECTED})[-1].conn is ca


def test_completion_channel_signals_only_completions_that_arrive_after_arming(fabric) -> None:
    a, ca, b, cb = connected_pair(fabric)
    _src, smr = region(a, 8)
    _dst, dmr = region(b, 16)
    cb.post_recv(1, Sge(dmr.addr, 8, dmr.lkey))
    cb.post_recv(2, Sge(dmr.addr + 8, 8, dmr.lkey))
    ca.post_send(3, [Sge(smr.addr, 8, smr.lkey)], 0)
    completions(a, 1)
    b.progress()  # completes recv 1 while the CQ is not armed
    assert not b.get_cq_event()
    assert len(b.poll_cq(8)) == 1
    b.req_notify_cq()
    ca.post_send(4, [Sge(smr.addr, 8, smr.lkey)], 0)
    completions(a, 1)
    r, _, _ = select.select([b.comp_fd], [], [], 5.0)
    assert r, "the completion channel fd never turned readable"
    assert b.get_cq_event()
    assert [c.wr_id for c in b.poll_cq(8)] == [2]


def test_post_beyond_the_queue_depth_is_refused(fabric) -> None:
    a = fabric("10.0.0.1", recv_depth=2)
    fabric("10.0.0.2")
    conn = a.connect("10.0.0.2", 7000)
    _arr, mr = region(a, 64)
    conn.post_recv(1, Sge(mr.addr, 8, mr.lkey))
    conn.post_recv(2, Sge(mr.addr, 8, mr.lkey))
    with pytest.raises(VerbsError, match="full"):
        conn.post_recv(3, Sge(mr.addr, 8, mr.lkey))


PEER = textwrap.dedent("""
    import sys, time, numpy as np
    from pycorosync.transports.iba.fake import FakeBackend
    from pycorosync.transports.iba.verbs import CmEventType, Sge
    ep = FakeBackend(sys.argv[1]).open("10.0.0.2", 7000)
    buf = np.zeros(64, np.uint8); mr = ep.reg_mr(buf)
    print("ready", flush=True)
    conn = None
    deadline = time.monotonic() + 20
    while conn is None and time.monotonic() < deadline:
        for ev in ep.get_cm_events():
            if ev.kind == CmEventType.CONNECT_REQUEST:
                conn = ev.conn
                conn.post_recv(1, Sge(mr.addr, 64, mr.lkey))
                ep.accept(conn)
        time.sleep(0.005)
    got = []
    while not got and time.monotonic() < deadline:
        got = [c for c in ep.poll_cq(4) if c.wr_id == 1]
        time.sleep(0.002)
    n = got[0].byte_len
    buf[:n] = buf[:n][::-1]
    conn.post_send(2, [Sge(mr.addr, n, mr.lkey)], got[0].imm + 1)
    while not [c for c in ep.poll_cq(4) if c.wr_id == 2] and time.monotonic() < deadline:
        time.sleep(0.002)
    while time.monotonic() < deadline and not [e for e in ep.get_cm_events() if e.kind == CmEventType.DISCONNECTED]:
        time.sleep(0.005)
""")


def test_fake_fabric_connects_processes_and_carries_messages_between_them(fabric) -> None:
    name = f"xproc{os.getpid()}x{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", PEER, name], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        a = FakeBackend(name).open("10.0.0.1", 7000)
        try:
            conn = a.connect("10.0.0.2", 7000)
            arr, mr = region(a, 64)
            conn.post_recv(5, Sge(mr.addr + 32, 32, mr.lkey))
            wait_events(a, {CmEventType.ESTABLISHED})
            arr[:4] = np.frombuffer(b"abcd", np.uint8)
            conn.post_send(6, [Sge(mr.addr, 4, mr.lkey)], 41)
            got = next(c for c in completions(a, 2, timeout=20) if c.wr_id == 5)
            assert got.imm == 42 and bytes(arr[32:36]) == b"dcba"
            conn.disconnect()
            assert proc.wait(20) == 0
        finally:
            a.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
