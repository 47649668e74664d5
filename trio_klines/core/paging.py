"""What to fetch over REST, planned without I/O: page windows, and the catch-up plan of a series.

Every page asks for both ``startTime`` and ``endTime`` spanning at most ``limit`` candles, so the answer
is the same whatever the market's paging rule (COIN-M returns the candles closest to ``endTime``; spot
and USDⓈ-M the oldest from ``startTime``). Pages hold 1000 candles: spot's call costs 2 whatever the
limit; futures' costs 5 at 1000 and 10 at 1500, so 1000 buys more candles per weight.

The catch-up plan (:func:`catch_up_plan`) is what both the recorder's start-up and the ``backfill``
command fetch: the parts of a wanted range that the stored record does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Final

from .gaps import Gap, RangeSet
from .markets import count_open_times, floor_open_time, max_interval_ms, next_open_time

__all__ = ["MAX_WINDOW_MS", "PAGE_LIMIT", "catch_up_plan", "page_windows", "pages_needed"]

#: Candles asked per page (see the module docstring for why 1000 on every market).
PAGE_LIMIT: Final = 1000
#: COIN-M refuses windows longer than 200 days (error -4088).
MAX_WINDOW_MS: Final = 200 * 24 * 3600 * 1000
#: Far beyond any candle: an open-ended plan ends here, and is handed out as ``None`` (up to now).
_FOREVER: Final = 2**62


def page_windows(interval: str, start: int, end: int, limit: int = PAGE_LIMIT) -> Iterator[tuple[int, int]]:
    """``(startTime, endTime)`` pairs, inclusive, covering the candles opening in ``[start, end)``.

    Windows start on open times, hold at most ``limit`` of them and span at most 200 days, so every
    market answers a window with exactly the candles inside it.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    t = floor_open_time(interval, start)
    if t < start:
        t = next_open_time(interval, t)
    longest = max_interval_ms(interval)
    while t < end:
        stop, n = t, 0
        while n < limit and stop < end and stop - t + longest <= MAX_WINDOW_MS:
            stop = next_open_time(interval, stop)
            n += 1
        stop = min(stop, end)
        yield t, stop - 1
        t = stop


def pages_needed(interval: str, start: int, end: int, limit: int = PAGE_LIMIT) -> int:
    """How many pages :func:`page_windows` makes (an estimate for progress bars and weight)."""
    return max(1, math.ceil(count_open_times(interval, start, end) / limit)) if end > start else 0


def catch_up_plan(
    interval: str,
    first: int | None,
    last: int | None,
    holes: Iterable[Gap],
    start: int | None,
    end: int | None = None,
) -> list[tuple[int, int | None]]:
    """The ranges ``[lo, hi)`` of open times to fetch so that ``[start, end)`` is held in full.

    ``first``/``last`` are the open times of the first and last stored candles (``None``: nothing
    stored), ``holes`` the gaps between them. ``start`` ``None`` means "from the first stored candle";
    ``end`` ``None`` means "up to the exchange's now", and so does the last range's ``hi`` of ``None``.
    """
    have = RangeSet()
    if first is not None and last is not None:
        have.add(first, next_open_time(interval, last))
        for gap in holes:
            have.remove(gap.start, gap.end)
    if start is None:
        if first is None:
            return []
        start = first
    stop = _FOREVER if end is None else end
    return [(lo, None if hi == _FOREVER else hi) for lo, hi in have.missing(start, stop)]
