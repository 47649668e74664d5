"""The three Binance markets as data, their intervals, and the checks every name passes through.

Pure: no I/O, no trio. The figures come from Binance's API documentation (developers.binance.com: the
spot WebSocket streams and general info pages, and the USDⓈ-M and COIN-M "WebSocket market streams" and
"Kline/Candlestick Data" pages); the README's *Markets* section sums them up with the same sources.
Nothing outside this module builds a stream name, a URL or a path from a market, symbol or interval
that has not been through :func:`get_market`, :func:`normalize_symbol` and :func:`validate_interval`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, timedelta
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = [
    "DEFAULT_MAX_URL_LENGTH",
    "INTERVALS",
    "MARKETS",
    "MARKET_NAMES",
    "Market",
    "Series",
    "apply_endpoints",
    "candle_end_time",
    "close_time",
    "combined_stream_url",
    "count_open_times",
    "floor_open_time",
    "get_market",
    "interval_ms",
    "is_open_time",
    "iter_open_times",
    "max_interval_ms",
    "next_open_time",
    "normalize_symbol",
    "plan_connections",
    "raw_stream_url",
    "series",
    "stream_name",
    "url_streams",
    "validate_interval",
]

SECOND: Final = 1_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
WEEK: Final = 7 * DAY
# 1970-01-01 was a Thursday; Binance's 1w candles open on Monday 00:00 UTC (README, *Markets*).
_MONDAY_OFFSET: Final = 4 * DAY

#: Interval string → fixed length in ms; ``1M`` is a calendar month and has no fixed length.
INTERVALS: Final[Mapping[str, int | None]] = {
    "1s": SECOND,
    "1m": MINUTE,
    "3m": 3 * MINUTE,
    "5m": 5 * MINUTE,
    "15m": 15 * MINUTE,
    "30m": 30 * MINUTE,
    "1h": HOUR,
    "2h": 2 * HOUR,
    "4h": 4 * HOUR,
    "6h": 6 * HOUR,
    "8h": 8 * HOUR,
    "12h": 12 * HOUR,
    "1d": DAY,
    "3d": 3 * DAY,
    "1w": WEEK,
    "1M": None,
}
_FUTURES_INTERVALS: Final = tuple(i for i in INTERVALS if i != "1s")

# After upper-casing; this is the only shape that may reach a URL or a file path.
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9_]{1,32}")

#: Longest combined-stream URL we open. A third-party measurement puts Binance's limit near 8,000
#: characters (unverified), so stay well under it; more streams simply take another connection.
DEFAULT_MAX_URL_LENGTH: Final = 4096


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Market:
    """One Binance market: where it lives and the limits it enforces."""

    name: str
    #: Base WebSocket URL; a client appends ``/stream?streams=…`` or ``/ws/<stream>``.
    ws_url: str
    #: Base REST URL; a client appends :attr:`klines_path` and friends.
    rest_url: str
    klines_path: str
    exchange_info_path: str
    time_path: str
    ping_path: str
    intervals: tuple[str, ...]
    max_streams_per_connection: int
    max_klines_per_request: int
    default_klines_limit: int
    #: Markets with the same pool share one REST weight budget (USDⓈ-M and COIN-M since 2026-06-30).
    weight_pool: str
    weight_limit_per_minute: int
    #: How often the server pushes an update of an open candle, in ms.
    update_period_ms: int
    #: How often the server pings; a pong is due well within the deadline.
    server_ping_interval_s: float
    #: Base URL of Binance's public data archive; a client appends the file's path (``data/spot/…``,
    #: :func:`trio_klines.core.archive.archive_file`). One archive serves every market.
    archive_url: str = "https://data.binance.vision"

    def kline_weight(self, limit: int) -> int:
        """Request weight of one klines call asking for ``limit`` rows."""
        if self.weight_pool == "spot":
            return 2
        if limit < 100:
            return 1
        if limit < 500:
            return 2
        if limit <= 1000:
            return 5
        return 10

    def update_period_for(self, interval: str) -> int:
        """Push period of an open candle of ``interval`` (spot pushes ``1s`` twice as often)."""
        return SECOND if interval == "1s" else self.update_period_ms

    def with_urls(
        self, *, ws_url: str | None = None, rest_url: str | None = None, archive_url: str | None = None
    ) -> Market:
        """This market pointed at other hosts (a test exchange, a proxy, a market-data-only host, a mirror
        of the archive)."""
        return dataclasses.replace(
            self,
            ws_url=_check_url(ws_url, ("ws", "wss"), f"{self.name}.ws") if ws_url else self.ws_url,
            rest_url=_check_url(rest_url, ("http", "https"), f"{self.name}.rest") if rest_url else self.rest_url,
            archive_url=(
                _check_url(archive_url, ("http", "https"), f"{self.name}.archive") if archive_url else self.archive_url
            ),
        )


_USDT_FUTURES: Final = Market(
    name="usdt_futures",
    # Since 2026-04-23 klines flow only on the /market route; an unrouted socket ACKs and stays silent.
    ws_url="wss://fstream.binance.com/market",
    rest_url="https://fapi.binance.com",
    klines_path="/fapi/v1/klines",
    exchange_info_path="/fapi/v1/exchangeInfo",
    time_path="/fapi/v1/time",
    ping_path="/fapi/v1/ping",
    intervals=_FUTURES_INTERVALS,
    # Docs now say 1024, older copies 200: take the limit every version agrees on.
    max_streams_per_connection=200,
    max_klines_per_request=1500,
    default_klines_limit=500,
    weight_pool="futures",
    weight_limit_per_minute=2400,
    update_period_ms=250,
    server_ping_interval_s=180.0,
)

MARKETS: Final[Mapping[str, Market]] = {
    "spot": Market(
        name="spot",
        ws_url="wss://stream.binance.com:9443",
        rest_url="https://api.binance.com",
        klines_path="/api/v3/klines",
        exchange_info_path="/api/v3/exchangeInfo",
        time_path="/api/v3/time",
        ping_path="/api/v3/ping",
        intervals=tuple(INTERVALS),
        max_streams_per_connection=1024,
        max_klines_per_request=1000,
        default_klines_limit=500,
        weight_pool="spot",
        weight_limit_per_minute=6000,
        update_period_ms=2 * SECOND,
        server_ping_interval_s=20.0,
    ),
    "usdt_futures": _USDT_FUTURES,
    # COIN-M mirrors USDⓈ-M's limits (and shares its weight budget) on its own hosts, without a route.
    "coin_futures": dataclasses.replace(
        _USDT_FUTURES,
        name="coin_futures",
        ws_url="wss://dstream.binance.com",
        rest_url="https://dapi.binance.com",
        klines_path="/dapi/v1/klines",
        exchange_info_path="/dapi/v1/exchangeInfo",
        time_path="/dapi/v1/time",
        ping_path="/dapi/v1/ping",
    ),
}
MARKET_NAMES: Final = tuple(MARKETS)


class Series(NamedTuple):
    """One recorded series: a market, a symbol and an interval, all validated."""

    market: str
    symbol: str
    interval: str

    def __str__(self) -> str:
        return f"{self.market} {self.symbol}-{self.interval}"


# --- validation -------------------------------------------------------------------------------


def get_market(name: object) -> Market:
    """The market called ``name``; :class:`ConfigError` naming the choices otherwise."""
    market = MARKETS.get(name) if isinstance(name, str) else None
    if market is None:
        raise ConfigError(f"unknown market {name!r}; choose one of: {', '.join(MARKET_NAMES)}")
    return market


def normalize_symbol(symbol: object) -> str:
    """``symbol`` upper-cased, or :class:`ConfigError` if it is not ``[A-Z0-9_]{1,32}``."""
    # ASCII first: str.upper() maps some non-ASCII letters onto ASCII ones ("ſ" → "S").
    if isinstance(symbol, str) and symbol.isascii():
        upper = symbol.upper()
        if _SYMBOL_RE.fullmatch(upper):
            return upper
    raise ConfigError(
        f"invalid symbol {symbol!r}: a symbol is 1 to 32 of A-Z, 0-9 and _ (for example BTCUSDT or BTCUSD_PERP)"
    )


def validate_interval(market: Market | str, interval: object) -> str:
    """``interval`` if ``market`` serves it (case matters: ``1m`` is a minute, ``1M`` a month)."""
    m = market if isinstance(market, Market) else get_market(market)
    if isinstance(interval, str) and interval in m.intervals:
        return interval
    raise ConfigError(f"invalid interval {interval!r} for {m.name}; choose one of: {', '.join(m.intervals)}")


def series(market: str, symbol: str, interval: str) -> Series:
    """A validated :class:`Series`; raises :class:`ConfigError` naming the bad part."""
    m = get_market(market)
    return Series(m.name, normalize_symbol(symbol), validate_interval(m, interval))


# --- interval arithmetic ----------------------------------------------------------------------


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms; :class:`ConfigError` for ``1M``, whose length varies."""
    length = INTERVALS.get(interval)
    if length is None:
        raise ConfigError(
            f"interval {interval!r} has no fixed length"
            if interval in INTERVALS
            else f"unknown interval {interval!r}; choose one of: {', '.join(INTERVALS)}"
        )
    return length


def max_interval_ms(interval: str) -> int:
    """Longest a candle of ``interval`` can last (31 days for ``1M``): for timeouts and page sizes."""
    return 31 * DAY if interval == "1M" else interval_ms(interval)


def _month_start(year: int, month: int) -> int:
    return (date(year, month, 1) - _EPOCH).days * DAY


_EPOCH: Final = date(1970, 1, 1)


def _year_month(t: int) -> tuple[int, int]:
    d = _EPOCH + timedelta(days=t // DAY)
    return d.year, d.month


def floor_open_time(interval: str, t: int) -> int:
    """Open time of the ``interval`` candle that contains instant ``t`` (ms, UTC).

    ``1w`` opens on Monday, ``1M`` on the 1st of the month; the other intervals are multiples of their
    length since the epoch (for ``3d`` that is our assumption: Binance does not document it).
    """
    if interval == "1M":
        return _month_start(*_year_month(t))
    length = interval_ms(interval)
    if interval == "1w":
        return t - (t - _MONDAY_OFFSET) % length
    return t - t % length


def is_open_time(interval: str, t: int) -> bool:
    """Whether ``t`` is where an ``interval`` candle opens."""
    return floor_open_time(interval, t) == t


def next_open_time(interval: str, open_time: int) -> int:
    """Open time of the candle after the one opening at ``open_time`` (calendar-aware for ``1M``)."""
    if interval == "1M":
        year, month = _year_month(open_time)
        return _month_start(year + month // 12, month % 12 + 1)
    return open_time + interval_ms(interval)


def open_time_index(interval: str, open_time: int) -> int:
    """The candle's number on its interval's grid: consecutive candles have consecutive numbers."""
    if interval == "1M":
        year, month = _year_month(open_time)
        return year * 12 + month
    return open_time // interval_ms(interval)


def candle_end_time(interval: str, open_time: int) -> int:
    """The seed's ``candle_end_time``: begin + interval (the next candle's open time), ms."""
    return next_open_time(interval, open_time)


def close_time(interval: str, open_time: int) -> int:
    """Binance's ``T`` / close time of a full candle: the last ms before the next open."""
    return next_open_time(interval, open_time) - 1


def iter_open_times(interval: str, start: int, end: int) -> Iterator[int]:
    """Open times of the candles opening in ``[start, end)``, in order."""
    t = floor_open_time(interval, start)
    if t < start:
        t = next_open_time(interval, t)
    while t < end:
        yield t
        t = next_open_time(interval, t)


def count_open_times(interval: str, start: int, end: int) -> int:
    """How many candles open in ``[start, end)``; O(1) for fixed intervals."""
    if end <= start:
        return 0
    if interval == "1M":
        return sum(1 for _ in iter_open_times(interval, start, end))
    length = interval_ms(interval)
    first = floor_open_time(interval, start)
    if first < start:
        first += length
    return 0 if first >= end else (end - 1 - first) // length + 1


# --- streams and URLs -------------------------------------------------------------------------


def stream_name(symbol: str, interval: str) -> str:
    """Binance's kline stream name: lower-case symbol, interval as is (``btcusdt@kline_1M``)."""
    return f"{normalize_symbol(symbol).lower()}@kline_{interval}"


def combined_stream_url(market: Market, streams: Iterable[str]) -> str:
    """The combined-stream URL carrying ``streams`` (``…/stream?streams=a/b``)."""
    return f"{market.ws_url}/stream?streams={'/'.join(streams)}"


def raw_stream_url(market: Market, stream: str) -> str:
    """The raw-stream URL of one stream (``…/ws/<stream>``)."""
    return f"{market.ws_url}/ws/{stream}"


def url_streams(market: Market, streams: Iterable[str], max_url_length: int = DEFAULT_MAX_URL_LENGTH) -> list[str]:
    """The longest prefix of ``streams`` whose combined-stream URL is at most ``max_url_length`` characters:
    what a connection asks for in its URL; it subscribes to the rest once connected (``SUBSCRIBE``)."""
    length = len(combined_stream_url(market, ()))
    fitting: list[str] = []
    for stream in streams:
        length += len(stream) + (1 if fitting else 0)
        if length > max_url_length:
            break
        fitting.append(stream)
    return fitting


def plan_connections(
    market: Market,
    streams: Iterable[str],
    *,
    max_url_length: int | None = DEFAULT_MAX_URL_LENGTH,
) -> list[tuple[str, ...]]:
    """Split ``streams`` over as few combined-stream connections as the market's limits allow.

    Each group holds at most ``market.max_streams_per_connection`` streams and, unless ``max_url_length`` is
    ``None``, its URL is at most ``max_url_length`` characters (``None``: a connection takes what its URL
    cannot hold by ``SUBSCRIBE``, see :func:`url_streams`). Every distinct stream lands in exactly one
    group, in input order; repeats in the input are dropped. Raises :class:`ConfigError` when one stream
    alone is too long.
    """
    if max_url_length is None:
        unique = list(dict.fromkeys(streams))
        size = market.max_streams_per_connection
        too_long = [s for s in unique if len(combined_stream_url(market, (s,))) > DEFAULT_MAX_URL_LENGTH]
        if too_long:
            raise ConfigError(f"stream {too_long[0]!r} makes a URL longer than {DEFAULT_MAX_URL_LENGTH} characters")
        return [tuple(unique[i : i + size]) for i in range(0, len(unique), size)]
    base = len(combined_stream_url(market, ()))
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    length = base
    for stream in dict.fromkeys(streams):
        extra = len(stream) + (1 if current else 0)
        if base + len(stream) > max_url_length:
            raise ConfigError(f"stream {stream!r} makes a URL longer than {max_url_length} characters")
        if current and (len(current) >= market.max_streams_per_connection or length + extra > max_url_length):
            groups.append(tuple(current))
            current, length, extra = [], base, len(stream)
        current.append(stream)
        length += extra
    if current:
        groups.append(tuple(current))
    return groups


# --- endpoint overrides -----------------------------------------------------------------------


def _check_url(url: str, schemes: tuple[str, ...], what: str) -> str:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # urlsplit's own refusal, e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in schemes or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"invalid URL {url!r} for {what}: expected {' or '.join(schemes)}://host[:port][/path]")
    return url.rstrip("/")


def apply_endpoints(endpoints: Mapping[str, Mapping[str, str]]) -> dict[str, Market]:
    """The market table with URLs replaced from an *endpoints map*.

    The map is what ``python -m trio_klines exchange`` prints first:
    ``{"spot": {"ws": "ws://…", "rest": "http://…", "archive": "http://…"}, …}`` (``archive`` optional:
    the data archive's base URL). Markets it leaves out keep Binance's URLs; unknown markets or keys are a
    :class:`ConfigError`.
    """
    if not isinstance(endpoints, Mapping):
        raise ConfigError(f"endpoints must be a mapping of market to {{'ws': URL, 'rest': URL}}, not {endpoints!r}")
    markets = dict(MARKETS)
    for name, urls in endpoints.items():
        market = get_market(name)
        if not isinstance(urls, Mapping) or not set(urls) <= {"ws", "rest", "archive"}:
            raise ConfigError(f"endpoints for {name} must have only the keys 'ws', 'rest' and 'archive', not {urls!r}")
        markets[name] = market.with_urls(
            ws_url=urls.get("ws"), rest_url=urls.get("rest"), archive_url=urls.get("archive")
        )
    return markets
