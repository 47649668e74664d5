"""The store at many series: write cost per candle at 45,000 series, on a simulated clock.

    python -m benchmarks.series [--json] [--quick] [--series N] [--minutes M] [--seal-seconds S ...]

Every store runs on a simulated clock (``Store(root, clock=...)``): each simulated second is one flush, as
the recorder's writer makes one per ``flush_seconds`` (1 s), and the seal rounds come due by that clock, so
half an hour of recording takes the time its work takes, not half an hour. The writer's way of sealing is
copied: ``append(seal=False)``, then while ``seal_debt() > 0`` a step ``seal_due(128, 200_000)``
(:data:`~trio_klines.pipeline.writer.SEAL_STEP_FILES` / ``_ROWS``), at most :data:`STEPS_PER_FLUSH` steps
between two flushes unless sealing has fallen behind (debt 2: the writer then seals before it flushes).
After the last flush the clock goes on, second by second, without flushes, until every landing file is
sealed: every candle is appended once and sealed once inside the figures. The disk is real (fsync on);
each store lives in a temporary directory removed after its scenario. CPU is ``time.process_time`` of
this process around the store's calls only (building candles is not counted).

- **spread** (``spread_*``): ``--series`` (45,000) ``usdt_futures`` ``1m`` series for ``--minutes`` (30)
  simulated minutes; each second's flush holds the candles that closed that second: ``N/60`` candles of
  different series, round robin (series ``i`` closes at second ``i mod 60`` of each minute).
  ``cpu_us_per_candle_{append,seal,total}``; ``seal_cpu_us_per_candle_by_round`` (the first round creates
  a file per series, later ones rewrite the growing tail segments: the steady state);
  ``durable_ms_{p50,p99,max}``: wall time of each flush's ``append`` call, after which its candles are
  durable; ``files_per_series``: period files per series at the end; ``landing_files_max``: landing
  files alive at once; ``rounds``, ``round_wall_s_max`` (wall seconds of one round's steps, all added up)
  and ``raw_lag_s_max``: simulated seconds from a flush to the end of the round that sealed it, which is
  how far raw readers (pandas, DuckDB...) lag behind at worst.
- **seal_seconds** (``by_seal_seconds``): the spread scenario once per ``--seal-seconds`` (600 and
  1800): rarer rounds rewrite fewer files per candle (less CPU) and raw readers lag longer.
- **universe** (``universe_*``): a Binance-like mix, every interval each market offers
  (:attr:`~trio_klines.core.markets.Market.intervals`: spot has ``1s``), with :data:`UNIVERSE_SYMBOLS`
  symbols per market: 2,000 spot x 16 + 800 ``usdt_futures`` x 15 + 67 ``coin_futures`` x 15 = 45,005
  series. ``--universe-minutes`` (40) simulated minutes centred on 2024-07-01 00:00 UTC, an open time of
  every interval (a Monday, a month start, a ``3d`` boundary), so every interval closes in the span; each
  candle is flushed the second it closes (at the boundary all 45,005 in one flush). ``--universe-1s``
  scales the ``1s`` series down if the full count is too slow, ``--universe-scale`` every market's symbols
  (the report says how many ran). Reported:
  CPU µs per stored candle in total (append and seal), and per interval class, each class measured in a
  store of its own with the same series and span (``universe_classes``): few candles per series (``1d``
  and longer close once in the span) cost a file each. ``universe_day_cpu_us_per_candle``: the classes'
  costs weighted by the candles each closes in a whole day, since the span's midnight (every interval
  closing at once, every series starting a new period's file) comes once a day.
- **burst** (``burst_*``): 40,000 ``1m`` series that already have a sealed file each get one new candle,
  all in one ``append``: wall and CPU seconds until it returns (durable), then the seal of all of them
  (``Store.seal``: wall, CPU).

Targets printed beside the figures: CPU per candle <= 20 µs (``spread``, ``universe`` and its day), and the
burst durable within ``flush_seconds`` + 2 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks._util import emit, environment
from trio_klines.config import DEFAULT_FLUSH_SECONDS
from trio_klines.core.markets import DAY as DAY_MS
from trio_klines.core.markets import INTERVALS, MARKETS, floor_open_time, is_open_time
from trio_klines.core.parse import Candle
from trio_klines.pipeline.writer import SEAL_STEP_FILES, SEAL_STEP_ROWS
from trio_klines.store.dataset import Store
from trio_klines.store.landing import LANDING_DIR

#: 2024-07-01 00:00 UTC: a Monday, a month start and a 3d boundary, so every interval opens there.
BOUNDARY: Final = 1_719_792_000_000
MINUTE: Final = 60_000
#: Seal steps the writer gets between two flushes in this simulation (unless sealing has fallen behind).
STEPS_PER_FLUSH: Final = 4
#: Symbols per market in the universe: spot's 16 intervals and the futures' 15 make 45,005 series.
UNIVERSE_SYMBOLS: Final = {"spot": 2_000, "usdt_futures": 800, "coin_futures": 67}
CLASSES: Final = {
    "1s": ("1s",),
    "1m": ("1m",),
    "3m-30m": ("3m", "5m", "15m", "30m"),
    "1h-12h": ("1h", "2h", "4h", "6h", "8h", "12h"),
    "1d-1M": ("1d", "3d", "1w", "1M"),
}
TARGET_CPU_US: Final = 20.0  # per candle, at most
TARGET_BURST_S: Final = DEFAULT_FLUSH_SECONDS + 2.0  # durable within, at most

Flush = tuple[float, list[Candle]]  # (simulated second, the candles that closed then)


def candle(market: str, symbol: str, interval: str, open_time: int, n: int) -> Candle:
    price = 100.0 + n % 97 + (open_time // MINUTE) % 1_000 * 0.01
    return Candle(market, symbol, interval, open_time, price, price + 1.5, price - 0.5, price + 0.5,
                  12.345, 1250.5, 100 + n % 50, 6.1, 620.2)  # fmt: skip


def symbols(count: int) -> list[str]:
    return [f"S{i:05d}USDT" for i in range(count)]


def spread_flushes(series: int, minutes: float) -> Iterator[Flush]:
    """Each second, the ``1m`` candles of the series whose minute ends then (``i mod 60`` = the second)."""
    names = symbols(series)
    for second in range(int(minutes * 60)):
        open_time = BOUNDARY + (second // 60) * MINUTE
        batch = [candle("usdt_futures", names[i], "1m", open_time, i) for i in range(second % 60, series, 60)]
        yield second + 1.0, batch


def universe_series(spot_1s: int, scale: float = 1.0, classes: Iterable[str] = CLASSES) -> list[tuple[str, str, str]]:
    """The universe's series (``scale`` times :data:`UNIVERSE_SYMBOLS` symbols per market, at least one;
    ``spot_1s`` of spot's symbols for ``1s``) of the interval ``classes``."""
    wanted = {interval for name in classes for interval in CLASSES[name]}
    out = []
    for market, full in UNIVERSE_SYMBOLS.items():
        count = max(1, round(full * scale))
        for interval in MARKETS[market].intervals:
            if interval in wanted:
                out += [(market, s, interval) for s in symbols(spot_1s if interval == "1s" else count)]
    return out


def universe_flushes(series: Sequence[tuple[str, str, str]], minutes: float) -> Iterator[Flush]:
    """Each second, the candles of ``series`` that closed at its end, in a span centred on :data:`BOUNDARY`."""
    by_interval: dict[str, list[tuple[str, str]]] = {}
    for market, symbol, interval in series:
        by_interval.setdefault(interval, []).append((market, symbol))
    start = BOUNDARY - int(minutes * 30_000) // 1000 * 1000
    for second in range(int(minutes * 60)):
        end = start + (second + 1) * 1000  # the instant this second ends: candles that close now open before it
        batch = []
        for interval, names in by_interval.items():
            if is_open_time(interval, end):
                open_time = floor_open_time(interval, end - 1)
                batch += [candle(market, symbol, interval, open_time, n) for n, (market, symbol) in enumerate(names)]
        yield second + 1.0, batch


@dataclasses.dataclass
class Meter:
    """What one simulated run measured."""

    candles: int = 0
    append_cpu: float = 0.0
    seal_cpu: float = 0.0
    durable: list[float] = dataclasses.field(default_factory=list)
    landing_max: int = 0
    rounds: int = 0
    round_seal_cpu: list[float] = dataclasses.field(default_factory=list)
    round_rows: list[int] = dataclasses.field(default_factory=list)
    round_wall: list[float] = dataclasses.field(default_factory=list)
    raw_lag: list[float] = dataclasses.field(default_factory=list)
    seal_errors: int = 0
    files: int = 0
    series: int = 0

    def summary(self) -> dict[str, Any]:
        durable = sorted(self.durable) or [0.0]
        per = 1e6 / max(1, self.candles)
        return {
            "candles": self.candles,
            "cpu_us_per_candle_append": round(self.append_cpu * per, 2),
            "cpu_us_per_candle_seal": round(self.seal_cpu * per, 2),
            "cpu_us_per_candle_total": round((self.append_cpu + self.seal_cpu) * per, 2),
            "seal_cpu_us_per_candle_by_round": [
                round(cpu / max(1, rows) * 1e6, 2)
                for cpu, rows in zip(self.round_seal_cpu, self.round_rows, strict=True)
            ],
            "durable_ms_p50": round(statistics.median(durable) * 1e3, 2),
            "durable_ms_p99": round(percentile(durable, 0.99) * 1e3, 2),
            "durable_ms_max": round(durable[-1] * 1e3, 2),
            "landing_files_max": self.landing_max,
            "rounds": self.rounds,
            "round_wall_s_max": round(max(self.round_wall, default=0.0), 3),
            "raw_lag_s_max": max(self.raw_lag, default=0.0),
            "files_per_series": round(self.files / max(1, self.series), 3),
            "seal_errors": self.seal_errors,
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q) - 1))]


class Simulation:
    """A store on a simulated clock, fed flushes and sealed as the recorder's writer seals."""

    def __init__(self, root: Path, seal_seconds: float) -> None:
        self.root = root
        self.now = [0.0]
        self.store = Store(root, seal_seconds=seal_seconds, clock=lambda: self.now[0])
        self.meter = Meter()
        self.unsealed: list[tuple[float, int]] = []  # (simulated time, candles) of flushes not sealed yet
        self.round_start: float | None = None
        self.round_cpu = self.round_wall = 0.0

    def run(self, flushes: Iterable[Flush]) -> Meter:
        meter, store = self.meter, self.store
        for at, batch in flushes:
            self.now[0] = at
            if batch:
                wall, cpu = time.perf_counter(), time.process_time()
                store.append(batch, seal=False)
                meter.append_cpu += time.process_time() - cpu
                meter.durable.append(time.perf_counter() - wall)
                meter.candles += len(batch)
                self.unsealed.append((at, len(batch)))
            self.seal_steps(at)
            meter.landing_max = max(meter.landing_max, self.landing_files())
        drain_until = self.now[0] + 20 * store.seal_seconds + 3_600
        while self.unsealed:
            if self.now[0] > drain_until:
                raise RuntimeError(f"sealing did not finish: {self.landing_files()} landing files left")
            self.now[0] += 1.0
            self.seal_steps(self.now[0])
        meter.seal_errors = store.seal_errors
        store.close()
        meter.files, meter.series = count_files(self.root)
        return meter

    def seal_steps(self, at: float) -> None:
        store, meter = self.store, self.meter
        steps = 0
        while (debt := store.seal_debt()) > 0 and (steps < STEPS_PER_FLUSH or debt >= 2):
            if self.round_start is None:
                self.round_start, self.round_cpu, self.round_wall = at, 0.0, 0.0
            before = store.sealed_rows
            wall, cpu = time.perf_counter(), time.process_time()
            store.seal_due(SEAL_STEP_FILES, SEAL_STEP_ROWS)
            spent = time.process_time() - cpu
            self.round_wall += time.perf_counter() - wall
            meter.seal_cpu += spent
            self.round_cpu += spent
            steps += 1
            if store.sealed_rows != before:  # the round finished: what had landed when it began is sealed
                sealed = [(t, n) for t, n in self.unsealed if t <= self.round_start]
                self.unsealed = self.unsealed[len(sealed) :]
                meter.rounds += 1
                meter.raw_lag.append(at - sealed[0][0] if sealed else 0.0)
                meter.round_seal_cpu.append(self.round_cpu)
                meter.round_rows.append(sum(n for _, n in sealed))
                meter.round_wall.append(self.round_wall)
                self.round_start = None
            if store.seal_errors:
                raise RuntimeError(f"a seal round failed ({store.seal_errors}): see the log")

    def landing_files(self) -> int:
        try:
            return sum(name.endswith(".parquet") for name in os.listdir(self.root / LANDING_DIR))
        except FileNotFoundError:
            return 0


def count_files(root: Path) -> tuple[int, int]:
    """Period files under ``root`` (landing files and temporaries aside), and the series directories holding them."""
    files = series = 0
    for _, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        found = sum(name.endswith(".parquet") and not name.startswith(".") for name in names)
        files += found
        series += found > 0
    return files, series


def scenario(work: Path, name: str, seal_seconds: float, flushes: Callable[[], Iterable[Flush]]) -> dict[str, Any]:
    root = work / name
    began = time.perf_counter()
    try:
        return Simulation(root, seal_seconds).run(flushes()).summary() | {
            "wall_s": round(time.perf_counter() - began, 1)
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def burst(work: Path, series: int) -> dict[str, Any]:
    """One append of a candle of each of ``series`` existing series: seconds to durable, then to sealed."""
    root = work / "burst"
    names = symbols(series)
    try:
        with Store(root) as store:
            store.append([candle("usdt_futures", s, "1m", BOUNDARY, n) for n, s in enumerate(names)], seal=False)
            store.seal()
            batch = [candle("usdt_futures", s, "1m", BOUNDARY + MINUTE, n) for n, s in enumerate(names)]
            wall, cpu = time.perf_counter(), time.process_time()
            store.append(batch, seal=False)
            durable = time.perf_counter() - wall, time.process_time() - cpu
            wall, cpu = time.perf_counter(), time.process_time()
            sealed_rows = store.seal()
            sealed = time.perf_counter() - wall, time.process_time() - cpu
            assert sealed_rows >= series, sealed_rows  # rows written: each series' old row is rewritten too
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "burst_candles": series,
        "burst_durable_wall_s": round(durable[0], 3),
        "burst_durable_cpu_s": round(durable[1], 3),
        "burst_seal_wall_s": round(sealed[0], 3),
        "burst_seal_cpu_s": round(sealed[1], 3),
    }


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    began = time.perf_counter()
    spot_1s = min(args.universe_1s, max(1, round(UNIVERSE_SYMBOLS["spot"] * args.universe_scale)))
    universe = universe_series(spot_1s, args.universe_scale)
    results: dict[str, Any] = {
        "series": args.series,
        "minutes": args.minutes,
        "seal_seconds": args.seal_seconds,
        "steps_per_flush": STEPS_PER_FLUSH,
        "universe_series": len(universe),
        "universe_1s_series": spot_1s,
        "universe_scale": args.universe_scale,
        "universe_minutes": args.universe_minutes,
        "quick": args.quick,
    }
    with tempfile.TemporaryDirectory(prefix="trio-klines-bench-series-") as tmp:
        work = Path(tmp)
        by_seal = {}
        for seconds in args.seal_seconds:
            by_seal[seconds] = scenario(work, "spread", seconds, lambda: spread_flushes(args.series, args.minutes))
        results |= {f"spread_{k}": v for k, v in by_seal[args.seal_seconds[0]].items()}
        results["by_seal_seconds"] = {str(s): v for s, v in by_seal.items()}
        whole = scenario(
            work, "universe", args.seal_seconds[0], lambda: universe_flushes(universe, args.universe_minutes)
        )
        results |= {f"universe_{k}": v for k, v in whole.items()}
        classes = {}
        for name in CLASSES:
            members = universe_series(spot_1s, args.universe_scale, [name])
            run_class = scenario(work, f"class_{name}", args.seal_seconds[0],
                                 lambda members=members: universe_flushes(members, args.universe_minutes))  # fmt: skip
            classes[name] = {"series": len(members)} | run_class
        results["universe_classes"] = classes
        results["universe_day_cpu_us_per_candle"] = day_weighted(classes, spot_1s, args.universe_scale)
        results |= burst(work, args.burst)
    results["seconds"] = round(time.perf_counter() - began, 1)
    results["environment"] = environment()
    results["targets_met"] = {
        "spread_cpu_us_per_candle_total": results["spread_cpu_us_per_candle_total"] <= TARGET_CPU_US,
        "universe_cpu_us_per_candle_total": results["universe_cpu_us_per_candle_total"] <= TARGET_CPU_US,
        "universe_day_cpu_us_per_candle": results["universe_day_cpu_us_per_candle"] <= TARGET_CPU_US,
        "burst_durable_wall_s": results["burst_durable_wall_s"] <= TARGET_BURST_S,
    }
    return results, report_lines(results)


def day_weighted(classes: dict[str, dict[str, Any]], spot_1s: int, scale: float) -> float:
    """CPU µs per candle over a whole day of the universe: each class's cost per candle (measured alone)
    weighted by the candles the class closes in a day. The 40 minutes measured hold a midnight, when every
    interval closes at once and each new period makes new files, which a day has once."""
    weights = {}
    for name in classes:
        weights[name] = sum(
            DAY_MS / (INTERVALS[interval] or 30 * DAY_MS) for _, _, interval in universe_series(spot_1s, scale, [name])
        )
    total = sum(weights.values())
    return round(sum(classes[n]["cpu_us_per_candle_total"] * w for n, w in weights.items()) / total, 2)


def report_lines(r: dict[str, Any]) -> list[str]:
    def cpu(m: dict[str, Any]) -> str:
        return (f"CPU µs/candle {m['cpu_us_per_candle_total']:.1f} (append {m['cpu_us_per_candle_append']:.1f}"
                f" + seal {m['cpu_us_per_candle_seal']:.1f}; target <= {TARGET_CPU_US:.0f})")  # fmt: skip

    lines = [
        f"store at many series{' (quick sizes: not meaningful)' if r['quick'] else ''}, {r['seconds']} s;"
        f" simulated clock, {r['steps_per_flush']} seal steps per 1 s flush",
    ]
    for seconds, m in r["by_seal_seconds"].items():
        lines += [
            f"  spread: {r['series']:,} 1m series, {r['minutes']} min, seal_seconds {seconds}:"
            f" {m['candles']:,} candles",
            f"    {cpu(m)}",
            f"    seal CPU µs/candle by round: {m['seal_cpu_us_per_candle_by_round']}",
            f"    durable (append call) p50 {m['durable_ms_p50']:.1f} ms, p99 {m['durable_ms_p99']:.1f} ms,"
            f" max {m['durable_ms_max']:.1f} ms",
            f"    {m['rounds']} rounds, longest {m['round_wall_s_max']:.2f} s of steps; raw readers lag up to"
            f" {m['raw_lag_s_max']:.0f} s; {m['files_per_series']} files per series;"
            f" landing files alive at most {m['landing_files_max']}",
        ]
    lines += [
        f"  universe: {r['universe_series']:,} series (1s: {r['universe_1s_series']:,}),"
        f" {r['universe_minutes']} min around a boundary of every interval: {r['universe_candles']:,} candles",
        f"    {cpu({k.removeprefix('universe_'): v for k, v in r.items() if k.startswith('universe_')})}",
        f"    durable p99 {r['universe_durable_ms_p99']:.1f} ms, max {r['universe_durable_ms_max']:.1f} ms;"
        f" {r['universe_files_per_series']} files per series",
        *(
            f"    class {name:>6}: {m['series']:>6,} series, {m['candles']:>9,} candles, alone: {cpu(m)}"
            for name, m in r["universe_classes"].items()
        ),
        f"    over a day (each class's cost weighted by the candles it closes in a day):"
        f" {r['universe_day_cpu_us_per_candle']:.1f} µs/candle (target <= {TARGET_CPU_US:.0f})",
        f"  burst: {r['burst_candles']:,} candles of existing series in one append: durable in"
        f" {r['burst_durable_wall_s']:.2f} s wall ({r['burst_durable_cpu_s']:.2f} s CPU;"
        f" target <= {TARGET_BURST_S:.0f} s),"
        f" sealed in {r['burst_seal_wall_s']:.2f} s wall ({r['burst_seal_cpu_s']:.2f} s CPU)",
        "  targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["targets_met"].items()),
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.series", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    parser.add_argument("--series", type=int, help="1m series of the spread scenario (45,000)")
    parser.add_argument("--minutes", type=float, help="simulated minutes of the spread scenario (30)")
    parser.add_argument(
        "--seal-seconds", type=float, nargs="+", help="one spread run each; the first for all (600 1800)"
    )
    parser.add_argument("--universe-minutes", type=float, help="simulated minutes of the universe (40)")
    parser.add_argument("--universe-1s", type=int, help="spot 1s series of the universe (2,000: all)")
    parser.add_argument("--universe-scale", type=float, help="symbols per market of the universe, times (1)")
    parser.add_argument("--burst", type=int, help="series of the burst (40,000)")
    args = parser.parse_args(argv)
    quick = {"series": 120, "minutes": 2, "seal_seconds": [30.0, 60.0], "universe_minutes": 2,
             "universe_1s": 10, "universe_scale": 0.01, "burst": 100}  # fmt: skip
    full = {"series": 45_000, "minutes": 30, "seal_seconds": [600.0, 1800.0], "universe_minutes": 40,
            "universe_1s": UNIVERSE_SYMBOLS["spot"], "universe_scale": 1.0, "burst": 40_000}  # fmt: skip
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    results, lines = run(args)
    emit(results, lines, as_json=args.json)


if __name__ == "__main__":
    main()
