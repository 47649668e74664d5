"""The market table, interval arithmetic, validation and connection planning."""

from __future__ import annotations

import calendar
import itertools
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.markets import (
    DAY,
    DEFAULT_MAX_URL_LENGTH,
    INTERVALS,
    MARKETS,
    apply_endpoints,
    candle_end_time,
    close_time,
    combined_stream_url,
    count_open_times,
    floor_open_time,
    get_market,
    interval_ms,
    is_open_time,
    iter_open_times,
    max_interval_ms,
    next_open_time,
    normalize_symbol,
    open_time_index,
    plan_connections,
    raw_stream_url,
    series,
    stream_name,
    url_streams,
    validate_interval,
)
from trio_klines.errors import ConfigError

# Up to the year 2100, in ms.
times = st.integers(min_value=0, max_value=4_102_444_800_000)
interval_names = st.sampled_from(list(INTERVALS))


def utc(t: int) -> datetime:
    return datetime.fromtimestamp(t / 1000, UTC)


# --- the table --------------------------------------------------------------------------------


def test_market_names_are_the_three_markets() -> None:
    assert tuple(MARKETS) == ("spot", "usdt_futures", "coin_futures")


def test_urls_follow_the_2026_routing() -> None:
    # USDⓈ-M klines are served only under /market since 2026-04-23; COIN-M has no route.
    assert MARKETS["usdt_futures"].ws_url == "wss://fstream.binance.com/market"
    assert MARKETS["coin_futures"].ws_url == "wss://dstream.binance.com"
    assert MARKETS["spot"].ws_url == "wss://stream.binance.com:9443"
    assert MARKETS["spot"].rest_url + MARKETS["spot"].klines_path == "https://api.binance.com/api/v3/klines"
    assert MARKETS["usdt_futures"].rest_url + MARKETS["usdt_futures"].klines_path == (
        "https://fapi.binance.com/fapi/v1/klines"
    )
    assert MARKETS["coin_futures"].rest_url + MARKETS["coin_futures"].klines_path == (
        "https://dapi.binance.com/dapi/v1/klines"
    )


def test_limits_and_weight_budgets() -> None:
    spot, um, cm = MARKETS["spot"], MARKETS["usdt_futures"], MARKETS["coin_futures"]
    assert (spot.max_klines_per_request, um.max_klines_per_request, cm.max_klines_per_request) == (1000, 1500, 1500)
    assert spot.weight_limit_per_minute == 6000
    # One shared USDⓈ-M + COIN-M budget since 2026-06-30.
    assert um.weight_pool == cm.weight_pool != spot.weight_pool
    assert um.weight_limit_per_minute == cm.weight_limit_per_minute == 2400
    assert spot.max_streams_per_connection == 1024
    assert um.max_streams_per_connection == cm.max_streams_per_connection == 200


@pytest.mark.parametrize(
    ("limit", "weight"), [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)]
)
def test_futures_kline_weight_by_limit(limit: int, weight: int) -> None:
    assert MARKETS["usdt_futures"].kline_weight(limit) == weight
    assert MARKETS["coin_futures"].kline_weight(limit) == weight
    assert MARKETS["spot"].kline_weight(limit) == 2


def test_one_second_candles_only_on_spot() -> None:
    assert "1s" in MARKETS["spot"].intervals
    assert "1s" not in MARKETS["usdt_futures"].intervals
    assert "1s" not in MARKETS["coin_futures"].intervals
    assert MARKETS["spot"].update_period_for("1s") == 1000
    assert MARKETS["spot"].update_period_for("1m") == 2000
    assert MARKETS["usdt_futures"].update_period_for("1m") == 250


# --- validation -------------------------------------------------------------------------------


def test_unknown_market_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'margin'.*spot, usdt_futures, coin_futures"):
        get_market("margin")
    with pytest.raises(ConfigError):
        get_market(None)


def test_invalid_interval_quotes_it_and_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'1s' for usdt_futures; choose one of: 1m, 3m"):
        validate_interval("usdt_futures", "1s")
    with pytest.raises(ConfigError, match=r"'1H'"):
        validate_interval(MARKETS["spot"], "1H")
    assert validate_interval("spot", "1M") == "1M"


@given(st.from_regex(r"[A-Za-z0-9_]{1,32}", fullmatch=True))
def test_symbols_of_the_allowed_shape_are_upper_cased(symbol: str) -> None:
    assert normalize_symbol(symbol) == symbol.upper()


@given(st.text(max_size=40))
def test_anything_else_is_refused(text: str) -> None:
    if re.fullmatch(r"[A-Za-z0-9_]{1,32}", text):
        assert normalize_symbol(text) == text.upper()
    else:
        with pytest.raises(ConfigError, match="invalid symbol"):
            normalize_symbol(text)


@pytest.mark.parametrize("bad", ["", "../etc", "BTC/USDT", "BTC USDT", "A" * 33, "ſBTC", "BTC\x00", 5, None])
def test_symbols_that_could_escape_a_path_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        normalize_symbol(bad)


def test_series_validates_every_part() -> None:
    assert series("spot", "btcusdt", "1m") == ("spot", "BTCUSDT", "1m")
    assert str(series("coin_futures", "btcusd_perp", "1h")) == "coin_futures BTCUSD_PERP-1h"
    with pytest.raises(ConfigError):
        series("spot", "BTC-USDT", "1m")
    with pytest.raises(ConfigError):
        series("coin_futures", "BTCUSD_PERP", "1s")


# --- interval arithmetic ----------------------------------------------------------------------


@given(interval_names, times)
def test_floor_contains_the_instant(interval: str, t: int) -> None:
    start = floor_open_time(interval, t)
    end = next_open_time(interval, start)
    assert start <= t < end
    assert is_open_time(interval, start)
    assert candle_end_time(interval, start) == end
    assert close_time(interval, start) == end - 1
    assert end - start <= max_interval_ms(interval)


@given(interval_names, times, st.integers(min_value=0, max_value=50))
def test_open_time_index_numbers_consecutive_candles_consecutively(interval: str, t: int, steps: int) -> None:
    start = floor_open_time(interval, t)
    later = start
    for _ in range(steps):
        later = next_open_time(interval, later)
    assert open_time_index(interval, later) - open_time_index(interval, start) == steps


@given(st.sampled_from([i for i, n in INTERVALS.items() if n]), times)
def test_fixed_intervals_step_by_their_length(interval: str, t: int) -> None:
    start = floor_open_time(interval, t)
    assert next_open_time(interval, start) - start == interval_ms(interval)


@given(times)
def test_weeks_open_on_monday(t: int) -> None:
    start = utc(floor_open_time("1w", t))
    assert (start.weekday(), start.hour, start.minute, start.second) == (0, 0, 0, 0)


@given(st.integers(min_value=1970, max_value=2099), st.integers(min_value=1, max_value=12))
def test_months_are_calendar_months(year: int, month: int) -> None:
    start = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    end = next_open_time("1M", start)
    assert (end - start) // DAY == calendar.monthrange(year, month)[1]
    assert utc(end).day == 1
    # Twelve steps land on the same month a year later, across the year boundary.
    t = start
    for _ in range(12):
        t = next_open_time("1M", t)
    assert utc(t) == datetime(year + 1, month, 1, tzinfo=UTC)


def test_month_known_values() -> None:
    # Real COIN-M 1M candles: 2020-08-01 closes 2020-08-31T23:59:59.999; February of a leap year.
    assert close_time("1M", 1596240000000) == 1598918399999
    assert next_open_time("1M", int(datetime(2024, 2, 1, tzinfo=UTC).timestamp() * 1000)) == int(
        datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000
    )
    assert next_open_time("1M", int(datetime(2025, 12, 1, tzinfo=UTC).timestamp() * 1000)) == int(
        datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000
    )
    # Binance's own 1w example: opens Monday 2017-07-03, closes Sunday 2017-07-09 23:59:59.999.
    assert close_time("1w", 1499040000000) == 1499644799999


@settings(max_examples=200)
@given(interval_names, times, st.integers(min_value=0, max_value=400 * DAY))
def test_iterate_and_count_agree(interval: str, start: int, span: int) -> None:
    if INTERVALS[interval] is not None:
        span = min(span, 300 * INTERVALS[interval])
    opens = list(iter_open_times(interval, start, start + span))
    assert len(opens) == count_open_times(interval, start, start + span)
    assert all(start <= t < start + span and is_open_time(interval, t) for t in opens)
    assert opens == sorted(set(opens))
    first = floor_open_time(interval, start)
    if first < start:
        first = next_open_time(interval, first)
    if first < start + span:
        assert opens[0] == first
    else:
        assert opens == []


def test_interval_ms_refuses_the_month() -> None:
    with pytest.raises(ConfigError, match="no fixed length"):
        interval_ms("1M")
    with pytest.raises(ConfigError, match="unknown interval"):
        interval_ms("2d")


# --- streams, URLs and connection plans -------------------------------------------------------


def test_stream_names_and_urls() -> None:
    assert stream_name("BTCUSDT", "1m") == "btcusdt@kline_1m"
    assert stream_name("btcusdt", "1M") == "btcusdt@kline_1M"
    um = MARKETS["usdt_futures"]
    assert combined_stream_url(um, ["btcusdt@kline_1m", "ethusdt@kline_1m"]) == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
    )
    assert raw_stream_url(MARKETS["coin_futures"], "btcusd_perp@kline_1m") == (
        "wss://dstream.binance.com/ws/btcusd_perp@kline_1m"
    )
    with pytest.raises(ConfigError):
        stream_name("../x", "1m")


stream_lists = st.lists(
    st.builds(stream_name, st.from_regex(r"[A-Z0-9_]{1,32}", fullmatch=True), interval_names), max_size=2500
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(MARKETS)), stream_lists, st.integers(min_value=200, max_value=20_000))
def test_connection_plans_keep_every_stream_once_within_limits(market: str, streams: list[str], url_max: int) -> None:
    m = MARKETS[market]
    groups = plan_connections(m, streams, max_url_length=url_max)
    flat = [s for g in groups for s in g]
    assert flat == list(dict.fromkeys(streams))  # nothing dropped, nothing repeated, order kept
    for group in groups:
        assert 0 < len(group) <= m.max_streams_per_connection
        assert len(combined_stream_url(m, group)) <= url_max
    # Greedy packing: a group only closes when the next stream would not fit.
    for group, following in itertools.pairwise(groups):
        assert len(group) == m.max_streams_per_connection or (
            len(combined_stream_url(m, (*group, following[0]))) > url_max
        )


def test_connection_plan_for_many_spot_streams() -> None:
    streams = [stream_name(f"SYM{i}USDT", "1m") for i in range(3000)]
    groups = plan_connections(MARKETS["spot"], streams)
    assert all(len(combined_stream_url(MARKETS["spot"], g)) <= DEFAULT_MAX_URL_LENGTH for g in groups)
    assert sum(map(len, groups)) == 3000
    um_groups = plan_connections(MARKETS["usdt_futures"], [stream_name(f"S{i}", "1m") for i in range(401)])
    assert [len(g) for g in um_groups] == [200, 200, 1]


def test_a_stream_too_long_for_any_url_is_an_error() -> None:
    with pytest.raises(ConfigError, match="longer than 60"):
        plan_connections(MARKETS["spot"], ["a" * 40 + "@kline_1m"], max_url_length=60)
    assert plan_connections(MARKETS["spot"], []) == []


# --- endpoint overrides -----------------------------------------------------------------------


def test_apply_endpoints_overrides_urls() -> None:
    markets = apply_endpoints(
        {
            "usdt_futures": {"ws": "ws://127.0.0.1:8080/fapi/market/", "rest": "http://127.0.0.1:8080/fapi"},
            "spot": {"rest": "http://127.0.0.1:9/spot"},
        }
    )
    assert markets["usdt_futures"].ws_url == "ws://127.0.0.1:8080/fapi/market"
    assert markets["usdt_futures"].rest_url == "http://127.0.0.1:8080/fapi"
    assert markets["usdt_futures"].klines_path == "/fapi/v1/klines"
    assert markets["spot"].ws_url == MARKETS["spot"].ws_url
    assert markets["coin_futures"] == MARKETS["coin_futures"]


@pytest.mark.parametrize(
    "bad",
    [
        {"margin": {"ws": "ws://h"}},
        {"spot": {"websocket": "ws://h"}},
        {"spot": {"ws": "http://h"}},
        {"spot": {"rest": "ftp://h"}},
        {"spot": {"ws": "ws://h/stream?streams=x"}},
        {"spot": {"rest": "http://[bad"}},  # urlsplit's own ValueError
        {"spot": "ws://h"},
        ["spot"],
    ],
)
def test_bad_endpoints_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError):
        apply_endpoints(bad)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"[a-z0-9]{1,20}@kline_1m", fullmatch=True), unique=True, max_size=400),
       st.integers(60, 5000))  # fmt: skip
def test_url_streams_is_the_longest_prefix_that_fits(streams: list[str], limit: int) -> None:
    spot = MARKETS["spot"]
    fitting = url_streams(spot, streams, limit)
    assert fitting == streams[: len(fitting)]
    assert len(combined_stream_url(spot, fitting)) <= limit or not fitting
    if len(fitting) < len(streams):
        assert len(combined_stream_url(spot, streams[: len(fitting) + 1])) > limit


def test_without_a_url_bound_connections_fill_to_the_market_s_limit() -> None:
    streams = [stream_name(f"SYM{i:04d}USDT", "1m") for i in range(2500)] * 2  # repeats dropped
    groups = plan_connections(MARKETS["spot"], streams, max_url_length=None)
    assert [len(g) for g in groups] == [1024, 1024, 452]
    assert [s for g in groups for s in g] == list(dict.fromkeys(streams))
    assert [len(g) for g in plan_connections(MARKETS["usdt_futures"], streams[:450], max_url_length=None)] == [
        200,
        200,
        50,
    ]
