"""``backfill``, ``status`` and ``verify`` as processes against the fake exchange."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgspec
import pytest

from trio_klines.store.dataset import Store, load
from trio_klines.testing import ground_truth

from e2e_support import SEED, START, python, stop

pytestmark = pytest.mark.timeout(120)
MIN = 60_000
OUTAGE = (START + 100 * MIN, START + 130 * MIN)


def run(*args: str) -> tuple[int, str, str]:
    proc = python(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=90)
    return proc.returncode, out, err


def test_backfill_is_exact_resumable_and_verified(tmp_path: Path) -> None:
    # Exchange time starts a day after START, so the whole requested range is history.
    exchange = python("exchange", "--seed", str(SEED), "--speed", "600", "--start", str(START + 1440 * MIN),
                      "--faults", f"outage={OUTAGE[0]}-{OUTAGE[1]},rest429=0.05,rest5xx=0.05",
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert exchange.stdout is not None
        endpoints = tmp_path / "endpoints.json"
        endpoints.write_text(exchange.stdout.readline(), encoding="utf-8")
        data = tmp_path / "data"
        common = ["--endpoints", str(endpoints), "--data", str(data), "--since", str(START)]
        until = ["--until", str(START + 1200 * MIN)]
        code, _, err = run("backfill", "--stream", "usdt_futures:1m:BTCUSDT", "--stream", "spot:5m:ETHUSDT",
                           *common, *until)  # fmt: skip
        assert code == 0, err
        frame = load(data, "usdt_futures", "BTCUSDT", "1m")
        truth = ground_truth("usdt_futures", "BTCUSDT", "1m", START, START + 1200 * MIN, seed=SEED, outages=(OUTAGE,))
        assert len(frame) == len(truth) == 1200 - 30
        assert frame["close"].tolist() == [c.close for c in truth]
        assert frame["trade_num"].tolist() == [c.trade_num for c in truth]

        # Idempotent and resumable: a second run has nothing left to fetch.
        code, _, err = run("backfill", "--stream", "usdt_futures:1m:BTCUSDT", *common, *until)
        assert code == 0, err
        assert "backfill: REST: 0 candles in 0 pages" in err and "archive: 0 candles from 0 files" in err

        code, out, err = run("status", "--data", str(data), "--json")
        assert code == 0, out + err
        rows = {(s["market"], s["symbol"], s["interval"]): s for s in json.loads(out)["series"]}
        assert rows["usdt_futures", "BTCUSDT", "1m"]["exchange_gaps"] == 30
        assert rows["usdt_futures", "BTCUSDT", "1m"]["missing"] == 0
        assert rows["spot", "ETHUSDT", "5m"]["rows"] == 240 - 6

        code, out, err = run("verify", "--data", str(data), "--endpoints", str(endpoints))
        assert code == 0, out + err

        # Tamper with one stored candle: verify finds it and says which.
        bad = ground_truth("usdt_futures", "BTCUSDT", "1m", START + 5 * MIN, START + 6 * MIN, seed=SEED)[0]
        with Store(data) as store:
            store.append([msgspec.structs.replace(bad, volume=bad.volume + 1)])  # still a valid candle
        code, out, err = run("verify", "--data", str(data), "--endpoints", str(endpoints))
        assert code == 1, out + err
        assert "1 different" in out
        assert "different: 2026-01-01T00:05:00Z" in out and str(START + 5 * MIN) not in out
    finally:
        stop(exchange)


def test_status_of_a_store_with_a_hole_exits_1(tmp_path: Path) -> None:
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 10 * MIN, seed=SEED)
    with Store(tmp_path) as store:
        store.append(truth[:3] + truth[5:])
    code, out, _ = run("status", "--data", str(tmp_path))
    assert code == 1
    assert "spot BTCUSDT-1m" in out
    assert out.splitlines()[1].split()[-3] == "2"  # the missing column
