"""Real Binance maintenance gaps still end up as exchange gaps: archive days (``../shared/realdata``, see its
MANIFEST.md) served by a scripted REST endpoint, through the backfiller, asked twice (the fill, then the
check that confirms). A day without a gap whose first answer is empty ends with every candle and no gap.

Set ``TRIO_KLINES_REALDATA`` to read them from elsewhere; without them these tests are skipped.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from trio_klines.core.backoff import Backoff
from trio_klines.core.markets import MARKETS, Series, interval_ms, iter_open_times
from trio_klines.core.parse import Candle
from trio_klines.net.rest import RestClient, WeightBudget
from trio_klines.pipeline.backfill import Backfiller
from trio_klines.store.ledger import ExchangeGapLedger

REALDATA = Path(os.environ.get("TRIO_KLINES_REALDATA", Path(__file__).resolve().parents[3] / "shared" / "realdata"))
pytestmark = [pytest.mark.skipif(not REALDATA.is_dir(), reason=f"no real Binance captures at {REALDATA}"),
              pytest.mark.timeout(30)]  # fmt: skip
H = 3_600_000


class ArchiveRest:
    """Binance's klines endpoint answering from one archive file (its rows as REST rows), counting the calls
    per window; ``empty_first`` answers the first call ``200 []`` (a transient fault)."""

    def __init__(self, path: Path, *, empty_first: bool = False) -> None:
        with path.open() as f:
            self.rows = [[int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), *r[9:]] for r in csv.reader(f)]
        self.now = self.rows[-1][6] + 1 + 86_400_000  # a day after the file: every candle closed
        self.calls: list[tuple[int, int]] = []
        self._empty_first = empty_first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/time"):
            return httpx.Response(200, json={"serverTime": self.now})
        p = request.url.params
        start, end, limit = int(p["startTime"]), int(p["endTime"]), int(p["limit"])
        self.calls.append((start, end))
        if self._empty_first:
            self._empty_first = False
            return httpx.Response(200, content=b"[]")
        return httpx.Response(200, content=json.dumps([r for r in self.rows if start <= r[0] <= end][:limit]))


async def backfill_archive(tmp_path: Path, s: Series, rest: ArchiveRest) -> tuple[list[int], Backfiller]:
    market = MARKETS[s.market].with_urls(rest_url="http://exchange.test")
    client = RestClient(market, httpx.AsyncClient(transport=httpx.MockTransport(rest)), WeightBudget(6000),
                        backoff=Backoff(0.2, 2.0, rng=random.Random(5)))  # fmt: skip
    send, receive = trio.open_memory_channel[Sequence[Candle]](10_000)
    backfiller = Backfiller({s.market: client}, send, ExchangeGapLedger(tmp_path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backfiller.run)
        first, last = rest.rows[0][0], rest.rows[-1][0]
        backfiller.request(s, first, last + interval_ms(s.interval))
        await backfiller.wait_idle()
        nursery.cancel_scope.cancel()
    got = []
    while True:
        try:
            got += [c.open_time for c in receive.receive_nowait()]
        except (trio.WouldBlock, trio.EndOfChannel):
            return sorted(got), backfiller


def holes(interval: str, opens: list[int]) -> list[tuple[int, int]]:
    """The runs of open times missing between the first and last of ``opens``."""
    have, out = set(opens), []
    for t in iter_open_times(interval, opens[0], opens[-1]):
        if t not in have:
            if out and out[-1][1] == t:
                out[-1] = (out[-1][0], t + interval_ms(interval))
            else:
                out.append((t, t + interval_ms(interval)))
    return out


@pytest.mark.parametrize(
    ("name", "s", "gaps"),
    [
        # Maintenance: no rows from 02:00 to 05:29.
        ("jankluger_spot_vision_btcusdt_1m_2020-06-28.csv", Series("spot", "BTCUSDT", "1m"),
         [(1593309600000, 1593322200000)]),
        # A trading halt: no rows from 12:40 to 13:59.
        ("jankluger_spot_vision_btcusdt_1m_2023-03-24.csv", Series("spot", "BTCUSDT", "1m"),
         [(1679661600000, 1679666400000)]),
        # Hourly, three pages: 2021-02-11 04:00 and 2021-03-06 02:00 missing.
        ("bbgo_spot_vision_btcusdt_1h_2021-Q1.csv", Series("spot", "BTCUSDT", "1h"),
         [(1613016000000, 1613016000000 + H), (1614996000000, 1614996000000 + H)]),
    ],
)  # fmt: skip
async def test_a_real_maintenance_gap_ends_confirmed_with_its_exact_range(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, name: str, s: Series, gaps: list[tuple[int, int]]
) -> None:
    rest = ArchiveRest(REALDATA / name)
    opens = [r[0] for r in rest.rows]
    assert holes(s.interval, opens) == gaps  # what MANIFEST.md says of the file
    got, bf = await backfill_archive(tmp_path, s, rest)
    assert got == opens
    assert list(bf.ledger.ranges(s)) == gaps and bf.ledger.all_suspected() == {}
    assert list(ExchangeGapLedger(tmp_path).ranges(s)) == gaps
    step = interval_ms(s.interval)
    for a, b in gaps:  # asked twice: in its page, then by the check with the candle on each side
        assert (a - step, b + step - 1) in rest.calls
    assert bf.stats.failures == 0 and bf.stats.exchange_gaps == len(gaps)


async def test_a_real_day_without_a_gap_whose_first_page_came_empty_has_no_exchange_gap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rest = ArchiveRest(REALDATA / "bbgo_usdm_vision_btcusdt_1m_2022-05-06_fullday.csv", empty_first=True)
    s = Series("usdt_futures", "BTCUSDT", "1m")
    got, bf = await backfill_archive(tmp_path, s, rest)
    assert got == [r[0] for r in rest.rows] and len(got) == 1440
    assert bf.ledger.all() == {} and bf.ledger.all_suspected() == {}
    assert bf.stats.recovered == 1000
