"""What the totem process measures about itself, beyond the core's counters.

- ``TokenRotation``: the time between two ORF tokens this node receives, as the fixed-bucket histogram
  of the stats table's ``totem.token_rotation_*`` columns (ipc/stats.py; the exporter reads it).
- ``SchedMissCheck`` and ``SchedMissLog``: corosync's scheduler-pause detection. Its main loop runs a
  timer every token/3; when two runs are more than 0.8 * token apart the process "was not scheduled" and
  the event (epoch ms, the gap in ms) goes into ``stats.schedmiss.<0..9>`` (0 newest, 10 kept).
  The totem loop is pycorosync's main loop: the same check runs there, and the events live in the node
  segment's stats block (``layout.SCHEDMISS_*``) for cmap to show.

Per token, a few Python counters; the shared cells are written from the 1 s stats tick (rotations)
or once per event (schedmiss), into arrays mapped once.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from pycorosync.engine.runtime.layout import (
    SCHEDMISS_CLEARED_MS,
    SCHEDMISS_ENTRIES,
    SCHEDMISS_EVENTS,
    SCHEDMISS_KEPT,
)

#: corosync: the check runs every token/3 and reports gaps above 0.8 * token
SCHEDMISS_PERIOD_FRACTION = 1 / 3
SCHEDMISS_THRESHOLD_FRACTION = 0.8


class TokenRotation:
    """The ``totem.token_rotation_*`` columns of one stats-table row: ``record`` per token received (plain
    Python counters), ``flush`` from the 1 s stats tick copies them into the row.

    ``i64`` and ``f64`` are the row as int64 and float64 views of the same cells (``StatsTable.cells[slot]``
    and ``StatsTable.f64[slot]``); without a node, a private row of the same width. Counting starts from
    what the row holds, so a restarted totem process continues its predecessor's counters."""

    __slots__ = ("_bounds_ns", "_c_count", "_c_seconds", "_cols", "_counts", "_f64", "_i64", "_seconds", "last_ns")

    def __init__(self, i64: np.ndarray[Any, Any] | None = None, f64: np.ndarray[Any, Any] | None = None) -> None:
        from pycorosync.ipc.stats import METRICS, TOKEN_ROTATION_BUCKETS_MS, column

        if i64 is None or f64 is None:
            i64 = np.zeros(len(METRICS), np.int64)
            f64 = i64.view(np.float64)
        self._i64 = i64
        self._f64 = f64
        self._bounds_ns = tuple(ms * 1_000_000 for ms in TOKEN_ROTATION_BUCKETS_MS)
        self._cols = tuple(column(f"totem.token_rotation_le_{ms}ms") for ms in TOKEN_ROTATION_BUCKETS_MS)
        self._c_count = column("totem.token_rotation_count")
        self._c_seconds = column("totem.token_rotation_seconds")
        # per bucket, then one more for rotations above the last bound; the count is their sum
        self._counts = [int(i64[c]) for c in self._cols]
        self._counts.append(max(0, int(i64[self._c_count]) - sum(self._counts)))
        self._seconds = float(f64[self._c_seconds])
        self.last_ns: int | None = None  # the previous token's receipt (None: next token starts a rotation)

    def record(self, now_ns: int) -> None:
        """A token was received at ``now_ns``: the time since the previous one is one rotation."""
        last = self.last_ns
        self.last_ns = now_ns
        if last is None:
            return
        gap_ns = now_ns - last
        # first bound >= gap: the bucket "le" that bound (past the last: the overflow slot)
        self._counts[bisect.bisect_left(self._bounds_ns, gap_ns)] += 1
        self._seconds += gap_ns / 1e9

    def restart(self) -> None:
        """The ring changed: the next token starts a new rotation (a reconfiguration is not one)."""
        self.last_ns = None

    def flush(self) -> None:
        """Copies the counters into the row (the stats tick, and at exit)."""
        i64 = self._i64
        for col, n in zip(self._cols, self._counts):
            i64[col] = n
        i64[self._c_count] = sum(self._counts)
        self._f64[self._c_seconds] = self._seconds

    def buckets(self) -> tuple[int, ...]:
        """The per-bucket counts (not cumulative), in ``TOKEN_ROTATION_BUCKETS_MS`` order (tests, tools)."""
        return tuple(self._counts[:-1])

    @property
    def count(self) -> int:
        return sum(self._counts)

    @property
    def seconds(self) -> float:
        return self._seconds


class SchedMissLog:
    """The last ``SCHEDMISS_KEPT`` scheduler misses in the node segment's stats block (an int64 array).

    The totem process is the only writer of the entries and the event count; cmap writes only the
    clear mark (``clear``), and readers leave out entries not newer than it."""

    __slots__ = ("block",)

    def __init__(self, block: np.ndarray[Any, Any]) -> None:
        self.block = block

    def record(self, epoch_ms: int, delay_ms: float) -> None:
        """Adds an event; the entry is written before the count that makes readers see it."""
        block = self.block
        n = int(block[SCHEDMISS_EVENTS])
        at = SCHEDMISS_ENTRIES + 2 * (n % SCHEDMISS_KEPT)
        block[at] = epoch_ms
        block[at + 1] = max(0, round(delay_ms * 1000))
        block[SCHEDMISS_EVENTS] = n + 1

    def clear(self, epoch_ms: int) -> None:
        """``stats.clear.schedmiss``: events up to ``epoch_ms`` are no longer shown."""
        self.block[SCHEDMISS_CLEARED_MS] = epoch_ms

    def events(self) -> list[tuple[int, float]]:
        """(epoch ms, delay ms) of the kept events not cleared, newest first (corosync's index 0)."""
        block = self.block
        for _ in range(3):  # an event written while reading: read again (the writer adds one per token/3)
            n = int(block[SCHEDMISS_EVENTS])
            cleared = int(block[SCHEDMISS_CLEARED_MS])
            out: list[tuple[int, float]] = []
            for k in range(n - 1, max(-1, n - 1 - SCHEDMISS_KEPT), -1):
                at = SCHEDMISS_ENTRIES + 2 * (k % SCHEDMISS_KEPT)
                stamp = int(block[at])
                if stamp <= cleared:
                    break  # older ones were cleared too
                out.append((stamp, int(block[at + 1]) / 1000))
            if int(block[SCHEDMISS_EVENTS]) == n:
                return out
        return out


class SchedMissCheck:
    """Corosync's scheduler-pause check for a loop that calls ``due_in`` and ``check`` (see the module
    docstring): ``check(now)`` returns the gap in ms when it was a miss, else None."""

    __slots__ = ("last_ns", "next_ns", "period_ns", "threshold_ns")

    def __init__(self, token_ms: int, now_ns: int) -> None:
        self.period_ns = max(1, int(token_ms * 1_000_000 * SCHEDMISS_PERIOD_FRACTION))
        self.threshold_ns = int(token_ms * 1_000_000 * SCHEDMISS_THRESHOLD_FRACTION)
        self.last_ns = now_ns
        self.next_ns = now_ns + self.period_ns

    def check(self, now_ns: int) -> float | None:
        """Runs the check if it is due; the gap since the previous run (ms) when it exceeds the threshold."""
        if now_ns < self.next_ns:
            return None
        gap_ns = now_ns - self.last_ns
        self.last_ns = now_ns
        self.next_ns = now_ns + self.period_ns
        return gap_ns / 1e6 if gap_ns > self.threshold_ns else None

    def due_in_s(self, now_ns: int) -> float:
        """Seconds until the loop must wake for the check. The check runs on any wake-up after
        ``next_ns``; the loop is forced awake only ``period`` later still (an idle ring's token
        wake-ups usually come first), which keeps the longest honest gap (two periods) under the
        threshold (0.8 token)."""
        return max(0.0, (self.next_ns + self.period_ns - now_ns) / 1e9)

