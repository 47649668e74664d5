"""Fault knobs of the fake exchange, their ``key=value,…`` syntax, and the seeded dice that fire them.

Pure. Every decision is a hash of (seed, fault, what it applies to), never a shared random generator,
so a fault hits the same frame or request whatever the timing of the run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Final

from ..errors import ConfigError
from .history import Outage, key_of, mix64

__all__ = ["FAULT_KEYS", "Dice", "Faults", "parse_faults"]

#: Probabilities in [0, 1]: per WebSocket frame (drop … reorder), per REST request (rest429 … rest_short) or
#: per archive zip response (archive_bad_checksum, archive_truncated).
_PROBABILITIES: Final = (
    "drop",
    "close",
    "stall",
    "garbage",
    "error",
    "dup",
    "reorder",
    "rest429",
    "rest418",
    "rest5xx",
    "rest_bad_gzip",
    "rest_empty",
    "rest_short",
    "archive_bad_checksum",
    "archive_truncated",
)
#: Durations in wall-clock seconds.
_SECONDS: Final = ("stall_s", "rest_slow", "archive_slow")
#: Whole numbers >= 0.
_INTEGERS: Final = ("retry_after", "archive_missing_days")
_HELP: Final = {
    "drop": "probability per frame of cutting the connection without a close frame",
    "close": "probability per frame of closing the connection with a close frame",
    "stall": "probability per frame of going silent for stall_s seconds",
    "stall_s": "length of a stall in wall-clock seconds (default 2)",
    "garbage": "probability per frame of sending a non-JSON, truncated or binary frame first",
    "error": "probability per frame of sending a Binance error payload first",
    "dup": "probability per closed candle of sending it twice",
    "reorder": "probability per frame of delivering it after the next one",
    "cutoff": "close every connection after this many exchange seconds (Binance: 86400)",
    "outage": "START-END in epoch ms of exchange time: no candle opens in it (repeatable)",
    "rest429": "probability per REST request of HTTP 429 with Retry-After",
    "rest418": "probability per REST request of HTTP 418 (IP ban) with Retry-After",
    "rest5xx": "probability per REST request of an HTTP 5xx",
    "rest_bad_gzip": "probability per REST klines answer of a 200 marked Content-Encoding: gzip whose body is not gzip",
    "rest_empty": "probability per REST klines answer of a 200 [] where the exchange has candles (per window and "
    "repeat of it)",
    "rest_short": "probability per REST klines answer of a page lacking its first row(s) (per window and repeat of it)",
    "rest_slow": "delay of every REST response in wall-clock seconds",
    "retry_after": "Retry-After seconds sent with 429/418 (default: until the next weight window)",
    "archive_bad_checksum": "probability per archive zip response of one byte flipped, so it fails its .CHECKSUM "
    "(per file and repeat of it)",
    "archive_truncated": "probability per archive zip response of a body cut short with a matching Content-Length "
    "(per file and repeat of it)",
    "archive_missing_days": "N: the archive answers 404 for the N newest published daily files of every series "
    "and for the monthly files holding those days",
    "archive_slow": "delay of every archive response in wall-clock seconds",
}
#: Every key ``--faults`` accepts, with what it does.
FAULT_KEYS: Final[Mapping[str, str]] = _HELP


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """The faults an exchange injects; all off by default. Build one with :func:`parse_faults`."""

    drop: float = 0.0
    close: float = 0.0
    stall: float = 0.0
    stall_s: float = 2.0
    garbage: float = 0.0
    error: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    #: Connection lifetime in exchange seconds, or ``None`` for no limit.
    cutoff: float | None = None
    outages: tuple[Outage, ...] = ()
    rest429: float = 0.0
    rest418: float = 0.0
    rest5xx: float = 0.0
    #: A klines answer the client cannot decode (httpx: ``DecodingError``): the right rows, not gzipped.
    rest_bad_gzip: float = 0.0
    #: A klines answer ``200 []`` although candles exist: a transient fault, not an exchange gap.
    rest_empty: float = 0.0
    #: A klines answer lacking its first rows (one to all but one): a transient fault too.
    rest_short: float = 0.0
    rest_slow: float = 0.0
    retry_after: int | None = None
    #: An archive zip whose bytes differ from its ``.CHECKSUM`` (one byte flipped, same length).
    archive_bad_checksum: float = 0.0
    #: An archive zip cut short, its Content-Length that of the cut body: only the checksum tells.
    archive_truncated: float = 0.0
    #: The newest this many published days are missing from the archive (daily files, and monthly ones
    #: holding them): a 404 for a file that should exist.
    archive_missing_days: int = 0
    archive_slow: float = 0.0

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"fault {name} is a probability from 0 to 1, not {value!r}")
        for name in _SECONDS:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (0.0 <= value < math.inf):
                raise ConfigError(f"fault {name} is a number of seconds >= 0, not {value!r}")
        if self.cutoff is not None and not (isinstance(self.cutoff, int | float) and 0 < self.cutoff < math.inf):
            raise ConfigError(f"fault cutoff is a number of exchange seconds > 0, not {self.cutoff!r}")
        if self.retry_after is not None and not (isinstance(self.retry_after, int) and self.retry_after >= 0):
            raise ConfigError(f"fault retry_after is a whole number of seconds >= 0, not {self.retry_after!r}")
        days = self.archive_missing_days
        if not (isinstance(days, int) and not isinstance(days, bool) and days >= 0):
            raise ConfigError(f"fault archive_missing_days is a whole number of days >= 0, not {days!r}")
        for outage in self.outages:
            if not (isinstance(outage, Outage) and 0 <= outage.start < outage.end):
                raise ConfigError(f"an outage is START-END in epoch ms with START < END, not {outage!r}")

    def __str__(self) -> str:
        """The ``key=value,…`` form that :func:`parse_faults` reads back."""
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            if field.name == "outages":
                parts += [f"outage={o.start}-{o.end}" for o in value]
            else:
                parts.append(f"{field.name}={value}")
        return ",".join(parts)


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"fault {key} needs a number, not {text!r}") from None
    if math.isnan(value):
        raise ConfigError(f"fault {key} needs a number, not {text!r}")
    return value


def _outage(text: str) -> Outage:
    start, sep, end = text.partition("-")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise ConfigError(
            f"fault outage is START-END in epoch ms (for example 1704067200000-1704070800000), not {text!r}"
        )
    return Outage(int(start), int(end))


def parse_faults(spec: str | Mapping[str, object] | Faults | None) -> Faults:
    """Faults from ``"drop=0.1,stall=0.2,stall_s=0.5,outage=START-END"`` (or a mapping, or as is).

    Keys are those of :data:`FAULT_KEYS`; ``outage`` may repeat. Raises :class:`ConfigError` naming
    an unknown key (and listing the known ones), a repeated key or a bad value.
    """
    if spec is None:
        return Faults()
    if isinstance(spec, Faults):
        return spec
    items: list[tuple[str, object]]
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"fault {part.strip()!r} needs a value: write key=value")
            items.append((key.strip(), value.strip()))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        raise ConfigError(f"faults must be a 'key=value,…' string or a mapping, not {spec!r}")

    values: dict[str, object] = {}
    outages: list[Outage] = []
    for key, value in items:
        if key not in FAULT_KEYS:
            raise ConfigError(f"unknown fault {key!r}; known faults: {', '.join(FAULT_KEYS)}")
        if key == "outage":
            outages += [_outage(value)] if isinstance(value, str) else [Outage(*o) for o in _pairs(value)]
            continue
        if key in values:
            raise ConfigError(f"fault {key} given twice")
        if key in _INTEGERS:
            number = _number(key, value) if isinstance(value, str) else value
            if not isinstance(number, int | float) or not math.isfinite(number) or number != int(number):
                unit = "seconds" if key == "retry_after" else "days"
                raise ConfigError(f"fault {key} is a whole number of {unit}, not {value!r}")
            values[key] = int(number)
        else:
            values[key] = _number(key, value) if isinstance(value, str) else value
    return Faults(**values, outages=tuple(sorted(outages)))  # type: ignore[arg-type]


def _pairs(value: object) -> list[tuple[int, int]]:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [value]  # type: ignore[list-item]
    if isinstance(value, list | tuple) and all(isinstance(v, tuple | list) and len(v) == 2 for v in value):
        return [(int(a), int(b)) for a, b in value]
    raise ConfigError(f"fault outage is (START, END) in epoch ms or a list of them, not {value!r}")


class Dice:
    """Seeded, stateless chance: ``roll(fault, *keys)`` is a uniform number in [0, 1)."""

    __slots__ = ("_keys",)

    def __init__(self, seed: int) -> None:
        kinds = ("garbage_kind", "error_kind", "5xx_kind", "short_rows", "archive_flip_at", "archive_cut_at")
        self._keys = {name: key_of("fault", seed, name) for name in (*_PROBABILITIES, *kinds)}

    def roll(self, fault: str, *keys: int) -> float:
        """A uniform draw for ``fault`` applied to the thing identified by ``keys`` (integers)."""
        h = self._keys[fault]
        for k in keys:
            h = mix64(h ^ (k & 0xFFFFFFFFFFFFFFFF))
        return mix64(h) / 18446744073709551616.0

    def hit(self, fault: str, probability: float, *keys: int) -> bool:
        """Whether ``fault`` with ``probability`` fires for ``keys``; never rolls when it is off."""
        return probability > 0.0 and self.roll(fault, *keys) < probability
