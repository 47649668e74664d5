"""Every WebSocket fault of the fake exchange, and the garbled, empty and short REST answers, observed by
plain clients.

The REST faults that replace the answer (429, 418, 5xx, slow) are in test_exchange_rest.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from trio_klines.core.parse import parse_frame, parse_rest_klines
from trio_klines.errors import BinanceError, MalformedMessage
from trio_klines.testing import FakeExchange, open_exchange, parse_faults

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_200_000
FAST = 6000.0
STREAMS = "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"


def ws_url(ex: FakeExchange) -> str:
    return ex.endpoints["usdt_futures"]["ws"] + STREAMS


@asynccontextmanager
async def faulty_stream(faults: str, *, seed: int = 1) -> AsyncIterator[tuple[FakeExchange, WebSocketConnection]]:
    """A fast exchange with ``faults`` and a client on two USDⓈ-M kline streams."""
    async with (
        open_exchange(seed=seed, speed=FAST, start=T0, faults=faults) as ex,
        open_websocket_url(ws_url(ex), disconnect_timeout=1) as ws,
    ):
        yield ex, ws


async def messages(ws: WebSocketConnection, count: int) -> list[str | bytes]:
    return [await ws.get_message() for _ in range(count)]


async def read_until_closed(ws: WebSocketConnection) -> ConnectionClosed:
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as exc:
        return exc


async def test_drop_cuts_the_connection_without_a_close_frame() -> None:
    async with faulty_stream("drop=1") as (ex, ws):
        closed = await read_until_closed(ws)
    # 1006: the stream ended with no close frame (trio-websocket's "abnormal closure").
    assert closed.reason.code == 1006
    assert ex.stats["fault_drop"] == 1 and ex.stats["drop_fallback_close"] == 0


async def test_close_ends_the_connection_with_a_close_frame() -> None:
    async with faulty_stream("close=1") as (ex, ws):
        closed = await read_until_closed(ws)
    assert closed.reason.code == 1000 and closed.reason.reason == "fault: close"
    assert ex.stats["fault_close"] == 1


async def test_drop_with_a_probability_hits_some_frames_only() -> None:
    async with open_exchange(seed=1, speed=FAST, start=T0, faults="drop=0.05") as ex:
        lasted = []
        for _ in range(4):
            count = 0
            async with open_websocket_url(ws_url(ex), disconnect_timeout=1) as ws:
                try:
                    while count < 60:
                        await ws.get_message()
                        count += 1
                except ConnectionClosed as exc:
                    assert exc.reason.code == 1006
            lasted.append(count)
    # Which frames are hit depends on open-update timing, so only bounds: 240 frames at 5 % almost
    # surely see a drop, and almost surely not all on the first frame.
    dropped = sum(1 for n in lasted if n < 60)
    assert 1 <= dropped <= ex.stats["fault_drop"]
    assert max(lasted) > 1


async def test_stall_goes_silent_without_closing() -> None:
    async with faulty_stream("stall=1,stall_s=0.1") as (ex, ws):
        arrivals = [time.perf_counter()]
        for _ in range(3):
            await ws.get_message()
            arrivals.append(time.perf_counter())
        assert not ws.closed
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # every frame waits stall_s before it goes
    assert ex.stats["fault_stall"] >= 3


async def test_garbage_sends_non_json_truncated_and_binary_frames() -> None:
    async with faulty_stream("garbage=1") as (_, ws):
        received = await messages(ws, 40)
    bad, good = [], []
    for m in received:
        try:
            parse_frame(m, "usdt_futures")
            good.append(m)
        except MalformedMessage:
            bad.append(m)
    assert len(bad) == len(good) == 20  # each frame follows its garbage
    kinds = {"binary" if isinstance(m, bytes) else "html" if m.startswith("<html>") else "truncated" for m in bad}
    assert kinds == {"binary", "html", "truncated"}
    truncated = [m for m in bad if isinstance(m, str) and m.startswith("{")]
    assert all(any(isinstance(g, str) and g.startswith(t) for g in good) for t in truncated)


async def test_error_sends_binance_error_payloads() -> None:
    async with faulty_stream("error=1") as (_, ws):
        received = await messages(ws, 20)
    codes = set()
    for m in received[::2]:
        with pytest.raises(BinanceError) as caught:
            parse_frame(m, "usdt_futures")
        codes.add(caught.value.code)
    assert codes == {2, -1003}
    for m in received[1::2]:
        assert json.loads(m)["data"]["e"] == "kline"


async def test_dup_repeats_closed_candles() -> None:
    async with faulty_stream("dup=1") as (_, ws):
        received = await messages(ws, 60)
    closed = [m for m in received if parse_frame(m, "usdt_futures") is not None]
    assert len(closed) >= 4
    for i, m in enumerate(received[:-1]):
        if m in closed and (i == 0 or received[i - 1] != m):
            assert received[i + 1] == m, "a closed candle comes twice in a row"
    opens = [m for m in received if m not in closed]
    assert len(opens) == len(set(opens)), "open updates are not repeated"


async def test_reorder_delivers_frames_out_of_order() -> None:
    async with open_exchange(seed=1, speed=FAST, start=T0, faults="reorder=0.3") as ex:
        url = ex.endpoints["spot"]["ws"] + "/ws/btcusdt@kline_1m"
        async with open_websocket_url(url, disconnect_timeout=1) as ws:
            times = [json.loads(m)["E"] for m in await messages(ws, 60)]
    # One stream's event times only ever grow, so each swap shows as one step back…
    back = [i for i in range(len(times) - 1) if times[i + 1] < times[i]]
    assert back
    for i in back:  # …between two neighbours: nothing is lost or moved further
        assert i == 0 or times[i - 1] < times[i + 1]
        assert i + 2 >= len(times) or times[i] < times[i + 2]


def _by_closed_candle(received: list[str | bytes]) -> dict[tuple[str, int], tuple[tuple[str | bytes, ...], int]]:
    """For each closed candle: the noise just before it and how often it came."""
    out: dict[tuple[str, int], tuple[tuple[str | bytes, ...], int]] = {}
    noise: list[str | bytes] = []
    last = ("", 0)
    for m in received:
        try:
            data = json.loads(m)["data"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            noise.append(m)
            continue
        if data["k"]["x"]:
            key = (data["s"], data["k"]["t"])
            before, count = out.get(key, (tuple(noise), 0))
            out[key] = (before, count + 1)
            last = key
        noise = []
    out.pop(last)  # its repeat may have been cut off by the end of the capture
    return out


async def test_faults_are_seeded() -> None:
    async def run() -> dict[tuple[str, int], tuple[tuple[str | bytes, ...], int]]:
        async with faulty_stream("garbage=0.3,error=0.3,dup=0.5", seed=4) as (_, ws):
            return _by_closed_candle(await messages(ws, 150))

    # Open updates depend on timing; the closed candles and the faults that hit them do not.
    first, second = await run(), await run()
    common = set(first) & set(second)
    assert len(common) >= 6
    assert {k: first[k] for k in common} == {k: second[k] for k in common}
    assert any(count == 2 for _, count in first.values()) and any(noise for noise, _ in first.values())


async def test_outage_and_cutoff_combine_with_other_faults() -> None:
    # outage and cutoff on their own are observed in test_exchange_ws.
    async with faulty_stream(f"cutoff=300,outage={T0}-{T0 + 120_000},dup=0.5") as (_, ws):
        first = json.loads(await ws.get_message())
        assert first["data"]["k"]["t"] >= T0 + 120_000
        with trio.fail_after(5):
            closed = await read_until_closed(ws)
    assert closed.reason.code == 1000


async def klines_outcome(ex: FakeExchange, client: httpx.AsyncClient) -> int | str:
    """The status of one spot klines call, or ``"garbled"`` when httpx cannot decode its body."""
    m = ex.markets["spot"]
    try:
        response = await client.get(m.rest_url + m.klines_path, params={"symbol": "BTCUSDT", "interval": "1m"})
    except httpx.DecodingError:
        return "garbled"
    return response.status_code


async def test_rest_bad_gzip_marks_klines_gzip_without_compressing_them() -> None:
    assert str(parse_faults("rest_bad_gzip=0.25")) == "rest_bad_gzip=0.25"
    async with open_exchange(seed=1, speed=FAST, start=T0, faults="rest_bad_gzip=1") as ex, httpx.AsyncClient() as c:
        m = ex.markets["spot"]
        params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 3}
        async with c.stream("GET", m.rest_url + m.klines_path, params=params) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
        assert len(parse_rest_klines(raw, "spot", "BTCUSDT", "1m")) == 3  # the right rows, never compressed
        assert await klines_outcome(ex, c) == "garbled"
        time_answer = await c.get(m.rest_url + m.time_path)  # klines only
        assert time_answer.status_code == 200 and "content-encoding" not in time_answer.headers
        assert ex.rest.stats["fault_rest_bad_gzip"] == 2


async def test_rest_bad_gzip_with_a_probability_is_seeded() -> None:
    runs = []
    for _ in range(2):
        async with open_exchange(seed=1, start=T0, faults="rest_bad_gzip=0.5") as ex, httpx.AsyncClient() as c:
            runs.append([await klines_outcome(ex, c) for _ in range(40)])
    assert runs[0] == runs[1]  # the same seed garbles the same requests
    assert 8 < runs[0].count("garbled") < 32 and set(runs[0]) == {"garbled", 200}


async def klines_times(ex: FakeExchange, client: httpx.AsyncClient, start: int, end: int) -> list[int]:
    m = ex.markets["spot"]
    params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": start, "endTime": end, "limit": 1000}
    response = await client.get(m.rest_url + m.klines_path, params=params)
    assert response.status_code == 200
    return [row[0] for row in response.json()]


async def test_rest_empty_answers_a_page_that_has_candles_with_an_empty_list() -> None:
    assert str(parse_faults("rest_empty=0.25,rest_short=0.5")) == "rest_empty=0.25,rest_short=0.5"
    async with open_exchange(seed=1, start=T0 + 86_400_000, faults="rest_empty=1") as ex, httpx.AsyncClient() as c:
        assert await klines_times(ex, c, T0, T0 + 9 * 60_000) == []
        m = ex.markets["spot"]
        assert (await c.get(m.rest_url + m.time_path)).status_code == 200  # klines only
        assert ex.rest.stats["fault_rest_empty"] == 1


async def test_rest_short_answers_a_page_lacking_its_first_rows() -> None:
    async with open_exchange(seed=1, start=T0 + 86_400_000, faults="rest_short=1") as ex, httpx.AsyncClient() as c:
        pages = [await klines_times(ex, c, T0, T0 + 9 * 60_000) for _ in range(20)]
    every = [T0 + i * 60_000 for i in range(10)]
    assert all(1 <= len(p) < 10 and p == every[-len(p) :] for p in pages)  # the tail survives, never empty
    assert len({len(p) for p in pages}) > 3  # how many rows are lacking varies
    assert ex.rest.stats["fault_rest_short"] == 20


async def test_rest_empty_and_short_hit_a_window_and_repeat_of_it_whatever_the_order() -> None:
    # Decided per (window, repeat), not per request serial: concurrent clients get the same pages faulted.
    windows = [(T0 + i * 600_000, T0 + i * 600_000 + 540_000) for i in range(20)]
    runs = []
    for order in (windows, windows[::-1]):
        async with open_exchange(seed=1, start=T0 + 86_400_000, faults="rest_empty=0.3,rest_short=0.3") as ex, \
                httpx.AsyncClient() as c:  # fmt: skip
            got = {w: [len(await klines_times(ex, c, *w)) for _ in range(2)] for w in order}
            runs.append(got)
    assert runs[0] == runs[1]
    counts = [n for pair in runs[0].values() for n in pair]
    assert 0 in counts and 10 in counts and any(0 < n < 10 for n in counts)
