"""numba kernels of the SPSC byte ring: the hot path, callable from Python and from other kernels.

Every kernel works on a raw ``uint8`` array ``buf`` holding a ring at byte offset ``base`` (the ring
header, then ``cap`` data bytes at ``base + RING_HEADER_BYTES``). ``cap`` is passed by the caller, who
learnt it at attach time, and is never re-read from shared memory: the other side of a ring may be an
untrusted client process, so every index is masked with ``cap - 1`` and every record length is checked
against the published tail and the ring end before a byte is read. A bad ring is reported
(``CORRUPT``), never followed out of bounds.

Byte layout (see ipc/layout.md): a record is ``u32 length | u32 type | payload padded to 8``; a record
whose length is ``PAD_LEN`` fills the rest of the ring before the wrap. Positions are int64 byte counts
that only grow; ``pos & (cap - 1)`` is the offset in the data area.

Producer (one process):
    hdr = ring_reserve(buf, base, cap, nbytes)   # -1 when full; writes a wrap pad if needed
    ... write nbytes of payload at hdr + 8 ...
    ring_commit(buf, base, cap, rtype, nbytes)   # record is complete, not yet visible
    ring_write(buf, base, cap, rtype, src, src_off, nbytes)  # reserve + copy + commit, -> bool
    ring_publish(buf, base)                      # release store of the tail: a batch becomes visible
    (w, n) = ring_mark(buf, base)                # before a group of records that must go in together:
    ring_rollback(buf, base, w, n)               # takes back the unpublished records committed since
    ring_push(buf, base, cap, rtype, src)        # write + publish, -> bool
    ring_needs_wake(buf, base)                   # after a publish: True -> write the consumer's doorbell
                                                 # (a consumer in ring_wait is woken by a futex here)
    ring_notify(buf, base, efd)                  # the same, and writes the eventfd itself
Consumer (one process):
    (hdr, rtype, n) = ring_peek(buf, base, cap)  # hdr EMPTY / CORRUPT, else payload at hdr + 8
    ring_release(buf, base, cap, n)              # consume the peeked record and publish the head
    (n, rtype) = ring_read(buf, base, cap, dst, dst_off)   # copy out, head not yet published
    ring_publish_head(buf, base)                 # release store of the head: frees a batch
    ring_pop_into(buf, base, cap, dst, dst_off)  # read + publish_head
    n = ring_scan(buf, base, cap, out)           # up to len(out) records: out[i] = (hdr, rtype, n)
    ring_arm(buf, base) / ring_disarm(buf, base) # consumer's waiting flag for its doorbell (re-checks)
    rings_ready / rings_arm / rings_disarm       # the same for several rings of one buffer in one call
    ring_wait(buf, base, timeout_ns)             # or: sleep on the ring's own futex (one ring, no fd)
    ring_producer_needs_wake(buf, base)          # after freeing: True -> write the producer's doorbell
    ring_notify_producer(buf, base, efd)         # the same, and writes the eventfd itself
Producer on a full ring: ring_arm_producer (doorbell) or ring_wait_space (futex), the mirror image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from pycorosync.ipc._atomics import (
    c_syscall,
    c_write,
    fence_sc,
    fetch_add_u32,
    ld_acq_i64,
    ld_acq_u32,
    ld_i64,
    ld_u32,
    memcpy,
    st_i64,
    st_rel_i64,
    st_rel_u32,
    st_u32,
    xchg_u32,
)

# the layout, re-exported: the kernels' users read the offsets and constants from here
from pycorosync.ipc.ring_layout import (
    CORRUPT as CORRUPT,
    EMPTY as EMPTY,
    FUTEX_WAIT as FUTEX_WAIT,
    FUTEX_WAKE as FUTEX_WAKE,
    NO_ROOM as NO_ROOM,
    OFF_CACHED_HEAD as OFF_CACHED_HEAD,
    OFF_CACHED_TAIL as OFF_CACHED_TAIL,
    OFF_CAPACITY as OFF_CAPACITY,
    OFF_CSEQ as OFF_CSEQ,
    OFF_CTS as OFF_CTS,
    OFF_CWAIT as OFF_CWAIT,
    OFF_HEAD as OFF_HEAD,
    OFF_MAGIC as OFF_MAGIC,
    OFF_MAX_PAYLOAD as OFF_MAX_PAYLOAD,
    OFF_N_FULL as OFF_N_FULL,
    OFF_N_POPPED as OFF_N_POPPED,
    OFF_N_PUSHED as OFF_N_PUSHED,
    OFF_N_WAKES as OFF_N_WAKES,
    OFF_ONE as OFF_ONE,
    OFF_PSEQ as OFF_PSEQ,
    OFF_PTS as OFF_PTS,
    OFF_PWAIT as OFF_PWAIT,
    OFF_RHEAD as OFF_RHEAD,
    OFF_TAIL as OFF_TAIL,
    OFF_VERSION as OFF_VERSION,
    OFF_WTAIL as OFF_WTAIL,
    PAD_LEN as PAD_LEN,
    RECORD_HEADER_BYTES as RECORD_HEADER_BYTES,
    RING_HEADER_BYTES as RING_HEADER_BYTES,
    RING_MAGIC as RING_MAGIC,
    RING_VERSION as RING_VERSION,
    SYS_FUTEX as SYS_FUTEX,
    WAIT_EVENTFD as WAIT_EVENTFD,
    WAIT_FUTEX as WAIT_FUTEX,
)

MEMCPY_MIN = 256  # below this a plain loop beats the libc call


@njit(cache=True, nogil=True, inline="always")
def get_u32(buf: Any, at: int) -> int:
    """The little-endian u32 at byte ``at`` of a uint8 array (a record's field, any alignment)."""
    return int(buf[at]) | (int(buf[at + 1]) << 8) | (int(buf[at + 2]) << 16) | (int(buf[at + 3]) << 24)


@njit(cache=True, nogil=True, inline="always")
def put_u32(buf: Any, at: int, v: int) -> None:
    """Writes ``v`` as a little-endian u32 at byte ``at`` of a uint8 array."""
    for i in range(4):
        buf[at + i] = (v >> (8 * i)) & 0xFF


@njit(cache=True, nogil=True, inline="always")
def record_bytes(nbytes: int) -> int:
    """Bytes a record of ``nbytes`` payload occupies in the ring (header + payload padded to 8)."""
    return RECORD_HEADER_BYTES + ((nbytes + 7) & ~7)


@njit(cache=True, nogil=True, inline="always")
def max_payload_for(cap: int) -> int:
    """Largest payload a ring of ``cap`` accepts: half the ring, so an empty ring always takes one."""
    return cap // 2 - RECORD_HEADER_BYTES


@njit(cache=True, nogil=True, inline="always")
def _pos(x: int, cap: int) -> int:
    """Offset in the data area of position ``x``; 8-aligned even if a peer wrote a crooked index."""
    return x & (cap - 1) & -8


@njit(cache=True, nogil=True, inline="always")
def _outside(buf: Any, base: int, cap: int) -> bool:
    """True when (base, cap) does not describe a ring inside ``buf``: the kernel then does nothing."""
    return base < 0 or cap < 64 or base + RING_HEADER_BYTES + cap > buf.shape[0]


@njit(cache=True, nogil=True, inline="always")
def _outside_header(buf: Any, base: int) -> bool:
    return base < 0 or base + RING_HEADER_BYTES > buf.shape[0]


@njit(cache=True, nogil=True, inline="always")
def _copy(dst: Any, dst_off: int, src: Any, src_off: int, n: int) -> None:
    if n >= MEMCPY_MIN:
        memcpy(dst.ctypes.data + dst_off, src.ctypes.data + src_off, n)
    else:
        for i in range(n):
            dst[dst_off + i] = src[src_off + i]


# ---------------------------------------------------------------- producer


@njit(cache=True, nogil=True)
def ring_reserve(buf: Any, base: int, cap: int, nbytes: int) -> int:
    """Offset in ``buf`` of the header of a new ``nbytes`` record, or -1 when the ring is full."""
    if _outside(buf, base, cap) or nbytes < 0 or nbytes > max_payload_for(cap):
        return -1
    a = buf.ctypes.data + base
    need = record_bytes(nbytes)
    w = ld_i64(a + OFF_WTAIL)
    pos = _pos(w, cap)
    to_end = cap - pos
    total = need if to_end >= need else to_end + need
    head = ld_i64(a + OFF_CACHED_HEAD)
    if w + total - head > cap:
        head = ld_acq_i64(a + OFF_HEAD)
        st_i64(a + OFF_CACHED_HEAD, head)
        if w + total - head > cap:
            st_i64(a + OFF_N_FULL, ld_i64(a + OFF_N_FULL) + 1)
            return -1
    data = base + RING_HEADER_BYTES
    if to_end < need:
        st_u32(a + RING_HEADER_BYTES + pos, PAD_LEN)
        st_u32(a + RING_HEADER_BYTES + pos + 4, 0)
        st_i64(a + OFF_WTAIL, w + to_end)
        return data
    return data + pos


@njit(cache=True, nogil=True)
def ring_commit(buf: Any, base: int, cap: int, rtype: int, nbytes: int) -> None:
    """Completes the record reserved last (its payload written); visible after ``ring_publish``."""
    if _outside(buf, base, cap):
        return
    a = buf.ctypes.data + base
    w = ld_i64(a + OFF_WTAIL)
    h = a + RING_HEADER_BYTES + _pos(w, cap)
    st_u32(h, nbytes)
    st_u32(h + 4, rtype)
    st_i64(a + OFF_WTAIL, w + record_bytes(nbytes))
    st_i64(a + OFF_N_PUSHED, ld_i64(a + OFF_N_PUSHED) + 1)


@njit(cache=True, nogil=True)
def ring_publish(buf: Any, base: int) -> None:
    """Makes every committed record visible to the consumer (release store of the tail)."""
    if _outside_header(buf, base):
        return
    a = buf.ctypes.data + base
    st_rel_i64(a + OFF_TAIL, ld_i64(a + OFF_WTAIL))


@njit(cache=True, nogil=True)
def ring_mark(buf: Any, base: int) -> tuple[int, int]:
    """The producer's write position and record count, for ``ring_rollback``: records committed after
    the mark and not yet published can be taken back."""
    if _outside_header(buf, base):
        return -1, -1
    a = buf.ctypes.data + base
    return ld_i64(a + OFF_WTAIL), ld_i64(a + OFF_N_PUSHED)


@njit(cache=True, nogil=True)
def ring_rollback(buf: Any, base: int, wtail: int, pushed: int) -> None:
    """Drops every record committed since ``ring_mark`` returned (wtail, pushed): nothing of them was
    published, so the consumer never saw them (a wrap pad written meanwhile is dropped with them)."""
    if _outside_header(buf, base) or wtail < 0:
        return
    a = buf.ctypes.data + base
    if wtail < ld_i64(a + OFF_TAIL):
        return  # published since the mark: nothing can be taken back
    st_i64(a + OFF_WTAIL, wtail)
    st_i64(a + OFF_N_PUSHED, pushed)


@njit(cache=True, nogil=True)
def ring_write(buf: Any, base: int, cap: int, rtype: int, src: Any, src_off: int, nbytes: int) -> bool:
    """Copies one record in without publishing it; False when the ring is full."""
    if src_off < 0 or nbytes < 0 or src_off + nbytes > src.shape[0]:
        raise ValueError("ring_write: src_off/nbytes outside the source array")
    hdr = ring_reserve(buf, base, cap, nbytes)
    if hdr < 0:
        return False
    _copy(buf, hdr + RECORD_HEADER_BYTES, src, src_off, nbytes)
    ring_commit(buf, base, cap, rtype, nbytes)
    return True


@njit(cache=True, nogil=True)
def ring_push(buf: Any, base: int, cap: int, rtype: int, src: Any) -> bool:
    """Writes ``src`` (whole uint8 array) as one record and publishes it; False when the ring is full."""
    if not ring_write(buf, base, cap, rtype, src, 0, src.shape[0]):
        return False
    ring_publish(buf, base)
    return True


@njit(cache=True, nogil=True)
def ring_push_batch(buf: Any, base: int, cap: int, types: Any, src: Any, offs: Any, lens: Any, count: int) -> int:
    """Writes records ``i < count`` (type ``types[i]``, payload ``src[offs[i]:offs[i] + lens[i]]``) in order
    until one does not fit, then publishes them at once; returns how many went in."""
    n = 0
    while n < count:
        if not ring_write(buf, base, cap, types[n], src, offs[n], lens[n]):
            break
        n += 1
    if n > 0:
        ring_publish(buf, base)
    return n


@njit(cache=True, nogil=True)
def _futex_wake(addr: int) -> None:
    fetch_add_u32(addr, 1)  # a sleeper that has not reached FUTEX_WAIT yet sees the word changed
    c_syscall(SYS_FUTEX, addr, FUTEX_WAKE, 1, 0, 0, 0)


@njit(cache=True, nogil=True)
def _futex_wait(addr: int, seq: int, timeout_ns: int, ts: int) -> None:
    st_i64(ts, timeout_ns // 1_000_000_000)
    st_i64(ts + 8, timeout_ns % 1_000_000_000)
    c_syscall(SYS_FUTEX, addr, FUTEX_WAIT, seq, ts, 0, 0)  # returns at once if the word moved


@njit(cache=True, nogil=True)
def _take_flag(flag: int, seq: int) -> int:
    """Clears a waiting flag and returns what it held; a futex sleeper is woken here."""
    fence_sc()  # StoreLoad: the index store must be visible before the flag is read
    if ld_acq_u32(flag) == 0:
        return 0
    old = xchg_u32(flag, 0)
    if old == WAIT_FUTEX:
        _futex_wake(seq)
    return old


@njit(cache=True, nogil=True)
def ring_needs_wake(buf: Any, base: int) -> bool:
    """After a publish: True when the consumer sleeps on its doorbell (write it; the flag is cleared here,
    so one wake per sleep). A consumer asleep in ``ring_wait`` is woken here directly."""
    if _outside_header(buf, base):
        return False
    a = buf.ctypes.data + base
    old = _take_flag(a + OFF_CWAIT, a + OFF_CSEQ)
    if old == 0:
        return False
    st_i64(a + OFF_N_WAKES, ld_i64(a + OFF_N_WAKES) + 1)
    return old == WAIT_EVENTFD


@njit(cache=True, nogil=True)
def ring_notify(buf: Any, base: int, efd: int) -> bool:
    """``ring_needs_wake`` and, if so, adds 1 to the consumer's eventfd ``efd`` from here. True if it rang."""
    if not ring_needs_wake(buf, base):
        return False
    c_write(efd, buf.ctypes.data + base + OFF_ONE, 8)
    return True


@njit(cache=True, nogil=True)
def ring_notify_producer(buf: Any, base: int, efd: int) -> bool:
    """``ring_producer_needs_wake`` and, if so, adds 1 to the producer's eventfd ``efd``. True if it rang."""
    if not ring_producer_needs_wake(buf, base):
        return False
    c_write(efd, buf.ctypes.data + base + OFF_ONE, 8)
    return True


@njit(cache=True, nogil=True)
def _fits(a: int, cap: int, nbytes: int) -> bool:
    head = ld_acq_i64(a + OFF_HEAD)
    st_i64(a + OFF_CACHED_HEAD, head)
    w = ld_i64(a + OFF_WTAIL)
    pos = _pos(w, cap)
    need = record_bytes(min(max(nbytes, 0), max_payload_for(cap)))
    total = need if cap - pos >= need else cap - pos + need
    return w + total - head <= cap


@njit(cache=True, nogil=True)
def ring_arm_producer(buf: Any, base: int, cap: int, nbytes: int) -> bool:
    """Producer about to sleep on its doorbell (full ring): sets its flag; False (cleared) if ``nbytes`` fits now."""
    if _outside(buf, base, cap):
        return False
    a = buf.ctypes.data + base
    xchg_u32(a + OFF_PWAIT, WAIT_EVENTFD)
    fence_sc()
    if _fits(a, cap, nbytes):
        st_rel_u32(a + OFF_PWAIT, 0)
        return False
    return True


@njit(cache=True, nogil=True)
def ring_wait_space(buf: Any, base: int, cap: int, nbytes: int, timeout_ns: int) -> bool:
    """Producer sleeps on the ring's futex until ``nbytes`` fits or ``timeout_ns`` passes; True if it fits."""
    if _outside(buf, base, cap):
        return False
    a = buf.ctypes.data + base
    seq = ld_acq_u32(a + OFF_PSEQ)
    xchg_u32(a + OFF_PWAIT, WAIT_FUTEX)
    fence_sc()
    if not _fits(a, cap, nbytes):
        _futex_wait(a + OFF_PSEQ, seq, timeout_ns, a + OFF_PTS)
    st_rel_u32(a + OFF_PWAIT, 0)
    return _fits(a, cap, nbytes)


# ---------------------------------------------------------------- consumer


@njit(cache=True, nogil=True)
def ring_peek(buf: Any, base: int, cap: int) -> tuple[int, int, int]:
    """(header offset in buf, type, payload length) of the next record, skipping wrap pads.

    The offset is EMPTY when there is nothing to read, CORRUPT when the ring's contents are impossible.
    """
    if _outside(buf, base, cap):
        return CORRUPT, 0, 0
    a = buf.ctypes.data + base
    r = ld_i64(a + OFF_RHEAD)
    while True:
        t = ld_i64(a + OFF_CACHED_TAIL)
        if r == t:
            t = ld_acq_i64(a + OFF_TAIL)
            st_i64(a + OFF_CACHED_TAIL, t)
            if r == t:
                return EMPTY, 0, 0
        avail = t - r
        if avail < RECORD_HEADER_BYTES or avail > cap:
            return CORRUPT, 0, 0
        pos = _pos(r, cap)
        h = a + RING_HEADER_BYTES + pos
        n = ld_u32(h)
        if n == PAD_LEN:
            skip = cap - pos
            if skip > avail:
                return CORRUPT, 0, 0
            r += skip
            st_i64(a + OFF_RHEAD, r)
            continue
        need = record_bytes(n)
        if n > max_payload_for(cap) or need > avail or need > cap - pos:
            return CORRUPT, 0, 0
        return base + RING_HEADER_BYTES + pos, ld_u32(h + 4), n


@njit(cache=True, nogil=True)
def ring_publish_head(buf: Any, base: int) -> None:
    """Frees every record read so far (release store of the head)."""
    if _outside_header(buf, base):
        return
    a = buf.ctypes.data + base
    st_rel_i64(a + OFF_HEAD, ld_i64(a + OFF_RHEAD))


@njit(cache=True, nogil=True)
def _consume(a: int, nbytes: int) -> None:
    st_i64(a + OFF_RHEAD, ld_i64(a + OFF_RHEAD) + record_bytes(nbytes))
    st_i64(a + OFF_N_POPPED, ld_i64(a + OFF_N_POPPED) + 1)


@njit(cache=True, nogil=True)
def ring_consume(buf: Any, base: int, cap: int, nbytes: int) -> None:
    """Consumes the record ``ring_peek`` returned (payload length ``nbytes``) without publishing the head
    (``ring_publish_head`` frees a batch at once)."""
    if _outside(buf, base, cap):
        return
    _consume(buf.ctypes.data + base, nbytes)


@njit(cache=True, nogil=True)
def ring_release(buf: Any, base: int, cap: int, nbytes: int) -> None:
    """Consumes the record ``ring_peek`` returned (payload length ``nbytes``) and publishes the head."""
    if _outside(buf, base, cap):
        return
    a = buf.ctypes.data + base
    _consume(a, nbytes)
    st_rel_i64(a + OFF_HEAD, ld_i64(a + OFF_RHEAD))


@njit(cache=True, nogil=True)
def ring_read(buf: Any, base: int, cap: int, dst: Any, dst_off: int) -> tuple[int, int]:
    """Copies the next record's payload to ``dst[dst_off:]``: (length or EMPTY/CORRUPT/NO_ROOM, type).

    The head is not published (call ``ring_publish_head`` after a batch).
    """
    hdr, rtype, n = ring_peek(buf, base, cap)
    if hdr < 0:
        return hdr, 0
    if dst_off < 0 or n > dst.shape[0] - dst_off:
        return NO_ROOM, rtype
    _copy(dst, dst_off, buf, hdr + RECORD_HEADER_BYTES, n)
    _consume(buf.ctypes.data + base, n)
    return n, rtype


@njit(cache=True, nogil=True)
def ring_pop_into(buf: Any, base: int, cap: int, dst: Any, dst_off: int) -> tuple[int, int]:
    """``ring_read`` then ``ring_publish_head``."""
    n, rtype = ring_read(buf, base, cap, dst, dst_off)
    if n >= 0:
        ring_publish_head(buf, base)
    return n, rtype


@njit(cache=True, nogil=True)
def ring_scan(buf: Any, base: int, cap: int, out: Any) -> int:
    """Consumes up to ``out.shape[0]`` records without publishing the head; ``out[i] = (hdr, type, length)``.

    Returns the count, or CORRUPT if the very first record is bad (a later bad record ends the batch
    early and is reported by the next call). The payloads stay valid until ``ring_publish_head``.
    """
    a = buf.ctypes.data + base
    k = 0
    while k < out.shape[0]:
        hdr, rtype, n = ring_peek(buf, base, cap)
        if hdr < 0:
            if hdr == CORRUPT and k == 0:
                return CORRUPT
            break
        out[k, 0] = hdr
        out[k, 1] = rtype
        out[k, 2] = n
        _consume(a, n)
        k += 1
    return k


@njit(cache=True, nogil=True)
def ring_arm(buf: Any, base: int) -> bool:
    """Consumer about to sleep on its doorbell: sets the waiting flag; False (cleared) if a record is there."""
    if _outside_header(buf, base):
        return False
    a = buf.ctypes.data + base
    xchg_u32(a + OFF_CWAIT, WAIT_EVENTFD)
    fence_sc()
    if ld_acq_i64(a + OFF_TAIL) != ld_i64(a + OFF_RHEAD):
        st_rel_u32(a + OFF_CWAIT, 0)
        return False
    return True


@njit(cache=True, nogil=True)
def ring_disarm(buf: Any, base: int) -> None:
    """Clears the consumer's waiting flag (after a wake that came from another ring)."""
    if not _outside_header(buf, base):
        st_rel_u32(buf.ctypes.data + base + OFF_CWAIT, 0)


@njit(cache=True, nogil=True)
def rings_ready(buf: Any, bases: Any) -> int:
    """Consumer of several rings of one buffer: bit ``i`` set when the ring at ``bases[i]`` has a record to
    read (two plain loads each, as ``Ring.empty``: a record published meanwhile is seen by the next call or
    by ``rings_arm``). At most 63 rings."""
    mask = 0
    for i in range(min(bases.shape[0], 63)):
        base = int(bases[i])
        if _outside_header(buf, base):
            continue
        a = buf.ctypes.data + base
        if ld_acq_i64(a + OFF_TAIL) != ld_i64(a + OFF_RHEAD):
            mask |= 1 << i
    return mask


@njit(cache=True, nogil=True)
def rings_arm(buf: Any, bases: Any, count: int) -> bool:
    """``ring_arm`` for the rings at ``bases[:count]``, all or none: False (every flag cleared again) when
    one of them has a record."""
    for i in range(min(count, bases.shape[0])):
        if not ring_arm(buf, int(bases[i])):
            for j in range(i):
                ring_disarm(buf, int(bases[j]))
            return False
    return True


@njit(cache=True, nogil=True)
def rings_disarm(buf: Any, bases: Any) -> int:
    """``ring_disarm`` for every ring at ``bases``; returns what ``rings_ready`` would return right after
    (the consumer woke to read: it needs both, one kernel call)."""
    for i in range(bases.shape[0]):
        ring_disarm(buf, int(bases[i]))
    return rings_ready(buf, bases)


@njit(cache=True, nogil=True)
def ring_wait(buf: Any, base: int, timeout_ns: int) -> bool:
    """Consumer of this ring alone sleeps on its futex word (GIL released) until a publish or the timeout.

    No fd needed; returns True when a record is there. A producer's ``ring_needs_wake``/``ring_notify``
    wakes it without any eventfd.
    """
    if _outside_header(buf, base):
        return False
    a = buf.ctypes.data + base
    seq = ld_acq_u32(a + OFF_CSEQ)
    xchg_u32(a + OFF_CWAIT, WAIT_FUTEX)
    fence_sc()
    if ld_acq_i64(a + OFF_TAIL) == ld_i64(a + OFF_RHEAD):
        _futex_wait(a + OFF_CSEQ, seq, timeout_ns, a + OFF_CTS)
    st_rel_u32(a + OFF_CWAIT, 0)
    return ld_acq_i64(a + OFF_TAIL) != ld_i64(a + OFF_RHEAD)


@njit(cache=True, nogil=True)
def ring_producer_needs_wake(buf: Any, base: int) -> bool:
    """After publishing the head: True when the producer sleeps on its doorbell (write it). A producer
    asleep in ``ring_wait_space`` is woken here directly."""
    if _outside_header(buf, base):
        return False
    a = buf.ctypes.data + base
    return _take_flag(a + OFF_PWAIT, a + OFF_PSEQ) == WAIT_EVENTFD


@njit(cache=True, nogil=True)
def ring_used(buf: Any, base: int) -> int:
    """Published bytes not yet freed by the consumer (as seen now; a snapshot)."""
    if _outside_header(buf, base):
        return 0
    a = buf.ctypes.data + base
    return ld_acq_i64(a + OFF_TAIL) - ld_acq_i64(a + OFF_HEAD)


def warm() -> None:
    """Compiles every entry point for the argument types the Python wrapper and tests use."""
    cap = 1024
    buf = np.zeros(RING_HEADER_BYTES + cap, np.uint8)
    src_rw = np.arange(300, dtype=np.uint8)
    src_ro = np.frombuffer(bytes(300), np.uint8)
    dst = np.zeros(512, np.uint8)
    out = np.zeros((4, 3), np.int64)
    for src in (src_rw, src_ro):
        ring_push(buf, 0, cap, 1, src)
        ring_write(buf, 0, cap, 1, src, 0, 10)
    ring_publish(buf, 0)
    for src in (src_rw, src_ro):
        ring_push_batch(buf, 0, cap, np.ones(2, np.int64), src, np.zeros(2, np.int64), np.full(2, 4, np.int64), 2)
    ring_needs_wake(buf, 0)
    _hdr, _, n = ring_peek(buf, 0, cap)
    ring_release(buf, 0, cap, n)
    ring_read(buf, 0, cap, dst, 0)
    ring_pop_into(buf, 0, cap, dst, 0)
    ring_scan(buf, 0, cap, out)
    ring_publish_head(buf, 0)
    ring_arm(buf, 0)
    ring_disarm(buf, 0)
    bases = np.zeros(2, np.int64)
    rings_ready(buf, bases)
    rings_arm(buf, bases, 2)
    rings_disarm(buf, bases)
    ring_producer_needs_wake(buf, 0)
    ring_notify(buf, 0, -1)
    ring_notify_producer(buf, 0, -1)
    ring_arm_producer(buf, 0, cap, 8)
    ring_wait(buf, 0, 1000)
    ring_wait_space(buf, 0, cap, 8, 1000)
    ring_used(buf, 0)
    other = np.zeros(RING_HEADER_BYTES + cap, np.uint8)
    ring_push(other, 0, cap, 1, src_rw)
    ring_consume(other, 0, cap, ring_peek(other, 0, cap)[2])
    if ring_reserve(buf, 0, cap, 4) >= 0:
        ring_commit(buf, 0, cap, 2, 4)
    w, pushed = ring_mark(buf, 0)
    ring_rollback(buf, 0, w, pushed)
