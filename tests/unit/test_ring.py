"""The SPSC byte ring's contract, in one process (kernels via the Python API)."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest

from pycorosync.ipc import ring_kernels as rk
from pycorosync.ipc.ring import RecordTooLargeError, Ring, RingCorruptError, RingLayoutError, RingSet

CAP = 1024


@pytest.fixture
def ring() -> Ring:
    return Ring.create(np.zeros(Ring.layout_bytes(CAP), np.uint8), CAP)


def test_records_come_out_in_order_with_their_type_and_bytes(ring: Ring) -> None:
    assert ring.push(1, b"one")
    assert ring.push(2, bytearray(b"two!"))
    assert ring.push(3, memoryview(b"three"))
    assert ring.push(4, np.arange(3, dtype=np.uint16))
    assert ring.pop() == (1, b"one")
    assert ring.pop() == (2, b"two!")
    assert ring.pop() == (3, b"three")
    assert ring.pop() == (4, np.arange(3, dtype=np.uint16).tobytes())
    assert ring.pop() is None


def test_empty_payload_is_a_record(ring: Ring) -> None:
    assert ring.push(7, b"")
    assert not ring.empty()
    assert ring.pop() == (7, b"")
    assert ring.empty()


def test_full_ring_refuses_push_and_loses_nothing(ring: Ring) -> None:
    sent = 0
    while ring.push(sent, sent.to_bytes(4, "little") * 10):
        sent += 1
    assert sent == CAP // 48  # 8 header + 40 payload per record
    assert ring.counters().full == 1
    assert ring.free_bytes() < 48
    got = []
    while (item := ring.pop()) is not None:
        got.append(item)
    assert [t for t, _ in got] == list(range(sent))
    assert all(p == t.to_bytes(4, "little") * 10 for t, p in got)
    assert ring.push(99, b"again")  # space is back once the consumer frees it


def test_record_larger_than_max_payload_is_refused_with_an_error(ring: Ring) -> None:
    assert ring.max_payload == CAP // 2 - 8
    assert ring.push(1, bytes(ring.max_payload))
    assert ring.pop() == (1, bytes(ring.max_payload))
    with pytest.raises(RecordTooLargeError, match=f"exceeds the max payload of {CAP // 2 - 8} bytes"):
        ring.push(1, bytes(ring.max_payload + 1))
    with pytest.raises(RecordTooLargeError):
        ring.claim(ring.max_payload + 1)


def test_a_max_size_record_fits_an_empty_ring_at_any_position(ring: Ring) -> None:
    for shift in range(0, CAP, 24):
        assert ring.push(0, bytes(shift % 200))
        assert ring.pop() is not None
        assert ring.push(5, bytes(ring.max_payload)), f"max record refused at shift {shift}"
        assert ring.pop() == (5, bytes(ring.max_payload))


def test_wrap_writes_a_pad_record_and_the_reader_skips_it(ring: Ring) -> None:
    assert ring.push(1, bytes(400))  # 408 bytes
    assert ring.push(1, bytes(300))  # 312 bytes: 304 left before the end, too few for the next one
    assert len(ring.pop_batch()) == 2
    assert ring.push(2, b"x" * 400)
    pad_len, pad_type = struct.unpack_from("<II", ring.array, rk.RING_HEADER_BYTES + 720)
    assert (pad_len, pad_type) == (rk.PAD_LEN, 0)
    assert struct.unpack_from("<II", ring.array, rk.RING_HEADER_BYTES) == (400, 2)
    assert ring.pop() == (2, b"x" * 400)


def test_claim_and_commit_write_in_place(ring: Ring) -> None:
    view = ring.claim(16)
    assert view is not None and len(view) == 16
    view[:5] = b"hello"
    assert ring.empty()  # nothing visible before commit
    ring.commit(42, 5)
    assert ring.pop() == (42, b"hello")


def test_commit_cannot_exceed_the_claim(ring: Ring) -> None:
    assert ring.claim(8) is not None
    with pytest.raises(ValueError, match="commit of 9 bytes, but 8 were claimed"):
        ring.commit(1, 9)
    with pytest.raises(RuntimeError, match="without a claim"):
        Ring.create(np.zeros(Ring.layout_bytes(CAP), np.uint8), CAP).commit(1)


def test_claim_on_a_full_ring_returns_none(ring: Ring) -> None:
    assert ring.push(1, bytes(ring.max_payload))
    assert ring.push(2, bytes(ring.max_payload))
    assert ring.claim(0) is None


def test_peek_is_zero_copy_and_release_frees(ring: Ring) -> None:
    ring.push(3, b"abc")
    item = ring.peek()
    assert item is not None
    rtype, view = item
    assert (rtype, view.tobytes()) == (3, b"abc")
    assert ring.peek() is not None  # peek does not consume
    used = ring.used_bytes()
    ring.release()
    assert ring.used_bytes() == used - 16
    assert ring.peek() is None


def test_drain_hands_views_to_the_callback_and_frees_once(ring: Ring) -> None:
    for i in range(10):
        ring.push(i, bytes([i]) * i)
    seen: list[tuple[int, bytes]] = []
    assert ring.drain(lambda t, v: seen.append((t, v.tobytes())), max_records=4) == 4
    assert seen == [(i, bytes([i]) * i) for i in range(4)]
    assert ring.drain(lambda t, v: seen.append((t, v.tobytes()))) == 6
    assert len(seen) == 10 and ring.empty() and ring.used_bytes() == 0


def test_drain_consumes_handed_records_even_when_the_callback_raises(ring: Ring) -> None:
    for i in range(3):
        ring.push(i, b"x")

    def boom(rtype: int, view: memoryview) -> None:
        raise KeyError(rtype)

    with pytest.raises(KeyError):
        ring.drain(boom)
    assert ring.used_bytes() == 0


def test_pop_batch_and_push_many(ring: Ring) -> None:
    records = [(i, bytes(i)) for i in range(60)]
    n = ring.push_many(records)
    assert 0 < n < 60  # stops at the first record that does not fit
    assert ring.pop_batch(1000) == records[:n]
    assert ring.pop_batch() == []


def test_push_batch_writes_like_push_many_in_one_call_and_stops_at_the_first_record_that_does_not_fit(
    ring: Ring,
) -> None:
    records = [(i, bytes([i]) * i) for i in range(60)]
    n = ring.push_batch(records)
    assert 0 < n < 60
    assert ring.pop_batch(1000) == records[:n]
    assert ring.push_batch(records[n:n + 3]) == 3 and ring.pop_batch() == records[n:n + 3]
    assert ring.push_batch([]) == 0
    assert ring.push_batch([(7, b""), (8, b"x")]) == 2 and ring.pop_batch() == [(7, b""), (8, b"x")]
    for few in (True, False):  # a few records are written one by one, more through one staging copy
        with pytest.raises(RecordTooLargeError):  # checked before anything is written
            ring.push_batch([(1, b"a")] * (1 if few else 8) + [(2, bytes(ring.max_payload + 1))])
        assert ring.empty()
    while ring.push(1, bytes(100)):
        pass
    assert ring.push_batch([(1, bytes(100))]) == 0  # full: nothing written, nothing published


def test_used_and_free_bytes_track_records(ring: Ring) -> None:
    assert (ring.used_bytes(), ring.free_bytes(), ring.empty()) == (0, CAP, True)
    ring.push(1, bytes(13))
    assert (ring.used_bytes(), ring.free_bytes(), ring.empty()) == (24, CAP - 24, False)


def test_attach_sees_the_creators_records() -> None:
    buf = np.zeros(Ring.layout_bytes(CAP) + 4096, np.uint8)
    producer = Ring.create(buf, CAP, offset=4096)
    producer.push(5, b"shared")
    consumer = Ring.attach(buf, offset=4096, capacity=CAP)
    assert consumer.capacity == CAP
    assert consumer.pop() == (5, b"shared")


def test_attach_refuses_what_is_not_a_ring_of_this_version() -> None:
    buf = np.zeros(Ring.layout_bytes(CAP), np.uint8)
    with pytest.raises(RingLayoutError, match="no ring at offset 0"):
        Ring.attach(buf)
    Ring.create(buf, CAP, label="cpg.request")
    struct.pack_into("<I", buf, 4, 9)
    with pytest.raises(RingLayoutError, match=r"cpg\.request: ring layout version 9, this build reads 2"):
        Ring.attach(buf, label="cpg.request")
    struct.pack_into("<I", buf, 4, rk.RING_VERSION)
    with pytest.raises(RingLayoutError, match="capacity 1024, expected 2048"):
        Ring.attach(buf, capacity=2048)


@pytest.mark.parametrize("capacity", [0, 32, 1000, 3 << 10])
def test_capacity_must_be_a_power_of_two(capacity: int) -> None:
    with pytest.raises(RingLayoutError, match="power of two"):
        Ring.create(np.zeros(8192, np.uint8), capacity)


def test_buffer_too_small_is_refused() -> None:
    with pytest.raises(RingLayoutError, match="needs 5120"):
        Ring.create(np.zeros(5000, np.uint8), CAP)


def test_arm_reports_data_already_there(ring: Ring) -> None:
    assert ring.arm()  # empty: armed, may sleep
    assert ring.push(1, b"x")
    assert ring.needs_wake()  # first publish after arming asks for one wake
    assert not ring.needs_wake()  # ... and only one
    assert not ring.arm()  # data there: do not sleep
    assert not ring.needs_wake()  # arm() that found data left the flag clear
    ring.pop()
    assert ring.arm()
    ring.disarm()
    ring.push(1, b"y")
    assert not ring.needs_wake()
    assert ring.counters().wakes == 1


def _ring_set(n: int) -> tuple[list[Ring], RingSet]:
    size = Ring.layout_bytes(CAP)
    buf = np.zeros(64 + n * size, np.uint8)
    rings = [Ring.create(buf, CAP, 64 + i * size, f"r{i}") for i in range(n)]
    return rings, RingSet(rings)


def test_a_ring_set_tells_which_rings_hold_records_in_one_mask() -> None:
    rings, rs = _ring_set(3)
    assert rs.ready() == 0
    rings[2].push(1, b"x")
    assert rs.ready() == 0b100
    rings[0].push(1, b"y")
    assert rs.ready() == 0b101
    rings[2].pop()
    assert rs.ready() == 0b001


def test_a_ring_set_arms_all_or_none_and_producers_see_the_flags() -> None:
    rings, rs = _ring_set(3)
    assert rs.arm()
    assert all(r.armed() for r in rings)
    assert rs.disarm() == 0
    assert not any(r.armed() for r in rings)
    rings[1].push(1, b"x")
    assert not rs.arm()  # a record waits: nothing stays armed
    assert not any(r.armed() for r in rings)
    assert rs.arm(1)  # only the first ring: the one holding a record is not looked at
    assert rings[0].armed() and not rings[2].armed()
    assert rings[0].push(1, b"y") and rings[0].needs_wake()  # the armed consumer is woken once
    assert rs.disarm() == 0b011  # and what is there to read, as ready() says


def test_a_ring_set_refuses_rings_of_different_buffers() -> None:
    a = Ring.create(np.zeros(Ring.layout_bytes(CAP), np.uint8), CAP, label="a")
    b = Ring.create(np.zeros(Ring.layout_bytes(CAP), np.uint8), CAP, label="b")
    with pytest.raises(ValueError, match="b is not in the buffer of a"):
        RingSet([a, b])


def test_producer_side_flag_wakes_a_producer_waiting_for_space(ring: Ring) -> None:
    assert ring.push(1, bytes(ring.max_payload))
    assert not ring.arm_producer(8)  # 8 bytes still fit: not armed
    assert not ring.producer_needs_wake()
    assert ring.push(2, bytes(ring.max_payload - 16))
    assert ring.arm_producer(100)  # nothing fits: armed, the producer may sleep
    ring.pop()
    assert ring.producer_needs_wake()  # the consumer freed space and must ring once
    assert not ring.producer_needs_wake()


def test_garbage_written_by_the_peer_is_reported_not_followed(ring: Ring) -> None:
    ring.push(1, b"hello")
    struct.pack_into("<I", ring.array, rk.RING_HEADER_BYTES, 0x7FFFFFF0)  # absurd length
    with pytest.raises(RingCorruptError, match="corrupt ring"):
        ring.pop()
    with pytest.raises(RingCorruptError):
        ring.drain(lambda t, v: None)


def test_a_tail_moved_past_the_capacity_is_corrupt(ring: Ring) -> None:
    struct.pack_into("<q", ring.array, rk.OFF_TAIL, 10 * CAP)
    with pytest.raises(RingCorruptError):
        ring.peek()


def test_a_corrupt_capacity_field_does_not_change_the_attached_ring(ring: Ring) -> None:
    struct.pack_into("<q", ring.array, rk.OFF_CAPACITY, 1 << 40)  # the peer lies about the size
    ring.push(1, b"ok")
    assert ring.pop() == (1, b"ok")


def test_kernels_are_usable_from_other_numba_code(ring: Ring) -> None:
    from numba import njit

    @njit
    def produce(buf, base, cap, n):  # type: ignore[no-untyped-def]
        src = np.zeros(8, np.uint8)
        k = 0
        for i in range(n):
            src[0] = i
            if not rk.ring_write(buf, base, cap, i, src, 0, 8):
                break
            k += 1
        rk.ring_publish(buf, base)
        return k

    k = produce(ring.array, ring.offset, ring.capacity, 10)
    assert k == 10
    assert [t for t, _ in ring.pop_batch()] == list(range(10))


def test_a_closed_ring_refuses_use_instead_of_touching_memory(ring: Ring) -> None:
    ring.push(1, b"x")
    ring.close()
    assert ring.closed
    with pytest.raises(ValueError, match="ring is closed"):
        ring.push(1, b"y")
    with pytest.raises(ValueError, match="ring is closed"):
        ring.pop()
    with pytest.raises(ValueError, match="ring is closed"):
        ring.arm()


def test_kernels_do_nothing_with_a_ring_that_does_not_fit_the_buffer() -> None:
    buf = np.zeros(Ring.layout_bytes(CAP), np.uint8)
    Ring.create(buf, CAP)
    src = np.ones(8, np.uint8)
    assert not rk.ring_push(buf, 0, CAP * 2, 1, src)  # claims more data than the buffer holds
    assert not rk.ring_push(buf, 8, CAP, 1, src)  # shifted past the end
    assert rk.ring_peek(buf, -8, CAP)[0] == rk.CORRUPT
    assert buf[rk.RING_HEADER_BYTES :].sum() == 0  # nothing was written anywhere


def test_a_crooked_index_from_the_peer_stays_inside_the_ring() -> None:
    buf = np.full(Ring.layout_bytes(CAP) + 64, 0xAB, np.uint8)  # guard bytes after the ring
    ring = Ring.create(buf, CAP)
    for field in (rk.OFF_WTAIL, rk.OFF_TAIL, rk.OFF_HEAD, rk.OFF_RHEAD):
        struct.pack_into("<q", buf, field, CAP - 3)  # unaligned, next to the end
    for _ in range(3):
        ring.push(1, bytes(100))
        with contextlib.suppress(RingCorruptError):  # reporting it is fine; writing outside is not
            ring.pop_batch()
    assert (buf[Ring.layout_bytes(CAP) :] == 0xAB).all()


def test_push_during_an_open_claim_is_a_programming_error(ring: Ring) -> None:
    assert ring.claim(8) is not None
    with pytest.raises(RuntimeError, match="not committed"):
        ring.push(1, b"x")
