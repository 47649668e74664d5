"""Write cost of the Parquet store against the seed recorder's rewrite, in one run.

    python -m benchmarks.write [--json] [--quick]

Measured in the same process, on a temporary directory that is removed afterwards (``--quick`` shrinks
every size, for the smoke test):

- ``rows_per_s_batch_{1,100,10000}``: one ``1m`` series appended in batches of that size, from an empty
  store across several monthly periods, until every row is sealed into the series' files: the timed part
  ends with :meth:`~trio_klines.store.dataset.Store.seal` (the appends alone only make landing files, and a
  throughput without the seal is not the store's); ``seal_share_batch_*`` is the part of it the seal took;
- ``append_s_at_1k`` / ``append_s_at_1m``: mean cost of appending one candle to a series that already
  holds 1,000 or 1,000,000 rows (sealed), the two interleaved so that drifts hit both alike, and their
  ratio ``append_cost_ratio_1m_vs_1k``. Each store runs on a simulated clock that moves one minute per
  append (a ``1m`` series' pace) with the default ``seal_seconds``, so every tenth append also runs the
  seal round that came due (``append(seal=True)``): the mean carries the rounds' cost, the median
  (``append_p50_s_*``) is a landing file alone and the max (``append_max_s_*``) a round;
- ``rewrite_s_per_candle_at_{1k,100k}``: the seed's way, read the whole series file, concatenate one
  row and write it back; ``ratio_vs_rewrite_at_{1k,100k}`` divides it by the store's cost per candle
  in batches of 10,000 (``..._single_candle``: by the store's cost of a one-candle append);
- ``closed_rows_per_s_50_series``: the recorder's write side alone, :func:`~trio_klines.pipeline.writer.run_writer`
  with the store in a worker thread, fed closed candles of 50 ``usdt_futures`` ``1m`` series as fast as
  it takes them (100 per channel send, ``flush_seconds`` 0.5), until the last one is durable and then
  sealed (the writer seals in steps as rounds come due; what waits at the end is sealed inside the timed
  part); with CPU µs per candle;
- ``latency_p99_ms_50_series`` (and ``_p50``, ``_max``): the same path at 200 candles/s spread over the 50
  series, ``flush_seconds`` 0.2, from the channel send to the writer reporting the candle durable (what
  ``Recorder.candles()`` subscribers see), with ``seal_seconds`` 2 so that seal rounds (run by the writer
  between its flushes) fall inside the run; the target is ``flush_seconds`` + 250 ms;
- exact numbers beside float ones (a dataset of ``numbers = "exact"``, the candles' values the decimal
  strings Binance sends, padded to 8 digits as spot's are): ``rows_per_s_batch_10000_exact`` and
  ``closed_rows_per_s_50_series_exact`` / ``cpu_us_per_row_50_series_exact``, run right after their float
  twins, with ``exact_over_float_*`` the ratio of the time per row; ``bytes_per_row_{float,exact}``: the
  sealed files of the batch run (packed, zstd) per candle; ``real_bytes_per_row``: the same for the real
  archive CSVs of ``../shared/realdata`` (a packed period file of each, both numbers), when they are there.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import trio

from benchmarks._util import emit, environment
from trio_klines.config import WriterSettings
from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.pipeline.writer import WriterStats, run_writer
from trio_klines.store.dataset import Store
from trio_klines.store.tables import candles_to_dataframe

T0: Final = 1_577_836_800_000  # 2020-01-01, a month start
MINUTE: Final = 60_000
SERIES: Final = ("spot", "BTCUSDT", "1m")
#: The recorder's case: many series of one market and interval, a few candles of each per flush.
MANY: Final = tuple(("usdt_futures", f"SYM{i:03d}USDT", "1m") for i in range(50))
LATENCY_FLUSH_SECONDS: Final = 0.2
#: Short, so that seal rounds run between the latency run's flushes (the default would wait 10 minutes).
LATENCY_SEAL_SECONDS: Final = 2.0
LATENCY_RATE: Final = 200.0  # candles/s, spread over the 50 series
VALUES: Final = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base_asset_volume",
                 "taker_buy_quote_asset_volume")  # fmt: skip
TARGETS: Final = {
    "rows_per_s_batch_10000": 800_000,
    "closed_rows_per_s_50_series": 50_000,
    "latency_p99_ms_50_series": LATENCY_FLUSH_SECONDS * 1e3 + 250,  # at most
    "append_cost_ratio_1m_vs_1k": 1.5,  # at most
    "ratio_vs_rewrite_at_100k": 10_000,
}


class Sizes:
    """How much each part measures."""

    def __init__(self, quick: bool) -> None:
        self.batches = {1: 20, 100: 5, 10_000: 2} if quick else {1: 1_000, 100: 300, 10_000: 30}
        self.stored = (1_000, 20_000) if quick else (1_000, 1_000_000)
        self.single_appends = 20 if quick else 600
        self.rewrite = {1_000: 3, 10_000: 2} if quick else {1_000: 40, 100_000: 5}
        self.many_closed = 2_000 if quick else 200_000
        self.many_latency = 100 if quick else 2_000


def make_candles(count: int, first_index: int = 0, seed: int = 1) -> list[Candle]:
    """``count`` consecutive 1m candles of one series from ``T0 + first_index`` minutes, with prices
    that wander like real ones (so compression sees realistic data)."""
    rng = np.random.default_rng(seed + first_index)
    close = np.round(30_000 + np.cumsum(rng.normal(0, 5, count)), 2)
    spread = np.round(rng.random((3, count)) * 10, 2)
    volume = np.round(rng.random(count) * 100, 3)
    trades = rng.integers(1, 5_000, count)
    columns = (close, spread[0], spread[1], spread[2], volume, trades)
    rows = zip(*(column.tolist() for column in columns), strict=True)
    start = T0 + first_index * MINUTE
    return [
        Candle(*SERIES, start + i * MINUTE, c + d, c + d + up, c - down, c, v, c * v, n, v / 2, c * v / 2)
        for i, (c, d, up, down, v, n) in enumerate(rows)
    ]


def exact(candles: Sequence[Candle]) -> list[Candle]:
    """``candles`` as the exact parsers give them: each price and volume the string Binance would send."""
    return [msgspec.structs.replace(c, **{name: f"{getattr(c, name):.8f}" for name in VALUES}) for c in candles]


def real_bytes() -> dict[str, dict[str, float]]:
    """Bytes per row of a packed period file of each real archive CSV, float and exact (none without them)."""
    from trio_klines.store.archive_csv import read_archive_csv
    from trio_klines.store.periodfiles import serialize

    realdata = Path(__file__).resolve().parents[2] / "shared" / "realdata"
    out: dict[str, dict[str, float]] = {}
    for path in sorted(realdata.glob("*.csv")) if realdata.is_dir() else []:
        market = "usdt_futures" if "usdm" in path.name else "spot"
        key = Series(market, "ADABTC" if "adabtc" in path.name else "BTCUSDT", "1h" if "_1h_" in path.name else "1m")
        sizes = {}
        for numbers in ("float", "exact"):
            table = pa.concat_tables(read_archive_csv(path.read_bytes(), *key, numbers=numbers))
            sizes[numbers] = round(serialize(table, key, packed=True).size / table.num_rows, 1)
        out[path.name] = sizes
    return out


def many_candles(count: int, stamp: bool = False) -> list[Candle]:
    """``count`` closed candles of the 50 :data:`MANY` series, round-robin, each series in time order;
    with ``stamp`` the trade count is the candle's index (the latency run finds its send time by it)."""
    out = []
    for i in range(count):
        market, symbol, interval = MANY[i % len(MANY)]
        start = T0 + (i // len(MANY)) * MINUTE
        out.append(Candle(market, symbol, interval, start, 100.0, 102.0, 99.5, 101.5, 12.345, 1250.5,
                          i if stamp else 100, 6.1, 620.2))  # fmt: skip
    return out


async def writer_closed(root: Path, count: int, numbers: str = "float") -> tuple[float, float]:
    """Seconds (wall, CPU) for :func:`run_writer` + :class:`Store` to make ``count`` candles durable."""
    candles = many_candles(count) if numbers == "float" else exact(many_candles(count))
    stats = WriterStats()
    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    with Store(root, numbers=numbers) as store:
        wall, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            settings = WriterSettings(flush_seconds=0.5)
            nursery.start_soon(lambda: run_writer(receive, store, settings=settings, stats=stats))
            async with send:
                for start in range(0, count, 100):  # one send per received chunk, as a connection does
                    await send.send(candles[start : start + 100])
        store.seal()  # durable is not done: what still waits in landing files is part of the cost
        elapsed = time.perf_counter() - wall, time.process_time() - cpu
        assert store.sealed_rows >= count, store.sealed_rows  # rows written, rewritten ones too
    assert stats.written == count, stats
    return elapsed


async def writer_latency(root: Path, count: int) -> list[float]:
    """Seconds from each candle's channel send to the writer reporting it durable, at a moderate rate."""
    candles = many_candles(count, stamp=True)
    sent = [0.0] * count
    latencies: list[float] = []

    async def written(batch: list[Candle]) -> None:
        now = time.perf_counter()
        latencies.extend(now - sent[c.trade_num] for c in batch)

    send, receive = trio.open_memory_channel[Sequence[Candle]](100)
    with Store(root, seal_seconds=LATENCY_SEAL_SECONDS) as store:
        async with trio.open_nursery() as nursery:
            settings = WriterSettings(flush_seconds=LATENCY_FLUSH_SECONDS)
            nursery.start_soon(lambda: run_writer(receive, store, settings=settings, on_written=written))
            async with send:
                began = trio.current_time()
                for i, candle in enumerate(candles):
                    await trio.sleep_until(began + i / LATENCY_RATE)
                    sent[i] = time.perf_counter()
                    await send.send([candle])
    assert len(latencies) == count
    return latencies


def chunks(items: Sequence[Candle], size: int) -> Iterator[Sequence[Candle]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rows_per_second(
    work: Path, batches: dict[int, int], numbers: str = "float", sizes: dict[int, int] | None = None
) -> dict[int, tuple[float, float]]:
    """Rows per second appending ``count`` batches of each size to a fresh store and sealing them all,
    and the share of that time the seal took; ``sizes`` (if given) hears the bytes per row of the files."""
    results = {}
    for size, count in batches.items():
        root = work / f"batch_{size}_{numbers}"
        candles = make_candles(size * count)
        prepared = list(chunks(candles if numbers == "float" else exact(candles), size))
        with Store(root, numbers=numbers) as store:
            start = time.perf_counter()
            for batch in prepared:
                store.append(batch)
            appended = time.perf_counter()
            store.seal()
            elapsed = time.perf_counter() - start
            assert store.sealed_rows >= size * count, store.sealed_rows
        results[size] = (size * count / elapsed, (elapsed - (appended - start)) / elapsed)
        if sizes is not None:
            files = list(root.glob("market=*/interval=*/symbol=*/*.parquet"))
            sizes[size] = sum(f.stat().st_size for f in files) / (size * count)
        shutil.rmtree(root)
    return results


def append_costs(work: Path, stored: Sequence[int], appends: int) -> dict[int, list[float]]:
    """Seconds per one-candle append to a series already holding each of ``stored`` rows (sealed), on a
    simulated clock moving a minute per append: the due seal rounds run inside the appends."""
    stores = {}
    clocks = {rows: [0.0] for rows in stored}
    for rows in stored:
        cell = clocks[rows]
        store = Store(work / f"stored_{rows}", clock=lambda cell=cell: cell[0])
        for batch in chunks(make_candles(rows), 50_000):
            store.append(batch)
        store.compact()
        stores[rows] = store
    news = {rows: make_candles(appends, first_index=rows, seed=2) for rows in stored}
    costs: dict[int, list[float]] = {rows: [] for rows in stored}
    for i in range(appends):
        for rows, store in stores.items():  # interleaved: a drifting machine slows both alike
            clocks[rows][0] += MINUTE / 1000
            start = time.perf_counter()
            store.append([news[rows][i]])
            costs[rows].append(time.perf_counter() - start)
    for rows, store in stores.items():
        store.close()
        shutil.rmtree(work / f"stored_{rows}")
    return costs


def rewrite_costs(work: Path, sizes: dict[int, int]) -> dict[int, float]:
    """Seconds per candle the seed's way: read the whole file, concatenate one row, write it back."""
    results = {}
    for rows, count in sizes.items():
        path = work / f"seed_{rows}.parquet"
        candles_to_dataframe(make_candles(rows)).to_parquet(path)
        new = make_candles(count, first_index=rows, seed=3)
        start = time.perf_counter()
        for candle in new:
            frame = pd.concat([pd.read_parquet(path), candles_to_dataframe([candle])])
            frame.to_parquet(path)
        results[rows] = (time.perf_counter() - start) / count
        path.unlink()
    return results


def run(quick: bool) -> tuple[dict[str, Any], list[str]]:
    sizes = Sizes(quick)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trio-klines-bench-") as tmp:
        work = Path(tmp)
        float_bytes: dict[int, float] = {}
        exact_bytes: dict[int, float] = {}
        throughput = rows_per_second(work, sizes.batches, sizes=float_bytes)
        biggest = {10_000: sizes.batches[10_000]}
        exact_throughput = rows_per_second(work, biggest, "exact", exact_bytes)[10_000]
        costs = append_costs(work, sizes.stored, sizes.single_appends)
        rewrite = rewrite_costs(work, sizes.rewrite)
        many_wall, many_cpu = trio.run(writer_closed, work / "many_closed", sizes.many_closed)
        exact_wall, exact_cpu = trio.run(writer_closed, work / "many_closed_exact", sizes.many_closed, "exact")
        latencies = sorted(trio.run(writer_latency, work / "many_latency", sizes.many_latency))
    small, large = sizes.stored
    few, many = sorted(sizes.rewrite)
    mean = {rows: statistics.fmean(c) for rows, c in costs.items()}
    per_candle_10k = 1 / throughput[10_000][0]
    results: dict[str, Any] = {f"rows_per_s_batch_{size}": round(rate, 1) for size, (rate, _) in throughput.items()}
    results |= {f"seal_share_batch_{size}": round(share, 3) for size, (_, share) in throughput.items()}
    results |= {
        "append_s_at_1k": mean[small],
        "append_s_at_1m": mean[large],
        "append_p50_s_at_1k": statistics.median(costs[small]),
        "append_p50_s_at_1m": statistics.median(costs[large]),
        "append_max_s_at_1k": max(costs[small]),
        "append_max_s_at_1m": max(costs[large]),
        "append_cost_ratio_1m_vs_1k": round(mean[large] / mean[small], 3),
        "rewrite_s_per_candle_at_1k": rewrite[few],
        "rewrite_s_per_candle_at_100k": rewrite[many],
        "store_s_per_candle_batch_10000": per_candle_10k,
        "ratio_vs_rewrite_at_1k": round(rewrite[few] / per_candle_10k, 1),
        "ratio_vs_rewrite_at_100k": round(rewrite[many] / per_candle_10k, 1),
        "ratio_vs_rewrite_at_100k_single_candle": round(rewrite[many] / mean[small], 1),
        "closed_rows_per_s_50_series": round(sizes.many_closed / many_wall, 1),
        "cpu_us_per_row_50_series": round(many_cpu / sizes.many_closed * 1e6, 2),
        "latency_p50_ms_50_series": round(statistics.median(latencies) * 1e3, 1),
        "latency_p99_ms_50_series": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1e3, 1),
        "latency_max_ms_50_series": round(latencies[-1] * 1e3, 1),
        "rows_per_s_batch_10000_exact": round(exact_throughput[0], 1),
        "exact_over_float_batch_10000": round(throughput[10_000][0] / exact_throughput[0], 2),
        "closed_rows_per_s_50_series_exact": round(sizes.many_closed / exact_wall, 1),
        "cpu_us_per_row_50_series_exact": round(exact_cpu / sizes.many_closed * 1e6, 2),
        "exact_over_float_cpu_50_series": round(exact_cpu / many_cpu, 2),
        "bytes_per_row_float": round(float_bytes[10_000], 1),
        "bytes_per_row_exact": round(exact_bytes[10_000], 1),
        "real_bytes_per_row": real_bytes(),
        "quick": quick,
        "seconds": round(time.perf_counter() - began, 1),
        "environment": environment(),
    }
    results["targets_met"] = {
        key: (results[key] <= target if key.startswith(("append_cost", "latency")) else results[key] >= target)
        for key, target in TARGETS.items()
    }
    lines = [
        f"store write benchmark{' (quick sizes: not meaningful)' if quick else ''}, {results['seconds']} s",
        *(
            f"  append batches of {size:>6,}, sealed: {rate:>12,.0f} rows/s ({share:.0%} of the time sealing)"
            for size, (rate, share) in throughput.items()
        ),
        f"  one-candle append, {small:>9,} rows stored: {mean[small] * 1e3:7.3f} ms mean,"
        f" {results['append_p50_s_at_1k'] * 1e3:.3f} ms median, {results['append_max_s_at_1k'] * 1e3:.1f} ms max",
        f"  one-candle append, {large:>9,} rows stored: {mean[large] * 1e3:7.3f} ms mean,"
        f" {results['append_p50_s_at_1m'] * 1e3:.3f} ms median, {results['append_max_s_at_1m'] * 1e3:.1f} ms max",
        f"  append cost ratio ({large:,} vs {small:,} stored): {results['append_cost_ratio_1m_vs_1k']}",
        f"  seed rewrite per candle: {rewrite[few] * 1e3:.1f} ms at {few:,} rows,"
        f" {rewrite[many] * 1e3:.1f} ms at {many:,}",
        f"  store per candle in batches of 10,000: {per_candle_10k * 1e6:.2f} µs",
        f"  faster than the rewrite: {results['ratio_vs_rewrite_at_1k']:,}x at {few:,} rows,"
        f" {results['ratio_vs_rewrite_at_100k']:,}x at {many:,}"
        f" ({results['ratio_vs_rewrite_at_100k_single_candle']:,}x appending one candle at a time)",
        f"  writer + store, 50 series, closed candles: {results['closed_rows_per_s_50_series']:>10,.0f} rows/s,"
        f" {results['cpu_us_per_row_50_series']:.1f} µs CPU per row",
        f"  writer + store, 50 series, {LATENCY_RATE:.0f} candles/s, flush_seconds {LATENCY_FLUSH_SECONDS},"
        f" seal_seconds {LATENCY_SEAL_SECONDS}:"
        f" latency p50 {results['latency_p50_ms_50_series']:.0f} ms, p99 {results['latency_p99_ms_50_series']:.0f} ms,"
        f" max {results['latency_max_ms_50_series']:.0f} ms",
        f"  exact numbers beside float: batches of 10,000 sealed {results['rows_per_s_batch_10000_exact']:,.0f}"
        f" rows/s ({results['exact_over_float_batch_10000']}x the float time per row); writer + store, 50 series:"
        f" {results['closed_rows_per_s_50_series_exact']:,.0f} rows/s, {results['cpu_us_per_row_50_series_exact']:.1f}"
        f" µs CPU per row ({results['exact_over_float_cpu_50_series']}x float's); sealed files"
        f" {results['bytes_per_row_exact']} bytes per row against {results['bytes_per_row_float']}",
        *(f"  real archive CSV {name}: {sizes['exact']} bytes per row exact, {sizes['float']} float"
          for name, sizes in results["real_bytes_per_row"].items()),
        "  targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results["targets_met"].items()),
    ]
    return results, lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.write", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    args = parser.parse_args(argv)
    results, lines = run(args.quick)
    emit(results, lines, as_json=args.json)


if __name__ == "__main__":
    main()
