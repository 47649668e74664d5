"""Commands on a stored dataset: ``backfill`` (download history), ``status``, ``verify``, ``compact``."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..config import DEFAULT_DATA_DIR, HISTORY_SOURCES, load_endpoints, parse_time
from ..core.markets import MARKETS, apply_endpoints
from ..errors import ConfigError
from .common import EXIT_FAILURE, STOP_SIGNALS, Command, SignalStop, argument_type, signal_exit_status
from .record import add_recording_arguments, build_config

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..config import RecorderConfig
    from ..pipeline.history import Downloaded, HistoryProgress, Source
    from ..pipeline.verify import SeriesComparison
    from ..pipeline.writer import WriterStats
    from ..store.lock import LockHolder
    from ..store.status import SeriesStatus

log = logging.getLogger("trio_klines.cli")


def _data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, dest="data_dir", default=DEFAULT_DATA_DIR, help="data directory (default ./data)"
    )


# --- backfill ---------------------------------------------------------------------------------


def _backfill_arguments(parser: argparse.ArgumentParser) -> None:
    add_recording_arguments(parser)
    parser.add_argument("--since", type=argument_type(parse_time), required=True, metavar="TIME",
                        help="ISO date-time or epoch ms of the first candle wanted")  # fmt: skip
    parser.add_argument("--until", type=argument_type(parse_time), metavar="TIME",
                        help="end, exclusive (default: the exchange's now)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _source_argument(parser)


def _source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=HISTORY_SOURCES, default="auto",
                        help="where history comes from: auto (default) takes what Binance's data archive has "
                             "published (checksums verified), then REST for the rest; archive takes nothing over "
                             "REST (but the checks of exchange gaps); rest takes everything over REST")  # fmt: skip


def _run_backfill(args: argparse.Namespace) -> int:
    import trio

    config = build_config(args, since=args.since)
    if config.universes:
        names = ", ".join(str(u) for u in config.universes)
        raise ConfigError(f"backfill takes symbols by name, not universes ({names}); `record --since` records one")
    if args.until is not None and args.until <= args.since:
        from ..core.timefmt import iso_ms

        raise ConfigError(f"--until ({iso_ms(args.until)}) must come after --since ({iso_ms(args.since)})")
    bar = _ProgressBar() if not args.no_progress and sys.stderr.isatty() else None
    try:
        done = trio.run(_backfill_until_signalled, config, args.since, args.until, bar, args.source)
    finally:
        if bar is not None:
            bar.close()
    return _backfill_status(args.command_prog, done)


class _Backfilled(NamedTuple):
    """How a backfill ended: the first stop signal, the download's counters (``None`` if a signal cut it
    short) and its writer's (``written``: candles stored, ``pending``: downloaded but not stored)."""

    signal: signal.Signals | None
    stats: Downloaded | None
    stored: WriterStats


async def _backfill_until_signalled(
    config: RecorderConfig, since: int, until: int | None, on_progress: _ProgressBar | None, source: Source = "auto"
) -> _Backfilled:
    """Download until done, or until SIGINT or SIGTERM, which stops it at once keeping what is stored.

    Raises what :func:`~trio_klines.pipeline.history.download` raises, as itself. If cancelled, the
    download is cancelled as on a signal.
    """
    import trio

    from ..pipeline.history import download
    from ..pipeline.supervision import single_error
    from ..pipeline.writer import WriterStats

    stored, stats = WriterStats(), None
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals, single_error():
        stop = SignalStop(cancel_after=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop.watch, signals, "stopping; what is stored is kept", "already stopping")
            # What a supervisor (or a test) waits for before it may stop the download cleanly.
            log.info("ready: backfilling %d series; SIGINT or SIGTERM stops, the next run resumes", len(config.streams))
            with stop.scope:
                stats = await download(
                    config, since, until, on_progress=on_progress, writer_stats=stored, source=source
                )
            nursery.cancel_scope.cancel()
    return _Backfilled(stop.first, stats, stored)


def _backfill_status(where: str, done: _Backfilled) -> int:
    """The exit status of a backfill that ended as ``done``, after its summary on stderr (a line per source)."""
    stats, stored = done.stats, done.stored
    failed = False
    if stats is not None:
        archive, rest = stats.archive, stats.rest
        if archive is not None:
            broken = archive.missing + archive.failed
            print(f"backfill: archive: {archive.candles} candles from {archive.files_stored} files "
                  f"({archive.bytes / 1e6:.1f} MB), {archive.missing} files missing and {archive.failed} broken"
                  + (" (their candles came over REST)" if broken and archive.not_fetched == 0 else "")
                  + (f", {archive.not_fetched} ranges not fetched (not in the archive)" if archive.not_fetched else "")
                  + (f", {archive.store_failures} files not stored" if archive.store_failures else ""),
                  file=sys.stderr)  # fmt: skip
            failed = bool(archive.not_fetched or archive.store_failures)
        failed = failed or bool(rest.failures)
        print(f"backfill: {'REST: ' if archive is not None else ''}{rest.candles} candles in {rest.pages} pages, "
              f"{rest.exchange_gap_candles} in exchange gaps, {rest.failures} failed requests"
              + (" (run it again to resume)" if failed else ""),
              file=sys.stderr)  # fmt: skip
    if done.signal is not None and stats is None:
        unstored = f", {stored.pending} downloaded could not be stored" if stored.pending else ""
        print(f"{where}: stopped by {done.signal.name}: {stored.written} candles stored and kept{unstored}; "
              "run the same command again to fetch the rest", file=sys.stderr)  # fmt: skip
    if stored.pending:
        return EXIT_FAILURE
    if done.signal is not None:
        return signal_exit_status(done.signal)
    return EXIT_FAILURE if failed else 0


class _ProgressBar:
    """A tqdm bar of candles on stderr (its total is what the plan covers, so tqdm shows an ETA), with the
    archive files and REST pages beside it; made on the first report (tqdm is imported only for a terminal)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def __call__(self, progress: HistoryProgress) -> None:
        # Candles past the total (an open end's tail, which the exchange's clock reached meanwhile) raise it.
        total = max(progress.total_candles, progress.candles) if progress.total_candles else None
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="candle", unit_scale=True, desc="backfill", file=sys.stderr)
        elif total is not None and total != self._bar.total:
            self._bar.total = total
        self._bar.update(progress.candles - self._bar.n)
        postfix = {"pages": progress.pages}
        if progress.total_files:
            postfix["files"] = f"{progress.files}/{progress.total_files}"  # type: ignore[assignment]
        self._bar.set_postfix(postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


BACKFILL = Command(
    "backfill",
    "download history over REST into the store (resumable: only what is missing is fetched)",
    _backfill_arguments,
    _run_backfill,
    log_level="WARNING",
)


# --- status -----------------------------------------------------------------------------------


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _data_argument(parser)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a table: the clock, whether a process writes the "
                             "store, and per series its counts, times (ISO-8601 UTC and epoch ms) and lag")  # fmt: skip


def _run_status(args: argparse.Namespace) -> int:
    from ..store import status
    from ..store.lock import lock_holder

    now = status.now_ms()
    rows = status.store_status(args.data_dir, now=now)
    if args.json:
        print(json.dumps(status_report(args.data_dir, rows, now, lock_holder(args.data_dir))))
    else:
        print(_table(rows, now))
        notes = _notes(rows)
        if notes:
            print(notes)
    return 1 if any(r.missing for r in rows) else 0


def status_report(data_dir: Path, rows: Sequence[SeriesStatus], now: int, holder: LockHolder | None) -> dict[str, Any]:
    """``status --json``: the store, the clock ``now`` (ms) its lags are taken at, whether a process holds the
    store's lock (``holder``: a recorder, a backfill, a compaction…) and which, and a dict per series."""
    from ..core.timefmt import iso_ms

    return {
        "data": str(data_dir),
        "now": iso_ms(now),
        "now_ms": now,
        "recorder_running": holder is not None,
        "recorder_pid": None if holder is None else holder.pid,
        "series": [r.as_dict(now) for r in rows],
    }


def _notes(rows: Sequence[SeriesStatus]) -> str:
    """What the table's counts do not say: the quarantined files, rows that cannot be real candles, and the
    series that ended."""
    lines = []
    if any(r.quarantined for r in rows):
        lines.append("quarantined files (their candles count as missing until record or backfill fetches them):")
        lines += [f"  {r.series}: {path}" for r in rows for path in r.quarantined]
    if any(r.beyond_clock for r in rows):
        lines.append("rows beyond the clock (not real closed candles; neither counted nor missing):")
        lines += [f"  {r.series}: {r.beyond_clock} from {_when(r.beyond_clock_first)}" for r in rows if r.beyond_clock]
    if any(r.ended is not None for r in rows):
        lines.append("ended (a universe stopped recording them: delisted or halted; not missing):")
        lines += [f"  {r.series}: {_when(r.ended)} ({r.ended_why})" for r in rows if r.ended is not None]
    return "\n".join(lines)


def _when(ms: int | None) -> str:
    from datetime import UTC, datetime

    if ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, ValueError, OSError):  # beyond what a datetime holds: the number says it
        return f"{ms} ms"


def _lag(ms: int | None) -> str:
    """A lag for the table, to the unit that matters: ``45s``, ``12m05s``, ``5h12m``, ``3d04h``."""
    if ms is None:
        return "-"
    seconds = ms // 1000
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{minutes}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{days}d{hours % 24:02d}h"


def _table(rows: Sequence[SeriesStatus], now: int) -> str:
    # The lag beside the last candle it is measured from; the counts keep their places at the end.
    head = ("series", "first", "last", "lag", "rows", "missing", "exchange gaps", "files")
    body = [(str(r.series), _when(r.first), _when(r.last), _lag(r.lag_ms(now)), str(r.rows), str(r.missing),
             str(r.exchange_gaps), str(r.files)) for r in rows]  # fmt: skip
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [head, *body]
    ]
    return "\n".join(lines) if body else "no series stored"


STATUS = Command(
    "status", "what the store holds per series; exit 1 if candles are missing", _status_arguments, _run_status
)


# --- verify -----------------------------------------------------------------------------------


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    _data_argument(parser)
    parser.add_argument("--endpoints", type=Path, help="JSON endpoints map (default: Binance)")
    parser.add_argument("--since", type=argument_type(parse_time), metavar="TIME", help="check from here on only")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object when done instead of a report per series: counts, and the "
                             "open times (ISO-8601 UTC) of at most 1000 missing, extra and different candles "
                             "each")  # fmt: skip


def _run_verify(args: argparse.Namespace) -> int:
    import trio

    from ..pipeline.verify import verify

    markets = apply_endpoints(load_endpoints(args.endpoints)) if args.endpoints else dict(MARKETS)
    on_series = None if args.json else _print_comparison
    results = trio.run(functools.partial(verify, args.data_dir, markets, args.since, on_series=on_series))
    if args.json:
        print(json.dumps(verify_report(args.data_dir, args.since, results)))
    return 1 if any(r.problems for r in results) else 0


def verify_report(data_dir: Path, since: int | None, results: Sequence[SeriesComparison]) -> dict[str, Any]:
    """``verify --json``: the store, where the check started (``since``, ISO-8601 UTC; ``null``: each
    series' first candle), the candles missing, extra or different in all (``problems``), and a dict per
    series (:meth:`~trio_klines.pipeline.verify.SeriesComparison.as_dict`)."""
    from ..core.timefmt import iso_ms

    return {
        "data": str(data_dir),
        "since": None if since is None else iso_ms(since),
        "problems": sum(r.problems for r in results),
        "series": [r.as_dict() for r in results],
    }


def _print_comparison(result: SeriesComparison) -> None:
    from ..core.timefmt import iso_ms

    print(f"{result.series}: {result.stored} stored, {result.on_exchange} on the exchange; "
          f"{len(result.missing)} missing, {len(result.extra)} extra, {len(result.different)} different")  # fmt: skip
    for label, times in (("missing", result.missing), ("extra", result.extra), ("different", result.different)):
        for t in times[:5]:
            print(f"  {label}: {iso_ms(t)}")


VERIFY = Command(
    "verify",
    "re-read the exchange over REST and report every missing, extra or different candle (exit 1 on any)",
    _verify_arguments,
    _run_verify,
)


# --- compact ----------------------------------------------------------------------------------


def _run_compact(args: argparse.Namespace) -> int:
    from ..store.dataset import compact

    summary = compact(args.data_dir)
    print(summary)
    return 1 if summary.errors else 0


COMPACT = Command(
    "compact",
    "seal the rows waiting in landing files into the series' files now (and merge older overlapping files)",
    _data_argument,
    _run_compact,
)
