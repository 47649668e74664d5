"""trio-klines: record Binance klines live and gap-free into Parquet, on trio."""

from .config import RecorderConfig
from .core.markets import MARKETS, Market, Series
from .core.parse import Candle, frame_parser, parse_frame, parse_rest_klines, parse_rest_row
from .errors import (
    BinanceError,
    ConfigError,
    ConnectionLost,
    CorruptFile,
    InvalidCandles,
    KlinesError,
    MalformedMessage,
    ServerShutdown,
    StoreError,
    StoreLocked,
    StoreWriteError,
)
from .recorder import Recorder, RecorderStats
from .store.coverage import SeriesCoverage, coverage
from .store.dataset import CompactionSummary, Store, compact, load
from .store.tables import candles_to_dataframe, candles_to_table

__all__ = [
    "MARKETS",
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
]
