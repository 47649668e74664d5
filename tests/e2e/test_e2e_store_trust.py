"""What the store reports can be trusted, end to end against the fake exchange (issue 13).

A corrupt first file loses nothing for good (item 3): its candles are missing in ``status`` (which lists
the quarantined file) until ``backfill`` or ``record`` fetches them again, and then the store equals the
exchange's ground truth. A stored row from the future (item 5) is reported by ``verify``, not a crash.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
import trio

from trio_klines.core.markets import apply_endpoints, series
from trio_klines.pipeline.verify import verify
from trio_klines.store.coverage import coverage
from trio_klines.store.dataset import Store, load
from trio_klines.store.periodfiles import serialize
from trio_klines.store.tables import candles_to_table
from trio_klines.testing import ground_truth, open_exchange

from e2e_support import SEED, START, python, stop, wait_for, wait_ready

pytestmark = pytest.mark.timeout(120)
MIN = 60_000
DAY = 1440 * MIN
HEAD = START - 120 * MIN  # two hours before the new year: the series' first file is December's
BTC = series("spot", "BTCUSDT", "1m")
QUARANTINED = "_quarantine/market=spot/interval=1m/symbol=BTCUSDT/{}.quarantined"


def run(*args: str) -> tuple[int, str, str]:
    proc = python(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=90)
    return proc.returncode, out, err


def garble_first_file(data: Path) -> str:
    """Overwrite the data pages of the file holding the series' first candles (its footer intact); its name."""
    path = min(data.glob("market=spot/interval=1m/symbol=BTCUSDT/*.parquet"), key=_first_open_time)
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8
    raw[4 : len(raw) - footer] = b"\xa5" * (len(raw) - footer - 4)
    path.write_bytes(bytes(raw))
    return path.name


def _first_open_time(path: Path) -> int:
    return int(pq.read_table(path, columns=["candle_begin_time"])["candle_begin_time"][0].value)


def status(data: Path) -> tuple[int, dict[str, object]]:
    code, out, err = run("status", "--data", str(data), "--json")
    assert code in (0, 1), err
    [row] = json.loads(out)["series"]
    return code, row


def assert_equals_truth(data: Path, start: int, end: int) -> None:
    frame = load(data, *BTC, start=start, end=end)
    truth = ground_truth(*BTC, start, end, seed=SEED)
    assert len(frame) == len(truth)
    assert frame["close"].tolist() == [c.close for c in truth]
    assert frame["trade_num"].tolist() == [c.trade_num for c in truth]


def test_backfill_fetches_the_head_a_corrupt_first_file_lost(tmp_path: Path) -> None:
    exchange, endpoints = start_exchange_at(tmp_path, START + DAY)
    try:
        data = tmp_path / "data"
        args = ["backfill", "--source", "rest", "--stream", "spot:1m:BTCUSDT", "--endpoints", str(endpoints),
                "--data", str(data), "--since", str(HEAD), "--until", str(START + 120 * MIN),
                "--no-progress"]  # fmt: skip
        code, _, err = run(*args)
        assert code == 0, err
        # Sealed when backfill closed its store: a file per period, December's two hours, then January's.
        assert len(list(data.glob("market=spot/interval=1m/symbol=BTCUSDT/*.parquet"))) == 2
        name = garble_first_file(data)

        code, row = status(data)
        assert code == 1
        assert (row["first"], row["rows"], row["missing"]) == (HEAD, 120, 120)
        assert row["quarantined"] == [QUARANTINED.format(name)]

        code, _, err = run(*args)
        assert code == 0, err
        assert "backfill: 120 candles" in err
        code, row = status(data)
        assert code == 0
        assert (row["first"], row["rows"], row["missing"], row["quarantined"]) == (
            HEAD,
            240,
            0,
            [QUARANTINED.format(name)],
        )
        assert_equals_truth(data, HEAD, START + 120 * MIN)
    finally:
        stop(exchange)


def test_record_catches_up_the_head_a_corrupt_first_file_lost(tmp_path: Path) -> None:
    data = tmp_path / "data"
    truth = ground_truth(*BTC, HEAD, START, seed=SEED)
    with Store(data) as store:
        store.append(truth[60:])
    with Store(data) as store:
        store.append(truth[:60])  # before the series' only segment: sealed into a segment of its own
    name = garble_first_file(data)
    code, row = status(data)
    assert code == 1
    assert (row["first"], row["rows"], row["missing"], row["quarantined"]) == (HEAD, 60, 60, [QUARANTINED.format(name)])

    exchange, endpoints = start_exchange_at(tmp_path, START)
    log = tmp_path / "record.log"
    try:
        with log.open("w", encoding="utf-8") as err:
            proc = python("record", "--stream", "spot:1m:BTCUSDT", "--endpoints", str(endpoints), "--data", str(data),
                          "--receive-timeout", "2", "--flush-seconds", "0.2", "--quiet", "--summary-every", "0.25",
                          stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            wait_ready(proc, log)
            wait_for("the head to be fetched again", lambda: _whole(data), proc, log)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        stop(exchange)
    code, row = status(data)
    assert code == 0
    assert (row["first"], row["missing"], row["quarantined"]) == (HEAD, 0, [QUARANTINED.format(name)])
    assert isinstance(row["last"], int)
    assert_equals_truth(data, HEAD, row["last"] + MIN)


def _whole(data: Path) -> bool:
    """Whether the series holds its two hours before the new year again, and a few candles after."""
    cov = coverage(data, [BTC])[BTC]
    return cov.first == HEAD and cov.missing == 0 and cov.rows >= 125


def start_exchange_at(tmp_path: Path, start: int) -> tuple[subprocess.Popen[str], Path]:
    """The fake exchange as a process at 600×, its clock starting at ``start``; its endpoints file."""
    proc = python("exchange", "--seed", str(SEED), "--speed", "600", "--start", str(start),
                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(proc.stdout.readline(), encoding="utf-8")
    return proc, endpoints


async def test_verify_reports_a_row_from_the_future_as_extra(tmp_path: Path) -> None:
    truth = ground_truth(*BTC, START, START + 10 * MIN, seed=SEED)
    with Store(tmp_path) as store:
        store.append(truth)
    # Written as a file, as an older version (or a bug) could have stored it: year 3000.
    future = msgspec.structs.replace(truth[0], open_time=32_503_680_000_000)
    path = tmp_path / "market=spot/interval=1m/symbol=BTCUSDT/3000-01_000000000009-000000000009.parquet"
    path.write_bytes(serialize(candles_to_table([future]), BTC).to_pybytes())
    async with open_exchange(seed=SEED, start=START + DAY) as exchange:
        with trio.fail_after(30):
            [result] = await verify(tmp_path, apply_endpoints(exchange.endpoints))
    assert (result.stored, result.on_exchange, result.missing, result.different) == (11, 10, (), ())
    assert result.extra == (future.open_time,)
