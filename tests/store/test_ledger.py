"""The exchange-gap ledger: confirmed and suspected ranges kept apart, its file format, old files, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trio_klines.core.markets import Series
from trio_klines.store.dataset import Store
from trio_klines.store.ledger import LEDGER_FORMAT, ExchangeGapLedger
from trio_klines.store.status import store_status
from trio_klines.testing import ground_truth

BTC = Series("usdt_futures", "BTCUSDT", "1m")
MIN = 60_000
START = 1_767_225_600_000  # 2026-01-01


def test_ledger_survives_a_damaged_file(tmp_path: Path) -> None:
    ledger = ExchangeGapLedger(tmp_path)
    ledger.confirm(BTC, 0, MIN)
    ledger.confirm(BTC, MIN, 2 * MIN)
    assert ledger.save()
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [(0, 2 * MIN)]
    ledger.path.write_text("{not json", encoding="utf-8")
    assert ExchangeGapLedger(tmp_path).all() == {}


def test_ledger_survives_a_full_disk_and_writes_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    import errno
    import os

    ledger = ExchangeGapLedger(tmp_path)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    ledger.confirm(BTC, 0, 2 * MIN)
    assert not ledger.save()  # never raises: the backfill goes on
    assert "No space left on device" in caplog.text
    assert list(ledger.ranges(BTC)) == [(0, 2 * MIN)]  # still known in memory
    assert not ledger.path.exists() and not list(ledger.path.parent.iterdir())  # no temporary file left
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert ledger.save()
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [(0, 2 * MIN)]


def test_adding_to_the_ledger_does_no_file_work(tmp_path: Path) -> None:
    ledger = ExchangeGapLedger(tmp_path)
    ledger.confirm(BTC, 0, MIN)
    assert ledger.dirty and not ledger.path.exists()
    snapshot = ledger.snapshot()
    assert snapshot is not None
    ledger.confirm(BTC, 5 * MIN, 6 * MIN)  # added while the snapshot is being written: still to write
    assert ledger.write(snapshot) and ledger.dirty
    assert ledger.save() and not ledger.dirty and ledger.snapshot() is None
    assert list(ExchangeGapLedger(tmp_path).ranges(BTC)) == [(0, MIN), (5 * MIN, 6 * MIN)]


def test_suspected_and_confirmed_ranges_are_kept_apart_and_written_with_the_format(tmp_path: Path) -> None:
    ledger = ExchangeGapLedger(tmp_path)
    ledger.suspect(BTC, 10 * MIN, 20 * MIN)
    ledger.suspect(BTC, 30 * MIN, 40 * MIN)
    assert list(ledger.ranges(BTC)) == []  # only confirmed ranges are exchange gaps
    ledger.confirm(BTC, 10 * MIN, 20 * MIN)
    ledger.clear(BTC, 30 * MIN, 35 * MIN)  # candles came back there
    ledger.suspect(BTC, 12 * MIN, 14 * MIN)  # already confirmed: stays so
    assert list(ledger.ranges(BTC)) == [(10 * MIN, 20 * MIN)]
    assert list(ledger.suspected(BTC)) == [(35 * MIN, 40 * MIN)]
    assert ledger.save()
    raw = json.loads(ledger.path.read_text(encoding="utf-8"))
    assert raw == {"format": LEDGER_FORMAT, "confirmed": {"usdt_futures/1m/BTCUSDT": [[10 * MIN, 20 * MIN]]},
                   "suspected": {"usdt_futures/1m/BTCUSDT": [[35 * MIN, 40 * MIN]]}}  # fmt: skip
    again = ExchangeGapLedger(tmp_path)
    assert again.all() == {BTC: ledger.ranges(BTC)}
    assert again.all_suspected() == {BTC: ledger.suspected(BTC)}


def test_clearing_or_suspecting_nothing_new_leaves_the_ledger_clean(tmp_path: Path) -> None:
    ledger = ExchangeGapLedger(tmp_path)
    ledger.confirm(BTC, 0, MIN)
    assert ledger.save() and not ledger.dirty
    ledger.clear(BTC, 5 * MIN, 6 * MIN)
    ledger.suspect(BTC, 0, MIN)
    assert not ledger.dirty


def test_a_ledger_of_the_first_release_is_loaded_as_suspected_and_rewritten_once(tmp_path: Path) -> None:
    # The first release wrote one empty answer as an exchange gap for good: such a range is re-checked.
    path = tmp_path / "_meta" / "exchange_gaps.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"usdt_futures/1m/BTCUSDT": [[0, 2 * MIN], [5 * MIN, 9 * MIN]]}), encoding="utf-8")
    ledger = ExchangeGapLedger(tmp_path)
    assert ledger.all() == {}
    assert list(ledger.suspected(BTC)) == [(0, 2 * MIN), (5 * MIN, 9 * MIN)]
    assert ledger.dirty  # converted at the next save, even if nothing else changes
    ledger.confirm(BTC, 5 * MIN, 9 * MIN)  # a check confirmed this one
    assert ledger.save()
    again = ExchangeGapLedger(tmp_path)
    assert not again.dirty
    assert list(again.ranges(BTC)) == [(5 * MIN, 9 * MIN)] and list(again.suspected(BTC)) == [(0, 2 * MIN)]


def test_a_ledger_of_an_unknown_format_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "_meta" / "exchange_gaps.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"format": 99, "confirmed": {"usdt_futures/1m/BTCUSDT": [[0, MIN]]}}), encoding="utf-8")
    ledger = ExchangeGapLedger(tmp_path)
    assert ledger.all() == {} and ledger.all_suspected() == {}
    assert "format 99" in caplog.text


def test_status_counts_suspected_ranges_as_missing_and_confirmed_ones_as_exchange_gaps(tmp_path: Path) -> None:
    # store/status.py reads the ledger through ranges(): only confirmed ranges leave "missing".
    truth = ground_truth("usdt_futures", "BTCUSDT", "1m", START, START + 60 * MIN, seed=3)
    with Store(tmp_path) as store:
        store.append(truth[:10] + truth[20:30] + truth[40:])
    ledger = ExchangeGapLedger(tmp_path)
    ledger.confirm(BTC, START + 10 * MIN, START + 20 * MIN)
    ledger.suspect(BTC, START + 30 * MIN, START + 40 * MIN)
    assert ledger.save()
    (row,) = store_status(tmp_path)
    assert (row.missing, row.exchange_gaps) == (10, 10)
