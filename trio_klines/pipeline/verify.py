"""Verifying a store: re-read the exchange over REST and compare it with every stored candle.

The engine of ``python -m trio_klines verify``. For each stored series, from its first stored candle
(or ``since``) to its last, it reports the candles the exchange has and the store lacks (*missing*),
those the store has and the exchange does not (*extra*), and those both have with different values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from ..core.markets import Market, Series, next_open_time
from ..core.parse import Candle
from ..net.rest import RestClient, new_http_client, rest_clients
from ..store.coverage import SeriesCoverage, coverage
from ..store.dataset import load
from ..store.tables import COLUMNS

__all__ = ["SeriesComparison", "verify"]

#: The values compared, named alike on a stored row and on a :class:`Candle` (the open time is the key).
VALUES: Final = COLUMNS[1:]


@dataclass(frozen=True, slots=True)
class SeriesComparison:
    """One series, store against exchange: counts, and the open times (ms, ascending) that differ."""

    series: Series
    stored: int
    on_exchange: int
    missing: tuple[int, ...]
    extra: tuple[int, ...]
    different: tuple[int, ...]

    @property
    def problems(self) -> int:
        """Candles missing, extra or different."""
        return len(self.missing) + len(self.extra) + len(self.different)


async def verify(
    root: Path,
    markets: Mapping[str, Market],
    since: int | None = None,
    *,
    on_series: Callable[[SeriesComparison], None] | None = None,
) -> list[SeriesComparison]:
    """Compare every series stored under ``root`` with the exchange; one result per series holding
    candles, in the store's order. ``on_series`` hears each result as soon as it is known.

    ``markets`` gives the REST endpoints (:data:`~trio_klines.core.markets.MARKETS` for Binance);
    ``since`` (open time, ms) skips the candles before it.

    Raises:
      StoreError: ``root`` is not a store, or a file cannot be read.
      RestError: the exchange could not be reached, after retries.
      BinanceError: the exchange refused a request.
      MalformedMessage: the exchange's answer is not what Binance sends.

    If cancelled, it stops at once; nothing is written.
    """
    stored = await trio.to_thread.run_sync(coverage, root)
    results: list[SeriesComparison] = []
    async with new_http_client() as http:
        clients = rest_clients([markets[m] for m in sorted({s.market for s in stored})], http)
        for cov in stored.values():
            if cov.first is None:
                continue
            result = await _compare(root, cov, clients[cov.series.market], since)
            results.append(result)
            if on_series is not None:
                on_series(result)
    return results


async def _compare(root: Path, cov: SeriesCoverage, client: RestClient, since: int | None) -> SeriesComparison:
    key = cov.series
    assert cov.first is not None and cov.last is not None
    start = max(cov.first, since or 0)
    end = next_open_time(key.interval, cov.last)
    frame = await trio.to_thread.run_sync(
        functools.partial(load, root, key.market, key.symbol, key.interval, start=start)
    )
    mine = {
        int(t.value // 10**6): row
        for t, row in zip(frame["candle_begin_time"], frame.itertuples(index=False), strict=True)
    }
    now = await client.server_time()
    theirs: dict[int, Candle] = {}
    async for page in client.pages(key.symbol, key.interval, start, end, closed_before=now):
        theirs.update((c.open_time, c) for c in page)
    return SeriesComparison(
        series=key,
        stored=len(mine),
        on_exchange=len(theirs),
        missing=tuple(sorted(theirs.keys() - mine.keys())),
        extra=tuple(sorted(mine.keys() - theirs.keys())),
        different=tuple(sorted(t for t in mine.keys() & theirs.keys() if not _same(mine[t], theirs[t]))),
    )


def _same(row: Any, candle: Candle) -> bool:
    return all(getattr(row, name) == getattr(candle, name) for name in VALUES)
