"""Test doubles shared by the unit tests: a scripted WebSocket transport and an in-memory sink."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
import trio

from trio_klines.core.backoff import Backoff
from trio_klines.core.markets import MARKETS, close_time, iter_open_times
from trio_klines.core.parse import Candle
from trio_klines.errors import ConnectionLost
from trio_klines.net.rest import RestClient, WeightBudget
from trio_klines.net.transport import Connection


def kline_frame(symbol: str, interval: str, open_time: int, *, closed: bool = True, close: str = "2") -> str:
    """A combined-stream kline frame as Binance sends it."""
    k = {"t": open_time, "T": close_time(interval, open_time), "s": symbol, "i": interval, "f": 1, "L": 2}
    k |= {"o": "2", "c": close, "h": "3", "l": "1", "v": "5", "n": 9, "x": closed, "q": "10", "V": "1", "Q": "2"}
    stream = f"{symbol.lower()}@kline_{interval}"
    data = {"e": "kline", "E": open_time + 1, "s": symbol, "k": k}
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


class FakeConnection:
    """One scripted connection: the test pushes frames in, reads what the client sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[dict[str, object]] = []
        self.closed = False
        self._send, self._receive = trio.open_memory_channel[str | bytes | None](100)

    async def push(self, frame: str | bytes) -> None:
        await self._send.send(frame)

    def cut(self) -> None:
        """The server drops the connection."""
        self._send.send_nowait(None)

    async def receive(self) -> str | bytes:
        if self.closed:
            raise ConnectionLost("closed")
        frame = await self._receive.receive()
        if frame is None:
            self.closed = True
            raise ConnectionLost("cut by the server")
        return frame

    async def send(self, message: str) -> None:
        if self.closed:
            raise ConnectionLost("closed")
        self.sent.append(json.loads(message))


class FakeTransport:
    """Hands out :class:`FakeConnection`s; ``refuse`` makes the next connects fail."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self.attempts: list[float] = []
        self.refuse = 0
        self.opened = trio.Event()

    @asynccontextmanager
    async def __call__(self, url: str) -> AsyncIterator[Connection]:
        self.attempts.append(trio.current_time())
        if self.refuse:
            self.refuse -= 1
            raise ConnectionLost("connection refused")
        conn = FakeConnection(url)
        self.connections.append(conn)
        self.opened.set()
        self.opened = trio.Event()
        try:
            yield conn
        finally:
            conn.closed = True

    async def next_connection(self, count: int) -> FakeConnection:
        """Wait until at least ``count`` connections have been opened; return the last."""
        while len(self.connections) < count:
            await self.opened.wait()
        return self.connections[count - 1]


class MemorySink:
    """A store stand-in: keeps every appended batch; ``fail`` makes the next appends raise."""

    def __init__(self) -> None:
        self.batches: list[list[Candle]] = []
        self.fail = 0

    def append(self, candles: Sequence[Candle]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError(28, "No space left on device")
        self.batches.append(list(candles))

    @property
    def candles(self) -> list[Candle]:
        return [c for batch in self.batches for c in batch]


def kline_row(interval: str, t: int) -> list[object]:
    return [t, "2", "3", "1", "2", "5", close_time(interval, t), "10", 9, "1", "2", "0"]


class FakeBinance:
    """A scripted REST klines endpoint: answers any window, or the statuses queued in ``script``."""

    def __init__(self, market: str, now: int, outage: tuple[int, int] | None = None) -> None:
        self.market = market
        self.now = now
        self.outage = outage
        self.script: list[tuple[int, dict[str, str], object]] = []
        self.calls: list[tuple[float, dict[str, str]]] = []
        self.used = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.calls.append((trio.current_time(), params))
        if request.url.path.endswith("/time"):
            return httpx.Response(200, json={"serverTime": self.now})
        if self.script:
            status, headers, body = self.script.pop(0)
            return httpx.Response(status, headers=headers, json=body)
        interval, limit = params["interval"], int(params["limit"])
        start, end = int(params["startTime"]), min(int(params["endTime"]), self.now)
        rows = [
            kline_row(interval, t)
            for t in iter_open_times(interval, start, end + 1)
            if not (self.outage and self.outage[0] <= t < self.outage[1])
        ]
        # COIN-M returns the `limit` rows closest to endTime, the others the oldest from startTime.
        rows = rows[-limit:] if self.market == "coin_futures" else rows[:limit]
        self.used += 5
        return httpx.Response(200, headers={"X-MBX-USED-WEIGHT-1M": str(self.used)}, content=json.dumps(rows))


def rest_client(fake: FakeBinance, budget: WeightBudget | None = None, retries: int = 8) -> RestClient:
    """A :class:`RestClient` whose HTTP goes to ``fake`` (httpx's MockTransport: no socket)."""
    market = MARKETS[fake.market].with_urls(rest_url="http://exchange.test")
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return RestClient(
        market, http, budget or WeightBudget(2400), max_retries=retries, backoff=Backoff(0.2, 2.0, rng=random.Random(5))
    )
