"""The engines behind ``backfill`` and ``verify`` (trio_klines.pipeline.history / .verify), in process.

The commands themselves run as processes in tests/e2e/test_e2e_backfill.py.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import apply_endpoints, series
from trio_klines.pipeline.history import HistoryProgress, download, plan_size
from trio_klines.pipeline.verify import SeriesComparison, verify
from trio_klines.store.dataset import Store, load
from trio_klines.testing import ground_truth, open_exchange

from e2e_support import SEED, START

pytestmark = pytest.mark.timeout(60)
MIN = 60_000
DAY = 1440 * MIN


async def test_download_fetches_only_what_the_store_lacks(tmp_path: Path) -> None:
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 120 * MIN, seed=SEED)
    with Store(tmp_path) as store:
        store.append(truth[:30] + truth[50:60])  # a hole, and nothing after the 60th minute
    async with open_exchange(seed=SEED, start=START + DAY) as exchange:
        config = RecorderConfig.build(streams=["spot:1m:BTCUSDT"], endpoints=exchange.endpoints, data_dir=tmp_path)
        reports: list[HistoryProgress] = []
        with trio.fail_after(30):
            stats = (await download(config, START, START + 120 * MIN, on_progress=reports.append, source="rest")).rest
        assert (stats.candles, stats.pages, stats.failures) == (80, 2, 0)  # the hole's 20, then 60 after
        assert reports[0] == HistoryProgress(pages=0, total_pages=2, candles=0, total_candles=80)
        assert reports[-1] == HistoryProgress(pages=2, total_pages=2, candles=80, total_candles=80)
        assert load(tmp_path, "spot", "BTCUSDT", "1m")["close"].tolist() == [c.close for c in truth]

        with trio.fail_after(30):
            again = (await download(config, START, START + 120 * MIN, source="rest")).rest
        assert (again.candles, again.pages, again.requests) == (0, 0, 0)


async def test_verify_reports_missing_extra_and_different_candles(tmp_path: Path) -> None:
    outage = (START + 10 * MIN, START + 12 * MIN)  # the exchange has no candles there; the store does
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 30 * MIN, seed=SEED)
    tampered = msgspec.structs.replace(truth[20], volume=truth[20].volume + 1)  # still a valid candle
    with Store(tmp_path) as store:
        store.append([*truth[:5], *truth[6:20], tampered, *truth[21:]])  # minute 5 missing
    heard: list[SeriesComparison] = []
    async with open_exchange(seed=SEED, start=START + DAY, faults=f"outage={outage[0]}-{outage[1]}") as exchange:
        with trio.fail_after(30):
            results = await verify(tmp_path, apply_endpoints(exchange.endpoints), on_series=heard.append)
    expected = SeriesComparison(
        series=series("spot", "BTCUSDT", "1m"),
        stored=29,
        on_exchange=28,
        missing=(START + 5 * MIN,),
        extra=(START + 10 * MIN, START + 11 * MIN),
        different=(START + 20 * MIN,),
    )
    assert results == heard == [expected]
    assert results[0].problems == 4

    async with open_exchange(seed=SEED, start=START + DAY, faults=f"outage={outage[0]}-{outage[1]}") as exchange:
        with trio.fail_after(30):
            (since_21,) = await verify(tmp_path, apply_endpoints(exchange.endpoints), since=START + 21 * MIN)
    assert (since_21.stored, since_21.on_exchange, since_21.problems) == (9, 9, 0)


@pytest.mark.parametrize("source", ["rest", "auto"])
async def test_an_open_ended_download_counts_its_total_to_the_exchanges_clock(tmp_path: Path, source: str) -> None:
    # The exchange's clock (2 h after START) is not the local one: the total is what it has closed since START.
    async with open_exchange(seed=SEED, start=START + 120 * MIN) as exchange:
        config = RecorderConfig.build(streams=["spot:1m:BTCUSDT"], endpoints=exchange.endpoints, data_dir=tmp_path)
        reports: list[HistoryProgress] = []
        with trio.fail_after(30):
            stats = await download(config, START, on_progress=reports.append, source=source)  # type: ignore[arg-type]
    assert stats.rest.candles == 120
    assert (reports[0].candles, reports[0].total_candles, reports[0].total_pages) == (0, 120, 1)
    assert (reports[-1].candles, reports[-1].total_candles) == (120, 120)


def test_plan_size_counts_an_open_end_to_the_markets_clock() -> None:
    btc, eth_1h = series("spot", "BTCUSDT", "1m"), series("spot", "ETHUSDT", "1h")
    perp = series("coin_futures", "BTCUSD_PERP", "3m")
    plan = {btc: [(START, START + 10 * MIN), (START + 20 * MIN, None)], eth_1h: [(START, None)], perp: [(START, None)]}
    now = {"spot": START + 2500 * MIN + 30_000}  # minute 2500 and hour 41 are still open
    assert plan_size(plan, now) == (1 + 3 + 1, 10 + 2480 + 41)  # coin_futures' clock unknown: its open end counts 0
    assert plan_size(plan, {}) == (1, 10)
    assert plan_size({btc: [(START + 5 * MIN, None)]}, {"spot": START}) == (0, 0)  # a start after the clock


def test_a_comparison_as_json_lists_at_most_limit_times_of_each_kind() -> None:
    missing = tuple(START + i * MIN for i in range(5))
    result = SeriesComparison(series("spot", "BTCUSDT", "1m"), 10, 11, missing, extra=(START + 250,), different=())
    assert result.as_dict(limit=2) == {
        "market": "spot", "symbol": "BTCUSDT", "interval": "1m", "stored": 10, "on_exchange": 11, "problems": 6,
        "missing": 5, "missing_times": ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"],
        "extra": 1, "extra_times": ["2026-01-01T00:00:00.250Z"],
        "different": 0, "different_times": [],
    }  # fmt: skip
    assert len(result.as_dict()["missing_times"]) == 5
