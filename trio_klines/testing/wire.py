"""Binance's wire formats for the fake exchange: kline events, REST rows, exchangeInfo, error bodies.

Pure: values in, JSON-ready objects or text out. Numbers are formatted from integers, so the decimal
strings are exact and ``float(string)`` is the ground truth.

:class:`WireKline` is the one builder of kline frames and REST rows: the fake exchange, the shipped
Hypothesis strategies (:mod:`trio_klines.testing.strategies`), the test suite and the benchmarks all
write their klines through it, so Binance's key order and field names live in this file only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ..core.markets import close_time, get_market
from ..core.parse import Candle
from .symbols import SymbolSpec, format_units

if TYPE_CHECKING:
    from .history import Kline  # history builds Candles with kline_floats: no import at run time

__all__ = [
    "WireKline",
    "binance_error",
    "encode_json",
    "exchange_info",
    "kline_floats",
    "rest_row",
    "server_shutdown_frame",
    "ws_error",
    "ws_kline_event",
    "ws_kline_frame",
    "ws_result",
]

_encode: Final = msgspec.json.Encoder().encode
# Far in the future, as Binance writes the delivery date of a perpetual contract.
_PERPETUAL_DELIVERY: Final = 4133404800000


def _strings(spec: SymbolSpec, k: Kline) -> tuple[str, str, str, str, str, str, str, str]:
    p, q = spec.price_dp, spec.qty_dp
    return (
        format_units(k.open, p),
        format_units(k.high, p),
        format_units(k.low, p),
        format_units(k.close, p),
        format_units(k.volume, q),
        format_units(k.quote_volume, spec.quote_dp),
        format_units(k.taker_base, q),
        format_units(k.taker_quote, spec.quote_dp),
    )


def kline_strings(spec: SymbolSpec, k: Kline) -> tuple[str, str, str, str, str, str, int, str, str]:
    """The values of ``k`` as the exact parsers' :class:`~trio_klines.core.parse.Candle` holds them: as sent."""
    o, h, lo, c, v, qv, bv, bq = _strings(spec, k)
    return o, h, lo, c, v, qv, k.trades, bv, bq


def kline_floats(spec: SymbolSpec, k: Kline) -> tuple[float, float, float, float, float, float, int, float, float]:
    """The values of ``k`` as :class:`~trio_klines.core.parse.Candle` holds them (open … taker-buy quote)."""
    o, h, lo, c, v, qv, bv, bq = (float(s) for s in _strings(spec, k))
    return o, h, lo, c, v, qv, k.trades, bv, bq


@dataclasses.dataclass(frozen=True, slots=True)
class WireKline:
    """One kline as Binance writes it: times as integers, prices and volumes as decimal strings.

    The defaults make a plausible candle (open 2, high 3, low 1, close 2), so a test names only what it
    cares about: ``WireKline("BTCUSDT", "1m", 60_000, closed=False).frame()``. ``close_time`` defaults
    (``-1``) to the interval's last millisecond, a full candle; give it for a candle closed early at a halt,
    or in µs with a µs ``open_time``. Nothing is validated: a test may build what Binance never sends.
    """

    symbol: str
    interval: str
    open_time: int
    close_time: int = -1
    open: str = "2"
    high: str = "3"
    low: str = "1"
    close: str = "2"
    volume: str = "5"
    quote_volume: str = "10"
    trades: int = 9
    taker_base: str = "1"
    taker_quote: str = "2"
    first_id: int = 1
    last_id: int = 2
    closed: bool = True

    def __post_init__(self) -> None:
        if self.close_time == -1:  # not given: a full candle
            object.__setattr__(self, "close_time", close_time(self.interval, self.open_time))

    @property
    def stream(self) -> str:
        """The combined-stream name: ``btcusdt@kline_1m``."""
        return f"{self.symbol.lower()}@kline_{self.interval}"

    def payload(self) -> dict[str, Any]:
        """The ``"k"`` object, in Binance's key order."""
        return {
            "t": self.open_time,
            "T": self.close_time,
            "s": self.symbol,
            "i": self.interval,
            "f": self.first_id,
            "L": self.last_id,
            "o": self.open,
            "c": self.close,
            "h": self.high,
            "l": self.low,
            "v": self.volume,
            "n": self.trades,
            "x": self.closed,
            "q": self.quote_volume,
            "V": self.taker_base,
            "Q": self.taker_quote,
            "B": "0",
        }

    def event(self, event_time: int | None = None) -> dict[str, Any]:
        """The raw kline event ``{"e":"kline","E":…,"s":…,"k":{…}}``.

        ``event_time`` defaults to just after the close for a closed kline, just after the open otherwise.
        """
        if event_time is None:
            event_time = (self.close_time if self.closed else self.open_time) + 1
        return {"e": "kline", "E": event_time, "s": self.symbol, "k": self.payload()}

    def frame(self, *, combined: bool = True, event_time: int | None = None, stream: str | None = None) -> str:
        """The frame's text, compact as Binance sends it: combined (``{"stream":…,"data":…}``, the
        stream name defaulting to :attr:`stream`) or raw."""
        event = self.event(event_time)
        return _encode({"stream": stream or self.stream, "data": event} if combined else event).decode()

    def rest_row(self) -> list[object]:
        """The 12-element row of a REST klines response."""
        return [self.open_time, self.open, self.high, self.low, self.close, self.volume, self.close_time,
                self.quote_volume, self.trades, self.taker_base, self.taker_quote, "0"]  # fmt: skip

    def candle(self, market: str) -> Candle:
        """The :class:`Candle` this kline parses to in ``market`` once closed (for times in ms)."""
        f = float
        return Candle(market, self.symbol.upper(), self.interval, self.open_time, f(self.open), f(self.high),
                      f(self.low), f(self.close), f(self.volume), f(self.quote_volume), self.trades,
                      f(self.taker_base), f(self.taker_quote))  # fmt: skip


def _wire(spec: SymbolSpec, interval: str, k: Kline, closed: bool = True) -> WireKline:
    o, h, lo, c, v, qv, bv, bq = _strings(spec, k)
    return WireKline(spec.symbol, interval, k.open_time, k.close_time, o, h, lo, c, v, qv, k.trades, bv, bq,
                     k.first_id, k.last_id, closed)  # fmt: skip


def ws_kline_event(spec: SymbolSpec, interval: str, k: Kline, event_time: int, closed: bool) -> dict[str, Any]:
    """The raw kline event (``{"e":"kline","E":…,"s":…,"k":{…}}``) in Binance's key order."""
    return _wire(spec, interval, k, closed).event(event_time)


def ws_kline_frame(
    spec: SymbolSpec, interval: str, k: Kline, *, event_time: int, closed: bool, stream: str | None
) -> str:
    """A kline frame as text: combined (``{"stream":…,"data":…}``) when ``stream`` is given, else raw."""
    return _wire(spec, interval, k, closed).frame(combined=stream is not None, event_time=event_time, stream=stream)


def server_shutdown_frame(event_time: int, *, combined: bool) -> str:
    """Spot's ``serverShutdown`` announcement, raw or combined (stream ``!serverShutdown``)."""
    event = {"e": "serverShutdown", "E": event_time}
    return _encode({"stream": "!serverShutdown", "data": event} if combined else event).decode()


def ws_error(code: int, msg: str, request_id: object) -> str:
    """A reply to a bad control request: ``{"error":{"code":…,"msg":…},"id":…}``."""
    return _encode({"error": {"code": code, "msg": msg}, "id": request_id}).decode()


def ws_result(result: object, request_id: object) -> str:
    """A reply to a good control request: ``{"result":…,"id":…}``."""
    return _encode({"result": result, "id": request_id}).decode()


def rest_row(spec: SymbolSpec, k: Kline) -> list[object]:
    """One row of a REST klines response: the 12-element array."""
    return _wire(spec, "", k).rest_row()


def binance_error(code: int, msg: str) -> bytes:
    """A REST error body: ``{"code":-1121,"msg":"Invalid symbol."}``."""
    return _encode({"code": code, "msg": msg})


def encode_json(body: object) -> bytes:
    """Compact JSON, as Binance sends it."""
    return _encode(body)


def _rate_limits(market: str) -> list[dict[str, object]]:
    m = get_market(market)
    limits: list[dict[str, object]] = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": m.weight_limit_per_minute}
    ]
    if m.name == "spot":
        limits += [
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
        ]
    else:
        limits += [
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ]
    return limits


def _filters(spec: SymbolSpec) -> list[dict[str, object]]:
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": spec.tick_size,
            "maxPrice": format_units(10 ** (spec.price_dp + 7), spec.price_dp),
            "tickSize": spec.tick_size,
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": spec.step_size,
            "maxQty": format_units(10 ** (spec.qty_dp + 7), spec.qty_dp),
            "stepSize": spec.step_size,
        },
    ]


def _spot_symbol(spec: SymbolSpec) -> dict[str, object]:
    return {
        "symbol": spec.symbol,
        "status": spec.status,
        "baseAsset": spec.base_asset,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote_asset,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": _filters(spec),
        "permissions": [],
        "permissionSets": [["SPOT"]],
    }


def _futures_symbol(spec: SymbolSpec) -> dict[str, object]:
    common: dict[str, object] = {
        "symbol": spec.symbol,
        "pair": spec.symbol.removesuffix("_PERP"),
        "contractType": "PERPETUAL",
        # A perpetual being delisted shows its settlement moment; the others the far future.
        "deliveryDate": _PERPETUAL_DELIVERY if spec.delisted_at is None else spec.delisted_at,
        "onboardDate": spec.listed_at,
    }
    if spec.market == "coin_futures":
        common |= {"contractStatus": spec.status, "contractSize": spec.contract_size, "marginAsset": spec.base_asset}
    else:
        common |= {"status": spec.status, "marginAsset": spec.quote_asset}
    return common | {
        "baseAsset": spec.base_asset,
        "quoteAsset": spec.quote_asset,
        "pricePrecision": spec.price_dp,
        "quantityPrecision": spec.qty_dp,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "filters": _filters(spec),
    }


def exchange_info(market: str, specs: Iterable[SymbolSpec], server_time: int) -> bytes:
    """The ``exchangeInfo`` body of ``market`` listing ``specs``: rate limits and per-symbol formats.

    Spot symbols carry ``status``; USDⓈ-M ``status`` and COIN-M ``contractStatus``, as on Binance: each
    spec's :attr:`~trio_klines.testing.symbols.SymbolSpec.status` (give the specs of
    :meth:`~trio_klines.testing.symbols.Universe.listed` for the statuses at a moment). Futures carry
    ``onboardDate`` (the listing moment) and ``deliveryDate`` (the delisting moment when one is scheduled).
    """
    name = get_market(market).name
    body: dict[str, object] = {"timezone": "UTC", "serverTime": server_time, "rateLimits": _rate_limits(name)}
    body["exchangeFilters"] = []
    if name == "usdt_futures":
        body["futuresType"] = "U_MARGINED"
    body["symbols"] = [_spot_symbol(s) if name == "spot" else _futures_symbol(s) for s in specs]
    return _encode(body)
