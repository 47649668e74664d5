"""The fake exchange's history and wire formats: pure, deterministic, and exactly what the parser reads."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.markets import MARKETS, floor_open_time, is_open_time, next_open_time
from trio_klines.core.parse import parse_frame, parse_rest_row
from trio_klines.errors import ConfigError
from trio_klines.testing import History, Outage, Universe, ground_truth
from trio_klines.testing.symbols import format_units
from trio_klines.testing.wire import exchange_info, rest_row, ws_kline_frame

pytestmark = pytest.mark.timeout(60)

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, a Monday
REALDATA = Path(os.environ.get("TRIO_KLINES_REALDATA", Path(__file__).resolve().parents[3] / "shared" / "realdata"))
HISTORY = History(7, universe=Universe(3))
SERIES = [
    (market, symbol, interval)
    for market in MARKETS
    for symbol in HISTORY.universe.symbols(market)
    for interval in ("1m", "1h", "1d", "1w", "1M")
]


def decimals(text: str) -> int:
    return len(text.partition(".")[2])


def test_article_symbols_are_listed_and_generated_ones_added_per_market() -> None:
    universe = Universe(5)
    assert {"BTCUSDT", "BNBUSDT", "ETHUSDT"} <= set(universe.symbols("spot"))
    assert {"BTCUSDT", "ETHUSDT"} <= set(universe.symbols("usdt_futures"))
    assert {"BTCUSD_PERP", "ETHUSD_PERP"} <= set(universe.symbols("coin_futures"))
    for market in MARKETS:
        generated = [s for s in universe.symbols(market) if s.startswith("SYM")]
        assert len(generated) == 5
        assert len(universe.symbols(market)) == len(Universe().symbols(market)) + 5
    assert "SYM0005USD_PERP" in universe.symbols("coin_futures")
    with pytest.raises(ConfigError):
        Universe(-1)
    with pytest.raises(ConfigError, match="lists no"):
        universe.spec("spot", "NOPEUSDT")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SERIES), st.integers(min_value=T0 - 3 * 365 * 86_400_000, max_value=T0 + 365 * 86_400_000))
def test_rest_rows_and_frames_parse_to_exactly_the_ground_truth(series: tuple[str, str, str], instant: int) -> None:
    market, symbol, interval = series
    spec = HISTORY.spec(market, symbol)
    open_time = floor_open_time(interval, instant)
    kline = HISTORY.kline(spec, interval, open_time)
    expected = HISTORY.candle(spec, interval, kline)
    # Through real JSON text, as a client receives it.
    row = json.loads(json.dumps(rest_row(spec, kline)))
    assert parse_rest_row(row, market, symbol, interval) == expected
    for stream in (f"{symbol.lower()}@kline_{interval}", None):
        frame = ws_kline_frame(spec, interval, kline, event_time=kline.close_time + 1, closed=True, stream=stream)
        assert parse_frame(frame, market) == expected
    assert expected.trade_num >= 0
    assert expected.low <= min(expected.open, expected.close) <= max(expected.open, expected.close) <= expected.high
    assert expected.taker_buy_base_asset_volume <= expected.volume
    assert expected.taker_buy_quote_asset_volume <= expected.quote_volume


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SERIES), st.integers(min_value=T0, max_value=T0 + 365 * 86_400_000), st.data())
def test_open_updates_grow_towards_the_closed_candle(
    series: tuple[str, str, str], instant: int, data: st.DataObject
) -> None:
    market, symbol, interval = series
    spec = HISTORY.spec(market, symbol)
    open_time = floor_open_time(interval, instant)
    full = HISTORY.kline(spec, interval, open_time)
    length = full.close_time + 1 - open_time
    times = sorted(data.draw(st.lists(st.integers(0, length - 1), min_size=2, max_size=8)))
    previous = None
    for at in times:
        p = HISTORY.partial(spec, interval, open_time, open_time + at)
        assert full.low <= p.low <= min(p.open, p.close) <= max(p.open, p.close) <= p.high <= full.high
        assert p.taker_base <= p.volume <= full.volume and p.taker_quote <= p.quote_volume <= full.quote_volume
        assert p.open == full.open and p.close_time == full.close_time
        if previous is not None:
            assert p.high >= previous.high and p.low <= previous.low
            assert p.volume >= previous.volume and p.trades >= previous.trades
        previous = p


def test_history_is_a_pure_function_of_the_seed() -> None:
    a = ground_truth("spot", "BTCUSDT", "1m", T0, T0 + 3_600_000, seed=5)
    b = History(5).candles("spot", "BTCUSDT", "1m", T0, T0 + 3_600_000)
    c = ground_truth("spot", "BTCUSDT", "1m", T0, T0 + 3_600_000, seed=6)
    assert a == b and len(a) == 60
    assert a != c
    assert [x.open_time for x in a] == list(range(T0, T0 + 3_600_000, 60_000))
    # A continuous price path: each candle opens where the previous one closed.
    assert all(x.close == y.open for x, y in itertools.pairwise(a) if x.trade_num)


def test_prices_are_plausible_per_symbol() -> None:
    day = ground_truth("spot", "BTCUSDT", "1d", T0, T0 + 365 * 86_400_000)
    assert 20_000 < min(c.low for c in day) < max(c.high for c in day) < 200_000
    xrp = ground_truth("usdt_futures", "XRPUSDT", "1h", T0, T0 + 30 * 86_400_000)
    assert all(0.1 < c.close < 3 for c in xrp)


def test_coin_m_volume_is_in_contracts_and_quote_in_base_asset() -> None:
    spec = HISTORY.spec("coin_futures", "BTCUSD_PERP")
    for candle in ground_truth("coin_futures", "BTCUSD_PERP", "5m", T0, T0 + 86_400_000):
        assert candle.volume == int(candle.volume)  # whole contracts
        # base volume = contracts × 100 USD / price, at a price within the candle
        low = candle.volume * spec.contract_size / candle.high
        high = candle.volume * spec.contract_size / candle.low
        assert low - 1e-8 <= candle.quote_volume <= high + 1e-8


def first_kline(path: Path) -> dict[str, object]:
    return json.loads(path.read_text().splitlines()[0])["data"]["k"]


@pytest.mark.skipif(not REALDATA.is_dir(), reason="shared/realdata not available")
@pytest.mark.parametrize(
    ("market", "symbol", "capture"),
    [
        ("spot", "BTCUSDT", "cryptofeed_spot_kline1m_ws_2021-04-04_btc_eth_dot.jsonl"),
        ("usdt_futures", "BTCUSDT", "gct_usdm_rest_btcusdt_5m_10rows_2026-03-25.json"),
        ("coin_futures", "BTCUSD_PERP", "gct_coinm_rest_btcusd_perp_5m_10rows_2026-03-25.json"),
    ],
)
def test_decimal_formats_match_real_captures(market: str, symbol: str, capture: str) -> None:
    text = (REALDATA / capture).read_text()
    if capture.endswith(".jsonl"):
        k = json.loads(next(line for line in text.splitlines() if '"BTCUSDT"' in line))["data"]["k"]
        real = [k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["V"], k["Q"]]
    else:
        row = json.loads(text)[0]
        real = [row[1], row[2], row[3], row[4], row[5], row[7], row[9], row[10]]
    ours = rest_row(HISTORY.spec(market, symbol), HISTORY.kline(HISTORY.spec(market, symbol), "5m", T0))
    mine = [ours[1], ours[2], ours[3], ours[4], ours[5], ours[7], ours[9], ours[10]]
    assert [decimals(s) for s in mine] == [decimals(s) for s in real]
    assert all(re.fullmatch(r"\d+(\.\d+)?", s) for s in mine)


def test_outages_and_listing_leave_no_candles() -> None:
    outage = Outage(T0 + 600_000, T0 + 1_800_000)
    history = History(1, outages=[outage])
    candles = history.candles("spot", "ETHUSDT", "1m", T0, T0 + 3_600_000)
    times = [c.open_time for c in candles]
    assert len(times) == 60 - 20
    assert not any(t in outage for t in times)
    # The hourly candle opens before the outage: it exists.
    assert [c.open_time for c in history.candles("spot", "ETHUSDT", "1h", T0, T0 + 3_600_000)] == [T0]
    spec = history.spec("usdt_futures", "BTCUSDT")
    listed = spec.listed_at
    before = history.candles("usdt_futures", "BTCUSDT", "1d", listed - 10 * 86_400_000, listed + 3 * 86_400_000)
    assert [c.open_time for c in before] == [listed, listed + 86_400_000, listed + 2 * 86_400_000]


@pytest.mark.parametrize("interval", ["1m", "1d", "1w", "1M"])
def test_newest_first_paging_agrees_with_oldest_first(interval: str) -> None:
    history = History(2, outages=[Outage(T0 + 86_400_000, T0 + 40 * 86_400_000)])
    spec = history.spec("spot", "BNBUSDT")
    days = 2 if interval == "1m" else 400  # enough for 50 candles and a stretch of the outage
    start, end = T0 - days * 86_400_000, T0 + days * 86_400_000
    forward = history.open_times(spec, interval, start, end)[-50:]
    backward = history.open_times_before(spec, interval, forward[-1], 50, floor=start)
    assert backward == forward
    assert all(is_open_time(interval, t) for t in forward)
    assert history.open_times(spec, interval, start, end, limit=7) == history.open_times(spec, interval, start, end)[:7]


def test_zero_trade_candles_look_like_binance_ones() -> None:
    history = History(0, universe=Universe(1))
    spec = history.spec("spot", "SYM0001USDT")
    klines = [history.kline(spec, "1m", T0 + i * 60_000) for i in range(2000)]
    empty = [k for k in klines if k.trades == 0]
    assert 0 < len(empty) < 150
    k = empty[0]
    assert k.open == k.high == k.low == k.close and k.volume == k.quote_volume == 0
    assert (k.first_id, k.last_id) == (-1, -1)


def test_format_units() -> None:
    assert format_units(123, 0) == "123"
    assert format_units(5, 3) == "0.005"
    assert format_units(123456, 2) == "1234.56"
    assert format_units(-5, 2) == "-0.05"


def test_exchange_info_shapes_per_market() -> None:
    universe = Universe(1)
    spot = json.loads(exchange_info("spot", universe.symbols("spot").values(), T0))
    assert spot["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    }
    btc = next(s for s in spot["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["status"] == "TRADING" and btc["filters"][0]["tickSize"] == "0.01000000"
    cm = json.loads(exchange_info("coin_futures", universe.symbols("coin_futures").values(), T0))
    perp = next(s for s in cm["symbols"] if s["symbol"] == "BTCUSD_PERP")
    assert perp["contractStatus"] == "TRADING" and perp["contractSize"] == 100 and "status" not in perp
    um = json.loads(exchange_info("usdt_futures", universe.symbols("usdt_futures").values(), T0))
    assert um["rateLimits"][0]["limit"] == 2400
    assert next(s for s in um["symbols"] if s["symbol"] == "BTCUSDT")["pricePrecision"] == 2


def test_one_month_candles_follow_the_calendar() -> None:
    candles = ground_truth("coin_futures", "BTCUSD_PERP", "1M", T0, T0 + 366 * 86_400_000)
    assert len(candles) == 12
    assert all(next_open_time("1M", a.open_time) == b.open_time for a, b in itertools.pairwise(candles))
