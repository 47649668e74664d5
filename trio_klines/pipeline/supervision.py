"""One exception out of trio's nested exception groups, at the edge of the public API.

Trio nurseries wrap every failure of a child task in an exception group, and the recorder's nurseries nest
(recorder, connections, backfiller, writer), so one failing task arrives three groups deep. The public
entry points (``Recorder``, ``download``) promise a single exception: the failure itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import trio

__all__ = ["leaves", "single_error"]

log = logging.getLogger("trio_klines.recorder")


@contextmanager
def single_error() -> Iterator[None]:
    """Raise the first exception of an escaping group that is not a cancellation, not the group.

    Others beside it are logged with their tracebacks. A group of cancellations only goes on unchanged,
    for trio to absorb; an exception that is not a group is not touched.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        _, rest = group.split(trio.Cancelled)
        if rest is None:
            raise
        first, *others = leaves(rest)
        for other in others:
            log.error("also failed: %r", other, exc_info=other)
        raise first from None


def leaves(group: BaseExceptionGroup[BaseException]) -> Iterable[BaseException]:
    """The exceptions in ``group`` and in the groups it holds, depth first, in order."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc
