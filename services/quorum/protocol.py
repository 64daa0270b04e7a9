"""The quorum and votequorum client APIs on the IPC rings of one socket, ``<run_dir>/quorum.sock``.

One service process serves both corosync APIs (quorum, service 3, and votequorum, service 5): a client
picks its API with its first request (Q_INITIALIZE or VQ_INITIALIZE). Responses are ``ipc.framing``
payloads (``u32 cs_error | body``); events are records on the connection's event ring. Little endian.

    quorum API
    Q_INITIALIZE     (empty)                        -> u32 quorum_type (QUORUM_FREE 0, QUORUM_SET 1)
    Q_GETQUORATE     (empty)                        -> u32 quorate
    Q_TRACKSTART     u32 flags (CS_TRACK_*)         -> (empty)
    Q_TRACKSTOP      (empty)                        -> (empty)          CS_ERR_NOT_EXIST when not tracking

    votequorum API (VQ_INITIALIZE: CS_ERR_LIBRARY when votequorum is not the node's quorum.provider)
    VQ_INITIALIZE    (empty)                        -> (empty)
    VQ_GETINFO       u32 nodeid (0 = this node)     -> info                 CS_ERR_NOT_EXIST for an unknown node
    VQ_SETEXPECTED   u32 expected_votes             -> (empty)              CS_ERR_INVALID_PARAM
    VQ_SETVOTES      u32 nodeid | u32 votes         -> (empty)              CS_ERR_NAME_NOT_FOUND, INVALID_PARAM
    VQ_TRACKSTART    u64 context | u32 flags        -> (empty)
    VQ_TRACKSTOP     (empty)                        -> (empty)
    VQ_QDEVICE_*     anything                       -> CS_ERR_NOT_SUPPORTED (no quorum device support)

    info = u32 node_id | u32 node_state | u32 node_votes | u32 node_expected_votes | u32 highest_expected
           | u32 total_votes | u32 quorum | u32 flags | u32 qdevice_votes | qdevice_name (UTF-8, rest)

    event Q_NOTIFY          u32 quorate | u32 rep | u64 seq | u32 n | n x u32 nodeid
    event Q_NODELIST        u32 rep | u64 seq | u32 n_members | u32 n_joined | u32 n_left | ids
    event VQ_QUORUM         u64 context | u32 quorate | u32 n | n x (u32 nodeid | u32 state)
    event VQ_NODELIST       u64 context | u32 rep | u64 seq | u32 n | n x u32 nodeid
    event VQ_EXPECTEDVOTES  u64 context | u32 expected_votes

Decoding never trusts a length: a malformed request raises CsError(CS_ERR_INVALID_PARAM); a malformed
event raises ValueError (the client drops it).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

from pycorosync.ipc.errors import CsError, CsErrorCode

from .votequorum import InfoFlag, NodeState, VoteInfo

SERVICE_NAME = "quorum"
SERVICE_ID = 3
VOTEQUORUM_SERVICE_ID = 5

QUORUM_FREE = 0
QUORUM_SET = 1

CS_TRACK_CURRENT = 0x01
CS_TRACK_CHANGES = 0x02
CS_TRACK_CHANGES_ONLY = 0x04
TRACK_FLAGS = CS_TRACK_CURRENT | CS_TRACK_CHANGES | CS_TRACK_CHANGES_ONLY

PROVIDER_VOTEQUORUM = "corosync_votequorum"
MAX_QDEVICE_NAME_BYTES = 255


class Msg(enum.IntEnum):
    """Request and event record types."""

    Q_INITIALIZE = 1
    Q_GETQUORATE = 2
    Q_TRACKSTART = 3
    Q_TRACKSTOP = 4
    VQ_INITIALIZE = 16
    VQ_GETINFO = 17
    VQ_SETEXPECTED = 18
    VQ_SETVOTES = 19
    VQ_TRACKSTART = 20
    VQ_TRACKSTOP = 21
    VQ_QDEVICE_REGISTER = 22
    VQ_QDEVICE_UNREGISTER = 23
    VQ_QDEVICE_UPDATE = 24
    VQ_QDEVICE_POLL = 25
    VQ_QDEVICE_MASTER_WINS = 26
    # events
    EV_Q_NOTIFY = 64
    EV_Q_NODELIST = 65
    EV_VQ_QUORUM = 80
    EV_VQ_NODELIST = 81
    EV_VQ_EXPECTEDVOTES = 82


QDEVICE_REQUESTS = frozenset(
    {Msg.VQ_QDEVICE_REGISTER, Msg.VQ_QDEVICE_UNREGISTER, Msg.VQ_QDEVICE_UPDATE, Msg.VQ_QDEVICE_POLL,
     Msg.VQ_QDEVICE_MASTER_WINS}
)
REQUEST_TYPES = frozenset(m for m in Msg if m < 64)

_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
_CONTEXT_FLAGS = struct.Struct("<QI")
_INFO = struct.Struct("<9I")
_Q_NOTIFY = struct.Struct("<IIQI")
_Q_NODELIST = struct.Struct("<IQIII")
_VQ_QUORUM = struct.Struct("<QII")
_VQ_NODELIST = struct.Struct("<QIQI")
_VQ_EXPECTED = struct.Struct("<QI")


def _invalid(what: str) -> CsError:
    return CsError(CsErrorCode.CS_ERR_INVALID_PARAM, what)


def _ids(data: bytes | memoryview, offset: int, n: int, what: str) -> tuple[int, ...]:
    if n < 0 or len(data) != offset + 4 * n:
        raise ValueError(f"{what}: {len(data)} bytes do not hold {n} node ids")
    return struct.unpack_from(f"<{n}I", data, offset)


# -- requests -------------------------------------------------------------------------------------------
def encode_u32(value: int) -> bytes:
    """One u32 (request payloads and response bodies)."""
    return _U32.pack(value)


def decode_u32(payload: bytes, what: str) -> int:
    """One u32; CS_ERR_INVALID_PARAM for any other length."""
    if len(payload) != _U32.size:
        raise _invalid(f"{what}: {len(payload)} bytes, expected 4")
    return int(_U32.unpack(payload)[0])


def encode_setvotes(nodeid: int, votes: int) -> bytes:
    """VQ_SETVOTES payload."""
    return _U32X2.pack(nodeid, votes)


def decode_setvotes(payload: bytes) -> tuple[int, int]:
    """(nodeid, votes) of VQ_SETVOTES."""
    if len(payload) != _U32X2.size:
        raise _invalid(f"VQ_SETVOTES: {len(payload)} bytes, expected 8")
    nodeid, votes = _U32X2.unpack(payload)
    return int(nodeid), int(votes)


def encode_vq_trackstart(context: int, flags: int) -> bytes:
    """VQ_TRACKSTART payload."""
    return _CONTEXT_FLAGS.pack(context, flags)


def decode_vq_trackstart(payload: bytes) -> tuple[int, int]:
    """(context, flags) of VQ_TRACKSTART."""
    if len(payload) != _CONTEXT_FLAGS.size:
        raise _invalid(f"VQ_TRACKSTART: {len(payload)} bytes, expected 12")
    context, flags = _CONTEXT_FLAGS.unpack(payload)
    return int(context), int(flags)


def encode_info(info: VoteInfo) -> bytes:
    """The VQ_GETINFO response body."""
    name = info.qdevice_name.encode("utf-8")[:MAX_QDEVICE_NAME_BYTES]
    return _INFO.pack(
        info.node_id, int(info.node_state), info.node_votes, info.node_expected_votes, info.highest_expected,
        info.total_votes, info.quorum, int(info.flags), info.qdevice_votes,
    ) + name


def decode_info(body: bytes) -> VoteInfo:
    """The VoteInfo of a VQ_GETINFO response; ValueError when malformed."""
    if len(body) < _INFO.size or len(body) > _INFO.size + MAX_QDEVICE_NAME_BYTES:
        raise ValueError(f"votequorum info of {len(body)} bytes")
    node_id, state, votes, expected, highest, total, quorum, flags, qd_votes = _INFO.unpack_from(body)
    return VoteInfo(
        node_id=node_id, node_state=NodeState(state), node_votes=votes, node_expected_votes=expected,
        highest_expected=highest, total_votes=total, quorum=quorum, flags=InfoFlag(flags),
        qdevice_votes=qd_votes, qdevice_name=body[_INFO.size:].decode("utf-8", "replace"),
    )


# -- events ---------------------------------------------------------------------------------------------
def encode_q_notify(quorate: bool, ring_id: tuple[int, int], members: Sequence[int]) -> bytes:
    """EV_Q_NOTIFY."""
    return _Q_NOTIFY.pack(int(quorate), ring_id[0], ring_id[1], len(members)) + struct.pack(
        f"<{len(members)}I", *members
    )


def decode_q_notify(payload: bytes) -> tuple[bool, tuple[int, int], tuple[int, ...]]:
    """(quorate, ring_id, members) of EV_Q_NOTIFY."""
    if len(payload) < _Q_NOTIFY.size:
        raise ValueError("quorum notification too short")
    quorate, rep, seq, n = _Q_NOTIFY.unpack_from(payload)
    return bool(quorate), (rep, seq), _ids(payload, _Q_NOTIFY.size, n, "quorum notification")


def encode_q_nodelist(
    ring_id: tuple[int, int], members: Sequence[int], joined: Sequence[int], left: Sequence[int]
) -> bytes:
    """EV_Q_NODELIST."""
    ids = (*members, *joined, *left)
    return _Q_NODELIST.pack(ring_id[0], ring_id[1], len(members), len(joined), len(left)) + struct.pack(
        f"<{len(ids)}I", *ids
    )


def decode_q_nodelist(
    payload: bytes,
) -> tuple[tuple[int, int], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(ring_id, members, joined, left) of EV_Q_NODELIST."""
    if len(payload) < _Q_NODELIST.size:
        raise ValueError("quorum nodelist notification too short")
    rep, seq, n_members, n_joined, n_left = _Q_NODELIST.unpack_from(payload)
    ids = _ids(payload, _Q_NODELIST.size, n_members + n_joined + n_left, "quorum nodelist notification")
    return (rep, seq), ids[:n_members], ids[n_members:n_members + n_joined], ids[n_members + n_joined:]


def encode_vq_quorum(context: int, quorate: bool, nodes: Sequence[tuple[int, int]]) -> bytes:
    """EV_VQ_QUORUM: ``nodes`` are (nodeid, NodeState)."""
    flat = [value for node in nodes for value in (node[0], int(node[1]))]
    return _VQ_QUORUM.pack(context, int(quorate), len(nodes)) + struct.pack(f"<{len(flat)}I", *flat)


def decode_vq_quorum(payload: bytes) -> tuple[int, bool, tuple[tuple[int, NodeState], ...]]:
    """(context, quorate, ((nodeid, state), ...)) of EV_VQ_QUORUM."""
    if len(payload) < _VQ_QUORUM.size:
        raise ValueError("votequorum quorum notification too short")
    context, quorate, n = _VQ_QUORUM.unpack_from(payload)
    flat = _ids(payload, _VQ_QUORUM.size, 2 * n, "votequorum quorum notification")
    return context, bool(quorate), tuple((flat[i], NodeState(flat[i + 1])) for i in range(0, len(flat), 2))


def encode_vq_nodelist(context: int, ring_id: tuple[int, int], members: Sequence[int]) -> bytes:
    """EV_VQ_NODELIST."""
    return _VQ_NODELIST.pack(context, ring_id[0], ring_id[1], len(members)) + struct.pack(
        f"<{len(members)}I", *members
    )


def decode_vq_nodelist(payload: bytes) -> tuple[int, tuple[int, int], tuple[int, ...]]:
    """(context, ring_id, members) of EV_VQ_NODELIST."""
    if len(payload) < _VQ_NODELIST.size:
        raise ValueError("votequorum nodelist notification too short")
    context, rep, seq, n = _VQ_NODELIST.unpack_from(payload)
    return context, (rep, seq), _ids(payload, _VQ_NODELIST.size, n, "votequorum nodelist notification")


def encode_vq_expected(context: int, expected_votes: int) -> bytes:
    """EV_VQ_EXPECTEDVOTES."""
    return _VQ_EXPECTED.pack(context, expected_votes)


def decode_vq_expected(payload: bytes) -> tuple[int, int]:
    """(context, expected_votes) of EV_VQ_EXPECTEDVOTES."""
    if len(payload) != _VQ_EXPECTED.size:
        raise ValueError("votequorum expected votes notification malformed")
    context, expected = _VQ_EXPECTED.unpack(payload)
    return int(context), int(expected)
