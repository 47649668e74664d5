"""Shared pieces of the command line: the :class:`Command` record, argument types, logging set-up, exit
statuses and the stop signals.

Each command lives in a module named for its concern (``exchange``, ``record``, ``data``) and is
registered in :data:`trio_klines.cli.COMMANDS`. Building the parser must stay cheap (``--help`` builds
every command's): these modules import only the standard library and light modules of ours at import
time (config, errors, core.markets); a command imports the rest inside its ``run`` function.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import ConfigError

if TYPE_CHECKING:
    import trio

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "LOG_FORMATS",
    "STOP_SIGNALS",
    "Command",
    "SignalStop",
    "argument_type",
    "bounded_int",
    "check_data_dir",
    "configure_logging",
    "positive_float",
    "signal_exit_status",
]

log = logging.getLogger("trio_klines.cli")

#: A failure while running (the same command may succeed later: a locked store, a full disk, the network).
EXIT_FAILURE = 1
#: Bad arguments or configuration (argparse's status): the command cannot succeed until they are changed.
EXIT_CONFIG = 2
#: The signals that stop a command cleanly; the first one received decides its exit status.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


#: Third-party loggers the commands set off, heard only at DEBUG (else from WARNING up): httpx logs a line
#: per REST call at INFO, httpcore traces each connection, websockets (the default transport) every frame at
#: DEBUG and a server's opens and closes at INFO, trio-websocket its handshakes; hypercorn serves the fake
#: exchange and the metrics endpoint, whose start-up and requests go to its own loggers unless routed to ours.
CHATTY_LOGGERS: Final = ("httpx", "httpcore", "websockets", "trio-websocket", "hypercorn")
#: The shapes ``configure_logging`` writes: ``text`` for people, ``json`` (one object a line) for collectors.
LOG_FORMATS: Final = ("text", "json")


def configure_logging(level: str | int, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (one of :data:`LOG_FORMATS`), times in ISO-8601 UTC; the
    library itself never configures logging.

    As :func:`logging.basicConfig`, it leaves a root logger that already has handlers as it is (a program
    that set up its own logging keeps it); the chatty loggers' levels are set either way. Third-party
    chatter (:data:`CHATTY_LOGGERS`) stays out unless ``level`` is DEBUG. Raises :class:`ConfigError`
    for an unknown ``fmt`` or ``level``.
    """
    from .logformat import JsonFormatter, TextFormatter

    if fmt not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}; choose one of: {', '.join(LOG_FORMATS)}")
    number = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(number, int):  # getLevelName answers "Level X" for a name it does not know
        raise ConfigError(f"unknown log level {level!r}; choose one of: DEBUG, INFO, WARNING, ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=number, handlers=[handler])
    # A logger's own level decides whether a record goes on to the root's handlers, not the root's level:
    # at ERROR, a chatty logger left at WARNING would still print its warnings.
    chatty = logging.DEBUG if number <= logging.DEBUG else max(logging.WARNING, number)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)


# --- exit statuses and stop signals ------------------------------------------------------------


def signal_exit_status(signum: int) -> int:
    """128 + the signal's number, as a shell reports a command a signal ended: 130 for SIGINT, 143 for SIGTERM.

    A command stopped by a signal exits so even when it stopped cleanly, so that ``cmd && next`` does not
    go on as if ``cmd`` had finished its work.
    """
    return 128 + int(signum)


class SignalStop:
    """The stop signals a command has received while it runs, read by :meth:`watch`.

    The first signal sets :attr:`requested` (the command winds down its own way); the ``cancel_after``-th
    cancels :attr:`scope` (``1``: the first signal cancels the work at once; ``2``: a second signal
    stops a graceful stop). Made inside ``trio.run``.
    """

    def __init__(self, *, cancel_after: int) -> None:
        import trio

        self.received: list[signal.Signals] = []
        self.requested: trio.Event = trio.Event()
        self.scope: trio.CancelScope = trio.CancelScope()
        self._cancel_after = cancel_after

    @property
    def first(self) -> signal.Signals | None:
        """The first signal received, or ``None``."""
        return self.received[0] if self.received else None

    @property
    def forced(self) -> bool:
        """Whether a later signal cut a graceful stop short."""
        return self._cancel_after > 1 and len(self.received) >= self._cancel_after

    async def watch(self, signals: AsyncIterator[int], stopping: str, forcing: str) -> None:
        """Take signals from ``signals`` (a ``trio.open_signal_receiver``) until cancelled.

        Logs ``stopping`` (INFO) on the first signal and ``forcing`` (WARNING) on each later one. Raises
        nothing; cancellation ends the watch.
        """
        async for signum in signals:
            sig = signal.Signals(signum)
            self.received.append(sig)
            count = len(self.received)
            if count == 1:
                log.info("%s: %s", sig.name, stopping)
                self.requested.set()
            else:
                log.warning("%s: %s", sig.name, forcing)
            if count >= self._cancel_after:
                self.scope.cancel()


def check_data_dir(path: Path, *, write: bool) -> None:
    """Raise :class:`ConfigError` if ``path`` cannot be a data directory (it is created if missing).

    It cannot when it, or the nearest of its parents that exists, is not a directory; with ``write``,
    also when that directory is not writable (permissions, a read-only file system). The store checks
    again when it opens: this is only for a message that names the mistake, before anything starts.
    """
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = "a file" if existing.is_file() else "not a directory"
    elif write and not os.access(existing, os.W_OK | os.X_OK):
        problem = "on a read-only file system" if _read_only_fs(existing) else "not writable (permission denied)"
    if problem is None:
        return
    if existing == path:
        want = "a directory" if problem in ("a file", "not a directory") else "a writable directory"
        raise ConfigError(f"data directory {path} is {problem}: give --data {want}")
    raise ConfigError(
        f"data directory {path} cannot be created: {existing} is {problem}; give --data another directory"
    )


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False
