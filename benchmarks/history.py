"""History from the data archive against the same history over REST: wall time, CPU, and the bulk path's speed.

    python -m benchmarks.history [--json] [--series N] [--months M | --days D] [--interval 1m]
                                 [--market usdt_futures] [--seed S] [--rounds R] [--allow-cold]

The same span of the same series is downloaded with :func:`trio_klines.pipeline.history.download` into
fresh stores, one leg after the other, each timed on its own:

- **archive_cold** (``source="archive"``): the fake exchange's copy of Binance's data archive (monthly files
  for whole months, daily ones for the rest), each checked against its ``.CHECKSUM``, unzipped, parsed and
  stored as tables, into a throw-away store. The fake builds a zip when first asked (about 0.8 s for a
  month of ``1m``, in the exchange's process) and keeps the last 16; Binance serves prebuilt files. This
  first run builds them and warms the fake's cache; its figures are reported, not used for the target.
- **archive**: the same again into a fresh store, the files built: the figures compared with REST. The
  default span (4 series x 3 months of ``1m`` = 12 monthly files) fits the cache; a span of more files is
  refused unless ``--allow-cold`` (the timed run would then rebuild some).
- **rest** (``source="rest"``): the fake exchange's REST klines at ``--speed 1``, so its weight budget
  (USDⓈ-M: 2,400 per minute, shared with COIN-M; spot: 6,000), charged per exchange-time minute, is
  Binance's real rate; pages of 1,000 (weight 5 on futures, 2 on spot), of which the client spends 80 %
  of the budget (:data:`~trio_klines.net.rest.BUDGET_SHARE`) in windows of a minute: 384 futures pages
  (384,000 ``1m`` candles) a minute. The default's 528 pages fill two windows: a little over 60 s.

The exchange runs as a separate process (``python -m trio_klines exchange --seed S --speed 1 --start <ms>``,
its clock starting :data:`EXCHANGE_AFTER_DAYS` days after the span's end, so every file of the span is
published), so building zips and serving pages is not in our CPU; its own CPU per leg is reported apart
(from ``/proc``), and its request counts (429s, 418s) at the end. The span ends at :data:`END` (2025-07-01)
and reaches back ``--months`` whole months (or ``--days`` days); the symbols are the fake's defaults listed
by then, then generated ones (``--symbols``). Per leg: candles stored, wall seconds, candles per wall
second, CPU µs per candle (this process, all its threads: ``time.process_time``), files or pages fetched
and the exchange's CPU. ``speedup_wall``: the REST leg's wall time over the archive leg's (target >= 20);
``speedup_vs_budget``: the archive leg's rate over REST's long-run rate at the budget (``1m``: 6,400
candles/s), which does not depend on how the span rounds to budget minutes. Both stores are read back
after their leg (untimed): every expected candle is there, and the two hold the same rows (``identical``).

**parse** (no network, no exchange): the same files built beforehand with
:func:`~trio_klines.testing.archive.build_archive_zip` (untimed), then, file by file as the importer does,
:func:`~trio_klines.store.archive_csv.read_archive_zip` (unzip + parse + checks), ``select_wanted``,
``Store.append_table(seal=False)`` and a seal step (``seal_due``), and at the end ``Store.seal()`` for what
is left, serially, into a fresh store on the real disk (fsync on), ``--rounds`` (3) times. CPU
(``time.process_time``) per step in µs per candle and candles per CPU second of the whole (target >=
1,000,000), from the median round; every round's rate beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, Final

import trio

from benchmarks._util import emit, environment
from trio_klines.config import RecorderConfig
from trio_klines.core.archive import plan_sources
from trio_klines.core.markets import MARKETS, Series, count_open_times, series
from trio_klines.core.paging import PAGE_LIMIT, pages_needed
from trio_klines.net.rest import BUDGET_SHARE
from trio_klines.pipeline import archive as archive_pipeline
from trio_klines.pipeline import history
from trio_klines.pipeline.archive import SEAL_STEP_FILES, SEAL_STEP_ROWS
from trio_klines.store.archive_csv import read_archive_zip, select_wanted
from trio_klines.store.dataset import Store
from trio_klines.store.reading import read_series
from trio_klines.testing import History, Universe
from trio_klines.testing.archive import CACHE_FILES, build_archive_zip, parse_archive_path

#: The span ends here (2025-07-01 00:00 UTC): whole months before it are in the archive.
END: Final = 1_751_328_000_000
DAY: Final = 86_400_000
#: The exchange's clock starts this many days after the span's end: past the fake's publication lag (1 day).
EXCHANGE_AFTER_DAYS: Final = 3
SEED: Final = 7
#: Target: the archive leg at least this many times faster (wall) than REST at Binance's budget.
TARGET_SPEEDUP: Final = 20.0
#: Target: unzip + parse + store at least this many candles per CPU second.
TARGET_PARSE_PER_S: Final = 1_000_000.0
#: Seconds the exchange may take to print its endpoints, and a leg to finish.
START_TIMEOUT_S: Final = 60.0


# --- the span and the series -----------------------------------------------------------------


def span(months: int | None, days: int | None) -> tuple[int, int]:
    """``[since, until)`` in ms: ``days`` days, else ``months`` whole months, ending at :data:`END`."""
    if days is not None:
        return END - days * DAY, END
    end = datetime.fromtimestamp(END / 1000, UTC).date()
    index = end.year * 12 + end.month - 1 - (months or 0)
    first = date(index // 12, index % 12 + 1, 1)
    return int(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp() * 1000), END


def pick_symbols(market: str, count: int, since: int) -> tuple[list[str], int]:
    """``count`` symbols of ``market`` listed before ``since``: the fake's defaults first, then generated
    ones; and how many generated symbols the exchange must add (``--symbols``)."""
    for extra in range(0, count + 1):
        universe = Universe(extra)
        listed = [s for s, spec in universe.symbols(market).items() if spec.listed_at <= since]
        if len(listed) >= count:
            return listed[:count], extra
    raise ValueError(f"{market} lists fewer than {count} symbols before the span")


def planned_files(streams: Sequence[Series], since: int, until: int, now: int) -> list[tuple[Series, Any]]:
    """The archive files the importer fetches for ``[since, until)`` at exchange time ``now`` (the
    series listed long before ``since``): (series, :class:`~trio_klines.core.archive.FileJob`)."""
    out = []
    for s in streams:
        plan = plan_sources(MARKETS[s.market], s.symbol, s.interval, [(since, until)], now)
        out += [(s, job) for job in plan.files]
    return out


# --- the exchange process ----------------------------------------------------------------------


def start_exchange(seed: int, start: int, symbols: int, log: IO[bytes]) -> tuple[subprocess.Popen[bytes], dict]:
    """The fake exchange as a process at ``--speed 1``; its endpoints map (its first stdout line)."""
    args = [sys.executable, "-m", "trio_klines", "exchange", "--seed", str(seed), "--speed", "1",
            "--start", str(start), "--symbols", str(symbols)]  # fmt: skip
    # Own session: a Ctrl-C on the benchmark reaches only the benchmark, which then ends the exchange.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        assert proc.stdout is not None
        return proc, json.loads(_read_line(proc.stdout, START_TIMEOUT_S))
    except BaseException:
        stop_exchange(proc)
        raise


def _read_line(stream: IO[bytes], timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError(f"the exchange printed no endpoints within {timeout:.0f} s")
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            raise RuntimeError("the exchange exited before printing its endpoints (see its log)")
        buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


def stop_exchange(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM (SIGKILL after 10 s); the exchange's closing stats line, if it printed one."""
    stats: dict[str, Any] = {}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    for line in (out or b"").decode(errors="replace").splitlines():
        if line.startswith('{"stats"'):
            stats = json.loads(line)["stats"]
    return stats


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from ``/proc``; 0 elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the legs -----------------------------------------------------------------------------------


def run_leg(
    name: str, endpoints: dict, streams: Sequence[Series], root: Path, since: int, until: int, source: str, pid: int
) -> dict[str, Any]:
    """One :func:`download` of ``streams`` over ``[since, until)`` from ``source`` into a fresh store at ``root``."""
    config = RecorderConfig.build(streams=streams, endpoints=endpoints, data_dir=root)
    server = process_cpu(pid)
    wall, cpu = time.perf_counter(), time.process_time()
    done = trio.run(lambda: history.download(config, since, until, source=source))  # type: ignore[arg-type]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server = process_cpu(pid) - server
    rest, archive = done.rest, done.archive
    candles = rest.candles + (archive.candles if archive is not None else 0)
    return {
        "leg": name,
        "source": source,
        "candles": candles,
        "wall_s": round(wall, 3),
        "candles_per_s": round(candles / wall) if wall else 0,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_candle": round(cpu / max(1, candles) * 1e6, 3),
        "exchange_cpu_s": round(server, 2),
        "rest_pages": rest.pages,
        "rest_requests": rest.requests,
        "rest_failures": rest.failures,
        "archive_files": archive.files_stored if archive is not None else 0,
        "archive_bytes": archive.bytes if archive is not None else 0,
        "archive_failed": (archive.failed + archive.missing + archive.not_fetched) if archive is not None else 0,
        "suspected": rest.suspected + (archive.suspected if archive is not None else 0),
    }


def stored(root: Path, streams: Sequence[Series], since: int, until: int) -> dict[Series, Any]:
    """Each series' rows in ``[since, until)`` in the store at ``root``."""
    return {s: read_series(root, s, since, until) for s in streams}


# --- unzip + parse + store, in-process -----------------------------------------------------------


def build_zips(seed: int, extra: int, files: Sequence[tuple[Series, Any]]) -> list[tuple[Series, Any, bytes]]:
    """The zips of ``files`` as the fake exchange (same seed and universe) serves them."""
    source = History(seed, universe=Universe(extra))
    out = []
    for s, job in files:
        path = parse_archive_path(job.file.path)
        assert path is not None, job.file.path
        out.append((s, job, build_archive_zip(source, path).data))
    return out


def parse_round(root: Path, zips: Sequence[tuple[Series, Any, bytes]]) -> dict[str, float]:
    """The importer's per-file work, serially, into a fresh store at ``root``: CPU seconds per step."""
    cpu = {"unzip_parse": 0.0, "select": 0.0, "append": 0.0, "seal": 0.0}
    candles = 0
    clock = time.process_time
    wall = time.perf_counter()
    with Store(root) as store:
        for s, job, data in zips:
            csv_name = job.file.name.removesuffix(".zip") + ".csv"
            t0 = clock()
            tables = read_archive_zip(io.BytesIO(data), csv_name, s.market, s.symbol, s.interval)
            t1 = clock()
            table, absent = select_wanted(s.interval, tables, job.wanted)
            t2 = clock()
            candles += store.append_table(s, table, seal=False)
            t3 = clock()
            store.seal_due(SEAL_STEP_FILES, SEAL_STEP_ROWS)
            t4 = clock()
            assert not absent, absent
            cpu["unzip_parse"] += t1 - t0
            cpu["select"] += t2 - t1
            cpu["append"] += t3 - t2
            cpu["seal"] += t4 - t3
        t0 = clock()
        store.seal()
        cpu["seal"] += clock() - t0
    return cpu | {"candles": candles, "wall": time.perf_counter() - wall}


def parse_figures(rounds: Sequence[dict[str, float]]) -> dict[str, Any]:
    """The median round (by total CPU) in µs per candle and candles per CPU second; every round's rate."""
    steps = ("unzip_parse", "select", "append", "seal")
    totals = [sum(r[k] for k in steps) for r in rounds]
    median = rounds[sorted(range(len(rounds)), key=totals.__getitem__)[len(rounds) // 2]]
    candles = int(median["candles"])
    total = sum(median[k] for k in steps)
    return {
        "candles": candles,
        "rounds": len(rounds),
        "cpu_s": round(total, 4),
        "wall_s": round(median["wall"], 4),
        "candles_per_cpu_s": round(candles / total) if total else 0,
        "candles_per_cpu_s_by_round": [
            round(r["candles"] / t) if t else 0 for r, t in zip(rounds, totals, strict=True)
        ],
        "cpu_us_per_candle": round(total / max(1, candles) * 1e6, 3),
        **{f"cpu_us_per_candle_{k}": round(median[k] / max(1, candles) * 1e6, 3) for k in steps},
    }


# --- the run ---------------------------------------------------------------------------------------


@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace, note: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The whole benchmark; ``note`` hears what it is doing (progress, on stderr from :func:`main`)."""
    began = time.perf_counter()
    market = MARKETS[args.market]
    since, until = span(args.months, args.days)
    start = until + EXCHANGE_AFTER_DAYS * DAY
    symbols, extra = pick_symbols(market.name, args.series, since)
    streams = [series(market.name, s, args.interval) for s in symbols]
    files = planned_files(streams, since, until, start)
    if len(files) > CACHE_FILES and not args.allow_cold:
        raise SystemExit(f"{len(files)} archive files: more than the fake exchange caches ({CACHE_FILES}), so the"
                         " timed archive run would rebuild them; shorten the span or pass --allow-cold")  # fmt: skip
    expected = len(streams) * count_open_times(args.interval, since, until)
    pages = sum(pages_needed(args.interval, since, until) for _ in streams)
    weight = market.kline_weight(PAGE_LIMIT)
    pages_per_min = int(market.weight_limit_per_minute * BUDGET_SHARE) // weight
    results: dict[str, Any] = {
        "market": market.name,
        "interval": args.interval,
        "series": len(streams),
        "symbols": symbols,
        "since": since,
        "until": until,
        "span": f"{_iso(since)} .. {_iso(until)}",
        "expected_candles": expected,
        "archive_files_planned": len(files),
        "config": {
            "source": "archive / rest (pipeline.history.download)",
            "rest_workers": history.WORKERS,
            "flush_seconds": history.FLUSH_SECONDS,
            "archive_workers": archive_pipeline.DEFAULT_WORKERS,
            "archive_parsers": archive_pipeline.DEFAULT_PARSERS,
            "page_limit": PAGE_LIMIT,
            "page_weight": weight,
            "weight_limit_per_minute": market.weight_limit_per_minute,
            "budget_share": BUDGET_SHARE,
            "rest_pages_per_min_at_budget": pages_per_min,
            "rest_pages_planned": pages,
            # The client counts its budget in windows of a minute from its first call: a run of N pages
            # fills ceil(N / pages_per_min) windows, so it takes at least 60 s for each but the last.
            "rest_budget_windows": -(-pages // pages_per_min),
            "rest_wall_s_at_least": 60 * (-(-pages // pages_per_min) - 1),
        },
        "exchange": {
            "command": f"python -m trio_klines exchange --seed {args.seed} --speed 1 --start {start} --symbols {extra}",
            "start": _iso(start),
            "speed": 1,
            "archive_cache_files": CACHE_FILES,
            "separate_process": True,
        },
        "environment": environment(),
    }
    with workdir() as work, open(work / "exchange.log", "wb") as log:
        note(f"exchange: {results['exchange']['command']}")
        proc, endpoints = start_exchange(args.seed, start, extra, log)
        try:
            note(f"cold archive run ({len(files)} files; the exchange builds them)")
            cold = run_leg("archive_cold", endpoints, streams, work / "cold", since, until, "archive", proc.pid)
            shutil.rmtree(work / "cold")
            note(f"  {cold['wall_s']} s; timed archive run into a fresh store")
            warm = run_leg("archive", endpoints, streams, work / "archive", since, until, "archive", proc.pid)
            windows = results["config"]["rest_budget_windows"]
            note(f"  {warm['wall_s']} s; REST run ({pages} pages, {windows} minute(s) of the budget)")
            rest = run_leg("rest", endpoints, streams, work / "rest", since, until, "rest", proc.pid)
            note(f"  {rest['wall_s']} s")
        finally:
            results["exchange"]["stats"] = stop_exchange(proc)
        a, r = stored(work / "archive", streams, since, until), stored(work / "rest", streams, since, until)
        results["stored_archive"] = sum(t.num_rows for t in a.values())
        results["stored_rest"] = sum(t.num_rows for t in r.values())
        results["identical"] = all(a[s].equals(r[s]) for s in streams)
        del a, r
        results["legs"] = {"archive_cold": cold, "archive": warm, "rest": rest}
        results["speedup_wall"] = round(rest["wall_s"] / warm["wall_s"], 2) if warm["wall_s"] else 0.0
        # The long-run REST rate: a budget's worth of pages a minute, whatever the span's rounding to minutes.
        at_budget = expected / max(1, pages) * pages_per_min / 60
        results["rest_candles_per_s_at_budget"] = round(at_budget)
        results["speedup_vs_budget"] = round(warm["candles_per_s"] / at_budget, 2) if at_budget else 0.0
        results["speedup_wall_cold"] = round(rest["wall_s"] / cold["wall_s"], 2) if cold["wall_s"] else 0.0

        note(f"parse: building {len(files)} zips (untimed)")
        zips = build_zips(args.seed, extra, files)
        results["zip_bytes"] = sum(len(z) for _, _, z in zips)
        rounds = []
        for i in range(args.rounds):
            rounds.append(parse_round(work / f"parse{i}", zips))
            shutil.rmtree(work / f"parse{i}")
        results["parse"] = parse_figures(rounds)
    results["targets_met"] = {
        "speedup_wall": results["speedup_wall"] >= TARGET_SPEEDUP,
        "parse_candles_per_cpu_s": results["parse"]["candles_per_cpu_s"] >= TARGET_PARSE_PER_S,
        "complete": results["stored_archive"] == results["stored_rest"] == expected and results["identical"],
    }
    results["seconds"] = round(time.perf_counter() - began, 1)
    return results


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def report_lines(r: dict[str, Any]) -> list[str]:
    c, legs, p = r["config"], r["legs"], r["parse"]
    env, stats = r["environment"], r["exchange"].get("stats", {})
    lines = [
        f"history: archive vs REST, {r['series']} {r['market']} {r['interval']} series"
        f" ({', '.join(r['symbols'])}), {r['span']}: {r['expected_candles']:,} candles;"
        f" {r['seconds']} s in all; {env['cpus']} CPUs, Python {env['python']}, pyarrow {env['pyarrow']}",
        f"  exchange (separate process): {r['exchange']['command']}",
        f"  REST: pages of {c['page_limit']} (weight {c['page_weight']}), budget {c['weight_limit_per_minute']}/min"
        f" x {c['budget_share']:.0%} = {c['rest_pages_per_min_at_budget']} pages/min; {c['rest_pages_planned']}"
        f" pages planned: {c['rest_budget_windows']} one-minute windows of the budget, so at least"
        f" {c['rest_wall_s_at_least']} s; {c['rest_workers']} workers",
        f"  archive: {r['archive_files_planned']} files ({r['zip_bytes'] / 1e6:.1f} MB),"
        f" {c['archive_workers']} downloads and {c['archive_parsers']} parsers at once;"
        f" cold = first run, the exchange building its zips (Binance serves prebuilt files);"
        f" archive = second run into a fresh store, the files built",
        "",
        f"  {'leg':<13}{'candles':>10}{'wall s':>9}{'candles/s':>12}{'CPU s':>8}{'CPU µs/candle':>15}"
        f"{'files/pages':>13}{'exchange CPU s':>16}",
    ]
    for leg in (legs["archive_cold"], legs["archive"], legs["rest"]):
        fetched = f"{leg['archive_files']:,}/{leg['rest_pages']:,}"
        lines.append(
            f"  {leg['leg']:<13}{leg['candles']:>10,}{leg['wall_s']:>9.2f}{leg['candles_per_s']:>12,}"
            f"{leg['cpu_s']:>8.2f}{leg['cpu_us_per_candle']:>15.2f}{fetched:>13}{leg['exchange_cpu_s']:>16.2f}"
        )
    lines += [
        "",
        f"  speedup (REST wall / archive wall): {r['speedup_wall']:.1f}x (target >= {TARGET_SPEEDUP:.0f}x);"
        f" against the cold archive run {r['speedup_wall_cold']:.1f}x; against REST's long-run rate at the budget"
        f" ({r['rest_candles_per_s_at_budget']:,} candles/s) {r['speedup_vs_budget']:.1f}x",
        f"  the exchange answered {stats.get('rest_requests', 0):,} REST requests"
        f" ({stats.get('rest_429', 0)} x 429, {stats.get('rest_418', 0)} x 418)"
        f" and {stats.get('archive_requests', 0):,} archive requests ({stats.get('archive_bytes', 0) / 1e6:.1f} MB)",
        f"  stored: archive {r['stored_archive']:,}, REST {r['stored_rest']:,} of {r['expected_candles']:,};"
        f" the two stores {'hold the same rows' if r['identical'] else 'DIFFER'}",
        f"  unzip + parse + store in-process ({p['candles']:,} candles, median of {p['rounds']} rounds):"
        f" {p['candles_per_cpu_s']:,} candles per CPU second (target >= {TARGET_PARSE_PER_S:,.0f}),"
        f" {p['wall_s']:.2f} s wall;"
        f" rounds {[f'{x:,}' for x in p['candles_per_cpu_s_by_round']]}",
        f"    CPU µs/candle {p['cpu_us_per_candle']:.3f} = unzip+parse {p['cpu_us_per_candle_unzip_parse']:.3f}"
        f" + select {p['cpu_us_per_candle_select']:.3f} + append {p['cpu_us_per_candle_append']:.3f}"
        f" + seal {p['cpu_us_per_candle_seal']:.3f}",
        "  targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["targets_met"].items()),
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--series", type=int, default=4, help="series downloaded (4)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--months", type=int, default=3, help="whole months before 2025-07-01 (3)")
    length.add_argument("--days", type=int, help="days before 2025-07-01, instead of --months")
    parser.add_argument("--interval", default="1m", help="the series' interval (1m)")
    parser.add_argument("--market", default="usdt_futures", choices=sorted(MARKETS), help="(usdt_futures)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the exchange's history seed ({SEED})")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the in-process parse measurement (3)")
    parser.add_argument(
        "--allow-cold",
        action="store_true",
        help=f"run a span of more than {CACHE_FILES} files (the timed archive run then rebuilds some)",
    )
    args = parser.parse_args(argv)
    if args.series < 1 or args.rounds < 1 or args.months < 1 or (args.days is not None and args.days < 1):
        parser.error("--series, --rounds, --months and --days must be at least 1")
    if args.days is not None:
        args.months = None
    results = run(args, note=lambda text: print(text, file=sys.stderr, flush=True))
    emit(results, report_lines(results), as_json=args.json)


if __name__ == "__main__":
    main()
