"""The messages of one delivered frame written into a service's deliver ring in one call.

A frame of the Totem ring carries entries (``wire.ENTRY``: kind, guarantee, length, msg_id, then the
payload); a whole entry's payload is a service's message (``records.service_header``: service id, kind,
reserved, then the body). The totem process turns each into a DELIVER_MESSAGE record (``records``:
sender, ring rep, ring seq, guarantee, 3 zero bytes, then the body) in the service's deliver ring.
``TotemProcess`` does it in Python for one message at a time; :func:`deliver_entries` does it for a run
of entries of one frame, :func:`deliver_frames` for a run of frames, with the same result; both stop at
the first entry they do not take (another service, another kind of entry or of message, a malformed
entry, a full ring), which the caller then hands on the general way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from pycorosync.engine.totem.wire import ENTRY_BYTES, KIND_FIRST, KIND_LAST, KIND_WHOLE, MCAST_HEADER_BYTES
from pycorosync.ipc import ring_kernels as rk

SERVICE_HEADER_BYTES = 4  #: records._SVC_HEADER: u8 service id, u8 kind, u16 reserved
MESSAGE_HEADER_BYTES = 20  #: records._MESSAGE: u32 sender, u32 rep, u64 seq, u8 guarantee, 3 pad


@njit(cache=True, nogil=True, inline="always")
def message_header(buf: Any, at: int, sender: int, rep: int, ring_seq: int, guarantee: int) -> None:
    """Writes a DELIVER_MESSAGE record's header (records._MESSAGE) at byte ``at`` of ``buf``."""
    rk.put_u32(buf, at, sender)
    rk.put_u32(buf, at + 4, rep)
    rk.put_u32(buf, at + 8, ring_seq & 0xFFFFFFFF)
    rk.put_u32(buf, at + 12, (ring_seq >> 32) & 0xFFFFFFFF)
    buf[at + 16] = guarantee
    buf[at + 17] = 0
    buf[at + 18] = 0
    buf[at + 19] = 0


@njit(cache=True, nogil=True, inline="always")
def _write_entries(frame: Any, off: int, count: int, ring: Any, base: int, cap: int, service_id: int,
                   message_kind: int, whole_kind: int, record_type: int, sender: int, rep: int,
                   ring_seq: int) -> tuple[int, int]:
    # deliver_entries without the publish
    n = frame.shape[0]
    done = 0
    while done < count:
        if off + ENTRY_BYTES > n:
            break
        kind = frame[off]
        guarantee = frame[off + 1]
        length = rk.get_u32(frame, off + 2)
        p = off + ENTRY_BYTES
        if kind != whole_kind or guarantee > 3 or length < SERVICE_HEADER_BYTES or p + length > n:
            break
        if frame[p] != service_id or frame[p + 1] != message_kind:
            break
        body = length - SERVICE_HEADER_BYTES
        size = MESSAGE_HEADER_BYTES + body
        dst = rk.ring_reserve(ring, base, cap, size)
        if dst < 0:
            break
        dst += rk.RECORD_HEADER_BYTES
        message_header(ring, dst, sender, rep, ring_seq, guarantee)
        rk._copy(ring, dst + MESSAGE_HEADER_BYTES, frame, p + SERVICE_HEADER_BYTES, body)
        rk.ring_commit(ring, base, cap, record_type, size)
        off = p + length
        done += 1
    return done, off


@njit(cache=True, nogil=True)
def deliver_entries(frame: Any, off: int, count: int, ring: Any, base: int, cap: int, service_id: int,
                    message_kind: int, whole_kind: int, record_type: int, sender: int, rep: int,
                    ring_seq: int) -> tuple[int, int]:
    """Writes up to ``count`` entries of ``frame`` from byte ``off`` on; returns (entries written, the
    offset of the next entry). An entry is taken when it is of ``whole_kind`` with a guarantee 0..3, lies
    inside the frame, and its payload is a ``message_kind`` message of ``service_id``; and the ring has
    room. The ring's tail is published once, at the end."""
    done, off = _write_entries(frame, off, count, ring, base, cap, service_id, message_kind, whole_kind,
                               record_type, sender, rep, ring_seq)
    if done > 0:
        rk.ring_publish(ring, base)
    return done, off


@njit(cache=True, nogil=True)
def deliver_frames(buf: Any, starts: Any, counts: Any, senders: Any, first: int, header_bytes: int, ring: Any,
                   base: int, cap: int, service_id: int, message_kind: int, whole_kind: int, record_type: int,
                   rep: int, ring_seq: int) -> tuple[int, int, int]:
    """``deliver_entries`` for a run of frames of one ring, laid end to end in ``buf`` (frame ``i`` is
    ``buf[starts[i]:starts[i + 1]]``, with ``counts[i]`` entries after its ``header_bytes``, from node
    ``senders[i]``), from frame ``first`` on, with one publish of the ring at the end. Returns (the frame
    it stopped in, entries of that frame written, offset of its next entry in the frame), or (number of
    frames, 0, 0) when every entry was taken."""
    frames = starts.shape[0] - 1
    wrote = False
    i = first
    while i < frames:
        frame = buf[starts[i]:starts[i + 1]]
        count = counts[i]
        done, off = _write_entries(frame, header_bytes, count, ring, base, cap, service_id, message_kind,
                                   whole_kind, record_type, senders[i], rep, ring_seq)
        if done > 0:
            wrote = True
        if done < count:
            if wrote:
                rk.ring_publish(ring, base)
            return i, done, off
        i += 1
    if wrote:
        rk.ring_publish(ring, base)
    return frames, 0, 0


@njit(cache=True, nogil=True)
def _scan(frame: Any, off: int, count: int) -> tuple[bool, bool]:
    n = frame.shape[0]
    whole = True
    for _ in range(count):
        if off + ENTRY_BYTES > n:
            return False, False
        kind = frame[off]
        length = rk.get_u32(frame, off + 2)
        if frame[off + 1] > 3:
            return False, False
        off += ENTRY_BYTES
        if kind != KIND_WHOLE:
            whole = False
            if kind == KIND_FIRST:
                if off + 4 > n:
                    return False, False
                off += 4
            elif kind > KIND_LAST:
                return False, False
        off += length
        if off > n:
            return False, False
    return off == n, whole


def scan_entries(data: bytes, count: int) -> tuple[bool, bool]:
    """``wire.scan_entries_py`` compiled: (the ``count`` entries of an MCAST frame are well formed, each is
    a whole message); the totem process gives it to ``wire.use_entry_scanner``."""
    ok, whole = _scan(np.frombuffer(data, np.uint8), MCAST_HEADER_BYTES, count)
    return bool(ok), bool(whole)


def warm() -> None:
    """Compiles ``deliver_entries``, ``deliver_frames`` and the entry scan for the argument types the totem process uses."""
    from pycorosync.ipc.ring import Ring

    cap = 1024
    ring = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    entry = bytes((0, 1)) + (6).to_bytes(4, "little") + (7).to_bytes(8, "little") + bytes((2, 0, 0, 0)) + b"hi"
    frame = np.frombuffer(bytes(8) + entry, np.uint8)
    done, off = deliver_entries(frame, 8, 1, ring.array, ring.offset, ring.capacity, 2, 0, 0, 1, 3, 1, 5)
    assert (done, off) == (1, frame.shape[0])
    two = np.frombuffer(frame.tobytes() * 2, np.uint8)  # read-only, as the totem process passes it
    starts = np.array([0, frame.shape[0], two.shape[0]], np.int64)
    ones = np.ones(2, np.int64)
    assert deliver_frames(two, starts, ones, ones, 0, 8, ring.array, ring.offset, ring.capacity, 2, 0, 0, 1, 1,
                          5) == (2, 0, 0)
    assert scan_entries(bytes(MCAST_HEADER_BYTES) + entry, 1) == (True, True)
