"""Shared pieces of the command line: the :class:`Command` record, argument types, logging set-up.

Each command lives in a module named for its concern (``exchange``, ``record``, ``data``) and is
registered in :data:`trio_klines.cli.COMMANDS`. Building the parser must stay cheap (``--help`` builds
every command's): these modules import only the standard library and light modules of ours at import
time (config, errors, core.markets); a command imports the rest inside its ``run`` function.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable

from ..errors import ConfigError

__all__ = ["Command", "argument_type", "bounded_int", "configure_logging", "positive_float"]


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its name, one-line help, argument declarations and runner (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: Shown after the options, as written (line breaks kept); called only when the help is printed.
    epilog: Callable[[], str] | None = None
    #: Log level unless ``--log-level`` says otherwise.
    log_level: str = "WARNING"


# --- argument types -------------------------------------------------------------------------


def argument_type(convert: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse ``type`` that turns our :class:`ConfigError` into argparse's usage error (exit 2)."""

    def parse(text: str) -> object:
        try:
            return convert(text)
        except (ConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` with timestamps; the library itself never configures logging."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
