"""Runs of records moved between rings in one call each, on the cpg service's hot paths.

:func:`move_mcasts`: pipelined cpg_mcast_joined requests, from a client's request ring to the submit ring.
:func:`deliver_mcasts`: delivered messages of one group, from the deliver ring to its one local member's
event ring.

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
DELIVER_BODY_AT = 20  #: records.MESSAGE_HEADER: u32 sender, u32 rep, u64 seq, u8 guarantee, 3 pad; the message follows
#: the MCAST's name length in a DELIVER_MESSAGE record, after EXEC_MCAST_HEAD (u8 id, u8 guarantee, u16 0, u32 pid)
DELIVER_NAME_AT = DELIVER_BODY_AT + 8
EVENT_HEAD_BYTES = 16  #: DELIVER_HEAD: u32 nodeid, u32 pid, u8 piece, u8 guarantee, u16 0, u32 data length
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
        total = rk.get_u32(req, src + 4)
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


@njit(cache=True, nogil=True)
def deliver_mcasts(src: Any, src_base: int, src_cap: int, dst: Any, dst_base: int, dst_cap: int, group: Any,
                   senders: Any, record_type: int, event_type: int, mcast_id: int, piece_whole: int,
                   max_data: int, max_records: int) -> tuple[int, int]:
    """Moves up to ``max_records`` DELIVER_MESSAGE records of whole cluster MCASTs to ``group`` from the
    deliver ring ``src`` to one client's event ring ``dst`` as DELIVER events; returns (how many, the
    cluster bytes they carried).

    The record (``DELIVER_MESSAGE_AT``: the message header, then the cluster MCAST: id, guarantee, 0, pid,
    name length, name, data) becomes the event ``CpgService._deliver_fast`` makes: the DELIVER header
    (sender, pid, whole, guarantee, 0, data length), then the record from the name length on. A record is
    taken when its type is ``record_type``, its message is an MCAST (``mcast_id``) to ``group`` of at most
    ``max_data`` bytes, its sender is in ``senders`` (nodes with a member in the group), and the event
    ring has room; the first one that is not stays for the general path. Heads and tails are published
    once, at the end."""
    moved = 0
    carried = 0
    name_len = group.shape[0]
    while moved < max_records:
        hdr, rtype, n = rk.ring_peek(src, src_base, src_cap)
        if hdr < 0 or rtype != record_type or n < DELIVER_NAME_AT + 2 + name_len:
            break
        s = hdr + rk.RECORD_HEADER_BYTES
        if src[s + DELIVER_BODY_AT] != mcast_id:
            break
        if int(src[s + DELIVER_NAME_AT]) | (int(src[s + DELIVER_NAME_AT + 1]) << 8) != name_len:
            break
        at = s + DELIVER_NAME_AT + 2
        same = True
        for i in range(name_len):
            if src[at + i] != group[i]:
                same = False
                break
        if not same:
            break
        total = n - (DELIVER_NAME_AT + 2 + name_len)
        if total > max_data:
            break
        sender = rk.get_u32(src, s)
        known = False
        for i in range(senders.shape[0]):
            if senders[i] == sender:
                known = True
                break
        if not known:
            break
        tail = n - DELIVER_NAME_AT
        size = EVENT_HEAD_BYTES + tail
        d = rk.ring_reserve(dst, dst_base, dst_cap, size)
        if d < 0:
            break
        d += rk.RECORD_HEADER_BYTES
        rk.put_u32(dst, d, sender)
        rk.put_u32(dst, d + 4, rk.get_u32(src, s + DELIVER_BODY_AT + 4))  # pid
        rk.put_u32(dst, d + 12, total)
        dst[d + 8] = piece_whole
        dst[d + 9] = src[s + DELIVER_BODY_AT + 1]  # guarantee
        dst[d + 10] = 0
        dst[d + 11] = 0
        rk._copy(dst, d + EVENT_HEAD_BYTES, src, s + DELIVER_NAME_AT, tail)
        rk.ring_commit(dst, dst_base, dst_cap, event_type, size)
        rk.ring_consume(src, src_base, src_cap, n)
        moved += 1
        carried += n - DELIVER_BODY_AT
    if moved > 0:
        rk.ring_publish(dst, dst_base)
        rk.ring_publish_head(src, src_base)
    return moved, carried


def warm() -> None:
    """Compiles ``move_mcasts`` and ``deliver_mcasts`` for the argument types the service uses."""
    from pycorosync.ipc.ring import Ring

    cap = 1024
    req = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    sub = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    req.push(10, bytes((1, 3, 0, 0, 2, 0, 0, 0)) + b"hi")
    prefix = np.zeros(16, np.uint8)
    moved, _ = move_mcasts(req.array, req.offset, req.capacity, sub.array, sub.offset, sub.capacity, prefix,
                           10, 1, 3, 512, 512, cap, 8)
    assert moved == 1
    record = bytes(DELIVER_BODY_AT) + bytes((3, 2, 0, 0, 9, 0, 0, 0, 1, 0)) + b"gdata"
    dlv = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    dlv.push(1, record)
    ev = Ring.create(np.zeros(Ring.layout_bytes(cap), np.uint8), cap)
    group = np.frombuffer(b"g", np.uint8)
    moved, _ = deliver_mcasts(dlv.array, dlv.offset, dlv.capacity, ev.array, ev.offset, ev.capacity, group,
                              np.zeros(1, np.uint32), 1, 100, 3, 3, 1 << 20, 8)
    assert moved == 1
