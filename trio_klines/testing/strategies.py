"""Hypothesis strategies for Binance kline payloads and the candles they must parse to.

Needs Hypothesis (``pip install 'trio-klines[test]'``). Every kline is written exactly as Binance
encodes one (fixed-point decimal strings, any number of places, all of them written out), on its
interval's grid, in any market; the :class:`~trio_klines.core.parse.Candle` beside it is the oracle::

    @given(kline_frames())
    def test_my_handler(case: tuple[str | bytes, KlineCase]) -> None:
        frame, (market, kline, candle) = case
        assert parse_frame(frame, market) == (candle if kline.closed else None)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from hypothesis import strategies as st

from ..core.markets import MARKETS, floor_open_time, next_open_time
from ..core.parse import Candle
from .wire import WireKline, encode_json

__all__ = ["KlineCase", "decimal", "frames_of", "kline_frames", "rest_rows", "wire_klines"]

#: 2017-07-14 … 2096-10-02 in ms: Binance's history and well beyond.
_EARLIEST, _LATEST = 1_500_000_000_000, 4_000_000_000_000


class KlineCase(NamedTuple):
    """A generated kline, its market and the candle it parses to once closed."""

    market: str
    kline: WireKline
    candle: Candle


def decimal(units: int, places: int) -> str:
    """Binance's fixed-point decimal string: ``units × 10^-places`` with all the places written out."""
    if places == 0:
        return str(units)
    return f"{units // 10**places}.{units % 10**places:0{places}d}"


@st.composite
def wire_klines(draw: st.DrawFn, *, markets: Sequence[str] | None = None, closed: bool | None = True) -> KlineCase:
    """Klines of any series of ``markets`` (default: all), ``closed`` or open (``None``: either).

    Usually a full candle, sometimes one closed early at a trading halt; prices in order
    (low ≤ open, close ≤ high), taker-buy volumes within the volumes, values up to 10^15 units.
    """
    market = draw(st.sampled_from(list(markets or MARKETS)))
    interval = draw(st.sampled_from(MARKETS[market].intervals))
    symbol = draw(st.from_regex(r"[A-Z0-9_]{1,32}", fullmatch=True))
    open_time = floor_open_time(interval, draw(st.integers(_EARLIEST, _LATEST)))
    end = next_open_time(interval, open_time)
    closes = draw(st.one_of(st.just(end - 1), st.integers(open_time, end - 1)))
    price_places = draw(st.integers(0, 8))
    volume_places = draw(st.integers(0, 8))
    prices = sorted(draw(st.lists(st.integers(0, 10**13), min_size=4, max_size=4)))
    low, high = prices[0], prices[3]
    open_, close = draw(st.permutations(prices[1:3]))
    volume = draw(st.integers(0, 10**15))
    quote = draw(st.integers(0, 10**15))
    taker_base = draw(st.integers(0, volume))
    taker_quote = draw(st.integers(0, quote))
    trades = draw(st.integers(0, 10**9))
    kline = WireKline(
        symbol,
        interval,
        open_time,
        closes,
        open=decimal(open_, price_places),
        high=decimal(high, price_places),
        low=decimal(low, price_places),
        close=decimal(close, price_places),
        volume=decimal(volume, volume_places),
        quote_volume=decimal(quote, volume_places),
        trades=trades,
        taker_base=decimal(taker_base, volume_places),
        taker_quote=decimal(taker_quote, volume_places),
        first_id=draw(st.integers(0, 2**40)),
        last_id=draw(st.integers(0, 2**40)),
        closed=draw(st.booleans()) if closed is None else closed,
    )
    return KlineCase(market, kline, kline.candle(market))


@st.composite
def frames_of(draw: st.DrawFn, kline: WireKline) -> str | bytes:
    """``kline`` the ways it reaches a client: combined or raw, text or bytes, with unknown keys or not."""
    event: dict[str, Any] = kline.event(kline.close_time + draw(st.integers(0, 500)))
    if draw(st.booleans()):  # fields the 2026 CM/UM migration adds, and anything else unknown
        event |= {"st": 1, "ps": kline.symbol, "zz": [1, {"a": None}]}
    payload: dict[str, Any] = {"stream": kline.stream, "data": event} if draw(st.booleans()) else event
    data = encode_json(payload)  # compact, as Binance and the fake exchange send it
    return data if draw(st.booleans()) else data.decode()


@st.composite
def kline_frames(
    draw: st.DrawFn, *, markets: Sequence[str] | None = None, closed: bool | None = True
) -> tuple[str | bytes, KlineCase]:
    """A frame of a :func:`wire_klines` kline, in any of :func:`frames_of`'s forms, with its case."""
    case = draw(wire_klines(markets=markets, closed=closed))
    return draw(frames_of(case.kline)), case


@st.composite
def rest_rows(draw: st.DrawFn, *, markets: Sequence[str] | None = None) -> tuple[list[object], KlineCase]:
    """A REST klines row (the 12-element array) of a closed :func:`wire_klines` kline, with its case."""
    case = draw(wire_klines(markets=markets))
    return case.kline.rest_row(), case
