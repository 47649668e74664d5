"""The backfiller against a scripted REST endpoint: exact ranges, exchange gaps, retries, no loops."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from trio_klines.core.markets import Series, iter_open_times
from trio_klines.core.parse import Candle
from trio_klines.net.rest import RestClient
from trio_klines.pipeline.backfill import Backfiller
from trio_klines.store.ledger import ExchangeGapLedger

from fakes import FakeBinance, rest_client

pytestmark = pytest.mark.timeout(10)
NOW = 1_700_000_010_000  # 10 s into a minute
BTC = Series("usdt_futures", "BTCUSDT", "1m")
MIN = 60_000


def drain(receive: trio.MemoryReceiveChannel[Sequence[Candle]]) -> list[int]:
    out = []
    while True:
        try:
            out += [c.open_time for c in receive.receive_nowait()]
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


async def run_backfill(
    tmp_path: Path, fake: FakeBinance, requests: list[tuple[Series, int, int | None]], **kw: float
) -> tuple[list[int], Backfiller]:
    send, receive = trio.open_memory_channel[Sequence[Candle]](10_000)
    backfiller = Backfiller({fake.market: rest_client(fake)}, send, ExchangeGapLedger(tmp_path), **kw)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backfiller.run)
        for s, start, end in requests:
            backfiller.request(s, start, end)
        await backfiller.wait_idle()
        nursery.cancel_scope.cancel()
    return drain(receive), backfiller


async def test_fetches_exactly_the_closed_candles_of_the_range(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeBinance("usdt_futures", NOW)
    start = NOW - 2500 * MIN
    got, bf = await run_backfill(tmp_path, fake, [(BTC, start, None)])
    last_closed = NOW - NOW % MIN  # the candle opening here is still open
    assert got == list(iter_open_times("1m", start, last_closed))
    assert bf.stats.pages == 3
    assert bf.stats.exchange_gaps == 0


async def test_overlapping_requests_fetch_once(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance("usdt_futures", NOW)
    base = NOW - NOW % MIN - 100 * MIN
    got, _ = await run_backfill(tmp_path, fake, [(BTC, base, base + 50 * MIN), (BTC, base + 20 * MIN, base + 80 * MIN)])
    assert sorted(got) == list(iter_open_times("1m", base, base + 80 * MIN))
    assert len(got) == len(set(got))


async def test_an_empty_range_becomes_an_exchange_gap_and_is_not_asked_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = NOW - NOW % MIN - 100 * MIN
    outage = (base + 10 * MIN, base + 25 * MIN)
    fake = FakeBinance("usdt_futures", NOW, outage=outage)
    got, bf = await run_backfill(tmp_path, fake, [(BTC, base, base + 50 * MIN)])
    assert got == [t for t in iter_open_times("1m", base, base + 50 * MIN) if not outage[0] <= t < outage[1]]
    assert list(bf.ledger.ranges(BTC)) == [outage]
    assert bf.stats.exchange_gap_candles == 15
    # A later run reads the ledger from disk and skips the outage entirely.
    calls_before = len(fake.calls)
    got2, bf2 = await run_backfill(tmp_path, fake, [(BTC, outage[0], outage[1])])
    assert got2 == []
    assert [p for _, p in fake.calls[calls_before:] if "symbol" in p] == []
    assert list(bf2.ledger.ranges(BTC)) == [outage]


async def test_a_failing_range_is_retried_later(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance("spot", NOW)
    fake.script += [(503, {}, {})] * 12  # more than the client's retries
    s = Series("spot", "BTCUSDT", "1m")
    base = NOW - NOW % MIN - 30 * MIN
    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    backfiller = Backfiller({"spot": rest_client(fake, retries=3)}, send, ExchangeGapLedger(tmp_path), retry_delay=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backfiller.run)
        backfiller.request(s, base, base + 30 * MIN)
        await trio.sleep(120)
        nursery.cancel_scope.cancel()
    assert drain(receive) == list(iter_open_times("1m", base, base + 30 * MIN))
    assert backfiller.stats.failures >= 1


async def test_an_unknown_symbol_is_logged_not_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBinance("usdt_futures", NOW)
    fake.script.append((400, {}, {"code": -1121, "msg": "Invalid symbol."}))
    got, bf = await run_backfill(tmp_path, fake, [(Series("usdt_futures", "NOPE", "1m"), NOW - 10 * MIN, None)])
    assert got == []
    assert bf.stats.failures == 1
    assert "Invalid symbol" in caplog.text


async def test_the_backfiller_writes_the_ledger_in_a_worker_thread(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = NOW - NOW % MIN - 100 * MIN
    outage = (base + 10 * MIN, base + 25 * MIN)
    writers: list[threading.Thread] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        writers.append(threading.current_thread())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fake = FakeBinance("usdt_futures", NOW, outage=outage)
    _, bf = await run_backfill(tmp_path, fake, [(BTC, base, base + 50 * MIN)])
    assert writers and threading.main_thread() not in writers  # fsync never on the event loop
    assert not bf.ledger.dirty
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [outage]


async def test_a_range_failing_with_an_undecodable_body_is_counted_and_retried_later(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBinance("spot", NOW)
    garbled = [True] * 12  # more than the client's retries
    s = Series("spot", "BTCUSDT", "1m")
    base = NOW - NOW % MIN - 30 * MIN

    def sometimes_garbled(request: httpx.Request) -> httpx.Response:
        if "symbol" in request.url.params and garbled and garbled.pop():
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"[[not gzip")
        return fake(request)

    client = rest_client(fake, retries=3)
    client.http = httpx.AsyncClient(transport=httpx.MockTransport(sometimes_garbled))
    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    backfiller = Backfiller({"spot": client}, send, ExchangeGapLedger(tmp_path), retry_delay=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backfiller.run)  # an escaping httpx.DecodingError would end this nursery
        backfiller.request(s, base, base + 30 * MIN)
        await trio.sleep(120)
        nursery.cancel_scope.cancel()
    assert drain(receive) == list(iter_open_times("1m", base, base + 30 * MIN))
    assert backfiller.stats.failures == 3 and backfiller.rest_stats()["spot"].gave_up == 3
    assert "DecodingError" in caplog.text and "retrying in 5s" in caplog.text


# --- exchange gaps are confirmed before they are trusted (issue 13, item 1) ----------------------


def with_transport(fake: FakeBinance, handler: Callable[[httpx.Request], httpx.Response]) -> RestClient:
    client = rest_client(fake)
    client.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return client


async def run_with(tmp_path: Path, client: RestClient, requests: list[tuple[Series, int, int | None]],
                   **kw: float) -> tuple[list[int], Backfiller]:  # fmt: skip
    send, receive = trio.open_memory_channel[Sequence[Candle]](10_000)
    backfiller = Backfiller({client.market.name: client}, send, ExchangeGapLedger(tmp_path), **kw)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backfiller.run)
        for s, start, end in requests:
            backfiller.request(s, start, end)
        await backfiller.wait_idle()
        nursery.cancel_scope.cancel()
    return drain(receive), backfiller


def is_klines(request: httpx.Request) -> bool:
    return "symbol" in request.url.params


async def test_a_transient_empty_page_is_fetched_again_not_an_exchange_gap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeBinance("usdt_futures", NOW)
    fake.script.append((200, {}, []))  # the first page answers 200 [] although the exchange has its candles
    start = NOW - NOW % MIN - 2500 * MIN
    got, bf = await run_backfill(tmp_path, fake, [(BTC, start, None)])
    assert sorted(got) == list(iter_open_times("1m", start, NOW - NOW % MIN))
    assert bf.ledger.all() == {} and bf.ledger.all_suspected() == {}
    assert (bf.stats.suspected, bf.stats.recovered, bf.stats.exchange_gaps) == (1, 1000, 0)
    assert ExchangeGapLedger(tmp_path).all() == {}


async def test_a_page_lacking_its_first_rows_is_fetched_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeBinance("spot", NOW)
    short = [3]  # the first klines answer lacks its first 3 rows

    def handler(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        if is_klines(request) and short:
            return httpx.Response(200, content=json.dumps(json.loads(response.content)[short.pop() :]))
        return response

    s = Series("spot", "BTCUSDT", "1m")
    base = NOW - NOW % MIN - 40 * MIN
    got, bf = await run_with(tmp_path, with_transport(fake, handler), [(s, base, base + 30 * MIN)])
    assert sorted(got) == list(iter_open_times("1m", base, base + 30 * MIN))
    assert bf.ledger.all() == {} and bf.ledger.all_suspected() == {}
    assert bf.stats.recovered == 3


async def test_an_exchange_gap_is_only_suspected_until_a_later_check_confirms_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = NOW - NOW % MIN - 100 * MIN
    outage = (base + 10 * MIN, base + 25 * MIN)
    fake = FakeBinance("usdt_futures", NOW, outage=outage)
    send, _receive = trio.open_memory_channel[Sequence[Candle]](10_000)
    bf = Backfiller({"usdt_futures": rest_client(fake)}, send, ExchangeGapLedger(tmp_path), confirm_delay=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bf.run)
        bf.request(BTC, base, base + 50 * MIN)
        await trio.sleep(4)  # the range is fetched; its check is not due yet: the run stops here
        nursery.cancel_scope.cancel()
    assert list(bf.ledger.ranges(BTC)) == [] and list(bf.ledger.suspected(BTC)) == [outage]
    on_disk = ExchangeGapLedger(tmp_path)  # what `status` reads: missing, not an exchange gap
    assert on_disk.all() == {} and list(on_disk.suspected(BTC)) == [outage]

    # The next run asks for the hole again (it is missing) and checks it 5 s later: confirmed.
    calls = len(fake.calls)
    t0 = trio.current_time()
    got, bf2 = await run_backfill(tmp_path, fake, [(BTC, outage[0], outage[1])], confirm_delay=5)
    assert got == [] and list(bf2.ledger.ranges(BTC)) == [outage] and bf2.ledger.all_suspected() == {}
    checks = [t for t, p in fake.calls[calls:] if p.get("startTime") == str(outage[0] - MIN)]
    assert len(checks) == 1 and checks[0] - t0 >= 5  # asked again, with the candle on each side, 5 s later
    assert (bf2.stats.exchange_gaps, bf2.stats.exchange_gap_candles, bf2.stats.checks) == (1, 15, 1)
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [outage]


async def test_an_exchange_that_answers_every_page_empty_never_confirms_a_gap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBinance("usdt_futures", NOW)

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[]") if is_klines(request) else fake(request)

    base = NOW - NOW % MIN - 100 * MIN
    got, bf = await run_with(tmp_path, with_transport(fake, empty), [(BTC, base, base + 50 * MIN)], max_checks=3)
    assert got == [] and bf.ledger.all() == {}
    assert list(bf.ledger.suspected(BTC)) == [(base, base + 50 * MIN)]  # still missing for `status`
    assert bf.stats.checks == 3 and bf.stats.failures == 1
    assert "giving up" in caplog.text


async def test_the_range_before_a_listing_is_confirmed_after_two_checks(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = NOW - NOW % MIN - 100 * MIN
    listing = base + 20 * MIN
    fake = FakeBinance("usdt_futures", NOW, outage=(0, listing))  # nothing before its listing
    got, bf = await run_backfill(tmp_path, fake, [(BTC, base, base + 50 * MIN)])
    assert got == list(iter_open_times("1m", listing, base + 50 * MIN))
    assert list(bf.ledger.ranges(BTC)) == [(base, listing)] and bf.stats.checks == 2


async def test_a_check_that_finds_candles_on_one_side_only_is_not_a_confirmation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The first answer lacks minutes 10-14; the check's answer is short too: it lacks the candle before the
    # range and the range, as the head of a series' history would. One such answer proves nothing: the next
    # check gets the full answer.
    fake = FakeBinance("spot", NOW)
    base = NOW - NOW % MIN - 40 * MIN
    answers = iter([lambda rows: rows[:10] + rows[15:], lambda rows: rows[-1:]])

    def handler(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        alter = next(answers, None) if is_klines(request) else None
        rows = json.loads(response.content) if alter is not None else None
        return response if alter is None else httpx.Response(200, content=json.dumps(alter(rows)))

    s = Series("spot", "BTCUSDT", "1m")
    got, bf = await run_with(tmp_path, with_transport(fake, handler), [(s, base, base + 30 * MIN)])
    assert sorted(got) == list(iter_open_times("1m", base, base + 30 * MIN))
    assert bf.ledger.all() == {} and bf.stats.checks == 2


async def test_a_ledger_of_the_first_release_is_checked_once_then_trusted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = NOW - NOW % MIN - 100 * MIN
    outage = (base + 10 * MIN, base + 25 * MIN)
    wrong = (base + 40 * MIN, base + 45 * MIN)  # the exchange has these: a transient fault written for good
    path = tmp_path / "_meta" / "exchange_gaps.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"usdt_futures/1m/BTCUSDT": [list(outage), list(wrong)]}), encoding="utf-8")
    fake = FakeBinance("usdt_futures", NOW, outage=outage)
    got, bf = await run_backfill(tmp_path, fake, [(BTC, base, base + 50 * MIN)])
    assert got == [t for t in iter_open_times("1m", base, base + 50 * MIN) if not outage[0] <= t < outage[1]]
    assert list(bf.ledger.ranges(BTC)) == [outage] and bf.ledger.all_suspected() == {}
    assert json.loads(path.read_text(encoding="utf-8"))["format"] == 2
    # Checked once: the next run trusts it and asks for nothing.
    calls = len(fake.calls)
    got2, _ = await run_backfill(tmp_path, fake, [(BTC, outage[0], outage[1])])
    assert got2 == [] and [p for _, p in fake.calls[calls:] if "symbol" in p] == []


# --- REST's clock behind the WebSocket (item 10) ------------------------------------------------


async def test_a_tail_past_the_rest_clock_is_asked_again_in_the_same_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The WebSocket reported a gap up to `end`; REST's /time (and data) lag 3 minutes behind it.
    end = NOW - NOW % MIN
    fake = FakeBinance("usdt_futures", NOW - 3 * MIN)

    async def rest_catches_up() -> None:
        await trio.sleep(3)
        fake.now = NOW

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rest_catches_up)
        got, bf = await run_backfill(tmp_path, fake, [(BTC, end - 30 * MIN, end)])
    assert sorted(got) == list(iter_open_times("1m", end - 30 * MIN, end))
    assert bf.stats.deferred >= 1 and bf.stats.failures == 0


async def test_an_end_far_past_the_exchange_clock_is_not_waited_for(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    start = NOW - NOW % MIN - 10 * MIN
    got, bf = await run_backfill(tmp_path, FakeBinance("usdt_futures", NOW), [(BTC, start, NOW + 86_400_000)])
    assert got == list(iter_open_times("1m", start, NOW - NOW % MIN))  # only closed candles exist
    assert bf.stats.deferred == 0 and trio.current_time() < 1


# --- a 400 -1000 is retried in the same run (item 10) -------------------------------------------


async def test_a_400_unknown_error_is_retried_in_the_same_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeBinance("spot", NOW)
    fake.script += [(400, {}, {"code": -1000, "msg": "An unknown error occurred while processing the request."})] * 6
    s = Series("spot", "BTCUSDT", "1m")
    base = NOW - NOW % MIN - 30 * MIN
    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    backfiller = Backfiller({"spot": rest_client(fake, retries=3)}, send, ExchangeGapLedger(tmp_path), retry_delay=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backfiller.run)
        backfiller.request(s, base, base + 30 * MIN)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert drain(receive) == list(iter_open_times("1m", base, base + 30 * MIN))
    assert backfiller.stats.failures == 1 and backfiller.rest_stats()["spot"].gave_up == 1


async def test_an_exchange_gap_split_between_two_requests_is_confirmed_whole(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Found by the chaos suite: a live gap and the catch-up cut one outage in two suspected parts; the first
    # part's check asked for the candle after it, which lies in the second part and never comes.
    base = NOW - NOW % MIN - 100 * MIN
    outage = (base + 10 * MIN, base + 25 * MIN)
    fake = FakeBinance("usdt_futures", NOW, outage=outage)
    requests = [(BTC, base, base + 20 * MIN), (BTC, base + 20 * MIN, base + 50 * MIN)]
    got, bf = await run_backfill(tmp_path, fake, requests, confirm_delay=5)
    assert list(bf.ledger.ranges(BTC)) == [outage] and bf.ledger.all_suspected() == {}
    assert bf.stats.failures == 0 and bf.stats.exchange_gap_candles == 15
    assert len(got) == 50 - 15
