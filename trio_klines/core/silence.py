"""Silent streams: which to resubscribe, and when the connection itself must be replaced. Pure: time is an argument.

Since 2026 a wrongly routed USDⓈ-M connection acknowledges subscriptions and then delivers nothing, so a
live socket is no proof that every stream on it flows. A stream is *silent* once it has gone unheard for
its limit: ``periods`` of its market's update period, but never less than ``minimum`` (illiquid symbols
update only when they trade).

- While other streams of the connection deliver, a silent stream costs them nothing: its alarm asks for
  a resubscribe, never a reconnect (a dead or halted symbol must not take its neighbours' candles down).
- Only when *every* stream of the connection is silent is the connection itself suspect: that alarm
  asks for a reconnect.
- Alarms for a stream (and reconnects for a connection) that stays silent come further and further
  apart (its limit × 2, × 4, … up to × 64), so a dead symbol does not flood the log. Only a frame from
  the stream (from any stream, for the connection) starts it afresh: the allowance a new session or a
  subscription gives is no proof that anything flows, so it does not.

The connection task owns the clock and the sockets: it stores arrival times in :attr:`SilenceMonitor.heard_at`,
calls :meth:`SilenceMonitor.check` about once a second and acts on the :class:`Alarm` it gets back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .markets import Market

__all__ = ["Alarm", "SilenceMonitor", "silence_limit"]

#: Alarms for a stream that stays silent are spaced by its limit × 2**n, n capped here (× 64).
MAX_DOUBLINGS = 6


def silence_limit(market: Market, stream: str, *, periods: int, minimum: float) -> float:
    """Seconds without a frame after which ``stream`` (``symbol@kline_interval``) counts as silent."""
    interval = stream.rsplit("_", 1)[-1]
    return max(periods * market.update_period_for(interval) / 1000, minimum)


@dataclass(frozen=True, slots=True)
class Alarm:
    """What one check found: ``streams`` are silent. Resubscribe them, or reconnect if ``reconnect``."""

    streams: tuple[str, ...]
    #: The shortest silence limit among ``streams``, in seconds (what the log reports).
    limit: float
    #: Every stream of the connection is silent: the connection, not a stream, is at fault.
    reconnect: bool


@dataclass(slots=True)
class _Streak:
    """Alarms in a row for one silent stream (or for the whole connection) that has not spoken since."""

    count: int
    due: float  # when the next alarm may be raised
    raised_at: float  # when the last one was


class SilenceMonitor:
    """Tracks when each stream of one connection was last heard and decides when to raise an alarm.

    Memory is bounded by the streams tracked: :meth:`remove` forgets a stream entirely, and names heard
    but not tracked (a stream just unsubscribed, ``!serverShutdown``) are dropped by the next check.
    """

    __slots__ = ("_alarms", "_allowed", "_limits", "_quiet", "check_every", "heard_at", "market", "minimum",
                 "next_check", "periods")  # fmt: skip

    def __init__(
        self, market: Market, streams: Iterable[str] = (), *, periods: int, minimum: float, check_every: float = 1.0
    ) -> None:
        self.market = market
        self.periods = periods
        self.minimum = minimum
        self.check_every = check_every
        #: Stream → when a frame of it last arrived. Public so that a receive loop records a frame with one
        #: dict store (a method call per frame would double that cost). Frames only: allowances are apart.
        self.heard_at: dict[str, float] = {}
        #: When the next :meth:`check` is due; the caller reads it (a check is cheap, not free).
        self.next_check = math.inf
        self._limits: dict[str, float] = {}  # the streams tracked, in the order they were added
        # Stream → when its allowance began (its subscription, the last new session; for a stream given
        # at construction, the first check): no alarm for it within its limit of that.
        self._allowed: dict[str, float] = {}
        self._alarms: dict[str, _Streak] = {}  # silent stream → its alarms in a row
        self._quiet: _Streak | None = None  # the whole connection silent: its reconnects in a row
        for stream in streams:
            self._limits[stream] = self._limit_of(stream)

    def _limit_of(self, stream: str) -> float:
        return silence_limit(self.market, stream, periods=self.periods, minimum=self.minimum)

    def limit(self, stream: str) -> float:
        """The silence limit of a tracked ``stream``, in seconds. Raises KeyError for one not tracked."""
        return self._limits[stream]

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._limits)

    @property
    def remembered(self) -> set[str]:
        """Every stream name the monitor holds anything about (to prove its memory bounded)."""
        return set(self._limits) | set(self._alarms) | set(self.heard_at) | set(self._allowed)

    def add(self, streams: Iterable[str], now: float) -> None:
        """Track ``streams`` from ``now`` on: each gets its full allowance. Tracked ones are left alone."""
        for stream in streams:
            if stream not in self._limits:
                self._limits[stream] = self._limit_of(stream)
                self._allowed[stream] = now

    def remove(self, streams: Iterable[str]) -> None:
        """Forget ``streams`` entirely."""
        for stream in streams:
            self._limits.pop(stream, None)
            self.heard_at.pop(stream, None)
            self._allowed.pop(stream, None)
            self._alarms.pop(stream, None)

    def new_session(self, now: float) -> None:
        """A new connection delivered its first frame: every stream gets its full allowance from ``now``.

        The allowance is not speech: a stream silent before keeps its alarms in a row, so a dead stream
        is not alarmed (nor a dead connection replaced) afresh after every reconnect.
        """
        self._allowed = dict.fromkeys(self._limits, now)
        self.next_check = now + self.check_every

    def check(self, now: float) -> Alarm | None:
        """The silent streams whose alarm is due at ``now``, or None; counts their alarms in a row."""
        self.next_check = now + self.check_every
        heard_at, limits, alarms, allowed = self.heard_at, self._limits, self._alarms, self._allowed
        silent: list[str] = []
        every_one_silent = bool(limits)
        last_frame = -math.inf
        known = 0  # tracked streams with a frame in heard_at
        for stream, limit in limits.items():
            heard = heard_at.get(stream, -math.inf)
            if heard > -math.inf:
                known += 1
                last_frame = max(last_frame, heard)
            streak = alarms.get(stream)
            if streak is not None and heard >= streak.raised_at:
                del alarms[stream]  # it spoke after its last alarm
                streak = None
            if now - max(heard, allowed.setdefault(stream, now)) < limit:
                every_one_silent = False
            elif streak is None or now >= streak.due:
                silent.append(stream)
        if len(heard_at) > known:  # names heard but not tracked: strangers
            for stream in [s for s in heard_at if s not in limits]:
                del heard_at[stream]
        quiet = self._quiet
        if quiet is not None and last_frame >= quiet.raised_at:
            quiet = self._quiet = None  # a stream of the connection spoke after its last reconnect
        reconnect = every_one_silent and (quiet is None or now >= quiet.due)
        if reconnect:
            count = quiet.count + 1 if quiet is not None else 1
            longest = max(limits.values())
            self._quiet = _Streak(count, now + longest * 2 ** min(count, MAX_DOUBLINGS), now)
            silent = list(limits)  # the reconnect resubscribes every one of them
        if not silent:
            return None
        for stream in silent:
            streak = alarms.get(stream)
            count = streak.count + 1 if streak is not None else 1
            alarms[stream] = _Streak(count, now + limits[stream] * 2 ** min(count, MAX_DOUBLINGS), now)
        return Alarm(tuple(silent), min(limits[s] for s in silent), reconnect)
