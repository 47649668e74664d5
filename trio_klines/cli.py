"""The command line: ``python -m trio_klines <command> [options]``.

A thin layer: each command parses its flags into the library's config objects and calls ``trio.run``.
Commands are listed in :data:`COMMANDS`; adding one is adding a :class:`Command` with a function that
declares its arguments and one that runs it and returns the exit status. Bad arguments exit with
status 2 and a message naming the problem (argparse's convention).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .testing import ExchangeConfig

__all__ = ["COMMANDS", "Command", "build_parser", "main", "parse_instant"]

log = logging.getLogger("trio_klines.cli")


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its name, one-line help, argument declarations and runner (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: Shown after the options, as written (line breaks kept); built lazily so imports stay lazy.
    epilog: Callable[[], str] | None = None


# --- argument types -------------------------------------------------------------------------


def parse_instant(text: str) -> int:
    """Epoch milliseconds from ``1704067200000`` or an ISO date/time (``2024-01-01``, ``…T12:00Z``; UTC if naive).

    Raises :class:`ConfigError` for anything else.
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"invalid time {text!r}: give epoch milliseconds or an ISO date such as 2024-01-01 or 2024-01-01T12:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _argument_type(convert: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse ``type`` that turns our :class:`ConfigError` into argparse's usage error (exit 2)."""

    def parse(text: str) -> object:
        try:
            return convert(text)
        except (ConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


# --- exchange -------------------------------------------------------------------------------


def _exchange_arguments(parser: argparse.ArgumentParser) -> None:
    from .testing import parse_faults

    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=_bounded_int(0, 65535), default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--seed", type=_bounded_int(-(2**63), 2**63 - 1), default=0, help="history seed (default 0)")
    parser.add_argument(
        "--speed", type=_positive_float, default=1.0, help="exchange seconds per wall-clock second (default 1)"
    )
    parser.add_argument(
        "--start",
        type=_argument_type(parse_instant),
        default=None,
        help="exchange time at start-up: epoch ms or ISO date/time (default: now)",
    )
    parser.add_argument(
        "--faults",
        type=_argument_type(parse_faults),
        default=None,
        metavar="KEY=VALUE,…",
        help="faults to inject, for example drop=0.01,stall=0.02,stall_s=1 (keys below)",
    )
    parser.add_argument(
        "--symbols", type=_bounded_int(0, 9999), default=0, help="generated symbols to add per market (default 0)"
    )
    parser.add_argument(
        "--ping-interval",
        type=_positive_float,
        default=None,
        help="seconds between server pings (default: 20 / speed, at least 0.05)",
    )


def _run_exchange(args: argparse.Namespace) -> int:
    import trio

    from .testing import ExchangeConfig, Faults

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
        trio.run(_serve_exchange, config)
    except OSError as exc:
        print(
            f"python -m trio_klines exchange: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


async def _serve_exchange(config: ExchangeConfig) -> None:
    import trio

    from .testing import open_exchange

    # Catch the signals before announcing the endpoints: whoever reads the first line may stop us at once.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
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
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break


def _exchange_epilog() -> str:
    from .testing import FAULT_KEYS

    width = max(map(len, FAULT_KEYS))
    return "fault keys:\n" + "\n".join(f"  {key:<{width}}  {text}" for key, text in FAULT_KEYS.items())


COMMANDS: list[Command] = [
    Command(
        "exchange",
        "run the fake Binance exchange on loopback (prints its endpoints map as the first line)",
        _exchange_arguments,
        _run_exchange,
        _exchange_epilog,
    ),
]


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_klines", description="Record Binance klines live and gap-free into Parquet."
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level on stderr (default WARNING)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog() if command.epilog else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad arguments, via argparse's exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args))
    except ConfigError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
