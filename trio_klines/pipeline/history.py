"""Downloading history: fetch what the store lacks of some series over a time range, from REST.

The engine of ``python -m trio_klines backfill``. It plans with the store's coverage (the same
catch-up plan the recorder makes at start-up), hands the ranges to a :class:`Backfiller` and lets a
writer store the pages as they come. Resumable and idempotent: what is stored, or is known to be an
exchange gap, is not fetched again, so a run that failed part-way is finished by running it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple

import trio

from ..config import RecorderConfig, WriterSettings
from ..core.markets import Series
from ..core.paging import catch_up_plan, pages_needed
from ..core.parse import Candle
from ..net.rest import new_http_client, rest_clients
from ..store.coverage import SeriesCoverage, coverage
from ..store.dataset import Store
from ..store.ledger import ExchangeGapLedger
from .backfill import Backfiller, BackfillStats
from .supervision import single_error
from .writer import WriterStats, run_writer

__all__ = ["HistoryProgress", "download", "download_plan"]

#: How often ``on_progress`` hears how far the download is, at most (seconds).
PROGRESS_EVERY: Final = 0.5
#: Concurrent REST requests; the weight budget paces them anyway.
WORKERS: Final = 4
#: A download is not latency-bound: write fewer, larger batches than the recorder.
FLUSH_SECONDS: Final = 1.0


class HistoryProgress(NamedTuple):
    """How far a :func:`download` is: ``pages`` fetched of ``total_pages`` (``0`` when the plan has
    an open end, up to the exchange's now, whose size is unknown), and the candles received."""

    pages: int
    total_pages: int
    candles: int


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


async def download(
    config: RecorderConfig,
    since: int,
    until: int | None = None,
    *,
    on_progress: Callable[[HistoryProgress], None] | None = None,
    writer_stats: WriterStats | None = None,
) -> BackfillStats:
    """Fetch what the store at ``config.data_dir`` lacks of ``config.streams`` in ``[since, until)``.

    ``until`` ``None`` means up to the exchange's clock (only closed candles are fetched).
    ``on_progress`` is called once the plan is made, then every :data:`PROGRESS_EVERY` seconds while
    pages arrive. ``writer_stats``, if given, is kept up to date by the writer that stores the pages
    (``written``: candles stored; ``pending``: received, not yet stored): what a cancelled download
    kept. Returns the backfiller's counters when every request has been served.

    A failed REST request does not raise: it is logged and counted in the result's ``failures``; what
    it did not fetch is fetched by the next run.

    Raises:
      StoreLocked: another process is writing this store.
      StoreError: the store cannot be opened or its files cannot be read.

    If cancelled, requests in flight are abandoned and the writer makes one last shielded attempt
    to store what it holds (see :func:`~trio_klines.pipeline.writer.run_writer`); what is stored
    is whole, and the next run fetches the rest. ``writer_stats`` then says what was stored.
    """
    # Opening the store replays its journal, and the ledger is a file: blocking work, in worker threads.
    store = await trio.to_thread.run_sync(Store, config.data_dir)
    with store, single_error():
        held = await trio.to_thread.run_sync(coverage, config.data_dir, list(config.streams))
        ledger = await trio.to_thread.run_sync(ExchangeGapLedger, config.data_dir)
        plan = download_plan(held, config.streams, since, until)
        total = sum(pages_needed(s.interval, lo, hi) for s, ranges in plan.items() for lo, hi in ranges if hi)
        send, receive = trio.open_memory_channel[Sequence[Candle]](config.channel_size)
        async with new_http_client() as http, trio.open_nursery() as nursery:
            settings = WriterSettings(flush_seconds=FLUSH_SECONDS)
            nursery.start_soon(lambda: run_writer(receive, store, settings=settings, stats=writer_stats))
            markets = sorted({s.market for s in config.streams})
            clients = rest_clients([config.market(m) for m in markets], http)
            backfiller = Backfiller(clients, send.clone(), ledger, workers=WORKERS)
            async with send, trio.open_nursery() as fetchers:
                fetchers.start_soon(backfiller.run)
                for s, ranges in plan.items():
                    for lo, hi in ranges:
                        backfiller.request(s, lo, hi)
                await _wait_until_served(backfiller, total, on_progress)
                fetchers.cancel_scope.cancel()  # the backfiller closes its channel; the writer drains, returns
    return backfiller.stats


async def _wait_until_served(
    backfiller: Backfiller, total_pages: int, on_progress: Callable[[HistoryProgress], None] | None
) -> None:
    def report() -> None:
        if on_progress is not None:
            on_progress(HistoryProgress(backfiller.stats.pages, total_pages, backfiller.stats.candles))

    report()
    while True:
        with trio.move_on_after(PROGRESS_EVERY):
            await backfiller.wait_idle()
        report()
        if backfiller.stats.in_flight == 0:
            return
