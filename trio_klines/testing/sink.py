"""An in-memory :class:`~trio_klines.pipeline.writer.CandleSink`, for testing code that embeds a Recorder.

``Recorder(config, sink=MemorySink(), transport=...)`` records into a list instead of a Parquet
dataset: nothing touches the disk, and a test reads back exactly what the writer handed over, batch
by batch. ``fail`` makes the next appends raise as a full disk does, to test the writer's retries.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence

from ..core.markets import Series
from ..core.parse import Candle

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps every appended batch in memory; durable when :meth:`append` returns, as a sink must be.

    The recorder calls :meth:`append` in a worker thread: the batches are guarded by a lock, so a
    test may read :attr:`candles` at any time from the event loop.
    """

    def __init__(self) -> None:
        self.batches: list[list[Candle]] = []
        #: The next ``fail`` appends raise ``OSError(ENOSPC)`` and keep nothing (then it counts down).
        self.fail = 0
        self._lock = threading.Lock()

    def append(self, candles: Sequence[Candle]) -> None:
        """Keep ``candles`` as one batch; raises ``OSError(ENOSPC)`` instead while :attr:`fail` counts down."""
        with self._lock:
            if self.fail:
                self.fail -= 1
                raise OSError(errno.ENOSPC, "No space left on device")
            self.batches.append(list(candles))

    @property
    def candles(self) -> list[Candle]:
        """Every candle kept, in the order appended."""
        with self._lock:
            return [c for batch in self.batches for c in batch]

    def series(self, series: Series | tuple[str, str, str]) -> list[Candle]:
        """The candles of one series (market, symbol, interval), in the order appended."""
        return [c for c in self.candles if c.series == tuple(series)]
