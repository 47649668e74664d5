"""Chaos: every fault at once, the recorder killed again and again, a corrupt file, a full disk.

One scenario, seeded, against the fake exchange as a process (600× speed) with every WebSocket and
REST fault switched on, three declared outages and Binance's connection cut-off:

1. a first ``record --since`` (30 days back, slow REST) is stopped with SIGTERM in the middle of its
   backfill, and must stop cleanly (exit 143, 128 + SIGTERM);
2. the recorder is then started and SIGKILLed at random instants, again and again;
3. between two runs a stored Parquet file is corrupted;
4. while one run records, the disk (a small tmpfs of its own) is filled up, then freed;
5. a last run is left to finish the backfill and stopped with SIGINT.

The runs alternate between the two WebSocket transports.

Then the stored record must equal the exchange's ground truth exactly from ``--since`` to the last
candle (0 missing, 0 duplicated, 0 altered) outside the declared outages, ``status`` must count the
outages as exchange gaps and nothing else as missing, and the exchange must never have had to ban the
recorder (no REST 418). The figures are printed at the end.
"""

from __future__ import annotations

import errno
import json
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trio_klines.core.markets import count_open_times
from trio_klines.store.compaction import redundant_files
from trio_klines.store.periodfiles import list_series_dir

from e2e_support import (
    SEED,
    SERIES,
    START,
    check_against_truth,
    mounted_tmpfs,
    python,
    record_args,
    report_figures,
    run_status,
    start_exchange,
    stop,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.timeout(420)

MIN = 60_000
DAY = 1_440 * MIN
SINCE = START - 30 * DAY
# Exchange time runs 600× faster: ten exchange minutes a wall second. One outage in the history the
# first run backfills, two while the recorder runs (aligned to 15 minutes, so every interval agrees).
OUTAGES = (
    (START - 12 * DAY, START - 12 * DAY + 45 * MIN),
    (START + 120 * MIN, START + 150 * MIN),
    (START + 480 * MIN, START + 510 * MIN),
)
FAULTS = ",".join(
    [
        "drop=0.002", "close=0.001", "stall=0.001", "stall_s=1.5", "garbage=0.003", "error=0.003", "dup=0.01",
        "reorder=0.01", "cutoff=1500", "rest429=0.05", "rest5xx=0.05", "rest_slow=0.1",
        *(f"outage={a}-{b}" for a, b in OUTAGES),
    ]
)  # fmt: skip
KILLS = 12
#: The runs take turns: both WebSocket transports face the same chaos.
TRANSPORTS = ("trio-websocket", "websockets")
DISK_MB = 256


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own for the data, so that the test can fill it up (needs root, as CI runs)."""
    with mounted_tmpfs(tmp_path / "disk", DISK_MB) as mount:
        yield mount


def start_recorder(endpoints: Path, data: Path, log: Path, transport: str, *extra: str) -> subprocess.Popen[str]:
    args = record_args(endpoints, data, "--since", str(SINCE), "--summary-every", "1", "--transport", transport,
                       *extra)  # fmt: skip
    with log.open("w", encoding="utf-8") as err:
        return python(*args, stdout=subprocess.DEVNULL, stderr=err)


def backfill_done(data: Path) -> bool:
    code, report = run_status(data)
    # At or before SINCE: a quarantined file whose footer is gone tells only its period, so its whole period is
    # fetched again (coverage's rule), a month that may begin before SINCE. Those rows are the exchange's too.
    first_ok = all((report.get(s, {}).get("first") or SINCE + 1) <= SINCE for s in SERIES)
    return code == 0 and first_ok


def fill_up(disk: Path) -> Path:
    """Write zeros until the filesystem says ENOSPC; the file is the ballast to free later."""
    ballast = disk / "ballast"
    chunk = b"\0" * (1 << 20)
    with ballast.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return ballast


SUMMARY = re.compile(r"(\d+) candles written, .* (\d+) write errors, (\d+) pending")


def summaries(log: Path) -> list[tuple[int, int, int]]:
    """(written, write errors, pending) of each once-a-second summary line the recorder logged."""
    return [tuple(map(int, m.groups())) for m in SUMMARY.finditer(log.read_text())]  # type: ignore[misc]


def disk_full_for_a_while(disk: Path, proc: subprocess.Popen[str], log: Path) -> None:
    """Fill the disk under a running recorder until its writes fail, then free it and see it recover."""
    wait_for("a first write", lambda: any(w > 0 for w, _, _ in summaries(log)), proc, log)
    ballast = fill_up(disk)
    try:
        wait_for("failing writes", lambda: any(e > 0 for _, e, _ in summaries(log)), proc, log)
        time.sleep(2.0)  # a while of full disk: candles pile up in memory, the channel keeps flowing
    finally:
        ballast.unlink()
    stuck = len(summaries(log))
    wait_for("the pending candles to be written", lambda: any(p == 0 for _, _, p in summaries(log)[stuck:]), proc, log)


def corrupt_a_file(data: Path, rng: random.Random) -> Path:
    # Not a leftover of an interrupted merge: the store deletes those unread, there is nothing to detect.
    files = []
    for directory in sorted(data.glob("market=*/interval=*/symbol=*")):
        names = list_series_dir(directory)
        redundant = set(redundant_files(names))
        files += [directory / str(name) for name in names if name not in redundant]
    assert files, "nothing stored yet to corrupt"
    victim = rng.choice(files)
    raw = bytearray(victim.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(rng.randrange(256) for _ in range(64))
    victim.write_bytes(bytes(raw[: len(raw) - 16]))  # garbled and truncated: the footer is gone too
    return victim


def test_chaos_record_equals_the_exchange(tmp_path: Path, small_disk: Path, pytestconfig: pytest.Config) -> None:
    rng = random.Random(SEED)
    data = small_disk / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    figures: dict[str, object] = {"kills": 0}
    exchange, endpoints = start_exchange(tmp_path, FAULTS)
    runs: list[subprocess.Popen[str]] = []

    def launch(name: str, *extra: str) -> tuple[subprocess.Popen[str], Path]:
        log = logs / f"{len(runs):02d}-{name}.log"
        proc = start_recorder(endpoints, data, log, TRANSPORTS[len(runs) % 2], *extra)
        runs.append(proc)
        return proc, log

    began = time.monotonic()
    try:
        # 1. SIGTERM in the middle of the first backfill: a clean stop (143), the backfill left unfinished.
        # Signalled once it can take the signal (a summary is logged from inside the signal receiver)
        # and has written: a SIGTERM before the handler is installed would kill it, not stop it.
        first, log = launch("sigterm-mid-backfill")
        wait_for("a first write", lambda: any(w > 0 for w, _, _ in summaries(log)), first, log)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 143, log.read_text()
        assert not backfill_done(data), "the backfill finished before SIGTERM: make it longer"

        # 2-4. SIGKILL at random instants; a corrupt file and a full disk in between.
        corrupted, disk_errors = None, 0
        for kill in range(KILLS):
            if kill == 3:
                corrupted = corrupt_a_file(data, rng)
            proc, log = launch(f"kill{kill}")
            if kill == 7:
                disk_full_for_a_while(small_disk, proc, log)
            time.sleep(rng.uniform(0.3, 3.0))
            proc.kill()
            proc.wait(timeout=10)
            figures["kills"] = int(figures["kills"]) + 1  # type: ignore[call-overload]
            text = log.read_text()
            assert "Traceback" not in text, text
            if kill == 7:
                disk_errors = text.count("No space left on device")
                assert disk_errors > 0, text
            time.sleep(rng.uniform(0.0, 1.0))  # nobody records while the exchange moves on

        # 5. The last run finishes the backfill (polled through `status`), then stops cleanly. Its stop may
        # wait for the backfills running then (stop_grace, default 2.5 s): a gap its last second of live
        # recording found is filled before it exits, even on a loaded machine, so the record it leaves is
        # whole (the last config file on the command line wins).
        final = data.parent / "final.toml"
        final.write_text("backoff_max = 1.0\nstop_grace = 30.0\n", encoding="utf-8")
        last, log = launch("final", "--config", str(final))
        deadline = time.monotonic() + 240
        while not backfill_done(data):
            assert last.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (
                f"backfill not finished: {run_status(data)[1]}\n{log.read_text()[-6000:]}"
            )
            time.sleep(2)
        wait_ready(last, log)  # the backfill may have been done by the killed runs already
        time.sleep(1.0)  # a second of live recording after the backfill
        last.send_signal(signal.SIGINT)
        assert last.wait(timeout=60) == 130, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text and "banned" not in text, text
    finally:
        for proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stop(exchange)
    assert exchange.stdout is not None
    stats = json.loads(exchange.stdout.read().strip().splitlines()[-1])["stats"]
    exchange.stdout.close()

    # The stored record is the exchange's, exactly, outside the outages.
    compared = check_against_truth(data, outages=OUTAGES)
    code, report = run_status(data)
    assert code == 0, report
    for (_market, _symbol, interval), s in report.items():
        assert s["first"] <= SINCE and s["missing"] == 0, s  # see backfill_done
        assert s["exchange_gaps"] == sum(count_open_times(interval, a, b) for a, b in OUTAGES), s
    quarantined = list((data / "_quarantine").rglob("*.quarantined"))
    assert corrupted is not None and quarantined, "the corrupt file was not quarantined"
    assert stats.get("rest_418", 0) == 0, stats  # never banned: every 429's Retry-After was honoured
    faults = {k: v for k, v in stats.items() if k.startswith("fault_") or k in ("rest_429", "rest_500", "rest_502",
                                                                                 "rest_503", "rest_504")}  # fmt: skip
    for key in ("fault_drop", "fault_stall", "fault_garbage", "fault_error", "fault_dup", "fault_reorder",
                "fault_cutoff", "rest_429"):  # fmt: skip
        assert faults.get(key, 0) > 0, (key, faults)
    figures |= {
        "faults_injected": sum(faults.values()),
        "by_kind": faults,
        "candles_compared": compared,
        "missing": 0,
        "duplicated": 0,
        "altered": 0,
        "exchange_gap_candles": sum(s["exchange_gaps"] for s in report.values()),
        "disk_full_errors_logged": disk_errors,
        "quarantined_files": len(quarantined),
        "rest_418": stats.get("rest_418", 0),
        "ws_connections": stats.get("ws_connections", 0),
        "wall_seconds": round(time.monotonic() - began),
    }
    report_figures(pytestconfig, "chaos", figures)
