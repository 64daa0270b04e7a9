"""Watching a child SAM made with ``os.fork()`` with the supervisor's own ``ChildWatch``.

``ChildWatch.spawn`` starts programs through ``subprocess``; corosync's ``sam_register`` forks, and the
child returns into the application. These adapters let a forked pid go through the same pidfd watch,
reap and warn-signal-then-SIGKILL stop as every other supervised child, instead of a second copy:
``forkstart.ForkedChild`` gives the forked pid the ``poll()`` that ``ChildProcess.reap`` calls, and
``SamChildWatch.adopt`` registers an existing ``ChildProcess`` the way ``spawn`` registers a new one.
"""

from __future__ import annotations

from pycorosync.engine.supervisor.forkstart import ForkedChild
from pycorosync.engine.supervisor.process import ChildProcess, ChildSpec
from pycorosync.engine.supervisor.watch import ChildWatch


def forked_child(spec: ChildSpec, pid: int, restart_count: int) -> ChildProcess:
    """A ``ChildProcess`` for a pid this process has just forked (no ready pipe, no stderr capture)."""
    return ChildProcess(spec, ForkedChild(pid), None, restart_count)


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
