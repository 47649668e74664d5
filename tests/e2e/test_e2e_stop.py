"""A Recorder stopped by cancellation still cleans up: store sealed and unlocked, HTTP client closed.

``with trio.move_on_after(4): async with Recorder(cfg): ...`` (what ``demo`` does) used to skip the
recorder's own cleanup: the store stayed locked by its own process, nothing was sealed (raw readers then
lacked the rows still in landing files), the HTTP client stayed open and the exchange-gap ledger unsaved.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import series
from trio_klines.recorder import Recorder
from trio_klines.store.dataset import Store, load
from trio_klines.store.layout import series_dir
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
    sealed = check_sealed(tmp_path)  # before a Store is opened here: its close would seal what was left
    assert (sealed >= 40) == (where == "running")
    with Store(tmp_path):  # the lock was released (it raised StoreLocked, naming this very process)
        pass
    assert recorder._http is None or recorder._http.is_closed


def check_sealed(root: Path) -> int:
    """Nothing is left in landing files, so raw readers see exactly the rows :func:`load` does; how many."""
    assert not list(root.glob("_landing/*.parquet")), "landing files left unsealed"
    rows = 0
    for key in (series("spot", symbol, "1m") for symbol in ("BTCUSDT", "ETHUSDT")):
        directory = root.joinpath(*series_dir(key))
        raw = pq.read_table(directory).to_pandas()["candle_begin_time"].tolist() if directory.exists() else []
        assert raw == load(root, *key)["candle_begin_time"].tolist(), key
        rows += len(raw)
    return rows
