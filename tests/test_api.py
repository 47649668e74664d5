"""The public surface: what ``import trio_klines`` promises."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

import trio_klines


def test_public_names_are_pinned() -> None:
    assert sorted(trio_klines.__all__) == sorted(
        [
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
            "RestError",
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
            "scan",
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


def test_every_public_name_resolves_from_its_module_and_is_listed_by_dir() -> None:
    for name in trio_klines.__all__:
        module = importlib.import_module(trio_klines._SOURCES[name], "trio_klines")
        assert getattr(trio_klines, name) is getattr(module, name)
    assert set(trio_klines.__all__) <= set(dir(trio_klines))
    assert set(trio_klines._SOURCES) == set(trio_klines.__all__)


def test_the_type_checking_re_exports_match_the_lazy_table() -> None:
    # Type checkers read the `if TYPE_CHECKING:` imports; the interpreter reads _SOURCES: keep them one list.
    tree = ast.parse(inspect.getsource(trio_klines))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    declared = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            assert alias.asname == alias.name, f"re-export {alias.name} as itself, so type checkers export it"
            declared[alias.name] = "." * node.level + (node.module or "")
    assert declared == trio_klines._SOURCES


def test_from_import_star_and_an_unknown_name() -> None:
    namespace: dict[str, object] = {}
    exec("from trio_klines import *", namespace)
    assert set(trio_klines.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = trio_klines.no_such_name  # type: ignore[attr-defined]
