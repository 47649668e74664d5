"""The command line: ``python -m trio_klines <command> [options]``.

A thin layer: each command parses its flags into the library's config objects and calls ``trio.run``.
Commands are listed in :data:`COMMANDS`, one module per concern. Bad arguments and bad configuration
exit with status 2 and a message naming the problem (argparse's convention); a failure while running
exits 1 with a message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ConfigError, KlinesError
from .common import Command, configure_logging, parse_instant
from .data import BACKFILL, COMPACT, STATUS, VERIFY
from .exchange import EXCHANGE
from .record import DEMO, RECORD

__all__ = ["COMMANDS", "Command", "build_parser", "main", "parse_instant"]

COMMANDS: list[Command] = [RECORD, DEMO, BACKFILL, STATUS, VERIFY, COMPACT, EXCHANGE]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_klines", description="Record Binance klines live and gap-free into Parquet."
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level on stderr (default: INFO for record and demo, WARNING otherwise)",
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
        sub.set_defaults(run=command.run, default_log_level=command.log_level)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad arguments, via argparse's exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or args.default_log_level)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        parser.error(str(exc))
    except KlinesError as exc:
        print(f"python -m trio_klines {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
