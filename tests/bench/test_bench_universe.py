"""The paced-universe benchmark still runs (its CI size: a smoke test, not a measurement), every close it sends
is stored once, and its plan and its sender are what its docstrings say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import universe as bench
from benchmarks.universe_sender import _client_frames, close_template, parse_request
from trio_klines.core.markets import MARKETS, floor_open_time
from trio_klines.core.parse import parse_frame

ROOT = Path(__file__).resolve().parents[2]
#: Keys every run reports (per size and transport).
RUN_KEYS = (
    "streams", "connections", "msgs_per_s_offered", "msgs_per_s", "frames_sent", "messages_received",
    "received_over_sent", "cpu_us_per_msg", "cpu_pct_of_core", "cpu_pct_steady", "cpu_pct_burst", "rss_mb_max",
    "durable", "burst_durable", "closes_due", "closes_sent", "written", "stored", "stored_rows", "duplicated",
    "missing", "gaps", "sender_late_ms_max", "stop_s",
)  # fmt: skip


@pytest.mark.timeout(180)
def test_quick_run_stores_every_close_once_on_both_transports() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.universe", "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert set(result["runs"]) == {"quick"}
    runs = result["runs"]["quick"]
    assert set(runs) == set(bench.TRANSPORTS)
    for transport, run in runs.items():
        for key in RUN_KEYS:
            assert key in run, (transport, key)
        assert run["recorder_exit_code"] == 0, run["recorder_log"]
        assert run["connections"] == run["connections_planned"] == 3  # one per market
        assert run["received_over_sent"] == 1.0
        assert run["closes_sent"] == run["closes_due"] == run["written"] == run["stored"] == run["stored_rows"]
        assert run["burst_durable"]["count"] == run["burst_closes_due"] == 88  # every interval up to 1d closes
        assert run["durable"]["count"] == run["closes_due"]
        assert (run["duplicated"], run["missing"], run["extra"], run["gaps"], run["series_wrong"]) == (0, 0, 0, 0, 0)
        assert run["series_sent_not_due"] == 0
        assert run["cpu_us_per_msg"] > 0 and run["rss_mb_max"] > 0
    suffixes = [t.replace("-", "_") for t in bench.TRANSPORTS]
    assert set(result["targets_met"]) == {
        f"quick_{t}_{name}"
        for t in suffixes
        for name in ("received_over_sent", "no_gaps", "stored_once", "durable_p99")
    }
    checked = ("received_over_sent", "no_gaps", "stored_once")  # not the p99: a loaded CI machine may miss it
    assert all(result["targets_met"][f"quick_{t}_{name}"] for t in suffixes for name in checked)


# --- the plan ---------------------------------------------------------------------------------


def test_full_universe_is_45005_streams_at_binances_rates_over_98_connections() -> None:
    series = bench.universe(1.0)
    assert len(series) == len(set(series)) == 45_005
    # Futures streams 4 updates/s, spot 1 every 2 s, spot 1s a close a second.
    assert bench.offered_rate(series) == 13_005 * 4 + 30_000 / 2 + 2_000 == 69_020
    caps = bench.caps_for(series, {"spot": 1024, "usdt_futures": 200, "coin_futures": 200}, None)
    # The recorder's own plan: a connection's URL holds about 200 spot streams, it subscribes to the rest.
    assert bench.plan(series, caps) == 32 + 60 + 6


def test_sizes_hit_their_rates_and_connections() -> None:
    natural = {m: MARKETS[m].max_streams_per_connection for m in bench.UNIVERSE_SYMBOLS}
    one_k = bench.universe(bench.SIZES["1k"].scale)
    assert 950 < bench.offered_rate(one_k) < 1_050
    assert bench.plan(one_k, bench.caps_for(one_k, natural, 5)) == 5
    ten_k = bench.universe(bench.SIZES["10k"].scale)
    assert 9_500 < bench.offered_rate(ten_k) < 10_500


def test_due_counts_the_candles_that_close_inside_the_span() -> None:
    boundary = 1_719_964_800_000  # 2024-07-03 00:00 UTC
    assert bench.due("1s", boundary - 2_000, boundary + 1_000) == (3, boundary - 2_000, boundary)
    assert bench.due("1m", boundary - 2_000, boundary + 1_000) == (1, boundary - 60_000, boundary - 60_000)
    assert bench.due("1d", boundary - 2_000, boundary + 1_000) == (1, boundary - 86_400_000, boundary - 86_400_000)
    assert bench.due("1w", boundary - 2_000, boundary + 1_000)[0] == 0


def test_latency_percentiles() -> None:
    latency = bench.Latency()
    for ms in range(1, 101):
        latency.counts[ms] += 1
    assert latency.summary() == {"count": 100, "p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert bench.Latency().summary()["count"] == 0


# --- the sender -------------------------------------------------------------------------------


def test_close_template_parses_to_the_closed_candle_with_its_stamp() -> None:
    boundary = 1_719_792_000_000  # 2024-07-01: a month starts
    frame = close_template("S00001USDT", "1M") % (boundary, floor_open_time("1M", boundary - 1), boundary - 1, 1234)
    candle = parse_frame(frame, "spot")
    assert candle is not None
    assert (candle.symbol, candle.interval, candle.end_time, candle.trade_num) == ("S00001USDT", "1M", boundary, 1234)


@pytest.mark.parametrize(
    "target",
    [
        "/nowhere/stream?streams=btcusdt@kline_1m",
        "/spot/ws/btcusdt@kline_1m",
        "/usdt_futures/stream?streams=btcusdt@kline_1s",  # futures have no 1s
        "/spot/stream?streams=BTCUSDT@kline_1m",
        "/spot/stream?streams=btcusdt@kline_1m/btcusdt@kline_1m",
        "/spot/stream?streams=../../etc@kline_1m",
        "/spot/stream?streams=",
    ],
)
def test_the_sender_refuses_what_is_not_a_kline_stream_url(target: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_request(target)


def test_the_sender_reads_combined_urls_and_masked_client_frames() -> None:
    assert parse_request("/coin_futures/stream?streams=btcusd_perp@kline_1M/ethusd_perp@kline_1m") == (
        "coin_futures", [("BTCUSD_PERP", "1M"), ("ETHUSD_PERP", "1m")])  # fmt: skip
    mask = b"\x01\x02\x03\x04"
    ping = bytes([0x89, 0x80 | 2]) + mask + bytes(b ^ mask[i] for i, b in enumerate(b"hi"))
    buf = bytearray(ping + ping[:3])
    assert _client_frames(buf) == [(0x9, b"hi")]
    assert bytes(buf) == ping[:3]  # a frame cut short waits for its rest
