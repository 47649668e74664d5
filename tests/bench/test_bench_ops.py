"""The operations benchmark still runs (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json

import pytest

from benchmarks import ops as bench


def test_ops_benchmark_reports_scrapes_and_health_checks(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--series", "50", "--series", "1200", "--repeat", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    small, large = result["runs"]
    assert small["fresh"]["stale"] == 0 and small["stale"]["stale"] == 50
    # Under the per-series limit every series has its age gauge; over it, only the stale ones (up to the limit).
    assert small["fresh"]["samples"] > 50 and large["fresh"]["samples"] < large["stale"]["samples"]
    assert set(result["targets_met"]) == {"largest_under_1pct_core"}


def test_the_universe_is_cut_to_size_with_every_market() -> None:
    series = bench.universe(1_000)
    assert len(series) == len(set(series)) == 1_000
    assert {s.market for s in series} == {"spot", "usdt_futures", "coin_futures"}
