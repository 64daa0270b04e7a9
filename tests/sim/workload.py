"""Client workload of the simulator: self-describing payloads and a per-node submit loop.

Every payload starts with a 24-byte header naming its origin (node, incarnation, per-node
submit counter), guarantee and length, plus a CRC32 of those header fields, so the checker can
tell any delivered message apart. The body is filler derived from the identity and is compared
byte for byte on delivery, so a payload that was cut, merged, corrupted or mixed with another is
caught (a byte comparison is several times cheaper than a CRC of a multi-MiB body).
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from dataclasses import dataclass

from pycorosync.engine.totem.api import Guarantee

MAGIC = b"\xa5PcSm\x5a"
HEADER = struct.Struct(">6sHHIBxII")  # magic, origin, incarnation, counter, guarantee, pad, total_len, crc32(fields)
_FIELDS = struct.Struct(">HHIBI")
HEADER_BYTES = HEADER.size  # 24: the smallest payload the workload sends
assert HEADER_BYTES == 24

MsgKey = tuple[int, int, int]  # (origin node, origin incarnation, submit counter)


def _filler(origin: int, incarnation: int, counter: int, body_len: int) -> bytes:
    block = hashlib.blake2b(_FIELDS.pack(origin, incarnation, counter, 0, 0), digest_size=64).digest()
    if body_len <= 64:
        return block[:body_len]
    return (block * (body_len // 64 + 1))[:body_len]


def encode_payload(origin: int, incarnation: int, counter: int, guarantee: int, total_len: int) -> bytes:
    """A payload of exactly ``max(total_len, 24)`` bytes identifying its submitter."""
    total_len = max(total_len, HEADER_BYTES)
    crc = zlib.crc32(_FIELDS.pack(origin, incarnation, counter, guarantee, total_len))
    header = HEADER.pack(MAGIC, origin, incarnation, counter, guarantee, total_len, crc)
    return header + _filler(origin, incarnation, counter, total_len - HEADER_BYTES)


@dataclass(frozen=True)
class DecodedPayload:
    """What a delivered payload says about itself; ``error`` is None when it is intact."""

    key: MsgKey | None
    guarantee: int
    size: int
    error: str | None


def decode_payload(payload: bytes) -> DecodedPayload:
    """Parse and verify a delivered payload (never raises)."""
    size = len(payload)
    if size < HEADER_BYTES:
        return DecodedPayload(None, -1, size, f"payload of {size} B is shorter than the {HEADER_BYTES} B header")
    magic, origin, inc, counter, guarantee, total_len, crc = HEADER.unpack_from(payload)
    if magic != MAGIC:
        return DecodedPayload(None, -1, size, f"payload header magic is {magic!r}, not a workload message")
    if zlib.crc32(_FIELDS.pack(origin, inc, counter, guarantee, total_len)) != crc:
        return DecodedPayload(None, -1, size, "payload header checksum mismatch")
    key = (origin, inc, counter)
    if total_len != size:
        return DecodedPayload(key, guarantee, size, f"payload is {size} B, its header says {total_len} B")
    if payload[HEADER_BYTES:] != _filler(origin, inc, counter, size - HEADER_BYTES):
        return DecodedPayload(key, guarantee, size, "payload body differs from what was sent")
    return DecodedPayload(key, guarantee, size, None)


def keys_in_frame(frame: bytes) -> list[MsgKey]:
    """Identities of the workload messages whose header travels inside ``frame`` (first fragments included)."""
    found: list[MsgKey] = []
    pos = frame.find(MAGIC)
    while pos >= 0:
        if pos + HEADER_BYTES <= len(frame):
            _m, origin, inc, counter, _g, _l, _c = HEADER.unpack_from(frame, pos)
            found.append((origin, inc, counter))
        pos = frame.find(MAGIC, pos + 1)
    return found


@dataclass(frozen=True)
class WorkloadParams:
    """Shape of the client traffic of every node (times in virtual ms)."""

    mean_interval_ms: float = 50.0  # between client actions of one node
    burst_prob: float = 0.03  # an action is a burst that usually hits flow control
    burst_min: int = 20
    burst_max: int = 200
    safe_prob: float = 0.3
    big_prob: float = 0.005  # a message between 64 KiB and max_big_bytes
    max_big_bytes: int = 3 * 1024 * 1024
    retry_ms: tuple[float, float] = (2.0, 15.0)  # wait after QueueFull before retrying


def draw_size(rng: random.Random, params: WorkloadParams) -> int:
    """Mostly small messages, some medium ones that span frames, rarely multi-MiB ones."""
    r = rng.random()
    if r < params.big_prob:
        return rng.randint(64 * 1024, params.max_big_bytes)
    if r < 0.15:
        return rng.randint(1500, 20000)
    return rng.randint(1, 400)


def draw_guarantee(rng: random.Random, params: WorkloadParams) -> int:
    """AGREED or SAFE."""
    return int(Guarantee.SAFE) if rng.random() < params.safe_prob else int(Guarantee.AGREED)
