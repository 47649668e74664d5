"""The tables of the small files a store just wrote, kept for their merge.

A merge of small files is mostly the fixed cost of opening each one, parsing its footer and verifying
its checksums; with their tables in memory it needs no reading back. The cache is bounded in rows and
in tables, oldest forgotten first: each table costs about 12 kB besides its rows, and 1,000 series
once kept 12,000 of them (150 MB), which a 10-minute soak showed as RSS growing by a third. With the
bounds it holds a few MB, full within seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Final

import pyarrow as pa

__all__ = ["TableCache"]

#: Only files of at most this many rows are kept; bigger ones are merged rarely and read back.
FILE_ROWS: Final = 4_096
MAX_ROWS: Final = 50_000
MAX_TABLES: Final = 512


class TableCache:
    """Tables by the path of the file that holds them; bounded to ``max_rows`` rows and ``max_tables``."""

    def __init__(self, *, max_rows: int = MAX_ROWS, max_tables: int = MAX_TABLES, file_rows: int = FILE_ROWS) -> None:
        self.max_rows = max_rows
        self.max_tables = max_tables
        self.file_rows = file_rows
        # Oldest first. Ordered: evicting from the front of a plain dict gets slower as it fills with
        # the holes left by the entries popped before.
        self._tables: OrderedDict[Path, pa.Table] = OrderedDict()
        self.rows = 0

    def __len__(self) -> int:
        return len(self._tables)

    def get(self, path: Path) -> pa.Table | None:
        return self._tables.get(path)

    def remember(self, path: Path, table: pa.Table) -> None:
        """Keep ``table``, just written at ``path``, if it is small; forget the oldest beyond the bounds."""
        self.forget(path)  # first: a big table written at a cached path must not leave the old one behind
        if table.num_rows > self.file_rows:
            return
        self._tables[path] = table.replace_schema_metadata(None)
        self.rows += table.num_rows
        while self.rows > self.max_rows or len(self._tables) > self.max_tables:
            self.forget(next(iter(self._tables)))

    def forget(self, path: Path) -> None:
        table = self._tables.pop(path, None)
        if table is not None:
            self.rows -= table.num_rows

    def forget_directory(self, directory: Path) -> None:
        """Forget the tables of every file in ``directory`` (a series whose files are to be listed again)."""
        for path in [path for path in self._tables if path.parent == directory]:
            self.forget(path)

    def clear(self) -> None:
        self._tables.clear()
        self.rows = 0
