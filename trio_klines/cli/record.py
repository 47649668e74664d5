"""``record`` and ``demo``: the recorder as a service, and a one-command tour against the fake exchange."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..config import (
    DEFAULT_DATA_DIR,
    HISTORY_SOURCES,
    TRANSPORTS,
    RecorderConfig,
    load_endpoints,
    load_toml,
    merge,
    parse_time,
)
from ..core.decimals import NUMBERS
from .common import (
    EXIT_FAILURE,
    STOP_SIGNALS,
    Command,
    SignalStop,
    argument_type,
    check_data_dir,
    positive_float,
    signal_exit_status,
)

if TYPE_CHECKING:
    import trio

    from ..ops.notify import Notifier
    from ..recorder import Recorder, RecorderStats

log = logging.getLogger("trio_klines.cli")

#: The original article's set, recorded by ``demo``.
DEMO_SERIES = ("usdt_futures:1m:BTCUSDT,ETHUSDT", "coin_futures:3m:BTCUSD_PERP,ETHUSD_PERP", "spot:1m:BTCUSDT,BNBUSDT")
DEMO_DATA_DIR = Path("demo-data")


def add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``record`` and ``backfill``: what to record, where, against which endpoints."""
    parser.add_argument(
        "--stream",
        action="append",
        dest="streams",
        metavar="MARKET:INTERVAL[,…]:SYM[,SYM…]",
        help="series: a market, intervals and symbols, e.g. usdt_futures:1m,1h:BTCUSDT,ETHUSDT; or every symbol "
        "the market trades: usdt_futures:1m:* (all), spot:1m:*USDT (quote asset USDT), "
        "'usdt_futures:1h:*?contract=perpetual&exclude=BTCDOMUSDT' (record only; repeatable)",
    )
    parser.add_argument("--config", type=Path, help="TOML file with data, streams, endpoints, timeouts, flush settings")
    parser.add_argument("--data", type=Path, dest="data_dir", help=f"data directory (default ./{DEFAULT_DATA_DIR})")
    parser.add_argument(
        "--endpoints", type=Path, help="JSON endpoints map, as printed by `python -m trio_klines exchange`"
    )
    parser.add_argument(
        "--numbers",
        choices=NUMBERS,
        help="prices and volumes as float (float64, the default for a new data directory) or exact (decimals, "
        "digit for digit as Binance sends them); recorded in the data directory, which never mixes both",
    )


def build_config(args: argparse.Namespace, **extra: Any) -> RecorderConfig:
    """The :class:`RecorderConfig` from ``--config`` overlaid with the flags.

    Raises ``ConfigError`` for a bad setting, and for a data directory that cannot be written.
    """
    base = load_toml(args.config) if args.config else {}
    flags = {"streams": args.streams, "data_dir": args.data_dir, "numbers": args.numbers, **extra}
    if args.endpoints:
        flags["endpoints"] = load_endpoints(args.endpoints)
    config = RecorderConfig.build(**merge(base, flags))
    check_data_dir(config.data_dir, write=True)
    return config


def _record_arguments(parser: argparse.ArgumentParser) -> None:
    add_recording_arguments(parser)
    parser.add_argument(
        "--receive-timeout", type=positive_float, metavar="SECONDS", help="reconnect after this silence (default 60)"
    )
    parser.add_argument(
        "--flush-seconds",
        type=positive_float,
        metavar="SECONDS",
        help="longest a candle waits to be written (default 1)",
    )
    parser.add_argument(
        "--seal-seconds",
        type=positive_float,
        metavar="SECONDS",
        help="how long appends wait before they are sealed into the files raw Parquet readers see (default 600)",
    )
    parser.add_argument(
        "--since",
        type=argument_type(parse_time),
        metavar="TIME",
        help="backfill each series from this ISO date-time or epoch ms: on the first run, and on any later run "
        "whose stored record starts after it (default: start at the first live candle)",
    )
    parser.add_argument(
        "--source",
        choices=HISTORY_SOURCES,
        dest="history_source",
        help="where the start-up catch-up (--since) takes history from: auto (default: Binance's data archive, "
        "checksums verified, then REST for the unpublished rest), archive, or rest",
    )
    parser.add_argument(
        "--universe-refresh",
        type=positive_float,
        metavar="SECONDS",
        help="how often universe streams (MARKET:INTERVAL:*) re-read the market's listing to follow listings and "
        "delistings (default 180)",
    )
    parser.add_argument("--no-backfill", action="store_true", help="do not fill holes from REST (gaps are only logged)")
    parser.add_argument(
        "--no-check-symbols",
        action="store_true",
        help="do not check the symbols against the exchange's exchangeInfo at start-up",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        help="WebSocket library: websockets (default: Sans-I/O over trio, the fastest) or trio-websocket",
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and a freshness /healthz here, e.g. 127.0.0.1:9464 (default: off)",
    )
    parser.add_argument(
        "--health-grace",
        type=positive_float,
        metavar="SECONDS",
        help="/healthz calls a series stale when its last candle closed more than two intervals plus this ago "
        "(default 30)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no line per candle; a summary every --summary-every seconds"
    )
    parser.add_argument("--summary-every", type=positive_float, default=60.0, metavar="SECONDS", help="(default 60)")


def record_config(args: argparse.Namespace) -> RecorderConfig:
    """``record``'s config: :func:`build_config` with the recording flags. Raises ``ConfigError``."""
    extra: dict[str, Any] = {"receive_timeout": args.receive_timeout, "flush_seconds": args.flush_seconds,
                             "seal_seconds": args.seal_seconds, "since": args.since,
                             "history_source": args.history_source,
                             "transport": args.transport, "universe_refresh": args.universe_refresh,
                             "metrics": args.metrics, "health_grace": args.health_grace}  # fmt: skip
    if args.no_backfill:
        extra["backfill"] = False
    if args.no_check_symbols:
        extra["check_symbols"] = False
    return build_config(args, **extra)


def _run_record(args: argparse.Namespace) -> int:
    import trio

    from ..ops.notify import Notifier

    config = record_config(args)
    notifier = Notifier.from_env()  # a bad NOTIFY_SOCKET is a ConfigError, like any setting
    if args.quiet:
        logging.getLogger("trio_klines.record").setLevel(logging.WARNING)
    reload = functools.partial(record_config, args) if args.config else None
    stopped = trio.run(functools.partial(record_until_signalled, config, args.quiet, args.summary_every,
                                         notifier=notifier, reload=reload))  # fmt: skip
    return _stop_status(args.command_prog, config, stopped)


def _stop_status(where: str, config: RecorderConfig, stopped: RecordingStopped) -> int:
    """The exit status of a recording that ``stopped`` so, after a line on what a stop left unwritten."""
    pending = stopped.stats.pending
    if pending:
        why = "a second signal cut the stop short" if stopped.forced else "the final flush failed"
        then = "the next start fetches them again over REST" if config.backfill else "--no-backfill: they are lost"
        print(f"{where}: error: {pending} candles received were not written ({why}); {then}", file=sys.stderr)
        return EXIT_FAILURE
    if stopped.forced:
        print(f"{where}: a second signal cut the stop short; every candle received was written", file=sys.stderr)
    return 0 if stopped.signal is None else signal_exit_status(stopped.signal)


class RecordingStopped(NamedTuple):
    """How :func:`record_until_signalled` ended: the first signal, whether a later one forced the stop,
    and the recorder's counters at the end (``stats.pending``: candles received but not written)."""

    signal: signal.Signals | None
    forced: bool
    stats: RecorderStats


async def record_until_signalled(
    config: RecorderConfig,
    quiet: bool,
    summary_every: float,
    *,
    notifier: Notifier | None = None,
    reload: Callable[[], RecorderConfig] | None = None,
) -> RecordingStopped:
    """Record until SIGINT or SIGTERM, then flush, seal and return; a second signal cuts the stop short.

    A first signal that arrives while the recorder starts stops it as soon as it has started. SIGHUP
    calls ``reload`` for a new config and applies its series (:meth:`Recorder.reconfigure`); a config that
    cannot be read or used is refused with a logged error, and the running one kept. ``notifier`` tells
    systemd the recorder is ready, reloading and stopping, and feeds its watchdog.

    Raises:
      KlinesError: what :class:`~trio_klines.recorder.Recorder` raises when it cannot start or go on
        (for example :class:`~trio_klines.errors.StoreLocked`: another process writes the store), as
        itself, never in an exception group.

    If cancelled, the recorder is cancelled as on a second signal: it does not wait for the flush.
    """
    import trio

    from ..pipeline.supervision import single_error
    from ..recorder import Recorder

    rec = Recorder(config)
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals, trio.open_signal_receiver(signal.SIGHUP) as hups, \
            single_error():  # fmt: skip
        stop = SignalStop(cancel_after=2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop.watch, signals, "flushing and stopping", "stopping without waiting for the flush")
            if notifier is not None:
                await nursery.start(notifier.run_watchdog)  # systemd's watchdog runs during start-up too
            with stop.scope:
                async with rec:
                    # Said once the signal handlers are installed and the connections started: what a
                    # supervisor (or a test) waits for before it may stop the recorder cleanly.
                    log.info("ready: recording %d series; SIGINT or SIGTERM stops, SIGHUP reloads", len(rec.series))
                    nursery.start_soon(_reloads, rec, hups, reload, notifier, stop.requested)
                    if notifier is not None:
                        await notifier.ready(f"recording {len(rec.series)} series")
                    if quiet or notifier is not None:
                        nursery.start_soon(_summaries, rec, summary_every, quiet, notifier)
                    await stop.requested.wait()
                    if notifier is not None:
                        await notifier.stopping("flushing and stopping")
            log.info("stopped: %s", rec.stats().summary())
            nursery.cancel_scope.cancel()
    return RecordingStopped(stop.first, stop.forced, rec.stats())


async def _summaries(rec: Recorder, every: float, log_them: bool, notifier: Notifier | None) -> None:
    """The recorder's summary every ``every`` seconds: logged, and as systemd's status line."""
    import trio

    while True:
        await trio.sleep(every)
        summary = rec.stats().summary()
        if log_them:
            logging.getLogger("trio_klines.summary").info("%s", summary)
        if notifier is not None:
            await notifier.status(summary)


async def _reloads(
    rec: Recorder,
    hups: AsyncIterator[int],
    reload: Callable[[], RecorderConfig] | None,
    notifier: Notifier | None,
    stopping: trio.Event,
) -> None:
    """On each SIGHUP: read the config again and apply its series, or refuse it and keep the running one."""
    import trio

    from ..errors import KlinesError

    async for _ in hups:
        if stopping.is_set():
            log.warning("SIGHUP: the recorder is stopping; nothing reloaded")
            continue
        if reload is None:
            log.warning("SIGHUP: nothing to reload (no --config file); still recording %d series", len(rec.series))
            continue
        if notifier is not None:
            await notifier.reloading("reloading the configuration")
        try:
            new = await trio.to_thread.run_sync(reload)  # reads the file, checks the data directory
            done = await rec.reconfigure(new)
        except (KlinesError, OSError) as exc:
            log.error("SIGHUP: config refused, still recording %d series as before: %s", len(rec.series), exc)
        else:
            log.info("SIGHUP: config reloaded: %s; recording %d series", done.summary(), len(rec.series))
        if notifier is not None:
            await notifier.ready(f"recording {len(rec.series)} series")


RECORD = Command(
    "record",
    "record closed candles live into Parquet, filling holes from REST",
    _record_arguments,
    _run_record,
    log_level="INFO",
)


# --- demo -------------------------------------------------------------------------------------


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="how long to record (default 10)")
    parser.add_argument(
        "--data", type=Path, dest="data_dir", default=DEMO_DATA_DIR, help=f"(default ./{DEMO_DATA_DIR})"
    )
    parser.add_argument(
        "--speed", type=positive_float, default=600.0, help="exchange speed-up (default 600: a 1m candle every 0.1 s)"
    )


def _run_demo(args: argparse.Namespace) -> int:
    import trio

    check_data_dir(args.data_dir, write=True)
    stopped_by = trio.run(_demo, args.data_dir, args.seconds, args.speed)
    print_stored(args.data_dir)
    return 0 if stopped_by is None else signal_exit_status(stopped_by)


async def _demo(data_dir: Path, seconds: float, speed: float) -> signal.Signals | None:
    """Record for ``seconds``, or until SIGINT or SIGTERM (returned; the recording is flushed either way)."""
    import trio

    from ..recorder import Recorder
    from ..testing import open_exchange

    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        stop = SignalStop(cancel_after=2)
        async with open_exchange(seed=1, speed=speed) as exchange, trio.open_nursery() as nursery:
            nursery.start_soon(stop.watch, signals, "flushing and stopping", "stopping without waiting for the flush")
            config = RecorderConfig.build(
                streams=DEMO_SERIES, endpoints=exchange.endpoints, data_dir=data_dir, flush_seconds=0.25
            )
            logging.getLogger("trio_klines.record").setLevel(logging.WARNING)
            log.info(
                "demo: recording %s for %gs at %g× speed into %s", ", ".join(DEMO_SERIES), seconds, speed, data_dir
            )
            rec = Recorder(config)
            with stop.scope:
                async with rec:
                    with trio.move_on_after(seconds):
                        await stop.requested.wait()
            log.info("demo: %s", rec.stats().summary())
            nursery.cancel_scope.cancel()
    return stop.first


def print_stored(data_dir: Path) -> None:
    """What the store holds, per series: rows, first and last candle, and the last three rows."""
    import pandas as pd

    from ..store.coverage import coverage
    from ..store.dataset import load

    covered = coverage(data_dir)
    if not covered:
        print(f"{data_dir}: no candles stored")
        return
    for key, cov in sorted(covered.items()):
        frame = load(data_dir, key.market, key.symbol, key.interval)
        print(f"\n{key}: {len(frame)} candles, {frame.index[0]} … {frame.index[-1]}, {cov.missing} missing")
        with pd.option_context("display.width", 160, "display.max_columns", 12):
            print(frame.tail(3).to_string())


DEMO = Command(
    "demo",
    "record the original article's series from an in-process fake exchange, then show what was stored",
    _demo_arguments,
    _run_demo,
    log_level="INFO",
)
