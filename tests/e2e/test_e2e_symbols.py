"""The start-up symbol check against the fake exchange's exchangeInfo: unknown, not trading, fine."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from trio_klines.config import RecorderConfig, StreamSettings
from trio_klines.core.markets import series, stream_name
from trio_klines.core.parse import Candle
from trio_klines.core.symbols import describe_unknown
from trio_klines.errors import ConfigError
from trio_klines.net.exchange_info import check_series, fetch_symbol_statuses
from trio_klines.net.rest import new_http_client, rest_clients
from trio_klines.net.stream import StreamConnection
from trio_klines.recorder import Recorder
from trio_klines.testing import open_exchange

pytestmark = pytest.mark.timeout(30)

START = 1_767_225_600_000  # 2026-01-01, exchange time
STATUSES = {"spot:ETHBTC": "BREAK", "usdt_futures:XRPUSDT": "SETTLING", "coin_futures:SOLUSD_PERP": "DELIVERED"}


async def test_misspelt_symbols_are_unknown_with_the_real_names_and_halted_ones_not_trading() -> None:
    misspelt = series("spot", "BTCUSTD", "1m")
    halted = [series("spot", "ETHBTC", "1m"), series("usdt_futures", "XRPUSDT", "5m"),
              series("coin_futures", "SOLUSD_PERP", "1h")]  # fmt: skip
    good = [series("spot", "BTCUSDT", "1m"), series("usdt_futures", "ETHUSDT", "1m"),
            series("coin_futures", "BTCUSD_PERP", "1m")]  # fmt: skip
    wanted = [good[0], misspelt, *halted, *good[1:], series("usdt_futures", "ETHUSTD", "1m")]
    async with open_exchange(seed=1, start=START, statuses=STATUSES) as ex, new_http_client() as http:
        clients = rest_clients(ex.markets.values(), http)
        check = await check_series(wanted, clients)
        assert set(check.unknown) == {misspelt, series("usdt_futures", "ETHUSTD", "1m")}
        assert check.unknown[misspelt][0] == "BTCUSDT"
        assert "ETHUSDT" in check.unknown[series("usdt_futures", "ETHUSTD", "1m")]
        assert check.not_trading == {halted[0]: "BREAK", halted[1]: "SETTLING", halted[2]: "DELIVERED"}
        assert check.ok == (good[0], *good[1:]) and check.unchecked == ()
        assert "spot:1m:BTCUSTD: spot lists no symbol BTCUSTD (closest: BTCUSDT" in describe_unknown(check.unknown)
        # One exchangeInfo call per market, at its weight (20 on spot, 1 on each futures market).
        assert clients["spot"].budget.used == 20 and clients["usdt_futures"].budget.used == 2
        assert ex.stats["rest_requests"] == 3


async def test_a_symbol_that_does_not_trade_sends_no_klines() -> None:
    async with open_exchange(seed=1, start=START, statuses=STATUSES) as ex, new_http_client() as http:
        spot = rest_clients([ex.markets["spot"]], http)["spot"]
        statuses = await fetch_symbol_statuses(spot)
        assert statuses["ETHBTC"] == "BREAK" and statuses["BTCUSDT"] == "TRADING"
        assert ex.history.universe.get("spot", "ETHBTC") is None  # neither streamed nor served over REST


async def test_an_exchange_that_cannot_be_reached_leaves_the_series_unchecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_klines.symbols")
    async with open_exchange(seed=1, start=START) as ex:
        markets = ex.markets
    # The exchange is gone: every request is refused. A few quick retries, then a warning, never a hang.
    async with new_http_client() as http:
        clients = rest_clients(markets.values(), http)
        for client in clients.values():
            client.max_retries = 1
        wanted = [series("spot", "BTCUSTD", "1m"), series("usdt_futures", "BTCUSDT", "1m")]
        with trio.fail_after(20):
            check = await check_series(wanted, clients)
    assert check.unchecked == tuple(wanted) and check.recordable == tuple(wanted)
    assert not check.unknown and not check.ok
    assert sum("exchangeInfo not available" in r.getMessage() for r in caplog.records) == 2


async def test_a_dead_stream_does_not_cost_its_connection_the_live_streams_candles() -> None:
    # XRPUSDT is listed but settling: the exchange accepts its stream and never feeds it.
    async with open_exchange(seed=2, speed=600, start=START, statuses=STATUSES) as ex:
        market = ex.markets["usdt_futures"]
        settings = StreamSettings(receive_timeout=5, silence_periods=1, silence_min=0.2)  # silent after 0.25 s
        streams = [stream_name("BTCUSDT", "1m"), stream_name("XRPUSDT", "1m"), stream_name("ETHUSDT", "1m")]
        send, receive = trio.open_memory_channel[Sequence[Candle]](1000)
        conn = StreamConnection("um-0", market, streams, send, settings=settings, rng=random.Random(1))
        got: dict[str, list[int]] = {"BTCUSDT": [], "ETHUSDT": [], "XRPUSDT": []}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            with trio.move_on_after(2.5):  # ten silence limits: the old policy reconnected after three
                async for batch in receive:
                    for c in batch:
                        got[c.symbol].append(c.open_time)
            nursery.cancel_scope.cancel()
    assert conn.stats.reconnects == 0 and ex.stats["ws_connections"] == 1
    assert conn.stats.silent_alarms >= 2  # the dead stream was noticed, and resubscribed
    assert not got["XRPUSDT"]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        times = got[symbol]
        assert len(times) >= 10
        truth = ex.ground_truth("usdt_futures", symbol, "1m", times[0], times[-1] + 60_000)
        assert times == [c.open_time for c in truth]  # every candle, none lost to a reconnect


# --- the Recorder runs the check at start-up ---------------------------------------------------------


async def test_a_recorder_refuses_an_unknown_symbol_before_it_touches_the_store(tmp_path: Path) -> None:
    async with open_exchange(seed=1, start=START) as ex:
        config = RecorderConfig.build(streams=["spot:1m:BTCUSDT,BTCUSTD"], endpoints=ex.endpoints,
                                      data_dir=tmp_path / "data")  # fmt: skip
        recorder = Recorder(config)
        with pytest.raises(ConfigError, match=r"spot:1m:BTCUSTD: spot lists no symbol BTCUSTD \(closest: BTCUSDT"):
            await recorder.__aenter__()
    assert not (tmp_path / "data").exists()  # nothing opened, nothing locked
    assert recorder._http is not None and recorder._http.is_closed


async def test_a_recorder_skips_a_symbol_that_does_not_trade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_klines.recorder")
    async with open_exchange(seed=1, start=START, speed=600, statuses=STATUSES) as ex:
        config = RecorderConfig.build(streams=["spot:1m:BTCUSDT,ETHBTC"], endpoints=ex.endpoints,
                                      data_dir=tmp_path, flush_seconds=0.2)  # fmt: skip
        async with Recorder(config) as recorder, recorder.candles() as batches:
            assert recorder.series == (series("spot", "BTCUSDT", "1m"),)
            assert [c.streams for c, _ in recorder._connections.values()] == [("btcusdt@kline_1m",)]
            async for batch in batches:
                assert {c.symbol for c in batch} == {"BTCUSDT"}
                break
    assert "not recording 1 series whose symbol does not trade: spot:1m:ETHBTC (BREAK)" in caplog.text


def test_record_exits_2_naming_the_closest_symbols(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-m", "trio_klines", "exchange", "--start", str(START)],
                          stdout=subprocess.PIPE, text=True) as exchange:  # fmt: skip
        try:
            assert exchange.stdout is not None
            endpoints = tmp_path / "endpoints.json"
            endpoints.write_text(exchange.stdout.readline(), encoding="utf-8")  # its first line: the readiness
            done = subprocess.run(
                [sys.executable, "-m", "trio_klines", "record", "--stream", "spot:1m:BTCUSTD",
                 "--endpoints", str(endpoints), "--data", str(tmp_path / "data")],
                capture_output=True, text=True, timeout=25,
            )  # fmt: skip
        finally:
            exchange.terminate()
            exchange.wait(timeout=10)
    assert done.returncode == 2, done.stderr
    assert "BTCUSTD" in done.stderr and "closest: BTCUSDT" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_recorder_that_finds_its_store_locked_closes_what_it_opened(tmp_path: Path) -> None:
    from trio_klines.errors import StoreLocked
    from trio_klines.store.dataset import Store

    async with open_exchange(seed=1, start=START) as ex:
        config = RecorderConfig.build(streams=["spot:1m:BTCUSDT"], endpoints=ex.endpoints, data_dir=tmp_path)
        recorder = Recorder(config)
        with Store(tmp_path), pytest.raises(StoreLocked):  # another writer holds it
            await recorder.__aenter__()
    assert recorder._http is not None and recorder._http.is_closed  # the symbol check's client
