"""Shared by the SAM tests: run a small SAM application (or ``pycorosync sam run``) as a process tree,
read what it prints with deadlines, and reap the whole tree afterwards even when the test fails.

(No tests here; the module is named so that the SAM test files own it.)
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

APP_HEADER = """\
import os, sys, signal, time
from pycorosync import sam
from pycorosync.ipc.errors import CsError
def say(*words):
    os.write(1, (" ".join(str(w) for w in words) + "\\n").encode())
"""


class ProcTree:
    """One started process (and whatever it forks or spawns), with line-based reading of its stdout."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._buf = b""
        self.lines: list[str] = []
        self.stderr = b""
        self._seen: set[int] = {self.proc.pid}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self, timeout: float) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        fds = [self.proc.stdout.fileno(), self.proc.stderr.fileno()]
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if fd == fds[1]:
                self.stderr += data
                continue
            self._buf += data
            *done, self._buf = self._buf.split(b"\n")
            self.lines.extend(line.decode() for line in done)
        self._note_descendants()

    def _note_descendants(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._seen.update(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))

    def expect(self, pred: Callable[[str], bool] | str, timeout: float = 10.0, start: int = 0) -> str:
        """The first line (from index ``start``) that starts with ``pred`` (or satisfies it); fails after ``timeout``."""
        test = (lambda line: line.startswith(pred)) if isinstance(pred, str) else pred
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[start:]:
                if test(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pred!r} within {timeout} s; lines: {self.lines}; "
                                     f"stderr: {self.stderr.decode(errors='replace')[-2000:]}")
            self._pump(min(left, 0.05))

    def wait(self, timeout: float = 10.0) -> int:
        """The exit status once the process ended (reading its output meanwhile)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"process {self.proc.pid} still running after {timeout} s; lines: {self.lines}")
            self._pump(0.02)
        self._pump(0)
        return int(self.proc.returncode)

    def kill_tree(self) -> None:
        """SIGKILL to the process, its group and every descendant ever seen; reaps the process."""
        self._note_descendants()
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self._seen:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def live_descendants(self) -> list[int]:
        """Pids seen under this process that are still running (not zombies)."""
        out = []
        for pid in self._seen:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
        return out


@pytest.fixture
def proc_trees() -> Iterator[list[ProcTree]]:
    """A list to append started ``ProcTree`` objects to; all are killed and reaped at teardown."""
    trees: list[ProcTree] = []
    yield trees
    for tree in trees:
        tree.kill_tree()


def start_app(trees: list[ProcTree], tmp_path: Path, body: str, env: dict[str, str] | None = None,
              name: str = "samapp.py", args: Sequence[str] = ()) -> ProcTree:
    """Runs ``APP_HEADER + body`` as a Python program (``say(...)`` prints one line, unbuffered)."""
    path = tmp_path / name
    path.write_text(APP_HEADER + textwrap.dedent(body))
    tree = ProcTree([sys.executable, str(path), *args], env)
    trees.append(tree)
    return tree


def start_sam_run(trees: list[ProcTree], args: Sequence[str], env: dict[str, str] | None = None) -> ProcTree:
    """Runs ``pycorosync sam run ARGS``."""
    tree = ProcTree([sys.executable, "-m", "pycorosync", "sam", "run", *args], env)
    trees.append(tree)
    return tree


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
