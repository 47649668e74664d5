"""The store against crashes and failing disks: whatever happens, it matches a plain dict.

A crash is simulated in the store's file-operation layer: the chosen operation does not happen (a
write leaves half its bytes behind), and every later operation of that "process" fails too, so no
clean-up code can run. Then the store is opened again, as a restarted recorder would.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from trio_klines.core.markets import Series, next_open_time
from trio_klines.core.parse import Candle
from trio_klines.store.compaction import CompactionPolicy, open_times
from trio_klines.store.dataset import Store, StoreWriteError, load, read_series
from trio_klines.store.fileops import FileOps

Model = dict[Series, dict[int, float]]

SERIES = (Series("spot", "BTCUSDT", "1m"), Series("spot", "BTCUSDT", "1M"), Series("spot", "ETHUSDT", "1s"))
# Each series' grid starts 20 candles before a period boundary (month, year, day) so batches straddle it.
FEB_2024 = 1_706_745_600_000
MAR_2_2024 = 1_709_337_600_000
NOV_2022 = 1_667_260_800_000
SLOTS = 40


def _grid(interval: str, start: int) -> list[int]:
    times = [start]
    while len(times) < SLOTS:
        times.append(next_open_time(interval, times[-1]))
    return times


GRIDS = {
    SERIES[0]: [FEB_2024 + (i - 20) * 60_000 for i in range(SLOTS)],
    SERIES[1]: _grid("1M", NOV_2022),
    SERIES[2]: [MAR_2_2024 + (i - 20) * 1_000 for i in range(SLOTS)],
}
#: Merges as often as possible, and credit so short that many wait for later appends.
POLICY = CompactionPolicy(fan_in=2, credit_per_append=1.0, file_cost_rows=4)


class Crash(BaseException):
    """The simulated death of the process (a BaseException: no ``except Exception`` can swallow it)."""


class CrashingOps(FileOps):
    """Counts file operations; ``crash_at`` kills the process at that one, ``fail_at`` makes it fail."""

    def __init__(self) -> None:
        super().__init__(durable=False)  # fsync proves nothing in a simulated crash, and is slow
        self.count = 0
        self.crash_at: int | None = None
        self.fail_at: int | None = None
        self.fail_code = errno.ENOSPC
        self.dead = False

    def _crashes_now(self, path: Path) -> bool:
        if self.dead:
            raise Crash("this process is dead")
        self.count += 1
        if self.count == self.fail_at:
            raise OSError(self.fail_code, os.strerror(self.fail_code), str(path))
        if self.count == self.crash_at:
            self.dead = True
        return self.dead

    def revive(self) -> None:
        self.dead, self.crash_at, self.fail_at = False, None, None

    def makedirs(self, path: Path) -> None:
        if self._crashes_now(path):
            raise Crash(f"before makedirs {path}")
        super().makedirs(path)

    def write(self, path: Path, data: bytes | memoryview) -> None:
        if self._crashes_now(path):
            path.write_bytes(bytes(data)[: len(data) // 2])
            raise Crash(f"half-way through writing {path}")
        super().write(path, data)

    def rename(self, source: Path, target: Path) -> None:
        if self._crashes_now(source):
            raise Crash(f"before renaming {source}")
        super().rename(source, target)

    def fsync_dir(self, path: Path) -> None:
        if self._crashes_now(path):
            raise Crash(f"before syncing {path}")
        super().fsync_dir(path)

    def unlink(self, path: Path) -> None:
        if self._crashes_now(path):
            raise Crash(f"before removing {path}")
        super().unlink(path)


def make_candles(slots: Sequence[tuple[int, int]], first_value: int) -> list[Candle]:
    """A candle per ``(series index, slot)``, each with a value never used before."""
    out = []
    for value, (index, slot) in enumerate(slots, first_value):
        key = SERIES[index]
        v = float(value)
        out.append(Candle(*key, GRIDS[key][slot], v, v + 1, v / 2, v, 1.0, v * 2, value, 0.5, v))
    return out


def applied(model: Model, candles: Sequence[Candle]) -> Model:
    after = {key: dict(rows) for key, rows in model.items()}
    for c in candles:
        after[Series(c.market, c.symbol, c.interval)][c.open_time] = c.open
    return after


def read_all(root: Path) -> Model:
    """Every series as stored, through the same reader as :func:`load` minus the pandas conversion."""
    found = {}
    for key in SERIES:
        table = read_series(root, key)
        found[key] = dict(zip(open_times(table).tolist(), table.column("open").to_pylist(), strict=True))
    return found


def load_all(root: Path) -> Model:
    found = {}
    for key in SERIES:
        frame = load(root, *key)
        opens = ((frame["candle_begin_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).tolist()
        found[key] = dict(zip(opens, frame["open"].tolist(), strict=True))
    return found


def leftovers(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if name.endswith(".tmp") or name == "_journal.json"]


def open_store(root: Path, ops: CrashingOps) -> Store:
    """Open the store as a restarted process would, even if that restart crashes too (then retry)."""
    while True:
        ops.revive()
        try:
            return Store(root, ops=ops, policy=POLICY)
        except Crash:
            continue


class StoreMachine(RuleBasedStateMachine):
    """Random appends (overlapping, repeated, out of order, several series and periods), compactions,
    crashes between any two file operations, failing writes and restarts, checked against a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="store-machine-"))
        self.root = self.directory / "data"
        self.ops = CrashingOps()
        self.store = Store(self.root, ops=self.ops, policy=POLICY)
        self.model: Model = {key: {} for key in SERIES}
        self.values = 1

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory)

    def candles(self, slots: Sequence[tuple[int, int]]) -> list[Candle]:
        out = make_candles(slots, self.values)
        self.values += len(out)
        return out

    def restart(self) -> None:
        self.store.close()  # what the death of the process does to its lock
        self.store = open_store(self.root, self.ops)

    def crash_in(self, action: Callable[[], object], after_ops: int) -> bool:
        self.ops.crash_at = self.ops.count + after_ops
        try:
            action()
        except Crash:
            self.restart()
            return True
        self.ops.crash_at = None
        return False

    batches = st.lists(st.tuples(st.integers(0, len(SERIES) - 1), st.integers(0, SLOTS - 1)), min_size=1, max_size=25)

    @rule(slots=batches)
    def append(self, slots: list[tuple[int, int]]) -> None:
        candles = self.candles(slots)
        assert self.store.append(candles) == len({(c.interval, c.symbol, c.open_time) for c in candles})
        self.model = applied(self.model, candles)

    @rule(slots=batches, after_ops=st.integers(1, 40))
    def crash_while_appending(self, slots: list[tuple[int, int]], after_ops: int) -> None:
        candles = self.candles(slots)
        after = applied(self.model, candles)
        if self.crash_in(lambda: self.store.append(candles), after_ops):
            found = read_all(self.root)
            assert found in (self.model, after), "a crash left part of a batch"
            self.model = found
        else:
            self.model = after

    @rule(slots=batches, after_ops=st.integers(1, 40), merges=st.integers(1, 3))
    def append_deferred_then_crash_paying(self, slots: list[tuple[int, int]], after_ops: int, merges: int) -> None:
        # The recorder's writer: append without merging, report, then pay for the merges in steps.
        candles = self.candles(slots)
        self.store.append(candles, compact=False)
        self.model = applied(self.model, candles)
        self.crash_in(lambda: self.store.compact_due(max_merges=merges), after_ops)

    @rule(after_ops=st.integers(1, 40))
    def crash_while_compacting(self, after_ops: int) -> None:
        self.crash_in(self.store.compact, after_ops)

    @rule(
        slots=batches,
        after_ops=st.integers(1, 30),
        code=st.sampled_from([errno.ENOSPC, errno.EIO, errno.EACCES]),
    )
    def failing_write(self, slots: list[tuple[int, int]], after_ops: int, code: int) -> None:
        candles = self.candles(slots)
        self.ops.fail_at, self.ops.fail_code = self.ops.count + after_ops, code
        try:
            self.store.append(candles)
        except StoreWriteError as exc:
            assert exc.errno == code
            if exc.committed:
                self.store.series()  # the next use of the store finishes the batch
                self.model = applied(self.model, candles)
        else:  # the failure hit an automatic merge (logged, retried later) or came after the append
            self.model = applied(self.model, candles)
        self.ops.fail_at = None

    @rule()
    def compact(self) -> None:
        assert self.store.compact().errors == ()
        # One file per period now: raw readers see exactly the model, no repeats.
        rows = sum(len(rows) for rows in self.model.values())
        if rows:
            assert ds.dataset(self.root, partitioning="hive").count_rows() == rows

    @rule()
    def reopen(self) -> None:
        self.restart()

    @invariant()
    def matches_the_model(self) -> None:
        assert read_all(self.root) == self.model
        for key in SERIES:
            rows = self.model[key]
            assert self.store.last_open_time(*key) == (max(rows) if rows else None)
        assert leftovers(self.root) == []


StoreMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Seconds of stateful examples, each on real files: slow (`-m "not slow"` skips it).
test_store_matches_its_model = pytest.mark.slow(StoreMachine.TestCase)


# --- every crash point of a fixed story ---------------------------------------------------------

STORY: list[list[tuple[int, int]]] = [
    [(0, s) for s in range(15, 25)] + [(1, 0), (1, 3), (2, 19), (2, 20)],  # three series, two periods each
    [(0, s) for s in range(18, 30)] + [(2, s) for s in range(10, 30)],  # overlaps the first
    [(0, 24), (0, 21), (0, 24)],  # repeats within a batch, out of order
    [(1, s) for s in range(SLOTS)],
]


def run_story(root: Path, ops: CrashingOps, crash_at: int | None) -> tuple[int, Model]:
    """The story (appends, then a compaction, then the last append), crashing at ``crash_at``; after a
    crash the store is reopened and the interrupted step is done again, as a recorder would retry."""
    batches = [make_candles(slots, 1 + 100 * i) for i, slots in enumerate(STORY)]
    model: Model = {key: {} for key in SERIES}
    steps: list[tuple[Callable[[Store], object], Model]] = []
    for candles in batches[:-1]:
        model = applied(model, candles)
        steps.append(((lambda s, c=candles: s.append(c)), model))
    steps.append(((lambda s: s.compact()), model))
    model = applied(model, batches[-1])
    steps.append(((lambda s: s.append(batches[-1])), model))
    ops.revive()
    ops.crash_at = crash_at
    try:
        store = Store(root, ops=ops, policy=POLICY)
    except Crash:
        store = open_store(root, ops)
    before: Model = {key: {} for key in SERIES}
    crashed_in = None
    for index, (step, after) in enumerate(steps):
        try:
            step(store)
        except Crash:
            store.close()
            store = open_store(root, ops)
            crashed_in = index
            assert read_all(root) in (before, after), f"crash at operation {crash_at} left part of step {index}"
            assert leftovers(root) == []
            step(store)  # the retry
        before = after
    store.close()
    return (ops.count if crashed_in is None else -1), model


@pytest.mark.slow  # seconds: a run crashed at each of its file operations in turn
def test_a_crash_at_any_file_operation_loses_nothing(tmp_path: Path) -> None:
    total, model = run_story(tmp_path / "clean", CrashingOps(), None)
    assert load_all(tmp_path / "clean") == model
    assert total > 30
    for crash_at in range(1, total + 1):
        root = tmp_path / f"crash_{crash_at}"
        ops = CrashingOps()
        run_story(root, ops, crash_at)
        assert read_all(root) == model
        shutil.rmtree(root)


def test_a_crash_while_recovering_is_recovered_too(tmp_path: Path) -> None:
    # Crash at every operation of a multi-file append, then again at every operation of the open that
    # recovers from it (replaying the journal, removing temporary files), until an open succeeds.
    batch = make_candles([(0, 1), (0, 30), (1, 2), (2, 5)], 1)
    empty: Model = {key: {} for key in SERIES}
    ops = CrashingOps()
    with Store(tmp_path / "clean", ops=ops, policy=CompactionPolicy(auto=False)) as store:
        start = ops.count
        store.append(batch)
        operations = ops.count - start
    for first in range(1, operations + 1):
        for second in itertools.count(1):
            root = tmp_path / f"crash_{first}_{second}"
            ops = CrashingOps()
            store = Store(root, ops=ops, policy=CompactionPolicy(auto=False))
            ops.crash_at = ops.count + first
            with pytest.raises(Crash):
                store.append(batch)
            store.close()
            ops.revive()
            ops.crash_at = ops.count + second
            try:
                Store(root, ops=ops).close()
                recovered_at_once = True
            except Crash:
                recovered_at_once = False
            open_store(root, ops).close()
            assert read_all(root) in (empty, applied(empty, batch))
            assert leftovers(root) == []
            shutil.rmtree(root)
            if recovered_at_once:
                break
