"""The recorder's configuration: one frozen, validated object, built from flags or a TOML file.

The library never reads argv or the environment; the CLI builds a :class:`RecorderConfig` and hands
it over. Every check raises :class:`~trio_klines.errors.ConfigError` with a message saying what to fix.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from .core.decimals import NUMBERS
from .core.markets import MARKETS, Market, Series, apply_endpoints, get_market, series
from .core.universe import UniverseSpec, is_universe_spec, parse_universe_spec, universe_from_fields
from .errors import ConfigError

__all__ = [
    "DEFAULT_DATA_DIR",
    "RecorderConfig",
    "StreamSettings",
    "WriterSettings",
    "load_endpoints",
    "load_toml",
    "parse_stream_spec",
    "parse_time",
]

DEFAULT_DATA_DIR: Final = Path("data")
#: Batches the channel between the connections and the writer holds before senders wait.
DEFAULT_CHANNEL_SIZE: Final = 1024
#: The WebSocket clients, the default first: websockets' Sans-I/O protocol is the one that records the whole
#: universe within a core (benchmarks/universe.py: 37 % of a core against trio-websocket's 119 %).
TRANSPORTS: Final = ("websockets", "trio-websocket")
#: Where history comes from: the data archive then REST (``auto``), the archive alone, REST alone.
HISTORY_SOURCES: Final = ("auto", "archive", "rest")
DEFAULT_RECEIVE_TIMEOUT: Final = 60.0
#: Binance cuts every connection after 24 h; rotate well before.
DEFAULT_ROTATE_AFTER: Final = 23 * 3600.0
DEFAULT_FLUSH_SECONDS: Final = 1.0
#: Under a burst (a backfill, a catch-up) large batches halve the writer's CPU per candle (measured with
#: 50 series: 50,000 wrote ~105k candles/s where 10,000 wrote ~60k). At real-time rates batches are cut
#: by age, far below this size.
DEFAULT_FLUSH_SIZE: Final = 50_000
#: How long an append waits in the store's landing files before a round seals it into the series'
#: files, where raw Parquet readers see it (``load`` sees it at once). Equal to the store's own default.
DEFAULT_SEAL_SECONDS: Final = 600.0
#: Seconds between two reads of a socket that the last read drained (the websockets transport). At
#: Binance's paced rates frames arrive a few at a time, and a read per arrival makes the wake-ups cost more
#: than the frames: waiting lets each read take what came meanwhile (a fast stream is read at once, see
#: websockets_transport.FAST_READ_RATE). Measured (benchmarks/universe.py, 1,000 msg/s over 5
#: connections): 6.1 % of a core at 20 ms, 1.8 % at 100 ms; a candle waits 100 ms more at most.
DEFAULT_READ_INTERVAL: Final = 0.1
#: Seconds between two reads of a universe's exchangeInfo (weight 1 on futures, 20 on spot).
DEFAULT_UNIVERSE_REFRESH: Final = 180.0
DEFAULT_MAX_PENDING: Final = 500_000
#: Seconds past two intervals before a series' last candle counts as stale (``/healthz``).
DEFAULT_HEALTH_GRACE: Final = 30.0
#: Series above which the metrics stop carrying one age gauge per series (stale ones excepted, up to this
#: many): at 45,000 series a label set per series is more than a Prometheus server wants per scrape.
DEFAULT_METRICS_SERIES_LIMIT: Final = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamSettings:
    """Timing of a connection. Every value is in seconds."""

    receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: A session that lived this long resets the backoff.
    healthy_after: float = 60.0
    rotate_after: float = DEFAULT_ROTATE_AFTER
    #: A stream is silent after this many of its update periods without a frame, but never sooner
    #: than ``silence_min`` (illiquid symbols update only when they trade).
    silence_periods: int = 30
    silence_min: float = 60.0
    #: Malformed frames and error payloads are logged at most once per this many seconds per connection.
    log_every: float = 60.0

    def __post_init__(self) -> None:
        for name in ("receive_timeout", "backoff_initial", "backoff_max", "healthy_after", "rotate_after",
                     "silence_min", "log_every"):  # fmt: skip
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.backoff_initial > self.backoff_max:
            raise ConfigError(f"backoff_initial ({self.backoff_initial}) exceeds backoff_max ({self.backoff_max})")
        if self.silence_periods < 1:
            raise ConfigError(f"silence_periods must be at least 1, not {self.silence_periods!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriterSettings:
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    flush_size: int = DEFAULT_FLUSH_SIZE
    max_pending: int = DEFAULT_MAX_PENDING
    retry_initial: float = 0.5
    retry_max: float = 30.0

    def __post_init__(self) -> None:
        if not (self.flush_seconds > 0 and math.isfinite(self.flush_seconds)):
            raise ValueError(f"flush_seconds must be a positive number of seconds, not {self.flush_seconds!r}")
        if self.flush_size < 1 or self.max_pending < self.flush_size:
            raise ValueError(f"need 1 <= flush_size ({self.flush_size}) <= max_pending ({self.max_pending})")


def parse_time(value: object) -> int:
    """An ISO 8601 date or date-time (UTC unless it says otherwise) or epoch ms → epoch ms."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(
                f"invalid time {value!r}: give an ISO date or date-time (2024-06-30, 2024-06-30T15:00) or epoch ms"
            ) from None
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        raise ConfigError(f"invalid time {value!r}: give an ISO date or date-time or epoch ms")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_stream_spec(spec: str) -> list[Series]:
    """``MARKET:INTERVAL[,INTERVAL…]:SYM[,SYM…]`` → validated series, e.g. ``usdt_futures:1m,1h:BTCUSDT,ETHUSDT``
    (every symbol in every interval)."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ConfigError(
            f"invalid stream {spec!r}: write MARKET:INTERVAL:SYMBOL[,SYMBOL…], e.g. spot:1m,5m:BTCUSDT,ETHUSDT, or "
            "MARKET:INTERVAL:* for every symbol"
        )
    market, intervals, symbols = (p.strip() for p in parts)
    names = [s.strip() for s in symbols.split(",") if s.strip()] or [""]  # "": raises, an empty symbol list
    periods = [i.strip() for i in intervals.split(",") if i.strip()] or [""]
    return [series(market, s, i) for i in periods for s in names]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecorderConfig:
    """Everything a :class:`~trio_klines.recorder.Recorder` needs. Compares by value."""

    streams: tuple[Series, ...]
    data_dir: Path = DEFAULT_DATA_DIR
    #: Market URLs, after any endpoint overrides (defaults: Binance's own).
    markets: Mapping[str, Market] = dataclasses.field(default_factory=lambda: dict(MARKETS))
    receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    flush_size: int = DEFAULT_FLUSH_SIZE
    max_pending: int = DEFAULT_MAX_PENDING
    channel_size: int = DEFAULT_CHANNEL_SIZE
    #: Raw Parquet readers lag the record by about this much (see the store's sealing).
    seal_seconds: float = DEFAULT_SEAL_SECONDS
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    rotate_after: float = DEFAULT_ROTATE_AFTER
    silence_min: float = 60.0
    transport: str = TRANSPORTS[0]
    #: The websockets transport reads a drained socket at most this often (0: at every arrival); see
    #: trio_klines.net.websockets_transport.DEFAULT_READ_INTERVAL.
    read_interval: float = DEFAULT_READ_INTERVAL
    #: Fill holes from REST: on start-up from the last stored candle, and after every gap.
    backfill: bool = True
    #: Where the start-up catch-up takes history from: ``auto`` (the data archive's published files, then REST),
    #: ``archive`` (the archive only) or ``rest``. See trio_klines.pipeline.archive.
    history_source: str = "auto"
    #: Where the record of every series starts (ms): a series with nothing stored is backfilled from here, and
    #: on every start a series whose stored record begins after it is backfilled back to it. None: a new
    #: series starts at its first live candle, and a stored one where it already begins.
    since: int | None = None
    #: On stop, how long running backfills may take to finish before they are left to the next start.
    stop_grace: float = 2.5
    #: Check every series against its market's exchangeInfo at start-up: an unknown symbol is a ConfigError
    #: (naming the closest listed ones), a listed one that does not trade is skipped with a warning.
    check_symbols: bool = True
    #: A market whose exchangeInfo cannot be had within this many seconds is recorded unchecked.
    check_symbols_timeout: float = 60.0
    #: Universe specs (``usdt_futures:1m:*``): every symbol of a market that the filters keep, read from its
    #: exchangeInfo at start-up and again every ``universe_refresh`` seconds to follow listings and delistings.
    universes: tuple[UniverseSpec, ...] = ()
    universe_refresh: float = DEFAULT_UNIVERSE_REFRESH
    #: ``HOST:PORT`` to serve Prometheus ``/metrics`` and ``/healthz`` on (port 0: any free one); None: off.
    metrics: str | None = None
    #: ``/healthz`` calls a series stale when its last closed candle is older than two intervals plus this.
    health_grace: float = DEFAULT_HEALTH_GRACE
    #: Per-series age gauges for up to this many series (above it, only for stale series, stalest first).
    metrics_series_limit: int = DEFAULT_METRICS_SERIES_LIMIT
    #: Prices and volumes as ``float`` (float64) or ``exact`` (decimals, digit for digit as Binance sends them),
    #: recorded in the data directory at its first use; None: what the data directory holds (``float`` for a
    #: new one). A dataset never mixes both: asking for the other is a ConfigError.
    numbers: str | None = None

    def __post_init__(self) -> None:
        streams = tuple(self.streams)
        universes = tuple(dict.fromkeys(self.universes))
        if not all(isinstance(u, UniverseSpec) for u in universes):
            raise ConfigError(f"invalid universe in {universes!r}")
        object.__setattr__(self, "universes", universes)
        if not streams and not universes:
            raise ConfigError(
                "no streams to record: give --stream MARKET:INTERVAL:SYMBOL (or MARKET:INTERVAL:* for every symbol) "
                "or streams in the config"
            )
        for s in streams:
            if not isinstance(s, Series) or series(*s) != s:
                raise ConfigError(f"invalid stream {s!r}")
        object.__setattr__(self, "streams", tuple(dict.fromkeys(streams)))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.metrics is not None:
            parse_address(self.metrics)
        if self.numbers is not None and self.numbers not in NUMBERS:
            raise ConfigError(f"numbers must be one of {', '.join(NUMBERS)}, not {self.numbers!r}")
        for name in ("flush_size", "max_pending", "channel_size", "metrics_series_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
        for name in (
            "receive_timeout",
            "flush_seconds",
            "seal_seconds",
            "backoff_initial",
            "backoff_max",
            "rotate_after",
            "silence_min",
            "stop_grace",
            "check_symbols_timeout",
            "universe_refresh",
            "health_grace",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf):
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.since is not None and (
            isinstance(self.since, bool) or not isinstance(self.since, int) or self.since < 0
        ):
            raise ConfigError(f"since must be a time in ms since the epoch, not {self.since!r}")
        for name in ("backfill", "check_symbols"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, not {getattr(self, name)!r}")
        if isinstance(self.read_interval, bool) or not isinstance(self.read_interval, int | float) or not (
            0 <= self.read_interval <= 1
        ):
            raise ConfigError(f"read_interval must be 0 to 1 seconds, not {self.read_interval!r}")
        if self.history_source not in HISTORY_SOURCES:
            known = ", ".join(HISTORY_SOURCES)
            raise ConfigError(f"unknown history source {self.history_source!r}; choose one of: {known}")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"unknown transport {self.transport!r}; choose one of: {', '.join(TRANSPORTS)}")
        # Building these validates the remaining combinations with their own messages.
        self.stream_settings()
        try:
            self.writer_settings()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def stream_settings(self) -> StreamSettings:
        return StreamSettings(
            receive_timeout=self.receive_timeout,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            rotate_after=self.rotate_after,
            silence_min=self.silence_min,
        )

    def writer_settings(self) -> WriterSettings:
        return WriterSettings(
            flush_seconds=self.flush_seconds, flush_size=self.flush_size, max_pending=self.max_pending
        )

    def market(self, name: str) -> Market:
        return self.markets[get_market(name).name]

    @classmethod
    def build(
        cls,
        *,
        streams: Iterable[str | Series | UniverseSpec] = (),
        endpoints: Mapping[str, Mapping[str, str]] | None = None,
        **settings: Any,
    ) -> RecorderConfig:
        """A config from stream specs (``MARKET:INTERVAL[,…]:SYM,…``, a universe ``MARKET:INTERVAL[,…]:*…``,
        :class:`Series` or :class:`UniverseSpec`) and settings."""
        unknown = set(settings) - {f.name for f in dataclasses.fields(cls)} | ({"markets", "universes"} & set(settings))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        parsed: list[Series] = []
        universes: list[UniverseSpec] = []
        for spec in streams:
            if isinstance(spec, Series):
                parsed.append(spec)
            elif isinstance(spec, UniverseSpec):
                universes.append(spec)
            elif is_universe_spec(spec):
                universes.append(parse_universe_spec(spec))
            else:
                parsed.extend(parse_stream_spec(spec))
        markets = apply_endpoints(endpoints) if endpoints else dict(MARKETS)
        return cls(streams=tuple(parsed), universes=tuple(universes), markets=markets, **settings)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where ``/metrics`` and ``/healthz`` are served, ``(host, port)``; None when they are off."""
        return None if self.metrics is None else parse_address(self.metrics)

    @property
    def markets_recorded(self) -> list[str]:
        """The markets of the series and universes, sorted."""
        return sorted({s.market for s in self.streams} | {u.market for u in self.universes})


_TOML_KEYS: Final = {
    "data": "data_dir",
    "streams": "streams",
    "endpoints": "endpoints",
    "receive_timeout": "receive_timeout",
    "flush_seconds": "flush_seconds",
    "seal_seconds": "seal_seconds",
    "flush_size": "flush_size",
    "max_pending": "max_pending",
    "channel_size": "channel_size",
    "backoff_initial": "backoff_initial",
    "backoff_max": "backoff_max",
    "rotate_after": "rotate_after",
    "silence_min": "silence_min",
    "transport": "transport",
    "backfill": "backfill",
    "since": "since",
    "source": "history_source",
    "stop_grace": "stop_grace",
    "check_symbols": "check_symbols",
    "check_symbols_timeout": "check_symbols_timeout",
    "universe_refresh": "universe_refresh",
    "read_interval": "read_interval",
    "metrics": "metrics",
    "health_grace": "health_grace",
    "metrics_series_limit": "metrics_series_limit",
    "numbers": "numbers",
}


_HOST_RE: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?")


def parse_address(text: object) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0: any free one) → ``(host, port)``; :class:`ConfigError`
    when it is not one. The host is a name or an IP literal, never anything a URL could be built from."""
    syntax = "give HOST:PORT, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464"
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"invalid address {text!r}: {syntax}")
    host, _, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"invalid address {text!r}: {host!r} is not an IPv6 address; {syntax}") from None
    elif not _HOST_RE.fullmatch(host):
        raise ConfigError(f"invalid address {text!r}: bad host {host!r}; {syntax}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"invalid address {text!r}: the port must be 0 to 65535; {syntax}")
    return host, int(port_text)


def load_toml(path: Path | str) -> dict[str, Any]:
    """Read a TOML config file into :meth:`RecorderConfig.build` keyword arguments.

    Streams are strings (``"spot:1m:BTCUSDT,ETHUSDT"``) or tables (``{market=…, interval=…,
    symbols=[…]}``); ``[endpoints.<market>]`` tables hold ``ws`` and ``rest``. Unknown keys are errors.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(_TOML_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) in {path}: {', '.join(unknown)}; known: {', '.join(sorted(_TOML_KEYS))}")
    out: dict[str, Any] = {_TOML_KEYS[k]: v for k, v in raw.items()}
    if "streams" in out:
        out["streams"] = _toml_streams(out["streams"], path)
    if "since" in out:
        out["since"] = parse_time(out["since"])
    if "data_dir" in out:
        if not isinstance(out["data_dir"], str):
            raise ConfigError(f"'data' in {path} must be a path string")
        out["data_dir"] = (
            (path.parent / out["data_dir"]).resolve()
            if not Path(out["data_dir"]).is_absolute()
            else (Path(out["data_dir"]))
        )
    return out


def _toml_streams(value: object, path: Path) -> list[Series | UniverseSpec]:
    if not isinstance(value, list):
        raise ConfigError(f"'streams' in {path} must be a list")
    out: list[Series | UniverseSpec] = []
    for item in value:
        if isinstance(item, str):
            out.extend([parse_universe_spec(item)] if is_universe_spec(item) else parse_stream_spec(item))
        elif isinstance(item, dict) and isinstance(item.get("symbols"), str):
            out.append(_toml_universe(item, path))
        elif isinstance(item, dict):
            extra = set(item) - {"market", "interval", "symbols"}
            symbols = item.get("symbols")
            if extra or not isinstance(symbols, list) or not symbols:
                raise ConfigError(
                    f"a stream table in {path} has exactly market, interval and a non-empty symbols list, not {item!r}"
                )
            out.extend(series(item.get("market"), s, item.get("interval")) for s in symbols)  # type: ignore[arg-type]
        else:
            raise ConfigError(f"a stream in {path} is a string or a table, not {item!r}")
    return out


_UNIVERSE_KEYS: Final = {"market", "intervals", "symbols", "contract", "status", "exclude"}


def _toml_universe(item: dict[str, Any], path: Path) -> UniverseSpec:
    """``{market=…, intervals=[…], symbols="*USDT", contract=…, status=[…], exclude=[…]}`` → a universe."""
    where = f"{item!r} in {path}"
    extra = set(item) - _UNIVERSE_KEYS
    pattern = item["symbols"]
    lists = [item.get(k, []) for k in ("intervals", "status", "exclude")]
    if extra or not pattern.startswith("*") or "*" in pattern[1:] or not all(isinstance(v, list) for v in lists):
        raise ConfigError(
            f"a universe table has market, intervals (a list), symbols ('*' or '*QUOTE') and optionally contract, "
            f"status and exclude (lists), not {where}"
        )
    return universe_from_fields(
        item.get("market"),
        item.get("intervals", []),
        quote=pattern[1:].upper() or None,
        contract=item.get("contract", "any"),
        statuses=item.get("status"),
        exclude=item.get("exclude", []),
        where=where,
    )


def load_endpoints(path: Path | str) -> dict[str, dict[str, str]]:
    """Read an endpoints map (the JSON ``python -m trio_klines exchange`` prints first) from a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read endpoints file {path}: {exc.strerror or exc}") from None
    try:
        # The first JSON value in the file: `exchange`'s first line, or a map written by hand over many lines.
        endpoints, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"endpoints file {path} does not start with a JSON object: {exc}") from None
    if not isinstance(endpoints, dict):
        raise ConfigError(f"endpoints file {path} does not start with a JSON object")
    apply_endpoints(endpoints)  # validates
    return endpoints


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` (flags) over ``base`` (config file), ignoring unset flags; streams add up."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "streams":
            out["streams"] = [*out.get("streams", ()), *value]
        else:
            out[key] = value
    return out
