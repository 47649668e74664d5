"""One suite for every WebSocket transport: the fake exchange on loopback, faults included, plus a
scripted wsproto server for what the exchange never does (pings awaiting their pong, fragments, oversize
and invalid frames, a peer that never finishes the close handshake)."""

from __future__ import annotations

import functools
import json
import logging
import random
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import wsproto
import wsproto.events as wse
import wsproto.utilities

from trio_klines.config import StreamSettings
from trio_klines.core.markets import stream_name
from trio_klines.core.parse import Candle, frame_parser
from trio_klines.errors import ConnectionLost
from trio_klines.net.stream import StreamConnection
from trio_klines.net.transport import (
    STREAM_ERRORS,
    BatchConnection,
    Connection,
    Transport,
    describe,
    map_errors,
    trio_websocket_transport,
)
from trio_klines.net.websockets_transport import websockets_transport
from trio_klines.testing import FakeExchange, open_exchange

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
FAST = 6000.0  # a 1m candle every 10 ms
GARBAGE_BYTES = b"\x00\x9c\xff\xfe garbage \x81\x7f"  # the exchange's binary garbage frame
FACTORIES: dict[str, Callable[..., Transport]] = {
    "trio-websocket": trio_websocket_transport,
    "websockets": websockets_transport,
}


@pytest.fixture(params=sorted(FACTORIES))
def make_transport(request: pytest.FixtureRequest) -> Callable[..., Transport]:
    """The factory of the transport under test; tests pass it their own timeouts."""
    return FACTORIES[request.param]


def ws_url(ex: FakeExchange, market: str = "usdt_futures", streams: str = "btcusdt@kline_1m") -> str:
    return f"{ex.endpoints[market]['ws']}/stream?streams={streams}"


async def closed_candles(conn: Connection, market: str, count: int) -> list[Candle]:
    parse = frame_parser(market)
    candles: list[Candle] = []
    while len(candles) < count:
        candle = parse(await conn.receive())
        if candle is not None:
            candles.append(candle)
    return candles


async def read_until_lost(conn: Connection, limit: int = 10_000) -> tuple[int, ConnectionLost]:
    for count in range(limit):
        try:
            await conn.receive()
        except ConnectionLost as exc:
            return count, exc
    raise AssertionError(f"still connected after {limit} messages")


def assert_consecutive(candles: Sequence[Candle], ex: FakeExchange, symbol: str = "BTCUSDT") -> None:
    """``candles`` are the exchange's own, one per minute with none missing or repeated."""
    truth = ex.ground_truth("usdt_futures", symbol, "1m", candles[0].open_time, candles[-1].open_time + 60_000)
    assert list(candles) == truth


# --- against the fake exchange ----------------------------------------------------------------


async def test_receives_kline_frames_that_parse_into_the_ground_truth(
    make_transport: Callable[..., Transport],
) -> None:
    async with open_exchange(seed=1, speed=FAST, start=T0 + 1) as ex, make_transport()(ws_url(ex)) as conn:
        candles = await closed_candles(conn, "usdt_futures", 20)
    assert_consecutive(candles, ex)


async def test_subscribe_reply_arrives_and_the_new_stream_flows(make_transport: Callable[..., Transport]) -> None:
    async with open_exchange(seed=1, speed=FAST, start=T0) as ex, make_transport()(ws_url(ex)) as conn:
        await conn.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 7}))
        streams = set()
        reply = None
        while reply is None or "ethusdt@kline_1m" not in streams:
            message = json.loads(await conn.receive())
            if "id" in message:
                reply = message
            else:
                streams.add(message["stream"])
    assert reply == {"result": None, "id": 7}


async def test_survives_server_pings_while_receiving_and_sending(make_transport: Callable[..., Transport]) -> None:
    # A ping every 20 ms for 0.6 s while frames pour in: about 30 pongs written by the receiving task,
    # and requests written meanwhile by another one.
    async with (
        open_exchange(seed=1, speed=FAST, start=T0, ping_interval=0.02) as ex,
        make_transport()(ws_url(ex)) as conn,
        trio.open_nursery() as nursery,
    ):

        async def requests() -> None:
            for request_id in range(1, 4):  # under spot's and futures' 5 requests per second
                await trio.sleep(0.15)
                await conn.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": request_id}))

        nursery.start_soon(requests)
        replies, frames = [], 0
        until = trio.current_time() + 0.6
        while len(replies) < 3 or trio.current_time() < until:
            message = json.loads(await conn.receive())
            if "id" in message:
                replies.append(message["id"])
            else:
                frames += 1
        candles = await closed_candles(conn, "usdt_futures", 2)  # still alive
    assert replies == [1, 2, 3]
    assert frames > 50
    assert len(candles) == 2
    assert ex.stats["ws_connections"] == 1  # never reconnected


async def test_drop_fault_raises_connection_lost(make_transport: Callable[..., Transport]) -> None:
    async with (
        open_exchange(seed=1, speed=FAST, start=T0, faults="drop=1") as ex,
        make_transport(disconnect_timeout=0.5)(ws_url(ex)) as conn,
    ):
        count, _ = await read_until_lost(conn)
        with pytest.raises(ConnectionLost):  # and again: the connection stays lost
            await conn.receive()
        with pytest.raises(ConnectionLost):
            await conn.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
    assert count == 0
    assert ex.stats["fault_drop"] == 1 and ex.stats["drop_fallback_close"] == 0  # a real TCP cut


async def test_close_fault_raises_connection_lost(make_transport: Callable[..., Transport]) -> None:
    async with (
        open_exchange(seed=1, speed=FAST, start=T0, faults="close=1") as ex,
        make_transport()(ws_url(ex)) as conn,
    ):
        count, lost = await read_until_lost(conn)
    assert count == 0
    assert "1000" in str(lost)
    assert ex.stats["fault_close"] == 1


async def test_connecting_to_a_closed_port_fails_fast(make_transport: Callable[..., Transport]) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/stream?streams=btcusdt@kline_1m"
    started = trio.current_time()
    with trio.fail_after(2), pytest.raises(ConnectionLost) as caught:
        async with make_transport()(url):
            pass
    assert trio.current_time() - started < 1
    assert f"127.0.0.1:{port}/stream" in str(caught.value)
    assert "streams=" not in str(caught.value)  # the URL without its query


async def test_a_rejected_handshake_raises_connection_lost(make_transport: Callable[..., Transport]) -> None:
    async with open_exchange(seed=1, speed=FAST, start=T0) as ex:
        url = ex.endpoints["spot"]["ws"] + "/nowhere?streams=btcusdt@kline_1m"  # HTTP 403
        with pytest.raises(ConnectionLost, match="/spot/nowhere"):
            async with make_transport()(url):
                pass


async def test_a_receive_cancelled_while_waiting_loses_nothing(make_transport: Callable[..., Transport]) -> None:
    # No stream yet: the first receive waits, and its timeout cancels it.
    async with (
        open_exchange(seed=1, speed=FAST, start=T0 + 1) as ex,
        make_transport()(ws_url(ex, streams="")) as conn,
    ):
        with trio.move_on_after(0.05) as scope:
            await conn.receive()
        assert scope.cancelled_caught
        await conn.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1}))
        assert json.loads(await conn.receive()) == {"result": None, "id": 1}
        # Now hundreds of receives cut short at random instants, mid-wait or not: every closed
        # candle still arrives, once and in order.
        rng = random.Random(7)
        parse = frame_parser("usdt_futures")
        candles: list[Candle] = []
        cancelled = 0
        while len(candles) < 30:
            with trio.move_on_after(rng.choice((0.0, 0.0001, 0.0005, 0.002))) as scope:
                frame = await conn.receive()
            if scope.cancelled_caught:
                cancelled += 1
                continue
            candle = parse(frame)
            if candle is not None:
                candles.append(candle)
    assert cancelled > 10
    assert_consecutive(candles, ex)


async def test_binary_garbage_comes_back_as_bytes(make_transport: Callable[..., Transport]) -> None:
    async with (
        open_exchange(seed=1, speed=FAST, start=T0, faults="garbage=1") as ex,
        make_transport()(ws_url(ex)) as conn,
    ):
        received = [await conn.receive() for _ in range(60)]
    binary = [m for m in received if isinstance(m, bytes)]
    assert binary and all(m == GARBAGE_BYTES for m in binary)
    assert all(isinstance(m, str) for m in received if m != GARBAGE_BYTES)


@pytest.mark.parametrize("faults", ["", "drop=0.03,close=0.03,garbage=0.05"])
async def test_a_stream_connection_records_candles(make_transport: Callable[..., Transport], faults: str) -> None:
    settings = StreamSettings(receive_timeout=2, backoff_initial=0.01, backoff_max=0.05, silence_min=60)
    async with open_exchange(seed=2, speed=FAST, start=T0 + 1, faults=faults) as ex:
        market = ex.markets["usdt_futures"]
        send, receive = trio.open_memory_channel[Sequence[Candle]](1000)
        streams = [stream_name("BTCUSDT", "1m"), stream_name("ETHUSDT", "1m")]
        conn = StreamConnection("um-0", market, streams, send, settings=settings, transport=make_transport())
        candles: list[Candle] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            # With faults: go on until the connection has come back a few times.
            while len(candles) < 40 or (faults and conn.stats.reconnects < 3):
                candles.extend(await receive.receive())
            nursery.cancel_scope.cancel()
        async for batch in receive:  # sent before the cancel landed: in the channel, not lost
            candles.extend(batch)
    btc = [c for c in candles if c.symbol == "BTCUSDT"]
    if not faults:
        assert_consecutive(btc, ex)
        assert conn.stats.reconnects == 0
    else:
        # Reconnects may miss candles (the recorder backfills them); what arrives is the truth.
        for symbol in ("BTCUSDT", "ETHUSDT"):
            got = [c for c in candles if c.symbol == symbol]
            truth = set(ex.ground_truth("usdt_futures", symbol, "1m", T0, got[-1].open_time + 60_000))
            assert set(got) <= truth
        assert conn.stats.malformed > 0
    assert conn.stats.candles == len(candles)


# --- against a scripted server ----------------------------------------------------------------


@dataclass
class ServerLog:
    """What the scripted server saw: events the scripts note, and the close codes clients sent."""

    events: list[Any] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)


@dataclass
class Peer:
    """The server side of one connection, driven by a test script with wsproto."""

    stream: trio.abc.Stream
    log: ServerLog
    ws: wsproto.WSConnection = field(default_factory=lambda: wsproto.WSConnection(wsproto.ConnectionType.SERVER))
    pending: list[wse.Event] = field(default_factory=list)

    async def send(self, *events: wse.Event) -> None:
        await self.stream.send_all(b"".join(self.ws.send(e) for e in events))

    async def next_event(self) -> wse.Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise EOFError
        return self.pending.pop(0)

    async def finish(self) -> None:
        """Answer the client's close frame, if it sends one, then hang up."""
        with suppress(EOFError, trio.BrokenResourceError, wsproto.utilities.LocalProtocolError):
            while not isinstance(event := await self.next_event(), wse.CloseConnection):
                pass
            self.log.close_codes.append(event.code)
            self.log.closed.set()
            await self.send(event.response())


Script = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def scripted_server(
    script: Script, *, handshake: bool = True, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, ServerLog]]:
    """A WebSocket server on a loopback port that runs ``script`` on each connection.

    Yields the URL (``wss://localhost:…`` with ``tls``) and a log the scripts append to. After the
    script, the server answers the client's close and hangs up (within 2 s). The listener closes when
    the block ends.
    """
    log = ServerLog()

    async def handler(stream: trio.abc.Stream) -> None:
        peer = Peer(stream, log=log)
        async with stream:
            with suppress(EOFError, trio.BrokenResourceError):
                if handshake:
                    request = await peer.next_event()
                    assert isinstance(request, wse.Request)
                    await peer.send(wse.AcceptConnection())
                await script(peer)
                with trio.move_on_after(2):
                    await peer.finish()

    async with trio.open_nursery() as nursery:
        if tls is None:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        else:
            serve = functools.partial(trio.serve_ssl_over_tcp, handler, 0, tls, host="127.0.0.1")
            listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1] if tls else listeners[0].socket.getsockname()[1]
        where = f"wss://localhost:{port}" if tls else f"ws://127.0.0.1:{port}"
        yield f"{where}/stream?streams=btcusdt@kline_1m", log
        nursery.cancel_scope.cancel()


async def test_pings_are_answered_with_their_payload(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        for n in range(3):
            await peer.send(wse.Ping(payload=b"p%d" % n))
            pong = await peer.next_event()
            peer.log.events.append(pong)
            await peer.send(wse.TextMessage(data=f"after pong {n}"))

    async with scripted_server(script) as (url, log), make_transport()(url) as conn:
        assert [await conn.receive() for _ in range(3)] == ["after pong 0", "after pong 1", "after pong 2"]
    assert [e.payload for e in log.events if isinstance(e, wse.Pong)] == [b"p0", b"p1", b"p2"]


async def test_fragmented_messages_are_reassembled(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(
            wse.TextMessage(data='{"a":', message_finished=False),
            wse.Ping(payload=b"between"),  # control frames may come between fragments
            wse.TextMessage(data=' "é"}', message_finished=True),
            wse.BytesMessage(data=b"\x00\x01", message_finished=False),
            wse.BytesMessage(data=b"\x02", message_finished=True),
            wse.TextMessage(data="whole"),
        )

    async with scripted_server(script) as (url, _), make_transport()(url) as conn:
        assert [await conn.receive() for _ in range(3)] == ['{"a": "é"}', b"\x00\x01\x02", "whole"]


async def test_a_message_over_one_mib_fails_the_connection(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(wse.TextMessage(data="x" * (1 << 20)), wse.TextMessage(data="y" * ((1 << 20) + 1)))

    async with scripted_server(script) as (url, _), make_transport(disconnect_timeout=1)(url) as conn:
        assert await conn.receive() == "x" * (1 << 20)  # exactly 1 MiB is allowed
        with pytest.raises(ConnectionLost):
            await conn.receive()


async def test_invalid_utf8_in_a_text_frame_fails_the_connection(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(wse.TextMessage(data="fine"))
        await peer.stream.send_all(b"\x81\x02\xff\xfe")  # a text frame that is not UTF-8

    async with scripted_server(script) as (url, _), make_transport(disconnect_timeout=1)(url) as conn:
        assert await conn.receive() == "fine"
        with pytest.raises(ConnectionLost):
            await conn.receive()


async def test_leaving_sends_a_close_frame(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(wse.TextMessage(data="hello"))

    async with scripted_server(script) as (url, log):
        async with make_transport()(url) as conn:
            assert await conn.receive() == "hello"
        with trio.fail_after(2):
            await log.closed.wait()
    assert log.close_codes == [1000]


async def test_leaving_under_cancellation_still_sends_the_close_frame(
    make_transport: Callable[..., Transport],
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(wse.TextMessage(data="hello"))

    async with scripted_server(script) as (url, log):
        with trio.CancelScope() as scope:
            async with make_transport()(url) as conn:
                assert await conn.receive() == "hello"
                scope.cancel()  # the exit runs cancelled, as when a connection task is stopped
        with trio.fail_after(2):
            await log.closed.wait()
    assert log.close_codes == [1000]


async def test_a_ping_during_the_close_handshake_is_no_error(
    make_transport: Callable[..., Transport], caplog: pytest.LogCaptureFixture
) -> None:
    # The server pings after the client's close frame, then answers the close: wsproto refuses to
    # send a pong once closing, which must neither escape nor hold the exit up.
    async def script(peer: Peer) -> None:
        await peer.send(wse.TextMessage(data="hello"))
        while not isinstance(event := await peer.next_event(), wse.CloseConnection):
            pass
        peer.log.close_codes.append(event.code)
        await peer.stream.send_all(b"\x89\x04late")  # a raw ping: the server's wsproto would refuse it too
        await trio.sleep(0.05)
        await peer.send(event.response())
        peer.log.closed.set()

    exited = False
    async with scripted_server(script) as (url, log):
        with trio.fail_after(2):
            async with make_transport(disconnect_timeout=1)(url) as conn:
                assert await conn.receive() == "hello"
            exited = True  # trio-websocket alone lets a stray Cancelled out of its exit here
            await log.closed.wait()
    assert exited
    assert log.close_codes[0] == 1000  # (the server's own finish() may note the hang-up after it)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_buffered_messages_are_returned_without_a_checkpoint(
    make_transport: Callable[..., Transport],
) -> None:
    if make_transport is trio_websocket_transport:
        pytest.skip("trio-websocket hands messages over a memory channel: a checkpoint each")

    async def script(peer: Peer) -> None:
        await peer.send(*(wse.TextMessage(data=f"m{i}") for i in range(20)))  # one write, one read

    async with scripted_server(script) as (url, _), make_transport()(url) as conn:
        got = [await conn.receive()]
        with trio.CancelScope() as scope:
            scope.cancel()
            while len(got) < 20:  # a checkpoint would raise Cancelled here
                got.append(await conn.receive())
        assert not scope.cancelled_caught
    assert got == [f"m{i}" for i in range(20)]


async def test_a_peer_that_never_closes_holds_the_exit_for_disconnect_timeout_at_most(
    make_transport: Callable[..., Transport],
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(wse.TextMessage(data="hello"))
        await trio.sleep_forever()  # never reads, never answers the close, never hangs up

    async with scripted_server(script) as (url, _):
        started = time.monotonic()
        with suppress(ConnectionLost):  # trio-websocket reports the close timeout; websockets does not
            async with make_transport(disconnect_timeout=0.2)(url) as conn:
                assert await conn.receive() == "hello"
                started = time.monotonic()
        assert time.monotonic() - started < 1.0


async def test_a_send_to_a_peer_that_stopped_reading_fails_after_disconnect_timeout(
    make_transport: Callable[..., Transport],
) -> None:
    async def script(peer: Peer) -> None:
        await trio.sleep_forever()  # reads nothing: the socket buffers fill up

    async def flood(conn: Connection) -> None:
        for _ in range(10_000):
            await conn.send("x" * 65536)

    async with scripted_server(script) as (url, _), make_transport(disconnect_timeout=0.2)(url) as conn:
        with trio.fail_after(10), pytest.raises(ConnectionLost, match="in time"):
            await flood(conn)
        with pytest.raises(ConnectionLost):  # a half-written frame: the connection is unusable now
            await conn.receive()


async def test_a_server_that_never_answers_the_upgrade_times_out(make_transport: Callable[..., Transport]) -> None:
    async def script(peer: Peer) -> None:
        await trio.sleep_forever()

    async with scripted_server(script, handshake=False) as (url, _):
        started = time.monotonic()
        with trio.fail_after(2), pytest.raises(ConnectionLost, match=r"127\.0\.0\.1"):
            async with make_transport(connect_timeout=0.2)(url):
                pass
        assert 0.2 <= time.monotonic() - started < 1.0


async def test_a_receive_cancelled_with_messages_buffered_keeps_them(
    make_transport: Callable[..., Transport],
) -> None:
    # Several frames in one TCP segment: whatever a cancelled receive did, all of them come out in order.
    async def script(peer: Peer) -> None:
        await peer.send(*(wse.TextMessage(data=f"m{i}") for i in range(50)))

    async with scripted_server(script) as (url, _), make_transport()(url) as conn:
        got: list[str | bytes] = []
        while len(got) < 50:
            with trio.CancelScope() as scope:
                scope.cancel()  # already cancelled: a receive that has to wait raises at once
                got.append(await conn.receive())
            if len(got) < 50:
                got.append(await conn.receive())
    assert got == [f"m{i}" for i in range(50)]


async def test_receive_batch_hands_over_a_burst_in_order_and_cancelled_loses_nothing(
    make_transport: Callable[..., Transport],
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(*(wse.TextMessage(data=f"m{i}") for i in range(200)))  # one burst
        await trio.sleep(0.05)
        await peer.send(wse.TextMessage(data="late"))

    async with scripted_server(script) as (url, _), make_transport()(url) as conn:
        assert isinstance(conn, BatchConnection)
        got = [await conn.receive()]  # a single receive in between takes one message, no more
        reads = 0
        while len(got) < 200:
            got += await conn.receive_batch()
            reads += 1
        assert got == [f"m{i}" for i in range(200)]
        # One batch per socket read (the split is the kernel's). trio-websocket's reader task hands
        # messages over one task switch at a time; its batch goes on while each switch brings one.
        assert reads < 20
        with trio.move_on_after(0.01) as scope:
            await conn.receive_batch()  # nothing buffered: it waits, and its cancellation drops nothing
        assert scope.cancelled_caught
        assert await conn.receive_batch() == ["late"]


class CountingStream(trio.abc.Stream):
    """A stream that counts the reads made of it (the wake-ups a paced feed costs)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner, self.reads = inner, 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self.reads += 1
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_paced_feed_is_read_once_per_read_interval_at_most() -> None:
    # Frames trickle in 2 ms apart, as at Binance's paced rates: each read takes what came meanwhile.
    interval = 0.05

    async def script(peer: Peer) -> None:
        for i in range(40):
            await peer.send(wse.TextMessage(data=f"m{i}"))
            await trio.sleep(0.002)

    async with scripted_server(script) as (url, _), websockets_transport(read_interval=interval)(url) as conn:
        counting = CountingStream(conn._stream)  # type: ignore[attr-defined]
        conn._stream = counting  # type: ignore[attr-defined]
        started = trio.current_time()
        got: list[str | bytes] = []
        while len(got) < 40:
            got += await conn.receive_batch()  # type: ignore[attr-defined]
        elapsed, reads = trio.current_time() - started, counting.reads  # before the close handshake's reads
    assert got == [f"m{i}" for i in range(40)]
    # Never two reads of a drained socket within the interval, however the machine's load spreads them.
    assert reads <= elapsed / interval + 1, (reads, elapsed)


async def test_a_fast_stream_is_read_without_waiting_out_the_interval() -> None:
    # A burst (a backlog, a blaster) must not be capped at one socket buffer per read interval.
    payload = "x" * 400

    async def script(peer: Peer) -> None:
        for _ in range(10):
            await peer.send(*(wse.TextMessage(data=payload) for _ in range(500)))  # 2 MB in all

    async with scripted_server(script) as (url, _), websockets_transport(read_interval=1.0)(url) as conn:
        started = trio.current_time()
        count = 0
        while count < 5000:
            count += len(await conn.receive_batch())  # type: ignore[attr-defined]
        elapsed = trio.current_time() - started
    assert count == 5000
    # Paced like a slow feed, the 2 MB take one socket buffer per interval: over 10 s (measured). A loaded
    # machine can stall the sender once or twice, which looks like a slow feed for one interval each.
    assert elapsed < 4.0, elapsed


# --- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a server certificate for ``localhost`` only (not 127.0.0.1), by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=20)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")


def server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context


async def test_tls_with_sni_verification_and_pings(
    make_transport: Callable[..., Transport], tls_files: TlsFiles
) -> None:
    names: list[str | None] = []
    server = server_context(tls_files)
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]

    async def script(peer: Peer) -> None:
        await peer.send(wse.Ping(payload=b"tls"))
        peer.log.events.append(await peer.next_event())
        await peer.send(*(wse.TextMessage(data=f"m{i}") for i in range(100)))

    client = ssl.create_default_context(cafile=str(tls_files.ca))
    async with scripted_server(script, tls=server) as (url, log):
        async with make_transport(ssl_context=client)(url) as conn:
            assert [await conn.receive() for _ in range(100)] == [f"m{i}" for i in range(100)]
        with trio.fail_after(2):
            await log.closed.wait()
    assert names == ["localhost"]
    assert [e.payload for e in log.events if isinstance(e, wse.Pong)] == [b"tls"]
    assert log.close_codes == [1000]


@pytest.mark.parametrize("case", ["untrusted", "wrong name"])
async def test_tls_refuses_a_certificate_it_cannot_verify(
    make_transport: Callable[..., Transport], tls_files: TlsFiles, case: str
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(wse.TextMessage(data="should not arrive"))

    # Untrusted: the system's trust store does not know the test CA. Wrong name: the certificate is for
    # localhost, the URL says 127.0.0.1.
    client = None if case == "untrusted" else ssl.create_default_context(cafile=str(tls_files.ca))
    async with scripted_server(script, tls=server_context(tls_files)) as (url, _):
        if case == "wrong name":
            url = url.replace("localhost", "127.0.0.1")
        with trio.fail_after(5), pytest.raises(ConnectionLost, match="cannot connect") as caught:
            async with make_transport(ssl_context=client, connect_timeout=1)(url):
                pass
    assert "certificate verify failed" in str(caught.value)


# --- the shared error mapping -------------------------------------------------------------------


def lost(exc: BaseException) -> ConnectionLost:
    return ConnectionLost(f"lost: {describe(exc)}")


def test_map_errors_raises_ours_chained_and_lets_the_rest_through() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(ConnectionLost, match="Connection reset by peer") as caught, map_errors({OSError: lost}):
        raise reset
    assert caught.value.__cause__ is reset
    with pytest.raises(KeyError), map_errors({OSError: lost}):
        raise KeyError("a bug stays a bug")
    mine = ConnectionLost("ours already")
    with pytest.raises(ConnectionLost) as caught, map_errors({OSError: lost}):
        raise mine
    assert caught.value is mine


def test_map_errors_unwraps_a_nursery_group_of_one_error() -> None:
    tls = trio.BrokenResourceError()
    tls.__cause__ = ssl.SSLError(1, "certificate verify failed")
    with pytest.raises(ConnectionLost, match="certificate verify failed"), map_errors({STREAM_ERRORS: lost}):
        raise BaseExceptionGroup("nursery", [tls])
    bug = ValueError("a bug")
    with pytest.raises(ValueError, match="a bug") as caught, map_errors({STREAM_ERRORS: lost}):
        raise ExceptionGroup("nursery", [bug])
    assert caught.value is bug  # unwrapped, not mapped
    with pytest.raises(ExceptionGroup), map_errors({STREAM_ERRORS: lost}):
        raise ExceptionGroup("nursery", [bug, KeyError("another")])  # several real errors: kept whole


async def test_map_errors_passes_a_cancellation_through() -> None:
    with trio.CancelScope() as scope, map_errors({STREAM_ERRORS: lost}):
        scope.cancel()
        await trio.sleep_forever()
    assert scope.cancelled_caught


def test_the_trio_websocket_transport_keeps_its_old_import_path() -> None:
    from trio_klines.net import transport
    from trio_klines.net import trio_websocket_transport as module

    assert transport.trio_websocket_transport is module.trio_websocket_transport is trio_websocket_transport
    assert transport.MESSAGE_QUEUE_SIZE == module.MESSAGE_QUEUE_SIZE
    with pytest.raises(AttributeError):
        transport.no_such_name  # noqa: B018
