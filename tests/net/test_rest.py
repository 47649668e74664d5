"""The REST client: paging plans (property tests) and rate-limit behaviour against httpx.MockTransport."""

from __future__ import annotations

import dataclasses
import itertools
import ssl

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines import errors
from trio_klines.core.markets import INTERVALS, iter_open_times
from trio_klines.core.paging import MAX_WINDOW_MS, page_windows, pages_needed
from trio_klines.errors import BinanceError, ConfigError
from trio_klines.net.rest import RestError, WeightBudget

from fakes import FakeBinance, rest_client

pytestmark = pytest.mark.timeout(10)


@settings(max_examples=300)
@given(
    st.sampled_from(list(INTERVALS)),
    st.integers(1_500_000_000_000, 3_000_000_000_000),
    st.integers(0, 3 * 10**9),
    st.integers(1, 1500),
)
def test_windows_cover_every_open_time_once(interval: str, start: int, span: int, limit: int) -> None:
    end = start + (span if INTERVALS[interval] is None else min(span, 3000 * INTERVALS[interval]))
    windows = list(page_windows(interval, start, end, limit))
    expected = list(iter_open_times(interval, start, end))
    got = [t for lo, hi in windows for t in iter_open_times(interval, lo, hi + 1)]
    assert got == expected
    for (lo, hi), nxt in zip(windows, [*windows[1:], None][: len(windows)], strict=True):
        assert lo <= hi
        assert len(list(iter_open_times(interval, lo, hi + 1))) <= limit
        assert hi - lo < MAX_WINDOW_MS
        if nxt is not None:
            assert nxt[0] == hi + 1
    assert len(windows) >= pages_needed(interval, start, end, limit) - 1 or not expected


client = rest_client


@pytest.mark.parametrize("market", ["spot", "usdt_futures", "coin_futures"])
async def test_pages_fetch_exactly_the_range(market: str, autojump_clock: trio.testing.MockClock) -> None:
    now = 1_700_000_000_000
    fake = FakeBinance(market, now)
    c = client(fake)
    start, end = now - 2500 * 60_000 - 30_000, now - 60_000
    candles = [candle async for page in c.pages("BTCUSDT", "1m", start, end) for candle in page]
    assert [x.open_time for x in candles] == list(iter_open_times("1m", start, end))
    assert len(fake.calls) == 3
    assert all("startTime" in p and "endTime" in p and p["limit"] == "1000" for _, p in fake.calls)


async def test_the_still_open_candle_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    now = 1_699_999_980_000 + 30_000  # 30 s into a minute
    fake = FakeBinance("spot", now)
    c = client(fake)
    server_now = await c.server_time()
    assert server_now == now
    page = await c.klines("BTCUSDT", "1m", now - 330_000, now, closed_before=server_now)
    assert [x.open_time for x in page] == [now - 330_000 + i * 60_000 for i in range(5)]  # the 6th is open


async def test_429_waits_for_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance("usdt_futures", 1_700_000_000_000)
    fake.script.append((429, {"Retry-After": "7"}, {"code": -1003, "msg": "Too much request weight used"}))
    c = client(fake)
    await c.klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
    (t0, _), (t1, _) = fake.calls
    assert t1 - t0 == pytest.approx(7)
    assert c.stats.rate_limited == 1


async def test_418_stops_every_call_of_the_pool(autojump_clock: trio.testing.MockClock) -> None:
    budget = WeightBudget(2400)
    um, cm = FakeBinance("usdt_futures", 1_700_000_000_000), FakeBinance("coin_futures", 1_700_000_000_000)
    um.script.append((418, {"Retry-After": "120"}, {"code": -1003, "msg": "Way too much request weight used"}))
    a, b = client(um, budget), client(cm, budget)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.klines, "BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
        await trio.sleep(1)
        nursery.start_soon(b.klines, "BTCUSD_PERP", "1m", 1_699_999_000_000, 1_699_999_999_999)
    assert um.calls[1][0] - um.calls[0][0] == pytest.approx(120)
    assert cm.calls[0][0] >= 120  # the COIN-M call waited for the shared ban too
    assert budget.bans == 1


async def test_5xx_and_timeouts_are_retried_then_give_up(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance("spot", 1_700_000_000_000)
    fake.script += [(503, {}, {"msg": "Service Unavailable."}), (500, {}, {})]
    c = client(fake)
    assert len(await c.klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)) > 0
    assert c.stats.retries == 2
    fake.script += [(502, {}, {})] * 5
    with pytest.raises(RestError, match="giving up after 4 attempts"):
        await client(fake, retries=3).klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)


async def test_transport_errors_are_retried(autojump_clock: trio.testing.MockClock) -> None:
    fails = [httpx.ConnectTimeout("slow"), httpx.ReadError("reset")]
    fake = FakeBinance("spot", 1_700_000_000_000)

    def flaky(request: httpx.Request) -> httpx.Response:
        if fails:
            raise fails.pop(0)
        return fake(request)

    c = client(fake)
    c.http = httpx.AsyncClient(transport=httpx.MockTransport(flaky))
    assert len(await c.klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)) > 0
    assert c.stats.retries == 2


def bad_gzip(request: httpx.Request) -> httpx.Response:
    """A 200 whose body is not the gzip its ``Content-Encoding`` announces: httpx raises DecodingError."""
    return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"[[1700000000000,")


async def test_an_undecodable_body_is_retried_then_raises_rest_error(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance("spot", 1_700_000_000_000)
    garbled = [True, True]

    def sometimes_garbled(request: httpx.Request) -> httpx.Response:
        return bad_gzip(request) if garbled and garbled.pop() else fake(request)

    c = client(fake)
    c.http = httpx.AsyncClient(transport=httpx.MockTransport(sometimes_garbled))
    assert len(await c.klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)) > 0
    assert c.stats.retries == 2

    c = client(fake, retries=3)
    c.http = httpx.AsyncClient(transport=httpx.MockTransport(bad_gzip))
    with pytest.raises(RestError, match=r"giving up after 4 attempts \(DecodingError") as info:
        await c.klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
    assert isinstance(info.value.__cause__, httpx.DecodingError)  # chained, never raised as is
    assert c.stats.retries == 4 and c.stats.gave_up == 1
    with pytest.raises(RestError, match="DecodingError"):
        await c.server_time()


@pytest.mark.parametrize(
    "error",
    [
        httpx.RemoteProtocolError("peer closed"),
        httpx.PoolTimeout("pool"),
        OSError(104, "reset"),
        ssl.SSLError(1, "bad record mac"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_every_error_of_the_http_stack_becomes_rest_error(
    error: Exception, autojump_clock: trio.testing.MockClock
) -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        raise error

    c = client(FakeBinance("spot", 1_700_000_000_000), retries=1)
    c.http = httpx.AsyncClient(transport=httpx.MockTransport(failing))
    with pytest.raises(RestError, match=type(error).__name__) as info:
        await c.klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
    assert info.value.__cause__ is error
    assert c.stats.retries == 2


async def test_a_url_httpx_cannot_build_is_a_config_error(autojump_clock: trio.testing.MockClock) -> None:
    c = client(FakeBinance("spot", 1_700_000_000_000))
    c.market = dataclasses.replace(c.market, rest_url="http://[::1")  # past the market table's own checks
    with pytest.raises(ConfigError, match="bad REST URL"):
        await c.server_time()
    assert c.stats.retries == 0


def test_rest_error_lives_in_the_error_tree() -> None:
    assert RestError is errors.RestError and issubclass(RestError, errors.KlinesError)


async def test_client_errors_raise_binance_error_at_once(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance("spot", 1_700_000_000_000)
    fake.script.append((400, {}, {"code": -1121, "msg": "Invalid symbol."}))
    with pytest.raises(BinanceError, match="Invalid symbol") as info:
        await client(fake).klines("NOPEUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
    assert info.value.code == -1121
    assert len(fake.calls) == 1


@pytest.mark.parametrize("code", [-1000, -1001, -1007, -1008])
async def test_binance_try_again_codes_in_a_400_are_retried_with_backoff(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    # Binance answers "400 -1000 An unknown error occurred while processing the request." at times: a
    # server fault, not a refusal of the request.
    fake = FakeBinance("spot", 1_700_000_000_000)
    fake.script += [(400, {}, {"code": code, "msg": "An unknown error occurred while processing the request."})] * 2
    c = client(fake)
    page = await c.klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
    assert len(page) == 17 and len(fake.calls) == 3
    (t0, _), (t1, _), (t2, _) = fake.calls
    assert 0 < t1 - t0 < t2 - t1  # backed off, longer the second time
    assert c.stats.retries == 2 and c.stats.gave_up == 0


async def test_a_400_minus_1000_that_persists_gives_up_as_a_rest_error(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance("spot", 1_700_000_000_000)
    fake.script += [(400, {}, {"code": -1000, "msg": "An unknown error occurred while processing the request."})] * 5
    with pytest.raises(RestError, match="-1000") as info:  # not a BinanceError: the caller retries later
        await client(fake, retries=3).klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
    assert not isinstance(info.value, BinanceError) and info.value.status == 400
    assert len(fake.calls) == 4


@pytest.mark.parametrize(("code", "msg"), [(-1121, "Invalid symbol."), (-1120, "Invalid interval."),
                                            (-1100, "Illegal characters found in a parameter.")])  # fmt: skip
async def test_other_binance_4xx_errors_stay_refusals(
    code: int, msg: str, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeBinance("spot", 1_700_000_000_000)
    fake.script.append((400, {}, {"code": code, "msg": msg}))
    with pytest.raises(BinanceError) as info:
        await client(fake).klines("BTCUSDT", "1m", 1_699_999_000_000, 1_699_999_999_999)
    assert info.value.code == code and len(fake.calls) == 1


async def test_the_budget_paces_calls_to_the_minute(autojump_clock: trio.testing.MockClock) -> None:
    budget = WeightBudget(50, share=0.5)  # allowance 25: five calls of weight 5 a minute
    fake = FakeBinance("usdt_futures", 1_700_000_000_000)
    c = client(fake, budget)
    start = 1_700_000_000_000 - 12 * 1000 * 60_000
    async for _ in c.pages("BTCUSDT", "1m", start, 1_700_000_000_000):
        pass
    times = [t for t, _ in fake.calls]
    assert len(times) == 12
    assert times[4] - times[0] < 1
    assert times[5] - times[0] >= 60
    assert times[10] - times[0] >= 120
    assert budget.waited >= 120


def test_the_server_header_corrects_the_local_count() -> None:
    budget = WeightBudget(100)
    budget.observe("70")
    assert budget.used == 70
    budget.observe("3")
    budget.observe("garbage")
    budget.observe(None)
    assert budget.used == 70


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 5, 10]), min_size=1, max_size=60), st.integers(5, 200))
def test_the_budget_never_spends_more_than_its_allowance_a_minute(weights: list[int], limit: int) -> None:
    """Weight accounting as a property: each minute window holds at most the allowance (a single call
    heavier than the allowance goes alone), windows last a minute, and calls keep their order."""
    budget = WeightBudget(limit, share=0.8)
    spent: list[tuple[float, float, int]] = []  # (window start, time, weight)

    async def main() -> None:
        for w in weights:
            await budget.reserve(w)
            spent.append((budget.window_start, trio.current_time(), w))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    windows: dict[float, list[int]] = {}
    for start, t, w in spent:
        assert start <= t < start + 60
        windows.setdefault(start, []).append(w)
    for used in windows.values():
        assert sum(used) <= budget.allowance or len(used) == 1
    starts = sorted(windows)
    assert all(b - a >= 60 for a, b in itertools.pairwise(starts))
    assert budget.requests == len(weights)
