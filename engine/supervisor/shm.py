"""Removing a node's named shared-memory segments (stale ones at start, all of them at stop)."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path

SHM_DIR = Path("/dev/shm")


def _local_unlink_prefix(prefix: str) -> list[str]:
    base = prefix.lstrip("/")
    removed: list[str] = []
    if not base:
        return removed
    with contextlib.suppress(OSError):
        for entry in os.scandir(SHM_DIR):
            if entry.name.startswith(base):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append("/" + entry.name)
    return sorted(removed)


def unlink_prefix(prefix: str) -> list[str]:
    """Unlinks every segment whose name starts with ``prefix`` (e.g. ``/pcs-mycluster-1-``); returns their names.

    Uses ``pycorosync.ipc.segment.unlink_prefix`` when the ipc layer provides it, so that there is one
    definition of what a node's segments are.
    """
    if not prefix.startswith("/pcs-"):
        raise ValueError(f"refusing to unlink segments outside the /pcs- namespace: {prefix!r}")
    impl: Callable[[str], object] = _local_unlink_prefix
    try:
        segment = importlib.import_module("pycorosync.ipc.segment")
        impl = getattr(segment, "unlink_prefix", _local_unlink_prefix)
    except ImportError:
        pass
    result = impl(prefix)
    return sorted(str(name) for name in result) if isinstance(result, list | tuple | set) else []


def node_prefix(cluster_name: str, nodeid: int) -> str:
    """``/pcs-<cluster>-<nodeid>-``: the prefix of every segment of one node (ARCHITECTURE.md §4)."""
    safe = "".join(c if c.isalnum() or c in "_." else "_" for c in cluster_name) or "cluster"
    return f"/pcs-{safe}-{nodeid}-"
