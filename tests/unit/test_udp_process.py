"""The transport as a process: doorbell wake-ups, stats and link health in shm, clean SIGTERM/stop."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from pycorosync.ipc.ring_kernels import OFF_CWAIT
from pycorosync.localcluster import cpu_ns
from pycorosync.transports.crypto import CryptoSettings
from pycorosync.transports.udp.node import TransportProcess
from pycorosync.transports.udp.plan import make_plan
from tests.unit.test_udp_transport import free_port

AES = CryptoSettings("aes256", "sha256", "proc", bytes(range(200)))


@pytest.fixture
def spawn() -> Iterator[Callable[..., list[TransportProcess]]]:
    procs: list[TransportProcess] = []

    def make(n: int = 2, crypto: CryptoSettings = AES, capacity: int = 1 << 20, **kw: object) -> list[TransportProcess]:
        port = free_port()
        nodes = [(i, f"127.0.0.{i}") for i in range(1, n + 1)]
        for i in range(1, n + 1):
            plan = make_plan(i, nodes, crypto, mcastport=port, **kw)
            procs.append(TransportProcess(plan, capacity=capacity))
        return procs[-n:]

    yield make
    for p in procs:
        p.stop()


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_sleeping_transport_wakes_on_its_doorbell_and_delivers(spawn) -> None:
    a, b = spawn(2)
    # a sleeps in epoll once it has armed its tx ring's waiting flag
    wait_for(lambda: a.seg.tx.array[a.seg.tx.offset + OFF_CWAIT] == 1)
    t0 = time.monotonic()
    assert a.push(2, b"wake up")
    if b.seg.rx.arm():  # we sleep too, so b must ring our doorbell
        assert b.rx_bell.wait(5.0)
    assert b.seg.rx.pop() == (1, b"wake up")
    assert time.monotonic() - t0 < 5.0  # generous: the machine is shared; the point is the wake-up


def test_counters_and_link_health_are_published_in_shared_memory(spawn) -> None:
    a, b = spawn(2, token_ms=3000)
    for i in range(100):
        assert a.push(2, i.to_bytes(4, "little") * 50)
    got = []
    wait_for(lambda: got.extend(b.seg.rx.pop_batch(256)) or len(got) >= 100)
    wait_for(lambda: b.counters()["rx_delivered"] >= 100 and a.counters()["tx_packets"] >= 100)
    status = {s.nodeid: s for s in b.seg.links.statuses(time.monotonic_ns())}
    wait_for(lambda: bool(b.seg.links.table[0, 6]))
    assert status[1].rx_packets == 100
    assert not status[2].connected  # itself


@pytest.mark.parametrize("how", ["sigterm", "stop_fd"])
def test_transport_process_stops_cleanly(spawn, how: str) -> None:
    (a,) = spawn(1)
    t0 = time.monotonic()
    if how == "sigterm":
        os.kill(a.proc.pid, signal.SIGTERM)
        rc = a.proc.wait(10)
    else:
        rc = a.stop()
    assert rc == 0
    assert time.monotonic() - t0 < 5.0


def test_full_rx_ring_stalls_the_transport_until_totem_frees_room_and_nothing_is_lost(spawn) -> None:
    a, b = spawn(2, capacity=1 << 16)
    total = 3000  # 3000 x 300 B: about 14 times what b's rx ring holds
    sent = 0
    while sent < total:
        if a.push(2, sent.to_bytes(8, "little") * 37):
            sent += 1
        else:
            time.sleep(0.001)
    wait_for(lambda: b.counters()["rx_ring_full"] > 0)
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 20
    while len(got) < total:
        assert time.monotonic() < deadline, f"stalled at {len(got)}"
        batch = b.pop_batch(256)
        got.extend(batch)
        if not batch and b.seg.rx.arm():
            b.rx_bell.wait(0.05)
    assert [p for _, p in got] == [i.to_bytes(8, "little") * 37 for i in range(total)]


def test_a_transport_stalled_on_a_full_rx_ring_sleeps_until_room_is_freed(spawn) -> None:
    """While b's rx ring is full the datagrams wait in its socket, which epoll reports readable all the
    time: b must sleep until the consumer frees room, not wake on the socket again and again."""
    a, b = spawn(2, capacity=1 << 16)
    total = 1500  # 1500 x 300 B: about 7 times what b's rx ring holds; the rest waits in b's socket
    sent = 0
    while sent < total:
        if a.push(2, sent.to_bytes(8, "little") * 37):
            sent += 1
        else:
            time.sleep(0.001)
    wait_for(lambda: b.counters()["rx_ring_full"] > 0 and a.counters()["tx_packets"] >= total)
    t0, cpu0 = time.monotonic(), cpu_ns(b.proc.pid)
    time.sleep(1.0)  # the span measured: nothing is read from b's rx ring meanwhile
    busy = (cpu_ns(b.proc.pid) - cpu0) / 1e9 / (time.monotonic() - t0)
    assert busy < 0.2, f"a stalled transport used {busy:.0%} of a core"
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 20
    while len(got) < total:
        assert time.monotonic() < deadline, f"stalled at {len(got)}"
        batch = b.pop_batch(256)
        got.extend(batch)
        if not batch and b.seg.rx.arm():
            b.rx_bell.wait(0.05)
    assert [p for _, p in got] == [i.to_bytes(8, "little") * 37 for i in range(total)]


def test_node_helpers_share_the_link_table_and_the_stats_row() -> None:
    from pycorosync.ipc import segment as shm
    from pycorosync.ipc.stats import StatsTable
    from pycorosync.transports import links
    from pycorosync.transports.udp.node import shared_link_table, stats_row_for

    cluster = f"t{os.getpid()}"
    table, seg = shared_link_table(cluster, 1, [3, 1, 2])
    stats_name = shm.segment_name(cluster, 1, "stats")
    stats = StatsTable.create(stats_name, 2)
    try:
        table.table[0, links.COL_RX_PACKETS] = 7
        other = shm.Segment.attach(shm.segment_name(cluster, 1, "links"), shm.SegmentKind.RAW, 1)
        seen = links.LinkTable.attach(other.array()).statuses(0)
        assert [(s.nodeid, s.rx_packets) for s in seen] == [(1, 7), (2, 0), (3, 0)]
        del seen
        other.close()
        assert stats_row_for(stats_name) == (None, None)  # no slot for the transport yet
        stats.set_slot(1, "transport", os.getpid())
        row, cols = stats_row_for(stats_name)
        assert row is not None and cols is not None
        row[cols[0]] = 42
        assert stats.snapshot().value(1, "transport.tx_packets") == 42
    finally:
        del table
        seg.close()
        seg.unlink()
        stats.close()
        stats.unlink()
