"""A fake Binance exchange on loopback, for testing code that records klines.

``async with open_exchange(seed=1, speed=6000) as ex:`` serves spot, USDⓈ-M and COIN-M WebSocket
streams and REST endpoints on 127.0.0.1 in Binance's formats, with a deterministic candle history
(``ex.ground_truth(...)``), accelerated exchange time and optional faults. ``ex.endpoints`` is the
endpoints map that :func:`trio_klines.core.markets.apply_endpoints` accepts. The command
``python -m trio_klines exchange`` runs the same server as a process.
"""

from typing import TYPE_CHECKING

from .faults import FAULT_KEYS, Faults, parse_faults
from .history import History, Outage, ground_truth
from .symbols import SymbolSpec, Universe

if TYPE_CHECKING:
    from .server import ExchangeConfig, FakeExchange, open_exchange

__all__ = [
    "FAULT_KEYS",
    "ExchangeConfig",
    "FakeExchange",
    "Faults",
    "History",
    "Outage",
    "SymbolSpec",
    "Universe",
    "ground_truth",
    "open_exchange",
    "parse_faults",
]

_SERVER_NAMES = frozenset({"ExchangeConfig", "FakeExchange", "open_exchange"})


def __getattr__(name: str) -> object:
    # The server pulls in hypercorn: load it on first use, so that the CLI's other commands (which
    # only need the fault syntax for their help) and ground-truth users start quickly.
    if name in _SERVER_NAMES:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
