"""The many-series benchmark still runs (tiny sizes: a smoke test, not a measurement), and its simulated
flushes are what its docstring says they are."""

from __future__ import annotations

import json

import pytest

from benchmarks import series as bench
from trio_klines.core.markets import MARKETS, next_open_time


@pytest.mark.timeout(240)
def test_series_benchmark_reports_its_keys(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--series", "60", "--minutes", "1", "--seal-seconds", "20", "40", "--universe-minutes", "2"]
    bench.main([*args, "--universe-scale", "0.005", "--universe-1s", "3", "--burst", "30", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert set(result["by_seal_seconds"]) == {"20.0", "40.0"}
    for run in [*result["by_seal_seconds"].values(), *result["universe_classes"].values()]:
        assert run["seal_errors"] == 0
        assert run["rounds"] >= 1  # every candle was sealed: the drain ran the last round
        assert run["cpu_us_per_candle_total"] > run["cpu_us_per_candle_seal"] > 0
        assert run["files_per_series"] >= 1
    spread = result["by_seal_seconds"]["20.0"]
    assert spread["candles"] == 60  # 60 series, one minute
    assert spread["raw_lag_s_max"] >= 20  # a round starts once the oldest landing file waited seal_seconds
    assert result["by_seal_seconds"]["40.0"]["rounds"] <= spread["rounds"]
    assert result["universe_candles"] == sum(c["candles"] for c in result["universe_classes"].values())
    assert result["burst_candles"] == 30
    assert result["burst_durable_wall_s"] > 0 and result["burst_seal_wall_s"] > 0
    assert set(result["targets_met"]) == {
        "spread_cpu_us_per_candle_total",
        "universe_cpu_us_per_candle_total",
        "universe_day_cpu_us_per_candle",
        "burst_durable_wall_s",
    }
    classes = result["universe_classes"]
    costs = [c["cpu_us_per_candle_total"] for c in classes.values()]
    assert min(costs) <= result["universe_day_cpu_us_per_candle"] <= max(costs)  # a weighted mean of them


def test_a_day_weighs_each_class_by_the_candles_it_closes_in_a_day() -> None:
    classes = {name: {"cpu_us_per_candle_total": 0.0} for name in bench.CLASSES}
    classes["1s"]["cpu_us_per_candle_total"] = 100.0
    one_spot_symbol_share = 86_400 / (86_400 + 1_440 + 480 + 288 + 96 + 48 + 24 + 12 + 6 + 4 + 3 + 2 + 1 + 1 / 3
                                      + 1 / 7 + 1 / 30)  # fmt: skip
    # Scaled down to one symbol per market: spot's 1s closes 86,400 candles a day of about 92,000.
    day = bench.day_weighted(classes, spot_1s=1, scale=0.0001)
    assert 90 < day < 100 * one_spot_symbol_share + 1


def test_spread_flushes_close_each_series_once_a_minute_round_robin() -> None:
    flushes = list(bench.spread_flushes(120, 3))
    assert [at for at, _ in flushes] == [float(s) for s in range(1, 181)]
    assert all(len(batch) == 2 for _, batch in flushes)
    times: dict[str, list[int]] = {}
    for _, batch in flushes:
        assert len({c.symbol for c in batch}) == len(batch)
        for c in batch:
            times.setdefault(c.symbol, []).append(c.open_time)
    assert len(times) == 120
    assert all(t == [bench.BOUNDARY + i * 60_000 for i in range(3)] for t in times.values())


def test_universe_offers_every_markets_intervals_and_each_candle_closes_in_its_second() -> None:
    series = bench.universe_series(spot_1s=2, scale=0.005)
    intervals = {(m, i) for m, _, i in series}
    assert intervals == {(m, i) for m in bench.UNIVERSE_SYMBOLS for i in MARKETS[m].intervals}
    assert sum(i == "1s" for _, _, i in series) == 2
    start = bench.BOUNDARY - 60_000
    seen: set[str] = set()
    for at, batch in bench.universe_flushes(series, 2):
        for c in batch:
            assert next_open_time(c.interval, c.open_time) == start + int(at * 1000)
            seen.add(c.interval)
    assert seen == {i for _, i in intervals}  # the span around the boundary closes every interval


def test_full_universe_is_about_45000_series() -> None:
    assert abs(len(bench.universe_series(spot_1s=2_000)) - 45_000) < 100
