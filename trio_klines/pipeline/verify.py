"""Verifying a store: re-read the exchange over REST and compare it with every stored candle.

The engine of ``python -m trio_klines verify``. For each stored series, from its first stored candle
(or ``since``; a quarantined file's candles count as stored-then-lost) to its last before the exchange's
clock, it reports the candles the exchange has and the store lacks (*missing*), those the store has and
the exchange does not (*extra*, including any row from after the exchange's clock), and those both have
with different values.

:meth:`SeriesComparison.as_dict` is one series of ``verify --json``: the counts, and the open times as
ISO-8601 UTC text, at most :data:`MAX_LISTED` of each kind (the earliest).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import trio

from ..core.decimals import canonical
from ..core.markets import Market, Series, next_open_time
from ..core.parse import Candle
from ..core.timefmt import iso_ms
from ..net.rest import RestClient, new_http_client, rest_clients
from ..store.compaction import open_times
from ..store.coverage import coverage
from ..store.marker import dataset_numbers
from ..store.reading import read_series
from ..store.tables import COLUMNS

__all__ = ["MAX_LISTED", "SeriesComparison", "verify"]

#: The most open times :meth:`SeriesComparison.as_dict` lists of each kind (missing, extra, different).
MAX_LISTED: Final = 1000

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

    def as_dict(self, limit: int = MAX_LISTED) -> dict[str, Any]:
        """The comparison as JSON-ready values: ``missing``, ``extra`` and ``different`` are counts, and
        ``missing_times``… list the earliest ``limit`` open times of each as ISO-8601 UTC text (the list is
        cut short when it is shorter than its count)."""
        out: dict[str, Any] = {"market": self.series.market, "symbol": self.series.symbol,
                               "interval": self.series.interval, "stored": self.stored,
                               "on_exchange": self.on_exchange, "problems": self.problems}  # fmt: skip
        for name, times in (("missing", self.missing), ("extra", self.extra), ("different", self.different)):
            out[name] = len(times)
            out[f"{name}_times"] = [iso_ms(t) for t in times[:limit]]
        return out


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
    exact = await trio.to_thread.run_sync(dataset_numbers, root) == "exact"
    results: list[SeriesComparison] = []
    async with new_http_client() as http:
        clients = rest_clients([markets[m] for m in sorted({s.market for s in stored})], http, exact=exact)
        for key, cov in stored.items():
            if cov.first is None:
                continue
            result = await _compare(root, key, clients[key.market], since)
            results.append(result)
            if on_series is not None:
                on_series(result)
    return results


async def _compare(root: Path, key: Series, client: RestClient, since: int | None) -> SeriesComparison:
    """One series against the exchange, from its first candle (or ``since``) to its last before the
    exchange's clock: stored rows opening later (a candle from the future) are extra, and nothing is asked
    of the exchange for them.

    The stored rows are compared as Arrow columns, not as a DataFrame, so an open time outside pandas'
    nanosecond range (after 2262) is reported, not an error."""
    now = await client.server_time()
    cov = (await trio.to_thread.run_sync(functools.partial(coverage, root, [key], until=now)))[key]
    first = cov.first if cov.first is not None else cov.beyond_first
    start = max(first or 0, since or 0)
    table = await trio.to_thread.run_sync(functools.partial(read_series, root, key, start))
    mine = {int(t): i for i, t in enumerate(open_times(table).tolist())}
    end = start if cov.last is None else next_open_time(key.interval, cov.last)
    theirs: dict[int, Candle] = {}
    if start < end:
        async for page in client.pages(key.symbol, key.interval, start, end, closed_before=now):
            theirs.update((c.open_time, c) for c in page)
    return SeriesComparison(
        series=key,
        stored=len(mine),
        on_exchange=len(theirs),
        missing=tuple(sorted(theirs.keys() - mine.keys())),
        extra=tuple(sorted(mine.keys() - theirs.keys())),
        different=tuple(sorted(t for t in mine.keys() & theirs.keys() if not _same(table, mine[t], theirs[t]))),
    )


def _same(table: pa.Table, row: int, candle: Candle) -> bool:
    """Whether the stored row holds the exchange's candle: its floats equal, or (a store of exact numbers)
    its decimals the strings the exchange sent, digit for digit (``"0.01000000"`` is ``0.01``)."""
    for name in VALUES:
        stored, sent = table.column(name)[row].as_py(), getattr(candle, name)
        if isinstance(sent, str):  # a Decimal beside Binance's string: "0E-12" is "0" in fixed notation
            stored, sent = canonical(format(stored, "f")), canonical(sent)
        if stored != sent:
            return False
    return True
