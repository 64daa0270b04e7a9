"""The client-connection protocol shared by ``ipc.server`` and ``ipc.client``: handshake messages and the
layout of the per-connection memory.

A client connects to ``<run_dir>/<service>.sock`` (SOCK_SEQPACKET) and sends HELLO. The server checks
the peer's credentials, creates a memfd holding three rings and answers WELCOME with, as SCM_RIGHTS,
the memfd, the service's doorbell eventfd and the connection's response and event eventfds. A refusal
is a WELCOME with a ``cs_error_t`` and no descriptors. After that the socket carries nothing: its
hang-up tells either side that the other is gone.

Layout of the memfd (all little-endian, offsets in bytes)::

    0     u64  magic "PCSCONN\\0"
    8     u32  layout version
    12    u32  creator (server) pid
    16    u64  total size
    24    u64  request ring offset    32  u64 request ring bytes    40  u64 request ring capacity
    48    u64  response ring offset   56  u64 response ring bytes   64  u64 response ring capacity
    72    u64  event ring offset      80  u64 event ring bytes      88  u64 event ring capacity
    128   u32  server backlog: non-zero while the server holds responses or events that did not fit
               (the client rings the service doorbell after it frees ring space)
    4096  request ring (client -> server), then response ring, then event ring (server -> client),
          each starting on a 4096-byte boundary and followed by one spare page

The server writes the header once and never reads it back: a client can scribble over any byte of
this memory, so the server keeps its own copy of the geometry.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from pycorosync.ipc.errors import CS_ERR_LIBRARY, CS_ERR_VERSION, CsError

IPC_PROTOCOL_VERSION = 1
SEGMENT_LAYOUT_VERSION = 1
DEFAULT_RING_BYTES = 1 << 20
PAGE = 4096

SERVICE_NAME_MAX = 31
FD_COUNT = 4  # memfd, service doorbell, response eventfd, event eventfd

# HELLO (client -> server): magic, protocol version, flags (none defined yet), service name
HELLO = struct.Struct("<8sII32s")
HELLO_MAGIC = b"PCSHELLO"
# WELCOME (server -> client): magic, protocol version, cs_error_t, connection id, server pid
WELCOME = struct.Struct("<8sIiQI")
WELCOME_MAGIC = b"PCSWELCM"

SEGMENT_MAGIC = b"PCSCONN\0"
_HEADER = struct.Struct("<8sIIQ" + "QQQ" * 3)
BACKLOG_OFFSET = 128
_BACKLOG = struct.Struct("<I")


def socket_name(service: str) -> str:
    """File name of a service's socket inside the run directory."""
    return f"{service}.sock"


def check_service_name(service: str) -> str:
    """A service name is a short lowercase word (``cpg``, ``cmap``...): it becomes a file name."""
    ok = 0 < len(service) <= SERVICE_NAME_MAX and all(c.isascii() and (c.isalnum() or c in "_-") for c in service)
    if not ok or service.startswith("-"):
        raise ValueError(f"invalid IPC service name {service!r}: 1-{SERVICE_NAME_MAX} characters of [A-Za-z0-9_-]")
    return service


@dataclass(frozen=True)
class Hello:
    """What a client says first."""

    version: int
    service: str
    flags: int = 0

    def pack(self) -> bytes:
        return HELLO.pack(HELLO_MAGIC, self.version, self.flags, self.service.encode())

    @classmethod
    def unpack(cls, data: bytes) -> Hello:
        """Parses a HELLO; ValueError says what is wrong with it (the server logs that and hangs up)."""
        if len(data) != HELLO.size:
            raise ValueError(f"HELLO of {len(data)} bytes, expected {HELLO.size}")
        magic, version, flags, raw_name = HELLO.unpack(data)
        if magic != HELLO_MAGIC:
            raise ValueError(f"HELLO with bad magic {magic!r}")
        name = raw_name.rstrip(b"\0")
        try:
            service = name.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"HELLO with a non-ASCII service name {name!r}") from None
        return cls(version=version, service=service, flags=flags)


@dataclass(frozen=True)
class Welcome:
    """The server's answer: ``error`` is CS_OK (descriptors attached) or the reason for refusal."""

    version: int
    error: int
    conn_id: int
    server_pid: int

    def pack(self) -> bytes:
        return WELCOME.pack(WELCOME_MAGIC, self.version, self.error, self.conn_id, self.server_pid)

    @classmethod
    def unpack(cls, data: bytes, where: str) -> Welcome:
        """Parses a WELCOME; a reply of another shape is CS_ERR_VERSION when it comes from a pycorosync server."""
        if len(data) < 12 or data[:8] != WELCOME_MAGIC:
            raise CsError(CS_ERR_LIBRARY, f"{where}: the server's answer is not a pycorosync WELCOME")
        if len(data) != WELCOME.size:
            version = struct.unpack_from("<I", data, 8)[0]
            raise CsError(CS_ERR_VERSION, f"{where}: server speaks IPC protocol {version} ({len(data)}-byte WELCOME)")
        _, version, error, conn_id, pid = WELCOME.unpack(data)
        return cls(version=version, error=error, conn_id=conn_id, server_pid=pid)


@dataclass(frozen=True)
class SegmentLayout:
    """Where the three rings of one connection live inside its memfd."""

    request_offset: int
    request_bytes: int
    request_capacity: int
    response_offset: int
    response_bytes: int
    response_capacity: int
    event_offset: int
    event_bytes: int
    event_capacity: int
    total_bytes: int

    @classmethod
    def plan(
        cls,
        request_capacity: int,
        response_capacity: int,
        event_capacity: int,
        layout_bytes: Callable[[int], int],
    ) -> SegmentLayout:
        """Lays the rings out one after the other, page-aligned, after the header page."""
        offset = PAGE
        places: list[tuple[int, int, int]] = []
        for capacity in (request_capacity, response_capacity, event_capacity):
            size = int(layout_bytes(capacity))
            places.append((offset, size, capacity))
            # a spare page after each ring: a client that scribbles the producer's write index of a
            # server-written ring to an unaligned value can make a header store land up to 7 bytes past
            # the ring's end, which must hit memory of this connection, never unmapped memory
            offset += _page_up(size) + PAGE
        (ro, rb, rc), (so, sb, sc), (eo, eb, ec) = places
        return cls(ro, rb, rc, so, sb, sc, eo, eb, ec, offset)

    def pack_header(self, creator_pid: int) -> bytes:
        return _HEADER.pack(
            SEGMENT_MAGIC,
            SEGMENT_LAYOUT_VERSION,
            creator_pid,
            self.total_bytes,
            self.request_offset,
            self.request_bytes,
            self.request_capacity,
            self.response_offset,
            self.response_bytes,
            self.response_capacity,
            self.event_offset,
            self.event_bytes,
            self.event_capacity,
        )

    @classmethod
    def read_header(cls, buf: bytes | memoryview, size: int, where: str) -> SegmentLayout:
        """The layout a server wrote, checked against the real size of the memory (clients only)."""
        if size < PAGE:
            raise CsError(CS_ERR_LIBRARY, f"{where}: connection memory of {size} bytes is smaller than its header")
        fields = _HEADER.unpack_from(buf, 0)
        magic, layout_version, _pid, total = fields[:4]
        if magic != SEGMENT_MAGIC:
            raise CsError(CS_ERR_LIBRARY, f"{where}: connection memory has bad magic {magic!r}")
        if layout_version != SEGMENT_LAYOUT_VERSION:
            raise CsError(
                CS_ERR_VERSION,
                f"{where}: connection memory layout {layout_version}, this client knows {SEGMENT_LAYOUT_VERSION}",
            )
        ro, rb, rc, so, sb, sc, eo, eb, ec = fields[4:]
        layout = cls(ro, rb, rc, so, sb, sc, eo, eb, ec, total)
        for name, off, nbytes in (
            ("request", layout.request_offset, layout.request_bytes),
            ("response", layout.response_offset, layout.response_bytes),
            ("event", layout.event_offset, layout.event_bytes),
        ):
            if off < PAGE or off + nbytes > min(size, total):
                raise CsError(CS_ERR_LIBRARY, f"{where}: {name} ring at {off}+{nbytes} lies outside {size} bytes")
        return layout


def read_backlog(buf: memoryview) -> int:
    """The server-backlog word (clients read it after consuming, servers write it)."""
    return int(_BACKLOG.unpack_from(buf, BACKLOG_OFFSET)[0])


def write_backlog(buf: memoryview, value: int) -> None:
    _BACKLOG.pack_into(buf, BACKLOG_OFFSET, value)


def _page_up(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE
