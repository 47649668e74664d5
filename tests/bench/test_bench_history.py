"""The archive-vs-REST history benchmark still runs (tiny sizes: a smoke test, not a measurement), and its
span, symbols and file plan are what its docstring says they are."""

from __future__ import annotations

import json

import pytest

from benchmarks import history as bench
from trio_klines.core.markets import series
from trio_klines.testing import Universe

DAY = 86_400_000


@pytest.mark.timeout(90)
def test_history_benchmark_reports_both_legs_and_the_parse(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--series", "1", "--days", "3", "--interval", "1h", "--rounds", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["expected_candles"] == 72  # three days of 1h
    assert result["archive_files_planned"] == 3  # a partial month: daily files
    legs = result["legs"]
    assert set(legs) == {"archive_cold", "archive", "rest"}
    for leg in legs.values():
        assert leg["candles"] == 72, leg
        assert leg["wall_s"] > 0 and leg["candles_per_s"] > 0 and leg["cpu_us_per_candle"] > 0
        assert leg["rest_failures"] == 0 and leg["archive_failed"] == 0
    assert legs["archive"]["archive_files"] == 3 and legs["archive"]["rest_pages"] == 0
    assert legs["rest"]["archive_files"] == 0 and legs["rest"]["rest_pages"] == 1
    assert result["stored_archive"] == result["stored_rest"] == 72
    assert result["identical"] is True
    assert result["speedup_wall"] > 0 and result["speedup_wall_cold"] > 0 and result["speedup_vs_budget"] > 0
    assert result["rest_candles_per_s_at_budget"] == round(72 * 384 / 60)  # one page of 72 candles, 384 pages a minute
    assert result["config"]["rest_budget_windows"] == 1 and result["config"]["rest_wall_s_at_least"] == 0
    parse = result["parse"]
    assert parse["candles"] == 72 and parse["rounds"] == 2 and len(parse["candles_per_cpu_s_by_round"]) == 2
    steps = ("unzip_parse", "select", "append", "seal")
    assert all(parse[f"cpu_us_per_candle_{k}"] >= 0 for k in steps)
    assert parse["cpu_us_per_candle"] == pytest.approx(sum(parse[f"cpu_us_per_candle_{k}"] for k in steps), abs=0.01)
    assert parse["candles_per_cpu_s"] > 0
    assert set(result["targets_met"]) == {"speedup_wall", "parse_candles_per_cpu_s", "complete"}
    assert result["targets_met"]["complete"] is True
    assert result["exchange"]["separate_process"] is True and result["exchange"]["stats"]  # it printed its figures
    assert result["config"]["rest_pages_per_min_at_budget"] == 384  # USDⓈ-M: 2400 x 80 % / 5


def test_the_span_is_whole_months_or_days_before_the_end() -> None:
    assert bench.span(3, None) == (1_743_465_600_000, bench.END)  # 2025-04-01
    assert bench.span(7, None)[0] == 1_733_011_200_000  # 2024-12-01: across a year
    assert bench.span(None, 3) == (bench.END - 3 * DAY, bench.END)


def test_symbols_are_the_defaults_then_generated_ones_listed_before_the_span() -> None:
    defaults = [s for s, spec in Universe().symbols("usdt_futures").items() if spec.listed_at <= bench.END]
    symbols, extra = bench.pick_symbols("usdt_futures", 2, bench.END)
    assert symbols == defaults[:2] and extra == 0
    symbols, extra = bench.pick_symbols("usdt_futures", len(defaults) + 2, bench.END)
    assert extra == 2 and symbols[-2:] == ["SYM0001USDT", "SYM0002USDT"]


def test_the_default_span_is_twelve_monthly_files_within_the_fakes_cache() -> None:
    since, until = bench.span(3, None)
    symbols, _ = bench.pick_symbols("usdt_futures", 4, since)
    streams = [series("usdt_futures", s, "1m") for s in symbols]
    files = bench.planned_files(streams, since, until, until + bench.EXCHANGE_AFTER_DAYS * DAY)
    assert len(files) == 12 <= bench.CACHE_FILES
    assert all("/monthly/" in job.file.path for _, job in files)


def test_a_span_beyond_the_fakes_cache_is_refused_before_anything_starts() -> None:
    with pytest.raises(SystemExit, match="more than the fake exchange caches"):
        bench.main(["--series", "6", "--months", "3"])


def test_the_parse_figures_are_the_median_round() -> None:
    steps = {"select": 0.0, "append": 0.0, "seal": 0.0, "candles": 1000, "wall": 0.5}
    rounds = [{"unzip_parse": t, **steps} for t in (3e-3, 1e-3, 2e-3)]
    figures = bench.parse_figures(rounds)
    assert figures["cpu_us_per_candle"] == 2.0 and figures["candles_per_cpu_s"] == 500_000
    assert figures["candles_per_cpu_s_by_round"] == [333_333, 1_000_000, 500_000]
