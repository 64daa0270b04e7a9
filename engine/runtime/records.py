"""The records of engine/runtime/PROTOCOL.md §2-§3: the service header inside Totem payloads, and the
``submit.<svc>`` / ``deliver.<svc>`` ring records. All integers little-endian.

Every decoder raises ``RecordError`` (a ``ValueError``) on a record that does not decode; the
consumer logs it once and drops it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pycorosync.engine.totem.api import ConfigType, RingId

# -- the 4-byte service header in front of every Totem payload (PROTOCOL.md §2) ---------------------
KIND_MESSAGE = 0
KIND_BARRIER = 1
KIND_SERVICE_BUILD = 2

_SVC_HEADER = struct.Struct("<BBH")
SERVICE_HEADER_BYTES = _SVC_HEADER.size
_RING = struct.Struct("<IQ")

# -- service -> totem ---------------------------------------------------------------------------------
SUBMIT_MCAST = 1
SUBMIT_SYNC_DONE = 2
#: pycorosync extension: a (re)started service asks totem for the current configuration (empty payload)
SUBMIT_HELLO = 3

# -- totem -> service ---------------------------------------------------------------------------------
DELIVER_MESSAGE = 1
DELIVER_CONFCHG = 2
DELIVER_SYNC_INIT = 3
DELIVER_SYNC_ACTIVATE = 4
DELIVER_SYNC_ABORT = 5
DELIVER_SYNC_COMPLETE = 6
DELIVER_NODE_STATE = 7

_MCAST = struct.Struct("<B3x")
SUBMIT_MCAST_HEADER = _MCAST  #: the SUBMIT_MCAST prefix (guarantee); the service's message follows
_MESSAGE = struct.Struct("<IIQB3x")
MESSAGE_HEADER = _MESSAGE  #: the DELIVER_MESSAGE prefix (sender, ring rep, ring seq, guarantee); the body follows
_CONFCHG = struct.Struct("<B3xIQIII")
_SYNC_INIT = struct.Struct("<IQII")
_NODE_STATE = struct.Struct("<IIQB")


class RecordError(ValueError):
    """A record between a node's own processes that does not decode (a bug: logged once, dropped)."""


def _ids(data: bytes | memoryview, offset: int, count: int, what: str) -> tuple[int, ...]:
    if count < 0 or len(data) != offset + 4 * count:
        raise RecordError(f"{what}: {len(data)} bytes cannot hold {count} node ids after {offset} bytes")
    return struct.unpack_from(f"<{count}I", data, offset)


# -- service header --------------------------------------------------------------------------------------

def service_header(service_id: int, kind: int = KIND_MESSAGE) -> bytes:
    """The 4 bytes in front of a service's Totem payload."""
    return _SVC_HEADER.pack(service_id, kind, 0)


def split_service_payload(payload: bytes | memoryview) -> tuple[int, int, memoryview]:
    """(service_id, kind, body) of a delivered Totem payload; RecordError when too short."""
    if len(payload) < SERVICE_HEADER_BYTES:
        raise RecordError(f"Totem payload of {len(payload)} bytes has no service header")
    service_id, kind, _reserved = _SVC_HEADER.unpack_from(payload)
    return service_id, kind, memoryview(payload)[SERVICE_HEADER_BYTES:]


def encode_ring(ring_id: RingId) -> bytes:
    """``u32 rep | u64 seq``: the body of a BARRIER, SUBMIT_SYNC_DONE and the sync records."""
    return _RING.pack(ring_id.rep, ring_id.seq)


def decode_ring(data: bytes | memoryview, what: str = "ring id") -> RingId:
    if len(data) != _RING.size:
        raise RecordError(f"{what}: expected {_RING.size} bytes, got {len(data)}")
    rep, seq = _RING.unpack_from(data)
    return RingId(rep, seq)


def resync_payload(service_id: int, ring_id: RingId) -> bytes:
    """The whole Totem payload of a SERVICE_BUILD: ``service_id`` restarted in ring ``ring_id`` and asks
    every member to run the sync sequence of that ring again (delivered in total order everywhere)."""
    return service_header(service_id, KIND_SERVICE_BUILD) + encode_ring(ring_id)


def barrier_payload(service_id: int, ring_id: RingId) -> bytes:
    """The whole Totem payload of a sync BARRIER for ``service_id`` in ring ``ring_id``."""
    return service_header(service_id, KIND_BARRIER) + encode_ring(ring_id)


# -- submit records ------------------------------------------------------------------------------------

def encode_submit_mcast(body: bytes | memoryview, guarantee: int) -> bytes:
    return b"".join((_MCAST.pack(guarantee), body))  # one copy of the body


def decode_submit_mcast(data: bytes | memoryview) -> tuple[int, memoryview]:
    """(guarantee, body) of a SUBMIT_MCAST payload."""
    if len(data) < _MCAST.size:
        raise RecordError(f"SUBMIT_MCAST of {len(data)} bytes has no guarantee field")
    (guarantee,) = _MCAST.unpack_from(data)
    if guarantee > 3:
        raise RecordError(f"SUBMIT_MCAST: guarantee {guarantee} is not a cpg_guarantee_t value")
    return guarantee, memoryview(data)[_MCAST.size:]


# -- deliver records -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MessageRecord:
    """DELIVER_MESSAGE: a service message in total order."""

    sender_nodeid: int
    ring_id: RingId
    guarantee: int
    body: bytes


@dataclass(frozen=True)
class ConfchgRecord:
    """DELIVER_CONFCHG: a transitional or regular configuration."""

    type: ConfigType
    ring_id: RingId
    members: tuple[int, ...]
    left: tuple[int, ...]
    joined: tuple[int, ...]


@dataclass(frozen=True)
class SyncInitRecord:
    """DELIVER_SYNC_INIT: start synchronizing for ring ``ring_id``."""

    ring_id: RingId
    members: tuple[int, ...]
    transitional: tuple[int, ...]


@dataclass(frozen=True)
class SyncRecord:
    """DELIVER_SYNC_ACTIVATE / _ABORT / _COMPLETE (``rtype`` says which)."""

    rtype: int
    ring_id: RingId


@dataclass(frozen=True)
class NodeStateRecord:
    """DELIVER_NODE_STATE: this node's id and ring, and its state (1 = in an operational ring)."""

    nodeid: int
    ring_id: RingId
    state: int


DeliverRecord = MessageRecord | ConfchgRecord | SyncInitRecord | SyncRecord | NodeStateRecord


def encode_message_header(sender_nodeid: int, ring_id: RingId, guarantee: int) -> bytes:
    """The DELIVER_MESSAGE prefix; the body follows it in the same record."""
    return _MESSAGE.pack(sender_nodeid, ring_id.rep, ring_id.seq, guarantee)


def encode_confchg(rec: ConfchgRecord) -> bytes:
    ids = (*rec.members, *rec.left, *rec.joined)
    return _CONFCHG.pack(int(rec.type), rec.ring_id.rep, rec.ring_id.seq, len(rec.members), len(rec.left),
                         len(rec.joined)) + struct.pack(f"<{len(ids)}I", *ids)


def encode_sync_init(rec: SyncInitRecord) -> bytes:
    ids = (*rec.members, *rec.transitional)
    return _SYNC_INIT.pack(rec.ring_id.rep, rec.ring_id.seq, len(rec.members), len(rec.transitional)) + struct.pack(
        f"<{len(ids)}I", *ids)


def encode_node_state(rec: NodeStateRecord) -> bytes:
    return _NODE_STATE.pack(rec.nodeid, rec.ring_id.rep, rec.ring_id.seq, rec.state)


def encode_deliver(rec: DeliverRecord) -> tuple[int, bytes]:
    """(record type, payload) of a deliver record."""
    if isinstance(rec, MessageRecord):
        return DELIVER_MESSAGE, encode_message_header(rec.sender_nodeid, rec.ring_id, rec.guarantee) + rec.body
    if isinstance(rec, ConfchgRecord):
        return DELIVER_CONFCHG, encode_confchg(rec)
    if isinstance(rec, SyncInitRecord):
        return DELIVER_SYNC_INIT, encode_sync_init(rec)
    if isinstance(rec, SyncRecord):
        return rec.rtype, encode_ring(rec.ring_id)
    return DELIVER_NODE_STATE, encode_node_state(rec)


def decode_deliver(rtype: int, data: bytes | memoryview) -> DeliverRecord:
    """Any deliver record; RecordError when it does not decode."""
    if rtype == DELIVER_MESSAGE:
        if len(data) < _MESSAGE.size:
            raise RecordError(f"DELIVER_MESSAGE of {len(data)} bytes is shorter than its header")
        sender, rep, seq, guarantee = _MESSAGE.unpack_from(data)
        return MessageRecord(sender, RingId(rep, seq), guarantee, bytes(memoryview(data)[_MESSAGE.size:]))
    if rtype == DELIVER_CONFCHG:
        if len(data) < _CONFCHG.size:
            raise RecordError(f"DELIVER_CONFCHG of {len(data)} bytes is shorter than its header")
        ctype, rep, seq, n_members, n_left, n_joined = _CONFCHG.unpack_from(data)
        if ctype not in (0, 1):
            raise RecordError(f"DELIVER_CONFCHG: configuration type {ctype} is neither 0 nor 1")
        ids = _ids(data, _CONFCHG.size, n_members + n_left + n_joined, "DELIVER_CONFCHG")
        return ConfchgRecord(ConfigType(ctype), RingId(rep, seq), ids[:n_members], ids[n_members:n_members + n_left],
                             ids[n_members + n_left:])
    if rtype == DELIVER_SYNC_INIT:
        if len(data) < _SYNC_INIT.size:
            raise RecordError(f"DELIVER_SYNC_INIT of {len(data)} bytes is shorter than its header")
        rep, seq, n_members, n_trans = _SYNC_INIT.unpack_from(data)
        ids = _ids(data, _SYNC_INIT.size, n_members + n_trans, "DELIVER_SYNC_INIT")
        return SyncInitRecord(RingId(rep, seq), ids[:n_members], ids[n_members:])
    if rtype in (DELIVER_SYNC_ACTIVATE, DELIVER_SYNC_ABORT, DELIVER_SYNC_COMPLETE):
        return SyncRecord(rtype, decode_ring(data, f"deliver record type {rtype}"))
    if rtype == DELIVER_NODE_STATE:
        if len(data) != _NODE_STATE.size:
            raise RecordError(f"DELIVER_NODE_STATE: expected {_NODE_STATE.size} bytes, got {len(data)}")
        nodeid, rep, seq, state = _NODE_STATE.unpack_from(data)
        return NodeStateRecord(nodeid, RingId(rep, seq), state)
    raise RecordError(f"unknown deliver record type {rtype}")
