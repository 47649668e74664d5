"""The commands that are not covered by the end-to-end tests: demo, compact, argument errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

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


@pytest.mark.timeout(60)
def test_compact_merges_and_refuses_a_locked_store(tmp_path: Path) -> None:
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 30 * 60_000, seed=SEED)
    with Store(tmp_path) as store:
        for candle in truth:
            store.append([candle])
        code, _, err = run("compact", "--data", str(tmp_path))
        assert code == 1
        assert "being written by another process" in err
    code, out, err = run("compact", "--data", str(tmp_path))
    assert code == 0, err
    assert "into 1 file" in out or "merged" in out
    files = list(tmp_path.glob("market=spot/interval=1m/symbol=BTCUSDT/*.parquet"))
    assert len(files) == 1
    assert load(tmp_path, "spot", "BTCUSDT", "1m")["close"].tolist() == [c.close for c in truth]


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


def test_the_backfill_progress_bar_counts_pages_and_rows(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_klines.cli.data import _ProgressBar
    from trio_klines.pipeline.history import HistoryProgress

    bar = _ProgressBar()
    bar.close()  # before any report: nothing to close
    bar(HistoryProgress(pages=0, total_pages=4, candles=0))
    bar(HistoryProgress(pages=3, total_pages=4, candles=2500))
    bar.close()
    err = capsys.readouterr().err
    assert "backfill" in err and "3/4" in err and "rows=2500" in err
