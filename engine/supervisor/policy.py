"""Restart policy: restart a failed process after a growing backoff, give up on a restart storm.

Pure (every call carries ``now_s``) so that the node supervisor, SAM (services/sam) and the tests share one
decision function. A storm is ``max_restarts`` restarts within ``window_s``: the next failure in
that window gives up, with a log line that says so, instead of burning a core forever.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Bounds on restarts of one child: at most ``max_restarts`` within ``window_s`` seconds.

    The n-th restart in the window waits ``backoff_initial_s * 2**(n-1)``, capped at ``backoff_max_s``.
    """

    max_restarts: int = 5
    window_s: float = 60.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0 or self.backoff_initial_s < 0:
            raise ValueError(f"invalid restart policy {self}")

    @classmethod
    def parse_limit(cls, text: str, *, backoff_initial_s: float = 0.05, backoff_max_s: float = 2.0) -> RestartPolicy:
        """A policy from ``N/SECONDS`` (``5/60``: at most 5 restarts within 60 s), as a command line gives it.

        Raises ValueError with a message that quotes ``text`` when it is not of that form.
        """
        count, sep, window = text.partition("/")
        try:
            max_restarts = int(count)
            window_s = float(window)
        except ValueError:
            max_restarts, window_s = -1, 0.0
        if not sep or max_restarts < 0 or not window_s > 0:
            raise ValueError(f"restart limit must be N/SECONDS with N >= 0 and SECONDS > 0 (e.g. 5/60), got {text!r}")
        return cls(max_restarts, window_s, backoff_initial_s, backoff_max_s)


@dataclass(frozen=True)
class Restart:
    """Decision: start it again after ``delay_s``; this is restart number ``attempt`` in the window."""

    delay_s: float
    attempt: int
    max_restarts: int
    window_s: float


@dataclass(frozen=True)
class GiveUp:
    """Decision: ``failures`` failures within ``window_s``; do not restart any more."""

    failures: int
    window_s: float

    def message(self, name: str, what: str = "child") -> str:
        """The log line: ``child 'cpg' failed 6 times within 60 s (restart storm); giving up on it``."""
        return (
            f"{what} '{name}' failed {self.failures} times within {self.window_s:g} s "
            "(restart storm); giving up on it"
        )


class RestartBudget:
    """The restart history of one child under a ``RestartPolicy``."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._restarts: collections.deque[float] = collections.deque()
        self.total_restarts = 0

    def on_failure(self, now_s: float) -> Restart | GiveUp:
        """Records a failure at ``now_s`` (monotonic seconds) and decides what to do."""
        horizon = now_s - self.policy.window_s
        while self._restarts and self._restarts[0] <= horizon:
            self._restarts.popleft()
        if len(self._restarts) >= self.policy.max_restarts:
            return GiveUp(len(self._restarts) + 1, self.policy.window_s)
        self._restarts.append(now_s)
        self.total_restarts += 1
        attempt = len(self._restarts)
        delay = min(self.policy.backoff_initial_s * (2 ** (attempt - 1)), self.policy.backoff_max_s)
        return Restart(delay, attempt, self.policy.max_restarts, self.policy.window_s)

    def recent(self, now_s: float) -> int:
        """Restarts counted in the current window."""
        return sum(1 for t in self._restarts if t > now_s - self.policy.window_s)
