"""The fake exchange's copy of Binance's public data archive (data.binance.vision), with its faults.

One archive serves every market, under ``/archive`` (the ``archive`` URL of each market's endpoints)::

    /archive/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip
    /archive/data/futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02-03.zip.CHECKSUM
    /archive/data/futures/cm/monthly/klines/BTCUSD_PERP/1d/BTCUSD_PERP-1d-2024-01.zip

A zip holds one deflated CSV, ``{SYMBOL}-{INTERVAL}-{period}.csv``: the ground truth's candles opening in
the file's month or day, in the REST klines' 12 columns and number text (``ignore`` is ``0``), LF line
ends. Spot files of periods from 2025-01-01 give times in microseconds; futures files (USDⓈ-M and COIN-M)
of periods from 2023-01-01 start with a header line. The ``.CHECKSUM`` beside a zip is
``<sha256 hex>  <zip name>\\n``. ``1M`` candles are not in the archive (404): clients take them over REST.

A file exists (in exchange time) once its period has ended and ``archive_lag`` has passed; a candle
that opens in the period but closes after it (``3d``, ``1w``) holds the file back until it closes. A file
whose period holds no candle (the symbol not listed yet, delisted, halted or in an outage all along)
does not exist. Anything else — a malformed path, an unknown symbol or interval — is a 404 as well.

Faults (:class:`~trio_klines.testing.faults.Faults`): ``archive_bad_checksum`` flips one byte of a zip
and ``archive_truncated`` cuts it short (Content-Length matching, so only the checksum tells), each
decided per file and per repeat of the request (a retry may succeed unless the probability is 1);
``archive_missing_days`` answers 404 for the N newest published days and the monthly files holding
them; ``archive_slow`` delays every archive response. Zip bodies go out in 64 KiB chunks.
"""

from __future__ import annotations

import collections
import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Final, Literal, NamedTuple

import trio

from ..core.markets import MARKETS, floor_open_time, next_open_time
from .faults import Dice, Faults
from .history import History, key_of
from .symbols import SymbolSpec, format_units
from .ws import Send

__all__ = [
    "ARCHIVE_PREFIX",
    "FUTURES_HEADER",
    "ArchiveBlob",
    "ArchivePath",
    "ArchiveServer",
    "archive_csv",
    "build_archive_zip",
    "checksum_body",
    "parse_archive_path",
]

#: Where the archive lives on the fake exchange's server (Binance's is the root of data.binance.vision).
ARCHIVE_PREFIX: Final = "/archive"
#: The header line of the futures files from :data:`FUTURES_HEADER_FROM` on.
FUTURES_HEADER: Final = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)
#: Futures files of periods starting from here carry :data:`FUTURES_HEADER`. An approximation: Binance's
#: USDⓈ-M and COIN-M files gained the header around the start of 2023; the exact switch date is unverified.
FUTURES_HEADER_FROM: Final = 1_672_531_200_000  # 2023-01-01
#: Spot files of periods starting from here give open and close times in microseconds (shared/realdata:
#: BTCUSDT-1m-2025-01-01 has them; 2024-01-02 has milliseconds).
SPOT_MICROS_FROM: Final = 1_735_689_600_000  # 2025-01-01
#: Built files kept in memory (a monthly 1m zip is about 2 MB); a published file never changes.
CACHE_FILES: Final = 16
#: Bytes per ASGI body message of a zip, so a client really receives it in pieces.
CHUNK: Final = 64 * 1024
_DAY: Final = 86_400_000
_MARKET_DIRS: Final = {"spot": "spot", "futures/um": "usdt_futures", "futures/cm": "coin_futures"}
# Strict: only these characters, these shapes; the names are then checked against the universe.
_PATH_RE: Final = re.compile(
    r"data/(?P<market>spot|futures/um|futures/cm)/(?P<granularity>monthly|daily)/klines/"
    r"(?P<symbol>[A-Z0-9_]{1,32})/(?P<interval>[0-9]{1,2}[smhdwM])/"
    r"(?P<file_symbol>[A-Z0-9_]{1,32})-(?P<file_interval>[0-9]{1,2}[smhdwM])-"
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})(?:-(?P<day>[0-9]{2}))?\.zip(?P<checksum>\.CHECKSUM)?"
)
_NOT_FOUND: Final = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
)
Granularity = Literal["monthly", "daily"]


class ArchivePath(NamedTuple):
    """One archive file named by a request path: the series, the period ``[start, end)`` (ms) and names."""

    market: str
    symbol: str
    interval: str
    granularity: Granularity
    start: int
    end: int
    #: The zip's path under the archive's base: ``data/spot/monthly/klines/…/BTCUSDT-1m-2024-01.zip``.
    path: str
    #: Whether the request is for the ``.CHECKSUM`` beside the zip rather than the zip.
    checksum: bool

    @property
    def name(self) -> str:
        """The zip's file name: ``BTCUSDT-1m-2024-01.zip``."""
        return self.path.rpartition("/")[2]

    @property
    def csv_name(self) -> str:
        """The name of the one CSV inside the zip."""
        return self.name.removesuffix(".zip") + ".csv"


class ArchiveBlob(NamedTuple):
    """A built zip and its SHA-256 (hex)."""

    data: bytes
    sha256: str


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def parse_archive_path(path: str) -> ArchivePath | None:
    """The file that ``path`` (under the archive's base, ``data/…``) names, or ``None`` when it is not the path
    of a klines zip or ``.CHECKSUM`` in Binance's layout: wrong shape or characters, a symbol or interval
    that differs between the folders and the file name, or a date that does not exist.

    Whether the market lists the symbol and serves the interval is the caller's business.
    """
    match = _PATH_RE.fullmatch(path)
    if match is None or match["symbol"] != match["file_symbol"] or match["interval"] != match["file_interval"]:
        return None
    granularity: Granularity = "daily" if match["granularity"] == "daily" else "monthly"
    if (match["day"] is None) != (granularity == "monthly"):
        return None
    year, month = int(match["year"]), int(match["month"])
    try:
        first = date(year, month, int(match["day"]) if match["day"] else 1)
        if granularity == "daily":
            after = date.fromordinal(first.toordinal() + 1)
        else:
            after = date(year + month // 12, month % 12 + 1, 1)
    except ValueError:  # no such date, or past year 9999
        return None
    if first.year < 1970:
        return None
    zip_path = path.removesuffix(".CHECKSUM")
    return ArchivePath(
        market=_MARKET_DIRS[match["market"]],
        symbol=match["symbol"],
        interval=match["interval"],
        granularity=granularity,
        start=_ms(first),
        end=_ms(after),
        path=zip_path,
        checksum=match["checksum"] is not None,
    )


def archive_csv(history: History, spec: SymbolSpec, interval: str, start: int, end: int) -> bytes:
    """The archive CSV of ``spec``'s ``interval`` candles opening in ``[start, end)`` (a file's period).

    Numbers are written as the REST klines write them (:func:`~trio_klines.testing.symbols.format_units`
    with the symbol's decimals), so every value is digit for digit the REST's. Times are in µs for spot
    periods from :data:`SPOT_MICROS_FROM`; futures periods from :data:`FUTURES_HEADER_FROM` get the header.
    """
    f = format_units
    p, q, qq = spec.price_dp, spec.qty_dp, spec.quote_dp
    micros = spec.market == "spot" and start >= SPOT_MICROS_FROM
    scale, last = (1000, 999) if micros else (1, 0)
    lines = [FUTURES_HEADER] if spec.market != "spot" and start >= FUTURES_HEADER_FROM else []
    for t in history.open_times(spec, interval, start, end):
        k = history.kline(spec, interval, t)
        lines.append(
            f"{k.open_time * scale},{f(k.open, p)},{f(k.high, p)},{f(k.low, p)},{f(k.close, p)},{f(k.volume, q)},"
            f"{k.close_time * scale + last},{f(k.quote_volume, qq)},{k.trades},{f(k.taker_base, q)},"
            f"{f(k.taker_quote, qq)},0"
        )
    lines.append("")  # Binance's files end with a line feed
    return "\n".join(lines).encode("ascii")


def build_archive_zip(history: History, file: ArchivePath) -> ArchiveBlob:
    """The zip of ``file`` (one deflated CSV) and its SHA-256, built from ``history``: what the archive
    serves once the file is published. Deterministic: the same bytes on every run.

    Pure and CPU-bound (about 0.8 s for a month of 1m candles); the server runs it in a worker thread.
    Raises :class:`~trio_klines.errors.ConfigError` when the market does not list the symbol.
    """
    spec = history.spec(file.market, file.symbol)
    text = archive_csv(history, spec, file.interval, file.start, file.end)
    # A fixed member time (the period's end, which zip can hold from 1980 on): the bytes, and so the
    # checksum, depend on nothing but the file.
    made = datetime.fromtimestamp(max(file.end, 315_532_800_000) / 1000, UTC)
    info = zipfile.ZipInfo(file.csv_name, date_time=made.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # The fastest level: a fifth of the build time less than the default, the zip about 15% bigger.
        archive.writestr(info, text, compresslevel=1)
    data = buffer.getvalue()
    return ArchiveBlob(data, hashlib.sha256(data).hexdigest())


def checksum_body(blob: ArchiveBlob, name: str) -> bytes:
    """The ``.CHECKSUM`` of a zip: ``<sha256 hex>  <zip name>\\n``, as Binance writes it."""
    return f"{blob.sha256}  {name}\n".encode("ascii")


class ArchiveServer:
    """Answers the archive's HTTP requests from a :class:`History`, at the exchange time ``now()`` gives.

    ``lag`` is the publication lag in exchange ms. The figures go to ``stats``: ``archive_requests``,
    ``archive_404``, ``archive_bytes`` (body bytes sent) and the faults that fired
    (``fault_archive_bad_checksum``, ``fault_archive_truncated``, ``fault_archive_missing``,
    ``fault_archive_slow``). Made inside ``trio.run``.
    """

    def __init__(
        self,
        history: History,
        now: Callable[[], int],
        *,
        lag: int,
        faults: Faults,
        dice: Dice,
        stats: collections.Counter[str],
    ) -> None:
        self._history = history
        self._now = now
        self.lag = lag
        self._faults = faults
        self._dice = dice
        self.stats = stats
        self._cache: collections.OrderedDict[str, ArchiveBlob] = collections.OrderedDict()
        self._building: dict[str, trio.Event] = {}
        # One build at a time: they hold the GIL, and two would only slow each other (and the event loop).
        self._limiter = trio.CapacityLimiter(1)
        #: Per zip path, how often it was asked (the corrupting dice roll per repeat).
        self._asked: collections.Counter[str] = collections.Counter()

    # --- what exists --------------------------------------------------------------------------

    def published_at(self, file: ArchivePath) -> int:
        """The exchange time (ms) from which ``file`` is published: its period's end, or the close of a candle
        that opens in the period and ends after it, plus the lag."""
        return max(file.end, next_open_time(file.interval, floor_open_time(file.interval, file.end - 1))) + self.lag

    def lookup(self, path: str, now: int) -> tuple[ArchivePath | None, str]:
        """The file a request for ``path`` (under the archive's base) gets at ``now``, and why: ``"ok"``, or
        ``None`` and ``"malformed"``, ``"unknown"`` (symbol or interval), ``"unpublished"``, ``"empty"``
        (no candle in the period) or ``"missing"`` (the ``archive_missing_days`` fault)."""
        file = parse_archive_path(path)
        if file is None:
            return None, "malformed"
        market = MARKETS[file.market]
        spec = self._history.universe.get(file.market, file.symbol)
        if spec is None or file.interval not in market.intervals or file.interval == "1M":
            return None, "unknown"
        if self.published_at(file) > now:
            return None, "unpublished"
        if not self._history.open_times(spec, file.interval, file.start, file.end, limit=1):
            return None, "empty"
        if self._missing(file, now):
            return None, "missing"
        return file, "ok"

    def _missing(self, file: ArchivePath, now: int) -> bool:
        days = self._faults.archive_missing_days
        if not days:
            return False
        # The newest published day is the last whose end plus the lag has come.
        newest = (now - self.lag - _DAY) // _DAY * _DAY
        oldest = newest - (days - 1) * _DAY
        return file.start <= newest and file.end > oldest

    # --- serving ------------------------------------------------------------------------------

    async def blob(self, file: ArchivePath) -> ArchiveBlob:
        """The built zip of ``file`` (from the cache, or built in a worker thread; one build per file at once)."""
        while (pending := self._building.get(file.path)) is not None:
            await pending.wait()
        blob = self._cache.get(file.path)
        if blob is not None:
            self._cache.move_to_end(file.path)
            return blob
        done = self._building[file.path] = trio.Event()
        try:
            # A History of its own: the worker thread then shares no cache with the event loop's.
            history = History(self._history.seed, universe=self._history.universe, outages=self._history.outages)
            blob = await trio.to_thread.run_sync(build_archive_zip, history, file, limiter=self._limiter)
        finally:
            del self._building[file.path]
            done.set()
        self._cache[file.path] = blob
        while len(self._cache) > CACHE_FILES:
            self._cache.popitem(last=False)
        return blob

    def _corrupt(self, file: ArchivePath, data: bytes) -> bytes:
        """``data`` as the corrupting faults leave it for this request of ``file``."""
        f, dice = self._faults, self._dice
        if not (f.archive_truncated or f.archive_bad_checksum) or len(data) < 2:
            return data
        self._asked[file.path] += 1
        keys = (key_of("archive", file.path), self._asked[file.path])
        if dice.hit("archive_truncated", f.archive_truncated, *keys):
            self.stats["fault_archive_truncated"] += 1
            return data[: 1 + int(dice.roll("archive_cut_at", *keys) * (len(data) - 1))]
        if dice.hit("archive_bad_checksum", f.archive_bad_checksum, *keys):
            self.stats["fault_archive_bad_checksum"] += 1
            at = int(dice.roll("archive_flip_at", *keys) * len(data))
            return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        return data

    async def handle(self, scope: dict[str, Any], send: Send) -> None:
        """Answer one HTTP request whose path starts with :data:`ARCHIVE_PREFIX` (GET and HEAD; else 405)."""
        self.stats["archive_requests"] += 1
        method = scope["method"]
        base, slash, path = scope["path"].partition("/data/")
        # Decided as the request arrives, delivered late: what a slow network does.
        if method not in ("GET", "HEAD"):
            file, why = None, "method"
        elif base != ARCHIVE_PREFIX or not slash:
            file, why = None, "malformed"
        else:
            file, why = self.lookup("data/" + path, self._now())
        if why == "missing":
            self.stats["fault_archive_missing"] += 1
        if self._faults.archive_slow:
            self.stats["fault_archive_slow"] += 1
            await trio.sleep(self._faults.archive_slow)
        if file is None:
            status = 405 if why == "method" else 404
            self.stats[f"archive_{status}"] += 1
            await self._send(send, status, _NOT_FOUND if status == 404 else b"", "application/xml", method == "HEAD")
            return
        blob = await self.blob(file)
        if file.checksum:
            await self._send(send, 200, checksum_body(blob, file.name), "text/plain", method == "HEAD")
            return
        # HEAD tells the file's true length and does not count as a repeat of the download.
        data = blob.data if method == "HEAD" else self._corrupt(file, blob.data)
        await self._send(send, 200, data, "application/zip", method == "HEAD")

    async def _send(self, send: Send, status: int, body: bytes, content_type: str, head: bool) -> None:
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if head or not body:
            await send({"type": "http.response.body", "body": b""})
            return
        view = memoryview(body)
        for at in range(0, len(body), CHUNK):
            chunk = bytes(view[at : at + CHUNK])
            more = at + CHUNK < len(body)
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            self.stats["archive_bytes"] += len(chunk)
