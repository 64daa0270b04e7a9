"""The Totem wire format, version 1: encoders and bounds-checked decoders.

Every frame starts with the same 24-byte little-endian header::

    u8  magic        0xC5
    u8  version      1 (a frame of another version is dropped and counted)
    u8  type         0 ORF_TOKEN, 1 MCAST, 2 MEMB_MERGE_DETECT, 3 MEMB_JOIN, 4 MEMB_COMMIT_TOKEN, 5 TOKEN_HOLD_CANCEL
    u8  flags        per type (below)
    u32 sender       node id of the sending processor (0 is reserved and rejected)
    u32 incarnation  distinguishes restarts of one node id; frames of an older incarnation are replays
    u32 ring_rep     ring id the frame belongs to: representative node id ...
    u64 ring_seq     ... and ring sequence (64-bit, never wraps)

Bodies, after the header:

ORF_TOKEN (unicast to the next member)::

    u64 token_seq, u64 seq, u64 aru, u32 aru_addr, u32 fcc, u32 backlog, u8 retrans_flg, u8 reserved,
    u16 rtr_count, u64 aru_acc, u64 safe_seq, then rtr_count x u64 seqs (at most RTR_MAX)

    ``aru_acc`` is the minimum of every member's aru over the rotation that began at the representative's
    last visit; the representative publishes it as ``safe_seq``: every member holds every seq <= safe_seq
    (SAFE delivery, freeing of stored frames).

MCAST (multicast by the token holder; flags: 1 ENCAPSULATED, 2 SAFE = a SAFE message is in it)::

    u64 seq, u16 entry_count, then the entries; an ENCAPSULATED frame has entry_count 0 and its body is
    a whole MCAST frame of an old ring, resent during RECOVERY
    entry: u8 kind (0 WHOLE, 1 FIRST, 2 MIDDLE, 3 LAST fragment), u8 guarantee, u32 length, u64 msg_id,
           FIRST only: u32 total message length; then ``length`` payload bytes

MEMB_MERGE_DETECT, TOKEN_HOLD_CANCEL: header only (the sender's ring id).

MEMB_JOIN (multicast; flag 1 LEAVE: the sender leaves and lists itself in its fail set)::

    u64 ring_seq (highest ring seq the sender knows), u16 proc_count, u16 fail_count, u32 node ids...

MEMB_COMMIT_TOKEN (unicast around the new ring; the header ring id is the NEW ring id)::

    u32 token_seq, u8 rotation (1 or 2), u8 reserved, u16 memb_index, u16 member_count, then per member:
    u32 node, u32 incarnation, u32 old_rep, u64 old_seq, u64 old_aru, u64 high_seq, u64 safe_seq, u8 filled
    (old_rep 0 = the node had no previous ring: it starts fresh)

Decoders raise :class:`WireError` on anything malformed; the core counts and drops such frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pycorosync.engine.totem.api import RingId

MAGIC = 0xC5
VERSION = 1

ORF_TOKEN = 0
MCAST = 1
MEMB_MERGE_DETECT = 2
MEMB_JOIN = 3
MEMB_COMMIT_TOKEN = 4
TOKEN_HOLD_CANCEL = 5

MCAST_ENCAPSULATED = 1
MCAST_SAFE = 2
JOIN_LEAVE = 1

KIND_WHOLE = 0
KIND_FIRST = 1
KIND_MIDDLE = 2
KIND_LAST = 3

RTR_MAX = 30
MAX_MEMBERS = 1024
#: sequence-like fields above this are rejected, so that no arithmetic on them can overflow the wire widths
MAX_SEQ = 1 << 62
_U32_MAX = (1 << 32) - 1

HEADER = struct.Struct("<BBBBIIIQ")
TOKEN_BODY = struct.Struct("<QQQIIIBBHQQ")
MCAST_BODY = struct.Struct("<QH")
ENTRY = struct.Struct("<BBIQ")
FIRST_TOTAL = struct.Struct("<I")
JOIN_BODY = struct.Struct("<QHH")
COMMIT_BODY = struct.Struct("<IBBHH")
COMMIT_ENTRY = struct.Struct("<IIIQQQQB")

MCAST_HEADER = struct.Struct("<BBBBIIIQQH")  # HEADER + MCAST_BODY in one unpack
HEADER_BYTES = HEADER.size
MCAST_HEADER_BYTES = HEADER.size + MCAST_BODY.size
assert MCAST_HEADER.size == MCAST_HEADER_BYTES
ENTRY_BYTES = ENTRY.size
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class WireError(ValueError):
    """A frame that is not a valid Totem v1 frame (what and where is in the message)."""


@dataclass(slots=True)
class Token:
    """An ORF token: mutable, the holder updates it in place before forwarding."""

    sender: int
    incarnation: int
    ring_id: RingId
    token_seq: int = 0
    seq: int = 0
    aru: int = 0
    aru_addr: int = 0
    fcc: int = 0
    backlog: int = 0
    retrans_flg: int = 0
    aru_acc: int = 0
    safe_seq: int = 0
    rtr_list: list[int] = field(default_factory=list)


@dataclass(slots=True)
class CommitEntry:
    """One member's row of the commit token (its state in its old ring)."""

    node: int
    incarnation: int = 0
    old_rep: int = 0
    old_seq: int = 0
    old_aru: int = 0
    high_seq: int = 0
    safe_seq: int = 0
    filled: bool = False

    @property
    def old_ring_id(self) -> RingId | None:
        """The member's previous ring, or None when it started fresh."""
        return RingId(self.old_rep, self.old_seq) if self.old_rep else None


@dataclass(slots=True)
class CommitToken:
    """A membership commit token."""

    sender: int
    incarnation: int
    ring_id: RingId
    token_seq: int
    rotation: int
    memb_index: int
    entries: list[CommitEntry]

    @property
    def members(self) -> tuple[int, ...]:
        """The new ring's members in ring order."""
        return tuple(e.node for e in self.entries)


@dataclass(frozen=True, slots=True)
class Join:
    """A join (or, with ``leave``, a leave) message."""

    sender: int
    incarnation: int
    ring_id: RingId
    ring_seq: int
    proc: frozenset[int]
    fail: frozenset[int]
    leave: bool


@dataclass(frozen=True, slots=True)
class Control:
    """MEMB_MERGE_DETECT or TOKEN_HOLD_CANCEL: only the header matters."""

    type: int
    sender: int
    incarnation: int
    ring_id: RingId


class Mcast:
    """A multicast frame: the raw bytes (kept for retransmission) and its decoded entries.

    A plain slotted class rather than a frozen dataclass: one is built per frame on the hot path.
    """

    __slots__ = ("_entries", "count", "flags", "incarnation", "own", "raw", "ring_key", "sender", "seq", "whole")

    def __init__(self, sender: int, incarnation: int, ring_key: tuple[int, int], seq: int, flags: int, raw: bytes,
                 entries: tuple[tuple[int, int, int, bytes, int], ...] | None, count: int = -1,
                 whole: bool = False) -> None:
        self.sender = sender
        self.incarnation = incarnation
        #: (rep, seq) of the ring, compared as a tuple on the hot path
        self.ring_key = ring_key
        self.seq = seq
        self.flags = flags
        self.raw = raw
        self._entries = entries
        if entries is not None:
            count = len(entries)
            whole = all(e[0] == KIND_WHOLE for e in entries)
        #: how many entries, and whether each is a whole message (known without decoding them)
        self.count = count
        self.whole = whole
        #: a frame this node packed: the messages it delivers at the frame's place, (msg_id, guarantee,
        #: payload) each, a fragmented one whole at its LAST piece (the sender need not reassemble its own)
        self.own: list[tuple[int, int, bytes]] | None = None

    @property
    def entries(self) -> tuple[tuple[int, int, int, bytes, int], ...]:
        """(kind, guarantee, msg_id, payload, total length for FIRST else 0); empty when encapsulated.
        A received frame's entries were checked by ``decode_mcast`` and are made on first use."""
        entries = self._entries
        if entries is None:
            entries = self._entries = _entries_of(self.raw, self.count)
        return entries

    @property
    def ring_id(self) -> RingId:
        """The ring this frame belongs to."""
        return RingId(*self.ring_key)


Frame = Token | Mcast | Join | CommitToken | Control


def header(ftype: int, flags: int, sender: int, incarnation: int, ring_id: RingId) -> bytes:
    """The common header of a frame."""
    return HEADER.pack(MAGIC, VERSION, ftype, flags, sender, incarnation, ring_id.rep, ring_id.seq)


def encode_token(tok: Token, sender: int, incarnation: int) -> bytes:
    """An ORF token frame as sent by ``sender``."""
    if len(tok.rtr_list) > RTR_MAX:
        raise WireError(f"token rtr_list holds {len(tok.rtr_list)} entries, at most {RTR_MAX}")
    body = TOKEN_BODY.pack(tok.token_seq, tok.seq, tok.aru, tok.aru_addr, min(tok.fcc, _U32_MAX),
                           min(tok.backlog, _U32_MAX), tok.retrans_flg, 0,
                           len(tok.rtr_list), tok.aru_acc, tok.safe_seq)
    return b"".join((header(ORF_TOKEN, 0, sender, incarnation, tok.ring_id), body,
                     *(_U64.pack(s) for s in tok.rtr_list)))


def encode_join(sender: int, incarnation: int, ring_id: RingId, ring_seq: int, proc: frozenset[int],
                fail: frozenset[int], leave: bool = False) -> bytes:
    """A join (or leave) frame."""
    nodes = sorted(proc) + sorted(fail)
    return b"".join((header(MEMB_JOIN, JOIN_LEAVE if leave else 0, sender, incarnation, ring_id),
                     JOIN_BODY.pack(ring_seq, len(proc), len(fail)), struct.pack(f"<{len(nodes)}I", *nodes)))


def encode_control(ftype: int, sender: int, incarnation: int, ring_id: RingId) -> bytes:
    """A header-only frame (merge detect, token hold cancel)."""
    return header(ftype, 0, sender, incarnation, ring_id)


def encode_commit(ct: CommitToken, sender: int, incarnation: int) -> bytes:
    """A commit token frame."""
    parts = [header(MEMB_COMMIT_TOKEN, 0, sender, incarnation, ct.ring_id),
             COMMIT_BODY.pack(ct.token_seq, ct.rotation, 0, ct.memb_index, len(ct.entries))]
    parts.extend(COMMIT_ENTRY.pack(e.node, e.incarnation, e.old_rep, e.old_seq, e.old_aru, e.high_seq, e.safe_seq,
                                   1 if e.filled else 0) for e in ct.entries)
    return b"".join(parts)


def encode_encapsulated(sender: int, incarnation: int, ring_id: RingId, seq: int, inner: bytes) -> bytes:
    """A new-ring MCAST carrying a whole old-ring MCAST frame (RECOVERY)."""
    return b"".join((header(MCAST, MCAST_ENCAPSULATED, sender, incarnation, ring_id), MCAST_BODY.pack(seq, 0), inner))


def decode(data: bytes) -> Frame:
    """Decode any frame; raises WireError naming the first bad field."""
    n = len(data)
    if n < HEADER_BYTES:
        raise WireError(f"frame of {n} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, ftype, flags, sender, inc, rep, rseq = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise WireError(f"bad magic 0x{magic:02x}")
    if version != VERSION:
        raise WireError(f"wire version {version}, this node speaks {VERSION}")
    if sender == 0:
        raise WireError("sender node id 0 is reserved")
    if rseq >= MAX_SEQ:
        raise WireError(f"ring seq {rseq} out of range")
    ring_id = RingId(rep, rseq)
    if ftype == MCAST:
        return decode_mcast(data)
    if ftype == ORF_TOKEN:
        return _decode_token(data, sender, inc, ring_id)
    if ftype == MEMB_JOIN:
        return _decode_join(data, flags, sender, inc, ring_id)
    if ftype == MEMB_COMMIT_TOKEN:
        return _decode_commit(data, sender, inc, ring_id)
    if ftype in (MEMB_MERGE_DETECT, TOKEN_HOLD_CANCEL):
        if n != HEADER_BYTES:
            raise WireError(f"control frame type {ftype} has {n - HEADER_BYTES} trailing bytes")
        return Control(ftype, sender, inc, ring_id)
    raise WireError(f"unknown frame type {ftype}")


def _decode_token(data: bytes, sender: int, inc: int, ring_id: RingId) -> Token:
    n = len(data)
    if n < HEADER_BYTES + TOKEN_BODY.size:
        raise WireError(f"token frame of {n} bytes is truncated")
    (token_seq, seq, aru, aru_addr, fcc, backlog, retrans_flg, _r, rtr_count, aru_acc,
     safe_seq) = TOKEN_BODY.unpack_from(data, HEADER_BYTES)
    if rtr_count > RTR_MAX:
        raise WireError(f"token rtr_count {rtr_count} exceeds {RTR_MAX}")
    off = HEADER_BYTES + TOKEN_BODY.size
    if n != off + 8 * rtr_count:
        raise WireError(f"token frame of {n} bytes does not hold {rtr_count} retransmit entries")
    if max(token_seq, seq, aru_acc) >= MAX_SEQ:
        raise WireError(f"token seq fields out of range (token_seq {token_seq}, seq {seq})")
    if aru > seq or safe_seq > seq or retrans_flg > 1:
        raise WireError(f"token fields inconsistent: aru {aru} safe_seq {safe_seq} seq {seq} retrans_flg {retrans_flg}")
    rtr = list(struct.unpack_from(f"<{rtr_count}Q", data, off))
    if any(s > seq for s in rtr):
        raise WireError(f"token retransmit request above seq {seq}")
    return Token(sender, inc, ring_id, token_seq, seq, aru, aru_addr, fcc, backlog, retrans_flg, aru_acc, safe_seq, rtr)


def _decode_join(data: bytes, flags: int, sender: int, inc: int, ring_id: RingId) -> Join:
    n = len(data)
    if n < HEADER_BYTES + JOIN_BODY.size:
        raise WireError(f"join frame of {n} bytes is truncated")
    ring_seq, proc_n, fail_n = JOIN_BODY.unpack_from(data, HEADER_BYTES)
    if ring_seq >= MAX_SEQ:
        raise WireError(f"join ring seq {ring_seq} out of range")
    if proc_n > MAX_MEMBERS or fail_n > MAX_MEMBERS:
        raise WireError(f"join lists {proc_n} proc / {fail_n} fail nodes, at most {MAX_MEMBERS}")
    off = HEADER_BYTES + JOIN_BODY.size
    if n != off + 4 * (proc_n + fail_n):
        raise WireError(f"join frame of {n} bytes does not hold {proc_n}+{fail_n} node ids")
    nodes = struct.unpack_from(f"<{proc_n + fail_n}I", data, off)
    if 0 in nodes:
        raise WireError("join lists node id 0")
    return Join(sender, inc, ring_id, ring_seq, frozenset(nodes[:proc_n]), frozenset(nodes[proc_n:]),
                bool(flags & JOIN_LEAVE))


def _decode_commit(data: bytes, sender: int, inc: int, ring_id: RingId) -> CommitToken:
    n = len(data)
    if n < HEADER_BYTES + COMMIT_BODY.size:
        raise WireError(f"commit token of {n} bytes is truncated")
    token_seq, rotation, _r, memb_index, count = COMMIT_BODY.unpack_from(data, HEADER_BYTES)
    off = HEADER_BYTES + COMMIT_BODY.size
    if count == 0 or count > MAX_MEMBERS or n != off + count * COMMIT_ENTRY.size:
        raise WireError(f"commit token of {n} bytes does not hold {count} member entries")
    if rotation not in (1, 2) or memb_index >= count or token_seq >= _U32_MAX:
        raise WireError(f"commit token rotation {rotation} / memb_index {memb_index} of {count} invalid")
    entries = []
    for i in range(count):
        node, einc, orep, oseq, oaru, high, safe, filled = COMMIT_ENTRY.unpack_from(data, off + i * COMMIT_ENTRY.size)
        if node == 0 or filled > 1 or oaru > high or max(oseq, high, safe) >= MAX_SEQ:
            raise WireError(f"commit token entry {i} invalid (node {node}, aru {oaru}, high {high})")
        entries.append(CommitEntry(node, einc, orep, oseq, oaru, high, safe, bool(filled)))
    nodes = [e.node for e in entries]
    if nodes != sorted(set(nodes)) or ring_id.rep != nodes[0]:
        raise WireError(f"commit token members {nodes} not ascending/unique or rep {ring_id.rep} not lowest")
    return CommitToken(sender, inc, ring_id, token_seq, rotation, memb_index, entries)


def decode_mcast(data: bytes) -> Mcast:
    """Decode an MCAST frame (header included), checking every entry against the frame length."""
    n = len(data)
    if n < MCAST_HEADER_BYTES:
        raise WireError(f"mcast frame of {n} bytes is truncated")
    magic, version, ftype, flags, sender, inc, rep, rseq, seq, count = MCAST_HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or ftype != MCAST or sender == 0:
        raise WireError("not a v1 mcast frame")
    if seq == 0 or seq >= MAX_SEQ or rseq >= MAX_SEQ:
        raise WireError(f"mcast seq {seq} / ring seq {rseq} out of range")
    if flags & MCAST_ENCAPSULATED:
        if count != 0:
            raise WireError("encapsulated mcast declares entries")
        return Mcast(sender, inc, (rep, rseq), seq, flags, data, ())
    off = MCAST_HEADER_BYTES
    if count == 1:  # the common case of one message (or fragment) per frame
        kind, guarantee, length, _msg_id = ENTRY.unpack_from(data, off) if off + ENTRY_BYTES <= n else (9, 0, 0, 0)
        if kind == KIND_WHOLE and guarantee <= 3 and off + ENTRY_BYTES + length == n:
            return Mcast(sender, inc, (rep, rseq), seq, flags, data, None, 1, True)  # entry made when used
    if count >= SCAN_MIN_ENTRIES:
        ok, whole = _scan_entries(data, count)
        if ok:
            return Mcast(sender, inc, (rep, rseq), seq, flags, data, None, count, whole)
    return Mcast(sender, inc, (rep, rseq), seq, flags, data, _entries_of(data, count))


def scan_entries_py(data: bytes, count: int) -> tuple[bool, bool]:
    """(the ``count`` entries of an MCAST frame are well formed, each is a whole message), without making
    them: what ``decode_mcast`` needs to know of a frame before its entries are used."""
    n = len(data)
    off = MCAST_HEADER_BYTES
    whole = True
    unpack = ENTRY.unpack_from
    for _ in range(count):
        if off + ENTRY_BYTES > n:
            return False, False
        kind, guarantee, length, _msg_id = unpack(data, off)
        off += ENTRY_BYTES
        if kind != KIND_WHOLE:
            whole = False
            if kind == KIND_FIRST:
                if off + 4 > n:
                    return False, False
                off += 4
            elif kind > KIND_LAST:
                return False, False
        if guarantee > 3:
            return False, False
        off += length
        if off > n:
            return False, False
    return off == n, whole


#: frames of at least this many entries are checked by ``_scan_entries`` and their entries made on first use
SCAN_MIN_ENTRIES = 4
_scan_entries: Callable[[bytes, int], tuple[bool, bool]] = scan_entries_py


def use_entry_scanner(scan: Callable[[bytes, int], tuple[bool, bool]]) -> None:
    """Replaces ``scan_entries_py`` (a driver may give a compiled one that answers the same)."""
    global _scan_entries
    _scan_entries = scan


def _entries_of(data: bytes, count: int) -> tuple[tuple[int, int, int, bytes, int], ...]:
    """The ``count`` entries of an MCAST frame, each checked against the frame; raises WireError."""
    n = len(data)
    off = MCAST_HEADER_BYTES
    entries = []
    unpack = ENTRY.unpack_from
    for i in range(count):
        if off + ENTRY_BYTES > n:
            raise WireError(f"mcast entry {i} header at {off} overruns the {n}-byte frame")
        kind, guarantee, length, msg_id = unpack(data, off)
        off += ENTRY_BYTES
        total = 0
        if kind == KIND_FIRST:
            if off + 4 > n:
                raise WireError(f"mcast entry {i} total length overruns the frame")
            (total,) = _U32.unpack_from(data, off)
            off += 4
        elif kind > KIND_LAST:
            raise WireError(f"mcast entry {i} has kind {kind}")
        if guarantee > 3:
            raise WireError(f"mcast entry {i} has guarantee {guarantee}")
        end = off + length
        if end > n:
            raise WireError(f"mcast entry {i} payload of {length} bytes overruns the {n}-byte frame")
        entries.append((kind, guarantee, msg_id, data[off:end], total))
        off = end
    if off != n:
        raise WireError(f"mcast frame has {n - off} trailing bytes after {count} entries")
    return tuple(entries)
