"""The exact parsers (``exact=True``): Binance's decimal strings kept digit for digit, checked like floats."""

from __future__ import annotations

import csv
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from realdata_support import REALDATA, csv_files, market_of, needs_realdata, rest_series

from trio_klines.core.parse import Candle, frame_parser, parse_frame, parse_rest_klines, parse_rest_row
from trio_klines.errors import MalformedMessage
from trio_klines.testing.wire import WireKline

pytestmark = pytest.mark.timeout(120)

T = 1_767_225_600_000  # 2026-01-01
VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base_asset_volume",
          "taker_buy_quote_asset_volume")  # fmt: skip


@st.composite
def klines(draw: st.DrawFn) -> WireKline:
    """A valid closed kline with decimal strings of Binance's shapes: fixed places per field, padded zeros."""
    places = draw(st.integers(0, 8))
    amount = st.integers(0, 10**14).map(lambda n: Decimal(n).scaleb(-places))
    low, o, c, high = sorted(draw(st.lists(amount, min_size=4, max_size=4)))
    o, c = draw(st.permutations([o, c]))
    volume, quote = draw(amount), draw(amount)
    taker, taker_quote = draw(st.integers(0, 100)), draw(st.integers(0, 100))

    def text(d: Decimal) -> str:
        return f"{d:.{places}f}"

    return WireKline("BTCUSDT", "1m", T, open=text(o), high=text(high), low=text(low), close=text(c),
                     volume=text(volume), quote_volume=text(quote), taker_base=text(volume * taker / 100),
                     taker_quote=text(quote * taker_quote / 100), trades=draw(st.integers(0, 10**6)))  # fmt: skip


def wire_values(k: WireKline) -> tuple[str, ...]:
    return (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.taker_base, k.taker_quote)


def values(c: Candle) -> tuple[object, ...]:
    return tuple(getattr(c, name) for name in VALUES)


@given(klines())
def test_exact_values_are_the_strings_sent_and_equal_the_float_parse(k: WireKline) -> None:
    frame = k.frame(event_time=T + 60_000)
    exact = frame_parser("spot", exact=True)(frame)
    floats = parse_frame(frame, "spot")
    assert exact is not None and floats is not None
    assert values(exact) == wire_values(k)
    assert tuple(float(v) for v in values(exact)) == values(floats)  # type: ignore[arg-type]
    assert (exact.open_time, exact.trade_num, exact.series) == (floats.open_time, floats.trade_num, floats.series)


@pytest.mark.parametrize("bad", ["1e3", " 1", "1 ", "-1", "+1", "inf", "NaN", "1_0", "\u0661", "1,5", "1..2", ".", ""])
def test_what_is_not_a_decimal_string_is_malformed(bad: str) -> None:
    frame = WireKline("BTCUSDT", "1m", T, open=bad).frame(event_time=T + 60_000)
    with pytest.raises(MalformedMessage, match="not a decimal string"):
        parse_frame(frame, "spot", exact=True)


def test_a_bare_leading_or_trailing_dot_is_taken_as_the_decimal_it_is() -> None:
    """Binance never sends them; they are unambiguous, and Arrow's decimal cast reads them so too."""
    candle = parse_frame(WireKline("BTCUSDT", "1m", T, low=".5", open="2.").frame(event_time=T + 60_000), "spot",
                         exact=True)  # fmt: skip
    assert candle is not None and (candle.low, candle.open) == (".5", "2.")


def test_numbers_instead_of_strings_out_of_order_or_out_of_range_are_malformed() -> None:
    frame = WireKline("BTCUSDT", "1m", T).frame(event_time=T + 60_000).replace('"o":"2"', '"o":2')
    with pytest.raises(MalformedMessage, match="Expected `str`"):
        parse_frame(frame, "spot", exact=True)
    assert parse_frame(frame, "spot") is not None  # the float parser takes a number
    with pytest.raises(MalformedMessage, match="prices out of order"):
        parse_frame(WireKline("BTCUSDT", "1m", T, low="2.5").frame(event_time=T + 60_000), "spot", exact=True)
    with pytest.raises(MalformedMessage, match="taker-buy volumes"):
        parse_frame(WireKline("BTCUSDT", "1m", T, taker_base="6").frame(event_time=T + 60_000), "spot", exact=True)
    with pytest.raises(MalformedMessage, match="value over"):
        parse_frame(WireKline("BTCUSDT", "1m", T, volume="9" * 400).frame(event_time=T + 60_000), "spot", exact=True)


def test_open_updates_and_control_replies_are_none_in_exact_mode_too() -> None:
    assert parse_frame(WireKline("BTCUSDT", "1m", T, closed=False).frame(event_time=T + 1), "spot", exact=True) is None
    assert parse_frame('{"result": null, "id": 1}', "spot", exact=True) is None


def test_a_rest_row_in_exact_mode() -> None:
    row = [T, "2.10", "3.000", "1", "2", "5", T + 59_999, "10", 9, "1", "2", "0"]
    candle = parse_rest_row(row, "spot", "BTCUSDT", "1m", exact=True)
    assert values(candle) == ("2.10", "3.000", "1", "2", "5", "10", "1", "2")
    body = json.dumps([row]).encode()
    assert parse_rest_klines(body, "spot", "BTCUSDT", "1m", exact=True) == [candle]
    with pytest.raises(MalformedMessage, match="Expected `str`"):
        parse_rest_row([T, 2.1, *row[2:]], "spot", "BTCUSDT", "1m", exact=True)


# --- every real capture ------------------------------------------------------------------------


def check_pair(exact: Candle | None, floats: Candle | None, sent: tuple[str, ...] | None) -> int:
    """The exact and float parses of one payload agree, the exact one holding ``sent``; 1 if a candle."""
    assert (exact is None) == (floats is None) == (sent is None)
    if exact is None or floats is None or sent is None:
        return 0
    assert values(exact) == sent
    assert tuple(float(v) for v in values(exact)) == values(floats)  # type: ignore[arg-type]
    assert [Decimal(v) for v in values(exact)] == [Decimal(s) for s in sent]  # type: ignore[arg-type]
    return 1


@needs_realdata
def test_every_real_capture_parses_exactly() -> None:
    candles = 0
    for path in sorted(REALDATA.glob("*.jsonl")) + sorted(REALDATA.glob("*_ws_*.json")):
        market = market_of(path.name)
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                k = json.loads(line).get("data", json.loads(line))["k"]
                sent = tuple(k[n] for n in "ohlcvqVQ") if k["x"] else None
                candles += check_pair(parse_frame(line, market, exact=True), parse_frame(line, market), sent)
    for path in sorted(p for p in REALDATA.glob("*_rest_*.json") if "error" not in p.name):
        market, symbol, interval = rest_series(path)
        body = path.read_bytes()
        exact = parse_rest_klines(body, market, symbol, interval, exact=True)
        floats = parse_rest_klines(body, market, symbol, interval)
        rows = json.loads(body)
        assert len(exact) == len(floats) == len(rows)
        for e, f, row in zip(exact, floats, rows, strict=True):
            candles += check_pair(e, f, tuple(row[i] for i in (1, 2, 3, 4, 5, 7, 9, 10)))
    for path in csv_files():
        symbol = "ADABTC" if "adabtc" in path.name else "BTCUSDT"
        interval = "1h" if "_1h_" in path.name else "1m"
        with path.open(newline="", encoding="utf-8") as rows:
            for row in csv.reader(rows):
                row_ = [int(row[0]), *row[1:6], int(row[6]), row[7], int(row[8]), *row[9:]]
                e = parse_rest_row(row_, market_of(path.name), symbol, interval, exact=True)
                f = parse_rest_row(row_, market_of(path.name), symbol, interval)
                candles += check_pair(e, f, tuple(row[i] for i in (1, 2, 3, 4, 5, 7, 9, 10)))
    assert candles > 18_000

