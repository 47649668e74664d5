"""trio-klines: record Binance klines live and gap-free into Parquet, on trio."""

from .config import RecorderConfig
from .errors import BinanceError, ConfigError, KlinesError, MalformedMessage, ServerShutdown
from .markets import MARKETS, Market, Series
from .parse import Candle, frame_parser, parse_frame, parse_rest_klines, parse_rest_row
from .recorder import Recorder, RecorderStats
from .tables import candles_to_dataframe, candles_to_table

__all__ = [
    "MARKETS",
    "BinanceError",
    "Candle",
    "ConfigError",
    "KlinesError",
    "MalformedMessage",
    "Market",
    "Recorder",
    "RecorderConfig",
    "RecorderStats",
    "Series",
    "ServerShutdown",
    "candles_to_dataframe",
    "candles_to_table",
    "frame_parser",
    "parse_frame",
    "parse_rest_klines",
    "parse_rest_row",
]
