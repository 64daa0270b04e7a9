"""The daemon's pid file, ``<run_dir>/pycorosync.pid``, held under an exclusive flock.

The lock, not the file's existence, says whether a daemon runs: the kernel drops it when the
holder dies in any way, so a pid file left by a killed daemon is taken over without guessing
from pid numbers (which get reused).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

PID_FILE_NAME = "pycorosync.pid"

_log = logging.getLogger("MAIN")


class AlreadyRunning(RuntimeError):
    """Another daemon holds the lock on this run dir."""

    def __init__(self, pid: int | None, run_dir: Path) -> None:
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"another pycorosync daemon ({who}) is running on {run_dir}")
        self.pid = pid
        self.run_dir = run_dir


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class PidFile:
    """``acquire()`` locks and writes our pid, ``release()`` removes it; usable as a context manager."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / PID_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock or raises ``AlreadyRunning``; a stale file (no lock holder) is taken over."""
        for _attempt in range(10):
            if self._try_acquire():
                return
        raise RuntimeError(f"cannot lock {self.path}: it keeps being replaced")

    def _try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(pid, self.run_dir) from None
            raise
        try:
            same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the previous holder unlinked it between our open and our lock
            os.close(fd)
            return False
        stale = _read_pid(fd)
        if stale is not None and stale != os.getpid():
            _log.info("taking over stale pid file %s (pid %d is not running pycorosync)", self.path, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Removes the file while still holding the lock, then drops the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _read_pid(self._fd) == os.getpid():
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def running_pid(run_dir: Path) -> int | None:
    """The pid of the daemon holding ``run_dir``'s lock, or None (for tools that talk to it)."""
    path = Path(run_dir) / PID_FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd)
        return None  # nobody holds it: stale
    finally:
        os.close(fd)
