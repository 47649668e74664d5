"""Recorder.reconfigure, what SIGHUP does: series added and removed live, a bad config refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import Series
from trio_klines.errors import ConfigError
from trio_klines.recorder import Recorder
from trio_klines.store.coverage import coverage
from trio_klines.testing import open_exchange

pytestmark = pytest.mark.timeout(90)

BTC = Series("spot", "BTCUSDT", "1m")
ETH = Series("spot", "ETHUSDT", "1m")


async def durable(rec: Recorder, series: Series, after: int = -1) -> int:
    """Wait for a candle of ``series`` opening after ``after`` to be durable; its open time."""
    with trio.fail_after(45), rec.candles() as batches:
        async for batch in batches:
            mine = [c.open_time for c in batch if c.series == tuple(series) and c.open_time > after]
            if mine:
                return max(mine)
    raise AssertionError("the recorder stopped")


async def test_series_are_added_removed_and_caught_up_live(tmp_path: Path) -> None:
    async with open_exchange(seed=7, speed=600) as exchange:
        def config(*streams: str, **settings: object) -> RecorderConfig:
            settings = {"flush_seconds": 0.1, **settings}
            return RecorderConfig.build(streams=streams, endpoints=exchange.endpoints, data_dir=tmp_path / "data",
                                        **settings)  # fmt: skip

        async with Recorder(config("spot:1m:BTCUSDT")) as rec:  # an earlier run stored BTCUSDT
            await durable(rec, BTC)

        async with Recorder(config("spot:1m:ETHUSDT")) as rec:
            last_eth = await durable(rec, ETH)
            await durable(rec, ETH, last_eth + 5 * 60_000)  # five exchange minutes without BTCUSDT
            assert rec.backfiller is not None
            requests = rec.backfiller.stats.requests
            done = await rec.reconfigure(config("spot:1m:BTCUSDT,ETHUSDT", flush_seconds=0.2))
            assert (done.added, done.removed, done.ignored) == ((BTC,), (), ("flush_seconds",))
            assert rec.backfiller.stats.requests == requests + 1  # its hole asked for at once
            assert "added 1 series (spot BTCUSDT-1m)" in done.summary()
            assert set(rec.series) == {BTC, ETH}
            await durable(rec, BTC)
            await rec.backfiller.wait_idle()

            done = await rec.reconfigure(config("spot:1m:ETHUSDT"))
            assert done.removed == (BTC,) and rec.series == (ETH,)

            # Refused whole: the unknown symbol, and with it the removal of ETHUSDT.
            with pytest.raises(ConfigError, match=r"unknown symbol.*NOPEUSDT"):
                await rec.reconfigure(config("spot:1m:NOPEUSDT"))
            assert rec.series == (ETH,)
    held = coverage(tmp_path / "data", [BTC, ETH])
    assert held[BTC].rows > 0 and not held[BTC].gaps and not held[ETH].gaps
