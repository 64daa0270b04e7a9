"""A small common framing for responses: ``u32 error (cs_error_t) | body``, like corosync's
``{id, size, error}`` response header (the ring record already carries id and size).

Services are free to frame their payloads as they like; those that use this get
``Connection.call`` (raises CsError on an error code) and can answer a bad request by raising
CsError in their handler.
"""

from __future__ import annotations

import struct

from pycorosync.ipc.errors import CS_ERR_MESSAGE_ERROR, CS_OK, CsError

_ERROR = struct.Struct("<I")
RESPONSE_HEADER_BYTES = _ERROR.size


def encode_response(error: int = CS_OK, body: bytes = b"") -> bytes:
    """A response payload carrying ``error`` and ``body``."""
    return _ERROR.pack(int(error)) + body


def decode_response(payload: bytes) -> tuple[int, bytes]:
    """(error, body) of a response payload; CsError(CS_ERR_MESSAGE_ERROR) if it is too short."""
    if len(payload) < RESPONSE_HEADER_BYTES:
        raise CsError(CS_ERR_MESSAGE_ERROR, f"response of {len(payload)} bytes has no error header")
    return _ERROR.unpack_from(payload)[0], payload[RESPONSE_HEADER_BYTES:]


def check_response(payload: bytes, what: str = "request") -> bytes:
    """The body of a response, or CsError with its code when the service answered with an error."""
    error, body = decode_response(payload)
    if error != CS_OK:
        raise CsError(error, f"{what} failed")
    return body
