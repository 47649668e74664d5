"""The fake exchange's REST endpoints, driven with httpx over loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from trio_klines.core.markets import MARKETS, apply_endpoints
from trio_klines.core.parse import parse_rest_klines
from trio_klines.errors import BinanceError
from trio_klines.testing import FakeExchange, open_exchange
from trio_klines.testing.rest import BAN_AFTER

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
DAY = 86_400_000
# Thirty seconds into a minute, so that a test at speed 1 stays inside one candle and one weight window.
START = T0 + 30 * DAY + 30_000


@asynccontextmanager
async def exchange_and_client(**options: Any) -> AsyncIterator[tuple[FakeExchange, httpx.AsyncClient]]:
    options.setdefault("start", START)
    async with open_exchange(seed=11, **options) as ex, httpx.AsyncClient(timeout=10) as client:
        yield ex, client


async def klines(ex: FakeExchange, client: httpx.AsyncClient, market: str, **params: object) -> httpx.Response:
    m = ex.markets[market]
    return await client.get(m.rest_url + m.klines_path, params=params)


async def test_endpoints_map_is_accepted_by_the_market_table() -> None:
    async with open_exchange() as ex:
        markets = apply_endpoints(ex.endpoints)
        assert set(ex.endpoints) == set(MARKETS)
        assert markets["usdt_futures"].ws_url.endswith("/usdt_futures/market")
        port = ex.endpoints["spot"]["rest"].split(":")[2].split("/")[0]
        assert all(f"127.0.0.1:{port}/" in url for urls in ex.endpoints.values() for url in urls.values())


async def test_latest_klines_with_the_open_candle_last() -> None:
    async with exchange_and_client() as (ex, client):
        response = await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m")
        assert response.status_code == 200
        rows = response.json()
        assert len(rows) == 500  # the default limit
        now = ex.now()
        assert rows[-1][0] <= now < rows[-1][6] + 1  # the still-open candle is included
        closed = parse_rest_klines(response.content, "spot", "BTCUSDT", "1m", closed_before=now)
        assert closed == ex.ground_truth("spot", "BTCUSDT", "1m", rows[0][0], rows[-1][0])
        assert len(closed) == 499
        # The open candle is consistent with the final one and has not reached its volume yet.
        final = ex.history.candles("spot", "BTCUSDT", "1m", rows[-1][0], rows[-1][0] + 1)[0]
        assert final.low <= float(rows[-1][3]) <= float(rows[-1][2]) <= final.high
        assert float(rows[-1][5]) < final.volume


@pytest.mark.parametrize("market", ["spot", "usdt_futures"])
async def test_start_time_pages_oldest_first_and_end_time_newest_first(market: str) -> None:
    symbol = "ETHUSDT"
    async with exchange_and_client() as (ex, client):
        start = T0 + 5 * DAY + 123  # not on a boundary: the first candle opens after it
        rows = (await klines(ex, client, market, symbol=symbol, interval="1h", startTime=start, limit=30)).json()
        assert [r[0] for r in rows] == [T0 + 5 * DAY + (i + 1) * 3_600_000 for i in range(30)]
        end = T0 + 7 * DAY
        rows = (await klines(ex, client, market, symbol=symbol, interval="1h", endTime=end, limit=24)).json()
        assert [r[0] for r in rows] == [end - (23 - i) * 3_600_000 for i in range(24)]
        rows = (
            await klines(ex, client, market, symbol=symbol, interval="1d", startTime=T0, endTime=T0 + 3 * DAY)
        ).json()
        assert [r[0] for r in rows] == [T0, T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY]
        truth = ex.ground_truth(market, symbol, "1d", T0, T0 + 4 * DAY)
        assert parse_rest_klines(httpx.Response(200, json=rows).content, market, symbol, "1d") == truth
        # Nothing from the future.
        future = (await klines(ex, client, market, symbol=symbol, interval="1m", startTime=ex.now() + DAY)).json()
        assert future == []


async def test_coin_m_returns_the_candles_closest_to_end_time_within_200_days() -> None:
    async with exchange_and_client() as (ex, client):
        start, end = T0, T0 + 2 * DAY
        rows = (
            await klines(
                ex, client, "coin_futures", symbol="BTCUSD_PERP", interval="1h", startTime=start, endTime=end, limit=10
            )
        ).json()
        assert [r[0] for r in rows] == [end - (9 - i) * 3_600_000 for i in range(10)]
        # startTime alone: the window is startTime + 200 days (capped at now), newest first.
        rows = (
            await klines(ex, client, "coin_futures", symbol="BTCUSD_PERP", interval="1d", startTime=T0, limit=3)
        ).json()
        assert rows[-1][0] <= ex.now() < rows[-1][6]
        too_long = await klines(
            ex, client, "coin_futures", symbol="BTCUSD_PERP", interval="1d", startTime=T0 - 201 * DAY, endTime=T0
        )
        assert too_long.status_code == 400
        assert too_long.json() == {"code": -4088, "msg": "Maximum time interval is 200 days."}


@pytest.mark.parametrize(
    ("market", "params", "code"),
    [
        ("spot", {"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ("usdt_futures", {"symbol": "BTCUSD_PERP", "interval": "1m"}, -1121),
        ("spot", {"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ("usdt_futures", {"symbol": "BTCUSDT", "interval": "1s"}, -1120),
        ("spot", {"interval": "1m"}, -1102),
        ("spot", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1001}, -1130),
        ("usdt_futures", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1501}, -1130),
        ("coin_futures", {"symbol": "BTCUSD_PERP", "interval": "1m", "limit": 0}, -1130),
        ("spot", {"symbol": "BTCUSDT", "interval": "1m", "limit": "ten"}, -1100),
        ("spot", {"symbol": "BTCUSDT", "interval": "1m", "startTime": -5}, -1100),
        ("spot", {"symbol": "BTCUSDT", "interval": "1m", "startTime": 10, "endTime": 5}, -1023),
        ("usdt_futures", {"symbol": "BTCUSDT", "interval": "1m", "colour": "red"}, -1104),
        ("spot", {"symbol": "BTCUSDT", "interval": "1m", "timeZone": "8"}, -1130),
    ],
)
async def test_bad_requests_get_binance_errors(market: str, params: dict[str, object], code: int) -> None:
    async with exchange_and_client() as (ex, client):
        response = await klines(ex, client, market, **params)
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["code"] == code and body["msg"]
        with pytest.raises(BinanceError) as caught:
            parse_rest_klines(response.content, market, "BTCUSDT", "1m")
        assert caught.value.code == code
        if code == -1121:
            assert body == {"code": -1121, "msg": "Invalid symbol."}


async def test_maximum_limits_per_market() -> None:
    async with exchange_and_client() as (ex, client):
        spot = await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m", limit=1000)
        futures = await klines(ex, client, "usdt_futures", symbol="BTCUSDT", interval="1m", limit=1500)
        assert len(spot.json()) == 1000 and len(futures.json()) == 1500


async def test_outage_has_no_candles_on_rest() -> None:
    outage = (T0 + 3_600_000, T0 + 3 * 3_600_000)
    async with exchange_and_client(faults=f"outage={outage[0]}-{outage[1]}") as (ex, client):
        rows = (await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m", startTime=T0, limit=1000)).json()
        times = [r[0] for r in rows]
        assert len(times) == 1000 and not any(outage[0] <= t < outage[1] for t in times)
        assert times[59] == T0 + 59 * 60_000 and times[60] == outage[1]


async def test_exchange_info_ping_and_time() -> None:
    async with exchange_and_client(symbols=3) as (ex, client):
        for name, market in ex.markets.items():
            info = (await client.get(market.rest_url + market.exchange_info_path)).json()
            listed = {s["symbol"] for s in info["symbols"]}
            assert listed == set(ex.history.universe.symbols(name)) and len(listed) >= 8
            assert (await client.get(market.rest_url + market.ping_path)).json() == {}
            server_time = (await client.get(market.rest_url + market.time_path)).json()["serverTime"]
            assert abs(server_time - ex.now()) < 5_000
        spot = ex.markets["spot"]
        one = (await client.get(spot.rest_url + spot.exchange_info_path, params={"symbol": "BNBUSDT"})).json()
        assert [s["symbol"] for s in one["symbols"]] == ["BNBUSDT"]
        two = await client.get(spot.rest_url + spot.exchange_info_path, params={"symbols": '["BTCUSDT","ETHUSDT"]'})
        assert [s["symbol"] for s in two.json()["symbols"]] == ["BTCUSDT", "ETHUSDT"]
        bad = await client.get(spot.rest_url + spot.exchange_info_path, params={"symbol": "NOPE"})
        assert bad.status_code == 400 and bad.json()["code"] == -1121
        missing = await client.get(spot.rest_url + "/api/v3/nothing")
        assert missing.status_code == 404


async def test_used_weight_header_and_the_shared_futures_budget() -> None:
    async with exchange_and_client() as (ex, client):

        async def used(market: str, limit: int) -> int:
            response = await klines(
                ex,
                client,
                market,
                symbol="BTCUSDT" if market != "coin_futures" else "BTCUSD_PERP",
                interval="1m",
                limit=limit,
            )
            assert response.status_code == 200
            return int(response.headers["X-MBX-USED-WEIGHT-1M"])

        assert await used("spot", 1000) == 2
        assert await used("spot", 10) == 4  # spot klines weigh 2 whatever the limit
        assert await used("usdt_futures", 50) == 1
        assert await used("coin_futures", 500) == 1 + 5  # one budget for USDⓈ-M and COIN-M
        assert await used("usdt_futures", 1500) == 1 + 5 + 10
        assert await used("coin_futures", 200) == 1 + 5 + 10 + 2


async def test_exceeding_the_weight_budget_gives_429_with_retry_after() -> None:
    async with exchange_and_client() as (ex, client):
        futures = ex.markets["usdt_futures"]
        statuses = []
        # limit > 1000 weighs 10, however few rows come back: ask for the future to keep it quick.
        params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1001, "startTime": ex.now() + DAY}
        for _ in range(241):  # 240 × 10 = the 2400 budget of a minute
            response = await client.get(futures.rest_url + futures.klines_path, params=params)
            statuses.append(response.status_code)
        assert statuses[:240] == [200] * 240
        assert statuses[240] == 429
        assert response.json()["code"] == -1003
        assert int(response.headers["Retry-After"]) >= 1  # 30 exchange seconds left at speed 1
        # COIN-M shares the exhausted budget; spot does not.
        coin = await klines(ex, client, "coin_futures", symbol="BTCUSD_PERP", interval="1m", limit=1)
        assert coin.status_code == 429
        assert (await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m")).status_code == 200


@pytest.mark.parametrize("fault", ["rest429", "rest418"])
async def test_injected_429_and_418_carry_retry_after(fault: str) -> None:
    async with exchange_and_client(faults=f"{fault}=1,retry_after=7") as (ex, client):
        response = await klines(ex, client, "usdt_futures", symbol="BTCUSDT", interval="1m")
        assert response.status_code == int(fault[4:])
        assert response.headers["Retry-After"] == "7"
        assert response.json()["code"] == -1003
        assert ex.stats[f"rest_{fault[4:]}"] == 1


async def test_calling_again_inside_a_429s_retry_after_gets_banned_with_418() -> None:
    async with exchange_and_client(faults="retry_after=1") as (ex, client):
        futures = ex.markets["usdt_futures"]
        params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1001, "startTime": ex.now() + DAY}
        statuses = [(await client.get(futures.rest_url + futures.klines_path, params=params)).status_code
                    for _ in range(241)]  # fmt: skip
        assert statuses[-1] == 429
        # Requests already in flight when the 429 left are not held against the client...
        assert (await klines(ex, client, "coin_futures", symbol="BTCUSD_PERP", interval="1m")).status_code == 429
        # ...but calls once the 429 has surely arrived, before its Retry-After, are: a few are answered
        # 429 again, then the pool is banned.
        await trio.sleep(0.3)
        again = [(await klines(ex, client, "coin_futures", symbol="BTCUSD_PERP", interval="1m")).status_code
                 for _ in range(BAN_AFTER - 1)]  # fmt: skip
        assert again == [429] * (BAN_AFTER - 1)
        banned = await klines(ex, client, "coin_futures", symbol="BTCUSD_PERP", interval="1m")
        assert banned.status_code == 418
        assert banned.json()["code"] == -1003 and "banned" in banned.json()["msg"]
        assert (await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m")).status_code == 200  # other pool
        assert ex.stats["rest_418"] == 1


async def test_one_stray_call_inside_retry_after_is_answered_429_not_banned() -> None:
    async with exchange_and_client(faults="rest429=1,retry_after=1") as (ex, client):
        assert (await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m")).status_code == 429
        await trio.sleep(0.3)
        stray = await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m")
        assert stray.status_code == 429 and int(stray.headers["Retry-After"]) >= 1
        assert ex.stats["rest_418"] == 0


@pytest.mark.slow  # waits out each Retry-After on the real clock (a server on loopback)
async def test_a_client_that_waits_retry_after_is_never_banned() -> None:
    async with exchange_and_client(faults="rest429=0.5,retry_after=1", speed=60) as (ex, client):
        statuses = []
        for _ in range(12):
            response = await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m", limit=1)
            statuses.append(response.status_code)
            if response.status_code == 429:
                await trio.sleep(float(response.headers["Retry-After"]))
        assert 429 in statuses and 200 in statuses
        assert 418 not in statuses and ex.stats["rest_418"] == 0


async def test_injected_5xx_are_varied_and_seeded() -> None:
    async with exchange_and_client(faults="rest5xx=0.5") as (ex, client):
        statuses = [
            (await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m", limit=1)).status_code for _ in range(60)
        ]
    async with exchange_and_client(faults="rest5xx=0.5") as (ex, client):
        again = [
            (await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m", limit=1)).status_code for _ in range(60)
        ]
    assert statuses == again  # the same seed hits the same requests
    assert 15 < statuses.count(200) < 45
    assert {500, 502, 503, 504} <= set(statuses)


async def test_rest_slow_delays_every_answer() -> None:
    async with exchange_and_client(faults="rest_slow=0.2") as (ex, client):
        started = time.perf_counter()
        response = await klines(ex, client, "spot", symbol="BTCUSDT", interval="1m", limit=1)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200 and 0.2 <= elapsed < 2
        assert ex.stats["fault_rest_slow"] == 1
        # A client with a shorter timeout sees a timeout.
        m = ex.markets["spot"]
        with pytest.raises(httpx.ReadTimeout):
            await client.get(m.rest_url + m.ping_path, timeout=0.05)
        await trio.sleep(0.2)  # let the slow answer finish before the exchange closes
