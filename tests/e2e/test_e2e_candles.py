"""Issue 13, items 2, 4, 5, 8 and 10: what a valid candle is, end to end, in-process.

A Recorder records a scripted connection into the real Parquet store (a tmp dir). Between good frames
the exchange sends every kind of bad candle found by the adversarial run: a trade count beyond int64,
deeply nested JSON, a candle from year 3000, a µs open time past the store's range, a 3d candle off the
store's grid, a NaN price; and the same open time closed twice with other values. The recorder keeps
running, counts and logs the bad frames, stores every good candle (the later of the two closes), and
stores none of the bad.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_klines.config import RecorderConfig
from trio_klines.core.validity import MAX_OPEN_TIME
from trio_klines.pipeline.writer import call_inline
from trio_klines.recorder import Recorder
from trio_klines.store.dataset import load
from trio_klines.testing import Pause, ScriptedTransport, WireKline

pytestmark = pytest.mark.timeout(30)

MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01


def good(minute: int, close: str = "2") -> str:
    return WireKline("BTCUSDT", "1m", T0 + minute * MIN, close=close).frame()


def bad_frames() -> dict[str, str]:
    """One frame of each kind, all for BTCUSDT on spot, each sent while the exchange's clock is near T0."""
    clock = T0 + 3 * MIN
    year_3000 = 32_503_680_000_000
    micros = MAX_OPEN_TIME * 1000
    frames = {
        "trade count beyond int64": WireKline("BTCUSDT", "1m", T0 + 2 * MIN, trades=2**64).frame(),
        "deeply nested JSON": "[" * 100_000,
        "deeply nested control reply": '{"result":' + "[" * 100_000 + "]" * 100_000 + ',"id":1}',
        "a candle from year 3000": WireKline("BTCUSDT", "1m", year_3000).frame(event_time=clock),
        "a µs open time past the store's range": WireKline("BTCUSDT", "1m", micros, micros + 59_999_999).frame(),
        "a 3d candle off the store's grid": WireKline("BTCUSDT", "3d", 1499126400000).frame(),
        "a NaN price": WireKline("BTCUSDT", "1m", T0 + 4 * MIN, high="NaN").frame(),
    }
    event = json.loads(WireKline("BTCUSDT", "1m", T0 + 5 * MIN).frame())
    del event["data"]["E"]  # a closed candle the exchange's clock cannot vouch for
    frames["a closed kline without E"] = json.dumps(event)
    return frames


async def test_every_kind_of_bad_candle_is_counted_and_none_is_stored(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = bad_frames()
    script: list[str | Pause] = [good(1)]
    for minute, frame in enumerate(bad.values(), start=2):
        script += [frame, good(minute)]
    last = 1 + len(bad)
    script += [good(last, close="2.5"), good(last, close="2.5"), Pause(1)]  # closed again, then a true repeat
    transport = ScriptedTransport([script])
    config = RecorderConfig.build(streams=["spot:1m:BTCUSDT"], data_dir=tmp_path / "data", receive_timeout=600,
                                  flush_seconds=0.5, silence_min=10_000, backfill=False,
                                  check_symbols=False)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        async with Recorder(config, transport=transport, run_sink=call_inline) as rec:
            await transport.next_connection(1)
            await trio.sleep(5)
            stats = rec.stats()
    assert stats.malformed == len(bad)  # counted, every one
    assert stats.written == last + 1  # 1..last, and the second close of the last
    assert stats.duplicates == 1
    assert "malformed frame skipped" in caplog.text  # logged (once a minute per connection)
    frame = load(tmp_path / "data", "spot", "BTCUSDT", "1m")
    opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
    assert opens == [T0 + m * MIN for m in range(1, last + 1)]  # every good candle, none of the bad
    assert frame["close"].tolist() == [2.0] * (last - 1) + [2.5]  # the later close won
    assert frame["trade_num"].tolist() == [9] * last
    assert frame["high"].tolist() == [3.0] * last
    assert not (tmp_path / "data" / "market=spot" / "interval=3d").exists()
