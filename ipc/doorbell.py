"""Doorbells: an eventfd a consumer sleeps on, rung by a producer only when the consumer said it sleeps.

The protocol lives in the ring header (ipc/ring.py): the consumer arms every ring it serves, each arm
re-checking for data, and sleeps only if all were empty; a producer, after publishing, asks
``ring.needs_wake()`` (a fence then an exchange of the consumer's flag) and writes the eventfd only
when that says so. So a busy ring costs no syscall, and no wake-up can be lost: either the producer
sees the flag, or the consumer's re-check sees the record. An eventfd's count persists until read,
so a ring that happens before the wait is not lost either.

One doorbell may serve many rings (a service and all its client connections). The fd is
non-blocking and can be watched by ``select.epoll``, ``asyncio`` (``loop.add_reader(bell.fileno(),
...)``, then ``bell.clear()``), or waited on directly with ``wait(timeout)``.

    bell = Doorbell()                         # or Doorbell(fd) for one received over SCM_RIGHTS
    bell.notify(ring)                         # producer: ring the bell if the consumer sleeps
    wait_for_records(bell, rings, timeout)    # consumer: arm all, sleep only if all are empty
"""

from __future__ import annotations

import contextlib
import math
import os
import select
from collections.abc import Sequence
from typing import Protocol


class ArmableRing(Protocol):
    """What a doorbell needs from a ring (``pycorosync.ipc.ring.Ring`` provides it)."""

    def arm(self) -> bool: ...

    def needs_wake(self) -> bool: ...


class Doorbell:
    """A non-blocking eventfd: ``ring()`` from any process holding it, ``wait()``/``clear()`` by its owner."""

    __slots__ = ("_fd", "_poll")

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            os.set_blocking(fd, False)
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def fileno(self) -> int:
        """The eventfd (to register with epoll/asyncio, or to pass to another process)."""
        return self._fd

    def ring(self) -> None:
        """Wakes the sleeper (adds 1 to the eventfd count; a saturated count is already a wake)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(self._fd, 1)

    def notify(self, ring: ArmableRing) -> bool:
        """Producer, after a publish batch to ``ring``: rings only if its consumer sleeps. True if it rang."""
        if ring.needs_wake():
            self.ring()
            return True
        return False

    def clear(self) -> int:
        """Resets the count (call after epoll/asyncio said readable); returns how many rings it held."""
        try:
            return os.eventfd_read(self._fd)
        except BlockingIOError:
            return 0

    def wait(self, timeout: float | None, clear: bool = True) -> bool:
        """Sleeps until rung or ``timeout`` seconds pass (None: forever); True if it was rung.

        ``clear=False`` leaves the count for a later ``clear()``, which keeps that syscall off the
        path from the wake to the work (``wait_for_records`` clears before it arms instead).
        """
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        if not self._poll.poll(ms):
            return False
        if clear:
            self.clear()
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for_records(bell: Doorbell, rings: Sequence[ArmableRing], timeout: float | None) -> bool:
    """Consumer of ``rings`` (all rung through ``bell``): sleeps unless one already holds a record.

    Returns True when there may be records to read (one was there, or the bell rang), False on timeout.
    The bell's count is cleared before arming (what it counted was served, or is seen by the arm's
    re-check), not after the wake, so the wake goes straight back to the caller. Rings stay armed until
    their producer's next publish clears the flag: at most one extra doorbell write per ring, never a
    lost one, and no per-ring call after each wake.
    """
    bell.clear()
    for ring in rings:
        if not ring.arm():
            return True
    return bell.wait(timeout, clear=False)
