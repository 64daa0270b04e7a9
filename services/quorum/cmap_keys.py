"""The ``runtime.votequorum.*`` keys the quorum service keeps in cmap, named as corosync names them.

    runtime.votequorum.this_node_id         u32
    runtime.votequorum.lowest_node_id       u32   lowest node id of the last quorate membership (-1 before)
    runtime.votequorum.highest_node_id      u32
    runtime.votequorum.two_node             u8
    runtime.votequorum.ev_barrier           u32   the configured expected votes, or the last setexpected
    runtime.votequorum.ev_tracking_barrier  u32   only with expected_votes_tracking: the highest seen
    runtime.votequorum.wait_for_all_status  u8    only with wait_for_all
    runtime.votequorum.atb_type             u32   only with auto_tie_breaker (0 none, 1 lowest, 2 highest, 3 list)

Written through a ``CmapPublisher`` (re-published after a cmap restart), only when a value changed. The same
connection reads ``quorum.cancel_wait_for_all``.
"""

from __future__ import annotations

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.ipc.errors import CS_ERR_NOT_EXIST, CsError
from pycorosync.services.cmap.client import CmapClient
from pycorosync.services.cmap.publisher import CmapPublisher

from .settings import ATB_HIGHEST, ATB_LIST, ATB_LOWEST, ATB_NONE
from .votequorum import Votequorum

PREFIX = "runtime.votequorum."
CANCEL_WAIT_FOR_ALL = "quorum.cancel_wait_for_all"
ATB_TYPES = {ATB_NONE: 0, ATB_LOWEST: 1, ATB_HIGHEST: 2, ATB_LIST: 3}
CMAP_TIMEOUT_S = 1.0


def runtime_keys(nodeid: int, vq: Votequorum | None) -> dict[str, tuple[Value, ValueType]]:
    """The keys and typed values for this state (none without votequorum)."""
    if vq is None:
        return {}
    settings = vq.settings
    keys: dict[str, tuple[Value, ValueType]] = {
        PREFIX + "this_node_id": (nodeid, ValueType.UINT32),
        PREFIX + "lowest_node_id": (vq.lowest_node_id & 0xFFFFFFFF, ValueType.UINT32),
        PREFIX + "highest_node_id": (vq.highest_node_id & 0xFFFFFFFF, ValueType.UINT32),
        PREFIX + "two_node": (int(settings.two_node), ValueType.UINT8),
        PREFIX + "ev_barrier": (vq.configured_expected_votes, ValueType.UINT32),
    }
    if settings.expected_votes_tracking:
        keys[PREFIX + "ev_tracking_barrier"] = (vq.ev_barrier, ValueType.UINT32)
    if settings.wait_for_all:
        keys[PREFIX + "wait_for_all_status"] = (int(vq.wait_for_all_status), ValueType.UINT8)
    if settings.auto_tie_breaker != ATB_NONE:
        keys[PREFIX + "atb_type"] = (ATB_TYPES[settings.auto_tie_breaker], ValueType.UINT32)
    return keys


class RuntimeKeys:
    """Publishes ``runtime_keys`` of one node's votequorum state; never raises for an absent cmap."""

    def __init__(self, run_dir: str, nodeid: int, vq: Votequorum | None) -> None:
        self.nodeid = nodeid
        self.vq = vq
        self.run_dir = run_dir
        self.publisher = CmapPublisher(run_dir, timeout=CMAP_TIMEOUT_S)
        self._reader: CmapClient | None = None
        self.failures = 0

    def update(self) -> None:
        """Writes the keys whose value changed since the last call. One connection attempt at most: while cmap
        is away the values are only remembered (``resync`` writes them when it is back)."""
        reachable = True
        for key, (value, vtype) in runtime_keys(self.nodeid, self.vq).items():
            if self.publisher.owned.get(key) == (value, vtype):
                continue
            if not reachable:
                self.publisher.owned[key] = (value, vtype)
                continue
            try:
                reachable = self.publisher.publish(key, value, vtype)
            except CsError:
                self.failures += 1

    def resync(self) -> None:
        """After a cmap restart, writes every key again."""
        try:
            self.publisher.resync()
        except CsError:
            self.failures += 1

    def cancel_wait_for_all(self) -> bool:
        """True when an administrator set ``quorum.cancel_wait_for_all`` to a non-zero value; the key is then
        set back to 0, as corosync does, so that a later wait for all is not cancelled by the same request."""
        try:
            if self._reader is None:
                self._reader = CmapClient(self.run_dir, timeout=CMAP_TIMEOUT_S)
            value, _ = self._reader.get(CANCEL_WAIT_FOR_ALL)
            if value:
                self._reader.set(CANCEL_WAIT_FOR_ALL, 0, ValueType.UINT8)
        except CsError as exc:
            if exc.code != CS_ERR_NOT_EXIST and self._reader is not None:
                self._reader.close()  # cmap gone or confused: connect again next time
                self._reader = None
            return False
        return bool(value)

    def close(self) -> None:
        """Closes the cmap connections (the keys stay: corosync keeps them until the daemon exits)."""
        self.publisher.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
