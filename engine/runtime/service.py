"""The service side of a node (PROTOCOL.md §6): one ``ServiceProcess`` subclass per service process.

    class CpgService(ServiceProcess):
        name = "cpg"                      # socket <run_dir>/cpg.sock, rings submit.cpg / deliver.cpg
        service_id = 2
        def lib_request(self, conn, rtype, payload): ...
        def deliver(self, sender_nodeid, ring_id, body): ...

    if __name__ == "__main__":
        sys.exit(service_main(CpgService))

One epoll loop: the service's doorbell (totem rings it after writing ``deliver.<svc>`` or freeing room
in ``submit.<svc>``), the IPC server of its clients (ipc/server.py), a signal pipe, and timers
(``call_later``). Hooks carry corosync's service-contract names; all are optional. ``mcast`` returns
False when the submit ring is full: answer the client CS_ERR_TRY_AGAIN. ``synced`` is False from
DELIVER_SYNC_INIT to DELIVER_SYNC_COMPLETE: hold cluster-bound requests (CS_ERR_TRY_AGAIN) meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar

from pycorosync.engine.runtime import records as rec
from pycorosync.engine.runtime.node import NodeInfo
from pycorosync.engine.totem.api import ConfigType, Guarantee, RingId
from pycorosync.ipc.server import Server, ServerConnection, ServerLimits

#: the loop's one periodic wake-up: handshake expiry and backlog retries (a safety net, the doorbells do the
#: work), the stats row, and the service's own ``housekeeping()``. Periodic work joins this tick rather
#: than arming timers of its own: every wake-up of an idle process costs ~0.2 ms of a core on 2 cores
SERVER_TICK_S = 1.0
SYNC_PROCESS_RETRY_S = 0.002
#: a service stops submitting while this much waits in its submit ring (a message larger than that still goes
#: into an emptier ring): the ring is sized for 16 MiB messages, not to queue seconds of small ones
SUBMIT_HIGH_WATER_BYTES = 4 << 20
HELD_RETRY_S = 0.01  # requests held for lack of submit room: a safety net, totem's producer wake-up does the work
DELIVER_PER_ROUND = 256
DELIVER_AFTER_RUN = 16  #: records read one by one after a ``deliver_run`` call that could take some


class TimerHandle:
    """A ``call_later`` timer; ``cancel()`` before it fires to drop it."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ServiceProcess:
    """Base of every service process (see the module docstring). Subclasses set ``name`` and
    ``service_id`` and override the hooks they need."""

    name: ClassVar[str] = ""
    service_id: ClassVar[int] = -1
    #: request types the IPC server admits (None = all; the handler validates)
    request_types: ClassVar[Collection[int] | None] = None
    #: ring sizes of client connections (None = ipc defaults)
    server_limits: ClassVar[ServerLimits | None] = None

    def __init__(self, node: NodeInfo, keys: Mapping[str, object] | None = None) -> None:
        if not self.name or self.service_id < 0:
            raise TypeError(f"{type(self).__name__} must set the class attributes name and service_id")
        self.node = node
        self.keys: Mapping[str, object] = keys or {}
        self.log = logging.getLogger(self.name.upper())
        self.nodeid = node.nodeid
        self.ring_id: RingId | None = None
        self.members: tuple[int, ...] = ()
        self.synced = False
        self.server: Server | None = None
        self.has_rings = self.name in node.services
        self._rings: Any = None
        self._submit: Any = None
        self._deliver: Any = None
        self._sync_ring: RingId | None = None  # ring being synchronized, until sync_process says done
        self._sync_done_pending: RingId | None = None
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_ids = itertools.count()
        self._stopping = False
        self._bad_logged = False
        self._ep: select.epoll | None = None
        self._requests_held = False
        # service.* columns of this process's stats-table row: counted here, written from the 1 s tick
        self.mcast_tx_bytes = 0
        self.delivered_bytes = 0
        self.flow_control_waits = 0
        self._refused = False  # mcast refused during the client request being handled
        #: optional fast path for DELIVER_MESSAGE records: ``fast(payload)`` handles the record and returns
        #: True, or returns False and leaves it to ``deliver`` (it must do exactly what ``deliver`` would,
        #: ``delivered_bytes`` included)
        self.deliver_fast: Callable[[bytes], bool] | None = None
        #: optional batch path, tried before the records are read one by one: ``run(ring)`` takes a run of
        #: records off the deliver ring's head itself (doing what ``deliver_fast`` would for each) and
        #: returns how many, or -1 when it cannot take any now (the records are then read as without it)
        self.deliver_run: Callable[[Any], int] | None = None

    # -- hooks (corosync's service contract) -------------------------------------------------------
    def exec_init(self) -> None:
        """Called once, before clients are admitted and before any delivery."""

    def exec_exit(self) -> None:
        """Called once on the way out (SIGTERM)."""

    def lib_init(self, conn: ServerConnection) -> int | None:
        """A client connected; return None/CS_OK to admit it or a cs_error_t to refuse."""
        return None

    def lib_exit(self, conn: ServerConnection) -> None:
        """A client closed, died, or was dropped."""

    def lib_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        """One client request: return (rtype, response) now, or None and ``conn.send_response`` later."""
        return None

    def deliver(self, sender_nodeid: int, ring_id: RingId, body: bytes) -> None:
        """A message of this service in total order (from any member, this node included)."""

    def confchg(self, type: ConfigType, ring_id: RingId, members: tuple[int, ...], left: tuple[int, ...],
                joined: tuple[int, ...]) -> None:
        """A transitional or regular configuration change."""

    def sync_init(self, ring_id: RingId, members: tuple[int, ...], transitional: tuple[int, ...]) -> None:
        """Synchronization for ``ring_id`` starts: multicast what the others need in ``sync_process``."""

    def sync_process(self) -> bool:
        """Called until it returns True (done for this ring); may ``mcast`` (False from mcast: return False)."""
        return True

    def sync_activate(self) -> None:
        """Every member of the ring finished ``sync_process``: switch to the synchronized state."""

    def sync_abort(self) -> None:
        """The sync in progress was cut short by a new configuration; another ``sync_init`` follows."""

    def sync_complete(self) -> None:
        """Every service is synchronized: client traffic may flow."""

    # -- helpers for subclasses ----------------------------------------------------------------------
    def mcast(self, body: bytes, guarantee: int = Guarantee.AGREED) -> bool:
        """Multicasts ``body`` to this service on every member; False = submit ring full (try again)."""
        if self._submit is None:
            raise RuntimeError(f"service '{self.name}' has no rings to totem (node-local service)")
        if self._submit.used_bytes() <= SUBMIT_HIGH_WATER_BYTES and self._submit.push(
                rec.SUBMIT_MCAST, rec.encode_submit_mcast(body, int(guarantee))):
            self.mcast_tx_bytes += len(body)
            self._notify_totem()
            return True
        self._refused = True
        return False

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> TimerHandle:
        """Runs ``callback()`` from the loop after ``delay_s`` seconds."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay_s), callback)
        heapq.heappush(self._timers, (handle.when, next(self._timer_ids), handle))
        return handle

    def stop(self) -> None:
        """Asks the loop to return (as SIGTERM does)."""
        self._stopping = True

    def hold_requests(self, nbytes: int = 0) -> None:
        """Stops reading client requests (back-pressure: the clients' request rings fill and their sends
        get CS_ERR_TRY_AGAIN) until ``release_requests``. Meanwhile ``retry_held`` is called on every
        loop round, and totem rings this process when ``nbytes`` fit in the submit ring again."""
        if self._submit is not None:
            self._submit.arm_producer(nbytes)
        if self._requests_held:
            return
        self._requests_held = True
        if self._ep is not None and self.server is not None:
            self._ep.modify(self.server.doorbell_fd, 0)

    def release_requests(self) -> None:
        """Reads client requests again (after ``hold_requests``)."""
        if not self._requests_held:
            return
        self._requests_held = False
        if self._ep is not None and self.server is not None:
            fd = self.server.doorbell_fd
            self._ep.modify(fd, select.EPOLLIN)
            with contextlib.suppress(BlockingIOError, OSError):
                os.eventfd_write(fd, 1)  # requests may have come while held: read them on the next round

    @property
    def requests_held(self) -> bool:
        """True between ``hold_requests`` and ``release_requests``."""
        return self._requests_held

    def deliveries_held(self) -> bool:
        """Subclasses: True while deliveries must wait (their clients are behind). The deliver ring then
        fills and totem slows the ring (PROTOCOL.md §5); asked again on every loop round."""
        return False

    def retry_held(self) -> None:
        """Called on every loop round while requests are held: send what waits, then ``release_requests``."""
        self.release_requests()

    def housekeeping(self) -> None:
        """Periodic work of the service, run from the loop's tick (every ``SERVER_TICK_S``, also under load)."""

    def publish_stats(self) -> None:
        """Writes the ``service.*`` counters into this process's row of the node stats table (the row the
        IPC server found: none outside a node)."""
        row = None if self.server is None else self.server.stats_row
        if row is None:
            return
        with contextlib.suppress(KeyError, IndexError, ValueError):  # a table of another build: skip
            row.set("service.mcast_tx_bytes", self.mcast_tx_bytes)
            row.set("service.delivered_bytes", self.delivered_bytes)
            row.set("service.flow_control_waits", self.flow_control_waits)

    # -- IPC handler (ipc.server.ServiceHandler) ------------------------------------------------------
    def on_connect(self, conn: ServerConnection) -> int | None:
        return self.lib_init(conn)

    def on_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        self._refused = False
        answer = self.lib_request(conn, rtype, payload)
        if self._refused:  # totem could not take it: answered CS_ERR_TRY_AGAIN, or held (retries not counted)
            self.flow_control_waits += 1
        return answer

    def on_disconnect(self, conn: ServerConnection) -> None:
        self.lib_exit(conn)

    # -- the deliver ring -----------------------------------------------------------------------------
    def _notify_totem(self) -> None:
        if self._submit is not None and self._submit.needs_wake():
            self._ring_totem()

    def _ring_totem(self) -> None:
        fd = self.node.bells.get("totem", -1)
        if fd >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.eventfd_write(fd, 1)

    def _read_deliver(self) -> bool:
        if self._deliver is None or self.deliveries_held():
            return False
        run = self.deliver_run
        moved = run(self._deliver) if run is not None else -1
        # after a run, only a few records one by one: the run stopped at one it does not take, and the
        # next round gives it the chance to take those after
        items = self._deliver.pop_batch(DELIVER_PER_ROUND if moved < 0 else DELIVER_AFTER_RUN)
        if not items:
            if moved > 0 and self._deliver.producer_needs_wake():
                self._ring_totem()
            return moved > 0
        if self._deliver.producer_needs_wake():
            self._ring_totem()
        server = self.server
        if server is not None:
            server.defer_event_wakes()  # each client woken once for the batch, not once per message
        fast = self.deliver_fast
        try:
            for rtype, payload in items:
                if fast is not None and rtype == rec.DELIVER_MESSAGE and fast(payload):
                    continue
                try:
                    self._dispatch(rec.decode_deliver(rtype, payload))
                except rec.RecordError as exc:
                    if not self._bad_logged:
                        self._bad_logged = True
                        self.log.error("dropped a deliver record: %s (further ones are not logged)", exc)
        finally:
            if server is not None:
                server.flush_event_wakes()
        return True

    def _dispatch(self, r: rec.DeliverRecord) -> None:
        if isinstance(r, rec.MessageRecord):
            self.delivered_bytes += len(r.body)
            self.deliver(r.sender_nodeid, r.ring_id, r.body)
        elif isinstance(r, rec.ConfchgRecord):
            if r.type == ConfigType.REGULAR:
                self.ring_id, self.members = r.ring_id, r.members
            self.confchg(r.type, r.ring_id, r.members, r.left, r.joined)
        elif isinstance(r, rec.SyncInitRecord):
            self.synced = False
            self._sync_ring = r.ring_id
            self._sync_done_pending = None
            self.sync_init(r.ring_id, r.members, r.transitional)
            self._run_sync_process()
        elif isinstance(r, rec.SyncRecord):
            if r.rtype == rec.DELIVER_SYNC_ACTIVATE:
                self.sync_activate()
            elif r.rtype == rec.DELIVER_SYNC_ABORT:
                self._sync_ring = self._sync_done_pending = None
                self.sync_abort()
            elif r.rtype == rec.DELIVER_SYNC_COMPLETE:
                self._sync_ring = self._sync_done_pending = None
                self.synced = True
                self.sync_complete()

    def _run_sync_process(self) -> None:
        """Calls ``sync_process`` while sync runs, then reports SUBMIT_SYNC_DONE (retried on a full ring)."""
        if self._sync_ring is not None and self._sync_done_pending is None:
            if not self.sync_process():
                return
            self._sync_done_pending = self._sync_ring
        pending = self._sync_done_pending
        if (pending is not None and self._submit is not None
                and self._submit.push(rec.SUBMIT_SYNC_DONE, rec.encode_ring(pending))):
            self._notify_totem()
            self._sync_ring = self._sync_done_pending = None

    # -- loop ----------------------------------------------------------------------------------------------
    def _run_timers(self) -> float | None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, handle = heapq.heappop(self._timers)
            if not handle.cancelled:
                handle.callback()
        return None if not self._timers else max(0.0, self._timers[0][0] - time.monotonic())

    def run(self, on_ready: Callable[[], object] | None = None, stop_fd: int | None = None) -> int:
        """Attaches the rings, listens, calls ``exec_init``, serves until SIGTERM/SIGINT or ``stop()``."""
        import threading

        from pycorosync.engine.supervisor.child import restart_count

        ep = select.epoll()
        self._ep = ep
        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        in_main = threading.current_thread() is threading.main_thread()
        old_wakeup = signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False) if in_main else -1
        old = {s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
        bell = self.node.bells.get(self.name, -1)
        try:
            if self.has_rings:
                self._rings = self.node.attach()
                self._submit = self._rings.submit[self.name]
                self._deliver = self._rings.deliver[self.name]
            self.exec_init()
            self.server = Server(self.node.run_dir, self.name, self, limits=self.server_limits,
                                 request_types=self.request_types, poller=ep)
            for fd in (sig_r, bell, stop_fd):
                if fd is not None and fd >= 0:
                    ep.register(fd, select.EPOLLIN)
            if self._submit is not None and restart_count() > 0:
                self._submit.push(rec.SUBMIT_HELLO, b"")
                self._notify_totem()
            self.log.info("service '%s' (id %d) ready on %s", self.name, self.service_id, self.server.path)
            if on_ready is not None:
                on_ready()
            next_tick = time.monotonic() + SERVER_TICK_S
            while not self._stopping:
                did = self._read_deliver()
                if self._sync_ring is not None or self._sync_done_pending is not None:
                    self._run_sync_process()
                if self._requests_held:
                    self.retry_held()
                timer_left = self._run_timers()
                now = time.monotonic()
                if now >= next_tick:  # also while deliveries keep the loop busy
                    self.server.tick()
                    self.publish_stats()
                    self.housekeeping()
                    next_tick = now + SERVER_TICK_S
                if did:
                    continue
                timeout = next_tick - now
                if timer_left is not None:
                    timeout = min(timeout, timer_left)
                if self._sync_ring is not None or self._sync_done_pending is not None:
                    timeout = min(timeout, SYNC_PROCESS_RETRY_S)
                if self._requests_held:
                    timeout = min(timeout, HELD_RETRY_S)
                deliver = self._deliver
                if deliver is not None and self.deliveries_held():
                    deliver = None  # not armed: totem must not ring for records we will not read now
                    timeout = min(timeout, HELD_RETRY_S)
                if deliver is not None and not deliver.arm():
                    continue
                try:
                    events = ep.poll(max(0.0, timeout))
                except InterruptedError:
                    events = []
                if deliver is not None:
                    deliver.disarm()
                for fd, ev in events:
                    if fd in (bell, sig_r):
                        with contextlib.suppress(BlockingIOError, OSError):
                            os.read(fd, 8 if fd == bell else 256)
                    elif fd == stop_fd:
                        self._stopping = True
                    else:
                        self.server.handle(fd, ev)
            return 0
        finally:
            with contextlib.suppress(Exception):
                self.exec_exit()
            self.publish_stats()
            if self.server is not None:
                self.server.close()
            if self._rings is not None:
                self._submit = self._deliver = None
                self._rings.close()
            ep.close()
            self._ep = None
            if in_main:
                signal.set_wakeup_fd(old_wakeup)
                for s, h in old.items():
                    signal.signal(s, h)
            os.close(sig_r)
            os.close(sig_w)
            self.log.info("service '%s' stopped", self.name)


def service_main(cls: type[ServiceProcess], argv: list[str] | None = None) -> int:
    """``python -m <service module>`` as the supervisor starts it (``PYCOROSYNC_NODE`` set): logging,
    death with the supervisor, config keys, then ``cls(node, keys).run()`` with the ready handshake."""
    ap = argparse.ArgumentParser(prog=f"pycorosync service {cls.name}")
    ap.parse_known_args(argv)
    from pycorosync.engine.runtime.node import plain_keys, setup_child

    setup_child()
    log = logging.getLogger(cls.name.upper() or "MAIN")
    from pycorosync.engine.config import ConfigError, load

    try:
        node = NodeInfo.from_env()
        config = load(node.config)
        keys = plain_keys(config.all_keys(config.local_node(node.nodeid)))
    except (ConfigError, ValueError, OSError) as exc:
        log.error("cannot start service '%s': %s", cls.name, exc)
        return 1
    from pycorosync.engine.runtime.profiling import run_profiled
    from pycorosync.engine.supervisor.child import notify_ready

    service = cls(node, keys)
    rc: int = run_profiled(cls.name, node.nodeid, lambda: service.run(on_ready=notify_ready))
    return rc
