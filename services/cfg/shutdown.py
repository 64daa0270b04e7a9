"""The shutdown tracking protocol of corosync's cfg service, as a pure state machine (no clock, no I/O).

    tracker = ShutdownTracker()
    tracker.track_start(conn_id)                       # corosync_cfg_trackstart: be consulted
    actions = tracker.try_shutdown(conn_id, flags, timeout_ms)
    actions = tracker.reply(conn_id, yes)              # corosync_cfg_replyto_shutdown
    actions = tracker.timer_expired()                  # cfg.shutdown_timeout passed

Every call returns the actions for its caller to carry out, in order: ``Respond`` (answer a client's
pending TRYSHUTDOWN), ``AskTrackers`` (send the shutdown callback event), ``StartTimer``/``CancelTimer``,
``SendShutdown`` (multicast the node's SHUTDOWN message: the decision is yes).

Rules (corosync's exec/cfg.c): REQUEST asks every tracker but the requester and needs a yes from each;
a no, or silence until the timer, refuses the shutdown with CS_ERR_BUSY. REGARDLESS asks them too but
goes down once all answered or the timer fired, whatever they said. IMMEDIATE asks nobody. A second
request while one is open gets CS_ERR_EXIST. No tracker: the answer is yes at once. A tracker that
leaves (trackstop, disconnect) counts as a yes; a requester that disconnects cancels the request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pycorosync.ipc.errors import CS_OK, CsErrorCode
from pycorosync.services.cfg.protocol import (
    COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE,
    COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS,
)


class Reply(enum.Enum):
    """A tracker's answer to the open request."""

    UNKNOWN = 0
    YES = 1
    NO = 2


@dataclass(frozen=True)
class Respond:
    """Answer client ``conn_id``'s TRYSHUTDOWN with ``error``."""

    conn_id: int
    error: int


@dataclass(frozen=True)
class AskTrackers:
    """Send the shutdown event (``status``, ``flags``) to these trackers."""

    conn_ids: tuple[int, ...]
    flags: int
    status: int


@dataclass(frozen=True)
class StartTimer:
    """Call ``timer_expired`` after ``delay_ms`` unless cancelled."""

    delay_ms: int


@dataclass(frozen=True)
class CancelTimer:
    """The request was decided or dropped: its timer is no longer needed."""


@dataclass(frozen=True)
class SendShutdown:
    """Multicast this node's SHUTDOWN: every node logs it and this one stops."""


Action = Respond | AskTrackers | StartTimer | CancelTimer | SendShutdown


class ShutdownTracker:
    """The trackers of one node and the shutdown request in progress (see the module docstring)."""

    def __init__(self) -> None:
        self.trackers: dict[int, Reply] = {}  # conn_id -> answer to the open request (insertion order)
        self.requester: int | None = None
        self.flags = 0
        self.yes = 0
        self.no = 0
        self.expected = 0

    @property
    def in_progress(self) -> bool:
        return self.requester is not None

    # -- trackers ------------------------------------------------------------------------------------
    def track_start(self, conn_id: int) -> list[Action]:
        """Registers a tracker; one that comes while a request is open is asked too."""
        if conn_id in self.trackers:
            return []
        self.trackers[conn_id] = Reply.UNKNOWN
        if self.requester is None:
            return []
        self.expected += 1
        return [AskTrackers((conn_id,), self.flags, CS_OK)]

    def track_stop(self, conn_id: int) -> list[Action]:
        """A tracker leaves: its vote becomes a yes (a no it gave is withdrawn)."""
        if conn_id not in self.trackers:
            return []
        reply = self.trackers.pop(conn_id)
        if self.requester is None:
            return []
        if reply is Reply.YES:
            self.yes -= 1
        elif reply is Reply.NO:
            self.no -= 1
        self.yes += 1
        return self._check()

    def lib_exit(self, conn_id: int) -> list[Action]:
        """A client is gone: a requester cancels its request, a tracker stops tracking."""
        actions: list[Action] = []
        if conn_id == self.requester:
            self.requester = None
            actions.append(CancelTimer())
        return actions + self.track_stop(conn_id)

    # -- the request ---------------------------------------------------------------------------------
    def try_shutdown(self, conn_id: int, flags: int, timeout_ms: int) -> list[Action]:
        """corosync_cfg_try_shutdown from ``conn_id``; its answer comes as a ``Respond`` now or later."""
        if flags == COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE:
            return [Respond(conn_id, CS_OK), SendShutdown()]
        if self.requester is not None:
            return [Respond(conn_id, int(CsErrorCode.CS_ERR_EXIST))]
        self.requester, self.flags, self.yes, self.no = conn_id, flags, 0, 0
        asked = tuple(c for c in self.trackers if c != conn_id)
        for c in asked:
            self.trackers[c] = Reply.UNKNOWN
        self.expected = len(asked)
        if not asked:
            self.requester = None
            return [Respond(conn_id, CS_OK), SendShutdown()]
        return [StartTimer(timeout_ms), AskTrackers(asked, flags, CS_OK)]

    def reply(self, conn_id: int, yes: bool) -> tuple[int, list[Action]]:
        """corosync_cfg_replyto_shutdown: (the replier's own result, actions). CS_ERR_ACCESS when no
        request is open; a client that was not asked, or already answered, changes nothing."""
        if self.requester is None:
            return int(CsErrorCode.CS_ERR_ACCESS), []
        if self.trackers.get(conn_id) is not Reply.UNKNOWN:
            return CS_OK, []
        self.trackers[conn_id] = Reply.YES if yes else Reply.NO
        if yes:
            self.yes += 1
        else:
            self.no += 1
        return CS_OK, self._check()

    def timer_expired(self) -> list[Action]:
        """Not everyone answered in time: the silent count as no (REGARDLESS still goes down)."""
        if self.requester is None:
            return []
        flags = self.flags
        self.no = self.expected
        actions = self._check()
        return actions + [AskTrackers(tuple(self.trackers), flags, int(CsErrorCode.CS_ERR_TIMEOUT))]

    def _check(self) -> list[Action]:
        if self.requester is None or self.yes + self.no < self.expected:
            return []
        requester, self.requester = self.requester, None
        if self.yes >= self.expected or self.flags == COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS:
            return [CancelTimer(), Respond(requester, CS_OK), SendShutdown()]
        return [CancelTimer(), Respond(requester, int(CsErrorCode.CS_ERR_BUSY))]
