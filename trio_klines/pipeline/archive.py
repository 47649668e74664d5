"""History from Binance's data archive: monthly and daily zip files, checked, stored in bulk.

An :class:`ArchiveImporter` takes the ranges a store lacks (the same plan the REST backfill takes) and,
per series, fetches what the archive has published — whole months from monthly files, then days from
daily files (:func:`~trio_klines.core.archive.plan_sources`) — leaving the still-unpublished tail to the
:class:`~trio_klines.pipeline.backfill.Backfiller` (REST), so that archive, REST and live make one record.

Each file is downloaded with its ``.CHECKSUM`` (:mod:`trio_klines.net.archive`: streamed, hashed, bounded
memory), unzipped and parsed in a worker thread (:func:`~trio_klines.store.archive_csv.read_archive_zip`:
vectorised, CRC-checked, every row checked), cut to the wanted ranges and stored as one table
(:meth:`~trio_klines.store.dataset.Store.append_table`): no :class:`~trio_klines.core.parse.Candle` object
is made. Several files are fetched at once (``workers``); parsing runs in at most ``parsers`` threads.

What can go wrong with a file, and what happens:

- **not there** (404) and its period ended less than ``expected_lag`` ago: not published yet. A month
  is taken from its daily files instead; a day's candles come over REST.
- **not there although it should be** (its period ended longer ago): a month is taken from its days; a
  day is asked again (``attempts`` in all, ``retry_delay`` doubling), then *reported* (an error line,
  counted in ``missing``) and its candles come over REST, which also confirms an exchange gap.
- **broken**: a checksum mismatch, a truncated or corrupt zip, a row that is not a candle. Fetched again
  up to ``attempts`` times, then reported (counted in ``failed``); a month's days then come from daily
  files, a day's candles over REST. Nothing of a broken file is ever stored.
- **candles missing inside a file**: each run is a *suspected* exchange gap, checked over REST by the
  backfiller (:meth:`~trio_klines.pipeline.backfill.Backfiller.suspect`) and confirmed by the same rule as a
  page's absence. An archive file alone never makes an exchange gap.

With ``rest=False`` (``--source archive``) nothing is fetched over REST but the checks of suspected gaps
and the probe below: what the archive cannot give is counted in ``not_fetched`` and left missing.

Before planning a series whose plan holds files, one REST request (asked twice, the earlier answer kept:
a transient short page cannot move it later) finds its first candle in the range: no file is fetched
for the years before a symbol was listed (the archive would answer 404 for each). What lies before that
candle is checked over REST as a suspected exchange gap (the head of a listing, or an outage the store
lacks), never taken as empty on the probe's word. Not on COIN-M, whose
klines answer the candles nearest the window's end: there every file is tried.

Resumable: the plan comes from what the store lacks, so what a run stored is not fetched again; a file
that covers stored and missing candles is fetched and only its missing candles are stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import httpx
import pyarrow as pa
import trio

from ..core.archive import ArchiveFile, FileJob, archive_file, plan_sources
from ..core.markets import Market, Series, count_open_times, floor_open_time
from ..core.timefmt import iso_ms, iso_range
from ..errors import ArchiveError, KlinesError, MalformedMessage, StoreError
from ..net.archive import ArchiveClient, Downloaded
from ..net.rest import RestClient
from ..store.archive_csv import read_archive_zip, select_wanted
from ..store.tables import schema_for
from .backfill import Backfiller
from .writer import SEAL_STEP_FILES, SEAL_STEP_ROWS  # a step of sealing after each file, as the writer's

__all__ = ["ArchiveImporter", "ImportProgress", "ImportStats"]

log = logging.getLogger("trio_klines.archive")

#: Files downloaded at once. The archive charges no weight; a few streams fill a link without
#: hammering the CDN.
DEFAULT_WORKERS: Final = 6
#: Threads unzipping and parsing at once: a parse is CPU-bound and holds the GIL part of the time.
DEFAULT_PARSERS: Final = 2
#: Tries of a file that is broken or should exist (the first one included).
DEFAULT_ATTEMPTS: Final = 3
#: Seconds before the second try of a file; doubling.
DEFAULT_RETRY_DELAY: Final = 2.0
#: A file whose period ended longer ago than this should be in the archive: Binance publishes a day's
#: file within about a day (binance.md has no source for the delay; two days is our margin).
DEFAULT_EXPECTED_LAG_MS: Final = 2 * 86_400_000


@dataclass
class ImportStats:
    #: Files planned (a month the archive lacked counts again as its days) and files done with (stored,
    #: or given to REST).
    files_total: int = 0
    files_done: int = 0
    #: Files stored from the archive, and their candles; candles the plan expects in all (archive + REST).
    files_stored: int = 0
    candles: int = 0
    candles_total: int = 0
    bytes: int = 0
    #: Files that should exist and do not (reported), and broken files whose tries were spent (reported).
    missing: int = 0
    failed: int = 0
    #: Tries of a file after its first.
    retries: int = 0
    #: Ranges handed to REST (the unpublished tail, unpublished or failed files) and runs of missing
    #: candles handed to REST for checking.
    rest_ranges: int = 0
    suspected: int = 0
    #: Ranges fetched from nowhere with ``rest=False``, and failed store writes (run again to resume).
    not_fetched: int = 0
    store_failures: int = 0


class ImportProgress(NamedTuple):
    files_done: int
    files_total: int
    candles: int
    candles_total: int


class _Job(NamedTuple):
    series: Series
    job: FileJob


class ArchiveImporter:
    """Imports ranges of series from the archive into ``store`` (something with ``append_table`` and
    ``seal_due``: a :class:`~trio_klines.store.dataset.Store`), handing to ``backfiller`` what must come
    over REST. ``markets`` points at the archive (``Market.archive_url``) and REST; ``clients`` are the
    REST clients (the probe and the exchange's clock).
    """

    def __init__(
        self,
        markets: Mapping[str, Market],
        http: httpx.AsyncClient,
        store: Any,
        backfiller: Backfiller,
        clients: Mapping[str, RestClient],
        *,
        rest: bool = True,
        workers: int = DEFAULT_WORKERS,
        parsers: int = DEFAULT_PARSERS,
        attempts: int = DEFAULT_ATTEMPTS,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        expected_lag_ms: int = DEFAULT_EXPECTED_LAG_MS,
        on_progress: Callable[[ImportProgress], None] | None = None,
    ) -> None:
        self._markets = markets
        self._client = ArchiveClient(http)
        self._store = store
        self._backfiller = backfiller
        self._clients = clients
        self._rest = rest
        self._workers = workers
        self._parsers = trio.CapacityLimiter(parsers)
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._expected_lag_ms = expected_lag_ms
        self._on_progress = on_progress
        self._now: dict[str, int] = {}
        self.stats = ImportStats()
        #: Set once :meth:`run` has stored every file or handed it to REST.
        self.done = trio.Event()

    async def run(self, requests: Sequence[tuple[Series, int, int | None]]) -> ImportStats:
        """Import ``requests`` (``(series, start, end)``, ``end`` ``None`` for the exchange's now) and
        return the counters once every file is stored or handed to REST (REST itself may still be
        fetching: wait for the backfiller). Raises nothing of its own: failures are counted and logged.
        """
        by_series: dict[Series, list[tuple[int, int | None]]] = {}
        for s, lo, hi in requests:
            by_series.setdefault(s, []).append((lo, hi))
        send, receive = trio.open_memory_channel[_Job](math.inf)
        self._queue = send  # closed by the worker that finishes the last file (a month may add its days)
        for s, ranges in sorted(by_series.items()):
            for job in await self._plan(s, ranges):
                self._queue_file(s, job)
        self._report()
        if self.stats.files_total == 0:
            send.close()
        async with receive, trio.open_nursery() as nursery:
            for _ in range(self._workers):
                nursery.start_soon(self._worker, receive)
        self.done.set()
        return self.stats

    # --- planning -------------------------------------------------------------------------------

    async def _clock(self, market: str) -> int | None:
        """The exchange's time (REST ``/time``), asked once per market; ``None`` if REST fails."""
        if market not in self._now:
            client = self._clients.get(market)
            if client is None:
                return None
            try:
                self._now[market] = await client.server_time()
            except KlinesError as exc:
                log.error("cannot read %s's clock over REST (%s): nothing is taken from the archive", market, exc)
                return None
        return self._now[market]

    async def _plan(self, s: Series, ranges: list[tuple[int, int | None]]) -> list[FileJob]:
        market = self._markets[s.market]
        now = await self._clock(s.market)
        if now is None:
            self._to_rest(s, [(lo, hi) for lo, hi in ranges], "the exchange's clock is unknown")
            return []
        limit = floor_open_time(s.interval, now)  # candles opening before it have closed
        closed = [(lo, min(hi, limit) if hi is not None else limit) for lo, hi in ranges]
        known = self._backfiller.ledger.ranges(s)  # confirmed exchange gaps: nothing to fetch there
        closed = [part for lo, hi in closed if lo < hi for part in known.missing(lo, hi)]
        if not closed:
            return []
        plan = plan_sources(market, s.symbol, s.interval, closed, now)
        if plan.files:
            first = await self._first_candle(s, closed[0][0], closed[-1][1])
            if first is not None and first > closed[0][0]:
                plan = plan_sources(market, s.symbol, s.interval, closed, now, first=first)
                for lo, hi in plan.skipped:
                    # REST had no candle there: no file is fetched, but the range is not known to be empty
                    # until the ledger's rule confirms it (a listing's head, or an outage the store lacks).
                    log.info("%s: no candle %s (REST): no file fetched; checking it is an exchange gap",
                             s, iso_range(lo, hi))  # fmt: skip
                    self.stats.suspected += 1
                    self._backfiller.suspect(s, lo, hi)
        self.stats.candles_total += sum(count_open_times(s.interval, lo, hi) for lo, hi in closed) - sum(
            count_open_times(s.interval, lo, hi) for lo, hi in plan.skipped
        )
        # An open end stays open: the backfiller reads the exchange's clock when it fetches, later than this
        # plan (at a test exchange's 600×, a second is ten minutes of candles), and asks again for a tail
        # its clock has not reached, exactly as it does for a catch-up that never met the archive.
        open_end = any(hi is None for _, hi in ranges)
        rest = [(lo, None if open_end and hi == limit else hi) for lo, hi in plan.rest]
        self._to_rest(s, rest, "not in the archive yet")
        return plan.files

    async def _first_candle(self, s: Series, lo: int, hi: int) -> int | None:
        """The open time of the series' first candle in ``[lo, hi)`` over REST (two asks, the earlier
        answer kept), or ``None`` if REST fails or has none (then nothing is skipped)."""
        client = self._clients.get(s.market)
        if client is None or s.market == "coin_futures":  # COIN-M answers the candles nearest the window's end
            return None
        answers = []
        for _ in range(2):
            try:
                page = await client.klines(s.symbol, s.interval, lo, hi - 1, limit=1)
            except KlinesError as exc:
                log.warning("%s: cannot find its first candle over REST (%s); every file is tried", s, exc)
                return None
            if not page:
                return None
            answers.append(page[0].open_time)
        return min(answers)

    # --- files ----------------------------------------------------------------------------------

    async def _worker(self, receive: trio.MemoryReceiveChannel[_Job]) -> None:
        async for item in receive:
            try:
                await self._import(item.series, item.job)
            finally:
                self.stats.files_done += 1
                if self.stats.files_done == self.stats.files_total:
                    self._queue.close()
                self._report()

    async def _import(self, s: Series, job: FileJob) -> None:
        market = self._markets[s.market]
        f = job.file
        now = self._now.get(s.market, 0)
        should_exist = f.end + self._expected_lag_ms <= now
        problem, missing = "", False
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                self.stats.retries += 1
                await trio.sleep(self._retry_delay * 2 ** (attempt - 2))
            try:
                downloaded = await self._client.fetch(market, f)
            except ArchiveError as exc:
                problem, missing = str(exc), False
                log.warning("%s: %s (try %d of %d)", s, exc, attempt, self._attempts)
                continue
            if downloaded is None:
                if _is_monthly(f):
                    self._split_month(s, job, should_exist)
                    return
                if not should_exist:
                    self._to_rest(s, list(job.wanted), f"{f.name} is not published yet")
                    return
                problem = f"{f.name} is not in the archive (HTTP 404) although its day ended {iso_ms(f.end)}"
                missing = True
                log.warning("%s: %s (try %d of %d)", s, problem, attempt, self._attempts)
                continue
            try:
                table, absent = await self._parse(s, downloaded, job)
            except MalformedMessage as exc:
                problem, missing = f"{f.name}: {exc}", False
                log.warning("%s: %s (try %d of %d)", s, problem, attempt, self._attempts)
                continue
            await self._store_rows(s, job, table, absent, downloaded.size)
            return
        if missing:
            self.stats.missing += 1
        else:
            self.stats.failed += 1
        monthly = _is_monthly(f)
        instead = " its days come from daily files" if monthly else " its candles come over REST" if self._rest else ""
        log.error("%s: %s; gave up after %d tries: none of its rows is stored;%s", s, problem, self._attempts,
                  instead)  # fmt: skip
        if monthly:
            self._split_month(s, job, False)
        else:
            self._to_rest(s, list(job.wanted), f"{f.name} failed")

    def _split_month(self, s: Series, job: FileJob, should_exist: bool) -> None:
        """A monthly file the archive lacks: its wanted days from daily files instead."""
        f = job.file
        if should_exist:
            log.info("%s: no monthly file %s; taking its days from daily files", s, f.name)
        day = datetime.fromtimestamp(f.start / 1000, UTC).date()
        while (daily := archive_file(self._markets[s.market], s.symbol, s.interval, "daily", day)).start < f.end:
            wanted = tuple((max(lo, daily.start), min(hi, daily.end)) for lo, hi in job.wanted)
            wanted = tuple((lo, hi) for lo, hi in wanted if lo < hi)
            if wanted:
                self._queue_file(s, FileJob(daily, wanted))
            day += timedelta(days=1)

    def _queue_file(self, s: Series, job: FileJob) -> None:
        self.stats.files_total += 1
        self._queue.send_nowait(_Job(s, job))

    async def _parse(self, s: Series, downloaded: Downloaded, job: FileJob) -> tuple[pa.Table, list[tuple[int, int]]]:
        csv_name = job.file.name.removesuffix(".zip") + ".csv"
        numbers = getattr(self._store, "numbers", "float")  # the archive's strings as decimals in an exact store

        def parse() -> tuple[pa.Table, list[tuple[int, int]]]:
            with downloaded.body:
                tables = read_archive_zip(downloaded.body, csv_name, s.market, s.symbol, s.interval, numbers=numbers)
            return select_wanted(s.interval, tables, job.wanted, schema_for(numbers))

        return await trio.to_thread.run_sync(parse, limiter=self._parsers)

    async def _store_rows(
        self, s: Series, job: FileJob, table: pa.Table, absent: list[tuple[int, int]], size: int
    ) -> None:
        def store() -> int:
            rows = int(self._store.append_table(s, table, seal=False))
            self._store.seal_due(SEAL_STEP_FILES, SEAL_STEP_ROWS)
            return rows

        for attempt in range(1, self._attempts + 1):
            try:
                rows = await trio.to_thread.run_sync(store)
                break
            except (OSError, StoreError) as exc:
                log.error("%s: storing %s failed (%s); try %d of %d", s, job.file.name, exc, attempt, self._attempts)
                if attempt < self._attempts:
                    await trio.sleep(self._retry_delay * 2 ** (attempt - 1))
        else:
            self.stats.store_failures += 1
            return
        self.stats.files_stored += 1
        self.stats.candles += rows
        self.stats.bytes += size
        for a, b in absent:
            self.stats.suspected += 1
            log.info("%s: %s lacks %d candles %s; checking over REST whether it is an exchange gap",
                     s, job.file.name, count_open_times(s.interval, a, b), iso_range(a, b))  # fmt: skip
            self._backfiller.suspect(s, a, b)

    # --- REST and progress ------------------------------------------------------------------------

    def _to_rest(self, s: Series, ranges: Sequence[tuple[int, int | None]], why: str) -> None:
        for lo, hi in ranges:
            if self._rest:
                self.stats.rest_ranges += 1
                log.debug("%s: %s over REST: %s", s, iso_range(lo, hi), why)
                self._backfiller.request(s, lo, hi)
            else:
                self.stats.not_fetched += 1
                log.warning("%s: %s not fetched (%s; --source archive takes nothing over REST)",
                            s, iso_range(lo, hi), why)  # fmt: skip

    def _report(self) -> None:
        if self._on_progress is not None:
            st = self.stats
            self._on_progress(ImportProgress(st.files_done, st.files_total, st.candles, st.candles_total))


def _is_monthly(f: ArchiveFile) -> bool:
    return "/monthly/" in f.path
