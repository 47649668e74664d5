"""Commands on a stored dataset: ``backfill`` (download history), ``status``, ``verify``, ``compact``."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..config import DEFAULT_DATA_DIR, RecorderConfig, WriterSettings, load_endpoints
from ..core.markets import MARKETS, Market, Series, apply_endpoints, next_open_time
from ..core.paging import catch_up_plan, pages_needed
from ..core.parse import Candle
from ..errors import ConfigError
from ..net.rest import new_http_client, rest_clients
from ..pipeline.backfill import Backfiller
from ..pipeline.writer import run_writer
from ..store.ledger import ExchangeGapLedger
from ..store.status import SeriesStatus, store_status
from .common import Command, argument_type, parse_instant
from .record import add_recording_arguments, build_config

if TYPE_CHECKING:
    from ..store.coverage import SeriesCoverage

log = logging.getLogger("trio_klines.cli")


def _data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, dest="data_dir", default=DEFAULT_DATA_DIR, help="data directory (default ./data)"
    )


# --- backfill ---------------------------------------------------------------------------------


def _backfill_arguments(parser: argparse.ArgumentParser) -> None:
    add_recording_arguments(parser)
    parser.add_argument("--since", type=argument_type(parse_instant), required=True, metavar="TIME",
                        help="ISO date-time or epoch ms of the first candle wanted")  # fmt: skip
    parser.add_argument("--until", type=argument_type(parse_instant), metavar="TIME",
                        help="end, exclusive (default: the exchange's now)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_backfill(args: argparse.Namespace) -> int:
    config = build_config(args, since=args.since)
    if args.until is not None and args.until <= args.since:
        raise ConfigError(f"--until ({args.until}) must come after --since ({args.since})")
    return trio.run(download, config, args.since, args.until, not args.no_progress)


async def download(config: RecorderConfig, since: int, until: int | None, progress: bool = True) -> int:
    """Fetch what the store lacks of ``config.streams`` in ``[since, until)``. Resumable and idempotent:
    what is stored (or known to be an exchange gap) is not fetched again. Returns the exit status."""
    from ..store.coverage import coverage
    from ..store.dataset import Store

    with Store(config.data_dir) as store:
        held = await trio.to_thread.run_sync(coverage, config.data_dir, list(config.streams))
        todo = {s: _plan(held.get(s), s, since, until) for s in config.streams}
        total_pages = sum(pages_needed(s.interval, lo, hi) for s, r in todo.items() for lo, hi in r if hi)
        send, receive = trio.open_memory_channel[Sequence[Candle]](config.channel_size)
        async with new_http_client() as http, trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_writer(receive, store, settings=WriterSettings(flush_seconds=1.0)))
            markets = sorted({s.market for s in config.streams})
            clients = rest_clients([config.market(m) for m in markets], http)
            backfiller = Backfiller(clients, send.clone(), ExchangeGapLedger(config.data_dir), workers=4)
            async with send, trio.open_nursery() as fetchers:
                fetchers.start_soon(backfiller.run)
                for s, ranges in todo.items():
                    for lo, hi in ranges:
                        backfiller.request(s, lo, hi)
                await _watch(backfiller, total_pages, progress)
                fetchers.cancel_scope.cancel()  # the backfiller closes its channel; the writer drains, returns
    stats = backfiller.stats
    print(
        f"backfill: {stats.candles} candles in {stats.pages} pages, {stats.exchange_gap_candles} in exchange gaps, "
        f"{stats.failures} failed requests" + (" (run it again to resume)" if stats.failures else ""),
        file=sys.stderr,
    )
    return 1 if stats.failures else 0


def _plan(held: SeriesCoverage | None, s: Series, since: int, until: int | None) -> list[tuple[int, int | None]]:
    """Parts of ``[since, until)`` the store does not hold (``None`` end: up to the exchange's now)."""
    if held is None:
        return catch_up_plan(s.interval, None, None, (), since, until)
    return catch_up_plan(s.interval, held.first, held.last, held.gaps, since, until)


async def _watch(backfiller: Backfiller, total_pages: int, progress: bool) -> None:
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total_pages or None, unit="page", desc="backfill", file=sys.stderr)
    try:
        while True:
            with trio.move_on_after(0.5):
                await backfiller.wait_idle()
            if bar is not None:
                bar.update(backfiller.stats.pages - bar.n)
                bar.set_postfix(rows=backfiller.stats.candles)
            if backfiller.stats.in_flight == 0:
                return
    finally:
        if bar is not None:
            bar.close()


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
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _run_status(args: argparse.Namespace) -> int:
    rows = store_status(args.data_dir)
    if args.json:
        print(json.dumps({"data": str(args.data_dir), "series": [r.as_dict() for r in rows]}))
    else:
        print(_table(rows))
    return 1 if any(r.missing for r in rows) else 0


def _when(ms: int | None) -> str:
    from datetime import UTC, datetime

    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _table(rows: Sequence[SeriesStatus]) -> str:
    head = ("series", "first", "last", "rows", "missing", "exchange gaps", "files")
    body = [(str(r.series), _when(r.first), _when(r.last), str(r.rows), str(r.missing), str(r.exchange_gaps),
             str(r.files)) for r in rows]  # fmt: skip
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
    parser.add_argument("--since", type=argument_type(parse_instant), metavar="TIME", help="check from here on only")


def _run_verify(args: argparse.Namespace) -> int:
    markets = apply_endpoints(load_endpoints(args.endpoints)) if args.endpoints else dict(MARKETS)
    return trio.run(verify, args.data_dir, markets, args.since)


async def verify(root: Path, markets: Mapping[str, Market], since: int | None = None, out: Any = None) -> int:
    """Compare every stored candle with the exchange over REST; print each difference. Exit status."""
    from ..store.coverage import coverage
    from ..store.dataset import load

    out = out or sys.stdout
    stored = await trio.to_thread.run_sync(coverage, root)
    bad = 0
    async with new_http_client() as http:
        clients = rest_clients([markets[m] for m in sorted({s.market for s in stored})], http)
        for key, cov in stored.items():
            if cov.first is None:
                continue
            start = max(cov.first, since or 0)
            end = next_open_time(key.interval, cov.last)
            frame = await trio.to_thread.run_sync(
                functools.partial(load, root, key.market, key.symbol, key.interval, start=start)
            )
            mine = {
                int(t.value // 10**6): row
                for t, row in zip(frame["candle_begin_time"], frame.itertuples(index=False), strict=True)
            }
            client = clients[key.market]
            now = await client.server_time()
            theirs: dict[int, Candle] = {}
            async for page in client.pages(key.symbol, key.interval, start, end, closed_before=now):
                theirs.update((c.open_time, c) for c in page)
            missing = sorted(set(theirs) - set(mine))
            extra = sorted(set(mine) - set(theirs))
            different = sorted(t for t in set(mine) & set(theirs) if not _same(mine[t], theirs[t]))
            bad += len(missing) + len(extra) + len(different)
            print(f"{key}: {len(mine)} stored, {len(theirs)} on the exchange; {len(missing)} missing, "
                  f"{len(extra)} extra, {len(different)} different", file=out)  # fmt: skip
            for label, times in (("missing", missing), ("extra", extra), ("different", different)):
                for t in times[:5]:
                    print(f"  {label}: {_when(t)} ({t})", file=out)
    return 1 if bad else 0


def _same(row: Any, candle: Candle) -> bool:
    return (row.open, row.high, row.low, row.close, row.volume, row.quote_volume, row.trade_num,
            row.taker_buy_base_asset_volume, row.taker_buy_quote_asset_volume) == (
        candle.open, candle.high, candle.low, candle.close, candle.volume, candle.quote_volume, candle.trade_num,
        candle.taker_buy_base_asset_volume, candle.taker_buy_quote_asset_volume)  # fmt: skip


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


COMPACT = Command("compact", "merge each period's files into one sorted, unique file", _data_argument, _run_compact)
