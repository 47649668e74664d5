"""Binance's WebSocket rate limits, as pure decisions: when the next connect or control request may go, and
how many streams one request may carry. Pure: time is an argument; the connection task sleeps.

Two limits bite a recorder of the whole market (≈45,000 streams over ≈70 connections); going over either
gets the connection dropped, and repeated violations get the IP banned:

- **New connections**: 300 per 5 minutes per IP (spot docs; the futures docs say nothing, so one budget is
  shared by every market: it is safe whichever way Binance counts). Every connect takes a slot, a refused
  or failed one too, since nothing tells which ones Binance counted.
- **Incoming messages**: 5 per second per connection on spot, 10 on USDⓈ-M and COIN-M, counting pings,
  pongs and the JSON control requests (``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS`` …).

A :class:`Pacer` enforces ``limit`` events per ``per_seconds`` as a sliding-window log: no window of
``per_seconds`` (half-open, wherever it starts) ever holds more than ``limit`` takes, and a take is allowed
as soon as that stays true, never later. Binance does not say how it counts; a sliding window is within
every fixed-bucket or sliding count of the same size.

The figures used are Binance's less a margin, named below. One request carries many streams: at most
:data:`MAX_REQUEST_PARAMS` and :data:`MAX_REQUEST_BYTES` (:func:`pack_params` decides how many fit).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = [
    "BINANCE_CONNECTS_PER_WINDOW",
    "BINANCE_MESSAGES_PER_SECOND",
    "CONNECT_LIMIT",
    "CONNECT_WINDOW",
    "CONTROL_HEADROOM",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_ID",
    "MAX_REQUEST_PARAMS",
    "Pacer",
    "connect_pacer",
    "control_limit",
    "control_pacer",
    "pack_params",
    "request_size",
]

#: Binance's limit on new WebSocket connections per IP, and its window in seconds (spot docs, § Limits).
BINANCE_CONNECTS_PER_WINDOW: Final = 300
CONNECT_WINDOW: Final = 300.0
#: What the recorder allows itself: Binance counts a connect when it arrives, we when it starts; connects
#: whose latency differs by seconds can bunch at Binance's end, and 20 of 300 covers that.
CONNECT_LIMIT: Final = 280

#: Binance's limit on incoming messages per second per connection, by market name. A market missing here
#: gets the strictest figure (spot's).
BINANCE_MESSAGES_PER_SECOND: Final[Mapping[str, int]] = {"spot": 5, "usdt_futures": 10, "coin_futures": 10}
#: Held back from that figure: one for the pong the transport sends by itself whenever the server pings
#: (it counts too, and we cannot delay it), one for network jitter that lands two requests sent just over
#: a second apart inside one of Binance's seconds.
CONTROL_HEADROOM: Final = 2

#: At most this many streams per request. Binance documents no bound but answers "too many parameters" to
#: some; every stream of a futures connection (≤200 in the safe plan) fits one request.
MAX_REQUEST_PARAMS: Final = 200
#: At most this many bytes per request: spot silently ignores a SUBSCRIBE frame over 4096 bytes (the
#: request is never answered; binance/binance-connector-rust#27, JKorf/Binance.Net#920), ≈210 kline streams.
MAX_REQUEST_BYTES: Final = 4000
#: The largest request id (futures take unsigned 64-bit ints only); sizes are measured with it.
MAX_REQUEST_ID: Final = 2**64 - 1


class Pacer:
    """At most ``limit`` takes in any window of ``per_seconds``: a log of the last ``limit`` takes.

    Times must not go backwards from one take to the next (trio's clock does not). Memory: ``limit`` floats.
    """

    __slots__ = ("_takes", "limit", "per_seconds")

    def __init__(self, limit: int, per_seconds: float) -> None:
        if not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1):
            raise ValueError(f"limit must be a whole number of at least 1, not {limit!r}")
        if not (isinstance(per_seconds, int | float) and per_seconds > 0 and math.isfinite(per_seconds)):
            raise ValueError(f"per_seconds must be a positive number of seconds, not {per_seconds!r}")
        self.limit = limit
        self.per_seconds = float(per_seconds)
        self._takes: deque[float] = deque(maxlen=limit)  # only the last `limit` takes decide anything

    def __repr__(self) -> str:
        return f"Pacer({self.limit}, {self.per_seconds:g})"

    def ready_at(self) -> float:
        """The earliest time the next take is allowed (``-inf`` while fewer than ``limit`` takes were made).

        A caller that sleeps until exactly this time may take then: :meth:`delay` is 0 there, no rounding.
        """
        if len(self._takes) < self.limit:
            return -math.inf
        return _sum_up(self._takes[0], self.per_seconds)

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` before a take is allowed; 0 when it is allowed at ``now``."""
        return max(0.0, self.ready_at() - now)

    def in_window(self, now: float) -> int:
        """Takes in the window of ``per_seconds`` that ends at ``now`` (the ones after ``now - per_seconds``)."""
        return sum(_sum_up(t, self.per_seconds) > now for t in self._takes)

    def take(self, now: float) -> None:
        """Use a slot at ``now``.

        Raises:
          ValueError: no slot is free at ``now`` (see :meth:`delay`), or ``now`` is before the last take.
        """
        if self._takes and now < self._takes[-1]:
            raise ValueError(f"time went backwards: {now!r} is before the last take at {self._takes[-1]!r}")
        if now < self.ready_at():
            raise ValueError(f"no slot free at {now!r}: {self.limit} takes in {self.per_seconds:g}s; wait until "
                             f"{self.ready_at()!r}")  # fmt: skip
        self._takes.append(now)


def _sum_up(a: float, b: float) -> float:
    """``a + b`` rounded up, not to nearest: the smallest float at or after the exact sum, so that a window
    is exact, not exact up to rounding (``0.7 + 0.7 + 0.7`` leaves ``2.0999999999999996 - 1.4 < 0.7``)."""
    total = a + b
    if not math.isfinite(total):
        return total
    rest = total - a  # Knuth's two-sum: `error` is exactly a + b - total
    error = (a - (total - rest)) + (b - rest)
    return math.nextafter(total, math.inf) if error > 0 else total


def connect_pacer() -> Pacer:
    """The pacer of new connections, for every connection from one IP (all markets together)."""
    return Pacer(CONNECT_LIMIT, CONNECT_WINDOW)


def control_limit(market: str) -> int:
    """Control requests per second one connection of ``market`` may send (Binance's figure less the headroom)."""
    binance = BINANCE_MESSAGES_PER_SECOND.get(market, min(BINANCE_MESSAGES_PER_SECOND.values()))
    return max(1, binance - CONTROL_HEADROOM)


def control_pacer(market: str) -> Pacer:
    """The pacer of one connection's control requests."""
    return Pacer(control_limit(market), 1.0)


def request_size(method: str, params: Sequence[str]) -> int:
    """Bytes of the request ``{"method": …, "params": […], "id": …}`` as the connection writes it
    (``json.dumps`` with its default separators), with the largest id."""
    return len(json.dumps({"method": method, "params": list(params), "id": MAX_REQUEST_ID}).encode())


def pack_params(
    method: str, params: Sequence[str], *, max_params: int = MAX_REQUEST_PARAMS, max_bytes: int = MAX_REQUEST_BYTES
) -> int:
    """How many of ``params``, from the first, one request carries: as many as keep it within ``max_params``
    streams and ``max_bytes`` bytes, and at least one (a stream too long alone still goes, on its own)."""
    size = request_size(method, ())
    count = 0
    for param in params:
        extra = len(json.dumps(param).encode()) + (2 if count else 0)  # ", " before all but the first
        if count and (count >= max_params or size + extra > max_bytes):
            break
        size += extra
        count += 1
    return count
