"""What the supervisor creates for a node before its first child starts (engine/runtime/PROTOCOL.md §1).

One eventfd per process (its inbound doorbell), inherited by every child, and the ``PYCOROSYNC_NODE``
environment variable that tells each child the node's config, ids, segment names and doorbell fds::

    {"config": path, "nodeid": N, "cluster": name, "run_dir": dir, "segment": name, "stats": name,
     "services": [...], "bells": {"transport": fd, "totem": fd, ...}, "ring_capacity": bytes, "ready_fd": fd}

``ready_fd`` differs per child: the JSON carries the ``{ready_fd}`` placeholder, which the spawn
replaces with that child's ready pipe. The segments themselves are made by ``NodePlan.create_segments``
(the runtime's layout function), called after the stale ones of the node's prefix were removed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pycorosync.engine.supervisor.process import READY_FD_PLACEHOLDER

NODE_ENV = "PYCOROSYNC_NODE"
DEFAULT_RING_CAPACITY = 4 << 20


@dataclass
class NodeResources:
    """The doorbells and the description every child of one node receives."""

    config: Path
    nodeid: int
    cluster: str
    run_dir: Path
    shm_prefix: str
    services: tuple[str, ...]
    processes: tuple[str, ...]
    ring_capacity: int = DEFAULT_RING_CAPACITY
    bells: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        config: Path,
        nodeid: int,
        cluster: str,
        run_dir: Path,
        shm_prefix: str,
        services: Iterable[str],
        processes: Iterable[str],
        ring_capacity: int = DEFAULT_RING_CAPACITY,
    ) -> NodeResources:
        """Makes one eventfd per process (non-blocking, close-on-exec until passed with pass_fds)."""
        res = cls(config, nodeid, cluster, run_dir, shm_prefix, tuple(services), tuple(processes), ring_capacity)
        try:
            for name in res.processes:
                res.bells[name] = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            res.close()
            raise
        return res

    @property
    def segment_name(self) -> str:
        return f"{self.shm_prefix}rings"

    @property
    def stats_name(self) -> str:
        return f"{self.shm_prefix}stats"

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The fds every child inherits (all doorbells: anyone may ring anyone's)."""
        return tuple(self.bells.values())

    def env(self) -> dict[str, str]:
        """``PYCOROSYNC_NODE`` with the ``{ready_fd}`` placeholder for the spawn to fill per child."""
        body = json.dumps(
            {
                "config": str(self.config),
                "nodeid": self.nodeid,
                "cluster": self.cluster,
                "run_dir": str(self.run_dir),
                "segment": self.segment_name,
                "stats": self.stats_name,
                "services": list(self.services),
                "bells": self.bells,
                "ring_capacity": self.ring_capacity,
            }
        )
        return {NODE_ENV: body[:-1] + f', "ready_fd": {READY_FD_PLACEHOLDER}}}'}

    def close(self) -> None:
        """Closes the doorbells (at node stop; children hold their own copies)."""
        for fd in self.bells.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.bells.clear()


def node_from_env() -> dict[str, object] | None:
    """In a child: the ``PYCOROSYNC_NODE`` description, or None when not started by a supervisor."""
    raw = os.environ.get(NODE_ENV)
    if not raw:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None
