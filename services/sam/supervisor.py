"""The SAM supervisor: watches one child at a time, checks its health, and restarts it per policy.

It is built from the node supervisor's parts, not a copy of them: ``EventLoop`` (epoll, timers,
signals), ``ChildWatch`` (pidfd death detection and reaping, warn signal then SIGKILL on stop),
``RestartBudget`` (restart-storm bound) and ``ChildSample`` (psutil state). What SAM adds is
corosync's protocol with the child (COROSYNC.md §6):

- a failure while the child is *started* (no health check for ``interval_ms``, quorum lost under the
  QUORUM flag, a resource limit broken, ``mark_failed``) sends the warn signal, and SIGKILL one grace
  period later (the grace is the interval, as in corosync, or 5 s without one);
- the child's death while started is a recovery: RESTART starts a new instance, QUIT exits with the
  child's status (and cmap state ``failed``); a death before ``start()`` or after ``stop()`` ends the
  supervisor with the child's status, whatever the policy;
- a restart storm (``RestartPolicy.max_restarts`` within ``window_s``) gives up with a log line and
  exits non-zero.

Loop callbacks only record what happened (commands from the child are answered at once, they are
small); decisions that wait (stopping a child) run at the top of ``run_instance``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pycorosync.engine.supervisor.loop import EventLoop, Timer
from pycorosync.engine.supervisor.policy import GiveUp, RestartBudget
from pycorosync.engine.supervisor.process import ChildProcess, ChildSpec, ExitStatus
from pycorosync.ipc.errors import CS_ERR_INVALID_PARAM, CS_ERR_LIBRARY, CS_ERR_TOO_BIG, CS_OK, CsError
from pycorosync.services.sam import deathsig, protocol as sp
from pycorosync.services.sam.cmapstate import (
    STATE_FAILED,
    STATE_RUNNING,
    STATE_STOPPED,
    STATE_WAITING_FOR_QUORUM,
    SamCmapKeys,
)
from pycorosync.services.sam.forkwatch import SamChildWatch, forked_child
from pycorosync.services.sam.quorumsource import QuorumSource
from pycorosync.services.sam.resources import ResourceSampler
from pycorosync.services.sam.settings import InstanceEnd, SamSettings, exit_code_of

log = logging.getLogger("SAM")

_READ_CHUNK = 65536


def reserve_hc_fd_slot() -> int:
    """A low fd number, held on /dev/null, for ``$SAM_HC_FD``: call it before opening anything else.

    A shell reads ``>&N`` only for a single digit (dash); the supervisor's own connections would
    otherwise push the heartbeat pipe above 9.
    """
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _park_on_devnull(fd: int) -> None:
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


class SamSupervisor:
    """The parent side of SAM: one child instance at a time (see the module docstring).

    ``raw_heartbeats``: the child writes arbitrary bytes to its command pipe, each read one health
    check, and health checking starts with the first one (``pycorosync sam run``); otherwise the
    pipe carries libsam commands (``protocol.py``).
    """

    def __init__(
        self,
        settings: SamSettings,
        *,
        quorum: QuorumSource | None = None,
        cmap: SamCmapKeys | None = None,
        raw_heartbeats: bool = False,
        loop: EventLoop | None = None,
        forward_stderr_fd: int | None = 2,
        hc_fd_slot: int | None = None,
    ) -> None:
        if settings.quorum and quorum is None:
            raise CsError(CS_ERR_INVALID_PARAM, "SAM QUORUM policy needs a quorum source")
        self.settings = settings
        self.policy = sp.base_policy(settings.recovery_policy)  # changes with cmap's recovery key / mark_failed
        self.loop = loop or EventLoop()
        self.watch = SamChildWatch(self.loop, on_exit=self._child_exited, forward_stderr_fd=forward_stderr_fd)
        self.budget = RestartBudget(settings.restart_policy)
        self.quorum = quorum
        self.cmap = cmap
        self.raw_heartbeats = raw_heartbeats
        self.hc_fd_slot = hc_fd_slot  # see reserve_hc_fd_slot
        self.warn_signal: int = signal.SIGTERM
        self.data = b""  # data_store blob; a forked child inherits it
        self.instance_id = 0
        self.child: ChildProcess | None = None
        self.stop_signal: int | None = None  # a signal told the supervisor itself to stop
        self.malformed = 0
        self.last_sample: Any = None
        self._events: collections.deque[tuple[str, Any]] = collections.deque()
        self._sampler = ResourceSampler()
        self._reader = sp.CommandReader()
        self._cmd_fd: int | None = None
        self._reply_fd: int | None = None
        self._started = False
        self._hc_armed = False
        self._last_hc_s = 0.0
        self._hc_timer: Timer | None = None
        self._term_sent = False
        self._mark_failed = False
        self._waiting_quorum = False
        self._last_touch_s = 0.0
        self._quorum_fd: int | None = None
        self._quorum_lost = False  # the quorum source failed: no quorum can be known any more
        self._cmap_fd: int | None = None
        self._cmap_watched: tuple[int, int] | None = None  # (fd, connection number) in the loop
        self._stop_timers: list[Any] = []
        self._closed = False
        if quorum is not None:
            self._quorum_fd = quorum.fileno()
            self.loop.add_reader(self._quorum_fd, self._quorum_readable)
        if cmap is not None:
            cmap.on_recovery_change = self._on_recovery_change
            cmap.before_close = self._forget_cmap_fd
            cmap.set_recovery(sp.policy_name(self.policy))
            cmap.set_poll_period(settings.interval_ms)
            self._watch_cmap()
            self._stop_timers.append(self.loop.call_every(1.0, self._cmap_resync))
        if settings.sample_period_ms > 0:
            self._stop_timers.append(self.loop.call_every(settings.sample_period_ms / 1000.0, self._sample))

    # -- public: children ------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT/SIGHUP: pass the signal to the child, stop restarting, exit with its status."""
        self.loop.add_signal_handler((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), self._on_signal)

    def next_instance(self) -> int:
        """Counts a new instance (1, 2, ...: corosync's instance id) and publishes state ``stopped``."""
        self.instance_id += 1
        self._set_state(STATE_STOPPED)
        return self.instance_id

    def watch_forked(self, pid: int, cmd_fd: int, reply_fd: int) -> ChildProcess:
        """Supervises a child this process forked; ``cmd_fd``/``reply_fd`` are the parent's pipe ends (owned now)."""
        spec = ChildSpec(self.settings.name, (self.settings.name,), wait_ready=False, capture_stderr=False,
                         warn_signal=self.warn_signal, stop_timeout_s=self.settings.grace_s)
        child = self.watch.adopt(forked_child(spec, pid, self.instance_id - 1))
        self._begin_instance(child, cmd_fd, reply_fd, started=False)
        return child

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> ChildProcess:
        """Starts ``argv`` with ``$SAM_HC_FD`` (write end of its heartbeat pipe); raises OSError naming it.

        The program gets SIGKILL if this process dies (``deathsig``): killed supervisor, no orphan."""
        argv = deathsig.wrap_argv(argv, self.settings.name)
        hc_r, hc_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(hc_w, True)
        if self.hc_fd_slot is not None:
            os.dup2(hc_w, self.hc_fd_slot, inheritable=False)
            os.close(hc_w)
            hc_w = self.hc_fd_slot
        child_env = {**(env or {}), sp.HC_FD_ENV: str(hc_w), sp.INSTANCE_ID_ENV: str(self.instance_id)}
        spec = ChildSpec(self.settings.name, tuple(argv), env=child_env, wait_ready=False, capture_stderr=False,
                         warn_signal=self.warn_signal, stop_timeout_s=self.settings.grace_s, pass_fds=(hc_w,))
        try:
            child = self.watch.spawn(spec, restart_count=self.instance_id - 1)
        except OSError:
            os.close(hc_r)
            raise
        finally:
            if hc_w == self.hc_fd_slot:
                _park_on_devnull(hc_w)  # keep the low number for the next instance; the child holds the pipe
            else:
                os.close(hc_w)  # the child holds the only write end
        self._begin_instance(child, hc_r, None, started=True)
        return child

    def run_program(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        """``pycorosync sam run``: starts ``argv``, restarts it per policy, returns the exit code to exit with."""
        while True:
            if self.quorum is not None and not self.wait_for_quorum():
                if self._quorum_lost:
                    log.error("the quorum service is gone: '%s' cannot be started again", self.settings.name)
                    return self.finish(InstanceEnd(False, 1, "quorum service lost", failed=True))
                return self.finish(InstanceEnd(False, 0, "stopped while waiting for quorum"))
            self.next_instance()
            try:
                self.spawn(argv, env)
            except OSError as exc:
                log.error("%s", exc)
                return self.finish(InstanceEnd(False, 127, str(exc), failed=self.instance_id > 1))
            end = self.run_instance()
            if end.restart and self.wait(end.delay_s):
                continue
            if end.restart:
                end = InstanceEnd(False, 0, "stopped before the restart")
            return self.finish(end)

    def run_instance(self) -> InstanceEnd:
        """Runs until the current child is gone; returns what to do next (it has been reaped)."""
        assert self.child is not None, "run_instance without a child"
        while True:
            while self._events:
                kind, item = self._events.popleft()
                if kind == "exit":
                    return self._decide(item)
                if kind == "fail":
                    self._fail(item)
                elif kind == "signal":
                    self._stop_for_signal(item)
            self.loop.run_until(lambda: bool(self._events))

    def wait(self, delay_s: float) -> bool:
        """Waits ``delay_s`` (a restart backoff) unless a stop signal comes; False if one came."""
        self.loop.run_until(self._signal_pending, delay_s)
        self._drain_signals()
        return self.stop_signal is None

    def wait_for_quorum(self) -> bool:
        """Blocks until quorate (state ``waiting for quorum`` meanwhile); False if a stop signal came first
        or the quorum source is lost."""
        assert self.quorum is not None
        if not self.quorum.quorate and not self._quorum_lost:
            self._set_state(STATE_WAITING_FOR_QUORUM)
            log.info("waiting for quorum before starting '%s'", self.settings.name)
            self.loop.run_until(lambda: (self.quorum is not None and self.quorum.quorate) or self._quorum_lost
                                or self._signal_pending())
        self._drain_signals()
        return self.stop_signal is None and not self._quorum_lost

    def finish(self, end: InstanceEnd) -> int:
        """Publishes the end (``failed`` stays in cmap; a clean end removes the keys), closes everything."""
        if self.cmap is not None:
            if end.failed:
                self._set_state(STATE_FAILED)
            self.cmap.close(withdraw=not end.failed)
            self.cmap = None
        self.close()
        return end.exit_code

    def close(self) -> None:
        """Kills a child still alive, stops timers and sources, closes the loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.watch.kill_all()
        self._release(close_sources=True)

    def close_in_child(self) -> None:
        """In a freshly forked child: drops the parent's loop, pipes and connections without touching theirs.

        The epoll instance is shared with the parent across fork: an ``epoll_ctl(DEL)`` here would stop
        the parent from watching that fd. So the loop forgets its readers first and only closes its fd.
        """
        self._closed = True
        self.loop._readers.clear()  # adapter: EventLoop has no after-fork close of its own
        self._cmd_fd = self._reply_fd = self._quorum_fd = self._cmap_fd = None
        self._release(close_sources=True)

    # -- instances -------------------------------------------------------------------------------
    def _begin_instance(self, child: ChildProcess, cmd_fd: int, reply_fd: int | None, started: bool) -> None:
        self.child = child
        self._reader = sp.CommandReader()
        self._cmd_fd, self._reply_fd = cmd_fd, reply_fd
        os.set_blocking(cmd_fd, False)
        self.loop.add_reader(cmd_fd, self._cmd_readable)
        self._started = started
        self._hc_armed = False
        self._term_sent = False
        self._waiting_quorum = False
        self._sampler.forget()
        if self.cmap is not None:
            self.cmap.set_child(child.pid, self.budget.total_restarts)
        if started:
            self._set_state(STATE_RUNNING)
        log.info("'%s' instance %d running as pid %d", self.settings.name, self.instance_id, child.pid)

    def _close_pipes(self) -> None:
        if self._cmd_fd is not None:
            self.loop.remove_reader(self._cmd_fd)
            with contextlib.suppress(OSError):
                os.close(self._cmd_fd)
            self._cmd_fd = None
        if self._reply_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._reply_fd)
            self._reply_fd = None

    def _child_exited(self, child: ChildProcess, status: ExitStatus) -> None:
        if child is not self.child:
            return
        self._cmd_readable()  # commands written just before death still count (a last data_store)
        self._close_pipes()
        self._disarm_hc()
        self._sampler.forget()
        self._events.append(("exit", status))

    def _decide(self, status: ExitStatus) -> InstanceEnd:
        name, pid = self.settings.name, status.pid
        code = exit_code_of(status)
        if self.stop_signal is not None:
            return InstanceEnd(False, code, f"stopped by {signal.Signals(self.stop_signal).name}; child {status.describe()}")
        if self.raw_heartbeats and status.returncode == 0:
            log.info("'%s' (pid %d) exited with status 0; done", name, pid)
            return InstanceEnd(False, 0, "child exited with status 0")
        if not self._started:
            log.info("'%s' (pid %d) %s while not started; exiting with its status", name, pid, status.describe())
            return InstanceEnd(False, code, f"child {status.describe()} while not started")
        why = f"'{name}' (pid {pid}, instance {self.instance_id}) {status.describe()}"
        if self.policy == sp.SAM_RECOVERY_POLICY_QUIT:
            log.error("%s; recovery policy quit: exiting with status %d", why, code)
            return InstanceEnd(False, code, why, failed=True)
        decision = self.budget.on_failure(time.monotonic())
        if isinstance(decision, GiveUp):
            exit_code = code or 1
            log.critical("%s; exiting with status %d", decision.message(name, "SAM child"), exit_code)
            return InstanceEnd(False, exit_code, decision.message(name, "SAM child"), failed=True)
        log.warning("%s; restarting it: restart %d of at most %d within %g s", why, decision.attempt,
                    decision.max_restarts, decision.window_s)
        return InstanceEnd(True, code, why, delay_s=decision.delay_s)

    # -- failures --------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        """Warn signal now, SIGKILL after the grace period (both through ``ChildWatch.stop``)."""
        child = self.child
        if child is None or not child.alive or self._term_sent:
            return
        self._term_sent = True
        self._disarm_hc()
        grace = 0.0 if self._mark_failed else self.settings.grace_s
        sig = signal.SIGKILL if self._mark_failed else self.warn_signal
        log.error("'%s' (pid %d): %s; sending %s%s", self.settings.name, child.pid, reason, signal.Signals(sig).name,
                  f", SIGKILL in {grace:g} s" if sig != signal.SIGKILL else "")
        child.spec = dataclasses.replace(child.spec, warn_signal=sig)
        if self.watch.stop(child, timeout_s=grace) is None:
            log.critical("'%s' (pid %d) survived SIGKILL", self.settings.name, child.pid)

    def _stop_for_signal(self, signum: int) -> None:
        self.stop_signal = signum
        child = self.child
        if child is None or not child.alive:
            return
        log.info("received %s: passing it to '%s' (pid %d)", signal.Signals(signum).name, self.settings.name,
                 child.pid)
        child.spec = dataclasses.replace(child.spec, warn_signal=signum)
        self.watch.stop(child, timeout_s=self.settings.grace_s)

    def _on_signal(self, signum: int) -> None:
        self._events.append(("signal", signum))

    def _signal_pending(self) -> bool:
        return any(kind == "signal" for kind, _ in self._events)

    def _drain_signals(self) -> None:
        for kind, item in list(self._events):
            if kind == "signal":
                self.stop_signal = item
        self._events = collections.deque(e for e in self._events if e[0] != "signal")

    # -- health checks ---------------------------------------------------------------------------
    def _arm_hc(self) -> None:
        self._last_hc_s = time.monotonic()
        if self.settings.interval_ms <= 0 or self._hc_armed or self._term_sent:
            return
        self._hc_armed = True
        self._schedule_hc(self.settings.interval_ms / 1000.0)

    def _schedule_hc(self, delay_s: float) -> None:
        if self._hc_timer is not None:
            self._hc_timer.cancel()
        self._hc_timer = self.loop.call_later(delay_s, self._hc_due)

    def _disarm_hc(self) -> None:
        self._hc_armed = False
        if self._hc_timer is not None:
            self._hc_timer.cancel()
            self._hc_timer = None

    def _hc_due(self) -> None:
        # one timer, moved on lazily: a heartbeat only stamps the time, it never touches the heap
        self._hc_timer = None
        if not self._hc_armed:
            return
        self._cmd_readable()  # heartbeats may wait unread behind a slow timer callback (a cmap write) this turn
        if not self._hc_armed:
            return
        interval_s = self.settings.interval_ms / 1000.0
        left = self._last_hc_s + interval_s - time.monotonic()
        if left > 0:
            self._schedule_hc(left)
            return
        self._hc_armed = False
        self._events.append(("fail", f"no health check for {self.settings.interval_ms} ms"))

    def _heard_from_child(self) -> None:
        self._last_hc_s = time.monotonic()
        if self.cmap is not None:
            min_gap_s = (self.settings.interval_ms or 1000) / 4000.0
            if self._last_hc_s - self._last_touch_s >= min_gap_s:
                self._last_touch_s = self._last_hc_s
                self.cmap.touch()

    # -- the command pipe ------------------------------------------------------------------------
    def _cmd_readable(self) -> None:
        fd = self._cmd_fd
        if fd is None:
            return
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.loop.remove_reader(fd)  # EOF: the child's death follows through its pidfd
                return
            self._heard_from_child()
            if self.raw_heartbeats:
                if not self._hc_armed and not self._term_sent:
                    self._arm_hc()
                continue
            for received in self._reader.feed(chunk):
                self._handle(received)
            self.malformed = self._reader.malformed

    def _reply(self, code: int) -> None:
        if self._reply_fd is None:
            return
        with contextlib.suppress(OSError):  # the child is gone; its pidfd tells the rest
            os.write(self._reply_fd, sp.encode_reply(code))

    def _handle(self, received: sp.Received) -> None:
        command = received.command
        if command is sp.Command.START:
            if self._started or self._waiting_quorum:
                self._reply(CS_OK)
            elif self._quorum_lost:
                self._reply(CS_ERR_LIBRARY)  # libsam: start() fails when the quorum service cannot be read
            elif self.quorum is not None and not self.quorum.quorate:
                self._waiting_quorum = True
                self._set_state(STATE_WAITING_FOR_QUORUM)
            else:
                self._become_started()
        elif command is sp.Command.STOP:
            self._started = False
            self._disarm_hc()
            self._set_state(STATE_STOPPED)
            self._reply(CS_OK)
        elif command is sp.Command.DATA_STORE:
            if received.too_big:
                self._reply(CS_ERR_TOO_BIG)
            else:
                self.data = received.data
                self._reply(CS_OK)
        elif command is sp.Command.WARN_SIGNAL_SET:
            if 0 < received.signum < signal.NSIG:
                self.warn_signal = received.signum
                self._reply(CS_OK)
            else:
                self._reply(CS_ERR_INVALID_PARAM)
        elif command is sp.Command.MARK_FAILED:
            self._started = True  # corosync: a failed mark is a recovery, which QUIT turns into an exit
            self._mark_failed = True
            self.policy = sp.SAM_RECOVERY_POLICY_QUIT
            self._events.append(("fail", "marked itself failed"))

    def _become_started(self) -> None:
        self._waiting_quorum = False
        self._started = True
        self._arm_hc()
        self._set_state(STATE_RUNNING)
        self._reply(CS_OK)

    # -- quorum ----------------------------------------------------------------------------------
    def _quorum_readable(self) -> None:
        quorum = self.quorum
        if quorum is None:
            return
        try:
            quorum.dispatch()
            lost_source = False
        except CsError as exc:
            log.error("quorum source lost (%s); counting the node as not quorate", exc)
            lost_source = True
        if lost_source:
            self._quorum_lost = True
            if self._quorum_fd is not None:
                self.loop.remove_reader(self._quorum_fd)
                self._quorum_fd = None
        quorate = quorum.quorate and not lost_source
        if quorate and self._waiting_quorum:
            log.info("quorum regained: '%s' starts", self.settings.name)
            self._become_started()
        elif self._waiting_quorum and lost_source:
            self._waiting_quorum = False
            self._set_state(STATE_STOPPED)
            self._reply(CS_ERR_LIBRARY)
        elif not quorate and self._started and not self._term_sent:
            self._events.append(("fail", "quorum lost"))

    # -- cmap and resources ----------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if self.cmap is not None:
            self.cmap.set_state(state)

    def _on_recovery_change(self, name: str) -> None:
        if self._mark_failed:
            return
        self.policy = sp.SAM_RECOVERY_POLICY_RESTART if name == "restart" else sp.SAM_RECOVERY_POLICY_QUIT

    def _watch_cmap(self) -> None:
        """Watches the cmap connection's fd: a new connection (after a cmap restart) is registered anew."""
        if self.cmap is None:
            return
        fd = self.cmap.fileno()
        current = (fd, self.cmap.connections) if fd is not None else None
        if current == self._cmap_watched:
            return
        if self._cmap_fd is not None:
            self._forget_cmap_fd(self._cmap_fd)
        self._cmap_watched = current
        if fd is not None:
            self._cmap_fd = fd
            self.loop.add_reader(fd, self._cmap_readable)

    def _forget_cmap_fd(self, fd: int) -> None:
        if fd == self._cmap_fd:
            self.loop.remove_reader(fd)
            self._cmap_fd = None
            self._cmap_watched = None

    def _cmap_readable(self) -> None:
        if self.cmap is not None:
            self.cmap.dispatch()
            self._watch_cmap()

    def _cmap_resync(self) -> None:
        if self.cmap is not None:
            self.cmap.resync()
            self._watch_cmap()

    def _sample(self) -> None:
        child = self.child
        if child is None or not child.alive:
            return
        sample = self._sampler.sample(self.settings.name, child.pid)
        if sample is None:
            return
        self.last_sample = sample
        if self.cmap is not None:
            self.cmap.set_sample(sample)
            if self.raw_heartbeats and not self._hc_armed:
                self.cmap.touch()  # health = alive for a program that sends no heartbeats
        if self._started and not self._term_sent:
            violation = self.settings.limits.violation(sample)
            if violation is not None:
                self._events.append(("fail", violation))

    def _release(self, close_sources: bool) -> None:
        for stop in self._stop_timers:
            stop()
        self._stop_timers.clear()
        self._disarm_hc()
        self._close_pipes()
        if close_sources:
            if self.quorum is not None:
                with contextlib.suppress(Exception):
                    self.quorum.close()
                self.quorum = None
            if self.cmap is not None:
                self.cmap.close(withdraw=False)
                self.cmap = None
        for child in list(self.watch.live.values()):
            child.close()
        self.watch.live.clear()
        self.loop.close()
