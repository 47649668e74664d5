"""Reconnection delays: capped exponential backoff with full jitter. Pure; the caller sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """Delay before attempt *n*: uniform in ``[0, min(maximum, initial × multiplier^n)]`` ("full jitter").

    Full jitter spreads the reconnects of many connections cut at once (Binance's 24 h cut, a network
    blip) so they do not hammer the server in lockstep. :meth:`reset` after a healthy period.
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum) or self.multiplier < 1:
            raise ValueError(
                f"backoff needs 0 < initial ({self.initial}) <= maximum ({self.maximum}) and multiplier >= 1"
            )

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        try:
            return min(self.maximum, self.initial * self.multiplier**self.attempt)
        except OverflowError:  # a very long outage: the power left the floats long ago
            return self.maximum

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        delay = self.rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
