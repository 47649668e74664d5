"""History from the fake exchange's data archive: months, days and a REST tail make one exact record; faults
are retried, reported and never stored; a file's missing candles are exchange gaps only once REST confirms;
values are the same whatever the source."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import trio

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import Series, interval_ms
from trio_klines.pipeline.history import HistoryProgress, download
from trio_klines.recorder import Recorder
from trio_klines.store.dataset import load, scan
from trio_klines.store.ledger import ExchangeGapLedger
from trio_klines.store.status import store_status
from trio_klines.store.tables import COLUMNS
from trio_klines.testing.server import FakeExchange, open_exchange

pytestmark = pytest.mark.timeout(120)
MIN = 60_000
SEED = 5


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


#: Exchange time: 2025-03-03 12:00. January and February are monthly files, March 1st a daily one; March 2nd
#: is not published yet (a day's lag), so it and the 12 hours of March 3rd come over REST.
NOW = ms("2025-03-03T12:00:00")
SINCE = ms("2025-01-01T00:00:00")
UNTIL = ms("2025-03-03T06:00:00")
SERIES = [Series("spot", "BTCUSDT", "1m"), Series("usdt_futures", "ETHUSDT", "1h"),
          Series("coin_futures", "BTCUSD_PERP", "15m")]  # fmt: skip
STREAMS = [f"{s.market}:{s.interval}:{s.symbol}" for s in SERIES]


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, polled: the recorder's archive import starts inside a task of its own."""
    while not condition():  # noqa: ASYNC110 - nothing to wait on before the import exists
        await trio.sleep(0.01)


def assert_exact(ex: FakeExchange, data: Path, series: list[Series], since: int, until: int) -> None:
    for s in series:
        frame = load(data, s.market, s.symbol, s.interval)
        truth = ex.ground_truth(s.market, s.symbol, s.interval, since, until)
        opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
        assert opens == [c.open_time for c in truth], s
        for name in COLUMNS[1:]:
            attribute = {"trade_num": "trade_num"}.get(name, name)
            assert frame[name].tolist() == [getattr(c, attribute) for c in truth], (s, name)


async def test_auto_takes_months_then_days_then_rest_and_stores_the_ground_truth(tmp_path: Path) -> None:
    outage = (ms("2025-02-10T03:00:00"), ms("2025-02-10T04:30:00"))  # inside a monthly file: an exchange gap
    async with open_exchange(seed=SEED, start=NOW, faults=f"outage={outage[0]}-{outage[1]}") as ex:
        config = RecorderConfig.build(streams=STREAMS, endpoints=ex.endpoints, data_dir=tmp_path)
        reports: list[HistoryProgress] = []
        with trio.fail_after(90):
            done = await download(config, SINCE, UNTIL, on_progress=reports.append)
        assert_exact(ex, tmp_path, SERIES, SINCE, UNTIL)
        archive, rest = done.archive, done.rest
        assert archive is not None
        # Two monthly files and March 1st's daily file per series; March 2nd's is tried (404, not published).
        assert (archive.files_stored, archive.missing, archive.failed) == (9, 0, 0)
        assert archive.candles > 40 * rest.candles > 0 and rest.failures == 0
        assert ex.stats["archive_404"] == 3  # the three March 2nd files (their .CHECKSUMs)
        # The outage's candles are missing from February's files: suspected, then confirmed over REST.
        ledger = ExchangeGapLedger(tmp_path)
        for s in SERIES:  # from the outage's start to the first candle opening after it
            length = interval_ms(s.interval)
            assert list(ledger.ranges(s)) == [(outage[0], -(-outage[1] // length) * length)], s
        assert ledger.all_suspected() == {}
        assert rest.exchange_gaps == 3 and archive.suspected == 3
        status = {row.series: row for row in store_status(tmp_path)}
        assert all(status[s].missing == 0 for s in SERIES)
        last = reports[-1]
        assert (last.files, last.total_files) == (12, 12) and last.total_candles >= last.candles > 0

        # Resumable and idempotent: nothing stored is fetched again.
        with trio.fail_after(60):
            again = await download(config, SINCE, UNTIL)
        assert again.archive is not None and (again.archive.files_total, again.rest.pages) == (0, 0)


async def test_values_are_equal_whatever_the_source(tmp_path: Path) -> None:
    since, until = ms("2025-01-30T00:00:00"), ms("2025-02-02T00:00:00")  # a month's end and three daily files
    series = [Series("spot", "BTCUSDT", "1m"), Series("usdt_futures", "BTCUSDT", "5m")]
    streams = [f"{s.market}:{s.interval}:{s.symbol}" for s in series]
    async with open_exchange(seed=SEED, start=NOW) as ex:
        tables = {}
        for source in ("archive", "rest"):
            config = RecorderConfig.build(streams=streams, endpoints=ex.endpoints, data_dir=tmp_path / source)
            with trio.fail_after(60):
                done = await download(config, since, until, source=source)  # type: ignore[arg-type]
            assert (done.archive is None) == (source == "rest")
            root = tmp_path / source
            tables[source] = {
                s: scan(root, market=s.market, symbol=s.symbol, interval=s.interval).read_all() for s in series
            }
        assert tables["archive"]["spot", "BTCUSDT", "1m"].num_rows == 3 * 1440
        for s in series:
            assert tables["archive"][s].equals(tables["rest"][s]), s
        assert_exact(ex, tmp_path / "archive", series, since, until)


@pytest.mark.parametrize(
    ("faults", "failed", "missing"),
    [
        ("archive_bad_checksum=1", 6, 0),  # every try fails: two months (then their days) and the days after
        ("archive_truncated=0.5", None, 0),
        ("archive_missing_days=3", 0, 2),  # 404s for March 8-10, which should exist; 8 and 9 are wanted: reported
        ("archive_slow=0.05", 0, 0),
    ],
)
async def test_faulty_files_are_retried_reported_and_never_stored(
    tmp_path: Path, faults: str, failed: int | None, missing: int
) -> None:
    now = ms("2025-03-12T12:00:00")
    since, until = ms("2025-01-25T00:00:00"), ms("2025-03-10T00:00:00")
    s = Series("usdt_futures", "ETHUSDT", "1h")
    async with open_exchange(seed=SEED, start=now, faults=faults) as ex:
        config = RecorderConfig.build(streams=["usdt_futures:1h:ETHUSDT"], endpoints=ex.endpoints, data_dir=tmp_path)
        with trio.fail_after(100):
            done = await download(config, since, until, archive_retry_delay=0.01)
        assert_exact(ex, tmp_path, [s], since, until)
        assert done.archive is not None and done.rest.failures == 0
        if failed is not None:
            assert done.archive.failed >= failed if failed else done.archive.failed == 0
        assert done.archive.missing == missing
        if "bad_checksum=1" in faults:
            assert done.archive.files_stored == 0 and ex.stats["fault_archive_bad_checksum"] > 0
        if "truncated" in faults:
            assert ex.stats["fault_archive_truncated"] > 0 and done.archive.retries > 0
    ledger = ExchangeGapLedger(tmp_path)
    assert not list(ledger.ranges(s)) and ledger.all_suspected() == {}


async def test_archive_only_leaves_the_unpublished_tail_missing_and_says_so(tmp_path: Path) -> None:
    async with open_exchange(seed=SEED, start=NOW) as ex:
        config = RecorderConfig.build(streams=["spot:1h:BTCUSDT"], endpoints=ex.endpoints, data_dir=tmp_path)
        with trio.fail_after(60):
            done = await download(config, ms("2025-02-27T00:00:00"), UNTIL, source="archive")
        assert done.archive is not None and done.archive.not_fetched >= 1 and done.rest.pages == 0
        frame = load(tmp_path, "spot", "BTCUSDT", "1h")
        assert int(frame["candle_begin_time"].iloc[-1].value // 10**6) == ms("2025-03-01T23:00:00")


async def test_record_since_catches_up_from_the_archive(tmp_path: Path) -> None:
    since = ms("2025-02-26T00:00:00")
    async with open_exchange(seed=SEED, start=NOW, speed=60) as ex:
        config = RecorderConfig.build(streams=["usdt_futures:5m:BTCUSDT"], endpoints=ex.endpoints, data_dir=tmp_path,
                                      since=since, history_source="auto")  # fmt: skip
        with trio.fail_after(60):
            async with Recorder(config) as recorder:
                await wait_until(lambda: recorder.archive is not None and recorder.archive.done.is_set())
                assert recorder.backfiller is not None and recorder.archive is not None
                await recorder.backfiller.wait_idle()
                stats = recorder.archive.stats
        assert stats.files_stored == 4 and stats.failed == 0  # Feb 26-28 and March 1st from daily files
        frame = load(tmp_path, "usdt_futures", "BTCUSDT", "5m")
        truth = ex.ground_truth("usdt_futures", "BTCUSDT", "5m", since, ms("2025-03-03T00:00:00"))
        assert frame["close"].tolist()[: len(truth)] == [c.close for c in truth]
        assert pa.array(frame["candle_begin_time"]).is_valid().to_pylist().count(True) >= len(truth)


async def test_a_hole_the_probe_finds_empty_is_checked_not_skipped(tmp_path: Path) -> None:
    # The store ends where an outage begins, the evening before the day it ends: REST's first candle of the
    # missing range is on the next day, so that day's file is the first fetched and the evening is "before the
    # first candle". It must be confirmed as an exchange gap, not left a silent hole.
    outage = (ms("2025-02-09T22:00:00"), ms("2025-02-10T03:00:00"))
    since, until = ms("2025-02-09T00:00:00"), ms("2025-02-12T00:00:00")
    s = Series("spot", "ETHUSDT", "5m")
    async with open_exchange(seed=SEED, start=NOW, faults=f"outage={outage[0]}-{outage[1]}") as ex:
        config = RecorderConfig.build(streams=["spot:5m:ETHUSDT"], endpoints=ex.endpoints, data_dir=tmp_path)
        with trio.fail_after(60):
            await download(config, since, outage[0], source="rest")
            done = await download(config, since, until)
        assert done.archive is not None and done.archive.suspected >= 1
        assert_exact(ex, tmp_path, [s], since, until)
    ledger = ExchangeGapLedger(tmp_path)
    assert list(ledger.ranges(s)) == [outage] and ledger.all_suspected() == {}
    status = {row.series: row for row in store_status(tmp_path)}
    assert (status[s].missing, status[s].exchange_gaps) == (0, 60)
