"""The end-to-end benchmark still runs (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json

import pytest

from benchmarks import e2e


@pytest.mark.timeout(120)
def test_e2e_benchmark_reports_its_keys(capsys: pytest.CaptureFixture[str]) -> None:
    e2e.main(["--messages", "482", "--seed-messages", "5", "--json"])
    result = json.loads(capsys.readouterr().out)
    for key in ("closed_msgs_per_s", "realistic_msgs_per_s", "ws_ceiling_msgs_per_s", "seed_closed_msgs_per_s",
                "ratio_closed_vs_seed", "cpu_us_per_msg_realistic", "latency_p99_ms"):  # fmt: skip
        assert result[key] > 0, key


def test_blaster_frames_parse() -> None:
    from trio_klines.parse import parse_frame

    closed = [parse_frame(f, e2e.MARKET) for f in e2e.frames("closed", 120)]
    assert all(c is not None for c in closed)
    realistic = [parse_frame(f, e2e.MARKET) for f in e2e.frames("realistic", 482)]
    assert sum(c is not None for c in realistic) == 2
