"""Binance's rate limits kept by trio tasks: the slots of a :class:`~trio_klines.core.pacing.Pacer` handed
out on trio's clock, and the connect limiter every connection of a trio run shares (Binance counts new
connections per IP)."""

from __future__ import annotations

import trio

from ..core.pacing import Pacer, connect_pacer

__all__ = ["RateLimiter", "shared_connect_limiter"]


class RateLimiter:
    """Hands out the slots of a :class:`~trio_klines.core.pacing.Pacer` to trio tasks, on trio's clock.

    Shared by any number of tasks; first come, first served (a ``trio.Lock`` is fair), so one waiter never
    overtakes another. A slot is taken only when :meth:`acquire` returns: a waiter cancelled while waiting
    takes none and costs the others nothing, and a slot once taken stays taken.
    """

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self._turn = trio.Lock()
        #: Slots handed out, and the seconds their takers spent waiting, all together.
        self.granted = 0
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"RateLimiter({self.pacer!r})"

    async def acquire(self) -> float:
        """Wait for a slot and take it; returns the seconds waited.

        Cancelled while waiting, it raises ``trio.Cancelled`` and takes no slot.
        """
        start = trio.current_time()
        async with self._turn:
            # Only the holder of the turn takes, so the time it waits for cannot move meanwhile. It sleeps
            # until the pacer's own time, not now + delay: that sum can round to just before it.
            ready = self.pacer.ready_at()
            if ready > trio.current_time():
                await trio.sleep_until(ready)
            now = trio.current_time()
            self.pacer.take(now)  # no checkpoint between the check and the take
        self.granted += 1
        self.waited += now - start
        return now - start


_CONNECT_LIMITER: trio.lowlevel.RunVar[RateLimiter] = trio.lowlevel.RunVar("trio_klines.connect_limiter")


def shared_connect_limiter() -> RateLimiter:
    """The connect limiter of the current trio run, made on first use: every connection that is given none
    shares it, whichever recorder or market it belongs to (Binance counts new connections per IP).

    Must be called inside ``trio.run``.
    """
    try:
        return _CONNECT_LIMITER.get()
    except LookupError:
        limiter = RateLimiter(connect_pacer())
        _CONNECT_LIMITER.set(limiter)
        return limiter
