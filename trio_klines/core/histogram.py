"""A histogram of observations in fixed buckets, as Prometheus exposes one. Pure.

The writer observes into these on its own task (no lock, no library): the metrics endpoint reads them
when scraped. Buckets hold the observations at most their bound (Prometheus' ``le``); the last one,
past every bound, is ``+Inf``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Final

__all__ = ["FLUSH_BUCKETS", "LATENCY_BUCKETS", "Histogram"]

#: Seconds from a candle's close to durable on disk: a flush is due within a second (``flush_seconds``).
LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds one flush (one append to the store) takes.
FLUSH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations per bucket, their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(set(bounds)))
        if not self.bounds or any(b != b for b in self.bounds):
            raise ValueError("a histogram needs bucket bounds that are numbers")
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``value`` observed ``times`` times (the same value for many series costs one call)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.count += times
        self.sum += value * times

    def cumulative(self) -> list[tuple[float, int]]:
        """``(bound, observations <= bound)`` per bucket, ending with ``(inf, count)``."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out
