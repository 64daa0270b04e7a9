"""Every numba kernel of the UDP transport against its plain-Python reference."""

from __future__ import annotations

import socket

import numpy as np
from hypothesis import given, settings, strategies as st

from pycorosync.ipc.ring import Ring
from pycorosync.transports import crypto, peers
from pycorosync.transports.crypto import HEADER_BYTES, CryptoSettings, FrameCodec, FrameHeader
from pycorosync.transports.udp import batch, frames
from pycorosync.transports.udp.addresses import default_mcastaddr, sockaddr_bytes

# -- replay window -----------------------------------------------------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from([5, 5, 5, 5, 9, 3]), st.one_of(st.integers(1, 40), st.integers(1, 3000))),
    min_size=1, max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_replay_window_kernel_matches_the_reference(seq: list[tuple[int, int]]) -> None:
    state = peers.PeerState([1])
    ref = peers.ReferenceReplayWindow()
    for boot_id, counter in seq:
        v = state.verdict(0, boot_id, counter)
        assert v == ref.verdict(boot_id, counter), (boot_id, counter)
        if v != peers.REPLAY:
            state.mark(0, boot_id, counter)
            ref.mark(boot_id, counter)


def test_replay_window_drops_duplicates_old_counters_and_old_incarnations() -> None:
    s = peers.PeerState([4, 2, 9])
    i = s.index(9)
    assert (s.index(4), s.index(2), s.index(3)) == (1, 0, -1)
    assert s.verdict(i, 10, 1) == peers.NEW_INCARNATION
    s.mark(i, 10, 1)
    assert s.verdict(i, 10, 1) == peers.REPLAY
    s.mark(i, 10, 2000)
    assert s.verdict(i, 10, 1500) == peers.FRESH  # a gap inside the window may still arrive
    assert s.verdict(i, 10, 900) == peers.REPLAY  # fell out of the 1024 window
    assert s.verdict(i, 9, 5000) == peers.REPLAY  # an older incarnation
    assert s.verdict(i, 11, 1) == peers.NEW_INCARNATION


# -- GRO splitting -----------------------------------------------------------------------------------------

entries_st = st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 700)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(entries_st)
def test_split_segments_matches_the_reference(entries: list[tuple[int, int]]) -> None:
    slot = 4096
    hdrs = np.zeros((len(entries), 8), np.uint64)
    ctrl = np.zeros((len(entries), batch.CTRL_WORDS), np.uint64)
    for i, (total, gso) in enumerate(entries):
        hdrs[i, 7] = total
        if gso:
            hdrs[i, 5] = 24
            ctrl[i, 0] = 20
            ctrl[i, 1] = batch.SOL_UDP | (batch.UDP_GRO << 32)
            ctrl[i, 2] = gso
    seg_off = np.zeros(20000, np.int64)
    seg_len = np.zeros(20000, np.int64)
    ctr = np.zeros(frames.N_COUNTERS, np.int64)
    n = batch.split_segments(hdrs, ctrl, len(entries), slot, seg_off, seg_len, ctr)
    got = list(zip(seg_off[:n].tolist(), seg_len[:n].tolist()))
    assert got == batch.split_reference(entries, slot)


# -- GSO grouping and sending ------------------------------------------------------------------------------


def _names(*addrs: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
    names = np.zeros((len(addrs), 28), np.uint8)
    lens = np.zeros(len(addrs), np.int64)
    for i, a in enumerate(addrs):
        raw = sockaddr_bytes(a)
        names[i, : len(raw)] = np.frombuffer(raw, np.uint8)
        lens[i] = len(raw)
    return names, lens


frames_st = st.lists(st.tuples(st.sampled_from([0, 1]), st.sampled_from([1, 64, 64, 64, 200, 1400])),
                     min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(frames_st)
def test_send_frames_delivers_every_datagram_in_order_and_groups_like_the_reference(
    spec: list[tuple[int, int]],
) -> None:
    rxs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for r in rxs:
            r.bind(("127.0.0.1", 0))
            r.settimeout(5)
        names, namelens = _names(*(r.getsockname() for r in rxs))
        tb = batch.TxBatch(len(spec), 1500, names, namelens)
        for i, (dest, size) in enumerate(spec):
            tb.lens[i] = size
            tb.dests[i] = dest
            tb.stage[i, :size] = np.frombuffer(i.to_bytes(1, "little") * size, np.uint8)
        ctr = np.zeros(frames.N_COUNTERS, np.int64)
        link_tx = np.zeros((2, 2), np.int64)
        sent = batch.send_frames(tx.fileno(), tb.stage, tb.lens, tb.dests, len(spec), names, namelens, -1, -1,
                                 tb.hdrs, tb.iov, tb.ctrl, 64, ctr, link_tx, np.zeros(1, np.int64))
        assert sent == len(spec)
        for dest, r in enumerate(rxs):
            want = [(i, size) for i, (d, size) in enumerate(spec) if d == dest]
            got = []
            for _ in want:
                data = r.recv(2000)
                got.append((data[0], len(data)))
            assert got == want
            assert link_tx[dest, 0] == len(want)
        groups = batch.gso_groups_reference([s for _, s in spec], [d for d, _ in spec], 64)
        assert ctr[batch.C_TX_GSO_SEGMENTS] == sum(c for _, c in groups if c > 1)
        assert ctr[batch.C_SOCKET_ERRORS] == 0
    finally:
        for s in (*rxs, tx):
            s.close()


def test_send_to_all_skips_self_and_reaches_every_other_peer() -> None:
    rxs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for r in rxs:
            r.bind(("127.0.0.1", 0))
            r.setblocking(False)
        names, namelens = _names(*(r.getsockname() for r in rxs))
        tb = batch.TxBatch(4, 256, names, namelens)
        tb.lens[:4] = 100
        tb.dests[:4] = -1
        ctr = np.zeros(frames.N_COUNTERS, np.int64)
        batch.send_frames(rxs[1].fileno(), tb.stage, tb.lens, tb.dests, 4, names, namelens, 1, -1, tb.hdrs, tb.iov,
                          tb.ctrl, 64, ctr, np.zeros((3, 2), np.int64), np.zeros(1, np.int64))
        counts = []
        for r in rxs:
            n = 0
            while True:
                try:
                    r.recv(2000)
                    n += 1
                except BlockingIOError:
                    break
            counts.append(n)
        assert counts == [4, 0, 4]
    finally:
        for r in rxs:
            r.close()


# -- header stamping and classification --------------------------------------------------------------------


class _TxDrain:
    """A tx ring of records and the arrays ``frames.tx_drain`` fills (plain mode, node 1 of nodes 1 and 2)."""

    def __init__(self, *records: tuple[int, bytes]) -> None:
        self.ring = Ring.create(np.zeros(Ring.layout_bytes(1 << 16), np.uint8), 1 << 16)
        for dest, payload in records:
            assert self.ring.push(dest, payload)
        self.stage = np.zeros((8, 2048), np.uint8)
        self.lens = np.zeros(8, np.int64)
        self.dests = np.zeros(8, np.int64)
        self.ctr = np.zeros(frames.N_COUNTERS, np.int64)
        self.counter = np.zeros(1, np.int64)
        self.large = np.zeros(1, np.int64)
        self.ref = FrameCodec(CryptoSettings("none", "none", "c", b""), 1, 4242)  # seals as node 1 would

    def drain(self, max_payload: int, large_payload: int, stage: np.ndarray | None = None) -> int:
        stage = self.stage if stage is None else stage
        r = self.ring
        return int(frames.tx_drain(r.array, r.offset, r.capacity, stage, stage, self.lens, self.dests, stage.shape[0],
                                   max_payload, large_payload, self.large, np.array([1, 2], np.int64),
                                   crypto.MODE_PLAIN, crypto.cluster_hash("c"), 1, 4242, self.counter, self.ctr))


def test_tx_drain_writes_the_same_plain_header_as_the_codec() -> None:
    t = _TxDrain((2, b"hello"), (0, b"all"), (77, b"unknown destination"),
                 (2, b"x" * 3000))  # over the frame limit and the large-frame limit
    assert t.drain(1400, 2000) == 2 and t.ring.empty() and t.large[0] == 0
    assert list(t.dests[:2]) == [1, -1]
    assert bytes(t.stage[0, : t.lens[0]]) == t.ref.seal(b"hello")
    assert bytes(t.stage[1, : t.lens[1]]) == t.ref.seal(b"all")
    assert t.ctr[frames.C_TX_UNKNOWN_DEST] == 1 and t.ctr[frames.C_TX_OVERSIZED] == 1


def test_tx_drain_stops_at_a_large_frame_and_leaves_it_in_the_ring() -> None:
    # over the 1400-byte frame limit, within the 9000-byte large limit
    t = _TxDrain((2, b"before"), (0, b"L" * 1500), (2, b"after"))
    assert t.drain(1400, 9000) == 1 and t.large[0] == 1 and not t.ring.empty()
    # the large-frame stage takes exactly that record, whole, with the next counter
    t.large[0] = 0
    big = np.zeros((1, 9100), np.uint8)
    assert t.drain(9000, 0, stage=big) == 1 and t.large[0] == 0 and t.dests[0] == -1
    t.ref.seal(b"before")  # counter 1
    assert bytes(big[0, : t.lens[0]]) == t.ref.seal(b"L" * 1500)
    assert t.drain(1400, 9000) == 1 and t.ring.empty() and bytes(t.stage[0, 32 : t.lens[0]]) == b"after"
    assert list(t.counter) == [3] and t.ctr[frames.C_TX_OVERSIZED] == 0


def _mutations(draw: st.DrawFn) -> bytes:
    base = FrameCodec(CryptoSettings("none", "none", "c", b""), draw(st.sampled_from([1, 2, 3, 9])), 77).seal(
        draw(st.binary(max_size=64))
    )
    kind = draw(st.sampled_from(["ok", "cut", "flip", "random", "long"]))
    if kind == "cut":
        return base[: draw(st.integers(0, len(base)))]
    if kind == "flip":
        b = bytearray(base)
        pos = draw(st.integers(0, min(len(b) - 1, 15)))
        b[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if kind == "random":
        return draw(st.binary(max_size=80))
    if kind == "long":
        return base + bytes(200)
    return base


@settings(max_examples=300, deadline=None)
@given(st.lists(st.composite(_mutations)(), min_size=1, max_size=10))
def test_rx_classify_matches_the_reference_header_checks(datagrams: list[bytes]) -> None:
    slot = 512
    flat = np.zeros(slot * len(datagrams), np.uint8)
    seg_off = np.arange(len(datagrams), dtype=np.int64) * slot
    seg_len = np.array([len(d) for d in datagrams], np.int64)
    for i, d in enumerate(datagrams):
        flat[i * slot : i * slot + len(d)] = np.frombuffer(d, np.uint8)
    node_ids = [1, 2, 3]
    state = peers.PeerState(node_ids)
    verdict = np.zeros(len(datagrams), np.int64)
    ctr = np.zeros(frames.N_COUNTERS, np.int64)
    link = np.zeros((3, 8), np.int64)
    chash = crypto.cluster_hash("c")
    frames.rx_classify(flat, seg_off, seg_len, len(datagrams), crypto.MODE_PLAIN, chash, 100, 2, state.node_ids,
                       state.boot, state.top, state.bits, verdict, ctr, link, 1)
    ref = peers.PeerState(node_ids)
    for i, d in enumerate(datagrams):
        want = frames.classify_reference(d, crypto.MODE_PLAIN, chash, 100, 2, node_ids)
        if want >= 0:
            hdr = FrameHeader.unpack(d)
            if ref.verdict(want, hdr.boot_id, hdr.counter) == peers.REPLAY:
                want = -1 - frames.R_REPLAY
            else:
                ref.mark(want, hdr.boot_id, hdr.counter)
        assert verdict[i] == want, (i, d)
    assert ctr[frames.C_DROP_BASE : frames.C_DROP_BASE + frames.N_REASONS].sum() == (verdict < 0).sum()


# -- addresses ---------------------------------------------------------------------------------------------


def test_default_multicast_group_is_derived_from_the_cluster_name_as_corosync_does() -> None:
    # corosync: value = (value << 1) + c over the name; 239.192.(id >> 8).(id % 255) / ff15::id
    value = 0
    for c in b"mycluster":
        value = (value << 1) + c
    cid = value & 0xFFFF
    assert default_mcastaddr("mycluster") == f"239.192.{cid >> 8}.{cid % 255}"
    assert default_mcastaddr("mycluster", socket.AF_INET6) == f"ff15::{cid:x}"


def test_sockaddr_bytes_match_the_kernels_own_encoding() -> None:
    assert sockaddr_bytes(("127.0.0.1", 5405)) == b"\x02\x00\x15\x1d\x7f\x00\x00\x01" + bytes(8)
    raw6 = sockaddr_bytes(("::1", 5405, 0, 0))
    assert len(raw6) == 28 and raw6[:4] == b"\x0a\x00\x15\x1d" and raw6[8:24] == bytes(15) + b"\x01"


def test_header_constant_matches_the_kernels() -> None:
    assert HEADER_BYTES == 32 and frames.N_COUNTERS > frames.C_RX_WAKES


# -- AES-GCM through OpenSSL EVP inside the kernels ------------------------------------------------------


def test_evp_seal_and_open_match_the_cryptography_reference() -> None:
    import pytest

    from pycorosync.transports.udp import evp

    if not evp.available():
        pytest.skip("libcrypto is not loadable here: the transport uses 'cryptography' (tested elsewhere)")
    settings = CryptoSettings("aes256", "sha256", "c", bytes(range(200)))
    tx = FrameCodec(settings, 1, 123456789)
    rx = FrameCodec(settings, 2, 5)
    ctx = evp.GcmContext(tx.key_for(1, 123456789), False)
    dctx = evp.GcmContext(rx.key_for(1, 123456789), True)
    try:
        slot, n = 2048, 5
        stage = np.zeros((n, slot), np.uint8)
        plain = np.zeros((n, slot), np.uint8)
        payloads = [bytes([i]) * (100 * i + 1) for i in range(n)]
        lens = np.array([len(p) for p in payloads], np.int64)
        for i, p in enumerate(payloads):
            stage[i, :HEADER_BYTES] = np.frombuffer(FrameHeader(crypto.MODE_AEAD, tx.cluster_hash, 1, 123456789,
                                                                i + 1).pack(), np.uint8)
            plain[i, : len(p)] = np.frombuffer(p, np.uint8)
        outl = np.zeros(2, np.int32)
        assert evp.seal_batch(ctx.ptr, stage, plain, lens, n, outl) == n
        wires = [bytes(stage[i, : lens[i]]) for i in range(n)]
        # the reference opens what the kernel sealed
        for i, w in enumerate(wires):
            out = bytearray(len(w))
            assert rx.open_into(memoryview(w), 1, 123456789, i + 1, memoryview(out)) == len(payloads[i])
            assert bytes(out[: len(payloads[i])]) == payloads[i]
        # the kernel opens what the reference sealed, and refuses a flipped bit
        ref = FrameCodec(settings, 1, 123456789)
        flat = np.zeros(n * slot, np.uint8)
        for i, p in enumerate(payloads):
            w = bytearray(ref.seal(p))
            if i == 3:
                w[40] ^= 4
            flat[i * slot : i * slot + len(w)] = np.frombuffer(bytes(w), np.uint8)
        scratch = np.zeros_like(flat)
        seg_off = np.arange(n, dtype=np.int64) * slot
        seg_len = lens.copy()
        verdict = np.zeros(n, np.int64)
        plen = np.zeros(n, np.int64)
        bad = evp.open_batch(np.array([dctx.ptr], np.int64), np.array([123456789], np.int64), flat, scratch,
                             seg_off, seg_len, verdict, plen, n, outl)
        assert bad == 1 and plen[3] == -1
        for i, p in enumerate(payloads):
            if i != 3:
                assert bytes(scratch[i * slot : i * slot + plen[i]]) == p
        # an incarnation without a context is left to the Python path
        bad = evp.open_batch(np.array([dctx.ptr], np.int64), np.array([99], np.int64), flat, scratch, seg_off,
                             seg_len, verdict, plen, n, outl)
        assert bad == 0 and list(plen) == [evp.NEEDS_PYTHON] * n
    finally:
        ctx.free()
        dctx.free()


def test_every_transport_counter_has_a_column_in_the_node_stats_registry() -> None:
    from pycorosync.ipc import stats
    from pycorosync.transports.udp.counters import COUNTER_NAMES

    for name in COUNTER_NAMES:
        assert stats.column(f"transport.{name}") >= 0


def test_gso_refused_at_send_time_is_resent_one_datagram_per_segment() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        names, namelens = _names(rx.getsockname())
        tb = batch.TxBatch(4, 2048, names, namelens)
        tb.lens[:4] = 1000
        tb.dests[:4] = 0
        for i in range(4):
            tb.stage[i, :1000] = i
        ctr = np.zeros(frames.N_COUNTERS, np.int64)
        failed = np.zeros(1, np.int64)
        tx.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: the kernel then refuses GSO sends with EINVAL
        sent = batch.send_frames(tx.fileno(), tb.stage, tb.lens, tb.dests, 4, names, namelens, -1, -1, tb.hdrs,
                                 tb.iov, tb.ctrl, 64, ctr, np.zeros((1, 2), np.int64), failed)
        assert sent == 4 and failed[0] == 1
        got = [rx.recv(2000) for _ in range(4)]
        assert [(g[0], len(g)) for g in got] == [(i, 1000) for i in range(4)]
    finally:
        rx.close()
        tx.close()
