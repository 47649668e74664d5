"""The fake exchange as a server: one hypercorn ASGI app on 127.0.0.1 serving all three markets.

Each market lives under its own path prefix (``/spot``, ``/usdt_futures``, ``/coin_futures``); WebSocket
and REST share the port, and Binance's data archive (data.binance.vision, :mod:`.archive`) is under
``/archive`` for all three. :func:`open_exchange` runs it inside the caller's trio program and yields a
:class:`FakeExchange` holding the *endpoints map* and the ground truth.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from ..core.markets import MARKETS, Market, apply_endpoints, validate_interval
from ..core.parse import Candle
from ..errors import ConfigError
from ..ops.asgi import lifespan, respond
from .archive import ARCHIVE_PREFIX, ArchiveServer
from .faults import Dice, Faults, parse_faults
from .feed import DEFAULT_MIN_UPDATE_GAP_S, ExchangeClock
from .history import History
from .rest import RestApi
from .schedule import normalize_halts, normalize_moments
from .symbols import PENDING_LEAD_MS, Universe
from .ws import Receive, Send, WsConnection, resolve_ws_path

__all__ = ["ExchangeConfig", "FakeExchange", "open_exchange"]

log = logging.getLogger("trio_klines.testing")

#: Binance's WebSocket route for klines on USDⓈ-M (binance.md §1): part of that market's ``ws`` base.
USDM_KLINE_ROUTE: Final = "/market"
# Spot pings every 20 s (futures every 3 min); one interval serves all markets, scaled by the speed.
_SPOT_PING_S: Final = MARKETS["spot"].server_ping_interval_s
_MIN_PING_S: Final = 0.05
_GRACE_S: Final = 2.0
_HYPERCORN_GRACE_S: Final = 0.1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeConfig:
    """How to run a fake exchange. Validated on creation (:class:`ConfigError`)."""

    seed: int = 0
    #: Exchange time runs this many times faster than the wall clock.
    speed: float = 1.0
    #: Exchange time at start-up, ms since the epoch; ``None`` for the wall clock's now.
    start: int | None = None
    faults: Faults = dataclasses.field(default_factory=Faults)
    #: Generated symbols added to each market's defaults.
    symbols: int = 0
    #: Listed symbols that do not trade: ``{"spot:ETHBTC": "BREAK"}`` (see :class:`Universe`).
    statuses: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: When symbols are listed: ``{"usdt_futures:SYM0003USDT": "+20s"}``. Moments are exchange time, relative
    #: to ``start`` (``"+20s"``, ``"-1h"``, a ``timedelta``) or absolute (epoch ms, ISO text, a ``datetime``);
    #: see :mod:`.schedule`. Kept normalised: canonical keys, epoch ms or ``timedelta`` values.
    listings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: When symbols are delisted: ``{"usdt_futures:SYM0002USDT": "+40s"}``.
    delistings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: When symbols halt: ``{"spot:SYM0001USDT": "+10s..+30s"}``, or a ``(from, to)`` pair, or a list of them.
    halts: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: How long (exchange seconds) before its listing a futures symbol shows as ``PENDING_TRADING``.
    pending_lead: float = PENDING_LEAD_MS / 1000
    host: str = "127.0.0.1"
    port: int = 0
    #: Seconds between server pings; ``None`` for spot's 20 s divided by the speed (0.05 s at least).
    ping_interval: float | None = None
    #: Smallest wall-clock gap between two open updates of one series.
    min_update_gap: float = DEFAULT_MIN_UPDATE_GAP_S
    #: How long (exchange seconds) before a cutoff spot announces ``serverShutdown``.
    shutdown_notice: float = 30.0
    #: How long (exchange seconds) after its period ends an archive file is published (Binance: within
    #: about a day for a daily file, a day or so after the month for a monthly one).
    archive_lag: float = 86400.0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, not {self.seed!r}")
        if not isinstance(self.speed, int | float) or not (0 < self.speed < math.inf):
            raise ConfigError(f"speed must be a positive number, not {self.speed!r}")
        if self.start is not None and (not isinstance(self.start, int) or self.start < 0):
            raise ConfigError(f"start must be epoch milliseconds >= 0, not {self.start!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0 to 65535, not {self.port!r}")
        if self.ping_interval is not None and not self.ping_interval > 0:
            raise ConfigError(f"ping_interval must be a positive number of seconds, not {self.ping_interval!r}")
        if not self.min_update_gap >= 0 or not self.shutdown_notice >= 0:
            raise ConfigError("min_update_gap and shutdown_notice must be >= 0")
        if not isinstance(self.faults, Faults):
            object.__setattr__(self, "faults", parse_faults(self.faults))
        if not isinstance(self.archive_lag, int | float) or not 0 <= self.archive_lag < math.inf:
            raise ConfigError(f"archive_lag must be a number of seconds >= 0, not {self.archive_lag!r}")
        if not isinstance(self.pending_lead, int | float) or not 0 <= self.pending_lead < math.inf:
            raise ConfigError(f"pending_lead must be a number of seconds >= 0, not {self.pending_lead!r}")
        object.__setattr__(self, "listings", normalize_moments(self.listings, "listing"))
        object.__setattr__(self, "delistings", normalize_moments(self.delistings, "delisting"))
        object.__setattr__(self, "halts", normalize_halts(self.halts))
        # Validates the count, the statuses and the schedule; without a start, from now (relative moments
        # keep their order whatever the start).
        self.universe(self.start if self.start is not None else int(time.time() * 1000))

    def universe(self, start: int) -> Universe:
        """The symbol universe of an exchange started at ``start`` (epoch ms), its schedule resolved.

        Raises :class:`ConfigError` for a bad schedule (see :class:`Universe`).
        """
        return Universe(
            self.symbols,
            statuses=self.statuses,
            listings=self.listings,
            delistings=self.delistings,
            halts=self.halts,
            start=start,
            pending_lead=round(self.pending_lead * 1000),
        )


class FakeExchange:
    """A running fake exchange; made by :func:`open_exchange`, valid inside its ``async with``.

    ``endpoints`` is the endpoints map (``{"spot": {"ws": …, "rest": …, "archive": …}, …}``); ``stats``
    counts what the server did (``frames_sent``, ``closed_frames_sent``, ``fault_drop``, ``rest_requests``,
    ``archive_requests``, …).
    """

    def __init__(self, config: ExchangeConfig) -> None:
        # Inside trio.run only: the exchange clock starts now, on trio's clock.
        self.config = config
        self.faults = config.faults
        self.speed = float(config.speed)
        self.min_update_gap = config.min_update_gap
        self.shutdown_notice_ms = math.ceil(config.shutdown_notice * 1000)
        start = config.start if config.start is not None else int(time.time() * 1000)
        self.clock = ExchangeClock(start, self.speed)
        #: The exchange's symbols, their schedule resolved against the clock's start.
        self.universe = config.universe(start)
        self.history = History(config.seed, universe=self.universe, outages=config.faults.outages)
        self.dice = Dice(config.seed)
        self.stats: collections.Counter[str] = collections.Counter()
        self.rest = RestApi(
            self.history,
            self.clock.now,
            faults=self.faults,
            dice=self.dice,
            wall_seconds=self.clock.wall_seconds,
            stats=self.stats,  # the REST faults' counters belong in the exchange's own figures
        )
        #: Binance's data archive (data.binance.vision) for this history: see :mod:`.archive`.
        self.archive = ArchiveServer(
            self.history,
            self.clock.now,
            lag=round(config.archive_lag * 1000),
            faults=self.faults,
            dice=self.dice,
            stats=self.stats,
        )
        self.endpoints: dict[str, dict[str, str]] = {}
        self._connections: set[WsConnection] = set()
        self._idle = trio.Event()
        self._idle.set()
        self._closing = False
        self._serial = 0
        self._stopped = trio.Event()

    # --- public -------------------------------------------------------------------------------

    @property
    def markets(self) -> dict[str, Market]:
        """The market table pointed at this exchange (:func:`trio_klines.core.markets.apply_endpoints`)."""
        return apply_endpoints(self.endpoints)

    @property
    def start(self) -> int:
        """The exchange time at start-up, ms since the epoch: relative schedule moments count from it."""
        return self.clock.start

    def now(self) -> int:
        """The exchange time, ms since the epoch."""
        return self.clock.now()

    def status(self, market: str, symbol: str, now: int | None = None) -> str | None:
        """What ``exchangeInfo`` says of ``symbol`` at ``now`` (default: the exchange's current time);
        ``None`` when it does not list it then."""
        return self.universe.status_at(market, symbol, self.now() if now is None else now)

    def ground_truth(self, market: str, symbol: str, interval: str, start: int, end: int | None = None) -> list[Candle]:
        """The candles this exchange serves for a series, opening in ``[start, end)``, oldest first.

        With ``end`` omitted: every candle that has closed by the exchange's current time (a candle closed
        early at a halt or delisting counts from that moment). Outages, the symbol's listing, halts and
        delisting are respected. Raises :class:`ConfigError` for an unknown market, unlisted symbol or
        unserved interval.
        """
        if end is None:
            now = self.now()
            spec = self.history.spec(market, symbol)
            interval = validate_interval(spec.market, interval)
            candles = self.history.candles(market, symbol, interval, start, now)
            return [c for c in candles if self.history.close_at(spec, interval, c.open_time) <= now]
        return self.history.candles(market, symbol, interval, start, end)

    def cut_connections(self, code: int = 1001, reason: str = "Server shutting down") -> None:
        """Close every open WebSocket connection now (spot announces ``serverShutdown`` first)."""
        for conn in list(self._connections):
            conn.request_close(code, reason)

    def next_serial(self) -> int:
        """A number for the next connection, which seeds its faults."""
        self._serial += 1
        return self._serial

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send)

    def _route(self, path: str) -> tuple[Market, str] | None:
        _, _, rest = path.partition("/")
        prefix, slash, tail = rest.partition("/")
        market = MARKETS.get(prefix)
        return (market, slash + tail) if market is not None else None

    async def _http(self, scope: dict[str, Any], send: Send) -> None:
        path = scope["path"]
        if path == ARCHIVE_PREFIX or path.startswith(ARCHIVE_PREFIX + "/"):  # no market: one archive serves all
            await self.archive.handle(scope, send)
            return
        routed = self._route(path)
        if routed is None or scope["method"] not in ("GET", "HEAD"):
            status = 404 if routed is None else 405
            await respond(send, status, b"", "text/plain", ())
            return
        market, path = routed
        self.stats["rest_requests"] += 1
        # Answered as the request arrives, delivered late: what a slow network does.
        response = self.rest.handle(market, path, scope.get("query_string", b""))
        if response.status != 200:
            self.stats[f"rest_{response.status}"] += 1
        if self.faults.rest_slow:
            self.stats["fault_rest_slow"] += 1
            await trio.sleep(self.faults.rest_slow)
        body = b"" if scope["method"] == "HEAD" else response.body
        await respond(send, response.status, body, response.content_type, response.headers)

    async def _websocket(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        routed = self._route(scope["path"])
        route = resolve_ws_path(routed[0], routed[1], scope.get("query_string", b"")) if routed else None
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if route is None or self._closing:
            # Before accepting, a close is an HTTP rejection (hypercorn answers 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        conn = WsConnection(self, route, scope, send)
        self.stats["ws_connections"] += 1
        self._connections.add(conn)
        self._idle = trio.Event()
        try:
            await conn.run(receive)
        finally:
            self._connections.discard(conn)
            if not self._connections:
                self._idle.set()

    # --- start and stop -----------------------------------------------------------------------

    def _hypercorn_config(self) -> HypercornConfig:
        config = HypercornConfig()
        host = self.config.host
        config.bind = [f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"]
        config.accesslog = None
        config.errorlog = log
        # Our own shutdown has already closed the WebSockets; what hypercorn would wait for is mostly its
        # per-connection ping tasks, which linger until their next tick (20 s at speed 1).
        config.graceful_timeout = _HYPERCORN_GRACE_S
        config.include_server_header = False
        ping = self.config.ping_interval
        config.websocket_ping_interval = ping if ping is not None else max(_MIN_PING_S, _SPOT_PING_S / self.speed)
        return config

    def _bound(self, binds: list[str]) -> None:
        base = binds[0].removeprefix("http://")
        self.endpoints = {
            name: {
                "ws": f"ws://{base}/{name}" + (USDM_KLINE_ROUTE if name == "usdt_futures" else ""),
                "rest": f"http://{base}/{name}",
                "archive": f"http://{base}{ARCHIVE_PREFIX}",
            }
            for name in MARKETS
        }
        apply_endpoints(self.endpoints)  # our own map must be one the recorder accepts

    async def _shutdown(self) -> None:
        """Close every WebSocket (announced on spot), then let the server go."""
        self._closing = True
        self.cut_connections(1001, "Server shutting down")
        with trio.move_on_after(_GRACE_S):
            await self._idle.wait()
        self._stopped.set()


def _check_bindable(host: str, port: int) -> None:
    """Raise a plain :class:`OSError` now rather than one wrapped in the server nursery's ExceptionGroup."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn does
        probe.bind((host, port))


@asynccontextmanager
async def open_exchange(config: ExchangeConfig | None = None, **options: Any) -> AsyncIterator[FakeExchange]:
    """Run a fake exchange on 127.0.0.1 for the duration of the ``async with`` block.

    Pass an :class:`ExchangeConfig` or its fields as keywords (``seed=1, speed=6000, start=…,
    faults="drop=0.1", symbols=10``); ``faults`` may be a string, a mapping or a :class:`Faults`. The
    server is listening when the block starts; on exit it closes every connection and stops. Raises
    :class:`ConfigError` for bad options and :class:`OSError` when it cannot bind.
    """
    if config is None:
        faults = options.pop("faults", None)
        config = ExchangeConfig(**options, faults=parse_faults(faults))
    elif options:
        config = dataclasses.replace(config, **options)
    _check_bindable(config.host, config.port)
    exchange = FakeExchange(config)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(serve, exchange, exchange._hypercorn_config(), shutdown_trigger=exchange._stopped.wait)
        )
        exchange._bound(binds)
        log.info("fake exchange serving %s", exchange.endpoints)
        try:
            yield exchange
        finally:
            await exchange._shutdown()
            # Hypercorn waits for its connections up to its graceful timeout; never longer than ours.
            nursery.cancel_scope.deadline = trio.current_time() + 2 * _GRACE_S
