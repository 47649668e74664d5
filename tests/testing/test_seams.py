"""The test seams the package ships: WireKline, the Hypothesis strategies, ScriptedTransport, MemorySink."""

from __future__ import annotations

import errno
import json

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_klines import Recorder, RecorderConfig
from trio_klines.core.markets import MARKETS, Series
from trio_klines.core.parse import Candle, parse_frame, parse_rest_klines, parse_rest_row
from trio_klines.errors import ConnectionLost
from trio_klines.net.transport import BatchConnection
from trio_klines.pipeline.writer import call_inline
from trio_klines.testing import (
    Close,
    MemorySink,
    Pause,
    ScriptedBatchConnection,
    ScriptedConnection,
    ScriptedTransport,
    WireKline,
)
from trio_klines.testing.strategies import KlineCase, decimal, frames_of, kline_frames, rest_rows, wire_klines

pytestmark = pytest.mark.timeout(30)

MIN = 60_000


def frame(minute: int, *, closed: bool = True, symbol: str = "BTCUSDT") -> str:
    return WireKline(symbol, "1m", minute * MIN, closed=closed).frame()


# --- WireKline --------------------------------------------------------------------------------


def test_a_default_kline_is_a_full_plausible_candle_in_binances_key_order() -> None:
    kline = WireKline("BTCUSDT", "1m", MIN)
    assert kline.close_time == 2 * MIN - 1
    assert list(kline.payload()) == ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q",
                                     "B"]  # fmt: skip
    assert kline.candle("spot") == Candle("spot", "BTCUSDT", "1m", MIN, 2.0, 3.0, 1.0, 2.0, 5.0, 10.0, 9, 1.0, 2.0)
    assert kline.stream == "btcusdt@kline_1m"


@pytest.mark.parametrize("combined", [True, False])
def test_frames_and_rows_parse_to_the_klines_candle(combined: bool) -> None:
    kline = WireKline("ETHUSDT", "5m", 5 * MIN, open="10.5", high="11", low="10", close="10.25", trades=4)
    text = kline.frame(combined=combined)
    assert json.loads(text).keys() == ({"stream", "data"} if combined else {"e", "E", "s", "k"})
    assert parse_frame(text, "usdt_futures") == kline.candle("usdt_futures")
    assert parse_rest_row(kline.rest_row(), "spot", "ETHUSDT", "5m") == kline.candle("spot")
    assert parse_rest_klines(json.dumps([kline.rest_row()]), "spot", "ETHUSDT", "5m") == [kline.candle("spot")]


def test_an_open_kline_parses_to_none_and_its_event_time_is_after_its_open() -> None:
    kline = WireKline("BTCUSDT", "1h", 3_600_000, closed=False)
    assert parse_frame(kline.frame(), "spot") is None
    assert kline.event()["E"] == 3_600_001
    assert WireKline("BTCUSDT", "1h", 3_600_000).event()["E"] == 7_200_000
    assert json.loads(kline.frame(stream="custom", event_time=5)) == {"stream": "custom", "data": kline.event(5)}


def test_a_candle_closed_early_keeps_its_close_time() -> None:
    kline = WireKline("BTCUSDT", "1m", MIN, close_time=MIN + 41_646)
    assert kline.payload()["T"] == kline.rest_row()[6] == MIN + 41_646
    assert parse_frame(kline.frame(), "spot") == kline.candle("spot")


def test_decimal_writes_every_place() -> None:
    assert [decimal(5, 0), decimal(5, 3), decimal(123456, 2), decimal(0, 8)] == ["5", "0.005", "1234.56", "0.00000000"]


# --- strategies -------------------------------------------------------------------------------


@given(kline_frames(closed=None))
def test_generated_frames_parse_to_their_candle_or_none(case: tuple[str | bytes, KlineCase]) -> None:
    text, (market, kline, candle) = case
    assert parse_frame(text, market) == (candle if kline.closed else None)


@given(rest_rows(markets=["coin_futures"]))
def test_generated_rest_rows_parse_to_their_candle(case: tuple[list[object], KlineCase]) -> None:
    row, (market, kline, candle) = case
    assert market == "coin_futures" and kline.closed
    assert parse_rest_row(json.loads(json.dumps(row)), market, kline.symbol, kline.interval) == candle


@given(st.data())
def test_generated_klines_keep_to_the_markets_asked_for_and_their_grid(data: st.DataObject) -> None:
    market, kline, candle = data.draw(wire_klines(markets=["spot"], closed=False))
    assert market == "spot" and not kline.closed
    assert kline.interval in MARKETS["spot"].intervals
    assert kline.open_time <= kline.close_time < candle.end_time
    assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
    assert isinstance(data.draw(frames_of(kline)), str | bytes)


# --- ScriptedTransport ------------------------------------------------------------------------


async def test_a_script_delivers_frames_pauses_and_a_close(autojump_clock: trio.testing.MockClock) -> None:
    transport = ScriptedTransport([[frame(1), Pause(5), b"binary", Close("restarting")]])
    async with transport("wss://example.test/stream") as conn:
        assert await conn.receive() == frame(1)
        start = trio.current_time()
        assert await conn.receive() == b"binary"
        assert trio.current_time() - start == pytest.approx(5)
        with pytest.raises(ConnectionLost, match="restarting"):
            await conn.receive()
        assert conn.closed
        with pytest.raises(ConnectionLost, match="restarting"):
            await conn.receive()
        with pytest.raises(ConnectionLost, match="cannot send: restarting"):
            await conn.send("{}")
    assert transport.connections == [conn] and conn.url == "wss://example.test/stream"


async def test_connects_take_the_scripts_in_turn(autojump_clock: trio.testing.MockClock) -> None:
    transport = ScriptedTransport([ConnectionLost("refused"), [frame(1)]])
    transport.refuse = 1
    with pytest.raises(ConnectionLost, match="connection refused"):
        async with transport("u"):
            pass  # pragma: no cover
    with pytest.raises(ConnectionLost, match="refused"):
        async with transport("u"):
            pass  # pragma: no cover
    async with transport("u") as conn:
        assert await conn.receive() == frame(1)
    async with transport("u") as conn:  # out of scripts: open and silent
        with trio.move_on_after(60) as scope:
            await conn.receive()
        assert scope.cancelled_caught
    assert len(transport.attempts) == 4 and len(transport.connections) == 2


async def test_an_exception_step_is_raised_once_and_connection_lost_ends_the_connection() -> None:
    conn = ScriptedConnection("u", [ValueError("a bug"), frame(1), ConnectionLost("reset"), frame(2)])
    with pytest.raises(ValueError, match="a bug"):
        await conn.receive()
    assert await conn.receive() == frame(1)
    with pytest.raises(ConnectionLost, match="reset"):
        await conn.receive()
    with pytest.raises(ConnectionLost, match="reset"):
        await conn.receive()  # the frame after the reset is never delivered


async def test_a_receive_cancelled_in_a_pause_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    conn = ScriptedConnection("u", [Pause(10), frame(1)])
    start = trio.current_time()
    with trio.move_on_after(4):
        await conn.receive()
    assert await conn.receive() == frame(1)
    assert trio.current_time() - start == pytest.approx(10)  # the pause went on where it was


async def test_a_live_connection_takes_pushes_and_cuts_and_records_what_the_client_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = ScriptedTransport()
    received: list[str | bytes] = []

    async def client() -> None:
        async with transport("u") as conn:
            await conn.send('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":1}')
            await conn.send("not json")
            try:
                while True:
                    received.append(await conn.receive())
            except ConnectionLost:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        conn = await transport.next_connection(1)
        await conn.push(frame(1), frame(2))
        conn.cut()
    assert received == [frame(1), frame(2)]
    assert conn.sent == [{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1}, "not json"]
    assert conn.closed


async def test_leaving_closes_the_connection() -> None:
    transport = ScriptedTransport()
    async with transport("u") as conn:
        assert not conn.closed
    assert conn.closed
    with pytest.raises(ConnectionLost):
        await conn.receive()


async def test_batch_connections_hand_over_the_frames_up_to_the_next_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = ScriptedTransport([[frame(1), frame(2), frame(3), Pause(1), frame(4), Close()]], batch=True)
    async with transport("u") as conn:
        assert isinstance(conn, ScriptedBatchConnection) and isinstance(conn, BatchConnection)
        assert await conn.receive_batch() == [frame(1), frame(2), frame(3)]
        assert await conn.receive_batch() == [frame(4)]
        with pytest.raises(ConnectionLost):
            await conn.receive_batch()
    assert not isinstance(ScriptedConnection("u"), BatchConnection)


# --- MemorySink -------------------------------------------------------------------------------


def test_the_memory_sink_keeps_batches_and_fails_on_demand() -> None:
    sink = MemorySink()
    a, b = WireKline("A", "1m", MIN).candle("spot"), WireKline("B", "1m", MIN).candle("spot")
    sink.append([a])
    sink.fail = 1
    with pytest.raises(OSError, match="No space left") as info:
        sink.append([b])
    assert info.value.errno == errno.ENOSPC
    sink.append((b,))
    assert sink.batches == [[a], [b]] and sink.candles == [a, b]
    assert sink.series(Series("spot", "B", "1m")) == [b]


# --- together: an embedded Recorder tested without a socket or a disk ------------------------


async def test_a_recorder_records_a_script_into_a_memory_sink(autojump_clock: trio.testing.MockClock) -> None:
    script = [frame(1, closed=False), frame(1), Pause(1), frame(2, symbol="ETHUSDT"), Close("cut-off")]
    transport, sink = ScriptedTransport([script, [frame(3)]]), MemorySink()
    config = RecorderConfig.build(streams=["spot:1m:BTCUSDT,ETHUSDT"], receive_timeout=5, flush_seconds=0.5,
                                  silence_min=1000, backfill=False, check_symbols=False)  # fmt: skip
    async with Recorder(config, sink=sink, transport=transport, run_sink=call_inline):
        await transport.next_connection(2)  # the cut-off one came back
        await trio.sleep(2)
    assert [(c.symbol, c.open_time // MIN) for c in sink.candles] == [("BTCUSDT", 1), ("ETHUSDT", 2), ("BTCUSDT", 3)]
