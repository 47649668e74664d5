"""Helpers for the end-to-end tests: run the CLI as a process, compare the store with the ground truth.

No helper waits a fixed time for something to happen: a recorder is signalled once its log says it is
ready, and stopped once the store holds what the test needs, each within a deadline. A loaded machine
makes a test slower, never wrong.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from trio_klines.core.markets import count_open_times, interval_ms, series
from trio_klines.errors import StoreError
from trio_klines.store.coverage import coverage
from trio_klines.store.dataset import load
from trio_klines.store.status import store_status
from trio_klines.store.tables import COLUMNS
from trio_klines.testing import ground_truth

#: Figures a test reports (name → figures), printed in the run's closing summary by conftest.py.
FIGURES = pytest.StashKey[dict[str, dict[str, object]]]()

START = 1_767_225_600_000  # 2026-01-01, exchange time
SEED = 11
STREAMS = ["usdt_futures:1m:BTCUSDT,ETHUSDT", "coin_futures:3m:BTCUSD_PERP", "spot:1m:BTCUSDT,BNBUSDT"]
SERIES = [("usdt_futures", "BTCUSDT", "1m"), ("usdt_futures", "ETHUSDT", "1m"), ("coin_futures", "BTCUSD_PERP", "3m"),
          ("spot", "BTCUSDT", "1m"), ("spot", "BNBUSDT", "1m")]  # fmt: skip
MIN = 60_000
#: Seconds between the recorder's summary lines (``record --quiet``): the first one is its readiness line.
SUMMARY_EVERY = 0.25
#: A line the recorder logs only once its SIGINT/SIGTERM handlers are in place: its ``ready:`` line, or a
#: summary (logged from inside the signal receiver).
READY = re.compile(r" trio_klines\.(?:summary|cli): (?:ready:|\d+ candles written)")
_COUNTS = re.compile(r"(\d+) (candles written|messages|reconnects|gaps|malformed|write errors|pending)")
#: How long a test waits for a process to be ready or for the store to fill, on a loaded machine too.
WAIT = 60.0


def python(*args: str, extra_env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "trio_klines", *args], text=True, env=env, **kw)  # type: ignore[call-overload]


def start_exchange(tmp_path: Path, faults: str) -> tuple[subprocess.Popen[str], Path]:
    """The fake exchange as a process at 600× (ten exchange minutes a wall second); its endpoints file."""
    proc = python("exchange", "--seed", str(SEED), "--speed", "600", "--start", str(START), "--faults", faults,
                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(proc.stdout.readline(), encoding="utf-8")
    return proc, endpoints


def record_args(endpoints: Path, data: Path, *extra: str) -> list[str]:
    """``record`` of :data:`STREAMS` with the tests' timings (a config file is written beside ``data``)."""
    # At 600× no session lives the minute that resets the backoff: cap it so a test run stays busy.
    config = data.parent / "record.toml"
    config.write_text("backoff_max = 1.0\n", encoding="utf-8")
    args = ["record", "--endpoints", str(endpoints), "--data", str(data), "--receive-timeout", "2",
            "--flush-seconds", "0.2", "--quiet", "--summary-every", str(SUMMARY_EVERY), "--config", str(config),
            *extra]  # fmt: skip
    for spec in STREAMS:
        args += ["--stream", spec]
    return args


def wait_for(what: str, condition: Callable[[], bool], proc: subprocess.Popen[str], log: Path,
             timeout: float = WAIT) -> None:  # fmt: skip
    """Poll ``condition`` until it holds; fail with the log's tail if ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process exited while waiting for {what}:\n{log.read_text()[-5000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-5000:]}"
        time.sleep(0.1)


def wait_ready(proc: subprocess.Popen[str], log: Path) -> None:
    """Wait until the recorder writing ``log`` can take a signal (see :data:`READY`)."""
    wait_for("the recorder to be ready", lambda: READY.search(log.read_text(encoding="utf-8")) is not None, proc, log)


def counts(log: str) -> dict[str, int]:
    """The counters of the recorder's latest summary line in ``log`` (``reconnects``, ``gaps``, …)."""
    lines = [line for line in log.splitlines() if "candles written" in line]
    return {name: int(n) for n, name in _COUNTS.findall(lines[-1])} if lines else {}


def record(endpoints: Path, data: Path, *extra: str, until: Callable[[Path, str], bool], what: str,
           timeout: float = WAIT) -> tuple[int, float, str]:  # fmt: skip
    """Run ``record`` until ``until(data, log so far)`` holds (``what``: what that means, for a failure),
    then stop it with SIGINT; (exit code, seconds to stop, stderr).

    Waiting for what the test needs, not for a time, keeps a test right on a loaded machine and when
    faults hold a connection down for a while. Stderr goes to a file: a full pipe would block the
    recorder's logging, and so the recorder.
    """
    log = data.parent / "record.log"
    with log.open("w", encoding="utf-8") as err:
        proc = python(*record_args(endpoints, data, *extra), stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_ready(proc, log)
        wait_for(what, lambda: until(data, log.read_text(encoding="utf-8")), proc, log, timeout)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(timeout=30)
        return proc.returncode, time.monotonic() - t0, log.read_text(encoding="utf-8")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_status(data: Path) -> tuple[int, dict[tuple[str, str, str], dict[str, int]]]:
    """``status --json``: its exit code (0, or 1 for missing candles) and its report per series."""
    proc = python("status", "--data", str(data), "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1), err
    return proc.returncode, {(s["market"], s["symbol"], s["interval"]): s for s in json.loads(out)["series"]}


def holds(data: Path, rows: int) -> bool:
    """Whether every series of :data:`SERIES` has at least ``rows`` candles stored (read while recording)."""
    try:
        stored = coverage(data)
    except StoreError:
        return False  # nothing written yet
    return all(s in stored and stored[s].rows >= rows for s in (series(*key) for key in SERIES))


def total_rows(data: Path) -> int:
    """Candles stored over every series (0 before the first write)."""
    try:
        return sum(c.rows for c in coverage(data).values())
    except StoreError:
        return 0


def spans(data: Path, minutes: int) -> bool:
    """Whether every series of :data:`SERIES` holds at least ``minutes`` exchange minutes of candles."""
    try:
        stored = coverage(data)
    except StoreError:
        return False
    keys = [series(*key) for key in SERIES]
    return all(k in stored and stored[k].rows * interval_ms(k.interval) >= minutes * MIN for k in keys)


def complete_through(data: Path, until: int, outages: Iterable[tuple[int, int]] = ()) -> bool:
    """Whether every series of :data:`SERIES` is stored through ``until`` (exchange ms) with nothing
    missing, and the candles of ``outages`` between its ends known as exchange gaps: what ``status``
    must then report, read while recording."""
    try:
        report = {s.series: s for s in store_status(data)}
    except StoreError:
        return False
    for key in (series(*k) for k in SERIES):
        s = report.get(key)
        if s is None or s.first is None or s.last is None or s.last < until or s.missing:
            return False
        expected = sum(count_open_times(key.interval, max(a, s.first), min(b, s.last + 1)) for a, b in outages
                       if a < s.last and b > s.first)  # fmt: skip
        if s.exchange_gaps != expected:
            return False
    return True


def check_against_truth(data: Path, outages: tuple[tuple[int, int], ...] = ()) -> int:
    """Every stored series is sorted, unique, gap-free between its ends and equal to the ground truth."""
    compared = 0
    for market, symbol, interval in SERIES:
        frame = load(data, market, symbol, interval)
        assert len(frame) > 5, f"{market} {symbol}-{interval}: only {len(frame)} candles"
        assert frame.index.is_monotonic_increasing
        assert not frame.index.duplicated().any()
        opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
        truth = ground_truth(market, symbol, interval, opens[0], opens[-1] + 1, seed=SEED, outages=outages)
        want = [c.open_time for c in truth]
        lost, extra = sorted(set(want) - set(opens)), sorted(set(opens) - set(want))
        assert want == opens, f"{market} {symbol}-{interval}: missing {lost[:10]} ({len(lost)}), extra {extra[:10]}"
        values = COLUMNS[1:]  # every value but the open time, named as on Candle
        for candle, row in zip(truth, frame.itertuples(index=False), strict=True):
            assert [getattr(row, k) for k in values] == [getattr(candle, k) for k in values]
        compared += len(truth)
    return compared


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s: no test leaves a process behind."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def report_figures(config: pytest.Config, name: str, figures: dict[str, object]) -> None:
    """Keep ``figures`` for the closing summary, where they show without ``-s``."""
    config.stash.setdefault(FIGURES, {})[name] = figures


@contextmanager
def mounted_tmpfs(mount: Path, size_mb: float, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of its own at ``mount`` (made here), to fill up or to be read-only; unmounted on the way out.

    Skips the test where it cannot be mounted (it needs root, as CI runs); root ignores permission bits,
    not a read-only mount.
    """
    mount.mkdir()
    options = f"size={size_mb}m" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}; needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)

