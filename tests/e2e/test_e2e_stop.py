"""A Recorder stopped by cancellation still cleans up: store unlocked and compacted, HTTP client closed.

``with trio.move_on_after(4): async with Recorder(cfg): ...`` (what ``demo`` does) used to skip the
recorder's own cleanup: the store stayed locked by its own process, nothing was compacted (raw readers then
saw an open time twice), the HTTP client stayed open and the exchange-gap ledger unsaved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trio_klines.config import RecorderConfig
from trio_klines.recorder import Recorder
from trio_klines.store.dataset import Store
from trio_klines.testing import open_exchange

pytestmark = pytest.mark.timeout(60)

START = 1_767_225_600_000  # 2026-01-01, exchange time


@pytest.mark.parametrize("where", ["running", "entering"])
async def test_a_recorder_cancelled_from_outside_cleans_up(tmp_path: Path, where: str) -> None:
    async with open_exchange(seed=3, speed=600, start=START) as ex:
        config = RecorderConfig.build(
            streams=["spot:1m:BTCUSDT,ETHUSDT"], endpoints=ex.endpoints, data_dir=tmp_path,
            since=START - 30 * 60_000, flush_seconds=0.2,
        )  # fmt: skip
        recorder = Recorder(config)
        with trio.CancelScope() as outside:
            if where == "entering":
                outside.cancel()  # cancelled before it even opened the store
            async with recorder, recorder.candles() as batches:
                seen = 0
                async for batch in batches:
                    seen += len(batch)
                    if seen >= 40:  # the catch-up and a few live candles are durable: stop it from outside
                        outside.cancel()
        assert outside.cancelled_caught
    with Store(tmp_path):  # the lock was released (it raised StoreLocked, naming this very process)
        pass
    assert recorder._http is None or recorder._http.is_closed
    stored = tmp_path / "market=spot" / "interval=1m"
    for series_dir in stored.iterdir() if stored.exists() else ():
        periods = [p.name.split("_")[0] for p in series_dir.glob("*.parquet")]
        assert len(periods) == len(set(periods)), f"{series_dir.name} not compacted: {sorted(periods)}"
