"""Exchange gaps end to end: ``download`` (the engine of ``backfill``) in process against the fake exchange,
whose REST answers some klines pages empty (``rest_empty``) or short (``rest_short``) although the candles
exist, around a real outage.

What a user sees: no candle lost; the outage, and only it, confirmed in the ledger; ``status`` 0 missing
once the run is over. A run stopped before its checks leaves the ranges suspected: ``status`` counts
them as missing (exit 1) and the next run checks them (tests/pipeline/test_backfill.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import Series, count_open_times
from trio_klines.pipeline.history import download
from trio_klines.store.dataset import load
from trio_klines.store.ledger import ExchangeGapLedger
from trio_klines.store.status import store_status
from trio_klines.store.tables import COLUMNS
from trio_klines.testing import open_exchange

pytestmark = pytest.mark.timeout(90)

MIN = 60_000
DAY = 1440 * MIN
START = 1_767_225_600_000  # 2026-01-01, exchange time
SEED = 11
SPAN = 2500  # minutes: three pages per series
#: Across the boundary of the first and second pages.
OUTAGE = (START + 950 * MIN, START + 1040 * MIN)
SERIES = (Series("usdt_futures", "BTCUSDT", "1m"), Series("spot", "ETHUSDT", "1m"), Series("coin_futures",
          "BTCUSD_PERP", "1m"))  # fmt: skip
FAULTS = f"outage={OUTAGE[0]}-{OUTAGE[1]},rest_empty=0.3,rest_short=0.3"


async def test_transient_empty_and_short_pages_lose_nothing_and_only_the_outage_is_an_exchange_gap(
    tmp_path: Path,
) -> None:
    streams = [f"{s.market}:{s.interval}:{s.symbol}" for s in SERIES]
    async with open_exchange(seed=SEED, start=START + DAY * 2, faults=FAULTS) as ex:
        config = RecorderConfig.build(streams=streams, endpoints=ex.endpoints, data_dir=tmp_path)
        began = time.monotonic()
        with trio.fail_after(60):
            stats = (await download(config, START, START + SPAN * MIN, source="rest")).rest
        took = time.monotonic() - began
        assert ex.rest.stats["fault_rest_empty"] > 0 and ex.rest.stats["fault_rest_short"] > 0
        for s in SERIES:
            frame = load(tmp_path, s.market, s.symbol, s.interval)
            truth = ex.ground_truth(s.market, s.symbol, s.interval, START, START + SPAN * MIN)
            assert len(truth) == SPAN - 90
            opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
            lost = sorted({c.open_time for c in truth} - set(opens))
            assert opens == [c.open_time for c in truth], f"{s}: lost {len(lost)}: {lost[:5]}"
            for candle, row in zip(truth, frame.itertuples(index=False), strict=True):
                assert [getattr(row, k) for k in COLUMNS[1:]] == [getattr(candle, k) for k in COLUMNS[1:]]
    assert stats.failures == 0 and stats.recovered > 0
    ledger = ExchangeGapLedger(tmp_path)
    assert ledger.all() == {s: ledger.ranges(s) for s in SERIES}
    assert all(list(ledger.ranges(s)) == [OUTAGE] for s in SERIES) and ledger.all_suspected() == {}
    status = {row.series: row for row in store_status(tmp_path)}
    gap = count_open_times("1m", *OUTAGE)
    assert all((status[s].missing, status[s].exchange_gaps, status[s].rows) == (0, gap, SPAN - gap) for s in SERIES)
    print(f"download with transient faults took {took:.1f}s, {stats.checks} checks")
