"""The supervised child's resource state from psutil, and the optional limits that count as a failed health check."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pycorosync.engine.supervisor.node import ChildSample


@dataclass(frozen=True)
class ResourceLimits:
    """``max_rss_bytes`` / ``max_cpu_percent`` (None = no limit); a sample over either is a failed health check."""

    max_rss_bytes: int | None = None
    max_cpu_percent: float | None = None

    def __post_init__(self) -> None:
        if self.max_rss_bytes is not None and self.max_rss_bytes <= 0:
            raise ValueError(f"max_rss_bytes must be positive, got {self.max_rss_bytes}")
        if self.max_cpu_percent is not None and self.max_cpu_percent <= 0:
            raise ValueError(f"max_cpu_percent must be positive, got {self.max_cpu_percent}")

    def violation(self, sample: ChildSample) -> str | None:
        """Why ``sample`` breaks a limit (for the log line), or None."""
        if self.max_rss_bytes is not None and sample.rss_bytes > self.max_rss_bytes:
            return f"rss {sample.rss_bytes} bytes over the limit of {self.max_rss_bytes}"
        if self.max_cpu_percent is not None and sample.cpu_percent > self.max_cpu_percent:
            return f"cpu {sample.cpu_percent:.1f} % over the limit of {self.max_cpu_percent:g} %"
        return None


class ResourceSampler:
    """psutil samples of one child at a time (cpu % since the previous sample, rss, threads).

    The node supervisor samples its children the same way (``NodeSupervisor._sample``); about 50 µs each.
    """

    def __init__(self) -> None:
        self._proc: Any = None
        self._pid = 0

    def sample(self, name: str, pid: int) -> ChildSample | None:
        """A sample of ``pid``, or None when it is gone or psutil is missing.

        The first sample of a pid reports the cpu % since the process started (psutil's first
        ``cpu_percent(None)`` would say 0.0, which hides a child that spins from its first instant).
        """
        try:
            import psutil
        except ImportError:
            return None
        try:
            if self._proc is None or self._pid != pid:
                self._proc = psutil.Process(pid)
                self._pid = pid
                first = True
            else:
                first = False
            proc = self._proc
            with proc.oneshot():
                cpu = proc.cpu_percent(None)
                if first:
                    times = proc.cpu_times()
                    age = max(time.time() - proc.create_time(), 1e-3)
                    cpu = 100.0 * (times.user + times.system) / age
                rss = proc.memory_info().rss
                threads = proc.num_threads()
        except (psutil.Error, OSError):
            return None
        return ChildSample(name, pid, float(cpu), int(rss), int(threads), time.monotonic())

    def forget(self) -> None:
        """Drops the psutil handle of a child that has gone."""
        self._proc = None
        self._pid = 0
