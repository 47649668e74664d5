"""The backfiller against a scripted REST endpoint: exact ranges, exchange gaps, retries, no loops."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from trio_klines.core.markets import Series, iter_open_times
from trio_klines.core.parse import Candle
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


def test_ledger_survives_a_damaged_file(tmp_path: Path) -> None:
    ledger = ExchangeGapLedger(tmp_path)
    ledger.add(BTC, 0, MIN)
    ledger.add(BTC, MIN, 2 * MIN)
    assert ledger.save()
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [(0, 2 * MIN)]
    ledger.path.write_text("{not json", encoding="utf-8")
    assert ExchangeGapLedger(tmp_path).all() == {}


def test_ledger_survives_a_full_disk_and_writes_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    import errno
    import os

    ledger = ExchangeGapLedger(tmp_path)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    ledger.add(BTC, 0, 2 * MIN)
    assert not ledger.save()  # never raises: the backfill goes on
    assert "No space left on device" in caplog.text
    assert list(ledger.ranges(BTC)) == [(0, 2 * MIN)]  # still known in memory
    assert not ledger.path.exists() and not list(ledger.path.parent.iterdir())  # no temporary file left
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert ledger.save()
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [(0, 2 * MIN)]


def test_adding_to_the_ledger_does_no_file_work(tmp_path: Path) -> None:
    ledger = ExchangeGapLedger(tmp_path)
    ledger.add(BTC, 0, MIN)
    assert ledger.dirty and not ledger.path.exists()
    snapshot = ledger.snapshot()
    assert snapshot is not None
    ledger.add(BTC, 5 * MIN, 6 * MIN)  # added while the snapshot is being written: still to write
    assert ledger.write(snapshot) and ledger.dirty
    assert ledger.save() and not ledger.dirty and ledger.snapshot() is None
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [(0, MIN), (5 * MIN, 6 * MIN)]


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
