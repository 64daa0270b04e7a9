"""cmap's messages between the client library and the service: ids and byte layouts.

Every request is one record on the connection's request ring: the record type is the request id
below, the payload is laid out as documented per message (little endian). The response record has
the same type and the payload ``u32 cs_error | body`` (``pycorosync.ipc.framing``); a failed call
has an empty body. Track notifications are records of type ``MSG_NOTIFY`` on the event ring.

    value   = u8 type | value bytes (ints and floats at their C width; STRING utf-8; BINARY raw)
    GET            key                              -> value
    SET            u8 type | u16 key_len | key | value bytes   -> (empty)
    DELETE/INC/DEC key                              -> (empty)
    ITER_INIT      prefix                           -> u64 iter_handle
    ITER_NEXT      u64 iter_handle                  -> u8 type | u16 key_len | key | value bytes
    ITER_FINALIZE  u64 iter_handle                  -> (empty)
    TRACK_ADD      u32 flags | u64 context | key    -> u64 track_handle
    TRACK_DELETE   u64 track_handle                 -> (empty)
    INITIALIZE_MAP u32 map | u32 flags              -> (empty)
    RELOAD_CONFIG  (empty)                          -> utf-8 messages, one a line
    VIEW           (empty)                          -> (empty); before the response, one message on the
                   connection's socket: b"V" + a read-only descriptor of the icmap view (view.py), or b"N"
    NOTIFY (event) u64 track_handle | u64 context | u32 event | u16 key_len | key
                   | u8 new_type | u32 new_len | new | u8 old_type | u32 old_len | old   (type 0 = absent)

Decoding never trusts a length: any malformed payload raises CsError(CS_ERR_INVALID_PARAM).
"""

from __future__ import annotations

import enum
import struct

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.services.cmap.engine import Entry

SERVICE_NAME = "cmap"
SERVICE_ID = 0

# where a failed config reload leaves its reason (COROSYNC.md §7.4)
RELOAD_ERROR_KEY = "config.reload_error_message"

CMAP_MAP_DEFAULT = 0
CMAP_MAP_ICMAP = 0
CMAP_MAP_STATS = 1
# INITIALIZE_MAP flag: the caller is part of the node (another service process) and may write
# read-only keys, as corosync's in-daemon code does through icmap; granted to the service's own uid
INIT_FLAG_ENGINE = 1


class CmapMsg(enum.IntEnum):
    """Request ids (record type on the request ring) and the notification id (event ring)."""

    GET = 1
    SET = 2
    DELETE = 3
    INC = 4
    DEC = 5
    ITER_INIT = 6
    ITER_NEXT = 7
    ITER_FINALIZE = 8
    TRACK_ADD = 9
    TRACK_DELETE = 10
    INITIALIZE_MAP = 11
    RELOAD_CONFIG = 12
    VIEW = 13
    NOTIFY = 100


# plain ints of the ids for the hot paths: an IntEnum costs numba a slow type lookup on every ring push
MSG_GET, MSG_SET, MSG_DELETE, MSG_INC, MSG_DEC = 1, 2, 3, 4, 5
MSG_ITER_INIT, MSG_ITER_NEXT, MSG_ITER_FINALIZE, MSG_TRACK_ADD, MSG_TRACK_DELETE = 6, 7, 8, 9, 10
MSG_INITIALIZE_MAP, MSG_RELOAD_CONFIG, MSG_VIEW, MSG_NOTIFY = 11, 12, 13, 100
assert [int(m) for m in CmapMsg] == [MSG_GET, MSG_SET, MSG_DELETE, MSG_INC, MSG_DEC, MSG_ITER_INIT, MSG_ITER_NEXT,
                                     MSG_ITER_FINALIZE, MSG_TRACK_ADD, MSG_TRACK_DELETE, MSG_INITIALIZE_MAP,
                                     MSG_RELOAD_CONFIG, MSG_VIEW, MSG_NOTIFY]

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SET_HEAD = struct.Struct("<BH")
_TRACK_HEAD = struct.Struct("<IQ")
_MAP_INIT = struct.Struct("<II")
_NOTIFY_HEAD = struct.Struct("<QQIH")
_SIDE_HEAD = struct.Struct("<BI")

_NUMERIC: dict[ValueType, struct.Struct] = {
    ValueType.INT8: struct.Struct("<b"),
    ValueType.UINT8: struct.Struct("<B"),
    ValueType.INT16: struct.Struct("<h"),
    ValueType.UINT16: struct.Struct("<H"),
    ValueType.INT32: struct.Struct("<i"),
    ValueType.UINT32: struct.Struct("<I"),
    ValueType.INT64: struct.Struct("<q"),
    ValueType.UINT64: struct.Struct("<Q"),
    ValueType.FLOAT: struct.Struct("<f"),
    ValueType.DOUBLE: struct.Struct("<d"),
}
NUMERIC_FORMATS = _NUMERIC  # the C layouts of the numeric types (the read view decodes with them)
_VALID_TYPES = frozenset(int(t) for t in ValueType)


def _bad(what: str) -> CsError:
    return CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"malformed cmap message: {what}")


def encode_value(vtype: ValueType, value: Value) -> bytes:
    """Value bytes at their C width (no type byte)."""
    fmt = _NUMERIC.get(vtype)
    if fmt is not None:
        return fmt.pack(value)
    if vtype == ValueType.STRING:
        assert isinstance(value, str)
        return value.encode("utf-8", "surrogateescape")
    assert isinstance(value, bytes)
    return value


def decode_value(vtype: int, data: bytes | memoryview) -> Entry:
    """(type, value) from a type id and value bytes; wrong width or unknown type → INVALID_PARAM."""
    if vtype not in _VALID_TYPES:
        raise _bad(f"unknown value type {vtype}")
    vt = ValueType(vtype)
    fmt = _NUMERIC.get(vt)
    if fmt is not None:
        if len(data) != fmt.size:
            raise _bad(f"{vt.name} value of {len(data)} bytes, expected {fmt.size}")
        value: Value = fmt.unpack(data)[0]
        return vt, value
    if vt == ValueType.STRING:
        return vt, _text(data, "string value")
    return vt, bytes(data)


def _text(data: bytes | memoryview, what: str) -> str:
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"{what} is not UTF-8") from exc
    if "\0" in text:
        raise _bad(f"{what} contains NUL")
    return text


def encode_entry(entry: Entry) -> bytes:
    """u8 type | value bytes."""
    return _U8.pack(entry[0]) + encode_value(entry[0], entry[1])


def decode_entry(data: bytes | memoryview) -> Entry:
    """Inverse of ``encode_entry``."""
    if len(data) < 1:
        raise _bad("empty value")
    return decode_value(data[0], data[1:])


# -- requests ------------------------------------------------------------------------------------
def encode_key(key: str) -> bytes:
    """A key or prefix as the whole payload (GET, DELETE, INC, DEC, ITER_INIT)."""
    return key.encode("utf-8", "surrogateescape")


def decode_key(payload: bytes | memoryview) -> str:
    """Key or prefix of a GET/DELETE/INC/DEC/ITER_INIT payload."""
    if len(payload) > 1024:
        raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, "cmap key name longer than 255 characters")
    return _text(payload, "key name")


def encode_set(key: str, vtype: ValueType, value: Value) -> bytes:
    """SET payload."""
    kb = key.encode("utf-8", "surrogateescape")
    return _SET_HEAD.pack(vtype, len(kb)) + kb + encode_value(vtype, value)


def decode_set(payload: bytes | memoryview) -> tuple[str, Entry]:
    """(key, (type, value)) of a SET payload."""
    if len(payload) < _SET_HEAD.size:
        raise _bad("SET shorter than its header")
    vtype, klen = _SET_HEAD.unpack_from(payload)
    end = _SET_HEAD.size + klen
    if end > len(payload):
        raise _bad("SET key runs past the message")
    key = decode_key(payload[_SET_HEAD.size:end])
    return key, decode_value(vtype, payload[end:])


def encode_u64(value: int) -> bytes:
    """A handle (ITER_NEXT, ITER_FINALIZE, TRACK_DELETE payloads; ITER_INIT, TRACK_ADD responses)."""
    return _U64.pack(value)


def decode_u64(payload: bytes | memoryview) -> int:
    """Inverse of ``encode_u64``; any other length → INVALID_PARAM."""
    if len(payload) != 8:
        raise _bad(f"handle of {len(payload)} bytes, expected 8")
    handle: int = _U64.unpack(payload)[0]
    return handle


def encode_track_add(key: str, flags: int, context: int) -> bytes:
    """TRACK_ADD payload."""
    return _TRACK_HEAD.pack(flags, context) + key.encode("utf-8", "surrogateescape")


def decode_track_add(payload: bytes | memoryview) -> tuple[str, int, int]:
    """(key, flags, context) of a TRACK_ADD payload."""
    if len(payload) < _TRACK_HEAD.size:
        raise _bad("TRACK_ADD shorter than its header")
    flags, context = _TRACK_HEAD.unpack_from(payload)
    return decode_key(payload[_TRACK_HEAD.size:]), flags, context


def encode_initialize_map(cmap_map: int, flags: int = 0) -> bytes:
    """INITIALIZE_MAP payload."""
    return _MAP_INIT.pack(cmap_map, flags)


def decode_initialize_map(payload: bytes | memoryview) -> tuple[int, int]:
    """(map, flags) of an INITIALIZE_MAP payload."""
    if len(payload) != _MAP_INIT.size:
        raise _bad("INITIALIZE_MAP must be 8 bytes")
    cmap_map, flags = _MAP_INIT.unpack(payload)
    return cmap_map, flags


# -- responses -----------------------------------------------------------------------------------
def encode_iter_item(key: str, entry: Entry) -> bytes:
    """ITER_NEXT response body."""
    kb = key.encode("utf-8", "surrogateescape")
    return _U8.pack(entry[0]) + _U16.pack(len(kb)) + kb + encode_value(entry[0], entry[1])


def decode_iter_item(body: bytes | memoryview) -> tuple[str, Entry]:
    """(key, (type, value)) of an ITER_NEXT response."""
    if len(body) < 3:
        raise _bad("ITER_NEXT response shorter than its header")
    klen = _U16.unpack_from(body, 1)[0]
    if 3 + klen > len(body):
        raise _bad("ITER_NEXT key runs past the message")
    key = decode_key(body[3:3 + klen])
    return key, decode_value(body[0], body[3 + klen:])


def _encode_side(entry: Entry | None) -> bytes:
    if entry is None:
        return _SIDE_HEAD.pack(0, 0)
    data = encode_value(entry[0], entry[1])
    return _SIDE_HEAD.pack(entry[0], len(data)) + data


def _decode_side(body: bytes | memoryview, pos: int) -> tuple[Entry | None, int]:
    if pos + _SIDE_HEAD.size > len(body):
        raise _bad("NOTIFY value header runs past the message")
    vtype, vlen = _SIDE_HEAD.unpack_from(body, pos)
    pos += _SIDE_HEAD.size
    if pos + vlen > len(body):
        raise _bad("NOTIFY value runs past the message")
    if vtype == 0:
        return None, pos + vlen
    return decode_value(vtype, body[pos:pos + vlen]), pos + vlen


def encode_notify(
    track_handle: int, context: int, event: int, key: str, new: Entry | None, old: Entry | None
) -> bytes:
    """NOTIFY event payload."""
    kb = key.encode("utf-8", "surrogateescape")
    return _NOTIFY_HEAD.pack(track_handle, context, event, len(kb)) + kb + _encode_side(new) + _encode_side(old)


def decode_notify(body: bytes | memoryview) -> tuple[int, int, int, str, Entry | None, Entry | None]:
    """(track_handle, context, event, key, new, old) of a NOTIFY payload."""
    if len(body) < _NOTIFY_HEAD.size:
        raise _bad("NOTIFY shorter than its header")
    track_handle, context, event, klen = _NOTIFY_HEAD.unpack_from(body)
    pos = _NOTIFY_HEAD.size
    if pos + klen > len(body):
        raise _bad("NOTIFY key runs past the message")
    key = decode_key(body[pos:pos + klen])
    new, pos = _decode_side(body, pos + klen)
    old, pos = _decode_side(body, pos)
    return track_handle, context, event, key, new, old
