"""A tiny echo service: the IPC layer's demo, benchmark and test subject.

Requests; responses use ``pycorosync.ipc.framing`` (``Connection.call`` returns the body):
    ECHO  payload -> the same payload
    EMIT  ``<II count size`` -> ``count`` events of ``size`` bytes (first 8 bytes: the event's index)
Anything else is answered with CS_ERR_INVALID_PARAM.
"""

from __future__ import annotations

import struct

from pycorosync.ipc.errors import CS_ERR_INVALID_PARAM, CsError
from pycorosync.ipc.framing import encode_response
from pycorosync.ipc.server import ServerConnection

SERVICE = "echo"
ECHO = 1
EMIT = 2
EVENT = 100
REQUEST_TYPES = frozenset({ECHO, EMIT})
MAX_EMIT_COUNT = 100_000
MAX_EMIT_SIZE = 64 << 10
_EMIT = struct.Struct("<II")
_INDEX = struct.Struct("<Q")


def emit_payload(count: int, size: int = 8) -> bytes:
    """The body of an EMIT request."""
    return _EMIT.pack(count, size)


def event_index(payload: bytes) -> int:
    """The index an EMIT event carries."""
    return int(_INDEX.unpack_from(payload)[0])


class EchoService:
    """The echo engine: answers ECHO with its payload, EMIT with a burst of events."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0

    def on_connect(self, conn: ServerConnection) -> int | None:
        self.connections += 1
        return None

    def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        self.requests += 1
        if rtype == ECHO:
            return ECHO, encode_response(body=payload)
        if rtype == EMIT and len(payload) == _EMIT.size:
            count, size = _EMIT.unpack(payload)
            if count > MAX_EMIT_COUNT or size > MAX_EMIT_SIZE:
                raise CsError(CS_ERR_INVALID_PARAM, f"echo: EMIT of {count} x {size} bytes is over the limits")
            filler = bytes(max(0, size - _INDEX.size))
            for i in range(count):
                if conn.closed:  # dropped for not reading its events: stop producing them
                    break
                conn.send_event(EVENT, _INDEX.pack(i) + filler)
            return EMIT, encode_response()
        raise CsError(CS_ERR_INVALID_PARAM, f"echo: request type {rtype} with {len(payload)} bytes")

    def on_disconnect(self, conn: ServerConnection) -> None:
        self.connections -= 1
