"""Raw Hive readers against a live writer, in separate processes: never an error, never a row twice.

    python -m benchmarks.readers [--json] [--quick] [--series N] [--reads R] [--seal-seconds S]

One writer process holds a :class:`~trio_klines.store.dataset.Store` on the real clock with a short
``seal_seconds`` (2 s, so seal rounds come every few seconds instead of every ten minutes): ``--series``
(200) ``spot`` ``1s`` series, each closing a candle every second of the wall clock, appended a quarter of
the series at a time four times a second (``append`` with its default ``seal=True``: a due round runs
inside it), and now and then (every :data:`CORRECTION_EVERY` appends) a correction: a candle of an open
time stored 2 to 30 seconds before, with other prices, which rewrites the segment that holds it. The
writer says it is ready once a round has sealed something (raw readers have files to read), and stops when
told, sealing what is left as it closes.

Then four reader processes start together, one per library, each reading the whole root ``--reads``
times back to back, all columns: ``pandas.read_parquet(root)``, ``pyarrow.dataset`` (Hive partitioning),
``polars.scan_parquet(glob, hive_partitioning=True).collect()`` and DuckDB's
``read_parquet(glob, hive_partitioning = true)`` (the glob is ``market=*/interval=*/symbol=*/*.parquet``:
landing files under ``_landing/`` are not for raw readers). Per reader:

- ``reads``, ``errors`` (by exception type; the first message of each in ``error_examples``): must be 0;
- ``duplicated_reads``: reads in which a (market, interval, symbol, candle_begin_time) came more than once,
  and ``duplicated_rows`` in all: must be 0;
- ``lag_ms_p50`` / ``_p99`` / ``_max``: at the end of each read, now minus the close time of the newest
  candle it saw (its open time + 1 s). Beside it the writer's ``durable_lag_ms_p99``: now minus the close
  time of the newest candle of each append as the append returns (the four appends of a second are a
  quarter of a second apart, so up to 750 ms of both is the schedule, not the store). The difference is
  what sealing costs raw readers: about ``seal_seconds`` plus a round's duration (plus the read's own).
- ``read_s_mean``: seconds per read.

Every process is ended: the readers by finishing their reads (or terminated past a deadline, reported),
the writer by a stop event; the temporary root is removed. Exit status 1 when a reader erred or saw a
row twice.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import multiprocessing.synchronize
import queue
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks._util import emit, environment

KEY: Final = ["market", "interval", "symbol", "candle_begin_time"]
GLOB_TAIL: Final = "market=*/interval=*/symbol=*/*.parquet"
READERS: Final = ("pandas", "pyarrow", "polars", "duckdb")
APPENDS_PER_SECOND: Final = 4
CORRECTION_EVERY: Final = 10
#: How long the writer may take to seal its first round, and the readers to finish, before we give up.
READY_TIMEOUT_S: Final = 120.0
READ_TIMEOUT_S: Final = 1_800.0
STOP_TIMEOUT_S: Final = 120.0


def percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q) - 1))] if ordered else 0.0


# --- the writer process --------------------------------------------------------------------------


def write(
    root: str,
    series: int,
    seal_seconds: float,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue[tuple[str, dict[str, Any]]],
) -> None:
    """Append and seal until ``stop`` is set; put the writer's figures on ``results``."""
    from trio_klines.core.parse import Candle
    from trio_klines.store.dataset import Store

    rng = random.Random(14)
    symbols = [f"S{i:04d}USDT" for i in range(series)]
    groups = [symbols[g::APPENDS_PER_SECOND] for g in range(APPENDS_PER_SECOND)]

    def candle(symbol: str, open_time: int, price: float) -> Candle:
        return Candle("spot", symbol, "1s", open_time, price, price + 1, price - 1, price, 1.5, 150.0, 7, 0.7, 70.0)

    lags: list[float] = []
    appends = candles = corrections = 0
    try:
        with Store(root, seal_seconds=seal_seconds) as store:
            base = (int(time.time()) + 1) * 1000  # the first second's open time: appended once it has closed
            tick = 0
            while not stop.is_set():
                second, group = divmod(tick, APPENDS_PER_SECOND)
                due = (base + (second + 1) * 1000) / 1000 + group / APPENDS_PER_SECOND
                if stop.wait(max(0.0, due - time.time())):  # the pace of the wall clock, not a fixed sleep
                    break
                open_time = base + second * 1000
                batch = [candle(s, open_time, 100.0 + second % 50) for s in groups[group]]
                if tick % CORRECTION_EVERY == CORRECTION_EVERY - 1 and second >= 3:
                    back = rng.randint(2, min(30, second))
                    batch.append(candle(rng.choice(symbols), open_time - back * 1000, 200.0 + rng.random()))
                    corrections += 1
                store.append(batch)
                lags.append(time.time() * 1000 - (open_time + 1000))
                appends += 1
                candles += len(batch)
                tick += 1
                if store.sealed_rows and not ready.is_set():
                    ready.set()
            seal_errors, sealed_files = store.seal_errors, store.sealed_files
        lags.sort()
        results.put(
            (
                "writer",
                {
                    "appends": appends,
                    "candles": candles,
                    "corrections": corrections,
                    "sealed_files": sealed_files,
                    "seal_errors": seal_errors,
                    "durable_lag_ms_p50": round(statistics.median(lags), 1) if lags else 0.0,
                    "durable_lag_ms_p99": round(percentile(lags, 0.99), 1),
                    "durable_lag_ms_max": round(lags[-1], 1) if lags else 0.0,
                },
            )
        )
    except BaseException as exc:
        results.put(("writer", {"failed": f"{type(exc).__name__}: {exc}"}))
        raise
    finally:
        ready.set()  # a writer that failed before its first round must not leave the parent waiting


# --- the reader processes ------------------------------------------------------------------------


def reader(kind: str) -> Callable[[Path], tuple[int, int, int]]:
    """A function reading the whole root with ``kind``'s library: (rows, rows repeating a key, newest open ms)."""
    import pandas as pd
    import pyarrow as pa

    def check(keys: pd.DataFrame) -> tuple[int, int, int]:
        times = keys["candle_begin_time"]
        if pd.api.types.is_datetime64_any_dtype(times):
            newest = pd.Timestamp(times.max()).value // 1_000_000  # .value is in ns whatever the unit
        else:
            newest = int(times.max())
        keys = keys.astype({"market": str, "interval": str, "symbol": str})
        return len(keys), int(keys.duplicated(subset=KEY).sum()), newest

    def arrow_keys(table: pa.Table) -> pd.DataFrame:
        return table.select(KEY).to_pandas()

    if kind == "pandas":
        return lambda root: check(pd.read_parquet(root)[KEY])
    if kind == "pyarrow":
        import pyarrow.dataset as ds

        return lambda root: check(arrow_keys(ds.dataset(root, format="parquet", partitioning="hive").to_table()))
    if kind == "polars":
        import polars as pl

        def read_polars(root: Path) -> tuple[int, int, int]:
            frame = pl.scan_parquet(f"{root}/{GLOB_TAIL}", hive_partitioning=True).collect()
            keys = frame.select(
                pl.col("market").cast(pl.String),
                pl.col("interval").cast(pl.String),
                pl.col("symbol").cast(pl.String),
                pl.col("candle_begin_time").dt.epoch("ms"),
            )
            return check(keys.to_pandas())

        return read_polars
    if kind == "duckdb":
        import duckdb

        def read_duckdb(root: Path) -> tuple[int, int, int]:
            pattern = f"{root}/{GLOB_TAIL}".replace("'", "''")  # a SQL string literal
            with duckdb.connect() as connection:
                relation = connection.sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)")
                # DuckDB 1.x names it fetch_arrow_table, 2.x to_arrow_table
                table = (getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table)()
            return check(arrow_keys(table))

        return read_duckdb
    raise ValueError(f"no reader {kind!r}")


def read(kind: str, root: str, reads: int, results: multiprocessing.Queue[tuple[str, dict[str, Any]]]) -> None:
    """Read the root ``reads`` times with ``kind``'s library; put the reader's figures on ``results``."""
    errors: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    lags: list[float] = []
    durations: list[float] = []
    duplicated_reads = duplicated_rows = rows = 0
    try:
        read_root = reader(kind)
        for _ in range(reads):
            began = time.perf_counter()
            try:
                count, repeated, newest = read_root(Path(root))
            except Exception as exc:  # counted by type: the benchmark's point is that there are none
                errors[type(exc).__name__] += 1
                examples.setdefault(type(exc).__name__, str(exc)[:300])
                continue
            finally:
                durations.append(time.perf_counter() - began)
            lags.append(time.time() * 1000 - (newest + 1000))
            rows += count
            duplicated_rows += repeated
            duplicated_reads += repeated > 0
    except BaseException as exc:
        errors[type(exc).__name__] += 1
        examples.setdefault(type(exc).__name__, str(exc)[:300])
    lags.sort()
    results.put(
        (
            kind,
            {
                "reads": len(durations),
                "errors": dict(errors),
                "error_examples": examples,
                "duplicated_reads": duplicated_reads,
                "duplicated_rows": duplicated_rows,
                "rows_mean": round(rows / max(1, len(lags))),
                "read_s_mean": round(statistics.fmean(durations), 3) if durations else 0.0,
                "lag_ms_p50": round(statistics.median(lags), 1) if lags else None,
                "lag_ms_p99": round(percentile(lags, 0.99), 1) if lags else None,
                "lag_ms_max": round(lags[-1], 1) if lags else None,
            },
        )
    )


# --- the run -------------------------------------------------------------------------------------


def run(series: int, reads: int, seal_seconds: float, quick: bool) -> tuple[dict[str, Any], list[str]]:
    began = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads or a store
    ready, stop = context.Event(), context.Event()
    results: multiprocessing.Queue[tuple[str, dict[str, Any]]] = context.Queue()
    figures: dict[str, dict[str, Any]] = {}
    ended: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="trio-klines-bench-readers-") as tmp:
        root = str(Path(tmp) / "data")
        writer = context.Process(target=write, args=(root, series, seal_seconds, ready, stop, results), name="writer")
        readers = [context.Process(target=read, args=(k, root, reads, results), name=k) for k in READERS]
        writer.start()
        try:
            if not ready.wait(READY_TIMEOUT_S):
                raise RuntimeError(f"the writer sealed nothing within {READY_TIMEOUT_S} s")
            if not writer.is_alive():
                raise RuntimeError("the writer ended before the readers started")
            for process in readers:
                process.start()
            deadline = time.monotonic() + READ_TIMEOUT_S
            while len(figures) < len(readers):
                try:
                    name, figure = results.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    break
                figures[name] = figure
        finally:
            stop.set()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while ("writer" not in figures and writer.is_alive()) or not results.empty():
                try:
                    name, figure = results.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    break
                figures[name] = figure
            for process in [*readers, writer]:
                if process.pid is None:
                    continue
                process.join(max(0.1, deadline - time.monotonic()))
                if process.is_alive():
                    process.terminate()
                    process.join(10)
                    ended[process.name] = "terminated"
                else:
                    ended[process.name] = f"exit {process.exitcode}"
    shutil.rmtree(root, ignore_errors=True)
    writer_figures = figures.get("writer", {"failed": "no report"})
    per_reader = {k: figures.get(k, {"failed": "no report"}) for k in READERS}
    clean = all(
        not r.get("failed") and not r["errors"] and r["duplicated_reads"] == 0 and r["reads"] == reads
        for r in per_reader.values()
    )
    result: dict[str, Any] = {
        "series": series,
        "reads_per_reader": reads,
        "seal_seconds": seal_seconds,
        "writer": writer_figures,
        "readers": per_reader,
        "processes": ended,
        "clean": clean and not writer_figures.get("failed") and writer_figures.get("seal_errors") == 0,
        "quick": quick,
        "seconds": round(time.perf_counter() - began, 1),
        "environment": environment(),
    }
    return result, report_lines(result)


def report_lines(r: dict[str, Any]) -> list[str]:
    w = r["writer"]
    lines = [
        f"raw readers against a live writer{' (quick sizes: not meaningful)' if r['quick'] else ''}, {r['seconds']} s:"
        f" {r['series']} spot 1s series, seal_seconds {r['seal_seconds']}, {r['reads_per_reader']} reads each",
    ]
    if w.get("failed"):
        lines.append(f"  writer FAILED: {w['failed']}")
    else:
        lines.append(
            f"  writer: {w['appends']:,} appends, {w['candles']:,} candles ({w['corrections']} corrections),"
            f" {w['sealed_files']:,} files sealed, {w['seal_errors']} seal errors;"
            f" durable lag p99 {w['durable_lag_ms_p99']:.0f} ms"
        )
    for kind, f in r["readers"].items():
        if f.get("failed"):
            lines.append(f"  {kind:>8}: FAILED ({f['failed']})")
            continue
        errors = ", ".join(f"{n} {c}" for n, c in f["errors"].items()) or "none"
        lines.append(
            f"  {kind:>8}: {f['reads']} reads ({f['read_s_mean']:.2f} s each, {f['rows_mean']:,} rows),"
            f" errors {errors},"
            f" reads with a row twice {f['duplicated_reads']}, lag p50 {f['lag_ms_p50']} ms, p99 {f['lag_ms_p99']} ms"
        )
    lines.append(f"  processes: {r['processes']}; clean: {'yes' if r['clean'] else 'NO'}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readers", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    parser.add_argument("--series", type=int, help="1s series the writer appends (200)")
    parser.add_argument("--reads", type=int, help="reads per reader (100)")
    parser.add_argument("--seal-seconds", type=float, default=2.0, help="the writer's seal_seconds (2)")
    args = parser.parse_args(argv)
    for module in ("polars", "duckdb"):
        try:
            __import__(module)
        except ImportError:
            parser.error(f"{module} is missing: pip install -e '.[test]' (or pip install {module})")
    series = args.series or (20 if args.quick else 200)
    reads = args.reads or (5 if args.quick else 100)
    result, lines = run(series, reads, args.seal_seconds, args.quick)
    emit(result, lines, as_json=args.json)
    return 0 if result["clean"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
