"""Downloading history: fetch what the store lacks of some series over a time range, from the data
archive and REST.

The engine of ``python -m trio_klines backfill``. It plans with the store's coverage (the same
catch-up plan the recorder makes at start-up). With the source ``auto`` (the default) an
:class:`~trio_klines.pipeline.archive.ArchiveImporter` takes what Binance's data archive has published
and hands the rest to a :class:`Backfiller` (REST); ``archive`` takes nothing over REST but the checks
of exchange gaps; ``rest`` takes everything over REST. A writer stores REST pages as they come; archive
files are stored whole. Resumable and idempotent: what is stored, or is known to be an exchange gap, is
not fetched again, so a run that failed part-way is finished by running it again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Literal, NamedTuple

import trio

from ..config import HISTORY_SOURCES, RecorderConfig, WriterSettings
from ..core.markets import Series, count_open_times, floor_open_time
from ..core.paging import catch_up_plan, pages_needed
from ..core.parse import Candle
from ..errors import KlinesError
from ..net.rest import RestClient, new_http_client, rest_clients
from ..store.coverage import SeriesCoverage, coverage
from ..store.dataset import Store
from ..store.ledger import ExchangeGapLedger
from .archive import DEFAULT_RETRY_DELAY, ArchiveImporter, ImportProgress, ImportStats
from .backfill import Backfiller, BackfillStats
from .supervision import single_error
from .writer import WriterStats, run_writer

__all__ = ["SOURCES", "Downloaded", "HistoryProgress", "Source", "download", "download_plan", "plan_size"]

log = logging.getLogger("trio_klines.history")

Source = Literal["auto", "archive", "rest"]
#: Where history comes from: the archive, then REST for the rest (``auto``); the archive alone; REST alone.
SOURCES: Final[tuple[Source, ...]] = HISTORY_SOURCES

#: How often ``on_progress`` hears how far the download is, at most (seconds).
PROGRESS_EVERY: Final = 0.5
#: Concurrent REST requests; the weight budget paces them anyway.
WORKERS: Final = 4
#: A download is not latency-bound: write fewer, larger batches than the recorder.
FLUSH_SECONDS: Final = 1.0
#: How long (s) a download waits for the exchanges' clocks that size an open-ended plan for its progress
#: total, before it takes the local clock instead (the download itself does not need them).
CLOCK_TIMEOUT: Final = 10.0


class HistoryProgress(NamedTuple):
    """How far a :func:`download` is: REST ``pages`` fetched of ``total_pages``, the candles received
    (REST and archive), archive ``files`` done of ``total_files``, and ``total_candles``: the candles the
    plan covers, an upper bound, as exchange gaps hold none (see :func:`plan_size`; an open end counts up
    to the exchange's clock when the download started, so the exchange's later candles may go past it)."""

    pages: int
    total_pages: int
    candles: int
    files: int = 0
    total_files: int = 0
    total_candles: int = 0


class Downloaded(NamedTuple):
    """What a :func:`download` did: the REST backfill's counters and the archive import's (``None`` with
    the source ``rest``)."""

    rest: BackfillStats
    archive: ImportStats | None


def download_plan(
    held: dict[Series, SeriesCoverage], wanted: Iterable[Series], since: int, until: int | None
) -> dict[Series, list[tuple[int, int | None]]]:
    """Per series, the parts of ``[since, until)`` the store does not hold (``held``: its coverage).

    A range's end of ``None`` means "up to the exchange's now".
    """
    plan: dict[Series, list[tuple[int, int | None]]] = {}
    for s in wanted:
        cov = held.get(s)
        if cov is None:
            plan[s] = catch_up_plan(s.interval, None, None, (), since, until)
        else:
            plan[s] = catch_up_plan(s.interval, cov.first, cov.last, cov.gaps, since, until)
    return plan


def plan_size(plan: Mapping[Series, Sequence[tuple[int, int | None]]], now: Mapping[str, int]) -> tuple[int, int]:
    """The REST pages and the candles a :func:`download_plan` covers (for a progress bar's total and ETA).

    An open end (``None``) counts the candles closed by ``now[market]`` (the exchange's clock, ms), as the
    backfiller fetches; an open end of a market not in ``now`` counts none.
    """
    pages = candles = 0
    for s, ranges in plan.items():
        clock = now.get(s.market)
        for lo, hi in ranges:
            end = hi if hi is not None else None if clock is None else floor_open_time(s.interval, clock)
            if end is not None:
                pages += pages_needed(s.interval, lo, end)
                candles += count_open_times(s.interval, lo, end)
    return pages, candles


async def _clocks(clients: Mapping[str, RestClient], markets: Iterable[str]) -> dict[str, int]:
    """The exchange's clock of each of ``markets``; the local clock for one that does not answer within
    :data:`CLOCK_TIMEOUT` (logged). Raises nothing but ``Cancelled``."""
    now: dict[str, int] = {}
    with trio.move_on_after(CLOCK_TIMEOUT):
        for market in markets:
            try:
                now[market] = await clients[market].server_time()
            except KlinesError as exc:
                log.warning("cannot read %s's clock (%s): the progress total counts to the local clock", market, exc)
    local = int(time.time() * 1000)
    return {market: now.get(market, local) for market in markets}


async def download(
    config: RecorderConfig,
    since: int,
    until: int | None = None,
    *,
    on_progress: Callable[[HistoryProgress], None] | None = None,
    writer_stats: WriterStats | None = None,
    source: Source = "auto",
    archive_retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Downloaded:
    """Fetch what the store at ``config.data_dir`` lacks of ``config.streams`` in ``[since, until)``,
    from ``source`` (:data:`SOURCES`); a broken archive file is fetched again after ``archive_retry_delay``
    seconds, doubling.

    ``until`` ``None`` means up to the exchange's clock (only closed candles are fetched).
    ``on_progress`` is called once the plan is made, then every :data:`PROGRESS_EVERY` seconds while
    pages arrive. ``writer_stats``, if given, is kept up to date by the writer that stores the pages
    (``written``: candles stored; ``pending``: received, not yet stored): what a cancelled download
    kept. Returns the counters when every request has been served.

    A failed REST request or archive file does not raise: it is logged and counted in the result
    (``rest.failures``; ``archive.missing``, ``archive.failed``…); what it did not fetch is fetched by
    the next run.

    Raises:
      StoreLocked: another process is writing this store.
      StoreError: the store cannot be opened or its files cannot be read.

    If cancelled, requests in flight are abandoned and the writer makes one last shielded attempt
    to store what it holds (see :func:`~trio_klines.pipeline.writer.run_writer`); what is stored
    is whole, and the next run fetches the rest. ``writer_stats`` then says what was stored.
    """
    # Opening the store replays its journal, and the ledger is a file: blocking work, in worker threads.
    store = await trio.to_thread.run_sync(functools.partial(Store, config.data_dir, numbers=config.numbers))
    with store, single_error():
        held = await trio.to_thread.run_sync(coverage, config.data_dir, list(config.streams))
        ledger = await trio.to_thread.run_sync(ExchangeGapLedger, config.data_dir)
        plan = download_plan(held, config.streams, since, until)
        send, receive = trio.open_memory_channel[Sequence[Candle]](config.channel_size)
        async with new_http_client() as http, trio.open_nursery() as nursery:
            settings = WriterSettings(flush_seconds=FLUSH_SECONDS)
            nursery.start_soon(lambda: run_writer(receive, store, settings=settings, stats=writer_stats))
            markets = {m: config.market(m) for m in sorted({s.market for s in config.streams})}
            clients = rest_clients(markets.values(), http, exact=store.numbers == "exact")
            # An open end is sized by the exchange's clock (a fake exchange's may be far from ours), which
            # only the progress total needs: asked once per market, and only when someone listens.
            open_ended = {s.market for s, ranges in plan.items() for _, hi in ranges if hi is None}
            clocks = await _clocks(clients, sorted(open_ended)) if on_progress is not None else {}
            total_pages, total_candles = plan_size(plan, clocks)
            backfiller = Backfiller(clients, send.clone(), ledger, workers=WORKERS)
            importer: ArchiveImporter | None = None
            progress = _Progress(backfiller, total_pages, total_candles, on_progress)
            async with send, trio.open_nursery() as fetchers:
                fetchers.start_soon(backfiller.run)
                requests = [(s, lo, hi) for s, ranges in plan.items() for lo, hi in ranges]
                if source == "rest":
                    for s, lo, hi in requests:
                        backfiller.request(s, lo, hi)
                else:
                    importer = ArchiveImporter(
                        markets, http, store, backfiller, clients,
                        rest=source == "auto", retry_delay=archive_retry_delay, on_progress=progress.archive,
                    )  # fmt: skip
                    await importer.run(requests)  # returns once every file is stored or handed to REST
                await _wait_until_served(backfiller, progress)
                fetchers.cancel_scope.cancel()  # the backfiller closes its channel; the writer drains, returns
    return Downloaded(backfiller.stats, importer.stats if importer is not None else None)


class _Progress:
    """Reports a download's progress: REST pages from the backfiller, files and candles from the archive."""

    def __init__(
        self, backfiller: Backfiller, total_pages: int, total_candles: int,
        on_progress: Callable[[HistoryProgress], None] | None,
    ) -> None:  # fmt: skip
        self._backfiller = backfiller
        self._total_pages = total_pages
        self._total_candles = total_candles
        self._on_progress = on_progress
        self._archive = ImportProgress(0, 0, 0, 0)

    def archive(self, progress: ImportProgress) -> None:
        self._archive = progress
        self.report()

    def report(self) -> None:
        if self._on_progress is None:
            return
        stats, archive = self._backfiller.stats, self._archive
        self._on_progress(HistoryProgress(stats.pages, self._total_pages, stats.candles + archive.candles,
                                          archive.files_done, archive.files_total, self._total_candles))  # fmt: skip


async def _wait_until_served(backfiller: Backfiller, progress: _Progress) -> None:
    progress.report()
    while True:
        with trio.move_on_after(PROGRESS_EVERY):
            await backfiller.wait_idle()
        progress.report()
        if backfiller.stats.in_flight == 0:
            return
