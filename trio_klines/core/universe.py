"""Universe specs: every symbol of a market that matches, as the market's ``exchangeInfo`` lists it. Pure.

``usdt_futures:1m,5m,1h:*`` records every symbol of USDⓈ-M futures that trades, in three intervals; the
symbols come from the market's listing, fetched again every few minutes so that a listing is followed
and a delisting ends its series (:mod:`trio_klines.pipeline.universe` does the fetching). The filters say
what "every" means:

- ``*`` every symbol; ``*USDT`` every symbol whose **quote asset** is ``USDT`` (the asset, from the
  listing, not the name's ending: ``USDTUSDC`` quotes in USDC).
- ``contract=perpetual`` or ``contract=delivery`` (futures only): perpetual contracts (``PERPETUAL``,
  ``TRADIFI_PERPETUAL``) or dated ones (quarterlies, monthlies…); any by default.
- ``status=TRADING`` (the default): the statuses that count as listed. Only ``TRADING`` symbols send
  candles, so others are useful only to subscribe ahead of a listing (``PENDING_TRADING``).
- ``exclude=BTCDOMUSDT,DEFIUSDT``: symbols never recorded.

A spec is written ``MARKET:INTERVALS:PATTERN[?FILTER&FILTER…]``, e.g.
``usdt_futures:1m,1h:*USDT?contract=perpetual&exclude=BTCDOMUSDT`` (quote it in a shell).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from ..errors import ConfigError
from .markets import Series, get_market, normalize_symbol, validate_interval

if TYPE_CHECKING:  # symbols imports msgspec, which `--help` must not load
    from .symbols import Listing

__all__ = [
    "CONTRACTS",
    "PERPETUAL_TYPES",
    "UniverseChange",
    "UniverseSpec",
    "follow_universe",
    "is_universe_spec",
    "parse_universe_spec",
    "select_symbols",
    "universe_from_fields",
    "universe_series",
]

#: Contract types that never deliver; every other futures contract type is a dated (delivery) one.
PERPETUAL_TYPES: Final = frozenset({"PERPETUAL", "TRADIFI_PERPETUAL"})
CONTRACTS: Final = ("any", "perpetual", "delivery")
_ASSET_RE: Final = re.compile(r"[A-Z0-9]{1,20}")
_STATUS_RE: Final = re.compile(r"[A-Z_]{1,32}")
_FILTERS: Final = ("contract", "status", "exclude")


@dataclasses.dataclass(frozen=True, slots=True)
class UniverseSpec:
    """Every symbol of ``market`` that the filters keep, in each of ``intervals``.

    ``quote``: the quote asset a symbol must have (``None``: any). ``contract``: ``any``, ``perpetual``
    or ``delivery``. ``statuses``: the listing statuses that count. ``exclude``: symbols left out.
    """

    market: str
    intervals: tuple[str, ...]
    quote: str | None = None
    contract: str = "any"
    statuses: frozenset[str] = frozenset({"TRADING"})
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        m = get_market(self.market)
        object.__setattr__(self, "market", m.name)
        if not self.intervals:
            raise ConfigError(f"a {m.name} universe needs at least one interval")
        object.__setattr__(self, "intervals", tuple(dict.fromkeys(validate_interval(m, i) for i in self.intervals)))
        if self.quote is not None and not (isinstance(self.quote, str) and _ASSET_RE.fullmatch(self.quote)):
            raise ConfigError(f"a quote asset is an upper-case name such as USDT, not {self.quote!r}")
        if self.contract not in CONTRACTS:
            raise ConfigError(f"contract must be one of {', '.join(CONTRACTS)}, not {self.contract!r}")
        if self.contract != "any" and m.name == "spot":
            raise ConfigError("spot has no contracts: contract= applies to usdt_futures and coin_futures")
        statuses = frozenset(self.statuses)
        if not statuses or not all(isinstance(s, str) and _STATUS_RE.fullmatch(s) for s in statuses):
            raise ConfigError(f"statuses are upper-case words such as TRADING, not {sorted(map(str, statuses))}")
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "exclude", frozenset(normalize_symbol(s) for s in self.exclude))

    def __str__(self) -> str:
        filters = []
        if self.contract != "any":
            filters.append(f"contract={self.contract}")
        if self.statuses != {"TRADING"}:
            filters.append(f"status={','.join(sorted(self.statuses))}")
        if self.exclude:
            filters.append(f"exclude={','.join(sorted(self.exclude))}")
        tail = f"?{'&'.join(filters)}" if filters else ""
        return f"{self.market}:{','.join(self.intervals)}:*{self.quote or ''}{tail}"

    def keeps(self, listing: Listing) -> bool:
        """Whether this spec records ``listing``'s symbol."""
        if listing.symbol in self.exclude or listing.status not in self.statuses:
            return False
        if self.quote is not None and listing.quote_asset != self.quote:
            return False
        if self.contract == "perpetual":
            return listing.contract_type in PERPETUAL_TYPES
        if self.contract == "delivery":
            return listing.contract_type is not None and listing.contract_type not in PERPETUAL_TYPES
        return True


def is_universe_spec(spec: str) -> bool:
    """Whether a ``--stream`` spec names a universe (its symbol part holds ``*``) rather than symbols."""
    parts = spec.split(":") if isinstance(spec, str) else []
    return len(parts) == 3 and "*" in parts[2]


def parse_universe_spec(spec: str) -> UniverseSpec:
    """``MARKET:INTERVAL[,INTERVAL…]:*[QUOTE][?FILTER&…]`` → :class:`UniverseSpec`; :class:`ConfigError`
    naming the bad part otherwise."""
    usage = "write MARKET:INTERVALS:*[QUOTE][?contract=…&status=…&exclude=…], e.g. usdt_futures:1m,1h:*USDT"
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 3:
        raise ConfigError(f"invalid universe {spec!r}: {usage}")
    market, intervals, rest = (p.strip() for p in parts)
    pattern, _, query = rest.partition("?")
    pattern = pattern.strip()
    if not pattern.startswith("*") or "*" in pattern[1:]:
        raise ConfigError(f"invalid universe {spec!r}: the symbol part is * or *QUOTE (a quote asset); {usage}")
    options: dict[str, str] = {}
    for item in filter(None, (q.strip() for q in query.split("&"))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _FILTERS or key in options:
            raise ConfigError(f"invalid universe filter {item!r} in {spec!r}: use each of {', '.join(_FILTERS)} once")
        options[key] = value.strip()
    return universe_from_fields(
        market,
        [i.strip() for i in intervals.split(",") if i.strip()],
        quote=pattern[1:].upper() or None,
        contract=options.get("contract", "any").lower(),
        statuses=_names(options["status"]) if "status" in options else None,
        exclude=_names(options.get("exclude", "")),
        where=repr(spec),
    )


def universe_from_fields(
    market: object,
    intervals: Iterable[object],
    *,
    quote: object = None,
    contract: object = "any",
    statuses: Iterable[object] | None = None,
    exclude: Iterable[object] = (),
    where: str = "a universe",
) -> UniverseSpec:
    """A :class:`UniverseSpec` from loose fields (a TOML table, a spec's parts), errors naming ``where``."""
    try:
        return UniverseSpec(
            market,  # type: ignore[arg-type]
            tuple(intervals),  # type: ignore[arg-type]
            quote=quote,  # type: ignore[arg-type]
            contract=contract,  # type: ignore[arg-type]
            statuses=frozenset({"TRADING"} if statuses is None else statuses),  # type: ignore[arg-type]
            exclude=frozenset(exclude),  # type: ignore[arg-type]
        )
    except ConfigError as exc:
        raise ConfigError(f"invalid universe {where}: {exc}") from None


def _names(text: str) -> list[str]:
    return [n.strip().upper() for n in text.split(",") if n.strip()]


def select_symbols(spec: UniverseSpec, listings: Mapping[str, Listing]) -> list[str]:
    """The symbols of ``listings`` (one market's) that ``spec`` records, sorted."""
    return sorted(symbol for symbol, listing in listings.items() if spec.keeps(listing))


def universe_series(specs: Iterable[UniverseSpec], listings: Mapping[str, Mapping[str, Listing]]) -> list[Series]:
    """Every series ``specs`` select from ``listings`` (market → symbol → listing), sorted, each once.

    A market missing from ``listings`` (its listing could not be fetched) selects nothing.
    """
    found: set[Series] = set()
    for spec in specs:
        listing = listings.get(spec.market)
        if listing is None:
            continue
        for symbol in select_symbols(spec, listing):
            found.update(Series(spec.market, symbol, interval) for interval in spec.intervals)
    return sorted(found)


@dataclasses.dataclass(frozen=True, slots=True)
class UniverseChange:
    """What a fresh listing changes: series to start, series to end, and series missing from it for the
    first time (``doubtful``), ended only if the next listing confirms it, so that one odd answer (a
    symbol briefly absent, an answer cut short) never ends a series."""

    added: tuple[Series, ...] = ()
    removed: tuple[Series, ...] = ()
    doubtful: frozenset[Series] = frozenset()


def follow_universe(
    specs: Iterable[UniverseSpec],
    listings: Mapping[str, Mapping[str, Listing]],
    recorded: Iterable[Series],
    doubtful: frozenset[Series] = frozenset(),
) -> UniverseChange:
    """How the universe series ``recorded`` now become what ``specs`` select from ``listings``.

    ``listings`` holds the markets fetched this time: a market missing from it (its fetch failed) keeps
    its series and ends none. ``doubtful``: the previous change's, the series missing from that listing.
    """
    selected = set(universe_series(specs, listings))
    current = set(recorded)
    missing = {s for s in current if s.market in listings and s not in selected}
    removed = missing & doubtful
    return UniverseChange(tuple(sorted(selected - current)), tuple(sorted(removed)), frozenset(missing - removed))
