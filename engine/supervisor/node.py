"""The node plan and its supervisor: start children in dependency order, restart by rule, stop in reverse.

    plan = NodePlan((transport, totem, cpg, cmap, quorum, cfg, exporter), shm_prefix=node_prefix("c", 1))
    sup = NodeSupervisor(plan)
    sup.install_signal_handlers()          # SIGTERM/SIGINT: stop; SIGHUP: reopen logs, forward reload_signal
    exit_code = sup.serve(on_ready=...)    # start (raises nothing: logs and returns 1 on a start failure), run, stop

Loop callbacks only record events; acting on them (which may start or stop children, and so wait)
happens at the top of ``run``, never inside a callback.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycorosync.engine.supervisor import sched, shm
from pycorosync.engine.supervisor.logsetup import NOTICE
from pycorosync.engine.supervisor.loop import EventLoop, Timer
from pycorosync.engine.supervisor.policy import GiveUp, RestartBudget, RestartPolicy
from pycorosync.engine.supervisor.process import ChildProcess, ChildSpec, ExitStatus, RestartRule
from pycorosync.engine.supervisor.watch import ChildWatch

_log = logging.getLogger("MAIN")


REGISTRY_NAME = "processes.json"  # in the run dir: who is who among the node's processes


def read_registry(path: Path) -> dict[int, tuple[str, int]]:
    """A supervisor's ``processes.json`` (``NodeSupervisor.registry``): pid -> (child name, restarts);
    empty when there is none or it cannot be read. Some pids may have ended since it was written."""
    try:
        body = json.loads(path.read_text())
        return {int(pid): (str(c["name"]), int(c["restarts"])) for pid, c in body["children"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


class StartError(RuntimeError):
    """A child of the node could not be started; the message names it and says how it ended."""


@dataclass(frozen=True)
class ChildSample:
    """One psutil sample of a child (taken every ``NodePlan.sample_interval_s``)."""

    name: str
    pid: int
    cpu_percent: float
    rss_bytes: int
    num_threads: int
    sampled_s: float  # time.monotonic() of the sample


UNTIL_POLL_S = 0.05


@dataclass(frozen=True)
class NodePlan:
    """The processes of one node, in start order; each one's ``depends_on`` must come before it."""

    children: tuple[ChildSpec, ...]
    shm_prefix: str | None = None
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    sample_interval_s: float = 1.0
    # makes the node's segments; called by start() after the stale ones of shm_prefix were removed
    create_segments: Callable[[], object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for spec in self.children:
            if spec.name in seen:
                raise ValueError(f"node plan: child '{spec.name}' appears twice")
            for dep in spec.depends_on:
                if dep not in seen:
                    raise ValueError(f"node plan: child '{spec.name}' depends on '{dep}', which is not listed before it")
            seen.add(spec.name)
        if self.shm_prefix is not None and not self.shm_prefix.startswith("/pcs-"):
            raise ValueError(f"node plan: shm prefix must start with /pcs-, got {self.shm_prefix!r}")

    def spec(self, name: str) -> ChildSpec:
        for spec in self.children:
            if spec.name == name:
                return spec
        raise KeyError(f"node plan has no child '{name}'")

    def dependents(self, name: str) -> tuple[str, ...]:
        """Children that depend on ``name``, directly or not, in plan order."""
        down = {name}
        result = []
        for spec in self.children:
            if any(dep in down for dep in spec.depends_on):
                down.add(spec.name)
                result.append(spec.name)
        return tuple(result)


class NodeSupervisor:
    """Runs a ``NodePlan``: ordered start with readiness, restarts per rule and policy, reverse-order stop."""

    def __init__(
        self,
        plan: NodePlan,
        *,
        loop: EventLoop | None = None,
        extra_env: Mapping[str, str] | None = None,
        forward_stderr_fd: int | None = 2,
        on_reload: Callable[[], None] | None = None,
        registry: Path | None = None,
    ) -> None:
        self.plan = plan
        self.registry = registry
        self.loop = loop or EventLoop()
        self.watch = ChildWatch(self.loop, on_exit=self._child_exited, forward_stderr_fd=forward_stderr_fd)
        self._extra_env = dict(extra_env or {})
        self._on_reload = on_reload
        self._current: dict[str, ChildProcess] = {}
        self._budgets = {spec.name: RestartBudget(plan.restart_policy) for spec in plan.children}
        self._start_counts: collections.Counter[str] = collections.Counter()
        self._restart_timers: dict[str, Timer] = {}
        self._waiting: set[str] = set()  # down, to be started again once their dependencies are ready
        self._events: collections.deque[tuple[str, Any]] = collections.deque()
        self._samples: dict[str, ChildSample] = {}
        self._psutil_procs: dict[int, Any] = {}
        self._stop_sampling: Callable[[], None] | None = None
        self.phase = "idle"  # idle, starting, running, stopping, stopped
        self.stop_reason: str | None = None
        self.exit_code = 0

    # -- public -------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the node (exit 0); SIGHUP reopens log files and forwards reload signals."""
        self.loop.add_signal_handler((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), self._on_signal)

    def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        """Starts the node, calls ``on_ready()``, runs until stopped, stops; returns the exit code."""
        try:
            self.start()
        except StartError as exc:
            _log.error("%s", exc)
            return 1
        if self.stop_reason is None:
            if on_ready is not None:
                on_ready()
            self.run()
        self.stop()
        return self.exit_code

    def start(self) -> None:
        """Starts every child once its dependencies are ready: children that do not depend on each
        other start together (the services, once totem is ready), which is what keeps a node's start
        short on a machine where each interpreter spends most of a second loading its imports.

        Raises ``StartError`` (after stopping what was started) when one fails. Returns early,
        leaving the stop to the caller, if a stop was requested meanwhile.
        """
        self.phase = "starting"
        if self.plan.shm_prefix:
            stale = shm.unlink_prefix(self.plan.shm_prefix)
            if stale:
                _log.info("removed %d stale shared-memory segments: %s", len(stale), " ".join(stale))
        if self.plan.create_segments is not None:
            try:
                self.plan.create_segments()
            except (OSError, ValueError) as exc:
                self.stop()
                raise StartError(f"cannot create the node's shared-memory segments: {exc}") from exc
        self._start_sampling()
        t0 = time.monotonic()
        failures, _blocked = self._start_children(self.plan.children, fail_fast=True)
        if self.stop_reason is not None:
            return
        if failures:
            self.stop()
            raise StartError(failures[0][1])
        self.phase = "running"
        _log.log(NOTICE, "node ready: %d processes running (started in %.0f ms)", len(self.plan.children),
                 (time.monotonic() - t0) * 1000)

    def run(self, until: Callable[[], bool] | None = None, timeout_s: float | None = None) -> int:
        """Watches the node until a stop is requested (or ``until()`` holds, or ``timeout_s`` passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        def wake() -> bool:
            return bool(self._events) or self.stop_reason is not None or (until is not None and until())

        while self.stop_reason is None:
            self._process_events()
            if self.stop_reason is not None or (until is not None and until()):
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            if until is not None:  # outside state no fd of the loop announces: look again every UNTIL_POLL_S
                left = UNTIL_POLL_S if left is None else min(left, UNTIL_POLL_S)
            self.loop.run_until(wake, left)
        return self.exit_code

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Asks ``run`` to return so that the node can be stopped; the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.exit_code = exit_code

    def stop(self) -> None:
        """Stops the children in reverse plan order (warn signal, timeout, SIGKILL) and unlinks the node's shm."""
        if self.phase == "stopped":
            return
        self.phase = "stopping"
        for timer in self._restart_timers.values():
            timer.cancel()
        self._restart_timers.clear()
        self._waiting.clear()
        self._stop_in_reverse_order([spec.name for spec in self.plan.children])
        if self._stop_sampling is not None:
            self._stop_sampling()
            self._stop_sampling = None
        if self.plan.shm_prefix:
            shm.unlink_prefix(self.plan.shm_prefix)
        self.phase = "stopped"

    def close(self) -> None:
        """Kills anything still alive and closes the loop (for owners that abandon a node, e.g. tests)."""
        self.watch.kill_all()
        self.loop.close()
        if self.registry is not None:
            with contextlib.suppress(OSError):
                self.registry.unlink()

    def _write_registry(self) -> None:
        """``registry`` (``processes.json``): who is who among the children, for monitoring and tools.

        ``{"supervisor": pid, "children": {pid: {"name": ..., "restarts": n}}}``, rewritten (by rename) at
        every start of a child. A forked child's environment and command line in /proc are the
        supervisor's, so they cannot say it; readers keep only pids that are still the supervisor's children.
        """
        if self.registry is None:
            return
        children = {str(c.pid): {"name": name, "restarts": c.restart_count} for name, c in self._current.items()
                    if c.alive}
        tmp = self.registry.with_name(f".{self.registry.name}.tmp")
        try:
            tmp.write_text(json.dumps({"supervisor": os.getpid(), "children": children}))
            os.replace(tmp, self.registry)
        except OSError as exc:
            _log.warning("cannot write %s: %s", self.registry, exc.strerror)

    def child(self, name: str) -> ChildProcess | None:
        """The latest instance of child ``name`` (None before its first start)."""
        return self._current.get(name)

    def pids(self) -> dict[str, int]:
        """Pids of the children currently alive, by name."""
        return {name: c.pid for name, c in self._current.items() if c.alive}

    def restarts(self, name: str) -> int:
        """How many times child ``name`` was restarted since the node started."""
        return max(0, self._start_counts[name] - 1)

    @property
    def samples(self) -> Mapping[str, ChildSample]:
        """The latest resource sample of each live child (cpu %, rss, threads)."""
        return dict(self._samples)

    # -- starting --------------------------------------------------------------------------
    def _spawn(self, spec: ChildSpec) -> ChildProcess | str:
        """Spawns one child; returns it, or an error naming it."""
        restart_count = self._start_counts[spec.name]
        self._start_counts[spec.name] += 1
        try:
            child = self.watch.spawn(spec, self._extra_env, restart_count)
        except OSError as exc:
            return f"child '{spec.name}' failed to start: {exc.strerror or exc}"
        if not spec.realtime:
            sched.drop_realtime(child.pid)
        self._current[spec.name] = child
        self._write_registry()
        _log.info("started child '%s' (pid %d)%s", spec.name, child.pid, f", restart {restart_count}" if restart_count else "")
        return child

    def _start_failure(self, child: ChildProcess) -> str | None:
        """Why a starting child is not ready (None while it may still become ready); kills it on timeout."""
        spec = child.spec
        if not child.alive:
            child.expected_exit = True  # this failure is handled by the starter, not again as a death
            return f"child '{spec.name}' failed to start: it {child.describe_failure()}"
        if time.monotonic() < child.started_s + spec.ready_timeout_s:
            return None
        child.expected_exit = True
        self.watch.stop(child)
        tail = child.last_stderr()
        return (
            f"child '{spec.name}' (pid {child.pid}) did not signal ready within {spec.ready_timeout_s:g} s; killed it"
            + (f"; last stderr: {tail}" if tail else "")
        )

    def _start_children(
        self, specs: Sequence[ChildSpec], *, fail_fast: bool
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """Starts ``specs`` (in plan order) in dependency waves: each as soon as all its dependencies are
        ready, so children that do not depend on each other start together.

        Returns ``(failures, blocked)``: ``(name, error)`` of the children that failed to start, and the
        names never started because a dependency is neither up nor in ``specs`` (or failed). With
        ``fail_fast`` the first failure ends the start (the caller stops the node). Returns at once,
        leaving the children as they are, when a stop is requested.
        """
        pending = list(specs)
        starting: dict[str, ChildProcess] = {}
        failures: list[tuple[str, str]] = []
        blocked: list[str] = []
        while pending or starting:
            if self.stop_reason is not None:
                return failures, blocked
            coming = {s.name for s in pending} | set(starting)
            for spec in list(pending):
                if all(self._is_up(dep) for dep in spec.depends_on):
                    pending.remove(spec)
                    spawned = self._spawn(spec)
                    if isinstance(spawned, str):
                        failures.append((spec.name, spawned))
                        if fail_fast:
                            return failures, blocked
                    else:
                        starting[spec.name] = spawned
                elif any(not self._is_up(dep) and dep not in coming for dep in spec.depends_on):
                    pending.remove(spec)  # its dependency is down and not being started: it waits
                    blocked.append(spec.name)
                    coming.discard(spec.name)
            if not starting:
                continue
            first_deadline = min(c.started_s + c.spec.ready_timeout_s for c in starting.values())
            self.loop.run_until(
                lambda: self.stop_reason is not None or any(c.ready or not c.alive for c in starting.values()),
                max(0.0, first_deadline - time.monotonic()),
            )
            if self.stop_reason is not None:
                return failures, blocked
            for name, child in list(starting.items()):
                if child.ready and child.alive:
                    del starting[name]
                    _log.info("child '%s' ready in %.0f ms", name, ((child.ready_s or 0.0) - child.started_s) * 1000)
                    continue
                error = self._start_failure(child)
                if error is None:
                    continue
                del starting[name]
                failures.append((name, error))
                if fail_fast:
                    return failures, blocked
        return failures, blocked

    def _start_waiting(self) -> None:
        """Starts every waiting child whose restart is due, each once its dependencies are ready."""
        due = [s for s in self.plan.children if s.name in self._waiting and s.name not in self._restart_timers]
        if not due or self.stop_reason is not None:
            return
        for spec in due:
            self._waiting.discard(spec.name)
        failures, blocked = self._start_children(due, fail_fast=False)
        self._waiting.update(blocked)
        for name, error in failures:
            if self.stop_reason is None:
                _log.error("%s", error)
                self._on_failure(name)

    def _stop_in_reverse_order(self, names: Sequence[str]) -> None:
        """Stops the live children among ``names`` in reverse dependency order: a child is stopped once
        every child that depends on it is down; children that do not depend on each other stop together."""
        live = [s for s in self.plan.children if s.name in names and self._live(s.name)]
        while live:
            wave = [s for s in live if not any(s.name in o.depends_on for o in live if o is not s)]
            if not wave:  # cannot happen in a validated plan; stop them all rather than loop
                wave = list(live)
            children = [self._current[s.name] for s in reversed(wave)]
            for child in children:
                _log.info("stopping child '%s' (pid %d)", child.name, child.pid)
            self.watch.stop_all(children)
            for child in children:
                status = child.exit_status
                if status is None:
                    _log.error("child '%s' (pid %d) survived SIGKILL; leaving it", child.name, child.pid)
                elif status.signal == signal.SIGKILL:
                    _log.warning(
                        "child '%s' (pid %d) did not exit within %g s of %s; killed it",
                        child.name,
                        child.pid,
                        child.spec.stop_timeout_s,
                        signal.Signals(child.spec.warn_signal).name,
                    )
            stopped = {s.name for s in wave}
            live = [s for s in live if s.name not in stopped and self._live(s.name)]

    def _live(self, name: str) -> bool:
        child = self._current.get(name)
        return child is not None and child.alive

    def _is_up(self, name: str) -> bool:
        child = self._current.get(name)
        return child is not None and child.alive and child.ready

    # -- failures ----------------------------------------------------------------------------
    def _child_exited(self, child: ChildProcess, status: ExitStatus) -> None:
        self._psutil_procs.pop(child.pid, None)
        self._samples.pop(child.name, None)
        self._events.append(("exit", child))

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._events.append(("reload", None))
        else:
            self.request_stop(f"received {signal.Signals(signum).name}", 0)

    def _process_events(self) -> None:
        while self._events and self.stop_reason is None:
            kind, item = self._events.popleft()
            if kind == "exit":
                self._handle_exit(item)
            elif kind == "restart":
                self._restart_timers.pop(item, None)
                self._start_waiting()
            elif kind == "reload":
                self._reload()

    def _handle_exit(self, child: ChildProcess) -> None:
        if child.expected_exit or self._current.get(child.name) is not child or self.phase != "running":
            return
        _log.error("child '%s' (pid %d) %s", child.name, child.pid, child.describe_failure())
        self._on_failure(child.name)

    def _on_failure(self, name: str) -> None:
        spec = self.plan.spec(name)
        if spec.restart is RestartRule.NEVER:
            _log.critical("child '%s' is not restartable; stopping the node", name)
            self.request_stop(f"child '{name}' failed", 1)
            return
        decision = self._budgets[name].on_failure(time.monotonic())
        if isinstance(decision, GiveUp):
            _log.critical("%s; stopping the node", decision.message(name))
            self.request_stop(decision.message(name), 1)
            return
        if spec.restart is RestartRule.NODE:
            dependents = self.plan.dependents(name)
            for dep in dependents:
                timer = self._restart_timers.pop(dep, None)
                if timer is not None:
                    timer.cancel()
                self._waiting.add(dep)
                if self._live(dep):
                    _log.log(
                        NOTICE,
                        "stopping child '%s': '%s' restarts, the node leaves and rejoins the ring", dep, name
                    )
            self._stop_in_reverse_order(dependents)
        _log.warning(
            "restarting child '%s' (rule %s) in %.2f s: restart %d of at most %d within %g s",
            name,
            spec.restart.value,
            decision.delay_s,
            decision.attempt,
            decision.max_restarts,
            decision.window_s,
        )
        self._waiting.add(name)
        self._restart_timers[name] = self.loop.call_later(
            decision.delay_s, lambda: self._events.append(("restart", name))
        )

    def _reload(self) -> None:
        _log.info("SIGHUP: reopening log files")
        if self._on_reload is not None:
            self._on_reload()
        for spec in self.plan.children:
            child = self._current.get(spec.name)
            # a child still starting may not handle the signal yet (SIGHUP would kill it); it opens the
            # log file afresh anyway
            if spec.reload_signal is not None and child is not None and child.ready and child.alive:
                child.send_signal(spec.reload_signal)

    # -- sampling ----------------------------------------------------------------------------
    def _start_sampling(self) -> None:
        if self.plan.sample_interval_s <= 0 or self._stop_sampling is not None:
            return
        try:
            import psutil  # noqa: F401  (optional: sampling is skipped without it)
        except ImportError:
            return
        self._stop_sampling = self.loop.call_every(self.plan.sample_interval_s, self._sample)

    def _sample(self) -> None:
        import psutil

        now = time.monotonic()
        for name, child in self._current.items():
            if not child.alive:
                continue
            proc = self._psutil_procs.get(child.pid)
            try:
                if proc is None:
                    proc = self._psutil_procs[child.pid] = psutil.Process(child.pid)
                with proc.oneshot():
                    cpu = proc.cpu_percent(None)
                    rss = proc.memory_info().rss
                    threads = proc.num_threads()
            except (psutil.Error, OSError):
                continue
            self._samples[name] = ChildSample(name, child.pid, float(cpu), int(rss), int(threads), now)
