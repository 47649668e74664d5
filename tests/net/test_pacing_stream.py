"""Binance's WebSocket limits kept by the connection task, on a MockClock: connects shared by every
connection (300 per 5 minutes per IP, less a margin), control requests per connection (5 a second on spot,
10 on futures, less a margin), requests batched and bounded, and a limiter that is fair and loses nothing
to cancellation."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from itertools import accumulate

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.config import StreamSettings
from trio_klines.core.markets import MARKETS, stream_name
from trio_klines.core.pacing import CONNECT_LIMIT, MAX_REQUEST_BYTES, MAX_REQUEST_PARAMS, Pacer
from trio_klines.core.parse import Candle
from trio_klines.net.pacing import RateLimiter, shared_connect_limiter
from trio_klines.net.stream import StreamConnection
from trio_klines.testing.scripted import Pause

from fakes import FakeConnection, FakeTransport, kline_frame, max_in_window

pytestmark = pytest.mark.timeout(30)
SPOT = MARKETS["spot"]
UM = MARKETS["usdt_futures"]
#: Sessions that stay up without traffic: these tests are about connects and requests, not silence.
QUIET = StreamSettings(receive_timeout=10_000, silence_min=100_000, healthy_after=1, backoff_initial=1)


class _Timed:
    """A connection that notes when each control request went out, for rates on the wire."""

    def __init__(self, inner: FakeConnection, log: list[tuple[float, dict[str, object]]]) -> None:
        self.inner, self.log = inner, log

    async def receive(self) -> str | bytes:
        return await self.inner.receive()

    async def send(self, message: str) -> None:
        self.log.append((trio.current_time(), json.loads(message)))
        self.log[-1][1]["_bytes"] = len(message.encode())
        await self.inner.send(message)


class TimedTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[float, dict[str, object]]] = []

    @asynccontextmanager
    async def __call__(self, url: str) -> AsyncIterator[_Timed]:  # type: ignore[override]
        async with super().__call__(url) as conn:
            yield _Timed(conn, self.requests)


def spot_streams(n: int, start: int = 0) -> list[str]:
    return [stream_name(f"S{i:05d}USDT", "1m") for i in range(start, start + n)]


def connection(
    transport: FakeTransport, market: str = "spot", streams: Sequence[str] = ("btcusdt@kline_1m",), **kw: object
) -> StreamConnection:
    send, _ = trio.open_memory_channel[Sequence[Candle]](1000)
    return StreamConnection(
        f"{market}-0", MARKETS[market], streams, send, settings=QUIET, transport=transport, rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def live(transport: FakeTransport, n: int = 1) -> FakeConnection:
    ws = await transport.next_connection(n)
    await ws.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
    await trio.sleep(0.01)
    return ws


def subscribed(requests: list[tuple[float, dict[str, object]]]) -> list[str]:
    return [p for _, r in requests if r["method"] == "SUBSCRIBE" for p in r["params"]]  # type: ignore[attr-defined]


# --- the limiter --------------------------------------------------------------------------------


async def test_the_limiter_serves_in_arrival_order(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(Pacer(2, 1.0))
    granted: list[tuple[int, float]] = []

    async def take(n: int) -> None:
        await limiter.acquire()
        granted.append((n, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for n in range(7):
            nursery.start_soon(take, n)
            await trio.testing.wait_all_tasks_blocked()  # each is queued before the next comes
    assert granted == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3)]
    assert (limiter.granted, limiter.waited) == (7, 0 + 0 + 1 + 1 + 2 + 2 + 3)


async def test_a_waiter_cancelled_takes_no_slot_and_a_taken_slot_stays_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(Pacer(3, 10.0))
    granted: list[float] = []

    async def take_then_leave() -> None:
        with trio.CancelScope() as scope:
            await limiter.acquire()
            scope.cancel()  # the taker is cancelled right after: its slot is not given back
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(take_then_leave)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(4):  # cancelled after 4 s of its 10 s wait: it takes nothing
            await limiter.acquire()
        assert limiter.pacer.in_window(trio.current_time()) == 3
        await limiter.acquire()
        granted.append(trio.current_time())
    assert granted == [10.0]  # the first free slot, no earlier (nothing released) and no later (none lost)
    assert limiter.granted == 4


@settings(max_examples=40)
@given(
    limit=st.integers(1, 4),
    per=st.sampled_from([0.5, 1.0, 3.0]),
    tasks=st.lists(st.tuples(st.integers(0, 40), st.one_of(st.none(), st.integers(1, 40))), max_size=30),
)
def test_the_limiter_is_the_pacer_first_come_first_served_whoever_leaves(
    limit: int, per: float, tasks: list[tuple[int, int | None]]
) -> None:
    """Tasks arrive in order (tenths of a second apart, or a microsecond: together), some leave after a
    while: every window holds at most ``limit`` grants, each grant comes as early as the grants before it
    allow, and a task that left had not been due before it left."""
    # Tasks woken at one instant run in any order: a microsecond apart, their order is the arrival order.
    arrivals = [t + i * 1e-6 for i, t in enumerate(accumulate(gap / 10 for gap, _ in tasks))]
    # Patience ends off the grid of arrivals and windows: leaving and being served never coincide.
    patience = [p / 10 + 0.000123 if p is not None else float("inf") for _, p in tasks]
    deadlines = [a + p for a, p in zip(arrivals, patience, strict=True)]
    results: dict[int, float] = {}

    async def main() -> None:
        limiter = RateLimiter(Pacer(limit, per))

        async def task(i: int) -> None:
            await trio.sleep_until(arrivals[i])
            with trio.move_on_at(deadlines[i]):
                await limiter.acquire()
                results[i] = trio.current_time()

        async with trio.open_nursery() as nursery:
            for i in range(len(tasks)):
                nursery.start_soon(task, i)
        assert limiter.granted == len(results)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    grants: list[float] = []
    for i in range(len(tasks)):
        due = max(arrivals[i], grants[-limit] + per) if len(grants) >= limit else arrivals[i]
        if i in results:
            assert results[i] == pytest.approx(due, abs=1e-9)
            grants.append(results[i])
        else:
            assert deadlines[i] < due
    assert max_in_window(grants, per) <= limit


def test_one_connect_limiter_per_trio_run() -> None:
    async def main() -> RateLimiter:
        assert shared_connect_limiter() is shared_connect_limiter()
        return shared_connect_limiter()

    first, second = trio.run(main), trio.run(main)
    assert first is not second  # a run's clock is its own: times must not leak into the next run
    assert first.pacer.limit == CONNECT_LIMIT


# --- control requests ---------------------------------------------------------------------------


async def test_thirty_quick_subscribes_one_after_another_keep_to_the_spot_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = TimedTransport()
    conn = connection(transport)
    new = spot_streams(30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await live(transport)
        start = trio.current_time()
        for stream in new:
            assert await conn.subscribe([stream]) == [stream]
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    times = [t for t, _ in transport.requests]
    assert subscribed(transport.requests) == new
    assert max_in_window(times, 1.0) == 3 < 5  # spot: 5 a second, less the pong's and jitter's share
    assert 9 <= took <= 10  # 30 requests, 3 a second
    assert conn.stats.requests == 30


async def test_thirty_subscribes_at_once_go_in_one_request(autojump_clock: trio.testing.MockClock) -> None:
    transport = TimedTransport()
    conn = connection(transport)
    new = spot_streams(30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await live(transport)
        async with trio.open_nursery() as callers:
            for stream in new:
                callers.start_soon(conn.subscribe, [stream])
        nursery.cancel_scope.cancel()
    assert sorted(subscribed(transport.requests)) == new
    assert len(transport.requests) <= 2  # the first caller's request, and everything queued behind it


async def test_a_big_universe_is_subscribed_in_bounded_requests_at_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = TimedTransport()
    conn = connection(transport)
    new = spot_streams(1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await live(transport)
        async with trio.open_nursery() as callers:  # a universe grows: 50 calls of 20 at once
            for i in range(0, 1000, 20):
                callers.start_soon(conn.subscribe, new[i : i + 20])
        nursery.cancel_scope.cancel()
    assert sorted(subscribed(transport.requests)) == new  # each once
    sizes = [(len(r["params"]), r["_bytes"]) for _, r in transport.requests]  # type: ignore[arg-type]
    assert all(n <= MAX_REQUEST_PARAMS and size <= MAX_REQUEST_BYTES for n, size in sizes)
    assert len(sizes) <= 7  # ≈190 kline streams fit in 4000 bytes
    assert max_in_window([t for t, _ in transport.requests], 1.0) <= 3


async def test_queued_requests_keep_their_order_per_method(autojump_clock: trio.testing.MockClock) -> None:
    transport = TimedTransport()
    conn = connection(transport, "usdt_futures", streams=[stream_name("BTCUSDT", "1m")])
    a, b, c = spot_streams(3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await live(transport)
        for stream in spot_streams(8, start=100):  # the 8 slots of this second are spent
            await conn.subscribe([stream])
        async with trio.open_nursery() as callers:
            for method, streams in ((conn.subscribe, [a, b]), (conn.unsubscribe, [a]), (conn.subscribe, [c]),
                                    (conn.subscribe, [a])):  # fmt: skip
                callers.start_soon(method, streams)
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [(r["method"], r["params"]) for _, r in transport.requests[8:]] == [
        ("SUBSCRIBE", [a, b]),  # c did not overtake the UNSUBSCRIBE of a …
        ("UNSUBSCRIBE", [a]),
        ("SUBSCRIBE", [c, a]),  # … but joined the SUBSCRIBE after it
    ]
    assert max_in_window([t for t, _ in transport.requests], 1.0) <= 8
    assert conn.streams[-3:] == (b, c, a)


async def test_a_cancelled_caller_leaves_its_request_for_the_next(autojump_clock: trio.testing.MockClock) -> None:
    transport = TimedTransport()
    conn = connection(transport)
    a, b = spot_streams(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await live(transport)
        for stream in spot_streams(3, start=100):
            await conn.subscribe([stream])
        with trio.move_on_after(0.5):  # gives up waiting for the next second's slot
            await conn.subscribe([a])
        assert subscribed(transport.requests)[-1] != a and a in conn.streams
        await conn.subscribe([b])
        nursery.cancel_scope.cancel()
    assert transport.requests[-1][1]["params"] == [a, b]
    assert len(transport.requests) == 4


async def test_a_socket_lost_while_requests_wait_leaves_them_to_the_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = TimedTransport()
    conn = connection(transport)
    a = spot_streams(1)[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        ws = await live(transport)
        for stream in spot_streams(3, start=100):
            await conn.subscribe([stream])
        async with trio.open_nursery() as callers:
            callers.start_soon(conn.subscribe, [a])
            await trio.testing.wait_all_tasks_blocked()
            ws.cut()  # before the next slot: the request is dropped, the caller returns
        ws2 = await transport.next_connection(2)
        nursery.cancel_scope.cancel()
    assert a not in subscribed(transport.requests)
    assert ws2.url.endswith(a)  # the reconnect's URL carries it
    assert ws2.sent == []


async def test_each_connection_has_its_own_control_rate(autojump_clock: trio.testing.MockClock) -> None:
    transport = TimedTransport()
    one, two = connection(transport), connection(transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one.run)
        await live(transport, 1)
        nursery.start_soon(two.run)
        await live(transport, 2)
        start = trio.current_time()
        for i in range(3):
            await one.subscribe(spot_streams(1, start=i))
            await two.subscribe(spot_streams(1, start=10 + i))
        assert trio.current_time() == start  # six requests at once: three on each connection
        nursery.cancel_scope.cancel()


# --- connects -----------------------------------------------------------------------------------


async def test_four_hundred_connections_spread_their_connects_over_five_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport([[kline_frame("BTCUSDT", "1m", 60_000, closed=False)]] * 400)
    limiter = RateLimiter(Pacer(CONNECT_LIMIT, 300))
    conns = [connection(transport, connect_limiter=limiter) for _ in range(400)]
    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(conn.run)
        await transport.next_connection(400)
        await trio.sleep(1)
        done_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert max_in_window(transport.attempts, 300) == CONNECT_LIMIT < 300
    assert sorted(transport.attempts)[CONNECT_LIMIT - 1] == 0 and sorted(transport.attempts)[CONNECT_LIMIT] == 300
    assert 300 <= done_at <= 302
    assert all(c.stats.reconnects == 0 for c in conns)  # waiting for a slot is no failure
    assert sum(c.stats.connect_waited for c in conns) == 300 * (400 - CONNECT_LIMIT)


async def test_a_reconnect_storm_keeps_to_the_shared_limit(autojump_clock: trio.testing.MockClock) -> None:
    # 70 connections, dropped every 20 s by an exchange in trouble, reconnect within the limit, all of them.
    transport = FakeTransport()
    limiter = RateLimiter(Pacer(CONNECT_LIMIT, 300))
    conns = [connection(transport, connect_limiter=limiter) for _ in range(70)]

    async def exchange() -> None:
        seen = 0
        while True:
            await transport.next_connection(seen + 1)
            fresh, seen = transport.connections[seen:], len(transport.connections)
            for ws in fresh:
                ws.push_nowait(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
                ws.push_nowait(Pause(20))
                ws.cut()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(exchange)
        for conn in conns:
            nursery.start_soon(conn.run)
        await trio.sleep(1800)
        nursery.cancel_scope.cancel()
    assert max_in_window(transport.attempts, 300) <= CONNECT_LIMIT
    assert len(transport.attempts) >= 6 * CONNECT_LIMIT - 70  # the limit is used, not wasted
    assert min(c.stats.reconnects for c in conns) >= 10  # nobody starved


async def test_one_connection_failing_does_not_hold_up_the_others(autojump_clock: trio.testing.MockClock) -> None:
    failing, healthy = FakeTransport(), FakeTransport()
    failing.refuse = 1_000_000
    limiter = RateLimiter(Pacer(CONNECT_LIMIT, 300))
    bad = connection(failing, connect_limiter=limiter)
    good = connection(healthy, connect_limiter=limiter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bad.run)
        await trio.sleep(60)
        nursery.start_soon(good.run)
        await healthy.next_connection(1)
        assert trio.current_time() == 60  # at once: the failing one has used few slots
        nursery.cancel_scope.cancel()
    assert 0 < len(failing.attempts) < CONNECT_LIMIT


async def test_a_connection_waiting_for_a_connect_slot_is_not_failing(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport([[kline_frame("BTCUSDT", "1m", 60_000, closed=False)]] * 2)
    limiter = RateLimiter(Pacer(1, 100))
    settings_ = StreamSettings(receive_timeout=5, silence_min=100_000)  # far shorter than the wait
    first, second = (
        StreamConnection(f"spot-{i}", SPOT, ["btcusdt@kline_1m"], trio.open_memory_channel[Sequence[Candle]](9)[0],
                         settings=settings_, transport=transport, connect_limiter=limiter)
        for i in range(2)
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.run)
        await transport.next_connection(1)
        nursery.start_soon(second.run)
        await transport.next_connection(2)
        await trio.sleep(0.1)
        assert second.stats.state == "live"
        nursery.cancel_scope.cancel()
    assert transport.attempts == [0, 100]
    assert (second.stats.reconnects, second.stats.connect_waited) == (0, 100)


async def test_connections_given_no_limiter_share_the_runs(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport([[kline_frame("BTCUSDT", "1m", 60_000, closed=False)]] * 3)
    conns = [connection(transport, market) for market in ("spot", "usdt_futures", "coin_futures")]
    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(conn.run)
        await transport.next_connection(3)
        nursery.cancel_scope.cancel()
    assert shared_connect_limiter().granted == 3  # every market together: Binance counts per IP
