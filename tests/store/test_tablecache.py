"""The merge cache of the store: bounded in rows and tables whatever is written."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.store.tablecache import TableCache


def table(rows: int) -> pa.Table:
    return pa.table({"x": list(range(rows))}, metadata={b"k": b"v"})


# (file number, rows) to remember, or (file number, None) to forget
ops = st.lists(st.tuples(st.integers(0, 30), st.one_of(st.none(), st.integers(0, 40))), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_bounds_hold_and_the_newest_small_table_is_kept(steps: list[tuple[int, int | None]]) -> None:
    cache = TableCache(max_rows=60, max_tables=5, file_rows=30)
    for number, rows in steps:
        path = Path(f"/s/{number}")
        if rows is None:
            cache.forget(path)
            assert cache.get(path) is None
            continue
        cache.remember(path, table(rows))
        kept = cache.get(path)
        if rows > 30:
            assert kept is None  # too big to keep: merged rarely, read back then
        else:
            assert kept is not None and kept.num_rows == rows and kept.schema.metadata is None
        assert cache.rows <= 60 and len(cache) <= 5
        held = [t for n in range(31) if (t := cache.get(Path(f"/s/{n}"))) is not None]
        assert cache.rows == sum(t.num_rows for t in held) and len(held) == len(cache)


def test_oldest_first_out_and_a_series_directory_forgotten_at_once() -> None:
    cache = TableCache(max_rows=1_000, max_tables=3)
    for name in ("a/1", "b/1", "a/2", "b/2"):
        cache.remember(Path(name), table(1))
    assert cache.get(Path("a/1")) is None and len(cache) == 3
    cache.forget_directory(Path("a"))
    assert [cache.get(Path(n)) is not None for n in ("b/1", "a/2", "b/2")] == [True, False, True]
    cache.clear()
    assert len(cache) == 0 and cache.rows == 0
