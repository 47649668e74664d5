"""``python -m trio_klines exchange``: end to end in a subprocess, and its argument errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from trio_klines.cli import main
from trio_klines.config import parse_time
from trio_klines.core.markets import apply_endpoints
from trio_klines.core.parse import parse_frame, parse_rest_klines
from trio_klines.errors import ConfigError
from trio_klines.testing import ground_truth

pytestmark = pytest.mark.timeout(60)

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


async def first_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data


@asynccontextmanager
async def exchange_process(*args: str) -> AsyncIterator[tuple[trio.Process, bytes]]:
    command = [sys.executable, "-m", "trio_klines", "exchange", *args]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        with trio.fail_after(20):
            line = await first_line(process.stdout)
        yield process, line
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_exchange_command_prints_endpoints_serves_and_stops_on_signal(stop: signal.Signals) -> None:
    args = ("--seed", "5", "--speed", "6000", "--start", "2024-01-01", "--symbols", "2", "--port", "0")
    async with exchange_process(*args) as (process, line):
        assert line.endswith(b"\n") and line.count(b"\n") == 1, line
        endpoints = json.loads(line)
        assert set(endpoints) == {"spot", "usdt_futures", "coin_futures"}
        markets = apply_endpoints(endpoints)
        assert markets["spot"].ws_url.startswith("ws://127.0.0.1:")

        stream_url = markets["usdt_futures"].ws_url + "/stream?streams=btcusdt@kline_1m"
        async with open_websocket_url(stream_url, disconnect_timeout=2) as ws:
            candle = None
            with trio.fail_after(10):
                while candle is None:
                    candle = parse_frame(await ws.get_message(), "usdt_futures")
        truth = ground_truth("usdt_futures", "BTCUSDT", "1m", candle.open_time, candle.open_time + 1, seed=5)
        assert [candle] == truth

        async with httpx.AsyncClient(timeout=10) as client:
            spot = markets["spot"]
            response = await client.get(
                spot.rest_url + spot.klines_path,
                params={"symbol": "BNBUSDT", "interval": "1h", "startTime": T0 - 5 * 3_600_000, "limit": 5},
            )
            rows = parse_rest_klines(response.content, "spot", "BNBUSDT", "1h")
            assert rows == ground_truth("spot", "BNBUSDT", "1h", T0 - 5 * 3_600_000, T0, seed=5)
            info = (await client.get(spot.rest_url + spot.exchange_info_path)).json()
            assert {"SYM0001USDT", "SYM0002USDT"} <= {s["symbol"] for s in info["symbols"]}

        process.send_signal(stop)
        with trio.fail_after(10):
            code = await process.wait()
        assert code == 128 + stop  # stopped cleanly by that signal: 130 for SIGINT, 143 for SIGTERM
        assert process.stdout is not None
        rest = b""
        while chunk := await process.stdout.receive_some():
            rest += chunk
        # After the endpoints line, one last line: what the exchange did.
        stats = json.loads(rest)["stats"]
        assert rest.count(b"\n") == 1 and stats["rest_requests"] == 2 and stats["ws_connections"] == 1, stats


@pytest.mark.slow
async def test_exchange_command_applies_faults() -> None:
    async with exchange_process("--faults", "rest418=1,retry_after=3") as (process, line):
        spot = apply_endpoints(json.loads(line))["spot"]
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(spot.rest_url + spot.ping_path)
        assert response.status_code == 418 and response.headers["retry-after"] == "3"
        process.terminate()
        with trio.fail_after(10):
            assert await process.wait() == 143


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exchange", "--faults", "bogus=1"], "unknown fault 'bogus'"),
        (["exchange", "--faults", "drop=7"], "probability from 0 to 1"),
        (["exchange", "--speed", "-1"], "must be a positive number"),
        (["exchange", "--port", "70000"], "must be from 0 to 65535"),
        (["exchange", "--start", "yesterday"], "invalid time 'yesterday'"),
        (["exchange", "--symbols", "many"], "expected a whole number"),
        (["exchange", "--colour", "red"], "unrecognized arguments"),
        ([], "the following arguments are required: COMMAND"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["exchange", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_time_flags_take_epoch_ms_or_iso_dates() -> None:
    assert parse_time("1704067200000") == T0
    assert parse_time("2024-01-01") == T0
    assert parse_time("2024-01-01T00:01Z") == T0 + 60_000
    assert parse_time("2024-01-01T02:00+02:00") == T0
    with pytest.raises(ConfigError, match=r"ISO date or date-time .* or epoch ms"):
        parse_time("soon")
