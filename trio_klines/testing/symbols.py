"""The fake exchange's symbol universe: which symbols each market lists, when, and how they trade.

Pure data and arithmetic. A :class:`SymbolSpec` fixes everything the wire format depends on (decimal
places, tick and lot size, COIN-M contract size) and the scale of the generated history (price level,
volume, trade count, volatility, listing date). The defaults copy the real instruments' formats as seen
in ``shared/realdata`` (spot: 8 decimals everywhere; USDⓈ-M: ``pricePrecision`` / ``quantityPrecision``
decimals and their sum for the quote volume; COIN-M: integer contracts and 8-decimal base volume).

The universe changes over time when a :class:`Universe` is given listings, delistings and halts
(:mod:`.schedule` reads their syntax). A symbol trades from its listing to its delisting outside its
halts; :meth:`SymbolSpec.status_at` says what ``exchangeInfo`` shows of it at any moment:

========================  ====================  ==========================  ===========================
moment                    spot ``status``       USDⓈ-M ``status``           COIN-M ``contractStatus``
========================  ====================  ==========================  ===========================
before the listing        absent                absent, then                same as USDⓈ-M
                                                ``PENDING_TRADING`` from
                                                ``pending_lead`` before
trading                   ``TRADING``           ``TRADING``                 ``TRADING``
halted                    ``HALT``              ``PENDING_TRADING``         ``PENDING_TRADING``
delisted (kept listed)    ``BREAK``             ``SETTLING``                ``DELIVERED``
========================  ====================  ==========================  ===========================

Futures have no halt status (binance.md §6): ``PENDING_TRADING`` is the one status of both futures
enums that means "not trading now, trading later"; ``SETTLING``/``DELIVERED`` are where delisted
perpetuals stay on Binance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from ..core.markets import MARKET_NAMES, get_market, normalize_symbol
from ..errors import ConfigError
from .schedule import Halts, ParsedMoment, format_moment, normalize_halts, normalize_moments, resolve_schedule

__all__ = [
    "DELISTED_STATUS",
    "FOREVER",
    "GENERATED_PREFIX",
    "HALT_STATUS",
    "PENDING_LEAD_MS",
    "PENDING_TRADING",
    "SymbolSpec",
    "Universe",
    "generated_symbol",
]

#: Generated symbols are ``SYM0001USDT`` (spot, USDⓈ-M) and ``SYM0001USD_PERP`` (COIN-M).
GENERATED_PREFIX: Final = "SYM"
_MAX_GENERATED: Final = 9999
_STATUS_RE: Final = re.compile(r"[A-Z_]{1,32}")
_SPOT_DECIMALS: Final = 8
#: The end of a trading span that no delisting closes: far beyond any exchange time.
FOREVER: Final = 1 << 62
PENDING_TRADING: Final = "PENDING_TRADING"
#: How long before its listing a futures symbol shows as ``PENDING_TRADING`` (spot shows nothing): an
#: hour, our assumption (Binance announces futures listings hours ahead; the lead is not documented).
PENDING_LEAD_MS: Final = 3_600_000
#: The status of a halted symbol, per market (futures have no halt status: see the module's docstring).
HALT_STATUS: Final = {"spot": "HALT", "usdt_futures": PENDING_TRADING, "coin_futures": PENDING_TRADING}
#: The status of a delisted symbol, which stays in ``exchangeInfo`` (spot ``BREAK``, futures settled).
DELISTED_STATUS: Final = {"spot": "BREAK", "usdt_futures": "SETTLING", "coin_futures": "DELIVERED"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SymbolSpec:
    """One listed symbol: its wire format and the scale of its generated candles.

    Prices are integers in units of ``10**-price_dp`` and always a multiple of ``tick``; volumes are
    integers in units of ``10**-qty_dp`` and a multiple of ``step``. For COIN-M the volume is in
    contracts (``qty_dp`` 0) worth ``contract_size`` USD each, and the "quote" volume is the base-asset
    volume with ``quote_dp`` (8) decimals, exactly as Binance reports them.
    """

    market: str
    symbol: str
    base_asset: str
    quote_asset: str
    #: Typical price; the generated path wanders around it.
    price: float
    price_dp: int
    tick: int
    qty_dp: int
    step: int
    quote_dp: int
    #: Mean base volume per minute (COIN-M: contracts per minute).
    volume_per_minute: float
    trades_per_minute: float
    #: Standard deviation of the daily log return.
    volatility: float
    #: Opening instant of trading (ms); no candle ends before it.
    listed_at: int
    contract_size: int = 0
    #: Chance that a one-minute candle has no trade at all (longer candles: this to the power of minutes).
    zero_trade_chance: float = 0.0
    #: Its trading status in ``exchangeInfo``. A symbol that is not ``TRADING`` (spot ``BREAK``, futures
    #: ``SETTLING``…) is listed there and nowhere else: its streams stay silent, its klines are refused.
    status: str = "TRADING"
    #: Closing instant of trading (ms): no candle opens from then on, and the one open then closes early.
    delisted_at: int | None = None
    #: Trading halts ``(from, to)`` in ms, in time order and apart: no trade in ``[from, to)``; the candle
    #: open at ``from`` closes early unless trading resumes before its end.
    halts: tuple[tuple[int, int], ...] = ()
    #: The spans ``[start, end)`` in which the symbol trades, made of the three fields above.
    segments: tuple[tuple[int, int], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spans = []
        start, end = self.listed_at, FOREVER if self.delisted_at is None else self.delisted_at
        for a, b in self.halts:
            spans.append((start, min(a, end)))
            start = max(start, b)
        spans.append((start, end))
        object.__setattr__(self, "segments", tuple((a, b) for a, b in spans if a < b))

    @property
    def trading(self) -> bool:
        """Whether it has no fixed status other than ``TRADING`` (then it trades in its :attr:`segments`)."""
        return self.status == "TRADING"

    def trading_at(self, t: int) -> bool:
        """Whether it trades at instant ``t`` (ms)."""
        segments = self.segments
        if len(segments) == 1:  # the usual symbol: listed once, never halted
            return segments[0][0] <= t < segments[0][1]
        return any(a <= t < b for a, b in segments)

    def next_trading(self, t: int) -> int | None:
        """The first instant from ``t`` on at which it trades, or ``None`` when it never trades again."""
        for a, b in self.segments:
            if t < b:
                return max(a, t)
        return None

    def status_at(self, now: int, pending_lead: int = PENDING_LEAD_MS) -> str | None:
        """What ``exchangeInfo`` shows of it at ``now``, or ``None`` when it is not listed yet.

        A fixed status (``status`` other than ``TRADING``) holds at every moment.
        """
        if not self.trading:
            return self.status
        if now < self.listed_at:
            return PENDING_TRADING if self.market != "spot" and now >= self.listed_at - pending_lead else None
        if self.delisted_at is not None and now >= self.delisted_at:
            return DELISTED_STATUS[self.market]
        return "TRADING" if self.trading_at(now) else HALT_STATUS[self.market]

    @property
    def tick_size(self) -> str:
        """The tick as Binance's filters write it (``"0.01000000"`` on spot, ``"0.10"`` on USDⓈ-M)."""
        return format_units(self.tick, self.price_dp)

    @property
    def step_size(self) -> str:
        """The lot step as Binance's filters write it."""
        return format_units(self.step, self.qty_dp)


def format_units(units: int, decimals: int) -> str:
    """``units × 10**-decimals`` as a plain decimal string with exactly ``decimals`` places."""
    if decimals == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def _units(text: str, decimals: int) -> int:
    value = Decimal(text).scaleb(decimals)
    if value != value.to_integral_value():
        raise ValueError(f"{text} has more than {decimals} decimals")
    return int(value)


# symbol, base, quote, price, tick, step, volume/min, trades/min, daily vol, listed
_SPOT_ROWS: Final = (
    ("BTCUSDT", "BTC", "USDT", 60_000.0, "0.01", "0.00001", 15.0, 1500.0, 0.030, "2017-08-17T04:00"),
    ("ETHUSDT", "ETH", "USDT", 3_000.0, "0.01", "0.0001", 250.0, 900.0, 0.040, "2017-08-17T04:00"),
    ("BNBUSDT", "BNB", "USDT", 600.0, "0.01", "0.001", 120.0, 300.0, 0.035, "2017-11-06T03:00"),
    ("SOLUSDT", "SOL", "USDT", 150.0, "0.01", "0.001", 900.0, 600.0, 0.050, "2020-08-11T06:00"),
    ("XRPUSDT", "XRP", "USDT", 0.6, "0.0001", "0.1", 250_000.0, 400.0, 0.045, "2018-05-04T08:00"),
    ("DOGEUSDT", "DOGE", "USDT", 0.15, "0.00001", "1", 1_500_000.0, 350.0, 0.060, "2019-07-05T12:00"),
    ("ETHBTC", "ETH", "BTC", 0.05, "0.00001", "0.0001", 40.0, 120.0, 0.025, "2017-07-14T04:00"),
)
# symbol, base, price, pricePrecision, tick, quantityPrecision, step, volume/min, trades/min, vol, listed
_USDM_ROWS: Final = (
    ("BTCUSDT", "BTC", 60_000.0, 2, "0.10", 3, "0.001", 250.0, 5000.0, 0.030, "2019-09-08T00:00"),
    ("ETHUSDT", "ETH", 3_000.0, 2, "0.01", 3, "0.001", 4_000.0, 3000.0, 0.040, "2019-11-27T00:00"),
    ("BNBUSDT", "BNB", 600.0, 3, "0.010", 2, "0.01", 300.0, 400.0, 0.035, "2020-02-10T00:00"),
    ("SOLUSDT", "SOL", 150.0, 4, "0.0100", 0, "1", 3_000.0, 900.0, 0.050, "2020-09-14T00:00"),
    ("XRPUSDT", "XRP", 0.6, 4, "0.0001", 1, "0.1", 900_000.0, 700.0, 0.045, "2020-01-06T00:00"),
)
# symbol, base, price, pricePrecision, tick, contract size, contracts/min, trades/min, vol, listed
_COINM_ROWS: Final = (
    ("BTCUSD_PERP", "BTC", 60_000.0, 1, "0.1", 100, 8_000.0, 600.0, 0.030, "2020-08-11T00:00"),
    ("ETHUSD_PERP", "ETH", 3_000.0, 2, "0.01", 10, 30_000.0, 500.0, 0.040, "2020-08-14T00:00"),
    ("BNBUSD_PERP", "BNB", 600.0, 3, "0.001", 10, 2_000.0, 80.0, 0.035, "2020-09-15T00:00"),
    ("SOLUSD_PERP", "SOL", 150.0, 3, "0.010", 10, 5_000.0, 120.0, 0.050, "2021-09-20T00:00"),
    ("XRPUSD_PERP", "XRP", 0.6, 4, "0.0001", 10, 6_000.0, 90.0, 0.045, "2020-09-15T00:00"),
)
_GENERATED_LISTING: Final = _ms("2021-01-01T00:00")


def _defaults() -> dict[str, dict[str, SymbolSpec]]:
    return {"spot": _spot_specs(), "usdt_futures": _usdm_specs(), "coin_futures": _coinm_specs()}


def _spot_specs() -> dict[str, SymbolSpec]:
    return {
        row[0]: SymbolSpec(
            market="spot",
            symbol=row[0],
            base_asset=row[1],
            quote_asset=row[2],
            price=row[3],
            price_dp=_SPOT_DECIMALS,
            tick=_units(row[4], _SPOT_DECIMALS),
            qty_dp=_SPOT_DECIMALS,
            step=_units(row[5], _SPOT_DECIMALS),
            quote_dp=_SPOT_DECIMALS,
            volume_per_minute=row[6],
            trades_per_minute=row[7],
            volatility=row[8],
            listed_at=_ms(row[9]),
        )
        for row in _SPOT_ROWS
    }


def _usdm_specs() -> dict[str, SymbolSpec]:
    return {
        row[0]: SymbolSpec(
            market="usdt_futures",
            symbol=row[0],
            base_asset=row[1],
            quote_asset="USDT",
            price=row[2],
            price_dp=row[3],
            tick=_units(row[4], row[3]),
            qty_dp=row[5],
            step=_units(row[6], row[5]),
            # The quote volume is Σ price × quantity, exact at the sum of both precisions (realdata).
            quote_dp=row[3] + row[5],
            volume_per_minute=row[7],
            trades_per_minute=row[8],
            volatility=row[9],
            listed_at=_ms(row[10]),
        )
        for row in _USDM_ROWS
    }


def _coinm_specs() -> dict[str, SymbolSpec]:
    return {
        row[0]: SymbolSpec(
            market="coin_futures",
            symbol=row[0],
            base_asset=row[1],
            quote_asset="USD",
            price=row[2],
            price_dp=row[3],
            tick=_units(row[4], row[3]),
            qty_dp=0,
            step=1,
            quote_dp=_SPOT_DECIMALS,
            volume_per_minute=row[6],
            trades_per_minute=row[7],
            volatility=row[8],
            listed_at=_ms(row[9]),
            contract_size=row[5],
        )
        for row in _COINM_ROWS
    }


def generated_symbol(market: str, index: int) -> str:
    """Name of the ``index``-th generated symbol of ``market`` (1-based): ``SYM0001USDT``…"""
    suffix = "USD_PERP" if get_market(market).name == "coin_futures" else "USDT"
    return f"{GENERATED_PREFIX}{index:04d}{suffix}"


def _generated(market: str, index: int) -> SymbolSpec:
    symbol = generated_symbol(market, index)
    digest = hashlib.blake2b(f"{market}/{symbol}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    price = 10 ** (-2 + 5 * u)  # 0.01 … 1000, log-uniform
    # A tick of about 1 bp of the price and a lot worth about 5 USD, like Binance's listings.
    tick_exp = math.floor(math.log10(price)) - 4
    lot_exp = min(0, math.ceil(math.log10(5 / price)))
    base = symbol[len(GENERATED_PREFIX) :].removesuffix("USD_PERP").removesuffix("USDT")
    common = {
        "market": market,
        "symbol": symbol,
        "base_asset": f"S{base}",
        "price": price,
        "trades_per_minute": 40.0,
        "volatility": 0.06,
        "listed_at": _GENERATED_LISTING,
        "zero_trade_chance": 0.02,
    }
    if market == "spot":
        tick_dp = min(_SPOT_DECIMALS, -tick_exp)
        return SymbolSpec(
            **common,
            quote_asset="USDT",
            price_dp=_SPOT_DECIMALS,
            tick=10 ** (_SPOT_DECIMALS - tick_dp),
            qty_dp=_SPOT_DECIMALS,
            step=10 ** (_SPOT_DECIMALS + lot_exp),
            quote_dp=_SPOT_DECIMALS,
            volume_per_minute=20_000 / price,
        )
    price_dp = max(0, -tick_exp)
    if market == "usdt_futures":
        qty_dp = -lot_exp
        return SymbolSpec(
            **common,
            quote_asset="USDT",
            price_dp=price_dp,
            tick=1,
            qty_dp=qty_dp,
            step=1,
            quote_dp=price_dp + qty_dp,
            volume_per_minute=20_000 / price,
        )
    return SymbolSpec(
        **common,
        quote_asset="USD",
        price_dp=price_dp,
        tick=1,
        qty_dp=0,
        step=1,
        quote_dp=_SPOT_DECIMALS,
        volume_per_minute=2_000.0,
        contract_size=10,
    )


class Universe:
    """Every symbol each market lists: the defaults plus ``extra`` generated ones per market, and when they trade.

    ``statuses`` maps ``"market:SYMBOL"`` to a fixed status other than ``TRADING`` (``{"spot:ETHBTC": "BREAK"}``):
    such a symbol is listed in :meth:`symbols` (so ``exchangeInfo`` shows it with that status) but is not
    found by :meth:`get` and :meth:`spec`, so its streams stay silent and its klines are refused, as for
    a symbol under a trading break.

    ``listings``, ``delistings`` and ``halts`` schedule changes (keys ``"market:SYMBOL"``, moments as
    :mod:`.schedule` reads them): a listing moves the symbol's ``listed_at`` (into the future: a symbol
    listed during a run is one of this universe's symbols), a delisting sets its ``delisted_at``, halts
    its ``halts`` (``"+10s..+30s"``, a ``(from, to)`` pair or a list of them). Relative moments count from
    ``start``, the exchange's start in epoch ms. ``pending_lead`` (ms) is how long before its listing a
    futures symbol shows as ``PENDING_TRADING``.

    Raises :class:`ConfigError` when ``extra`` is negative or above 9999; for a status, listing, delisting
    or halt given to a market or symbol that is not listed; for a status that is not an upper-case word;
    for a bad time, a relative one without ``start``, a delisting not after the listing, a halt that does
    not end after it starts, starts before the listing or from the delisting on, or overlaps another; and
    for a symbol with a fixed status that is also scheduled.
    """

    def __init__(
        self,
        extra: int = 0,
        *,
        statuses: Mapping[str, str] | None = None,
        listings: Mapping[str, object] | None = None,
        delistings: Mapping[str, object] | None = None,
        halts: Mapping[str, object] | None = None,
        start: int | None = None,
        pending_lead: int = PENDING_LEAD_MS,
    ) -> None:
        if not isinstance(extra, int) or not 0 <= extra <= _MAX_GENERATED:
            raise ConfigError(f"the number of generated symbols must be 0 to {_MAX_GENERATED}, not {extra!r}")
        if not isinstance(pending_lead, int) or isinstance(pending_lead, bool) or pending_lead < 0:
            raise ConfigError(f"pending_lead must be a whole number of ms >= 0, not {pending_lead!r}")
        self.extra = extra
        self.pending_lead = pending_lead
        self._specs = _defaults()
        for market in MARKET_NAMES:
            for i in range(1, extra + 1):
                spec = _generated(market, i)
                self._specs[market][spec.symbol] = spec
        for key, status in (statuses or {}).items():
            market, symbol = self._status_key(key)
            if not isinstance(status, str) or not _STATUS_RE.fullmatch(status):
                raise ConfigError(f"a symbol status is an upper-case word such as BREAK, not {status!r}")
            self._specs[market][symbol] = dataclasses.replace(self._specs[market][symbol], status=status)
        self._scheduled: list[SymbolSpec] = []
        self._schedule(
            normalize_moments(listings, "listing"),
            normalize_moments(delistings, "delisting"),
            normalize_halts(halts),
            start,
        )

    def _status_key(self, key: object) -> tuple[str, str]:
        market, sep, symbol = key.partition(":") if isinstance(key, str) else ("", "", "")
        if not sep:
            raise ConfigError(f"a symbol status is keyed 'market:SYMBOL', not {key!r}")
        name, symbol = get_market(market).name, normalize_symbol(symbol)
        if symbol not in self._specs[name]:
            raise ConfigError(f"the fake exchange lists no {name} symbol {symbol!r}")
        return name, symbol

    def _schedule(
        self,
        listings: dict[str, ParsedMoment],
        delistings: dict[str, ParsedMoment],
        halts: dict[str, Halts],
        start: int | None,
    ) -> None:
        for key in dict.fromkeys([*listings, *delistings, *halts]):
            market, _, symbol = key.partition(":")
            spec = self._specs[market].get(symbol)
            if spec is None:
                raise ConfigError(f"{key}: the fake exchange lists no {market} symbol {symbol!r}")
            if not spec.trading:
                raise ConfigError(
                    f"{key} has the fixed status {spec.status}: it cannot also be listed, delisted or halted"
                )
            listed, delisted, halted = resolve_schedule(
                key, spec.listed_at, listings.get(key), delistings.get(key), halts.get(key, ()), start
            )
            spec = dataclasses.replace(spec, listed_at=listed, delisted_at=delisted, halts=halted)
            self._specs[market][symbol] = spec
            self._scheduled.append(spec)

    def symbols(self, market: str) -> Mapping[str, SymbolSpec]:
        """Symbol → spec of every symbol ``market`` lists at any time, trading or not, in listing order.

        Raises :class:`ConfigError` for a bad market.
        """
        return self._specs[get_market(market).name]

    def listed(self, market: str, now: int) -> dict[str, SymbolSpec]:
        """Symbol → spec of every symbol ``exchangeInfo`` shows at ``now`` (ms), each spec's ``status`` the one
        it has then (see :meth:`SymbolSpec.status_at`), in listing order.

        Raises :class:`ConfigError` for a bad market.
        """
        out: dict[str, SymbolSpec] = {}
        for symbol, spec in self._specs[get_market(market).name].items():
            status = spec.status_at(now, self.pending_lead)
            if status is not None:
                out[symbol] = spec if status == spec.status else dataclasses.replace(spec, status=status)
        return out

    def status_at(self, market: str, symbol: str, now: int) -> str | None:
        """The status ``exchangeInfo`` shows for ``symbol`` at ``now``; ``None`` when it does not list it then.

        Raises :class:`ConfigError` for a bad market.
        """
        spec = self._specs[get_market(market).name].get(symbol)
        return None if spec is None else spec.status_at(now, self.pending_lead)

    @property
    def scheduled(self) -> tuple[SymbolSpec, ...]:
        """The specs of the symbols given a listing, delisting or halt, in the order they were given."""
        return tuple(self._scheduled)

    def describe_schedule(self) -> list[str]:
        """One line per scheduled symbol, in exchange time: ``usdt_futures:SYM0003USDT listed 2026-…Z``."""
        lines = []
        for spec in self._scheduled:
            parts = [f"listed {format_moment(spec.listed_at)}"]
            parts += [f"halted {format_moment(a)} to {format_moment(b)}" for a, b in spec.halts]
            if spec.delisted_at is not None:
                parts.append(f"delisted {format_moment(spec.delisted_at)}")
            lines.append(f"{spec.market}:{spec.symbol} " + ", ".join(parts))
        return lines

    def get(self, market: str, symbol: str) -> SymbolSpec | None:
        """The spec of ``symbol`` on ``market``, or ``None`` when the market never lists it or it has a fixed
        status other than ``TRADING``. When it trades is the spec's business (:attr:`SymbolSpec.segments`)."""
        spec = self._specs[get_market(market).name].get(symbol)
        return spec if spec is not None and spec.trading else None

    def spec(self, market: str, symbol: str) -> SymbolSpec:
        """The spec of ``symbol`` on ``market``; :class:`ConfigError` when it is not listed or does not trade."""
        spec = self.get(market, symbol)
        if spec is None:
            listed = self._specs[get_market(market).name].get(symbol)
            if listed is not None:
                raise ConfigError(f"the fake exchange's {market} symbol {symbol!r} does not trade ({listed.status})")
            raise ConfigError(f"the fake exchange lists no {market} symbol {symbol!r}")
        return spec
