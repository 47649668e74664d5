"""trio-klines: record Binance klines live and gap-free into Parquet, on trio."""

# The layout, by layer; each layer imports only the ones above it (and errors.py, config.py):
#
#   errors.py   the one exception tree; imports nothing of ours.
#   core/       pure logic: markets and intervals, frame and REST-row parsing, gaps, backoff, page and
#               catch-up plans. No I/O, no trio, no threads; the standard library and msgspec only.
#   config.py   RecorderConfig and every DEFAULT_*; imports core only.
#   store/      the Parquet dataset on disk: layout, landing files, sealing into segments, reading,
#               coverage, status, the exchange-gap ledger. Blocking code (pyarrow, pandas); never trio.
#   net/        the exchange over the network: WebSocket transports, the connection task, the REST
#               client; third-party network errors become ours here. Imports core and config.
#   pipeline/   the trio tasks that move candles from net to store: writer, backfiller, worker threads,
#               and the history download and verification behind the CLI. Imports core, net, store.
#   recorder.py Recorder, the composition root: one nursery over connections, writer and backfiller.
#   cli/        argument parsing and the commands; thin: parse, build the config, call the library.
#               Imports anything, but only inside each command's run function, so --help stays fast.
#   testing/    the fake exchange and test seams for users' own tests. Imports core and errors; the
#               server (hypercorn) is loaded on first use.
#
# The public names below are loaded on first access (PEP 562): `import trio_klines` costs almost
# nothing, and `python -m trio_klines --help` (which imports this package first) does not pay for
# pandas, pyarrow, trio and httpx. The imports under TYPE_CHECKING are the same re-exports, for type
# checkers and readers; tests/test_api.py checks that they and _SOURCES agree.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RecorderConfig as RecorderConfig
    from .core.markets import MARKETS as MARKETS
    from .core.markets import Market as Market
    from .core.markets import Series as Series
    from .core.parse import Candle as Candle
    from .core.parse import frame_parser as frame_parser
    from .core.parse import parse_frame as parse_frame
    from .core.parse import parse_rest_klines as parse_rest_klines
    from .core.parse import parse_rest_row as parse_rest_row
    from .errors import ArchiveError as ArchiveError
    from .errors import BinanceError as BinanceError
    from .errors import ConfigError as ConfigError
    from .errors import ConnectionLost as ConnectionLost
    from .errors import CorruptFile as CorruptFile
    from .errors import InvalidCandles as InvalidCandles
    from .errors import KlinesError as KlinesError
    from .errors import MalformedMessage as MalformedMessage
    from .errors import RestError as RestError
    from .errors import ServerShutdown as ServerShutdown
    from .errors import StoreError as StoreError
    from .errors import StoreLocked as StoreLocked
    from .errors import StoreWriteError as StoreWriteError
    from .recorder import Recorder as Recorder
    from .recorder import RecorderStats as RecorderStats
    from .store.coverage import SeriesCoverage as SeriesCoverage
    from .store.coverage import coverage as coverage
    from .store.dataset import CompactionSummary as CompactionSummary
    from .store.dataset import Store as Store
    from .store.dataset import compact as compact
    from .store.dataset import load as load
    from .store.dataset import scan as scan
    from .store.tables import candles_to_dataframe as candles_to_dataframe
    from .store.tables import candles_to_table as candles_to_table

__all__ = [
    "MARKETS",
    "ArchiveError",
    "BinanceError",
    "Candle",
    "CompactionSummary",
    "ConfigError",
    "ConnectionLost",
    "CorruptFile",
    "InvalidCandles",
    "KlinesError",
    "MalformedMessage",
    "Market",
    "Recorder",
    "RecorderConfig",
    "RecorderStats",
    "RestError",
    "Series",
    "SeriesCoverage",
    "ServerShutdown",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreWriteError",
    "candles_to_dataframe",
    "candles_to_table",
    "compact",
    "coverage",
    "frame_parser",
    "load",
    "parse_frame",
    "parse_rest_klines",
    "parse_rest_row",
    "scan",
]

#: Where each public name lives, relative to this package.
_MODULES: dict[str, tuple[str, ...]] = {
    ".config": ("RecorderConfig",),
    ".core.markets": ("MARKETS", "Market", "Series"),
    ".core.parse": ("Candle", "frame_parser", "parse_frame", "parse_rest_klines", "parse_rest_row"),
    ".errors": (
        "ArchiveError",
        "BinanceError",
        "ConfigError",
        "ConnectionLost",
        "CorruptFile",
        "InvalidCandles",
        "KlinesError",
        "MalformedMessage",
        "RestError",
        "ServerShutdown",
        "StoreError",
        "StoreLocked",
        "StoreWriteError",
    ),
    ".recorder": ("Recorder", "RecorderStats"),
    ".store.coverage": ("SeriesCoverage", "coverage"),
    ".store.dataset": ("CompactionSummary", "Store", "compact", "load", "scan"),
    ".store.tables": ("candles_to_dataframe", "candles_to_table"),
}
_SOURCES: dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    try:
        source = _SOURCES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(source, __name__), name)
    globals()[name] = value  # later lookups find it directly, without calling __getattr__ again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
