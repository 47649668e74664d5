"""What an operator sees: everyday mistakes and signals end in one line and the right exit status.

``record`` and ``backfill`` run as processes against the fake exchange. Statuses: 2 bad configuration,
1 a failure, 130 SIGINT, 143 SIGTERM; never a traceback. Every signal is sent once the process says it
can take one (its ``ready:`` line, or the ``flushing and stopping`` line before a second signal), never
after a fixed sleep.
"""

from __future__ import annotations

import errno
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from trio_klines.store.dataset import load
from trio_klines.testing import ground_truth

from e2e_support import (
    SEED,
    START,
    mounted_tmpfs,
    python,
    record_args,
    start_exchange,
    stop,
    total_rows,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.timeout(120)

MIN = 60_000
DAY = 1_440 * MIN
PROG = "python -m trio_klines"
#: Backfilled by the signal tests: long enough, with slow REST answers, to be stopped part-way.
BACKFILL_STREAM = "spot:1m:BTCUSDT,BNBUSDT"
BACKFILL_SINCE = START - 6 * DAY
WRITTEN = re.compile(r"(\d+) candles written, .* (\d+) write errors, (\d+) pending")


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[Path]:
    """A fake exchange process whose REST answers take 0.25 s each; yields its endpoints file."""
    proc, endpoints = start_exchange(tmp_path, "rest_slow=0.25")
    try:
        yield endpoints
    finally:
        stop(proc)


def start_record(endpoints: Path, data: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    log = data.parent / f"{data.name}.log"
    with log.open("w", encoding="utf-8") as err:
        return python(*record_args(endpoints, data, *extra), stdout=subprocess.DEVNULL, stderr=err), log


def finish(proc: subprocess.Popen[str], log: Path) -> tuple[int, str]:
    """Wait for ``proc`` to exit (killed after 30 s, failing the test); its status and its stderr."""
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return code, log.read_text(encoding="utf-8")


def last_lines(err: str, prefix: str) -> list[str]:
    """The lines of ``err`` the command printed itself (not its log), starting with ``prefix``."""
    return [line for line in err.splitlines() if line.startswith(prefix)]


# --- record -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_record_stops_cleanly_on_a_signal_and_exits_128_plus_it(
    exchange: Path, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    data = tmp_path / "data"
    proc, log = start_record(exchange, data)
    try:
        wait_ready(proc, log)
        wait_for("a first write", lambda: total_rows(data) > 0, proc, log)
        # A second recorder on the same data directory: one line naming the other process, status 1.
        second = python(*record_args(exchange, data), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, second_err = second.communicate(timeout=60)
        assert second.returncode == 1, second_err
        assert second_err.startswith(f"{PROG} record: error: {data} is being written by another process"), second_err
        assert second_err.count("\n") == 1 and "Traceback" not in second_err, second_err
        proc.send_signal(sig)
        code, err = finish(proc, log)
    finally:
        stop(proc)
    assert code == status, err
    assert f"{sig.name}: flushing and stopping" in err and "stopped:" in err
    assert "Traceback" not in err and not last_lines(err, PROG), err
    assert WRITTEN.findall(err)[-1][2] == "0", err  # nothing left pending


def test_a_second_signal_cuts_the_stop_short_and_says_what_was_written(exchange: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, log = start_record(exchange, data, "--since", str(START - DAY))  # a backfill to cut short
    try:
        wait_ready(proc, log)
        proc.send_signal(signal.SIGINT)
        wait_for("the stop to begin", lambda: "flushing and stopping" in log.read_text(encoding="utf-8"), proc, log)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc, log)
    finally:
        stop(proc)
    assert code != 0, err
    assert "SIGINT: stopping without waiting for the flush" in err
    (said,) = last_lines(err, PROG)  # one line: what the stop left unwritten
    pending = int(WRITTEN.findall(err)[-1][2])
    if pending:
        assert code == 1 and said.startswith(f"{PROG} record: error: {pending} candles received were not written")
    else:
        assert code == 130 and said.endswith("every candle received was written"), err
    assert "Traceback" not in err, err


DISK_MB = 16


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own, to fill up (needs root, as CI runs)."""
    with mounted_tmpfs(tmp_path / "disk", DISK_MB) as mount:
        yield mount


def fill_up(disk: Path) -> None:
    chunk = b"\0" * (1 << 20)
    with (disk / "ballast").open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_a_stop_that_cannot_write_exits_1_and_counts_what_was_not_written(
    exchange: Path, small_disk: Path, tmp_path: Path
) -> None:
    data = small_disk / "data"
    log = tmp_path / "record.log"
    with log.open("w", encoding="utf-8") as err_file:
        proc = python(*record_args(exchange, data), stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        wait_ready(proc, log)
        wait_for("a first write", lambda: total_rows(data) > 0, proc, log)
        fill_up(small_disk)

        def failing() -> bool:
            return any(int(e) > 0 and int(p) > 0 for _, e, p in WRITTEN.findall(log.read_text(encoding="utf-8")))

        wait_for("writes failing with candles pending", failing, proc, log)
        proc.send_signal(signal.SIGINT)  # the flush cannot finish: the disk is full
        wait_for("the stop to begin", lambda: "flushing and stopping" in log.read_text(encoding="utf-8"), proc, log)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc, log)
    finally:
        stop(proc)
    assert code == 1, err
    (said,) = last_lines(err, PROG)
    found = re.fullmatch(rf"{PROG} record: error: (\d+) candles received were not written \(a second signal cut "
                         r"the stop short\); the next start fetches them again over REST", said)  # fmt: skip
    assert found and int(found[1]) > 0, said
    assert "Traceback" not in err, err[-3000:]


# --- backfill -----------------------------------------------------------------------------------


def backfill(endpoints: Path, data: Path, log: Path) -> subprocess.Popen[str]:
    # DEBUG: httpx then logs each request, which is how the test sees pages arrive.
    args = ["--log-level", "DEBUG", "backfill", "--source", "rest", "--endpoints", str(endpoints), "--data", str(data),
            "--stream", BACKFILL_STREAM, "--since", str(BACKFILL_SINCE), "--until", str(START)]  # fmt: skip
    with log.open("w", encoding="utf-8") as err:
        return python(*args, stdout=subprocess.DEVNULL, stderr=err)


def stored_exactly(data: Path) -> bool:
    """Whether both series hold exactly the exchange's candles of ``[BACKFILL_SINCE, START)``."""
    for symbol in ("BTCUSDT", "BNBUSDT"):
        frame = load(data, "spot", symbol, "1m")
        truth = ground_truth("spot", symbol, "1m", BACKFILL_SINCE, START, seed=SEED)
        if frame["close"].tolist() != [c.close for c in truth]:
            return False
    return True


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_backfill_stops_on_a_signal_keeps_what_it_stored_and_resumes(
    exchange: Path, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    data, log = tmp_path / "data", tmp_path / "backfill.log"
    proc = backfill(exchange, data, log)
    try:
        wait_for("the backfill to be ready", lambda: "ready: backfilling" in log.read_text(encoding="utf-8"), proc, log)
        # Stopped as pages arrive (each answer takes 0.25 s; a series' pages come one after the other).
        wait_for("two pages", lambda: log.read_text(encoding="utf-8").count("/klines?") >= 2, proc, log)
        proc.send_signal(sig)
        code, err = finish(proc, log)
    finally:
        stop(proc)
    assert code == status, err
    assert "Traceback" not in err, err
    (said,) = last_lines(err, PROG)
    found = re.fullmatch(rf"{PROG} backfill: stopped by {sig.name}: (\d+) candles stored and kept; run the same "
                         "command again to fetch the rest", said)  # fmt: skip
    assert found, said
    kept = total_rows(data)
    assert 0 < int(found[1]) <= kept < 2 * 6 * 1440, "stop it earlier: the backfill was done"
    assert not [line for line in err.splitlines() if line.startswith("backfill: ")], "no success-looking summary"

    again = backfill(exchange, data, tmp_path / "again.log")
    code, err = finish(again, tmp_path / "again.log")
    assert code == 0, err
    assert stored_exactly(data)
