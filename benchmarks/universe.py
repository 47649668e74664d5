"""The recorder at Binance's real paced rates: CPU, RSS and close → durable, up to the whole universe and its midnight.

    python -m benchmarks.universe [--json] [--quick] [--size NAME ...] [--transport T ...] [--before S] [--after S]
                                  [--boundary {day,hour,all}] [--scale X [--connections N]] [--tick-ms MS] ...

Three processes per run, so that each one's CPU is its own:

- the sender (:mod:`benchmarks.universe_sender`): one WebSocket server on loopback for every market, which
  writes each connection's due frames every ``--tick-ms`` (5) in one small write, at Binance's rates
  (futures streams update every 250 ms, spot every 2 s, spot ``1s`` once a second), closes aligned on
  interval boundaries, on a simulated clock that starts ``--before`` seconds before a boundary and runs at
  real speed to ``--after`` seconds past it. ``--boundary day`` (default): 2024-07-03 00:00 UTC, where every
  interval up to ``1d`` closes at once (36,404 closes at full universe); ``hour``: 2024-07-02 13:00, up to
  ``1h``; ``all``: 2024-07-01 00:00, also ``3d``, ``1w`` and ``1M`` (45,005). The recorder judges a closed
  candle by the frame's event time, not by its own clock, so a date in the past is taken as live;
  its store names files by open time, so nothing else sees the date;
- the recorder (this module, ``--child-recorder``): the real :class:`~trio_klines.Recorder` with the real
  Parquet store in a temporary directory, backfill and the exchangeInfo check off (there is no REST),
  default flush settings, the transport under test; it subscribes to ``Recorder.candles()`` to time close
  → durable (the sender stamps each close's wall time in its trade count) and prints its counters twice
  a second (``rec.stats()``: under 0.2 % of a core at 98 connections);
- this process: starts both, starts the clock once every connection is up, samples the recorder's and the
  sender's ``/proc/<pid>/stat`` (user + system, all threads) and ``VmRSS`` every 0.25 s, waits for the
  recorder to have received every frame and written every close, stops it (it flushes and seals), then
  reads the store (``pyarrow.dataset``, raw rows) and compares every series with the closes it was due.

The store seals its landing files into the series' files in rounds every ``seal_seconds`` (600 s): a run
shorter than that leaves all sealing to the stop (``stop_s``, outside the CPU figures);
``--seal-seconds 20`` puts rounds inside the run (:mod:`benchmarks.series` measures them per candle).

The universe is :mod:`benchmarks.series`'s Binance-like one: 2,000 spot symbols x 16 intervals, 800
USDⓈ-M x 15 and 67 COIN-M x 15 = 45,005 streams, every stream updating at its market's rate: 69,020
msg/s offered (open updates and spot's 1s closes; the closes of longer intervals come on top) over 98
connections (spot 1,024 streams per connection, futures 200). Binance sends a futures update only "if
existing" (a trade happened), so illiquid symbols send less: these are the rates' upper bound. Sizes
(``--size``, repeatable; default ``1k 10k full``): ``quick`` (0.2 % of the symbols, 109 streams over 3
connections, for CI), ``1k`` (≈1,000 msg/s over 5 connections), ``10k`` (≈10,000 msg/s) and ``full``;
``--scale X`` adds a ``custom`` one (``--connections N`` to spread it over N connections). Simulated spans:
20 s before the boundary and 10 s after it (``full``: 30 and 30; ``quick``: 2 and 1). Each size runs once
per transport (``--transport``, repeatable; default both).

A recorder's connection takes up to the market's stream limit (spot 1,024, futures 200); its URL asks for
what fits in 4,096 characters (about 200 spot streams of these names) and it subscribes to the rest once
connected, so the sender honours ``SUBSCRIBE`` and the clock starts once every stream is on the wire. The
benchmark runs the recorder as it is.

Figures per size and transport: recorder CPU per message (µs, from /proc: all of its threads), % of one
core (its CPU over the seconds the traffic ran; the steady part before the boundary and the burst's
``flush + 2 s`` after it apart), RSS (max), received/sent, close → durable p50/p99/max (all closes and the
burst's alone), candles written and stored vs due, rows duplicated, missing, gaps the recorder saw, and the
sender's own lateness. The machine's speed drifts: compare CPU per message and ratios, not runs. Targets
are printed beside the figures, and ``targets_met`` holds each: full universe under 60 % of a core on the
default transport, RSS under 1 GB, received/sent 1.0, 0 gaps, p99 close → durable within flush + 2 s with
the burst; 1,000 msg/s within 3 % of a core; 10,000 msg/s within 10 µs per message; every run: every
close stored exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from benchmarks._util import emit, environment
from benchmarks.soak import proc_sample
from trio_klines.config import DEFAULT_SEAL_SECONDS
from trio_klines.config import TRANSPORTS as CONFIG_TRANSPORTS
from trio_klines.core.markets import (
    MARKETS,
    count_open_times,
    floor_open_time,
    get_market,
    is_open_time,
    plan_connections,
    stream_name,
)

#: Symbols per market at full universe, as :data:`benchmarks.series.UNIVERSE_SYMBOLS`.
UNIVERSE_SYMBOLS: Final = {"spot": 2_000, "usdt_futures": 800, "coin_futures": 67}
BOUNDARIES: Final = {
    "day": "2024-07-03T00:00",  # a Wednesday, not a 3d boundary: every interval up to 1d closes
    "hour": "2024-07-02T13:00",  # an odd hour: every interval up to 1h
    "all": "2024-07-01T00:00",  # a Monday, a month start, a 3d boundary: every interval
}
#: The recorder's transports, its default first (the targets on CPU apply to the default).
TRANSPORTS: Final = CONFIG_TRANSPORTS
DEFAULT_TRANSPORT: Final = TRANSPORTS[0]
FLUSH_SECONDS: Final = 1.0  # the recorder's default
#: Seconds between two /proc samples.
SAMPLE_S: Final = 0.25
#: Seconds between two of the recorder's counter lines (each costs a ``rec.stats()``).
STATS_S: Final = 0.5
#: After the last frame, how long the recorder may take to receive and write everything before it is stopped.
DRAIN_TIMEOUT_S: Final = 120.0
#: How long start-up (imports, store, connections) and the final stop (flush, seal) may take.
START_TIMEOUT_S: Final = 300.0
STOP_TIMEOUT_S: Final = 1800.0


@dataclasses.dataclass(frozen=True)
class Size:
    """One traffic size: symbols per market times ``scale``, optionally spread over ``connections``."""

    name: str
    scale: float
    connections: int | None = None
    before_s: int = 20
    after_s: int = 10


def symbols(market: str, scale: float) -> list[str]:
    return [f"S{i:05d}USDT" for i in range(max(1, round(UNIVERSE_SYMBOLS[market] * scale)))]


def universe(scale: float) -> list[tuple[str, str, str]]:
    """Every (market, symbol, interval): each market's symbols at ``scale`` in every interval it offers."""
    return [(m, s, i) for m in UNIVERSE_SYMBOLS for i in MARKETS[m].intervals for s in symbols(m, scale)]


def offered_rate(series: Iterable[tuple[str, str, str]]) -> float:
    """Messages per second the sender writes for ``series`` (a 1s stream's one frame a second is its close)."""
    return sum(1.0 if i == "1s" else 1000 / get_market(m).update_period_ms for m, _, i in series)


FULL_RATE: Final = offered_rate(universe(1.0))
SIZES: Final = {
    "quick": Size("quick", 0.002, None, 2, 1),
    "1k": Size("1k", 1_000 / FULL_RATE, 5),
    "10k": Size("10k", 10_000 / FULL_RATE),
    "full": Size("full", 1.0, None, 30, 30),
}
TARGETS: Final = {  # (size, figure, "<" or "<=", bound) on the default transport
    "full_cpu_pct_of_core": ("full", "cpu_pct_of_core", "<", 60.0),
    "full_rss_mb_max": ("full", "rss_mb_max", "<", 1024.0),
    "1k_cpu_pct_of_core": ("1k", "cpu_pct_of_core", "<=", 3.0),
    "10k_cpu_us_per_msg": ("10k", "cpu_us_per_msg", "<=", 10.0),
}


def caps_for(
    series: Sequence[tuple[str, str, str]], natural: Mapping[str, int], connections: int | None
) -> dict[str, int]:
    """Streams per connection of each market: ``natural``, or the largest equal cap that needs at most
    ``connections`` connections at all (never above a market's natural cap)."""
    counts = Counter(m for m, _, _ in series)
    if connections is None:
        return {m: natural[m] for m in counts}

    def needed(cap: int) -> int:
        return sum(math.ceil(n / min(cap, natural[m])) for m, n in counts.items())

    cap = next((c for c in range(1, max(counts.values()) + 1) if needed(c) <= connections), max(counts.values()))
    return {m: min(cap, natural[m]) for m in counts}


def plan(series: Sequence[tuple[str, str, str]], caps: Mapping[str, int]) -> int:
    """How many connections the recorder opens for ``series`` (its own planning, with these caps)."""
    total = 0
    for market, cap in caps.items():
        m = dataclasses.replace(
            MARKETS[market], ws_url=f"ws://127.0.0.1:65535/{market}", max_streams_per_connection=cap
        )
        names = [stream_name(s, i) for mk, s, i in series if mk == market]
        total += len(plan_connections(m, names, max_url_length=None))
    return total


def due(interval: str, sim_start: int, sim_end: int) -> tuple[int, int, int]:
    """Closes of an ``interval`` series in ``(sim_start, sim_end]``: their count, first and last open time."""
    count = count_open_times(interval, sim_start + 1, sim_end + 1)
    return (
        count,
        floor_open_time(interval, sim_start),
        floor_open_time(interval, floor_open_time(interval, sim_end) - 1),
    )


# --- the recorder's process -------------------------------------------------------------------


class Latency:
    """Close → durable times, counted per whole millisecond."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def summary(self) -> dict[str, float]:
        n = sum(self.counts.values())
        if not n:
            return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        out = {"count": n, "max_ms": float(max(self.counts))}
        for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            seen, rank = 0, math.ceil(q * n)
            for ms in sorted(self.counts):
                seen += self.counts[ms]
                if seen >= rank:
                    out[name] = float(ms)
                    break
        return out


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def recorder_child(spec: Mapping[str, Any]) -> None:
    """The recorder as an embedder runs it, with the counters and the close → durable times on stdout."""
    import logging

    import trio

    from trio_klines import Recorder, RecorderConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = RecorderConfig.build(
        streams=spec["streams"], endpoints={m: {"ws": f"ws://127.0.0.1:{spec['port']}/{m}"} for m in spec["caps"]},
        data_dir=spec["data"], backfill=False, check_symbols=False, transport=spec["transport"],
        flush_seconds=spec["flush_seconds"], seal_seconds=spec["seal_seconds"],
    )  # fmt: skip
    markets = {n: dataclasses.replace(m, max_streams_per_connection=spec["caps"].get(n, m.max_streams_per_connection))
               for n, m in config.markets.items()}  # fmt: skip
    config = dataclasses.replace(config, markets=markets)
    boundary = spec["boundary"]
    durable, burst = Latency(), Latency()

    async def consume(batches: trio.MemoryReceiveChannel[list[Any]]) -> None:
        async with batches:
            async for batch in batches:
                now_us = time.time_ns() // 1000
                for c in batch:
                    ms = max(0, (now_us - c.trade_num) // 1000)  # the sender stamped the close's wall time (µs)
                    durable.counts[ms] += 1
                    if c.end_time == boundary:
                        burst.counts[ms] += 1

    async def report(rec: Recorder) -> None:
        while True:
            s = rec.stats()
            _say(event="stats", t=time.time(), messages=s.messages, candles=s.candles, written=s.written,
                 live=sum(c.state == "live" for c in s.connections), connections=len(s.connections))  # fmt: skip
            await trio.sleep(STATS_S)

    async def until_stop() -> None:
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            received = b""
            while b"stop" not in received:
                data = await stdin.receive_some(1024)
                if not data:
                    return
                received += data

    async with trio.open_nursery() as outer:
        async with Recorder(config) as rec:
            outer.start_soon(consume, rec.candles(buffer=10_000))
            _say(event="ready", connections=len(rec.stats().connections), series=len(rec.series))
            async with trio.open_nursery() as inner:
                inner.start_soon(report, rec)
                await until_stop()
                inner.cancel_scope.cancel()
            stopping = time.perf_counter()
        stop_s = time.perf_counter() - stopping
    s = rec.stats()
    counters = {k: v for k, v in s.as_dict().items() if k != "connections"}
    _say(event="final", stop_s=stop_s, durable=durable.summary(), burst_durable=burst.summary(), **counters)


# --- the parent: processes and samples ------------------------------------------------------


class Child:
    """A child process speaking JSON lines on stdout, read by a thread into a queue of events."""

    def __init__(self, args: Sequence[str], log: IO[bytes]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
            start_new_session=True,  # a Ctrl-C reaches the benchmark only, which then ends its children
        )  # fmt: skip
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.latest: dict[str, dict[str, Any]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.latest[event["event"]] = event
            self.events.put(event)

    def wait_for(self, name: str | tuple[str, ...], until: Callable[[dict[str, Any]], bool] = lambda e: True,
                 timeout: float = START_TIMEOUT_S) -> dict[str, Any]:  # fmt: skip
        """The next event ``name`` (or one of them) for which ``until`` holds; RuntimeError if the process ends
        or time runs out."""
        names = (name,) if isinstance(name, str) else name
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.proc.args[2]}: no {name!r} event within {timeout:g} s")
            try:
                event = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    raise RuntimeError(f"{self.proc.args[2]} exited ({self.proc.returncode}) before {name!r}") from None
                continue
            if event["event"] in names and until(event):
                return event

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def end(self, timeout: float = 10.0) -> int:
        """Close its stdin (its signal to stop), kill it if it is still there after ``timeout``."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclasses.dataclass
class Samples:
    """``(wall time, CPU seconds, RSS MB)`` of a process, every :data:`SAMPLE_S`."""

    pid: int
    rows: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)

    def take(self) -> None:
        rss, cpu = proc_sample(self.pid)
        self.rows.append((time.time(), cpu, rss))

    def cpu_at(self, t: float) -> float:
        """CPU seconds at wall time ``t``, interpolated between the samples around it."""
        rows = self.rows
        if t <= rows[0][0]:
            return rows[0][1]
        for (t0, c0, _), (t1, c1, _) in itertools.pairwise(rows):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
        return rows[-1][1]

    def pct(self, start: float, end: float) -> float | None:
        """% of one core between two wall times (None for a window under a second)."""
        if end - start < 1.0:
            return None
        return (self.cpu_at(end) - self.cpu_at(start)) / (end - start) * 100


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def check_store(data: Path, expected: Mapping[tuple[str, str, str], tuple[int, int, int]]) -> dict[str, int]:
    """Every series' raw rows in the store (after the recorder's stop: all sealed) against the closes it was due."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    keys = pa.schema([("market", pa.string()), ("interval", pa.string()), ("symbol", pa.string())])
    files = [p for p in data.glob("market=*/interval=*/symbol=*/*.parquet")]
    out = {"stored_rows": 0, "stored": 0, "duplicated": 0, "missing": 0, "extra": 0, "series_wrong": 0}
    stored: dict[tuple[str, str, str], dict[str, Any]] = {}
    if files:
        dataset = ds.dataset(files, format="parquet", partitioning=ds.partitioning(keys, flavor="hive"),
                             partition_base_dir=str(data))  # fmt: skip
        table = dataset.to_table(columns=["market", "interval", "symbol", "candle_begin_time"])
        table = table.set_column(3, "t", table["candle_begin_time"].cast(pa.int64()))
        grouped = table.group_by(["market", "interval", "symbol"]).aggregate(
            [("t", "count"), ("t", "count_distinct"), ("t", "min"), ("t", "max")]
        )
        stored = {(r["market"], r["symbol"], r["interval"]): r for r in grouped.to_pylist()}
        out["stored_rows"] = table.num_rows
    for key, (count, first, last) in expected.items():
        row = stored.pop(key, None)
        distinct = row["t_count_distinct"] if row else 0
        out["stored"] += distinct
        out["duplicated"] += row["t_count"] - distinct if row else 0
        out["missing"] += max(0, count - distinct)
        out["extra"] += max(0, distinct - count)
        span = (row["t_min"], row["t_max"]) if row else None
        out["series_wrong"] += not (distinct == count and (count == 0 or span == (first, last)))
    out["extra"] += sum(r["t_count"] for r in stored.values())  # series nobody asked for
    return out


# --- one run --------------------------------------------------------------------------------


def run_once(size: Size, transport: str, opts: argparse.Namespace) -> dict[str, Any]:
    boundary = int(datetime.fromisoformat(BOUNDARIES[opts.boundary]).replace(tzinfo=UTC).timestamp() * 1000)
    before, after = opts.before or size.before_s, opts.after or size.after_s
    sim_start, sim_end = boundary - before * 1000, boundary + after * 1000
    series = universe(size.scale)
    natural = {"spot": opts.spot_per_connection, "usdt_futures": opts.futures_per_connection,
               "coin_futures": opts.futures_per_connection}  # fmt: skip
    caps = caps_for(series, natural, size.connections)
    expected = {(m, s, i): due(i, sim_start, sim_end) for m, s, i in series}
    by_pair: dict[tuple[str, str], list[str]] = {}
    for m, s, i in series:
        by_pair.setdefault((m, i), []).append(s)
    out: dict[str, Any] = {
        "streams": len(series), "msgs_per_s_offered": round(offered_rate(series), 1), "caps": caps,
        "connections_planned": plan(series, caps), "before_s": before, "after_s": after,
        "closes_due": sum(c for c, _, _ in expected.values()),
        "burst_closes_due": sum(is_open_time(i, boundary) for _, _, i in series),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="trio-klines-universe-") as tmp:
        root = Path(tmp)
        report = root / "sent.json"
        with open(root / "sender.log", "wb") as slog, open(root / "recorder.log", "wb") as rlog:
            sender = Child(["benchmarks.universe_sender", "--sim-start", str(sim_start), "--sim-end", str(sim_end),
                            "--tick-ms", str(opts.tick_ms), "--report", str(report)], slog)  # fmt: skip
            recorder: Child | None = None
            stop_timeout = 60.0  # after a failure: the recorder still flushes and seals, but not for ever
            try:
                port = sender.wait_for("listening", timeout=60)["port"]
                spec = {"streams": [f"{m}:{i}:{','.join(s)}" for (m, i), s in by_pair.items()], "port": port,
                        "data": str(root / "data"), "transport": transport, "caps": caps, "boundary": boundary,
                        "flush_seconds": opts.flush_seconds,
                        "seal_seconds": opts.seal_seconds}  # fmt: skip
                (root / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
                recorder = Child(["benchmarks.universe", "--child-recorder", str(root / "spec.json")], rlog)
                connections = recorder.wait_for("ready")["connections"]
                # Every stream on the wire: those beyond a connection's URL come by SUBSCRIBE once it is up.
                sender.wait_for(("upgraded", "subscribed"),
                                lambda e: e["connections"] >= connections and e["streams"] >= len(series))  # fmt: skip
                out |= _measure(sender, recorder, opts.flush_seconds, boundary, sim_start, sim_end)
                out["connections"] = connections
                stop_timeout = STOP_TIMEOUT_S
            finally:
                if recorder is not None:
                    out["recorder_exit_code"] = recorder.end(stop_timeout)
                sender.end()
        out["recorder_log"] = (root / "recorder.log").read_text(errors="replace").splitlines()[-20:]
        sent = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
        out["series_sent_not_due"] = sum(sent.get(f"{m}|{s}|{i}", 0) != c for (m, s, i), (c, _, _) in expected.items())
        out |= check_store(root / "data", expected)
    out["received_over_sent"] = round(out["messages_received"] / max(out["frames_sent"], 1), 6)
    return out


def _measure(sender: Child, recorder: Child, flush: float, boundary: int, sim_start: int, sim_end: int
             ) -> dict[str, Any]:  # fmt: skip
    """Start the clock, sample until every frame is received and every close written, then stop the recorder."""
    rec = Samples(recorder.proc.pid)
    snd = Samples(sender.proc.pid)
    sender.send("start")
    wall0 = sender.wait_for("started", timeout=60)["wall0"]
    wall_boundary, wall_end = wall0 + (boundary - sim_start) / 1000, wall0 + (sim_end - sim_start) / 1000
    _sleep_until(wall0)
    rec.take()
    snd.take()
    while sender.latest.get("done") is None:
        for name, child in (("recorder", recorder), ("sender", sender)):
            if child.proc.poll() is not None:
                raise RuntimeError(f"the {name} exited ({child.proc.returncode}) while the traffic ran")
        time.sleep(SAMPLE_S)
        rec.take()
        snd.take()
    done = sender.latest["done"]
    caught_up: float | None = None
    deadline = time.time() + DRAIN_TIMEOUT_S
    while time.time() < deadline:
        stats = recorder.latest.get("stats", {})
        if stats.get("messages", 0) >= done["frames"] and stats.get("written", 0) >= done["closes"]:
            caught_up = stats["t"]
            break
        time.sleep(SAMPLE_S)
        rec.take()
    rec.take()
    end = caught_up or time.time()
    traffic_s = wall_end - wall0
    cpu_s = rec.cpu_at(end) - rec.cpu_at(wall0)
    recorder.send("stop")
    final = recorder.wait_for("final", timeout=STOP_TIMEOUT_S)
    messages = final["messages"]
    out = {
        "frames_sent": done["frames"], "closes_sent": done["closes"], "messages_received": messages,
        "msgs_per_s": round(done["frames"] / traffic_s, 1), "traffic_s": round(traffic_s, 2),
        "drain_s": round(end - wall_end, 2), "caught_up": caught_up is not None,
        "cpu_s": round(cpu_s, 3), "cpu_pct_of_core": round(cpu_s / traffic_s * 100, 2),
        "cpu_us_per_msg": round(cpu_s / max(messages, 1) * 1e6, 3),
        "cpu_pct_steady": _round(rec.pct(wall0 + 0.5, wall_boundary - SAMPLE_S)),
        "cpu_pct_burst": _round(rec.pct(wall_boundary, wall_boundary + flush + 2)),
        "rss_mb_max": round(max(r for _, _, r in rec.rows), 1), "rss_mb_end": round(rec.rows[-1][2], 1),
        "sender_cpu_pct": _round(snd.pct(wall0, wall_end)), "sender_late_ms_max": round(done["late_ms_max"], 1),
        "sender_burst_late_ms": round(done["burst"]["late_ms"], 1),
        "sender_backlog_max_bytes": done["backlog_max_bytes"],
        "durable": final["durable"], "burst_durable": final["burst_durable"], "stop_s": round(final["stop_s"], 2),
    }  # fmt: skip
    for key in ("written", "candles", "duplicates", "gaps", "missing_candles", "reconnects", "malformed",
                "silent_alarms", "pending", "rejected", "write_errors"):  # fmt: skip
        out[key] = final[key]
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


# --- the report -----------------------------------------------------------------------------


def _suffix(transport: str) -> str:
    return transport.replace("-", "_")


def targets_met(runs: Mapping[str, Mapping[str, Mapping[str, Any]]], flush: float) -> dict[str, bool]:
    """The issue's targets, for the sizes that ran (performance ones on the default transport only)."""
    met: dict[str, bool] = {}
    limit_ms = (flush + 2) * 1000
    for size, by_transport in runs.items():
        for transport, r in by_transport.items():
            key = f"{size}_{_suffix(transport)}"
            met[f"{key}_received_over_sent"] = r["received_over_sent"] == 1.0
            met[f"{key}_no_gaps"] = r["gaps"] == 0 and r["missing"] == 0 and r["series_wrong"] == 0
            met[f"{key}_stored_once"] = r["stored"] == r["closes_due"] == r["stored_rows"]
            met[f"{key}_durable_p99"] = max(r["durable"]["p99_ms"], r["burst_durable"]["p99_ms"]) <= limit_ms
    for name, (size, figure, op, bound) in TARGETS.items():
        r = runs.get(size, {}).get(DEFAULT_TRANSPORT)
        if r is not None:
            met[name] = r[figure] < bound if op == "<" else r[figure] <= bound
    return met


ROWS: Final = (  # (label, how to show a run)
    ("streams / connections", lambda r: f"{r['streams']:,} / {r['connections']}"),
    ("msg/s offered / sent", lambda r: f"{r['msgs_per_s_offered']:,.0f} / {r['msgs_per_s']:,.0f}"),
    ("received / sent", lambda r: f"{r['received_over_sent']:.4f}"),
    ("CPU µs per message", lambda r: f"{r['cpu_us_per_msg']:.2f}"),
    ("CPU % of a core", lambda r: f"{r['cpu_pct_of_core']:.1f}"),
    ("  steady / burst window", lambda r: f"{r['cpu_pct_steady']} / {r['cpu_pct_burst']}"),
    ("RSS max MB", lambda r: f"{r['rss_mb_max']:,.0f}"),
    ("close→durable p50/p99/max ms", lambda r: "{p50_ms:.0f}/{p99_ms:.0f}/{max_ms:.0f}".format(**r["durable"])),
    ("burst closes, p99/max ms", lambda r: "{count:,}, {p99_ms:.0f}/{max_ms:.0f}".format(**r["burst_durable"])),
    ("closes due / written / stored", lambda r: f"{r['closes_due']:,} / {r['written']:,} / {r['stored']:,}"),
    ("dup rows / missing / gaps", lambda r: f"{r['duplicated']} / {r['missing']} / {r['gaps']}"),
    ("drain s / stop s", lambda r: f"{r['drain_s']:.1f} / {r['stop_s']:.1f}"),
    ("sender late ms max (burst)", lambda r: f"{r['sender_late_ms_max']:.0f} ({r['sender_burst_late_ms']:.0f})"),
)  # fmt: skip


def table(results: Mapping[str, Any]) -> list[str]:
    lines = [
        f"universe at Binance's paced rates, boundary {results['boundary']} UTC, flush {results['flush_seconds']:g} s,"
        f" tick {results['tick_ms']} ms; recorder CPU from /proc (all threads)"
    ]
    for size, by_transport in results["runs"].items():
        lines.append(f"  {size}")
        lines.append(f"    {'':<34}" + "".join(f"{t:>26}" for t in by_transport))
        for label, show in ROWS:
            lines.append(f"    {label:<34}" + "".join(f"{show(r):>26}" for r in by_transport.values()))
    limit = (results["flush_seconds"] + 2) * 1000
    lines.append(
        f"  targets: full < 60 % of a core ({DEFAULT_TRANSPORT}), RSS < 1,024 MB; 1k <= 3 % of a core;"
        f" 10k <= 10 µs/msg; every run received/sent 1.0, 0 gaps, stored once, p99 <= {limit:,.0f} ms"
    )
    lines.append(
        "  targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results["targets_met"].items())
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.universe", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="only the tiny CI size")
    parser.add_argument("--size", action="append", choices=sorted(SIZES), help="sizes to run (default 1k 10k full)")
    parser.add_argument("--scale", type=float, help="also a custom size: this share of the universe's symbols")
    parser.add_argument("--connections", type=int, help="spread the custom size over this many connections")
    parser.add_argument("--transport", action="append", choices=TRANSPORTS, help="transports (default both)")
    parser.add_argument("--before", type=int, help="simulated seconds before the boundary (per size by default)")
    parser.add_argument("--after", type=int, help="simulated seconds after the boundary (per size by default)")
    parser.add_argument("--boundary", choices=sorted(BOUNDARIES), default="day", help="which boundary (day)")
    parser.add_argument("--tick-ms", type=int, default=5, help="ms between a connection's writes (5)")
    parser.add_argument("--flush-seconds", type=float, default=FLUSH_SECONDS, help="the recorder's flush (1)")
    parser.add_argument("--seal-seconds", type=float, default=DEFAULT_SEAL_SECONDS,
                        help="the store's seal rounds (600: none within a run; its stop seals)")  # fmt: skip
    parser.add_argument("--spot-per-connection", type=int, default=MARKETS["spot"].max_streams_per_connection)
    parser.add_argument(
        "--futures-per-connection", type=int, default=MARKETS["usdt_futures"].max_streams_per_connection
    )
    parser.add_argument("--child-recorder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_recorder is not None:
        import trio

        trio.run(recorder_child, json.loads(args.child_recorder.read_text(encoding="utf-8")))
        return 0
    if args.tick_ms < 1 or 250 % args.tick_ms:
        parser.error("--tick-ms must divide 250")
    if not (args.flush_seconds > 0 and args.seal_seconds > 0 and min(args.spot_per_connection,
                                                                      args.futures_per_connection) >= 1):  # fmt: skip
        parser.error("--flush-seconds, --seal-seconds and the streams per connection must be positive")
    if (args.before is not None and args.before < 1) or (args.after is not None and args.after < 1):
        parser.error("--before and --after must be at least 1 s")
    sizes = [
        SIZES[n] for n in (["quick"] if args.quick else args.size or ([] if args.scale else ["1k", "10k", "full"]))
    ]
    if args.scale is not None:
        if not 0 < args.scale <= 10 or (args.connections is not None and args.connections < 1):
            parser.error("--scale must be in (0, 10] and --connections at least 1")
        sizes.append(Size("custom", args.scale, args.connections))
    transports = args.transport or list(TRANSPORTS)
    runs: dict[str, dict[str, Any]] = {}
    for size in sizes:
        runs[size.name] = {t: run_once(size, t, args) for t in transports}
    results: dict[str, Any] = {
        "boundary": BOUNDARIES[args.boundary], "flush_seconds": args.flush_seconds, "tick_ms": args.tick_ms,
        "seal_seconds": args.seal_seconds,
        "default_transport": DEFAULT_TRANSPORT, "runs": runs,
        "targets": {name: {"size": s, "figure": f, "op": op, "bound": b} for name, (s, f, op, b) in TARGETS.items()},
        "environment": environment(),
    }  # fmt: skip
    results["targets_met"] = targets_met(runs, args.flush_seconds)
    emit(results, table(results), as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
