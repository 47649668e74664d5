"""Fetching exchangeInfo through the REST client, and the start-up check when it cannot be had."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio
import trio.testing

from trio_klines.core.backoff import Backoff
from trio_klines.core.markets import MARKETS, series
from trio_klines.errors import ConfigError
from trio_klines.net.exchange_info import DEFAULT_CHECK_TIMEOUT, check_series, fetch_symbol_statuses
from trio_klines.net.rest import RestClient, WeightBudget
from trio_klines.testing.symbols import Universe
from trio_klines.testing.wire import binance_error, exchange_info

pytestmark = pytest.mark.timeout(10)
UNIVERSE = Universe(statuses={"spot:ETHBTC": "BREAK"})
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def _listing(request: httpx.Request) -> httpx.Response:
    market = request.url.host.split(".")[0]
    return httpx.Response(200, content=exchange_info(market, UNIVERSE.symbols(market).values(), 0))


def clients(handler: Handler, *, retries: int = 2) -> dict[str, RestClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    futures = WeightBudget(2400)
    return {
        name: RestClient(
            market.with_urls(rest_url=f"http://{name}.test"),
            http,
            WeightBudget(6000) if name == "spot" else futures,
            max_retries=retries,
            backoff=Backoff(0.2, 2.0, rng=random.Random(5)),
        )
        for name, market in MARKETS.items()
    }


async def test_each_markets_listing_is_fetched_once_at_its_weight(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[str, str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.url.path))
        return _listing(request)

    c = clients(handler)
    statuses = await fetch_symbol_statuses(c["spot"])
    assert statuses["ETHBTC"] == "BREAK" and statuses["BTCUSDT"] == "TRADING"
    assert seen == [("spot.test", "/api/v3/exchangeInfo")] and c["spot"].budget.used == 20
    wanted = [series("coin_futures", "BTCUSD_PERP", "1m"), series("usdt_futures", "BTCUSDT", "1m"),
              series("usdt_futures", "BTCUSDT", "1h")]  # fmt: skip
    check = await check_series(wanted, c)
    assert check.ok == tuple(wanted)
    assert sorted(seen[1:]) == [("coin_futures.test", "/dapi/v1/exchangeInfo"),
                                ("usdt_futures.test", "/fapi/v1/exchangeInfo")]  # fmt: skip
    assert c["usdt_futures"].budget.used == 2  # one each, from the pool the two futures markets share


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, content=b"busy"),
        httpx.Response(400, content=binance_error(-1000, "An unknown error occurred.")),
        httpx.Response(200, content=b"<html>maintenance</html>"),
    ],
    ids=["5xx", "binance-error", "not-json"],
)
async def test_a_market_without_a_listing_is_left_unchecked_with_a_warning(
    answer: httpx.Response, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return answer if request.url.host == "spot.test" else _listing(request)

    caplog.set_level(logging.WARNING, logger="trio_klines.symbols")
    wanted = [series("spot", "BTCUSTD", "1m"), series("usdt_futures", "BTCUSTD", "1m")]
    check = await check_series(wanted, clients(handler))
    assert check.unchecked == (wanted[0],) and list(check.unknown) == [wanted[1]]
    mine = [r.getMessage().split(" (")[0] for r in caplog.records if r.name == "trio_klines.symbols"]
    assert mine == ["spot: exchangeInfo not available"]


async def test_a_listing_that_never_comes_is_given_up_on_in_time(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "spot.test":
            await trio.sleep_forever()  # a ban or a black hole: the client would wait for ever
        return _listing(request)

    caplog.set_level(logging.WARNING, logger="trio_klines.symbols")
    wanted = [series("spot", "BTCUSDT", "1m"), series("coin_futures", "BTCUSD_PERP", "1m")]
    started = trio.current_time()
    check = await check_series(wanted, clients(handler))
    assert trio.current_time() - started == pytest.approx(DEFAULT_CHECK_TIMEOUT)
    assert check.unchecked == (wanted[0],) and check.ok == (wanted[1],)
    assert [r.getMessage() for r in caplog.records if r.name == "trio_klines.symbols"] == [
        "exchangeInfo of spot not fetched within 60s; their symbols are not checked"
    ]


async def test_a_rest_url_that_cannot_be_built_is_one_config_error(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.InvalidURL(f"cannot build {request.url.host}")  # what httpx raises for such a URL

    c = clients(handler)
    with pytest.raises(ConfigError, match="bad REST URL"):  # not an exception group
        await check_series([series("spot", "BTCUSDT", "1m"), series("usdt_futures", "BTCUSDT", "1m")], c)
