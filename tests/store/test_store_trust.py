"""What the store reports can be trusted whatever the data directory holds (issue 13).

A quarantined first file is still missing (items 3), a row from the future is not 500 million missing
candles and odd files do not stop ``status`` (item 5, the store's half), and no symbolic link under the
root is followed (item 10). Issue 14: a corrupt landing file is skipped by readers and quarantined by
the writer, a corrupt segment found while sealing is quarantined, and their rows count as missing.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trio_klines.core.gaps import Gap
from trio_klines.core.markets import Series
from trio_klines.core.paging import catch_up_plan
from trio_klines.core.parse import Candle
from trio_klines.errors import StoreError
from trio_klines.pipeline.history import download_plan
from trio_klines.store.coverage import coverage
from trio_klines.store.dataset import Store, load
from trio_klines.store.fileops import FileOps
from trio_klines.store.periodfiles import serialize
from trio_klines.store.status import store_status
from trio_klines.store.tables import SCHEMA, candles_to_table

MINUTE = 60_000
DEC_31 = 1_703_980_800_000  # 2023-12-31 00:00 UTC
JAN_1 = DEC_31 + 1440 * MINUTE
DEC_1 = DEC_31 - 30 * 1440 * MINUTE
HEAD = JAN_1 - 60 * MINUTE  # the first file holds the last hour of December
YEAR_3000 = 32_503_680_000_000
BTC = Series("spot", "BTCUSDT", "1m")
NOW = JAN_1 + 1440 * MINUTE


def minutes(first: int, count: int, symbol: str = "BTCUSDT") -> list[Candle]:
    return [
        Candle("spot", symbol, "1m", first + i * MINUTE, 1.0 + i, 2.0 + i, 0.5, 1.0 + i, 3.0, 4.0, i, 1.5, 2.5)
        for i in range(count)
    ]


def series_dir(root: Path, symbol: str = "BTCUSDT") -> Path:
    return root / "market=spot" / "interval=1m" / f"symbol={symbol}"


def garble(path: Path) -> None:
    """Overwrite every data page, leaving the footer (and so the open-time statistics) intact."""
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8
    raw[4 : len(raw) - footer] = b"\xa5" * (len(raw) - footer - 4)
    path.write_bytes(bytes(raw))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A series whose first file holds 23:00-23:59 on Dec 31 and whose second holds 00:00-00:59 on Jan 1."""
    data = tmp_path / "data"
    with Store(data) as store:
        store.append(minutes(HEAD, 60))
        store.append(minutes(JAN_1, 60))
    return data


def first_file(root: Path) -> Path:
    return min(series_dir(root).glob("*.parquet"))


# --- item 3: a corrupt first file -------------------------------------------------------------


def test_a_garbled_first_file_is_missing_until_stored_again(root: Path) -> None:
    garble(first_file(root))
    cov = coverage(root)[BTC]  # reading it finds it corrupt: quarantined, and its range known from its footer
    assert (cov.first, cov.last, cov.rows, cov.missing) == (HEAD, JAN_1 + 59 * MINUTE, 60, 60)
    assert cov.gaps == (Gap(BTC, HEAD, JAN_1),)
    [quarantined] = cov.quarantined
    assert quarantined.exact and (quarantined.first, quarantined.last) == (HEAD, JAN_1 - MINUTE)
    assert quarantined.path.name == "2023-12_000000000001-000000000001.parquet.quarantined"

    # Both plans fetch the head: the recorder's catch-up and backfill's download.
    assert catch_up_plan("1m", cov.first, cov.last, cov.gaps, None) == [(HEAD, JAN_1), (JAN_1 + 60 * MINUTE, None)]
    assert download_plan({BTC: cov}, [BTC], HEAD, JAN_1 + 60 * MINUTE) == {BTC: [(HEAD, JAN_1)]}

    [status] = store_status(root, now=NOW)
    assert (status.rows, status.missing, status.first) == (60, 60, HEAD)
    assert status.quarantined == (
        "_quarantine/market=spot/interval=1m/symbol=BTCUSDT/2023-12_000000000001-000000000001.parquet.quarantined",
    )
    assert status.as_dict()["quarantined"] == list(status.quarantined)

    with Store(root) as store:  # fetched again: no longer missing; the quarantined file stays for forensics
        store.append(minutes(HEAD, 60))
    [status] = store_status(root, now=NOW)
    assert (status.rows, status.missing, len(status.quarantined)) == (120, 0, 1)
    assert quarantined.path.exists()
    assert len(load(root, *BTC)) == 120


def test_a_truncated_first_file_counts_its_whole_period(root: Path) -> None:
    path = first_file(root)
    path.write_bytes(path.read_bytes()[:100])  # no footer left: only the name's period says what it held
    cov = coverage(root)[BTC]
    [quarantined] = cov.quarantined
    assert not quarantined.exact and (quarantined.first, quarantined.last) == (DEC_1, JAN_1 - MINUTE)
    assert (cov.first, cov.rows, cov.gaps) == (DEC_1, 60, (Gap(BTC, DEC_1, JAN_1),))
    assert store_status(root, now=NOW)[0].missing == 31 * 1440


def test_a_quarantined_last_or_only_file_is_missing_too(root: Path) -> None:
    garble(max(series_dir(root).glob("*.parquet")))
    cov = coverage(root)[BTC]
    assert (cov.first, cov.last, cov.rows, cov.gaps) == (
        HEAD,
        JAN_1 + 59 * MINUTE,
        60,
        (Gap(BTC, JAN_1, JAN_1 + 60 * MINUTE),),
    )
    garble(first_file(root))
    cov = coverage(root)[BTC]  # nothing stored any more: the series is still there, wholly missing
    assert (cov.first, cov.last, cov.rows, cov.missing, len(cov.quarantined)) == (HEAD, JAN_1 + 59 * MINUTE, 0, 120, 2)
    [status] = store_status(root, now=NOW)
    assert (status.missing, status.files, len(status.quarantined)) == (120, 0, 2)


def test_a_series_found_only_in_quarantine_is_reported(root: Path) -> None:
    garble(first_file(root))
    garble(max(series_dir(root).glob("*.parquet")))
    coverage(root)
    for entry in series_dir(root).iterdir():
        entry.unlink()
    series_dir(root).rmdir()
    [status] = store_status(root, now=NOW)
    assert (status.series, status.rows, status.missing, len(status.quarantined)) == (BTC, 0, 120, 2)


# --- item 5: status never crashes, whatever is stored -----------------------------------------


def write_period_file(root: Path, name: str, candles: list[Candle]) -> None:
    """A period file made by hand, as a store of another version (or a bug) might have left it."""
    series_dir(root).mkdir(parents=True, exist_ok=True)
    (series_dir(root) / name).write_bytes(serialize(candles_to_table(candles), BTC).to_pybytes())


def test_a_row_from_the_future_is_set_aside_not_counted_as_missing(root: Path) -> None:
    future = minutes(YEAR_3000, 1)
    write_period_file(root, "3000-01_000000000009-000000000009.parquet", future)
    [status] = store_status(root, now=NOW)
    assert (status.first, status.last, status.rows, status.missing) == (HEAD, JAN_1 + 59 * MINUTE, 120, 0)
    assert (status.beyond_clock, status.beyond_clock_first) == (1, YEAR_3000)
    assert store_status(root)[0].beyond_clock == 1  # by the local clock too
    cov = coverage(root)[BTC]  # no clock given: everything stored counts (the recorder's view is unchanged)
    assert (cov.last, cov.beyond) == (YEAR_3000, 0)


def test_status_reports_a_directory_of_odd_files(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = series_dir(root)
    (directory / "2024-01_000000000010-000000000010.parquet").write_bytes(b"")  # empty
    empty_table = pa.Table.from_batches([], schema=SCHEMA)
    pq.write_table(empty_table, directory / "2024-01_000000000011-000000000011.parquet")  # no rows
    (directory / "2024-01_000000000012-000000000012.parquet").mkdir()  # not a file
    (directory / "notes.txt").write_text("mine")
    (directory / ".2024-01_000000000013-000000000013.parquet.tmp").write_bytes(b"half")
    series_dir(root, "ETHUSDT").mkdir()  # a series directory with nothing in it
    with caplog.at_level(logging.WARNING, "trio_klines.store"):
        btc, eth = store_status(root, now=NOW)
    assert (btc.rows, btc.missing, len(btc.quarantined)) == (120, 0, 2)
    assert (eth.first, eth.rows, eth.missing) == (None, 0, 0)
    assert "not a regular file" in caplog.text


def test_huge_gaps_are_counted_not_walked(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.append([*minutes(0, 1), *minutes(JAN_1, 1)])
    [status] = store_status(tmp_path, now=NOW)
    assert status.missing == JAN_1 // MINUTE - 1


# --- item 10: no symbolic link is followed ----------------------------------------------------


@pytest.mark.parametrize("level", [1, 2, 3])
def test_a_symlinked_partition_directory_is_refused(
    tmp_path: Path, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    outside, root = tmp_path / "outside", tmp_path / "data"
    with Store(outside) as store:
        store.append(minutes(JAN_1, 5))
    root.mkdir()
    parts = ["market=spot", "interval=1m", "symbol=BTCUSDT"][:level]
    link = root.joinpath(*parts)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside.joinpath(*parts), target_is_directory=True)

    with pytest.raises(StoreError, match="symbolic link"):
        Store(root)
    with pytest.raises(StoreError, match="symbolic link"):
        load(root, *BTC)
    with pytest.raises(StoreError, match="symbolic link"):
        coverage(root, [BTC])
    with caplog.at_level(logging.ERROR, "trio_klines.store"):
        assert coverage(root) == {}
        assert store_status(root, now=NOW) == []
    assert "symbolic link" in caplog.text
    assert len(load(outside, *BTC)) == 5  # untouched


def test_a_symlinked_quarantine_is_never_written_through(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "data"
    outside.mkdir()
    with Store(root) as store:
        store.append(minutes(JAN_1, 5))
    (root / "_quarantine").symlink_to(outside, target_is_directory=True)
    [path] = series_dir(root).glob("*.parquet")
    garble(path)
    assert len(load(root, *BTC)) == 0  # corrupt: skipped, but not moved through the link
    assert path.exists() and not any(outside.rglob("*"))
    with pytest.raises(StoreError, match="symbolic link"):
        Store(root)


def test_a_symlinked_period_file_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outside, root = tmp_path / "outside", tmp_path / "data"
    with Store(outside) as store:
        store.append(minutes(JAN_1, 5))
    with Store(root) as store:
        store.append(minutes(JAN_1 + 10 * MINUTE, 5))
    [target] = series_dir(outside).glob("*.parquet")
    (series_dir(root) / "2024-01_000000000005-000000000005.parquet").symlink_to(target)
    with caplog.at_level(logging.ERROR, "trio_klines.store"):
        assert len(load(root, *BTC)) == 5
        assert coverage(root)[BTC].rows == 5
    assert "symbolic link" in caplog.text
    with Store(root) as store:
        store.append(minutes(JAN_1 + 20 * MINUTE, 5))
        assert store.compact().errors == ()
    assert target.exists() and os.path.islink(series_dir(root) / "2024-01_000000000005-000000000005.parquet")
    assert len(load(root, *BTC)) == 10


# --- landing files (issue 14): appends not sealed yet -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def landing_files(root: Path) -> list[Path]:
    return sorted((root / "_landing").glob("*.parquet"))


class NoSealing(FileOps):
    """A disk that fails every seal (``EIO`` when a round flushes its files): appends stay in landing files."""

    def sync_files(self, paths: Sequence[Path]) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(paths[0]))


def unsealed(root: Path, *batches: list[Candle]) -> list[Path]:
    """Append ``batches`` and close, leaving them in landing files (the seal at close fails, logged)."""
    with Store(root, ops=NoSealing(durable=False), clock=Clock()) as store:
        for batch in batches:
            store.append(batch)
    return landing_files(root)


def test_a_corrupt_landing_file_is_skipped_then_quarantined_and_its_rows_count_as_missing(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The hour after the stored one, in two landing files; the first is lost below.
    first, _ = unsealed(root, minutes(JAN_1 + 60 * MINUTE, 30), minutes(JAN_1 + 90 * MINUTE, 30))
    garble(first)
    with caplog.at_level(logging.ERROR, "trio_klines.store"):
        assert len(load(root, *BTC)) == 150  # readers skip it (logged), and move nothing
    assert "corrupt landing file" in caplog.text and first.exists()
    with Store(root, clock=Clock()) as store:  # the writer quarantines it when it opens
        assert store.quarantined == 1
    assert not first.exists() and landing_files(root) == []
    assert (root / "_quarantine" / "_landing" / f"{first.name}.quarantined").exists()
    cov = coverage(root)[BTC]
    assert (cov.first, cov.last, cov.rows) == (HEAD, JAN_1 + 119 * MINUTE, 150)
    assert cov.gaps == (Gap(BTC, JAN_1 + 60 * MINUTE, JAN_1 + 90 * MINUTE),)


def test_a_truncated_landing_file_does_not_stop_the_store(root: Path) -> None:
    [path] = unsealed(root, minutes(JAN_1 + 60 * MINUTE, 5))
    path.write_bytes(path.read_bytes()[:50])
    assert len(load(root, *BTC)) == 120 and coverage(root)[BTC].rows == 120
    with Store(root, clock=Clock()) as store:
        assert store.quarantined == 1
        store.append(minutes(JAN_1 + 60 * MINUTE, 5))  # fetched again
    assert len(load(root, *BTC)) == 125 and coverage(root)[BTC].missing == 0


def test_a_symlinked_landing_directory_is_refused(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "data"
    outside.mkdir()
    root.mkdir()
    (root / "_landing").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="symbolic link"):
        Store(root)
    assert not any(outside.iterdir())


def test_a_symlinked_landing_file_is_not_read(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "data"
    [target] = unsealed(outside, minutes(JAN_1, 5))
    with Store(root) as store:
        store.append(minutes(JAN_1 + 10 * MINUTE, 5))
    (root / "_landing").mkdir(exist_ok=True)
    (root / "_landing" / "000000000099.parquet").symlink_to(target)
    assert len(load(root, *BTC)) == 5
    with Store(root) as store:
        store.seal()
    assert target.exists() and len(load(root, *BTC)) == 5


def test_a_corrupt_segment_found_while_sealing_is_quarantined_and_missing(root: Path) -> None:
    tail = max(series_dir(root).glob("*.parquet"))  # Jan 1 00:00-00:59: the segment the next rows grow
    garble(tail)
    with Store(root, clock=Clock()) as store:
        store.append(minutes(JAN_1 + 60 * MINUTE, 10))
        store.seal()  # the round reads the segment to rewrite it: corrupt, so quarantined, and planned again
        assert store.quarantined == 1 and store.seal_errors == 0
    assert not tail.exists()
    cov = coverage(root)[BTC]
    assert (cov.first, cov.last, cov.rows) == (HEAD, JAN_1 + 69 * MINUTE, 70)
    assert cov.gaps == (Gap(BTC, JAN_1, JAN_1 + 60 * MINUTE),)
    assert len(pq.read_table(series_dir(root))) == 70  # raw readers: the rows that are there, once
