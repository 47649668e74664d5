"""The command line: ``python -m trio_klines <command> [options]``, or ``trio-klines <command>``.

A thin layer: each command parses its flags into the library's config objects and calls the library
under ``trio.run``. Commands are listed in :data:`COMMANDS`, one module per concern. Bad arguments and
bad configuration exit with status 2 and a message naming the problem (argparse's convention); a
failure while running exits 1 with a message.

Importing this package and building the parser loads only the standard library and light modules of
ours, so that ``--help`` answers at once: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import ConfigError, KlinesError
from .common import Command, configure_logging
from .data import BACKFILL, COMPACT, STATUS, VERIFY
from .exchange import EXCHANGE
from .record import DEMO, RECORD

__all__ = ["COMMANDS", "PROG", "Command", "build_parser", "main", "run"]

COMMANDS: list[Command] = [RECORD, DEMO, BACKFILL, STATUS, VERIFY, COMPACT, EXCHANGE]
#: The program name in usage and error messages, as ``python -m trio_klines`` runs it.
PROG = "python -m trio_klines"
#: The distribution whose version ``--version`` prints.
DISTRIBUTION = "trio-klines"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog=prog, description="Record Binance klines live and gap-free into Parquet.")
    parser.add_argument("--version", action=_VersionAction, help="print the installed version and exit")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level on stderr (default: INFO for record and demo, WARNING otherwise)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog_factory=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run, default_log_level=command.log_level)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run the command line; returns the exit status (2 for bad arguments, via argparse's exit)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    configure_logging(args.log_level or args.default_log_level)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        parser.error(str(exc))
    except KlinesError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    """The ``trio-klines`` console script: :func:`main` on ``sys.argv``, exiting with its status."""
    raise SystemExit(main(prog="trio-klines"))


def _installed_version() -> str:
    """The installed version of trio-klines (``unknown`` when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version  # ~10 ms: only for --version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, like argparse's own ``version`` action but reading the version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"{DISTRIBUTION} {_installed_version()}")
        parser.exit()


class _CommandParser(argparse.ArgumentParser):
    """A command's parser, whose epilog is made when its help is printed (it may import heavy modules)."""

    def __init__(self, *args: Any, epilog_factory: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_factory = epilog_factory

    def format_help(self) -> str:
        if self._epilog_factory is not None:
            self.epilog, self._epilog_factory = self._epilog_factory(), None
        return super().format_help()
