"""The command line: ``python -m trio_klines <command> [options]``, or ``trio-klines <command>``.

A thin layer: each command parses its flags into the library's config objects and calls the library
under ``trio.run``. Commands are listed in :data:`COMMANDS`, one module per concern.

Exit statuses, the same for every command: 0 done; 2 bad arguments or configuration (argparse's
convention); 1 a failure while running; 130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the
signal's number, as shells report it). Every error is one line on stderr,
``python -m trio_klines COMMAND: error: …``, naming what to fix; only a bug shows a traceback.

Importing this package and building the parser loads only the standard library and light modules of
ours, so that ``--help`` answers at once: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..errors import ConfigError, KlinesError, StoreLocked
from .common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    LOG_FORMATS,
    Command,
    check_data_dir,
    configure_logging,
    signal_exit_status,
)
from .data import BACKFILL, COMPACT, STATUS, VERIFY
from .exchange import EXCHANGE
from .record import DEMO, RECORD

__all__ = ["COMMANDS", "PROG", "Command", "build_parser", "main", "run"]

COMMANDS: list[Command] = [RECORD, DEMO, BACKFILL, STATUS, VERIFY, COMPACT, EXCHANGE]
#: The program name in usage and error messages, as ``python -m trio_klines`` runs it.
PROG = "python -m trio_klines"
#: The distribution whose version ``--version`` prints.
DISTRIBUTION = "trio-klines"
#: What ``--log-level`` takes.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog=prog, description="Record Binance klines live and gap-free into Parquet.")
    parser.add_argument("--version", action=_VersionAction, help="print the installed version and exit")
    _log_arguments(parser, default=None)
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
        # After the command too; absent there, it leaves the one given before the command in place (a
        # subparser's defaults overwrite the main parser's values), and given in both, the command's wins.
        _log_arguments(sub, default=argparse.SUPPRESS)
        sub.set_defaults(run=command.run, default_log_level=command.log_level)
    return parser


def _log_arguments(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    parser.add_argument(
        "--log-level",
        default=default,
        choices=LOG_LEVELS,
        help="log level on stderr (default: INFO for record and demo, WARNING otherwise); before or after the command",
    )
    parser.add_argument(
        "--log-format",
        default=default,
        choices=LOG_FORMATS,
        help="log lines as text (default: an ISO-8601 UTC time, level, logger, message) or json (one object a "
        "line: time, level, logger, message and the line's own fields); before or after the command",
    )


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run the command line; returns the exit status (see the module's docstring).

    Bad arguments exit 2 through argparse (``SystemExit``), with the command's usage.
    """
    where = prog
    try:
        args = build_parser(prog).parse_args(argv)
        where = args.command_prog = f"{prog} {args.command}"
        configure_logging(args.log_level or args.default_log_level, args.log_format or "text")
        if isinstance(data_dir := getattr(args, "data_dir", None), Path):
            check_data_dir(data_dir, write=False)
        return int(args.run(args))
    except BaseException as exc:  # mapped to a status, or raised again (argparse's SystemExit, a bug)
        return _exit_status(exc, where)


def _exit_status(exc: BaseException, where: str) -> int:
    """The exit status for ``exc`` escaping a command, its one-line message printed; re-raises what is a bug.

    A group (from a nursery) counts as its first exception that is not a cancellation.
    """
    error = _first_error(exc)
    if isinstance(error, KeyboardInterrupt):  # SIGINT before the command's own handler was in place
        print(f"{where}: interrupted (SIGINT)", file=sys.stderr)
        return signal_exit_status(signal.SIGINT)
    if isinstance(error, ConfigError):
        print(f"{where}: error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if isinstance(error, KlinesError | OSError):
        print(f"{where}: error: {error}{_HINTS.get(type(error), '')}", file=sys.stderr)
        return EXIT_FAILURE
    raise exc


#: What to do about an error whose message says only what happened.
_HINTS: dict[type[BaseException], str] = {StoreLocked: "; stop that process, or give --data another directory"}


def _first_error(exc: BaseException) -> BaseException:
    """``exc``, or the first exception in it and its nested groups that is not a ``trio.Cancelled``."""
    while isinstance(exc, BaseExceptionGroup):
        # By name: importing trio here would slow down --help, and only trio raises a "Cancelled".
        inner = [e for e in exc.exceptions if type(e).__name__ != "Cancelled"] or list(exc.exceptions)
        exc = inner[0]
    return exc


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
