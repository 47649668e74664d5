"""Ended series: marked by a universe that stopped recording them, shown by status, never fatal."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.store.dataset import Store
from trio_klines.store.ended import ENDED_PATH, Ended, mark_ended, read_ended, unmark_ended
from trio_klines.store.status import store_status

LUNA = Series("usdt_futures", "LUNAUSDT", "1m")
ETH = Series("spot", "ETHUSDT", "1h")


def test_marks_round_trip_and_a_series_listed_again_is_taken_off(tmp_path: Path) -> None:
    assert read_ended(tmp_path) == {}
    mark_ended(tmp_path, [LUNA, ETH], 1_700_000_000_000, {LUNA: "SETTLING"})
    at = 1_700_000_000_000
    assert read_ended(tmp_path) == {LUNA: Ended(at, "SETTLING"), ETH: Ended(at, "delisted")}
    unmark_ended(tmp_path, [ETH])
    assert read_ended(tmp_path) == {LUNA: Ended(1_700_000_000_000, "SETTLING")}
    assert not list((tmp_path / "_meta").glob(".*"))  # no temporary file left


@pytest.mark.parametrize(
    "text",
    [
        "{",
        '{"format": 9, "ended": {}}',
        '{"format": 1, "ended": {"a/b": {"at": 1, "why": "x"}}}',
        '{"format": 1, "ended": {"spot/1m/../x": {"at": 1, "why": "x"}}}',
        '{"format": 1, "ended": {"spot/1m/BTCUSDT": {"at": "soon", "why": "x"}}}',
    ],
)
def test_an_unreadable_file_reads_as_nothing_ended_with_an_error(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ENDED_PATH).parent.mkdir()
    (tmp_path / ENDED_PATH).write_text(text, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
        assert read_ended(tmp_path) == {}
    assert "cannot read" in caplog.text


def test_status_shows_an_ended_series_as_ended_not_missing(tmp_path: Path) -> None:
    start = 1_704_067_200_000
    with Store(tmp_path) as store:
        store.append([Candle(*LUNA, start + i * 60_000, 1, 1, 1, 1, 1, 1, 1, 1, 1) for i in range(3)])
    mark_ended(tmp_path, [LUNA], start + 3 * 60_000, {LUNA: "SETTLING"})
    (row,) = store_status(tmp_path)
    assert (row.missing, row.ended, row.ended_why) == (0, start + 3 * 60_000, "SETTLING")
    assert row.as_dict()["ended"] == start + 3 * 60_000
