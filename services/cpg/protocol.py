"""cpg's messages: client requests, responses and events (IPC), and cluster messages (Totem).

Client requests are records on the connection's request ring (record type = ``CpgMsg``); responses are
``ipc.framing`` payloads (``u32 cs_error | body``). Events are records on the event ring. All integers
little endian; a group name is ``u16 length | bytes`` (arbitrary bytes, at most 128).

    JOIN            u32 model flags | name                       -> (empty)
    LEAVE           name                                         -> (empty)
    MCAST           u8 guarantee | u8 piece | u16 0 | u32 total | data   -> (empty)
                    piece: FIRST 1, LAST 2 (a whole message is 3); a message larger than the request ring
                    goes as FIRST, middle pieces (0), LAST; the service multicasts it whole at LAST
    MEMBERSHIP_GET  name                                         -> u32 n | n x address
    LOCAL_GET       (empty)                                      -> u32 nodeid
    ITER_INIT       u32 iteration type | name                    -> u64 handle
    ITER_NEXT       u64 handle                                   -> u32 n | n x (u32 nodeid | u32 pid | name)
                                                                    (CS_ERR_NO_SECTIONS at the end)
    ITER_FINALIZE   u64 handle                                   -> (empty)
    FLOW_CONTROL_GET (empty)                                     -> u32 state (0 DISABLED, 1 ENABLED)
    MCAST_ASYNC     as MCAST, one whole message                  -> no response (pipelined: the client
                    does not wait; a full request ring is its CS_ERR_TRY_AGAIN, as libcpg's flow control)

    address = u32 nodeid | u32 pid | u32 reason

    event DELIVER        u32 nodeid | u32 pid | u8 piece | u8 guarantee | u16 0 | u32 total | name | data
                         (pieces of one message are consecutive on the event ring)
    event CONFCHG        u32 n_members | u32 n_left | u32 n_joined | name | addresses (members, left, joined)
    event TOTEM_CONFCHG  u32 rep | u64 seq | u32 n | n x u32 nodeid

Cluster messages (the body after the runtime's 4-byte service header), ids as corosync's exec ids:

    PROCJOIN 0 / PROCLEAVE 1   u8 id | u8 0 | u16 0 | u32 pid | u32 reason | name
    JOINLIST 2                 u8 id | 3 x 0 | u32 rep | u64 seq | u32 n | n x (u32 pid | stamp | name)
                               stamp = u64 ring seq | u32 ring rep | u32 index: where the PROCJOIN was
                               delivered (the same at every node that delivered it; all ones = not yet)
    MCAST 3                    u8 id | u8 guarantee | u16 0 | u32 pid | name | data
    DOWNLIST 5                 u8 id | 3 x 0 | u32 rep | u64 seq | u32 n | n x u32 nodeid

Decoding never trusts a length: a malformed request raises CsError(CS_ERR_INVALID_PARAM) (a name over 128
bytes CS_ERR_NAME_TOO_LONG); a malformed cluster message raises ``MalformedMessage``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pycorosync.ipc.errors import CsError, CsErrorCode

SERVICE_NAME = "cpg"
SERVICE_ID = 2

CPG_MAX_NAME_LENGTH = 128
CPG_MEMBERS_MAX = 128
# Totem delivers messages up to 16 MiB whole; the service header (4 bytes) and the MCAST header with the
# longest name come off that
TOTEM_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_HEADER_BYTES = 4

CPG_MODEL_V1 = 1
CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF = 0x01

CPG_FLOW_CONTROL_DISABLED = 0
CPG_FLOW_CONTROL_ENABLED = 1

PIECE_FIRST = 1
PIECE_LAST = 2
PIECE_WHOLE = PIECE_FIRST | PIECE_LAST


class CpgGuarantee(enum.IntEnum):
    """``cpg_guarantee_t``."""

    CPG_TYPE_UNORDERED = 0
    CPG_TYPE_FIFO = 1
    CPG_TYPE_AGREED = 2
    CPG_TYPE_SAFE = 3


class CpgReason(enum.IntEnum):
    """``cpg_reason_t``: why a process is in a confchg list (UNDEFINED in member lists)."""

    CPG_REASON_UNDEFINED = 0
    CPG_REASON_JOIN = 1
    CPG_REASON_LEAVE = 2
    CPG_REASON_NODEDOWN = 3
    CPG_REASON_NODEUP = 4
    CPG_REASON_PROCDOWN = 5


class CpgIterationType(enum.IntEnum):
    """``cpg_iteration_type_t``."""

    CPG_ITERATION_NAME_ONLY = 1
    CPG_ITERATION_ONE_GROUP = 2
    CPG_ITERATION_ALL = 3


class CpgMsg(enum.IntEnum):
    """Request ids (request ring) and event ids (event ring)."""

    JOIN = 1
    LEAVE = 2
    MCAST = 3
    MEMBERSHIP_GET = 4
    LOCAL_GET = 5
    ITER_INIT = 6
    ITER_NEXT = 7
    ITER_FINALIZE = 8
    FLOW_CONTROL_GET = 9
    MCAST_ASYNC = 10
    EV_DELIVER = 100
    EV_CONFCHG = 101
    EV_TOTEM_CONFCHG = 102


class ExecMsg(enum.IntEnum):
    """Cluster message ids (corosync's MESSAGE_REQ_EXEC_CPG_* numbers)."""

    PROCJOIN = 0
    PROCLEAVE = 1
    JOINLIST = 2
    MCAST = 3
    DOWNLIST = 5


MCAST_HEADER_BYTES = 8 + 2 + CPG_MAX_NAME_LENGTH  # cluster MCAST header with the longest name
MAX_ATOMIC_MSGSIZE = TOTEM_MAX_MESSAGE_BYTES - SERVICE_HEADER_BYTES - MCAST_HEADER_BYTES


class MalformedMessage(ValueError):
    """A cluster message that does not decode (counted and dropped by the service)."""


@dataclass(frozen=True, order=True)
class Address:
    """``cpg_address``: one process of a group, with the reason it is listed."""

    nodeid: int
    pid: int
    reason: int = 0


# -- primitives ------------------------------------------------------------------------------------
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")
_ADDR = struct.Struct("<III")
_JOIN = struct.Struct("<I")
_MCAST_REQ = struct.Struct("<BBHI")
MCAST_REQ_HEAD = _MCAST_REQ  #: an MCAST request's header (guarantee, piece, 0, total); the data follows
_DELIVER = struct.Struct("<IIBBHI")
DELIVER_HEAD = _DELIVER  #: the DELIVER event header (nodeid, pid, piece, guarantee, 0, total); name and data follow
_CONFCHG = struct.Struct("<III")
_TOTEM = struct.Struct("<IQI")
_PROC = struct.Struct("<BBHII")
_LIST_HEAD = struct.Struct("<BBHIQI")
_EXEC_MCAST = struct.Struct("<BBHI")
EXEC_MCAST_HEAD = _EXEC_MCAST  #: a cluster MCAST's header (id, guarantee, 0, pid); the name and the data follow
_JOIN_ENTRY = struct.Struct("<IQII")

Buf = bytes | bytearray | memoryview


def _bad(what: str) -> CsError:
    return CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"malformed cpg request: {what}")


def encode_name(name: bytes) -> bytes:
    """``u16 length | bytes``; CS_ERR_NAME_TOO_LONG over 128 bytes."""
    if len(name) > CPG_MAX_NAME_LENGTH:
        raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, f"group name of {len(name)} bytes (at most 128)")
    return _U16.pack(len(name)) + name


def _take_name(data: Buf, pos: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > len(data):
        raise _bad(f"{what}: name length runs past the message")
    n = _U16.unpack_from(data, pos)[0]
    pos += 2
    if pos + n > len(data):
        raise _bad(f"{what}: name runs past the message")
    if n > CPG_MAX_NAME_LENGTH:
        raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, f"{what}: group name of {n} bytes (at most 128)")
    return bytes(data[pos:pos + n]), pos + n


def decode_name(data: Buf, what: str = "name") -> bytes:
    """A payload that is exactly one name."""
    name, pos = _take_name(data, 0, what)
    if pos != len(data):
        raise _bad(f"{what}: {len(data) - pos} bytes after the name")
    return name


def _check_addresses(count: int, data: Buf, pos: int, what: str) -> None:
    if count > (len(data) - pos) // _ADDR.size or pos + count * _ADDR.size != len(data):
        raise _bad(f"{what}: {count} addresses do not match {len(data) - pos} bytes")


def encode_addresses(addrs: list[Address] | tuple[Address, ...]) -> bytes:
    """n x ``u32 nodeid | u32 pid | u32 reason``."""
    return b"".join(_ADDR.pack(a.nodeid, a.pid, a.reason) for a in addrs)


def _decode_addresses(data: Buf, pos: int, count: int) -> tuple[list[Address], int]:
    out = [Address(*_ADDR.unpack_from(data, pos + i * _ADDR.size)) for i in range(count)]
    return out, pos + count * _ADDR.size


# -- requests --------------------------------------------------------------------------------------
def encode_join(name: bytes, flags: int) -> bytes:
    """JOIN payload."""
    return _JOIN.pack(flags) + encode_name(name)


def decode_join(payload: Buf) -> tuple[bytes, int]:
    """(name, flags) of a JOIN."""
    if len(payload) < _JOIN.size:
        raise _bad("JOIN shorter than its header")
    flags = _JOIN.unpack_from(payload)[0]
    return decode_name(payload[_JOIN.size:], "JOIN"), flags


def encode_mcast_piece(guarantee: int, piece: int, total: int, data: Buf) -> bytes:
    """MCAST request payload (one piece)."""
    return b"".join((_MCAST_REQ.pack(guarantee, piece, 0, total), data))  # one copy of the data


def decode_mcast_piece(payload: Buf) -> tuple[int, int, int, memoryview]:
    """(guarantee, piece, total, data) of a MCAST request."""
    if len(payload) < _MCAST_REQ.size:
        raise _bad("MCAST shorter than its header")
    guarantee, piece, _, total = _MCAST_REQ.unpack_from(payload)
    if guarantee > CpgGuarantee.CPG_TYPE_SAFE:
        raise _bad(f"MCAST guarantee {guarantee}")
    if piece > PIECE_WHOLE:
        raise _bad(f"MCAST piece flags {piece}")
    data = memoryview(payload)[_MCAST_REQ.size:]
    if piece == PIECE_WHOLE and len(data) != total:
        raise _bad(f"MCAST of {len(data)} bytes announces {total}")
    return guarantee, piece, total, data


def encode_u32(value: int) -> bytes:
    """LOCAL_GET / FLOW_CONTROL_GET responses."""
    return _U32.pack(value)


def decode_u32(data: Buf) -> int:
    """Inverse of ``encode_u32``."""
    if len(data) != 4:
        raise _bad(f"u32 of {len(data)} bytes")
    value: int = _U32.unpack(data)[0]
    return value


def encode_u64(value: int) -> bytes:
    """Iterator handles."""
    return _U64.pack(value)


def decode_u64(data: Buf) -> int:
    """Inverse of ``encode_u64``."""
    if len(data) != 8:
        raise _bad(f"handle of {len(data)} bytes, expected 8")
    value: int = _U64.unpack(data)[0]
    return value


def encode_iter_init(itype: int, name: bytes) -> bytes:
    """ITER_INIT payload."""
    return _U32.pack(itype) + encode_name(name)


def decode_iter_init(payload: Buf) -> tuple[int, bytes]:
    """(iteration type, name) of ITER_INIT; CS_ERR_INVALID_PARAM for an unknown type."""
    if len(payload) < 4:
        raise _bad("ITER_INIT shorter than its header")
    itype = _U32.unpack_from(payload)[0]
    if itype not in (1, 2, 3):
        raise _bad(f"iteration type {itype}")
    return itype, decode_name(payload[4:], "ITER_INIT")


def encode_member_list(addrs: list[Address] | tuple[Address, ...]) -> bytes:
    """MEMBERSHIP_GET response."""
    return _U32.pack(len(addrs)) + encode_addresses(addrs)


def decode_member_list(body: Buf) -> list[Address]:
    """Inverse of ``encode_member_list``."""
    if len(body) < 4:
        raise _bad("member list shorter than its count")
    count = _U32.unpack_from(body)[0]
    _check_addresses(count, body, 4, "member list")
    return _decode_addresses(body, 4, count)[0]


def encode_iter_items(items: list[tuple[bytes, int, int]]) -> bytes:
    """ITER_NEXT response: (group, nodeid, pid) items."""
    parts = [_U32.pack(len(items))]
    for group, nodeid, pid in items:
        parts.append(_U32.pack(nodeid) + _U32.pack(pid) + encode_name(group))
    return b"".join(parts)


def decode_iter_items(body: Buf) -> list[tuple[bytes, int, int]]:
    """Inverse of ``encode_iter_items``."""
    if len(body) < 4:
        raise _bad("iteration batch shorter than its count")
    count = _U32.unpack_from(body)[0]
    pos = 4
    out: list[tuple[bytes, int, int]] = []
    for _ in range(count):
        if pos + 8 > len(body):
            raise _bad("iteration item runs past the message")
        nodeid, pid = struct.unpack_from("<II", body, pos)
        name, pos = _take_name(body, pos + 8, "iteration item")
        out.append((name, nodeid, pid))
    if pos != len(body):
        raise _bad("bytes after the iteration items")
    return out


# -- events ----------------------------------------------------------------------------------------
def encode_deliver_head(nodeid: int, pid: int, piece: int, guarantee: int, total: int, group: bytes) -> bytes:
    """The header of a DELIVER event (the data follows it)."""
    return _DELIVER.pack(nodeid, pid, piece, guarantee, 0, total) + encode_name(group)


def decode_deliver(payload: Buf) -> tuple[int, int, int, int, int, bytes, memoryview]:
    """(nodeid, pid, piece, guarantee, total, group, data) of a DELIVER event."""
    if len(payload) < _DELIVER.size:
        raise _bad("DELIVER shorter than its header")
    nodeid, pid, piece, guarantee, _, total = _DELIVER.unpack_from(payload)
    group, pos = _take_name(payload, _DELIVER.size, "DELIVER")
    return nodeid, pid, piece, guarantee, total, group, memoryview(payload)[pos:]


def encode_confchg(group: bytes, members: list[Address], left: list[Address], joined: list[Address]) -> bytes:
    """CONFCHG event."""
    return (_CONFCHG.pack(len(members), len(left), len(joined)) + encode_name(group)
            + encode_addresses(members) + encode_addresses(left) + encode_addresses(joined))


def decode_confchg(payload: Buf) -> tuple[bytes, list[Address], list[Address], list[Address]]:
    """(group, members, left, joined) of a CONFCHG event."""
    if len(payload) < _CONFCHG.size:
        raise _bad("CONFCHG shorter than its header")
    nm, nl, nj = _CONFCHG.unpack_from(payload)
    group, pos = _take_name(payload, _CONFCHG.size, "CONFCHG")
    _check_addresses(nm + nl + nj, payload, pos, "CONFCHG")
    members, pos = _decode_addresses(payload, pos, nm)
    left, pos = _decode_addresses(payload, pos, nl)
    joined, _ = _decode_addresses(payload, pos, nj)
    return group, members, left, joined


def encode_totem_confchg(rep: int, seq: int, members: list[int] | tuple[int, ...]) -> bytes:
    """TOTEM_CONFCHG event."""
    return _TOTEM.pack(rep, seq, len(members)) + b"".join(_U32.pack(m) for m in members)


def decode_totem_confchg(payload: Buf) -> tuple[int, int, list[int]]:
    """(rep, seq, members) of a TOTEM_CONFCHG event."""
    if len(payload) < _TOTEM.size:
        raise _bad("TOTEM_CONFCHG shorter than its header")
    rep, seq, n = _TOTEM.unpack_from(payload)
    if _TOTEM.size + 4 * n != len(payload):
        raise _bad(f"TOTEM_CONFCHG of {n} members in {len(payload)} bytes")
    return rep, seq, [_U32.unpack_from(payload, _TOTEM.size + 4 * i)[0] for i in range(n)]


# -- cluster messages ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcJoin:
    """PROCJOIN: process ``pid`` of the sending node joins ``group``."""

    group: bytes
    pid: int
    reason: int = CpgReason.CPG_REASON_JOIN


@dataclass(frozen=True)
class ProcLeave:
    """PROCLEAVE: process ``pid`` of the sending node leaves ``group`` (LEAVE, or PROCDOWN when it died)."""

    group: bytes
    pid: int
    reason: int = CpgReason.CPG_REASON_LEAVE


Stamp = tuple[int, int, int]  # (ring seq, ring rep, index of the PROCJOIN among that ring's deliveries)
STAMP_PENDING: Stamp = (2**64 - 1, 2**32 - 1, 2**32 - 1)


@dataclass(frozen=True)
class JoinList:
    """JOINLIST: every (pid, group, join stamp) of the sending node, sent during sync of ring (rep, seq)."""

    rep: int
    seq: int
    entries: tuple[tuple[int, bytes, Stamp], ...]


@dataclass(frozen=True)
class DownList:
    """DOWNLIST: the nodes the sender saw leave (informational, as in corosync 3)."""

    rep: int
    seq: int
    nodeids: tuple[int, ...]


@dataclass(frozen=True)
class Mcast:
    """MCAST: a message of process ``pid`` of the sending node to ``group``."""

    group: bytes
    pid: int
    guarantee: int
    data: bytes | memoryview


ClusterMessage = ProcJoin | ProcLeave | JoinList | DownList | Mcast


def encode_cluster(msg: ClusterMessage) -> bytes:
    """The body of a cluster message."""
    if isinstance(msg, (ProcJoin, ProcLeave)):
        mid = ExecMsg.PROCJOIN if isinstance(msg, ProcJoin) else ExecMsg.PROCLEAVE
        return _PROC.pack(mid, 0, 0, msg.pid, msg.reason) + encode_name(msg.group)
    if isinstance(msg, Mcast):
        return b"".join((_EXEC_MCAST.pack(ExecMsg.MCAST, msg.guarantee, 0, msg.pid), encode_name(msg.group), msg.data))
    if isinstance(msg, JoinList):
        parts = [_LIST_HEAD.pack(ExecMsg.JOINLIST, 0, 0, msg.rep, msg.seq, len(msg.entries))]
        parts += [_JOIN_ENTRY.pack(pid, *stamp) + encode_name(group) for pid, group, stamp in msg.entries]
        return b"".join(parts)
    parts = [_LIST_HEAD.pack(ExecMsg.DOWNLIST, 0, 0, msg.rep, msg.seq, len(msg.nodeids))]
    parts += [_U32.pack(n) for n in msg.nodeids]
    return b"".join(parts)


def _cluster_name(data: Buf, pos: int, what: str) -> tuple[bytes, int]:
    try:
        return _take_name(data, pos, what)
    except CsError as exc:
        raise MalformedMessage(str(exc)) from None


def decode_cluster(body: Buf) -> ClusterMessage:
    """Inverse of ``encode_cluster``; MalformedMessage for anything that does not decode exactly."""
    if len(body) < 4:
        raise MalformedMessage(f"cpg message of {len(body)} bytes")
    mid = body[0]
    if mid in (ExecMsg.PROCJOIN, ExecMsg.PROCLEAVE):
        if len(body) < _PROC.size:
            raise MalformedMessage("PROCJOIN/PROCLEAVE shorter than its header")
        _, _, _, pid, reason = _PROC.unpack_from(body)
        group, pos = _cluster_name(body, _PROC.size, "PROCJOIN/PROCLEAVE")
        if pos != len(body):
            raise MalformedMessage("bytes after a PROCJOIN/PROCLEAVE")
        if reason > CpgReason.CPG_REASON_PROCDOWN:
            raise MalformedMessage(f"reason {reason}")
        return ProcJoin(group, pid, reason) if mid == ExecMsg.PROCJOIN else ProcLeave(group, pid, reason)
    if mid == ExecMsg.MCAST:
        if len(body) < _EXEC_MCAST.size:
            raise MalformedMessage("MCAST shorter than its header")
        _, guarantee, _, pid = _EXEC_MCAST.unpack_from(body)
        group, pos = _cluster_name(body, _EXEC_MCAST.size, "MCAST")
        return Mcast(group, pid, guarantee, memoryview(body)[pos:])
    if mid in (ExecMsg.JOINLIST, ExecMsg.DOWNLIST):
        if len(body) < _LIST_HEAD.size:
            raise MalformedMessage("JOINLIST/DOWNLIST shorter than its header")
        _, _, _, rep, seq, count = _LIST_HEAD.unpack_from(body)
        pos = _LIST_HEAD.size
        if mid == ExecMsg.DOWNLIST:
            if pos + 4 * count != len(body):
                raise MalformedMessage(f"DOWNLIST of {count} nodes in {len(body)} bytes")
            return DownList(rep, seq, tuple(_U32.unpack_from(body, pos + 4 * i)[0] for i in range(count)))
        if count > (len(body) - pos) // (_JOIN_ENTRY.size + 2):
            raise MalformedMessage(f"JOINLIST of {count} entries in {len(body)} bytes")
        entries = []
        for _ in range(count):
            if pos + _JOIN_ENTRY.size > len(body):
                raise MalformedMessage("JOINLIST entry runs past the message")
            pid, stamp_seq, stamp_rep, stamp_index = _JOIN_ENTRY.unpack_from(body, pos)
            group, pos = _cluster_name(body, pos + _JOIN_ENTRY.size, "JOINLIST")
            entries.append((pid, group, (stamp_seq, stamp_rep, stamp_index)))
        if pos != len(body):
            raise MalformedMessage("bytes after the JOINLIST entries")
        return JoinList(rep, seq, tuple(entries))
    raise MalformedMessage(f"unknown cpg message id {mid}")
