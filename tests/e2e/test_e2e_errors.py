"""Third-party errors end to end: a Recorder (in-process) against the fake exchange with a REST fault.

The fault ``rest_bad_gzip`` answers some klines calls with a body marked ``Content-Encoding: gzip`` that is
not gzip, so httpx raises ``DecodingError`` while reading it. The REST client maps that to ours and
retries it like a 5xx: the recorder keeps running, logs and counts the failed calls, and what it stores
equals the exchange's ground truth, candle for candle.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import Series, floor_open_time, iter_open_times
from trio_klines.core.parse import Candle
from trio_klines.recorder import Recorder
from trio_klines.store.dataset import load
from trio_klines.store.tables import COLUMNS
from trio_klines.testing import FakeExchange, open_exchange

pytestmark = pytest.mark.timeout(90)

MIN = 60_000
START = 1_767_225_600_000  # 2026-01-01, exchange time
HISTORY = 2500  # minutes of history before the exchange's start: three pages per series
SERIES = (Series("usdt_futures", "BTCUSDT", "1m"), Series("spot", "ETHUSDT", "1m"))
#: Per klines call. Giving up needs 9 garbled answers in a row (0.3**9: 2e-5 a call), so retries win.
FAULTS = "rest_bad_gzip=0.3"


async def wait_until_covered(channel: trio.MemoryReceiveChannel[list[Candle]], until: int) -> None:
    """Read the recorder's durable batches until every series holds every candle opening in ``[START, until)``."""
    missing = {s: set(iter_open_times(s.interval, START, until)) for s in SERIES}
    async for batch in channel:
        for c in batch:
            missing[Series(c.market, c.symbol, c.interval)].discard(c.open_time)
        if not any(missing.values()):
            return


def assert_stored_equals_truth(data: Path, ex: FakeExchange, until: int) -> int:
    """Each series is stored from START, gap-free to its last candle (at least ``until``), equal to the truth."""
    compared = 0
    for s in SERIES:
        frame = load(data, s.market, s.symbol, s.interval)
        opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
        assert opens[0] == START and opens[-1] >= until - MIN, f"{s}: {opens[0]}…{opens[-1]}"
        truth = ex.ground_truth(s.market, s.symbol, s.interval, START, opens[-1] + 1)
        lost = sorted({c.open_time for c in truth} - set(opens))
        assert opens == [c.open_time for c in truth], f"{s}: lost {lost[:10]} ({len(lost)})"
        for candle, row in zip(truth, frame.itertuples(index=False), strict=True):
            assert [getattr(row, k) for k in COLUMNS[1:]] == [getattr(candle, k) for k in COLUMNS[1:]]
        compared += len(truth)
    return compared


@pytest.mark.slow
async def test_undecodable_rest_answers_are_retried_and_no_candle_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    async with open_exchange(seed=11, speed=60, start=START + HISTORY * MIN, faults=FAULTS) as ex:
        config = RecorderConfig.build(
            streams=[f"{s.market}:{s.interval}:{s.symbol}" for s in SERIES],
            endpoints=ex.endpoints,
            data_dir=data,
            since=START,
            receive_timeout=5,
            flush_seconds=0.2,
        )
        # The history, and a few candles closed live after the start: both paths must be whole.
        until = floor_open_time("1m", ex.now()) + 3 * MIN
        with trio.fail_after(60):
            async with Recorder(config) as rec:
                await wait_until_covered(rec.candles(), until)
                assert rec.backfiller is not None
                rest = rec.backfiller.rest_stats()
                failures = rec.backfiller.stats.failures
        garbled = ex.rest.stats["fault_rest_bad_gzip"]
    assert garbled >= 1, "the fault never fired: choose another seed"
    assert sum(r.retries for r in rest.values()) >= garbled  # every garbled answer was a failed attempt, retried
    assert sum(r.gave_up for r in rest.values()) == failures == 0
    assert caplog.text.count("DecodingError") >= garbled  # each logged, as a warning with its retry
    assert assert_stored_equals_truth(data, ex, until) >= 2 * (HISTORY + 3)
