"""SAM's keys in cmap (the CMAP recovery-policy flag): ``resources.process.<supervisor pid>.*``.

corosync's keys: ``recovery`` (``quit``/``restart``), ``poll_period`` (u64 ms), ``last_updated`` (u64
monotonic ns of the last health confirmation), ``state`` (``stopped``, ``running``, ``waiting for
quorum``, ``failed``). pycorosync adds ``pid`` (u32, the current child), ``cpu`` (double, % of a
core), ``rss`` (u64 bytes), ``threads`` (u32) and ``restarts`` (u32).

``recovery`` is also read back: an administrator who sets it to ``quit`` or ``restart`` changes the
policy of the running supervisor (any other value is refused in the log and written back).
Keys are published through ``CmapPublisher``, so they come back after a cmap service restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pycorosync.engine.config.types import ValueType
from pycorosync.engine.supervisor.node import ChildSample
from pycorosync.ipc.errors import CsError

if TYPE_CHECKING:  # the cmap client pulls numpy and numba: a SAM without the CMAP flag never imports it
    from pycorosync.services.cmap.client import CmapClient, CmapTrackEvent

log = logging.getLogger("SAM")

STATE_STOPPED = "stopped"
STATE_RUNNING = "running"
STATE_WAITING_FOR_QUORUM = "waiting for quorum"
STATE_FAILED = "failed"
RECOVERY_VALUES = ("quit", "restart")


def process_prefix(supervisor_pid: int) -> str:
    """``resources.process.<pid>.``, as corosync's libsam names its keys."""
    return f"resources.process.{supervisor_pid}."


class SamCmapKeys:
    """Publishes one supervisor's keys and reports changes of its ``recovery`` key.

    Raises CsError (CS_ERR_LIBRARY: "no 'cmap' service is running there") when cmap is unreachable
    at construction; later losses of the service are ridden out (keys are written again on ``resync``).
    """

    def __init__(
        self,
        run_dir: str | None,
        supervisor_pid: int,
        on_recovery_change: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.prefix = process_prefix(supervisor_pid)
        self.on_recovery_change = on_recovery_change  # called with "quit" or "restart"
        self._recovery = ""
        from pycorosync.services.cmap.client import CmapClient
        from pycorosync.services.cmap.publisher import CmapPublisher

        self._tracker: CmapClient | None = CmapClient(run_dir)
        self._publisher = CmapPublisher(run_dir)
        try:
            self._track(self._tracker)
        except BaseException:
            self.close()
            raise

    # -- publishing ------------------------------------------------------------------------------
    def _publish(self, name: str, value: str | int | float, vtype: ValueType) -> None:
        try:
            self._publisher.publish(self.prefix + name, value, vtype)
        except CsError as exc:
            log.warning("cannot write %s%s in cmap: %s", self.prefix, name, exc)

    def set_recovery(self, name: str) -> None:
        self._recovery = name
        self._publish("recovery", name, ValueType.STRING)

    def set_poll_period(self, interval_ms: int) -> None:
        self._publish("poll_period", int(interval_ms), ValueType.UINT64)

    def set_state(self, state: str) -> None:
        self._publish("state", state, ValueType.STRING)

    def touch(self) -> None:
        """``last_updated`` = now (CLOCK_MONOTONIC ns, as corosync's ``cs_timestamp_get``)."""
        self._publish("last_updated", time.monotonic_ns(), ValueType.UINT64)

    def set_child(self, pid: int, restarts: int) -> None:
        self._publish("pid", pid, ValueType.UINT32)
        self._publish("restarts", restarts, ValueType.UINT32)

    def set_sample(self, sample: ChildSample) -> None:
        self._publish("cpu", float(sample.cpu_percent), ValueType.DOUBLE)
        self._publish("rss", sample.rss_bytes, ValueType.UINT64)
        self._publish("threads", sample.num_threads, ValueType.UINT32)

    # -- tracking the recovery key ---------------------------------------------------------------
    def _track(self, client: CmapClient) -> None:
        from pycorosync.services.cmap.client import CMAP_TRACK_ADD, CMAP_TRACK_MODIFY

        client.track_add(self.prefix + "recovery", CMAP_TRACK_ADD | CMAP_TRACK_MODIFY, self._on_event)

    def _on_event(self, event: CmapTrackEvent) -> None:
        value = event.new_value
        if isinstance(value, bytes):
            value = value.rstrip(b"\0").decode(errors="replace")
        if not isinstance(value, str) or value == self._recovery:
            return
        if value not in RECOVERY_VALUES:
            log.warning("%srecovery: %r is not 'quit' or 'restart'; keeping %r", self.prefix, value, self._recovery)
            self.set_recovery(self._recovery)
            return
        log.info("%srecovery changed in cmap: %s -> %s", self.prefix, self._recovery, value)
        self._recovery = value
        if self.on_recovery_change is not None:
            self.on_recovery_change(value)

    def fileno(self) -> int | None:
        """Readable when a change of ``recovery`` waits (None while cmap is away)."""
        return None if self._tracker is None else self._tracker.fileno()

    def dispatch(self) -> bool:
        """Runs waiting notifications; False when the service went away (stop watching ``fileno``)."""
        if self._tracker is None:
            return False
        from pycorosync.ipc.client import CS_DISPATCH_ALL

        try:
            self._tracker.dispatch(CS_DISPATCH_ALL)
            if self._tracker.service_alive():
                return True
        except CsError:
            pass
        log.info("cmap service went away; SAM keys will be written again when it is back")
        self._tracker.close()
        self._tracker = None
        return False

    def resync(self) -> bool:
        """After a cmap restart: writes the keys again and tracks ``recovery`` again; True when tracking."""
        self._publisher.resync()
        if self._tracker is None:
            from pycorosync.services.cmap.client import CmapClient

            try:
                client = CmapClient(self.run_dir, timeout=2.0)
            except CsError:
                return False
            try:
                self._track(client)
            except CsError:
                client.close()
                return False
            self._tracker = client
            return True
        return True

    def close(self, withdraw: bool = False) -> None:
        """Closes the connections; ``withdraw`` deletes the keys first (a clean exit, as corosync does)."""
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        try:
            self._publisher.close(withdraw=withdraw)
        except CsError as exc:
            log.warning("cannot remove %s* from cmap: %s", self.prefix, exc)
