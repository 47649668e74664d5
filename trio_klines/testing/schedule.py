"""Scheduled changes to the fake exchange's universe: listings, delistings and trading halts, and their syntax.

Pure: text and values in, canonical values or a one-line :class:`ConfigError` out. A *moment* is either
absolute — epoch ms (an ``int``), an ISO date or date-time (UTC unless it says otherwise), a
:class:`~datetime.datetime` — or relative to the exchange's start: ``"+20s"``, ``"-1h"``, ``"+1m30s"``,
``"+250ms"`` or a :class:`~datetime.timedelta`. Every moment is exchange time: the fake exchange's own
clock, which starts at its ``start`` and runs ``speed`` times faster than the wall clock.

Keys name a symbol as ``"market:SYMBOL"`` (``"usdt_futures:SYM0003USDT"``). The command line writes an
event as ``MARKET:SYMBOL@MOMENT`` (``--listing``, ``--delisting``) or ``MARKET:SYMBOL@FROM..TO``
(``--halt``); :func:`parse_event_flag` reads those.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal, TypeAlias

from ..config import parse_time
from ..core.markets import get_market, normalize_symbol
from ..errors import ConfigError

__all__ = [
    "Halts",
    "Moment",
    "ParsedMoment",
    "describe_moment",
    "format_moment",
    "normalize_halts",
    "normalize_moments",
    "parse_event_flag",
    "parse_moment",
    "resolve_moment",
    "resolve_schedule",
    "symbol_key",
]

#: A moment as a caller may give it (see the module's docstring).
Moment: TypeAlias = int | str | datetime | date | timedelta
#: A moment once parsed: epoch ms, or an offset from the exchange's start.
ParsedMoment: TypeAlias = int | timedelta
#: Every halt of one symbol, ``(from, to)`` pairs in time order.
Halts: TypeAlias = tuple[tuple[ParsedMoment, ParsedMoment], ...]

_UNITS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART: Final = r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)"
_RELATIVE: Final = re.compile(rf"([+-])((?:{_PART})+)")
_PARTS: Final = re.compile(_PART)
# An absolute epoch-ms moment before this (1973) is surely an offset written without its sign.
_SMALLEST_ABSOLUTE: Final = 10**11
_MS: Final = timedelta(milliseconds=1)
_SYNTAX: Final = "write +20s, -1h, +1m30s, an ISO date-time such as 2026-01-01T00:00:20 or epoch ms"
Kind = Literal["listing", "delisting", "halt"]


def parse_moment(value: object, what: str = "moment") -> ParsedMoment:
    """``value`` as epoch ms (absolute) or a :class:`timedelta` (relative to the exchange's start).

    Raises :class:`ConfigError` naming ``what`` for anything else, and for a bare number so small that
    it must be an offset missing its sign (``20000``: write ``"+20s"``).
    """
    if isinstance(value, timedelta):
        if value % _MS:
            raise ConfigError(f"{what}: {value} is not a whole number of milliseconds")
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _RELATIVE.fullmatch(text)
        if match is not None:
            ms = sum(float(n) * _UNITS[unit] for n, unit in _PARTS.findall(match.group(2)))
            if ms != int(ms):
                raise ConfigError(f"{what}: {value!r} is not a whole number of milliseconds")
            return timedelta(milliseconds=-int(ms) if match.group(1) == "-" else int(ms))
        if text[:1] in "+-" or not text:
            raise ConfigError(f"{what}: invalid time {value!r}; {_SYNTAX}")
    if isinstance(value, bool) or not isinstance(value, int | str | datetime | date):
        raise ConfigError(f"{what}: invalid time {value!r}; {_SYNTAX}")
    try:
        ms = parse_time(value)
    except ConfigError:
        raise ConfigError(f"{what}: invalid time {value!r}; {_SYNTAX}") from None
    if ms < _SMALLEST_ABSOLUTE:
        raise ConfigError(
            f"{what}: {value!r} is epoch ms in {format_moment(ms)[:4]}; for a time after the exchange's start "
            f"write +{ms / 1000:g}s"
        )
    return ms


def resolve_moment(moment: ParsedMoment, start: int | None, what: str = "moment") -> int:
    """Epoch ms of a parsed moment; a relative one needs the exchange's ``start`` (:class:`ConfigError`)."""
    if isinstance(moment, int):
        return moment
    if start is None:
        raise ConfigError(f"{what}: a time relative to the exchange's start needs that start")
    return start + moment // _MS


def format_moment(ms: int) -> str:
    """``2026-01-01T00:00:20Z`` (with milliseconds when they are not zero), for messages."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def describe_moment(moment: ParsedMoment, ms: int) -> str:
    """A moment for messages: ``+40s (2026-01-01T00:00:40Z)`` when relative, else the ISO time of ``ms``."""
    if not isinstance(moment, timedelta):
        return format_moment(ms)
    offset = moment // _MS
    sign, rest = ("-" if offset < 0 else "+"), abs(offset)
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        count, rest = divmod(rest, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return f"{sign}{''.join(parts) or '0s'} ({format_moment(ms)})"


def symbol_key(key: object, what: str = "symbol") -> str:
    """``"market:SYMBOL"`` with the market's canonical name and the symbol upper-cased and checked."""
    market, sep, symbol = key.partition(":") if isinstance(key, str) else ("", "", "")
    if not sep or not market.strip() or not symbol.strip():
        raise ConfigError(f"{what}: name the symbol as MARKET:SYMBOL (spot:BTCUSDT), not {key!r}")
    try:
        return f"{get_market(market.strip()).name}:{normalize_symbol(symbol.strip())}"
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def normalize_moments(moments: Mapping[str, object] | None, kind: Kind) -> dict[str, ParsedMoment]:
    """A ``{"market:SYMBOL": moment}`` mapping (listings or delistings) with canonical keys and parsed moments."""
    out: dict[str, ParsedMoment] = {}
    for key, value in _items(moments, kind):
        name = symbol_key(key, kind)
        if name in out:
            raise ConfigError(f"{kind}: {name} is given twice")
        out[name] = parse_moment(value, f"{kind} of {name}")
    return out


def normalize_halts(halts: Mapping[str, object] | None) -> dict[str, Halts]:
    """A ``{"market:SYMBOL": halts}`` mapping with canonical keys, each symbol's halts in time order.

    A symbol's halts are one ``"FROM..TO"`` string, one ``(from, to)`` pair, or a sequence of those.
    """
    out: dict[str, Halts] = {}
    for key, value in _items(halts, "halt"):
        name = symbol_key(key, "halt")
        if name in out:
            raise ConfigError(f"halt: {name} is given twice")
        out[name] = tuple(_halt(item, f"halt of {name}") for item in _halt_items(value))
    return out


def _items(mapping: Mapping[str, object] | None, kind: str) -> Iterable[tuple[str, object]]:
    if mapping is None:
        return ()
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{kind}s: give a mapping of 'market:SYMBOL' to a time, not {mapping!r}")
    return mapping.items()


def _halt_items(value: object) -> Sequence[object]:
    if isinstance(value, str) or _is_pair(value):
        return (value,)
    if isinstance(value, Sequence) and value:
        return value
    raise ConfigError(f"halt: give 'FROM..TO', a (from, to) pair or a list of them, not {value!r}")


def _is_pair(value: object) -> bool:
    # ("+1s", "+3s") is one halt; ["+1s..+3s", "+5s..+9s"] two.
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and not any(isinstance(v, tuple | list) or (isinstance(v, str) and ".." in v) for v in value)
    )


def _halt(item: object, what: str) -> tuple[ParsedMoment, ParsedMoment]:
    if isinstance(item, str):
        begin, sep, end = item.partition("..")
        if not sep:
            raise ConfigError(f"{what}: write FROM..TO (+10s..+30s), not {item!r}")
        pair: tuple[object, object] = (begin, end)
    elif _is_pair(item):
        pair = (item[0], item[1])  # type: ignore[index]
    else:
        raise ConfigError(f"{what}: give 'FROM..TO' or a (from, to) pair, not {item!r}")
    return parse_moment(pair[0], f"{what} (from)"), parse_moment(pair[1], f"{what} (to)")


def resolve_schedule(
    key: str,
    listed_at: int,
    listing: ParsedMoment | None,
    delisting: ParsedMoment | None,
    halts: Halts,
    start: int | None,
) -> tuple[int, int | None, tuple[tuple[int, int], ...]]:
    """One symbol's listing, delisting and halts in epoch ms, checked; ``listed_at`` is its listing unless moved.

    Raises :class:`ConfigError` (naming ``key``) for a relative moment without ``start``, a delisting not
    after the listing, or a halt that does not end after it starts, starts before the listing or from the
    delisting on, or overlaps another.
    """

    def at(moment: ParsedMoment, what: str) -> tuple[int, str]:
        ms = resolve_moment(moment, start, f"{what} of {key}")
        return ms, describe_moment(moment, ms)

    listed, listed_text = at(listing, "listing") if listing is not None else (listed_at, format_moment(listed_at))
    delisted: int | None = None
    if delisting is not None:
        delisted, delisted_text = at(delisting, "delisting")
        if delisted <= listed:
            raise ConfigError(f"{key}: its delisting at {delisted_text} is not after its listing at {listed_text}")
    spans = sorted((*at(a, "halt"), *at(b, "halt")) for a, b in halts)
    for a, a_text, b, b_text in spans:
        where = f"{key}: the halt from {a_text} to {b_text}"
        if b <= a:
            raise ConfigError(f"{where} does not end after it starts")
        if a < listed:
            raise ConfigError(f"{where} starts before its listing at {listed_text}")
        if delisted is not None and a >= delisted:
            raise ConfigError(f"{where} starts at or after its delisting at {delisted_text}")
    for first, second in itertools.pairwise(spans):
        if second[0] < first[2]:
            raise ConfigError(
                f"{key}: the halts from {first[1]} to {first[3]} and from {second[1]} to {second[3]} overlap"
            )
    return listed, delisted, tuple((a, b) for a, _, b, _ in spans)


def parse_event_flag(text: str, kind: Kind) -> tuple[str, ParsedMoment | tuple[ParsedMoment, ParsedMoment]]:
    """A command-line event: ``MARKET:SYMBOL@MOMENT`` (listing, delisting) or ``MARKET:SYMBOL@FROM..TO`` (halt).

    Returns the canonical ``"market:SYMBOL"`` key and the parsed moment (a pair for a halt). The first
    ``@`` separates the symbol from the time, so ISO times with colons are fine.
    """
    key, sep, when = text.partition("@")
    if not sep:
        form = "MARKET:SYMBOL@FROM..TO" if kind == "halt" else "MARKET:SYMBOL@TIME"
        raise ConfigError(f"{kind}: write {form} (for example usdt_futures:SYM0003USDT@+20s), not {text!r}")
    name = symbol_key(key, kind)
    if kind == "halt":
        return name, _halt(when, f"halt of {name}")
    return name, parse_moment(when, f"{kind} of {name}")
