"""WebSocket stream names and the live control requests (SUBSCRIBE, UNSUBSCRIBE, …), as Binance answers them.

Pure: a request's text and the connection's state in, the reply's text and the change out. Reply and
error shapes follow ``shared/binance.md`` §4: ``{"result":…,"id":…}`` and
``{"error":{"code":…,"msg":…},"id":…}``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

import msgspec

from ..core.markets import Market
from .wire import ws_error, ws_result

__all__ = ["ControlOutcome", "ControlState", "handle_control", "is_stream_name", "kline_stream"]

_KLINE: Final = re.compile(r"([a-z0-9_]{1,32})@kline_([0-9]{1,2}[smhdwM])")
# Any stream Binance could name (trades, depth, tickers, ``!…@arr``…); only kline streams ever send here.
_STREAM: Final = re.compile(r"!?[a-zA-Z0-9_]{1,40}(@[a-zA-Z0-9_:+.-]{1,40}){1,3}")
_SPOT_ID: Final = re.compile(r"[A-Za-z0-9]{1,36}")
_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_INT64: Final = 1 << 63
_decode: Final = msgspec.json.Decoder().decode


def is_stream_name(name: object) -> bool:
    """Whether ``name`` has the shape of a Binance stream name (any kind of stream)."""
    return isinstance(name, str) and _STREAM.fullmatch(name) is not None


def kline_stream(name: str, market: Market) -> tuple[str, str] | None:
    """``(SYMBOL, interval)`` when ``name`` is a kline stream ``market`` serves, else ``None``.

    Symbols must be lower case in stream names, as on Binance; the interval's case matters (``1M``).
    """
    match = _KLINE.fullmatch(name)
    if match is None or match.group(2) not in market.intervals:
        return None
    return match.group(1).upper(), match.group(2)


@dataclasses.dataclass(slots=True)
class ControlState:
    """What a connection's control requests act on: its subscriptions and its ``combined`` property."""

    market: Market
    combined: bool
    streams: dict[str, None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class ControlOutcome:
    """The reply to send and the streams the request added or removed."""

    reply: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class _Invalid(Exception):
    def __init__(self, code: int, msg: str) -> None:
        self.code = code
        self.msg = msg


def _request_id(request: dict[str, Any], market: Market) -> object:
    # Spot takes a signed 64-bit int, a short alphanumeric string or null; futures only unsigned ints
    # (binance-connector-python#471).
    rid = request.get("id")
    if market.name == "spot":
        if rid is None or (isinstance(rid, str) and _SPOT_ID.fullmatch(rid)):
            return rid
        if isinstance(rid, int) and not isinstance(rid, bool) and -_INT64 <= rid < _INT64:
            return rid
        raise _Invalid(
            2, "Invalid request: request ID must be an integer, a string of up to 36 letters and digits, or null"
        )
    if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 2 * _INT64:
        return rid
    raise _Invalid(2, "Invalid request: request ID must be an unsigned integer")


def _streams(params: object) -> list[str]:
    if not isinstance(params, list) or not params:
        raise _Invalid(
            2, "Invalid request: missing field `params`" if params is None else "Invalid request: invalid stream"
        )
    if not all(is_stream_name(p) for p in params):
        raise _Invalid(2, "Invalid request: invalid stream")
    return params


def _property(params: object, *, with_value: bool) -> tuple[str, object]:
    if not isinstance(params, list) or len(params) != (2 if with_value else 1):
        raise _Invalid(
            2,
            "Invalid request: too many parameters"
            if isinstance(params, list)
            else "Invalid request: missing field `params`",
        )
    name = params[0]
    if not isinstance(name, str):
        raise _Invalid(2, "Invalid request: property name must be a string")
    if name != "combined":
        raise _Invalid(0, "Unknown property")
    return name, params[1] if with_value else None


def handle_control(text: str | bytes, state: ControlState) -> ControlOutcome:
    """Answer one control request and apply it to ``state``.

    Never raises for bad input: a malformed request gets Binance's error reply and leaves ``state``
    as it was. Subscribing to a stream already held, or unsubscribing one not held, is a success that
    changes nothing (as on Binance).
    """
    try:
        request = _decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return ControlOutcome(ws_error(3, "Invalid JSON: expected value at line 1 column 1", None))
    rid: object = request.get("id") if isinstance(request, dict) else None
    try:
        if not isinstance(request, dict):
            raise _Invalid(2, "Invalid request: expected a JSON object")
        rid = _request_id(request, state.market)
        method = request.get("method")
        if method is None:
            raise _Invalid(2, "Invalid request: missing field `method`")
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            raise _Invalid(2, f"Invalid request: unknown variant `{method}`, expected one of {expected}")
        params = request.get("params")
        if method == "SUBSCRIBE":
            added = tuple(s for s in dict.fromkeys(_streams(params)) if s not in state.streams)
            state.streams.update(dict.fromkeys(added))
            return ControlOutcome(ws_result(None, rid), added=added)
        if method == "UNSUBSCRIBE":
            removed = tuple(s for s in dict.fromkeys(_streams(params)) if s in state.streams)
            for s in removed:
                del state.streams[s]
            return ControlOutcome(ws_result(None, rid), removed=removed)
        if method == "LIST_SUBSCRIPTIONS":
            return ControlOutcome(ws_result(list(state.streams), rid))
        if method == "GET_PROPERTY":
            _property(params, with_value=False)
            return ControlOutcome(ws_result(state.combined, rid))
        _, value = _property(params, with_value=True)
        if not isinstance(value, bool):
            raise _Invalid(1, "Invalid value type: expected Boolean")
        state.combined = value
        return ControlOutcome(ws_result(None, rid))
    except _Invalid as exc:
        return ControlOutcome(ws_error(exc.code, exc.msg, rid if _plain_id(rid) else None))


def _plain_id(rid: object) -> bool:
    return rid is None or (isinstance(rid, int | str) and not isinstance(rid, bool))
