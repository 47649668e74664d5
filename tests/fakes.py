"""Test doubles shared by the unit tests: a scripted WebSocket transport and an in-memory sink."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from trio_klines.errors import ConnectionLost
from trio_klines.markets import close_time
from trio_klines.parse import Candle
from trio_klines.transport import Connection


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
