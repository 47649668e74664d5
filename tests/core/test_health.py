"""Freshness and the health body: pure, judged at an explicit clock."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_klines.core.health import freshness, health_body, judge
from trio_klines.core.markets import INTERVALS, Series, floor_open_time, max_interval_ms, next_open_time

pytestmark = pytest.mark.timeout(60)

T0 = 1_767_225_600_000  # 2026-01-01
BTC = Series("spot", "BTCUSDT", "1m")
ETH = Series("spot", "ETHUSDT", "1m")
COIN = Series("coin_futures", "BTCUSD_PERP", "3m")


def test_a_series_is_fresh_until_two_intervals_and_the_grace_after_its_last_close() -> None:
    last_open = {BTC: T0}
    close = T0 + 60_000
    limit = close + 2 * 60_000 + 30_000
    assert not freshness([BTC], last_open, {BTC: T0 - 3_600_000}, limit)[0].stale
    judged = freshness([BTC], last_open, {BTC: T0 - 3_600_000}, limit + 1)[0]
    assert judged.stale and judged.last_close == close and judged.age_ms == limit + 1 - close


def test_a_series_without_candles_counts_from_when_its_recording_started() -> None:
    since = T0 + 5_000
    assert not freshness([ETH], {}, {ETH: since}, since + 150_000)[0].stale
    judged = freshness([ETH], {}, {ETH: since}, since + 150_001)[0]
    assert judged.stale and judged.last_close is None and judged.age_ms == 150_001


def test_an_old_stored_candle_counts_from_the_start_of_this_recording() -> None:
    """A restart after a week: the week-old candle does not make the new recording stale at once."""
    judged = freshness([BTC], {BTC: T0 - 7 * 86_400_000}, {BTC: T0}, T0 + 60_000)[0]
    assert not judged.stale and judged.age_ms == 60_000


@given(
    interval=st.sampled_from(list(INTERVALS)),
    last=st.integers(T0 - 10 * 365 * 86_400_000, T0),
    since=st.integers(T0 - 86_400_000, T0),
    after=st.integers(0, 100 * 86_400_000),
    grace=st.integers(0, 600_000),
)
def test_stale_exactly_when_older_than_two_of_the_longest_intervals_plus_the_grace(
    interval: str, last: int, since: int, after: int, grace: int
) -> None:
    s = Series("spot", "BTCUSDT", interval)
    opened = floor_open_time(interval, last)
    reference = max(next_open_time(interval, opened), since)
    now = reference + after
    judged = freshness([s], {s: opened}, {s: since}, now, grace)[0]
    assert judged.age_ms == after
    assert judged.stale == (after > 2 * max_interval_ms(interval) + grace)


def test_groups_sum_per_market_and_interval() -> None:
    now = T0 + 10 * 60_000
    judged = judge([BTC, ETH, COIN], {BTC: now - 60_000, ETH: T0}, {BTC: T0, ETH: T0, COIN: now}, now)
    assert judged.every is None and [f.series for f in judged.stale] == [ETH] and judged.series == 3
    groups = judged.groups
    assert set(groups) == {("spot", "1m"), ("coin_futures", "3m")}
    spot = groups["spot", "1m"]
    assert (spot.series, spot.stale, spot.max_age_ms) == (2, 1, now - (T0 + 60_000))
    assert (groups["coin_futures", "3m"].stale, groups["coin_futures", "3m"].max_age_ms) == (0, 0)


def test_the_body_names_the_stalest_series_first_and_at_most_max_named() -> None:
    now = T0 + 60 * 60_000
    last = {BTC: T0, ETH: T0 + 30 * 60_000}
    healthy, body = health_body(judge([BTC, ETH, COIN], last, {COIN: now}, now), None, max_named=1)
    assert not healthy
    assert body["status"] == "unhealthy" and body["stale"] == 2 and body["series"] == 3 and body["writer"] == "ok"
    assert body["now"] == "2026-01-01T01:00:00Z"
    assert body["stale_series"] == [{"market": "spot", "symbol": "BTCUSDT", "interval": "1m",
                                     "last_close": "2026-01-01T00:01:00Z",
                                     "age_seconds": 3540.0, "limit_seconds": 150.0}]  # fmt: skip
    json.dumps(body)


def test_a_failing_writer_is_unhealthy_with_fresh_series() -> None:
    healthy, body = health_body(judge([BTC], {BTC: T0}, {}, T0 + 60_000), "writes failing: disk full")
    assert not healthy and body["writer"] == "writes failing: disk full" and "stale_series" not in body
    empty = {"status": "ok", "now": "2026-01-01T00:00:00Z", "series": 0, "stale": 0, "writer": "ok"}
    assert health_body(judge([], {}, {}, T0), None) == (True, empty)


@given(
    series=st.lists(st.tuples(st.sampled_from(["spot", "usdt_futures"]), st.sampled_from(["AUSDT", "BUSDT", "CUSDT"]),
                              st.sampled_from(["1s", "1m", "1h", "1M"])), unique=True, max_size=12),
    ages=st.lists(st.integers(-86_400_000, 200 * 86_400_000), min_size=12, max_size=12),
)
def test_judge_agrees_with_one_verdict_per_series(series: list[tuple[str, str, str]], ages: list[int]) -> None:
    """The single pass (groups, stale list) says what the per-series verdicts say, summed."""
    keys = [Series(*t) for t in series]
    now = T0 + 400 * 86_400_000
    last = {s: floor_open_time(s.interval, now - age) for s, age in zip(keys, ages, strict=False) if age % 3}
    since = {s: now - age for s, age in zip(keys, ages, strict=False) if age % 2}
    every = freshness(keys, last, since, now, 1_000)
    judged = judge(keys, last, since, now, 1_000)
    assert judged.stale == [f for f in every if f.stale]
    for (market, interval), g in judged.groups.items():
        mine = [f for f in every if (f.series.market, f.series.interval) == (market, interval)]
        assert (g.series, g.stale, g.max_age_ms) == (len(mine), sum(f.stale for f in mine), max(f.age_ms for f in mine))
    assert sum(g.series for g in judged.groups.values()) == len(keys)
