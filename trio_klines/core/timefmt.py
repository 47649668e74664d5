"""Times for people: epoch milliseconds as ISO-8601 UTC, for log lines and error messages.

Pure: no I/O, no clock. Every time a user reads (a log line, an error, a JSON field) goes through here,
so that none is a raw count of milliseconds: ``2026-11-30T10:15:00Z``, with the milliseconds only when
they are not zero (``2026-11-30T10:15:00.250Z``). A value no datetime holds (before year 1, after year
9999: a corrupt file's footer, a garbled frame) is shown as ``<n> ms`` instead of raising, because a
message about a bad value must not fail on it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["iso_ms", "iso_range", "iso_stamp"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _moment(ms: int) -> datetime | None:
    # A timedelta from the epoch, not datetime.fromtimestamp(ms / 1000): exact for every int (a float loses
    # the milliseconds of far-off times) and the same on every platform (Windows refuses negative stamps).
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except (OverflowError, TypeError, ValueError):
        return None


def iso_ms(ms: int) -> str:
    """``ms`` since the epoch as ``2026-11-30T10:15:00Z``; ``2026-11-30T10:15:00.250Z`` when the
    milliseconds are not zero; ``<ms> ms`` for a value outside years 1-9999. Never raises."""
    moment = _moment(ms)
    if moment is None:
        return f"{ms} ms"
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def iso_stamp(ms: int) -> str:
    """``ms`` as ``2026-11-30T10:15:00.000Z``: always with milliseconds, for the time at the head of a log
    line (a fixed width keeps the lines aligned). ``<ms> ms`` outside years 1-9999. Never raises."""
    moment = _moment(ms)
    if moment is None:
        return f"{ms} ms"
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def iso_range(start: int, end: int | None) -> str:
    """The half-open range ``[start, end)`` of open times as ``from <start> to <end>``; an ``end`` of
    ``None`` (open-ended, up to the exchange's clock) reads ``now``."""
    return f"from {iso_ms(start)} to {'now' if end is None else iso_ms(end)}"
