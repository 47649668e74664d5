"""One WebSocket connection of many kline streams, kept alive for as long as the recorder runs.

A :class:`StreamConnection` is a retry loop around *sessions*. A session opens the combined-stream URL,
receives with a timeout held in a cancel scope, parses each frame and sends closed candles into the
writer's channel. When a session ends (close, error, receive timeout, ``serverShutdown``) the loop
reconnects after a capped, fully jittered backoff, which resets once a session has stayed healthy.

Before Binance's 24-hour cut the connection rotates make-before-break: a new session opens while the
old one keeps receiving, and the old one is closed only once the new one has delivered a frame. Both
may deliver the same candle for a moment; the writer drops the repeat.

A stream that stays silent for many of its update periods raises an alarm (an error in the log); the
pure :class:`~trio_klines.core.silence.SilenceMonitor` decides when, and what to do: a silent stream is
resubscribed, ever less often, and never costs the other streams of the connection their candles; only
a connection on which every stream is silent reconnects.

The states a connection goes through are :class:`ConnectionState`::

    idle → connecting → live → rotating → live …          the new session took over from the old one
           connecting, live, rotating → backoff → connecting   no live session is left
           any state → stopped                             cancelled

A rotation that fails while the old session lives on stays ``rotating`` until its next attempt.

Binance's WebSocket limits (:mod:`~trio_klines.core.pacing`) are kept here. Every connect, first, rotation
or reconnect, takes a slot of one :class:`RateLimiter` shared by every connection of the trio run (or the
one given), before the receive timeout starts: waiting for a slot is not a failure. Every control request
takes a slot of the connection's own limiter; requests queued meanwhile for the same socket and method
go out together, in as few requests as the size bounds allow.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import trio

from ..config import StreamSettings
from ..core.backoff import Backoff
from ..core.markets import Market, combined_stream_url, url_streams
from ..core.pacing import control_pacer, pack_params
from ..core.parse import Candle, frame_parser
from ..core.silence import SilenceMonitor
from ..core.throttle import LogThrottle
from ..errors import BinanceError, ConfigError, ConnectionLost, MalformedMessage, ReceiveTimeout, ServerShutdown
from .pacing import RateLimiter, shared_connect_limiter
from .transport import Connection, Transport, trio_websocket_transport

__all__ = ["ConnectionState", "ConnectionStats", "StreamConnection"]

log = logging.getLogger("trio_klines.stream")


class ConnectionState(StrEnum):
    """Where a connection stands; a ``str``, so ``stats.state == "live"`` holds."""

    IDLE = "idle"  # not run yet
    CONNECTING = "connecting"  # no live session: opening one, waiting for its first frame
    LIVE = "live"  # a session delivers frames
    ROTATING = "rotating"  # a session delivers frames while its replacement comes up (or failed to, and waits)
    BACKOFF = "backoff"  # waiting before the next attempt
    STOPPED = "stopped"  # run() has returned


@dataclass(slots=True)
class ConnectionStats:
    """What one connection has done since it was made; the recorder's statistics list one per connection."""

    name: str
    market: str
    streams: int = 0
    state: ConnectionState = ConnectionState.IDLE
    messages: int = 0
    candles: int = 0
    malformed: int = 0
    binance_errors: int = 0
    reconnects: int = 0
    rotations: int = 0
    silent_alarms: int = 0
    #: Candles received that never reached the writer: the connection stopped while the channel was full.
    unsent: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    #: Control requests sent (SUBSCRIBE, UNSUBSCRIBE), each counted once per socket it went on.
    requests: int = 0
    #: Seconds spent waiting for a connect slot (Binance's new-connection limit, shared by all connections).
    connect_waited: float = 0.0


@dataclass(eq=False)
class _Session:
    """One socket's life, from opening to close."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    settled: trio.Event = field(default_factory=trio.Event)  # live or ended, whichever comes first
    ended: trio.Event = field(default_factory=trio.Event)
    conn: Connection | None = None
    live_at: float | None = None  # when its first frame came
    ended_at: float = 0.0
    error: BaseException | None = None  # why it ended, when it ended of itself


@dataclass(slots=True)
class _Live:
    """The live session and when it is due to be replaced (before Binance's 24-hour cut)."""

    session: _Session
    rotate_at: float


@dataclass(eq=False)
class _Request:
    """A control request waiting for its socket's turn; its params leave as they are put into a message."""

    conn: Connection
    method: str
    params: list[str]
    done: bool = False


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


def _batch_reader(conn: Connection) -> Callable[[], Awaitable[list[str | bytes]]]:
    """``conn.receive_batch``, or one message per read for a plain :class:`Connection`."""
    receive_batch: Callable[[], Awaitable[list[str | bytes]]] | None = getattr(conn, "receive_batch", None)
    if receive_batch is not None:
        return receive_batch

    async def one_per_read() -> list[str | bytes]:
        return [await conn.receive()]

    return one_per_read


class StreamConnection:
    """Keeps one combined-stream connection of ``market`` alive and feeds ``send`` with closed candles.

    Run it with :meth:`run` in a nursery; it returns only when cancelled, and closes ``send`` then.
    :meth:`subscribe` and :meth:`unsubscribe` change its streams while it runs.

    ``connect_limiter`` paces its connects; pass one limiter to every connection that shares an IP.
    Without one it uses :func:`shared_connect_limiter`, the trio run's. ``control_limiter`` paces its control
    requests; by default its own, at its market's rate (:func:`~trio_klines.core.pacing.control_pacer`).
    ``exact``: the candles' prices and volumes are Binance's decimal strings (a store of exact numbers).
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
        connect_limiter: RateLimiter | None = None,
        control_limiter: RateLimiter | None = None,
        exact: bool = False,
    ) -> None:
        self.name = name
        self.market = market
        self.settings = settings = settings or StreamSettings()
        self._streams: dict[str, None] = dict.fromkeys(streams)  # a dict: ordered, as the URL lists them
        if not self._streams:
            raise ConfigError(f"connection {name} has no streams")
        if len(self._streams) > market.max_streams_per_connection:
            raise ConfigError(
                f"{len(self._streams)} streams exceed the {market.max_streams_per_connection} per connection "
                f"of {market.name}"
            )
        self._send = send
        self._transport = transport or trio_websocket_transport()
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max, rng=rng or random.Random())
        self._parse = frame_parser(market, exact=exact)
        self._open: set[_Session] = set()  # sessions with a socket, live or not yet: two while rotating
        self._request_id = 0
        self._connect_limiter = connect_limiter  # None: the run's, looked up when run() starts
        self._control_limiter = control_limiter or RateLimiter(control_pacer(market.name))
        self._outbox: list[_Request] = []  # control requests not sent yet, in the order they were made
        self._sender = trio.Lock()  # whoever holds it sends for every caller, in turn
        self._silence = SilenceMonitor(
            market, self._streams, periods=settings.silence_periods, minimum=settings.silence_min
        )
        self._log_throttle = LogThrottle(settings.log_every)
        self.stats = ConnectionStats(name=name, market=market.name, streams=len(self._streams))

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)

    @property
    def url(self) -> str:
        return combined_stream_url(self.market, self._streams)

    # --- the retry loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, receive, reconnect, rotate, forever; every failure of a session is retried.

        Returns only when cancelled; closes the send channel then, so that its consumer sees the end.
        A bug in a session is logged and retried too, never raised: it must not take the other
        connections down.
        """
        if self._connect_limiter is None:
            self._connect_limiter = shared_connect_limiter()
        async with self._send, trio.open_nursery() as nursery:
            try:
                await self._supervise(nursery)
            finally:
                self.stats.state = ConnectionState.STOPPED
                self.stats.connected_since = None

    async def _supervise(self, nursery: trio.Nursery) -> None:
        live: _Live | None = None
        while True:
            self.stats.state = ConnectionState.CONNECTING if live is None else ConnectionState.ROTATING
            session = _Session()
            failure = await self._start_session(nursery, session)
            if failure is None:
                live = self._go_live(session, replacing=live)
            elif live is not None and not live.session.ended.is_set():
                log.warning("%s: rotation failed (%s); keeping the old connection", self.name, failure)
                live.rotate_at = trio.current_time() + self._backoff.next_delay()
            else:
                live = None
                await self._pause_after(session, failure)
                continue
            with trio.move_on_at(live.rotate_at):
                await live.session.ended.wait()
            if live.session.ended.is_set():
                await self._pause_after(live.session, live.session.error or ConnectionLost("connection ended"))
                live = None

    async def _start_session(self, nursery: trio.Nursery, session: _Session) -> BaseException | None:
        """Runs ``session`` in ``nursery`` until its first frame: None once it is live, else why it failed.

        A session that fails, or delivers nothing within the receive timeout, has ended when this returns.
        The wait for a connect slot comes first and counts for neither.
        """
        limiter = self._connect_limiter
        assert limiter is not None
        waited = await limiter.acquire()
        if waited > 0:
            self.stats.connect_waited += waited
            log.info("%s: waited %.1fs for a connect slot (%d new connections per %gs per IP)",
                     self.name, waited, limiter.pacer.limit, limiter.pacer.per_seconds)  # fmt: skip
        nursery.start_soon(self._run_session, session)
        with trio.move_on_after(self.settings.receive_timeout):
            await session.settled.wait()
        if session.live_at is not None:
            return None
        session.scope.cancel()
        await session.ended.wait()
        return session.error or ReceiveTimeout(f"no frame within {self.settings.receive_timeout:g}s")

    def _go_live(self, session: _Session, *, replacing: _Live | None) -> _Live:
        assert session.live_at is not None
        if replacing is not None:
            replacing.session.scope.cancel()  # make-before-break: the new one is live, close the old
            self.stats.rotations += 1
            log.info("%s: rotated to a new connection", self.name)
        self.stats.state = ConnectionState.LIVE
        self.stats.connected_since = session.live_at
        return _Live(session, session.live_at + self.settings.rotate_after)

    async def _pause_after(self, session: _Session, reason: BaseException) -> None:
        self.stats.reconnects += 1
        self.stats.last_error = f"{type(reason).__name__}: {reason}"
        self.stats.connected_since = None
        if session.live_at is not None and session.ended_at - session.live_at >= self.settings.healthy_after:
            self._backoff.reset()
        # serverShutdown asks for an immediate reconnect; everything else backs off.
        delay = 0.0 if isinstance(reason, ServerShutdown) else self._backoff.next_delay()
        log.warning("%s: %s; reconnecting in %.1fs", self.name, self.stats.last_error, delay)
        self.stats.state = ConnectionState.BACKOFF
        await trio.sleep(delay)

    async def _run_session(self, session: _Session) -> None:
        with session.scope:
            try:
                # What fits in a URL is asked for there; the rest (a universe fills a spot connection with
                # 1,024 streams, about five URLs' worth) is subscribed at once, within the control pace.
                asked = dict.fromkeys(url_streams(self.market, self._streams))
                async with self._transport(combined_stream_url(self.market, asked)) as conn:
                    session.conn = conn
                    self._open.add(session)
                    # The rest, and streams that changed while this one was connecting: on the live socket.
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
        """Receives, parses and sends candles on, until the session fails.

        Reading runs under the receive deadline: the last frame's time plus the timeout, as of when
        reading began. It is not moved per read; when it expires, a real silence ends the session and
        a stale deadline is re-armed from the last frame (a receive cancelled while waiting loses
        nothing). Work that may wait breaks out of reading and runs outside the deadline.

        Raises:
          ReceiveTimeout: no frame for ``receive_timeout`` seconds.
          ServerShutdown: Binance announced the close of this connection; raised once the candles of
            the read that brought it are sent.
          ConnectionLost: the transport lost the connection, or every stream of it is silent.
        """
        timeout = self.settings.receive_timeout
        parse, stats, send, silence = self._parse, self.stats, self._send, self._silence
        heard_at = silence.heard_at
        clock = trio.current_time
        receive_batch = _batch_reader(conn)
        last = now = clock()  # the last frame's time, or the end of the last wait outside the deadline
        unsent: list[Candle] | None = None
        shutdown: ServerShutdown | None = None
        while True:
            # Everything here is per read, not per frame: a read can bring hundreds of frames, and a
            # deadline update (~5 µs), checkpoint (~6 µs) or channel send (~12 µs) costs more than a parse.
            with trio.move_on_at(last + timeout) as deadline:
                while True:
                    frames = await receive_batch()
                    last = now = clock()
                    stats.messages += len(frames)
                    if session.live_at is None:
                        session.live_at = now
                        silence.new_session(now)
                        session.settled.set()
                    candles: list[Candle] = []
                    for frame in frames:
                        stream = _stream_of(frame)
                        if stream is not None:
                            heard_at[stream] = now
                        try:
                            candle = parse(frame)
                        except (MalformedMessage, BinanceError) as exc:
                            self._skipped(exc, now)
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
                    if unsent is not None or shutdown is not None or now >= silence.next_check:
                        break
            if deadline.cancelled_caught:  # the receive was cancelled: no read is half handled
                if clock() - last >= timeout:
                    raise ReceiveTimeout(f"no frame for {timeout:g}s")
                continue
            await self._between_reads(conn, unsent, shutdown, now)
            unsent = None
            last = clock()

    async def _between_reads(
        self, conn: Connection, unsent: list[Candle] | None, shutdown: ServerShutdown | None, now: float
    ) -> None:
        """The work of the read at ``now`` that may wait, run outside the receive deadline.

        A full channel is backpressure, not silence, and a deadline that passed while the read was being
        gathered must not cancel its send (nor a resubscribe).

        Raises:
          ServerShutdown: ``shutdown``, once ``unsent`` is sent.
          ConnectionLost: see :meth:`_check_silence`.
        """
        if unsent is not None:
            try:
                await self._send.send(unsent)
            except trio.Cancelled:
                self.stats.unsent += len(unsent)  # said by the recorder's pending count, then lost
                raise
        if shutdown is not None:
            raise shutdown
        if now >= self._silence.next_check:
            await self._check_silence(conn, now)

    # --- live subscriptions -------------------------------------------------------------------

    async def subscribe(self, streams: Iterable[str]) -> list[str]:
        """Add ``streams`` on the live connection (``SUBSCRIBE``); returns the ones that were new.

        With no socket open the next connection's URL carries them. If a socket is lost while the
        request is being sent, the reconnect carries it too.

        Raises:
          ConfigError: they would exceed the market's per-connection limit; nothing is changed.
        """
        new = [s for s in dict.fromkeys(streams) if s not in self._streams]
        if len(self._streams) + len(new) > self.market.max_streams_per_connection:
            raise ConfigError(f"{self.name} cannot take {len(new)} more streams")
        if not new:
            return []
        self._streams.update(dict.fromkeys(new))
        self.stats.streams = len(self._streams)
        self._silence.add(new, trio.current_time())
        await self._request("SUBSCRIBE", new)
        return new

    async def unsubscribe(self, streams: Iterable[str]) -> list[str]:
        """Drop ``streams`` from the live connection (``UNSUBSCRIBE``); returns the ones it had.

        Raises:
          ConfigError: none would be left (stop the connection instead); nothing is changed.
        """
        gone = [s for s in dict.fromkeys(streams) if s in self._streams]
        if len(gone) == len(self._streams):
            raise ConfigError(f"{self.name} would have no streams left; stop it instead")
        for s in gone:
            del self._streams[s]
        self._silence.remove(gone)
        self.stats.streams = len(self._streams)
        if gone:
            await self._request("UNSUBSCRIBE", gone)
        return gone

    async def _request(self, method: str, params: list[str], conn: Connection | None = None) -> None:
        """Send a control request on ``conn``, or on every open socket (two while rotating); returns once sent.

        With none open there is nothing to do: the next connection's URL carries the change. A request
        waits its turn and a slot of the control limiter; the requests made meanwhile for the same socket
        and method go out with it (:meth:`_send_next`). A socket that closes first drops the requests
        still waiting for it, as the reconnect carries them. Cancelled, the caller leaves its request
        queued: the next request sends it.
        """
        targets = [conn] if conn is not None else [s.conn for s in list(self._open) if s.conn is not None]
        mine = [_Request(target, method, list(params)) for target in targets if params]
        if not mine:
            return
        self._outbox.extend(mine)
        async with self._sender:
            while not all(request.done for request in mine):
                await self._send_next()

    async def _send_next(self) -> None:
        """Send one message: the first waiting request, with what follows it for the same socket and method.

        A request never overtakes one of another method for its socket (SUBSCRIBE then UNSUBSCRIBE of a
        stream must stay in that order); within one method order does not matter, and a stream asked twice
        goes once. A message carries at most what :func:`~trio_klines.core.pacing.pack_params` allows;
        the rest waits for the next.
        """
        self._drop_closed()
        if not self._outbox:
            return
        await self._control_limiter.acquire()
        self._drop_closed()  # the wait may have outlived a socket: its slot is spent for nothing, safely
        if not self._outbox:
            return
        conn, method = self._outbox[0].conn, self._outbox[0].method
        run: list[_Request] = []
        for request in self._outbox:
            if request.conn is not conn:
                continue
            if request.method != method:
                break
            run.append(request)
        wanted = list(dict.fromkeys(p for request in run for p in request.params))
        params = wanted[: pack_params(method, wanted)]
        chosen = set(params)
        for request in run:
            request.params = [p for p in request.params if p not in chosen]
            request.done = not request.params
        self._outbox = [request for request in self._outbox if not request.done]
        self._request_id += 1
        self.stats.requests += 1
        try:
            await conn.send(json.dumps({"method": method, "params": params, "id": self._request_id}))
        except ConnectionLost as exc:
            log.info("%s: %s not sent (%s); the reconnect will carry it", self.name, method, exc)
            self._drop(lambda request: request.conn is conn)

    def _drop_closed(self) -> None:
        """Forget the requests waiting for a socket that is no longer open (the reconnect carries them)."""
        open_conns = {id(s.conn) for s in self._open if s.conn is not None}
        self._drop(lambda request: id(request.conn) not in open_conns)

    def _drop(self, gone: Callable[[_Request], bool]) -> None:
        for request in self._outbox:
            if gone(request):
                request.done = True
        self._outbox = [request for request in self._outbox if not request.done]

    # --- silence and error reporting ----------------------------------------------------------

    async def _check_silence(self, conn: Connection, now: float) -> None:
        """Resubscribes, on ``conn``, the streams the silence monitor finds silent.

        Raises:
          ConnectionLost: every stream of the connection is silent; the session must reconnect.
        """
        alarm = self._silence.check(now)
        if alarm is None:
            return
        self.stats.silent_alarms += len(alarm.streams)
        names = ", ".join(alarm.streams[:5]) + (" …" if len(alarm.streams) > 5 else "")
        if alarm.reconnect:
            log.error("%s: every stream silent for over %.0fs (%s); reconnecting", self.name, alarm.limit, names)
            raise ConnectionLost(f"every stream silent for over {alarm.limit:.0f}s")
        log.error(
            "%s: %d stream(s) silent for over %.0fs (%s); resubscribing",
            self.name,
            len(alarm.streams),
            alarm.limit,
            names,
        )
        await self._request("SUBSCRIBE", list(alarm.streams), conn)

    def _skipped(self, exc: MalformedMessage | BinanceError, now: float) -> None:
        """Counts a frame skipped for ``exc``; logs it unless one of its kind was logged lately."""
        if isinstance(exc, MalformedMessage):
            kind = "malformed"
            self.stats.malformed += 1
        else:
            kind = "error"
            self.stats.binance_errors += 1
        more = self._log_throttle.admit(kind, now)
        if more is not None:
            since = f" ({more} more since the last report)" if more else ""
            log.warning("%s: %s frame skipped: %s%s", self.name, kind, exc, since)
