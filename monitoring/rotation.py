"""An estimate of the token rotation time from totem's ``orf_token_rx`` counter, sampled at a steady rate.

Until totem fills the stats table's exact ``totem.token_rotation_*`` buckets, the exporter samples the
counter (about ten times a second): ``d`` tokens received over ``dt`` since the last sample that saw one
count as ``d`` rotations of ``dt / d`` each. Rotations faster than the sampling period are averaged
within the period; slow ones (the ones the alert is about) are measured to the sampling period.
"""

from __future__ import annotations

from pycorosync.monitoring.metrics import TOKEN_ROTATION_BUCKETS_S
from pycorosync.monitoring.reading import Histogram


class TokenRotationEstimator:
    """Cumulative histogram of estimated rotations (see the module docstring)."""

    def __init__(self, bounds_s: tuple[float, ...] = TOKEN_ROTATION_BUCKETS_S) -> None:
        self.bounds_s = bounds_s
        self.counts = [0] * len(bounds_s)  # per bucket, not cumulative
        self.count = 0
        self.sum_s = 0.0
        self._tokens: int | None = None
        self._since_ns = 0

    def observe(self, now_ns: int, tokens: int) -> None:
        """Takes one sample of the counter."""
        if self._tokens is None or tokens < self._tokens:  # first sample, or totem restarted (counters reset)
            self._tokens, self._since_ns = tokens, now_ns
            return
        d = tokens - self._tokens
        if d <= 0:
            return
        dt_s = max(0, now_ns - self._since_ns) / 1e9
        each = dt_s / d
        for i, bound in enumerate(self.bounds_s):
            if each <= bound:
                self.counts[i] += d
                break
        self.count += d
        self.sum_s += dt_s
        self._tokens, self._since_ns = tokens, now_ns

    def histogram(self) -> Histogram | None:
        """The buckets so far (cumulative), or None before the first rotation."""
        if not self.count:
            return None
        cumulative = 0
        buckets = []
        for bound, n in zip(self.bounds_s, self.counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        return Histogram(tuple(buckets), self.count, self.sum_s)
