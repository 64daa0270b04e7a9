"""Per-sender receive state: node id lookup, incarnation (boot id) and the 1024-frame replay window.

The state is a few numpy arrays indexed by the peer's position in the sorted nodelist, so the UDP
receive kernel (numba) and the Python crypto path share it. A counter is *checked* before a frame is
authenticated and *marked* only after, so a forged frame can never advance a window.

Window: ``top`` is the highest counter accepted from the sender's current incarnation; bit ``c % 1024``
of ``bits`` says whether counter ``c`` (top-1023 <= c <= top) was seen (RFC 6479's ring bitmap).
"""

from __future__ import annotations

import numpy as np
from numba import njit

WINDOW = 1024
WORDS = WINDOW // 64

FRESH = 0  # a counter not seen yet, current incarnation
NEW_INCARNATION = 1  # the sender restarted: a higher boot id
REPLAY = -1  # seen, too old, or an older incarnation


class PeerState:
    """Receive state of every nodelist member (arrays shared with the numba kernels)."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = np.array(sorted(set(node_ids)), dtype=np.int64)
        n = len(self.node_ids)
        self.boot = np.zeros(n, dtype=np.int64)
        self.top = np.zeros(n, dtype=np.int64)
        self.bits = np.zeros((n, WORDS), dtype=np.uint64)

    def index(self, node_id: int) -> int:
        """Position of ``node_id`` in the nodelist, -1 if it is not listed."""
        return int(peer_index(self.node_ids, node_id))

    def verdict(self, i: int, boot_id: int, counter: int) -> int:
        return int(replay_verdict(self.boot, self.top, self.bits, i, boot_id, counter))

    def mark(self, i: int, boot_id: int, counter: int) -> None:
        replay_mark(self.boot, self.top, self.bits, i, boot_id, counter)


@njit(cache=True, nogil=True)
def peer_index(node_ids: np.ndarray, node_id: int) -> int:
    """Binary search in the sorted node id array; -1 if absent."""
    lo = 0
    hi = node_ids.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        v = node_ids[mid]
        if v == node_id:
            return mid
        if v < node_id:
            lo = mid + 1
        else:
            hi = mid
    return -1


@njit(cache=True, nogil=True)
def replay_verdict(boot: np.ndarray, top: np.ndarray, bits: np.ndarray, i: int, boot_id: int, counter: int) -> int:
    """FRESH, NEW_INCARNATION or REPLAY for frame (boot_id, counter) of peer ``i``; changes nothing."""
    if counter <= 0 or boot_id <= 0:
        return REPLAY
    if boot_id > boot[i]:
        return NEW_INCARNATION
    if boot_id < boot[i]:
        return REPLAY
    t = top[i]
    if counter > t:
        return FRESH
    if counter <= t - WINDOW:
        return REPLAY
    pos = counter % WINDOW
    if (bits[i, pos // 64] >> np.uint64(pos % 64)) & np.uint64(1):
        return REPLAY
    return FRESH


@njit(cache=True, nogil=True)
def replay_mark(boot: np.ndarray, top: np.ndarray, bits: np.ndarray, i: int, boot_id: int, counter: int) -> None:
    """Records an authenticated frame; a higher boot id starts a fresh window."""
    if boot_id > boot[i]:
        boot[i] = boot_id
        top[i] = 0
        for w in range(WORDS):
            bits[i, w] = np.uint64(0)
    t = top[i]
    if counter > t:
        if counter - t >= WINDOW:
            for w in range(WORDS):
                bits[i, w] = np.uint64(0)
        else:
            c = t + 1
            while c < counter:
                pos = c % WINDOW
                bits[i, pos // 64] &= ~(np.uint64(1) << np.uint64(pos % 64))
                c += 1
        top[i] = counter
    pos = counter % WINDOW
    bits[i, pos // 64] |= np.uint64(1) << np.uint64(pos % 64)


class ReferenceReplayWindow:
    """Plain-Python specification of the window, for tests: a set of seen counters per incarnation."""

    def __init__(self) -> None:
        self.boot = 0
        self.top = 0
        self.seen: set[int] = set()

    def verdict(self, boot_id: int, counter: int) -> int:
        if counter <= 0 or boot_id <= 0:
            return REPLAY
        if boot_id > self.boot:
            return NEW_INCARNATION
        if boot_id < self.boot:
            return REPLAY
        if counter > self.top:
            return FRESH
        if counter <= self.top - WINDOW or counter in self.seen:
            return REPLAY
        return FRESH

    def mark(self, boot_id: int, counter: int) -> None:
        if boot_id > self.boot:
            self.boot, self.top, self.seen = boot_id, 0, set()
        self.top = max(self.top, counter)
        self.seen.add(counter)
        self.seen = {c for c in self.seen if c > self.top - WINDOW}


def warm() -> None:
    """Compiles every kernel of this module into the cache."""
    st = PeerState([1, 2])
    i = st.index(2)
    st.verdict(i, 5, 1)
    st.mark(i, 5, 1)
