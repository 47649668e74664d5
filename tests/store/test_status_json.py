"""What ``status --json`` is made of: a series' lag and JSON fields (trio_klines.store.status), and the
probe telling whether a process writes a store (trio_klines.store.lock.lock_holder)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from trio_klines.core.markets import series
from trio_klines.errors import StoreLocked
from trio_klines.store import lock
from trio_klines.store.dataset import Store
from trio_klines.store.lock import LockHolder, RootLock, lock_holder
from trio_klines.store.status import SeriesStatus, store_status
from trio_klines.testing import ground_truth

from e2e_support import SEED, START

pytestmark = pytest.mark.timeout(60)
MIN = 60_000
BTC_1M = series("spot", "BTCUSDT", "1m")

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


@contextmanager
def lock_held_by_a_process(root: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``root``'s lock for the duration of the block (ended after it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.stderr
        yield proc
    finally:
        proc.communicate(timeout=30)  # closes its stdin: it lets go and exits
        assert proc.returncode == 0


# --- lock_holder ------------------------------------------------------------------------------


def test_no_holder_and_nothing_created(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / "none") is None
    assert lock_holder(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # an empty directory stays empty: no _lock is made
    a_file = tmp_path / "file"
    a_file.write_text("not a store")
    assert lock_holder(a_file) is None


def test_a_writer_in_this_process_is_seen_and_keeps_its_lock(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert lock_holder(tmp_path) == LockHolder(os.getpid())
        # The probe's descriptor closed: the writer's lock is still there (flock, not a POSIX record lock).
        assert lock_holder(tmp_path) == LockHolder(os.getpid())
        with pytest.raises(StoreLocked):
            Store(tmp_path)
        store.append(ground_truth("spot", "BTCUSDT", "1m", START, START + 2 * MIN, seed=SEED))
    assert lock_holder(tmp_path) is None
    with Store(tmp_path):  # the probes left nothing held
        pass


def test_a_holder_whose_pid_is_unknown(tmp_path: Path) -> None:
    with Store(tmp_path):
        (tmp_path / "_lock").unlink()
        assert lock_holder(tmp_path) == LockHolder(None)
        (tmp_path / "_lock").write_text("not a pid\n")
        assert lock_holder(tmp_path) == LockHolder(None)


def test_probes_do_not_see_each_other(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what a probe holds, for as long as one system call
        assert lock_holder(tmp_path) is None
    finally:
        os.close(fd)


def test_a_writer_starting_during_a_probe_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    sleeps: list[float] = []

    def probe_ends(seconds: float) -> None:  # the probe lets go while the writer waits
        sleeps.append(seconds)
        os.close(probe)

    monkeypatch.setattr(lock, "time", types.SimpleNamespace(monotonic=lambda: 0.0, sleep=probe_ends))
    RootLock(tmp_path).release()
    assert sleeps == [lock._PROBE_RETRY]


def test_a_writer_is_refused_if_the_shared_lock_stays(tmp_path: Path) -> None:
    holder = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with pytest.raises(StoreLocked, match="being written by another process"):
            RootLock(tmp_path)  # after PROBE_GRACE
    finally:
        os.close(holder)


@pytest.mark.slow
def test_a_writer_in_another_process_is_seen(tmp_path: Path) -> None:
    with lock_held_by_a_process(tmp_path) as proc:
        assert lock_holder(tmp_path) == LockHolder(proc.pid)
        assert lock_holder(tmp_path) == LockHolder(proc.pid)  # the probe did not take it from the holder
        with pytest.raises(StoreLocked, match=f"pid {proc.pid}"):
            Store(tmp_path)
    assert lock_holder(tmp_path) is None


# --- SeriesStatus -----------------------------------------------------------------------------


def status(first: int | None, last: int | None, interval: str = "1m", **kw: object) -> SeriesStatus:
    key = series("spot", "BTCUSDT", interval)
    return SeriesStatus(key, first, last, 0 if last is None else 10, 0, 0, 1, **kw)  # type: ignore[arg-type]


def test_lag_is_from_the_last_candles_close() -> None:
    last = START + 9 * MIN
    assert status(START, last).lag_ms(START + 10 * MIN) == 0  # closed just now
    assert status(START, last).lag_ms(START + 10 * MIN + 42_250) == 42_250
    assert status(START, last).lag_ms(START + 9 * MIN + 30_000) == 0  # a clock behind the exchange's
    assert status(START, last, "1h").lag_ms(START + 10 * MIN) == 0  # its hour is not over
    assert status(START, last, "1h").lag_ms(last + 3 * 3_600_000) == 2 * 3_600_000
    assert status(None, None).lag_ms(START) is None
    dec, jan = 1_764_547_200_000, START  # 1M: a candle closes when the next month opens
    assert status(dec, dec, "1M").lag_ms(jan + 5 * MIN) == 5 * MIN


def test_as_dict_gives_every_time_as_iso_and_as_epoch_ms() -> None:
    row = status(START, START + 9 * MIN, quarantined=("q/a",), beyond_clock=1, beyond_clock_first=32_503_680_000_000,
                 ended=START + 10 * MIN, ended_why="delisted")  # fmt: skip
    assert row.as_dict(START + 11 * MIN + 500) == {
        "market": "spot", "symbol": "BTCUSDT", "interval": "1m",
        "first": START, "last": START + 9 * MIN,
        "first_time": "2026-01-01T00:00:00Z", "last_time": "2026-01-01T00:09:00Z",
        "lag_seconds": 60.5,
        "rows": 10, "missing": 0, "exchange_gaps": 0, "files": 1, "quarantined": ["q/a"],
        "beyond_clock": 1, "beyond_clock_first": 32_503_680_000_000,
        "beyond_clock_first_time": "3000-01-01T00:00:00Z",
        "ended": START + 10 * MIN, "ended_time": "2026-01-01T00:10:00Z", "ended_why": "delisted",
    }  # fmt: skip
    empty = status(None, None).as_dict(START)
    assert empty["first_time"] is empty["last_time"] is empty["lag_seconds"] is None
    assert empty["beyond_clock_first_time"] is empty["ended_time"] is None


def test_as_dict_of_a_stored_series(tmp_path: Path) -> None:
    truth = ground_truth("spot", "BTCUSDT", "1m", START, START + 20 * MIN, seed=SEED)
    with Store(tmp_path) as store:
        store.append(truth[:5] + truth[7:])
    now = START + 30 * MIN
    [row] = store_status(tmp_path, now=now)
    got = row.as_dict(now)
    assert (got["first_time"], got["last_time"], got["missing"], got["rows"]) == (
        "2026-01-01T00:00:00Z", "2026-01-01T00:19:00Z", 2, 18)  # fmt: skip
    assert got["lag_seconds"] == 10 * 60
    before = int(time.time() * 1000)
    by_default = row.as_dict()["lag_seconds"]  # at the local clock
    assert row.lag_ms(before) <= by_default * 1000 <= row.lag_ms(int(time.time() * 1000))
