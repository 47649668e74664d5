"""Silent streams: which to resubscribe, and when to give up on the connection. Pure: time is an argument.

Since 2026 a wrongly routed USDⓈ-M connection acknowledges subscriptions and then delivers nothing, so a
live socket is no proof that every stream on it flows. A stream is *silent* once it has gone unheard for
its limit: ``periods`` of its market's update period, but never less than ``minimum`` (illiquid symbols
update only when they trade). The first alarm for a silent stream asks for a resubscribe; a second one in
a row for the same stream asks for a reconnect. Alarms for a stream that stays silent come further and
further apart (its limit × 2, × 4, … up to × 64), so a dead symbol does not flood the log; a stream that
speaks again starts afresh.

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
    #: A stream of ``streams`` was resubscribed at its previous alarm and is still silent.
    reconnect: bool


class SilenceMonitor:
    """Tracks when each stream of one connection was last heard and decides when to raise an alarm.

    Memory is bounded by the streams tracked: :meth:`remove` forgets a stream entirely, and names heard
    but not tracked (a stream just unsubscribed, ``!serverShutdown``) are dropped by the next check.
    """

    __slots__ = ("_alarms", "_limits", "check_every", "heard_at", "market", "minimum", "next_check", "periods")

    def __init__(
        self, market: Market, streams: Iterable[str] = (), *, periods: int, minimum: float, check_every: float = 1.0
    ) -> None:
        self.market = market
        self.periods = periods
        self.minimum = minimum
        self.check_every = check_every
        #: Stream → when it was last heard. Public so that a receive loop records a frame with one dict
        #: store (a method call per frame would double that cost). A stream never heard is given the time
        #: of the first check (or of :meth:`new_session`).
        self.heard_at: dict[str, float] = {}
        #: When the next :meth:`check` is due; the caller reads it (a check is cheap, not free).
        self.next_check = math.inf
        self._limits: dict[str, float] = {}  # the streams tracked, in the order they were added
        self._alarms: dict[str, tuple[int, float]] = {}  # silent stream → (alarms in a row, next alarm due at)
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
        return set(self._limits) | set(self._alarms) | set(self.heard_at)

    def add(self, streams: Iterable[str], now: float) -> None:
        """Track ``streams`` from ``now`` on: each gets its full allowance. Tracked ones are left alone."""
        for stream in streams:
            if stream not in self._limits:
                self._limits[stream] = self._limit_of(stream)
                self.heard_at[stream] = now

    def remove(self, streams: Iterable[str]) -> None:
        """Forget ``streams`` entirely."""
        for stream in streams:
            self._limits.pop(stream, None)
            self.heard_at.pop(stream, None)
            self._alarms.pop(stream, None)

    def new_session(self, now: float) -> None:
        """A new connection delivered its first frame: every stream gets its full allowance from ``now``.

        Within that allowance a stream is not silent, so the first check forgets its alarms in a row as
        if it had spoken: a stream still silent on the new connection starts again with a resubscribe.
        """
        self.heard_at.clear()  # in place: a receive loop holds this very dict
        self.heard_at.update(dict.fromkeys(self._limits, now))
        self.next_check = now + self.check_every

    def check(self, now: float) -> Alarm | None:
        """The streams silent at ``now`` whose alarm is due, or None; counts their alarms."""
        self.next_check = now + self.check_every
        heard_at, limits, alarms = self.heard_at, self._limits, self._alarms
        silent: list[str] = []
        for stream, limit in limits.items():
            if now - heard_at.setdefault(stream, now) < limit:
                alarms.pop(stream, None)  # it speaks (again)
            elif stream not in alarms or now >= alarms[stream][1]:
                silent.append(stream)
        if len(heard_at) > len(limits):  # it holds every stream tracked now: the rest are strangers
            for stream in [s for s in heard_at if s not in limits]:
                del heard_at[stream]
        if not silent:
            return None
        reconnect = False
        for stream in silent:
            count = alarms[stream][0] + 1 if stream in alarms else 1
            alarms[stream] = (count, now + limits[stream] * 2 ** min(count, MAX_DOUBLINGS))
            reconnect |= count == 2
        return Alarm(tuple(silent), min(limits[s] for s in silent), reconnect)
