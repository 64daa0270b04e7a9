"""A ring in plain Python: the byte layout and protocol of ``ring_kernels`` without numba.

Written from ipc/layout.md, not from the kernels, with the public methods of
:class:`pycorosync.ipc.ring.Ring`. Two uses:

- short-lived clients, the command-line tools above all: importing numba and loading the compiled
  kernels costs about half a second per process, more than everything else a ``cmapctl`` call does.
  ``ipc.client`` connections use it when asked to (``connect(..., compiled=False)``) and then never
  import numba;
- the oracle of the property tests, which drive both rings with the same operations and compare every
  result and every byte of the two buffers (tests/unit/test_ring_model.py).

Across processes, the header fields are read and written through native-width views (one aligned
load or store each, never torn), and the two Dekker handshakes of the protocol (a consumer arming its
waiting flag, a producer checking it after a publish) put a full fence between their store and their
load: the acquire and release of a lock, each a locked instruction on x86-64, the only architecture
the layouts are defined for. Plain x86 stores are not reordered with each other, nor loads with
loads, so a published tail or head is a release and its load an acquire, as in the kernels.
"""

from __future__ import annotations

import platform
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pycorosync.ipc.eventfds import ring_eventfd
from pycorosync.ipc.ring_layout import (
    FUTEX_WAKE,
    OFF_CACHED_HEAD,
    OFF_CACHED_TAIL,
    OFF_CSEQ,
    OFF_CWAIT,
    OFF_HEAD,
    OFF_N_FULL,
    OFF_N_POPPED,
    OFF_N_PUSHED,
    OFF_N_WAKES,
    OFF_ONE,
    OFF_PSEQ,
    OFF_PWAIT,
    OFF_RHEAD,
    OFF_TAIL,
    OFF_WTAIL,
    PAD_LEN,
    RING_HEADER_BYTES,
    RING_MAGIC,
    RING_VERSION,
    SYS_FUTEX,
    WAIT_EVENTFD,
    WAIT_FUTEX,
    RecordTooLargeError,
    RingCorruptError,
    RingCounters,
    RingLayoutError,
    max_payload_for,
    record_bytes,
)

Payload = Any  # bytes-like (bytes, bytearray, memoryview, a contiguous numpy array)

_REC = struct.Struct("<II")
_HDR = struct.Struct("<IIqq")
# the header fields as indexes of its i64 and u32 views
HEAD, TAIL, RHEAD, CACHED_TAIL, N_POPPED = (o // 8 for o in (OFF_HEAD, OFF_TAIL, OFF_RHEAD, OFF_CACHED_TAIL,
                                                              OFF_N_POPPED))
WTAIL, CACHED_HEAD, N_PUSHED, N_FULL, N_WAKES = (o // 8 for o in (OFF_WTAIL, OFF_CACHED_HEAD, OFF_N_PUSHED,
                                                                  OFF_N_FULL, OFF_N_WAKES))
CWAIT, CSEQ, PWAIT, PSEQ = (o // 4 for o in (OFF_CWAIT, OFF_CSEQ, OFF_PWAIT, OFF_PSEQ))

_FENCE = threading.Lock()
#: the lock gives a StoreLoad fence only where its acquire and release are locked instructions (x86-64, the
#: one architecture the layouts are defined for); elsewhere clients keep the compiled rings
SAFE_HERE = platform.machine().lower() in ("x86_64", "amd64")


def fence() -> None:
    """A full memory fence (StoreLoad included): a lock's acquire and release, each a locked instruction."""
    _FENCE.acquire()
    _FENCE.release()


def _i64(v: int) -> int:
    """``v`` wrapped to int64, as the kernels' arithmetic wraps: a position or counter only gets past the
    limit when the other side wrote garbage into the header, and that must end in a corrupt-ring report,
    not in an exception from the view."""
    return v - (1 << 64) if v > 0x7FFFFFFFFFFFFFFF else v


def _futex_wake(view: memoryview, index: int) -> None:
    """FUTEX_WAKE on the u32 at ``view[index]`` (a ring side asleep in ``ring_wait``/``ring_wait_space``)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    word = ctypes.c_uint32.from_buffer(view, index * 4)
    libc.syscall(SYS_FUTEX, ctypes.byref(word), FUTEX_WAKE, 1, None, None, 0)
    del word


class PlainRing:
    """One SPSC byte ring at ``offset`` in a writable buffer (bytearray, mmap, memoryview, numpy array)."""

    __slots__ = ("_claimed", "_i64", "_label", "_peeked", "_u32", "capacity", "max_payload", "mv", "offset")

    def __init__(self, buf: Any, offset: int, capacity: int, label: str = "ring") -> None:
        self.mv = memoryview(buf).cast("B")
        header = self.mv[offset : offset + RING_HEADER_BYTES]
        self._i64 = header.cast("q")
        self._u32 = header.cast("I")
        header.release()
        self.offset = offset
        self.capacity = capacity
        self.max_payload = max_payload_for(capacity)
        self._label = label
        self._claimed = -1
        self._peeked = -1

    @classmethod
    def create(cls, buf: Any, capacity: int, offset: int = 0, label: str = "ring") -> PlainRing:
        mv = memoryview(buf).cast("B")
        mv[offset : offset + RING_HEADER_BYTES] = bytes(RING_HEADER_BYTES)
        _HDR.pack_into(mv, offset, RING_MAGIC, RING_VERSION, capacity, max_payload_for(capacity))
        struct.pack_into("<Q", mv, offset + OFF_ONE, 1)
        mv.release()
        return cls(buf, offset, capacity, label)

    @classmethod
    def attach(cls, buf: Any, offset: int = 0, label: str = "ring", capacity: int | None = None) -> PlainRing:
        """Uses the ring another process created; checks magic, version, capacity and room as ``Ring.attach``."""
        with memoryview(buf).cast("B") as mv:
            size = len(mv)
            if size < offset + RING_HEADER_BYTES:
                raise RingLayoutError(f"{label}: buffer of {size} bytes cannot hold a ring header at offset {offset}")
            magic, version, cap, _max = _HDR.unpack_from(mv, offset)
        if magic != RING_MAGIC:
            raise RingLayoutError(f"{label}: no ring at offset {offset} (magic {magic:#010x})")
        if version != RING_VERSION:
            raise RingLayoutError(f"{label}: ring layout version {version}, this build reads {RING_VERSION}")
        if capacity is not None and cap != capacity:
            raise RingLayoutError(f"{label}: ring capacity {cap}, expected {capacity}")
        if cap < 64 or cap > 1 << 31 or cap & (cap - 1):
            raise RingLayoutError(f"{label}: capacity must be a power of two in [64, 2**31], got {cap}")
        if offset % 8 or size < offset + RING_HEADER_BYTES + cap:
            raise RingLayoutError(f"{label}: a ring of {cap} bytes at offset {offset} does not fit {size} bytes")
        return cls(buf, offset, cap, label)

    @property
    def label(self) -> str:
        return self._label

    def close(self) -> None:
        """Drops the views of the buffer, so the mapping under it can be closed."""
        for view in (self._i64, self._u32, self.mv):
            view.release()

    def _data(self, pos: int) -> int:
        return self.offset + RING_HEADER_BYTES + pos

    def _pos(self, x: int) -> int:
        return x & (self.capacity - 1) & -8  # aligned even if the other side wrote a crooked index

    # producer
    def _check_size(self, n: int) -> None:
        if n > self.max_payload:
            raise RecordTooLargeError(
                f"{self._label}: record of {n} bytes exceeds the max payload of {self.max_payload} bytes "
                f"(ring capacity {self.capacity})"
            )

    def _reserve(self, n: int) -> int:
        q = self._i64
        cap = self.capacity
        need = record_bytes(n)
        w = q[WTAIL]
        pos = self._pos(w)
        to_end = cap - pos
        total = need if to_end >= need else to_end + need
        if w + total - q[CACHED_HEAD] > cap:
            q[CACHED_HEAD] = q[HEAD]
            if w + total - q[CACHED_HEAD] > cap:
                q[N_FULL] = _i64(q[N_FULL] + 1)
                return -1
        if to_end < need:
            _REC.pack_into(self.mv, self._data(pos), PAD_LEN, 0)
            q[WTAIL] = _i64(w + to_end)
            return self._data(0)
        return self._data(pos)

    def _commit(self, rtype: int, n: int) -> None:
        q = self._i64
        w = q[WTAIL]
        _REC.pack_into(self.mv, self._data(self._pos(w)), n, rtype)
        q[WTAIL] = _i64(w + record_bytes(n))
        q[N_PUSHED] = _i64(q[N_PUSHED] + 1)

    def _publish(self) -> None:
        self._i64[TAIL] = self._i64[WTAIL]

    def _write(self, rtype: int, payload: Payload) -> bool:
        data = payload if isinstance(payload, bytes | bytearray) else memoryview(payload).cast("B")
        n = len(data)
        self._check_size(n)
        hdr = self._reserve(n)
        if hdr < 0:
            return False
        self.mv[hdr + 8 : hdr + 8 + n] = data
        self._commit(rtype, n)
        return True

    def push(self, rtype: int, payload: Payload, efd: int = -1) -> bool:
        """Writes and publishes one record; False when full. With ``efd``, wakes the consumer through that
        eventfd if it sleeps (``notify``)."""
        if not self._write(rtype, payload):
            return False
        self._publish()
        if efd >= 0:
            self.notify(efd)
        return True

    def push_many(self, records: Iterable[tuple[int, Payload]]) -> int:
        n = 0
        try:
            for rtype, payload in records:
                if not self._write(rtype, payload):
                    break
                n += 1
        finally:
            self._publish()
        return n

    def claim(self, nbytes: int) -> memoryview | None:
        self._check_size(nbytes)
        hdr = self._reserve(nbytes)
        if hdr < 0:
            return None
        self._claimed = nbytes
        return self.mv[hdr + 8 : hdr + 8 + nbytes]

    def commit(self, rtype: int, nbytes: int | None = None) -> None:
        n = self._claimed if nbytes is None else nbytes
        if not 0 <= n <= self._claimed:
            raise RuntimeError(f"{self._label}: commit of {n} bytes, {self._claimed} claimed")
        self._claimed = -1
        self._commit(rtype, n)
        self._publish()

    def needs_wake(self) -> bool:
        """After a publish: True when the consumer sleeps on its doorbell (the flag is taken here)."""
        fence()  # StoreLoad: the tail store is visible before the flag is read
        u = self._u32
        flag = u[CWAIT]
        if not flag:
            return False
        u[CWAIT] = 0  # the kernels' xchg: a flag raised again meanwhile is answered by the wake below anyway
        self._i64[N_WAKES] = _i64(self._i64[N_WAKES] + 1)
        if flag == WAIT_FUTEX:
            u[CSEQ] = (u[CSEQ] + 1) & 0xFFFFFFFF
            _futex_wake(self._u32, CSEQ)
        return flag == WAIT_EVENTFD

    def notify(self, efd: int) -> bool:
        """``needs_wake`` and, if so, adds 1 to the consumer's eventfd ``efd``; True if it rang."""
        if not self.needs_wake():
            return False
        ring_eventfd(efd)
        return True

    def arm_producer(self, nbytes: int = 0) -> bool:
        q = self._i64
        self._u32[PWAIT] = WAIT_EVENTFD
        fence()
        head = q[HEAD]
        q[CACHED_HEAD] = head
        w = q[WTAIL]
        pos = self._pos(w)
        need = record_bytes(min(max(nbytes, 0), self.max_payload))
        total = need if self.capacity - pos >= need else self.capacity - pos + need
        if w + total - head <= self.capacity:
            self._u32[PWAIT] = 0
            return False
        return True

    # consumer
    def _corrupt(self) -> RingCorruptError:
        return RingCorruptError(
            f"{self._label}: corrupt ring (read position {self._i64[RHEAD]}, tail {self._i64[TAIL]}); drop it")

    def _peek(self) -> tuple[int, int, int] | None:
        q = self._i64
        cap = self.capacity
        r = q[RHEAD]
        while True:
            if r == q[CACHED_TAIL]:
                q[CACHED_TAIL] = q[TAIL]
                if r == q[CACHED_TAIL]:
                    return None
            avail = q[CACHED_TAIL] - r
            if avail < 8 or avail > cap:
                raise self._corrupt()
            pos = self._pos(r)
            n, rtype = _REC.unpack_from(self.mv, self._data(pos))
            if n == PAD_LEN:
                if cap - pos > avail:
                    raise self._corrupt()
                r = _i64(r + cap - pos)
                q[RHEAD] = r
                continue
            if n > self.max_payload or record_bytes(n) > avail or record_bytes(n) > cap - pos:
                raise self._corrupt()
            return self._data(pos), rtype, n

    def _consume(self, n: int) -> None:
        q = self._i64
        q[RHEAD] = _i64(q[RHEAD] + record_bytes(n))
        q[N_POPPED] = _i64(q[N_POPPED] + 1)

    def _publish_head(self) -> None:
        self._i64[HEAD] = self._i64[RHEAD]

    def pop(self) -> tuple[int, bytes] | None:
        found = self._peek()
        if found is None:
            return None
        hdr, rtype, n = found
        data = self.mv[hdr + 8 : hdr + 8 + n].tobytes()
        self._consume(n)
        self._publish_head()
        return rtype, data

    def peek(self) -> tuple[int, memoryview] | None:
        found = self._peek()
        if found is None:
            return None
        hdr, rtype, n = found
        self._peeked = n
        return rtype, self.mv[hdr + 8 : hdr + 8 + n]

    def release(self) -> None:
        if self._peeked < 0:
            raise RuntimeError(f"{self._label}: release() without a peek()")
        self._consume(self._peeked)
        self._publish_head()
        self._peeked = -1

    def _scan(self, max_records: int) -> list[tuple[int, int, int]]:
        rows: list[tuple[int, int, int]] = []
        while len(rows) < max_records:
            try:
                found = self._peek()
            except RingCorruptError:
                if rows:
                    break
                raise
            if found is None:
                break
            rows.append(found)
            self._consume(found[2])
        return rows

    def drain(self, callback: Callable[[int, memoryview], object], max_records: int = 256) -> int:
        rows = self._scan(max_records)
        try:
            for hdr, rtype, n in rows:
                callback(rtype, self.mv[hdr + 8 : hdr + 8 + n])
        finally:
            self._publish_head()
        return len(rows)

    def pop_batch(self, max_records: int = 256) -> list[tuple[int, bytes]]:
        rows = self._scan(max_records)
        items = [(rtype, self.mv[hdr + 8 : hdr + 8 + n].tobytes()) for hdr, rtype, n in rows]
        self._publish_head()
        return items

    def arm(self) -> bool:
        """Consumer about to sleep: True = armed, wait on the doorbell; False = data is there, read it."""
        self._u32[CWAIT] = WAIT_EVENTFD
        fence()  # StoreLoad: the flag is visible before the tail is read (the producer's mirror image)
        if self._i64[TAIL] != self._i64[RHEAD]:
            self._u32[CWAIT] = 0
            return False
        return True

    def armed(self) -> bool:
        """True while the flag of the last ``arm()`` is up (no producer has published and rung since)."""
        return self._u32[CWAIT] == WAIT_EVENTFD

    def disarm(self) -> None:
        self._u32[CWAIT] = 0

    def producer_needs_wake(self) -> bool:
        fence()
        u = self._u32
        flag = u[PWAIT]
        if not flag:
            return False
        u[PWAIT] = 0
        if flag == WAIT_FUTEX:
            u[PSEQ] = (u[PSEQ] + 1) & 0xFFFFFFFF
            _futex_wake(self._u32, PSEQ)
        return flag == WAIT_EVENTFD

    # both
    def used_bytes(self) -> int:
        return self._i64[TAIL] - self._i64[HEAD]

    def free_bytes(self) -> int:
        return self.capacity - (self._i64[WTAIL] - self._i64[HEAD])

    def empty(self) -> bool:
        return self._i64[TAIL] == self._i64[RHEAD]

    def counters(self) -> RingCounters:
        q = self._i64
        return RingCounters(q[N_PUSHED], q[N_POPPED], q[N_FULL], q[N_WAKES])


def flag_raised(view: memoryview) -> bool:
    """``wakeup.flag_raised`` for a u32 view of the flag: the fence, then the load."""
    fence()
    return bool(view[0])
