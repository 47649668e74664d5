"""The writer task: batching, dedupe, gaps, failing disks, shutdown. Deterministic time (MockClock)."""

from __future__ import annotations

import logging
import math
import os
import random
import time
import types
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import trio
import trio.testing

import trio_klines.pipeline.threads
from trio_klines.config import WriterSettings
from trio_klines.core.gaps import ContinuityTracker, Gap
from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.core.validity import MAX_OPEN_TIME
from trio_klines.errors import InvalidCandles
from trio_klines.pipeline.threads import run_in_thread
from trio_klines.pipeline.writer import SEAL_STEP_FILES, SEAL_STEP_ROWS, WriterStats, call_inline, run_writer
from trio_klines.store import landing
from trio_klines.store.dataset import Store, load

from fakes import MemorySink

pytestmark = pytest.mark.timeout(10)
BTC = Series("spot", "BTCUSDT", "1m")


def write(
    receive: trio.MemoryReceiveChannel[Sequence[Candle]], sink: MemorySink, **kwargs: Any
) -> Coroutine[Any, Any, None]:
    """The writer with the sink called inline: time jumps on a MockClock while a thread runs."""
    return run_writer(receive, sink, run_sink=call_inline, **kwargs)


def candle(minute: int, symbol: str = "BTCUSDT", close: float = 2.0) -> Candle:
    return Candle("spot", symbol, "1m", minute * 60_000, 2, 3, 1, close, 5, 10, 9, 1, 2)


async def test_flushes_on_age(autojump_clock: trio.testing.MockClock) -> None:
    sink, stats = MemorySink(), WriterStats()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: write(receive, sink, settings=WriterSettings(flush_seconds=1.0), stats=stats))
        await send.send([candle(1)])
        await trio.sleep(0.5)
        await send.send([candle(2)])
        await trio.sleep(0.4)
        assert sink.batches == []  # the oldest has waited 0.9 s
        await trio.sleep(0.2)
        assert sink.batches == [[candle(1), candle(2)]]
        await send.aclose()
    assert stats.written == 2
    assert stats.flushes == 1


async def test_flushes_on_size(autojump_clock: trio.testing.MockClock) -> None:
    sink = MemorySink()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    settings = WriterSettings(flush_seconds=100, flush_size=3, max_pending=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: write(receive, sink, settings=settings))
        await send.send([candle(1), candle(2)])
        await trio.sleep(1)
        assert sink.batches == []
        await send.send([candle(3)])
        await trio.sleep(0.01)
        assert sink.batches == [[candle(1), candle(2), candle(3)]]
        await send.aclose()


async def test_end_of_channel_flushes_everything(autojump_clock: trio.testing.MockClock) -> None:
    sink = MemorySink()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with send:
        await send.send([candle(1)])
    with trio.fail_after(1):
        await write(receive, sink, settings=WriterSettings(flush_seconds=1000))
    assert sink.candles == [candle(1)]


async def test_drops_repeats_and_reports_gaps(autojump_clock: trio.testing.MockClock) -> None:
    sink, stats, gaps = MemorySink(), WriterStats(), list[Gap]()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with send:
        await send.send([candle(1), candle(2), candle(2), candle(5)])  # repeat, then 3 and 4 missing
        await send.send([candle(3), candle(1)])  # 3 arrives late; 1 again
    await write(receive, sink, stats=stats, on_gap=gaps.append)
    assert sink.candles == [candle(1), candle(2), candle(5), candle(3)]
    assert gaps == [Gap(BTC, 3 * 60_000, 5 * 60_000)]
    assert (stats.received, stats.duplicates, stats.late, stats.gaps, stats.missing_candles) == (6, 2, 1, 1, 2)
    assert stats.last_open_time[BTC] == 5 * 60_000


async def test_a_seeded_tracker_reports_the_hole_since_the_stored_record(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tracker = ContinuityTracker()
    tracker.seed(BTC, 10 * 60_000)
    gaps: list[Gap] = []
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with send:
        await send.send([candle(10), candle(14)])
    sink = MemorySink()
    await write(receive, sink, tracker=tracker, on_gap=gaps.append)
    assert sink.candles == [candle(14)]
    assert gaps == [Gap(BTC, 11 * 60_000, 14 * 60_000)]


class CeilingJitter(random.Random):
    """Full jitter that always draws its ceiling: the writer's retry delays are 1, 2, 2… s, deterministic."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_a_failing_disk_keeps_the_batch_and_retries(autojump_clock: trio.testing.MockClock) -> None:
    # Fails at 0.1 s (the flush), then retries at 1.1 and 3.1 (both fail), and writes at 5.1. With the
    # jitter drawn from an unseeded generator, the three failures could all pass before the check at 1 s.
    sink, stats = MemorySink(), WriterStats()
    sink.fail = 3
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    settings = WriterSettings(flush_seconds=0.1, retry_initial=1, retry_max=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: write(receive, sink, settings=settings, stats=stats, rng=CeilingJitter()))
        await send.send([candle(1)])
        await trio.sleep(0.5)
        await send.send([candle(2)])  # still received while the disk is failing
        await trio.sleep(0.5)
        assert sink.batches == []
        assert stats.write_errors >= 1
        assert stats.write_errors == 1
        assert "No space left" in (stats.last_error or "")
        await trio.sleep(10)
        await send.aclose()
    assert sink.candles == [candle(1), candle(2)]
    assert stats.write_errors == 3
    assert stats.pending == 0


async def test_backpressure_when_too_much_is_pending(autojump_clock: trio.testing.MockClock) -> None:
    sink = MemorySink()
    sink.fail = 1_000_000
    send, receive = trio.open_memory_channel[Sequence[Candle]](1)
    settings = WriterSettings(flush_seconds=0.1, flush_size=2, max_pending=4, retry_initial=1, retry_max=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: write(receive, sink, settings=settings))
        for minute in range(1, 6):
            await send.send([candle(minute)])
        with trio.move_on_after(5) as blocked:
            await send.send([candle(6)])  # the writer holds 4 and one is buffered: this blocks
        assert blocked.cancelled_caught
        sink.fail = 0
        await send.send([candle(6)])
        await send.aclose()
    assert [c.open_time // 60_000 for c in sink.candles] == [1, 2, 3, 4, 5, 6]


async def test_cancellation_flushes_what_was_received(autojump_clock: trio.testing.MockClock) -> None:
    sink = MemorySink()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: write(receive, sink, settings=WriterSettings(flush_seconds=1000)))
        await send.send([candle(1), candle(2)])
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert sink.candles == [candle(1), candle(2)]


async def test_durable_batches_reach_an_embedder(autojump_clock: trio.testing.MockClock) -> None:
    sink, seen = MemorySink(), list[list[Candle]]()

    async def on_written(batch: list[Candle]) -> None:
        seen.append(batch)

    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with send:
        await send.send([candle(1), candle(1), candle(2)])
    await write(receive, sink, on_written=on_written)
    assert seen == sink.batches == [[candle(1), candle(2)]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="flush_seconds"):
        WriterSettings(flush_seconds=0)
    with pytest.raises(ValueError, match="flush_size"):
        WriterSettings(flush_size=10, max_pending=5)


async def test_the_default_runner_writes_from_a_worker_thread() -> None:
    sink = MemorySink()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with send:
        await send.send([candle(1), candle(2)])
    with trio.fail_after(5):
        await run_writer(receive, sink, settings=WriterSettings(flush_seconds=0.01))
    assert sink.candles == [candle(1), candle(2)]


class DeferringSink(MemorySink):
    """A sink that defers its sealing as the store does, logging every call in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.debt = 0.0

    def append(self, candles: Sequence[Candle], *, seal: bool = True) -> None:
        super().append(candles)
        self.calls.append(f"append seal={seal}")
        self.debt += 1.0

    def seal_debt(self) -> float:
        return self.debt

    def seal_due(self, max_files: int | None = None, max_rows: int | None = None) -> float:
        self.calls.append(f"seal_due {max_files} {max_rows}")
        self.debt = max(0.0, self.debt - 0.5)  # two steps per append's worth
        return self.debt


async def test_sealing_is_paid_after_the_batch_is_reported(autojump_clock: trio.testing.MockClock) -> None:
    sink = DeferringSink()

    async def on_written(batch: list[Candle]) -> None:
        sink.calls.append(f"reported {len(batch)}")

    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: write(receive, sink, settings=WriterSettings(flush_seconds=1), on_written=on_written)
        )
        await send.send([candle(1), candle(2)])
        await trio.sleep(5)
        await send.send([candle(3)])
        await send.aclose()
    step = f"seal_due {SEAL_STEP_FILES} {SEAL_STEP_ROWS}"
    assert sink.calls == [
        "append seal=False",
        "reported 2",
        step,
        step,  # while idle, step by step until nothing is owed
        "append seal=False",
        "reported 1",
        step,  # the channel is closed: what the last batch owes is paid before returning
        step,
    ]


async def test_a_candle_waits_from_its_arrival_even_while_a_write_is_under_way(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink, durable_at = MemorySink(), dict[int, float]()

    async def slow_disk(fn: Callable[[list[Candle]], object], batch: list[Candle]) -> object:
        await trio.sleep(0.5)  # each write takes half a second
        return fn(batch)

    async def on_written(batch: list[Candle]) -> None:
        durable_at.update((c.open_time // 60_000, trio.current_time()) for c in batch)

    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    settings = WriterSettings(flush_seconds=1.0)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(
            lambda: run_writer(receive, sink, settings=settings, run_sink=slow_disk, on_written=on_written)
        )
        await send.send([candle(1)])  # due at 1.0, durable at 1.5
        await trio.sleep(1.2)
        await send.send([candle(2)])  # arrives during that write: due at 2.2, durable at 2.7
        await trio.sleep(5)
        await send.aclose()
    assert durable_at[1] - start == pytest.approx(1.5)
    assert durable_at[2] - start == pytest.approx(2.7)


async def test_a_backlog_is_flushed_once_drained_not_after_another_flush_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A burst faster than the disk: the writer holds at flush_size while it writes, and the channel
    # queues the rest. Those candles have waited already: the last, partial batch goes as soon as the
    # channel is drained, not flush_seconds after the writer took its first candle.
    sink, durable_at = MemorySink(), list[tuple[float, int]]()

    async def slow_disk(fn: Callable[[list[Candle]], object], batch: list[Candle]) -> object:
        await trio.sleep(0.5)
        return fn(batch)

    async def on_written(batch: list[Candle]) -> None:
        durable_at.append((trio.current_time() - start, len(batch)))

    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    settings = WriterSettings(flush_seconds=60.0, flush_size=10, max_pending=100)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_writer(receive, sink, settings=settings, run_sink=slow_disk, on_written=on_written)
        )
        for minute in range(1, 26):  # 25 candles in one go
            send.send_nowait([candle(minute)])
        await trio.sleep(10)
        assert [n for _, n in durable_at] == [10, 10, 5]
        assert durable_at[-1][0] == pytest.approx(1.5)  # three writes in a row; not 60 s later
        # Back to normal: a lone candle waits its flush interval.
        await send.send([candle(26)])
        await trio.sleep(61)
        await send.aclose()
    assert durable_at[-1] == (pytest.approx(10 + 60 + 0.5), 1)


async def test_the_default_runner_hands_the_gil_to_its_thread_while_the_loop_is_busy() -> None:
    # A busy event loop (here: a task that checkpoints in a tight loop, each pass releasing and re-taking
    # the GIL in epoll) starves a worker thread that releases the GIL often; run_in_thread must not.
    def gil_hungry(rounds: int) -> int:
        for _ in range(rounds):
            os.getpid()  # each call releases the GIL and must win it back
            time.sleep(0)
        return rounds

    async def busy_loop(done: trio.Event) -> None:
        while not done.is_set():
            sum(range(3000))  # parsing frames, say
            await trio.lowlevel.checkpoint()

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(busy_loop, done)
        with trio.fail_after(5):  # ~0.4 s with the handoff; without it, still waiting at the 10 s timeout
            assert await run_in_thread(gil_hungry, 1000) == 1000
        done.set()


async def test_an_idle_loop_makes_no_gil_pauses_while_the_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Idle, the loop waits in epoll with the GIL released: a pause would only cost the loop its time.
    pauses: list[float] = []
    fake_time = types.SimpleNamespace(sleep=pauses.append)
    monkeypatch.setattr(trio_klines.pipeline.threads, "time", fake_time)
    assert await run_in_thread(lambda seconds: time.sleep(seconds) or seconds, 0.1) == 0.1
    assert pauses == []


async def test_the_default_runner_raises_the_sinks_error_as_it_is() -> None:
    # Not wrapped in an ExceptionGroup: the writer retries on OSError and store errors by their type.
    def full_disk(_: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await run_in_thread(full_disk, 0)
    assert await run_in_thread(lambda x: x + 1, 1) == 2


async def test_the_default_runner_cancelled_mid_call_still_returns_its_result() -> None:
    # As trio.to_thread.run_sync: the call finishes, its result is returned (the writer then knows the
    # batch is durable) and the cancellation comes at the next checkpoint.
    got: list[object] = []

    def slow(_: int) -> int:
        time.sleep(0.2)
        return 7

    async def call() -> None:
        got.append(await run_in_thread(slow, 0))
        await trio.lowlevel.checkpoint()
        got.append("not reached")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert got == [7]
    with trio.CancelScope() as scope:
        scope.cancel()
        await run_in_thread(got.append, "cancelled before: not run")
    assert got == [7]


async def test_caught_up_is_reported_each_time_the_channel_is_left_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # What the recorder waits on to know that the writer has taken everything sent so far, without polling.
    sink, stats, taken = MemorySink(), WriterStats(), list[int]()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    for minute in (1, 2, 3):
        send.send_nowait([candle(minute)])  # three batches queued before the writer starts
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: write(receive, sink, stats=stats, on_caught_up=lambda: taken.append(stats.received)))
        await trio.sleep(0.1)
        assert taken == [3]  # once, after the third batch: not while the channel still held some
        await send.send([candle(4), candle(5)])
        await trio.sleep(0.1)
        assert taken == [3, 5]
        await send.aclose()
    assert taken == [3, 5, 5]  # and once more as the channel ends
    assert sink.candles == [candle(m) for m in range(1, 6)]


class RefusingSink(MemorySink):
    """Refuses its next ``refuse`` batches as the store refuses bad candles."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = 0

    def append(self, candles: Sequence[Candle]) -> None:
        if self.refuse:
            self.refuse -= 1
            raise InvalidCandles("refusing the batch: 1 candle(s) of spot BTCUSDT 1m open off the grid")
        super().append(candles)


async def test_a_refused_batch_is_dropped_counted_and_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    sink, stats = RefusingSink(), WriterStats()
    sink.refuse = 1
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: write(receive, sink, settings=WriterSettings(flush_seconds=1), stats=stats))
        with caplog.at_level(logging.ERROR, logger="trio_klines.writer"):
            await send.send([candle(1), candle(2)])
            await trio.sleep(2)
        await send.send([candle(3)])
        await send.aclose()
    assert sink.candles == [candle(3)]  # retrying a refused batch cannot help
    assert (stats.rejected, stats.write_errors, stats.written) == (2, 0, 1)
    assert "InvalidCandles" in (stats.last_error or "")
    assert "the store refused 2 candles and they are dropped" in caplog.text


class BuggySink(MemorySink):
    """Raises ``error`` at its first append only."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    def append(self, candles: Sequence[Candle]) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        super().append(candles)


@pytest.mark.parametrize(
    "error", [ValueError("a bug"), pa.lib.ArrowInvalid("pyarrow, unmapped")], ids=["ValueError", "ArrowInvalid"]
)
async def test_a_value_error_that_is_not_a_refusal_is_a_bug_not_a_dropped_batch(
    autojump_clock: trio.testing.MockClock, error: Exception
) -> None:
    # Only InvalidCandles drops a batch. Any other ValueError (a raw pyarrow ArrowInvalid is one: a sink
    # must map its library's errors to ours) ends the writer, and its batch is still written at the exit.
    sink, stats = BuggySink(error), WriterStats()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    async with send:
        await send.send([candle(1), candle(2)])
    with pytest.RaisesGroup(type(error)):
        await write(receive, sink, stats=stats)
    assert stats.rejected == 0
    assert sink.candles == [candle(1), candle(2)]  # the final flush wrote what the bug left pending


async def test_a_pyarrow_failure_in_the_store_is_retried_and_loses_no_candle(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The store's table building raises pyarrow's ArrowInvalid (a ValueError) once. It used to reach the
    # writer as it was, taken for a refused batch: the whole batch was dropped. The store now maps it to
    # a StoreError, which the writer retries like any failed write.
    real, calls = landing.candles_to_table, list[int]()

    def fails_once(candles: Sequence[Candle], **kwargs: bool) -> pa.Table:
        calls.append(len(candles))
        if len(calls) == 1:
            raise pa.lib.ArrowInvalid("simulated pyarrow failure")
        return real(candles, **kwargs)

    monkeypatch.setattr(landing, "candles_to_table", fails_once)
    stats = WriterStats()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    settings = WriterSettings(flush_seconds=0.1, retry_initial=1, retry_max=1)
    with Store(tmp_path / "data") as store, caplog.at_level(logging.ERROR, logger="trio_klines.writer"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_writer(receive, store, settings=settings, stats=stats, run_sink=call_inline))
            await send.send([candle(1), candle(2)])
            await trio.sleep(0.5)
            assert stats.write_errors == 1  # counted, and the writer runs on
            await send.send([candle(3)])
            await trio.sleep(5)
            await send.aclose()
    frame = load(tmp_path / "data", "spot", "BTCUSDT", "1m")
    assert frame["close"].tolist() == [2.0, 2.0, 2.0]  # every candle, in the store
    assert (stats.written, stats.rejected, stats.write_errors) == (3, 0, 1)
    assert "StoreError" in (stats.last_error or "")
    assert "writing 2 candles failed" in caplog.text and "simulated pyarrow failure" in caplog.text


# --- issue 13: one refused candle never costs the batch; nothing a bad candle raises escapes --------


def nested(depth: int = 100_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def bad(**fields: object) -> Candle:
    return msgspec.structs.replace(candle(3), **fields)


BAD_CANDLES = {
    # What each raised in the writer or the store before: a crash of the writer, or the whole batch dropped.
    "TypeError": bad(open_time="180000"),  # the continuity tracker's arithmetic
    "OverflowError in the tracker": Candle("spot", "BTCUSDT", "1M", 10**30, 2, 3, 1, 2, 5, 10, 9, 1, 2),
    "OverflowError in the table": bad(trade_num=2**64),  # pyarrow: beyond int64
    "ValueError": bad(interval="7m"),  # the tracker's interval lookup (a ConfigError)
    "AttributeError": None,  # not a candle at all
    "RecursionError": bad(open=nested()),  # the store's message quoted it with repr
    "ArrowInvalid": bad(close="2.0"),  # a string for a price
    "NaN": bad(high=math.nan),  # converted without a word before: stored
    "beyond 9999": bad(open_time=MAX_OPEN_TIME),  # off the store's range
    "off the 3d grid": Candle("spot", "BTCUSDT", "3d", 1499126400000, 2, 3, 1, 2, 5, 10, 9, 1, 2),
    "prices out of order": bad(low=5.0),
}


@pytest.mark.parametrize("bad_candle", list(BAD_CANDLES.values()), ids=list(BAD_CANDLES))
async def test_a_bad_candle_is_refused_alone_and_nothing_escapes_the_writer(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture, bad_candle: Candle
) -> None:
    stats = WriterStats()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    with Store(tmp_path / "data") as store, caplog.at_level(logging.ERROR, logger="trio_klines.writer"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_writer(receive, store, stats=stats, run_sink=call_inline))
            await send.send([candle(1), bad_candle, candle(2)])
            await trio.sleep(5)
            await send.send([candle(4)])
            await send.aclose()
    frame = load(tmp_path / "data", "spot", "BTCUSDT", "1m")
    assert [int(t.value // 10**6) for t in frame["candle_begin_time"]] == [60_000, 120_000, 240_000]
    assert (stats.written, stats.rejected, stats.write_errors) == (3, 1, 0)
    assert "the store refused 1 candles and they are dropped" in caplog.text
    assert caplog.text.count("refused") == 1


async def test_the_store_names_the_candles_it_refuses_and_the_rest_is_written_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    stats, written = WriterStats(), list[list[Candle]]()

    async def on_written(batch: list[Candle]) -> None:
        written.append(batch)

    good = [candle(m) for m in range(1, 30)]
    nan = msgspec.structs.replace(candle(40), volume=math.nan)  # passes the tracker: the store refuses it
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    with Store(tmp_path / "data") as store:
        async with send:
            await send.send([*good[:10], nan, *good[10:]])
        await run_writer(receive, store, stats=stats, run_sink=call_inline, on_written=on_written)
    assert written == [good]  # one flush: the rest, reported once durable
    assert (stats.written, stats.rejected, stats.flushes) == (29, 1, 1)
    assert len(load(tmp_path / "data", "spot", "BTCUSDT", "1m")) == 29


async def test_a_flood_of_refused_candles_is_logged_once_a_minute(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stats = WriterStats()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    settings = WriterSettings(flush_seconds=0.1)
    with Store(tmp_path / "data") as store, caplog.at_level(logging.ERROR, logger="trio_klines.writer"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_writer(receive, store, settings=settings, stats=stats, run_sink=call_inline))
            for minute in range(1, 101):  # 100 flushes in 50 s, each with 5 candles the store refuses
                refused = [candle(1000 + 5 * minute + i) for i in range(5)]
                await send.send([candle(minute), *(msgspec.structs.replace(c, trade_num=-1) for c in refused)])
                await trio.sleep(0.5)
            await send.aclose()
    assert (stats.written, stats.rejected) == (100, 500)
    assert caplog.text.count("the store refused") == 1


async def test_the_same_open_time_closed_again_with_other_values_is_written_and_the_later_wins(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    stats = WriterStats()
    send, receive = trio.open_memory_channel[Sequence[Candle]](10)
    with Store(tmp_path / "data") as store:
        async with send:
            await send.send([candle(1), candle(2), candle(2), candle(3)])  # a true repeat: dropped
            await send.send([candle(2, close=2.5), candle(2, close=2.5)])  # revised, then its true repeat
            await send.send([candle(1, close=1.5)])  # revised too, two candles back
        await run_writer(receive, store, stats=stats, run_sink=call_inline)
    frame = load(tmp_path / "data", "spot", "BTCUSDT", "1m")
    assert frame["close"].tolist() == [1.5, 2.5, 2.0]
    assert (stats.received, stats.duplicates, stats.revised, stats.written) == (7, 2, 2, 5)
