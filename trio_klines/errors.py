"""Every exception trio-klines raises on purpose.

Callers catch these, never the third-party errors underneath (those are chained with ``from``)::

    KlinesError
    ├── ConfigError         bad market, symbol, interval or setting (also a ValueError)
    ├── MalformedMessage    a frame or REST row that is not what Binance sends (also a ValueError)
    ├── BinanceError        Binance answered with an error payload {"code": …, "msg": …}
    ├── ServerShutdown      spot's ``serverShutdown`` event: reconnect at once
    ├── RestError           a REST call failed for good: retries spent (network, timeout, 5xx, an
    │                       undecodable body), or an answer that is neither data nor a Binance error
    ├── ArchiveError        a data-archive file failed: download, .CHECKSUM, zip or CSV row; not stored
    ├── ConnectionLost      a WebSocket could not be opened, or closed, or went silent
    │   └── ReceiveTimeout  nothing arrived within the receive timeout
    └── StoreError          anything the Parquet store cannot do
        ├── StoreLocked     another process is writing this store
        ├── StoreWriteError a write failed (also an OSError): the batch is not stored, retry it
        ├── CorruptFile     a stored file cannot be read back as it was written
        └── InvalidCandles  candles the store refuses (also a ValueError); nothing was written
            └── RefusedCandles  names each refused candle, so that the rest can be written
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ArchiveError",
    "BinanceError",
    "ConfigError",
    "ConnectionLost",
    "CorruptFile",
    "InvalidCandles",
    "KlinesError",
    "MalformedMessage",
    "ReceiveTimeout",
    "RefusedCandles",
    "RestError",
    "ServerShutdown",
    "StoreError",
    "StoreLocked",
    "StoreWriteError",
]


class KlinesError(Exception):
    """Root of every error trio-klines raises deliberately."""


class ConfigError(KlinesError, ValueError):
    """A market, symbol, interval or setting that trio-klines cannot accept.

    The message quotes the bad value and lists what is allowed.
    """


class MalformedMessage(KlinesError, ValueError):
    """A WebSocket frame or REST row that does not have the shape Binance documents.

    ``reason`` says what is wrong; ``frame`` holds (a prefix of) the offending input for logs.
    """

    def __init__(self, reason: str, frame: object = None) -> None:
        self.reason = reason
        self.frame = _preview(frame)
        super().__init__(reason if frame is None else f"{reason}: {self.frame}")


class BinanceError(KlinesError):
    """Binance answered with an error payload such as ``{"code": -1121, "msg": "Invalid symbol."}``.

    On a WebSocket, replies to a control request arrive as ``{"error": {…}, "id": N}``; ``request_id``
    holds that ``id`` (``None`` otherwise).
    """

    def __init__(self, code: int | None, msg: str, request_id: object = None) -> None:
        self.code = code
        self.msg = msg
        self.request_id = request_id
        where = "" if request_id is None else f" (request id {request_id!r})"
        super().__init__(f"Binance error {code}: {msg}{where}")


class ServerShutdown(KlinesError):
    """Spot sent ``serverShutdown``: the server is about to close this connection.

    Not a fault of the frame: the connection should reconnect at once instead of waiting for the cut.
    ``event_time`` is the event's ``E`` (ms since epoch) when present.
    """

    def __init__(self, event_time: int | None = None) -> None:
        from .core.timefmt import iso_ms  # here, not at the top: errors.py imports nothing of ours at load

        self.event_time = event_time
        super().__init__("server shutdown announced" + ("" if event_time is None else f" at {iso_ms(event_time)}"))


class RestError(KlinesError):
    """A REST call failed for good; ``status`` is the HTTP status of the last answer, if there was one.

    Raised after the client's retries are spent (network errors, timeouts, ``5xx``, a body that cannot
    be decoded: the last one is chained as ``__cause__``), or at once for an answer that is neither
    data nor a Binance error payload. Retrying later is safe: a REST call only reads.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ConnectionLost(KlinesError):
    """A WebSocket connection failed to open, was closed, or broke. The connection task reconnects."""


class ReceiveTimeout(ConnectionLost):
    """No frame arrived within the receive timeout: the connection is presumed dead."""


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
    """Candles the store refuses (not valid candles: see ``trio_klines.core.validity``); nothing was written.

    Its subclass :class:`RefusedCandles` names each refused candle, so that the writer drops those alone.
    """


class RefusedCandles(InvalidCandles):
    """Candles of a batch that are not valid: ``refused`` holds each, with its reason (``candle``,
    ``reason``); nothing was written. The batch without them is valid: append it on its own."""

    def __init__(self, message: str, refused: Sequence[Any]) -> None:
        super().__init__(message)
        self.refused: tuple[Any, ...] = tuple(refused)


_PREVIEW_CHARS = 200


def _preview(frame: object) -> str | None:
    """A short printable excerpt of a bad input, so logs stay readable whatever arrived."""
    if frame is None:
        return None
    if isinstance(frame, bytes | bytearray | memoryview):
        text = repr(bytes(frame[:_PREVIEW_CHARS]))
    else:
        text = repr(frame) if not isinstance(frame, str) else frame
        text = text[:_PREVIEW_CHARS]
    return text if len(text) < _PREVIEW_CHARS else text + "…"


class ArchiveError(KlinesError):
    """A file of Binance's data archive could not be used: its download failed, it does not match its
    ``.CHECKSUM``, its zip is broken or a row of its CSV is not a candle. Nothing of it was stored;
    fetching it again may succeed (a transfer cut short) or not (a file broken on the server)."""
