"""Freshness: whether each recorded series' last closed candle is as recent as it should be. Pure.

A series is *fresh* while its newest durable candle closed at most two intervals plus a grace ago: in
steady state a candle closes every interval and is durable within a second or so, so the newest one is
at most one interval old; two intervals allow one late candle, the grace allows the network and the
flush. A series with no candle yet counts from when its recording started (``since``), so a series
just added has two intervals and the grace to deliver its first candle.

This is what ``/healthz`` answers (see :mod:`trio_klines.ops.http`) and what the metrics' age gauges
report. Times are ms since the epoch; the clock is the local one, which is the exchange's within
NTP's error (Binance's candles are stamped with its clock).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .markets import Series, max_interval_ms, next_open_time
from .timefmt import iso_ms

__all__ = ["DEFAULT_GRACE_MS", "Freshness", "GroupFreshness", "by_group", "freshness", "health_body"]

#: Slack past two intervals before a series counts as stale: a REST fill, a reconnect, a slow flush.
DEFAULT_GRACE_MS: Final = 30_000
#: Stale series named in a health body at most: the count says how many there are.
MAX_NAMED: Final = 100


@dataclass(frozen=True, slots=True)
class Freshness:
    """One series: the close of its newest durable candle (``None``: none yet), how old that is (from
    ``since`` when there is none), and the age past which it is stale."""

    series: Series
    last_close: int | None
    age_ms: int
    limit_ms: int

    @property
    def stale(self) -> bool:
        return self.age_ms > self.limit_ms


def freshness(
    series: Iterable[Series],
    last_open: Mapping[Series, int],
    since: Mapping[Series, int],
    now: int,
    grace_ms: int = DEFAULT_GRACE_MS,
) -> list[Freshness]:
    """Each of ``series`` judged at ``now``: its newest candle's open time is in ``last_open`` (absent:
    none yet), when its recording started in ``since`` (absent: unknown; with no candle either, ``now``)."""
    out = []
    for s in series:
        opened, start = last_open.get(s), since.get(s)
        close = None if opened is None else next_open_time(s.interval, opened)
        known = [t for t in (close, start) if t is not None]
        reference = max(known) if known else now
        # Two intervals: for a series with no candle yet, the first may open up to an interval after the start.
        out.append(Freshness(s, close, now - reference, 2 * max_interval_ms(s.interval) + grace_ms))
    return out


@dataclass(slots=True)
class GroupFreshness:
    """The series of one market and interval: how many, how many stale, and the oldest age among them."""

    series: int = 0
    stale: int = 0
    max_age_ms: int | None = None


def by_group(judged: Iterable[Freshness]) -> dict[tuple[str, str], GroupFreshness]:
    """``judged`` summed per (market, interval): the labels a metric can carry at 45,000 series."""
    groups: dict[tuple[str, str], GroupFreshness] = {}
    for f in judged:
        g = groups.get(key := (f.series.market, f.series.interval))
        if g is None:
            g = groups[key] = GroupFreshness()
        g.series += 1
        g.stale += f.stale
        g.max_age_ms = f.age_ms if g.max_age_ms is None else max(g.max_age_ms, f.age_ms)
    return groups


def health_body(
    judged: Iterable[Freshness], now: int, writer_problem: str | None, *, max_named: int = MAX_NAMED
) -> tuple[bool, dict[str, Any]]:
    """Whether the recorder is healthy (every series fresh, the writer writing), and the JSON body that says
    so: on failure it names the writer's problem and the stalest series (at most ``max_named``)."""
    judged = list(judged)
    stale = sorted((f for f in judged if f.stale), key=lambda f: (f.limit_ms - f.age_ms, str(f.series)))
    healthy = not stale and writer_problem is None
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unhealthy",
        "now": iso_ms(now),
        "series": len(judged),
        "stale": len(stale),
        "writer": "ok" if writer_problem is None else writer_problem,
    }
    if stale:
        body["stale_series"] = [
            {
                "market": f.series.market,
                "symbol": f.series.symbol,
                "interval": f.series.interval,
                "last_close": None if f.last_close is None else iso_ms(f.last_close),
                "age_seconds": round(f.age_ms / 1000, 3),
                "limit_seconds": round(f.limit_ms / 1000, 3),
            }
            for f in stale[:max_named]
        ]
    return healthy, body
