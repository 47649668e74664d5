"""Freshness: whether each recorded series' last closed candle is as recent as it should be. Pure.

A series is *fresh* while its newest durable candle closed at most two intervals plus a grace ago: in
steady state a candle closes every interval and is durable within a second or so, so the newest one is
at most one interval old; two intervals allow one late candle, the grace allows the network and the
flush. A series with no candle yet counts from when its recording started (``since``), so a series
just added has two intervals and the grace to deliver its first candle.

This is what ``/healthz`` answers (see :mod:`trio_klines.ops.http`) and what the metrics' age gauges
report. Times are ms since the epoch; the clock is the local one, which is the exchange's within
NTP's error (Binance's candles are stamped with its clock).

:func:`judge` makes one pass over every series (45,000 of them in ~25 ms) and builds an object only for a
stale series, unless asked for all: a scrape or a health check must not hold the recorder's event loop.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from .markets import INTERVALS, Series, max_interval_ms, next_open_time
from .timefmt import iso_ms

__all__ = ["DEFAULT_GRACE_MS", "Freshness", "GroupFreshness", "Judged", "freshness", "health_body", "judge"]

#: Slack past two intervals before a series counts as stale: a REST fill, a reconnect, a slow flush.
DEFAULT_GRACE_MS: Final = 30_000
#: Stale series named in a health body at most: the count says how many there are.
MAX_NAMED: Final = 100


class Freshness(NamedTuple):
    """One series: the close of its newest durable candle (``None``: none yet), how old that is (from
    ``since`` when there is none, or when that is later), and the age past which it is stale. A named
    tuple: at 45,000 stale series, making one costs a third of a frozen dataclass."""

    series: Series
    last_close: int | None
    age_ms: int
    limit_ms: int

    @property
    def stale(self) -> bool:
        return self.age_ms > self.limit_ms


@dataclass(slots=True)
class GroupFreshness:
    """The series of one market and interval: how many, how many stale, and the oldest age among them."""

    series: int = 0
    stale: int = 0
    max_age_ms: int | None = None


@dataclass(slots=True)
class Judged:
    """Every series judged at ``now``: sums per (market, interval), the stale series, and (when asked) all."""

    now: int
    groups: dict[tuple[str, str], GroupFreshness] = field(default_factory=dict)
    stale: list[Freshness] = field(default_factory=list)
    every: list[Freshness] | None = None

    @property
    def series(self) -> int:
        return sum(g.series for g in self.groups.values())


def judge(
    series: Iterable[Series],
    last_open: Mapping[Series, int],
    since: Mapping[Series, int],
    now: int,
    grace_ms: int = DEFAULT_GRACE_MS,
    *,
    keep_every: bool = False,
) -> Judged:
    """Each of ``series`` judged at ``now``: its newest candle's open time is in ``last_open`` (absent: none
    yet), when its recording started in ``since`` (absent: unknown; with no candle either, ``now``)."""
    judged = Judged(now, every=[] if keep_every else None)
    groups, stale, every = judged.groups, judged.stale, judged.every
    limits: dict[str, int] = {}
    for s in series:
        interval = s.interval
        limit = limits.get(interval)
        if limit is None:
            # Two intervals: for a series with no candle yet, the first may open up to an interval after the start.
            limit = limits[interval] = 2 * max_interval_ms(interval) + grace_ms
        opened, start = last_open.get(s), since.get(s)
        if opened is None:
            close = None
            reference = now if start is None else start
        else:
            length = INTERVALS[interval]
            close = opened + length if length is not None else next_open_time(interval, opened)
            reference = close if start is None or start < close else start
        age = now - reference
        key = (s.market, interval)
        g = groups.get(key)
        if g is None:
            g = groups[key] = GroupFreshness()
        g.series += 1
        if g.max_age_ms is None or age > g.max_age_ms:
            g.max_age_ms = age
        if age > limit:
            g.stale += 1
            stale.append(f := Freshness(s, close, age, limit))
            if every is not None:
                every.append(f)
        elif every is not None:
            every.append(Freshness(s, close, age, limit))
    return judged


def freshness(
    series: Iterable[Series],
    last_open: Mapping[Series, int],
    since: Mapping[Series, int],
    now: int,
    grace_ms: int = DEFAULT_GRACE_MS,
) -> list[Freshness]:
    """:func:`judge`'s verdict on every one of ``series``, in their order."""
    every = judge(series, last_open, since, now, grace_ms, keep_every=True).every
    assert every is not None
    return every


def stalest(stale: Iterable[Freshness], count: int) -> list[Freshness]:
    """The ``count`` stalest of ``stale``: furthest past their limit first (ties by name)."""
    return heapq.nsmallest(count, stale, key=lambda f: (f.limit_ms - f.age_ms, f.series))


def health_body(
    judged: Judged, writer_problem: str | None, *, max_named: int = MAX_NAMED
) -> tuple[bool, dict[str, Any]]:
    """Whether the recorder is healthy (every series fresh, the writer writing), and the JSON body that says
    so: on failure it names the writer's problem and the stalest series (at most ``max_named``)."""
    healthy = not judged.stale and writer_problem is None
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unhealthy",
        "now": iso_ms(judged.now),
        "series": judged.series,
        "stale": len(judged.stale),
        "writer": "ok" if writer_problem is None else writer_problem,
    }
    if judged.stale:
        body["stale_series"] = [
            {
                "market": f.series.market,
                "symbol": f.series.symbol,
                "interval": f.series.interval,
                "last_close": None if f.last_close is None else iso_ms(f.last_close),
                "age_seconds": round(f.age_ms / 1000, 3),
                "limit_seconds": round(f.limit_ms / 1000, 3),
            }
            for f in stalest(judged.stale, max_named)
        ]
    return healthy, body
