"""Universe mode end to end: ``record --stream 'usdt_futures:1m:*'`` follows a listing and a delisting.

The fake exchange runs as a process at 120× with two generated USDⓈ-M symbols scheduled: one listed 40
exchange minutes in (20 s of wall time), one delisted at 50½ minutes (an early-closed last candle). The
recorder re-reads exchangeInfo every 0.5 s. It is stopped once the new symbol's candles are stored well
past its listing and the delisted one has been ended; then every stored series equals the exchange's
ground truth, gap-free between its ends, and ``status`` shows the delisted one as ended, not missing.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from trio_klines.core.markets import series
from trio_klines.errors import StoreError
from trio_klines.store.coverage import coverage
from trio_klines.store.dataset import load
from trio_klines.store.tables import COLUMNS
from trio_klines.testing import ground_truth

from e2e_support import MIN, START, python, run_status, stop, wait_for, wait_ready

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

SEED = 5
LISTED, DELISTED = "SYM0002USDT", "SYM0001USDT"
LISTINGS = {f"usdt_futures:{LISTED}": "+40m"}
DELISTINGS = {f"usdt_futures:{DELISTED}": "+50m30s"}
LISTED_AT, DELISTED_AT = START + 40 * MIN, START + 50 * MIN + 30_000


def start_exchange(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    args = ["exchange", "--seed", str(SEED), "--speed", "120", "--start", str(START), "--symbols", "2"]
    args += ["--listing", f"usdt_futures:{LISTED}@+40m", "--delisting", f"usdt_futures:{DELISTED}@+50m30s"]
    proc = python(*args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(proc.stdout.readline(), encoding="utf-8")
    return proc, endpoints


def stored_through(data: Path, symbol: str, until: int) -> bool:
    try:
        cov = coverage(data).get(series("usdt_futures", symbol, "1m"))
    except StoreError:
        return False
    return cov is not None and cov.last is not None and cov.last >= until


def test_a_universe_follows_a_listing_and_a_delisting_and_stores_the_exchange_s_truth(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "record.log"
    exchange, endpoints = start_exchange(tmp_path)
    try:
        (tmp_path / "record.toml").write_text("backoff_max = 1.0\n", encoding="utf-8")
        with log.open("w", encoding="utf-8") as err:
            recorder = python("record", "--endpoints", str(endpoints), "--data", str(data), "--stream",
                              "usdt_futures:1m:*", "--universe-refresh", "0.5", "--receive-timeout", "5",
                              "--flush-seconds", "0.2", "--quiet", "--summary-every", "0.25",
                              "--config", str(tmp_path / "record.toml"),
                              stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            wait_ready(recorder, log)
            text = log.read_text(encoding="utf-8")
            assert LISTED not in text.split("ready:")[0], "the listing came before the recorder was up"
            wait_for("the new listing stored 5 minutes past its listing, the delisted symbol ended",
                     lambda: stored_through(data, LISTED, LISTED_AT + 5 * MIN)
                     and stored_through(data, "BTCUSDT", DELISTED_AT + 2 * MIN)
                     and "series ended" in log.read_text(encoding="utf-8"),
                     recorder, log, timeout=90)  # fmt: skip
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=30)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
    finally:
        stop(exchange)
    text = log.read_text(encoding="utf-8")
    assert recorder.returncode == 130, text[-3000:]
    assert "Traceback" not in text
    assert f"universe: 1 new series (usdt_futures:1m:{LISTED})" in text
    assert f"universe: 1 series ended, delisted or halted (usdt_futures:1m:{DELISTED})" in text

    stored = coverage(data)
    symbols = {s.symbol for s in stored}
    assert {"BTCUSDT", "ETHUSDT", LISTED, DELISTED} <= symbols, symbols
    for key in stored:
        frame = load(data, *key)
        opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
        truth = ground_truth(key.market, key.symbol, key.interval, opens[0], opens[-1] + 1, seed=SEED, symbols=2,
                             listings=LISTINGS, delistings=DELISTINGS, exchange_start=START)  # fmt: skip
        assert [c.open_time for c in truth] == opens, key
        for candle, row in zip(truth, frame.itertuples(index=False), strict=True):
            assert [getattr(row, k) for k in COLUMNS[1:]] == [getattr(candle, k) for k in COLUMNS[1:]], key
    listed = [int(t.value // 10**6) for t in load(data, "usdt_futures", LISTED, "1m")["candle_begin_time"]]
    assert listed[0] == LISTED_AT  # from its listing: backfilled if the subscription came later
    delisted = load(data, "usdt_futures", DELISTED, "1m")
    assert int(delisted["candle_begin_time"].iloc[-1].value // 10**6) == DELISTED_AT - 30_000  # the early close

    code, report = run_status(data)
    assert code == 0, report
    ended = report[("usdt_futures", DELISTED, "1m")]
    assert ended["ended_why"] == "SETTLING" and ended["missing"] == 0
    assert all(s["ended"] is None for k, s in report.items() if k[1] != DELISTED)
