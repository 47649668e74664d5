"""``/metrics`` and ``/healthz`` of a recorder in this process, against the fake exchange with faults."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import trio_klines.recorder as recorder_module
from trio_klines.config import RecorderConfig, load_endpoints, parse_address
from trio_klines.errors import ConfigError
from trio_klines.ops.metrics import RecorderCollector
from trio_klines.recorder import Recorder
from trio_klines.testing import open_exchange

pytestmark = pytest.mark.timeout(90)

STREAMS = ["spot:1m:BTCUSDT,ETHUSDT", "usdt_futures:1m:BTCUSDT"]
HOUR = 3_600_000
#: Seconds a condition may take to come true, on a loaded machine too.
WAIT = 45.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def promtool_check(text: str) -> None:
    """``promtool check metrics`` must accept ``text``; CI installs promtool (.ci/run), elsewhere it may be absent."""
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


async def scrape(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def wait_until(condition: Callable[[str], bool], url: str) -> str:
    """Scrape ``url`` until ``condition`` holds for the body (the recorder's own pace: no fixed sleep)."""
    with trio.fail_after(WAIT):
        while True:
            body = (await scrape(url)).text
            if condition(body):
                return body
            await trio.sleep(0.05)


async def test_the_counters_move_promtool_accepts_them_and_healthz_follows_freshness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_exchange(seed=3, speed=600, faults="garbage=0.05,error=0.05,rest429=0.3") as exchange:
        config = RecorderConfig.build(streams=STREAMS, endpoints=exchange.endpoints, data_dir=tmp_path / "data",
                                      flush_seconds=0.2, metrics="127.0.0.1:0", since=exchange.now() - 2 * HOUR,
                                      history_source="rest", backoff_max=1.0)  # fmt: skip
        async with Recorder(config) as rec:
            assert rec.ops_url is not None and rec.ops_url.startswith("http://127.0.0.1:")
            metrics = rec.ops_url + "/metrics"
            first = value((await scrape(metrics)).text, "trio_klines_closed_candles_total")
            later = await wait_until(
                lambda t: value(t, "trio_klines_closed_candles_total") > first
                and value(t, "trio_klines_malformed_frames_total") > 0
                and value(t, "trio_klines_binance_errors_total") > 0
                and value(t, "trio_klines_rest_requests_total", market="spot", status="200") > 0
                and value(t, "trio_klines_candles_written_total") >= 3 * 120,
                metrics,
            )
            promtool_check(later)
            assert value(later, "trio_klines_connections", state="live") + value(
                later, "trio_klines_connections", state="backoff") + value(
                later, "trio_klines_connections", state="connecting") == 2  # fmt: skip
            assert value(later, "trio_klines_series", market="spot", interval="1m") == 2
            assert value(later, "trio_klines_close_to_durable_seconds_count") > 0
            assert value(later, "trio_klines_flush_duration_seconds_count") > 0
            assert (("trio_klines_series_last_candle_age_seconds",
                     (("interval", "1m"), ("market", "usdt_futures"), ("symbol", "BTCUSDT")))) in samples(later)

            assert value(later, "trio_klines_healthy") == 1
            healthy = await scrape(rec.ops_url + "/healthz")
            assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
            # An hour later on the local clock, with the exchange stopped: every series is stale.
            real_now = recorder_module._now_ms
            monkeypatch.setattr(recorder_module, "_now_ms", lambda: real_now() + 100 * HOUR)
            stale = await scrape(rec.ops_url + "/healthz")
            assert stale.status_code == 503
            assert value((await scrape(metrics)).text, "trio_klines_healthy") == 0
            body = stale.json()
            assert body["status"] == "unhealthy" and body["stale"] == 3 and body["writer"] == "ok"
            named = {(s["market"], s["symbol"], s["interval"]) for s in body["stale_series"]}
            assert named == {("spot", "BTCUSDT", "1m"), ("spot", "ETHUSDT", "1m"), ("usdt_futures", "BTCUSDT", "1m")}
            monkeypatch.setattr(recorder_module, "_now_ms", real_now)
            async with httpx.AsyncClient(timeout=10) as client:
                assert (await client.get(rec.ops_url + "/")).status_code == 404
                assert (await client.post(metrics)).status_code == 405
                head = await client.head(metrics)
                assert head.status_code == 200 and head.content == b""


async def test_per_series_gauges_stop_at_the_limit_except_for_stale_series(tmp_path: Path) -> None:
    async with open_exchange(seed=4, speed=600) as exchange:
        config = RecorderConfig.build(streams=STREAMS, endpoints=exchange.endpoints, data_dir=tmp_path / "data",
                                      metrics_series_limit=1, backfill=False)  # fmt: skip
        async with Recorder(config) as rec:
            def per_series(text: str) -> list[str]:
                return [dict(labels)["symbol"] for (name, labels) in samples(text)
                        if name == "trio_klines_series_last_candle_age_seconds"]  # fmt: skip

            def exposed(clock: Callable[[], float]) -> str:
                from prometheus_client import CollectorRegistry, generate_latest

                registry = CollectorRegistry(auto_describe=False)
                registry.register(RecorderCollector(rec, clock=clock))
                return generate_latest(registry).decode()

            assert per_series(exposed(_now)) == []  # three fresh series, over the limit of one
            later = exposed(lambda: _now() + 100 * HOUR / 1000)
            assert len(per_series(later)) == 1  # three stale series, one shown
            assert value(later, "trio_klines_stale_series", market="spot", interval="1m") == 2


def _now() -> float:
    return recorder_module._now_ms() / 1000


async def test_an_address_in_use_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = RecorderConfig.build(streams=STREAMS, data_dir=tmp_path / "data", metrics=f"127.0.0.1:{port}",
                                      check_symbols=False, backfill=False)  # fmt: skip
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}: .*in use"):
            async with Recorder(config):
                pass


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:9464", ("::1", 9464)),
    ("localhost:80", ("localhost", 80)),
])  # fmt: skip
def test_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9464", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:-1", ":9464", "[nope]:1",
                                  "a/b:1", "host name:1", "http://x:1"])  # fmt: skip
def test_bad_addresses_are_one_line_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid address") as caught:
        RecorderConfig.build(streams=STREAMS, metrics=text)
    assert "\n" not in str(caught.value)


def test_a_pretty_printed_endpoints_file_is_accepted(tmp_path: Path) -> None:
    endpoints = {"spot": {"ws": "ws://127.0.0.1:1/spot", "rest": "http://127.0.0.1:1/spot"}}
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(endpoints, indent=2) + "\n", encoding="utf-8")
    assert load_endpoints(path) == endpoints
    path.write_text(json.dumps(endpoints) + "\nfake exchange serving …\n", encoding="utf-8")  # `exchange`'s output
    assert load_endpoints(path) == endpoints
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not start with a JSON object"):
        load_endpoints(path)


async def test_a_metrics_server_that_fails_once_serving_never_stops_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import trio_klines.ops.http as ops_http

    crash = trio.Event()

    async def serve(app: object, config: object, *, shutdown_trigger: object, task_status: trio.TaskStatus) -> None:
        task_status.started(["http://127.0.0.1:1"])
        await crash.wait()
        raise RuntimeError("the server broke")

    monkeypatch.setattr(ops_http, "serve", serve)
    async with open_exchange(seed=5, speed=600) as exchange:
        config = RecorderConfig.build(streams=STREAMS, endpoints=exchange.endpoints, data_dir=tmp_path / "data",
                                      metrics="127.0.0.1:0", flush_seconds=0.1, backfill=False)  # fmt: skip
        async with Recorder(config) as rec, rec.candles() as batches:
            crash.set()
            with trio.fail_after(WAIT):
                while "recording goes on without /metrics" not in caplog.text:
                    await batches.receive()  # candles keep becoming durable meanwhile
            written = rec.stats().written
            with trio.fail_after(WAIT):
                await batches.receive()
            assert rec.stats().written > written
