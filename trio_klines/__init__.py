"""trio-klines: record Binance klines live and gap-free into Parquet, on trio."""

from .errors import BinanceError, ConfigError, KlinesError, MalformedMessage, ServerShutdown
from .markets import MARKETS, Market, Series
from .parse import Candle, frame_parser, parse_frame, parse_rest_klines, parse_rest_row
from .tables import candles_to_dataframe, candles_to_table

__all__ = [
    "MARKETS",
    "BinanceError",
    "Candle",
    "ConfigError",
    "KlinesError",
    "MalformedMessage",
    "Market",
    "Series",
    "ServerShutdown",
    "candles_to_dataframe",
    "candles_to_table",
    "frame_parser",
    "parse_frame",
    "parse_rest_klines",
    "parse_rest_row",
]
