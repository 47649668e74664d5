"""The parser against real Binance captures (``../shared/realdata``, see its MANIFEST.md).

Set ``TRIO_KLINES_REALDATA`` to read them from elsewhere; without them these tests are skipped.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest
from realdata_support import REALDATA, csv_files, market_of, needs_realdata, rest_series

from trio_klines.core.markets import iter_open_times
from trio_klines.core.parse import Candle, parse_frame, parse_rest_klines, parse_rest_row
from trio_klines.errors import BinanceError

pytestmark = needs_realdata

def ws_files() -> list[Path]:
    return sorted(REALDATA.glob("*.jsonl")) + sorted(REALDATA.glob("*_ws_*.json")) if REALDATA.is_dir() else []


def rest_files() -> list[Path]:
    return sorted(p for p in REALDATA.glob("*_rest_*.json") if "error" not in p.name) if REALDATA.is_dir() else []


def expected(market: str, k: dict[str, object]) -> Candle:
    f = float
    return Candle(market, k["s"], k["i"], k["t"], f(k["o"]), f(k["h"]), f(k["l"]), f(k["c"]), f(k["v"]), f(k["q"]),
                  k["n"], f(k["V"]), f(k["Q"]))  # fmt: skip


@pytest.mark.parametrize("path", ws_files(), ids=lambda p: p.name)
def test_every_captured_frame_parses(path: Path) -> None:
    market = market_of(path.name)
    closed = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        payload = json.loads(line)
        k = payload.get("data", payload)["k"]
        for frame in (line, line.encode()):
            candle = parse_frame(frame, market)
            if k["x"]:
                assert candle == expected(market, k)
            else:
                assert candle is None
        closed += k["x"]
    assert closed == path.read_text().count('"x":true')


def test_captures_hold_closed_candles() -> None:
    closed = [
        parse_frame(line, market_of(p.name))
        for p in ws_files()
        for line in p.read_text().splitlines()
        if '"x":true' in line
    ]
    assert len(closed) >= 14
    # The BTCUSDT close of 2021-04-04 20:03 that MANIFEST.md checked against the archive.
    btc = next(c for c in closed if c and c.symbol == "BTCUSDT" and c.open_time == 1617566580000)
    assert (btc.open, btc.high, btc.low, btc.close, btc.trade_num) == (57994.6, 58018.03, 57974.41, 57999.99, 1020)


@pytest.mark.parametrize("path", rest_files(), ids=lambda p: p.name)
def test_rest_captures_parse(path: Path) -> None:
    market, symbol, interval = rest_series(path)
    body = path.read_bytes()
    rows = json.loads(body)
    candles = parse_rest_klines(body, market, symbol, interval)
    assert len(candles) == len(rows) > 0
    assert [c.open_time for c in candles] == [row[0] for row in rows]
    assert candles[0] == parse_rest_row(rows[0], market, symbol, interval)
    assert all(c.open_time < d.open_time for c, d in itertools.pairwise(candles))


def test_rest_error_capture() -> None:
    with pytest.raises(BinanceError, match="Maximum time interval is 200 days") as info:
        parse_rest_klines((REALDATA / "gct_coinm_rest_error_-4088.json").read_bytes(), "coin_futures", "X", "1d")
    assert info.value.code == -4088


def read_archive(path: Path) -> list[Candle]:
    """A data.binance.vision CSV through :func:`parse_rest_row` (same 12 columns, all as text)."""
    interval = path.name.split("_")[-2] if "Q1" in path.name else next(
        part for part in path.stem.split("_") if part in ("1m", "1h")
    )  # fmt: skip
    symbol = "ADABTC" if "adabtc" in path.name else "BTCUSDT"
    out = []
    with path.open() as f:
        for row in csv.reader(f):
            row[0], row[6], row[8] = int(row[0]), int(row[6]), int(row[8])
            out.append(parse_rest_row(row, market_of(path.name), symbol, interval))
    return out


@pytest.mark.parametrize("path", csv_files(), ids=lambda p: p.name)
def test_archive_rows_parse(path: Path) -> None:
    candles = read_archive(path)
    assert len(candles) == sum(1 for _ in path.open())
    assert all(c.open_time % 60_000 == 0 for c in candles)  # µs archives (2025+) come out in ms


def test_archive_quirks() -> None:
    # A trading halt: the 12:39 candle closes early, nothing from 12:40 to 13:59, zero-trade runs before.
    halt = read_archive(REALDATA / "jankluger_spot_vision_btcusdt_1m_2023-03-24.csv")
    opens = [c.open_time for c in halt]
    assert 1679661540000 in opens  # 12:39, closed at 12:39:41.646
    missing = sorted(set(iter_open_times("1m", opens[0], opens[-1])) - set(opens))
    assert missing[0] == 1679661600000 and len(missing) == 80  # 12:40 … 13:59
    assert sum(c.trade_num == 0 for c in halt) >= 72
    # Microsecond archive of 2025-01-01.
    micro = read_archive(REALDATA / "jankluger_spot_vision_btcusdt_1m_2025-01-01.csv")
    assert micro[0].open_time == 1735689600000 and micro[0].close == 93610.93


def test_rest_hours_match_the_minute_archive() -> None:
    """The REST 1h candles of 2020-06-28 equal the archive's 1m candles rolled up, where the hour is whole."""
    minutes = read_archive(REALDATA / "jankluger_spot_vision_btcusdt_1m_2020-06-28.csv")
    hours = parse_rest_klines(
        (REALDATA / "gct_spot_rest_btcusdt_1h_page2_468rows_2020-06-11.json").read_bytes(), "spot", "BTCUSDT", "1h"
    )
    by_hour: dict[int, list[Candle]] = defaultdict(list)
    for m in minutes:
        by_hour[m.open_time - m.open_time % 3_600_000].append(m)
    compared = 0
    for h in hours:
        ms = by_hour.get(h.open_time, [])
        if len(ms) != 60:
            continue
        assert (h.open, h.close) == (ms[0].open, ms[-1].close)
        assert (h.high, h.low) == (max(m.high for m in ms), min(m.low for m in ms))
        assert h.trade_num == sum(m.trade_num for m in ms)
        assert h.volume == pytest.approx(sum(m.volume for m in ms), rel=1e-9)
        compared += 1
    assert compared >= 18


def test_real_closed_frames_are_stamped_after_their_close() -> None:
    """Why the parser may hold a closed candle to its frame's event time: Binance stamps ``E`` after ``T``."""
    lags = []
    for p in ws_files():
        for line in p.read_text().splitlines():
            if '"x":true' in line:
                event = json.loads(line)
                event = event.get("data", event)
                lags.append(event["E"] - event["k"]["T"])
    assert len(lags) >= 14
    assert min(lags) > 0 and max(lags) < 5_000  # 5 ms to 2.4 s in these captures: never before the close
