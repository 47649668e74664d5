"""The archive's pure side: file names, checksums, the real archive CSVs, the plan of files and REST."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_realdata import REALDATA, csv_files, market_of, read_archive

from trio_klines.core.archive import (
    archive_file,
    archive_plan,
    check_checksum,
    parse_archive_csv,
    parse_checksum,
)
from trio_klines.errors import ConfigError, MalformedMessage

DAY = 86_400_000


def ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def test_file_paths_follow_the_archive_layout_of_each_market() -> None:
    spot = archive_file("spot", "btcusdt", "1m", "monthly", date(2024, 1, 17))
    assert spot.path == "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip"
    assert (spot.start, spot.end) == (ms(date(2024, 1, 1)), ms(date(2024, 2, 1)))
    um = archive_file("usdt_futures", "BTCUSDT", "1h", "daily", date(2024, 12, 31))
    assert um.path == "data/futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-12-31.zip"
    assert um.checksum_path == um.path + ".CHECKSUM" and um.end - um.start == DAY
    cm = archive_file("coin_futures", "BTCUSD_PERP", "5m", "monthly", date(2023, 12, 5))
    assert cm.path == "data/futures/cm/monthly/klines/BTCUSD_PERP/5m/BTCUSD_PERP-5m-2023-12.zip"
    assert cm.end == ms(date(2024, 1, 1))


@pytest.mark.parametrize(
    ("market", "symbol", "interval", "message"),
    [
        ("spot", "../etc", "1m", "symbol"),
        ("spot", "BTCUSDT", "2m", "interval"),
        ("margin", "BTCUSDT", "1m", "market"),
        ("spot", "BTCUSDT", "1M", "over REST"),
    ],
)
def test_names_are_checked_before_they_reach_a_path(market: str, symbol: str, interval: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        archive_file(market, symbol, interval, "daily", date(2024, 1, 1))


def test_a_checksum_must_name_the_file_and_match_its_bytes() -> None:
    data = b"PK\x03\x04 a zip"
    digest = hashlib.sha256(data).hexdigest()
    name = "BTCUSDT-1m-2024-01.zip"
    assert parse_checksum(f"{digest}  {name}\n", name) == digest
    check_checksum(data, f"{digest}  {name}\n".encode(), name)
    with pytest.raises(MalformedMessage, match=r"differs from its \.CHECKSUM"):
        check_checksum(data + b"!", f"{digest}  {name}", name)  # a truncated or altered download
    for bad in ["", "<html>Not Found</html>", f"{digest}  BTCUSDT-1m-2024-02.zip", f"{digest[:-1]}  {name}"]:
        with pytest.raises(MalformedMessage, match="not a checksum"):
            parse_checksum(bad, name)


@pytest.mark.parametrize("path", csv_files(), ids=lambda p: p.name)
def test_every_real_archive_file_parses_to_binance_s_values(path: Path) -> None:
    symbol = "ADABTC" if "adabtc" in path.name else "BTCUSDT"
    interval = "1h" if "_1h_" in path.name else "1m"
    candles = list(parse_archive_csv(path.read_bytes(), market_of(path.name), symbol, interval))
    assert candles == read_archive(path)  # the same values as each row through the REST row parser


def test_a_header_line_is_skipped_and_a_bad_row_names_its_line() -> None:
    path = REALDATA / "bbgo_usdm_vision_btcusdt_1m_2022-05-06_fullday.csv"
    lines = path.read_text().splitlines()
    header = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
              "taker_buy_quote_volume,ignore")  # fmt: skip
    with_header = "\n".join([header, *lines[:5]]) + "\n"
    assert len(list(parse_archive_csv(with_header, "usdt_futures", "BTCUSDT", "1m"))) == 5
    broken = "\n".join([*lines[:3], lines[3][:25], *lines[4:6]])  # a truncated row
    with pytest.raises(MalformedMessage, match="line 4"):
        list(parse_archive_csv(broken, "usdt_futures", "BTCUSDT", "1m"))
    with pytest.raises(MalformedMessage, match="not ASCII"):
        list(parse_archive_csv("\u00e9".encode() + b"\xff", "usdt_futures", "BTCUSDT", "1m"))


def test_whole_months_come_from_monthly_files_and_the_unpublished_tail_from_rest() -> None:
    start, end = ms(date(2024, 1, 15)), ms(date(2024, 4, 10)) + 5 * 3_600_000
    files, rest_from = archive_plan(start, end, published_before=ms(date(2024, 4, 5)))
    assert files[:17] == [("daily", date(2024, 1, d)) for d in range(15, 32)]
    assert files[17:19] == [("monthly", date(2024, 2, 1)), ("monthly", date(2024, 3, 1))]
    assert files[19:] == [("daily", date(2024, 4, d)) for d in range(1, 5)]
    assert rest_from == ms(date(2024, 4, 5))
    assert archive_plan(start, end, published_before=ms(date(2023, 1, 1))) == ([], start)  # nothing out yet


@settings(max_examples=300, deadline=None)
@given(
    st.integers(ms(date(2020, 1, 1)), ms(date(2024, 12, 31))),
    st.integers(0, 400 * DAY),
    st.integers(-30 * DAY, 400 * DAY),
)
def test_the_plan_covers_the_span_once_with_published_files_only(start: int, length: int, lag: int) -> None:
    end, published = start + length, start + lag
    files, rest_from = archive_plan(start, end, published)
    position = ms(datetime.fromtimestamp(start / 1000, UTC).date())
    for granularity, day in files:
        f = archive_file("spot", "BTCUSDT", "1m", granularity, day)
        assert f.start == position  # contiguous, in order, no overlap
        assert f.end <= published  # only what the archive has published
        assert f.start < end
        if granularity == "monthly":
            assert f.end <= end  # a month comes whole only when all of it is wanted
        position = f.end
    if length == 0:
        assert (files, rest_from) == ([], end)
        return
    assert rest_from == min(max(position, start), end)  # REST starts where the files stop
    if rest_from < end:
        assert position + DAY > published  # the next day's file is not out yet: nothing left to the archive
