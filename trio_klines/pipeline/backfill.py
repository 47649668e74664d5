"""Filling holes from REST: on start-up, after every gap the writer reports, and on demand.

A :class:`Backfiller` takes requests ``(series, start, end)`` at any time (:meth:`Backfiller.request`
never blocks), claims the part not already claimed in this run nor known to be an *exchange gap*,
fetches it page by page and sends the candles into the writer's channel like any live batch. Only
closed candles are fetched: ``end`` is capped at the open time of the candle that is open on the
exchange's clock.

A range the exchange answers with no candles (a maintenance window, a halt, a symbol not listed yet)
is recorded as an exchange gap in the :class:`ExchangeGapLedger`, a small JSON file next to the data
(``ROOT/_meta/exchange_gaps.json``; pyarrow, pandas and DuckDB skip ``_`` names), so it is reported
by ``status`` and never requested again in a loop. The ledger is written in a worker thread (the
write fsyncs), one write at a time, after each page that found a new exchange gap.

Errors: the REST client raises only :class:`~trio_klines.errors.KlinesError` subclasses (it maps httpx's and
the socket's errors at its one request site), so that is all the backfiller catches. A failed range is
counted, logged and requested again later; a Binance refusal (an unknown symbol, say) is counted and
logged, not retried. Anything else is a bug and ends :meth:`Backfiller.run`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from ..core.gaps import Gap, RangeSet
from ..core.markets import Series, floor_open_time, iter_open_times
from ..core.paging import page_windows
from ..core.parse import Candle
from ..errors import BinanceError, KlinesError
from ..net.rest import RestClient, RestStats
from ..store.ledger import ExchangeGapLedger

__all__ = ["BackfillStats", "Backfiller"]

log = logging.getLogger("trio_klines.backfill")

#: A failed range is requested again after this many seconds.
DEFAULT_RETRY_DELAY: Final = 30.0


@dataclass
class BackfillStats:
    requests: int = 0
    pages: int = 0
    candles: int = 0
    exchange_gaps: int = 0
    exchange_gap_candles: int = 0
    failures: int = 0
    in_flight: int = 0


class Backfiller:
    """Fetches requested ranges over REST and sends the candles to ``send`` (the writer's channel).

    ``stats.failures`` counts the ranges that failed (each is logged); ``rest_stats()`` the REST calls.
    """

    def __init__(
        self,
        clients: Mapping[str, RestClient],
        send: trio.MemorySendChannel[Sequence[Candle]],
        ledger: ExchangeGapLedger,
        *,
        workers: int = 2,
        retry_delay: float = DEFAULT_RETRY_DELAY,
    ) -> None:
        self._clients = clients
        self._send = send
        self.ledger = ledger
        self._workers = workers
        self._retry_delay = retry_delay
        self._queue_send, self._queue = trio.open_memory_channel[tuple[Series, int, int | None]](math.inf)
        self._claimed: dict[Series, RangeSet] = {}
        self._idle = trio.Event()
        self._idle.set()
        self._nursery: trio.Nursery | None = None
        self._ledger_lock = trio.Lock()  # one write of the ledger file at a time
        self.stats = BackfillStats()

    def request(self, s: Series, start: int, end: int | None = None) -> None:
        """Ask for the candles of ``s`` opening in ``[start, end)`` (``None``: up to the exchange's now)."""
        if s.market not in self._clients:
            log.error("no REST client for %s; cannot backfill %s", s.market, s)
            return
        self.stats.requests += 1
        self.stats.in_flight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._queue_send.send_nowait((s, start, end))

    def request_gap(self, gap: Gap) -> None:
        self.request(gap.series, gap.start, gap.end)

    def rest_stats(self) -> dict[str, RestStats]:
        """The REST clients' counters (requests, failed attempts, calls given up…), per market."""
        return {market: client.stats for market, client in self._clients.items()}

    async def wait_idle(self) -> None:
        """Return once every request made so far has been fetched (or has failed). Raises nothing.

        Cancelled, it stops waiting and changes nothing.
        """
        await self._idle.wait()

    async def run(self) -> None:
        """Serve requests until cancelled. Closes the writer channel clone it was given on the way out.

        Raises nothing of its own: a failed range (any :class:`~trio_klines.errors.KlinesError`) is
        counted in ``stats.failures``, logged and requested again after ``retry_delay``; an exception of
        another kind is a bug and ends the run (inside the ``ExceptionGroup`` of its worker nursery).

        Cancelled, it stops at once: pages fetched and not yet sent are dropped (a later gap or start-up
        catch-up fetches them again); a ledger write under way in its thread is waited for.
        """
        async with self._send, trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self._workers):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        async for s, start, end in self._queue:
            try:
                await self._fill(s, start, end)
            finally:
                self.stats.in_flight -= 1
                if self.stats.in_flight == 0:
                    self._idle.set()

    async def _fill(self, s: Series, start: int, end: int | None) -> None:
        client = self._clients[s.market]
        try:
            now = await client.server_time()
        except KlinesError as exc:
            self._failed(s, start, end, exc)
            return
        # Candles opening before the one that is open now have all closed.
        limit = floor_open_time(s.interval, now)
        end = limit if end is None else min(end, limit)
        claimed = self._claimed.setdefault(s, RangeSet())
        known = self.ledger.ranges(s)
        todo = [r for lo, hi in claimed.missing(start, end) for r in known.missing(lo, hi)]
        for lo, hi in todo:
            claimed.add(lo, hi)
        for lo, hi in todo:
            for w_lo, w_hi in page_windows(s.interval, lo, hi):
                try:
                    page = await client.klines(s.symbol, s.interval, w_lo, w_hi, closed_before=now)
                except BinanceError as exc:
                    log.error("backfill of %s refused by Binance: %s", s, exc)
                    self.stats.failures += 1
                    return
                except KlinesError as exc:
                    claimed.remove(w_lo, end)  # this window and everything after it in the request
                    self._failed(s, w_lo, end, exc)
                    return
                self.stats.pages += 1
                self.stats.candles += len(page)
                if self._note_exchange_gaps(s, w_lo, w_hi + 1, page):
                    await self._save_ledger()
                if page:
                    await self._send.send(page)
        if todo:
            log.info("backfilled %s from %d to %d", s, todo[0][0], todo[-1][1])

    def _note_exchange_gaps(self, s: Series, start: int, end: int, page: Sequence[Candle]) -> bool:
        """Record the open times of ``[start, end)`` missing from ``page`` in the ledger (in memory).

        Returns whether there were any.
        """
        got = {c.open_time for c in page}
        found = False
        run: list[int] = []
        for t in [*iter_open_times(s.interval, start, end), None]:
            if t is not None and t not in got:
                run.append(t)
                continue
            if run:
                gap_end = t if t is not None else end
                self.ledger.add(s, run[0], gap_end)
                found = True
                self.stats.exchange_gaps += 1
                self.stats.exchange_gap_candles += len(run)
                log.warning("exchange gap: %s has no candles from %d to %d (%d)", s, run[0], gap_end, len(run))
                run = []
        return found

    async def _save_ledger(self) -> None:
        """Write the ledger in a worker thread (it fsyncs); never raises (:meth:`ExchangeGapLedger.write`).

        The snapshot is taken here, on the event loop, so ranges added meanwhile by another worker are
        not read by the thread; the lock keeps the writes in order. Cancelled during the write, it waits
        for the thread to finish (a few milliseconds).
        """
        async with self._ledger_lock:
            snapshot = self.ledger.snapshot()
            if snapshot is not None:
                await trio.to_thread.run_sync(self.ledger.write, snapshot)

    def _failed(self, s: Series, start: int, end: int | None, exc: KlinesError) -> None:
        self.stats.failures += 1
        log.error("backfill of %s from %d failed (%s); retrying in %.0fs", s, start, exc, self._retry_delay)
        if self._nursery is not None:
            self._nursery.start_soon(self._retry_later, s, start, end)

    async def _retry_later(self, s: Series, start: int, end: int | None) -> None:
        await trio.sleep(self._retry_delay)
        self.request(s, start, end)
