"""The raw-readers benchmark still runs (a few reads: a smoke test, not a measurement), and its check
does find a row stored twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import readers as bench
from trio_klines.core.parse import Candle
from trio_klines.store.dataset import Store
from trio_klines.store.fileops import FileOps

REPO = Path(__file__).resolve().parents[2]
T0 = 1_719_792_000_000


@pytest.mark.timeout(300)
def test_the_readers_benchmark_runs_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.readers", "--json", "--quick", "--series", "8", "--reads", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["clean"] is True
    assert report["processes"] == {name: "exit 0" for name in [*bench.READERS, "writer"]}
    assert report["writer"]["seal_errors"] == 0 and report["writer"]["sealed_files"] > 0
    for kind in bench.READERS:
        figures = report["readers"][kind]
        assert figures["reads"] == 3 and figures["errors"] == {} and figures["duplicated_reads"] == 0
        assert figures["rows_mean"] > 0 and figures["lag_ms_p99"] is not None


def candles(opens: range) -> list[Candle]:
    return [
        Candle("spot", f"S{s}USDT", "1s", T0 + i * 1000, 1.0, 2.0, 0.5, 1.5, 1.0, 1.5, 3, 0.5, 0.7)
        for s in range(3)
        for i in opens
    ]


@pytest.mark.parametrize("kind", bench.READERS)
def test_each_reader_counts_rows_finds_a_repeated_key_and_the_newest_open_time(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    with Store(root, ops=FileOps(durable=False)) as store:
        store.append(candles(range(10)))
        store.seal()
    read_root = bench.reader(kind)
    assert read_root(root) == (30, 0, T0 + 9_000)
    segment = next(root.glob(bench.GLOB_TAIL))
    shutil.copy(segment, segment.with_name("copy.parquet"))  # a raw reader now sees one series' rows twice
    assert read_root(root) == (40, 10, T0 + 9_000)
