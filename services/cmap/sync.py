"""cmap's synchronization after each regular configuration (corosync's cmap_sync_*), pure.

Every member multicasts one message in ``sync_process``: the ring seq it is synchronizing and its
``totem.config_version``. At ``sync_activate`` (every member's barrier came after its message, so
all are delivered) each member's version becomes ``runtime.members.<nodeid>.config_version``.

corosync also makes a node whose config_version is not 0 exit when, on its first merge into a
multi-node ring, a member has a higher version. A cmap process cannot stop its whole node here:
``check_versions`` returns the message and the service logs it as an error.

    SYNC message   u8 kind (1) | u64 ring seq | u64 config_version   (little endian)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pycorosync.engine.totem.api import RingId

KIND_SYNC = 1
_SYNC = struct.Struct("<BQQ")


class BadClusterMessage(ValueError):
    """A cmap cluster message that does not parse (counted and dropped by the service)."""


def encode_sync(ring_seq: int, config_version: int) -> bytes:
    """The SYNC message body."""
    return _SYNC.pack(KIND_SYNC, ring_seq, config_version)


def decode_sync(body: bytes) -> tuple[int, int]:
    """(ring seq, config_version) of a SYNC message; BadClusterMessage for anything else."""
    if len(body) != _SYNC.size:
        raise BadClusterMessage(f"cmap cluster message of {len(body)} bytes, expected {_SYNC.size}")
    kind, ring_seq, version = _SYNC.unpack(body)
    if kind != KIND_SYNC:
        raise BadClusterMessage(f"unknown cmap cluster message kind {kind}")
    return ring_seq, version


@dataclass
class CmapSync:
    """One node's side of cmap sync: what to send, what was heard, what to apply."""

    own_nodeid: int
    own_version: int
    ring_id: RingId | None = None
    members: tuple[int, ...] = ()
    heard: dict[int, int] = field(default_factory=dict)  # nodeid -> config_version, this ring only
    sent: bool = False
    been_in_multinode_ring: bool = False
    bad_messages: int = 0

    def init(self, ring_id: RingId, members: tuple[int, ...]) -> None:
        """sync_init: a new round for ``ring_id``."""
        self.ring_id, self.members = ring_id, members
        self.heard = {}
        self.sent = False

    def message(self) -> bytes:
        """What sync_process multicasts."""
        assert self.ring_id is not None
        return encode_sync(self.ring_id.seq, self.own_version)

    def on_deliver(self, sender: int, ring_id: RingId, body: bytes) -> None:
        """A delivered cmap message; one from another ring, or malformed, is dropped (and counted)."""
        try:
            seq, version = decode_sync(body)
        except BadClusterMessage:
            self.bad_messages += 1
            return
        if self.ring_id is None or ring_id != self.ring_id or seq != self.ring_id.seq:
            return
        if sender in self.members:
            self.heard[sender] = version

    def abort(self) -> None:
        """sync_abort: drop the round."""
        self.ring_id, self.members, self.heard, self.sent = None, (), {}, False

    def activate(self) -> tuple[dict[int, int], str | None]:
        """sync_activate: (nodeid -> config_version heard this round, an error to log or None)."""
        heard = dict(self.heard)
        error = None
        if len(self.members) > 1 and not self.been_in_multinode_ring:
            higher = {n: v for n, v in heard.items() if v > self.own_version}
            if self.own_version != 0 and higher:
                error = (f"Received config version ({max(higher.values())}) is different than my config version "
                         f"({self.own_version})! Exiting")
            self.been_in_multinode_ring = True
        return heard, error
