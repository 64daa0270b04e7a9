"""The program of ``pycorosync sam run`` dies with its supervisor.

A supervisor killed with SIGKILL cannot stop its program, which would run on unsupervised (and a new
``sam run`` would start a second copy). So the program is started with PR_SET_PDEATHSIG: the kernel sends
it SIGKILL when the supervisor's thread that started it ends. The setting must be made in the child,
between fork and exec, and it survives the exec of the program (not of a set-user-id one). The
supervisor's ``ChildWatch`` spawns through ``subprocess`` without a pre-exec hook, so the program's argv
is wrapped instead:

- util-linux ``setpriv --pdeathsig KILL -- PROGRAM ...``: one more exec, no interpreter start;
- without ``setpriv``: ``python -m pycorosync.services.sam.deathsig PARENT_PID PROGRAM ...``, which also
  exits at once if the supervisor died before the setting was made.

Only the program itself is covered; processes it starts are its own business (as with any SIGKILL).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
SIGNAL = signal.SIGKILL


@functools.cache
def _setpriv() -> str | None:
    """util-linux setpriv if it knows --pdeathsig (2.33 and later), else None."""
    import subprocess

    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--help"], capture_output=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if b"--pdeathsig" in out else None


def set_parent_death_signal(sig: int = SIGNAL) -> bool:
    """PR_SET_PDEATHSIG for the calling process; False if the kernel or libc refused it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def wrap_argv(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` run so that it gets SIGKILL when this process dies (see the module docstring).

    Raises FileNotFoundError / PermissionError naming ``name`` when the program cannot be run: the
    wrapper would start anyway and only fail at its exec, which would look like a program that crashed.
    """
    if not argv:
        raise ValueError("no program to run")
    program = argv[0]
    found = shutil.which(program)
    if found is None:
        if os.sep in program and os.path.exists(program):
            raise PermissionError(errno.EACCES, f"cannot start child '{name}' ({program}): Permission denied")
        raise FileNotFoundError(errno.ENOENT, f"cannot start child '{name}' ({program}): No such file or directory")
    setpriv = _setpriv()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", signal.Signals(SIGNAL).name.removeprefix("SIG"), "--", *argv]
    return [sys.executable, "-m", "pycorosync.services.sam.deathsig", str(os.getpid()), *argv]


def main(args: Sequence[str]) -> int:
    """The fallback wrapper: ``PARENT_PID PROGRAM [ARGS...]``; execs PROGRAM, or returns 127/1."""
    if len(args) < 2 or not args[0].isdigit():
        print("usage: python -m pycorosync.services.sam.deathsig PARENT_PID PROGRAM [ARGS...]", file=sys.stderr)
        return 127
    set_parent_death_signal()
    if os.getppid() != int(args[0]):
        return 1  # the supervisor died before the setting was made: nobody would supervise the program
    try:
        os.execvp(args[1], list(args[1:]))
    except OSError as exc:
        print(f"cannot run {args[1]}: {exc.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
