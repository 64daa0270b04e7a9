"""Opt-in cProfile of a node process: ``PYCOROSYNC_PROFILE_DIR=<dir>`` makes the totem and service
processes write ``<dir>/<name>-<nodeid>-<pid>.prof`` when they stop (pstats format).

For finding where the data path spends its time on a real cluster; off (and free) unless the
variable is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PROFILE_ENV = "PYCOROSYNC_PROFILE_DIR"


def run_profiled(name: str, nodeid: int, fn: Callable[[], T]) -> T:
    """Runs ``fn()``, under cProfile when ``$PYCOROSYNC_PROFILE_DIR`` is set."""
    out_dir = os.environ.get(PROFILE_ENV)
    if not out_dir:
        return fn()
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        path = Path(out_dir) / f"{name}-{nodeid}-{os.getpid()}.prof"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            prof.dump_stats(str(path))
        except OSError:
            pass
