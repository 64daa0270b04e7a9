"""The UDP transport between rings and sockets, driven in-process (transports pumped by the test)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from pycorosync.ipc.ring import Ring
from pycorosync.transports import links
from pycorosync.transports.crypto import CryptoSettings, FrameCodec
from pycorosync.transports.udp.plan import TransportPlan, make_plan
from pycorosync.transports.udp.transport import UdpTransport

KEY = bytes(range(200))
PLAIN = CryptoSettings("none", "none", "test", b"")
AES = CryptoSettings("aes256", "sha256", "test", KEY)
HMAC = CryptoSettings("none", "sha256", "test", KEY)


def free_port(addr: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    """A port free on loopback now (each test uses its own, so parallel runs do not collide)."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        port = int(s.getsockname()[1])
    return port if port > 2 else free_port(addr, family)


class Node:
    def __init__(self, plan: TransportPlan, capacity: int = 1 << 20, **kw: object) -> None:
        self.tx = Ring.create(np.zeros(Ring.layout_bytes(capacity), np.uint8), capacity, label="tx")
        self.rx = Ring.create(np.zeros(Ring.layout_bytes(capacity), np.uint8), capacity, label="rx")
        self.t = UdpTransport(plan, self.tx, self.rx, None, None, **kw)  # type: ignore[arg-type]
        self.got: list[tuple[int, bytes]] = []

    def pump(self) -> int:
        did = self.t.pump_tx()
        now = time.monotonic_ns()
        if self.t.pending:
            self.t.flush_pending(now)
        else:
            for fd in self.t.rx_fds:
                did += self.t.pump_rx(fd, now)
        return did


@pytest.fixture
def cluster() -> Iterator[Callable[..., list[Node]]]:
    made: list[Node] = []

    def make(n: int = 2, crypto: CryptoSettings = PLAIN, transport: str = "udpu", **kw: object) -> list[Node]:
        port = free_port()
        nodes = [(i, f"127.0.0.{i}") for i in range(1, n + 1)]
        plan_kw = {k: kw.pop(k) for k in list(kw) if k in ("token_ms", "netmtu", "mcastaddr")}
        for i in range(1, n + 1):
            made.append(Node(make_plan(i, nodes, crypto, transport=transport, mcastport=port, **plan_kw), **kw))
        return made[-n:]

    yield make
    for node in made:
        node.t.close()


def run_until(nodes: list[Node], done: Callable[[], bool], timeout_s: float = 10.0, drain: bool = True) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        for n in nodes:
            n.pump()
            if drain:
                n.got.extend(n.rx.pop_batch(256))


def seq_payload(i: int, size: int = 200) -> bytes:
    return i.to_bytes(8, "little") * (size // 8)


@pytest.mark.parametrize("crypto", [PLAIN, HMAC, AES], ids=["plain", "hmac", "aes-gcm"])
def test_frames_to_one_node_arrive_in_order_with_the_sender_as_record_type(cluster, crypto: CryptoSettings) -> None:
    a, b, c = cluster(3, crypto)
    for i in range(500):
        assert a.tx.push(2, seq_payload(i))
    run_until([a, b, c], lambda: len(b.got) >= 500)
    assert [t for t, _ in b.got] == [1] * 500
    assert [p for _, p in b.got] == [seq_payload(i) for i in range(500)]
    run_until([a, b, c], lambda: True)
    assert c.got == []


@pytest.mark.parametrize("crypto", [PLAIN, AES], ids=["plain", "aes-gcm"])
def test_destination_zero_reaches_every_other_node_and_not_the_sender(cluster, crypto: CryptoSettings) -> None:
    nodes = cluster(3, crypto)
    for i in range(100):
        assert nodes[1].tx.push(0, seq_payload(i, 64))
    run_until(nodes, lambda: len(nodes[0].got) >= 100 and len(nodes[2].got) >= 100)
    for n in (nodes[0], nodes[2]):
        assert n.got == [(2, seq_payload(i, 64)) for i in range(100)]
    assert nodes[1].got == []


def test_multicast_transport_delivers_to_the_group_and_unicasts_tokens(cluster) -> None:
    nodes = cluster(3, AES, transport="udp", mcastaddr="239.192.77.1")
    nodes[0].tx.push(0, b"mcast frame")
    nodes[0].tx.push(3, b"token for 3")
    run_until(nodes, lambda: len(nodes[1].got) >= 1 and len(nodes[2].got) >= 2)
    assert nodes[1].got == [(1, b"mcast frame")]
    assert nodes[2].got == [(1, b"mcast frame"), (1, b"token for 3")]
    assert nodes[0].got == []
    assert nodes[0].t.counters()["rx_drop_own"] >= 1  # our own multicast came back and was not delivered


def test_ipv6_loopback_with_a_port_per_node() -> None:
    p1, p2 = free_port("::1", socket.AF_INET6), free_port("::1", socket.AF_INET6)
    nodes = [(1, "::1"), (2, "::1")]
    a = Node(make_plan(1, nodes, AES, ports=((1, p1), (2, p2))))
    b = Node(make_plan(2, nodes, AES, ports=((1, p1), (2, p2))))
    try:
        assert a.t.plan.family == socket.AF_INET6
        a.tx.push(2, b"over ipv6")
        run_until([a, b], lambda: len(b.got) >= 1)
        assert b.got == [(1, b"over ipv6")]
    finally:
        a.t.close()
        b.t.close()


def test_gso_and_gro_fallback_still_delivers_everything(cluster) -> None:
    a, b = cluster(2, AES, use_gso=False, use_gro=False)
    assert not a.t.sockets.gso and not b.t.sockets.gro
    for i in range(300):
        a.tx.push(2, seq_payload(i))
    run_until([a, b], lambda: len(b.got) >= 300)
    assert [p for _, p in b.got] == [seq_payload(i) for i in range(300)]
    assert a.t.counters()["tx_gso_segments"] == 0


def test_gso_batches_frames_of_one_size_to_one_peer(cluster) -> None:
    a, b = cluster(2, PLAIN)
    if not a.t.sockets.gso:
        pytest.skip("kernel without UDP GSO")
    for i in range(640):
        a.tx.push(2, seq_payload(i, 1024))
    run_until([a, b], lambda: len(b.got) >= 640)
    c = a.t.counters()
    assert c["tx_gso_segments"] == 640 and c["tx_batches"] <= 20


@pytest.mark.parametrize("crypto", [PLAIN, AES], ids=["plain", "aes-gcm"])
def test_full_rx_ring_is_back_pressure_and_loses_nothing(cluster, crypto: CryptoSettings) -> None:
    a, b = cluster(2, crypto, capacity=4096)
    total = 2000
    sent = 0
    while sent < total:
        if a.tx.push(2, seq_payload(sent, 256)):
            sent += 1
        else:
            a.pump()
        b.pump()  # b's rx ring (4 KiB) fills at once: nobody drains it yet
    run_until([a, b], lambda: b.t.pending == 1, drain=False)
    assert b.t.counters()["rx_ring_full"] > 0
    run_until([a, b], lambda: len(b.got) >= total)
    assert [p for _, p in b.got] == [seq_payload(i, 256) for i in range(total)]


def _inject(node: Node, datagram: bytes, src: str = "127.0.0.9") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.sendto(datagram, (node.t.plan.local_addr, node.t.plan.port_of(node.t.node_id)))


@pytest.mark.parametrize("crypto", [PLAIN, AES], ids=["plain", "aes-gcm"])
def test_replayed_wrong_cluster_unknown_and_short_datagrams_are_counted_and_dropped(cluster, crypto) -> None:
    a, b = cluster(2, crypto)
    boot = time.time_ns()
    good = FrameCodec(crypto, 1, boot)
    first = good.seal(b"first")
    _inject(b, first)
    _inject(b, first)  # replay
    _inject(b, FrameCodec(CryptoSettings(crypto.cipher, crypto.hash, "other", KEY), 1, boot).seal(b"x"))
    _inject(b, FrameCodec(crypto, 42, boot).seal(b"who?"))
    _inject(b, b"\x01\x02")
    _inject(b, FrameCodec(crypto, 1, boot - 10).seal(b"old incarnation"))
    expect = {"rx_drop_replay": 2, "rx_drop_wrong_cluster": 1, "rx_drop_unknown_node": 1, "rx_drop_too_short": 1}
    run_until([a, b], lambda: all(b.t.counters()[k] >= v for k, v in expect.items()))
    run_until([a, b], lambda: True)
    assert b.got == [(1, b"first")]
    assert {k: b.t.counters()[k] for k in expect} == expect


def test_wrong_key_node_accepts_nothing_and_logs_why_once_per_interval(cluster, caplog) -> None:
    port = free_port()
    nodes = [(1, "127.0.0.1"), (2, "127.0.0.2")]
    a = Node(make_plan(1, nodes, AES, mcastport=port))
    wrong = CryptoSettings("aes256", "sha256", "test", os.urandom(200))
    b = Node(make_plan(2, nodes, wrong, mcastport=port), drop_log_interval_s=0.2)
    try:
        with caplog.at_level(logging.WARNING, logger="TOTEM"):
            for k in range(1, 6):
                for i in range(50):
                    a.tx.push(2, seq_payload(i))
                run_until([a, b], lambda k=k: b.t.counters()["rx_drop_bad_auth"] >= 50 * k, drain=True)
                b.t.housekeeping(time.monotonic())
            assert b.got == []
            assert b.t.counters()["rx_delivered"] == 0
        msgs = [r.getMessage() for r in caplog.records if "failed authentication" in r.getMessage()]
        assert 1 <= len(msgs) <= 3, msgs  # rate-limited, not one line per frame
        assert "authkey" in msgs[0]
    finally:
        a.t.close()
        b.t.close()


def test_restarted_peer_is_accepted_as_a_new_incarnation(cluster) -> None:
    port = free_port()
    nodes = [(1, "127.0.0.1"), (2, "127.0.0.2")]
    b = Node(make_plan(2, nodes, AES, mcastport=port))
    try:
        for boot in (1000, 2000):
            a = Node(make_plan(1, nodes, AES, mcastport=port), boot_id=boot)
            a.tx.push(2, f"boot {boot}".encode())
            run_until([a, b], lambda boot=boot: (1, f"boot {boot}".encode()) in b.got)
            a.t.close()
        assert b.got == [(1, b"boot 1000"), (1, b"boot 2000")]
    finally:
        b.t.close()


def test_link_health_shows_connected_peers_then_disconnected_after_the_token_timeout(cluster) -> None:
    a, b, c = cluster(3, PLAIN, token_ms=200)
    a.tx.push(0, b"hello")
    run_until([a, b, c], lambda: len(b.got) >= 1 and len(c.got) >= 1)
    now = time.monotonic_ns()
    b.t.links.update_connected(now, 200_000_000)
    by_id = {s.nodeid: s for s in b.t.links.statuses(now)}
    assert by_id[1].connected and not by_id[3].connected
    assert by_id[1].rx_packets == 1 and by_id[1].rx_bytes > 5
    assert {s.nodeid: s.tx_packets for s in a.t.links.statuses(now)} == {1: 0, 2: 1, 3: 1}
    later = now + 300_000_000
    b.t.links.update_connected(later, 200_000_000)
    assert not b.t.links.statuses(later)[0].connected
    text = links.format_cfgtool_s(2, "udpu", "127.0.0.2", b.t.links.statuses(now))
    assert text.startswith("Local node ID 2, transport udpu\nLINK ID 0 \n\taddr\t= 127.0.0.2\n\tstatus:\n")
    assert "\t\tnodeid:          2:\tlocalhost\n" in text and "\t\tnodeid:          1:\t" in text


@pytest.mark.parametrize(("crypto", "use_evp"), [(PLAIN, True), (HMAC, True), (AES, True), (AES, False)],
                         ids=["plain", "hmac", "aes-evp", "aes-python"])
def test_frames_longer_than_netmtu_go_whole_in_order_and_only_a_frame_beyond_a_udp_datagram_is_dropped(
    cluster, caplog, crypto: CryptoSettings, use_evp: bool,
) -> None:
    # a commit token of a large cluster is longer than netmtu allows: it goes in one datagram of its own,
    # fragmented by IP (loopback's MTU does not need to), in its place among the other frames
    a, b, c = cluster(3, crypto, use_evp=use_evp)
    limit = a.t.plan.max_frame_bytes
    large = a.t.plan.max_large_frame_bytes
    assert limit == 1500 - 28 - crypto.overhead and large == 65507 - crypto.overhead
    sent = [(2, b"a" * 100), (2, b"L" * (limit + 1)), (0, b"M" * 20000), (2, b"X" * (large + 1)), (2, b"b" * limit),
            (0, b"c" * 50), (3, b"N" * large)]
    for dest, payload in sent:
        assert a.tx.push(dest, payload)
    run_until([a, b, c], lambda: len(b.got) >= 5 and len(c.got) >= 3)
    assert b.got == [(1, p) for d, p in sent if d in (0, 2) and p[:1] != b"X"]
    assert c.got == [(1, b"M" * 20000), (1, b"c" * 50), (1, b"N" * large)]
    counts = a.t.counters()
    assert counts["tx_large_frames"] == 3 and counts["tx_drop_oversized"] == 1
    assert b.t.counters()["rx_drop_oversized"] == 0
    with caplog.at_level(logging.ERROR, logger="TOTEM"):  # totem's bug, not the network's: said loudly
        a.t.housekeeping(a.t._last_drop_log + a.t.drop_log_interval_s + 1)
    assert f"Dropped 1 frames from totem longer than the {large} bytes" in caplog.text


def test_a_large_frame_first_in_the_ring_and_one_after_another_each_go_out(cluster) -> None:
    a, b = cluster(2, AES)
    for i in range(3):
        assert a.tx.push(2, bytes([i]) * 3000)
    run_until([a, b], lambda: len(b.got) >= 3)
    assert b.got == [(1, bytes([i]) * 3000) for i in range(3)]
    assert a.t.counters()["tx_large_frames"] == 3


@pytest.mark.parametrize("crypto", [PLAIN, AES], ids=["plain", "aes"])
def test_netmtu_65536_of_knet_never_makes_a_frame_longer_than_a_udp_datagram_can_be(cluster, crypto) -> None:
    # knet's default netmtu is 65536; over IPv4 a UDP payload is at most 65535 - 20 - 8 = 65507 bytes, and a
    # longer datagram is refused by the kernel at every send (a frame Totem would retransmit for ever)
    a, b = cluster(2, crypto, netmtu=65536)
    assert a.t.plan.max_datagram_bytes == 65507
    limit = a.t.plan.max_frame_bytes
    a.tx.push(2, b"z" * limit)
    run_until([a, b], lambda: len(b.got) >= 1)
    assert b.got == [(1, b"z" * limit)]
    assert a.t.counters()["tx_drop_oversized"] == 0


def test_shared_link_table_is_readable_by_another_attach() -> None:
    buf = np.zeros(links.table_bytes(3), np.uint8)
    lt = links.LinkTable.create(buf, [3, 1, 2])
    lt.table[1, links.COL_RX_PACKETS] = 5
    other = links.LinkTable.attach(buf)
    assert [s.nodeid for s in other.statuses(0)] == [1, 2, 3]
    assert other.statuses(0)[1].rx_packets == 5
    with pytest.raises(ValueError, match="link table"):
        links.LinkTable.attach(np.zeros(links.table_bytes(3), np.uint8))


def test_plan_from_a_parsed_corosync_conf(tmp_path) -> None:
    from pycorosync.engine.config import parse
    from pycorosync.transports.udp.plan import plan_from_config

    key = tmp_path / "authkey"
    key.write_bytes(KEY)
    key.chmod(0o400)
    conf = parse(
        "totem {\n version: 2\n cluster_name: alpha\n transport: udp\n crypto_cipher: aes128\n crypto_hash: sha1\n"
        f" keyfile: {key}\n netmtu: 9000\n interface {{\n  linknumber: 0\n  mcastport: 6000\n }}\n}}\n"
        "nodelist {\n node {\n  ring0_addr: 127.0.0.1\n  nodeid: 1\n }\n node {\n  ring0_addr: 127.0.0.2\n"
        "  nodeid: 2\n }\n}\n"
    )
    plan = plan_from_config(conf, 2)
    assert (plan.transport, plan.node_id, plan.local_addr, plan.mcastport, plan.netmtu) == ("udp", 2, "127.0.0.2", 6000,
                                                                                            9000)
    assert plan.group == conf.totem.links[0].mcastaddr or plan.group.startswith("239.192.")
    assert (plan.crypto.cipher, plan.crypto.hash, plan.crypto.cluster_name, plan.crypto.authkey) == (
        "aes128", "sha1", "alpha", KEY)
    assert plan.max_frame_bytes == 9000 - 28 - 48


@pytest.mark.parametrize(("evp_a", "evp_b"), [(True, False), (False, True)])
def test_kernel_aes_gcm_and_the_cryptography_path_interoperate(evp_a: bool, evp_b: bool) -> None:
    port = free_port()
    nodes = [(1, "127.0.0.1"), (2, "127.0.0.2")]
    a = Node(make_plan(1, nodes, AES, mcastport=port), use_evp=evp_a)
    b = Node(make_plan(2, nodes, AES, mcastport=port), use_evp=evp_b)
    try:
        for i in range(300):
            a.tx.push(2, seq_payload(i, 8 * (i % 100 + 1)))
        run_until([a, b], lambda: len(b.got) >= 300)
        assert [p for _, p in b.got] == [seq_payload(i, 8 * (i % 100 + 1)) for i in range(300)]
    finally:
        a.t.close()
        b.t.close()
