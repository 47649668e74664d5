"""The single consumer: batches closed candles from the channel into the store.

Each item on the channel is a batch (a sequence of candles), so a connection pays one channel send
per received chunk, not per candle. The writer drops repeats (the same open time with the same values;
with other values the candle is written again and the later wins), reports gaps, and flushes when the batch
reaches ``flush_size`` candles or its oldest candle has waited ``flush_seconds``, or at once when it has
just caught up with a backlog (candles that queued in the channel while it wrote have waited already).

The store call runs in a worker thread (:func:`~trio_klines.pipeline.threads.run_in_thread`, which keeps a busy
event loop from starving that thread of the GIL), so the receive loops never wait on the disk. The
writer keeps receiving meanwhile (two tasks: one receives, one flushes), so a candle's wait starts when
it arrives, not when the previous write ends. Each batch is reported (``on_written``) as soon as the
store returns; the store's sealing of its landing files into the series' files is done afterwards, in
small steps between flushes.

Failure and backpressure: when a flush fails (disk full, I/O error, permissions, any
:class:`~trio_klines.errors.StoreError`) the writer logs it, keeps the whole batch and retries with
capped backoff, while it goes on receiving up to ``max_pending`` candles. Past that it stops receiving,
the bounded channel fills, and the connections block on their sends: memory stays bounded and nothing
already received is dropped. A candle is dropped only when the store refuses it (not a valid candle,
:mod:`trio_klines.core.validity`: retrying cannot help): the store names each one it refuses
(:class:`~trio_klines.store.batches.RefusedCandles`), the writer counts them in ``rejected``, logs them
(a summary at most once a minute) and writes the rest at once. A sink that refuses a batch without naming
candles loses that batch. A candle is lost only if the process dies while it is pending; the gap-free
record (backfill) repairs that on restart.

The rules above (when to flush, seal, wait or stop; when to stop receiving) are the pure
:class:`~trio_klines.core.flushing.FlushPolicy`; the two tasks here only carry out what it says.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

from ..config import WriterSettings
from ..core.backoff import Backoff
from ..core.flushing import Action, FlushPolicy, FlushState
from ..core.gaps import ContinuityTracker, Gap, Verdict
from ..core.histogram import FLUSH_BUCKETS, LATENCY_BUCKETS, Histogram
from ..core.markets import Series, next_open_time
from ..core.parse import Candle
from ..core.throttle import LogThrottle
from ..core.validity import candle_problem, describe
from ..errors import InvalidCandles, KlinesError, RefusedCandles
from .threads import run_in_thread

__all__ = ["CandleSink", "SinkRunner", "WriterStats", "call_inline", "run_writer"]

log = logging.getLogger("trio_klines.writer")

#: A step of deferred sealing: at most this many files, stopping once they hold this many rows, so that
#: a due flush waits for one step at most (~0.05 s: a growing segment costs about 0.4 ms to rewrite).
SEAL_STEP_FILES: Final = 128
SEAL_STEP_ROWS: Final = 200_000
#: How long a final flush may take when the writer is cancelled.
FINAL_FLUSH_GRACE: Final = 10.0
#: At most one log line per this many seconds about refused candles (each one is counted).
REJECTED_LOG_EVERY: Final = 60.0
#: What a candle that breaks the continuity tracker can raise (a bad open time, a value that cannot be
#: hashed, not a candle at all): judged by core.validity, refused if it is not valid, a bug otherwise.
_BAD_CANDLE_ERRORS: Final = (TypeError, ValueError, OverflowError, AttributeError, KeyError, RecursionError)


class CandleSink(Protocol):
    """Where batches go: :class:`trio_klines.store.dataset.Store` in production. Durable when it returns.

    A sink may also defer its own upkeep (the store does): ``append(candles, seal=False)``,
    ``seal_debt()`` and ``seal_due(max_files, max_rows)`` (see :meth:`trio_klines.store.dataset.Store.seal_due`).
    The writer then reports each batch as soon as it is durable and does the sealing in small steps
    between flushes, off the batches' latency, while it goes on receiving.

    ``append`` raises :class:`~trio_klines.errors.InvalidCandles` for a batch it refuses: with
    ``refused`` naming candles (:class:`~trio_klines.store.batches.RefusedCandles`) those are dropped and
    the rest appended again; otherwise the batch is dropped. :class:`OSError` or another
    :class:`~trio_klines.errors.KlinesError` is a write that failed (kept and retried); anything else is
    taken for a bug and ends the writer.
    """

    def append(self, candles: Sequence[Candle]) -> object: ...


@dataclass(slots=True)
class WriterStats:
    received: int = 0
    written: int = 0
    duplicates: int = 0
    revised: int = 0  # an open time seen before, with other values (or too long ago to compare): written again
    late: int = 0
    gaps: int = 0
    missing_candles: int = 0
    flushes: int = 0
    write_errors: int = 0
    rejected: int = 0
    pending: int = 0
    last_error: str | None = None
    last_open_time: dict[Series, int] = field(default_factory=dict)
    #: Seconds from a candle's close to durable, for the newest closed candle of its series when it became
    #: durable (one per series and flush): live latency, which the catch-up's history would drown.
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    #: Seconds each successful append to the sink took.
    flush_seconds: Histogram = field(default_factory=lambda: Histogram(FLUSH_BUCKETS))
    #: Wall-clock time (s) of the first failed write of the failures going on now; ``None`` while writes succeed.
    failing_since: float | None = None


GapHandler = Callable[[Gap], None]
WrittenHandler = Callable[[list[Candle]], Awaitable[None]]
#: How the writer calls the sink: in a worker thread by default (:func:`~trio_klines.pipeline.threads.run_in_thread`).
#: Tests on a MockClock call it inline, since time jumps while the event loop waits for a thread.
SinkRunner = Callable[[Callable[[list[Candle]], object], list[Candle]], Awaitable[object]]


async def call_inline(fn: Callable[[list[Candle]], object], batch: list[Candle]) -> object:
    """A :data:`SinkRunner` that calls the sink on the event loop's thread."""
    return fn(batch)


class _Changed:
    """Wakes every task that waits for the writer's state to change: a condition variable without a lock.

    A ``trio.Event`` is one-shot, so signalling a change meant setting it and making a new one that the
    next waiter had to fetch: a condition variable built by hand. ``trio.Condition`` brings a lock that
    this state does not need (both tasks run on the event loop's thread and change it only between
    checkpoints) and that the synchronous code that signals could not take. Its building block,
    trio's parking lot, is exactly what is left: :meth:`wait` parks, :meth:`notify` wakes the tasks
    parked now; a task that starts waiting later waits for the next change.
    """

    __slots__ = ("_lot",)

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()

    def notify(self) -> None:
        self._lot.unpark_all()

    async def wait(self) -> None:
        """Until the next :meth:`notify`. Raises ``trio.Cancelled`` if cancelled meanwhile."""
        await self._lot.park()


class _Writer:
    """One run of the writer: the state its two tasks share, by name, and what each task does.

    The receive task moves batches from the channel into ``pending``; the flush task hands ``pending``
    to the sink. Each asks ``policy`` what to do, and signals ``changed`` after a change the other
    may be waiting for.
    """

    def __init__(
        self,
        receive: trio.MemoryReceiveChannel[Sequence[Candle]],
        sink: CandleSink,
        settings: WriterSettings,
        tracker: ContinuityTracker,
        stats: WriterStats,
        run_sink: SinkRunner,
        rng: random.Random,
        *,
        on_gap: GapHandler | None,
        on_written: WrittenHandler | None,
        on_caught_up: Callable[[], None] | None,
        expected_gap: Callable[[Gap], bool] | None = None,
    ) -> None:
        self.receive = receive
        self.tracker = tracker
        self.stats = stats
        self.run_sink = run_sink
        self.policy = FlushPolicy(settings.flush_size, settings.flush_seconds, settings.max_pending)
        self.backoff = Backoff(settings.retry_initial, settings.retry_max, rng=rng)
        self.on_gap, self.on_written, self.on_caught_up = on_gap, on_written, on_caught_up
        self.expected_gap = expected_gap
        self.append: Callable[[list[Candle]], object] = sink.append
        seal_due, seal_debt = getattr(sink, "seal_due", None), getattr(sink, "seal_debt", None)
        self.seal_due: Callable[[int, int], float] | None = None
        self.seal_debt: Callable[[], float] | None = None
        if callable(seal_due) and callable(seal_debt):  # the sink defers its sealing to us
            self.append = functools.partial(sink.append, seal=False)  # type: ignore[call-arg]
            self.seal_due, self.seal_debt = seal_due, seal_debt
        self.pending: list[Candle] = []
        self.first_pending_at = math.inf  # when the oldest pending candle arrived
        self.overdue = False  # pending holds candles that queued in the channel while receiving was held
        self.retry_at = -math.inf  # no write before this: the last one failed
        self.debt = 0.0  # sealing owed (see Store.seal_debt): above 1, it goes before a flush
        self.busy = 0  # candles in the sink's hands (being written or reported), for stats.pending
        self.open_channel = True
        self.changed = _Changed()
        self.names: dict[tuple[str, str, str], Series] = {}  # a plain tuple and a lookup cost less than a Series
        self.log_throttle = LogThrottle(REJECTED_LOG_EVERY)
        self.unlogged_rejects = 0  # refused candles counted since the last log line about them

    # --- the receive task ------------------------------------------------------------------------

    async def receive_loop(self) -> None:
        """Take batches from the channel into ``pending`` until the channel ends, holding as the policy says.

        Raises what ``on_gap`` or ``on_caught_up`` raise; ``trio.Cancelled`` when cancelled (what was
        taken is in ``pending``).
        """
        receive, holds, now = self.receive, self.policy.holds_receiving, trio.current_time
        backlog = False  # taking what queued in the channel while this loop was held back
        while True:
            if holds(len(self.pending), self.retry_at, now()):
                await self.changed.wait()
                backlog = receive.statistics().current_buffer_used > 0
                continue
            try:
                batch = await receive.receive()
            except trio.EndOfChannel:
                self.open_channel = False
                self.changed.notify()
                if self.on_caught_up is not None:
                    self.on_caught_up()
                return
            self.accept(batch)
            if (backlog or self.on_caught_up is not None) and not receive.statistics().current_buffer_used:
                if backlog:
                    # Caught up: these candles have waited in the channel already; starting their flush
                    # clock now would make the last batch of a burst wait flush_seconds more.
                    backlog = False
                    self.overdue = bool(self.pending)
                    self.changed.notify()
                if self.on_caught_up is not None:
                    self.on_caught_up()

    def accept(self, batch: Sequence[Candle]) -> None:
        """Count ``batch``, drop its repeats, report its gaps, and add the rest to ``pending``."""
        stats, pending, names, observe = self.stats, self.pending, self.names, self.tracker.observe
        was_empty = not pending
        stats.received += len(batch)
        for candle in batch:
            try:
                name = (candle.market, candle.symbol, candle.interval)
                series = names.get(name) or names.setdefault(name, Series(*name))
                verdict, gap = observe(series, candle.open_time, hash(candle))
            except _BAD_CANDLE_ERRORS:
                problem = candle_problem(candle)
                if problem is not None and candle_problem(candle, exact=True) is None:
                    problem = None  # a valid candle of a store of exact numbers
                if problem is None:
                    raise  # a valid candle the tracker cannot take: a bug
                self.rejected(1, f"{problem}: {describe(candle)}")
                continue
            if verdict is Verdict.DUPLICATE:
                stats.duplicates += 1
                continue
            if verdict is Verdict.LATE:
                stats.late += 1
            elif verdict is Verdict.REVISED:
                stats.revised += 1
            if gap is not None:
                self.gap_found(gap)
            pending.append(candle)
        stats.pending = len(pending) + self.busy
        if was_empty and pending:
            self.first_pending_at = trio.current_time()
            self.changed.notify()  # a new deadline
        elif len(pending) >= self.policy.flush_size:
            self.changed.notify()  # a full batch

    def rejected(self, count: int, why: str) -> None:
        """Count ``count`` refused candles and log them: a summary at most every :data:`REJECTED_LOG_EVERY` s."""
        self.stats.rejected += count
        self.stats.last_error = f"InvalidCandles: {why}"
        self.unlogged_rejects += count
        held = self.log_throttle.admit("rejected", trio.current_time())
        if held is None:
            return
        count, self.unlogged_rejects = self.unlogged_rejects, 0
        more = f" ({held} more refusals since the last report)" if held else ""
        log.error("the store refused %d candles and they are dropped: %s%s", count, why, more)

    def gap_found(self, gap: Gap) -> None:
        self.stats.gaps += 1
        self.stats.missing_candles += gap.candles
        if self.expected_gap is not None and self.expected_gap(gap):
            # The hole a restart leaves, which the start-up catch-up is already filling: not news.
            log.info("live again: %s, which the catch-up fills", gap)
        else:
            log.warning("gap: %s", gap)
        if self.on_gap is not None:
            self.on_gap(gap)

    # --- the flush task --------------------------------------------------------------------------

    async def flush_loop(self) -> None:
        """Flush, seal and wait as the policy says, until it says done.

        Raises what the sink raises that is neither a refusal nor a write failure (a bug), and what
        ``on_written`` raises; ``trio.Cancelled`` when cancelled (a batch not yet durable is pending again).
        """
        next_step, now = self.policy.next_step, trio.current_time
        while True:
            step = next_step(self.flush_state(), now())
            if step.action is Action.FLUSH:
                await self.flush()
            elif step.action is Action.SEAL:
                self.debt = await self.run_sink(self.seal_step, [])  # type: ignore[assignment]
            elif step.action is Action.DONE:
                return
            else:
                with trio.move_on_at(step.until):
                    await self.changed.wait()

    def flush_state(self) -> FlushState:
        return FlushState(
            len(self.pending), self.first_pending_at, self.overdue, self.retry_at, self.open_channel, self.debt
        )

    async def flush(self) -> bool:
        """Hand every pending candle to the sink. ``True`` once they left our hands (durable or refused),
        ``False`` if the write failed and they are pending again, to be retried after a backoff delay.

        Raises as :meth:`flush_loop`; if cancelled before the sink returned, the batch is pending again.
        """
        batch, first_at = self.pending, self.first_pending_at
        self.pending, self.first_pending_at, self.busy, self.overdue = [], math.inf, len(batch), False
        try:
            while batch:  # each refusal removes candles: at most one more call after the store names them
                started = trio.current_time()
                try:
                    await self.run_sink(self.append, batch)
                except InvalidCandles as exc:
                    batch = self.without_refused(batch, exc)
                    continue
                except (OSError, KlinesError) as exc:
                    self.give_back(batch, first_at)
                    self.write_failed(batch, exc)
                    return False
                except BaseException:  # cancelled, or a bug: the batch is still ours
                    self.give_back(batch, first_at)
                    raise
                self.stats.flush_seconds.observe(trio.current_time() - started)
                await self.written(batch)
                return True
            return True
        finally:
            self.busy = 0
            self.stats.pending = len(self.pending)
            self.changed.notify()  # room to receive again

    def without_refused(self, batch: list[Candle], exc: InvalidCandles) -> list[Candle]:
        """What is left of ``batch`` to write after the store refused ``exc.refused`` (all of it if it named none).

        Retrying refused candles cannot help: they are counted and dropped.
        """
        refused = exc.refused if isinstance(exc, RefusedCandles) else ()
        ids = {id(r.candle) for r in refused}
        rest = [c for c in batch if id(c) not in ids]
        if len(rest) == len(batch):  # it named no candle of this batch: the whole batch is refused
            rest = []
        why = f"{refused[0].reason}: {describe(refused[0].candle)}" if refused else str(exc)
        self.rejected(len(batch) - len(rest), why)
        return rest

    def give_back(self, batch: list[Candle], first_at: float) -> None:
        self.pending = batch + self.pending
        self.first_pending_at = min(first_at, self.first_pending_at)

    def write_failed(self, batch: list[Candle], exc: Exception) -> None:
        self.stats.write_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self.stats.failing_since is None:
            self.stats.failing_since = time.time()
        delay = self.backoff.next_delay()
        self.retry_at = trio.current_time() + delay
        log.error("writing %d candles failed (%s); keeping them, retry in %.1fs", len(batch), exc, delay)

    async def written(self, batch: list[Candle]) -> None:
        """Count a durable batch, learn the sealing owed, and report it (``on_written``)."""
        self.backoff.reset()
        stats = self.stats
        stats.failing_since = None
        stats.flushes += 1
        stats.written += len(batch)
        newest: dict[tuple[str, str, str], int] = {}
        for c in batch:
            if c.open_time > newest.get(name := (c.market, c.symbol, c.interval), -1):
                newest[name] = c.open_time
        edges: dict[tuple[str, int], int] = {}  # (interval, open time): series it is the new newest candle of
        for name, open_time in newest.items():
            key = self.names.get(name) or self.names.setdefault(name, Series(*name))
            if open_time > stats.last_open_time.get(key, -1):
                stats.last_open_time[key] = open_time
                edge = (name[2], open_time)
                edges[edge] = edges.get(edge, 0) + 1
        durable = time.time() * 1000
        for (interval, open_time), count in edges.items():  # the same latency for every series of a group
            close = next_open_time(interval, open_time)
            if durable < next_open_time(interval, close):  # still the newest closed candle of its interval
                stats.latency.observe(max(0.0, durable - close) / 1000, count)
        if self.seal_debt is not None:  # read between two calls in the worker thread: the sink is idle
            self.debt = float(self.seal_debt())
        if self.on_written is not None:
            await self.on_written(batch)

    def seal_step(self, _: list[Candle]) -> float:
        """One step of the sealing owed (run as the sink is); the debt left after it."""
        try:
            return float(self.seal_due(SEAL_STEP_FILES, SEAL_STEP_ROWS))  # type: ignore[misc]
        except (OSError, KlinesError) as exc:  # the store logs failed rounds itself and retries them later
            log.error("sealing after a write failed: %s", exc)
            return 0.0

    async def final_flush(self) -> None:
        """One last attempt to write what is pending, shielded, within :data:`FINAL_FLUSH_GRACE` seconds.

        Used on the way out (cancelled, or the other task failed). Raises as :meth:`flush`.
        """
        if not self.pending:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH_GRACE):
            if not await self.flush():
                log.error("%d received candles could not be written before shutdown", len(self.pending))


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
    on_caught_up: Callable[[], None] | None = None,
    rng: random.Random | None = None,
    expected_gap: Callable[[Gap], bool] | None = None,
) -> None:
    """Consume ``receive`` until it is closed and empty, writing every new candle to ``sink``.

    Returns after the final flush once every sender has closed. If cancelled, it makes one last
    shielded attempt (at most :data:`FINAL_FLUSH_GRACE` seconds) to flush what it holds, then lets the
    cancellation through. ``on_written`` is awaited with each durable batch (for embedders); a slow
    one slows the writer, it never loses candles.

    Receiving goes on while the sink writes (up to ``flush_size`` candles, or ``max_pending`` while
    the disk fails), so a candle's wait starts when it arrives, not when the previous write ends.
    ``on_caught_up`` is called each time the writer has just taken a batch and left the channel empty,
    and once more when the channel ends: a caller can wait for the writer to drain without polling.
    ``rng`` draws the jitter of the retry delays (seed it for deterministic tests). A gap for which
    ``expected_gap`` is true (one a start-up catch-up is filling) is logged at INFO, not as a warning.

    Raises:
      trio.Cancelled: when cancelled, after the final flush.
      ExceptionGroup: around a bug: an error raised by a callback, or a sink error that is neither
        :class:`~trio_klines.errors.InvalidCandles` (the batch is dropped and counted in ``rejected``)
        nor an :class:`OSError` or :class:`~trio_klines.errors.KlinesError` (the batch is kept, the
        write retried and counted in ``write_errors``). The batch a bug interrupted is still pending,
        so the final flush tries it once more; if the sink fails the same way again, that error
        propagates instead, bare, chained to the group.
    """
    settings = settings or WriterSettings()
    stats = stats if stats is not None else WriterStats()
    tracker = tracker or ContinuityTracker()
    writer = _Writer(
        receive,
        sink,
        settings,
        tracker,
        stats,
        run_sink,
        rng or random.Random(),
        on_gap=on_gap,
        on_written=on_written,
        on_caught_up=on_caught_up,
        expected_gap=expected_gap,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.flush_loop)
            await writer.receive_loop()
    finally:
        await writer.final_flush()
