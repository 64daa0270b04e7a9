"""Starting a node's Python children by forking the supervisor instead of running a fresh interpreter.

A fresh ``python -m module`` child spends about 0.4 s of a core importing numpy and numba and loading
its kernels from the numba cache (PROTOTYPES.md §7), and a node has seven such children on two cores:
that was most of a node's start time, and of every restart of a service. The supervisor instead
imports those modules and loads every kernel once (``preload()``, after the cache is warm), then
starts each child with ``fork()``: the child has them all already, and runs its module as
``python -m`` would (``runpy``, ``sys.argv``, its own environment, stdin on /dev/null, its stderr on the
supervisor's pipe, its own process group).

What a forked child does not inherit from the supervisor: its signal handlers and signal mask, its
signal wakeup fd, its logging handlers (the child configures its own), and its descriptors. Every
descriptor the child is not given (``pass_fds``, stdio) is pointed at /dev/null rather than closed,
so that a supervisor object the child still holds can never close a descriptor the child opened
later under the same number. The supervisor runs no thread when it forks (the loop is single
threaded), and it collects and freezes its garbage first so that the child never finalizes a
supervisor object.

Only children whose ``ChildSpec.fork`` is set start this way, and only once ``preload()`` succeeded;
``PYCOROSYNC_FORK_CHILDREN=0`` turns it off (every child is then a fresh interpreter). Programs that
are not the package's own node processes (SAM's applications, for instance) always run with exec.

A forked child's ``/proc/<pid>/environ`` and command line are the supervisor's, not its own: who is who
in a node is in the supervisor's ``processes.json`` (see ``NodeSupervisor``), which monitoring and the
local cluster tooling read.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import os
import runpy
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType
from typing import IO, Any, NoReturn

from pycorosync.engine.supervisor.child import CHILD_NAME_ENV

FORK_ENV = "PYCOROSYNC_FORK_CHILDREN"
_PR_SET_NAME = 15

_log = logging.getLogger("MAIN")
_preloaded = False

# what every node process imports, beyond the kernels preload() loads
_COMMON_MODULES = (
    "numpy",
    "psutil",
    "posix_ipc",
    "pycorosync.engine.config",
    "pycorosync.engine.runtime.node",
    "pycorosync.engine.runtime.service",
    "pycorosync.ipc.server",
    "pycorosync.ipc.stats",
)


def enabled() -> bool:
    """True when children marked ``fork`` start by fork (``preload()`` ran and it is not turned off)."""
    return _preloaded and os.environ.get(FORK_ENV, "1") != "0"


def preload(modules: Iterable[str] = (), *, kernels: bool = True) -> float:
    """Imports what node processes use and loads every numba kernel (the cache must be warm); returns
    the seconds it took. ``modules``: the children's main modules; their packages are imported (the
    modules themselves run as ``__main__`` in the child, as with ``python -m``). ``kernels`` false: no
    numba kernel is loaded (for tests of the fork itself). Raises nothing: on a failure the children
    start as fresh interpreters, and the reason is logged."""
    global _preloaded
    if os.environ.get(FORK_ENV, "1") == "0":
        return 0.0
    t0 = time.monotonic()
    try:
        if kernels:
            from pycorosync import warm

            warm.warm_all(mark=False)
        for name in (*_COMMON_MODULES, *{m.rpartition(".")[0] for m in modules if "." in m}):
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    except Exception as exc:
        _log.warning("children start as fresh interpreters: preloading the node's modules failed: %r", exc)
        return time.monotonic() - t0
    _preloaded = True
    return time.monotonic() - t0


class ForkedChild:
    """What ``ChildProcess`` needs of a ``subprocess.Popen`` for a forked child: pid, stderr, poll() (which
    reaps it). Also what SAM's forked application children are watched through (``services/sam/forkwatch``)."""

    def __init__(self, pid: int, stderr: IO[bytes] | None = None) -> None:
        self.pid = pid
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the child has ended (negative: killed by that signal), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped behind our back: its status is lost; report it as killed
                self.returncode = -9
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def module_of(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """``(module, args)`` when ``argv`` runs a module of this interpreter with ``-m``, else None."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m":
        return argv[2], list(argv[3:])
    return None


def spawn(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str],
    pass_fds: Sequence[int],
    cwd: str | None,
    capture_stderr: bool,
) -> ForkedChild:
    """Forks a child that runs ``module`` as ``python -m module *args`` would; raises OSError."""
    stderr_r: int | None = None
    stderr_w: int | None = None
    if capture_stderr:
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    gc.collect()  # garbage made by the supervisor is freed here, never in a child
    gc.freeze()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        for fd in (stderr_r, stderr_w):
            if fd is not None:
                os.close(fd)
        raise
    if pid == 0:
        _run_child(module, args, env, pass_fds, cwd, stderr_w)
    gc.unfreeze()
    if stderr_w is not None:
        os.close(stderr_w)
    stream = os.fdopen(stderr_r, "rb", buffering=0) if stderr_r is not None else None
    return ForkedChild(pid, stream)


def _run_child(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str],
    pass_fds: Sequence[int],
    cwd: str | None,
    stderr_w: int | None,
) -> NoReturn:
    """The forked child: a clean process state, then the module as ``__main__``; never returns."""
    code = 1
    try:
        _reset_signals()
        os.setpgid(0, 0)
        _name_process(env.get(CHILD_NAME_ENV))
        _reset_fds(pass_fds, stderr_w)
        _reset_logging()
        os.environ.clear()
        os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = [module, *args]
        code = 0
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    with contextlib.suppress(Exception):
        print(value, file=sys.stderr)
    return 1


# the dispositions a fresh interpreter starts with
_FRESH: dict[int, Callable[[int, FrameType | None], Any] | int] = {
    signal.SIGINT: signal.default_int_handler, signal.SIGPIPE: signal.SIG_IGN, signal.SIGXFSZ: signal.SIG_IGN}


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        want = _FRESH.get(sig, signal.SIG_DFL)
        with contextlib.suppress(OSError, ValueError, TypeError):
            if signal.getsignal(sig) is not want:
                signal.signal(sig, want)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _reset_fds(pass_fds: Sequence[int], stderr_w: int | None) -> None:
    """stdin on /dev/null, stderr on the pipe, the given fds kept; every other fd onto /dev/null."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    if stderr_w is not None:
        os.dup2(stderr_w, 2)
    keep = {0, 1, 2, null, *pass_fds}
    for fd in pass_fds:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, True)  # as subprocess's pass_fds leaves them (a child may exec)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.dup2(null, fd, inheritable=False)
    os.close(null)


def _name_process(name: str | None) -> None:
    """``pcs-<name>`` as the thread name ``ps -o comm`` and ``top`` show (all forks share one command line)."""
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(f"pcs-{name}".encode()[:15]), 0, 0, 0)


def _reset_logging() -> None:
    """Forgets the supervisor's handlers without closing them (their descriptors are gone already)."""
    from pycorosync.engine.supervisor import logsetup

    logsetup.forget_after_fork()
