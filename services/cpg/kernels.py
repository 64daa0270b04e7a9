"""A run of pipelined cpg_mcast_joined requests moved from a client's request ring to the submit ring in one call.

A pipelined whole message (request MCAST_ASYNC: ``MCAST_REQ_HEAD`` = guarantee, piece, 0, total; then the data)
becomes one SUBMIT_MCAST record: the submit prefix (guarantee), the cluster message's header (id, guarantee, 0,
pid), the group name's length and the name, then the data. ``CpgService._mcast_fast`` makes the same record
from one request in Python; :func:`move_mcasts` makes it for every request of a run, with the same checks, and
stops at the first request it does not take (another type, pieces, a bad header, a full or high submit ring),
which stays in the request ring for the general path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from pycorosync.ipc import ring_kernels as rk
from pycorosync.ipc._atomics import ld_acq_i64, ld_i64

REQ_HEAD_BYTES = 8  #: MCAST_REQ_HEAD: u8 guarantee, u8 piece, u16 0, u32 total
#: where the guarantee goes in the SUBMIT_MCAST prefix: the submit header's byte 0 and the cluster header's byte 1
PREFIX_GUARANTEE_AT = (0, 5)


@njit(cache=True, nogil=True)
def move_mcasts(req: Any, req_base: int, req_cap: int, sub: Any, sub_base: int, sub_cap: int, prefix: Any,
                async_type: int, submit_type: int, piece_whole: int, max_request: int, max_total: int,
                high_water: int, max_records: int) -> tuple[int, int]:
    """Moves up to ``max_records`` requests; returns (how many, data bytes moved).

    ``prefix`` is the SUBMIT_MCAST prefix of this connection with guarantee 0 (its two guarantee bytes are set
    per message). A request is taken when its type is ``async_type``, its payload is at most ``max_request``
    bytes, its header says one whole message (``piece_whole``) of ``total`` <= ``max_total`` bytes that is the
    rest of the payload, with a guarantee 0..3, and the submit ring holds at most ``high_water`` bytes and has
    room. The request ring's head and the submit ring's tail are published once, at the end.
    """
    moved = 0
    data_bytes = 0
    plen = prefix.shape[0]
    sub_addr = sub.ctypes.data + sub_base
    while moved < max_records:
        hdr, rtype, n = rk.ring_peek(req, req_base, req_cap)
        if hdr < 0 or rtype != async_type or n > max_request or n < REQ_HEAD_BYTES:
            break
        src = hdr + rk.RECORD_HEADER_BYTES
        guarantee = req[src]
        total = (np.int64(req[src + 4]) | (np.int64(req[src + 5]) << 8) | (np.int64(req[src + 6]) << 16)
                 | (np.int64(req[src + 7]) << 24))
        if req[src + 1] != piece_whole or guarantee > 3 or total != n - REQ_HEAD_BYTES or total > max_total:
            break
        if ld_i64(sub_addr + rk.OFF_WTAIL) - ld_acq_i64(sub_addr + rk.OFF_HEAD) > high_water:
            break
        size = plen + total
        dst = rk.ring_reserve(sub, sub_base, sub_cap, size)
        if dst < 0:
            break
        dst += rk.RECORD_HEADER_BYTES
        for i in range(plen):
            sub[dst + i] = prefix[i]
        sub[dst + PREFIX_GUARANTEE_AT[0]] = guarantee
        sub[dst + PREFIX_GUARANTEE_AT[1]] = guarantee
        rk._copy(sub, dst + plen, req, src + REQ_HEAD_BYTES, total)
        rk.ring_commit(sub, sub_base, sub_cap, submit_type, size)
        rk.ring_consume(req, req_base, req_cap, n)
        moved += 1
        data_bytes += total
    if moved > 0:
        rk.ring_publish(sub, sub_base)
        rk.ring_publish_head(req, req_base)
    return moved, data_bytes


def warm() -> None:
    """Compiles ``move_mcasts`` for the argument types the service uses."""
    from pycorosync.ipc.ring import Ring

    cap = 1024
    req = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    sub = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    req.push(10, bytes((1, 3, 0, 0, 2, 0, 0, 0)) + b"hi")
    prefix = np.zeros(16, np.uint8)
    moved, _ = move_mcasts(req.array, req.offset, req.capacity, sub.array, sub.offset, sub.capacity, prefix,
                           10, 1, 3, 512, 512, cap, 8)
    assert moved == 1
