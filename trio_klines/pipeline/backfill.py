"""Filling holes from REST: on start-up, after every gap the writer reports, and on demand.

A :class:`Backfiller` takes requests ``(series, start, end)`` at any time (:meth:`Backfiller.request`
never blocks), claims the part not already claimed in this run nor known to be an *exchange gap*,
fetches it page by page and sends the candles into the writer's channel like any live batch. Only
closed candles are fetched: ``end`` is capped at the open time of the candle that is open on the
exchange's clock (REST ``/time``). When that clock is behind the requested end (REST lags the
WebSocket that reported the gap), the uncovered tail is requested again later in the same run.

Exchange gaps are trusted only once confirmed. A range a page did not return (a maintenance window, a
halt, a symbol not listed yet — or a transient empty or short page) is first *suspected*: it stays
missing for ``status`` and is checked again after ``confirm_delay`` seconds, doubling per check, at
most ``max_checks`` times in the run. A check asks for the range with one candle on each side:

- candles inside: a transient fault; they are sent to the writer and the suspicion is cleared;
- nothing inside, and the candles on both sides returned: *confirmed*, an exchange gap for good;
- nothing inside, the candle after it returned and nothing before it, on :data:`HEAD_CHECKS` checks in
  a row: the head of the series' history (before its listing), confirmed too;
- anything else (an empty or short page, the next candle not closed yet, an error): checked again.

A range still unconfirmed after the last check is left suspected (and missing) for the next run.
Checks and deferred tails count as in flight: :meth:`Backfiller.wait_idle` waits for them.

Both kinds live in the :class:`ExchangeGapLedger`, a small JSON file next to the data
(``ROOT/_meta/exchange_gaps.json``). It is written in a worker thread (the write fsyncs), one write at
a time, after each range or check that changed it.

Errors: the REST client raises only :class:`~trio_klines.errors.KlinesError` subclasses (it maps httpx's and
the socket's errors at its one request site), so that is all the backfiller catches. A failed range is
counted, logged and requested again later; a Binance refusal (an unknown symbol, say) is counted and
logged, not retried. Anything else is a bug and ends :meth:`Backfiller.run`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from ..core.gaps import Gap, RangeSet
from ..core.markets import Series, count_open_times, floor_open_time, iter_open_times, next_open_time
from ..core.paging import page_windows
from ..core.parse import Candle
from ..core.timefmt import iso_ms, iso_range
from ..errors import BinanceError, KlinesError
from ..net.rest import RestClient, RestStats
from ..store.ledger import ExchangeGapLedger

__all__ = ["BackfillStats", "Backfiller"]

log = logging.getLogger("trio_klines.backfill")

#: A failed range is requested again after this many seconds.
DEFAULT_RETRY_DELAY: Final = 30.0
#: A suspected exchange gap is first checked again this many seconds later; each further check waits twice
#: as long. Long enough for a transient fault to pass, short enough that ``backfill`` confirms in its run.
DEFAULT_CONFIRM_DELAY: Final = 2.0
#: Checks of one suspected range (and deferred tails of one request) in a run, before it is left to the next.
DEFAULT_MAX_CHECKS: Final = 5
#: Checks in a row that must find nothing before a range (and the candle after it) to confirm the head of
#: a series' history: one short page can lack the candle before a range, two in a row are unlikely.
HEAD_CHECKS: Final = 2
#: A requested end at most this far (ms) past the REST clock is a clock lag: the tail is asked again later.
#: Further, the candles do not exist yet (``backfill --until`` in the future) and only closed ones are fetched.
MAX_CLOCK_LAG_MS: Final = 5 * 60_000


@dataclass
class BackfillStats:
    requests: int = 0
    pages: int = 0
    candles: int = 0
    #: Confirmed exchange gaps (ranges) and the candles in them.
    exchange_gaps: int = 0
    exchange_gap_candles: int = 0
    failures: int = 0
    in_flight: int = 0
    #: Ranges a page lacked, each then checked again (:data:`DEFAULT_CONFIRM_DELAY`).
    suspected: int = 0
    #: Checks of suspected ranges made.
    checks: int = 0
    #: Candles a page lacked that a check then returned (transient faults of the exchange).
    recovered: int = 0
    #: Request tails past the REST clock, asked again later.
    deferred: int = 0
    #: Candles requested and not fetched yet (a gauge): a queued request counts to its end, or to the local
    #: clock for one open-ended; once under way, what is left of its ranges not already held.
    to_fetch: int = 0


@dataclass(frozen=True, slots=True)
class _Job:
    """One unit of work: fill ``[start, end)``, or check that a suspected range is an exchange gap."""

    series: Series
    start: int
    end: int | None
    check: bool = False
    #: Times this range was already asked again in this run (0: a new request).
    attempt: int = 0
    #: Checks in a row that found the candle after the range and nothing before it.
    heads: int = 0
    #: Candles this job counts in ``stats.to_fetch`` while queued.
    estimate: int = 0


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
        confirm_delay: float = DEFAULT_CONFIRM_DELAY,
        max_checks: int = DEFAULT_MAX_CHECKS,
    ) -> None:
        self._clients = clients
        self._send = send
        self.ledger = ledger
        self._workers = workers
        self._retry_delay = retry_delay
        self._confirm_delay = confirm_delay
        self._max_checks = max_checks
        self._queue_send, self._queue = trio.open_memory_channel[_Job](math.inf)
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
        self._begin()
        estimate = count_open_times(s.interval, start, end if end is not None else int(time.time() * 1000))
        self.stats.to_fetch += estimate
        self._queue_send.send_nowait(_Job(s, start, end, estimate=estimate))

    def suspect(self, s: Series, start: int, end: int) -> None:
        """Take ``[start, end)``, a range another source lacked (an archive file's missing candles), for a
        suspected exchange gap: recorded as suspected and checked over REST now, then confirmed or filled
        as a page's absence is (see the module's docstring). Parts already known to the ledger as
        exchange gaps are left alone."""
        if s.market not in self._clients:
            log.error("no REST client for %s; cannot check its missing candles %s", s, iso_range(start, end),
                      extra=_fields(s, start, end))  # fmt: skip
            return
        claimed = self._claimed.setdefault(s, RangeSet())
        for a, b in self.ledger.ranges(s).missing(start, end):
            claimed.add(a, b)
            self.ledger.suspect(s, a, b)
            self.stats.suspected += 1
            self._begin()
            self._queue_send.send_nowait(_Job(s, a, b, check=True, attempt=1))

    def hold(self) -> None:
        """Count one more piece of work in flight until :meth:`release`: another source (the archive import)
        that will hand requests over, so that :meth:`wait_idle` waits for it too."""
        self._begin()

    def release(self) -> None:
        self._done()

    def request_gap(self, gap: Gap) -> None:
        self.request(gap.series, gap.start, gap.end)

    def rest_stats(self) -> dict[str, RestStats]:
        """The REST clients' counters (requests, failed attempts, calls given up…), per market."""
        return {market: client.stats for market, client in self._clients.items()}

    async def wait_idle(self) -> None:
        """Return once every request made so far has been fetched (or has failed), its suspected exchange
        gaps checked and its deferred tails asked again. Raises nothing.

        Cancelled, it stops waiting and changes nothing.
        """
        await self._idle.wait()

    async def run(self) -> None:
        """Serve requests until cancelled. Closes the writer channel clone it was given on the way out.

        Raises nothing of its own: a failed range (any :class:`~trio_klines.errors.KlinesError`) is
        counted in ``stats.failures``, logged and requested again after ``retry_delay``; an exception of
        another kind is a bug and ends the run (inside the ``ExceptionGroup`` of its worker nursery).

        Cancelled, it stops at once: pages fetched and not yet sent are dropped and checks not made are
        abandoned (a later gap or start-up catch-up fetches them again: suspected ranges stay missing);
        a ledger write under way in its thread is waited for.
        """
        async with self._send, trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self._workers):
                nursery.start_soon(self._worker)

    # --- the queue and what is in flight ----------------------------------------------------------

    def _begin(self) -> None:
        self.stats.in_flight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def _done(self) -> None:
        self.stats.in_flight -= 1
        if self.stats.in_flight == 0:
            self._idle.set()

    async def _worker(self) -> None:
        async for job in self._queue:
            try:
                await (self._check(job) if job.check else self._fill(job))
            finally:
                self._done()

    def _again(self, job: _Job) -> None:
        """Queue ``job`` (its ``attempt`` already counted) after its back-off, in flight meanwhile; or, past
        ``max_checks``, give it up for this run: counted as a failure, logged, and its range unclaimed."""
        if job.attempt > self._max_checks:
            self.stats.failures += 1
            what = "still unconfirmed exchange gap (missing until a later run confirms it)" if job.check else "tail"
            log.error("%s: giving up on %s %s after %d tries in this run", job.series, what,
                      iso_range(job.start, job.end), job.attempt - 1,
                      extra=_fields(job.series, job.start, job.end))  # fmt: skip
            if job.check and job.end is not None:
                self._claimed.setdefault(job.series, RangeSet()).remove(job.start, job.end)
            return
        if self._nursery is None:
            return
        self._begin()
        self._nursery.start_soon(self._queue_later, job, self._confirm_delay * 2 ** (job.attempt - 1))

    async def _queue_later(self, job: _Job, delay: float) -> None:
        await trio.sleep(delay)
        self._queue_send.send_nowait(job)

    # --- fills --------------------------------------------------------------------------------

    async def _fill(self, job: _Job) -> None:
        self.stats.to_fetch -= job.estimate
        s, start = job.series, job.start
        client = self._clients[s.market]
        try:
            now = await client.server_time()
        except KlinesError as exc:
            self._failed(s, start, job.end, exc)
            return
        end = self._capped(job, now)
        claimed = self._claimed.setdefault(s, RangeSet())
        known = self.ledger.ranges(s)
        todo = [r for lo, hi in claimed.missing(start, end) for r in known.missing(lo, hi)]
        for lo, hi in todo:
            claimed.add(lo, hi)
        counts = [count_open_times(s.interval, lo, hi) for lo, hi in todo]
        self.stats.to_fetch += sum(counts)
        for i, (lo, hi) in enumerate(todo):
            if not await self._fill_range(client, s, lo, hi, end, now):
                self.stats.to_fetch -= sum(counts[i + 1 :])
                return
        if todo:
            log.info("backfilled %s %s", s, iso_range(todo[0][0], todo[-1][1]),
                     extra=_fields(s, todo[0][0], todo[-1][1]))  # fmt: skip

    def _capped(self, job: _Job, now: int) -> int:
        """``job``'s end capped at the candle open on the exchange's clock ``now``; a tail cut off by a
        REST clock behind the requested end is asked again later."""
        limit = floor_open_time(job.series.interval, now)  # candles opening before it have all closed
        if job.end is None or job.end <= limit:
            return limit if job.end is None else job.end
        tail = max(job.start, limit)
        if job.end <= now + MAX_CLOCK_LAG_MS:
            self.stats.deferred += 1
            log.warning("%s: the REST clock (%s) is behind the requested end (%s); asking for %s again later",
                        job.series, iso_ms(now), iso_ms(job.end), iso_range(tail, job.end),
                        extra=_fields(job.series, tail, job.end))  # fmt: skip
            self._again(dataclasses.replace(job, start=tail, attempt=job.attempt + 1, estimate=0))
        return limit

    async def _fill_range(self, client: RestClient, s: Series, lo: int, hi: int, end: int, now: int) -> bool:
        """Fetch ``[lo, hi)`` page by page; suspect what the pages lacked. ``False`` if a page failed (then
        handled: ``[page, end)`` is unclaimed and asked again later, or a refusal is logged). Takes the range's
        candles off ``stats.to_fetch`` as pages come, the rest when it fails."""
        claimed = self._claimed[s]
        absent = RangeSet()
        for w_lo, w_hi in page_windows(s.interval, lo, hi):
            try:
                try:
                    page = await client.klines(s.symbol, s.interval, w_lo, w_hi, closed_before=now)
                except KlinesError:
                    self.stats.to_fetch -= count_open_times(s.interval, w_lo, hi)
                    raise
            except BinanceError as exc:
                log.error("backfill of %s refused by Binance: %s", s, exc)
                self.stats.failures += 1
                return False
            except KlinesError as exc:
                claimed.remove(w_lo, end)  # this window and everything after it in the request
                self._failed(s, w_lo, end, exc)
                return False
            self.stats.pages += 1
            self.stats.candles += len(page)
            self.stats.to_fetch -= count_open_times(s.interval, w_lo, w_hi + 1)
            for a, b in _absent(s.interval, w_lo, w_hi + 1, page):
                absent.add(a, b)
            if page:
                await self._send.send(page)
        self.ledger.clear(s, lo, hi)  # what came back is no exchange gap, whatever an earlier run thought
        for a, b in absent:
            self.ledger.suspect(s, a, b)
            self.stats.suspected += 1
            n = count_open_times(s.interval, a, b)
            log.warning("%s: no candles %s (%d); checking again before calling it an exchange gap",
                        s, iso_range(a, b), n, extra=_fields(s, a, b, n))  # fmt: skip
            self._again(_Job(s, a, b, check=True, attempt=1))
        await self._save_ledger()
        return True

    # --- checks of suspected exchange gaps ------------------------------------------------------

    async def _check(self, job: _Job) -> None:
        """Ask for the suspected range ``[a, b)`` again with the candle on each side; confirm, clear or
        check it again (see the module's docstring)."""
        s, a, b = job.series, job.start, job.end
        assert b is not None
        if self.ledger.ranges(s).covers(a, b):
            return  # confirmed meanwhile, by the check of a range it touches
        # Suspected ranges that touch are one absence (pages cut it in parts): checked whole, so that the
        # candles on both of its sides are asked for, not a missing one in the middle of it.
        a, b = next(((lo, hi) for lo, hi in self.ledger.suspected(s) if lo <= a and b <= hi), (a, b))
        self.stats.checks += 1
        before = floor_open_time(s.interval, a - 1)
        client = self._clients[s.market]
        try:
            now = await client.server_time()
            if next_open_time(s.interval, b) > now:  # the candle after the range has not closed yet
                self._again(dataclasses.replace(job, attempt=job.attempt + 1, heads=0))
                return
            windows = list(page_windows(s.interval, before, next_open_time(s.interval, b)))
            page = [c for lo, hi in windows
                    for c in await client.klines(s.symbol, s.interval, lo, hi, closed_before=now)]  # fmt: skip
        except BinanceError as exc:
            log.error("check of %s refused by Binance: %s", s, exc)
            self.stats.failures += 1
            self._claimed.setdefault(s, RangeSet()).remove(a, b)
            return
        except KlinesError as exc:
            log.warning("check of %s %s failed (%s); trying again later", s, iso_range(a, b), exc,
                        extra=_fields(s, a, b))  # fmt: skip
            self._again(dataclasses.replace(job, attempt=job.attempt + 1, heads=0))
            return
        self.stats.pages += len(windows)
        times = {c.open_time for c in page}
        inside = [c for c in page if a <= c.open_time < b]
        if inside:
            self.stats.candles += len(inside)
            self.stats.recovered += len(inside)
            log.warning("%s: %d candles %s a page had lacked came now: a transient fault of the exchange",
                        s, len(inside), iso_range(a, b), extra=_fields(s, a, b, len(inside)))  # fmt: skip
            await self._send.send(inside)
        self.ledger.clear(s, a, b)
        confirmed = self.ledger.ranges(s)

        def present(t: int) -> bool:  # a candle, or a confirmed gap: confirmed with a candle past it
            return t in times or confirmed.covers(t, t + 1)

        for x, y in _absent(s.interval, a, b, inside):
            self._judge(job, x, y, x > a or present(before), y < b or present(b))
        await self._save_ledger()

    def _judge(self, job: _Job, x: int, y: int, candle_before: bool, candle_after: bool) -> None:
        """Confirm ``[x, y)``, which a check of ``job`` found empty, or suspect it and check it again."""
        s = job.series
        heads = job.heads + 1 if candle_after and not candle_before else 0
        if candle_after and (candle_before or heads >= HEAD_CHECKS):
            self.ledger.confirm(s, x, y)
            n = count_open_times(s.interval, x, y)
            self.stats.exchange_gaps += 1
            self.stats.exchange_gap_candles += n
            log.warning("exchange gap: %s has no candles %s (%d), confirmed", s, iso_range(x, y), n,
                        extra=_fields(s, x, y, n))  # fmt: skip
            return
        self.ledger.suspect(s, x, y)
        self._again(dataclasses.replace(job, start=x, end=y, attempt=job.attempt + 1, heads=heads))

    # --- the ledger file and failures -----------------------------------------------------------

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
        log.error("backfill of %s from %s failed (%s); retrying in %.0fs", s, iso_ms(start), exc, self._retry_delay,
                  extra=_fields(s, start, end))  # fmt: skip
        if self._nursery is not None:
            self._nursery.start_soon(self._retry_later, s, start, end)

    async def _retry_later(self, s: Series, start: int, end: int | None) -> None:
        await trio.sleep(self._retry_delay)
        self.request(s, start, end)


def _absent(interval: str, start: int, end: int, page: Sequence[Candle]) -> Iterator[tuple[int, int]]:
    """The runs ``[a, b)`` of open times in ``[start, end)`` that ``page`` does not hold."""
    got = {c.open_time for c in page}
    run: int | None = None
    for t in iter_open_times(interval, start, end):
        if t in got:
            if run is not None:
                yield run, t
            run = None
        elif run is None:
            run = t
    if run is not None:
        yield run, end


def _fields(s: Series, start: int, end: int | None, candles: int | None = None) -> dict[str, object]:
    """A log line's fields for ``--log-format json``: the series and the range (ISO-8601 UTC; an open end,
    up to the exchange's clock, is ``None``), and how many candles when the line counts them."""
    fields: dict[str, object] = {"series": str(s), "start": iso_ms(start), "end": None if end is None else iso_ms(end)}
    if candles is not None:
        fields["candles"] = candles
    return fields
