"""The store before it scaled with series (commit 0a69bc0: one file per series per flush), measured the way
``benchmarks.series`` measures today's, so the README's before/after figures can be made again::

    git worktree add /tmp/before 0a69bc0
    PYTHONPATH=/tmp/before python benchmarks/before_store.py spread [--seconds 180] [--series 45000]
    PYTHONPATH=/tmp/before python benchmarks/before_store.py burst [--series 40000]
    git worktree remove /tmp/before

It imports ``trio_klines`` from ``PYTHONPATH`` and refuses to run on today's code (whose store has no
``compaction_debt``). Standalone on purpose: nothing from today's package is imported.

- ``spread``: 45,000 ``usdt_futures`` ``1m`` series; one flush a second (paced on the real clock) of 750
  candles of 750 series (each series closes once a minute); after each flush at most two
  ``compact_due(8, 50_000)`` steps, as that release's writer did. Prints CPU µs per candle and the
  ``append`` call's wall time (flush → durable) p50/p99/max.
- ``burst``: 40,000 series that hold a candle each get one more each, in one ``append``: wall and CPU
  seconds until it returns (durable).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from trio_klines.core.parse import Candle
from trio_klines.store.dataset import Store

T0 = 1_577_836_800_000  # 2020-01-01 00:00 UTC
MINUTE = 60_000


def candle(symbol: str, open_time: int, price: float = 100.0) -> Candle:
    return Candle("usdt_futures", symbol, "1m", open_time, price, price + 2, price - 0.5, price + 1.5,
                  12.345, 1250.5, 100, 6.1, 620.2)  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(root: Path, seconds: float, series: int, per_flush: int) -> dict[str, float]:
    symbols = [f"S{i:05d}USDT" for i in range(series)]
    per_minute = series // per_flush
    walls: list[float] = []
    cpu = 0.0
    candles = 0
    started = time.perf_counter()
    with Store(root) as store:
        flush = 0
        while time.perf_counter() - started < seconds:
            time.sleep(max(0.0, started + flush - time.perf_counter()))
            base, open_time = (flush % per_minute) * per_flush, T0 + (flush // per_minute) * MINUTE
            batch = [candle(symbols[(base + j) % series], open_time) for j in range(per_flush)]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            store.append(batch, compact=False)
            walls.append(time.perf_counter() - wall0)
            debt, steps = store.compaction_debt(), 0
            while debt > 0 and steps < 2:
                debt = store.compact_due(max_merges=8, max_rows=50_000)
                steps += 1
            cpu += time.process_time() - cpu0
            candles += len(batch)
            flush += 1
    return {"flushes": flush, "candles": candles, "cpu_us_per_candle": round(cpu / candles * 1e6, 1),
            "durable_s_p50": round(percentile(walls, 50), 3), "durable_s_p99": round(percentile(walls, 99), 3),
            "durable_s_max": round(max(walls), 3)}  # fmt: skip


def burst(root: Path, series: int) -> dict[str, float]:
    symbols = [f"S{i:05d}USDT" for i in range(series)]
    with Store(root) as store:
        for start in range(0, series, 1_000):
            store.append([candle(s, T0) for s in symbols[start : start + 1_000]], compact=False)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        store.append([candle(s, T0 + MINUTE, 101.0) for s in symbols], compact=False)
        return {"series": series, "durable_wall_s": round(time.perf_counter() - wall0, 2),
                "durable_cpu_s": round(time.process_time() - cpu0, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/before_store.py", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["spread", "burst"])
    parser.add_argument("--seconds", type=float, default=180.0, help="spread: seconds of paced flushes (180)")
    parser.add_argument("--series", type=int, help="series (spread 45,000, burst 40,000)")
    parser.add_argument("--per-flush", type=int, default=750, help="spread: candles per flush (750)")
    args = parser.parse_args()
    if not hasattr(Store, "compaction_debt"):
        raise SystemExit("this is today's trio_klines: put the 0a69bc0 checkout first on PYTHONPATH (see --help)")
    root = Path(tempfile.mkdtemp(prefix="trio-klines-before-"))
    try:
        if args.scenario == "spread":
            result = spread(root, args.seconds, args.series or 45_000, args.per_flush)
        else:
            result = burst(root, args.series or 40_000)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
