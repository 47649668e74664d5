"""One WebSocket connection of the fake exchange: routing, control requests, the kline pump and its faults.

The connection runs two tasks in a nursery: the reader answers control requests (and enforces the
incoming-message rate and the stream limit by closing, as Binance does), the pump sleeps until the
:class:`~.feed.Feed` has something due and sends it through the WebSocket faults.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

import trio

from ..core.markets import Market
from ._tcp import shutdown_tcp
from .control import ControlState, handle_control, is_stream_name, kline_stream
from .feed import Feed, FeedEvent
from .wire import server_shutdown_frame, ws_error, ws_kline_frame

if TYPE_CHECKING:
    from .server import FakeExchange

__all__ = ["WsRoute", "resolve_ws_path"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# Control messages a client may send per second before Binance disconnects it (binance.md §4).
_MESSAGE_RATE: Final = {"spot": 5, "usdt_futures": 10, "coin_futures": 10}
_BATCH: Final = 500
_GARBAGE_TEXT: Final = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
_GARBAGE_BYTES: Final = b"\x00\x9c\xff\xfe garbage \x81\x7f"
_ERROR_PAYLOADS: Final = (
    ws_error(2, "Invalid request: invalid stream", None),
    '{"code":-1003,"msg":"Too many requests queued."}',
)


@dataclasses.dataclass(frozen=True, slots=True)
class WsRoute:
    """Where a WebSocket request lands: its market, form, initial streams, and whether klines flow."""

    market: Market
    combined: bool
    streams: tuple[str, ...]
    #: False on a USDⓈ-M connection outside ``/market``: it acknowledges and never sends a kline.
    delivers: bool


def resolve_ws_path(market: Market, rest: str, query: bytes) -> WsRoute | None:
    """The route of ``<prefix><rest>?<query>`` on ``market``, or ``None`` for a path Binance does not serve.

    Raw form ``/ws`` or ``/ws/<s1>/<s2>``; combined form ``/stream`` or ``/stream?streams=<s1>/<s2>``.
    USDⓈ-M routes klines only under ``/market``; ``/public`` and unrouted paths connect but stay silent.
    A stream of the wrong shape makes the route ``None``.
    """
    delivers = True
    if market.name == "usdt_futures":
        head, _, tail = rest.lstrip("/").partition("/")
        if head in ("market", "public"):
            delivers = head == "market"
            rest = "/" + tail
        else:
            delivers = False
    if rest == "/ws" or rest.startswith("/ws/"):
        streams = tuple(s for s in rest[4:].split("/") if s)
        combined = False
    elif rest == "/stream":
        values = parse_qs(query.decode("latin-1")).get("streams", [])
        streams = tuple(s for v in values for s in v.split("/") if s)
        combined = True
    else:
        return None
    if not all(is_stream_name(s) for s in streams):
        return None
    return WsRoute(market, combined, tuple(dict.fromkeys(streams)), delivers)


class _Ended(Exception):
    """The connection was closed or cut by this side: stop the pump."""


class WsConnection:
    """The server side of one accepted WebSocket connection."""

    def __init__(self, exchange: FakeExchange, route: WsRoute, scope: dict[str, Any], send: Send) -> None:
        self._ex = exchange
        self._route = route
        self._market = route.market
        self._send_asgi = send
        self._scope = scope
        self.serial = exchange.next_serial()
        self._state = ControlState(route.market, route.combined)
        self._feed = Feed(
            exchange.history, route.market, speed=exchange.speed, min_update_gap_s=exchange.min_update_gap
        )
        self._send_lock = trio.Lock()
        self._wake = trio.Event()
        self._close_request: tuple[int, str] | None = None
        self._closed = False
        #: A frame the reorder fault holds back until the next one is sent: (stream, text).
        self._held: tuple[str, str] | None = None
        self._received: collections.deque[float] = collections.deque()
        self._cancel = trio.CancelScope()

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Serve the connection until either side ends it; returns normally in every case."""
        with self._cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_task)
                if self._subscribe(self._route.streams):
                    await self._read(receive)
                else:
                    await self._close(1008, "Too many streams")
                nursery.cancel_scope.cancel()

    def request_close(self, code: int, reason: str) -> None:
        """Ask the pump to close the connection soon (spot announces ``serverShutdown`` first)."""
        if self._close_request is None:
            self._close_request = (code, reason)
        self._wake.set()

    # --- sending ------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if self._closed:  # checked under the lock: ASGI forbids a send after the close
                raise _Ended
            await self._send_asgi(message)

    async def _send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def _close(self, code: int, reason: str) -> None:
        """Send the close frame (once) and end the connection's tasks."""
        async with self._send_lock:
            if not self._closed:
                self._closed = True
                await self._send_asgi({"type": "websocket.close", "code": code, "reason": reason})
        self._cancel.cancel()

    def _abort(self) -> None:
        """Cut the TCP connection with no close frame (falls back to close code 1011 if it cannot)."""
        server, client = self._scope.get("server"), self._scope.get("client")
        self._closed = True
        if server and client and shutdown_tcp(tuple(server), tuple(client)):  # type: ignore[arg-type]
            self._cancel.cancel()
            return
        self._closed = False
        self._ex.stats["drop_fallback_close"] += 1
        raise _FallbackClose

    # --- reader -------------------------------------------------------------------------------

    async def _read(self, receive: Receive) -> None:
        rate = _MESSAGE_RATE[self._market.name]
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive":
                continue
            now = trio.current_time()
            self._received.append(now)
            while self._received and self._received[0] <= now - 1.0:
                self._received.popleft()
            if len(self._received) > rate:
                self._ex.stats["ws_rate_limited"] += 1
                await self._close(1008, "Too many messages")
                return
            outcome = handle_control(message.get("text") or message.get("bytes") or b"", self._state)
            # No frame of a stream after its UNSUBSCRIBE reply, none of a new one before its SUBSCRIBE reply.
            for stream in outcome.removed:
                self._feed.unsubscribe(stream)
            try:
                await self._send_text(outcome.reply)
            except _Ended:
                return
            if not self._subscribe(outcome.added):
                await self._close(1008, "Too many streams")
                return
            self._wake.set()

    def _subscribe(self, streams: tuple[str, ...]) -> bool:
        """Feed the kline streams among ``streams``; False when the connection is over its stream limit."""
        self._state.streams.update(dict.fromkeys(streams))
        if len(self._state.streams) > self._market.max_streams_per_connection:
            self._ex.stats["ws_stream_limit"] += 1
            return False
        if not self._route.delivers:
            return True
        now = self._ex.clock.now()
        for stream in streams:
            parsed = kline_stream(stream, self._market)
            spec = self._ex.history.universe.get(self._market.name, parsed[0]) if parsed else None
            if parsed and spec is not None:  # an unknown symbol's stream is accepted and stays silent
                self._feed.subscribe(stream, spec, parsed[1], now)
        return True

    # --- pump ---------------------------------------------------------------------------------

    async def _pump_task(self) -> None:
        try:
            await self._pump()
        except _Ended:
            pass
        except _FallbackClose:
            await self._close(1011, "fault: drop")
        self._cancel.cancel()

    async def _pump(self) -> None:
        ex = self._ex
        clock = ex.clock
        opened = clock.now()
        cut_at = notice_at = None
        if ex.faults.cutoff is not None:
            cut_at = opened + math.ceil(ex.faults.cutoff * 1000)
            if self._market.name == "spot":
                notice_at = max(opened, cut_at - ex.shutdown_notice_ms)
        while True:
            now = clock.now()
            if self._close_request is not None:
                await self._announce_shutdown(now)
                await self._close(*self._close_request)
                return
            if notice_at is not None and now >= notice_at:
                notice_at = None
                await self._announce_shutdown(now)
            if cut_at is not None and now >= cut_at:
                ex.stats["fault_cutoff"] += 1
                await self._close(1000, "Connection lifetime reached")
                return
            events = self._feed.due(now, _BATCH)
            for event in events:
                await self._deliver(event)
            if len(events) >= _BATCH:
                await trio.lowlevel.checkpoint()
                continue
            times = [t for t in (self._feed.next_time(), notice_at, cut_at) if t is not None]
            deadline = clock.deadline(min(times)) if times else math.inf
            with trio.move_on_at(deadline):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = trio.Event()

    async def _announce_shutdown(self, now: int) -> None:
        if self._market.name == "spot":
            self._ex.stats["server_shutdown_sent"] += 1
            await self._send_text(server_shutdown_frame(now, combined=self._state.combined))

    async def _deliver(self, ev: FeedEvent) -> None:
        ex, faults, dice = self._ex, self._ex.faults, self._ex.dice
        # The batch was computed before the reader's latest UNSUBSCRIBE: nothing goes out after its reply.
        if ev.stream not in self._state.streams:
            return
        keys = (self.serial, zlib.crc32(ev.stream.encode()), ev.time, int(ev.closed))
        stream = ev.stream if self._state.combined else None
        text = ws_kline_frame(ev.spec, ev.interval, ev.kline, event_time=ev.time, closed=ev.closed, stream=stream)
        if dice.hit("drop", faults.drop, *keys):
            ex.stats["fault_drop"] += 1
            self._abort()
            raise _Ended
        if dice.hit("close", faults.close, *keys):
            ex.stats["fault_close"] += 1
            await self._close(1000, "fault: close")
            raise _Ended
        if dice.hit("stall", faults.stall, *keys):
            ex.stats["fault_stall"] += 1
            with trio.move_on_after(faults.stall_s):
                while self._close_request is None:
                    await self._wake.wait()
                    self._wake = trio.Event()
        if dice.hit("garbage", faults.garbage, *keys):
            ex.stats["fault_garbage"] += 1
            kind = int(dice.roll("garbage_kind", *keys) * 3)
            if kind == 2:
                await self._send({"type": "websocket.send", "bytes": _GARBAGE_BYTES})
            else:
                await self._send_text(_GARBAGE_TEXT if kind == 0 else text[: len(text) // 2])
        if dice.hit("error", faults.error, *keys):
            ex.stats["fault_error"] += 1
            await self._send_text(_ERROR_PAYLOADS[int(dice.roll("error_kind", *keys) * len(_ERROR_PAYLOADS))])
        if self._held is None and dice.hit("reorder", faults.reorder, *keys):
            ex.stats["fault_reorder"] += 1
            self._held = (ev.stream, text)
            return
        await self._send_text(text)
        ex.stats["frames_sent"] += 1
        if ev.closed:
            ex.stats["closed_frames_sent"] += 1
        if self._held is not None:
            (held_stream, held), self._held = self._held, None
            if held_stream in self._state.streams:
                await self._send_text(held)
                ex.stats["frames_sent"] += 1
        if ev.closed and dice.hit("dup", faults.dup, *keys):
            ex.stats["fault_dup"] += 1
            await self._send_text(text)


class _FallbackClose(Exception):
    """The drop fault could not cut the socket on this platform: close with code 1011 instead."""
