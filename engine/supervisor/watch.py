"""Spawn children and watch them from one event loop: readiness, stderr, death (pidfd), stop.

This is the part the node supervisor and SAM share: whoever owns an ``EventLoop`` creates a
``ChildWatch`` with two callbacks, and learns at once (pidfd, about half a millisecond) that a
child became ready or died. What to do about a death is the owner's business (see policy.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable, Mapping

from pycorosync.engine.supervisor.loop import EventLoop
from pycorosync.engine.supervisor.process import ChildProcess, ChildSpec, ExitStatus

KILL_WAIT_S = 5.0  # after SIGKILL the kernel tears a process down in milliseconds; this bounds a D-state hang

ReadyCallback = Callable[[ChildProcess], None]
ExitCallback = Callable[[ChildProcess, ExitStatus], None]


class ChildWatch:
    """Children of one owner, watched in ``loop``.

    ``on_ready(child)`` runs when a child writes its ready byte; ``on_exit(child, status)`` when it
    has died and been reaped (also for children stopped on purpose: ``child.expected_exit`` tells).
    Children's stderr is kept as a tail for error messages and copied to ``forward_stderr_fd``.
    """

    def __init__(
        self,
        loop: EventLoop,
        *,
        on_ready: ReadyCallback | None = None,
        on_exit: ExitCallback | None = None,
        forward_stderr_fd: int | None = 2,
    ) -> None:
        self.loop = loop
        self._on_ready = on_ready
        self._on_exit = on_exit
        self._forward_fd = forward_stderr_fd
        self.live: dict[int, ChildProcess] = {}  # pid -> child not yet reaped

    def spawn(self, spec: ChildSpec, extra_env: Mapping[str, str] | None = None, restart_count: int = 0) -> ChildProcess:
        """Starts ``spec`` and watches it; raises OSError naming the child when it cannot be run."""
        child = ChildProcess.spawn(spec, extra_env, restart_count)
        self.live[child.pid] = child
        self.loop.add_reader(child.pidfd, lambda: self._pidfd_readable(child))
        if child.ready_fd is not None:
            self.loop.add_reader(child.ready_fd, lambda: self._ready_readable(child))
        if child.stderr_fd is not None:
            self.loop.add_reader(child.stderr_fd, lambda: self._stderr_readable(child))
        return child

    def stop(self, child: ChildProcess, timeout_s: float | None = None) -> ExitStatus | None:
        """Stops a child: its warn signal, up to ``timeout_s`` (spec.stop_timeout_s) to exit, then SIGKILL.

        Runs the loop meanwhile (other children's events are recorded, not lost). Returns the
        exit status, or None if even SIGKILL did not end it within KILL_WAIT_S.
        """
        self.stop_all((child,), timeout_s)
        return child.exit_status

    def stop_all(self, children: Iterable[ChildProcess], timeout_s: float | None = None) -> None:
        """Stops several children at once: each gets its warn signal now and SIGKILL once its own
        ``stop_timeout_s`` (or ``timeout_s``) has passed; returns when all are gone or KILL_WAIT_S after
        the last SIGKILL. Their exit statuses are on the children (None: even SIGKILL did not end it)."""
        now = time.monotonic()
        deadlines: dict[int, float] = {}
        batch = list(children)
        for child in batch:
            child.expected_exit = True
            wait_s = child.spec.stop_timeout_s if timeout_s is None else timeout_s
            if child.alive and child.send_signal(child.spec.warn_signal) and wait_s > 0:
                deadlines[child.pid] = now + wait_s
            elif child.alive:
                child.send_signal(signal.SIGKILL)
        while True:
            waiting = [c for c in batch if c.alive and c.pid in deadlines]
            if not waiting:
                break
            first = min(deadlines[c.pid] for c in waiting)
            self.loop.run_until(_all_gone(waiting), max(0.0, first - time.monotonic()))
            now = time.monotonic()
            for c in waiting:
                if c.alive and deadlines[c.pid] <= now:
                    c.send_signal(signal.SIGKILL)
                    del deadlines[c.pid]
        self.loop.run_until(_all_gone(batch), KILL_WAIT_S)

    def kill_all(self) -> None:
        """SIGKILL to every live child and reap them (last resort, e.g. in a test's teardown)."""
        for child in list(self.live.values()):
            child.expected_exit = True
            child.send_signal(signal.SIGKILL)
        self.loop.run_until(lambda: not self.live, KILL_WAIT_S)

    # -- loop callbacks (record and return) --------------------------------------------------
    def _ready_readable(self, child: ChildProcess) -> None:
        became_ready = child.read_ready()
        if child.ready_pipe_done and child.ready_fd is not None:
            self.loop.remove_reader(child.ready_fd)
            child.close_ready_fd()
        if became_ready and self._on_ready is not None:
            self._on_ready(child)

    def _stderr_readable(self, child: ChildProcess) -> None:
        if not child.read_stderr(self._forward_fd) and child.stderr_fd is not None:
            self.loop.remove_reader(child.stderr_fd)

    def _pidfd_readable(self, child: ChildProcess) -> None:
        status = child.reap()
        if status is None:
            return
        if child.ready_fd is not None:
            self._ready_readable(child)  # a child may say "ready" and die in the same instant
        if child.stderr_fd is not None:
            child.read_stderr(self._forward_fd)  # keep its last words for the error message
            self.loop.remove_reader(child.stderr_fd)
        if child.ready_fd is not None:
            self.loop.remove_reader(child.ready_fd)
        self.loop.remove_reader(child.pidfd)
        child.close()
        self.live.pop(child.pid, None)
        if self._on_exit is not None:
            self._on_exit(child, status)


def _all_gone(children: list[ChildProcess]) -> Callable[[], bool]:
    return lambda: not any(c.alive for c in children)
