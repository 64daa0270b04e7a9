"""What a supervised child process calls: tell the supervisor it is ready, and die with it.

Kept free of heavy imports: every node process imports it before anything else. The supervisor
hands each child, through the environment:

- ``PYCOROSYNC_READY_FD``: the write end of a pipe; one byte on it means "ready" (then it is closed).
- ``PYCOROSYNC_CHILD_NAME``: the child's name in the node plan (``totem``, ``cpg`` ...).
- ``PYCOROSYNC_RESTART_COUNT``: 0 on the first start, +1 on each restart (a service that restarts
  must leave and rejoin, and may log that it is a restart).
- ``PYCOROSYNC_SUPERVISOR_PID``: so that a child can tell that its supervisor is already gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from typing import NoReturn

READY_FD_ENV = "PYCOROSYNC_READY_FD"
CHILD_NAME_ENV = "PYCOROSYNC_CHILD_NAME"
RESTART_COUNT_ENV = "PYCOROSYNC_RESTART_COUNT"
SUPERVISOR_PID_ENV = "PYCOROSYNC_SUPERVISOR_PID"

_PR_SET_PDEATHSIG = 1


def notify_ready() -> bool:
    """Tells the supervisor this process is ready; False when not started by a supervisor.

    Call it once the process can do its job (sockets bound, rings attached): the supervisor
    starts the next process of the node only then.
    """
    value = os.environ.pop(READY_FD_ENV, None)
    if not value:
        return False
    try:
        fd = int(value)
    except ValueError:
        return False
    try:
        os.write(fd, b"R")
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return True


def child_name() -> str | None:
    """This process's name in the node plan, or None outside a supervisor."""
    return os.environ.get(CHILD_NAME_ENV)


def restart_count() -> int:
    """How many times the supervisor restarted this child before this start (0 = first start)."""
    try:
        return int(os.environ.get(RESTART_COUNT_ENV, "0"))
    except ValueError:
        return 0


def die_with_supervisor(sig: int = signal.SIGTERM) -> None:
    """Asks the kernel to send ``sig`` to this process when the supervisor dies.

    A supervisor killed with SIGKILL cannot stop its children; without this they would keep
    running as orphans holding the node's sockets. Exits at once if the supervisor is already gone.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os._exit(1)


def exit_process(code: int | None) -> NoReturn:
    """Ends a node process at once, as ``sys.exit(code)`` would but without the interpreter's teardown.

    Freeing numpy, numba and llvmlite module state takes ~0.5 s of a core per process, and the
    supervisor stops the node in waves (services, then totem, then the transport) that each wait for
    their processes to be gone. Everything a node process must do before exiting is done by then
    (``finally`` blocks ran, the supervisor owns the shm segments), so only the logs and stdio are
    flushed here.
    """
    import logging
    import sys

    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else 0)
