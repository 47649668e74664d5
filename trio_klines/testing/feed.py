"""Which kline frames a WebSocket connection owes its client as exchange time passes, and the clock.

:class:`Feed` is pure scheduling: given the exchange time, it returns the due events of every
subscribed series in time order. Each candle gets open updates (``x`` false) every update period of
its market — never closer than a minimum wall-clock gap, so a fast-forwarded exchange sends a few per
candle instead of thousands — then its closed event (``x`` true, ``E`` = close time + 1 ms). When the
sender falls behind, stale open updates are dropped (only the newest is sent, and none for a candle
that has already closed) but every closed candle is emitted, in order.

Only while the symbol trades: no update before its listing, during a halt or after its delisting (the
subscription stays, silent, and wakes at the listing or the halt's end). A candle in which trading stops
for good closes early, its closed event at the stop (:meth:`~.history.History.close_at`); one the symbol
never trades in sends nothing.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Final, NamedTuple

import trio

from ..core.markets import Market, floor_open_time, next_open_time
from .history import History, Kline
from .symbols import SymbolSpec

__all__ = ["DEFAULT_MIN_UPDATE_GAP_S", "ExchangeClock", "Feed", "FeedEvent"]

#: Smallest wall-clock gap between two open updates of one series.
DEFAULT_MIN_UPDATE_GAP_S: Final = 0.002


class ExchangeClock:
    """Exchange time = ``start`` + elapsed time on trio's clock × ``speed``, in ms.

    Must be created and read inside ``trio.run`` (it follows :func:`trio.current_time`, so tests may
    drive it with a ``MockClock``).
    """

    def __init__(self, start: int, speed: float) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a positive number, not {speed!r}")
        self.start = start
        self.speed = speed
        self._origin = trio.current_time()
        self._per_second = speed * 1000.0

    def now(self) -> int:
        """The exchange time, ms since the epoch."""
        return self.start + math.floor((trio.current_time() - self._origin) * self._per_second)

    def deadline(self, t: int) -> float:
        """The trio time at which the exchange time reaches ``t``."""
        # A hair late rather than early, so that now() has surely reached t on wake-up.
        return self._origin + (t - self.start) / self._per_second + 1e-7

    def wall_seconds(self, ms: float) -> float:
        """How many wall-clock seconds ``ms`` of exchange time take."""
        return ms / self._per_second


class FeedEvent(NamedTuple):
    """One kline frame to send: the series' stream, its candle as it stands, and whether it closed."""

    time: int
    stream: str
    spec: SymbolSpec
    interval: str
    kline: Kline
    closed: bool


@dataclasses.dataclass(slots=True, eq=False)
class _Series:
    stream: str
    spec: SymbolSpec
    interval: str
    spacing: int
    open_time: int
    next_open: int
    next_update: int
    #: When the current candle closes: ``next_open``, or earlier when trading stops for good inside it.
    close_at: int = 0
    due_at: int = 0
    live: bool = True
    #: The symbol never trades again: nothing is due, ever.
    dormant: bool = False
    #: Whether the current candle exists (:meth:`History.exists`).
    exists: bool = True
    #: The current candle in full, computed once for all its open updates.
    full: Kline | None = None


def _first_update(open_time: int, close_at: int, spacing: int) -> int:
    # Mid-way into the first period, and always before the close: even a candle shorter than the
    # spacing gets one open update when the sender keeps up.
    return open_time + min(spacing // 2, (close_at - open_time) // 2)


class Feed:
    """The kline frames due on one connection. Not thread-safe; one per connection task."""

    def __init__(
        self,
        history: History,
        market: Market,
        *,
        speed: float,
        min_update_gap_s: float = DEFAULT_MIN_UPDATE_GAP_S,
    ) -> None:
        self._history = history
        self._market = market
        self._min_gap = math.ceil(min_update_gap_s * speed * 1000)
        self._series: dict[str, _Series] = {}
        self._heap: list[tuple[int, int, _Series]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._series)

    def subscribe(self, stream: str, spec: SymbolSpec, interval: str, now: int) -> None:
        """Start feeding ``stream`` from the candle open at ``now``; a repeat does nothing."""
        if stream in self._series:
            return
        spacing = max(self._market.update_period_for(interval), self._min_gap)
        open_time = floor_open_time(interval, now)
        series = _Series(stream, spec, interval, spacing, open_time, open_time, open_time)
        self._series[stream] = series
        self._begin(series, open_time, now)
        self._push(series)

    def _begin(self, s: _Series, open_time: int, now: int | None = None) -> None:
        """Make ``s``'s current candle the first one from ``open_time`` on in which its symbol trades."""
        t = self._history.next_trading_open(s.spec, s.interval, open_time)
        if t is None:
            s.dormant = True
            return
        s.open_time = t
        s.next_open = next_open_time(s.interval, t)
        s.close_at = self._history.close_at(s.spec, s.interval, t)
        s.exists = self._history.exists(s.spec, s.interval, t)
        update = _first_update(t, s.close_at, s.spacing)
        if now is not None and update < now:
            update += -(-(now - update) // s.spacing) * s.spacing
        s.next_update = min(update, s.close_at)

    def unsubscribe(self, stream: str) -> None:
        """Stop feeding ``stream``; unknown streams are ignored."""
        series = self._series.pop(stream, None)
        if series is not None:
            series.live = False

    def next_time(self) -> int | None:
        """Exchange time of the next due event, or ``None`` when nothing is subscribed."""
        heap = self._heap
        while heap and (not heap[0][2].live or heap[0][0] != heap[0][2].due_at):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: int, limit: int = 1000) -> list[FeedEvent]:
        """Events due at exchange time ``now`` (at most ``limit``; call again for the rest)."""
        out: list[FeedEvent] = []
        heap = self._heap
        history = self._history
        while heap and heap[0][0] <= now and len(out) < limit:
            t, _, s = heapq.heappop(heap)
            if not s.live or t != s.due_at:
                continue
            if s.next_update < s.close_at:
                if now >= s.close_at:
                    s.next_update = s.close_at  # behind: the close makes the open updates moot
                else:
                    u = s.next_update + (now - s.next_update) // s.spacing * s.spacing
                    if not s.exists:
                        s.next_update = s.close_at
                    elif not s.spec.trading_at(u):
                        # Listed or resuming later in this candle: the next update is at that moment.
                        resume = s.spec.next_trading(u)
                        s.next_update = s.close_at if resume is None else min(resume, s.close_at)
                    else:
                        if s.full is None or s.full.open_time != s.open_time:
                            s.full = history.kline(s.spec, s.interval, s.open_time)
                        kline = history.partial(s.spec, s.interval, s.open_time, u, s.full)
                        out.append(FeedEvent(u, s.stream, s.spec, s.interval, kline, False))
                        s.next_update = min(u + s.spacing, s.close_at)
            else:
                if s.exists:
                    kline = s.full if s.full is not None and s.full.open_time == s.open_time else None
                    kline = kline or history.kline(s.spec, s.interval, s.open_time)
                    out.append(FeedEvent(s.close_at, s.stream, s.spec, s.interval, kline, True))
                self._begin(s, s.next_open)
            self._push(s)
        return out

    def _push(self, s: _Series) -> None:
        if s.dormant:
            return
        s.due_at = min(s.next_update, s.close_at)
        self._seq += 1
        heapq.heappush(self._heap, (s.due_at, self._seq, s))
