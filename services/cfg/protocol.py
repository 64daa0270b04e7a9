"""The cfg service's messages: client requests and responses, the dispatch event, and the cluster messages.

Request types keep corosync's ``cfg_lib_engine`` numbering; cluster message kinds keep its exec ids.
Every response is ``ipc.framing`` (``u32 cs_error | body``). All integers little-endian.

| request | payload | response body |
|---|---|---|
| RINGSTATUSGET 0 | — | ``u32 n`` + n x (str name, str status) |
| KILLNODE 2 | ``u32 nodeid`` + reason (UTF-8, at most 255 bytes) | — |
| TRYSHUTDOWN 3 | ``u32 flags`` | — (sent once decided) |
| REPLYTOSHUTDOWN 4 | ``u32 response`` (0 no, 1 yes) | — |
| GET_NODE_ADDRS 5 | ``u32 nodeid`` (0 = local) | ``u32 n`` + n x str address |
| LOCAL_GET 6 | — | ``u32 nodeid`` |
| RELOAD_CONFIG 7 | — | — (sent once this node reloaded) |
| REOPEN_LOG_FILES 8 | — | — |
| NODESTATUSGET 9 | ``u32 nodeid, u32 version`` | node status (``encode_node_status``) |
| TRACKSTART 10 | ``u32 flags`` | — |
| TRACKSTOP 11 | — | — |

``str`` = ``u16 length`` + UTF-8. Event ``EV_TESTSHUTDOWN`` (``u32 status, u32 flags``): a shutdown was
requested (status CS_OK; answer with REPLYTOSHUTDOWN) or the request timed out (CS_ERR_TIMEOUT).

Cluster messages (Totem, SAFE): ``u8 kind | 3 pad`` + KILLNODE ``u32 nodeid, str reason`` | SHUTDOWN — |
RELOAD_CONFIG ``u64 request id``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pycorosync.ipc.errors import CsError, CsErrorCode

SERVICE_ID = 1
SERVICE_NAME = "cfg"

COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST = 0
COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS = 1
COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE = 2
SHUTDOWN_FLAGS = (0, 1, 2)
COROSYNC_CFG_SHUTDOWN_FLAG_NO = 0
COROSYNC_CFG_SHUTDOWN_FLAG_YES = 1
CFG_NODE_STATUS_V1 = 1
CFG_MAX_LINKS = 8
CFG_MAX_HOST_LEN = 256
MAX_REASON_BYTES = 255  # cs_name_t holds 256 bytes with the terminating NUL
DEFAULT_SHUTDOWN_TIMEOUT_MS = 5000


class CfgMsg(enum.IntEnum):
    """Client request types (corosync's lib handler numbers) and the dispatch event."""

    RINGSTATUSGET = 0
    RINGREENABLE = 1
    KILLNODE = 2
    TRYSHUTDOWN = 3
    REPLYTOSHUTDOWN = 4
    GET_NODE_ADDRS = 5
    LOCAL_GET = 6
    RELOAD_CONFIG = 7
    REOPEN_LOG_FILES = 8
    NODESTATUSGET = 9
    TRACKSTART = 10
    TRACKSTOP = 11
    EV_TESTSHUTDOWN = 100


class ExecKind(enum.IntEnum):
    """Cluster message kinds (corosync's exec handler numbers)."""

    RINGREENABLE = 0
    KILLNODE = 1
    SHUTDOWN = 2
    RELOAD_CONFIG = 3


class ProtocolError(ValueError):
    """A message that does not decode (a bug or a hostile peer): counted and dropped, never fatal."""


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_TWO_U32 = struct.Struct("<II")
_U16 = struct.Struct("<H")
_EXEC_HEAD = struct.Struct("<B3x")
_STATUS_HEAD = struct.Struct("<IIBBBBBBBx")  # version, nodeid, reachable, remote, external, onwire min/max/ver, n_links
_LINK_HEAD = struct.Struct("<BBBxI")  # enabled, connected, dynconnected, mtu


def _invalid(what: str) -> CsError:
    return CsError(CsErrorCode.CS_ERR_INVALID_PARAM, what)


# -- small pieces ---------------------------------------------------------------------------------------
def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(payload: bytes, what: str) -> int:
    """One u32 payload; CS_ERR_INVALID_PARAM when it has another size."""
    if len(payload) != _U32.size:
        raise _invalid(f"{what}: expected 4 bytes, got {len(payload)}")
    return int(_U32.unpack(payload)[0])


def encode_two_u32(a: int, b: int) -> bytes:
    return _TWO_U32.pack(a, b)


def decode_two_u32(payload: bytes, what: str) -> tuple[int, int]:
    if len(payload) != _TWO_U32.size:
        raise _invalid(f"{what}: expected 8 bytes, got {len(payload)}")
    a, b = _TWO_U32.unpack(payload)
    return int(a), int(b)


def encode_str(text: str) -> bytes:
    raw = text.encode("utf-8")[:0xFFFF]
    return _U16.pack(len(raw)) + raw


def _decode_str(buf: bytes, off: int, what: str) -> tuple[str, int]:
    if off + _U16.size > len(buf):
        raise ProtocolError(f"{what}: string length cut off at byte {off}")
    (n,) = _U16.unpack_from(buf, off)
    off += _U16.size
    if off + n > len(buf):
        raise ProtocolError(f"{what}: string of {n} bytes cut off at byte {off}")
    return buf[off : off + n].decode("utf-8", "replace"), off + n


def encode_str_list(items: list[str]) -> bytes:
    return _U32.pack(len(items)) + b"".join(encode_str(s) for s in items)


def decode_str_list(buf: bytes, what: str) -> list[str]:
    if len(buf) < _U32.size:
        raise ProtocolError(f"{what}: no count")
    (n,) = _U32.unpack_from(buf, 0)
    off, out = _U32.size, []
    for _ in range(n):
        s, off = _decode_str(buf, off, what)
        out.append(s)
    return out


# -- requests -------------------------------------------------------------------------------------------
def encode_killnode(nodeid: int, reason: str) -> bytes:
    raw = reason.encode("utf-8")
    if len(raw) > MAX_REASON_BYTES:
        raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, f"kill reason of {len(raw)} bytes (at most {MAX_REASON_BYTES})")
    return _U32.pack(nodeid) + raw


def decode_killnode(payload: bytes) -> tuple[int, str]:
    if len(payload) < _U32.size or len(payload) > _U32.size + MAX_REASON_BYTES:
        raise _invalid(f"KILLNODE: {len(payload)} bytes")
    return int(_U32.unpack_from(payload, 0)[0]), payload[_U32.size :].decode("utf-8", "replace")


# -- node status ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CfgLinkStatus:
    """One link of a node as ``corosync_cfg_node_status_get`` reports it (``corosync_knet_link_status_v1``)."""

    enabled: bool = False
    connected: bool = False
    dynconnected: bool = False
    mtu: int = 0
    src_ipaddr: str = ""
    dst_ipaddr: str = ""


@dataclass(frozen=True)
class CfgNodeStatus:
    """``corosync_cfg_node_status_v1``: reachability and the ``CFG_MAX_LINKS`` links of one node."""

    version: int
    nodeid: int
    reachable: bool
    remote: bool = False
    external: bool = False
    onwire_min: int = 0
    onwire_max: int = 0
    onwire_ver: int = 0
    link_status: tuple[CfgLinkStatus, ...] = ()

    def link(self, number: int) -> CfgLinkStatus:
        """Link ``number`` (a disabled one when the node has no such link)."""
        return self.link_status[number] if 0 <= number < len(self.link_status) else CfgLinkStatus()


def encode_node_status(st: CfgNodeStatus) -> bytes:
    links = st.link_status[:CFG_MAX_LINKS]
    out = [_STATUS_HEAD.pack(st.version, st.nodeid, st.reachable, st.remote, st.external, st.onwire_min,
                             st.onwire_max, st.onwire_ver, len(links))]
    for ln in links:
        out.append(_LINK_HEAD.pack(ln.enabled, ln.connected, ln.dynconnected, ln.mtu))
        out.append(encode_str(ln.src_ipaddr[:CFG_MAX_HOST_LEN]) + encode_str(ln.dst_ipaddr[:CFG_MAX_HOST_LEN]))
    return b"".join(out)


def decode_node_status(buf: bytes) -> CfgNodeStatus:
    if len(buf) < _STATUS_HEAD.size:
        raise ProtocolError(f"node status: {len(buf)} bytes, header needs {_STATUS_HEAD.size}")
    version, nodeid, reach, remote, ext, wmin, wmax, wver, n = _STATUS_HEAD.unpack_from(buf, 0)
    off = _STATUS_HEAD.size
    links = []
    for _ in range(min(n, CFG_MAX_LINKS)):
        if off + _LINK_HEAD.size > len(buf):
            raise ProtocolError("node status: link cut off")
        enabled, connected, dyn, mtu = _LINK_HEAD.unpack_from(buf, off)
        off += _LINK_HEAD.size
        src, off = _decode_str(buf, off, "node status src_ipaddr")
        dst, off = _decode_str(buf, off, "node status dst_ipaddr")
        links.append(CfgLinkStatus(bool(enabled), bool(connected), bool(dyn), int(mtu), src, dst))
    links += [CfgLinkStatus()] * (CFG_MAX_LINKS - len(links))
    return CfgNodeStatus(int(version), int(nodeid), bool(reach), bool(remote), bool(ext), int(wmin), int(wmax),
                         int(wver), tuple(links))


def encode_ring_status(items: list[tuple[str, str]]) -> bytes:
    return _U32.pack(len(items)) + b"".join(encode_str(name) + encode_str(status) for name, status in items)


def decode_ring_status(buf: bytes) -> list[tuple[str, str]]:
    if len(buf) < _U32.size:
        raise ProtocolError("ring status: no count")
    (n,) = _U32.unpack_from(buf, 0)
    off, out = _U32.size, []
    for _ in range(n):
        name, off = _decode_str(buf, off, "ring status name")
        status, off = _decode_str(buf, off, "ring status")
        out.append((name, status))
    return out


# -- cluster messages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KillNode:
    """Ask node ``nodeid`` to leave (it logs ``reason``)."""

    nodeid: int
    reason: str


@dataclass(frozen=True)
class Shutdown:
    """The sender shuts down (every node logs it)."""


@dataclass(frozen=True)
class ReloadConfig:
    """Every node re-reads its config; the sender answers its client ``request_id``."""

    request_id: int


ClusterMessage = KillNode | Shutdown | ReloadConfig


def encode_cluster(msg: ClusterMessage) -> bytes:
    if isinstance(msg, KillNode):
        raw = msg.reason.encode("utf-8")[:MAX_REASON_BYTES]
        return _EXEC_HEAD.pack(ExecKind.KILLNODE) + _U32.pack(msg.nodeid) + _U16.pack(len(raw)) + raw
    if isinstance(msg, Shutdown):
        return _EXEC_HEAD.pack(ExecKind.SHUTDOWN)
    return _EXEC_HEAD.pack(ExecKind.RELOAD_CONFIG) + _U64.pack(msg.request_id)


def decode_cluster(body: bytes) -> ClusterMessage:
    """A cluster message; ProtocolError for anything malformed or of an unknown kind."""
    if len(body) < _EXEC_HEAD.size:
        raise ProtocolError(f"cfg message of {len(body)} bytes")
    (kind,) = _EXEC_HEAD.unpack_from(body, 0)
    rest = body[_EXEC_HEAD.size :]
    if kind == ExecKind.KILLNODE:
        if len(rest) < _U32.size:
            raise ProtocolError("KILLNODE without a node id")
        (nodeid,) = _U32.unpack_from(rest, 0)
        reason, end = _decode_str(rest, _U32.size, "KILLNODE reason")
        if end != len(rest) or end - _U32.size - _U16.size > MAX_REASON_BYTES:
            raise ProtocolError("KILLNODE: trailing bytes or reason too long")
        return KillNode(int(nodeid), reason)
    if kind == ExecKind.SHUTDOWN:
        if rest:
            raise ProtocolError(f"SHUTDOWN with {len(rest)} trailing bytes")
        return Shutdown()
    if kind == ExecKind.RELOAD_CONFIG:
        if len(rest) != _U64.size:
            raise ProtocolError(f"RELOAD_CONFIG of {len(rest)} bytes")
        return ReloadConfig(int(_U64.unpack(rest)[0]))
    raise ProtocolError(f"unknown cfg message kind {kind}")
