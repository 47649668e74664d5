"""What watching a recorder costs: one ``/metrics`` scrape and one ``/healthz`` answer, up to the whole universe.

    python -m benchmarks.ops [--json] [--series N ...] [--repeat R]

Both run on the recorder's event loop, so their time is time the recorder's tasks wait. For each size
(default 1,000, 10,000 and 45,005 series: benchmarks.series' Binance-like universe cut to size), a real
:class:`~trio_klines.Recorder` (not started: no sockets) holds one durable candle per series, then:

- ``scrape``: :func:`trio_klines.ops.metrics.exposition` of its registry, every series fresh, then every series
  stale (a clock 100 days on, past even ``1M``'s two months: the per-series gauges then cover the stale
  ones, up to ``metrics_series_limit``);
- ``healthz``: :meth:`Recorder.health` (the freshness of every series and the JSON body), fresh and stale.

Figures: milliseconds per call (best of ``--repeat``), the exposition's size and sample count, and the share
of one core at Prometheus' default 15 s scrape interval with a health check every 10 s. Target: the whole
universe watched so costs under 1 % of a core.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any, Final

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import INTERVALS, Series, floor_open_time
from trio_klines.ops.metrics import RecorderCollector
from trio_klines.recorder import Recorder

from ._util import emit, environment

SIZES: Final = (1_000, 10_000, 45_005)
SCRAPE_EVERY_S: Final = 15.0
HEALTH_EVERY_S: Final = 10.0
TARGET_CORE_SHARE: Final = 0.01
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS


def universe(size: int) -> list[Series]:
    """``size`` series in benchmarks.series' proportions: spot x 16 intervals, USDⓈ-M and COIN-M x 15."""
    spot = [i for i in INTERVALS]
    futures = [i for i in INTERVALS if i != "1s"]
    out: list[Series] = []
    n = 0
    while len(out) < size:
        out += [Series("spot", f"S{n:05d}USDT", i) for i in spot]
        if n % 5 < 2:
            out += [Series("usdt_futures", f"F{n:05d}USDT", i) for i in futures]
        if n % 30 == 0:
            out += [Series("coin_futures", f"C{n:05d}USD_PERP", i) for i in futures]
        n += 1
    return out[:size]


def recorder(size: int, now_ms: int) -> Recorder:
    series = universe(size)
    config = RecorderConfig(streams=tuple(series), check_symbols=False, backfill=False)
    rec = Recorder(config)
    for s in series:
        # The newest closed candle: it opened one interval before the current one (1M: approximately).
        current = floor_open_time(s.interval, now_ms)
        rec.writer_stats.last_open_time[s] = floor_open_time(s.interval, current - 1)
        rec._since[s] = now_ms - HOUR_MS
    return rec


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.process_time()
        result = fn()
        times.append(time.process_time() - t0)
    return min(times), result


def measure(size: int, repeat: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, generate_latest

    now_ms = int(time.time() * 1000)
    rec = recorder(size, now_ms)
    out: dict[str, Any] = {"series": size}
    for label, clock_ms in (("fresh", now_ms), ("stale", now_ms + 100 * DAY_MS)):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RecorderCollector(rec, clock=lambda ms=clock_ms: ms / 1000))
        scrape_s, body = best(lambda r=registry: generate_latest(r), repeat)
        health_s, (_, report) = best(lambda c=clock_ms: rec.health(c), repeat)
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        out[label] = {
            "scrape_ms": round(scrape_s * 1000, 2),
            "healthz_ms": round(health_s * 1000, 2),
            "exposition_bytes": len(body),
            "samples": samples,
            "healthz_bytes": len(json.dumps(report)),
            "stale": report["stale"],
        }
    worst = max(out[k]["scrape_ms"] / SCRAPE_EVERY_S + out[k]["healthz_ms"] / HEALTH_EVERY_S
                for k in ("fresh", "stale"))  # fmt: skip
    out["core_share"] = round(worst / 1000, 5)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    parser.add_argument("--series", type=int, action="append", help=f"sizes (default {', '.join(map(str, SIZES))})")
    parser.add_argument("--repeat", type=int, default=5, help="calls per figure, the best kept (default 5)")
    args = parser.parse_args(argv)
    sizes = args.series or list(SIZES)
    if any(n < 1 for n in sizes) or args.repeat < 1:
        parser.error("--series and --repeat must be at least 1")
    runs = [measure(n, args.repeat) for n in sizes]
    full = runs[-1]
    results = {"environment": environment(), "runs": runs, "scrape_every_s": SCRAPE_EVERY_S,
               "health_every_s": HEALTH_EVERY_S, "target_core_share": TARGET_CORE_SHARE,
               "targets_met": {"largest_under_1pct_core": full["core_share"] < TARGET_CORE_SHARE}}  # fmt: skip
    lines = [f"{'series':>7}  {'state':<5}  {'scrape ms':>9}  {'healthz ms':>10}  {'samples':>7}  {'bytes':>8}  "
             f"{'core %':>6}"]  # fmt: skip
    for run in runs:
        for state in ("fresh", "stale"):
            r = run[state]
            lines.append(f"{run['series']:>7}  {state:<5}  {r['scrape_ms']:>9.2f}  {r['healthz_ms']:>10.2f}  "
                         f"{r['samples']:>7}  {r['exposition_bytes']:>8}  "
                         f"{100 * run['core_share']:>6.3f}")  # fmt: skip
    lines.append(f"core share at a scrape every {SCRAPE_EVERY_S:g} s and a health check every {HEALTH_EVERY_S:g} s "
                 f"(worst of fresh and stale); target under {100 * TARGET_CORE_SHARE:g} % at the largest size: "
                 f"{'met' if results['targets_met']['largest_under_1pct_core'] else 'MISSED'}")  # fmt: skip
    emit(results, lines, as_json=args.json)


if __name__ == "__main__":
    main()
