"""The commands that are not covered by the end-to-end tests: demo, compact, argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from trio_klines.store.dataset import Store, load
from trio_klines.testing import ground_truth

from e2e_support import SEED, START, python


def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = python(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_demo_records_the_articles_set_and_shows_it(tmp_path: Path) -> None:
    code, out, err = run("demo", "--seconds", "2", "--data", str(tmp_path / "demo"))
    assert code == 0, err
    for series in ("usdt_futures BTCUSDT-1m", "usdt_futures ETHUSDT-1m", "coin_futures BTCUSD_PERP-3m",
                   "coin_futures ETHUSD_PERP-3m", "spot BTCUSDT-1m", "spot BNBUSDT-1m"):  # fmt: skip
        assert f"{series}: " in out
    assert "0 missing" in out
    assert len(load(tmp_path / "demo", "spot", "BNBUSDT", "1m")) > 5


# A writer that dies without closing its store (SIGKILL, a power cut) leaves its appends in landing files.
_DIE_AFTER_APPENDS = """
import os, sys
from trio_klines.store.dataset import Store
from trio_klines.testing import ground_truth
root, start, end, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = Store(root)
for candle in ground_truth("spot", "BTCUSDT", "1m", start, end, seed=seed):
    store.append([candle], seal=False)
os._exit(0)
"""


@pytest.mark.timeout(60)
def test_compact_seals_landing_files_and_refuses_a_locked_store(tmp_path: Path) -> None:
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 30 * 60_000, seed=SEED)
    with Store(tmp_path):
        code, _, err = run("compact", "--data", str(tmp_path))
        assert code == 1
        assert "being written by another process" in err
    argv = [sys.executable, "-c", _DIE_AFTER_APPENDS, str(tmp_path), str(START), str(START + 30 * 60_000), str(SEED)]
    died = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert died.returncode == 0, died.stderr
    assert len(list(tmp_path.glob("_landing/*.parquet"))) == len(truth)
    assert not list(tmp_path.glob("market=*/**/*.parquet"))

    code, out, err = run("compact", "--data", str(tmp_path))
    assert code == 0, err
    assert out == f"1 series: sealed {len(truth)} rows into 1 file(s)\n"
    assert not list(tmp_path.glob("_landing/*.parquet"))
    files = list(tmp_path.glob("market=spot/interval=1m/symbol=BTCUSDT/*.parquet"))
    assert len(files) == 1
    assert pq.read_table(files[0])["close"].to_pylist() == [c.close for c in truth]  # what a raw reader sees
    assert load(tmp_path, "spot", "BTCUSDT", "1m")["close"].tolist() == [c.close for c in truth]


@pytest.mark.timeout(60)
def test_status_lists_quarantined_files_and_rows_beyond_the_clock(tmp_path: Path) -> None:
    from trio_klines.core.markets import series
    from trio_klines.store.periodfiles import serialize
    from trio_klines.store.tables import candles_to_table

    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 20 * 60_000, seed=SEED)
    with Store(tmp_path) as store:
        store.append(truth[10:])
    with Store(tmp_path) as store:
        store.append(truth[:10])  # before the series' only segment: sealed into a segment of its own
    _tail, head = sorted(tmp_path.glob("market=spot/interval=1m/symbol=BTCUSDT/*.parquet"))
    assert pq.read_table(head)["close"].to_pylist() == [c.close for c in truth[:10]]
    raw = bytearray(head.read_bytes())
    raw[4 : len(raw) // 2] = bytes(len(raw) // 2 - 4)  # garbled pages: quarantined when read
    head.write_bytes(bytes(raw))
    year_3000 = 32_503_680_000_000  # a row no parser lets in today, as an older version might have stored it
    future = candles_to_table([msgspec.structs.replace(truth[0], open_time=year_3000)])
    future_file = head.with_name("3000-01_000000000009-000000000009.parquet")
    future_file.write_bytes(serialize(future, series("spot", "BTCUSDT", "1m")).to_pybytes())

    code, out, err = run("status", "--data", str(tmp_path))
    assert code == 1, err
    quarantined = (
        "_quarantine/market=spot/interval=1m/symbol=BTCUSDT/2026-01_000000000002-000000000002.parquet.quarantined"
    )
    table = out.splitlines()
    [row] = [line for line in table if line.startswith("spot BTCUSDT-1m  2026-01-01 00:00  2026-01-01 00:19 ")]
    assert row.split()[-4:-2] == ["10", "10"]  # rows, missing
    assert "quarantined files (their candles count as missing until record or backfill fetches them):" in out
    assert f"\n  spot BTCUSDT-1m: {quarantined}\n" in out
    assert "rows beyond the clock (not real closed candles; neither counted nor missing):" in out
    assert "\n  spot BTCUSDT-1m: 1 from 3000-01-01 00:00" in out

    code, out, err = run("status", "--data", str(tmp_path), "--json")
    assert code == 1, err
    [row] = json.loads(out)["series"]
    assert (row["rows"], row["missing"], row["quarantined"]) == (10, 10, [quarantined])
    assert (row["last"], row["beyond_clock"], row["beyond_clock_first"]) == (START + 19 * 60_000, 1, year_3000)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["record", "--stream", "spot:1m:BTC/USDT"], "invalid symbol"),
        (["record", "--stream", "spot:1m:BTCUSDT", "--flush-seconds", "0"], "must be a positive number"),
        (["record", "--stream", "spot:1m:BTCUSDT", "--since", "yesterday"], "invalid time"),
        (["record", "--config", "/nonexistent.toml"], "cannot read config file"),
        (["backfill", "--stream", "spot:1m:BTCUSDT"], "--since"),
        (["exchange", "--faults", "bogus=1"], "bogus"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run(*args, "--data", str(tmp_path)) if args[0] != "exchange" else run(*args)
    assert code == 2
    assert message in err


def test_the_backfill_progress_bar_counts_candles_files_and_pages(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_klines.cli.data import _ProgressBar
    from trio_klines.pipeline.history import HistoryProgress

    bar = _ProgressBar()
    bar.close()  # before any report: nothing to close
    bar(HistoryProgress(pages=0, total_pages=4, candles=0, files=0, total_files=3, total_candles=5000))
    bar(HistoryProgress(pages=3, total_pages=4, candles=2500, files=2, total_files=3, total_candles=5000))
    bar.close()
    err = capsys.readouterr().err
    assert "backfill" in err and "2.50k/5.00k" in err and "files=2/3" in err and "pages=3" in err
    assert "<" in err  # tqdm's ETA, from the total


def test_the_backfill_progress_bar_raises_its_total_when_candles_pass_it(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_klines.cli.data import _ProgressBar
    from trio_klines.pipeline.history import HistoryProgress

    bar = _ProgressBar()
    bar(HistoryProgress(pages=0, total_pages=1, candles=0, total_candles=100))
    bar(HistoryProgress(pages=1, total_pages=1, candles=120, total_candles=100))  # the clock moved on meanwhile
    assert (bar._bar.n, bar._bar.total) == (120, 120)
    bar.close()
    assert "120/120" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["status"], "WARNING"),  # the command's default
        (["--log-level", "DEBUG", "status"], "DEBUG"),
        (["status", "--log-level", "DEBUG"], "DEBUG"),
        (["--log-level", "ERROR", "status", "--log-level", "INFO"], "INFO"),  # the command's wins
        (["--log-level", "ERROR", "compact"], "ERROR"),
    ],
)
def test_log_level_before_or_after_the_command(
    argv: list[str], level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio_klines.cli
    from trio_klines.cli import build_parser, main

    configured: list[tuple[str, str]] = []
    monkeypatch.setattr(trio_klines.cli, "configure_logging", lambda level, fmt: configured.append((level, fmt)))
    with Store(tmp_path):
        pass
    assert main([*argv, "--data", str(tmp_path)]) == 0
    assert configured == [(level, "text")]
    assert main([*argv, "--log-format", "json", "--data", str(tmp_path)]) == 0
    assert configured[-1] == (level, "json")
    args = build_parser().parse_args([*argv, "--data", str(tmp_path)])
    assert (args.log_level or args.default_log_level) == level


def test_a_bad_log_level_after_the_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_klines.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["status", "--log-level", "LOUD"])
    assert exited.value.code == 2
    assert "--log-level: invalid choice: 'LOUD'" in capsys.readouterr().err
