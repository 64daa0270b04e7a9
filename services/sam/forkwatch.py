"""Watching a child SAM made with ``os.fork()`` with the supervisor's own ``ChildWatch``.

``ChildWatch.spawn`` starts programs through ``subprocess``; corosync's ``sam_register`` forks, and the
child returns into the application. These adapters let a forked pid go through the same pidfd watch,
reap and warn-signal-then-SIGKILL stop as every other supervised child, instead of a second copy:
``ForkedPopen`` gives the forked pid the ``poll()`` that ``ChildProcess.reap`` calls, and
``SamChildWatch.adopt`` registers an existing ``ChildProcess`` the way ``spawn`` registers a new one.
"""

from __future__ import annotations

import os
import subprocess
from typing import cast

from pycorosync.engine.supervisor.process import ChildProcess, ChildSpec
from pycorosync.engine.supervisor.watch import ChildWatch


class ForkedPopen:
    """The part of ``subprocess.Popen`` a ``ChildProcess`` uses, for a pid made by ``os.fork()``."""

    stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the child is gone (negative = killed by that signal), else None; reaps it."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -9  # reaped behind our back: report it as killed
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def forked_child(spec: ChildSpec, pid: int, restart_count: int) -> ChildProcess:
    """A ``ChildProcess`` for a pid this process has just forked (no ready pipe, no stderr capture)."""
    popen = cast("subprocess.Popen[bytes]", ForkedPopen(pid))
    return ChildProcess(spec, popen, None, restart_count)


class SamChildWatch(ChildWatch):
    """``ChildWatch`` that can also watch a child it did not spawn (see ``adopt``)."""

    def adopt(self, child: ChildProcess) -> ChildProcess:
        """Watches ``child`` exactly as ``spawn`` watches the children it starts."""
        self.live[child.pid] = child
        self.loop.add_reader(child.pidfd, lambda: self._pidfd_readable(child))
        if child.ready_fd is not None:
            self.loop.add_reader(child.ready_fd, lambda: self._ready_readable(child))
        if child.stderr_fd is not None:
            self.loop.add_reader(child.stderr_fd, lambda: self._stderr_readable(child))
        return child
