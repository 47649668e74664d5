"""The Parquet store: one durable file per append, sealed into per-series files that raw readers trust.

Where things are: :mod:`~trio_klines.store.layout` (partitions, periods, names),
:mod:`~trio_klines.store.landing` (the append files), :mod:`~trio_klines.store.segments` (which file
each row lives in, and why rows never move). The guarantees:

* **Durable, atomic appends at a flat cost.** :meth:`Store.append` writes the whole batch, whatever
  series it holds, as one *landing* file (``ROOT/_landing/``), fsynced; when it returns the batch survives
  a power cut, and after a crash it is there entirely or not at all. Its cost does not depend on how
  many rows or series are stored, nor on how many series the batch touches.
* **Sealing.** Landing files are sealed into the Hive layout (``market=/interval=/symbol=/``) in rounds:
  once the oldest has waited ``seal_seconds``, or sooner when many rows wait. A round groups their rows
  by series and writes each into its *home* segment (:mod:`~trio_klines.store.segments`): a new file,
  or a rewrite of the one file that holds those open times, put in place by ``rename`` over it. The new
  files are flushed to the disk before they replace anything, their directories before the landing
  files are removed, so a crash at any point leaves the rows in one place or the other; a round that
  fails is retried whole (sealing the same rows again changes nothing). A caller may run a round in
  small steps (``append(seal=False)``, then :meth:`Store.seal_due`), as the recorder's writer does.
* **Raw readers never see an open time twice**, at any instant: a visible file is never removed and
  its rows never move to another file; it is only replaced whole. Those that open a file once (pandas,
  pyarrow) never fail; polars and DuckDB, which open it again by path, can fail a read overlapping a
  round (see :mod:`~trio_klines.store.segments`). They see a candle once its round has sealed it: at
  most ``seal_seconds`` plus the round's duration after it was durable.
* **Exact readers** (:func:`~trio_klines.store.reading.load`, :func:`~trio_klines.store.reading.scan`)
  read the landing files too: they see every durable candle, one row per open time, the later write
  winning.
* **Bad files** are moved to ``ROOT/_quarantine/`` with an error logged (logger ``trio_klines.store``);
  leftover temporary files are removed when the store opens; a failed write raises
  :class:`StoreWriteError` and leaves nothing visible. A quarantined file's candles count as missing
  (:mod:`~trio_klines.store.coverage`) until they are stored again.
* **Inside the root only.** A symbolic link among the partition directories or as the quarantine makes
  the store refuse to open (:class:`StoreError`); a linked period file is ignored (error logged).
* **Our errors only.** pyarrow's errors while building files become :class:`StoreError` here, once
  (:func:`_arrow_errors`): the batch is not stored, retry it.
* **Older datasets.** A period of the layout before segments whose files overlap is merged into one
  file the first time the store writes its series; everything else is read as it is.

One process writes a root at a time (:class:`~trio_klines.store.lock.RootLock`); any number may read
it. A :class:`Store` is not thread-safe: call it from one thread at a time (for example through
``trio.to_thread.run_sync`` from the single writer task).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Concatenate, Final, NamedTuple, ParamSpec, TypeVar

import pyarrow as pa

from ..core.markets import Series, series
from ..core.parse import Candle
from ..errors import CorruptFile, InvalidCandles, StoreError, StoreLocked, StoreWriteError
from .batches import Part, period_parts
from .compaction import CompactionSummary, FileInfo, first_overlapping, merge_tables, open_times, redundant_files
from .fileops import FileOps
from .journal import replay
from .landing import (
    LANDING_DIR,
    Landed,
    landing_from_table,
    landing_name,
    landing_table,
    list_landing,
    read_landing,
    serialize_landing,
    split_by_series,
)
from .layout import FileName, is_temp_name, series_dir, temp_name
from .lock import RootLock
from .marker import settle_numbers
from .periodfiles import (
    iter_series_dirs,
    list_series_dir,
    partition_links,
    quarantine,
    quarantined_names,
    read_file,
    read_footer,
    refuse_links,
    serialize,
)
from .reading import last_open_time, load, read_series, scan
from .segments import plan_homes, segment_rows
from .tablecache import TableCache
from .tables import schema_for

__all__ = [
    "DEFAULT_SEAL_SECONDS",
    "CompactionSummary",
    "CorruptFile",
    "InvalidCandles",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreWriteError",
    "compact",
    "last_open_time",
    "load",
    "read_series",
    "scan",
]

logger = logging.getLogger("trio_klines.store")
P = ParamSpec("P")
R = TypeVar("R")

#: Landing files are sealed once the oldest has waited this long: raw readers lag by about as much.
DEFAULT_SEAL_SECONDS: Final = 600.0
#: A round starts sooner when this many rows wait (it holds them in memory while it runs)...
MAX_UNSEALED_ROWS: Final = 1_000_000
#: ... or this many landing files (each costs a read when a round starts).
MAX_LANDING_FILES: Final = 2_000
#: Rows of growing segments kept in memory for the next round (about 90 bytes each).
CACHE_ROWS: Final = 500_000
#: A round that failed (a full disk, say) is tried again after this long.
RETRY_SECONDS: Final = 30.0
#: How many times a series' period is planned again when a file under it turns out corrupt or missing.
_PLAN_ATTEMPTS: Final = 5


@contextlib.contextmanager
def _arrow_errors(what: str) -> Iterator[None]:
    """pyarrow's errors as :class:`StoreError` (chained): the store's one mapping of them on its write side.

    Candles that cannot be converted are refused before (:class:`InvalidCandles`); what is left is not
    the batch's fault, so it may be retried. Reading maps its own (:class:`CorruptFile`).
    """
    try:
        yield
    except pa.lib.ArrowException as exc:
        raise StoreError(f"could not {what}: {type(exc).__name__}: {exc}") from exc


@dataclasses.dataclass(slots=True)
class _SeriesState:
    """What the store knows of one series' files: each period's segments, by first open time."""

    directory: Path
    periods: dict[str, list[FileInfo]]
    next_seq: int

    @property
    def latest(self) -> str | None:
        return max(self.periods) if self.periods else None

    def path(self, name: FileName) -> Path:
        return self.directory / str(name)

    def put(self, period: str, info: FileInfo) -> None:
        """Record ``info`` as written: it replaces the segment of the same name, if any."""
        files = [f for f in self.periods.get(period, []) if f.name != info.name]
        files.append(info)
        files.sort(key=lambda f: f.first)
        self.periods[period] = files

    def forget(self, info: FileInfo) -> None:
        files = [f for f in self.periods.get(info.name.period, []) if f.name != info.name]
        if files:
            self.periods[info.name.period] = files
        else:
            self.periods.pop(info.name.period, None)


class _Landing(NamedTuple):
    """A landing file not sealed yet: its rows, when it landed (the store's clock), its series' newest rows."""

    seq: int
    path: Path
    rows: int
    at: float
    newest: dict[Series, int]


class _Write(NamedTuple):
    """A segment a round writes: ``table`` becomes ``info`` in ``state`` (replacing the file of that name, if any)."""

    key: Series
    state: _SeriesState
    info: FileInfo
    table: pa.Table


@dataclasses.dataclass(slots=True)
class _Round:
    """A seal in progress: the landing files it seals and the series still to write."""

    landing: list[_Landing]
    work: collections.deque[tuple[Series, pa.Table]]
    directories: set[Path]
    rows: int = 0
    files: int = 0


def _locked(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """``method`` called holding the store's mutex."""

    @functools.wraps(method)
    def locked(self: Store, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._mutex:
            return method(self, *args, **kwargs)

    return locked


class Store:
    """A store root opened for writing. Use it as a context manager, or call :meth:`close`.

    Opening takes the root's lock, finishes what an older version's interrupted batch left, removes
    leftover temporary files, lists the series and the landing files not sealed yet (read and checked);
    a series' file footers are read (and checked) the first time it is sealed into. ``create=False``
    refuses a root that does not exist. ``numbers``: ``float`` or ``exact`` prices and volumes (exact:
    :meth:`append` takes the exact parsers' candles, whose values are decimal strings), recorded at the
    root when it has none recorded (:mod:`~trio_klines.store.marker`); ``None`` takes what the root holds,
    ``float`` for a new one. ``ops`` replaces the file operations (tests inject faults there);
    ``clock`` (seconds, monotonic) decides when a round is due.

    Raises :class:`StoreLocked` if another process writes the root, :class:`StoreWriteError` if the root
    cannot be created, :class:`StoreError` if there is no store, or if a partition directory or the
    quarantine is a symbolic link (never followed: it could lead outside the root, or one series into
    another's files), :class:`~trio_klines.errors.ConfigError` for ``numbers`` the root does not hold.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        seal_seconds: float = DEFAULT_SEAL_SECONDS,
        ops: FileOps | None = None,
        create: bool = True,
        clock: Callable[[], float] = time.monotonic,
        numbers: str | None = None,
    ) -> None:
        if not seal_seconds > 0:
            raise ValueError(f"seal_seconds must be positive, not {seal_seconds!r}")
        self.root = Path(root)
        self.seal_seconds = float(seal_seconds)
        #: Corrupt files this store moved to quarantine.
        self.quarantined = 0
        #: Seal rounds that failed (each logged); their landing files stay and are sealed by a later round.
        self.seal_errors = 0
        #: Rows and files the rounds of this store have sealed.
        self.sealed_rows = 0
        self.sealed_files = 0
        self._ops = ops if ops is not None else FileOps()
        self._clock = clock
        self._states: dict[Series, _SeriesState | None] = {}
        self._landing: list[_Landing] = []
        self._pending_last: dict[Series, int] = {}  # newest open time of each series in landing files
        self._next_landing = 1
        self._landing_dir_made = False
        self._round: _Round | None = None
        self._retry_at = -float("inf")
        # The growing segments just written, so the next round need not read them back: ~40 MB at most.
        self._cache = TableCache(max_rows=CACHE_ROWS, max_tables=CACHE_ROWS // 25, file_rows=CACHE_ROWS // 30)
        self._migrated = [0, 0, 0]  # legacy periods merged, their files before, after
        self._lock: RootLock | None = None
        # Appends, sealing and closing may come from several threads (the writer's, an archive import's):
        # one at a time. Reentrant: an append runs a due round, closing seals.
        self._mutex = threading.RLock()
        self._closed = False
        #: What this store's prices and volumes are, ``float`` or ``exact`` (see :mod:`~trio_klines.store.marker`).
        self.numbers = "float"
        if not self.root.is_dir():
            if not create:
                raise StoreError(f"no store at {self.root}")
            self._guard(f"create the store at {self.root}", lambda: self._ops.makedirs(self.root))
        self._lock = RootLock(self.root)
        try:
            if links := partition_links(self.root):  # writing through one would write outside the root
                raise StoreError(f"{links[0]} is a symbolic link: refused, the store follows none ({len(links)} found)")
            refuse_links(self.root, self.root / LANDING_DIR)
            replay(self.root, self._ops)  # a batch an older version committed just before a crash
            self._discover()
            self.numbers = self._settle(numbers)
            self._load_landing()
        except BaseException:
            self._release()
            raise

    @_locked
    def close(self) -> None:
        """Seal what waits in landing files (errors logged: they stay, sealed at the next open), then
        release the lock. Every append was durable already."""
        if self._closed:
            return
        try:
            if self._landing:
                try:
                    self.seal()
                except (StoreError, OSError) as exc:
                    logger.error("sealing at close failed (%s); the rows stay in %s", exc, self.root / LANDING_DIR)
        finally:
            self._release()

    def _release(self) -> None:
        self._closed = True
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.root} is closed")

    def _guard(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except OSError as exc:
            raise StoreWriteError(f"could not {what}: {exc.strerror or exc}", exc, committed=False) from exc

    # --- what is on disk --------------------------------------------------------------------------

    def _discover(self) -> None:
        directories = [self.root, self.root / LANDING_DIR]
        for found, directory in iter_series_dirs(self.root):
            self._states[found] = None
            directories.append(directory)
        for directory in directories:
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                if is_temp_name(name):
                    self._unlink_quietly(directory / name, "removed the leftover of an interrupted write")

    @property
    def schema(self) -> pa.Schema:
        """The schema of this store's files (:func:`~trio_klines.store.tables.schema_for` its numbers)."""
        return schema_for(self.numbers)

    def _settle(self, wanted: str | None) -> str:
        try:
            return settle_numbers(self.root, wanted, self._sample, self._ops)
        except OSError as exc:
            message = f"could not record the numbers of {self.root}: {exc.strerror or exc}"
            raise StoreWriteError(message, exc, committed=False) from exc

    def _sample(self) -> Path | None:
        """One file of the store, if it has any: its numbers stand for those of a root that records none."""
        for _, path in list_landing(self.root):
            return path
        for key in self._states:
            directory = self.root.joinpath(*series_dir(key))
            for name in list_series_dir(directory):
                return directory / str(name)
        return None

    def _load_landing(self) -> None:
        """Register the landing files a previous run did not seal (read, checked, due for sealing now)."""
        now = self._clock() - self.seal_seconds
        for seq, path in list_landing(self.root):
            self._next_landing = max(self._next_landing, seq + 1)
            table = self._read_landing(path)
            if table is None:
                continue
            newest = _newest_of(table)
            for key in newest:
                self._states.setdefault(key, None)
            self._add_landing(_Landing(seq, path, table.num_rows, now, newest))
        self._landing_dir_made = (self.root / LANDING_DIR).is_dir()
        if self._landing:
            logger.info("%d landing file(s) of an earlier run wait to be sealed", len(self._landing))

    def _read_landing(self, path: Path) -> pa.Table | None:
        """A landing file's rows, or ``None`` after moving it to quarantine (its rows then count as missing).

        Raises :class:`StoreError` if it cannot be read at all (``EIO``).
        """
        try:
            return read_landing(path, numbers=self.numbers)
        except CorruptFile as exc:
            self._quarantine(exc.path, exc.reason)
        except FileNotFoundError:
            logger.error("landing file %s vanished before it was sealed: its rows are lost", path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        return None

    def _add_landing(self, landing: _Landing) -> None:
        self._landing.append(landing)
        for key, last in landing.newest.items():
            if last > self._pending_last.get(key, -1):
                self._pending_last[key] = last

    def _state(self, key: Series) -> _SeriesState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = self._load_state(key)
        return state

    def _reset(self, key: Series) -> None:
        """Forget what is known of a series' files: they are listed and read again at its next use."""
        self._states[key] = None
        self._cache.forget_directory(self.root.joinpath(*series_dir(key)))

    def _load_state(self, key: Series) -> _SeriesState:
        directory = self.root.joinpath(*series_dir(key))
        refuse_links(self.root, directory)  # writing through a link would write outside the root
        names = list_series_dir(directory)
        used = [*names, *quarantined_names(self.root, key)]  # numbers are never given out twice
        redundant = set(redundant_files(names))
        infos: dict[FileName, FileInfo] = {}
        for name in names:
            if name not in redundant and (info := self._footer(key, directory, name)) is not None:
                infos[name] = info
        for name in sorted(redundant):
            if any(container.contains(name) for container in infos):
                # An interrupted merge of the older layout: its output was fsynced before its rename.
                self._unlink_quietly(directory / str(name), "finished an interrupted merge: removed")
            elif (info := self._footer(key, directory, name)) is not None:  # its merged file was corrupt
                infos[name] = info
        state = _SeriesState(directory, {}, max((n.hi for n in used), default=0) + 1)
        by_period: dict[str, list[FileInfo]] = {}
        for info in sorted(infos.values(), key=lambda i: i.name.hi):
            by_period.setdefault(info.name.period, []).append(info)
        for period, files in by_period.items():
            if len(files) > 1 and first_overlapping(files) is not None:
                files = self._merge_legacy(key, state, period, files)
            for info in files:
                state.put(period, info)
        return state

    def _merge_legacy(self, key: Series, state: _SeriesState, period: str, files: list[FileInfo]) -> list[FileInfo]:
        """Merge a period of the older layout whose files overlap into one file (later appends winning),
        so that its rows have one home each from now on; the files as they are if that fails (logged).

        Written before its inputs are removed: interrupted, the next open finishes it (:func:`redundant_files`).
        """
        tables = []
        for info in files:
            try:
                tables.append(read_file(state.path(info.name), key, info.name, schema=self.schema))
            except CorruptFile as exc:
                self._quarantine(exc.path, exc.reason)
            except OSError as exc:
                logger.error("cannot merge %s %s of the older layout (%s): left as it is", key, period, exc)
                return files
        kept = [info for info, _ in zip(files, tables, strict=False)] if len(tables) == len(files) else None
        if not tables:
            return []
        with _arrow_errors(f"merge {key} {period}"):
            merged = merge_tables(tables)
            times = open_times(merged)
            data = serialize(merged, key)
        sources = kept if kept is not None else files
        name = FileName(period, min(f.name.lo for f in sources), max(f.name.hi for f in sources))
        path = state.path(name)
        temp = path.with_name(temp_name(path.name))
        try:
            self._ops.write(temp, data)
            self._ops.rename(temp, path)
            self._ops.fsync_dir(state.directory)
        except OSError as exc:
            self._unlink_quietly(temp, "removed an unfinished merge", logging.DEBUG)
            logger.error("cannot merge %s %s of the older layout (%s): left as it is", key, period, exc)
            return files
        for info in files:
            if info.name != name:
                self._unlink_quietly(state.path(info.name), "merged into one file, removed", logging.DEBUG)
        self._migrated[0] += 1
        self._migrated[1] += len(files)
        self._migrated[2] += 1
        logger.info("merged %d overlapping file(s) of %s %s (older layout) into %s", len(files), key, period, name)
        return [FileInfo(name, merged.num_rows, int(times[0]), int(times[-1]))]

    def _footer(self, key: Series, directory: Path, name: FileName) -> FileInfo | None:
        path = directory / str(name)
        try:
            return read_footer(path, key, name, schema=self.schema)
        except CorruptFile as exc:
            self._quarantine(exc.path, exc.reason)
            return None
        except FileNotFoundError:  # moved away since the listing (a reader's quarantine)
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def _quarantine(self, path: Path, reason: str) -> None:
        if quarantine(self.root, path, reason, self._ops):
            self.quarantined += 1

    def _unlink_quietly(self, path: Path, what: str, level: int = logging.INFO) -> None:
        try:
            self._ops.unlink(path)
            logger.log(level, "%s %s", what, path)
        except OSError as exc:  # harmless: what is left is found and removed at the next open
            logger.warning("could not remove %s: %s", path, exc)

    # --- reading what is known -------------------------------------------------------------------

    def series(self) -> list[Series]:
        """Every series stored under the root (sealed or waiting in landing files), sorted."""
        self._check_open()
        return sorted(key for key in self._states if self.last_open_time(*key) is not None)

    def last_open_time(self, market: str, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the newest stored candle of the series, or ``None``; from file footers and
        what the store knows of its landing files.

        Raises :class:`~trio_klines.errors.ConfigError` for a bad name, :class:`StoreError` if a file
        cannot be read at all (``EIO``).
        """
        self._check_open()
        key = series(market, symbol, interval)
        if key not in self._states:
            return None
        state = self._state(key)
        latest = state.latest
        sealed = None if latest is None else max(f.last for f in state.periods[latest])
        pending = self._pending_last.get(key)
        if sealed is None or pending is None:
            return pending if sealed is None else sealed
        return max(sealed, pending)

    def last_open_times(self) -> dict[Series, int]:
        """:meth:`last_open_time` of every series that has candles."""
        return {key: last for key in self.series() if (last := self.last_open_time(*key)) is not None}

    # --- appending -------------------------------------------------------------------------------

    @_locked
    def append_table(self, key: Series, table: pa.Table, *, seal: bool = True) -> int:
        """Store one series' rows given as a table in the store's schema (the archive's bulk path: no
        :class:`Candle` objects); durable when it returns. As :meth:`append` otherwise: of a repeated open
        time the last row wins, and the table wins against stored rows. Raises
        :class:`InvalidCandles` (nothing written: the whole table is refused, naming the first bad row),
        :class:`StoreWriteError` and :class:`StoreError` as :meth:`append` does.
        """
        self._check_open()
        if not table.num_rows:
            return 0
        with _arrow_errors("build the landing file of a table"):
            landed = landing_from_table(key, table, numbers=self.numbers)
            data = serialize_landing(landed.table)
        return self._land(landed, data, seal)

    @_locked
    def append(self, candles: Sequence[Candle], *, seal: bool = True) -> int:
        """Store ``candles`` (any mix of series, any order, repeats allowed); durable when it returns.

        Of a repeated open time within the batch the last candle wins; against stored candles the batch
        wins. Returns the rows written (one per series and open time). Raises :class:`InvalidCandles`
        (nothing written) for a bad series name, an open time off the interval's grid or a value that
        does not fit its column (drop those: they would fail again); :class:`StoreWriteError` when the
        disk fails: with ``committed=False`` nothing of the batch is visible, so keep it and retry;
        :class:`StoreError` when pyarrow fails to build the batch's file (nothing written: retry).

        With ``seal`` a round that is due runs to its end before this returns; without, the caller runs
        it in steps with :meth:`seal_due` (the recorder's writer does, between its flushes).
        """
        self._check_open()
        if not candles:
            return 0
        with _arrow_errors("build the landing file of a batch"):
            landed = landing_table(candles, numbers=self.numbers)  # InvalidCandles before anything is built
            data = serialize_landing(landed.table)
        return self._land(landed, data, seal)

    def _land(self, landed: Landed, data: pa.Buffer, seal: bool) -> int:
        seq = self._next_landing
        self._next_landing += 1  # spent even if the write fails: a number is never given out twice
        landing = _Landing(seq, directory_path := self.root / LANDING_DIR / landing_name(seq), landed.table.num_rows,
                           self._clock(), landed.newest)  # fmt: skip
        for key in landed.newest:
            self._states.setdefault(key, None)
        try:
            self._write_landing(directory_path, data)
        except StoreWriteError as exc:
            if exc.committed:  # visible and perhaps durable: sealed in its turn, so later writes still win
                self._add_landing(landing)
            raise
        self._add_landing(landing)
        if seal and self._due():  # the batch is durable: a failing round is logged and retried, never raised
            self._guarded(self._seal_all)
        return landed.table.num_rows

    def _write_landing(self, path: Path, data: pa.Buffer) -> None:
        directory = path.parent
        temp = directory / temp_name(path.name)
        renamed = False
        try:
            if not self._landing_dir_made:
                self._ops.makedirs(directory)
                self._landing_dir_made = True
            self._ops.write(temp, data)
            self._ops.rename(temp, path)
            renamed = True
            self._ops.fsync_dir(directory)
        except OSError as exc:
            target = path if renamed else temp
            try:
                self._ops.unlink(target)
            except OSError:
                if renamed:  # visible, perhaps not durable: a retry lands the same rows again, harmlessly
                    message = f"{exc.strerror or exc}; the batch may be stored"
                    raise StoreWriteError(message, exc, committed=True) from exc
            raise StoreWriteError(f"{exc.strerror or exc}; nothing was stored, retry", exc, committed=False) from exc

    # --- sealing ---------------------------------------------------------------------------------

    def _due(self) -> bool:
        if not self._landing or self._clock() < self._retry_at:
            return False
        unsealed = sum(landing.rows for landing in self._landing)
        return (
            self._clock() - self._landing[0].at >= self.seal_seconds
            or unsealed >= MAX_UNSEALED_ROWS
            or len(self._landing) >= MAX_LANDING_FILES
        )

    @_locked
    def seal_debt(self) -> float:
        """Sealing owed: 0 when none is due, 1 while a round is due or running on time, 2 once sealing
        has fallen behind (the oldest landing file has waited two ``seal_seconds``, or twice the rows or
        files that start a round), when a caller running it in steps should seal before it appends more.
        """
        if self._round is None and not self._due():
            return 0.0
        if not self._landing:
            return 1.0
        unsealed = sum(landing.rows for landing in self._landing)
        behind = (
            self._clock() - self._landing[0].at >= 2 * self.seal_seconds
            or unsealed >= 2 * MAX_UNSEALED_ROWS
            or len(self._landing) >= 2 * MAX_LANDING_FILES
        )
        return 2.0 if behind else 1.0

    @_locked
    def seal_due(self, max_files: int | None = None, max_rows: int | None = None) -> float:
        """A step of the due round: writes up to ``max_files`` files, stopping once they hold ``max_rows``
        rows (at least one series). Starts the round if one is due. Returns :meth:`seal_debt` after it.

        A failed round is logged and counted in :attr:`seal_errors` (its landing files stay, readable by
        exact readers, and are sealed by a round :data:`RETRY_SECONDS` later), so this raises only
        :class:`StoreError` for a closed store.
        """
        self._check_open()
        if self._round is None and self._due():
            self._guarded(self._start_round)
        if self._round is not None:
            self._guarded(lambda: self._advance(max_files, max_rows))
        return self.seal_debt()

    @_locked
    def seal(self) -> int:
        """Seal every landing file now (the round running, then one of all the rest); rows sealed.

        Raises :class:`StoreError` (a :class:`StoreWriteError` for the disk) if a round fails: its
        landing files stay, and are sealed later.
        """
        self._check_open()
        before = self.sealed_rows
        for _ in range(2):  # the round running (if any) covers only the files it started with
            if self._round is None:
                if not self._landing:
                    break
                self._start_round()
            try:
                while self._round is not None:
                    self._advance(None, None)
            except BaseException:
                self._abandon_round()
                raise
        return self.sealed_rows - before

    def _seal_all(self) -> None:
        self.seal()

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except (StoreError, OSError) as exc:
            self.seal_errors += 1
            self._abandon_round()
            self._retry_at = self._clock() + min(RETRY_SECONDS, self.seal_seconds)
            logger.error("sealing failed (%s); the rows stay in the landing files and are sealed later", exc)

    def _abandon_round(self) -> None:
        """Drop the round: what it wrote stays (each a complete file), its landing files are sealed again."""
        self._round = None

    def _start_round(self) -> None:
        landing = list(self._landing)
        tables: list[pa.Table] = []
        kept: list[_Landing] = []
        for item in landing:
            table = self._read_landing(item.path)
            if table is None:  # quarantined or gone: its rows are missing now, and coverage says so
                self._drop_landing([item])
                continue
            tables.append(table)
            kept.append(item)
        with _arrow_errors("group the landing files by series"):
            groups = split_by_series(tables)
        self._round = _Round(kept, collections.deque(sorted(groups.items())), set())

    def _advance(self, max_files: int | None, max_rows: int | None) -> None:
        """Write the next series of the round (within the budget), then finish the round if none is left."""
        run = self._round
        assert run is not None
        writes: list[_Write] = []
        rows = 0
        files_left = float("inf") if max_files is None else max_files
        rows_left = float("inf") if max_rows is None else max_rows
        while run.work and (not writes or (len(writes) < files_left and rows < rows_left)):
            key, table = run.work[0]
            planned = self._plan_series(key, table)
            run.work.popleft()
            writes += planned
            rows += sum(w.table.num_rows for w in planned)
        self._commit(writes)
        run.files += len(writes)
        run.rows += rows
        run.directories.update(w.state.directory for w in writes)
        if not run.work:
            self._finish_round(run)

    def _plan_series(self, key: Series, table: pa.Table) -> list[_Write]:
        """The files that give ``table``'s rows (sorted, unique) their homes in ``key``'s periods."""
        with _arrow_errors(f"cut the rows of {key} by period"):
            parts = period_parts(key, table)
        for _ in range(_PLAN_ATTEMPTS):
            writes = self._plan_once(key, self._state(key), parts)
            if writes is not None:
                return writes
        raise StoreError(f"the files of {key} kept changing")

    def _plan_once(self, key: Series, state: _SeriesState, parts: Sequence[Part]) -> list[_Write] | None:
        """:meth:`_plan_series` against ``state``; ``None`` if a file it needs turned out corrupt or gone."""
        cap = segment_rows(key.interval, self.seal_seconds)
        writes: list[_Write] = []
        after = {period: list(files) for period, files in state.periods.items()}  # the segments once written
        for part in parts:
            segments = state.periods.get(part.period, [])
            for home in plan_homes(segments, part.times, cap):
                rows = part.table.slice(home.start, home.stop - home.start)
                if home.segment is None:
                    name = FileName(part.period, state.next_seq, state.next_seq)
                    state.next_seq += 1  # spent even if the write fails: a number is never given out twice
                    table = rows
                else:
                    old = self._segment_table(key, state, home.segment)
                    if old is None:
                        return None
                    with _arrow_errors(f"merge rows into {key} {part.period}"):
                        table = merge_tables([old, rows])
                    name = home.segment.name
                times = open_times(table)
                info = FileInfo(name, table.num_rows, int(times[0]), int(times[-1]))
                writes.append(_Write(key, state, info, table))
                files = [f for f in after.get(part.period, []) if f.name != name]
                after[part.period] = [*files, info]
        # One segment keeps growing, uncompressed-ish (snappy: cheap to rewrite at every seal): the last of
        # the newest period, until it is full. Every other is packed (zstd), once, when it stops growing.
        newest = max(after)
        tail = max(after[newest], key=lambda f: f.first)
        growing = tail.name if tail.rows < cap else None
        writes = [w._replace(info=w.info._replace(packed=w.info.name != growing)) for w in writes]
        written = {w.info.name for w in writes}
        for files in state.periods.values():
            for info in files:
                if not info.packed and info.name != growing and info.name not in written:
                    old = self._segment_table(key, state, info)
                    if old is None:
                        return None
                    writes.append(_Write(key, state, info._replace(packed=True), old))
        return writes

    def _segment_table(self, key: Series, state: _SeriesState, info: FileInfo) -> pa.Table | None:
        """A segment's rows (from the cache of those just written, else read and checked); ``None`` once
        it is found corrupt (quarantined) or gone, after forgetting it."""
        path = state.path(info.name)
        cached = self._cache.get(path)
        if cached is not None and path.exists():  # gone: a reader quarantined it (handled below)
            return cached
        try:
            return read_file(path, key, info.name, schema=self.schema)
        except CorruptFile as exc:
            self._quarantine(exc.path, exc.reason)
        except FileNotFoundError:  # moved by a reader's quarantine
            pass
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        self._reset(key)
        return None

    def _commit(self, writes: Sequence[_Write]) -> None:
        """Write ``writes`` under temporary names, flush them to the disk, then rename each into place.

        Raises :class:`StoreWriteError`: the files renamed before the failure are complete and hold the
        same rows as the landing files, which stay; the rest are removed.
        """
        if not writes:
            return
        with _arrow_errors("build the files of a seal"):
            blobs = [serialize(w.table, w.key, packed=w.info.packed) for w in writes]
        targets = [w.state.path(w.info.name) for w in writes]
        temps = [path.with_name(temp_name(path.name)) for path in targets]
        written: list[Path] = []
        try:
            for directory in dict.fromkeys(w.state.directory for w in writes):
                if not directory.is_dir():
                    self._ops.makedirs(directory)
            for temp, blob in zip(temps, blobs, strict=True):
                self._ops.write(temp, blob, sync=False)
                written.append(temp)
            self._ops.sync_files(temps)  # before a rename replaces a file: never swap good rows for unflushed ones
            for temp, target in zip(temps, targets, strict=True):
                self._ops.rename(temp, target)
                written.remove(temp)
        except OSError as exc:
            for temp in written:
                self._unlink_quietly(temp, "removed an unfinished seal", logging.DEBUG)
            for w in writes:
                self._reset(w.key)
            raise StoreWriteError(f"{exc.strerror or exc}; sealing is retried later", exc, committed=False) from exc
        for w, target in zip(writes, targets, strict=True):
            w.state.put(w.info.name.period, w.info)
            if w.info.packed:
                self._cache.forget(target)
            else:
                self._cache.remember(target, w.table)

    def _finish_round(self, run: _Round) -> None:
        """The round's files are in place: make their directories durable, then remove its landing files."""
        try:
            self._ops.sync_dirs(sorted(run.directories))
        except OSError as exc:
            raise StoreWriteError(f"{exc.strerror or exc}; sealing is retried later", exc, committed=False) from exc
        self._round = None
        self._drop_landing(run.landing)
        for item in run.landing:
            self._unlink_quietly(item.path, "sealed, removed", logging.DEBUG)
        with contextlib.suppress(OSError):  # a landing file that comes back after a power cut is sealed again
            self._ops.fsync_dir(self.root / LANDING_DIR)
        self.sealed_rows += sum(item.rows for item in run.landing)
        self.sealed_files += run.files
        logger.debug("sealed %d rows into %d file(s)", run.rows, run.files)

    def _drop_landing(self, items: Sequence[_Landing]) -> None:
        gone = {item.seq for item in items}
        self._landing = [item for item in self._landing if item.seq not in gone]
        self._pending_last = {}
        for item in self._landing:
            for key, last in item.newest.items():
                if last > self._pending_last.get(key, -1):
                    self._pending_last[key] = last

    # --- compaction ------------------------------------------------------------------------------

    @_locked
    def compact(self) -> CompactionSummary:
        """Seal every landing file, and merge every period of the older layout whose files overlap.

        Periods that fail (disk full, unreadable file) are listed in the summary's ``errors``; nothing is
        lost either way.
        """
        self._check_open()
        quarantined, rows, files = self.quarantined, self.sealed_rows, self.sealed_files
        merged_before = list(self._migrated)
        errors = []
        try:
            self.seal()
        except (StoreError, OSError) as exc:
            errors.append(f"sealing: {exc}")
        for key in list(self._states):
            self._states[key] = None
        self._cache.clear()
        stored = 0
        for key in sorted(self._states):
            try:
                stored += bool(self._state(key).periods)
            except (StoreError, OSError) as exc:
                errors.append(f"{key}: {exc}")
        merged = [now - before for now, before in zip(self._migrated, merged_before, strict=True)]
        return CompactionSummary(
            stored,
            merged[0],
            merged[1],
            merged[2],
            self.sealed_rows - rows,
            self.quarantined - quarantined,
            tuple(errors),
            self.sealed_files - files,
        )


def _newest_of(table: pa.Table) -> dict[Series, int]:
    return {key: int(open_times(rows)[-1]) for key, rows in split_by_series([table]).items()}


def compact(root: str | os.PathLike[str]) -> CompactionSummary:
    """Open the store at ``root``, seal everything and merge older overlapping files, and close it (for the CLI).

    Raises :class:`StoreLocked` while a recorder writes the root, :class:`StoreError` if there is none.
    """
    with Store(root, create=False) as store:
        return store.compact()
