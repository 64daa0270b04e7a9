"""Shared-memory segments: named (``/pcs-<cluster>-<nodeid>-<what>``) or anonymous (memfd), same header.

Every segment starts with a 4 KiB page holding a header (ipc/layout.md): magic, header version, kind,
the kind's layout version, creator pid, total size. The payload (rings, the stats table) starts at
``HEADER_BYTES``, page-aligned. A process that attaches to a segment written by another layout
version gets a :class:`SegmentLayoutError` that names the segment and both versions, never garbage.

Named segments are created with O_EXCL and mode 0600 (set again with fchmod after creation, so no
umask or library default can leave them wider). Anonymous segments are memfds, sealed against
shrinking and growing so that the process that receives one over SCM_RIGHTS cannot be made to fault
by the sender truncating it.

Mappings and views: ``close()`` unmaps at once when no view is left; while a numpy array or
memoryview from ``array()``/``payload`` is alive, the mapping stays until the last view is dropped
(no view can ever point at unmapped memory).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import mmap
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import posix_ipc

HEADER_BYTES = 4096
HEADER_VERSION = 1
SEGMENT_MAGIC = b"PCSSEGM\x00"
NAME_PREFIX = "/pcs-"
SHM_DIR = Path("/dev/shm")
NAME_MAX = 255

# magic(8) header_version(u32) kind(u32) layout_version(u32) creator_pid(u32) total_size(u64) created_ns(u64)
_HEADER = struct.Struct("<8sIIIIQQ")
_CLUSTER_BAD = re.compile(r"[^A-Za-z0-9_.]")
_WHAT_OK = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL

_log = logging.getLogger("IPC")


class LayoutError(Exception):
    """Shared memory holds something this build cannot read (another version, another kind, too small)."""


class SegmentLayoutError(LayoutError):
    """A segment's header does not match what this build expects."""


class SegmentKind(enum.IntEnum):
    """What a segment's payload holds; checked on attach."""

    RAW = 0
    RINGS = 1
    STATS = 2


def node_prefix(cluster: str, nodeid: int) -> str:
    """``/pcs-<cluster>-<nodeid>-``: every segment of one node starts with it (characters outside
    ``[A-Za-z0-9_.]`` in the cluster name become ``_``, so the prefix of one node never matches another's)."""
    if nodeid < 0:
        raise ValueError(f"node id must be >= 0, got {nodeid}")
    return f"{NAME_PREFIX}{_CLUSTER_BAD.sub('_', cluster) or '_'}-{nodeid}-"


def segment_name(cluster: str, nodeid: int, what: str) -> str:
    """``/pcs-<cluster>-<nodeid>-<what>``, e.g. ``segment_name("alpha", 1, "stats")`` -> ``/pcs-alpha-1-stats``."""
    if not _WHAT_OK.match(what):
        raise ValueError(f"segment name part {what!r}: use letters, digits, '_', '.', '-'")
    name = node_prefix(cluster, nodeid) + what
    if len(name) > NAME_MAX:
        raise ValueError(f"segment name {name!r} is longer than {NAME_MAX} characters")
    return name


def _page_round(n: int) -> int:
    return (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE


class Segment:
    """A mapped segment: ``payload`` (memoryview) and ``array()`` (numpy uint8) start after the header."""

    def __init__(self, name: str, mm: mmap.mmap, fd: int, kind: int, layout_version: int, creator_pid: int) -> None:
        self.name = name
        self.kind = kind
        self.layout_version = layout_version
        self.creator_pid = creator_pid
        self.size = len(mm)
        self._mm: mmap.mmap | None = mm
        self._fd = fd  # memfd kept open (to pass on); -1 for named segments

    # ------------------------------------------------------------ creation

    @classmethod
    def create(cls, name: str, payload_bytes: int, kind: SegmentKind, layout_version: int) -> Segment:
        """Creates a named segment (fails with FileExistsError if the name exists), mode 0600."""
        if not name.startswith(NAME_PREFIX):
            raise ValueError(f"segment name {name!r} must start with {NAME_PREFIX!r}")
        total = _page_round(HEADER_BYTES + payload_bytes)
        try:
            shm = posix_ipc.SharedMemory(name, flags=posix_ipc.O_CREX, mode=0o600, size=total)
        except posix_ipc.ExistentialError as exc:
            raise FileExistsError(f"{name}: shared-memory segment already exists ({exc})") from exc
        try:
            os.fchmod(shm.fd, 0o600)
            mm = mmap.mmap(shm.fd, total)
        except BaseException:
            shm.close_fd()
            posix_ipc.unlink_shared_memory(name)
            raise
        shm.close_fd()
        _write_header(mm, kind, layout_version, total)
        return cls(name, mm, -1, int(kind), layout_version, os.getpid())

    @classmethod
    def attach(cls, name: str, kind: SegmentKind, layout_version: int) -> Segment:
        """Maps an existing named segment after checking its header (SegmentLayoutError if it differs)."""
        try:
            shm = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError as exc:
            raise FileNotFoundError(f"{name}: no such shared-memory segment") from exc
        try:
            if shm.size < HEADER_BYTES:
                raise SegmentLayoutError(f"{name}: {shm.size} bytes, too small for a segment header")
            mm = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        return cls._checked(name, mm, -1, kind, layout_version)

    @classmethod
    def create_anonymous(
        cls, payload_bytes: int, kind: SegmentKind, layout_version: int, label: str = "pcs-anon"
    ) -> Segment:
        """A memfd-backed segment (nothing named, nothing to leak); ``fileno()`` is the fd to pass on."""
        total = _page_round(HEADER_BYTES + payload_bytes)
        fd = os.memfd_create(label, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, total)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            mm = mmap.mmap(fd, total)
        except BaseException:
            os.close(fd)
            raise
        _write_header(mm, kind, layout_version, total)
        return cls(f"memfd:{label}", mm, fd, int(kind), layout_version, os.getpid())

    @classmethod
    def attach_fd(
        cls, fd: int, kind: SegmentKind, layout_version: int, label: str = "memfd", require_sealed: bool = True
    ) -> Segment:
        """Maps a memfd received from another process; takes ownership of ``fd``.

        With ``require_sealed`` the memfd must be sealed against shrinking, so the sender cannot make
        this process fault by truncating it.
        """
        name = f"memfd:{label}"
        try:
            size = os.fstat(fd).st_size
            if require_sealed:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                if not seals & fcntl.F_SEAL_SHRINK:
                    raise SegmentLayoutError(f"{name}: memfd is not sealed against shrinking; refusing to map it")
            if size < HEADER_BYTES:
                raise SegmentLayoutError(f"{name}: {size} bytes, too small for a segment header")
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        try:
            return cls._checked(name, mm, fd, kind, layout_version)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _checked(cls, name: str, mm: mmap.mmap, fd: int, kind: SegmentKind, layout_version: int) -> Segment:
        magic, hver, got_kind, got_version, pid, total, _ns = _HEADER.unpack_from(mm, 0)
        problem = None
        if magic != SEGMENT_MAGIC:
            problem = f"{name}: not a pycorosync segment (magic {magic!r})"
        elif hver != HEADER_VERSION:
            problem = f"{name}: segment header version {hver}, this build reads {HEADER_VERSION}"
        elif got_kind != kind:
            problem = f"{name}: segment holds {_kind_name(got_kind)}, expected {_kind_name(kind)}"
        elif got_version != layout_version:
            problem = f"{name}: layout version {got_version}, this build reads {layout_version}"
        elif total != len(mm):
            problem = f"{name}: header says {total} bytes, segment has {len(mm)}"
        if problem:
            mm.close()
            raise SegmentLayoutError(problem)
        return cls(name, mm, fd, got_kind, got_version, pid)

    # ------------------------------------------------------------ access

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            raise ValueError(f"{self.name}: segment is closed")
        return self._mm

    @property
    def payload_bytes(self) -> int:
        return self.size - HEADER_BYTES

    @property
    def payload(self) -> memoryview:
        """Writable view of the payload (keeps the mapping alive while it exists)."""
        return memoryview(self._map())[HEADER_BYTES:]

    def array(self) -> np.ndarray[Any, Any]:
        """The payload as a writable numpy uint8 array (keeps the mapping alive while it exists)."""
        return np.frombuffer(self._map(), np.uint8, count=self.payload_bytes, offset=HEADER_BYTES)

    def fileno(self) -> int:
        """The memfd of an anonymous segment (to send with SCM_RIGHTS); -1 for a named one."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        """Unmaps now if no view is alive, else when the last view goes; closes the memfd."""
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                _log.debug("%s: views still alive; unmapped when the last one is dropped", self.name)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def unlink(self) -> bool:
        """Removes the name (the memory lives on while mapped); False if it was already gone."""
        return unlink(self.name) if self._fd < 0 else False

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, kind={_kind_name(self.kind)}, size={self.size})"


def _kind_name(kind: int) -> str:
    try:
        return SegmentKind(kind).name
    except ValueError:
        return f"kind {kind}"


def _write_header(mm: mmap.mmap, kind: int, layout_version: int, total: int) -> None:
    # magic last, so a reader racing the creator sees "not a segment" rather than half a header
    _HEADER.pack_into(mm, 0, b"\x00" * 8, HEADER_VERSION, int(kind), layout_version, os.getpid(), total, time.time_ns())
    mm[0:8] = SEGMENT_MAGIC


def unlink(name: str) -> bool:
    """Removes one named segment; False if it did not exist."""
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        return False
    return True


def list_segments(prefix: str) -> list[str]:
    """Names (with the leading '/') of the existing segments that start with ``prefix``."""
    if not prefix.startswith(NAME_PREFIX):
        raise ValueError(f"segment prefix {prefix!r} must start with {NAME_PREFIX!r}")
    stem = prefix[1:]
    try:
        entries = sorted(p.name for p in SHM_DIR.iterdir())
    except OSError:
        return []
    return ["/" + e for e in entries if e.startswith(stem)]


def unlink_prefix(prefix: str) -> list[str]:
    """Removes every segment whose name starts with ``prefix`` (stale ones of a node); returns their names."""
    removed = []
    for name in list_segments(prefix):
        with contextlib.suppress(OSError):
            if unlink(name):
                removed.append(name)
    return removed
