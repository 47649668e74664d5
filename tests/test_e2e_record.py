"""End to end, as a user runs it: ``python -m trio_klines exchange`` and ``record`` as processes.

The recorder is stopped with SIGINT and the Parquet files are read back with pandas and compared,
candle by candle, with the exchange's ground truth.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from trio_klines.store import load
from trio_klines.testing import ground_truth

pytestmark = pytest.mark.timeout(120)

START = 1_767_225_600_000  # 2026-01-01, exchange time
SEED = 11
STREAMS = ["usdt_futures:1m:BTCUSDT,ETHUSDT", "coin_futures:3m:BTCUSD_PERP", "spot:1m:BTCUSDT,BNBUSDT"]
SERIES = [("usdt_futures", "BTCUSDT", "1m"), ("usdt_futures", "ETHUSDT", "1m"), ("coin_futures", "BTCUSD_PERP", "3m"),
          ("spot", "BTCUSDT", "1m"), ("spot", "BNBUSDT", "1m")]  # fmt: skip


def python(*args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "trio_klines", *args], text=True, env=env, **kw)  # type: ignore[call-overload]


@pytest.fixture
def exchange(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A fake exchange process; yields the path of its endpoints file."""
    faults = getattr(request, "param", "")
    args = ["exchange", "--seed", str(SEED), "--speed", "600", "--start", str(START)]
    proc = python(*args, *(["--faults", faults] if faults else []), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        endpoints = tmp_path / "endpoints.json"
        endpoints.write_text(first, encoding="utf-8")
        json.loads(first)
        yield endpoints
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def record(endpoints: Path, data: Path, seconds: float, *extra: str) -> tuple[int, float, str]:
    """Run ``record`` for ``seconds``, stop it with SIGINT; (exit code, seconds to stop, stderr)."""
    args = ["record", "--endpoints", str(endpoints), "--data", str(data), "--receive-timeout", "2",
            "--flush-seconds", "0.2", "--quiet", *extra]  # fmt: skip
    for spec in STREAMS:
        args += ["--stream", spec]
    proc = python(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(seconds)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        return proc.returncode, time.monotonic() - t0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_against_truth(data: Path, outages: tuple[tuple[int, int], ...] = ()) -> int:
    """Every stored series is sorted, unique, gap-free between its ends and equal to the ground truth."""
    compared = 0
    for market, symbol, interval in SERIES:
        frame = load(data, market, symbol, interval)
        assert len(frame) > 5, f"{market} {symbol}-{interval}: only {len(frame)} candles"
        assert frame.index.is_monotonic_increasing
        assert not frame.index.duplicated().any()
        opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
        truth = ground_truth(market, symbol, interval, opens[0], opens[-1] + 1, seed=SEED, outages=outages)
        assert [c.open_time for c in truth] == opens, f"{market} {symbol}-{interval}: missing or extra candles"
        for candle, row in zip(truth, frame.itertuples(index=False), strict=True):
            assert (row.open, row.high, row.low, row.close, row.volume, row.quote_volume, row.trade_num,
                    row.taker_buy_base_asset_volume, row.taker_buy_quote_asset_volume) == (
                candle.open, candle.high, candle.low, candle.close, candle.volume, candle.quote_volume,
                candle.trade_num, candle.taker_buy_base_asset_volume, candle.taker_buy_quote_asset_volume)  # fmt: skip
        compared += len(truth)
    return compared


def test_clean_run_records_exactly_the_exchange(exchange: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, stop_s, err = record(exchange, data, 5)
    assert code == 0, err
    assert stop_s < 5, f"stopping took {stop_s:.1f}s"
    assert check_against_truth(data) > 100
    # Compacted on the way out: one file per period, readable by any reader.
    assert (
        pd.read_parquet(data).groupby(["market", "symbol", "interval", "candle_begin_time"], observed=True).size().max()
        == 1
    )


@pytest.mark.parametrize(
    "exchange",
    ["drop=0.004,close=0.004,stall=0.002,stall_s=3,garbage=0.01,error=0.01,dup=0.05,reorder=0.02,cutoff=1200"],
    indirect=True,
)
def test_every_websocket_fault_at_once(exchange: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, stop_s, err = record(exchange, data, 8)
    assert code == 0, err
    assert stop_s < 5, f"stopping took {stop_s:.1f}s"
    assert "Traceback" not in err
    # The faults really happened, and were survived: reconnects, skipped frames, holes filled over REST.
    summary = next(line for line in err.splitlines() if "stopped:" in line)
    numbers = dict(re.findall(r"(\d+) (reconnects|gaps|malformed)", summary)[i][::-1] for i in range(3))
    assert int(numbers["reconnects"]) > 0, summary
    assert int(numbers["gaps"]) > 0, summary
    assert int(numbers["malformed"]) > 0, summary
    compared = check_against_truth(data)
    assert compared > 150


def test_bad_configuration_exits_2_and_says_why(tmp_path: Path) -> None:
    proc = python("record", "--stream", "usdt_futures:1s:BTCUSDT", "--data", str(tmp_path), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)  # fmt: skip
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "invalid interval '1s' for usdt_futures" in err
    proc = python("record", "--data", str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "no streams to record" in err
