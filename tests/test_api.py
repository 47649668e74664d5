"""The public surface: what ``import trio_klines`` promises."""

from __future__ import annotations

import trio_klines


def test_public_names_are_pinned() -> None:
    assert sorted(trio_klines.__all__) == sorted(
        [
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
    )
    for name in trio_klines.__all__:
        assert getattr(trio_klines, name) is not None


def test_errors_share_one_root() -> None:
    for name in ("BinanceError", "ConfigError", "MalformedMessage", "ServerShutdown", "StoreError", "ConnectionLost"):
        assert issubclass(getattr(trio_klines, name), trio_klines.KlinesError)
    assert issubclass(trio_klines.MalformedMessage, ValueError)
    assert issubclass(trio_klines.ConfigError, ValueError)
