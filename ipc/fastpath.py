"""The per-message path of client connections: one numba call per push and one per pop.

``Ring.push`` followed by ``Ring.needs_wake`` and an eventfd write, or ``Ring.pop`` (a peek and a
release), each cross from Python into numba or the kernel more than once, and every crossing costs
about half a microsecond, which is most of a request's round trip. Here a push, its wake check and
the eventfd write are one kernel, and a pop copies into a scratch buffer in one kernel
(``ring_kernels.ring_pop_into``), with the same checks on every record as ``Ring.pop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from pycorosync.ipc import ring_kernels as rk
from pycorosync.ipc.ring import RecordTooLargeError, Ring, RingCorruptError

FULL = 0
PUSHED = 1


@njit(cache=True, nogil=True)
def push_notify(buf: Any, base: int, cap: int, rtype: int, src: Any, efd: int) -> int:
    """``ring_push``, then ``ring_notify``: FULL, or PUSHED (and the consumer's eventfd ``efd`` written if
    it sleeps on it)."""
    if not rk.ring_push(buf, base, cap, rtype, src):
        return FULL
    rk.ring_notify(buf, base, efd)
    return PUSHED


class RingIO:
    """One ring seen through the fast path; ``scratch`` (at least ``ring.max_payload`` bytes) may be
    shared by rings that are read one at a time."""

    __slots__ = ("_arr", "_base", "_cap", "max_payload", "ring", "scratch")

    def __init__(self, ring: Ring, scratch: np.ndarray[Any, Any] | None = None) -> None:
        if scratch is None:  # a producer's view: pop() is not used
            scratch = np.zeros(0, np.uint8)
        elif scratch.shape[0] < ring.max_payload:
            raise ValueError(f"{ring.label}: scratch of {scratch.shape[0]} bytes, records reach {ring.max_payload}")
        self.ring = ring
        self.scratch = scratch
        self.max_payload = ring.max_payload
        self._arr = ring.array
        self._base = ring.offset
        self._cap = ring.capacity

    def push(self, rtype: int, payload: bytes | bytearray | memoryview, efd: int) -> bool:
        """Writes one record and wakes the consumer through ``efd`` if it sleeps; False when full."""
        return bool(push_notify(self._arr, self._base, self._cap, rtype, self._source(payload), efd))

    def push_quiet(self, rtype: int, payload: bytes | bytearray | memoryview) -> bool:
        """Writes one record without waking the consumer (``notify`` does, once for a batch); False when full."""
        return bool(rk.ring_push(self._arr, self._base, self._cap, rtype, self._source(payload)))

    def push_batch(self, records: Sequence[tuple[int, bytes]]) -> int:
        """Writes records in order until one does not fit, publishes them at once (no wake: see ``notify``);
        returns how many went in."""
        return self.ring.push_batch(records)

    def check_size(self, nbytes: int) -> None:
        """RecordTooLargeError when a record of ``nbytes`` can never fit this ring."""
        if nbytes > self.max_payload:
            raise RecordTooLargeError(
                f"{self.ring.label}: record of {nbytes} bytes exceeds the max payload of {self.max_payload} bytes"
            )

    def _source(self, payload: bytes | bytearray | memoryview) -> np.ndarray[Any, Any]:
        if len(payload) > self.max_payload:
            self.check_size(len(payload))
        return np.frombuffer(payload, np.uint8)

    def notify(self, efd: int) -> bool:
        """Wakes the consumer through ``efd`` if it sleeps (after ``push_quiet``); True if it rang."""
        return bool(rk.ring_notify(self._arr, self._base, efd))

    def pop(self) -> tuple[int, bytes] | None:
        """The next record as (type, a copy of its payload), or None; RingCorruptError on an impossible record."""
        if self.scratch.shape[0] < self.max_payload:
            raise RuntimeError(f"{self.ring.label}: this view was made without a scratch buffer, for pushing only")
        n, rtype = rk.ring_pop_into(self._arr, self._base, self._cap, self.scratch, 0)
        if n < 0:
            if n == rk.EMPTY:
                return None
            raise RingCorruptError(f"{self.ring.label}: corrupt ring (impossible record or index); drop it")
        return int(rtype), self.scratch[:n].tobytes()

    def release(self) -> None:
        """Drops the views of the ring's memory (before its mapping is closed)."""
        self.ring.close()
        self._arr = np.zeros(0, np.uint8)


def max_payload(capacity: int) -> int:
    """The largest record a ring of ``capacity`` bytes takes."""
    return int(rk.max_payload_for(capacity))


def scratch_for(*rings: Ring) -> np.ndarray[Any, Any]:
    """A scratch buffer large enough for any record of these rings (pages are touched only when used)."""
    return np.empty(max(ring.max_payload for ring in rings), np.uint8)


def warm() -> None:
    """Compiles the kernels for the argument types connections use."""
    cap = 1024
    buf = np.zeros(Ring.layout_bytes(cap), np.uint8)
    ring = Ring.create(buf, cap)
    io = RingIO(ring, scratch_for(ring))
    io.push(1, b"x" * 300, -1)  # read-only source (bytes); no consumer sleeps, so the fd is not written
    push_notify(buf, 0, cap, 1, np.zeros(8, np.uint8), -1)  # writable source
    io.pop()
    io.pop()
    io.pop()
