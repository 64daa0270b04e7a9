"""numba kernels that let the verbs transport send tx ring records in place (zero copy).

The ring's ``ring_scan`` consumes records without freeing them, but its ``ring_publish_head`` frees
everything read so far. A record posted to an HCA must stay untouched until its send completes, and
completions of different peers come back in any order, so the head is published record by record:
:func:`scan_records` also returns each record's end position, and :func:`publish_head_to` frees the
ring up to one of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from pycorosync.ipc._atomics import ld_i64, st_i64, st_rel_i64
from pycorosync.ipc.ring_kernels import OFF_HEAD, OFF_N_POPPED, OFF_RHEAD, record_bytes, ring_peek

SCAN_COLUMNS = 4  # (header offset in buf, type, payload length, end position)


@njit(cache=True, nogil=True)
def scan_records(buf: Any, base: int, cap: int, out: Any) -> int:
    """Consumes up to ``out.shape[0]`` records without freeing them; returns how many.

    ``out[i] = (hdr, type, length, end)``: the payload is at ``buf[hdr + 8 : hdr + 8 + length]`` and stays
    valid until :func:`publish_head_to` passes ``end``. A corrupt ring ends the scan (reported again by
    the next call: totem's ring is trusted, so this is a bug, never input).
    """
    a = buf.ctypes.data + base
    k = 0
    while k < out.shape[0]:
        hdr, rtype, n = ring_peek(buf, base, cap)
        if hdr < 0:
            break
        end = ld_i64(a + OFF_RHEAD) + record_bytes(n)
        st_i64(a + OFF_RHEAD, end)
        st_i64(a + OFF_N_POPPED, ld_i64(a + OFF_N_POPPED) + 1)
        out[k, 0] = hdr
        out[k, 1] = rtype
        out[k, 2] = n
        out[k, 3] = end
        k += 1
    return k


@njit(cache=True, nogil=True)
def publish_head_to(buf: Any, base: int, end: int) -> None:
    """Frees the ring up to position ``end`` (an ``end`` from :func:`scan_records`; release store)."""
    a = buf.ctypes.data + base
    st_rel_i64(a + OFF_HEAD, end)


def warm() -> None:
    """Compiles both kernels on a small in-memory ring."""
    from pycorosync.ipc.ring_kernels import RING_HEADER_BYTES, ring_push

    cap = 4096
    ring = np.zeros(RING_HEADER_BYTES + cap, np.uint8)
    ring_push(ring, 0, cap, 0, np.zeros(16, np.uint8))
    out = np.zeros((2, SCAN_COLUMNS), np.int64)
    n = scan_records(ring, 0, cap, out)
    if n:
        publish_head_to(ring, 0, int(out[n - 1, 3]))
