"""The cmap stats map (``cmap_initialize_map(CMAP_MAP_STATS)``): read-only keys computed on read.

Nothing is stored: each read asks the providers registered for a prefix (``stats.ipcs.``,
``stats.srp.``...) for their current keys. As in corosync's stats.c, every key is read-only
(CS_ERR_ACCESS) except the ``stats.clear.*`` triggers, which may only be set (anything else on them
is CS_ERR_NOT_SUPPORTED).

Tracking follows corosync: the service calls ``poll()`` every 1.5 s (the node's cmap: every 1 s tick); keys appearing or vanishing
under a tracked prefix give ADD/DELETE, and a value change gives MODIFY to trackers of that exact
key only.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.services.cmap.engine import (
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    Entry,
    IteratorTable,
    NotificationSink,
    TrackRegistry,
)

StatsProvider = Callable[[], Iterable[tuple[str, ValueType, Value]]]
CLEAR_PREFIX = "stats.clear."
CLEAR_TARGETS = ("totem", "knet", "ipc", "schedmiss", "all")
POLL_INTERVAL_S = 1.5


class StatsMap:
    """Registry of stats providers seen through the cmap map API."""

    def __init__(self) -> None:
        self._providers: list[tuple[str, StatsProvider]] = []
        self._clear: dict[str, list[Callable[[], None]]] = {name: [] for name in CLEAR_TARGETS}
        self.tracks = TrackRegistry()
        self.iterators = IteratorTable()
        self._last_poll: dict[str, Entry] | None = None
        self.provider_errors = 0

    def register(self, prefix: str, provider: StatsProvider) -> None:
        """Adds a provider: ``provider()`` yields (key, type, value) for keys starting with ``prefix``."""
        self._providers.append((prefix, provider))

    def register_clear(self, target: str, action: Callable[[], None]) -> None:
        """``action`` runs when a client writes ``stats.clear.<target>`` (or ``stats.clear.all``)."""
        if target not in self._clear:
            raise ValueError(f"unknown stats.clear target {target!r}; expected one of {CLEAR_TARGETS}")
        self._clear[target].append(action)

    # -- reads -------------------------------------------------------------------------------
    def snapshot(self, prefix: str = "") -> dict[str, Entry]:
        """Every key under ``prefix`` with its current value."""
        out: dict[str, Entry] = {}
        for pprefix, provider in self._providers:
            if not (pprefix.startswith(prefix) or prefix.startswith(pprefix)):
                continue
            try:
                rows = list(provider())
            except Exception:  # a broken provider must not take the map down
                self.provider_errors += 1
                continue
            for key, vtype, value in rows:
                if key.startswith(prefix):
                    out[key] = (ValueType(vtype), value)
        return out

    def get(self, key: str) -> Entry:
        """Current (type, value) of a stats key; unknown → CS_ERR_NOT_EXIST."""
        entry = self.snapshot(key).get(key)
        if entry is None:
            raise CsError(CsErrorCode.CS_ERR_NOT_EXIST, f"stats key {key!r} does not exist")
        return entry

    def items(self, prefix: str = "") -> list[tuple[str, Entry]]:
        """Sorted (key, entry) pairs under ``prefix``."""
        return sorted(self.snapshot(prefix).items())

    def iter_next(self, handle: int, owner: object = None) -> tuple[str, Entry]:
        """Next key of an iterator (computed now); past the end → CS_ERR_NO_SECTIONS."""
        prefix, last = self.iterators.position(handle, owner)
        snap = self.snapshot(prefix)
        keys = sorted(snap)
        i = 0 if last is None else bisect.bisect_right(keys, last)
        if i >= len(keys):
            raise CsError(CsErrorCode.CS_ERR_NO_SECTIONS, "end of cmap iteration")
        self.iterators.advance(handle, keys[i])
        return keys[i], snap[keys[i]]

    def __contains__(self, key: str) -> bool:
        return key in self.snapshot(key)

    # -- writes ------------------------------------------------------------------------------
    @staticmethod
    def _check_write(key: str) -> None:
        # corosync: every stats key is read-only (CS_ERR_ACCESS) except the stats.clear.* triggers
        if not key.startswith(CLEAR_PREFIX):
            raise CsError(CsErrorCode.CS_ERR_ACCESS, f"stats key {key!r} is read-only")

    def set(self, key: str, vtype: ValueType | int, value: object, *, internal: bool = False) -> bool:
        """Only ``stats.clear.<target>`` is writable: it runs that target's clear actions."""
        self._check_write(key)
        target = key[len(CLEAR_PREFIX):]
        if target not in self._clear:
            raise CsError(CsErrorCode.CS_ERR_NOT_SUPPORTED, f"stats key {key!r} cannot be written")
        names = CLEAR_TARGETS if target == "all" else (target,)
        for name in names:
            for action in self._clear[name]:
                action()
        return True

    def delete(self, key: str, *, internal: bool = False) -> None:
        """Stats keys cannot be deleted."""
        self._check_write(key)
        raise CsError(CsErrorCode.CS_ERR_NOT_SUPPORTED, f"stats key {key!r} cannot be deleted")

    def inc(self, key: str, *, internal: bool = False) -> Entry:
        """Stats keys cannot be changed by clients."""
        self._check_write(key)
        raise CsError(CsErrorCode.CS_ERR_NOT_SUPPORTED, f"stats key {key!r} cannot be changed")

    dec = inc

    # -- tracking ----------------------------------------------------------------------------
    def track_add(self, key: str, flags: int, sink: NotificationSink, owner: object = None) -> int:
        """Registers a tracker; changes are found by ``poll()``."""
        handle = self.tracks.add(key, flags, sink, owner)
        if self._last_poll is None:
            self._last_poll = self.snapshot()
        return handle

    def track_delete(self, handle: int, owner: object = None) -> None:
        """cmap_track_delete."""
        self.tracks.delete(handle, owner)
        if not self.tracks:
            self._last_poll = None

    def drop_owner(self, owner: object) -> None:
        """Releases the iterators and trackers of a client that went away."""
        self.tracks.drop_owner(owner)
        self.iterators.drop_owner(owner)
        if not self.tracks:
            self._last_poll = None

    def poll(self) -> None:
        """Compares the map with the previous poll and notifies trackers (a no-op without trackers)."""
        if not self.tracks:
            return
        now = self.snapshot()
        before = self._last_poll or {}
        self._last_poll = now
        for key in sorted(now.keys() - before.keys()):
            self.tracks.notify(CMAP_TRACK_ADD, key, now[key], None)
        for key in sorted(before.keys() - now.keys()):
            self.tracks.notify(CMAP_TRACK_DELETE, key, None, before[key])
        for key in self.tracks.exact_keys():
            if key in now and key in before and now[key] != before[key]:
                self.tracks.notify(CMAP_TRACK_MODIFY, key, now[key], before[key], prefix=False)
