"""The store's exceptions (re-exported by :mod:`trio_klines.store`; they belong in ``errors.py``)::

    KlinesError
    └── StoreError              anything the store cannot do
        ├── StoreLocked         another process is writing this store
        ├── StoreWriteError     a write failed (also an OSError): the batch is not stored, retry it
        ├── CorruptFile         a stored file cannot be read back as it was written
        └── InvalidCandles      candles the store refuses (also a ValueError); nothing was written
"""

from __future__ import annotations

from pathlib import Path

from .errors import KlinesError

__all__ = ["CorruptFile", "InvalidCandles", "StoreError", "StoreLocked", "StoreWriteError"]


class StoreError(KlinesError):
    """Root of the store's errors."""


class StoreLocked(StoreError):
    """Another process holds the store's lock: one writer per root."""


class StoreWriteError(StoreError, OSError):
    """Writing failed (``ENOSPC``, ``EIO``, ``EACCES``…); ``errno`` and ``filename`` come from the OS error.

    ``committed`` is ``False`` when nothing of the batch became visible: keep the batch and retry.
    It is ``True`` when the batch was committed but a later step (rename, directory fsync) failed: the
    batch will be complete at the latest when the store is next opened. Retrying is harmless either way
    (a repeated candle replaces itself).
    """

    def __init__(self, message: str, cause: OSError, *, committed: bool) -> None:
        OSError.__init__(self, cause.errno, message, cause.filename)
        self.committed = committed

    def __str__(self) -> str:
        return str(self.strerror)


class CorruptFile(StoreError):
    """A stored file that is truncated, fails its checksums, or does not hold what its name says."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class InvalidCandles(StoreError, ValueError):
    """A batch the store refuses as a whole (bad series name, open time off the interval's grid)."""
