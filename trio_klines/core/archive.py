"""Binance's public data archive (data.binance.vision): file names, checksums, CSV rows, what to fetch. Pure.

The archive publishes each market's klines as zip files of one CSV, a month or a day per file, each with
a ``.CHECKSUM`` beside it (``<sha256 hex>  <file name>``)::

    data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip
    data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-03.zip
    data/futures/cm/monthly/klines/BTCUSD_PERP/1h/BTCUSD_PERP-1h-2024-01.zip

Rows are the REST klines' 12 columns as text; spot files from 2025-01-01 give times in microseconds, and
the futures files of later years start with a header line. A month is published after it ends, a day
about a day later; :func:`archive_plan` takes whole months, then days, and leaves the rest to REST.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal, NamedTuple

from ..errors import ConfigError, MalformedMessage
from .markets import Market, get_market, normalize_symbol, validate_interval
from .parse import Candle, parse_rest_row

__all__ = [
    "ARCHIVE_HEADER",
    "ArchiveFile",
    "FileJob",
    "SourcePlan",
    "archive_file",
    "archive_plan",
    "check_checksum",
    "parse_archive_csv",
    "parse_checksum",
    "plan_sources",
]

#: The header line of the archive's newer CSVs (the older ones have none).
ARCHIVE_HEADER: Final = "open_time"
_PREFIX: Final = {"spot": "data/spot", "usdt_futures": "data/futures/um", "coin_futures": "data/futures/cm"}
_CHECKSUM_RE: Final = re.compile(r"([0-9a-f]{64}) [ *]?(\S+)\s*")
Granularity = Literal["monthly", "daily"]


class ArchiveFile(NamedTuple):
    """One archive file: its path under the archive's base URL, its name, and the open times it covers."""

    path: str
    name: str
    start: int
    end: int

    @property
    def checksum_path(self) -> str:
        return self.path + ".CHECKSUM"


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def archive_file(market: Market | str, symbol: str, interval: str, granularity: Granularity, day: date) -> ArchiveFile:
    """The archive file of ``symbol``'s ``interval`` klines for the month (``monthly``) or the day
    (``daily``) holding ``day``. Names are validated before they reach the path (``ConfigError``)."""
    m = market if isinstance(market, Market) else get_market(market)
    symbol = normalize_symbol(symbol)
    interval = validate_interval(m, interval)
    if interval == "1M":  # the archive names its month interval otherwise (unverified): 12 rows a year, REST's
        raise ConfigError("the archive is not used for 1M candles: they come over REST")
    if granularity == "monthly":
        first = date(day.year, day.month, 1)
        period, after = first.strftime("%Y-%m"), _next_month(first)
    elif granularity == "daily":
        first, after = day, day + timedelta(days=1)
        period = first.isoformat()
    else:
        raise ValueError(f"granularity is monthly or daily, not {granularity!r}")
    name = f"{symbol}-{interval}-{period}.zip"
    path = f"{_PREFIX[m.name]}/{granularity}/klines/{symbol}/{interval}/{name}"
    return ArchiveFile(path, name, _ms(first), _ms(after))


def parse_checksum(text: str | bytes, name: str) -> str:
    """The SHA-256 (hex) a ``.CHECKSUM`` body gives for the file ``name``; :class:`MalformedMessage` if the
    body is not one ``<sha256>  <name>`` line for that file."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    match = _CHECKSUM_RE.fullmatch(text.strip() + "\n") if text.strip() else None
    if match is None or match[2] != name:
        raise MalformedMessage(f"not a checksum of {name}: {text[:120]!r}")
    return match[1]


def check_checksum(data: bytes, checksum: str | bytes, name: str) -> None:
    """Raise :class:`MalformedMessage` unless ``data`` (the zip's bytes) hashes to the ``.CHECKSUM``'s value."""
    expected = parse_checksum(checksum, name)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise MalformedMessage(f"{name}: SHA-256 {actual} differs from its .CHECKSUM {expected}")


def parse_archive_csv(text: str | bytes, market: Market | str, symbol: str, interval: str) -> Iterator[Candle]:
    """The candles of an archive CSV (one file's text), in file order, one at a time.

    A header line is skipped; microsecond times (spot from 2025) come out in ms, as everywhere. Raises
    :class:`MalformedMessage` naming the line of the first row that does not parse: a file that does not
    parse is never partly used by a caller that stores only after the whole file parsed.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedMessage(f"archive CSV is not ASCII text: {exc}") from None
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row:
            continue
        if number == 1 and row[0].strip() == ARCHIVE_HEADER:
            continue
        try:
            fields: list[object] = list(row)
            for i in (0, 6, 8):
                fields[i] = int(row[i])
            yield parse_rest_row(fields, market, symbol, interval)
        except (ValueError, IndexError, MalformedMessage) as exc:
            raise MalformedMessage(f"archive CSV line {number}: {exc}") from None


def archive_plan(
    start: int, end: int, published_before: int, *, monthly: bool = True
) -> tuple[list[tuple[Granularity, date]], int]:
    """The archive files that cover ``[start, end)`` (ms), in order, and the instant from which REST takes
    the rest (``end`` when nothing is left).

    A month whose whole span is wanted comes from its monthly file, every other day from its daily file,
    as long as the file's period ends at or before ``published_before`` (ms: what the archive has
    published by now). Files may reach past ``start`` and ``end``: their rows outside are dropped.
    ``monthly=False`` takes daily files only.
    """
    files: list[tuple[Granularity, date]] = []
    if end <= start:
        return files, end
    day = datetime.fromtimestamp(start / 1000, UTC).date()
    while _ms(day) < end:
        month_end = _next_month(date(day.year, day.month, 1))
        if monthly and day.day == 1 and _ms(month_end) <= min(end, published_before):
            files.append(("monthly", day))
            day = month_end
        elif _ms(day + timedelta(days=1)) <= published_before:
            files.append(("daily", day))
            day += timedelta(days=1)
        else:
            break
    return files, min(max(_ms(day), start), end)


class FileJob(NamedTuple):
    """One archive file to fetch for a series, and the ranges ``[lo, hi)`` of its rows that are wanted."""

    file: ArchiveFile
    wanted: tuple[tuple[int, int], ...]


class SourcePlan(NamedTuple):
    """Where a series' missing ranges come from: archive ``files`` (in time order), ``rest`` ranges (the
    still-unpublished tail, or ranges the archive does not serve), and ``skipped`` ranges before the
    series' first candle (``first`` of :func:`plan_sources`), fetched from nowhere."""

    files: list[FileJob]
    rest: list[tuple[int, int]]
    skipped: list[tuple[int, int]]


#: Intervals whose months are too large to hold a file's rows in memory at once: daily files only
#: (a month of ``1s`` is 2.6 million rows; a day, 86,400).
DAILY_ONLY: Final = frozenset({"1s"})


def plan_sources(
    market: Market | str,
    symbol: str,
    interval: str,
    ranges: Sequence[tuple[int, int]],
    published_before: int,
    *,
    first: int | None = None,
) -> SourcePlan:
    """Split ``ranges`` (``[lo, hi)`` in ms, sorted, disjoint) of one series between the archive and REST.

    Files are those of :func:`archive_plan` (whole months, then days) published before
    ``published_before``; a file needed by several ranges is fetched once. ``first`` is the open time
    of the series' first candle if known: no file is fetched for a period that ends before it, and
    what lies before it is ``skipped``. ``1M`` comes wholly from REST. Names are validated
    (:class:`ConfigError`).
    """
    m = market if isinstance(market, Market) else get_market(market)
    interval = validate_interval(m, interval)
    if interval == "1M":
        return SourcePlan([], [(lo, hi) for lo, hi in ranges if lo < hi], [])
    jobs: dict[str, tuple[ArchiveFile, list[tuple[int, int]]]] = {}
    rest: list[tuple[int, int]] = []
    skipped: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if lo >= hi:
            continue
        start = lo
        if first is not None and first > lo:
            start = min(max(first, lo), hi)
        planned, rest_from = archive_plan(start, hi, published_before, monthly=interval not in DAILY_ONLY)
        files = [archive_file(m, symbol, interval, granularity, day) for granularity, day in planned]
        for f in files:
            jobs.setdefault(f.path, (f, []))[1].append((max(f.start, lo), min(f.end, hi)))
        covered_from = max(files[0].start, lo) if files else rest_from
        if lo < covered_from:
            skipped.append((lo, covered_from))
        if rest_from < hi:
            rest.append((rest_from, hi))
    ordered = sorted(jobs.values(), key=lambda item: item[0].start)
    return SourcePlan([FileJob(f, tuple(w)) for f, w in ordered], rest, skipped)
