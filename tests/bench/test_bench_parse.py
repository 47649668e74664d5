"""The parse benchmark still runs (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json

import pytest

from benchmarks import parse as bench


def test_parse_benchmark_reports_its_keys(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--messages", "300", "--repeat", "1", "--baseline-messages", "20", "--json"])
    result = json.loads(capsys.readouterr().out)
    keys = {"parse_msgs_per_s", "parse_exact_msgs_per_s", "baseline_msgs_per_s", "ratio", "exact_over_float"}
    assert keys <= set(result)
    assert result["exact_over_float"] == pytest.approx(result["parse_msgs_per_s"] / result["parse_exact_msgs_per_s"])
    assert result["ratio"] == pytest.approx(result["parse_msgs_per_s"] / result["baseline_msgs_per_s"])


def test_benchmark_frames_are_valid_closed_candles() -> None:
    from trio_klines.core.parse import parse_frame

    frames = bench.make_frames(50)
    candles = [parse_frame(f, bench.MARKET) for f in frames]
    assert all(c is not None for c in candles)
    assert len({(c.symbol, c.open_time) for c in candles if c}) == 50
    assert bench.seed_style(frames[0]) is not None


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        bench.main(["--messages", "0"])
    assert info.value.code == 2
