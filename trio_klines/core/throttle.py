"""Log throttling: at most one report per ``every`` seconds per kind, with a count of the ones held back.

A connection that receives garbage can see thousands of bad frames a second; each is counted in its
statistics, but the log gets one line per kind and period, saying how many it did not print. Pure: time
is an argument.
"""

from __future__ import annotations

import math

__all__ = ["LogThrottle"]


class LogThrottle:
    """Decides which reports of each kind reach the log. Memory grows with the kinds used, not the reports."""

    __slots__ = ("_next", "_suppressed", "every")

    def __init__(self, every: float) -> None:
        if not every > 0:
            raise ValueError(f"every must be a positive number of seconds, not {every!r}")
        self.every = every
        self._next: dict[str, float] = {}  # kind → when the next report may go out
        self._suppressed: dict[str, int] = {}  # kind → reports held back since the last one let through

    def admit(self, kind: str, now: float) -> int | None:
        """A report of ``kind`` at ``now``: None to hold it back (it is counted), or the number of reports
        of ``kind`` held back since the last one let through, to be mentioned in this one."""
        if now < self._next.get(kind, -math.inf):
            self._suppressed[kind] += 1
            return None
        self._next[kind] = now + self.every
        held, self._suppressed[kind] = self._suppressed.get(kind, 0), 0
        return held

    def suppressed(self, kind: str) -> int:
        """Reports of ``kind`` held back since the last one let through."""
        return self._suppressed.get(kind, 0)
