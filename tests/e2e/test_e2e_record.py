"""End to end, as a user runs it: ``python -m trio_klines exchange`` and ``record`` as processes.

The recorder is stopped with SIGINT once ready and once the store holds what the test needs (never
after a fixed time), and the Parquet files are read back with pandas and compared, candle by candle,
with the exchange's ground truth.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from e2e_support import SEED, START, check_against_truth, counts, holds, python, record, spans, stop

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def exchange(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A fake exchange process; yields the path of its endpoints file."""
    faults = getattr(request, "param", "")
    args = ["exchange", "--seed", str(SEED), "--speed", "600", "--start", str(START)]
    proc = python(*args, *(["--faults", faults] if faults else []), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        endpoints = tmp_path / "endpoints.json"
        endpoints.write_text(first, encoding="utf-8")
        json.loads(first)
        yield endpoints
    finally:
        stop(proc)


def test_clean_run_records_exactly_the_exchange(exchange: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, stop_s, err = record(exchange, data, until=lambda d, _: spans(d, 30), what="30 minutes of every series")
    assert code == 130, err  # stopped by SIGINT, cleanly: 128 + 2
    assert stop_s < 5, f"stopping took {stop_s:.1f}s"
    assert check_against_truth(data) > 100
    # Sealed on the way out: nothing left in landing files, and any reader sees each open time once.
    assert not list(data.glob("_landing/*.parquet"))
    assert (
        pd.read_parquet(data).groupby(["market", "symbol", "interval", "candle_begin_time"], observed=True).size().max()
        == 1
    )


@pytest.mark.parametrize(
    "exchange",
    ["drop=0.004,close=0.004,stall=0.002,stall_s=3,garbage=0.01,error=0.01,dup=0.05,reorder=0.02,cutoff=1200"],
    indirect=True,
)
def test_every_websocket_fault_at_once(exchange: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"

    # From --since, until every series has enough candles and the faults have shown in the counters:
    # under these faults a connection can be down for seconds, and a series' first live candle come late.
    def survived(d: Path, log: str) -> bool:
        seen = counts(log)
        return holds(d, 31) and all(seen.get(k, 0) > 0 for k in ("reconnects", "gaps", "malformed"))

    code, stop_s, err = record(exchange, data, "--since", str(START), until=survived,
                               what="31 candles of every series, reconnects, gaps and malformed frames")  # fmt: skip
    assert code == 130, err  # stopped by SIGINT, cleanly: 128 + 2
    assert stop_s < 5, f"stopping took {stop_s:.1f}s"
    assert "Traceback" not in err
    # The faults really happened, and were survived: reconnects, skipped frames, holes filled over REST.
    summary = next(line for line in err.splitlines() if "stopped:" in line)
    numbers = dict(re.findall(r"(\d+) (reconnects|gaps|malformed)", summary)[i][::-1] for i in range(3))
    assert int(numbers["reconnects"]) > 0, summary
    assert int(numbers["gaps"]) > 0, summary
    assert int(numbers["malformed"]) > 0, summary
    compared = check_against_truth(data)
    assert compared > 150


def test_bad_configuration_exits_2_and_says_why(tmp_path: Path) -> None:
    proc = python("record", "--stream", "usdt_futures:1s:BTCUSDT", "--data", str(tmp_path), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)  # fmt: skip
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "invalid interval '1s' for usdt_futures" in err
    proc = python("record", "--data", str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "no streams to record" in err
