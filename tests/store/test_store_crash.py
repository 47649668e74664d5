"""The store against crashes, power cuts and failing disks: whatever happens, it matches a plain dict.

A crash is simulated in the store's file-operation layer (:class:`FaultyOps`): the chosen operation does
not happen (a write leaves half its bytes behind) and every later one of that "process" fails too, so no
clean-up code can run. A *power cut* goes further: what was not made durable is undone as a disk may
undo it (data written without a sync is torn; names created, renamed or removed in a directory not
synced since are put back), which checks the order of the store's syncs, not only its steps. Then the
store is opened again, as a restarted recorder would, with a fake clock so that rounds are due exactly
when a test says.
"""

from __future__ import annotations

import contextlib
import errno
import logging
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
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_klines.core.markets import Series, next_open_time
from trio_klines.core.parse import Candle
from trio_klines.errors import StoreWriteError
from trio_klines.store.compaction import open_times
from trio_klines.store.dataset import RETRY_SECONDS, Store, load, read_series
from trio_klines.store.fileops import FileOps
from trio_klines.store.landing import list_landing
from trio_klines.store.layout import FileName
from trio_klines.store.marker import read_numbers

Model = dict[Series, dict[int, float]]
#: Every value each (series, open time) ever had: what a raw reader may show while a correction waits.
History = dict[tuple[Series, int], set[float]]

SERIES = (Series("spot", "BTCUSDT", "1m"), Series("spot", "BTCUSDT", "1M"), Series("spot", "ETHUSDT", "1s"))
# Each series' grid starts 20 candles before a period boundary (month, year, day) so batches straddle it.
FEB_2024 = 1_706_745_600_000
MAR_2_2024 = 1_709_337_600_000
NOV_2022 = 1_667_260_800_000
SLOTS = 40
SEAL_SECONDS = 60.0


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


class Crash(BaseException):
    """The simulated death of the process (a BaseException: no ``except Exception`` can swallow it)."""


class FaultyOps(FileOps):
    """Counts file operations; ``crash_at`` kills the process at that one, ``fail_at`` makes it fail
    with ``fail_code``. Keeps what a power cut would undo (see :meth:`cut_power`)."""

    def __init__(self) -> None:
        super().__init__(durable=False)  # real fsyncs prove nothing here: the undo log models them
        self.count = 0
        self.crash_at: int | None = None
        self.fail_at: int | None = None
        self.fail_code = errno.ENOSPC
        self.dead = False
        self.torn: set[Path] = set()  # files whose data was written without a sync since
        # Directory changes not synced yet, oldest first: (directories involved, how to undo it).
        self.undo: list[tuple[set[Path], Callable[[], None]]] = []

    def _step(self, path: Path) -> bool:
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

    def cut_power(self) -> None:
        """Undo what a disk may lose in a power cut: unsynced data torn, unsynced directory changes undone."""
        for path in self.torn:
            if path.exists():
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        for _, undo in reversed(self.undo):
            undo()
        self.torn.clear()
        self.undo.clear()

    def _synced(self, directories: Sequence[Path]) -> None:
        done = set(directories)
        for dirs, _ in self.undo:
            dirs -= done
        self.undo = [(dirs, undo) for dirs, undo in self.undo if dirs]

    def makedirs(self, path: Path) -> None:
        if self._step(path):
            raise Crash(f"before makedirs {path}")
        super().makedirs(path)  # its parents' fsyncs are steps of their own

    def write(self, path: Path, data: bytes | memoryview, *, sync: bool = True) -> None:
        if self._step(path):
            path.write_bytes(bytes(data)[: len(data) // 2])
            raise Crash(f"half-way through writing {path}")
        super().write(path, data, sync=sync)
        if not sync:
            self.torn.add(path)
        self.undo.append(({path.parent}, lambda: path.unlink(missing_ok=True)))

    def sync_files(self, paths: Sequence[Path]) -> None:
        if self._step(paths[0] if paths else Path()):
            raise Crash("before syncing files")
        super().sync_files(paths)
        self.torn -= set(paths)

    def sync_dirs(self, paths: Sequence[Path]) -> None:
        if self._step(paths[0] if paths else Path()):
            raise Crash("before syncing directories")
        super().sync_dirs(paths)
        self._synced(paths)

    def rename(self, source: Path, target: Path) -> None:
        if self._step(source):
            raise Crash(f"before renaming {source}")
        replaced = target.read_bytes() if target.exists() else None
        super().rename(source, target)
        if source in self.torn:
            self.torn.discard(source)
            self.torn.add(target)

        def undo() -> None:
            if target.exists():
                os.replace(target, source)
            if replaced is not None:
                target.write_bytes(replaced)

        self.undo.append(({source.parent, target.parent}, undo))

    def fsync_dir(self, path: Path) -> None:
        if self._step(path):
            raise Crash(f"before syncing {path}")
        super().fsync_dir(path)
        self._synced([path])

    def unlink(self, path: Path) -> None:
        if self._step(path):
            raise Crash(f"before removing {path}")
        removed = path.read_bytes() if path.exists() else None
        super().unlink(path)
        if removed is not None:
            self.undo.append(({path.parent}, lambda: path.write_bytes(removed)))


class Clock:
    """The store's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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


def remember(history: History, candles: Sequence[Candle]) -> None:
    for c in candles:
        history.setdefault((Series(c.market, c.symbol, c.interval), c.open_time), set()).add(c.open)


def empty_model() -> Model:
    return {key: {} for key in SERIES}


def read_all(root: Path) -> Model:
    """Every series as the exact reader sees it (landing files included)."""
    found = {}
    for key in SERIES:
        table = read_series(root, key)
        times = open_times(table).tolist()
        assert len(times) == len(set(times)), f"{key}: an open time read twice"
        found[key] = dict(zip(times, table.column("open").to_pylist(), strict=True))
    return found


def load_all(root: Path) -> Model:
    found = {}
    for key in SERIES:
        frame = load(root, *key)
        opens = ((frame["candle_begin_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).tolist()
        assert len(opens) == len(set(opens)), f"{key}: load() returned an open time twice"
        found[key] = dict(zip(opens, frame["open"].tolist(), strict=True))
    return found


def _series_of(market: object, symbol: object, interval: object) -> Series:
    return Series(str(market), str(symbol), str(interval))


def raw_rows(root: Path, *, pandas: bool = False) -> dict[tuple[Series, int], float]:
    """What a raw Hive reader sees (pyarrow's dataset, or ``pd.read_parquet``), failing on a repeat."""
    if not any(root.glob("market=*/interval=*/symbol=*/*.parquet")):
        return {}
    frame = pd.read_parquet(root) if pandas else ds.dataset(root, partitioning="hive").to_table().to_pandas()
    times = (frame["candle_begin_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    found: dict[tuple[Series, int], float] = {}
    for market, symbol, interval, time, value in zip(
        frame["market"], frame["symbol"], frame["interval"], times, frame["open"], strict=True
    ):
        key = (_series_of(market, symbol, interval), int(time))
        assert key not in found, f"a raw reader saw {key} twice"
        found[key] = float(value)
    return found


def flat(model: Model) -> dict[tuple[Series, int], float]:
    return {(key, time): value for key, rows in model.items() for time, value in rows.items()}


def check_raw(root: Path, model: Model, history: History) -> None:
    """Raw readers see no open time twice, only rows the model holds, each with a value it once had
    (a correction still waiting in a landing file shows its previous value)."""
    for pandas in (False, True):
        rows = raw_rows(root, pandas=pandas)
        expected = flat(model)
        assert rows.keys() <= expected.keys()
        for key, value in rows.items():
            assert value in history[key], f"{key}: {value} was never written"


def period_files(root: Path) -> dict[tuple[str, str], int]:
    """Files per series directory and period."""
    counts: dict[tuple[str, str], int] = {}
    for path in root.glob("market=*/interval=*/symbol=*/*.parquet"):
        name = FileName.parse(path.name)
        assert name is not None, path
        key = (str(path.parent.relative_to(root)), name.period)
        counts[key] = counts.get(key, 0) + 1
    return counts


def leftovers(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if name.endswith(".tmp")]


def snapshot(root: Path) -> dict[str, bytes]:
    """The series files, by path: a seal with nothing to seal must not change one byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("market=*/interval=*/symbol=*/*.parquet")}


def open_store(root: Path, ops: FaultyOps, clock: Clock) -> Store:
    ops.revive()
    return Store(root, ops=ops, clock=clock, seal_seconds=SEAL_SECONDS)


def abandon(store: Store) -> None:
    """What the death of the process does: its lock goes; nothing else runs (its file operations crash)."""
    with contextlib.suppress(Crash):
        store.close()


# --- every crash point of a fixed story ---------------------------------------------------------

STORY: list[list[tuple[int, int]]] = [
    [(0, s) for s in range(15, 25)] + [(1, 0), (1, 3), (2, 19), (2, 20)],  # three series, two periods each
    [(0, s) for s in range(18, 30)] + [(2, s) for s in range(10, 30)],  # overlaps (corrects) the first
    [(0, 24), (0, 21), (0, 24), (1, 1)],  # repeats within a batch, out of order
    [(0, s) for s in range(0, 16)] + [(2, s) for s in range(30, 40)],  # before and after the stored rows
    [(0, 20), (1, 0), (2, 25), (0, 39)],  # corrections of sealed rows, and a new one
    [(1, s) for s in range(SLOTS)],
]

Step = tuple[str, Callable[[Store, Clock], object], list[Candle] | None]


def story_steps() -> list[Step]:
    """Appends with and without sealing, rounds in steps, whole seals and a close, the clock moving."""
    batches = [make_candles(slots, 1 + 100 * i) for i, slots in enumerate(STORY)]

    def tick(seconds: float, action: Callable[[Store], object]) -> Callable[[Store, Clock], object]:
        def run(store: Store, clock: Clock) -> object:
            clock.now += seconds
            return action(store)

        return run

    return [
        ("append", tick(0, lambda s: s.append(batches[0])), batches[0]),
        ("append", tick(30, lambda s: s.append(batches[1], seal=False)), batches[1]),
        ("seal_due", tick(40, lambda s: s.seal_due(max_files=1)), None),  # the first is due: a round starts
        ("seal_due", tick(0, lambda s: s.seal_due(max_files=2)), None),
        ("append", tick(0, lambda s: s.append(batches[2])), batches[2]),  # due: runs the rest of the round
        ("append", tick(100, lambda s: s.append(batches[3])), batches[3]),  # a whole round inside an append
        ("append", tick(1, lambda s: s.append(batches[4], seal=False)), batches[4]),
        ("seal", tick(0, lambda s: s.seal()), None),
        ("append", tick(0, lambda s: s.append(batches[5])), batches[5]),
        ("close", tick(0, lambda s: s.close()), None),
    ]


def run_story(root: Path, crash_at: int | None, *, power_cut: bool, second_crash: int | None = None) -> int:
    """The story, crashing at operation ``crash_at``; after the crash the store is reopened, checked, its
    landing files sealed (crashing again at ``second_crash`` operations into that, if given), and the
    interrupted step done again, as a recorder retries. Returns the operations of a run without a crash."""
    ops, clock = FaultyOps(), Clock()
    root.mkdir()  # the story crashes in the store's operations, not while its directory is made
    ops.crash_at = crash_at
    model, history = empty_model(), {}
    try:
        store = Store(root, ops=ops, clock=clock, seal_seconds=SEAL_SECONDS)
    except Crash:  # while recording the dataset's numbers, the store's first writes
        if power_cut:
            ops.cut_power()
        store = recover(root, ops, clock, model, model, history, None, "the first opening")
    assert read_numbers(root) == "float"  # recorded before anything else is written
    for index, (kind, step, batch) in enumerate(story_steps()):
        after = applied(model, batch) if batch else model
        if batch:
            remember(history, batch)
        try:
            step(store, clock)
        except Crash:
            abandon(store)
            if power_cut:
                ops.cut_power()
            store = recover(root, ops, clock, model, after, history, second_crash, f"step {index} ({kind})")
            if kind != "close":
                step(store, clock)  # the retry
        model = after
        if crash_at is None:  # the runs that crash do the same steps: their end is checked below
            assert read_all(root) == model
    store.close()
    assert load_all(root) == model
    assert raw_rows(root) == flat(model) == raw_rows(root, pandas=True)
    assert list_landing(root) == [] and leftovers(root) == []
    return ops.count


def recover(
    root: Path,
    ops: FaultyOps,
    clock: Clock,
    before: Model,
    after: Model,
    history: History,
    second_crash: int | None,
    where: str,
) -> Store:
    """Reopen after a crash and check what the interrupted step left; its landing files sealed again."""
    found = read_all(root)
    assert found in (before, after), f"a crash in {where} left part of a batch"
    check_raw(root, found, history)
    if second_crash is not None:  # the restart crashes too, while sealing what the first one left
        store = open_store(root, ops, clock)
        ops.crash_at = ops.count + second_crash
        with contextlib.suppress(Crash):
            store.seal()
        abandon(store)
        assert read_all(root) == found, f"a crash while sealing after one in {where} changed the rows"
    store = open_store(root, ops, clock)
    assert leftovers(root) == []
    assert load_all(root) == found
    store.seal()  # what the crash left is sealed again: idempotent
    assert load_all(root) == found and raw_rows(root) == flat(found) == raw_rows(root, pandas=True)
    assert list_landing(root) == []
    files = snapshot(root)
    assert store.seal() == 0 and snapshot(root) == files
    return store


# Power cuts: seconds more, slow (the fast loop crashes the process only).
@pytest.mark.parametrize("power_cut", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["crash", "power-cut"])
def test_a_crash_at_any_file_operation_loses_nothing(tmp_path: Path, power_cut: bool) -> None:
    total = run_story(tmp_path / "clean", None, power_cut=power_cut)
    assert total > 40
    for crash_at in range(1, total + 1):
        root = tmp_path / f"crash_{crash_at}"
        run_story(root, crash_at, power_cut=power_cut)
        shutil.rmtree(root)


@pytest.mark.slow  # every operation of the story, each followed by a crash in its recovery
@pytest.mark.timeout(300)
@pytest.mark.parametrize("power_cut", [False, True], ids=["crash", "power-cut"])
def test_a_crash_while_recovering_is_recovered_too(tmp_path: Path, power_cut: bool) -> None:
    total = run_story(tmp_path / "clean", None, power_cut=power_cut)
    for crash_at in range(1, total + 1):
        second = 1 + crash_at % 9  # a different point of the recovery's seal each time, deterministically
        root = tmp_path / f"crash_{crash_at}"
        run_story(root, crash_at, power_cut=power_cut, second_crash=second)
        shutil.rmtree(root)


# --- failing disks ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failing_append_stores_nothing(tmp_path: Path, code: int) -> None:
    ops, clock = FaultyOps(), Clock()
    batch, later = make_candles([(0, 1), (0, 2), (1, 3), (2, 4)], 1), make_candles([(0, 3)], 100)
    with Store(tmp_path / "probe", ops=ops, clock=clock) as store:
        store.append(later, seal=False)
        start = ops.count
        store.append(batch, seal=False)
        steps = ops.count - start
    assert steps == 3  # write, rename, fsync_dir (the landing directory exists)
    for fail_at in range(1, steps + 1):
        root = tmp_path / f"fail_{fail_at}"
        ops = FaultyOps()
        with Store(root, ops=ops, clock=clock) as store:
            store.append(later, seal=False)
            ops.fail_at, ops.fail_code = ops.count + fail_at, code
            with pytest.raises(StoreWriteError) as raised:
                store.append(batch)
            assert (raised.value.errno, raised.value.committed) == (code, False)
            expected = applied(empty_model(), later)
            assert read_all(root) == expected, f"failure at operation {fail_at} left part of the batch"
            assert len(list_landing(root)) == 1 and leftovers(root) == []
            assert store.append(batch) == len(batch)  # the retry
            assert read_all(root) == applied(expected, batch)
        assert raw_rows(root) == flat(applied(expected, batch))


def seal_round_failing(
    tmp_path: Path, code: int, fail_at: int, run: Callable[[Store], object], extra: Sequence[Candle] = ()
) -> None:
    """Fail operation ``fail_at`` of a seal round started by ``run`` (which appends ``extra``, if any),
    then check it is retried."""
    ops, clock = FaultyOps(), Clock()
    root = tmp_path / f"fail_{fail_at}"
    first, second = make_candles([(0, s) for s in range(10)] + [(1, 2)], 1), make_candles([(0, 5), (2, 7)], 100)
    expected = applied(applied(applied(empty_model(), first), second), extra)
    landed = 2 + bool(extra)
    store = Store(root, ops=ops, clock=clock, seal_seconds=SEAL_SECONDS)
    store.append(first)
    clock.now += SEAL_SECONDS  # due
    store.append(second, seal=False)
    ops.fail_at, ops.fail_code = ops.count + fail_at, code
    run(store)
    assert ops.count >= ops.fail_at, "the round had fewer operations than that"
    assert store.seal_errors == 1
    assert len(list_landing(root)) == landed, "a failed round removed landing files"
    assert read_all(root) == expected and leftovers(root) == []
    check_raw(root, expected, {k: {v} for k, v in flat(expected).items()})
    store.seal_due()  # not retried at once: a full disk is not hammered
    assert store.seal_errors == 1 and len(list_landing(root)) == landed
    clock.now += RETRY_SECONDS
    store.seal_due()
    assert list_landing(root) == [] and store.seal_debt() == 0
    assert raw_rows(root) == flat(expected) and read_all(root) == expected
    store.close()


def round_operations(tmp_path: Path) -> int:
    ops, clock = FaultyOps(), Clock()
    with Store(tmp_path / "probe", ops=ops, clock=clock, seal_seconds=SEAL_SECONDS) as store:
        store.append(make_candles([(0, s) for s in range(10)] + [(1, 2)], 1))
        clock.now += SEAL_SECONDS
        store.append(make_candles([(0, 5), (2, 7)], 100), seal=False)
        start = ops.count
        store.seal_due()
        assert list_landing(tmp_path / "probe") == []
        return ops.count - start


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failing_seal_round_is_counted_and_retried(
    tmp_path: Path, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    steps = round_operations(tmp_path)
    assert steps >= 8
    # Up to the last landing file's removal: a failure after it (the landing directory's fsync) is no
    # failure of the round, whose rows are all sealed by then.
    with caplog.at_level(logging.ERROR, "trio_klines.store"):
        for fail_at in range(1, steps - 2):
            seal_round_failing(tmp_path, code, fail_at, lambda s: s.seal_due())
    assert "sealing failed" in caplog.text


def test_a_seal_round_failing_inside_an_append_does_not_fail_the_append(tmp_path: Path) -> None:
    # The round runs after this append's landing file is durable: the batch is stored whatever the
    # round does, so the append must return (the round counted in seal_errors and retried later).
    extra = make_candles([(2, 9)], 900)
    seal_round_failing(tmp_path, errno.EIO, 5, lambda s: s.append(extra), extra)


# --- random stories against a model -------------------------------------------------------------


class StoreMachine(RuleBasedStateMachine):
    """Random appends (repeats, corrections, several series and periods, sealed or not), the clock moving
    with rounds run in steps, whole seals, crashes (or power cuts) at any file operation and restarts,
    failing writes; checked against a dict after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="store-machine-"))
        self.root = self.directory / "data"
        self.ops, self.clock = FaultyOps(), Clock()
        self.store = open_store(self.root, self.ops, self.clock)
        self.model = empty_model()
        self.history: History = {}
        self.values = 1
        self.rounds = 1  # an upper bound on the rounds run so far: a period never has more files

    def teardown(self) -> None:
        abandon(self.store)
        shutil.rmtree(self.directory)

    def candles(self, slots: Sequence[tuple[int, int]]) -> list[Candle]:
        out = make_candles(slots, self.values)
        self.values += len(out)
        remember(self.history, out)
        return out

    def restart(self, power_cut: bool) -> None:
        abandon(self.store)
        if power_cut:
            self.ops.cut_power()
        self.store = open_store(self.root, self.ops, self.clock)
        self.rounds += 1

    def crash_in(self, action: Callable[[], object], after_ops: int, power_cut: bool) -> bool:
        self.ops.crash_at = self.ops.count + after_ops
        try:
            action()
        except Crash:
            self.restart(power_cut)
            return True
        self.ops.crash_at = None
        return False

    batches = st.lists(st.tuples(st.integers(0, len(SERIES) - 1), st.integers(0, SLOTS - 1)), min_size=1, max_size=25)

    @rule(slots=batches, seal=st.booleans())
    def append(self, slots: list[tuple[int, int]], seal: bool) -> None:
        candles = self.candles(slots)
        expected = len({(c.interval, c.symbol, c.open_time) for c in candles})
        assert self.store.append(candles, seal=seal) == expected
        self.model = applied(self.model, candles)
        self.rounds += 2

    @rule(seconds=st.sampled_from([0.0, 1.0, SEAL_SECONDS / 2, SEAL_SECONDS, RETRY_SECONDS]), steps=st.integers(1, 4))
    def advance_and_seal_due(self, seconds: float, steps: int) -> None:
        self.clock.now += seconds
        for _ in range(steps):
            self.store.seal_due(max_files=1)
        self.rounds += steps

    @rule()
    def seal(self) -> None:
        self.store.seal()
        self.rounds += 2
        assert list_landing(self.root) == []
        assert raw_rows(self.root) == flat(self.model)  # everything sealed: raw readers see it all

    @rule(slots=batches, seal=st.booleans(), after_ops=st.integers(1, 30), power_cut=st.booleans())
    def crash_while_appending(self, slots: list[tuple[int, int]], seal: bool, after_ops: int, power_cut: bool) -> None:
        candles = self.candles(slots)
        after = applied(self.model, candles)
        self.rounds += 2
        if self.crash_in(lambda: self.store.append(candles, seal=seal), after_ops, power_cut):
            found = read_all(self.root)
            assert found in (self.model, after), "a crash left part of a batch"
            self.model = found
        else:
            self.model = after

    @rule(after_ops=st.integers(1, 30), power_cut=st.booleans(), whole=st.booleans())
    def crash_while_sealing(self, after_ops: int, power_cut: bool, whole: bool) -> None:
        self.clock.now += SEAL_SECONDS
        self.rounds += 2
        self.crash_in(self.store.seal if whole else lambda: self.store.seal_due(max_files=2), after_ops, power_cut)

    @rule(slots=batches, after_ops=st.integers(1, 8), code=st.sampled_from([errno.ENOSPC, errno.EIO]))
    def failing_append(self, slots: list[tuple[int, int]], after_ops: int, code: int) -> None:
        candles = self.candles(slots)
        self.ops.fail_at, self.ops.fail_code = self.ops.count + after_ops, code
        try:
            self.store.append(candles, seal=False)
        except StoreWriteError as exc:
            assert (exc.errno, exc.committed) == (code, False)
        else:  # the failure would have come after the append
            self.model = applied(self.model, candles)
        self.ops.fail_at = None

    @precondition(lambda self: bool(list_landing(self.root)))
    @rule(power_cut=st.booleans())
    def reopen(self, power_cut: bool) -> None:
        self.restart(power_cut)

    @invariant()
    def matches_the_model(self) -> None:
        assert read_all(self.root) == self.model
        check_raw(self.root, self.model, self.history)
        for key in SERIES:
            rows = self.model[key]
            assert self.store.last_open_time(*key) == (max(rows) if rows else None)
        assert leftovers(self.root) == []

    @invariant()
    def files_are_bounded(self) -> None:
        stored: dict[tuple[str, str], int] = {}
        for path in self.root.glob("market=*/interval=*/symbol=*/*.parquet"):
            name = FileName.parse(path.name)
            assert name is not None
            key = (str(path.parent.relative_to(self.root)), name.period)
            stored[key] = stored.get(key, 0) + len(pd.read_parquet(path, columns=["open"]))
        for key, files in period_files(self.root).items():
            # Never an empty file (each holds a row of its own), never more than the rounds that made them.
            assert files <= min(stored[key], self.rounds), f"{key}: {files} files"


StoreMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Seconds of stateful examples, each on real files: slow (`-m "not slow"` skips it).
test_store_matches_its_model = pytest.mark.slow(StoreMachine.TestCase)
