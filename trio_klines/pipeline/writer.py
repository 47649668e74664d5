"""The single consumer: batches closed candles from the channel into the store.

Each item on the channel is a batch (a sequence of candles), so a connection pays one channel send
per received chunk, not per candle. The writer drops repeats, reports gaps, and flushes when the batch
reaches ``flush_size`` candles or its oldest candle has waited ``flush_seconds``, or at once when it has
just caught up with a backlog (candles that queued in the channel while it wrote have waited already).

The store call runs in a worker thread (:func:`~trio_klines.pipeline.threads.run_in_thread`, which keeps a busy
event loop from starving that thread of the GIL), so the receive loops never wait on the disk. The
writer keeps receiving meanwhile (two tasks: one receives, one flushes), so a candle's wait starts when
it arrives, not when the previous write ends. Each batch is reported (``on_written``) as soon as the
store returns; the merges that the store's automatic compaction owes for it are done afterwards, in
small steps between flushes.

Failure and backpressure: when a flush fails (disk full, I/O error, permissions) the writer logs it,
keeps the whole batch and retries with capped backoff, while it goes on receiving up to
``max_pending`` candles. Past that it stops receiving, the bounded channel fills, and the connections
block on their sends: memory stays bounded and nothing already received is dropped. A candle is lost
only if the process dies while it is pending; the gap-free record (backfill) repairs that on restart.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

from ..config import WriterSettings
from ..core.backoff import Backoff
from ..core.gaps import ContinuityTracker, Gap, Verdict
from ..core.markets import Series
from ..core.parse import Candle
from ..errors import KlinesError
from .threads import run_in_thread

__all__ = ["CandleSink", "SinkRunner", "WriterStats", "call_inline", "run_writer"]

log = logging.getLogger("trio_klines.writer")

#: A step of deferred compaction: at most this many merges, stopping once they have read this many rows
#: (a closed period of 1m candles is 43,200), so that a due flush waits for one step at most (~0.1 s).
COMPACTION_STEP: Final = 8
COMPACTION_STEP_ROWS: Final = 50_000
#: How long a final flush may take when the writer is cancelled.
FINAL_FLUSH_GRACE: Final = 10.0


class CandleSink(Protocol):
    """Where batches go: :class:`trio_klines.store.dataset.Store` in production. Durable when it returns.

    A sink may also defer its own upkeep (the store does): ``append(candles, compact=False)``,
    ``compaction_debt()`` and ``compact_due(max_merges)`` (see :meth:`trio_klines.store.dataset.Store.compact_due`).
    The writer then reports each batch as soon as it is durable and does the merges it paid for in
    small steps between flushes, off the batches' latency, while it goes on receiving.
    """

    def append(self, candles: Sequence[Candle]) -> object: ...


@dataclass(slots=True)
class WriterStats:
    received: int = 0
    written: int = 0
    duplicates: int = 0
    late: int = 0
    gaps: int = 0
    missing_candles: int = 0
    flushes: int = 0
    write_errors: int = 0
    rejected: int = 0
    pending: int = 0
    last_error: str | None = None
    last_open_time: dict[Series, int] = field(default_factory=dict)


GapHandler = Callable[[Gap], None]
WrittenHandler = Callable[[list[Candle]], Awaitable[None]]
#: How the writer calls the sink: in a worker thread by default (:func:`~trio_klines.pipeline.threads.run_in_thread`).
#: Tests on a MockClock call it inline, since time jumps while the event loop waits for a thread.
SinkRunner = Callable[[Callable[[list[Candle]], object], list[Candle]], Awaitable[object]]


async def call_inline(fn: Callable[[list[Candle]], object], batch: list[Candle]) -> object:
    """A :data:`SinkRunner` that calls the sink on the event loop's thread."""
    return fn(batch)


async def run_writer(
    receive: trio.MemoryReceiveChannel[Sequence[Candle]],
    sink: CandleSink,
    *,
    settings: WriterSettings | None = None,
    tracker: ContinuityTracker | None = None,
    stats: WriterStats | None = None,
    on_gap: GapHandler | None = None,
    on_written: WrittenHandler | None = None,
    run_sink: SinkRunner = run_in_thread,
) -> None:
    """Consume ``receive`` until it is closed and empty, writing every new candle to ``sink``.

    Returns after the final flush once every sender has closed. If cancelled, it makes one last
    shielded attempt (at most :data:`FINAL_FLUSH_GRACE` seconds) to flush what it holds, then lets the
    cancellation through. ``on_written`` is awaited with each durable batch (for embedders); a slow
    one slows the writer, it never loses candles.

    Receiving goes on while the sink writes (up to ``flush_size`` candles, or ``max_pending`` while
    the disk fails), so a candle's wait starts when it arrives, not when the previous write ends.
    """
    settings = settings or WriterSettings()
    tracker = tracker or ContinuityTracker()
    stats = stats if stats is not None else WriterStats()
    backoff = Backoff(settings.retry_initial, settings.retry_max)
    append: Callable[[list[Candle]], object] = sink.append
    compact_due = getattr(sink, "compact_due", None)
    compaction_debt = getattr(sink, "compaction_debt", None)
    deferring = callable(compact_due) and callable(compaction_debt)
    if deferring:
        append = functools.partial(sink.append, compact=False)  # type: ignore[call-arg]
    debt = 0.0  # merges owed, in appends (see Store.compaction_debt): above 1, they go before a flush
    pending: list[Candle] = []
    first_pending_at = math.inf
    retry_at = -math.inf
    overdue = False  # the batch holds candles that queued in the channel while receiving was held back
    open_channel = True
    busy = 0  # candles in the sink's hands (being written or reported), for stats.pending
    changed = trio.Event()

    def kick() -> None:
        """Wake whichever task waits for the other (an event per change: trio events are one-shot)."""
        nonlocal changed
        changed.set()
        changed = trio.Event()

    names: dict[tuple[str, str, str], Series] = {}  # a plain tuple and a lookup cost less than a Series

    def series_of(market: str, symbol: str, interval: str) -> Series:
        name = (market, symbol, interval)
        found = names.get(name)
        if found is None:
            found = names[name] = Series(market, symbol, interval)
        return found

    def accept(batch: Sequence[Candle]) -> None:
        nonlocal first_pending_at
        was_empty = not pending
        stats.received += len(batch)
        for candle in batch:
            series = series_of(candle.market, candle.symbol, candle.interval)
            verdict, gap = tracker.observe(series, candle.open_time)
            if verdict is Verdict.DUPLICATE:
                stats.duplicates += 1
                continue
            if verdict is Verdict.LATE:
                stats.late += 1
            if gap is not None:
                stats.gaps += 1
                stats.missing_candles += gap.candles
                log.warning("gap: %s", gap)
                if on_gap is not None:
                    on_gap(gap)
            if not pending:
                first_pending_at = trio.current_time()
            pending.append(candle)
        stats.pending = len(pending) + busy
        if (was_empty and pending) or len(pending) >= settings.flush_size:
            kick()  # a new deadline, or a full batch

    def compaction_step(_: list[Candle]) -> float:
        try:
            return float(compact_due(COMPACTION_STEP, COMPACTION_STEP_ROWS))  # type: ignore[misc]
        except (OSError, KlinesError) as exc:  # the store logs failed merges itself and retries them later
            log.error("compaction after a write failed: %s", exc)
            return 0.0

    async def flush() -> bool:
        nonlocal pending, first_pending_at, retry_at, busy, debt, overdue
        batch, batch_first_at = pending, first_pending_at
        pending, first_pending_at, busy, overdue = [], math.inf, len(batch), False
        done = False
        try:
            try:
                await run_sink(append, batch)
                done = True
            except ValueError as exc:
                # The store refuses these candles (its InvalidCandles): retrying cannot help. Say so loudly.
                done = True
                stats.rejected += len(batch)
                stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("the store refused %d candles and they are dropped: %s", len(batch), exc)
                return True
            except (OSError, KlinesError) as exc:
                # Disk and store errors are retried; anything else is a bug and propagates.
                stats.write_errors += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff.next_delay()
                retry_at = trio.current_time() + delay
                log.error("writing %d candles failed (%s); keeping them, retry in %.1fs", len(batch), exc, delay)
                return False
            finally:
                if not done:  # failed or cancelled before the sink finished: the batch is still ours
                    pending = batch + pending
                    first_pending_at = min(batch_first_at, first_pending_at)
            backoff.reset()
            stats.flushes += 1
            stats.written += len(batch)
            newest: dict[tuple[str, str, str], int] = {}
            for c in batch:
                if c.open_time > newest.get(name := (c.market, c.symbol, c.interval), -1):
                    newest[name] = c.open_time
            for name, open_time in newest.items():
                key = series_of(*name)
                if open_time > stats.last_open_time.get(key, -1):
                    stats.last_open_time[key] = open_time
            if deferring:  # read between two calls in the worker thread: nothing else touches the sink
                debt = float(compaction_debt())  # type: ignore[misc]
            if on_written is not None:
                await on_written(batch)
            return True
        finally:
            busy = 0
            stats.pending = len(pending)
            kick()  # room to receive again

    async def flush_loop() -> None:
        nonlocal debt
        while True:
            now = trio.current_time()
            if pending and now >= retry_at and debt <= 1:
                full = len(pending) >= settings.flush_size or overdue
                if full or now >= first_pending_at + settings.flush_seconds or not open_channel:
                    await flush()
                    continue
            if not pending and not open_channel and debt <= 0:
                return  # every sender is done, and so are the merges the last batches paid for
            if debt > 0:
                # Merges are done after the batch that paid for them is reported, a step at a time, so a
                # due flush waits for one step at most (unless they fall more than an append behind).
                debt = await run_sink(compaction_step, [])  # type: ignore[assignment]
                continue
            due = max(first_pending_at + settings.flush_seconds, retry_at) if open_channel else retry_at
            with trio.move_on_at(due if pending else math.inf):
                await changed.wait()

    async def receive_loop() -> None:
        nonlocal open_channel, overdue
        backlog = False  # taking what queued in the channel while this loop was held back
        while True:
            # Bounded memory: hold at one full batch (the flusher takes it as soon as the sink is free),
            # at max_pending while the disk fails; beyond that the channel fills and the connections wait.
            failing = trio.current_time() < retry_at
            if len(pending) >= settings.max_pending or (len(pending) >= settings.flush_size and not failing):
                await changed.wait()
                backlog = receive.statistics().current_buffer_used > 0
                continue
            try:
                batch = await receive.receive()
            except trio.EndOfChannel:
                open_channel = False
                kick()
                return
            accept(batch)
            if backlog and not receive.statistics().current_buffer_used:
                # Caught up: these candles have waited in the channel already; starting their flush
                # clock now would make the last batch of a burst wait flush_seconds more.
                backlog = False
                overdue = bool(pending)
                kick()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush_loop)
            await receive_loop()
    finally:
        if pending:
            with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH_GRACE):
                if not await flush():
                    log.error("%d received candles could not be written before shutdown", len(pending))
