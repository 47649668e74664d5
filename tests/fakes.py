"""Test doubles shared by the unit tests.

The WebSocket transport, the sink and the frame builder are the seams the package ships
(:mod:`trio_klines.testing`), under the names the tests have always used; only the scripted REST
endpoint lives here.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from fractions import Fraction

import httpx
import trio

from trio_klines.core.backoff import Backoff
from trio_klines.core.markets import MARKETS, iter_open_times
from trio_klines.net.rest import RestClient, WeightBudget
from trio_klines.testing import MemorySink as MemorySink
from trio_klines.testing import WireKline
from trio_klines.testing.scripted import ScriptedConnection as FakeConnection
from trio_klines.testing.scripted import ScriptedTransport as FakeTransport

__all__ = ["FakeBinance", "FakeConnection", "FakeTransport", "MemorySink", "kline_frame", "kline_row", "rest_client"]


def kline_frame(symbol: str, interval: str, open_time: int, *, closed: bool = True, close: str = "2") -> str:
    """A combined-stream kline frame as Binance sends it (the other values: :class:`WireKline`'s defaults)."""
    return WireKline(symbol, interval, open_time, close=close, closed=closed).frame()


def kline_row(interval: str, t: int) -> list[object]:
    """A REST klines row of the candle opening at ``t`` (:class:`WireKline`'s default values)."""
    return WireKline("", interval, t).rest_row()


class FakeBinance:
    """A scripted REST klines endpoint: answers any window, or the statuses queued in ``script``."""

    def __init__(self, market: str, now: int, outage: tuple[int, int] | None = None) -> None:
        self.market = market
        self.now = now
        self.outage = outage
        self.script: list[tuple[int, dict[str, str], object]] = []
        self.calls: list[tuple[float, dict[str, str]]] = []
        self.used = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.calls.append((trio.current_time(), params))
        if request.url.path.endswith("/time"):
            return httpx.Response(200, json={"serverTime": self.now})
        if self.script:
            status, headers, body = self.script.pop(0)
            return httpx.Response(status, headers=headers, json=body)
        interval, limit = params["interval"], int(params["limit"])
        start, end = int(params["startTime"]), min(int(params["endTime"]), self.now)
        rows = [
            kline_row(interval, t)
            for t in iter_open_times(interval, start, end + 1)
            if not (self.outage and self.outage[0] <= t < self.outage[1])
        ]
        # COIN-M returns the `limit` rows closest to endTime, the others the oldest from startTime.
        rows = rows[-limit:] if self.market == "coin_futures" else rows[:limit]
        self.used += 5
        return httpx.Response(200, headers={"X-MBX-USED-WEIGHT-1M": str(self.used)}, content=json.dumps(rows))


def rest_client(fake: FakeBinance, budget: WeightBudget | None = None, retries: int = 8) -> RestClient:
    """A :class:`RestClient` whose HTTP goes to ``fake`` (httpx's MockTransport: no socket)."""
    market = MARKETS[fake.market].with_urls(rest_url="http://exchange.test")
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return RestClient(
        market, http, budget or WeightBudget(2400), max_retries=retries, backoff=Backoff(0.2, 2.0, rng=random.Random(5))
    )


def max_in_window(times: Sequence[float], width: float) -> int:
    """The most of ``times`` that one half-open window ``[a, a + width)`` holds, in exact arithmetic."""
    times = sorted(times)
    most, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and Fraction(times[j]) < Fraction(start) + Fraction(width):
            j += 1
        most = max(most, j - i)
    return most
