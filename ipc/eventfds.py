"""Eventfd writes and reads of the wake-up protocol, in plain Python (no numba: short-lived clients use them)."""

from __future__ import annotations

import os


def ring_eventfd(fd: int) -> None:
    """Adds 1 to an eventfd (wakes whoever polls it); a full counter or a closed fd is not an error here."""
    # try/except, not contextlib.suppress: this runs once per message and the context manager costs more
    try:  # noqa: SIM105
        os.eventfd_write(fd, 1)
    except OSError:
        pass  # counter saturated: it is readable anyway; closed: the peer is gone and its socket says so


def clear_eventfd(fd: int) -> None:
    """Resets a non-blocking eventfd to zero (not readable any more)."""
    try:  # noqa: SIM105
        os.eventfd_read(fd)
    except OSError:
        pass  # already zero
