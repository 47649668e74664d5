"""``backfill --source auto`` as a process against the fake exchange's archive with faults: months, days and a
REST tail stored exactly, an interrupted run resumed, faults reported on stderr."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trio_klines.store.dataset import load
from trio_klines.store.landing import list_landing
from trio_klines.testing import ground_truth

from e2e_support import WAIT, python

pytestmark = pytest.mark.timeout(180)
SEED = 7


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


NOW = ms("2025-03-03T12:00:00")  # exchange time: January and February monthly, March 1st daily, then REST
SINCE, UNTIL = ms("2025-01-01T00:00:00"), ms("2025-03-03T06:00:00")
SERIES = [("usdt_futures", "BTCUSDT", "1m"), ("spot", "ETHUSDT", "5m")]


def start_exchange(tmp_path: Path, faults: str) -> tuple[subprocess.Popen[str], Path]:
    proc = python("exchange", "--seed", str(SEED), "--start", str(NOW), "--faults", faults,
                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(proc.stdout.readline(), encoding="utf-8")  # its first line: it is serving
    return proc, endpoints


def backfill(endpoints: Path, data: Path, *extra: str) -> subprocess.Popen[str]:
    streams = [a for m, s, i in SERIES for a in ("--stream", f"{m}:{i}:{s}")]
    return python("backfill", *streams, "--endpoints", str(endpoints), "--data", str(data), "--since", str(SINCE),
                  "--until", str(UNTIL), "--no-progress", *extra,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def assert_exact(data: Path) -> None:
    for market, symbol, interval in SERIES:
        frame = load(data, market, symbol, interval)
        truth = ground_truth(market, symbol, interval, SINCE, UNTIL, seed=SEED)
        assert [int(t.value // 10**6) for t in frame["candle_begin_time"]] == [c.open_time for c in truth]
        assert frame["quote_volume"].tolist() == [c.quote_volume for c in truth]
        assert frame["trade_num"].tolist() == [c.trade_num for c in truth]


def test_backfill_auto_is_exact_reports_faults_and_resumes(tmp_path: Path) -> None:
    exchange, endpoints = start_exchange(tmp_path, "archive_bad_checksum=0.15,archive_truncated=0.1,archive_slow=0.3")
    data = tmp_path / "data"
    try:
        # Interrupted once something is stored (a landing file is the readiness signal): it stops cleanly.
        first = backfill(endpoints, data)
        deadline = time.monotonic() + WAIT
        while not list_landing(data) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=WAIT)
        assert first.returncode in (0, 130), err
        stored_first = sum(len(load(data, m, s, i)) for m, s, i in SERIES)
        total = sum(len(ground_truth(m, s, i, SINCE, UNTIL, seed=SEED)) for m, s, i in SERIES)
        assert 0 < stored_first < total  # slow archive answers: the signal came before the end

        second = backfill(endpoints, data)
        _, err = second.communicate(timeout=150)
        assert second.returncode == 0, err
        assert_exact(data)
        summary = [line for line in err.splitlines() if line.startswith("backfill: ")]
        assert summary[0].startswith("backfill: archive: ") and summary[1].startswith("backfill: REST: ")
        archived = int(summary[0].split()[2])
        assert archived + stored_first <= total and archived > 0  # what the first run stored was not fetched again
        if "SHA-256" in err:
            assert "is not its .CHECKSUM's" in err  # a retried file is named, with both hashes

        third = backfill(endpoints, data)
        _, err = third.communicate(timeout=WAIT)
        assert third.returncode == 0, err
        assert "backfill: archive: 0 candles from 0 files" in err and "REST: 0 candles in 0 pages" in err
    finally:
        exchange.terminate()
        exchange.wait(timeout=WAIT)


def test_backfill_source_archive_reports_what_it_did_not_fetch(tmp_path: Path) -> None:
    exchange, endpoints = start_exchange(tmp_path, "")
    data = tmp_path / "data"
    try:
        proc = python("backfill", "--stream", "spot:1h:BTCUSDT", "--endpoints", str(endpoints), "--data", str(data),
                      "--since", str(ms("2025-02-27T00:00:00")), "--until", str(UNTIL), "--source", "archive",
                      "--no-progress", stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        _, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 1, err
        assert "ranges not fetched (not in the archive)" in err and "run it again to resume" in err
        assert len(load(data, "spot", "BTCUSDT", "1h")) == 3 * 24
    finally:
        exchange.terminate()
        exchange.wait(timeout=WAIT)
