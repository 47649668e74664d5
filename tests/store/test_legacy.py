"""A dataset written by the release before segments opens, reads and grows as before.

``tests/data/legacy/dataset`` was written by that release (``tests/data/legacy/make_dataset.py``): a
live run then a REST correction of some of the same open times, never merged, so each period's files
overlap; ``expected.json`` is what that release's ``load`` returned for it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.store.dataset import Store, load
from trio_klines.store.fileops import FileOps
from trio_klines.store.landing import list_landing

DATA = Path(__file__).parent.parent / "data" / "legacy"
MINUTE = 60_000
BTC_1M = Series("spot", "BTCUSDT", "1m")
BTC_MONTH = Series("spot", "BTCUSDT", "1M")
MINUTES_DIR = Path("market=spot/interval=1m/symbol=BTCUSDT")
MONTHS_DIR = Path("market=spot/interval=1%4D/symbol=BTCUSDT")
KEY = ["market", "interval", "symbol", "candle_begin_time"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def expected() -> dict[Series, dict[int, float]]:
    raw = json.loads((DATA / "expected.json").read_text())
    return {key: {t: v for t, v in raw[key.interval]} for key in (BTC_1M, BTC_MONTH)}


def loaded(root: Path) -> dict[Series, dict[int, float]]:
    found = {}
    for key in (BTC_1M, BTC_MONTH):
        frame = load(root, *key)
        times = (frame["candle_begin_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        assert times.is_unique and times.is_monotonic_increasing
        found[key] = dict(zip(times.tolist(), frame["open"].tolist(), strict=True))
    return found


def raw(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root)


def names(root: Path, directory: Path) -> list[str]:
    return sorted(p.name for p in (root / directory).glob("*.parquet"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(DATA / "dataset", copy)
    return copy


def test_the_dataset_is_what_the_old_release_left(root: Path) -> None:
    # The premise: overlapping files that raw readers see twice, and the corrections winning in load().
    assert len(names(root, MINUTES_DIR)) == 5 and len(names(root, MONTHS_DIR)) == 5
    assert raw(root).duplicated(KEY).sum() == 12
    rows = expected()
    assert rows[BTC_1M][1_704_153_600_000 + 5 * MINUTE] == 205.0  # corrected by the REST append
    assert rows[BTC_MONTH][1_701_388_800_000] == 2000.0


def test_load_reads_it_before_and_after_the_new_store_opens_it(root: Path) -> None:
    assert loaded(root) == expected()
    before = names(root, MINUTES_DIR)
    with Store(root, clock=Clock()):
        assert loaded(root) == expected()
        assert names(root, MINUTES_DIR) == before  # opening alone rewrites nothing
    assert loaded(root) == expected()


def test_compact_merges_the_overlapping_periods(root: Path) -> None:
    untouched = root / MINUTES_DIR / "2024-02_000000000004-000000000004.parquet"
    content = untouched.read_bytes()
    with Store(root, clock=Clock()) as store:
        summary = store.compact()
    assert summary.errors == ()
    assert (summary.periods_merged, summary.files_before, summary.files_after) == (3, 9, 3)
    assert names(root, MINUTES_DIR) == [
        "2024-01_000000000001-000000000005.parquet",
        "2024-02_000000000004-000000000004.parquet",
    ]
    assert names(root, MONTHS_DIR) == [
        "2023_000000000001-000000000004.parquet",
        "2024_000000000003-000000000004.parquet",
    ]
    assert untouched.read_bytes() == content  # a period whose files do not overlap is read as it is
    frame = raw(root)
    assert not frame.duplicated(KEY).any() and len(frame) == sum(len(rows) for rows in expected().values())
    assert loaded(root) == expected()
    with Store(root, clock=Clock()) as store:  # merged once: nothing left to do
        assert store.compact().periods_merged == 0


def candle(key: Series, open_time: int, value: float) -> Candle:
    return Candle(*key, open_time, value, value + 1, value - 1, value, 1.0, value, 3, 0.5, 1.0)


def test_new_appends_and_seals_go_on_top(root: Path) -> None:
    jan_2, feb_1, dec_2023, mar_2024 = 1_704_153_600_000, 1_706_745_600_000, 1_701_388_800_000, 1_709_251_200_000
    clock = Clock()
    model = expected()
    batches = [
        # Corrections of legacy rows in overlapping periods, and new minutes after the legacy ones.
        [candle(BTC_1M, jan_2 + i * MINUTE, 300.0 + i) for i in (3, 7, 29, 30, 31)]
        + [candle(BTC_MONTH, dec_2023, 3000.0), candle(BTC_MONTH, mar_2024, 3001.0)],
        [candle(BTC_1M, feb_1 + i * MINUTE, 600.0 + i) for i in range(3, 8)],  # grows the untouched period
    ]
    with Store(root, clock=clock, seal_seconds=60.0) as store:
        for batch in batches:
            store.append(batch)
            for c in batch:
                model[Series(c.market, c.symbol, c.interval)][c.open_time] = c.open
            assert loaded(root) == model  # landing rows win over the legacy files at once
        clock.now += 60.0
        store.seal_due()
        assert list_landing(root) == []
        assert loaded(root) == model
        frame = raw(root)
        assert not frame.duplicated(KEY).any() and len(frame) == sum(len(rows) for rows in model.values())
        opens = frame.set_index("candle_begin_time")["open"]
        assert opens[pd.Timestamp(jan_2 + 7 * MINUTE, unit="ms", tz="UTC")] == 307.0
        # The series' overlapping legacy periods were merged when it was first sealed into, each now one file.
        assert [n[:7] for n in names(root, MINUTES_DIR)] == ["2024-01", "2024-02"]
        assert [n[:4] for n in names(root, MONTHS_DIR)] == ["2023", "2024"]
    assert loaded(root) == model


class Crash(BaseException):
    """The simulated death of the process."""


class CrashingOps(FileOps):
    """Kills the process at file operation ``crash_at`` (that one does not happen, nor any later)."""

    def __init__(self, crash_at: int | None) -> None:
        super().__init__(durable=False)
        self.count, self.crash_at = 0, crash_at

    def _step(self) -> None:
        self.count += 1
        if self.crash_at is not None and self.count >= self.crash_at:
            raise Crash(f"operation {self.count}")

    def makedirs(self, path: Path) -> None:
        self._step()
        super().makedirs(path)

    def write(self, path: Path, data: bytes | memoryview, *, sync: bool = True) -> None:
        self._step()
        super().write(path, data, sync=sync)

    def rename(self, source: Path, target: Path) -> None:
        self._step()
        super().rename(source, target)

    def fsync_dir(self, path: Path) -> None:
        self._step()
        super().fsync_dir(path)

    def unlink(self, path: Path) -> None:
        self._step()
        super().unlink(path)


def test_an_interrupted_merge_is_finished(root: Path, tmp_path: Path) -> None:
    probe = CrashingOps(None)
    with Store(root, ops=probe, clock=Clock()) as store:
        store.compact()
    assert probe.count >= 9  # three merges: write, rename, fsync, removals
    for crash_at in range(1, probe.count + 1):
        copy = tmp_path / f"crash_{crash_at}"
        shutil.copytree(DATA / "dataset", copy)
        with contextlib.suppress(Crash):  # the first operations record the dataset's numbers, at its opening
            store = Store(copy, ops=CrashingOps(crash_at), clock=Clock())
            with contextlib.suppress(Crash):
                store.compact()
            store.close()
        assert loaded(copy) == expected(), f"a crash at operation {crash_at} of a merge changed the rows"
        with Store(copy, clock=Clock()) as store:
            assert store.compact().errors == ()
        assert not raw(copy).duplicated(KEY).any()
        assert len(names(copy, MINUTES_DIR)) == 2 and len(names(copy, MONTHS_DIR)) == 2
        assert loaded(copy) == expected()
