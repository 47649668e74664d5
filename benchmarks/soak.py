"""Soak: the recorder CLI on ≥ 1,000 streams against the fake exchange process, for minutes, at a speed-up.

    python -m benchmarks.soak [--minutes M] [--streams N] [--speed X] [--transport T] [--json] [--keep DIR]

Not run in CI (only a seconds-long smoke run is). Two processes, started as a user starts them:

- ``python -m trio_klines exchange --symbols S --speed X --seed …`` (its first stdout line is the endpoints map);
- ``python -m trio_klines record --endpoints FILE --data DIR --quiet --stream …``: the streams are spread over
  a mix of markets and intervals, so the recorder splits them over several connections (200 streams per
  futures connection; spot's URLs stop at 4,096 characters).

Every few seconds the recorder's RSS (``VmRSS``) and CPU time are sampled from ``/proc``, and its quiet
summary line (every few seconds on stderr) gives the candles written so far. "Start" RSS is the first sample
after the warm-up (the first minute or the first 10 % of the run, whichever is shorter), "end" the last
sample before the stop. At the end the recorder gets SIGINT (it flushes, compacts, exits 130), the exchange
SIGTERM, and the dataset is compared, series by series, with the exchange's ground truth: candles recorded,
missing (holes between a series' first and last candle, and series with nothing stored), duplicated,
extra and different. ``status --json`` totals come along. Exit status 1 when gaps are not 0, the recorder did
not exit 0, or RSS moved by more than 10 %.

The default speed-up, 10×, is one the exchange sustains for 1,000 streams on 2 shared cores (about half a
core; it sends every close on time and drops stale open updates when behind, as designed): 118 closes/s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

from benchmarks._util import emit, environment

#: Exchange time at start-up (2026-01-01): fixed, so the ground truth is the same run after run.
START: Final = 1_767_225_600_000
SEED: Final = 7
#: The (market, interval) pairs the streams are spread over, round-robin.
MIX: Final = (("usdt_futures", "1m"), ("coin_futures", "1m"), ("spot", "1m"), ("usdt_futures", "3m"), ("spot", "5m"))
INTERVAL_S: Final = {"1m": 60, "3m": 180, "5m": 300}
#: Seconds between the recorder's summary lines, and between /proc samples.
SUMMARY_S: Final = 5.0
STOP_TIMEOUT_S: Final = 10.0
#: The recorder's SIGINT stop flushes and compacts every series: give it time.
RECORDER_STOP_TIMEOUT_S: Final = 180.0
_SUMMARY = re.compile(
    r"(\d+) candles written, (\d+) messages, (\d+)/(\d+) connections live, (\d+) reconnects, (\d+) gaps"
)
#: Wall seconds before the stop within which a close may still be in flight (not counted as behind).
BEHIND_GRACE_S: Final = 2.0
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What to record: ``specs`` for ``--stream``, the series they name, and the generated symbols needed."""

    specs: tuple[str, ...]
    series: tuple[tuple[str, str, str], ...]
    symbols: int

    def closes_per_second(self, speed: float) -> float:
        """Candles the exchange closes per wall second over all series."""
        return sum(speed / INTERVAL_S[interval] for _, _, interval in self.series)


def plan(streams: int) -> Plan:
    """``streams`` series spread round-robin over :data:`MIX`, on generated symbols ``SYM0001…``."""
    from trio_klines.testing.symbols import generated_symbol

    per: dict[tuple[str, str], list[str]] = {pair: [] for pair in MIX}
    for i in range(streams):
        market, interval = MIX[i % len(MIX)]
        per[market, interval].append(generated_symbol(market, len(per[market, interval]) + 1))
    specs = tuple(f"{m}:{iv}:{','.join(syms)}" for (m, iv), syms in per.items() if syms)
    series = tuple((m, s, iv) for (m, iv), syms in per.items() for s in syms)
    return Plan(specs, series, max(len(syms) for syms in per.values()))


# --- processes --------------------------------------------------------------------------------


def _python(args: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Own session: a Ctrl-C on the soak reaches only the soak, which then ends its children in order.
    return subprocess.Popen([sys.executable, "-m", "trio_klines", *args], env=env, start_new_session=True, **kw)


def end_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def read_first_line(stream: IO[bytes], timeout: float) -> str:
    """The first line of a child's stdout, or ``TimeoutError``: a wedged exchange must not hang the soak."""
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError(f"no line within {timeout} s")
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"the process closed its stdout before a line: {buffer!r}")
        buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MB, user + system CPU seconds) of a live process, from /proc."""
    rss_kb = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
                break
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclasses.dataclass(slots=True)
class Sample:
    t: float
    rss_mb: float
    cpu_s: float
    exchange_cpu_s: float
    written: int
    messages: int


class SummaryTail:
    """Follows the recorder's stderr file for its summary lines; keeps the latest counters."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.written = self.messages = self.live = self.connections = self.reconnects = self.gaps = 0
        self.other: list[str] = []  # anything else the quiet recorder said (warnings, errors): kept, bounded

    def poll(self) -> None:
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data.rfind(b"\n") + 1
        self._offset += complete
        for line in data[:complete].decode(errors="replace").splitlines():
            match = _SUMMARY.search(line)
            if match:
                written, messages, live, connections, self.reconnects, self.gaps = map(int, match.groups())
                self.written, self.messages = written, messages
                # The last line ("stopped: …") comes after the connections have closed: keep the peak.
                if connections:
                    self.live, self.connections = live, max(self.connections, connections)
            elif line.strip() and len(self.other) < 200:
                self.other.append(line)


# --- checking the dataset ---------------------------------------------------------------------


def check_dataset(
    data: Path, series: Sequence[tuple[str, str, str]], symbols: int, stopped_at: int, speed: float
) -> dict[str, int]:
    """Compare every planned series in the store with the ground truth, between its first and last candle.

    ``behind_at_stop`` counts candles that had closed on the exchange :data:`BEHIND_GRACE_S` wall seconds
    before ``stopped_at`` (exchange time of the SIGINT, ms) but are missing at the end of their series: a close
    the exchange did not send in time, or the recorder did not take in before it stopped.
    """
    from trio_klines.store.dataset import load
    from trio_klines.store.tables import COLUMNS
    from trio_klines.testing import ground_truth

    values = COLUMNS[1:]  # every value but the open time, named as on Candle

    out = {
        "candles_recorded": 0,
        "missing": 0,
        "duplicated": 0,
        "extra": 0,
        "different": 0,
        "empty_series": 0,
        "behind_at_stop": 0,
    }
    for market, symbol, interval in series:
        frame = load(data, market, symbol, interval)
        if frame.empty:
            out["empty_series"] += 1
            continue
        opens = [int(t.value // 10**6) for t in frame["candle_begin_time"]]
        unique = sorted(set(opens))
        out["candles_recorded"] += len(unique)
        length = INTERVAL_S[interval] * 1000
        # Closes due in the last moments before the SIGINT may still be on the wire: allow BEHIND_GRACE_S.
        owed_by = stopped_at - int(BEHIND_GRACE_S * speed * 1000)
        last_closed = owed_by // length * length - length  # open time of the last candle closed by then
        out["behind_at_stop"] += max(0, (last_closed - unique[-1]) // length)
        out["duplicated"] += len(opens) - len(unique)
        truth = {c.open_time: c for c in ground_truth(market, symbol, interval, unique[0], unique[-1] + 1,
                                                      seed=SEED, symbols=symbols)}  # fmt: skip
        out["missing"] += len(truth.keys() - set(unique))
        out["extra"] += len(set(unique) - truth.keys())
        for t, row in zip(opens, frame.itertuples(index=False), strict=True):
            c = truth.get(t)
            if c is not None and [getattr(row, k) for k in values] != [getattr(c, k) for k in values]:
                out["different"] += 1
    return out


def status_totals(data: Path) -> dict[str, int]:
    """``python -m trio_klines status --data DIR --json``, summed over series, with its exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "trio_klines", "status", "--data", str(data), "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    totals = {"status_series": 0, "status_rows": 0, "status_missing": 0, "status_exchange_gaps": 0,
              "status_files": 0, "status_exit_code": done.returncode}  # fmt: skip
    try:
        rows = json.loads(done.stdout)["series"]
    except (ValueError, KeyError):
        totals["status_exit_code"] = done.returncode or -1
        return totals
    totals["status_series"] = len(rows)
    for row in rows:
        for key in ("rows", "missing", "exchange_gaps", "files"):
            totals[f"status_{key}"] += row[key]
    return totals


# --- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, left in place) or a temp dir removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix="trio-klines-soak-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(minutes: float, streams: int, speed: float, transport: str | None, keep: Path | None,
        sample_s: float = SUMMARY_S) -> dict[str, Any]:  # fmt: skip
    the_plan = plan(streams)
    duration = minutes * 60
    warmup = min(60.0, duration * 0.1)
    results: dict[str, Any] = {"streams": len(the_plan.series), "minutes": minutes, "speed": speed,
                               "transport": transport or "trio-websocket", "seed": SEED,
                               "mix": [f"{m}:{iv}" for m, iv in MIX]}  # fmt: skip
    with workdir(keep) as root:
        data, endpoints = root / "data", root / "endpoints.json"
        exchange_log, recorder_log = root / "exchange.log", root / "recorder.log"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with open(exchange_log, "wb") as elog:
                exchange = _python(
                    ["exchange", "--symbols", str(the_plan.symbols), "--speed", f"{speed:g}", "--seed", str(SEED),
                     "--start", str(START)], stdout=subprocess.PIPE, stderr=elog,
                )  # fmt: skip
            procs.append(exchange)
            assert exchange.stdout is not None
            endpoints.write_text(read_first_line(exchange.stdout, 60.0) + "\n", encoding="utf-8")
            # The exchange clock starts just before it prints the endpoints: a hair early at worst.
            exchange_t0 = time.monotonic()
            args = ["record", "--endpoints", str(endpoints), "--data", str(data), "--quiet",
                    "--summary-every", f"{min(SUMMARY_S, sample_s):g}"]  # fmt: skip
            if transport:
                args += ["--transport", transport]
            for spec in the_plan.specs:
                args += ["--stream", spec]
            with open(recorder_log, "wb") as rlog:
                recorder = _python(args, stdout=subprocess.DEVNULL, stderr=rlog)
            procs.append(recorder)
            tail = SummaryTail(recorder_log)
            samples = _sample(recorder, exchange, tail, duration, sample_s)
            stop_started = time.monotonic()
            recorder.send_signal(signal.SIGINT)
            stopped_at = START + int((stop_started - exchange_t0) * speed * 1000)
            try:
                results["exit_code"] = recorder.wait(timeout=RECORDER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                results["exit_code"] = None  # did not stop in time: killed in finally
            results["stop_s"] = time.monotonic() - stop_started
            results["exchange_exit_code"] = end_process(exchange)
        finally:
            for proc in reversed(procs):
                end_process(proc)
        tail.poll()
        results |= _figures(samples, warmup, the_plan, speed, tail)
        results |= check_dataset(data, the_plan.series, the_plan.symbols, stopped_at, speed)
        results |= status_totals(data)
        results["recorder_log"] = tail.other[-20:]
    results["gaps"] = results["missing"] + results["empty_series"]
    results["env"] = environment()
    return results


def _sample(recorder: subprocess.Popen[bytes], exchange: subprocess.Popen[bytes], tail: SummaryTail,
            duration: float, every: float) -> list[Sample]:  # fmt: skip
    """Sample both processes every ``every`` seconds for ``duration``; stops early if either dies."""
    samples: list[Sample] = []
    t0 = time.monotonic()
    while True:
        now = time.monotonic() - t0
        if recorder.poll() is not None or exchange.poll() is not None:
            raise RuntimeError(f"a process ended early: recorder {recorder.returncode}, exchange {exchange.returncode}")
        rss, cpu = proc_sample(recorder.pid)
        _, ex_cpu = proc_sample(exchange.pid)
        tail.poll()
        samples.append(Sample(now, rss, cpu, ex_cpu, tail.written, tail.messages))
        if now >= duration:
            return samples
        time.sleep(min(every, max(0.0, duration - now)))


def _figures(
    samples: Sequence[Sample], warmup: float, the_plan: Plan, speed: float, tail: SummaryTail
) -> dict[str, Any]:
    start = next((s for s in samples if s.t >= warmup), samples[-1])
    end = samples[-1]
    span = max(end.t - start.t, 1e-9)
    expected_rate = the_plan.closes_per_second(speed)
    # The writer makes candles durable in bursts (a flush, or a compaction, of every series at once): the
    # longest time the written count stood still shows how long a candle may wait to be durable.
    stall, last_change = 0.0, None
    for before, after in itertools.pairwise(samples):
        if after.written != before.written:
            if last_change is not None:
                stall = max(stall, after.t - last_change)
            last_change = after.t
    written = max(end.written, 1)
    return {
        "connections": tail.connections,
        "connections_live": tail.live,
        "reconnects": tail.reconnects,
        "recorder_gaps_seen": tail.gaps,
        "samples": len(samples),
        "warmup_s": warmup,
        "rss_start_mb": round(start.rss_mb, 1),
        "rss_end_mb": round(end.rss_mb, 1),
        "rss_max_mb": round(max(s.rss_mb for s in samples), 1),
        "rss_change_pct": round((end.rss_mb / start.rss_mb - 1) * 100, 2),
        "rss_series_mb": [round(s.rss_mb, 1) for s in samples],
        "written_at_stop": end.written,
        "messages_at_stop": end.messages,
        "messages_per_s": round((end.messages - start.messages) / span, 1),
        "closes_per_s_expected": round(expected_rate, 1),
        "closes_per_s_measured": round((end.written - start.written) / span, 1),
        "keepup_ratio": round((end.written - start.written) / span / expected_rate, 3),
        "max_write_stall_s": round(stall, 1),
        "cpu_us_per_candle": round(end.cpu_s / written * 1e6, 1),
        "cpu_us_per_message": round(end.cpu_s / max(end.messages, 1) * 1e6, 2),
        "recorder_cpu_pct": round((end.cpu_s - start.cpu_s) / span * 100, 1),
        "exchange_cpu_pct": round((end.exchange_cpu_s - start.exchange_cpu_s) / span * 100, 1),
    }


_TABLE_KEYS: Final = (
    "streams", "connections", "minutes", "speed", "transport", "candles_recorded", "closes_per_s_expected",
    "closes_per_s_measured", "keepup_ratio", "behind_at_stop", "max_write_stall_s", "messages_per_s",
    "rss_start_mb", "rss_end_mb", "rss_max_mb",
    "rss_change_pct", "cpu_us_per_candle", "cpu_us_per_message", "recorder_cpu_pct", "exchange_cpu_pct",
    "reconnects", "missing", "duplicated", "extra", "different", "empty_series", "gaps", "exit_code", "stop_s",
    "status_rows", "status_missing", "status_exchange_gaps", "status_files", "status_exit_code",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to record (default 10)")
    parser.add_argument("--streams", type=int, default=1000, help="streams (series) to record (default 1000)")
    parser.add_argument("--speed", type=float, default=10.0, help="exchange speed-up (default 10)")
    parser.add_argument("--transport", default=None, help="recorder --transport (default: the recorder's)")
    parser.add_argument("--sample-seconds", type=float, default=SUMMARY_S, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep data and logs in DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not (args.minutes > 0 and args.streams >= 1 and args.speed > 0 and args.sample_seconds > 0):
        parser.error("--minutes, --streams, --speed must be positive")
    results = run(args.minutes, args.streams, args.speed, args.transport, args.keep, args.sample_seconds)
    lines = [f"soak: {results['streams']} streams for {args.minutes:g} min at {args.speed:g}×"]
    lines += [f"  {key:<24} {results.get(key)}" for key in _TABLE_KEYS]
    lines += [f"  recorder said: {line}" for line in results["recorder_log"]]
    emit(results, lines, as_json=args.json)
    ok = results["gaps"] == 0 and results["exit_code"] == 130 and abs(results["rss_change_pct"]) <= 10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
