"""Single-producer single-consumer byte ring in shared memory: the Python face of ``ring_kernels``.

A ring lives in any writable buffer (a named segment, a memfd mapping, a numpy array) at a byte
offset, and is used by exactly one producer and one consumer, usually in two processes. Records are
``(type: u32, payload: bytes)``. A full ring is back-pressure: ``push`` returns False ("try again"),
nothing is lost and nothing blocks. Byte layout: ipc/layout.md.

    size = Ring.layout_bytes(capacity)            # header + data; capacity a power of two >= 64
    ring = Ring.create(buf, capacity, offset=0)   # initialise (creator side)
    ring = Ring.attach(buf, offset=0)             # validate magic, version, capacity (other side)

Producer::

    ok = ring.push(rtype, payload)                # bytes | bytearray | memoryview | np.ndarray -> bool
    n = ring.push_many([(rtype, payload), ...])   # writes as many as fit, publishes once -> count
    view = ring.claim(nbytes)                     # zero-copy: writable memoryview or None when full
    ring.commit(rtype, nbytes)                    # nbytes <= claimed; publishes the record
    if ring.needs_wake(): doorbell.ring()         # after a publish batch: only when the consumer sleeps
    ring.arm_producer(nbytes) -> bool             # full ring: arm, re-check; True = sleep on own doorbell
    ring.wait_for_space(nbytes, timeout) -> bool  # or: sleep on the ring's futex word until it fits

Consumer::

    item = ring.pop()                             # (rtype, bytes) or None
    item = ring.peek()                            # (rtype, memoryview) zero-copy, valid until release()
    ring.release()
    n = ring.drain(callback, max_records)         # callback(rtype, memoryview) per record, one head publish
    items = ring.pop_batch(max_records)           # [(rtype, bytes)], one head publish
    wait_for_records(doorbell, rings, timeout)    # ipc.doorbell: arm every ring, sleep only if all empty
    if ring.arm(): doorbell.wait(timeout)         # the same by hand: arm() False = data is there already
    ring.wait(timeout)                            # or: one ring, no fd: sleep on the ring's futex word
    if ring.producer_needs_wake(): producer_doorbell.ring()   # after freeing space

Both sides: ``free_bytes()``, ``used_bytes()``, ``empty()``, ``counters()``, ``close()`` (drops the
views so the mapping can go; a closed ring raises ValueError instead of touching memory).

Kernels that run inside other numba code (transport, totem runtime) call the functions of
:mod:`pycorosync.ipc.ring_kernels` directly on ``ring.array``, ``ring.offset`` and ``ring.capacity``.

A record the consumer finds impossible (a peer wrote garbage) raises :class:`RingCorruptError`; the
ring is then unusable and the owner should drop the connection. Nothing is ever read out of bounds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from pycorosync.ipc import ring_kernels as rk

# the errors and counters live with the layout (numba-free); re-exported here, where users look for them
from pycorosync.ipc.ring_layout import (
    RecordTooLargeError as RecordTooLargeError,
    RingCorruptError as RingCorruptError,
    RingCounters as RingCounters,
    RingLayoutError as RingLayoutError,
)

Payload = bytes | bytearray | memoryview | np.ndarray[Any, Any]

MIN_CAPACITY = 64
MAX_CAPACITY = 1 << 31  # lengths are u32 and half the ring bounds a record
_HDR = struct.Struct("<IIqq")
_FEW_RECORDS = 4  # push_batch writes this many or fewer one by one (cheaper than staging them)



def _as_bytes_array(buf: Any) -> np.ndarray[Any, Any]:
    if isinstance(buf, np.ndarray):
        if not buf.flags.c_contiguous:
            raise ValueError("ring buffer must be C-contiguous")
        arr = buf.reshape(-1).view(np.uint8)
    else:
        arr = np.frombuffer(buf, np.uint8)
    if not arr.flags.writeable:
        raise ValueError("ring buffer must be writable")
    return arr


def _payload_array(payload: Payload) -> np.ndarray[Any, Any]:
    if type(payload) is bytes:  # the common case first
        return np.frombuffer(payload, np.uint8)
    if isinstance(payload, np.ndarray):
        if payload.dtype == np.uint8 and payload.ndim == 1 and payload.flags.c_contiguous:
            return payload
        return np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
    return np.frombuffer(payload, np.uint8)


class Ring:
    """One SPSC byte ring at ``offset`` in a shared buffer (see the module docstring for the protocol)."""

    __slots__ = (
        "_arr",
        "_claimed",
        "_i64",
        "_label",
        "_mv",
        "_peeked",
        "_scan_out",
        "_scratch",
        "capacity",
        "max_payload",
        "offset",
    )

    def __init__(self, arr: np.ndarray[Any, Any], offset: int, capacity: int, label: str) -> None:
        self._arr = arr
        self._mv = arr.data
        self._i64 = arr[offset : offset + rk.RING_HEADER_BYTES].view(np.int64)
        self._label = label
        self._claimed = -1
        self._peeked = -1
        self._scan_out = np.zeros((256, 3), np.int64)
        self._scratch: np.ndarray[Any, Any] | None = None
        self.offset = offset
        self.capacity = capacity
        self.max_payload = int(rk.max_payload_for(capacity))

    # ------------------------------------------------------------ construction

    @staticmethod
    def layout_bytes(capacity: int) -> int:
        """Bytes a ring of ``capacity`` data bytes needs (its header included)."""
        _check_capacity(capacity, "ring")
        return rk.RING_HEADER_BYTES + capacity

    @classmethod
    def create(cls, buf: Any, capacity: int, offset: int = 0, label: str = "ring") -> Ring:
        """Initialises an empty ring in ``buf`` at ``offset`` (the header is overwritten)."""
        arr = _as_bytes_array(buf)
        _check_capacity(capacity, label)
        _check_room(arr, offset, capacity, label)
        arr[offset : offset + rk.RING_HEADER_BYTES] = 0
        _HDR.pack_into(arr.data, offset, rk.RING_MAGIC, rk.RING_VERSION, capacity, int(rk.max_payload_for(capacity)))
        struct.pack_into("<Q", arr.data, offset + rk.OFF_ONE, 1)
        return cls(arr, offset, capacity, label)

    @classmethod
    def attach(cls, buf: Any, offset: int = 0, label: str = "ring", capacity: int | None = None) -> Ring:
        """Uses the ring another process created; checks magic, version and (if given) the capacity."""
        arr = _as_bytes_array(buf)
        if len(arr) < offset + rk.RING_HEADER_BYTES:
            raise RingLayoutError(f"{label}: buffer of {len(arr)} bytes cannot hold a ring header at offset {offset}")
        magic, version, cap, _max = _HDR.unpack_from(arr.data, offset)
        if magic != rk.RING_MAGIC:
            raise RingLayoutError(f"{label}: no ring at offset {offset} (magic {magic:#010x})")
        if version != rk.RING_VERSION:
            raise RingLayoutError(f"{label}: ring layout version {version}, this build reads {rk.RING_VERSION}")
        if capacity is not None and cap != capacity:
            raise RingLayoutError(f"{label}: ring capacity {cap}, expected {capacity}")
        _check_capacity(cap, label)
        _check_room(arr, offset, cap, label)
        return cls(arr, offset, cap, label)

    @property
    def array(self) -> np.ndarray[Any, Any]:
        """The whole underlying buffer as uint8 (for kernels: pass with ``offset`` and ``capacity``)."""
        return self._arr

    @property
    def label(self) -> str:
        return self._label

    def close(self) -> None:
        """Drops this object's views of the buffer, so the mapping under it can be closed.

        Afterwards the kernels see an empty buffer and touch nothing; the methods raise ValueError.
        """
        self._mv.release()
        self._arr = np.zeros(0, np.uint8)
        self._i64 = np.zeros(rk.RING_HEADER_BYTES // 8, np.int64)
        self._scratch = None

    @property
    def closed(self) -> bool:
        return len(self._arr) == 0

    def _refuse_closed(self) -> None:
        # called only on a failure path, so an open ring pays nothing for the check
        if self.closed:
            raise ValueError(f"{self._label}: ring is closed")

    # ------------------------------------------------------------ producer

    def _check_size(self, n: int) -> None:
        if n > self.max_payload:
            raise RecordTooLargeError(
                f"{self._label}: record of {n} bytes exceeds the max payload of {self.max_payload} bytes "
                f"(ring capacity {self.capacity})"
            )

    def push(self, rtype: int, payload: Payload) -> bool:
        """Writes and publishes one record; False when the ring is full (try again later)."""
        if self._claimed >= 0:
            raise RuntimeError(f"{self._label}: push() while a claim() is not committed")
        src = _payload_array(payload)
        self._check_size(src.shape[0])
        if rk.ring_push(self._arr, self.offset, self.capacity, rtype, src):
            return True
        self._refuse_closed()
        return False

    def push_many(self, records: Iterable[tuple[int, Payload]]) -> int:
        """Writes records in order until one does not fit, then publishes once; returns how many went in."""
        n = 0
        try:
            for rtype, payload in records:
                src = _payload_array(payload)
                self._check_size(src.shape[0])
                if not rk.ring_write(self._arr, self.offset, self.capacity, rtype, src, 0, src.shape[0]):
                    self._refuse_closed()
                    break
                n += 1
        finally:
            rk.ring_publish(self._arr, self.offset)
        return n

    def push_batch(self, records: Sequence[tuple[int, bytes]]) -> int:
        """``push_many`` in one kernel call (one copy of the payloads into a staging buffer first): records
        in order until one does not fit, published at once; returns how many went in. Each record must
        fit the ring's max payload (RecordTooLargeError, nothing written, otherwise)."""
        count = len(records)
        if count <= _FEW_RECORDS:  # staging costs more than a few single writes
            for _t, p in records:
                if len(p) > self.max_payload:
                    self._check_size(len(p))
            return self.push_many(records) if count else 0
        lens = np.fromiter((len(p) for _t, p in records), np.int64, count)
        biggest = int(lens.max())
        if biggest > self.max_payload:
            self._check_size(biggest)
        types = np.fromiter((t for t, _p in records), np.int64, count)
        offs = np.zeros(count, np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        src = np.frombuffer(b"".join([p for _t, p in records]) or b"\0", np.uint8)
        n = int(rk.ring_push_batch(self._arr, self.offset, self.capacity, types, src, offs, lens, count))
        if n == 0:
            self._refuse_closed()
        return n

    def claim(self, nbytes: int) -> memoryview | None:
        """Reserves room for a record of up to ``nbytes``: a writable view of its payload, or None if full."""
        self._check_size(nbytes)
        hdr = int(rk.ring_reserve(self._arr, self.offset, self.capacity, nbytes))
        if hdr < 0:
            self._refuse_closed()
            return None
        self._claimed = nbytes
        start = hdr + rk.RECORD_HEADER_BYTES
        return self._mv[start : start + nbytes]

    def commit(self, rtype: int, nbytes: int | None = None) -> None:
        """Publishes the claimed record with its first ``nbytes`` (default: all claimed bytes)."""
        if self._claimed < 0:
            raise RuntimeError(f"{self._label}: commit() without a claim()")
        n = self._claimed if nbytes is None else nbytes
        if not 0 <= n <= self._claimed:
            raise ValueError(f"{self._label}: commit of {n} bytes, but {self._claimed} were claimed")
        self._claimed = -1
        rk.ring_commit(self._arr, self.offset, self.capacity, rtype, n)
        rk.ring_publish(self._arr, self.offset)

    def needs_wake(self) -> bool:
        """Producer, after a publish batch: True when the consumer sleeps on its doorbell, which must ring.

        A consumer asleep in ``wait()`` is woken here (False: nothing more to do).
        """
        return bool(rk.ring_needs_wake(self._arr, self.offset))

    def arm_producer(self, nbytes: int = 0) -> bool:
        """Producer on a full ring: True = armed, sleep on your doorbell; False = ``nbytes`` fits now."""
        return bool(rk.ring_arm_producer(self._arr, self.offset, self.capacity, nbytes))

    def wait_for_space(self, nbytes: int, timeout: float) -> bool:
        """Producer on a full ring: sleeps on the ring's futex (no fd) until ``nbytes`` fits; False on timeout.

        The consumer's ``producer_needs_wake()`` wakes it (and returns False: no doorbell to write).
        """
        return bool(rk.ring_wait_space(self._arr, self.offset, self.capacity, nbytes, _ns(timeout)))

    # ------------------------------------------------------------ consumer

    def _corrupt(self) -> RingCorruptError:
        self._refuse_closed()
        head, tail = self._index(rk.OFF_RHEAD), self._index(rk.OFF_TAIL)
        return RingCorruptError(f"{self._label}: corrupt ring (read position {head}, tail {tail}); drop it")

    def pop(self) -> tuple[int, bytes] | None:
        """The next record as (type, a copy of its payload), or None when the ring is empty."""
        if self._scratch is None:  # one kernel call per pop: copy out and free in the same crossing
            self._scratch = np.empty(self.max_payload, np.uint8)
        n, rtype = rk.ring_pop_into(self._arr, self.offset, self.capacity, self._scratch, 0)
        if n < 0:
            if n == rk.CORRUPT:
                raise self._corrupt()
            self._refuse_closed()
            return None
        return int(rtype), self._scratch[:n].tobytes()

    def peek(self) -> tuple[int, memoryview] | None:
        """The next record without copying: (type, view), valid until ``release()``; None when empty."""
        hdr, rtype, n = rk.ring_peek(self._arr, self.offset, self.capacity)
        if hdr < 0:
            if hdr == rk.CORRUPT:
                raise self._corrupt()
            return None
        self._peeked = n
        start = hdr + rk.RECORD_HEADER_BYTES
        return int(rtype), self._mv[start : start + n]

    def release(self) -> None:
        """Consumes the record ``peek()`` returned, freeing its bytes for the producer."""
        if self._peeked < 0:
            raise RuntimeError(f"{self._label}: release() without a peek()")
        n, self._peeked = self._peeked, -1
        rk.ring_release(self._arr, self.offset, self.capacity, n)

    def _scan(self, max_records: int) -> list[list[int]]:
        if max_records > self._scan_out.shape[0]:
            self._scan_out = np.zeros((max_records, 3), np.int64)
        out = self._scan_out[:max_records]
        k = int(rk.ring_scan(self._arr, self.offset, self.capacity, out))
        if k == rk.CORRUPT:
            raise self._corrupt()
        rows: list[list[int]] = out[:k].tolist()
        return rows

    def drain(self, callback: Callable[[int, memoryview], object], max_records: int = 256) -> int:
        """Hands up to ``max_records`` records to ``callback(type, view)`` and frees them with one publish.

        A view is only valid inside its callback. Records handed out are consumed even if a callback raises.
        """
        rows = self._scan(max_records)
        try:
            for hdr, rtype, n in rows:
                start = hdr + rk.RECORD_HEADER_BYTES
                callback(rtype, self._mv[start : start + n])
        finally:
            rk.ring_publish_head(self._arr, self.offset)
        return len(rows)

    def pop_batch(self, max_records: int = 256) -> list[tuple[int, bytes]]:
        """Up to ``max_records`` records as (type, bytes), freed with one publish."""
        if self.empty():  # two plain loads; a record published meanwhile is seen by the next call or by arm()
            return []
        rows = self._scan(max_records)
        mv = self._mv
        items = [(rtype, mv[hdr + 8 : hdr + 8 + n].tobytes()) for hdr, rtype, n in rows]
        rk.ring_publish_head(self._arr, self.offset)
        return items

    def arm(self) -> bool:
        """Consumer about to sleep: True = armed, wait on the doorbell; False = data is there, read it."""
        if rk.ring_arm(self._arr, self.offset):
            return True
        self._refuse_closed()
        return False

    def wait(self, timeout: float) -> bool:
        """Consumer of this ring alone: sleeps on the ring's futex word (GIL released, no fd) until a
        record is published or ``timeout`` seconds pass; True when a record is there.

        The producer's ``needs_wake()`` wakes it directly (and returns False: no doorbell to write). Use a
        doorbell (``arm()``) instead to wait on many rings, sockets or an event loop at once.
        """
        return bool(rk.ring_wait(self._arr, self.offset, _ns(timeout)))

    def armed(self) -> bool:
        """Consumer: True while the doorbell flag set by its last ``arm()`` is still up, i.e. no producer
        has published (and rung) since. A plain load: a producer may take the flag right after it."""
        return (int(self._i64[rk.OFF_CWAIT // 8]) & 0xFFFFFFFF) == rk.WAIT_EVENTFD

    def disarm(self) -> None:
        """Clears the consumer's waiting flag (woken through another ring sharing the doorbell)."""
        rk.ring_disarm(self._arr, self.offset)

    def producer_needs_wake(self) -> bool:
        """Consumer, after freeing records: True when the producer sleeps on a full ring."""
        return bool(rk.ring_producer_needs_wake(self._arr, self.offset))

    # ------------------------------------------------------------ both sides

    def _index(self, off: int) -> int:
        return int(self._i64[off // 8])

    def used_bytes(self) -> int:
        """Bytes published and not yet freed (records, their headers and wrap padding)."""
        return self._index(rk.OFF_TAIL) - self._index(rk.OFF_HEAD)

    def free_bytes(self) -> int:
        """Bytes the producer may still write (one record needs 8 + payload rounded up to 8, contiguous)."""
        return self.capacity - (self._index(rk.OFF_WTAIL) - self._index(rk.OFF_HEAD))

    def empty(self) -> bool:
        """True when the consumer has nothing left to read."""
        return self._index(rk.OFF_TAIL) == self._index(rk.OFF_RHEAD)

    def counters(self) -> RingCounters:
        """Totals from the ring header (for the stats table and tools)."""
        return RingCounters(
            pushed=self._index(rk.OFF_N_PUSHED),
            popped=self._index(rk.OFF_N_POPPED),
            full=self._index(rk.OFF_N_FULL),
            wakes=self._index(rk.OFF_N_WAKES),
        )

    def __repr__(self) -> str:
        return f"Ring({self._label!r}, capacity={self.capacity}, used={self.used_bytes()})"


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


class RingSet:
    """Several rings of one buffer (a node segment) read by one consumer, checked, armed and disarmed with
    one kernel call each instead of one per ring: ``rings[i]`` is bit ``i`` of ``ready()``."""

    __slots__ = ("_bases", "rings")

    def __init__(self, rings: Sequence[Ring]) -> None:
        if not 0 < len(rings) <= 63:
            raise ValueError(f"a ring set holds 1 to 63 rings, not {len(rings)}")
        first = rings[0].array
        for r in rings[1:]:
            if r.array.ctypes.data != first.ctypes.data or len(r.array) != len(first):
                raise ValueError(f"ring set: {r.label} is not in the buffer of {rings[0].label}")
        self.rings = tuple(rings)
        self._bases = np.array([r.offset for r in rings], np.int64)

    def ready(self) -> int:
        """Bit ``i`` set when ``rings[i]`` has a record to read (a plain check, as ``Ring.empty``)."""
        return int(rk.rings_ready(self.rings[0].array, self._bases))

    def arm(self, count: int | None = None) -> bool:
        """``Ring.arm`` for ``rings[:count]`` (all by default), all or none: False = one has data, read it."""
        n = len(self.rings) if count is None else count
        if rk.rings_arm(self.rings[0].array, self._bases, n):
            return True
        for r in self.rings[:n]:
            r._refuse_closed()
        return False

    def disarm(self) -> int:
        """``Ring.disarm`` for every ring of the set; returns ``ready()`` as it is right after."""
        return int(rk.rings_disarm(self.rings[0].array, self._bases))


def _check_capacity(capacity: int, label: str) -> None:
    if capacity < MIN_CAPACITY or capacity > MAX_CAPACITY or capacity & (capacity - 1):
        raise RingLayoutError(
            f"{label}: ring capacity {capacity} must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
        )


def _check_room(arr: np.ndarray[Any, Any], offset: int, capacity: int, label: str) -> None:
    if offset < 0 or offset % 8:
        raise RingLayoutError(f"{label}: ring offset {offset} must be a non-negative multiple of 8")
    if (arr.ctypes.data + offset) % 8:
        raise RingLayoutError(f"{label}: ring at offset {offset} is not 8-byte aligned in memory")
    need = offset + rk.RING_HEADER_BYTES + capacity
    if len(arr) < need:
        raise RingLayoutError(
            f"{label}: buffer of {len(arr)} bytes, a ring of capacity {capacity} at offset {offset} needs {need}"
        )
