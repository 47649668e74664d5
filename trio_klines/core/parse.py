"""Binance kline payloads → :class:`Candle`: pure functions, no I/O.

One typed msgspec decode per frame does the JSON parsing, the type checks and the decimal-string to
float conversion in C; the few checks msgspec cannot express (series names, candle times, OHLC order)
follow in Python.

With ``exact=True`` the parsers keep each price and volume as the decimal string Binance sent, digit for
digit, never through a float (for a dataset of exact numbers). Their shape is checked with one
regular expression per candle, and their order and range through floats, whose rounding is monotonic: a
valid candle is never refused. Anything that is not what Binance sends raises :class:`MalformedMessage` with the
reason; Binance's own error payloads raise :class:`BinanceError`; spot's ``serverShutdown`` raises
:class:`ServerShutdown`. Nothing else escapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from ..errors import BinanceError, ConfigError, MalformedMessage, ServerShutdown
from .decimals import VALUE_RE
from .markets import INTERVALS, Market, get_market, next_open_time, normalize_symbol, validate_interval
from .timefmt import iso_ms
from .validity import CLOCK_TOLERANCE, MAX_COUNT, MAX_OPEN_TIME, MAX_VALUE, open_time_problem, order_problem

__all__ = ["Candle", "FrameParser", "Value", "frame_parser", "parse_frame", "parse_rest_klines", "parse_rest_row"]

# Binance sends µs instead of ms on request (spot ``timeUnit=MICROSECOND``, 2025+ archives).
# 10**14 ms is the year 5138, so anything above is µs.
_MICROS_THRESHOLD: Final = 10**14
# Beyond any time in ms or µs; an interval "length" of this never matches a real candle.
_CALENDAR: Final = 1 << 61

# The bounds of core.validity, checked in the decoder. Values: finite and non-negative (``le`` rejects
# ±inf, and NaN fails every comparison). Times: ms, or µs up to the store's last open time.
_Value = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_VALUE)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
_Time = Annotated[int, msgspec.Meta(ge=0, lt=MAX_OPEN_TIME * 1000)]
# A frame without an event time: no closed candle can be checked against the exchange's clock.
_NO_CLOCK: Final = -1
#: The exact parsers' first check of a candle's eight values, joined by commas: ASCII digits, dots and the
#: commas only (one match of a character class costs 0.14 µs, a regex of the decimal's structure 0.5 µs);
#: ``float()`` then refuses what is not a number (``"1..2"``, ``""``). Only ``".5"`` and ``"5."`` pass
#: that Binance never sends, and they are exact all the same.
_DECIMAL_CHARS: Final = re.compile(r"[0-9.,]+\Z")

#: A price or volume: a float, or in exact mode (``exact=True``) Binance's decimal string as sent.
Value = float | str


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One closed candle of one series. Compares and hashes by value.

    Times are ms since the epoch, UTC. For ``coin_futures`` ``volume`` and the taker-buy base volume are
    in contracts and ``quote_volume`` / the taker-buy quote volume in the base asset, as Binance sends them.
    Prices and volumes are floats, or the decimal strings Binance sent from the ``exact=True`` parsers.
    """

    market: str
    symbol: str
    interval: str
    open_time: int
    open: Value
    high: Value
    low: Value
    close: Value
    volume: Value
    quote_volume: Value
    trade_num: int
    taker_buy_base_asset_volume: Value
    taker_buy_quote_asset_volume: Value

    @property
    def candle_begin_time(self) -> datetime:
        """Open time as an aware UTC datetime (the seed's ``candle_begin_time``)."""
        return datetime.fromtimestamp(self.open_time / 1000, UTC)

    @property
    def end_time(self) -> int:
        """The seed's ``candle_end_time`` in ms: open time + interval (calendar month for ``1M``)."""
        return next_open_time(self.interval, self.open_time)

    @property
    def series(self) -> tuple[str, str, str]:
        return (self.market, self.symbol, self.interval)


# --- wire schemas -----------------------------------------------------------------------------


class _ErrorBody(msgspec.Struct, gc=False):
    code: int | None = None
    msg: str = ""


class _RestError(msgspec.Struct, gc=False):
    code: int
    msg: str = ""


def _wire_schema(value: Any, prefix: str) -> tuple[Any, Any]:
    """The kline event and the frame around it, their prices and volumes of type ``value``: floats (lax
    decoding turns Binance's strings into them) or, for the exact parsers, the strings themselves."""
    kline = msgspec.defstruct(
        f"{prefix}Kline",
        [("t", _Time), ("T", _Time), ("i", str), *((name, value) for name in "ochlv"), ("n", _Count),
         ("x", bool), *((name, value) for name in "qVQ"), ("s", str, "")],
        gc=False,
    )  # fmt: skip
    event = msgspec.defstruct(
        f"{prefix}Event",
        [("e", str | UnsetType, UNSET),
         ("E", Annotated[int, msgspec.Meta(ge=0)], _NO_CLOCK),  # the exchange's clock when it sent the event
         ("s", str, ""), ("k", kline | UnsetType, UNSET)],
        gc=False,
    )  # fmt: skip
    # Every top-level shape at once: combined, raw event, control reply, error.
    frame = msgspec.defstruct(
        f"{prefix}Frame",
        [("stream", str | UnsetType, UNSET), ("data", event | UnsetType, UNSET), ("result", Any, UNSET),
         ("id", Any, UNSET), ("code", int | UnsetType, UNSET), ("msg", str | UnsetType, UNSET),
         ("error", _ErrorBody | UnsetType, UNSET)],
        bases=(event,),
        gc=False,
    )  # fmt: skip
    return event, frame


_Event, _Frame = _wire_schema(_Value, "_")
_ExactEvent, _ExactFrame = _wire_schema(str, "_Exact")
# Lax mode turns Binance's decimal strings into floats inside the decoder; the exact one is strict (a JSON
# number where Binance sends a string is malformed).
_frame_decoder: Final = msgspec.json.Decoder(_Frame, strict=False)
_exact_frame_decoder: Final = msgspec.json.Decoder(_ExactFrame)
_ExactRestRow = tuple[_Time, str, str, str, str, str, _Time, str, _Count, str, str]

_RestRow = tuple[_Time, _Value, _Value, _Value, _Value, _Value, _Time, _Value, _Count, _Value, _Value]
_rest_body_decoder: Final = msgspec.json.Decoder(list[tuple[Any, ...]] | _RestError)

# Caches of names already validated, so the hot path is a set lookup, not a regex.
_known_symbols: set[str] = set()


def _symbol(raw: str, frame: object) -> str:
    if not raw:
        raise MalformedMessage("kline without a symbol", frame)
    try:
        symbol = normalize_symbol(raw)
    except ConfigError as exc:
        raise MalformedMessage(str(exc), frame) from None
    if symbol == raw and len(_known_symbols) < 100_000:
        _known_symbols.add(symbol)
    return symbol


def _check_times(interval: str, open_time: int, close_time: int, frame: object) -> int:
    """Validate a candle's times (ms or µs); returns the open time in ms."""
    if open_time >= _MICROS_THRESHOLD:
        if open_time % 1000:
            raise MalformedMessage(
                f"open time {iso_ms(open_time // 1000)} + {open_time % 1000} µs is not a whole millisecond", frame
            )
        open_time //= 1000
        close_time //= 1000
    problem = open_time_problem(interval, open_time)
    if problem is not None:
        raise MalformedMessage(problem, frame)
    # A candle may close early (trading halt) but never before it opens nor after its interval.
    if not open_time <= close_time < next_open_time(interval, open_time):
        raise MalformedMessage(
            f"close time {iso_ms(close_time)} outside the {interval} candle opening at {iso_ms(open_time)}", frame
        )
    return open_time


def _check_clock(close_time: int, clock: int, frame: object) -> None:
    """A closed candle must have closed by the exchange's clock (both ms or µs, each on its own)."""
    if clock == _NO_CLOCK:
        raise MalformedMessage("closed kline without the event time 'E'", frame)
    close_ms = close_time // 1000 if close_time >= _MICROS_THRESHOLD else close_time
    clock_ms = clock // 1000 if clock >= _MICROS_THRESHOLD else clock
    if close_ms > clock_ms + CLOCK_TOLERANCE:
        raise MalformedMessage(
            f"closed candle from the future: it closes at {iso_ms(close_ms)}, after the exchange's clock "
            f"{iso_ms(clock_ms)}",
            frame,
        )


def _check_values(
    o: float, h: float, lo: float, c: float, v: float, q: float, bv: float, bq: float, frame: object
) -> None:
    problem = order_problem(o, h, lo, c, v, q, bv, bq)
    if problem is not None:
        raise MalformedMessage(problem, frame)


def _check_exact(o: str, h: str, lo: str, c: str, v: str, q: str, bv: str, bq: str, frame: object) -> None:
    """The exact parsers' check of a candle's values: decimal strings, in range, in order (the slow path of
    the inlined check: it raises with the reason)."""
    for x in (o, h, lo, c, v, q, bv, bq):
        if VALUE_RE.fullmatch(x) is None:
            raise MalformedMessage(f"value {x!r} is not a decimal string", frame)
    f = float
    fo, fh, flo, fc, fv, fq, fbv, fbq = f(o), f(h), f(lo), f(c), f(v), f(q), f(bv), f(bq)
    if max(fh, fv, fq) > MAX_VALUE:  # taker volumes and the other prices are checked not to exceed these
        raise MalformedMessage(f"value over {MAX_VALUE:g}", frame)
    if not (flo <= fo <= fh >= fc >= flo and fbv <= fv and fbq <= fq):
        _check_values(fo, fh, flo, fc, fv, fq, fbv, fbq, frame)


# --- WebSocket frames -------------------------------------------------------------------------


FrameParser = Callable[[str | bytes], "Candle | None"]
_parsers: dict[tuple[str, bool], FrameParser] = {}


def parse_frame(frame: str | bytes, market: Market | str, *, exact: bool = False) -> Candle | None:
    """Turn one WebSocket frame into a closed :class:`Candle`, or ``None``.

    Accepts the combined form ``{"stream": …, "data": {…}}`` and the raw event form. Returns ``None``
    for an open candle (``x`` false), a non-kline event and a control reply such as
    ``{"result": null, "id": 1}``. Unknown extra keys are ignored. A connection that parses many frames
    calls :func:`frame_parser` once instead. With ``exact`` the values are Binance's decimal strings.

    Raises:
        BinanceError: the frame is an error payload (``{"code", "msg"}`` or ``{"error": …, "id": …}``).
        ServerShutdown: spot announced it will close the connection.
        MalformedMessage: anything else that is not a valid kline frame.
        ConfigError: ``market`` is not a market.
    """
    name = market.name if isinstance(market, Market) else market
    parse = _parsers.get((name, exact)) if isinstance(name, str) else None
    if parse is None:
        parse = frame_parser(market, exact=exact)
    return parse(frame)


def frame_parser(market: Market | str, *, exact: bool = False) -> FrameParser:
    """:func:`parse_frame` bound to one market: the per-frame hot path, with the market resolved once.

    ``exact``: the candles' values are the decimal strings Binance sent (see the module's docstring).
    """
    m = market if isinstance(market, Market) else get_market(market)
    name = m.name
    cached = _parsers.get((name, exact))
    if cached is not None:
        return cached
    # Interval → its length when candles sit on multiples of it, _CALENDAR when the check needs the
    # calendar (1w, 3d, 1M); intervals the market lacks are absent.
    lengths = {i: _CALENDAR if i in ("1w", "3d", "1M") else INTERVALS[i] for i in m.intervals}
    decode = (_exact_frame_decoder if exact else _frame_decoder).decode
    unset = UNSET
    known_symbols = _known_symbols
    candle = Candle
    tolerance, micros = CLOCK_TOLERANCE, _MICROS_THRESHOLD
    chars, f, most = _DECIMAL_CHARS.match, float, MAX_VALUE
    open_b, open_s = b'"x":false', '"x":false'

    def parse(frame: str | bytes) -> Candle | None:
        # Most frames are updates of a still-open candle (a 1m futures stream sends ~240 per close):
        # recognise them without decoding. A frame cut short does not end in "}" and is decoded, so
        # truncation is still reported; anything else with "x":false would be dropped anyway.
        if isinstance(frame, bytes):
            if open_b in frame and frame.endswith(b"}"):
                return None
        elif isinstance(frame, str) and open_s in frame and frame.endswith("}"):
            return None
        try:
            msg = decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MalformedMessage(str(exc), frame) from None
        except RecursionError:  # JSON nested deeper than msgspec's decoder recurses (it raises, not us)
            raise MalformedMessage("JSON nested too deeply", frame) from None
        except (TypeError, UnicodeDecodeError) as exc:  # not str/bytes, or bytes that are not UTF-8
            raise MalformedMessage(f"not a JSON text frame: {exc}", frame) from None

        event = msg.data
        if event is unset:
            event = _unwrap(msg, frame)
            if event is None:
                return None
        if event.e != "kline":
            return _other_event(msg, event, frame)
        k = event.k
        if k is unset:
            raise MalformedMessage("kline event without 'k'", frame)
        if not k.x:
            return None

        # Closed candle: the checks below are inlined because they run once per recorded candle.
        interval = k.i
        try:
            length = lengths[interval]
        except KeyError:
            raise MalformedMessage(f"interval {interval!r} is not a {name} interval", frame) from None
        symbol = k.s or event.s
        if symbol not in known_symbols:
            symbol = _symbol(symbol, frame)
        open_time, close_time = k.t, k.T
        # A full candle in ms closes at open + length - 1, and by the exchange's clock (E, in ms); µs
        # times, halts, calendar intervals, a missing E and a candle from the future take the slow path,
        # which handles them or raises with the reason. The fast path's times are ms below 10**14: in range.
        if close_time - open_time != length - 1 or open_time % length or not close_time <= event.E + tolerance < micros:
            open_time = _check_times(interval, open_time, close_time, frame)
            _check_clock(close_time, event.E, frame)
        o, h, lo, c, v, q, bv, bq = k.o, k.h, k.l, k.c, k.v, k.q, k.V, k.Q
        if exact:
            # Inlined (once per recorded candle); _check_exact says what is wrong when these fail.
            if chars(f"{o},{h},{lo},{c},{v},{q},{bv},{bq}") is None:
                _check_exact(o, h, lo, c, v, q, bv, bq, frame)
            try:
                fo, fh, flo, fc, fv, fq, fbv, fbq = f(o), f(h), f(lo), f(c), f(v), f(q), f(bv), f(bq)
            except ValueError:
                _check_exact(o, h, lo, c, v, q, bv, bq, frame)
                raise  # pragma: no cover - _check_exact raises first
            if not (flo <= fo <= fh >= fc >= flo and fbv <= fv <= most and fbq <= fq <= most and fh <= most):
                _check_exact(o, h, lo, c, v, q, bv, bq, frame)
        elif not (lo <= o <= h >= c >= lo and bv <= v and bq <= q):
            _check_values(o, h, lo, c, v, q, bv, bq, frame)
        return candle(name, symbol, interval, open_time, o, h, lo, c, v, q, k.n, bv, bq)

    _parsers[name, exact] = parse
    return parse


def _unwrap(msg: _Frame | _ExactFrame, frame: object) -> _Event | _ExactEvent | None:
    """The event of a raw-form frame; ``None`` for a control reply; raises for errors."""
    if msg.e is not UNSET:
        return msg
    if msg.code is not UNSET:
        raise BinanceError(msg.code, msg.msg if msg.msg is not UNSET else "")
    if msg.error is not UNSET:
        raise BinanceError(msg.error.code, msg.error.msg, msg.id if msg.id is not UNSET else None)
    if msg.result is not UNSET:
        return None
    raise MalformedMessage("neither a kline event, a combined-stream frame nor a control reply", frame)


def _other_event(msg: _Frame | _ExactFrame, event: _Event | _ExactEvent, frame: object) -> None:
    if event.e == "serverShutdown" or msg.stream == "!serverShutdown":
        raise ServerShutdown(None if event.E == _NO_CLOCK else event.E)
    if event.e is UNSET:
        raise MalformedMessage("event without 'e'", frame)
    return None


# --- REST klines ------------------------------------------------------------------------------


def parse_rest_row(
    row: Sequence[Any], market: Market | str, symbol: str, interval: str, *, exact: bool = False
) -> Candle:
    """Turn one row of a REST klines response (the 12-element array) into a :class:`Candle`.

    The row must hold ints for the times and the trade count and decimal strings (or numbers) for the
    values. Whether the candle is closed is not visible in a row: the caller drops the still-open last
    row (see :func:`parse_rest_klines`). Raises :class:`MalformedMessage`; :class:`ConfigError` for a bad
    ``market``, ``symbol`` or ``interval`` argument. With ``exact`` the values must be decimal strings, and
    stay so.
    """
    m = market if isinstance(market, Market) else get_market(market)
    symbol = normalize_symbol(symbol)
    interval = validate_interval(m, interval)
    return _rest_candle(row, m.name, symbol, interval, exact)


def _rest_candle(row: Any, market: str, symbol: str, interval: str, exact: bool = False) -> Candle:
    if not isinstance(row, list | tuple) or len(row) < 12:
        raise _row_error("a klines row is an array of 12 elements", row)
    try:
        if exact:
            t, o, h, lo, c, v, close, q, n, bv, bq = msgspec.convert(row[:11], _ExactRestRow)
        else:
            t, o, h, lo, c, v, close, q, n, bv, bq = msgspec.convert(row[:11], _RestRow, strict=False)
    except msgspec.ValidationError as exc:
        raise _row_error(str(exc), row) from None
    open_time = _check_times(interval, t, close, row)
    if exact:
        _check_exact(o, h, lo, c, v, q, bv, bq, row)
    else:
        _check_values(o, h, lo, c, v, q, bv, bq, row)
    return Candle(market, symbol, interval, open_time, o, h, lo, c, v, q, n, bv, bq)


def _row_error(reason: str, row: object) -> MalformedMessage:
    """The error for a bad row, even one nested too deeply to show (``repr`` would recurse)."""
    try:
        return MalformedMessage(reason, row)
    except RecursionError:
        return MalformedMessage(f"{reason} (nested too deeply to show)")


def parse_rest_klines(
    body: str | bytes,
    market: Market | str,
    symbol: str,
    interval: str,
    *,
    closed_before: int | None = None,
    exact: bool = False,
) -> list[Candle]:
    """Decode a whole klines response body into candles, oldest first (their values Binance's decimal
    strings with ``exact``).

    With ``closed_before`` (the exchange's current time, ms), rows whose candle had not closed by then
    are dropped: Binance includes the still-open candle as the last row. A row that opens after that
    time (plus :data:`~trio_klines.core.validity.CLOCK_TOLERANCE`) cannot be a candle the exchange had:
    the body is malformed. Raises :class:`BinanceError` for an error body and :class:`MalformedMessage`
    for anything else that is not a klines array.
    """
    m = market if isinstance(market, Market) else get_market(market)
    symbol = normalize_symbol(symbol)
    interval = validate_interval(m, interval)
    try:
        rows = _rest_body_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(str(exc), body) from None
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply", body) from None
    except (TypeError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not a JSON body: {exc}", body) from None
    if isinstance(rows, _RestError):
        raise BinanceError(rows.code, rows.msg)
    candles = [_rest_candle(list(row), m.name, symbol, interval, exact) for row in rows]
    if closed_before is not None:
        future = [c.open_time for c in candles if c.open_time > closed_before + CLOCK_TOLERANCE]
        if future:
            raise MalformedMessage(
                f"candle from the future: it opens at {iso_ms(future[0])}, after the exchange's clock "
                f"{iso_ms(closed_before)}",
                body,
            )
        candles = [c for c in candles if c.end_time <= closed_before]
    return candles
