"""The kline parser: round trips, mutations, control frames and errors, with Hypothesis."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trio_klines.core.markets import MARKETS, close_time, floor_open_time, is_open_time
from trio_klines.core.parse import Candle, frame_parser, parse_frame, parse_rest_klines, parse_rest_row
from trio_klines.core.validity import CLOCK_TOLERANCE, MAX_OPEN_TIME, candle_problem
from trio_klines.errors import BinanceError, ConfigError, MalformedMessage, ServerShutdown
from trio_klines.testing import WireKline
from trio_klines.testing.strategies import KlineCase, frames_of, rest_rows, wire_klines

# --- round trips ------------------------------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_closed_candles_round_trip_exactly(data: st.DataObject) -> None:
    market, kline, candle = data.draw(wire_klines())
    frame = data.draw(frames_of(kline))
    assert parse_frame(frame, market) == candle
    assert frame_parser(MARKETS[market])(frame) == candle


@given(st.data())
def test_open_candles_give_none(data: st.DataObject) -> None:
    market, kline, _ = data.draw(wire_klines(closed=False))
    assert parse_frame(data.draw(frames_of(kline)), market) is None


@settings(max_examples=200)
@given(rest_rows())
def test_rest_rows_round_trip_exactly(generated: tuple[list[object], KlineCase]) -> None:
    row, (_, _, candle) = generated
    assert parse_rest_row(row, candle.market, candle.symbol.lower(), candle.interval) == candle
    body = json.dumps([row, row])
    assert parse_rest_klines(body, candle.market, candle.symbol, candle.interval) == [candle, candle]


def test_candle_derived_times() -> None:
    c = Candle("spot", "BTCUSDT", "1M", 1596240000000, 1, 1, 1, 1, 0, 0, 0, 0, 0)
    assert c.end_time == 1598918400000
    assert c.candle_begin_time.isoformat() == "2020-08-01T00:00:00+00:00"
    assert c.series == ("spot", "BTCUSDT", "1M")
    assert hash(c) == hash(msgspec.structs.replace(c))


# --- mutations --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
odd_numbers = st.sampled_from(
    ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e400", "-1.5", "-0", "", " 1", "1_0", "0x1F", "1e-400"]
) | st.sampled_from([10**30, -(10**30), 2**64, -1, 1e308, -0.0, 1.5])


def check_outcome(frame: str | bytes, market: str) -> None:
    """A mutated frame parses to a sane candle, to None, or raises one of the documented errors."""
    try:
        candle = parse_frame(frame, market)
    except (MalformedMessage, BinanceError) as exc:
        assert str(exc)
        return
    if candle is not None:
        assert candle_problem(candle) is None
        values = [getattr(candle, f) for f in Candle.__struct_fields__[4:]]
        assert all(math.isfinite(v) and v >= 0 for v in values)
        assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
        assert is_open_time(candle.interval, candle.open_time) or candle.interval == "3d"
        assert candle.taker_buy_base_asset_volume <= candle.volume


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_frames_raise_only_documented_errors(data: st.DataObject) -> None:
    _, kline, candle = data.draw(wire_klines(closed=data.draw(st.booleans())))
    event: dict[str, Any] = kline.event()
    k = event["k"]
    payload: dict[str, Any] = {"stream": "x@kline_1m", "data": event} if data.draw(st.booleans()) else event
    target = data.draw(st.sampled_from(["k", "event", "top"]))
    obj = k if target == "k" else event if target == "event" else payload
    key = data.draw(st.sampled_from(sorted(obj)))
    action = data.draw(st.sampled_from(["drop", "retype", "odd"]))
    if action == "drop":
        del obj[key]
    elif action == "retype":
        obj[key] = data.draw(json_values)
    else:
        obj[key] = data.draw(odd_numbers)
    text = json.dumps(payload)
    check_outcome(text, candle.market)
    cut = data.draw(st.integers(0, len(text)))
    check_outcome(text[:cut], candle.market)
    check_outcome(text.encode()[:cut], candle.market)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_documented_errors(blob: bytes) -> None:
    check_outcome(blob, "spot")


@given(json_values)
def test_random_json_raises_only_documented_errors(value: object) -> None:
    check_outcome(json.dumps(value), "usdt_futures")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("o", "NaN", ">= 0.0"),
        ("h", "Infinity", "<= 1e+300"),
        ("v", "-1.5", ">= 0.0"),
        ("c", "1e400", "out of range"),
        ("t", 1_500_000_000_001, "not a 1m boundary"),
        ("T", 1_499_999_999_999, "close time"),
        ("i", "1s", "not a usdt_futures interval"),
        ("s", "BTC/USDT", "invalid symbol"),
        ("h", "0.5", "prices out of order"),
        ("V", "99", "taker-buy volumes"),
        ("n", True, "Expected `int`, got `bool`"),
        ("x", None, "Expected `bool`, got `null`"),
    ],
)
def test_specific_bad_values_say_why(field: str, value: object, reason: str) -> None:
    t = 1_500_000_000_000 - 1_500_000_000_000 % 60_000
    ones = {"open": "1", "high": "1", "low": "1", "close": "1", "taker_base": "1", "taker_quote": "1"}
    event = WireKline("BTCUSDT", "1m", t, volume="2", quote_volume="2", trades=3, **ones).event()
    event["k"][field] = value
    with pytest.raises(MalformedMessage, match=re.escape(reason)) as info:
        parse_frame(json.dumps(event), "usdt_futures")
    assert info.value.reason and info.value.frame


# --- control frames, events and errors --------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"result":null,"id":1}',
        '{"result":["btcusdt@kline_1m"],"id":3}',
        '{"result":true,"id":2}',
        '{"e":"24hrTicker","E":1,"s":"BTCUSDT","p":"0.1"}',
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","p":"1","q":"1"}}',
        b'{"e":"continuous_kline","E":1,"ps":"BTCUSDT","ct":"PERPETUAL","k":{"t":60000,"T":119999,"i":"1m",'
        b'"f":1,"L":2,"o":"1","c":"1","h":"1","l":"1","v":"1","n":1,"x":true,"q":"1","V":"1","Q":"1","B":"0"}}',
    ],
)
def test_control_replies_and_other_events_give_none(frame: str | bytes) -> None:
    assert parse_frame(frame, "spot") is None


@pytest.mark.parametrize(
    ("frame", "code", "msg", "request_id"),
    [
        ('{"code":-1121,"msg":"Invalid symbol."}', -1121, "Invalid symbol.", None),
        (
            '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":7}',
            2,
            "Invalid request: invalid stream",
            7,
        ),
        ('{"code":0,"msg":"Unknown property","id":5}', 0, "Unknown property", None),
    ],
)
def test_error_payloads_raise_binance_error(frame: str, code: int, msg: str, request_id: object) -> None:
    with pytest.raises(BinanceError) as info:
        parse_frame(frame, "coin_futures")
    assert (info.value.code, info.value.msg, info.value.request_id) == (code, msg, request_id)
    assert str(code) in str(info.value)


@pytest.mark.parametrize(
    "frame",
    [
        '{"e":"serverShutdown","E":1778000000000}',
        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1778000000000}}',
        '{"stream":"!serverShutdown","data":{"E":1778000000000}}',
    ],
)
def test_server_shutdown_is_reported_distinctly(frame: str) -> None:
    with pytest.raises(ServerShutdown) as info:
        parse_frame(frame, "spot")
    assert info.value.event_time == 1778000000000
    assert not isinstance(info.value, MalformedMessage | BinanceError)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{}", "neither a kline event"),
        ('{"e":"kline","E":1}', "without 'k'"),
        ('{"stream":"btcusdt@kline_1m","data":{"E":1}}', "without 'e'"),
        ('{"e":"kline","E":1,"k":{"t":0}}', "Object missing required field"),
        ("[1,2]", "Expected `object`"),
        ("not json", "malformed"),
        (b"\xff\xfe\x00", "malformed"),
        (
            '{"e":"kline","k":{"t":60000,"T":119999,"i":"1m","o":"1","c":"1","h":"1","l":"1","v":"1","n":1,'
            '"x":true,"q":"1","V":"1","Q":"1"}}',
            "without a symbol",
        ),
    ],
)
def test_malformed_frames_say_why(frame: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_frame(frame, "spot")


def test_frames_that_are_not_text_are_malformed() -> None:
    with pytest.raises(MalformedMessage, match="not a JSON text frame"):
        parse_frame(12345, "spot")  # type: ignore[arg-type]


def test_unknown_market_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown market 'margin'"):
        parse_frame('{"result":null,"id":1}', "margin")
    with pytest.raises(ConfigError):
        parse_rest_row([0] * 12, "spot", "BTC/USDT", "1m")
    with pytest.raises(ConfigError):
        parse_rest_row([0] * 12, "usdt_futures", "BTCUSDT", "1s")


# --- times: microseconds, halts, calendar intervals -------------------------------------------


def kline_frame(open_time: int, close: int, interval: str, symbol: str = "BTCUSDT") -> str:
    """A raw frame of a closed candle; ``close`` is its close time (``T``)."""
    return WireKline(symbol, interval, open_time, close).frame(combined=False)


def test_microsecond_times_become_milliseconds() -> None:
    candle = parse_frame(kline_frame(1735689600000000, 1735689659999999, "1m"), "spot")
    assert candle is not None and candle.open_time == 1735689600000


def test_a_candle_closed_early_at_a_halt_is_kept() -> None:
    # 2023-03-24 12:39 spot BTCUSDT closed at 12:39:41.646 when trading halted.
    candle = parse_frame(kline_frame(1679661540000, 1679661581646, "1m"), "spot")
    assert candle is not None and candle.open_time == 1679661540000


@pytest.mark.parametrize(
    ("open_time", "interval", "ok"),
    [
        (1596240000000, "1M", True),  # 2020-08-01
        (1596326400000, "1M", False),  # 2020-08-02
        (1499040000000, "1w", True),  # Monday
        (1499126400000, "1w", False),  # Tuesday
        # Binance does not document 3d's alignment; parser and store share one grid (core.validity): multiples
        # of 3 days since the epoch. Off it, a 3d candle used to pass the parser and make the store refuse
        # the whole batch it was in.
        (1498953600000, "3d", True),
        (1499126400000, "3d", False),
    ],
)
def test_calendar_intervals_check_alignment(open_time: int, interval: str, ok: bool) -> None:
    frame = kline_frame(open_time, close_time(interval, open_time), interval)
    if ok:
        candle = parse_frame(frame, "coin_futures")
        assert candle is not None and candle.open_time == open_time
    else:
        with pytest.raises(MalformedMessage, match="boundary"):
            parse_frame(frame, "coin_futures")


def test_symbols_are_upper_cased() -> None:
    candle = parse_frame(kline_frame(60_000, 119_999, "1m", symbol="btcusd_perp"), "coin_futures")
    assert candle is not None and candle.symbol == "BTCUSD_PERP"


# --- REST bodies ------------------------------------------------------------------------------

ROWS = [
    [1588740120000, "9010.0", "9020.0", "9000.0", "9015.0", "1.5", 1588740179999, "13520.0", 12, "0.5", "4500.0", "0"],
    [1588740180000, "9015.0", "9030.0", "9010.0", "9025.0", "2.5", 1588740239999, "22550.0", 20, "1.5", "13500.0", "0"],
]


def test_rest_body_drops_the_still_open_candle() -> None:
    body = json.dumps(ROWS)
    candles = parse_rest_klines(body, "spot", "BTCUSDT", "1m")
    assert [c.open_time for c in candles] == [1588740120000, 1588740180000]
    # At 1588740200000 the second candle is still open: Binance includes it, we drop it.
    assert parse_rest_klines(body, "spot", "BTCUSDT", "1m", closed_before=1588740200000) == candles[:1]
    assert parse_rest_klines(body, "spot", "BTCUSDT", "1m", closed_before=1588740240000) == candles


def test_rest_error_body_raises_binance_error() -> None:
    with pytest.raises(BinanceError) as info:
        parse_rest_klines(b'{"code":-4088,"msg":"Maximum time interval is 200 days."}', "coin_futures", "X", "1d")
    assert info.value.code == -4088


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{}", "Object missing required field `code`"),
        ("[[1,2]]", "12 elements"),
        ('[[1,"a","b","c","d","e",2,"f",3,"g","h","0"]]', "Expected `float`"),
        ("[", "truncated"),
        (b"\x00", "malformed"),
    ],
)
def test_rest_malformed_bodies(body: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_rest_klines(body, "spot", "BTCUSDT", "1m")


@settings(max_examples=300)
@given(st.data())
def test_mutated_rest_rows_raise_only_malformed(data: st.DataObject) -> None:
    row: list[Any]
    row, (_, _, candle) = data.draw(rest_rows())
    index = data.draw(st.integers(0, 11))
    action = data.draw(st.sampled_from(["drop", "retype", "odd", "truncate"]))
    if action == "drop":
        del row[index]
    elif action == "retype":
        row[index] = data.draw(json_values)
    elif action == "odd":
        row[index] = data.draw(odd_numbers)
    else:
        row = row[:index]
    try:
        parsed = parse_rest_row(row, candle.market, candle.symbol, candle.interval)
    except MalformedMessage:
        return
    assume(parsed is not None)
    assert candle_problem(parsed) is None
    assert all(math.isfinite(getattr(parsed, f)) for f in ("open", "high", "low", "close", "volume"))
    assert parsed.low <= parsed.high


# --- one definition of a valid candle (issue 13: items 2, 4, 5, 8) ------------------------------

FIELD_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1e6),
    st.sampled_from([0.0, -0.0, 1e300, 1.0000000000000001e300, 1.7976931348623157e308, -1e-300]),
)
COUNTS = st.one_of(st.integers(0, 1000), st.sampled_from([-1, 0, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]))


@st.composite
def candle_fields(draw: st.DrawFn) -> Candle:
    """A candle of any values, in range or not, on its grid or not, opening before 10**14 (wire ms)."""
    market = draw(st.sampled_from(sorted(MARKETS)))
    interval = draw(st.sampled_from(MARKETS[market].intervals))
    t = draw(st.integers(0, 10**14 - 10**11))
    if draw(st.booleans()):
        t = floor_open_time(interval, t)
    o, h, lo, c, v, q, bv, bq = (draw(FIELD_VALUES) for _ in range(8))
    if draw(st.booleans()):  # often a plausible candle, so that both outcomes are common
        lo, o, c, h = sorted([abs(lo), abs(o), abs(c), abs(h)], key=lambda x: (math.isnan(x), x))
        bv, v = sorted([abs(bv), abs(v)], key=lambda x: (math.isnan(x), x))
        bq, q = sorted([abs(bq), abs(q)], key=lambda x: (math.isnan(x), x))
    return Candle(market, "BTCUSDT", interval, t, o, h, lo, c, v, q, draw(COUNTS), bv, bq)


def wire_of(c: Candle) -> WireKline:
    values = {"open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume,
              "quote_volume": c.quote_volume, "taker_base": c.taker_buy_base_asset_volume,
              "taker_quote": c.taker_buy_quote_asset_volume}  # fmt: skip
    return WireKline(c.symbol, c.interval, c.open_time, trades=c.trade_num, **{k: repr(v) for k, v in values.items()})


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(candle_fields())
def test_the_parser_accepts_exactly_the_valid_candles(c: Candle) -> None:
    """Both paths, against core.validity: the parser lets through what the store takes, nothing else."""
    problem = candle_problem(c)
    kline = wire_of(c)
    row = json.loads(json.dumps(kline.rest_row()))
    if problem is None:
        assert parse_frame(kline.frame(), c.market) == c
        assert parse_rest_row(row, c.market, c.symbol, c.interval) == c
    else:
        with pytest.raises(MalformedMessage):
            parse_frame(kline.frame(), c.market)
        with pytest.raises(MalformedMessage):
            parse_rest_row(row, c.market, c.symbol, c.interval)


@pytest.mark.parametrize("trades", [2**63, 2**64, 10**30])
def test_a_trade_count_beyond_int64_is_malformed_on_both_paths(trades: int) -> None:
    kline = WireKline("BTCUSDT", "1m", 1_700_000_040_000, trades=trades)
    with pytest.raises(MalformedMessage, match=r"<= 9223372036854775807|out of range"):
        parse_frame(kline.frame(), "spot")
    with pytest.raises(MalformedMessage):
        parse_rest_klines(json.dumps([kline.rest_row()]), "spot", "BTCUSDT", "1m")
    assert parse_frame(WireKline("BTCUSDT", "1m", 1_700_000_040_000, trades=2**63 - 1).frame(), "spot") is not None


def test_a_microsecond_open_time_past_the_stores_range_is_malformed() -> None:
    t = MAX_OPEN_TIME * 1000  # year 10000 in µs: the decoder's bound
    kline = WireKline("BTCUSDT", "1m", t, t + 59_999_999)
    with pytest.raises(MalformedMessage, match="<"):
        parse_frame(kline.frame(event_time=t + 60_000_000), "spot")
    with pytest.raises(MalformedMessage):
        parse_rest_klines(json.dumps([kline.rest_row()]), "spot", "BTCUSDT", "1m")


DEEP = 100_000


@pytest.mark.parametrize(
    "frame",
    [
        "[" * DEEP,
        "[" * DEEP + "]" * DEEP,
        '{"result":' + "[" * DEEP + "]" * DEEP + ',"id":1}',
        '{"result":null,"id":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}",
        '{"stream":"btcusdt@kline_1m","data":' + "[" * DEEP,
        ('{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":' + "[" * DEEP).encode(),
        '{"x":' + "[" * DEEP + "]" * DEEP + "}",
    ],
)
def test_deeply_nested_json_is_malformed_not_a_recursion_error(frame: str | bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_frame(frame, "spot")


@pytest.mark.parametrize(
    "body", ["[" * DEEP, "[" * DEEP + "]" * DEEP, "[[" + "[" * DEEP + "]" * DEEP + "]]", '{"code":' + "[" * DEEP]
)
def test_deeply_nested_rest_bodies_are_malformed(body: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_rest_klines(body, "spot", "BTCUSDT", "1m")
    nested: list[Any] = []
    for _ in range(DEEP // 10):
        nested = [nested]
    with pytest.raises(MalformedMessage):
        parse_rest_row(nested, "spot", "BTCUSDT", "1m")


# --- a candle from the future -------------------------------------------------------------------

T0 = 1_700_000_040_000  # a 1m open time


@pytest.mark.parametrize(
    ("event_time", "ok"),
    [
        (T0 + 60_000, True),  # just after the close, as Binance sends it
        (T0 + 60_000 + 2_400, True),  # the latest E after T seen in real frames
        (T0 + 59_999 - CLOCK_TOLERANCE, True),  # E before T, within the tolerance
        (T0 + 59_998 - CLOCK_TOLERANCE, False),
        (T0 - 86_400_000, False),  # a day ahead of the exchange's clock
    ],
)
def test_a_closed_candle_must_close_by_the_exchanges_clock(event_time: int, ok: bool) -> None:
    frame = WireKline("BTCUSDT", "1m", T0).frame(event_time=event_time)
    if ok:
        assert parse_frame(frame, "usdt_futures") is not None
    else:
        with pytest.raises(MalformedMessage, match="from the future"):
            parse_frame(frame, "usdt_futures")


def test_a_candle_in_year_3000_is_malformed() -> None:
    t = 32_503_680_000_000  # 3000-01-01
    frame = WireKline("BTCUSDT", "1m", t).frame(event_time=T0 + 60_000)
    with pytest.raises(MalformedMessage, match="from the future"):
        parse_frame(frame, "spot")
    # The same on REST: the backfiller passes the exchange's /time as closed_before.
    body = json.dumps([WireKline("BTCUSDT", "1m", T0).rest_row(), WireKline("BTCUSDT", "1m", t).rest_row()])
    with pytest.raises(MalformedMessage, match="from the future"):
        parse_rest_klines(body, "spot", "BTCUSDT", "1m", closed_before=T0 + 60_000)
    assert len(parse_rest_klines(body, "spot", "BTCUSDT", "1m")) == 2  # no clock given: not checked


def test_rest_rows_still_open_or_just_opening_are_dropped_not_malformed() -> None:
    rows = [WireKline("BTCUSDT", "1m", T0 + i * 60_000).rest_row() for i in range(3)]
    now = T0 + 60_000 + 500  # the second candle opened 0.5 s ago; the third opens in 59.5 s
    with pytest.raises(MalformedMessage, match="from the future"):
        parse_rest_klines(json.dumps(rows), "spot", "BTCUSDT", "1m", closed_before=now)
    candles = parse_rest_klines(json.dumps(rows[:2]), "spot", "BTCUSDT", "1m", closed_before=now)
    assert [c.open_time for c in candles] == [T0]
    early = parse_rest_klines(json.dumps(rows), "spot", "BTCUSDT", "1m", closed_before=T0 + 120_000 - CLOCK_TOLERANCE)
    assert [c.open_time for c in early] == [T0]  # the third opens within the tolerance: still open, dropped


def test_a_closed_kline_without_an_event_time_is_malformed() -> None:
    event = WireKline("BTCUSDT", "1m", T0).event()
    del event["E"]
    with pytest.raises(MalformedMessage, match="without the event time 'E'"):
        parse_frame(json.dumps(event), "spot")
    event["k"]["x"] = False
    assert parse_frame(json.dumps(event), "spot") is None  # an open candle needs no clock


def test_microsecond_frames_are_checked_against_a_microsecond_clock() -> None:
    t = T0 * 1000
    kline = WireKline("BTCUSDT", "1m", t, t + 59_999_999)
    assert parse_frame(kline.frame(event_time=t + 60_000_000), "spot") is not None
    assert parse_frame(kline.frame(event_time=T0 + 60_000), "spot") is not None  # a ms E: compared in ms
    with pytest.raises(MalformedMessage, match="from the future"):
        parse_frame(kline.frame(event_time=t), "spot")
    with pytest.raises(MalformedMessage, match="whole millisecond"):
        parse_frame(WireKline("BTCUSDT", "1m", t + 1, t + 59_999_999).frame(), "spot")
