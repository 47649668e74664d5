"""Binance's REST klines endpoint, paged and kept inside the request-weight budget. Runs on trio.

Pages are planned in :mod:`trio_klines.core.paging`; here are :class:`WeightBudget` (one per
weight pool: spot has its own, USDⓈ-M and COIN-M share one since 2026-06-30) and :class:`RestClient`
(one per market, over an ``httpx.AsyncClient``).

Rules it keeps:

- every page asks for both ``startTime`` and ``endTime`` spanning at most ``limit`` candles, so the
  answer is the same whatever the market's paging rule (COIN-M returns the candles closest to
  ``endTime``; spot and USDⓈ-M the oldest from ``startTime``);
- pages of 1000 candles: spot's call costs 2 whatever the limit; futures' costs 5 at 1000 and 10 at
  1500, so 1000 buys more candles per weight;
- weight is reserved before each call and corrected from the ``X-MBX-USED-WEIGHT-1M`` header; past the
  budget's safety margin calls wait for the next minute;
- ``429`` waits ``Retry-After`` (or a minute); ``418`` (IP banned) stops every call of the pool for the
  ban and logs an error; ``5xx``, ``408``, a ``4xx`` carrying one of Binance's "try again" codes
  (:data:`TRANSIENT_CODES`: ``-1000`` unknown error…), timeouts, network errors and bodies that cannot be
  decoded are retried with capped backoff, then raise :class:`~trio_klines.errors.RestError`;
- what the HTTP stack raises (httpx's errors, ``OSError``, ``ssl.SSLError``) becomes ours in one place,
  ``mapped_http_errors`` around the request, so callers catch :class:`~trio_klines.errors.KlinesError` only;
- the still-open last candle is dropped (server time comes from the ``time`` endpoint).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

import httpx
import trio

from ..core.backoff import Backoff
from ..core.markets import (
    Market,
    normalize_symbol,
    validate_interval,
)
from ..core.paging import PAGE_LIMIT, page_windows
from ..core.parse import Candle, parse_rest_klines
from ..errors import BinanceError, ConfigError, KlinesError, MalformedMessage, RestError

__all__ = [
    "TRANSIENT_CODES",
    "RestClient",
    "RestError",
    "RestStats",
    "WeightBudget",
    "new_http_client",
    "rest_clients",
]

log = logging.getLogger("trio_klines.rest")

#: Fraction of the per-minute budget we allow ourselves; the rest is headroom for other users of the IP.
BUDGET_SHARE: Final = 0.8
MINUTE_S: Final = 60.0
#: Binance error codes that say "try again" whatever the HTTP status (a 400 ``-1000`` happens): a failed
#: attempt, retried with back-off; every other code in a ``4xx`` (``-1121`` invalid symbol…) is a refusal.
TRANSIENT_CODES: Final = frozenset({
    -1000,  # UNKNOWN: an unknown error occurred while processing the request
    -1001,  # DISCONNECTED: internal error; unable to process your request, please try again
    -1007,  # TIMEOUT: timeout waiting for response from backend server
    -1008,  # server is currently overloaded with other requests, please try again
})


# --- weight -----------------------------------------------------------------------------------


@dataclass
class WeightBudget:
    """The request weight one IP may spend per minute on one pool of markets.

    Calls :meth:`reserve` before each request and :meth:`observe` with each response. ``clock`` is
    ``trio.current_time`` (so tests run on a MockClock); the minute window is approximated locally and
    corrected by the server's used-weight header.
    """

    limit_per_minute: int
    share: float = BUDGET_SHARE
    used: int = 0
    window_start: float = -math.inf
    blocked_until: float = -math.inf
    requests: int = 0
    waited: float = 0.0
    bans: int = 0

    @property
    def allowance(self) -> int:
        return int(self.limit_per_minute * self.share)

    async def reserve(self, weight: int) -> None:
        """Wait until ``weight`` fits in this minute's allowance and no ban or back-off is running."""
        while True:
            now = trio.current_time()
            if now < self.blocked_until:
                self.waited += self.blocked_until - now
                await trio.sleep_until(self.blocked_until)
                continue
            if now - self.window_start >= MINUTE_S:
                self.window_start, self.used = now, 0
            if self.used + weight <= self.allowance or self.used == 0:
                self.used += weight
                self.requests += 1
                return
            until = self.window_start + MINUTE_S
            self.waited += until - now
            log.info("REST weight %d/%d used this minute; waiting %.1fs", self.used, self.allowance, until - now)
            await trio.sleep_until(until)

    def observe(self, used_header: str | None) -> None:
        """Take the server's count (``X-MBX-USED-WEIGHT-1M``) when it says more than ours."""
        if used_header is None:
            return
        try:
            used = int(used_header)
        except ValueError:
            return
        if used > self.used:
            self.used = used

    def block(self, seconds: float) -> None:
        """Stop every call of the pool for ``seconds`` (a 429's Retry-After, a 418 ban)."""
        self.blocked_until = max(self.blocked_until, trio.current_time() + seconds)


# --- the client -------------------------------------------------------------------------------


@dataclass
class RestStats:
    """What a :class:`RestClient` did: its counters."""

    requests: int = 0
    candles: int = 0
    #: Attempts that failed (network, timeout, 5xx, 408, Binance's "try again" codes, an undecodable body),
    #: retried or not.
    retries: int = 0
    rate_limited: int = 0
    banned: int = 0
    #: Calls that raised :class:`RestError` once their retries were spent.
    gave_up: int = 0
    #: Answers by HTTP status (``"200"``, ``"429"``…), and ``"error"`` for a request that got none (the
    #: network, a timeout, a body that cannot be decoded).
    statuses: dict[str, int] = field(default_factory=dict)


@contextmanager
def mapped_http_errors(error: Callable[[str], KlinesError] = RestError, what: str = "REST") -> Iterator[None]:
    """The one place where what the HTTP stack raises becomes ours, as httpcore's ``map_exceptions`` does.

    httpx's own errors (timeouts, network and protocol errors, a body that does not match its
    ``Content-Encoding``…) and the ``OSError``\\ s that escape it (``ssl.SSLError`` is one) become
    ``error(message)`` (a :class:`RestError` by default; the archive client's :class:`ArchiveError`),
    chained from the original; a URL httpx cannot build is a :class:`ConfigError` naming ``what`` URL.
    ``trio.Cancelled`` and bugs pass through as they are.
    """
    try:
        yield
    except httpx.InvalidURL as exc:
        raise ConfigError(f"bad {what} URL: {exc}") from exc
    except (httpx.HTTPError, OSError) as exc:
        raise error(f"{type(exc).__name__}: {exc}") from exc


@dataclass
class RestClient:
    """Klines of one market over ``http``. Share ``budget`` between markets of the same weight pool.

    Every method raises only ours: :class:`RestError` (retries spent), :class:`BinanceError` (a refusal
    such as an unknown symbol), :class:`MalformedMessage` (an answer that does not parse) or
    :class:`ConfigError` (a bad symbol, interval or URL), never httpx's or the socket's own errors.
    """

    market: Market
    http: httpx.AsyncClient
    budget: WeightBudget
    max_retries: int = 8
    backoff: Backoff = field(default_factory=lambda: Backoff(0.2, 10.0, rng=random.Random()))
    stats: RestStats = field(default_factory=RestStats)
    #: Klines' prices and volumes as Binance's decimal strings (for a store of exact numbers), not floats.
    exact: bool = False

    async def _get(self, path: str, params: dict[str, str | int], weight: int) -> httpx.Response:
        """A ``200`` answer to ``GET path``, after as many attempts as it takes (within ``max_retries``).

        Raises:
          RestError: ``max_retries`` attempts after the first failed (the network, a timeout, ``5xx``,
            ``408``, a ``4xx`` with a code of :data:`TRANSIENT_CODES`, a body that cannot be decoded; the
            last failure is chained), or a ``4xx`` whose body is not a Binance error. ``429`` and ``418``
            only wait, as the server says.
          BinanceError: any other ``4xx`` with Binance's ``{"code": …, "msg": …}``.
          ConfigError: a URL httpx cannot build.

        Cancelled, it stops wherever it waits (for the budget, the answer or a back-off): the request in
        flight is abandoned (httpx drops its connection) and the weight reserved for it stays spent.
        """
        where = f"{self.market.name} {path}"
        url = self.market.rest_url + path
        attempt = 0
        while True:
            await self.budget.reserve(weight)
            self.stats.requests += 1
            try:
                with mapped_http_errors():
                    response = await self.http.get(url, params=params)
            except RestError as exc:
                failure = exc
                self._count("error")
            else:
                self._count(str(response.status_code))
                self.budget.observe(response.headers.get("x-mbx-used-weight-1m"))
                if response.status_code == 200:
                    self.backoff.reset()
                    return response
                refused = self._refusal(response)
                if refused is None:
                    continue  # not counted as a failed attempt: the server told us when to come back
                failure = refused
            attempt += 1
            self.stats.retries += 1
            if attempt > self.max_retries:
                self.stats.gave_up += 1
                message = f"{where}: giving up after {attempt} attempts ({failure})"
                raise RestError(message, failure.status) from failure.__cause__  # the original error, if any
            delay = self.backoff.next_delay()
            log.warning("%s: %s; retry %d in %.1fs", where, failure, attempt, delay)
            await trio.sleep(delay)

    def _count(self, status: str) -> None:
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1

    def _refusal(self, response: httpx.Response) -> RestError | None:
        """What a non-``200`` answer means: a failed attempt to retry (returned), a wait the server asked
        for (``None``: the budget is blocked), or a refusal (raised: :class:`BinanceError` or :class:`RestError`).
        """
        status = response.status_code
        if status == 429:
            self.stats.rate_limited += 1
            wait = _retry_after(response, MINUTE_S)
            self.budget.block(wait)
            log.warning("%s: rate limited (429); pausing REST calls for %.0fs", self.market.name, wait)
            return None
        if status == 418:
            self.stats.banned += 1
            self.budget.bans += 1
            wait = _retry_after(response, 120.0)
            self.budget.block(wait)
            log.error("%s: IP banned by Binance (418); no REST call for %.0fs", self.market.name, wait)
            return None
        if status < 500 and status != 408:
            error = _binance_error(response)
            if isinstance(error, BinanceError) and error.code in TRANSIENT_CODES:
                return RestError(f"HTTP {status}: {error}", status)  # Binance's own "try again"
            raise error
        return RestError(f"HTTP {status}", status)

    async def exchange_info(self) -> bytes:
        """The market's ``exchangeInfo`` body, as served (weight 20 on spot, 1 on USDⓈ-M and COIN-M).

        Raises as :meth:`server_time` does, but for ``MalformedMessage``: the body is not read here.
        """
        weight = 20 if self.market.weight_pool == "spot" else 1
        return (await self._get(self.market.exchange_info_path, {}, weight)).content

    async def server_time(self) -> int:
        """The exchange's clock, ms.

        Raises:
          RestError, BinanceError, ConfigError: as :meth:`_get` (retries included).
          MalformedMessage: the answer holds no ``serverTime``.

        Cancelled, nothing is left running (see :meth:`_get`).
        """
        response = await self._get(self.market.time_path, {}, 1)
        try:
            return int(response.json()["serverTime"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedMessage(f"bad time response: {exc}", response.text) from None

    async def klines(
        self,
        symbol: str,
        interval: str,
        start: int,
        end: int,
        *,
        closed_before: int | None = None,
        limit: int = PAGE_LIMIT,
    ) -> list[Candle]:
        """One page: the closed candles opening in ``[start, end]`` (inclusive, at most a page's worth),
        the oldest ``limit`` of them.

        Raises:
          ConfigError: a symbol or interval this market does not have (before any request).
          RestError, BinanceError: as :meth:`_get` (retries included).
          MalformedMessage: a row that is not a Binance kline.

        Cancelled, nothing is left running and nothing is returned (see :meth:`_get`).
        """
        symbol = normalize_symbol(symbol)
        interval = validate_interval(self.market, interval)
        params: dict[str, str | int] = {
            "symbol": symbol,
            "interval": interval,
            "startTime": start,
            "endTime": end,
            "limit": limit,
        }
        response = await self._get(self.market.klines_path, params, self.market.kline_weight(limit))
        candles = parse_rest_klines(response.content, self.market, symbol, interval, closed_before=closed_before,
                                    exact=self.exact)  # fmt: skip
        self.stats.candles += len(candles)
        return [c for c in candles if start <= c.open_time <= end]

    async def pages(
        self, symbol: str, interval: str, start: int, end: int, *, closed_before: int | None = None
    ) -> AsyncIterator[list[Candle]]:
        """The closed candles opening in ``[start, end)``, a page at a time, oldest first.

        Raises what :meth:`klines` raises, at the page that failed; the pages yielded before stay valid.
        Cancelled, it stops at the page under way.
        """
        for lo, hi in page_windows(interval, start, end):
            yield await self.klines(symbol, interval, lo, hi, closed_before=closed_before)


def rest_clients(markets: Iterable[Market], http: httpx.AsyncClient, *, exact: bool = False) -> dict[str, RestClient]:
    """One client per market, markets of one weight pool sharing one :class:`WeightBudget`; ``exact``: see
    :attr:`RestClient.exact`."""
    budgets: dict[str, WeightBudget] = {}
    clients: dict[str, RestClient] = {}
    for market in markets:
        budget = budgets.setdefault(market.weight_pool, WeightBudget(market.weight_limit_per_minute))
        clients[market.name] = RestClient(market, http, budget, exact=exact)
    return clients


def new_http_client() -> httpx.AsyncClient:
    """The HTTP client the CLI and the recorder use (httpx runs on trio)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(10.0), headers={"User-Agent": "trio-klines"})


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("retry-after")
    try:
        return max(1.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _binance_error(response: httpx.Response) -> BinanceError | RestError:
    try:
        body = response.json()
        return BinanceError(int(body["code"]), str(body.get("msg", "")))
    except (ValueError, KeyError, TypeError):
        return RestError(f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)
