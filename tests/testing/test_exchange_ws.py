"""The fake exchange's WebSocket streams, driven with a plain trio-websocket client over loopback."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import wsproto
import wsproto.events
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from trio_klines.core.parse import Candle, parse_frame, parse_rest_klines
from trio_klines.errors import ServerShutdown
from trio_klines.testing import FakeExchange, open_exchange

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
FAST = 6000.0  # a 1m candle every 10 ms


def url(ex: FakeExchange, market: str, path: str) -> str:
    return ex.endpoints[market]["ws"] + path


@asynccontextmanager
async def connect(ex: FakeExchange, market: str, path: str) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(url(ex, market, path), disconnect_timeout=2) as ws:
        yield ws


async def receive(ws: WebSocketConnection, count: int) -> list[str | bytes]:
    return [await ws.get_message() for _ in range(count)]


async def closed_candles(ws: WebSocketConnection, market: str, count: int) -> list[Candle]:
    candles: list[Candle] = []
    while len(candles) < count:
        candle = parse_frame(await ws.get_message(), market)
        if candle is not None:
            candles.append(candle)
    return candles


async def request(ws: WebSocketConnection, **body: Any) -> dict[str, Any]:
    """Send a control request and return its reply, skipping the data frames before it."""
    await ws.send_message(json.dumps(body))
    while True:
        message = json.loads(await ws.get_message())
        if "result" in message or "error" in message:
            return message


async def collect_until_closed(ws: WebSocketConnection) -> tuple[list[str | bytes], ConnectionClosed]:
    messages: list[str | bytes] = []
    try:
        while True:
            messages.append(await ws.get_message())
    except ConnectionClosed as exc:
        return messages, exc


def key(frame: str | bytes) -> tuple[int, bool]:
    k = json.loads(frame)["data"]["k"]
    return k["t"], k["x"]


# --- formats and data -------------------------------------------------------------------------


async def test_combined_stream_sends_growing_updates_then_the_ground_truth() -> None:
    # A 1m candle every 20 ms, open updates at least 2 ms apart: about ten per candle.
    async with open_exchange(seed=3, speed=3000, start=T0 + 1) as ex:
        path = "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        async with connect(ex, "usdt_futures", path) as ws:
            frames: list[dict[str, Any]] = []
            while sum(f["data"]["k"]["x"] for f in frames) < 10:
                frames.append(json.loads(await ws.get_message()))
        assert {f["stream"] for f in frames} == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
        for stream, symbol in (("btcusdt@kline_1m", "BTCUSDT"), ("ethusdt@kline_1m", "ETHUSDT")):
            mine = [f["data"] for f in frames if f["stream"] == stream]
            assert all(d["e"] == "kline" and d["s"] == symbol and d["k"]["s"] == symbol for d in mine)
            closes = [d for d in mine if d["k"]["x"]]
            first = closes[0]["k"]["t"]
            assert [d["k"]["t"] for d in closes] == [first + i * 60_000 for i in range(len(closes))]
            for close in closes[1:]:  # the first candle was joined part-way
                updates = [d for d in mine if d["k"]["t"] == close["k"]["t"] and not d["k"]["x"]]
                assert len(updates) >= 2, "several open updates precede each close"
                volumes = [float(d["k"]["v"]) for d in updates] + [float(close["k"]["v"])]
                assert volumes == sorted(volumes)
                assert close["E"] == close["k"]["T"] + 1
            parsed = [parse_frame(json.dumps({"stream": stream, "data": d}), "usdt_futures") for d in closes]
            assert parsed == ex.ground_truth("usdt_futures", symbol, "1m", first, first + len(closes) * 60_000)


async def test_raw_streams_send_bare_events() -> None:
    async with open_exchange(seed=3, speed=FAST, start=T0) as ex:
        async with connect(ex, "spot", "/ws/bnbusdt@kline_1m/ethbtc@kline_3m") as ws:
            messages = await receive(ws, 30)
            candles = await closed_candles(ws, "spot", 4)
        events = [json.loads(m) for m in messages]
        assert all(set(e) == {"e", "E", "s", "k"} for e in events)
        assert {e["s"] for e in events} == {"BNBUSDT", "ETHBTC"}
        for c in candles:
            assert [c] == ex.ground_truth("spot", c.symbol, c.interval, c.open_time, c.open_time + 1)


async def test_live_subscribe_unsubscribe_and_list() -> None:
    async with open_exchange(seed=3, speed=FAST, start=T0) as ex, connect(ex, "coin_futures", "/stream") as ws:
        with trio.move_on_after(0.05):
            assert await ws.get_message() is None, "nothing subscribed: nothing sent"
        streams = ["btcusd_perp@kline_1m", "ethusd_perp@kline_1m"]
        assert await request(ws, method="SUBSCRIBE", params=streams, id=1) == {"result": None, "id": 1}
        got = {json.loads(m)["stream"] for m in await receive(ws, 20)}
        assert got == set(streams)
        assert await request(ws, method="LIST_SUBSCRIPTIONS", id=2) == {"result": streams, "id": 2}
        assert await request(ws, method="UNSUBSCRIBE", params=["btcusd_perp@kline_1m"], id=3) == {
            "result": None,
            "id": 3,
        }
        after = {json.loads(m)["stream"] for m in await receive(ws, 20)}
        assert after == {"ethusd_perp@kline_1m"}
        await trio.sleep(0.2)  # the rate limit: 10 messages a second
        assert await request(ws, method="SET_PROPERTY", params=["combined", False], id=4) == {"result": None, "id": 4}
        assert "stream" not in json.loads(await ws.get_message())
        reply = await request(ws, method="SUBSCRIBE", params=["btcusd_perp@kline_1m"], id="x1")
        assert reply == {
            "error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
            "id": "x1",
        }
        await ws.send_message("{oops")
        while "error" not in (reply := json.loads(await ws.get_message())):
            pass
        assert reply["error"]["code"] == 3 and reply["id"] is None


async def test_unknown_symbols_are_accepted_and_never_send() -> None:
    async with open_exchange(seed=3, speed=FAST, start=T0) as ex:
        path = "/stream?streams=nosuchusdt@kline_1m/btcusdt@kline_1m/btcusdt@depth"
        async with connect(ex, "spot", path) as ws:
            streams = {json.loads(m)["stream"] for m in await receive(ws, 40)}
            assert streams == {"btcusdt@kline_1m"}
            reply = await request(ws, method="LIST_SUBSCRIPTIONS", id=7)
            assert reply["result"] == ["nosuchusdt@kline_1m", "btcusdt@kline_1m", "btcusdt@depth"]


async def test_usdm_klines_flow_only_under_market() -> None:
    async with open_exchange(seed=3, speed=FAST, start=T0) as ex:
        base = ex.endpoints["usdt_futures"]["ws"].removesuffix("/market")
        for path in ("/stream", "/ws", "/public/stream"):
            async with open_websocket_url(base + path, disconnect_timeout=2) as ws:
                reply = await request(ws, method="SUBSCRIBE", params=["btcusdt@kline_1m"], id=1)
                assert reply == {"result": None, "id": 1}
                with trio.move_on_after(0.1) as silent:  # ten 1m candles of exchange time
                    await ws.get_message()
                assert silent.cancelled_caught, f"{path} must not deliver klines"
        async with connect(ex, "usdt_futures", "/stream") as ws:
            await request(ws, method="SUBSCRIBE", params=["btcusdt@kline_1m"], id=1)
            assert json.loads(await ws.get_message())["stream"] == "btcusdt@kline_1m"


async def test_unknown_paths_are_rejected() -> None:
    async with open_exchange() as ex:
        for target in (url(ex, "spot", "/market/stream"), url(ex, "coin_futures", "/nowhere")):
            with pytest.raises(ConnectionRejected):
                async with open_websocket_url(target):
                    pass


async def test_websocket_and_rest_agree_candle_for_candle() -> None:
    async with open_exchange(seed=9, speed=FAST, start=T0 + 7) as ex:
        async with connect(ex, "usdt_futures", "/stream?streams=btcusdt@kline_1m/ethusdt@kline_3m") as ws:
            received = await closed_candles(ws, "usdt_futures", 14)
        async with httpx.AsyncClient() as client:
            market = ex.markets["usdt_futures"]
            for symbol, interval in (("BTCUSDT", "1m"), ("ETHUSDT", "3m")):
                ws_candles = [c for c in received if c.symbol == symbol]
                first = ws_candles[0].open_time
                params = {"symbol": symbol, "interval": interval, "startTime": first, "limit": len(ws_candles)}
                response = await client.get(market.rest_url + market.klines_path, params=params)
                rest = parse_rest_klines(response.content, "usdt_futures", symbol, interval)
                assert rest == ws_candles and len(rest) >= 3


async def test_outage_sends_nothing_for_its_candles() -> None:
    outage = (T0 + 3 * 60_000, T0 + 6 * 60_000)
    # A 1m candle every 20 ms: the client joins well before the outage.
    async with open_exchange(seed=3, speed=3000, start=T0, faults=f"outage={outage[0]}-{outage[1]}") as ex:
        async with connect(ex, "spot", "/stream?streams=btcusdt@kline_1m") as ws:
            frames = []
            while not frames or key(frames[-1]) < (T0 + 8 * 60_000, True):
                frames.append(await ws.get_message())
        times = sorted({key(f)[0] for f in frames})
        assert times[0] < outage[0]
        assert times == [t for t in range(times[0], T0 + 9 * 60_000, 60_000) if not outage[0] <= t < outage[1]]


async def test_a_fast_exchange_emits_every_close_in_order() -> None:
    # 50 one-minute candles close per wall-clock millisecond: far more than one per tick.
    async with (
        open_exchange(seed=3, speed=3_000_000, start=T0) as ex,
        connect(ex, "usdt_futures", "/stream?streams=btcusdt@kline_1m") as ws,
    ):
        candles = await closed_candles(ws, "usdt_futures", 400)
    first = candles[0].open_time
    assert [c.open_time for c in candles] == [first + i * 60_000 for i in range(400)]
    assert candles == ex.ground_truth("usdt_futures", "BTCUSDT", "1m", first, first + 400 * 60_000)


async def test_an_idle_exchange_does_not_burn_cpu() -> None:
    async with (
        open_exchange(seed=3, speed=1, start=T0 + 5_000) as ex,
        connect(ex, "spot", "/stream?streams=btcusdt@kline_1d"),
    ):
        cpu = time.process_time()
        await trio.sleep(0.3)
        assert time.process_time() - cpu < 0.05


# --- limits, pings and shutdowns --------------------------------------------------------------


async def test_too_many_streams_close_the_connection() -> None:
    async with open_exchange(start=T0) as ex, connect(ex, "coin_futures", "/stream") as ws:
        limit = ex.markets["coin_futures"].max_streams_per_connection
        streams = [f"sym{i:04d}usd_perp@kline_1m" for i in range(limit)]
        assert await request(ws, method="SUBSCRIBE", params=streams, id=1) == {"result": None, "id": 1}
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": ["one@kline_1m"], "id": 2}))
        _, closed = await collect_until_closed(ws)
        assert closed.reason.code == 1008
        assert ex.stats["ws_stream_limit"] == 1


async def test_too_many_messages_a_second_close_the_connection() -> None:
    async with open_exchange(start=T0) as ex, connect(ex, "spot", "/ws") as ws:
        for i in range(6):  # spot allows 5 a second
            await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        messages, closed = await collect_until_closed(ws)
        assert [json.loads(m)["id"] for m in messages] == [0, 1, 2, 3, 4]
        assert closed.reason.code == 1008 and ex.stats["ws_rate_limited"] == 1


async def test_server_pings() -> None:
    # Spot pings every 20 s; at speed 400 that is every 50 ms of wall-clock time.
    async with open_exchange(speed=400, start=T0) as ex:
        host, port = ex.endpoints["spot"]["ws"].removeprefix("ws://").split("/")[0].split(":")
        # A bare wsproto client: trio-websocket answers pings without telling its user.
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(client.send(wsproto.events.Request(host=host, target="/spot/ws")))
            pings = 0
            with trio.fail_after(5):
                while pings < 2:
                    client.receive_data(await stream.receive_some())
                    for event in client.events():
                        if isinstance(event, wsproto.events.Ping):
                            pings += 1
                            await stream.send_all(client.send(event.response()))


@pytest.mark.parametrize(("market", "announced"), [("spot", True), ("coin_futures", False)])
async def test_cutoff_closes_every_connection_and_spot_announces_it(market: str, announced: bool) -> None:
    # 600 exchange seconds = 100 ms; spot announces serverShutdown 300 exchange seconds before the cut.
    async with open_exchange(seed=3, speed=FAST, start=T0, faults="cutoff=600", shutdown_notice=300) as ex:
        stream = "btcusdt@kline_1m" if market == "spot" else "btcusd_perp@kline_1m"
        async with connect(ex, market, f"/stream?streams={stream}") as ws:
            started = time.perf_counter()
            messages, closed = await collect_until_closed(ws)
            assert time.perf_counter() - started < 1
        assert closed.reason.code == 1000
        notices = [i for i, m in enumerate(messages) if "serverShutdown" in str(m)]
        assert len(notices) == (1 if announced else 0)
        if announced:
            assert json.loads(messages[notices[0]])["stream"] == "!serverShutdown"
            with pytest.raises(ServerShutdown):
                parse_frame(messages[notices[0]], market)
            assert notices[0] < len(messages) - 1, "frames keep coming until the cut"
        assert ex.stats["fault_cutoff"] == 1


async def test_shutting_down_closes_connections_with_an_announcement_on_spot() -> None:
    results: dict[str, tuple[list[str | bytes], ConnectionClosed]] = {}
    started = trio.Event()

    async def client(ws_url: str, market: str) -> None:
        async with open_websocket_url(ws_url, disconnect_timeout=2) as ws:
            started.set()
            results[market] = await collect_until_closed(ws)

    async with trio.open_nursery() as nursery, open_exchange(seed=3, speed=FAST, start=T0) as ex:
        nursery.start_soon(client, url(ex, "spot", "/ws/btcusdt@kline_1m"), "spot")
        nursery.start_soon(client, url(ex, "usdt_futures", "/ws/btcusdt@kline_1m"), "usdt_futures")
        await started.wait()
        await trio.sleep(0.05)
    spot_messages, spot_closed = results["spot"]
    assert json.loads(spot_messages[-1])["e"] == "serverShutdown" and spot_closed.reason.code == 1001
    futures_messages, futures_closed = results["usdt_futures"]
    assert "serverShutdown" not in str(futures_messages[-1]) and futures_closed.reason.code == 1001
