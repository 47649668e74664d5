"""A fake Binance exchange on loopback, for testing code that records klines.

``async with open_exchange(seed=1, speed=6000) as ex:`` serves spot, USDⓈ-M and COIN-M WebSocket
streams and REST endpoints on 127.0.0.1 in Binance's formats, with a deterministic candle history
(``ex.ground_truth(...)``), accelerated exchange time and optional faults. ``ex.endpoints`` is the
endpoints map that :func:`trio_klines.core.markets.apply_endpoints` accepts. The command
``python -m trio_klines exchange`` runs the same server as a process.

The seams for testing an embedding without the server: :class:`ScriptedTransport` (connections that
deliver a script of frames, pauses, errors and closes), :class:`MemorySink` (a sink that keeps the
candles in memory), :class:`WireKline` (the one builder of kline frames and REST rows) and, in
:mod:`trio_klines.testing.strategies`, Hypothesis strategies for them (Hypothesis is a test extra, so
that module is not imported here).
"""

from typing import TYPE_CHECKING

from .faults import FAULT_KEYS, Faults, parse_faults
from .history import History, Outage, ground_truth
from .sink import MemorySink
from .symbols import SymbolSpec, Universe
from .wire import WireKline

if TYPE_CHECKING:
    from .scripted import Close, Pause, ScriptedBatchConnection, ScriptedConnection, ScriptedTransport
    from .server import ExchangeConfig, FakeExchange, open_exchange

__all__ = [
    "FAULT_KEYS",
    "Close",
    "ExchangeConfig",
    "FakeExchange",
    "Faults",
    "History",
    "MemorySink",
    "Outage",
    "Pause",
    "ScriptedBatchConnection",
    "ScriptedConnection",
    "ScriptedTransport",
    "SymbolSpec",
    "Universe",
    "WireKline",
    "ground_truth",
    "open_exchange",
    "parse_faults",
]

_LAZY = {
    # The server pulls in hypercorn, the scripted transport trio: load them on first use, so that the
    # CLI's other commands (which only need the fault syntax for their help) and ground-truth users
    # start quickly.
    **dict.fromkeys(("ExchangeConfig", "FakeExchange", "open_exchange"), "server"),
    **dict.fromkeys(
        ("Close", "Pause", "ScriptedBatchConnection", "ScriptedConnection", "ScriptedTransport"), "scripted"
    ),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
