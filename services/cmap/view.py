"""A read-only copy of icmap in shared memory, so that a client's ``get`` needs no round trip.

The cmap service keeps every icmap key in one memfd (``IcmapViewWriter``), updated in the same call
that changes icmap, before the change is acknowledged to anyone. A client asks for it once after
connecting (``MSG_VIEW``): the service sends a descriptor opened O_RDONLY on that memfd over the
connection's own socket, so only admitted clients get it, and none can write it (a shared writable
mapping of a read-only descriptor is refused by the kernel). ``IcmapViewReader.lookup`` then answers
a get locally; whenever it cannot be sure (a write in progress, a value too large to mirror, a view
that could not hold every key, a service that stopped or stopped beating) it says so, and the client
asks the service as before. So a set acknowledged to a client is visible to its next get, and track
notifications are untouched (they never looked at this copy).

Layout (little endian):

    header (64 B)  u64 magic | u32 layout version | u32 nslots | u64 seq | u32 state | u32 heap_offset
                   | u32 heap_size | u32 heap_used | u32 live | u32 tombstones | u64 heartbeat_ns
                   | u32 server pid | u32 pad
    slots          nslots x (u32 crc32 of the key | u32 entry offset; 0 empty, 1 deleted)
    heap           entries: u8 type | u8 flags | u16 key_len | u32 value_len | key | value, padded to 8

``seq`` is a seqlock: odd while the service writes. A reader reads it, looks up, reads it again, and
trusts what it read only if both are equal and even; any impossible offset or length read meanwhile
is treated as "changed under me". Stores and loads go in program order here because x86-64 keeps
them in order (TSO) and no compiler reorders across the mmap accesses' C calls; a weakly ordered CPU
would need fences on both sides. ``heartbeat_ns`` (CLOCK_MONOTONIC) is refreshed by the service's
loop: a reader stops trusting a view whose service has not beaten for ``LEASE_NS`` (a crashed service
cannot mark its view closed), which bounds how long a client may read the last values of a crashed
service before it gets CS_ERR_LIBRARY from the round trip.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable

from pycorosync.engine.config.types import ValueType
from pycorosync.services.cmap import protocol as p
from pycorosync.services.cmap.engine import Entry

MAGIC = int.from_bytes(b"PCSCMAPV", "little")
LAYOUT_VERSION = 1
HEADER_BYTES = 64
DEFAULT_SLOTS = 1 << 16
DEFAULT_HEAP_BYTES = 16 << 20  # a memfd: only the pages written are ever allocated
# larger values are marked, not copied: the client fetches them with a round trip
MAX_MIRRORED_VALUE = 4096
LEASE_NS = 3_000_000_000
#: the node's cmap beats from its loop's 1 s tick (an idle process should wake as rarely as it can);
#: a lease of three beats tolerates a late tick
HEARTBEAT_INTERVAL_NS = 1_000_000_000

STATE_BUILDING, STATE_LIVE, STATE_INCOMPLETE, STATE_CLOSED = 0, 1, 2, 3
SLOT_EMPTY, SLOT_DELETED = 0, 1
FLAG_NOT_MIRRORED = 1

_HEADER = struct.Struct("<QIIQIIIIIIQII")
_SEQ_OFF = 16
_STATE_OFF = 24
_HEAP_USED_OFF = 36
_HEARTBEAT_OFF = 48
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_SEQ_STATE = struct.Struct("<QI")
_SLOT = struct.Struct("<II")
_ENTRY_HEAD = struct.Struct("<BBHI")
# lookup outcomes besides an Entry
ABSENT = None
ASK_SERVICE = object()  # the view cannot answer: do the round trip
_READ_TRIES = 16


def _decoders() -> dict[int, tuple[ValueType, struct.Struct | None]]:
    return {int(vt): (vt, p.NUMERIC_FORMATS.get(vt)) for vt in ValueType}


_DECODE = _decoders()  # type id -> (ValueType, its struct or None): no enum call per get


def _crc(key_bytes: bytes) -> int:
    return zlib.crc32(key_bytes)


_PADDING = tuple(bytes((8 - n) & 7) for n in range(8))  # by length mod 8: what pads a record to 8


class IcmapViewWriter:
    """The service's side: owns the memfd and mirrors every icmap change into it."""

    def __init__(
        self, entries: Callable[[], Iterable[tuple[str, Entry]]], nslots: int = DEFAULT_SLOTS,
        heap_bytes: int = DEFAULT_HEAP_BYTES,
    ) -> None:
        if nslots & (nslots - 1) or nslots < 8:
            raise ValueError(f"view slots must be a power of two >= 8, got {nslots}")
        self._entries = entries  # the whole key space, for a rebuild
        self.nslots = nslots
        self.heap_offset = HEADER_BYTES + nslots * _SLOT.size
        self.heap_size = heap_bytes
        self.size = self.heap_offset + heap_bytes
        self.rebuilds = 0
        self._fd = os.memfd_create("pcs-cmap-view", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, self.size)
            self._mm = mmap.mmap(self._fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            # what clients get: a new open file description, read-only
            self._ro_fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(self._fd)
            raise
        self._seq = 0
        # key -> (slot, record offset, record bytes): the writer's own index of its table
        self._where: dict[str, tuple[int, int, int]] = {}
        self._heap_used = 0
        self._live = 0
        self._tombstones = 0
        self._state = STATE_BUILDING
        _HEADER.pack_into(self._mm, 0, MAGIC, LAYOUT_VERSION, nslots, 0, STATE_BUILDING, self.heap_offset,
                          heap_bytes, 0, 0, 0, time.monotonic_ns(), os.getpid(), 0)
        self.rebuild()

    # -- what the service hands out ---------------------------------------------------------------
    def reader_fd(self) -> int:
        """The read-only descriptor to send to a client (the caller does not close it)."""
        return self._ro_fd

    def beat(self, now_ns: int | None = None) -> None:
        """Tells readers the service is alive (call from its loop at least every HEARTBEAT_INTERVAL_NS)."""
        _U64.pack_into(self._mm, _HEARTBEAT_OFF, time.monotonic_ns() if now_ns is None else now_ns)

    def close(self) -> None:
        """Marks the view closed (readers go to the service, which is gone) and releases it."""
        if self._mm.closed:
            return
        self._begin()
        self._set_state(STATE_CLOSED)
        self._end()
        self._mm.close()
        os.close(self._ro_fd)
        os.close(self._fd)

    # -- changes ----------------------------------------------------------------------------------
    def put(self, key: str, entry: Entry) -> None:
        """Mirrors a set (ADD or MODIFY) of ``key``."""
        kb = key.encode("utf-8", "surrogateescape")
        record = self._record(kb, entry)
        where = self._where.get(key)
        if where is not None and where[2] == len(record):
            # same size (a counter, a state string of one length): rewrite in place, no heap growth
            self._begin()
            self._mm[where[1]:where[1] + len(record)] = record
            self._end()
            return
        if self._heap_used + len(record) > self.heap_size or (self._live + self._tombstones + 1) * 4 > self.nslots * 3:
            if self._state == STATE_INCOMPLETE:
                self.remove(key)  # no room even after a rebuild: never leave an old value behind
                return
            self.rebuild()  # compacts; the key is already in icmap, so the rebuild copies it
            return
        off = self.heap_offset + self._heap_used
        self._mm[off:off + len(record)] = record  # past heap_used: invisible to readers until linked
        self._heap_used += len(record)
        crc = _crc(kb)
        self._begin()
        if where is None:
            slot = self._free_slot(crc)
            self._live += 1
        else:
            slot = where[0]
        self._where[key] = (slot, off, len(record))
        _SLOT.pack_into(self._mm, HEADER_BYTES + slot * _SLOT.size, crc, off)
        _U32.pack_into(self._mm, _HEAP_USED_OFF, self._heap_used)
        self._end()

    def remove(self, key: str) -> None:
        """Mirrors a delete of ``key``."""
        where = self._where.pop(key, None)
        if where is None:
            return
        self._begin()
        _SLOT.pack_into(self._mm, HEADER_BYTES + where[0] * _SLOT.size, 0, SLOT_DELETED)
        self._live -= 1
        self._tombstones += 1
        self._end()

    def rebuild(self) -> None:
        """Rewrites the whole view from icmap (at start, and to compact); INCOMPLETE if it cannot hold it."""
        self.rebuilds += 1
        self._begin()
        self._mm[HEADER_BYTES:self.heap_offset] = bytes(self.heap_offset - HEADER_BYTES)
        self._where.clear()
        self._heap_used = self._live = self._tombstones = 0
        complete = True
        for key, entry in self._entries():
            kb = key.encode("utf-8", "surrogateescape")
            record = self._record(kb, entry)
            if self._heap_used + len(record) > self.heap_size or (self._live + 1) * 4 > self.nslots * 3:
                complete = False
                break
            off = self.heap_offset + self._heap_used
            self._mm[off:off + len(record)] = record
            self._heap_used += len(record)
            crc = _crc(kb)
            slot = self._free_slot(crc)
            self._where[key] = (slot, off, len(record))
            self._live += 1
            _SLOT.pack_into(self._mm, HEADER_BYTES + slot * _SLOT.size, crc, off)
        _U32.pack_into(self._mm, _HEAP_USED_OFF, self._heap_used)
        self._set_state(STATE_LIVE if complete else STATE_INCOMPLETE)
        self._end()

    # -- internals --------------------------------------------------------------------------------
    @staticmethod
    def _record(kb: bytes, entry: Entry) -> bytes:
        value = p.encode_value(entry[0], entry[1])
        flags = 0
        if len(value) > MAX_MIRRORED_VALUE:
            value, flags = b"", FLAG_NOT_MIRRORED
        raw: bytes = _ENTRY_HEAD.pack(entry[0], flags, len(kb), len(value)) + kb + value
        return raw + _PADDING[len(raw) & 7]

    def _free_slot(self, crc: int) -> int:
        mask = self.nslots - 1
        i = crc & mask
        while True:
            _, off = _SLOT.unpack_from(self._mm, HEADER_BYTES + i * _SLOT.size)
            if off in (SLOT_EMPTY, SLOT_DELETED):
                if off == SLOT_DELETED:
                    self._tombstones -= 1
                return i
            i = (i + 1) & mask

    def _set_state(self, state: int) -> None:
        self._state = state
        _U32.pack_into(self._mm, _STATE_OFF, state)

    def _begin(self) -> None:
        self._seq += 1
        _U64.pack_into(self._mm, _SEQ_OFF, self._seq)

    def _end(self) -> None:
        self._seq += 1
        _U64.pack_into(self._mm, _SEQ_OFF, self._seq)


class IcmapViewReader:
    """The client's side: a read-only mapping of the service's view, and a small cache in front of it.

    The cache maps key -> result for one value of ``seq``: while nothing changes in icmap, a repeated
    get costs two header loads and a dict lookup.
    """

    MAX_CACHED = 4096

    def __init__(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES:
            raise ValueError(f"cmap view of {size} bytes is smaller than its header")
        self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        magic, version, nslots, _, _, heap_offset, heap_size, *_ = _HEADER.unpack_from(self._mm, 0)
        if magic != MAGIC or version != LAYOUT_VERSION:
            self._mm.close()
            raise ValueError(f"not a cmap view of layout {LAYOUT_VERSION} (magic 0x{magic:x}, version {version})")
        if nslots & (nslots - 1) or heap_offset != HEADER_BYTES + nslots * _SLOT.size or heap_offset + heap_size > size:
            self._mm.close()
            raise ValueError("cmap view header describes more than its segment")
        self.nslots = nslots
        self._mask = nslots - 1
        self._heap_lo = heap_offset
        self._heap_hi = heap_offset + heap_size
        self._cache: dict[str, object] = {}
        self._cache_seq = -1
        self.use_cache = True  # False: every lookup probes the view (tests, benchmarks)
        self.local_hits = 0
        self.fallbacks = 0

    def close(self) -> None:
        """Unmaps the view."""
        with contextlib.suppress(BufferError):
            self._mm.close()

    def lookup(self, key: str) -> object:
        """``key``'s Entry, ABSENT (None: the key does not exist), or ASK_SERVICE."""
        mm = self._mm
        seq, state = _SEQ_STATE.unpack_from(mm, _SEQ_OFF)
        if seq == self._cache_seq and self.use_cache:
            hit = self._cache.get(key, ASK_SERVICE)
            if hit is not ASK_SERVICE and self._alive():
                self.local_hits += 1
                return hit
        for _ in range(_READ_TRIES):
            if seq & 1:
                seq, state = _SEQ_STATE.unpack_from(mm, _SEQ_OFF)
                continue
            if state not in (STATE_LIVE, STATE_INCOMPLETE) or not self._alive():
                break
            try:
                result = self._probe(key, state)
            except (struct.error, IndexError, ValueError, UnicodeDecodeError):
                result = ASK_SERVICE  # torn by a write: the seq check below says so
            after = _U64.unpack_from(mm, _SEQ_OFF)[0]
            if after == seq:
                if result is ASK_SERVICE:
                    break
                if seq != self._cache_seq:
                    self._cache.clear()
                    self._cache_seq = seq
                elif len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[key] = result
                self.local_hits += 1
                return result
            seq, state = _SEQ_STATE.unpack_from(mm, _SEQ_OFF)
        self.fallbacks += 1
        return ASK_SERVICE

    def _alive(self) -> bool:
        beat: int = _U64.unpack_from(self._mm, _HEARTBEAT_OFF)[0]
        return time.monotonic_ns() - beat < LEASE_NS

    def _probe(self, key: str, state: int) -> object:
        if not key.isascii() or "\0" in key or len(key) > 1024:
            return ASK_SERVICE  # never a stored name; the service gives the exact error
        kb = key.encode("ascii")
        mm = self._mm
        crc = _crc(kb)
        i = crc & self._mask
        for _ in range(self.nslots):
            slot_crc, off = _SLOT.unpack_from(mm, HEADER_BYTES + i * _SLOT.size)
            if off == SLOT_EMPTY:
                return ABSENT if state == STATE_LIVE else ASK_SERVICE
            if off != SLOT_DELETED and slot_crc == crc:
                if not self._heap_lo <= off < self._heap_hi - _ENTRY_HEAD.size:
                    raise ValueError("entry offset outside the heap")
                vtype, flags, klen, vlen = _ENTRY_HEAD.unpack_from(mm, off)
                start = off + _ENTRY_HEAD.size
                if start + klen + vlen > self._heap_hi:
                    raise ValueError("entry runs past the heap")
                if mm[start:start + klen] == kb:
                    decoder = _DECODE.get(vtype)
                    if flags & FLAG_NOT_MIRRORED or decoder is None:
                        return ASK_SERVICE
                    vt, fmt = decoder
                    data = mm[start + klen:start + klen + vlen]
                    if fmt is not None:
                        return vt, fmt.unpack(data)[0]
                    if vt == ValueType.STRING:
                        return vt, data.decode("utf-8")
                    return vt, data
            i = (i + 1) & self._mask
        return ABSENT if state == STATE_LIVE else ASK_SERVICE
