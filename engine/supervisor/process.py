"""Child specifications and one running child: spawn with a ready pipe, pidfd, stderr tail, reap.

A child is a fresh interpreter (``python -m module``), any program, or a fork of the supervisor that
runs a module (``ChildSpec.fork``, see ``forkstart``). It is started in its own process group (a
terminal's Ctrl-C reaches only the supervisor, which then stops the children in reverse order), with
the write end of a ready pipe and any eventfds or memfds the spec lists in ``pass_fds``. Death is seen through a pidfd, never by polling.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pycorosync.engine.supervisor import forkstart
from pycorosync.engine.supervisor.child import (
    CHILD_NAME_ENV,
    READY_FD_ENV,
    RESTART_COUNT_ENV,
    SUPERVISOR_PID_ENV,
)

STDERR_TAIL_LINES = 20
READY_FD_PLACEHOLDER = "{ready_fd}"
_READ_CHUNK = 65536


class RestartRule(enum.Enum):
    """What the supervisor does when a child dies (ARCHITECTURE.md §1)."""

    IN_PLACE = "in-place"  # transport, exporter: start it again, nothing else changes
    REJOIN = "rejoin"  # services: start it again; on start it joins the cluster anew (clients reconnect)
    NODE = "node"  # totem: the node has failed; restart it and everything that depends on it
    NEVER = "never"  # its death stops the node


@dataclass(frozen=True)
class ChildSpec:
    """How to run one process of a node.

    ``argv`` is the full command line (see ``python_module_argv``). ``depends_on`` names children
    that must be ready before this one starts, and which, when restarted under ``RestartRule.NODE``,
    take this one down and up with them. ``warn_signal`` is sent first on stop; after
    ``stop_timeout_s`` the child gets SIGKILL. With ``wait_ready`` false the child counts as ready
    once spawned. With ``fork`` (for ``python_module_argv`` children) the child is forked from the
    supervisor, which has preloaded the node's modules (``forkstart``), instead of exec'd. ``reload_signal`` (e.g. SIGHUP) is forwarded when the supervisor is asked to
    reopen its log files. A child with ``realtime`` false is put back to SCHED_OTHER as soon as it
    is spawned, when it inherited realtime scheduling from the supervisor (``system.sched_rr``).

    The ready pipe's fd number is in ``$PYCOROSYNC_READY_FD``; the text ``{ready_fd}`` in an argv
    element or an env value is also replaced by it (``--ready-fd {ready_fd}``, or a JSON blob in the env).
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    restart: RestartRule = RestartRule.IN_PLACE
    depends_on: tuple[str, ...] = ()
    ready_timeout_s: float = 10.0
    stop_timeout_s: float = 5.0
    warn_signal: int = signal.SIGTERM
    wait_ready: bool = True
    realtime: bool = True  # False: put back to SCHED_OTHER when it starts (the supervisor may run SCHED_RR)
    reload_signal: int | None = None
    pass_fds: tuple[int, ...] = ()
    cwd: str | None = None
    capture_stderr: bool = True
    fork: bool = False  # start by fork of the preloaded supervisor (forkstart), when it is enabled

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"child name must be a non-empty word, got {self.name!r}")
        if not self.argv:
            raise ValueError(f"child '{self.name}': argv is empty")
        if self.ready_timeout_s <= 0 or self.stop_timeout_s < 0:
            raise ValueError(f"child '{self.name}': timeouts must be positive")


def python_module_argv(module: str, *args: str) -> tuple[str, ...]:
    """The argv that runs ``module`` with ``-m`` in a fresh interpreter (the supervisor's own Python)."""
    return (sys.executable, "-m", module, *args)


@dataclass(frozen=True)
class ExitStatus:
    """How a child ended: ``returncode`` as subprocess reports it (negative = killed by that signal)."""

    pid: int
    returncode: int

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    def describe(self) -> str:
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = "unknown"
            return f"was killed by signal {-self.returncode} ({name})"
        return f"exited with status {self.returncode}"


class ChildProcess:
    """One running instance of a ``ChildSpec``: its pid, pidfd, ready pipe and stderr tail."""

    def __init__(
        self,
        spec: ChildSpec,
        popen: subprocess.Popen[bytes] | forkstart.ForkedChild,
        ready_fd: int | None,
        restart_count: int,
    ) -> None:
        self.spec = spec
        self.popen = popen
        self.pid = popen.pid
        self.pidfd = os.pidfd_open(popen.pid)
        self.ready_fd = ready_fd
        self.stderr_fd = popen.stderr.fileno() if popen.stderr is not None else None
        if self.stderr_fd is not None:
            os.set_blocking(self.stderr_fd, False)
        self.restart_count = restart_count
        self.started_s = time.monotonic()
        self.ready_s: float | None = None if spec.wait_ready else self.started_s
        self.exit_status: ExitStatus | None = None
        self.expected_exit = False  # set when the supervisor stops it (its death is then no failure)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._partial = b""
        self.ready_pipe_done = False  # the owner then stops watching and closes ready_fd

    @classmethod
    def spawn(cls, spec: ChildSpec, extra_env: Mapping[str, str] | None = None, restart_count: int = 0) -> ChildProcess:
        """Starts the child; raises OSError (with the child's name) if the program cannot be run."""
        env = dict(os.environ)
        overrides = {**(extra_env or {}), **spec.env}
        env[CHILD_NAME_ENV] = spec.name
        env[RESTART_COUNT_ENV] = str(restart_count)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        ready_r: int | None = None
        ready_w: int | None = None
        pass_fds = list(spec.pass_fds)
        if spec.wait_ready:
            ready_r, ready_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            os.set_blocking(ready_w, True)
            env[READY_FD_ENV] = str(ready_w)
            pass_fds.append(ready_w)
        else:
            env.pop(READY_FD_ENV, None)
        fd_text = str(ready_w) if ready_w is not None else "-1"
        env.update({k: v.replace(READY_FD_PLACEHOLDER, fd_text) for k, v in overrides.items()})
        argv = [arg.replace(READY_FD_PLACEHOLDER, fd_text) for arg in spec.argv]
        forked = forkstart.module_of(argv) if spec.fork and forkstart.enabled() else None
        try:
            if forked is not None:
                popen: subprocess.Popen[bytes] | forkstart.ForkedChild = forkstart.spawn(
                    forked[0], forked[1], env, pass_fds, spec.cwd, spec.capture_stderr)
            else:
                popen = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stderr=subprocess.PIPE if spec.capture_stderr else None,
                    pass_fds=pass_fds,
                    process_group=0,
                )
        except OSError as exc:
            for fd in (ready_r, ready_w):
                if fd is not None:
                    os.close(fd)
            raise OSError(exc.errno, f"cannot start child '{spec.name}' ({spec.argv[0]}): {exc.strerror}") from exc
        if ready_w is not None:
            os.close(ready_w)  # the child holds the only write end: EOF without a byte = died before ready
        return cls(spec, popen, ready_r, restart_count)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        return self.ready_s is not None

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def read_ready(self) -> bool:
        """Reads the ready pipe (call when readable); True when the child has just become ready.

        Sets ``ready_pipe_done`` once the pipe has nothing more to say (the byte, or end of file):
        the caller then removes it from its poller and calls ``close_ready_fd()``, in that order.
        """
        if self.ready_fd is None:
            return False
        try:
            data = os.read(self.ready_fd, 16)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        became_ready = bool(data) and self.ready_s is None
        if became_ready:
            self.ready_s = time.monotonic()
        if not data or became_ready:
            self.ready_pipe_done = True  # one byte is all a child ever says on this pipe
        return became_ready

    def read_stderr(self, forward_fd: int | None) -> bool:
        """Drains the stderr pipe into the tail (and ``forward_fd``); False at end of file."""
        if self.stderr_fd is None:
            return False
        while True:
            try:
                data = os.read(self.stderr_fd, _READ_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                if self._partial:
                    self.stderr_tail.append(self._partial.decode(errors="replace"))
                    self._partial = b""
                return False
            if forward_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(forward_fd, data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()[-4096:]
            self.stderr_tail.extend(line.decode(errors="replace") for line in lines if line.strip())

    def reap(self) -> ExitStatus | None:
        """Collects the exit status once the pidfd is readable; None while still running."""
        if self.exit_status is None:
            code = self.popen.poll()
            if code is not None:
                self.exit_status = ExitStatus(self.pid, code)
        return self.exit_status

    def send_signal(self, sig: int) -> bool:
        """Signals the child through its pidfd (never a recycled pid); False if it is gone."""
        if self.exit_status is not None:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    def last_stderr(self, lines: int = 5) -> str:
        """The last lines the child wrote to stderr, joined for an error message."""
        tail = list(self.stderr_tail)[-lines:]
        return " | ".join(line.strip() for line in tail)

    def close_ready_fd(self) -> None:
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.ready_fd)
            self.ready_fd = None

    def close(self) -> None:
        """Closes the fds the supervisor holds for this child (after it has been reaped)."""
        self.close_ready_fd()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        if self.popen.stderr is not None:
            with contextlib.suppress(OSError):
                self.popen.stderr.close()
            self.stderr_fd = None

    def describe_failure(self) -> str:
        """``exited with status 3; last stderr: ...`` for an error message about this child."""
        status = self.exit_status.describe() if self.exit_status else "is still running"
        tail = self.last_stderr()
        return f"{status}; last stderr: {tail}" if tail else status
