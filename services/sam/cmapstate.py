"""SAM's keys in cmap (the CMAP recovery-policy flag): ``resources.process.<supervisor pid>.*``.

corosync's keys: ``recovery`` (``quit``/``restart``), ``poll_period`` (u64 ms), ``last_updated`` (u64
monotonic ns of the last health confirmation), ``state`` (``stopped``, ``running``, ``waiting for
quorum``, ``failed``). pycorosync adds ``pid`` (u32, the current child), ``cpu`` (double, % of a
core), ``rss`` (u64 bytes), ``threads`` (u32) and ``restarts`` (u32).

``recovery`` is also read back: an administrator who sets it to ``quit`` or ``restart`` changes the
policy of the running supervisor (any other value is refused in the log and written back).
icmap lives in the cmap process: after a cmap restart the keys are written again (``resync``). One
connection carries the writes and the tracking; it uses only the cmap client library.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pycorosync.engine.config.types import ValueType
from pycorosync.engine.supervisor.node import ChildSample
from pycorosync.ipc.errors import CS_ERR_LIBRARY, CS_ERR_NOT_EXIST, CS_ERR_TIMEOUT, CS_ERR_TRY_AGAIN, CsError

if TYPE_CHECKING:  # the cmap client pulls numpy and numba: a SAM without the CMAP flag never imports it
    from pycorosync.services.cmap.client import CmapClient, CmapTrackEvent

log = logging.getLogger("SAM")

STATE_STOPPED = "stopped"
STATE_RUNNING = "running"
STATE_WAITING_FOR_QUORUM = "waiting for quorum"
STATE_FAILED = "failed"
RECOVERY_VALUES = ("quit", "restart")
_UNAVAILABLE = frozenset({int(CS_ERR_LIBRARY), int(CS_ERR_TRY_AGAIN), int(CS_ERR_TIMEOUT)})


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
        self._owned: dict[str, tuple[str | int | float, ValueType]] = {}
        self.connections = 0  # +1 per connection made: a watcher of ``fileno`` re-registers when it changes
        self.before_close: Callable[[int], None] | None = None  # told the fd before a lost connection closes
        self._client: CmapClient | None = self._connect(run_dir)

    def _connect(self, run_dir: str | None, timeout: float = 5.0) -> CmapClient:
        from pycorosync.services.cmap.client import CmapClient

        client = CmapClient(run_dir, timeout=timeout)
        try:
            self._track(client)
            for key, (value, vtype) in sorted(self._owned.items()):
                client.set(key, value, vtype)
        except BaseException:
            client.close()
            raise
        self.connections += 1
        return client

    def _lost(self, exc: CsError) -> None:
        log.info("cmap service unavailable (%s); SAM keys will be written again when it is back", exc.name)
        self._close_client()

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self.before_close is not None:
            self.before_close(client.fileno())  # so that no poller keeps a number the kernel may hand out again
        client.close()

    # -- publishing ------------------------------------------------------------------------------
    def _publish(self, name: str, value: str | int | float, vtype: ValueType) -> None:
        key = self.prefix + name
        self._owned[key] = (value, vtype)
        if self._client is None:
            return
        try:
            self._client.set(key, value, vtype)
        except CsError as exc:
            if exc.code in _UNAVAILABLE:
                self._lost(exc)
            else:
                log.warning("cannot write %s in cmap: %s", key, exc)

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
        return None if self._client is None else self._client.fileno()

    def dispatch(self) -> bool:
        """Runs waiting notifications; False when the service went away (stop watching ``fileno``)."""
        if self._client is None:
            return False
        from pycorosync.ipc.client import CS_DISPATCH_ALL

        try:
            self._client.dispatch(CS_DISPATCH_ALL)
            if self._client.service_alive():
                return True
            lost = CsError(CS_ERR_LIBRARY, "cmap service hung up")
        except CsError as exc:
            lost = exc
        self._lost(lost)
        return False

    def resync(self) -> bool:
        """After a cmap restart: tracks ``recovery`` and writes the keys again; True when connected."""
        if self._client is not None and not self._client.service_alive():
            self._lost(CsError(CS_ERR_LIBRARY, "cmap service hung up"))
        if self._client is None:
            try:
                self._client = self._connect(self.run_dir, timeout=2.0)
            except CsError:
                return False
        return True

    def close(self, withdraw: bool = False) -> None:
        """Closes the connection; ``withdraw`` deletes the keys first (a clean exit, as corosync does)."""
        client = self._client
        if client is None:
            return
        try:
            if withdraw:
                for key in sorted(self._owned):
                    try:
                        client.delete(key)
                    except CsError as exc:
                        if exc.code != CS_ERR_NOT_EXIST:
                            raise
        except CsError as exc:
            log.warning("cannot remove %s* from cmap: %s", self.prefix, exc)
        finally:
            self._close_client()
