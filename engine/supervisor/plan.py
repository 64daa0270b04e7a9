"""The concrete processes of a node, in start order, with their restart rules (ARCHITECTURE.md §1).

Each process is ``python -m <module> --config FILE --run-dir DIR --nodeid N --ready-fd FD``; once it
can serve it writes one byte to FD (or calls ``pycorosync.engine.supervisor.child.notify_ready()``,
which uses the same pipe through ``$PYCOROSYNC_READY_FD``), and it calls
``logsetup.configure_from_env()`` first thing. A module not present in this build is left out
(the node runs what exists), so processes can land one at a time.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pycorosync.engine.supervisor.policy import RestartPolicy
from pycorosync.engine.supervisor.process import READY_FD_PLACEHOLDER, ChildSpec, RestartRule, python_module_argv

_log = logging.getLogger("MAIN")


@dataclass(frozen=True)
class NodeProcess:
    """One row of the node's process table."""

    name: str
    module: str
    restart: RestartRule
    depends_on: tuple[str, ...] = ()


NODE_PROCESSES: tuple[NodeProcess, ...] = (
    NodeProcess("transport", "pycorosync.transports.process", RestartRule.IN_PLACE),
    NodeProcess("totem", "pycorosync.engine.runtime.process", RestartRule.NODE, ("transport",)),
    NodeProcess("cmap", "pycorosync.services.cmap.server", RestartRule.REJOIN, ("totem",)),
    NodeProcess("cpg", "pycorosync.services.cpg.server", RestartRule.REJOIN, ("totem",)),
    NodeProcess("quorum", "pycorosync.services.quorum.server", RestartRule.REJOIN, ("totem",)),
    NodeProcess("cfg", "pycorosync.services.cfg.server", RestartRule.REJOIN, ("totem",)),
    NodeProcess("exporter", "pycorosync.monitoring.exporter", RestartRule.IN_PLACE),
)

DEFAULT_POLICY = RestartPolicy(max_restarts=5, window_s=60.0)


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


SERVICE_PROCESSES = ("cmap", "cpg", "quorum", "cfg")


def available_processes(*, prometheus: bool = True) -> tuple[NodeProcess, ...]:
    """The rows of NODE_PROCESSES whose module is part of this build (the exporter only with prometheus)."""
    found = []
    for proc in NODE_PROCESSES:
        if proc.name == "exporter" and not prometheus:
            continue
        if not _available(proc.module):
            _log.info("process '%s' (%s) is not part of this build; the node runs without it", proc.name, proc.module)
            continue
        found.append(proc)
    return tuple(found)


def node_children(
    config_path: Path,
    nodeid: int,
    run_dir: Path,
    processes: tuple[NodeProcess, ...],
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> tuple[ChildSpec, ...]:
    """The child specs of this node, one per process, each given ``env`` and ``pass_fds`` (the doorbells)."""
    present: set[str] = set()
    specs: list[ChildSpec] = []
    for proc in processes:
        deps = tuple(d for d in proc.depends_on if d in present)
        argv = python_module_argv(
            proc.module,
            *("--config", str(config_path), "--run-dir", str(run_dir), "--nodeid", str(nodeid)),
            *("--ready-fd", READY_FD_PLACEHOLDER),
        )
        specs.append(
            ChildSpec(proc.name, argv, env=dict(env or {}), restart=proc.restart, depends_on=deps, pass_fds=pass_fds)
        )
        present.add(proc.name)
    return tuple(specs)
