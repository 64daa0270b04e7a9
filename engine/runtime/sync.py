"""The sync coordinator of PROTOCOL.md §4 (corosync's sync.c): pure, driven by the totem process.

After every REGULAR configuration change with ring R, each sync-capable service in id order gets
SYNC_INIT(R); once it reports SYNC_DONE(R), a BARRIER(R) for it is multicast; when BARRIERs of that
service and ring from every member of R were delivered, it gets SYNC_ACTIVATE(R) and the next one
starts; after the last, every service gets SYNC_COMPLETE(R). A change in the middle aborts the
service being synchronized and restarts the whole sequence for the new ring.

A restarted service lost its state but not its ring: a SERVICE_BUILD(R) it asked for (delivered in
total order to every member) runs the whole sequence for R once more, every member transitional. If a
round is running then, the new one starts right after it completes (at the same point of the total
order on every member), so no round is aborted and no barrier can be counted in the wrong round.

    sync = SyncCoordinator(my_nodeid=1, service_ids=[0, 2, 3], all_service_ids=[0, 2, 3, 200])
    outs = sync.on_confchg(change)                 # ConfigChange from the core
    outs = sync.on_sync_done(service_id, ring_id)  # SUBMIT_SYNC_DONE from a service
    outs = sync.on_barrier(sender, service_id, ring_id)
    outs = sync.on_resync(ring_id)                 # a SERVICE_BUILD delivered
    # outs: ToService(service_id, record) to push into deliver.<svc>, SendBarrier(service_id, ring_id)
    # to multicast, SyncLog(level, text)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pycorosync.engine.runtime.records import (
    DELIVER_SYNC_ABORT,
    DELIVER_SYNC_ACTIVATE,
    DELIVER_SYNC_COMPLETE,
    SyncInitRecord,
    SyncRecord,
)
from pycorosync.engine.totem.api import ConfigChange, ConfigType, RingId


@dataclass(frozen=True)
class ToService:
    """Push ``record`` into ``deliver.<svc>`` of service ``service_id``."""

    service_id: int
    record: SyncInitRecord | SyncRecord


@dataclass(frozen=True)
class SendBarrier:
    """Multicast a BARRIER of ``service_id`` for ``ring_id`` (agreed order)."""

    service_id: int
    ring_id: RingId


@dataclass(frozen=True)
class SyncLog:
    """A line to log under the SYNC subsystem."""

    level: str
    text: str


SyncOutput = ToService | SendBarrier | SyncLog


class SyncCoordinator:
    """One node's sync state machine (see the module docstring). Never raises on peer input."""

    def __init__(self, my_nodeid: int, service_ids: Iterable[int], all_service_ids: Iterable[int] = ()) -> None:
        self.my_nodeid = my_nodeid
        self.service_ids = tuple(sorted(set(service_ids)))
        # SYNC_COMPLETE also goes to services with rings that take no part in sync
        self.all_service_ids = tuple(sorted(set(all_service_ids) | set(self.service_ids)))
        self.ring_id: RingId | None = None
        self.members: tuple[int, ...] = ()
        self.transitional: tuple[int, ...] = ()
        self._index = -1  # position in service_ids of the service being synchronized; -1 = none
        self._done_sent = False
        # barriers of the current ring, by service: peers can be a service ahead of us
        self._barriers: dict[int, set[int]] = {}
        self.completed: RingId | None = None  # the last ring whose sync completed
        self.aborted = 0
        self.resyncs = 0
        self._resync_pending = False

    @property
    def active_service(self) -> int | None:
        """The service id being synchronized now, or None."""
        return self.service_ids[self._index] if 0 <= self._index < len(self.service_ids) else None

    @property
    def in_progress(self) -> bool:
        return self._index >= 0

    def on_confchg(self, change: ConfigChange) -> list[SyncOutput]:
        """A configuration change from the core, in the order it emitted them."""
        out: list[SyncOutput] = []
        if change.type == ConfigType.TRANSITIONAL:
            self.transitional = change.members
            return out
        if self.in_progress and self.ring_id is not None:
            svc = self.active_service
            if svc is not None:
                out.append(ToService(svc, SyncRecord(DELIVER_SYNC_ABORT, self.ring_id)))
            self.aborted += 1
            out.append(SyncLog("notice", f"Sync of ring {self.ring_id} aborted by a new configuration"))
        self.ring_id = change.ring_id
        self.members = change.members
        if not set(self.transitional) <= set(change.members):
            self.transitional = tuple(n for n in self.transitional if n in change.members)
        self._barriers = {}
        self._index = -1
        self._resync_pending = False
        out.append(SyncLog("debug", f"Starting service synchronization for ring {change.ring_id}, "
                                    f"members {list(change.members)}"))
        self._start_next(out)
        return out

    def on_resync(self, ring_id: RingId) -> list[SyncOutput]:
        """A SERVICE_BUILD for ``ring_id`` was delivered: run the sequence again (after the running one)."""
        out: list[SyncOutput] = []
        if ring_id != self.ring_id:
            return out  # another ring: its own configuration change runs a full sync anyway
        if self.in_progress:
            self._resync_pending = True
            return out
        self._restart(out)
        return out

    def _restart(self, out: list[SyncOutput]) -> None:
        self.resyncs += 1
        self._resync_pending = False
        self.transitional = self.members
        self._barriers = {}
        self._index = -1
        out.append(SyncLog("notice", f"A service restarted: synchronizing ring {self.ring_id} again"))
        self._start_next(out)

    def on_sync_done(self, service_id: int, ring_id: RingId) -> list[SyncOutput]:
        """A service finished ``sync_process`` for ``ring_id`` (stale reports are ignored)."""
        out: list[SyncOutput] = []
        if ring_id != self.ring_id or service_id != self.active_service or self._done_sent:
            return out
        self._done_sent = True
        out.append(SendBarrier(service_id, ring_id))
        return out

    def on_barrier(self, sender: int, service_id: int, ring_id: RingId) -> list[SyncOutput]:
        """A BARRIER delivered in total order; those of another ring or a non-member are ignored."""
        out: list[SyncOutput] = []
        if ring_id != self.ring_id or sender not in self.members or service_id not in self.service_ids:
            return out
        self._barriers.setdefault(service_id, set()).add(sender)
        self._advance(out)
        return out

    # -- internals --------------------------------------------------------------------------------
    def _start_next(self, out: list[SyncOutput]) -> None:
        assert self.ring_id is not None
        self._index += 1
        self._done_sent = False
        svc = self.active_service
        if svc is None:
            self._complete(out)
            return
        out.append(ToService(svc, SyncInitRecord(self.ring_id, self.members, self.transitional)))

    def _advance(self, out: list[SyncOutput]) -> None:
        while self.in_progress:
            svc = self.active_service
            if svc is None or not set(self.members) <= self._barriers.get(svc, set()):
                return
            assert self.ring_id is not None
            out.append(ToService(svc, SyncRecord(DELIVER_SYNC_ACTIVATE, self.ring_id)))
            self._start_next(out)

    def _complete(self, out: list[SyncOutput]) -> None:
        assert self.ring_id is not None
        self._index = -1
        self.completed = self.ring_id
        for svc in self.all_service_ids:
            out.append(ToService(svc, SyncRecord(DELIVER_SYNC_COMPLETE, self.ring_id)))
        out.append(SyncLog("notice", "Completed service synchronization, ready to provide service."))
        if self._resync_pending:
            self._restart(out)

    def current_init(self, service_id: int) -> SyncInitRecord | None:
        """The SYNC_INIT of the round in progress when ``service_id`` is the one being synchronized and
        has not reported SYNC_DONE (a restarted service must be told again, or the round waits forever)."""
        if self.active_service != service_id or self._done_sent or self.ring_id is None:
            return None
        return SyncInitRecord(self.ring_id, self.members, self.transitional)
