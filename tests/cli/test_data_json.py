"""``status --json`` and ``verify --json`` (trio_klines.cli.data), run in process through ``main``.

``verify`` runs its own ``trio.run``: here it runs in a worker thread while the test's trio loop serves
the fake exchange.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import trio

from trio_klines.cli import main
from trio_klines.store.dataset import Store
from trio_klines.testing import ground_truth, open_exchange

from e2e_support import SEED, START

pytestmark = pytest.mark.timeout(60)
MIN = 60_000
DAY = 1440 * MIN

#: Every key of ``status --json``, at the top and per series.
STATUS_KEYS = {"data", "now", "now_ms", "recorder_running", "recorder_pid", "series"}
SERIES_KEYS = {"market", "symbol", "interval", "first", "last", "first_time", "last_time", "lag_seconds", "rows",
               "missing", "exchange_gaps", "files", "quarantined", "beyond_clock", "beyond_clock_first",
               "beyond_clock_first_time", "ended", "ended_time", "ended_why"}  # fmt: skip

#: Holds the lock of the store argv[1] until its stdin closes; says ``ready`` once it holds it.
HOLD_LOCK = """
import sys
from pathlib import Path
from trio_klines.store.lock import RootLock
held = RootLock(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
held.release()
"""


def a_store_with_a_hole(root: Path) -> None:
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 20 * MIN, seed=SEED)
    with Store(root) as store:
        store.append(truth[:5] + truth[7:])


def status_json(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["status", "--data", str(root), "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one JSON object, one line
    return code, json.loads(out)


def test_status_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_store_with_a_hole(tmp_path)
    before = int(time.time() * 1000)
    code, report = status_json(tmp_path, capsys)
    after = int(time.time() * 1000)
    assert code == 1  # candles missing
    assert set(report) == STATUS_KEYS
    assert (report["data"], report["recorder_running"], report["recorder_pid"]) == (str(tmp_path), False, None)
    now = report["now_ms"]
    assert isinstance(now, int) and before <= now <= after
    assert isinstance(report["now"], str) and report["now"].startswith(time.strftime("%Y-", time.gmtime(now / 1000)))
    assert report["now"].endswith("Z")
    [row] = report["series"]  # type: ignore[misc]
    assert set(row) == SERIES_KEYS
    assert (row["market"], row["symbol"], row["interval"], row["rows"], row["missing"]) == ("spot", "BTCUSDT", "1m",
                                                                                            18, 2)  # fmt: skip
    assert (row["first"], row["last"]) == (START, START + 19 * MIN)  # epoch ms, as before
    assert (row["first_time"], row["last_time"]) == ("2026-01-01T00:00:00Z", "2026-01-01T00:19:00Z")
    assert row["lag_seconds"] == (now - (START + 20 * MIN)) / 1000  # behind the last candle's close


def test_status_json_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(tmp_path):
        pass
    code, report = status_json(tmp_path, capsys)
    assert (code, report["series"], report["recorder_running"]) == (0, [], False)


def test_status_json_sees_a_writer_in_this_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_store_with_a_hole(tmp_path)
    with Store(tmp_path):
        _, report = status_json(tmp_path, capsys)
        assert (report["recorder_running"], report["recorder_pid"]) == (True, os.getpid())
        assert main(["compact", "--data", str(tmp_path)]) == 1  # the probe took nothing from the writer
    assert "being written by another process" in capsys.readouterr().err
    _, report = status_json(tmp_path, capsys)
    assert report["recorder_running"] is False


@pytest.mark.slow
def test_status_json_sees_a_recorder_in_another_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_store_with_a_hole(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        _, report = status_json(tmp_path, capsys)
        assert (report["recorder_running"], report["recorder_pid"]) == (True, proc.pid)
        assert len(report["series"]) == 1  # type: ignore[arg-type]
    finally:
        _, err = proc.communicate(timeout=30)  # its stdin closed, it lets go and exits
    assert proc.returncode == 0, err
    _, report = status_json(tmp_path, capsys)
    assert (report["recorder_running"], report["recorder_pid"]) == (False, None)


def test_status_table_shows_the_lag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_store_with_a_hole(tmp_path)
    assert main(["status", "--data", str(tmp_path)]) == 1
    head, row = capsys.readouterr().out.splitlines()[:2]
    assert head.split()[:5] == ["series", "first", "last", "lag", "rows"]
    assert row.startswith("spot BTCUSDT-1m  2026-01-01 00:00  2026-01-01 00:19  ")
    assert row.split()[6].endswith("h")  # days and hours since 2026-01-01 00:20
    assert row.split()[-4:] == ["18", "2", "0", "1"]  # rows, missing, exchange gaps, files


@pytest.mark.parametrize(
    ("ms", "shown"),
    [(None, "-"), (0, "0s"), (59_999, "59s"), (60_000, "1m00s"), (3_599_000, "59m59s"), (3_600_000, "1h00m"),
     (86_399_000, "23h59m"), (86_400_000, "1d00h"), (400 * 86_400_000 + 5 * 3_600_000, "400d05h")],
)  # fmt: skip
def test_the_lag_is_shown_to_the_unit_that_matters(ms: int | None, shown: str) -> None:
    from trio_klines.cli.data import _lag

    assert _lag(ms) == shown


async def verify_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    with trio.fail_after(30):
        code = await trio.to_thread.run_sync(main, ["verify", "--json", *args])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one JSON object, nothing else on stdout
    return code, json.loads(out)


async def test_verify_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outage = (START + 10 * MIN, START + 12 * MIN)  # the exchange has no candles there; the store does
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 30 * MIN, seed=SEED)
    tampered = msgspec.structs.replace(truth[20], volume=truth[20].volume + 1)
    data = tmp_path / "data"
    with Store(data) as store:
        store.append([*truth[:5], *truth[6:20], tampered, *truth[21:]])  # minute 5 missing
    async with open_exchange(seed=SEED, start=START + DAY, faults=f"outage={outage[0]}-{outage[1]}") as exchange:
        endpoints = tmp_path / "endpoints.json"
        endpoints.write_text(json.dumps(exchange.endpoints), encoding="utf-8")
        common = ["--data", str(data), "--endpoints", str(endpoints)]
        code, report = await verify_json(common, capsys)
        assert code == 1
        assert report == {
            "data": str(data), "since": None, "problems": 4,
            "series": [{
                "market": "spot", "symbol": "BTCUSDT", "interval": "1m", "stored": 29, "on_exchange": 28,
                "problems": 4,
                "missing": 1, "missing_times": ["2026-01-01T00:05:00Z"],
                "extra": 2, "extra_times": ["2026-01-01T00:10:00Z", "2026-01-01T00:11:00Z"],
                "different": 1, "different_times": ["2026-01-01T00:20:00Z"],
            }],
        }  # fmt: skip

        code, report = await verify_json([*common, "--since", "2026-01-01T00:21:00Z"], capsys)
        assert code == 0
        assert (report["since"], report["problems"]) == ("2026-01-01T00:21:00Z", 0)
        [row] = report["series"]  # type: ignore[misc]
        assert (row["stored"], row["on_exchange"], row["missing_times"]) == (9, 9, [])
