"""Which configured series the exchange can feed: listed and trading, listed but not trading, or unknown.

Pure: the exchange's ``exchangeInfo`` answer comes in as bytes, the verdict goes out as a
:class:`SeriesCheck`. A symbol the market does not list is a configuration error (most often a typo, so
the verdict carries the closest listed names); a symbol that is listed but not ``TRADING`` (spot
``BREAK``/``HALT``, futures ``SETTLING``/``DELIVERED``/``CLOSE``/``PENDING_TRADING``…) sends no live
candles, so it is reported and skipped. :mod:`trio_klines.net.exchange_info` fetches the answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Final

import msgspec

from ..errors import ConfigError, MalformedMessage
from .markets import Market, Series, get_market, normalize_symbol

__all__ = [
    "CLOSEST_CUTOFF",
    "TRADING",
    "Listing",
    "SeriesCheck",
    "classify_series",
    "closest_symbols",
    "describe_not_trading",
    "describe_unknown",
    "parse_listings",
    "parse_symbol_statuses",
]

#: The one status under which a symbol's streams deliver candles (every market spells it so).
TRADING: Final = "TRADING"
#: A listed name closer than this (difflib's ratio, 0 to 1) to a misspelt one is suggested.
CLOSEST_CUTOFF: Final = 0.6
#: At most this many names are suggested per misspelt symbol.
CLOSEST_COUNT: Final = 3


class _Symbol(msgspec.Struct):
    symbol: str
    status: str | None = None  # spot and USDⓈ-M
    contract_status: str | None = msgspec.field(default=None, name="contractStatus")  # COIN-M
    quote_asset: str | None = msgspec.field(default=None, name="quoteAsset")
    base_asset: str | None = msgspec.field(default=None, name="baseAsset")
    contract_type: str | None = msgspec.field(default=None, name="contractType")  # futures
    onboard_date: int | None = msgspec.field(default=None, name="onboardDate")  # futures, ms


class _ExchangeInfo(msgspec.Struct):
    symbols: list[_Symbol]


_DECODER: Final = msgspec.json.Decoder(_ExchangeInfo)


@dataclass(frozen=True, slots=True)
class Listing:
    """One symbol as a market's ``exchangeInfo`` lists it.

    ``status``: ``status`` on spot and USDⓈ-M, ``contractStatus`` on COIN-M. ``contract_type`` and
    ``onboard_date`` (ms) are the futures markets' (``None`` on spot).
    """

    symbol: str
    status: str
    quote_asset: str | None = None
    base_asset: str | None = None
    contract_type: str | None = None
    onboard_date: int | None = None


def _listed(market: Market | str, body: bytes | str) -> list[Listing]:
    m = market if isinstance(market, Market) else get_market(market)
    try:
        info = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"bad {m.name} exchangeInfo: {exc}", body) from None
    listed = []
    for entry in info.symbols:
        first, second = (
            (entry.contract_status, entry.status) if m.name == "coin_futures" else (entry.status, entry.contract_status)
        )
        status = first if first is not None else second
        if status is None:
            raise MalformedMessage(f"{m.name} exchangeInfo lists {entry.symbol!r} without a status")
        listed.append(
            Listing(entry.symbol, status, entry.quote_asset, entry.base_asset, entry.contract_type, entry.onboard_date)
        )
    return listed


def parse_symbol_statuses(market: Market | str, body: bytes | str) -> dict[str, str]:
    """Symbol → trading status from ``market``'s ``exchangeInfo`` answer, in the exchange's order.

    Spot and USDⓈ-M carry ``status``, COIN-M ``contractStatus``; either is accepted on any market (the
    other field is used when the market's own is missing). Raises :class:`MalformedMessage` for an
    answer without a ``symbols`` list of ``{"symbol": …, "status": …}`` objects.
    """
    return {listing.symbol: listing.status for listing in _listed(market, body)}


def parse_listings(market: Market | str, body: bytes | str) -> dict[str, Listing]:
    """Symbol → :class:`Listing` of every symbol in ``market``'s ``exchangeInfo`` answer, in its order.

    A name that could not be a Binance symbol (it would reach a stream name and a URL) is left out.
    Raises :class:`MalformedMessage` as :func:`parse_symbol_statuses`.
    """
    listings = {}
    for listing in _listed(market, body):
        try:
            valid = normalize_symbol(listing.symbol) == listing.symbol  # lower case or padded: not Binance's
        except ConfigError:
            valid = False
        if valid:
            listings[listing.symbol] = listing
    return listings


def _similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def closest_symbols(
    symbol: str, listed: Iterable[str], *, count: int = CLOSEST_COUNT, cutoff: float = CLOSEST_CUTOFF
) -> list[str]:
    """Up to ``count`` names of ``listed`` most like ``symbol`` (at least ``cutoff`` alike), best first.

    Ties are broken by name, so the answer does not depend on the order of ``listed``.
    """
    scored: list[tuple[float, str]] = []
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(symbol)  # difflib caches facts about seq2: the misspelt name is the fixed one
    for name in set(listed):
        matcher.set_seq1(name)
        # The quick upper bounds skip most of a big listing without the full comparison.
        if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
            ratio = matcher.ratio()
            if ratio >= cutoff:
                scored.append((-ratio, name))
    scored.sort()
    return [name for _, name in scored[:count]]


@dataclass(frozen=True, slots=True)
class SeriesCheck:
    """The verdict on configured series, each in exactly one group, in the order given.

    ``unknown``: the market lists no such symbol (→ the closest listed names); ``not_trading``: listed,
    not ``TRADING`` (→ its status); ``ok``: listed and trading; ``unchecked``: the market's listing could
    not be fetched, so nothing is known (recorded as before the check existed).
    """

    unknown: dict[Series, list[str]] = field(default_factory=dict)
    not_trading: dict[Series, str] = field(default_factory=dict)
    ok: tuple[Series, ...] = ()
    unchecked: tuple[Series, ...] = ()

    @property
    def recordable(self) -> tuple[Series, ...]:
        """The series to record: the trading ones, then those that could not be checked."""
        return self.ok + self.unchecked


def classify_series(series: Iterable[Series], listings: Mapping[str, Mapping[str, str]]) -> SeriesCheck:
    """Sorts ``series`` by what ``listings`` (market → symbol → status) says of their symbols.

    A market missing from ``listings`` could not be checked: its series are ``unchecked``.
    """
    unknown: dict[Series, list[str]] = {}
    not_trading: dict[Series, str] = {}
    ok: list[Series] = []
    unchecked: list[Series] = []
    closest: dict[tuple[str, str], list[str]] = {}  # one search per misspelt symbol, not per interval
    for s in dict.fromkeys(series):
        listing = listings.get(s.market)
        if listing is None:
            unchecked.append(s)
        elif s.symbol not in listing:
            key = (s.market, s.symbol)
            if key not in closest:
                closest[key] = closest_symbols(s.symbol, listing)
            unknown[s] = list(closest[key])
        elif listing[s.symbol] != TRADING:
            not_trading[s] = listing[s.symbol]
        else:
            ok.append(s)
    return SeriesCheck(unknown, not_trading, tuple(ok), tuple(unchecked))


def _spec(s: Series) -> str:
    return f"{s.market}:{s.interval}:{s.symbol}"


def describe_unknown(unknown: Mapping[Series, list[str]]) -> str:
    """One message for every unknown symbol, with the closest listed names (a :class:`ConfigError`'s text).

    ``spot:1m:BTCUSTD: spot lists no symbol BTCUSTD (closest: BTCUSDT, BTCUSD); …``
    """
    parts = []
    for s, names in unknown.items():
        hint = f"closest: {', '.join(names)}" if names else "no listed symbol is close"
        parts.append(f"{_spec(s)}: {s.market} lists no symbol {s.symbol} ({hint})")
    return "; ".join(parts)


def describe_not_trading(not_trading: Mapping[Series, str]) -> str:
    """One line for the series skipped because their symbol does not trade: ``spot:1m:ETHBTC (BREAK); …``."""
    return "; ".join(f"{_spec(s)} ({status})" for s, status in not_trading.items())
