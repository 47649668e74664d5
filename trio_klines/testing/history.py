"""The fake exchange's deterministic candle history: the ground truth of every end-to-end test.

Pure: no I/O, no clock. A candle is a function of (seed, market, symbol, interval, open time) only, so
the WebSocket feed, the REST endpoint and :func:`ground_truth` agree without sharing state. Values are
integers (price ticks, volume lots) turned into Binance's decimal strings by :mod:`.wire`; the ground
truth is ``float`` of those strings, which is what :mod:`trio_klines.core.parse` produces, exactly.

The price of a symbol is one continuous path in time — slow waves plus a little noise, both hashed from
the seed — so a candle closes where the next one opens and candles of different intervals tell the same
story. Highs and lows add a random excursion beyond the path's sampled extremes.

A candle exists when the symbol trades at some instant of its span (:attr:`SymbolSpec.segments`: from its
listing to its delisting, outside its halts) and its open time is outside every outage. So the candle in
which a symbol is listed exists (its values are those of a full candle), candles wholly inside a halt or
after the delisting do not, and one that spans a short halt does. A candle in which trading stops for
good — at a halt that lasts past its end, or at the delisting — closes early, as Binance's do
(``shared/realdata``: the 2023-03-24 12:39 candle closes at 12:39:41.646): its close time is the stop
minus 1 ms and its values are the candle as it stood at the stop (:meth:`History.close_at`).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

from ..core.markets import floor_open_time, get_market, next_open_time, normalize_symbol, validate_interval
from ..core.parse import Candle
from ..errors import ConfigError
from .schedule import normalize_halts, normalize_moments
from .symbols import SymbolSpec, Universe
from .wire import kline_floats, kline_strings

__all__ = ["History", "Kline", "Outage", "ground_truth", "key_of", "mix64"]

_MASK: Final = (1 << 64) - 1
_MINUTE: Final = 60_000
_DAY: Final = 86_400_000
# Reference instant for the waves' phases: keeps the arguments of sin() small and exact.
_EPOCH: Final = 1_600_000_000_000
# Periods (ms) of the waves that make up the slow part of the price path, from minutes to a year.
_PERIODS: Final = (360_000, 2_700_000, 14_000_000, 100_000_000, 650_000_000, 3_500_000_000, 20_000_000_000)
# Intermediate points of a candle where the path is sampled for highs, lows and open-candle closes.
_SAMPLES: Final = 4
_CACHE_SIZE: Final = 4096


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def key_of(*parts: object) -> int:
    """A stable 64-bit key for names and numbers (Python's ``hash`` of a str changes per process)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _normal(h: int) -> float:
    # Irwin–Hall of four 16-bit uniforms: close enough to a standard normal, and cheap.
    s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48)
    return (s / 65536.0 - 2.0) * 1.7320508075688772


class Outage(NamedTuple):
    """A maintenance window in exchange time: no candle opens in ``[start, end)`` (ms)."""

    start: int
    end: int

    def __contains__(self, t: object) -> bool:
        return isinstance(t, int) and self.start <= t < self.end


class Kline(NamedTuple):
    """One candle as integers in the symbol's units (see :class:`SymbolSpec`).

    ``first_id``/``last_id`` are trade ids, ``-1`` when the candle has no trade (as Binance sends).
    """

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    taker_base: int
    taker_quote: int
    first_id: int
    last_id: int


class _PricePath:
    """log price(t) = log level + Σ waves + noise; rounded to the tick."""

    __slots__ = ("_cache", "_key", "_level", "_noise", "_tick", "_units", "_waves")

    def __init__(self, seed: int, spec: SymbolSpec) -> None:
        self._key = key_of("path", seed, spec.market, spec.symbol)
        self._level = math.log(spec.price)
        self._units = 10.0**spec.price_dp
        self._tick = spec.tick
        waves = []
        h = self._key
        for period in _PERIODS:
            h = mix64(h)
            # Brownian-like scaling: a wave's amplitude grows with the square root of its period.
            amplitude = 0.4 * spec.volatility * math.sqrt(period / _DAY) * (0.5 + (h & 0xFFFF) / 65536.0)
            phase = 2 * math.pi * ((h >> 16) & 0xFFFF) / 65536.0
            waves.append((period, amplitude, phase))
        self._waves = tuple(waves)
        self._noise = 0.15 * spec.volatility * math.sqrt(_MINUTE / _DAY)
        # Neighbouring candles share instants (a close is the next open): remember the recent ones.
        self._cache: dict[int, int] = {}

    def __call__(self, t: int) -> int:
        """Price at instant ``t`` (ms) in units of ``10**-price_dp``, a positive multiple of the tick."""
        cached = self._cache.get(t)
        if cached is not None:
            return cached
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        x = self._level + self._noise * _normal(mix64(self._key ^ (t * 0x9E3779B97F4A7C15 & _MASK)))
        offset = t - _EPOCH
        for period, amplitude, phase in self._waves:
            x += amplitude * math.sin(6.283185307179586 * (offset % period) / period + phase)
        ticks = round(math.exp(x) * self._units / self._tick)
        price = self._cache[t] = max(1, ticks) * self._tick
        return price


class History:
    """The candles of every listed series, for one seed, universe and set of outages.

    Raises :class:`ConfigError` (from the methods) for an unknown market, symbol or interval.
    """

    def __init__(self, seed: int = 0, *, universe: Universe | None = None, outages: Iterable[Outage] = ()) -> None:
        if not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, not {seed!r}")
        self.seed = seed
        self.universe = universe if universe is not None else Universe()
        self.outages = tuple(sorted(Outage(*o) for o in outages))
        self._paths: dict[tuple[str, str], _PricePath] = {}
        self._series_keys: dict[tuple[str, str, str], int] = {}

    # --- lookup -------------------------------------------------------------------------------

    def spec(self, market: str, symbol: str) -> SymbolSpec:
        """The listed symbol's spec; :class:`ConfigError` if the market does not list it."""
        return self.universe.spec(get_market(market).name, normalize_symbol(symbol))

    def _path(self, spec: SymbolSpec) -> _PricePath:
        path = self._paths.get((spec.market, spec.symbol))
        if path is None:
            path = self._paths[(spec.market, spec.symbol)] = _PricePath(self.seed, spec)
        return path

    def _series_key(self, spec: SymbolSpec, interval: str) -> int:
        k = (spec.market, spec.symbol, interval)
        key = self._series_keys.get(k)
        if key is None:
            key = self._series_keys[k] = key_of("candle", self.seed, *k)
        return key

    # --- existence ----------------------------------------------------------------------------

    def outage_at(self, t: int) -> Outage | None:
        """The outage containing instant ``t``, if any."""
        for outage in self.outages:
            if t in outage:
                return outage
        return None

    def exists(self, spec: SymbolSpec, interval: str, open_time: int) -> bool:
        """Whether the candle opening at ``open_time`` exists: the symbol trades during it, outside any outage."""
        end = next_open_time(interval, open_time)
        segments = spec.segments
        if len(segments) == 1:  # the usual symbol: listed once, never halted
            traded = segments[0][0] < end and segments[0][1] > open_time
        else:
            traded = any(a < end and b > open_time for a, b in segments)
        return traded and self.outage_at(open_time) is None

    def first_open_time(self, spec: SymbolSpec, interval: str) -> int:
        """Open time of the symbol's first candle of ``interval``."""
        return floor_open_time(interval, spec.listed_at)

    def next_trading_open(self, spec: SymbolSpec, interval: str, open_time: int) -> int | None:
        """The first open time from ``open_time`` on of a candle during which the symbol trades (outages aside),
        or ``None`` when it never trades again."""
        for a, b in spec.segments:
            if b > open_time:
                return open_time if a <= open_time else floor_open_time(interval, a)
        return None

    def prev_trading_open(self, spec: SymbolSpec, interval: str, open_time: int) -> int | None:
        """The last open time up to ``open_time`` of a candle during which the symbol trades (outages aside),
        or ``None`` when it had not traded by then."""
        end = next_open_time(interval, open_time)
        for a, b in reversed(spec.segments):
            if a < end:
                return open_time if b > open_time else floor_open_time(interval, b - 1)
        return None

    def close_at(self, spec: SymbolSpec, interval: str, open_time: int) -> int:
        """The instant the candle opening at ``open_time`` closes: the next open time, or earlier when trading
        stops for good inside it (a halt lasting past its end, or the delisting). Its closed WebSocket event
        has this ``E``, and its close time is this minus 1 ms."""
        end = next_open_time(interval, open_time)
        for a, b in reversed(spec.segments):
            if a < end:
                return b if open_time < b < end else end
        return end

    def first_trade(self, spec: SymbolSpec, interval: str, open_time: int) -> int | None:
        """The first instant of the candle opening at ``open_time`` at which the symbol trades, if any."""
        t = spec.next_trading(open_time)
        return t if t is not None and t < next_open_time(interval, open_time) else None

    def open_times(self, spec: SymbolSpec, interval: str, start: int, end: int, limit: int | None = None) -> list[int]:
        """Open times of the existing candles opening in ``[start, end)``, oldest first (``limit`` at most)."""
        out: list[int] = []
        t: int | None = _ceil_open_time(interval, max(start, self.first_open_time(spec, interval)))
        while t is not None and t < end and (limit is None or len(out) < limit):
            t = self.next_trading_open(spec, interval, t)
            if t is None or t >= end:
                break
            outage = self.outage_at(t)
            if outage is not None:
                t = _ceil_open_time(interval, outage.end)
                continue
            out.append(t)
            t = next_open_time(interval, t)
        return out

    def open_times_before(self, spec: SymbolSpec, interval: str, end: int, count: int, floor: int) -> list[int]:
        """Open times of the ``count`` newest existing candles opening in ``[floor, end]``, oldest first."""
        out: list[int] = []
        lowest = max(floor, self.first_open_time(spec, interval))
        t: int | None = floor_open_time(interval, end)
        while t is not None and len(out) < count and t >= lowest:
            t = self.prev_trading_open(spec, interval, t)
            if t is None or t < lowest:
                break
            outage = self.outage_at(t)
            if outage is not None:
                t = floor_open_time(interval, outage.start - 1)
                continue
            out.append(t)
            t = floor_open_time(interval, t - 1)
        out.reverse()
        return out

    # --- candles ------------------------------------------------------------------------------

    def kline(self, spec: SymbolSpec, interval: str, open_time: int) -> Kline:
        """The closed candle opening at ``open_time``, existing or not (see :meth:`exists`).

        A full candle, or one closed early (:meth:`close_at`): its values as they stood then.
        """
        full = self._full(spec, interval, open_time)
        close = self.close_at(spec, interval, open_time)
        if close == full.close_time + 1:
            return full
        return self._partial(spec, open_time, close, full)._replace(close_time=close - 1)

    def kline_at(self, spec: SymbolSpec, interval: str, open_time: int, now: int) -> Kline:
        """The candle opening at ``open_time`` as REST serves it at ``now``: closed (:meth:`kline`) once it has
        closed, else as it stood at the last instant it traded (during a halt: when the halt began)."""
        if self.close_at(spec, interval, open_time) <= now:
            return self.kline(spec, interval, open_time)
        at = now
        if not spec.trading_at(now):
            at = max((b for a, b in spec.segments if b <= now), default=open_time)
        return self.partial(spec, interval, open_time, max(at, open_time))

    def _full(self, spec: SymbolSpec, interval: str, open_time: int) -> Kline:
        """The candle opening at ``open_time`` over its whole interval, whatever the symbol's trading."""
        end = next_open_time(interval, open_time)
        length = end - open_time
        price = self._path(spec)
        o = price(open_time)
        c = price(end)
        h1 = mix64(self._series_key(spec, interval) ^ (open_time * 0xD6E8FEB86659FD93 & _MASK))
        h2 = mix64(h1)
        minutes = length / _MINUTE
        if spec.zero_trade_chance and (h1 & 0xFFFFFFFF) / 2**32 < spec.zero_trade_chance**minutes:
            return Kline(open_time, end - 1, o, o, o, o, 0, 0, 0, 0, 0, -1, -1)
        samples = [price(open_time + length * j // _SAMPLES) for j in range(1, _SAMPLES)]
        top = max(o, c, *samples)
        bottom = min(o, c, *samples)
        # Wicks beyond the sampled path: about a third of a candle's typical range.
        reach = o * spec.volatility * math.sqrt(length / _DAY) * 0.35
        tick = spec.tick
        high = top + round(reach * ((h1 >> 32) & 0xFFFF) / 65536.0 / tick) * tick
        low = max(tick, bottom - round(reach * (h1 >> 48) / 65536.0 / tick) * tick)

        mean = spec.volume_per_minute * minutes
        factor = math.exp(0.6 * _normal(h2))
        scale = 10**spec.qty_dp
        volume = max(1, round(mean * factor * scale / spec.step)) * spec.step
        trades = max(1, round(spec.trades_per_minute * minutes * factor**0.8 * (0.7 + 0.6 * (h2 & 0xFF) / 256)))
        vwap = low + (high - low) * (64 + ((h2 >> 8) & 0x7F)) // 256
        taker = volume * (77 + ((h2 >> 16) & 0x7F)) // 256 // spec.step * spec.step
        if spec.contract_size:
            # COIN-M: base volume = contracts × contract size / price, 8 decimals, rounded down.
            quote = volume * spec.contract_size * 10 ** (spec.quote_dp + spec.price_dp) // vwap
        else:
            quote = volume * vwap * 10**spec.quote_dp // 10 ** (spec.qty_dp + spec.price_dp)
        taker_quote = quote * taker // volume
        first_id = int(open_time / _MINUTE * spec.trades_per_minute * 1.5)
        return Kline(open_time, end - 1, o, high, low, c, volume, quote, trades, taker, taker_quote, first_id,
                     first_id + trades - 1)  # fmt: skip

    def partial(self, spec: SymbolSpec, interval: str, open_time: int, at: int, full: Kline | None = None) -> Kline:
        """The candle opening at ``open_time`` as it stands at instant ``at`` (still open).

        Every value grows (or the low falls) as ``at`` advances and stays within the final candle, so a
        sequence of open updates always ends consistently with the closed one. ``at`` is clamped to the
        candle's span; from its close on (:meth:`close_at`) this is the closed candle. ``full`` is the
        closed candle (:meth:`kline`) when the caller already has it.
        """
        if full is None:
            full = self.kline(spec, interval, open_time)
        close = full.close_time + 1
        if at >= close:
            return full
        if close != next_open_time(interval, open_time):  # closed early: grow towards the whole candle
            full = self._full(spec, interval, open_time)
        return self._partial(spec, open_time, at, full)

    def _partial(self, spec: SymbolSpec, open_time: int, at: int, full: Kline) -> Kline:
        end = full.close_time + 1
        length = end - open_time
        elapsed = min(max(at - open_time, 0), length)
        if full.trades == 0 or elapsed >= length:
            return full
        price = self._path(spec)
        # Closes move on a coarse grid so that running highs and lows only ever widen.
        seen = [
            price(open_time + length * j // _SAMPLES) for j in range(1, _SAMPLES) if length * j // _SAMPLES <= elapsed
        ]
        close = seen[-1] if seen else full.open
        high = max(full.open, *seen) if seen else full.open
        low = min(full.open, *seen) if seen else full.open
        step = spec.step
        volume = full.volume * elapsed // length // step * step
        trades = full.trades * elapsed // length
        taker = full.taker_base * elapsed // length // step * step
        return full._replace(
            high=high,
            low=low,
            close=close,
            volume=volume,
            quote_volume=full.quote_volume * elapsed // length,
            trades=trades,
            taker_base=taker,
            taker_quote=full.taker_quote * elapsed // length,
            first_id=full.first_id if trades else -1,
            last_id=full.first_id + trades - 1 if trades else -1,
        )

    def candle(self, spec: SymbolSpec, interval: str, kline: Kline, exact: bool = False) -> Candle:
        """The :class:`Candle` that :mod:`trio_klines.core.parse` makes of ``kline``'s wire strings (``exact``:
        the exact parsers, whose values are those strings)."""
        values = kline_strings(spec, kline) if exact else kline_floats(spec, kline)
        return Candle(spec.market, spec.symbol, interval, kline.open_time, *values)

    def candles(
        self, market: str, symbol: str, interval: str, start: int, end: int, *, exact: bool = False
    ) -> list[Candle]:
        """Ground truth: the existing candles of a series opening in ``[start, end)``, oldest first.

        A pure function of its arguments (and this history's seed, universe and outages): it includes
        candles that, in exchange time, have not happened yet. Raises :class:`ConfigError` for an
        unknown market, unlisted symbol or an interval the market does not serve. ``exact``: values as
        the strings sent (see :meth:`candle`).
        """
        spec = self.spec(market, symbol)
        interval = validate_interval(spec.market, interval)
        return [
            self.candle(spec, interval, self.kline(spec, interval, t), exact)
            for t in self.open_times(spec, interval, start, end)
        ]


def _ceil_open_time(interval: str, t: int) -> int:
    start = floor_open_time(interval, t)
    return start if start == t else next_open_time(interval, start)


def ground_truth(
    market: str,
    symbol: str,
    interval: str,
    start: int,
    end: int,
    *,
    seed: int = 0,
    outages: Sequence[tuple[int, int]] = (),
    symbols: int = 0,
    listings: Mapping[str, object] | None = None,
    delistings: Mapping[str, object] | None = None,
    halts: Mapping[str, object] | None = None,
    exchange_start: int | None = None,
    exact: bool = False,
) -> list[Candle]:
    """The candles an exchange with this seed, outages, symbol count and schedule serves, opening in
    ``[start, end)`` (``exact``: their values the decimal strings sent, as the exact parsers give them).

    Same as :meth:`FakeExchange.ground_truth`, without a running exchange. ``listings``, ``delistings``
    and ``halts`` are those of :class:`~.symbols.Universe`; relative times in them count from
    ``exchange_start`` (the exchange's ``start``, epoch ms). Raises :class:`ConfigError` for an unknown
    market, unlisted symbol, unserved interval or a bad schedule.
    """
    key = tuple(sorted(Outage(*o) for o in outages))
    schedule = (
        tuple(normalize_moments(listings, "listing").items()),
        tuple(normalize_moments(delistings, "delisting").items()),
        tuple(normalize_halts(halts).items()),
    )
    return _history(seed, key, symbols, schedule, exchange_start).candles(market, symbol, interval, start, end,
                                                                          exact=exact)  # fmt: skip


@functools.lru_cache(maxsize=8)
def _history(
    seed: int,
    outages: tuple[Outage, ...],
    symbols: int,
    schedule: tuple[tuple[tuple[str, object], ...], ...] = ((), (), ()),
    start: int | None = None,
) -> History:
    # Tests call ground_truth over and over with the same exchange settings.
    listings, delistings, halts = (dict(items) for items in schedule)
    universe = Universe(symbols, listings=listings, delistings=delistings, halts=halts, start=start)
    return History(seed, universe=universe, outages=outages)
