"""SAM instances of a node, from the keys SAM supervisors keep in cmap: ``resources.process.<pid>.*``
(``state``, ``restarts``; see services/sam/cmapstate.py). SAM supervisors are applications' processes,
not node processes, so cmap is where a node knows about them.

One cmap connection is kept open and reopened after a cmap restart; a failure gives None (the SAM
metrics are then absent).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Any

from pycorosync.monitoring.reading import SamState

log = logging.getLogger("MON")

PREFIX = "resources.process."
TIMEOUT_S = 2.0
#: the states a SAM supervisor writes; anything else is counted as "other" (bounded label values)
STATES = ("running", "waiting for quorum", "failed", "stopped")


def sam_state(items: Any) -> SamState:
    """Instances per state and their restarts from ``(key, type, value)`` rows under ``resources.process.``."""
    states: dict[str, str] = {}
    restarts = 0
    for key, _vtype, value in items:
        pid, _, field = key.removeprefix(PREFIX).partition(".")
        if not pid.isdigit():
            continue
        if field == "state":
            states[pid] = str(value) if str(value) in STATES else "other"
        elif field == "restarts" and isinstance(value, int):
            restarts += value
            states.setdefault(pid, "other")
    counts = Counter(states.values())
    return SamState(instances={s: counts.get(s, 0) for s in (*STATES, "other")}, restarts=restarts)


class SamSource:
    """``resources.process.*`` of one node's cmap (see the module docstring)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self._client: Any = None
        self._logged = False

    def read(self) -> SamState | None:
        for _attempt in range(2):  # a connection left by a restarted cmap fails once, then is reopened
            try:
                if self._client is None:
                    from pycorosync.cmap import CmapClient

                    self._client = CmapClient(self.run_dir, timeout=TIMEOUT_S)
                return sam_state(self._client.iter(PREFIX))
            except Exception as exc:  # no cmap (yet), restart: the SAM metrics are left out
                if not self._logged:
                    self._logged = True
                    log.info("cmap not readable (yet) for SAM instances: %s", exc)
                self.close()
        return None

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
