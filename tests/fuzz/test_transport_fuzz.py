"""Bad datagrams against running transport processes: all counted and dropped, valid traffic untouched.

Three transport processes (nodes 1, 2, 3, AES-GCM). The test plays totem for node 1, streaming
sequence-numbered frames to every node, and for node 2, checking that every frame arrives once, in
order. Meanwhile a fuzzer thread sends node 2 random, truncated, large, replayed, wrong-key,
wrong-cluster, unknown-sender and bit-flipped datagrams, some from node 1's own address. Node 3 has a
different authkey: it must accept nothing and say why in its log, once per interval.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from pycorosync.transports.crypto import HEADER_BYTES, CryptoSettings, FrameCodec
from pycorosync.transports.udp.counters import DROP_NAMES
from pycorosync.transports.udp.node import TransportProcess
from pycorosync.transports.udp.plan import make_plan
from tests.unit.test_udp_transport import free_port

KEY = os.urandom(256)
CLUSTER = "fuzz"
PAYLOAD = 400
SECONDS = 3.0
WINDOW = 1000  # frames in flight, as totem's flow control would bound them


def capture_socket(port: int) -> socket.socket | None:
    """An AF_PACKET socket on lo to capture node 1's real frames for replay (root only)."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        s.bind(("lo", 0))
        s.setblocking(False)
        return s
    except (OSError, AttributeError):
        return None


def captured_frames(sock: socket.socket | None, port: int, frame_len: int, limit: int = 200) -> list[bytes]:
    """UDP payloads to ``port`` from 127.0.0.1, cut into frames (loopback keeps GSO trains whole)."""
    out: list[bytes] = []
    if sock is None:
        return out
    while len(out) < limit:
        try:
            pkt = sock.recv(70000)
        except BlockingIOError:
            break
        if len(pkt) < 14 + 20 + 8 or pkt[12:14] != b"\x08\x00" or pkt[14 + 9] != 17:
            continue
        ihl = (pkt[14] & 0x0F) * 4
        src = pkt[14 + 12 : 14 + 16]
        udp = 14 + ihl
        dport = struct.unpack("!H", pkt[udp + 2 : udp + 4])[0]
        if dport != port or src != bytes([127, 0, 0, 1]):
            continue
        body = pkt[udp + 8 :]
        out.extend(body[i : i + frame_len] for i in range(0, len(body), frame_len))
    return out


class Fuzzer(threading.Thread):
    """Sends bad datagrams at node 2 until stopped; counts what it sent."""

    def __init__(self, seed: int, target: tuple[str, int], capture: socket.socket | None, frame_len: int) -> None:
        super().__init__(daemon=True)
        self.rng = random.Random(seed)
        self.target = target
        self.capture = capture
        self.frame_len = frame_len
        self.stop_event = threading.Event()
        self.sent: dict[str, int] = {}
        self.error: BaseException | None = None
        # frames of an old incarnation of node 1 (right key): replays once node 2 knows the real one
        self.stale = FrameCodec(CryptoSettings("aes256", "sha256", CLUSTER, KEY), 1, 1000)
        self.peer_known = threading.Event()
        self.wrong_key = FrameCodec(CryptoSettings("aes256", "sha256", CLUSTER, os.urandom(256)), 1, time.time_ns())
        self.wrong_cluster = FrameCodec(CryptoSettings("aes256", "sha256", "other", KEY), 1, time.time_ns())
        self.unknown = FrameCodec(CryptoSettings("aes256", "sha256", CLUSTER, KEY), 99, time.time_ns())

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        socks[0].bind(("127.0.0.1", 0))  # node 1's address, another port: spoofed source
        socks[1].bind(("127.0.0.9", 0))  # an address no node has
        real: list[bytes] = []
        try:
            while not self.stop_event.is_set():
                real.extend(captured_frames(self.capture, self.target[1], self.frame_len))
                real = real[-500:]
                kind, data = self.make(real)
                self.rng.choice(socks).sendto(data, self.target)
                self.sent[kind] = self.sent.get(kind, 0) + 1
                if sum(self.sent.values()) % 50 == 0:
                    time.sleep(0.002)  # an attacker at a steady rate; valid traffic must still flow
        finally:
            for s in socks:
                s.close()

    def make(self, real: list[bytes]) -> tuple[str, bytes]:
        rng = self.rng
        payload = rng.randbytes(rng.randint(0, 300))
        kinds = ["random", "short", "large", "wrong_key", "wrong_cluster", "unknown"]
        if self.peer_known.is_set():
            kinds.append("stale")
        if real:
            kinds += ["replay", "flip", "truncate"] * 2
        kind = rng.choice(kinds)
        if kind == "random":
            return kind, rng.randbytes(rng.randint(HEADER_BYTES, 1400))
        if kind == "short":
            return kind, rng.randbytes(rng.randint(0, HEADER_BYTES - 1))
        if kind == "large":  # longer than netmtu allows (IP fragments on a real link), and garbage
            return kind, rng.randbytes(rng.randint(1500, 60000))
        if kind == "wrong_key":
            return kind, self.wrong_key.seal(payload)
        if kind == "wrong_cluster":
            return kind, self.wrong_cluster.seal(payload)
        if kind == "unknown":
            return kind, self.unknown.seal(payload)
        if kind == "stale":
            return kind, self.stale.seal(payload)
        frame = rng.choice(real)
        if kind == "replay":
            return kind, frame
        if kind == "flip":
            b = bytearray(frame)
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
            return kind, bytes(b)
        return kind, frame[: rng.randrange(len(frame))]


@pytest.fixture
def nodes() -> Iterator[tuple[list[TransportProcess], str]]:
    port = free_port()
    members = [(1, "127.0.0.1"), (2, "127.0.0.2"), (3, "127.0.0.3")]
    good = CryptoSettings("aes256", "sha256", CLUSTER, KEY)
    bad = CryptoSettings("aes256", "sha256", CLUSTER, os.urandom(256))
    procs: list[TransportProcess] = []
    log_fd, log_path = tempfile.mkstemp(prefix="transport-node3-", suffix=".log")
    try:
        for nid, crypto in ((1, good), (2, good), (3, bad)):
            plan = make_plan(nid, members, crypto, mcastport=port)
            stderr = log_fd if nid == 3 else None
            procs.append(TransportProcess(plan, capacity=1 << 21, stderr=stderr,
                                          extra_args=["--drop-log-interval", "0.5"]))
        yield procs, log_path
    finally:
        for p in procs:
            p.stop()
        os.close(log_fd)
        with contextlib.suppress(OSError):
            os.unlink(log_path)


def test_fuzzed_transport_counts_and_drops_every_bad_datagram_while_valid_traffic_flows(nodes) -> None:
    (a, b, c), node3_log = nodes
    seed = int(os.environ.get("TRANSPORT_FUZZ_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"transport fuzz seed {seed} (replay: TRANSPORT_FUZZ_SEED={seed})")  # shown with any failure
    frame_len = HEADER_BYTES + PAYLOAD + 16
    target = (b.plan.local_addr, b.plan.port_of(2))
    capture = capture_socket(target[1])
    fuzzer = Fuzzer(seed, target, capture, frame_len)
    sent = received = 0
    try:
        fuzzer.start()
        end = time.monotonic() + SECONDS
        while time.monotonic() < end or received < sent:
            assert time.monotonic() < end + 20, f"valid traffic stalled at {received}/{sent} (seed {seed})"
            while time.monotonic() < end and sent - received < WINDOW and a.push(0, _frame(sent)):
                sent += 1
            batch = b.pop_batch(256)
            for rtype, payload in batch:
                assert rtype == 1
                assert payload == _frame(received), f"frame {received} lost or out of order (seed {seed})"
                received += 1
                fuzzer.peer_known.set()
            if not batch and b.seg.rx.arm():
                b.rx_bell.wait(0.005)
    finally:
        fuzzer.stop_event.set()
        fuzzer.join(10)
        if capture is not None:
            capture.close()
    assert fuzzer.error is None, fuzzer.error
    attacks = sum(fuzzer.sent.values())
    assert sent > 1000 and attacks > 200, (sent, fuzzer.sent)
    if capture is not None:  # root: real frames were captured and replayed, flipped and cut
        assert all(fuzzer.sent.get(k, 0) > 10 for k in ("replay", "flip", "truncate", "stale")), fuzzer.sent

    def drops() -> int:
        ctr = b.counters()
        return sum(ctr[f"rx_drop_{n}"] for n in DROP_NAMES)

    deadline = time.monotonic() + 10
    while drops() < attacks and time.monotonic() < deadline:
        time.sleep(0.02)
    ctr = b.counters()
    assert drops() == attacks, f"sent {fuzzer.sent}, counted {ctr} (seed {seed})"
    assert ctr["rx_drop_own"] == 0
    assert b.seg.rx.pop() is None  # nothing forged reached totem
    for kind, reason in (("wrong_cluster", "wrong_cluster"), ("unknown", "unknown_node"), ("short", "too_short"),
                         ("large", "bad_header"), ("stale", "replay")):
        assert ctr[f"rx_drop_{reason}"] >= fuzzer.sent.get(kind, 0), (kind, ctr)
    assert ctr["rx_drop_bad_auth"] >= fuzzer.sent.get("wrong_key", 0)
    if fuzzer.sent.get("replay"):
        assert ctr["rx_drop_replay"] >= fuzzer.sent["replay"] + fuzzer.sent.get("stale", 0)
    assert a.alive() and b.alive() and c.alive()

    # node 3 holds another key: it never accepted a frame, and its log says why, rate-limited
    deadline = time.monotonic() + 10  # node 3's transport may still be reading its socket on a loaded machine
    while c.counters()["rx_drop_bad_auth"] < sent * 0.9 and time.monotonic() < deadline:
        time.sleep(0.02)
    c3 = c.counters()
    assert c3["rx_delivered"] == 0 and c3["rx_drop_bad_auth"] >= sent * 0.9, (c3, sent, f"seed {seed}")
    assert c.seg.rx.pop() is None
    c.stop()
    with open(node3_log) as f:
        lines = [ln for ln in f if "failed authentication" in ln]
    assert lines, "node 3 did not log why it drops frames"
    assert "authkey" in lines[0]
    assert len(lines) <= SECONDS / 0.5 + 4, lines


def _frame(i: int) -> bytes:
    return i.to_bytes(8, "little") * (PAYLOAD // 8)
