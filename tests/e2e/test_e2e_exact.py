"""``--numbers exact`` as processes against the fake exchange: the live WebSocket, REST and the data archive
each store the decimal strings the exchange sent, digit for digit; ``verify`` compares them exactly; a
dataset refuses the other numbers."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from trio_klines.core.decimals import canonical
from trio_klines.core.parse import Candle
from trio_klines.store.dataset import Store, load
from trio_klines.store.marker import read_numbers
from trio_klines.store.tables import COLUMNS
from trio_klines.testing import ground_truth

from e2e_support import SERIES, START, WAIT, holds, python, record, start_exchange, stop

pytestmark = pytest.mark.timeout(240)

VALUES = [c for c in COLUMNS[1:] if c != "trade_num"]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def run(*args: str) -> tuple[int, str, str]:
    proc = python(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=150)
    return proc.returncode, out, err


def assert_sent_digit_for_digit(data: Path, key: tuple[str, str, str], seed: int, start: int | None = None) -> int:
    """The stored decimals of ``key`` are the exchange's strings (its ground truth, exact) for every stored candle."""
    frame = load(data, *key, exact=True)
    begins = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
    first = begins[0] if start is None else start
    truth = {c.open_time: c for c in ground_truth(*key, first, begins[-1] + 1, seed=seed, exact=True)}
    assert begins == sorted(truth), key
    for name in VALUES:
        stored = [canonical(format(x, "f")) for x in frame[name]]
        assert stored == [canonical(getattr(truth[t], name)) for t in begins], (key, name)
    assert frame["trade_num"].tolist() == [truth[t].trade_num for t in begins]
    return len(begins)


def test_record_exact_stores_what_the_websocket_and_rest_sent(tmp_path: Path) -> None:
    exchange, endpoints = start_exchange(tmp_path, "")
    data = tmp_path / "data"
    try:
        # --since: the catch-up's candles come over REST, the rest live over the WebSocket.
        code, _, err = record(endpoints, data, "--numbers", "exact", "--since", str(START),
                              until=lambda d, _: holds(d, 31), what="31 candles of every series")  # fmt: skip
        assert code == 130, err
        assert read_numbers(data) == "exact"
        compared = sum(assert_sent_digit_for_digit(data, key, 11, START) for key in SERIES)
        assert compared >= 31 * len(SERIES)
        for command in (("status", "--json"), ("compact",)):  # the other commands take an exact dataset as it is
            code, out, err = run(command[0], "--data", str(data), *command[1:])
            assert code == 0, out + err
        assert assert_sent_digit_for_digit(data, SERIES[0], 11, START) >= 31
        # The dataset keeps its numbers: asking for floats is refused in one line, before anything runs.
        code, _, err = run("record", "--data", str(data), "--endpoints", str(endpoints), "--numbers", "float",
                           "--stream", "spot:1m:BTCUSDT")  # fmt: skip
        assert code == 2, err
        assert "holds exact numbers, not float: a dataset never mixes both" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    finally:
        stop(exchange)


NOW = ms("2025-03-03T12:00:00")  # exchange time: January and February monthly archive files, March 1st daily, REST
SINCE, UNTIL = ms("2025-02-27T00:00:00"), ms("2025-03-03T06:00:00")
ARCHIVE_SEED = 7


def test_backfill_exact_from_the_archive_and_rest_and_verify_exactly(tmp_path: Path) -> None:
    proc = python("exchange", "--seed", str(ARCHIVE_SEED), "--start", str(NOW), stdout=subprocess.PIPE,
                  stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(proc.stdout.readline(), encoding="utf-8")
    archived, rest = tmp_path / "archived", tmp_path / "rest"
    key = ("usdt_futures", "BTCUSDT", "1m")
    try:
        common = ["--stream", "usdt_futures:1m:BTCUSDT", "--endpoints", str(endpoints), "--since", str(SINCE),
                  "--until", str(UNTIL), "--no-progress", "--numbers", "exact"]  # fmt: skip
        code, _, err = run("backfill", *common, "--data", str(archived), "--source", "auto")
        assert code == 0, err
        archive_line = next(line for line in err.splitlines() if line.startswith("backfill: archive: "))
        assert int(archive_line.split()[2]) > 0, err  # "backfill: archive: N candles from M files…"
        code, _, err = run("backfill", *common, "--data", str(rest), "--source", "rest")
        assert code == 0, err
        # The archive's CSV strings and REST's rows: the same decimals, each the string the exchange sent.
        from_archive, from_rest = load(archived, *key, exact=True), load(rest, *key, exact=True)
        assert from_archive.equals(from_rest) and len(from_archive) == (UNTIL - SINCE) // 60_000
        assert assert_sent_digit_for_digit(archived, key, ARCHIVE_SEED, SINCE) == len(from_archive)

        code, out, err = run("verify", "--data", str(archived), "--endpoints", str(endpoints), "--json")
        assert code == 0, out + err
        assert json.loads(out)["series"][0]["different"] == 0
        # A decimal changed in its last digit: equal as a float, not as the exchange's string.
        truth = ground_truth(*key, SINCE + 60_000, SINCE + 120_000, seed=ARCHIVE_SEED, exact=True)[0]
        nudged = _nudge(truth)
        assert float(nudged.quote_volume) == float(truth.quote_volume)
        with Store(archived) as store:
            store.append([nudged])
        code, out, err = run("verify", "--data", str(archived), "--endpoints", str(endpoints), "--json")
        assert code == 1, out + err
        report = json.loads(out)["series"][0]
        assert report["different"] == 1 and report["different_times"] == ["2025-02-27T00:01:00Z"]
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)


def _nudge(candle: Candle) -> Candle:
    """``candle`` with its quote volume 1e-12 larger (its taker-buy quote volume stays at most it)."""
    whole, _, fraction = candle.quote_volume.partition(".")
    text = f"{whole}.{fraction.ljust(11, '0')}1"
    return msgspec.structs.replace(candle, quote_volume=text)
