"""numba kernels for the UDP data path: sendmmsg with UDP GSO, recvmmsg with UDP GRO, segment splitting.

libc is reached through ``types.ExternalFunction`` (resolved by name, so the kernels are cacheable).
``struct mmsghdr`` is a row of 8 u64 (x86-64/aarch64 layout): name, namelen, iov, iovlen, control,
controllen, flags, msg_len. The numpy arrays behind every pointer are owned by :class:`TxBatch` /
:class:`RxBatch` and live as long as the transport.

GSO: consecutive frames to one destination with one size (the last of a group may be shorter) go out
as one ``sendmmsg`` entry carrying a ``UDP_SEGMENT`` cmsg; the kernel cuts them into datagrams.
GRO: one received entry may hold several datagrams of ``gso_size`` bytes (the last may be shorter),
announced by a ``UDP_GRO`` cmsg; :func:`split_segments` cuts them apart again.

Every kernel has a plain-Python reference below it (``*_reference``) that the tests compare it with.
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np
from numba import njit, types

if numba.config.DISABLE_JIT:  # the kernels run as plain Python (slowly) over ctypes: same calls, same results
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    _libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    def c_sendmmsg(*args: int) -> int:
        return int(_libc.sendmmsg(*(int(a) for a in args)))

    def c_recvmmsg(*args: int) -> int:
        return int(_libc.recvmmsg(*(int(a) for a in args)))

    def c_errno() -> list[int]:
        return [ctypes.get_errno()]

else:
    c_sendmmsg = types.ExternalFunction(
        "sendmmsg", types.int32(types.int32, types.intp, types.uint32, types.int32)
    )
    c_recvmmsg = types.ExternalFunction(
        "recvmmsg", types.int32(types.int32, types.intp, types.uint32, types.int32, types.intp)
    )
    c_errno = types.ExternalFunction("__errno_location", types.CPointer(types.intc)())

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MSG_DONTWAIT = 0x40
EAGAIN = 11
EIO = 5
EINVAL = 22
EINTR = 4
ENOBUFS = 105

# one GSO call carries at most this many segments and bytes (kernel limits: UDP_MAX_SEGMENTS, IP length)
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
RX_SLOT_BYTES = 65536  # a GRO entry can hold up to 64 KiB
CTRL_WORDS = 4  # 32 bytes of control per entry: cmsghdr (16) + a u16/int payload, padded

# counters the kernels add to (indices into the transport's local counter array)
C_TX_PACKETS = 0
C_TX_BYTES = 1
C_TX_BATCHES = 2
C_TX_GSO_SEGMENTS = 3
C_SOCKET_ERRORS = 4
C_RX_PACKETS = 5
C_RX_BYTES = 6
C_RX_BATCHES = 7
C_RX_GRO_SEGMENTS = 8
N_KERNEL_COUNTERS = 9


@njit(cache=True, nogil=True)
def _flush(fd: int, hdrs: np.ndarray, k: int, ctr: np.ndarray, gso_failed: np.ndarray) -> int:
    """sendmmsg of entries 0..k-1; an entry the kernel refuses is counted and skipped. Returns entries sent.

    A GSO entry refused with EIO/EINVAL (a device or path that cannot segment, found only at send time) is
    sent again one datagram per segment, and ``gso_failed[0]`` is set so that the caller stops using GSO.
    """
    off = 0
    sent = 0
    retries = 0
    while off < k:
        r = c_sendmmsg(fd, hdrs.ctypes.data + off * 64, k - off, 0)
        ctr[C_TX_BATCHES] += 1
        if r < 0:
            e = c_errno()[0]
            if (e == EAGAIN or e == ENOBUFS or e == EINTR) and retries < 64:  # noqa: SIM109 (numba)
                retries += 1
                continue
            retries = 0
            if hdrs[off, 4] != np.uint64(0) and (e == EIO or e == EINVAL):  # noqa: SIM109 (numba)
                gso_failed[0] = 1
                one = np.zeros((1, 8), np.uint64)
                one[0, 0] = hdrs[off, 0]
                one[0, 1] = hdrs[off, 1]
                one[0, 3] = np.uint64(1)
                for j in range(np.int64(hdrs[off, 3])):
                    one[0, 2] = hdrs[off, 2] + np.uint64(16 * j)
                    if c_sendmmsg(fd, one.ctypes.data, 1, 0) < 0:
                        ctr[C_SOCKET_ERRORS] += 1
                off += 1
                sent += 1
                continue
            ctr[C_SOCKET_ERRORS] += 1
            off += 1  # EMSGSIZE, unreachable...: give up on this entry (Totem retransmits), keep the rest
            continue
        off += r
        sent += r
    return sent


@njit(cache=True, nogil=True)
def send_frames(
    fd: int,
    stage: np.ndarray,
    lens: np.ndarray,
    dests: np.ndarray,
    n: int,
    names: np.ndarray,
    namelens: np.ndarray,
    self_idx: int,
    mcast_idx: int,
    hdrs: np.ndarray,
    iov: np.ndarray,
    ctrl: np.ndarray,
    max_segs: int,
    ctr: np.ndarray,
    link_tx: np.ndarray,
    gso_failed: np.ndarray,
) -> int:
    """Sends ``n`` datagrams ``stage[i, :lens[i]]`` to peer ``dests[i]`` (-1 = every peer / the group).

    ``names[p]`` is peer p's sockaddr (``namelens[p]`` bytes); ``mcast_idx`` >= 0 selects the multicast
    group's entry for dest -1, else dest -1 is repeated to every peer but ``self_idx``. ``max_segs`` <= 1
    disables GSO. ``link_tx[p] = (packets, bytes)`` per peer; ``gso_failed[0]`` is set when the kernel refused
    GSO at send time (see ``_flush``). Returns the number of datagrams sent.
    """
    slot = stage.shape[1]
    base = stage.ctypes.data
    for i in range(n):
        iov[i, 0] = np.uint64(base + i * slot)
        iov[i, 1] = np.uint64(lens[i])
    npeers = names.shape[0]
    cap = hdrs.shape[0]
    k = 0
    datagrams = 0
    i = 0
    while i < n:
        d = dests[i]
        size = lens[i]
        j = i + 1
        total = size
        if max_segs > 1:
            while j < n and j - i < max_segs and dests[j] == d and lens[j] <= size:
                if total + lens[j] > GSO_MAX_BYTES:
                    break
                total += lens[j]
                j += 1
                if lens[j - 1] < size:
                    break  # a shorter segment ends a GSO group
        segs = j - i
        p = d
        last = d
        if d < 0:
            if mcast_idx >= 0:
                p = mcast_idx
                last = mcast_idx
            else:
                p = 0
                last = npeers - 1
        while p <= last:
            if d < 0 and mcast_idx < 0 and p == self_idx:
                p += 1
                continue
            if k == cap:
                _flush(fd, hdrs, k, ctr, gso_failed)
                k = 0
            hdrs[k, 0] = np.uint64(names.ctypes.data + p * names.shape[1])
            hdrs[k, 1] = np.uint64(namelens[p])
            hdrs[k, 2] = np.uint64(iov.ctypes.data + i * 16)
            hdrs[k, 3] = np.uint64(segs)
            if segs > 1:
                ctrl[k, 0] = np.uint64(18)  # CMSG_LEN(sizeof(u16))
                ctrl[k, 1] = np.uint64(SOL_UDP) | (np.uint64(UDP_SEGMENT) << np.uint64(32))
                ctrl[k, 2] = np.uint64(size)
                hdrs[k, 4] = np.uint64(ctrl.ctypes.data + k * CTRL_WORDS * 8)
                hdrs[k, 5] = np.uint64(24)  # CMSG_SPACE(sizeof(u16))
                ctr[C_TX_GSO_SEGMENTS] += segs
            else:
                hdrs[k, 4] = np.uint64(0)
                hdrs[k, 5] = np.uint64(0)
            hdrs[k, 6] = np.uint64(0)
            hdrs[k, 7] = np.uint64(0)
            k += 1
            datagrams += segs
            ctr[C_TX_PACKETS] += segs
            ctr[C_TX_BYTES] += total
            if p < link_tx.shape[0]:
                link_tx[p, 0] += segs
                link_tx[p, 1] += total
            p += 1
        i = j
    if k > 0:
        _flush(fd, hdrs, k, ctr, gso_failed)
    return datagrams


def gso_groups_reference(lens: list[int], dests: list[int], max_segs: int) -> list[tuple[int, int]]:
    """Reference of send_frames' grouping: (start, count) of each GSO group, in order."""
    groups = []
    i = 0
    n = len(lens)
    while i < n:
        j, total = i + 1, lens[i]
        while max_segs > 1 and j < n and j - i < max_segs and dests[j] == dests[i] and lens[j] <= lens[i]:
            if total + lens[j] > GSO_MAX_BYTES:
                break
            total += lens[j]
            j += 1
            if lens[j - 1] < lens[i]:
                break
        groups.append((i, j - i))
        i = j
    return groups


@njit(cache=True, nogil=True)
def recv_batch(fd: int, hdrs: np.ndarray, iov: np.ndarray, ctrl: np.ndarray, ctr: np.ndarray) -> int:
    """One non-blocking recvmmsg into the rx slots; returns entries received (0 if none), or -errno."""
    m = hdrs.shape[0]
    for i in range(m):
        hdrs[i, 5] = np.uint64(CTRL_WORDS * 8)  # the kernel shrinks controllen to what it wrote
        hdrs[i, 6] = np.uint64(0)
        hdrs[i, 7] = np.uint64(0)
        iov[i, 1] = np.uint64(RX_SLOT_BYTES)
    r = c_recvmmsg(fd, hdrs.ctypes.data, m, MSG_DONTWAIT, 0)
    if r < 0:
        e = c_errno()[0]
        if e == EAGAIN or e == EINTR:  # noqa: SIM109 (numba)
            return 0
        ctr[C_SOCKET_ERRORS] += 1
        return -e
    ctr[C_RX_BATCHES] += 1
    return r


@njit(cache=True, nogil=True)
def split_segments(
    hdrs: np.ndarray, ctrl: np.ndarray, m: int, slot: int, seg_off: np.ndarray, seg_len: np.ndarray, ctr: np.ndarray
) -> int:
    """Cuts the ``m`` received entries into datagrams: (offset in the rx stage, length). Returns the count."""
    ns = 0
    for i in range(m):
        total = np.int64(hdrs[i, 7] & np.uint64(0xFFFFFFFF))
        gso = total
        has_ctrl = hdrs[i, 5] >= np.uint64(20)
        if has_ctrl and (ctrl[i, 1] & np.uint64(0xFFFFFFFF)) == SOL_UDP and (ctrl[i, 1] >> np.uint64(32)) == UDP_GRO:
            gso = np.int64(ctrl[i, 2] & np.uint64(0xFFFFFFFF))
            if gso <= 0:
                gso = total
        if total == 0:
            gso = 1  # an empty datagram is still one (too short) datagram
        off = 0
        segs = 0
        while off < total or (total == 0 and segs == 0):
            if ns == seg_off.shape[0]:
                return ns
            ln = min(gso, total - off)
            seg_off[ns] = i * slot + off
            seg_len[ns] = ln
            ns += 1
            segs += 1
            off += gso
        ctr[C_RX_PACKETS] += segs
        ctr[C_RX_BYTES] += total
        if segs > 1:
            ctr[C_RX_GRO_SEGMENTS] += segs
    return ns


def split_reference(entries: list[tuple[int, int]], slot: int) -> list[tuple[int, int]]:
    """Reference of split_segments: entries are (total length, gso size or 0) in receive order."""
    out = []
    for i, (total, gso) in enumerate(entries):
        step = gso if gso > 0 else total
        if total == 0:
            out.append((i * slot, 0))
            continue
        out.extend((i * slot + off, min(step, total - off)) for off in range(0, total, step))
    return out


class TxBatch:
    """The send side's staging slots and the mmsghdr/iovec/cmsg arrays behind them."""

    def __init__(self, frames: int, slot_bytes: int, names: np.ndarray, namelens: np.ndarray) -> None:
        self.frames = frames
        self.slot_bytes = (slot_bytes + 7) & ~7
        self.stage = np.zeros((frames, self.slot_bytes), dtype=np.uint8)
        self.lens = np.zeros(frames, dtype=np.int64)
        self.dests = np.zeros(frames, dtype=np.int64)
        entries = frames * max(1, names.shape[0])
        self.hdrs = np.zeros((min(entries, 1024), 8), dtype=np.uint64)
        self.iov = np.zeros((frames, 2), dtype=np.uint64)
        self.ctrl = np.zeros((self.hdrs.shape[0], CTRL_WORDS), dtype=np.uint64)
        self.names = names
        self.namelens = namelens


class RxBatch:
    """The receive side's slots (64 KiB each, room for a GRO train) and the arrays recvmmsg fills."""

    def __init__(self, entries: int, max_segments: int) -> None:
        self.stage = np.zeros((entries, RX_SLOT_BYTES), dtype=np.uint8)
        self.flat = self.stage.reshape(-1)
        self.hdrs = np.zeros((entries, 8), dtype=np.uint64)
        self.iov = np.zeros((entries, 2), dtype=np.uint64)
        self.ctrl = np.zeros((entries, CTRL_WORDS), dtype=np.uint64)
        base = self.stage.ctypes.data
        for i in range(entries):
            self.iov[i, 0] = base + i * RX_SLOT_BYTES
            self.iov[i, 1] = RX_SLOT_BYTES
            self.hdrs[i, 2] = self.iov.ctypes.data + i * 16
            self.hdrs[i, 3] = 1
            self.hdrs[i, 4] = self.ctrl.ctypes.data + i * CTRL_WORDS * 8
        self.seg_off = np.zeros(max_segments, dtype=np.int64)
        self.seg_len = np.zeros(max_segments, dtype=np.int64)


def warm() -> None:
    """Compiles every kernel of this module: one datagram to ourselves and back on loopback."""
    import socket

    from pycorosync.transports.udp.addresses import sockaddr_bytes

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        name = sockaddr_bytes(rx.getsockname())
        names = np.zeros((1, 28), dtype=np.uint8)
        names[0, : len(name)] = np.frombuffer(name, dtype=np.uint8)
        namelens = np.array([len(name)], dtype=np.int64)
        ctr = np.zeros(N_KERNEL_COUNTERS, dtype=np.int64)
        tb = TxBatch(2, 64, names, namelens)
        tb.lens[:2] = 8
        tb.dests[:2] = 0
        send_frames(tx.fileno(), tb.stage, tb.lens, tb.dests, 2, names, namelens, -1, -1, tb.hdrs, tb.iov,
                    tb.ctrl, 1, ctr, np.zeros((1, 2), dtype=np.int64), np.zeros(1, dtype=np.int64))
        rb = RxBatch(2, 8)
        m = recv_batch(rx.fileno(), rb.hdrs, rb.iov, rb.ctrl, ctr)
        split_segments(rb.hdrs, rb.ctrl, max(m, 0), RX_SLOT_BYTES, rb.seg_off, rb.seg_len, ctr)
    finally:
        rx.close()
        tx.close()
