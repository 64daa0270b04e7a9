"""The ring's byte layout (ipc/layout.md §2) and its errors, without numba.

``ring_kernels`` (the compiled hot path) and ``pyring`` (the plain-Python view that short-lived
clients use) both take their offsets and constants from here, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycorosync.ipc.segment import LayoutError

RING_MAGIC = 0x52534350  # "PCSR" little-endian
RING_VERSION = 2
RING_HEADER_BYTES = 4096
RECORD_HEADER_BYTES = 8
PAD_LEN = 0xFFFFFFFF

# header fields (byte offsets from the ring base). Each index the other side reads (head, tail, the
# waiting flags) has a 128-byte block to itself (the adjacent-line prefetcher moves 64-byte lines in
# pairs), so per-record writes to a side's private fields never pull the line the other side polls.
OFF_MAGIC = 0  # u32
OFF_VERSION = 4  # u32
OFF_CAPACITY = 8  # i64, informational once attached
OFF_MAX_PAYLOAD = 16  # i64
OFF_HEAD = 128  # i64 published read position (consumer-owned, release store)
OFF_TAIL = 256  # i64 published write position (producer-owned, release store)
OFF_CWAIT = 384  # u32 consumer is (about to be) asleep: 0 no, WAIT_EVENTFD, WAIT_FUTEX
OFF_CSEQ = 388  # u32 futex word of a consumer asleep in ring_wait
OFF_PWAIT = 512  # u32 producer is (about to be) asleep on a full ring: 0, WAIT_EVENTFD, WAIT_FUTEX
OFF_PSEQ = 516  # u32 futex word of a producer asleep in ring_wait_space
# consumer-private block
OFF_RHEAD = 640  # i64 read position, may run ahead of HEAD inside a batch
OFF_CACHED_TAIL = 648  # i64 last tail seen
OFF_N_POPPED = 656  # i64 records consumed
OFF_CTS = 664  # 2 x i64 timespec of the consumer's futex wait
# producer-private block
OFF_WTAIL = 768  # i64 write position, may run ahead of TAIL inside a batch
OFF_CACHED_HEAD = 776  # i64 last head seen
OFF_N_PUSHED = 784  # i64 records written
OFF_N_FULL = 792  # i64 reservations refused for lack of space (back-pressure events)
OFF_N_WAKES = 800  # i64 doorbell writes the producer was told to make
OFF_ONE = 808  # u64 constant 1: the 8 bytes ring_notify writes to an eventfd
OFF_PTS = 816  # 2 x i64 timespec of the producer's futex wait

WAIT_EVENTFD = 1  # the sleeper waits on its doorbell: the waker must write the eventfd
WAIT_FUTEX = 2  # the sleeper waits on the ring's futex word: the waker bumps it and calls FUTEX_WAKE
SYS_FUTEX = 202  # x86-64
FUTEX_WAIT = 0  # not FUTEX_PRIVATE_FLAG: the word is in a shared mapping
FUTEX_WAKE = 1

EMPTY = -1
CORRUPT = -2
NO_ROOM = -3  # destination buffer too small for the next record (nothing consumed)


class RingLayoutError(LayoutError):
    """The buffer does not hold a ring this build can use (magic, version, capacity or size)."""


class RecordTooLargeError(ValueError):
    """A record is larger than the ring's maximum payload (half its capacity minus 8 bytes)."""


class RingCorruptError(RuntimeError):
    """The consumer found a record that cannot be valid: the other side wrote outside the protocol."""


@dataclass(frozen=True)
class RingCounters:
    """Totals kept in the ring header: records written and read, refused reservations, wakes asked."""

    pushed: int
    popped: int
    full: int
    wakes: int


def max_payload_for(cap: int) -> int:
    """Largest payload a ring of ``cap`` accepts: half the ring, so an empty ring always takes one."""
    return cap // 2 - RECORD_HEADER_BYTES


def record_bytes(nbytes: int) -> int:
    """Bytes a record of ``nbytes`` payload occupies in the ring (header + payload padded to 8)."""
    return RECORD_HEADER_BYTES + ((nbytes + 7) & ~7)
