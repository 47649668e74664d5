"""The connection task against a scripted transport, on a MockClock: retries, rotation, silence."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_klines.config import StreamSettings
from trio_klines.core.markets import DEFAULT_MAX_URL_LENGTH, MARKETS, stream_name
from trio_klines.core.parse import Candle
from trio_klines.errors import ConfigError
from trio_klines.net.stream import ConnectionState, ConnectionStats, StreamConnection
from trio_klines.net.transport import Connection
from trio_klines.testing.scripted import ScriptedTransport
from trio_klines.testing.wire import server_shutdown_frame

from fakes import FakeConnection, FakeTransport, kline_frame

pytestmark = pytest.mark.timeout(10)
UM = MARKETS["usdt_futures"]
STREAMS = [stream_name("BTCUSDT", "1m"), stream_name("ETHUSDT", "1m")]
SETTINGS = StreamSettings(receive_timeout=5, backoff_initial=1, backoff_max=8, healthy_after=30, silence_min=1000)


def make(transport: FakeTransport, settings: StreamSettings = SETTINGS, streams: Sequence[str] = STREAMS) -> tuple[
    StreamConnection, trio.MemoryReceiveChannel[Sequence[Candle]]
]:  # fmt: skip
    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    conn = StreamConnection("um-0", UM, streams, send, settings=settings, transport=transport, rng=random.Random(1))
    return conn, receive


async def test_closed_candles_reach_the_channel(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    conn, receive = make(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        assert ws.url == "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        await ws.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
        await ws.push("garbage{")
        await ws.push('{"code":-1,"msg":"oops"}')
        await ws.push(kline_frame("BTCUSDT", "1m", 60_000))
        batch = await receive.receive()
        assert [(c.symbol, c.open_time) for c in batch] == [("BTCUSDT", 60_000)]
        assert conn.stats.state == "live"
        assert (conn.stats.messages, conn.stats.candles, conn.stats.malformed, conn.stats.binance_errors) == (
            4,
            1,
            1,
            1,
        )
        nursery.cancel_scope.cancel()
    assert conn.stats.state == "stopped"
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()  # run() closed its send channel


async def test_silence_past_the_receive_timeout_reconnects_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    conn, _ = make(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await transport.next_connection(3)
        nursery.cancel_scope.cancel()
    # Each connection delivers nothing: 5 s receive timeout, then a jittered backoff of at most 1, 2 s.
    first, second, third = transport.attempts[:3]
    assert 5 <= second - first <= 5 + 1
    assert 5 <= third - second <= 5 + 2
    assert conn.stats.reconnects >= 2
    assert "ReceiveTimeout" in (conn.stats.last_error or "")


async def test_refused_connections_back_off_exponentially_up_to_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    transport.refuse = 8
    conn, _ = make(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await transport.next_connection(1)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(transport.attempts, transport.attempts[1:], strict=False)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert len(gaps) == 8
    assert all(0 <= g <= c for g, c in zip(gaps, ceilings, strict=True))
    assert conn.stats.reconnects == 8


async def test_server_shutdown_reconnects_at_once(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    conn, _ = make(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        await ws.push(server_shutdown_frame(1, combined=True))
        await transport.next_connection(2)
        nursery.cancel_scope.cancel()
    assert transport.attempts[1] - transport.attempts[0] < 0.01
    assert "ServerShutdown" in (conn.stats.last_error or "")


async def test_a_healthy_session_resets_the_backoff(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    transport.refuse = 4  # the backoff ceiling climbs to 8
    conn, _ = make(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        for minute in range(1, 40):  # 39 s of traffic: healthy
            await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000, closed=False))
            await trio.sleep(1)
        ws.cut()
        await transport.next_connection(2)
        nursery.cancel_scope.cancel()
    assert transport.attempts[-1] - transport.attempts[-2] >= 39
    # After the reset the first delay is at most backoff_initial again.
    cut_at = transport.attempts[-2] + 39
    assert transport.attempts[-1] - cut_at <= 1 + 0.01


async def test_rotation_is_make_before_break(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=5, rotate_after=60, silence_min=1000)
    conn, receive = make(transport, settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        old = await transport.next_connection(1)

        async def feed(ws: object, minutes: range) -> None:
            for minute in minutes:
                await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000))  # type: ignore[attr-defined]
                await trio.sleep(1)

        nursery.start_soon(feed, old, range(1, 200))
        new = await transport.next_connection(2)
        assert not old.closed  # the old one still receives while the new one comes up
        await trio.sleep(2)
        assert not old.closed  # the new one has delivered nothing yet
        await new.push(kline_frame("BTCUSDT", "1m", 999 * 60_000))
        await trio.sleep(0.1)
        assert old.closed
        assert conn.stats.rotations == 1
        assert conn.stats.reconnects == 0
        nursery.cancel_scope.cancel()
    minutes = set()
    while True:
        try:
            minutes.update(c.open_time // 60_000 for c in receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    assert set(range(1, 60)) <= minutes  # nothing lost across the rotation


async def test_a_failed_rotation_keeps_the_old_connection(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=5, rotate_after=60, silence_min=1000, backoff_initial=1)
    conn, _ = make(transport, settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        old = await transport.next_connection(1)

        async def feed() -> None:
            for minute in range(1, 100):
                await old.push(kline_frame("BTCUSDT", "1m", minute * 60_000, closed=False))
                await trio.sleep(1)

        nursery.start_soon(feed)
        await transport.next_connection(2)  # silent: rotation fails after the receive timeout
        await trio.sleep(7)
        assert not old.closed
        assert conn.stats.state == "rotating" or conn.stats.state == "live"
        assert conn.stats.reconnects == 0
        nursery.cancel_scope.cancel()


async def test_a_dead_stream_among_live_ones_costs_them_nothing(autojump_clock: trio.testing.MockClock) -> None:
    # ETH is dead (a halted or misspelt symbol): BTC's candles must all arrive, on the one connection.
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=5, silence_periods=4, silence_min=10)
    conn, receive = make(transport, settings)
    minutes = 30 * 60
    got: list[int] = []

    async def writer() -> None:
        async for batch in receive:
            got.extend(c.open_time // 60_000 for c in batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        nursery.start_soon(writer)
        ws = await transport.next_connection(1)
        for minute in range(1, minutes + 1):  # one closed BTC candle a second for half an hour
            await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000))
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert got == list(range(1, minutes + 1))
    assert len(transport.attempts) == 1 and conn.stats.reconnects == 0
    # Resubscribed 10 s after it went quiet, then 20, 40, … up to 640 s apart: 7 times in 30 minutes.
    assert ws.sent == [{"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": i} for i in range(1, 8)]
    assert conn.stats.silent_alarms == 7


async def test_a_connection_on_which_every_stream_is_silent_reconnects(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The wrong USDⓈ-M route: the socket lives and answers requests, but no stream delivers.
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=30, silence_periods=4, silence_min=10, backoff_initial=0.5)
    conn, _ = make(transport, settings)
    caplog.set_level(logging.ERROR, logger="trio_klines.stream")

    async def answers_only(ws: FakeConnection) -> None:
        while not ws.closed:
            await ws.push('{"result":null,"id":0}')
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        for n in range(1, 4):
            nursery.start_soon(answers_only, await transport.next_connection(n))
        nursery.cancel_scope.cancel()
    first, second, third = transport.attempts
    assert 10 <= second - first <= 10 + 0.5  # at once, no resubscribe first: nothing else would lose data
    assert 20 <= third - second <= 20 + 0.5 + 1  # the new session's allowance did not start it afresh
    assert "every stream silent" in (conn.stats.last_error or "")
    assert caplog.records[0].getMessage() == (
        "um-0: every stream silent for over 10s (btcusdt@kline_1m, ethusdt@kline_1m); reconnecting"
    )


async def test_subscribe_and_unsubscribe_on_the_live_connection(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    conn, _ = make(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        await ws.push('{"result":null,"id":0}')
        await trio.sleep(0.1)
        assert await conn.subscribe(["bnbusdt@kline_1m", "btcusdt@kline_1m"]) == ["bnbusdt@kline_1m"]
        assert await conn.unsubscribe(["ethusdt@kline_1m"]) == ["ethusdt@kline_1m"]
        assert ws.sent == [
            {"method": "SUBSCRIBE", "params": ["bnbusdt@kline_1m"], "id": 1},
            {"method": "UNSUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 2},
        ]
        assert conn.streams == ("btcusdt@kline_1m", "bnbusdt@kline_1m")
        with pytest.raises(ConfigError, match="no streams left"):
            await conn.unsubscribe(conn.streams)
        ws.cut()
        ws2 = await transport.next_connection(2)
        assert ws2.url.endswith("streams=btcusdt@kline_1m/bnbusdt@kline_1m")  # the reconnect carries the change
        nursery.cancel_scope.cancel()


async def test_streams_beyond_one_url_are_subscribed_once_connected(autojump_clock: trio.testing.MockClock) -> None:
    # A universe fills a spot connection with 1,024 streams, about five URLs' worth: the URL takes what fits,
    # and the rest follows in SUBSCRIBE requests (paced and packed, see core/pacing.py), on every reconnect.
    spot = MARKETS["spot"]
    streams = [stream_name(f"SYM{i:04d}USDT", "1m") for i in range(1024)]
    transport = FakeTransport()
    send, _receive = trio.open_memory_channel[Sequence[Candle]](100)
    conn = StreamConnection("spot-0", spot, streams, send, settings=SETTINGS, transport=transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        for attempt in (1, 2):
            ws = await transport.next_connection(attempt)
            assert len(ws.url) <= DEFAULT_MAX_URL_LENGTH
            in_url = ws.url.split("streams=")[1].split("/")
            assert in_url == streams[: len(in_url)] and len(in_url) < 1024
            await ws.push(kline_frame("SYM0000USDT", "1m", 60_000, closed=False))
            await trio.sleep(10)  # the paced requests go out meanwhile
            subscribed = [p for message in ws.sent for p in message["params"] if message["method"] == "SUBSCRIBE"]
            assert in_url + subscribed == streams
            ws.cut()
        nursery.cancel_scope.cancel()


def test_bad_settings_and_stream_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match="receive_timeout"):
        StreamSettings(receive_timeout=0)
    with pytest.raises(ConfigError, match="backoff_initial"):
        StreamSettings(backoff_initial=10, backoff_max=1)
    send, _ = trio.open_memory_channel[Sequence[Candle]](1)
    with pytest.raises(ConfigError, match="exceed"):
        StreamConnection("x", UM, [stream_name(f"S{i}", "1m") for i in range(201)], send)
    with pytest.raises(ConfigError, match="no streams"):
        StreamConnection("x", UM, [], send)


async def test_a_burst_is_one_channel_send_and_a_shutdown_inside_it_loses_no_candle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = ScriptedTransport([[
        kline_frame("BTCUSDT", "1m", 60_000),
        kline_frame("BTCUSDT", "1m", 120_000, closed=False),
        "garbage{",
        kline_frame("ETHUSDT", "1m", 60_000),
        server_shutdown_frame(1, combined=True),
        kline_frame("BTCUSDT", "1m", 120_000),
    ]], batch=True)  # fmt: skip
    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    conn = StreamConnection("um-0", UM, STREAMS, send, settings=SETTINGS, transport=transport, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        batch = await receive.receive()
        assert [(c.symbol, c.open_time) for c in batch] == [("BTCUSDT", 60_000), ("ETHUSDT", 60_000),
                                                            ("BTCUSDT", 120_000)]  # fmt: skip
        while conn.stats.reconnects == 0:  # noqa: ASYNC110
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert (conn.stats.messages, conn.stats.candles, conn.stats.malformed) == (6, 3, 1)
    assert "ServerShutdown" in (conn.stats.last_error or "")
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()  # the burst's candles went in one send


async def test_frames_keep_the_session_past_many_receive_timeouts_and_silence_is_caught_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The receive deadline is re-armed lazily: it must neither end a session that keeps receiving
    # nor let a real silence run longer than receive_timeout (5 s here).
    transport = FakeTransport()
    conn, _ = make(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        for _ in range(24):  # one open-candle update every 0.9 s for over 4 receive timeouts
            await ws.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
            await trio.sleep(0.9)
        last_frame = trio.current_time() - 0.9
        assert conn.stats.reconnects == 0 and conn.stats.messages == 24
        await transport.next_connection(2)
        nursery.cancel_scope.cancel()
    assert 5 <= transport.attempts[1] - last_frame <= 5 + 1  # the timeout, then a backoff of at most 1 s
    assert "ReceiveTimeout" in (conn.stats.last_error or "")


class _SlowBatch:
    """A read whose shielded collection outlasts the receive deadline (trio-websocket's receive_batch
    gathers a burst in shielded passes), bringing a closed candle each time."""

    def __init__(self) -> None:
        self.reads = 0

    async def receive(self) -> str | bytes:
        raise AssertionError("read in batches")

    async def receive_batch(self) -> list[str | bytes]:
        self.reads += 1
        if self.reads == 1:  # the session is live
            return [kline_frame("BTCUSDT", "1m", 60_000, closed=False)]
        if self.reads > 4:
            await trio.sleep_forever()
        with trio.CancelScope(shield=True):
            await trio.sleep(SETTINGS.receive_timeout + 1)  # the deadline passes meanwhile
        return [kline_frame("BTCUSDT", "1m", (self.reads - 1) * 60_000)]

    async def send(self, message: str) -> None:
        pass


async def test_a_read_that_meets_a_full_channel_as_its_deadline_passes_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @asynccontextmanager
    async def transport(url: str) -> AsyncIterator[Connection]:
        yield _SlowBatch()

    send, receive = trio.open_memory_channel[Sequence[Candle]](0)  # full: every send waits for the writer
    conn = StreamConnection("um-0", UM, STREAMS, send, settings=SETTINGS, transport=transport, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        got = []
        for _ in range(3):
            await trio.sleep(SETTINGS.receive_timeout * 3)  # the writer is slow
            got += [c.open_time // 60_000 for c in await receive.receive()]
        nursery.cancel_scope.cancel()
    assert got == [1, 2, 3]
    assert conn.stats.reconnects == 0


async def test_the_states_a_connection_goes_through(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=5, rotate_after=60, silence_min=1000, backoff_initial=1)
    conn, _ = make(transport, settings)
    assert conn.stats.state is ConnectionState.IDLE
    seen: list[str] = []

    class StateLog(ConnectionStats):
        def __setattr__(self, name: str, value: object) -> None:
            if name == "state" and (not seen or seen[-1] != value):
                seen.append(value)  # type: ignore[arg-type]
            super().__setattr__(name, value)

    conn.stats = StateLog(name=conn.name, market=conn.market.name, streams=len(conn.streams))

    async def feed(ws: FakeConnection) -> None:
        while not ws.closed:
            await ws.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        first = await transport.next_connection(1)
        await first.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
        await trio.sleep(0.1)
        first.cut()
        nursery.start_soon(feed, await transport.next_connection(2))
        third = await transport.next_connection(3)  # the rotation, a minute later
        await third.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert seen == ["idle", "connecting", "live", "backoff", "connecting", "live", "rotating", "live", "stopped"]
    assert all(isinstance(state, ConnectionState) for state in seen)


async def test_bad_frames_are_logged_once_per_period_with_a_count_of_the_rest(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=50, silence_min=1000, log_every=10)
    conn, _ = make(transport, settings)
    caplog.set_level(logging.WARNING, logger="trio_klines.stream")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        for _ in range(12):  # one a second for 12 s: reports at 0 and 10 s
            await ws.push("garbage{")
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    reports = [r.getMessage() for r in caplog.records if "frame skipped" in r.getMessage()]
    assert len(reports) == 2
    assert reports[0].startswith("um-0: malformed frame skipped: ") and "more since" not in reports[0]
    assert reports[1].endswith("(9 more since the last report)")
    assert conn.stats.malformed == 12


async def test_an_unsubscribed_stream_never_raises_a_silence_alarm(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=5, silence_periods=4, silence_min=10)
    conn, _ = make(transport, settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        await ws.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
        await trio.sleep(0.1)
        await conn.unsubscribe(["ethusdt@kline_1m"])
        for minute in range(1, 60):  # BTC flows; ETH says nothing, and a last ETH frame comes late
            await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000, closed=False))
            if minute == 3:
                await ws.push(kline_frame("ETHUSDT", "1m", 60_000, closed=False))
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert conn.stats.silent_alarms == 0 and conn.stats.reconnects == 0
    assert ws.sent == [{"method": "UNSUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 1}]


async def test_a_silence_alarm_is_logged_as_an_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FakeTransport()
    settings = StreamSettings(receive_timeout=5, silence_periods=4, silence_min=10)
    conn, _ = make(transport, settings)
    caplog.set_level(logging.ERROR, logger="trio_klines.stream")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await transport.next_connection(1)
        for minute in range(1, 13):
            await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000, closed=False))
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [r.getMessage() for r in caplog.records] == [
        "um-0: 1 stream(s) silent for over 10s (ethusdt@kline_1m); resubscribing"
    ]
