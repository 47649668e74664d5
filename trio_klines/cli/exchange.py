"""``python -m trio_klines exchange``: the fake Binance exchange as a process."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING

from ..config import parse_time
from .common import EXIT_FAILURE, STOP_SIGNALS, Command, argument_type, bounded_int, positive_float, signal_exit_status

if TYPE_CHECKING:
    from ..testing import ExchangeConfig, Faults

log = logging.getLogger("trio_klines.cli")


# --- exchange -------------------------------------------------------------------------------


def _parse_faults(text: str) -> Faults:
    """``--faults``: the fault syntax of :func:`trio_klines.testing.parse_faults`, imported when used."""
    from ..testing import parse_faults

    return parse_faults(text)


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


def _run_exchange(args: argparse.Namespace) -> int:
    import trio

    from ..testing import ExchangeConfig, Faults

    config = ExchangeConfig(
        seed=args.seed,
        speed=args.speed,
        start=args.start,
        faults=args.faults or Faults(),
        symbols=args.symbols,
        host=args.host,
        port=args.port,
        ping_interval=args.ping_interval,
    )
    try:
        stopped_by = trio.run(_serve_exchange, config)
    except OSError as exc:
        print(f"{args.command_prog}: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return signal_exit_status(stopped_by)


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
            stopped_by = signal.Signals(await anext(signals))
            log.info("received %s, shutting down", stopped_by.name)
        # The last line on stdout: what the exchange did (faults fired, REST statuses), for test oracles.
        with contextlib.suppress(BrokenPipeError):
            print(json.dumps({"stats": dict(sorted(exchange.stats.items()))}), flush=True)
    return stopped_by


def _exchange_epilog() -> str:
    from ..testing import FAULT_KEYS

    width = max(map(len, FAULT_KEYS))
    return "fault keys:\n" + "\n".join(f"  {key:<{width}}  {text}" for key, text in FAULT_KEYS.items())


EXCHANGE = Command(
    "exchange",
    "run the fake Binance exchange on loopback (prints its endpoints map as the first line)",
    _exchange_arguments,
    _run_exchange,
    _exchange_epilog,
)
