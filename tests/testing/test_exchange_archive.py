"""The fake exchange's data archive (data.binance.vision): paths, zips, checksums, publication and faults,
read by plain httpx clients and the client-side pure code of :mod:`trio_klines.core.archive`."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from datetime import UTC, date, datetime

import httpx
import pytest
import trio
import trio.testing

from trio_klines.core.archive import ArchiveFile, archive_file, check_checksum, parse_archive_csv, parse_checksum
from trio_klines.core.markets import MARKETS
from trio_klines.errors import ConfigError, MalformedMessage
from trio_klines.testing import ExchangeConfig, FakeExchange, Faults, History, open_exchange, parse_faults
from trio_klines.testing.archive import FUTURES_HEADER, build_archive_zip, checksum_body, parse_archive_path
from trio_klines.testing.wire import rest_row

pytestmark = pytest.mark.timeout(60)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


#: Exchange start: 2025-03-10 00:00. With the default lag of a day, February's monthly files and the daily
#: files up to 2025-03-08 are published; 2025-03-09 and March's monthly are not.
START = ms("2025-03-10T00:00")


def url(ex: FakeExchange, file: ArchiveFile, suffix: str = "") -> str:
    return f"{ex.endpoints['spot']['archive']}/{file.path}{suffix}"


async def download(client: httpx.AsyncClient, ex: FakeExchange, file: ArchiveFile) -> tuple[bytes, bytes]:
    """The zip's bytes and its .CHECKSUM's, both answered 200."""
    zipped = await client.get(url(ex, file))
    checksum = await client.get(url(ex, file, ".CHECKSUM"))
    assert (zipped.status_code, checksum.status_code) == (200, 200), (file.path, zipped.status_code)
    assert zipped.headers["content-length"] == str(len(zipped.content))
    return zipped.content, checksum.content


def csv_text(data: bytes, file: ArchiveFile) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        [member] = archive.infolist()
        assert member.filename == file.name.removesuffix(".zip") + ".csv"
        assert member.compress_type == zipfile.ZIP_DEFLATED
        return archive.read(member).decode("ascii")


async def status(client: httpx.AsyncClient, ex: FakeExchange, file: ArchiveFile, suffix: str = "") -> int:
    return (await client.get(url(ex, file, suffix))).status_code


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("market", list(MARKETS))
@pytest.mark.parametrize("granularity", ["monthly", "daily"])
def test_paths_of_the_client_parse_to_the_same_file(market: str, granularity: str) -> None:
    for symbol in History().universe.symbols(market):
        for interval in MARKETS[market].intervals:
            if interval == "1M":
                continue
            for day in (date(2019, 12, 31), date(2024, 2, 29), date(2025, 1, 1)):
                file = archive_file(market, symbol, interval, granularity, day)  # type: ignore[arg-type]
                parsed = parse_archive_path(file.path)
                assert parsed is not None, file.path
                assert (parsed.market, parsed.symbol, parsed.interval) == (market, symbol, interval)
                assert (parsed.path, parsed.name, parsed.start, parsed.end) == tuple(file)
                assert not parsed.checksum
                assert parse_archive_path(file.checksum_path) == parsed._replace(checksum=True)


@pytest.mark.parametrize(
    "path",
    [
        "data/spot/monthly/klines/btcusdt/1m/btcusdt-1m-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/ETHUSDT-1m-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1h-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-13.zip",
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-02-30.zip",
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-02.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-02-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-1969-12.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.zip\n",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.zipx",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.csv",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.zip.checksum",
        "data/futures/xm/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.zip",
        "data/spot/monthly/klines/../../../BTCUSDT/1m/BTCUSDT-1m-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/../1m/BTCUSDT-1m-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-２０２５-01.zip",
        "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.zip",
        "",
    ],
)
def test_malformed_paths_name_no_file(path: str) -> None:
    assert parse_archive_path(path) is None


# --- content ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "symbol", "interval", "granularity", "day", "micros", "header"),
    [
        ("spot", "BTCUSDT", "1h", "monthly", date(2024, 12, 1), False, False),
        ("spot", "BTCUSDT", "1m", "daily", date(2025, 3, 8), True, False),
        ("spot", "ETHBTC", "1d", "monthly", date(2025, 2, 1), True, False),
        ("usdt_futures", "BTCUSDT", "1h", "monthly", date(2025, 2, 1), False, True),
        ("usdt_futures", "ETHUSDT", "5m", "daily", date(2022, 12, 31), False, False),
        ("coin_futures", "BTCUSD_PERP", "15m", "daily", date(2025, 3, 8), False, True),
        ("coin_futures", "ETHUSD_PERP", "1w", "monthly", date(2025, 1, 1), False, True),
        ("coin_futures", "BNBUSD_PERP", "4h", "monthly", date(2022, 6, 1), False, False),
    ],
)
async def test_a_file_is_the_ground_truth_of_its_period_and_matches_its_checksum(
    market: str, symbol: str, interval: str, granularity: str, day: date, micros: bool, header: bool
) -> None:
    file = archive_file(market, symbol, interval, granularity, day)  # type: ignore[arg-type]
    async with open_exchange(seed=3, start=START) as ex, httpx.AsyncClient(timeout=10) as client:
        data, checksum = await download(client, ex, file)
        assert checksum.endswith(b"  " + file.name.encode() + b"\n") and checksum.count(b"\n") == 1
        check_checksum(data, checksum, file.name)
        text = csv_text(data, file)
        expected = ex.ground_truth(market, symbol, interval, file.start, file.end)
        spec = ex.history.spec(market, symbol)
        klines = [ex.history.kline(spec, interval, c.open_time) for c in expected]
    assert expected and list(parse_archive_csv(text, market, symbol, interval)) == expected
    assert text.endswith("\n") and "\r" not in text
    rows = list(csv.reader(text.splitlines()))
    assert (rows[0] == FUTURES_HEADER.split(",")) is header
    rows = rows[1:] if header else rows
    assert len(rows) == len(expected)
    for row, kline in zip(rows, klines, strict=True):
        rest = [str(v) for v in rest_row(spec, kline)]
        # Every number digit for digit the REST's; the times in µs where Binance writes them so.
        assert row[1:6] + row[7:] == rest[1:6] + rest[7:]
        factor, extra = (1000, 999) if micros else (1, 0)
        assert (int(row[0]), int(row[6])) == (kline.open_time * factor, kline.close_time * factor + extra)


async def test_a_monthly_1m_file_streams_in_chunks_and_is_cached() -> None:
    file = archive_file("spot", "BTCUSDT", "1m", "monthly", date(2025, 2, 1))
    async with open_exchange(seed=3, start=START) as ex, httpx.AsyncClient(timeout=20) as client:
        chunks = []
        async with client.stream("GET", url(ex, file)) as response:
            assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
            chunks = [chunk async for chunk in response.aiter_raw()]
        data = b"".join(chunks)
        assert len(data) == int(response.headers["content-length"]) > 1 << 20
        # Served again from the cache, byte for byte, and the same as a direct build.
        again, checksum = await download(client, ex, file)
        assert again == data == build_archive_zip(History(3), parse_archive_path(file.path)).data  # type: ignore[arg-type]
        check_checksum(data, checksum, file.name)
        assert ex.stats["archive_bytes"] >= 2 * len(data)
        candles = list(parse_archive_csv(csv_text(data, file), "spot", "BTCUSDT", "1m"))
        assert len(candles) == 28 * 1440
        assert candles == ex.ground_truth("spot", "BTCUSDT", "1m", file.start, file.end)


async def test_building_a_file_leaves_the_server_responsive() -> None:
    file = archive_file("usdt_futures", "ETHUSDT", "1m", "monthly", date(2025, 1, 1))
    async with open_exchange(seed=3, start=START) as ex, httpx.AsyncClient(timeout=20) as client:
        done = trio.Event()

        async def fetch() -> None:
            assert await status(client, ex, file) == 200
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            # Every task waits: the request has arrived and its file is being built in a worker thread.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert ex.stats["archive_requests"] == 1
            # The month of 1m candles is being built (most of a second): REST answers meanwhile.
            began = time.monotonic()
            assert (await client.get(ex.endpoints["usdt_futures"]["rest"] + "/fapi/v1/ping")).status_code == 200
            assert time.monotonic() - began < 0.5
            assert not done.is_set()


async def test_head_tells_the_length_without_a_body() -> None:
    file = archive_file("usdt_futures", "BTCUSDT", "1d", "monthly", date(2025, 1, 1))
    async with open_exchange(seed=3, start=START) as ex, httpx.AsyncClient(timeout=10) as client:
        head = await client.head(url(ex, file))
        data, _ = await download(client, ex, file)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(data)
        missing = await client.head(url(ex, archive_file("spot", "BTCUSDT", "1d", "monthly", date(2025, 3, 1))))
        assert missing.status_code == 404 and missing.content == b""
        assert (await client.post(url(ex, file))).status_code == 405


async def test_every_market_points_at_the_one_archive() -> None:
    async with open_exchange(seed=3, start=START) as ex:
        archives = {ex.endpoints[m]["archive"] for m in MARKETS}
        assert len(archives) == 1 and archives.pop().endswith("/archive")
        assert {ex.markets[m].archive_url for m in MARKETS} == {ex.endpoints["spot"]["archive"]}


# --- what exists ------------------------------------------------------------------------------


async def test_only_ended_periods_are_published_after_the_lag() -> None:
    daily = [archive_file("spot", "BTCUSDT", "1h", "daily", date(2025, 3, d)) for d in (8, 9, 10, 11)]
    monthly = [archive_file("spot", "BTCUSDT", "1h", "monthly", date(2025, m, 1)) for m in (2, 3, 4)]
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_exchange(seed=3, start=START) as ex:
            assert [await status(client, ex, f) for f in daily] == [200, 404, 404, 404]
            assert [await status(client, ex, f, ".CHECKSUM") for f in daily] == [200, 404, 404, 404]
            assert [await status(client, ex, f) for f in monthly] == [200, 404, 404]
            assert ex.stats["archive_requests"] == 11 and ex.stats["archive_404"] == 8
        async with open_exchange(seed=3, start=START, archive_lag=0) as ex:
            assert [await status(client, ex, f) for f in daily] == [200, 200, 404, 404]
            assert [await status(client, ex, f) for f in monthly] == [200, 404, 404]
        # A weekly candle that opens in a month holds the month's file back until it closes (2025-02-03).
        weekly = archive_file("spot", "BTCUSDT", "1w", "monthly", date(2025, 1, 1))
        async with open_exchange(seed=3, start=ms("2025-02-03T12:00")) as ex:
            assert await status(client, ex, weekly) == 404
        async with open_exchange(seed=3, start=ms("2025-02-04T00:00")) as ex:
            assert await status(client, ex, weekly) == 200


async def test_listing_delisting_halts_and_outages_shape_the_files() -> None:
    symbol = "SYM0001USDT"
    outage = (ms("2025-03-06T02:00"), ms("2025-03-06T05:30"))
    options = {
        "seed": 3,
        "start": START,
        "symbols": 1,
        "listings": {f"spot:{symbol}": "2025-02-18T00:00"},
        "delistings": {f"spot:{symbol}": "2025-03-07T12:30:30"},
        "halts": {f"spot:{symbol}": ("2025-03-04T10:00:30", "2025-03-04T12:00")},
        "faults": f"outage={outage[0]}-{outage[1]}",
    }

    def daily(day: int, interval: str = "1m") -> ArchiveFile:
        return archive_file("spot", symbol, interval, "daily", date(2025, 3, day))

    async with open_exchange(**options) as ex, httpx.AsyncClient(timeout=10) as client:
        # Not listed yet all January, and not trading after its delisting: no file.
        assert await status(client, ex, archive_file("spot", symbol, "1d", "monthly", date(2025, 1, 1))) == 404
        assert await status(client, ex, archive_file("spot", symbol, "1h", "daily", date(2025, 2, 17))) == 404
        assert await status(client, ex, daily(8, "1h")) == 404
        assert await status(client, ex, archive_file("spot", "NOPEUSDT", "1h", "daily", date(2025, 3, 1))) == 404

        async def rows(file: ArchiveFile) -> list[list[str]]:
            data, checksum = await download(client, ex, file)
            check_checksum(data, checksum, file.name)
            text = csv_text(data, file)
            market, _, interval = "spot", symbol, file.path.split("/")[-2]
            assert list(parse_archive_csv(text, market, symbol, interval)) == ex.ground_truth(
                market, symbol, interval, file.start, file.end
            )
            return list(csv.reader(text.splitlines()))

        february = await rows(archive_file("spot", symbol, "1d", "monthly", date(2025, 2, 1)))
        assert [int(r[0]) // 1000 for r in february] == [ms(f"2025-02-{d}T00:00") for d in range(18, 29)]
        # The outage: no candle opens from 02:00 to 05:30.
        assert len(await rows(daily(6))) == 1440 - 210
        # The halt: the 10:00 candle closes early, at 10:00:29.999, and none opens until 12:00.
        halted = await rows(daily(4))
        assert len(halted) == 1440 - 119
        early = next(r for r in halted if int(r[0]) == ms("2025-03-04T10:00") * 1000)
        assert int(early[6]) == ms("2025-03-04T10:00:30") * 1000 - 1
        # The delisting: the day ends at the 12:30 candle, closed at 12:30:29.999.
        delisted = await rows(daily(7))
        assert len(delisted) == 12 * 60 + 31
        assert int(delisted[-1][6]) == ms("2025-03-07T12:30:30") * 1000 - 1


# --- faults -----------------------------------------------------------------------------------


async def outcomes(faults: str, tries: int, *, seed: int = 5) -> tuple[list[str], FakeExchange]:
    """What each of ``tries`` downloads of one zip came to: ``ok``, ``bad`` (checksum) or ``short``."""
    file = archive_file("usdt_futures", "BTCUSDT", "15m", "daily", date(2025, 3, 1))
    seen = []
    async with open_exchange(seed=seed, start=START, faults=faults) as ex, httpx.AsyncClient(timeout=10) as client:
        length = int((await client.head(url(ex, file))).headers["content-length"])
        for _ in range(tries):
            data, checksum = await download(client, ex, file)
            try:
                check_checksum(data, checksum, file.name)
                seen.append("ok")
            except MalformedMessage:
                seen.append("short" if len(data) < length else "bad")
                assert len(data) <= length
    return seen, ex


async def test_bad_checksum_flips_a_byte_the_checksum_catches() -> None:
    seen, ex = await outcomes("archive_bad_checksum=1", 4)
    assert seen == ["bad"] * 4 and ex.stats["fault_archive_bad_checksum"] == 4
    seen, ex = await outcomes("archive_bad_checksum=0.5", 12)
    assert {"ok", "bad"} == set(seen) and ex.stats["fault_archive_bad_checksum"] == seen.count("bad")
    # Seeded: the same requests are hit on every run.
    assert (await outcomes("archive_bad_checksum=0.5", 12))[0] == seen


async def test_truncated_cuts_the_body_under_a_matching_content_length() -> None:
    seen, ex = await outcomes("archive_truncated=1", 3)
    assert seen == ["short"] * 3 and ex.stats["fault_archive_truncated"] == 3
    seen, _ = await outcomes("archive_truncated=0.5", 12)
    assert {"ok", "short"} == set(seen)
    assert (await outcomes("archive_truncated=0.5", 12))[0] == seen


async def test_missing_days_hides_the_newest_published_days_and_their_month() -> None:
    def daily(d: date) -> ArchiveFile:
        return archive_file("coin_futures", "BTCUSD_PERP", "1h", "daily", d)

    def monthly(d: date) -> ArchiveFile:
        return archive_file("coin_futures", "BTCUSD_PERP", "1h", "monthly", d)

    async with httpx.AsyncClient(timeout=10) as client:
        # Newest published day 2025-03-08: 03-07 and 03-08 are missing, February's month is not.
        async with open_exchange(seed=3, start=START, faults="archive_missing_days=2") as ex:
            days = [await status(client, ex, daily(date(2025, 3, d))) for d in (5, 6, 7, 8, 9)]
            assert days == [200, 200, 404, 404, 404]
            assert await status(client, ex, daily(date(2025, 3, 7)), ".CHECKSUM") == 404
            assert await status(client, ex, monthly(date(2025, 2, 1))) == 200
            # 03-09 is simply unpublished: not a fault.
            assert ex.stats["fault_archive_missing"] == 3
        # Newest published day 2025-03-01: 02-28 and 03-01 are missing, and so is February's file.
        async with open_exchange(seed=3, start=ms("2025-03-03T00:00"), faults="archive_missing_days=2") as ex:
            days = [await status(client, ex, daily(date(2025, m, d))) for m, d in ((2, 27), (2, 28), (3, 1))]
            assert days == [200, 404, 404]
            assert await status(client, ex, monthly(date(2025, 2, 1))) == 404
            assert await status(client, ex, monthly(date(2025, 1, 1))) == 200


async def test_slow_delays_every_archive_response() -> None:
    file = archive_file("spot", "ETHUSDT", "1d", "daily", date(2025, 3, 1))
    async with (
        open_exchange(seed=3, start=START, faults="archive_slow=0.3") as ex,
        httpx.AsyncClient(timeout=10) as client,
    ):
        for suffix in ("", ".CHECKSUM"):
            began = time.monotonic()
            assert await status(client, ex, file, suffix) == 200
            assert time.monotonic() - began >= 0.3
        began = time.monotonic()
        assert await status(client, ex, archive_file("spot", "ETHUSDT", "1d", "daily", date(2025, 3, 9))) == 404
        assert time.monotonic() - began >= 0.3
        assert ex.stats["fault_archive_slow"] == 3
        # The REST is not slowed.
        began = time.monotonic()
        assert (await client.get(ex.endpoints["spot"]["rest"] + "/api/v3/ping")).status_code == 200
        assert time.monotonic() - began < 0.3


def test_archive_fault_keys_parse_and_are_checked() -> None:
    text = "archive_bad_checksum=0.1,archive_truncated=0.2,archive_missing_days=3,archive_slow=0.5"
    faults = parse_faults(text)
    assert faults == Faults(archive_bad_checksum=0.1, archive_truncated=0.2, archive_missing_days=3, archive_slow=0.5)
    assert parse_faults(str(faults)) == faults and isinstance(faults.archive_missing_days, int)
    for bad, message in [
        ("archive_missing_days=1.5", "whole number of days"),
        ("archive_missing_days=-1", "whole number of days >= 0"),
        ("archive_missing_days=inf", "whole number of days"),
        ("archive_truncated=2", "probability from 0 to 1"),
        ("archive_slow=-1", "seconds >= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_faults(bad)


def test_archive_lag_is_checked() -> None:
    with pytest.raises(ConfigError, match="archive_lag"):
        ExchangeConfig(archive_lag=-1)


# --- bad requests -----------------------------------------------------------------------------


async def raw_get(ex: FakeExchange, target: str) -> bytes:
    """The status line of ``GET target`` sent as is (httpx would normalise ``..`` away)."""
    host, _, port = ex.endpoints["spot"]["archive"].removeprefix("http://").partition("/")[0].rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some()
            if not chunk:
                break
            head += chunk
    return head.partition(b"\r\n")[0]


@pytest.mark.parametrize(
    "path",
    [
        "data/spot/monthly/klines/btcusdt/1m/btcusdt-1m-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/2m/BTCUSDT-2m-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1M/BTCUSDT-1M-2025-01.zip",
        "data/futures/um/monthly/klines/BTCUSDT/1s/BTCUSDT-1s-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-13.zip",
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-02-29.zip",
        "data/spot/monthly/klines/NOPEUSDT/1m/NOPEUSDT-1m-2025-01.zip",
        "data/futures/cm/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.zip",
        "data/spot/monthly/klines/%2E%2E/%2E%2E/BTCUSDT/1m/BTCUSDT-1m-2025-01.zip",
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01.zip%00",
        "data/",
        "",
    ],
)
async def test_bad_paths_are_404(path: str) -> None:
    async with open_exchange(seed=3, start=START) as ex, httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{ex.endpoints['spot']['archive']}/{path}")
        assert response.status_code == 404
        assert ex.stats["archive_404"] == 1


async def test_dot_segments_sent_as_is_are_404() -> None:
    good = "/archive/" + archive_file("spot", "BTCUSDT", "1d", "monthly", date(2025, 1, 1)).path
    async with open_exchange(seed=3, start=START) as ex:
        assert await raw_get(ex, good) == b"HTTP/1.1 200 "
        for target in (
            "/archive/data/spot/../spot/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2025-01.zip",
            "/archive/../spot/api/v3/ping",
            "/archive/data/spot/monthly/klines/BTCUSDT/1d/../../../../../../../etc/passwd",
            "/archive",
        ):
            assert (await raw_get(ex, target)).startswith(b"HTTP/1.1 404"), target


def test_checksum_body_is_what_the_client_reads() -> None:
    file = parse_archive_path(archive_file("spot", "ETHBTC", "1d", "monthly", date(2024, 1, 1)).path)
    assert file is not None
    blob = build_archive_zip(History(3), file)
    assert parse_checksum(checksum_body(blob, file.name), file.name) == blob.sha256
    assert build_archive_zip(History(3), file) == blob  # deterministic bytes
