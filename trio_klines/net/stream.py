"""One WebSocket connection of many kline streams, kept alive for as long as the recorder runs.

A :class:`StreamConnection` is a retry loop around *sessions*. A session opens the combined-stream URL,
receives with a timeout held in a cancel scope, parses each frame and sends closed candles into the
writer's channel. When a session ends (close, error, receive timeout, ``serverShutdown``) the loop
reconnects after a capped, fully jittered backoff, which resets once a session has stayed healthy.

Before Binance's 24-hour cut the connection rotates make-before-break: a new session opens while the
old one keeps receiving, and the old one is closed only once the new one has delivered a frame. Both
may deliver the same candle for a moment; the writer drops the repeat.

A stream that stays silent for many of its update periods raises an alarm (an error in the log): since
2026 a wrongly routed USDⓈ-M connection acknowledges subscriptions and then delivers nothing. The first
alarm resubscribes the stream; a second one in a row reconnects.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import trio

from ..config import StreamSettings
from ..core.backoff import Backoff
from ..core.markets import Market, combined_stream_url
from ..core.parse import Candle, frame_parser
from ..errors import BinanceError, ConfigError, ConnectionLost, MalformedMessage, ReceiveTimeout, ServerShutdown
from .transport import Connection, Transport, trio_websocket_transport

__all__ = ["ConnectionStats", "StreamConnection"]

log = logging.getLogger("trio_klines.stream")



@dataclass(slots=True)
class ConnectionStats:
    name: str
    market: str
    streams: int = 0
    state: str = "idle"  # connecting, live, rotating, backoff, stopped
    messages: int = 0
    candles: int = 0
    malformed: int = 0
    binance_errors: int = 0
    reconnects: int = 0
    rotations: int = 0
    silent_alarms: int = 0
    last_error: str | None = None
    connected_since: float | None = None


@dataclass(eq=False)
class _Session:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    settled: trio.Event = field(default_factory=trio.Event)  # live or ended, whichever comes first
    ended: trio.Event = field(default_factory=trio.Event)
    conn: Connection | None = None
    live_at: float | None = None
    ended_at: float = 0.0
    error: BaseException | None = None


def _stream_of(frame: str | bytes) -> str | None:
    """The stream name of a combined-stream frame, without parsing it (Binance writes it first)."""
    if isinstance(frame, bytes):
        if frame.startswith(b'{"stream":"'):
            end = frame.find(b'"', 11)
            return frame[11:end].decode("ascii", "replace") if end > 0 else None
        return None
    if frame.startswith('{"stream":"'):
        end = frame.find('"', 11)
        return frame[11:end] if end > 0 else None
    return None


class StreamConnection:
    """Keeps one combined-stream connection of ``market`` alive and feeds ``send`` with closed candles.

    Run it with :meth:`run` in a nursery; it returns only when cancelled, and closes ``send`` then.
    :meth:`subscribe` and :meth:`unsubscribe` change its streams while it runs.
    """

    def __init__(
        self,
        name: str,
        market: Market,
        streams: Iterable[str],
        send: trio.MemorySendChannel[Sequence[Candle]],
        *,
        settings: StreamSettings | None = None,
        transport: Transport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.market = market
        self.settings = settings or StreamSettings()
        self._streams: dict[str, None] = dict.fromkeys(streams)
        if not self._streams:
            raise ConfigError(f"connection {name} has no streams")
        if len(self._streams) > market.max_streams_per_connection:
            raise ConfigError(
                f"{len(self._streams)} streams exceed the {market.max_streams_per_connection} per connection "
                f"of {market.name}"
            )
        self._send = send
        self._transport = transport or trio_websocket_transport()
        self._backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max, rng=rng or random.Random())
        self._parse = frame_parser(market)
        self._current: _Session | None = None
        self._open: set[_Session] = set()  # sessions with a socket, live or not yet
        self._request_id = 0
        self._last_seen: dict[str, float] = {}
        self._alarms: dict[str, int] = {}  # stream → consecutive alarms
        self._next_alarm: dict[str, float] = {}
        self._next_check = 0.0
        self._next_log = {"malformed": 0.0, "error": 0.0}
        self._suppressed = {"malformed": 0, "error": 0}
        self.stats = ConnectionStats(name=name, market=market.name, streams=len(self._streams))

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)

    @property
    def url(self) -> str:
        return combined_stream_url(self.market, self._streams)

    # --- the retry loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, receive, reconnect, rotate, forever. Closes the send channel when cancelled."""
        async with self._send, trio.open_nursery() as nursery:
            try:
                await self._supervise(nursery)
            finally:
                self.stats.state = "stopped"
                self.stats.connected_since = None

    async def _supervise(self, nursery: trio.Nursery) -> None:
        settings = self.settings
        current: _Session | None = None
        rotate_at = math.inf
        while True:
            session = _Session()
            self.stats.state = "rotating" if current is not None else "connecting"
            nursery.start_soon(self._run_session, session)
            with trio.move_on_after(settings.receive_timeout):
                await session.settled.wait()
            if session.live_at is None:  # it failed, or delivered nothing in time
                session.scope.cancel()
                await session.ended.wait()
                reason = session.error or ReceiveTimeout(f"no frame within {settings.receive_timeout:g}s")
                if current is not None and not current.ended.is_set():
                    log.warning("%s: rotation failed (%s); keeping the old connection", self.name, reason)
                    rotate_at = trio.current_time() + self._backoff.next_delay()
                else:
                    current = None
                    await self._pause_after(session, reason)
                    continue
            else:
                if current is not None:
                    current.scope.cancel()  # make-before-break: the new one is live, close the old
                    self.stats.rotations += 1
                    log.info("%s: rotated to a new connection", self.name)
                current = session
                rotate_at = session.live_at + settings.rotate_after
                self.stats.state = "live"
                self.stats.connected_since = session.live_at
            self._current = current
            with trio.move_on_at(rotate_at):
                await current.ended.wait()
            if current.ended.is_set():
                ended, self._current, current = current, None, None
                await self._pause_after(ended, ended.error or ConnectionLost("connection ended"))

    async def _pause_after(self, session: _Session, reason: BaseException) -> None:
        self.stats.reconnects += 1
        self.stats.last_error = f"{type(reason).__name__}: {reason}"
        self.stats.connected_since = None
        if session.live_at is not None and session.ended_at - session.live_at >= self.settings.healthy_after:
            self._backoff.reset()
        # serverShutdown asks for an immediate reconnect; everything else backs off.
        delay = 0.0 if isinstance(reason, ServerShutdown) else self._backoff.next_delay()
        log.warning("%s: %s; reconnecting in %.1fs", self.name, self.stats.last_error, delay)
        self.stats.state = "backoff"
        await trio.sleep(delay)

    async def _run_session(self, session: _Session) -> None:
        with session.scope:
            try:
                asked = dict(self._streams)
                async with self._transport(combined_stream_url(self.market, asked)) as conn:
                    session.conn = conn
                    self._open.add(session)
                    # Streams changed while this one was connecting: catch up on the live socket.
                    added = [s for s in self._streams if s not in asked]
                    removed = [s for s in asked if s not in self._streams]
                    if added:
                        await self._request("SUBSCRIBE", added, conn)
                    if removed:
                        await self._request("UNSUBSCRIBE", removed, conn)
                    await self._receive_loop(conn, session)
            except (ConnectionLost, ServerShutdown) as exc:
                session.error = exc
            except Exception as exc:  # a bug must not take the other connections down
                log.exception("%s: unexpected error in the receive loop", self.name)
                session.error = exc
            finally:
                session.conn = None
                self._open.discard(session)
                session.ended_at = trio.current_time()
                session.ended.set()
                session.settled.set()

    async def _receive_loop(self, conn: Connection, session: _Session) -> None:
        timeout = self.settings.receive_timeout
        parse = self._parse
        stats = self.stats
        last_seen = self._last_seen
        clock = trio.current_time
        send = self._send
        receive_batch = getattr(conn, "receive_batch", None)
        if receive_batch is None:  # a plain Connection: one message per wakeup

            async def receive_batch() -> list[str | bytes]:
                return [await conn.receive()]

        # Everything is per read, not per frame: a read can bring hundreds of frames, and each timeout
        # update (~5 µs), checkpoint (~6 µs) or channel send (~12 µs) costs more than parsing one.
        # Even the timeout is not moved per read: the scope's deadline is the last frame's time plus
        # the timeout as of when the scope was entered; when it expires, a real silence ends the
        # session and a stale deadline is re-armed from the last frame (a receive cancelled while
        # waiting loses nothing). So a receive_timeout of silence is detected exactly, at the cost of
        # one wasted wakeup per receive_timeout while frames flow.
        last = clock()
        unsent: list[Candle] | None = None
        shutdown: ServerShutdown | None = None
        while True:
            if unsent is not None:
                # Outside the deadline's scope: waiting on a full channel is backpressure, not silence,
                # and a deadline that passed while the read was being gathered cannot cancel this send.
                await send.send(unsent)
                unsent = None
                last = clock()
            if shutdown is not None:  # ends the session once the read's candles are sent
                raise shutdown
            with trio.CancelScope(deadline=last + timeout) as scope:
                while True:
                    frames = await receive_batch()
                    last = now = clock()
                    stats.messages += len(frames)
                    if session.live_at is None:
                        session.live_at = now
                        self._grace(now)
                        session.settled.set()
                    candles: list[Candle] = []
                    for frame in frames:
                        stream = _stream_of(frame)
                        if stream is not None:
                            last_seen[stream] = now
                        try:
                            candle = parse(frame)
                        except MalformedMessage as exc:
                            stats.malformed += 1
                            self._report("malformed", exc, now)
                            continue
                        except BinanceError as exc:
                            stats.binance_errors += 1
                            self._report("error", exc, now)
                            continue
                        except ServerShutdown as exc:
                            shutdown = exc
                            continue
                        if candle is not None:
                            candles.append(candle)
                    if candles:
                        stats.candles += len(candles)
                        try:
                            send.send_nowait(candles)  # no checkpoint: the next read has one
                        except trio.WouldBlock:
                            unsent = candles
                    if unsent is not None or shutdown is not None:
                        break
                    if now >= self._next_check:
                        scope.deadline = math.inf
                        await self._check_silence(conn, now)
                        last = clock()
                        scope.deadline = last + timeout
            if unsent is None and shutdown is None and clock() - last >= timeout:
                raise ReceiveTimeout(f"no frame for {timeout:g}s")

    # --- live subscriptions -------------------------------------------------------------------

    async def subscribe(self, streams: Iterable[str]) -> list[str]:
        """Add ``streams`` on the live connection (``SUBSCRIBE``); returns the ones that were new.

        Raises :class:`ConfigError` if they would exceed the market's per-connection limit.
        """
        new = [s for s in dict.fromkeys(streams) if s not in self._streams]
        if len(self._streams) + len(new) > self.market.max_streams_per_connection:
            raise ConfigError(f"{self.name} cannot take {len(new)} more streams")
        if not new:
            return []
        self._streams.update(dict.fromkeys(new))
        self.stats.streams = len(self._streams)
        now = trio.current_time()
        for s in new:
            self._last_seen[s] = now
        await self._request("SUBSCRIBE", new)
        return new

    async def unsubscribe(self, streams: Iterable[str]) -> list[str]:
        """Drop ``streams`` from the live connection (``UNSUBSCRIBE``); returns the ones it had.

        Raises :class:`ConfigError` rather than leave the connection with no stream at all.
        """
        gone = [s for s in dict.fromkeys(streams) if s in self._streams]
        if len(gone) == len(self._streams):
            raise ConfigError(f"{self.name} would have no streams left; stop it instead")
        for s in gone:
            del self._streams[s]
            self._last_seen.pop(s, None)
            self._alarms.pop(s, None)
        self.stats.streams = len(self._streams)
        if gone:
            await self._request("UNSUBSCRIBE", gone)
        return gone

    async def _request(self, method: str, params: list[str], conn: Connection | None = None) -> None:
        """Send a control request on ``conn``, or on every open socket (two while rotating).

        With none open there is nothing to do: the next connection's URL carries the change.
        """
        targets = [conn] if conn is not None else [s.conn for s in list(self._open) if s.conn is not None]
        for target in targets:
            self._request_id += 1
            try:
                await target.send(json.dumps({"method": method, "params": params, "id": self._request_id}))
            except ConnectionLost as exc:
                log.info("%s: %s not sent (%s); the reconnect will carry it", self.name, method, exc)

    # --- silence and error reporting ----------------------------------------------------------

    def _silence_limit(self, stream: str) -> float:
        interval = stream.rsplit("_", 1)[-1]
        period = self.market.update_period_for(interval) / 1000
        return max(self.settings.silence_periods * period, self.settings.silence_min)

    def _grace(self, now: float) -> None:
        """A new session: every stream gets its full silence allowance from now."""
        for s in self._streams:
            self._last_seen[s] = max(self._last_seen.get(s, now), now)
        self._next_check = now + 1.0

    async def _check_silence(self, conn: Connection, now: float) -> None:
        self._next_check = now + 1.0
        silent = []
        for s in self._streams:
            if now - self._last_seen.get(s, now) < self._silence_limit(s):
                if s in self._alarms:  # it speaks again
                    del self._alarms[s]
                    self._next_alarm.pop(s, None)
            elif now >= self._next_alarm.get(s, 0.0):
                silent.append(s)
        if not silent:
            return
        reconnect = False
        for s in silent:
            count = self._alarms[s] = self._alarms.get(s, 0) + 1
            reconnect |= count == 2
            # Later alarms for a stream that stays silent come further and further apart.
            self._next_alarm[s] = now + self._silence_limit(s) * min(2**count, 64)
        self.stats.silent_alarms += len(silent)
        log.error(
            "%s: %d stream(s) silent for over %.0fs (%s); %s",
            self.name,
            len(silent),
            min(self._silence_limit(s) for s in silent),
            ", ".join(silent[:5]) + (" …" if len(silent) > 5 else ""),
            "reconnecting" if reconnect else "resubscribing",
        )
        if reconnect:
            raise ConnectionLost(f"{len(silent)} stream(s) still silent after resubscribing")
        await self._request("SUBSCRIBE", silent, conn)

    def _report(self, kind: str, exc: Exception, now: float) -> None:
        if now < self._next_log[kind]:
            self._suppressed[kind] += 1
            return
        more = self._suppressed[kind]
        self._suppressed[kind] = 0
        self._next_log[kind] = now + self.settings.log_every
        log.warning(
            "%s: %s frame skipped: %s%s", self.name, kind, exc, f" ({more} more since the last report)" if more else ""
        )
