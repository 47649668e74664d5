"""Writes ``dataset/`` and ``expected.json`` with the release before segments (commit 0a69bc0).

Kept for the record of how the legacy dataset of ``tests/store/test_legacy.py`` was made; it only runs
against that release's code::

    git worktree add /tmp/legacy 0a69bc0
    PYTHONPATH=/tmp/legacy python tests/data/legacy/make_dataset.py
    git worktree remove /tmp/legacy

A live run (small appends, merged never: ``CompactionPolicy(auto=False)``, ``compact=False``), then a REST
correction of some of the same open times with other values, so that each period of the two series holds
files whose ranges overlap; one period (2024-02 of ``1m``) holds a single file, left as it is.
``expected.json`` is what that release's ``load`` returned: the later write winning.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from trio_klines.core.parse import Candle
from trio_klines.store.compaction import CompactionPolicy
from trio_klines.store.dataset import Store, load

HERE = Path(__file__).parent
MINUTE = 60_000
JAN_2 = 1_704_153_600_000  # 2024-01-02 00:00 UTC
FEB_1 = 1_706_745_600_000  # 2024-02-01 00:00 UTC
MONTHS = [1_698_796_800_000, 1_701_388_800_000, 1_704_067_200_000, FEB_1]  # 2023-11 .. 2024-02


def candle(interval: str, open_time: int, value: float) -> Candle:
    return Candle(
        "spot", "BTCUSDT", interval, open_time, value, value + 1, value - 1, value + 0.5, 1.0, value, 3, 0.5, 1.0
    )


def main() -> None:
    root = HERE / "dataset"
    shutil.rmtree(root, ignore_errors=True)
    with Store(root, policy=CompactionPolicy(auto=False)) as store:
        for start in range(0, 30, 10):  # the live run: three appends of ten minutes, one month each
            minutes = [candle("1m", JAN_2 + (start + i) * MINUTE, 100.0 + start + i) for i in range(10)]
            months = [candle("1M", MONTHS[start // 10], 1_000.0 + start)]
            store.append(minutes + months, compact=False)
        store.append([candle("1m", FEB_1 + i * MINUTE, 500.0 + i) for i in range(5)], compact=False)
        # The REST correction: minutes 5..14 (across the first two files) and two months (one per year).
        corrected = [candle("1m", JAN_2 + i * MINUTE, 200.0 + i) for i in range(5, 15)]
        store.append([*corrected, candle("1M", MONTHS[1], 2_000.0), candle("1M", MONTHS[2], 2_001.0)], compact=False)
    expected = {}
    for interval in ("1m", "1M"):
        frame = load(root, "spot", "BTCUSDT", interval)
        times = (frame["candle_begin_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        expected[interval] = [[int(t), float(o)] for t, o in zip(times, frame["open"], strict=True)]
    (HERE / "expected.json").write_text(json.dumps(expected) + "\n")
    (root / "_lock").unlink()  # the writer's pid: not data


if __name__ == "__main__":
    main()
