"""Reference ring: the byte layout and protocol of ``ring_kernels`` in plain Python, for tests.

Written from ipc/layout.md, not from the kernels, with the same public methods as
:class:`pycorosync.ipc.ring.Ring`. Property tests drive both with the same operations and compare
every result and every byte of the two buffers. No atomics: it is meant for one thread.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from pycorosync.ipc.ring import Payload, RecordTooLargeError, RingCorruptError, RingCounters

MAGIC = 0x52534350
VERSION = 2
HEADER = 4096
PAD = 0xFFFFFFFF
# field offsets, as in ipc/layout.md
HEAD, TAIL, CWAIT, CSEQ, PWAIT, PSEQ = 128, 256, 384, 388, 512, 516
RHEAD, CACHED_TAIL, N_POPPED = 640, 648, 656
WTAIL, CACHED_HEAD, N_PUSHED, N_FULL, N_WAKES, ONE = 768, 776, 784, 792, 800, 808

_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_REC = struct.Struct("<II")


def _payload_bytes(payload: Payload) -> bytes:
    if isinstance(payload, memoryview):
        return payload.tobytes()
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return bytes(payload.tobytes())


def _footprint(n: int) -> int:
    return 8 + (n + 7) // 8 * 8


class RefRing:
    """Plain-Python twin of ``Ring`` over a writable buffer (bytearray, memoryview, numpy array)."""

    def __init__(self, buf: Any, offset: int, capacity: int) -> None:
        self.mv = memoryview(buf).cast("B")
        self.offset = offset
        self.capacity = capacity
        self.max_payload = capacity // 2 - 8
        self._claimed = -1
        self._peeked = -1

    @classmethod
    def create(cls, buf: Any, capacity: int, offset: int = 0) -> RefRing:
        ring = cls(buf, offset, capacity)
        ring.mv[offset : offset + HEADER] = bytes(HEADER)
        struct.pack_into("<IIqq", ring.mv, offset, MAGIC, VERSION, capacity, capacity // 2 - 8)
        struct.pack_into("<Q", ring.mv, offset + ONE, 1)
        return ring

    # raw field access
    def _get(self, off: int) -> int:
        return int(_I64.unpack_from(self.mv, self.offset + off)[0])

    def _set(self, off: int, value: int) -> None:
        _I64.pack_into(self.mv, self.offset + off, value)

    def _flag(self, off: int) -> int:
        return int(_U32.unpack_from(self.mv, self.offset + off)[0])

    def _set_flag(self, off: int, value: int) -> None:
        _U32.pack_into(self.mv, self.offset + off, value)

    def _bump(self, off: int) -> None:
        self._set(off, self._get(off) + 1)

    def _data(self, pos: int) -> int:
        return self.offset + HEADER + pos

    # producer
    def _check_size(self, n: int) -> None:
        if n > self.max_payload:
            raise RecordTooLargeError(f"record of {n} bytes exceeds {self.max_payload}")

    def _reserve(self, n: int) -> int:
        need = _footprint(n)
        w = self._get(WTAIL)
        pos = w % self.capacity
        to_end = self.capacity - pos
        total = need if to_end >= need else to_end + need
        if w + total - self._get(CACHED_HEAD) > self.capacity:
            self._set(CACHED_HEAD, self._get(HEAD))
            if w + total - self._get(CACHED_HEAD) > self.capacity:
                self._bump(N_FULL)
                return -1
        if to_end < need:
            _REC.pack_into(self.mv, self._data(pos), PAD, 0)
            self._set(WTAIL, w + to_end)
            return self._data(0)
        return self._data(pos)

    def _commit(self, rtype: int, n: int) -> None:
        w = self._get(WTAIL)
        _REC.pack_into(self.mv, self._data(w % self.capacity), n, rtype)
        self._set(WTAIL, w + _footprint(n))
        self._bump(N_PUSHED)

    def _publish(self) -> None:
        self._set(TAIL, self._get(WTAIL))

    def _write(self, rtype: int, data: bytes) -> bool:
        self._check_size(len(data))
        hdr = self._reserve(len(data))
        if hdr < 0:
            return False
        self.mv[hdr + 8 : hdr + 8 + len(data)] = data
        self._commit(rtype, len(data))
        return True

    def push(self, rtype: int, payload: Payload) -> bool:
        if not self._write(rtype, _payload_bytes(payload)):
            return False
        self._publish()
        return True

    def push_many(self, records: Iterable[tuple[int, Payload]]) -> int:
        n = 0
        try:
            for rtype, payload in records:
                if not self._write(rtype, _payload_bytes(payload)):
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
        assert 0 <= n <= self._claimed
        self._claimed = -1
        self._commit(rtype, n)
        self._publish()

    def needs_wake(self) -> bool:
        flag = self._flag(CWAIT)
        if not flag:
            return False
        self._set_flag(CWAIT, 0)
        self._bump(N_WAKES)
        if flag == 2:  # asleep on the futex word: bump it (and FUTEX_WAKE)
            self._set_flag(CSEQ, (self._flag(CSEQ) + 1) & 0xFFFFFFFF)
        return flag == 1

    def arm_producer(self, nbytes: int = 0) -> bool:
        self._set_flag(PWAIT, 1)
        head = self._get(HEAD)
        self._set(CACHED_HEAD, head)
        w = self._get(WTAIL)
        pos = w % self.capacity
        need = _footprint(min(max(nbytes, 0), self.max_payload))
        total = need if self.capacity - pos >= need else self.capacity - pos + need
        if w + total - head <= self.capacity:
            self._set_flag(PWAIT, 0)
            return False
        return True

    # consumer
    def _peek(self) -> tuple[int, int, int] | None:
        r = self._get(RHEAD)
        while True:
            if r == self._get(CACHED_TAIL):
                self._set(CACHED_TAIL, self._get(TAIL))
                if r == self._get(CACHED_TAIL):
                    return None
            t = self._get(CACHED_TAIL)
            avail = t - r
            if avail < 8 or avail > self.capacity:
                raise RingCorruptError("corrupt ring")
            pos = r % self.capacity
            n, rtype = _REC.unpack_from(self.mv, self._data(pos))
            if n == PAD:
                if self.capacity - pos > avail:
                    raise RingCorruptError("corrupt ring")
                r += self.capacity - pos
                self._set(RHEAD, r)
                continue
            if n > self.max_payload or _footprint(n) > avail or _footprint(n) > self.capacity - pos:
                raise RingCorruptError("corrupt ring")
            return self._data(pos), rtype, n

    def _consume(self, n: int) -> None:
        self._set(RHEAD, self._get(RHEAD) + _footprint(n))
        self._bump(N_POPPED)

    def _publish_head(self) -> None:
        self._set(HEAD, self._get(RHEAD))

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
        assert self._peeked >= 0
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
        self._set_flag(CWAIT, 1)
        if self._get(TAIL) != self._get(RHEAD):
            self._set_flag(CWAIT, 0)
            return False
        return True

    def disarm(self) -> None:
        self._set_flag(CWAIT, 0)

    def producer_needs_wake(self) -> bool:
        flag = self._flag(PWAIT)
        if not flag:
            return False
        self._set_flag(PWAIT, 0)
        if flag == 2:
            self._set_flag(PSEQ, (self._flag(PSEQ) + 1) & 0xFFFFFFFF)
        return flag == 1

    # both
    def used_bytes(self) -> int:
        return self._get(TAIL) - self._get(HEAD)

    def free_bytes(self) -> int:
        return self.capacity - (self._get(WTAIL) - self._get(HEAD))

    def empty(self) -> bool:
        return self._get(TAIL) == self._get(RHEAD)

    def counters(self) -> RingCounters:
        return RingCounters(self._get(N_PUSHED), self._get(N_POPPED), self._get(N_FULL), self._get(N_WAKES))
