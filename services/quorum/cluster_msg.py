"""votequorum's cluster messages (corosync's exec messages) as bytes: the body after the 4-byte service header.

    NODEINFO     u8 kind=1 | 3 pad | u32 nodeid | u32 votes | u32 expected_votes | u32 flags
    RECONFIGURE  u8 kind=2 | 3 pad | u32 nodeid (0 = expected votes for all) | u32 expected_votes | i32 votes
    CANCEL_WFA   u8 kind=3 | 3 pad | u32 nodeid (who asked): every member stops waiting for all

Little endian. ``decode`` returns None for anything malformed: the service counts it and drops it.
"""

from __future__ import annotations

import struct

from .votequorum import NodeInfo, Reconfigure

__all__ = ["KIND_CANCEL_WFA", "KIND_NODEINFO", "KIND_RECONFIGURE", "decode", "encode"]

KIND_NODEINFO = 1
KIND_RECONFIGURE = 2
KIND_CANCEL_WFA = 3

_NODEINFO = struct.Struct("<B3xIIII")
_RECONFIGURE = struct.Struct("<B3xIIi")
_CANCEL_WFA = struct.Struct("<B3xI")
_U32_MAX = 0xFFFFFFFF


def encode(message: NodeInfo | Reconfigure) -> bytes:
    """The body of one votequorum cluster message."""
    if isinstance(message, NodeInfo):
        return _NODEINFO.pack(KIND_NODEINFO, message.nodeid, message.votes, message.expected_votes, message.flags)
    if message.cancel_wait_for_all:
        return _CANCEL_WFA.pack(KIND_CANCEL_WFA, message.nodeid)
    return _RECONFIGURE.pack(KIND_RECONFIGURE, message.nodeid, message.expected_votes, message.votes)


def decode(body: bytes) -> NodeInfo | Reconfigure | None:
    """The message in ``body``, or None when it is not a well-formed votequorum message."""
    if not body:
        return None
    kind = body[0]
    if kind == KIND_NODEINFO and len(body) == _NODEINFO.size:
        _, nodeid, votes, expected, flags = _NODEINFO.unpack(body)
        if nodeid == 0 or expected == 0:
            return None
        return NodeInfo(nodeid, votes, expected, flags)
    if kind == KIND_RECONFIGURE and len(body) == _RECONFIGURE.size:
        _, nodeid, expected, votes = _RECONFIGURE.unpack(body)
        if nodeid == 0 and expected == 0:
            return None
        return Reconfigure(nodeid, expected, votes)
    if kind == KIND_CANCEL_WFA and len(body) == _CANCEL_WFA.size:
        _, nodeid = _CANCEL_WFA.unpack(body)
        return Reconfigure(nodeid, cancel_wait_for_all=True) if nodeid else None
    return None
