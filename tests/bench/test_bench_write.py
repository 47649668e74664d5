"""The write benchmark still runs (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_write_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.write", "--json", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    report = json.loads(result.stdout)
    keys = ("rows_per_s_batch_1", "rows_per_s_batch_10000", "append_cost_ratio_1m_vs_1k", "ratio_vs_rewrite_at_100k",
            "rows_per_s_batch_10000_exact", "exact_over_float_batch_10000", "closed_rows_per_s_50_series_exact",
            "exact_over_float_cpu_50_series", "bytes_per_row_float", "bytes_per_row_exact")  # fmt: skip
    assert all(report[key] > 0 for key in keys)
