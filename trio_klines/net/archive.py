"""Downloading files of Binance's data archive: the ``.CHECKSUM``, then the zip, streamed and hashed.

A zip is streamed into a spooled temporary file (in memory up to :data:`SPOOL_BYTES`, on disk past
it), hashing as it comes, so a file of any size costs bounded memory; it is handed over only once its
SHA-256 equals its ``.CHECKSUM``'s. The archive costs no REST weight: downloads are limited only by the
caller's concurrency.

A missing file (HTTP 404, for the checksum or the zip) is not an error here: :meth:`ArchiveClient.fetch`
returns ``None`` and the caller decides (not published yet, or not listed then, or missing). Everything
else that goes wrong is an :class:`~trio_klines.errors.ArchiveError` (this module is the one place where
httpx's errors become ours, through the REST client's :func:`~trio_klines.net.rest.mapped_http_errors`).
"""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Final

import httpx

from ..core.archive import ArchiveFile, parse_checksum
from ..core.markets import Market
from ..errors import ArchiveError
from .rest import mapped_http_errors

__all__ = ["MAX_FILE_BYTES", "ArchiveClient", "Downloaded"]

#: Largest zip accepted: Binance's largest (a month of spot ``1s``) are ~100 MB; ten times that is no kline file.
MAX_FILE_BYTES: Final = 1 << 30
#: A zip up to this size stays in memory; a larger one is spooled to a temporary file.
SPOOL_BYTES: Final = 16 << 20
#: A ``.CHECKSUM`` is one line: ``<64 hex>  <name>``.
MAX_CHECKSUM_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A zip that matched its ``.CHECKSUM``: its bytes in ``body`` (at position 0; close it when done)."""

    file: ArchiveFile
    body: IO[bytes]
    size: int
    sha256: str


def _mapped_errors(what: str) -> AbstractContextManager[None]:
    """httpx's errors, and the ``OSError``\\ s that escape it, as :class:`ArchiveError` naming ``what``."""
    return mapped_http_errors(lambda message: ArchiveError(f"{what}: {message}"), "archive")


class ArchiveClient:
    """Fetches archive files over ``http`` (the caller's client, closed by the caller)."""

    def __init__(self, http: httpx.AsyncClient, *, max_bytes: int = MAX_FILE_BYTES) -> None:
        self._http = http
        self._max_bytes = max_bytes

    async def fetch(self, market: Market, file: ArchiveFile) -> Downloaded | None:
        """``file`` of ``market``'s archive, checked against its ``.CHECKSUM``; ``None`` if either is not
        there (HTTP 404).

        Raises :class:`ArchiveError` for anything else: a network error or timeout, another HTTP status,
        a malformed ``.CHECKSUM``, a zip larger than :data:`MAX_FILE_BYTES`, or bytes that do not hash
        to the checksum (a transfer cut short, a broken file). Cancelled, nothing is left open.
        """
        base = market.archive_url
        checksum = await self._checksum(f"{base}/{file.checksum_path}", file)
        if checksum is None:
            return None
        return await self._zip(f"{base}/{file.path}", file, checksum)

    async def _checksum(self, url: str, file: ArchiveFile) -> str | None:
        with _mapped_errors(f"{file.name}.CHECKSUM"):
            response = await self._http.get(url)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ArchiveError(f"{file.name}.CHECKSUM: HTTP {response.status_code}")
        if len(response.content) > MAX_CHECKSUM_BYTES:
            raise ArchiveError(f"{file.name}.CHECKSUM: {len(response.content)} bytes is no checksum")
        try:
            return parse_checksum(response.content, file.name)
        except ValueError as exc:
            raise ArchiveError(str(exc)) from None

    async def _zip(self, url: str, file: ArchiveFile, expected: str) -> Downloaded | None:
        body: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - handed over open
        try:
            digest = hashlib.sha256()
            size = 0
            with _mapped_errors(file.name):
                async with self._http.stream("GET", url) as response:
                    if response.status_code == 404:
                        body.close()
                        return None
                    if response.status_code != 200:
                        raise ArchiveError(f"{file.name}: HTTP {response.status_code}")
                    # Raw bytes: the zip is the file whose checksum Binance publishes, whatever the transfer
                    # encoding; writes to the spool are to memory or the page cache (microseconds a chunk).
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        if size > self._max_bytes:
                            raise ArchiveError(f"{file.name}: larger than {self._max_bytes} bytes")
                        digest.update(chunk)
                        body.write(chunk)
            actual = digest.hexdigest()
            if actual != expected:
                raise ArchiveError(f"{file.name}: SHA-256 {actual} ({size} bytes) is not its .CHECKSUM's {expected}")
            body.seek(0)
        except BaseException:
            body.close()
            raise
        return Downloaded(file, body, size, actual)
