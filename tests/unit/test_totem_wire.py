"""Totem wire format v1: every encoder round-trips, every decoder rejects what is malformed."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings, strategies as st

from pycorosync.engine.totem.api import RingId
from pycorosync.engine.totem.fragment import Assembler, SendQueue
from pycorosync.engine.totem.wire import (
    ENTRY,
    HEADER,
    KIND_FIRST,
    KIND_LAST,
    KIND_MIDDLE,
    MCAST,
    MEMB_MERGE_DETECT,
    RTR_MAX,
    TOKEN_HOLD_CANCEL,
    CommitEntry,
    CommitToken,
    Control,
    Join,
    Mcast,
    Token,
    WireError,
    decode,
    encode_commit,
    encode_control,
    encode_encapsulated,
    encode_join,
    encode_token,
    header,
)

RING = RingId(3, 0x2C)


def test_token_round_trips_with_its_retransmit_list() -> None:
    tok = Token(0, 0, RING, token_seq=9, seq=100, aru=90, aru_addr=2, fcc=7, backlog=3, retrans_flg=1,
                aru_acc=88, safe_seq=80, rtr_list=[91, 95, 99])
    got = decode(encode_token(tok, 5, 2))
    assert isinstance(got, Token)
    assert (got.sender, got.incarnation, got.ring_id) == (5, 2, RING)
    assert (got.token_seq, got.seq, got.aru, got.aru_addr, got.fcc, got.backlog, got.retrans_flg, got.aru_acc,
            got.safe_seq, got.rtr_list) == (9, 100, 90, 2, 7, 3, 1, 88, 80, [91, 95, 99])


def test_join_and_leave_round_trip() -> None:
    data = encode_join(4, 1, RING, 0x30, frozenset({1, 2, 4}), frozenset({3}), leave=True)
    got = decode(data)
    assert isinstance(got, Join)
    assert got.proc == {1, 2, 4} and got.fail == {3} and got.leave and got.ring_seq == 0x30


def test_commit_token_round_trips() -> None:
    entries = [CommitEntry(1, 0, 1, 8, 10, 12, 9, True), CommitEntry(4)]
    ct = CommitToken(1, 0, RingId(1, 0x10), 3, 1, 1, entries)
    got = decode(encode_commit(ct, 1, 0))
    assert isinstance(got, CommitToken)
    assert got.members == (1, 4) and got.memb_index == 1 and got.token_seq == 3
    assert got.entries[0].old_ring_id == RingId(1, 8) and got.entries[1].old_ring_id is None


@pytest.mark.parametrize("ftype", [MEMB_MERGE_DETECT, TOKEN_HOLD_CANCEL])
def test_control_frames_round_trip(ftype: int) -> None:
    got = decode(encode_control(ftype, 2, 0, RING))
    assert got == Control(ftype, 2, 0, RING)


def test_mcast_frames_from_the_send_queue_decode_to_the_same_entries() -> None:
    q = SendQueue(1436, 100, 1 << 20)
    msgs = [b"a" * 10, b"b" * 3000, b"c" * 5]
    for m in msgs:
        q.push(m, 2)
    frames = q.pack(10)
    assembler = Assembler(1 << 20)
    out = []
    own = []
    for i, (flags, count, parts, whole, done) in enumerate(frames):
        raw = header(MCAST, flags, 1, 0, RING) + struct.pack("<QH", i + 1, count) + b"".join(parts)
        m = decode(raw)
        assert isinstance(m, Mcast) and m.seq == i + 1 and m.raw == raw
        assert (m.count, m.whole) == (count, whole) and len(m.entries) == count
        assert [e[2] for e in m.entries] == sorted(e[2] for e in m.entries), "msg ids in send order"
        own += [payload for _id, _g, payload in done]
        for kind, g, msg_id, piece, total in m.entries:
            if kind == 0:
                out.append(bytes(piece))
            else:
                got = assembler.feed(1, kind, g, msg_id, piece, total)
                if got:
                    out.append(got[2])
    assert out == msgs
    assert own == msgs  # what the sender delivers itself, at the same frames


@settings(max_examples=60, deadline=None)
@given(st.integers(300, 9000), st.lists(st.integers(0, 5000), min_size=1, max_size=40))
def test_every_frame_fits_the_transport_even_when_resent_inside_a_recovery_frame(
    frame_payload: int, sizes: list[int],
) -> None:
    # RECOVERY resends an old-ring frame whole inside a new-ring frame; a transport drops a frame bigger
    # than its frame size, so a full frame resent that way would never arrive and RECOVERY never end
    q = SendQueue(frame_payload, 1000, 1 << 20)
    for n in sizes:
        q.push(b"m" * n, 2)
    for i, (flags, count, parts, _whole, _done) in enumerate(q.pack(10_000)):
        raw = header(MCAST, flags, 1, 0, RING) + struct.pack("<QH", i + 1, count) + b"".join(parts)
        assert len(raw) <= frame_payload
        assert len(encode_encapsulated(1, 0, RingId(1, 0x30), i + 1, raw)) <= frame_payload


def test_wrong_magic_version_type_and_sender_zero_are_rejected() -> None:
    good = encode_control(MEMB_MERGE_DETECT, 2, 0, RING)
    for bad in (b"\x00" + good[1:], good[:1] + b"\x02" + good[2:], good[:2] + b"\x09" + good[3:],
                good[:4] + b"\x00\x00\x00\x00" + good[8:], good[:-1], good + b"\x00"):
        with pytest.raises(WireError):
            decode(bad)


def test_truncated_frames_are_rejected_at_every_length() -> None:
    tok = encode_token(Token(0, 0, RING, seq=5, aru=5, rtr_list=[1, 2]), 2, 0)
    join = encode_join(2, 0, RING, 4, frozenset({1, 2}), frozenset())
    commit = encode_commit(CommitToken(1, 0, RingId(1, 8), 0, 1, 0, [CommitEntry(1), CommitEntry(2)]), 1, 0)
    q = SendQueue(1436, 10, 1 << 20)
    q.push(b"z" * 100, 2)
    q.push(b"y" * 2000, 3)
    flags, count, parts, _whole, _done = q.pack(1)[0]
    mcast = header(MCAST, flags, 1, 0, RING) + struct.pack("<QH", 1, count) + b"".join(parts)
    for frame in (tok, join, commit, mcast):
        for cut in range(len(frame)):
            with pytest.raises(WireError):
                decode(frame[:cut])


def test_inconsistent_fields_are_rejected() -> None:
    with pytest.raises(WireError):  # aru above seq
        decode(encode_token(Token(0, 0, RING, seq=5, aru=6), 2, 0))
    too_many = Token(0, 0, RING, seq=5, rtr_list=list(range(RTR_MAX + 1)))
    with pytest.raises(WireError):
        encode_token(too_many, 2, 0)
    with pytest.raises(WireError):  # commit members not ascending
        decode(encode_commit(CommitToken(2, 0, RingId(2, 8), 0, 1, 0, [CommitEntry(2), CommitEntry(1)]), 2, 0))
    with pytest.raises(WireError):  # node id 0 in a join
        decode(encode_join(2, 0, RING, 4, frozenset({0, 2}), frozenset()))


@given(st.binary(max_size=200))
def test_decoding_random_bytes_raises_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)


@given(st.binary(max_size=120), st.integers(0, 5), st.integers(0, 255))
def test_decoding_random_bodies_behind_a_valid_header_raises_only_wire_errors(body: bytes, ftype: int,
                                                                              flags: int) -> None:
    data = HEADER.pack(0xC5, 1, ftype, flags, 7, 0, 1, 4) + body
    with contextlib.suppress(WireError):
        decode(data)


def test_assembler_drops_pieces_that_do_not_continue_the_current_message() -> None:
    a = Assembler(1000)
    assert a.feed(1, KIND_MIDDLE, 2, 5, b"x", 0) is None  # no start seen
    assert a.feed(1, KIND_FIRST, 2, 6, b"ab", 2000) is None  # over the maximum
    assert a.feed(1, KIND_FIRST, 2, 7, b"ab", 5) is None
    assert a.feed(1, KIND_LAST, 2, 8, b"cde", 0) is None  # another message id
    assert a.feed(1, KIND_FIRST, 2, 9, b"ab", 5) is None
    assert a.feed(1, KIND_LAST, 2, 9, b"cdef", 0) is None  # longer than announced
    assert a.feed(1, KIND_FIRST, 2, 10, b"ab", 5) is None
    assert a.feed(1, KIND_LAST, 2, 10, b"cde", 0) == (10, 2, b"abcde")
    assert a.dropped == 4


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 48), st.binary(max_size=40)),
                max_size=9), st.binary(max_size=6), st.integers(-2, 2))
def test_the_entry_scans_agree_with_the_full_decode_on_every_frame(
        entries: list[tuple[int, int, int, bytes]], tail: bytes, count_delta: int) -> None:
    """A frame of many entries is only checked by a scan (Python, or the totem process's compiled one) and
    its entries made on first use: the scans must accept exactly the frames the full decode accepts."""
    from pycorosync.engine.runtime.kernels import scan_entries
    from pycorosync.engine.totem.wire import ENTRY, KIND_WHOLE, _entries_of, scan_entries_py

    body = b"".join(ENTRY.pack(kind, g, length, 9) + (struct.pack("<I", 99) if kind == KIND_FIRST else b"") + data
                    for kind, g, length, data in entries)
    count = max(0, len(entries) + count_delta)
    raw = header(MCAST, 0, 1, 0, RING) + struct.pack("<QH", 1, count) + body + tail
    try:
        full = _entries_of(raw, count)
    except WireError:
        full = None
    want = (False, False) if full is None else (True, all(e[0] == KIND_WHOLE for e in full))
    assert scan_entries_py(raw, count)[0] == want[0]
    assert scan_entries(raw, count)[0] == want[0]
    if full is not None:
        assert scan_entries_py(raw, count) == scan_entries(raw, count) == want
    try:
        m = decode(raw)
    except WireError:
        assert full is None
    else:
        assert full is not None and isinstance(m, Mcast)
        assert (m.count, m.whole) == (count, want[1])
        assert m.entries == full


@settings(max_examples=40, deadline=None)
@given(st.integers(300, 3000), st.lists(st.tuples(st.integers(0, 20000), st.integers(0, 3)), min_size=1, max_size=12),
       st.integers(1, 40))
def test_a_frame_writers_middle_runs_make_the_frames_pack_makes(
    frame_payload: int, msgs: list[tuple[int, int]], budget: int,
) -> None:
    """``middle_run`` + ``advance`` (the frames a driver's frame writer makes itself) with ``pack(...,
    stop_begun=True)`` for the rest give the same frame bodies, in the same order, as ``pack`` alone."""
    queues = [SendQueue(frame_payload, 10_000, 1 << 20) for _ in range(2)]
    for q in queues:
        for k, (size, g) in enumerate(msgs):
            q.push(bytes([k % 256]) * size, g)
    plain = [b"".join(parts) for _f, _n, parts, _w, _d in queues[0].pack(10**6)]
    q = queues[1]
    mixed: list[bytes] = []
    while len(q):
        if q.head_begun():
            plan = q.middle_run(budget)
            if plan is not None:
                payload, off, piece, count, msg_id, g = plan
                for i in range(count):
                    mixed.append(ENTRY.pack(KIND_MIDDLE, g, piece, msg_id) + payload[off + i * piece:off + (i + 1) * piece])
                q.advance(count * piece)
                continue
        mixed += [b"".join(parts) for _f, _n, parts, _w, _d in q.pack(budget, stop_begun=True)]
    assert mixed == plain
    assert q.queued_bytes == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30000), max_size=8), st.integers(0, 40000))
def test_takes_says_whether_push_would_take_a_message(queued: list[int], size: int) -> None:
    from pycorosync.engine.totem.api import MessageTooBig, QueueFull

    q = SendQueue(1436, 20, 30000)
    for n in queued:
        with contextlib.suppress(QueueFull):
            q.push(bytes(n), 2)
    says = q.takes(size)
    try:
        q.push(bytes(size), 2)
        took = True
    except QueueFull:
        took = False
    except MessageTooBig:
        took = True  # refused for good, not for now: takes() lets the caller find that out from push
    assert says == took
