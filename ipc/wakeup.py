"""Wake-ups of the connection protocol: eventfd writes and reads, and the server-backlog flag.

The backlog flag is a Dekker-style handshake across processes: the server raises it and then retries
its push; the client frees ring space and then reads it. Both sides need a full fence between their
store and their load (x86 may reorder a store with a later load), which Python cannot give, hence the
two small kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pycorosync.ipc._atomics import fence_sc, ld_acq_u32, st_rel_u32, xchg_u32
from pycorosync.ipc.eventfds import (
    clear_eventfd as clear_eventfd,  # re-exported
    ring_eventfd as ring_eventfd,
)


@njit(cache=True, nogil=True)
def _raise(addr: int) -> None:
    xchg_u32(addr, 1)  # seq_cst: ordered before the push retry that follows


@njit(cache=True, nogil=True)
def _lower(addr: int) -> None:
    st_rel_u32(addr, 0)


@njit(cache=True, nogil=True)
def _check(addr: int) -> int:
    fence_sc()  # the head store of the pop that freed space must be visible before the flag is read
    return ld_acq_u32(addr)


def raise_flag(addr: int) -> None:
    """Server: it holds responses or events that did not fit (the client should ring after reading)."""
    _raise(addr)


def lower_flag(addr: int) -> None:
    """Server: nothing waits for ring space any more."""
    _lower(addr)


def flag_raised(addr: int) -> bool:
    """Client, after freeing ring space: True when the server waits for that space."""
    return bool(_check(addr))


def warm() -> None:
    """Compiles the flag kernels."""
    cell = np.zeros(2, np.uint32)
    addr = int(cell.ctypes.data)
    _raise(addr)
    _check(addr)
    _lower(addr)
