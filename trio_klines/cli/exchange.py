"""``python -m trio_klines exchange``: the fake Binance exchange as a process.

Its universe may change during the run: ``--listing``, ``--delisting`` and ``--halt`` schedule events in
exchange time, relative to its start (``+20s``) or absolute (an ISO date-time or epoch ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..config import parse_time
from ..errors import ConfigError
from .common import EXIT_FAILURE, STOP_SIGNALS, Command, argument_type, bounded_int, positive_float, signal_exit_status

if TYPE_CHECKING:
    from ..testing import ExchangeConfig, Faults
    from ..testing.schedule import ParsedMoment

#: What a scheduled event becomes once parsed: the ``market:SYMBOL`` key and its moment (a pair for a halt).
_Event = tuple[str, "ParsedMoment | tuple[ParsedMoment, ParsedMoment]"]

log = logging.getLogger("trio_klines.cli")


# --- exchange -------------------------------------------------------------------------------


def _parse_faults(text: str) -> Faults:
    """``--faults``: the fault syntax of :func:`trio_klines.testing.parse_faults`, imported when used."""
    from ..testing import parse_faults

    return parse_faults(text)


def _event_type(kind: str) -> Callable[[str], object]:
    """``--listing``/``--delisting``/``--halt``: :func:`trio_klines.testing.schedule.parse_event_flag`, imported
    when used."""

    def parse(text: str) -> object:
        from ..testing.schedule import parse_event_flag

        return parse_event_flag(text, kind)  # type: ignore[arg-type]

    parse.__name__ = kind
    return argument_type(parse)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def _exchange_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=bounded_int(0, 65535), default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--seed", type=bounded_int(-(2**63), 2**63 - 1), default=0, help="history seed (default 0)")
    parser.add_argument(
        "--speed", type=positive_float, default=1.0, help="exchange seconds per wall-clock second (default 1)"
    )
    parser.add_argument(
        "--start",
        type=argument_type(parse_time),
        default=None,
        help="exchange time at start-up: epoch ms or ISO date/time (default: now)",
    )
    parser.add_argument(
        "--faults",
        type=argument_type(_parse_faults),
        default=None,
        metavar="KEY=VALUE,…",
        help="faults to inject, for example drop=0.01,stall=0.02,stall_s=1 (keys below)",
    )
    parser.add_argument(
        "--symbols", type=bounded_int(0, 9999), default=0, help="generated symbols to add per market (default 0)"
    )
    parser.add_argument(
        "--ping-interval",
        type=positive_float,
        default=None,
        help="seconds between server pings (default: 20 / speed, at least 0.05)",
    )
    schedule = parser.add_argument_group("universe schedule (repeat each flag; times below)")
    schedule.add_argument(
        "--listing",
        type=_event_type("listing"),
        action="append",
        default=[],
        metavar="MARKET:SYMBOL@TIME",
        help="list SYMBOL at TIME: it trades from then on (e.g. usdt_futures:SYM0003USDT@+20s)",
    )
    schedule.add_argument(
        "--delisting",
        type=_event_type("delisting"),
        action="append",
        default=[],
        metavar="MARKET:SYMBOL@TIME",
        help="delist SYMBOL at TIME: its streams fall silent (e.g. usdt_futures:SYM0002USDT@+40s)",
    )
    schedule.add_argument(
        "--halt",
        type=_event_type("halt"),
        action="append",
        default=[],
        metavar="MARKET:SYMBOL@FROM..TO",
        help="halt SYMBOL's trading from FROM to TO (e.g. spot:SYM0001USDT@+10s..+30s)",
    )
    schedule.add_argument(
        "--pending-lead",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="exchange seconds before its listing a futures symbol shows as PENDING_TRADING (default 3600)",
    )


def _run_exchange(args: argparse.Namespace) -> int:
    import trio

    from ..testing import ExchangeConfig, Faults

    halts: dict[str, list[object]] = {}
    for key, span in args.halt:
        halts.setdefault(key, []).append(span)
    config = ExchangeConfig(
        seed=args.seed,
        speed=args.speed,
        start=args.start,
        faults=args.faults or Faults(),
        symbols=args.symbols,
        host=args.host,
        port=args.port,
        ping_interval=args.ping_interval,
        listings=_once(args.listing, "--listing"),
        delistings=_once(args.delisting, "--delisting"),
        halts=halts,
        pending_lead=args.pending_lead,
    )
    try:
        stopped_by = trio.run(_serve_exchange, config)
    except OSError as exc:
        print(f"{args.command_prog}: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return signal_exit_status(stopped_by)


def _once(events: list[_Event], flag: str) -> dict[str, object]:
    """``{"market:SYMBOL": moment}`` of a flag's events; :class:`ConfigError` for a symbol given twice."""
    out: dict[str, object] = {}
    for key, moment in events:
        if key in out:
            raise ConfigError(f"{flag}: {key} is given twice")
        out[key] = moment
    return out


async def _serve_exchange(config: ExchangeConfig) -> signal.Signals:
    """Serve until SIGINT or SIGTERM (returned), then print the exchange's figures as the last line.

    Raises:
      OSError: the server cannot listen on ``config.host``/``config.port``.
    """
    import trio

    from ..testing import open_exchange

    # Catch the signals before announcing the endpoints: whoever reads the first line may stop us at once.
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with open_exchange(config) as exchange:
            try:
                print(json.dumps(exchange.endpoints), flush=True)
            except BrokenPipeError:
                log.warning("stdout is closed; serving anyway")
            print(
                f"fake exchange on {exchange.endpoints['spot']['rest'].rsplit('/', 1)[0]}, seed {config.seed}, "
                f"speed {config.speed:g}; stop with Ctrl-C or SIGTERM",
                file=sys.stderr,
                flush=True,
            )
            for line in exchange.universe.describe_schedule():
                print(f"scheduled: {line}", file=sys.stderr, flush=True)
            stopped_by = signal.Signals(await anext(signals))
            log.info("received %s, shutting down", stopped_by.name)
        # The last line on stdout: what the exchange did (faults fired, REST statuses), for test oracles.
        with contextlib.suppress(BrokenPipeError):
            print(json.dumps({"stats": dict(sorted(exchange.stats.items()))}), flush=True)
    return stopped_by


def _exchange_epilog() -> str:
    from ..testing import FAULT_KEYS

    width = max(map(len, FAULT_KEYS))
    faults = "fault keys:\n" + "\n".join(f"  {key:<{width}}  {text}" for key, text in FAULT_KEYS.items())
    return f"{faults}\n\n{_SCHEDULE_HELP}"


_SCHEDULE_HELP = """\
universe schedule:
  TIME is exchange time (--speed times the wall clock): +20s, +1m30s, +250ms, -1h (relative to the
  exchange's start, --start), or absolute: an ISO date-time (UTC unless it says otherwise) or epoch ms.
  SYMBOL is one of the exchange's symbols (defaults, or SYM0001USDT / SYM0001USD_PERP... with --symbols);
  a listing moves its listing to TIME. A symbol trades from its listing to its delisting, outside its
  halts; its kline streams send nothing otherwise (subscriptions are accepted and stay silent), and the
  candle open when trading stops for good closes early. exchangeInfo shows it as:
    before listing   spot: absent; futures: absent, PENDING_TRADING from --pending-lead before
    trading          TRADING
    halted           spot HALT; futures PENDING_TRADING
    delisted         spot BREAK, USD-M SETTLING, COIN-M DELIVERED (contractStatus); still listed
  The resolved schedule is printed on stderr at start-up."""


EXCHANGE = Command(
    "exchange",
    "run the fake Binance exchange on loopback (prints its endpoints map as the first line)",
    _exchange_arguments,
    _run_exchange,
    _exchange_epilog,
)
