"""Following a universe: read the markets' listings every few minutes, start new series, end delisted ones.

The decisions are pure (:func:`trio_klines.core.universe.follow_universe`); this task fetches the
listings (:func:`trio_klines.net.exchange_info.fetch_listings`, weight 1 on futures, 20 on spot, from
the shared REST budget) and hands the changes to the recorder's callbacks. A listing that cannot be had
changes nothing; a series missing from one listing ends only if the next one confirms it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import trio

from ..core.markets import Series
from ..core.symbols import Listing
from ..core.universe import UniverseChange, UniverseSpec, follow_universe, universe_series

__all__ = ["UniverseFollower"]

log = logging.getLogger("trio_klines.universe")

Fetch = Callable[[Sequence[str]], Awaitable[Mapping[str, Mapping[str, Listing]]]]
#: Starts recording series; the mapping gives where each one's record starts (ms), if known.
AddSeries = Callable[[Sequence[Series], Mapping[Series, int | None]], Awaitable[None]]
#: Ends series; the mapping gives why (the listing status, or ``delisted`` when the listing dropped it).
RemoveSeries = Callable[[Sequence[Series], Mapping[Series, str]], Awaitable[None]]


class UniverseFollower:
    """The series ``specs`` select, kept current by reading the listings every ``refresh`` seconds."""

    def __init__(
        self,
        specs: Iterable[UniverseSpec],
        fetch: Fetch,
        *,
        refresh: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.specs = tuple(specs)
        self.markets = sorted({spec.market for spec in self.specs})
        self.refresh = refresh
        self._fetch = fetch
        self._clock = clock
        #: The universe series being recorded.
        self.recorded: set[Series] = set()
        self._doubtful: frozenset[Series] = frozenset()
        #: When each market's listing was last had (ms): a symbol that it did not select trades only since.
        self._fetched_at: dict[str, int] = {}
        #: Each universe series' listing moment (futures' onboardDate), where the exchange gives one.
        self.listed_at: dict[Series, int] = {}
        self.refreshes = 0

    async def resolve(self) -> list[Series]:
        """The first selection (the series to record from the start), from listings fetched now.

        A market whose listing cannot be had selects nothing yet: the next refresh tries again.
        """
        now = self._now()
        listings = await self._fetch(self.markets)
        selected = universe_series(self.specs, listings)
        self._note(listings, selected, now)
        self.recorded = set(selected)
        return selected

    async def run(self, add: AddSeries, remove: RemoveSeries) -> None:
        """Refresh every ``refresh`` seconds, for ever (cancel to stop)."""
        while True:
            await trio.sleep(self.refresh)
            await self.refresh_once(add, remove)

    async def refresh_once(self, add: AddSeries, remove: RemoveSeries) -> UniverseChange:
        """Fetch the listings, then start the series they add and end those confirmed gone."""
        now = self._now()
        before = dict(self._fetched_at)
        listings = await self._fetch(self.markets)
        change = follow_universe(self.specs, listings, self.recorded, self._doubtful)
        self._note(listings, change.added, now)
        self.refreshes += 1
        if change.added:
            starts = {s: self._start_of(s, before) for s in change.added}
            log.info("universe: %d new series (%s)", len(change.added), _sample(change.added))
            await add(change.added, starts)
            self.recorded.update(change.added)
        if change.removed:
            log.info("universe: %d series ended, delisted or halted (%s)", len(change.removed), _sample(change.removed))
            await remove(change.removed, {s: _why(s, listings) for s in change.removed})
            self.recorded.difference_update(change.removed)
        if change.doubtful - self._doubtful:
            log.info("universe: %d series missing from the listing; ended if the next one confirms it",
                     len(change.doubtful - self._doubtful))  # fmt: skip
        self._doubtful = change.doubtful
        return change

    def _note(self, listings: Mapping[str, Mapping[str, Listing]], selected: Iterable[Series], now: int) -> None:
        for s in selected:
            onboard = listings[s.market][s.symbol].onboard_date
            if onboard is not None:
                self.listed_at[s] = onboard
        for market in listings:
            self._fetched_at[market] = now

    def _start_of(self, s: Series, before: Mapping[str, int]) -> int | None:
        """Where a series that a refresh selects starts: the symbol traded from its listing moment, and in
        any case not before the previous listing, which did not select it (one refresh earlier is kept as
        a margin: a listing answer can lag the market). ``None`` when neither is known."""
        previous = before.get(s.market)
        margin = None if previous is None else previous - int(self.refresh * 1000)
        known = [t for t in (self.listed_at.get(s), margin) if t is not None]
        return max(known) if known else None

    def _now(self) -> int:
        return int(self._clock() * 1000)


def _why(s: Series, listings: Mapping[str, Mapping[str, Listing]]) -> str:
    listing = listings.get(s.market, {}).get(s.symbol)
    return "delisted" if listing is None else listing.status


def _sample(series: Sequence[Series], count: int = 5) -> str:
    names = ", ".join(f"{s.market}:{s.interval}:{s.symbol}" for s in series[:count])
    return names + (f" and {len(series) - count} more" if len(series) > count else "")
