"""Per-connection stats of one IPC server, for cmap's ``stats.ipcs.service<id>.<pid>.<conn>.*`` keys.

The node's stats table has one row per process, so a service's connections cannot be told apart there.
Each server inside a node also keeps ``<run_dir>/<service>.ipcs.json`` up to date from its housekeeping
tick: rewritten only when a number changed and at most every WRITE_INTERVAL_S (a write and a rename
cost about 0.2 ms on tmpfs, several ms on a loaded disk), by an atomic rename, so that a reader never
sees half a file::

    {"pid": <server pid>, "service": "cpg",
     "connections": [{"pid": 4711, "conn": 3, "requests": 10, "responses": 10, ...ConnStats fields}]}

The file goes with the server's ``close``; one left by a killed server names a dead pid, and readers
skip it (a restarted server overwrites it).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SUFFIX = ".ipcs.json"
#: more connections than this are left out of the file (the totals in the stats table still count them)
MAX_CONNECTIONS = 1024
#: the file is at most this old (cmap's trackers poll the stats map every 1.5 s)
WRITE_INTERVAL_S = 2.0


def path_for(run_dir: str | os.PathLike[str], service: str) -> Path:
    """Where the server of ``service`` keeps its connection stats."""
    return Path(run_dir) / f"{service}{SUFFIX}"


class ConnectionFile:
    """The writer side: ``update(rows)`` from the tick, ``remove()`` at close."""

    def __init__(self, run_dir: str | os.PathLike[str], service: str, interval_s: float = WRITE_INTERVAL_S) -> None:
        self.path = path_for(run_dir, service)
        self.service = service
        self.interval_s = interval_s
        self._last = ""
        self._next_write = 0.0
        self.write_errors = 0

    def update(self, rows: Iterable[Mapping[str, int]]) -> bool:
        """Writes the rows if they differ from the last ones written and the last write is at least
        ``interval_s`` old; True if it wrote. ``rows`` is not iterated when it is too early."""
        now = time.monotonic()
        if now < self._next_write:
            return False
        text = json.dumps({"pid": os.getpid(), "service": self.service,
                           "connections": [dict(r) for _, r in zip(range(MAX_CONNECTIONS), rows)]})
        if text == self._last:
            return False
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.write_text(text)
            os.replace(tmp, self.path)
        except OSError:
            self.write_errors += 1  # a full or read-only run dir costs the per-connection keys, nothing else
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        self._last = text
        self._next_write = now + self.interval_s
        return True

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._last = ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(run_dir: str | os.PathLike[str], service: str) -> list[dict[str, Any]]:
    """The connections a live server of ``service`` last wrote; [] when there is no file, a dead writer's
    file, or one that does not parse (a reader never fails on it)."""
    try:
        data = json.loads(path_for(run_dir, service).read_text())
        pid = int(data["pid"])
        conns = data["connections"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if pid <= 0 or not _alive(pid) or not isinstance(conns, list):
        return []
    return [c for c in conns if isinstance(c, dict)]
