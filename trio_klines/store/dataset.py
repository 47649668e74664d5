"""The Parquet store: appends at constant cost, crash-safe, compacted as it goes, one call from pandas.

Layout, periods and file names: :mod:`trio_klines.store.layout`; when files are merged:
:mod:`trio_klines.store.compaction`; how a batch becomes visible at once: :mod:`trio_klines.store.journal`. The
guarantees:

* **Durable, atomic appends.** :meth:`Store.append` writes each (series, period) of a batch as a new
  immutable file and commits the batch as a whole; when it returns the batch survives a power cut, and
  after a crash the batch is there entirely or not at all.
* **Constant cost.** An append never reads or rewrites stored data. Merging is paid for per append in
  proportion to the append's own size, and one merge touches one period (at most ~100k rows). A caller
  may defer that payment past its report of the batch (``append(compact=False)``, then
  :meth:`Store.compact_due`); the merges of small files it wrote come from memory, not from the disk.
* **Many series per batch** cost one file each; they are written and fsynced in parallel threads, so
  the disk's latency is paid about once per batch rather than once per file.
* **One row per open time, the later write winning**, whatever the compaction state.
* **Bad files** are moved to ``ROOT/_quarantine/`` with an error logged (logger ``trio_klines.store.dataset``);
  leftover temporary files are removed when the store opens; a failed write raises
  :class:`StoreWriteError` and leaves nothing visible. A quarantined file's candles still count as
  missing (:mod:`~trio_klines.store.coverage`) until they are stored again.
* **Inside the root only.** A symbolic link among the partition directories or as the quarantine makes
  the store refuse to open (:class:`StoreError`); a linked period file is ignored (error logged).
* **Our errors only.** pyarrow's errors while building a batch's or a merge's files become
  :class:`StoreError` here, once (:func:`_arrow_errors`), so a caller never mistakes pyarrow's
  ``ArrowInvalid`` (a ``ValueError``) for :class:`InvalidCandles`: the batch is not stored, retry it.

One process writes a root at a time (an advisory lock on the root directory itself, which no one can
unlink from under it; ``ROOT/_lock`` names the holder's pid); any number may read it with
:func:`load`. A :class:`Store` is not thread-safe: call it from one thread at a time (for example
through ``trio.to_thread.run_sync`` from the single writer task).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple

import pyarrow as pa

from ..core.markets import Series, series
from ..core.parse import Candle
from ..errors import CorruptFile, InvalidCandles, StoreError, StoreLocked, StoreWriteError
from .batches import split_batch
from .compaction import (
    DEFAULT_POLICY,
    CompactionPolicy,
    CompactionSummary,
    FileInfo,
    merge_tables,
    open_times,
    plan_merge,
    redundant_files,
)
from .fileops import FileOps
from .journal import NewFile, commit, replay
from .layout import LOCK_NAME, FileName, is_temp_name, parse_series_dir, series_dir
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
from .reading import last_open_time, load, read_series
from .tablecache import TableCache

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CompactionPolicy",
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
]

logger = logging.getLogger("trio_klines.store")

# How often a merge is retried when the files under it keep changing (another process quarantining).
_MERGE_ATTEMPTS: Final = 5


@contextlib.contextmanager
def _arrow_errors(what: str) -> Iterator[None]:
    """pyarrow's errors as :class:`StoreError` (chained): the store's one mapping of them on its write side.

    Candles that cannot be converted are refused before (:class:`InvalidCandles`, from
    :mod:`~trio_klines.store.batches`); what is left is not the batch's fault, so it may be retried.
    Reading maps its own (:class:`CorruptFile`).
    """
    try:
        yield
    except pa.lib.ArrowException as exc:
        raise StoreError(f"could not {what}: {type(exc).__name__}: {exc}") from exc


class _Merge(NamedTuple):
    """A merge ready to be committed: ``state.periods[period][plan]`` (``inputs``) become ``out``."""

    key: Series
    state: _SeriesState
    period: str
    plan: slice
    inputs: list[FileInfo]
    table: pa.Table
    out: FileInfo


@dataclasses.dataclass(slots=True)
class _SeriesState:
    """What the store knows of one series' files; ``periods[p]`` is in append order."""

    directory: Path
    periods: dict[str, list[FileInfo]]
    next_seq: int

    @property
    def latest(self) -> str | None:
        return max(self.periods) if self.periods else None

    def path(self, name: FileName) -> Path:
        return self.directory / str(name)

    def forget(self, info: FileInfo) -> None:
        files = self.periods.get(info.name.period, [])
        if info in files:
            files.remove(info)
        if not files:
            self.periods.pop(info.name.period, None)


class Store:
    """A store root opened for writing. Use it as a context manager, or call :meth:`close`.

    Opening takes the root's lock, finishes a batch committed just before a crash, removes leftover
    temporary files and lists the series; a series' file footers are read (and checked) the first
    time it is used. ``create=False`` refuses a root that does not exist. ``ops`` replaces the file
    operations (tests inject faults there).

    Raises :class:`StoreLocked` if another process writes the root, :class:`StoreWriteError` if the root
    cannot be created or the last batch cannot be finished, :class:`StoreError` if there is no store, or
    if a partition directory or the quarantine is a symbolic link (never followed: it could lead outside
    the root, or one series into another's files).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        policy: CompactionPolicy = DEFAULT_POLICY,
        ops: FileOps | None = None,
        create: bool = True,
    ) -> None:
        self.root = Path(root)
        self.policy = policy
        #: Corrupt files this store moved to quarantine.
        self.quarantined = 0
        #: Automatic merges that failed (each logged); the files stay as they were and are merged later.
        self.compaction_errors = 0
        self._ops = ops if ops is not None else FileOps()
        self._states: dict[Series, _SeriesState | None] = {}
        self._pending: dict[tuple[Series, str], None] = {}  # periods that may need a merge, oldest first
        self._credit = 0.0
        self._earned = 0.0  # the credit the last append earned
        self._cache = TableCache()  # what merges of the small files just written need, without reading back
        self._journal_unfinished = False
        self._lock_fd: int | None = None
        self._root_fd: int | None = None
        self._closed = False
        if not self.root.is_dir():
            if not create:
                raise StoreError(f"no store at {self.root}")
            self._guard(f"create the store at {self.root}", lambda: self._ops.makedirs(self.root))
        self._lock()
        try:
            if links := partition_links(self.root):  # writing through one would write outside the root
                raise StoreError(f"{links[0]} is a symbolic link: refused, the store follows none ({len(links)} found)")
            replay(self.root, self._ops)
            self._discover()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock. Nothing needs flushing: every append was durable when it returned."""
        self._closed = True
        for fd in (self._lock_fd, self._root_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._root_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _lock(self) -> None:
        """Take the root's lock: an ``flock`` on the root directory itself, which cannot be unlinked while held
        (it stays non-empty), so deleting ``ROOT/_lock`` cannot let a second writer in; ``_lock`` is locked
        too (as earlier versions did) and carries the holder's pid for the message.

        The lock is not data, so it bypasses FileOps; closing the descriptors releases it.
        """
        if fcntl is None:  # pragma: no cover - Windows: directories cannot be opened, no advisory lock
            self._lock_fd = self._lock_file()
            return
        try:
            root_fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise StoreWriteError(f"could not open {self.root}: {exc.strerror}", exc, committed=False) from exc
        self._root_fd = root_fd
        try:
            self._lock_fd = self._lock_file()
            fcntl.flock(root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._holder()
            self.close()
            raise StoreLocked(f"{self.root} is being written by another process (pid {holder})") from exc
        except BaseException:
            self.close()
            raise
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(self._lock_fd, 0)
            os.write(self._lock_fd, f"{os.getpid()}\n".encode())

    def _lock_file(self) -> int:
        """``ROOT/_lock``, opened and locked; :class:`OSError` from ``flock`` if another process holds it."""
        path = self.root / LOCK_NAME
        if path.is_symlink():
            raise StoreError(f"{path} is a symbolic link: refused, the store follows none")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise StoreWriteError(f"could not open the lock {path}: {exc.strerror}", exc, committed=False) from exc
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _holder(self) -> str:
        """The pid the lock's holder wrote in ``ROOT/_lock``, or ``?`` (the file was removed, say)."""
        try:
            with open(self.root / LOCK_NAME, "rb") as file:
                return file.read(32).decode(errors="replace").strip() or "?"
        except OSError:
            return "?"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.root} is closed")
        if self._journal_unfinished:
            self._finish_journal()

    def _finish_journal(self) -> None:
        for path in replay(self.root, self._ops) or []:
            found = parse_series_dir(*path.parent.parts[-3:])
            if found is not None:
                self._reset(found)
        self._journal_unfinished = False

    def _reset(self, key: Series) -> None:
        """Forget what is known of a series' files: they are listed and read again at its next use."""
        self._states[key] = None
        self._cache.forget_directory(self.root.joinpath(*series_dir(key)))

    def _guard(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except OSError as exc:
            raise StoreWriteError(f"could not {what}: {exc.strerror or exc}", exc, committed=False) from exc

    # --- what is on disk --------------------------------------------------------------------------

    def _discover(self) -> None:
        directories = [self.root]
        for found, directory in iter_series_dirs(self.root):
            self._states[found] = None
            directories.append(directory)
        for directory in directories:
            for name in os.listdir(directory):
                if is_temp_name(name):
                    self._unlink_quietly(directory / name, "removed the leftover of an interrupted write")

    def _state(self, key: Series) -> _SeriesState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = self._load_state(key)
        return state

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
                # An interrupted merge: its output was fsynced before being renamed in, so it is complete.
                self._unlink_quietly(directory / str(name), "finished an interrupted merge: removed")
            elif (info := self._footer(key, directory, name)) is not None:  # its merged file was corrupt
                infos[name] = info
        state = _SeriesState(directory, {}, max((n.hi for n in used), default=0) + 1)
        for info in sorted(infos.values(), key=lambda i: i.name.hi):
            state.periods.setdefault(info.name.period, []).append(info)
        for period in state.periods:
            self._consider(key, state, period)
        return state

    def _footer(self, key: Series, directory: Path, name: FileName) -> FileInfo | None:
        path = directory / str(name)
        try:
            return read_footer(path, key, name)
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
        """Every series stored under the root, sorted."""
        self._check_open()
        return sorted(key for key in self._states if self.last_open_time(*key) is not None)

    def last_open_time(self, market: str, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the newest stored candle of the series, or ``None``; from file footers only.

        Raises :class:`~trio_klines.errors.ConfigError` for a bad name, :class:`StoreError` if a file
        cannot be read at all (``EIO``).
        """
        self._check_open()
        key = series(market, symbol, interval)
        if key not in self._states:
            return None
        state = self._state(key)
        latest = state.latest
        return None if latest is None else max(f.last for f in state.periods[latest])

    def last_open_times(self) -> dict[Series, int]:
        """:meth:`last_open_time` of every series that has candles."""
        return {key: last for key in self.series() if (last := self.last_open_time(*key)) is not None}

    # --- appending -------------------------------------------------------------------------------

    def append(self, candles: Sequence[Candle], *, compact: bool = True) -> int:
        """Store ``candles`` (any mix of series, any order, repeats allowed); durable when it returns.

        Of a repeated open time within the batch the last candle wins; against stored candles the batch
        wins. Returns the rows written. Raises :class:`InvalidCandles` (nothing written) for a bad series
        name, an open time off the interval's grid or a value that does not fit its column (drop the
        batch: it would fail again), :class:`StoreWriteError` when the disk fails: with
        ``committed=False`` nothing of the batch is visible, so keep it and retry; :class:`StoreError`
        when pyarrow fails to build the batch's files (nothing written: keep it and retry).

        With ``compact=False`` the merges this append pays for (see :class:`CompactionPolicy`) wait for
        :meth:`compact_due`, so that the caller can report the batch durable first (the recorder's
        writer does, and pays them off in small steps between its flushes).
        """
        self._check_open()
        with _arrow_errors("build the files of a batch"):
            parts = split_batch(candles)
            if not parts:
                return 0
            seqs: dict[Series, int] = {}
            for part in parts:
                if part.series not in seqs:
                    state = self._state(part.series)
                    seqs[part.series] = state.next_seq
                    state.next_seq += 1  # spent even if the write fails: a number is never given out twice
            infos = [
                FileInfo(FileName(p.period, seqs[p.series], seqs[p.series]), len(p.table), p.first, p.last)
                for p in parts
            ]
            files = [
                NewFile(self._state(p.series).path(info.name), serialize(p.table, p.series, fast=True))
                for p, info in zip(parts, infos, strict=True)
            ]
        try:
            self._journal_unfinished = not commit(self.root, self._ops, files)
        except StoreWriteError as exc:
            if exc.committed:  # some renames may be missing: finish them and reread these series later
                self._journal_unfinished = True
                for part in parts:
                    self._reset(part.series)
            raise
        for part, info, new in zip(parts, infos, files, strict=True):
            state = self._state(part.series)
            self._cache.remember(new.path, part.table)
            previous = state.latest
            state.periods.setdefault(part.period, []).append(info)
            if previous is not None and previous < part.period:
                self._consider(part.series, state, previous)  # that period just closed
            self._consider(part.series, state, part.period)
        rows = sum(info.rows for info in infos)
        if self.policy.auto:
            self._earned = self.policy.credit_per_append * self.policy.cost(len(files), rows)
            self._credit += self._earned
            if compact:
                self._compact_pending()
        return rows

    def compact_due(self, max_merges: int | None = None, max_rows: int | None = None) -> float:
        """Do the merges that appends made with ``compact=False`` paid for, or a step of them: up to
        ``max_merges`` merges, stopping once they have read ``max_rows`` rows (at least one merge).
        Returns :meth:`compaction_debt` after them.

        Failed merges are logged and counted in :attr:`compaction_errors` (the files stay as they are,
        readable, and are merged later), so this raises only :class:`StoreError` for a closed store.
        """
        self._check_open()
        if self.policy.auto:
            self._compact_pending(max_merges, max_rows)
        return self.compaction_debt()

    def compaction_debt(self) -> float:
        """Merges paid for and not done yet, measured in appends: 0 when none waits, above 1 when more
        waits than the last append paid for (a caller deferring them should catch up before it appends).
        """
        if not self._pending or self._credit <= 0:
            return 0.0
        return self._credit / max(self._earned, 1.0)

    # --- compaction ------------------------------------------------------------------------------

    def _plan(self, state: _SeriesState, period: str) -> slice | None:
        files = state.periods.get(period, [])
        return plan_merge(files, closed=period != state.latest, fan_in=self.policy.fan_in)

    def _consider(self, key: Series, state: _SeriesState, period: str) -> None:
        if self._plan(state, period) is not None:
            self._pending.setdefault((key, period), None)

    def _compact_pending(self, max_merges: int | None = None, max_rows: int | None = None) -> int:
        """Merge pending periods while there is credit (and within ``max_merges`` and ``max_rows``, see
        :meth:`compact_due`); the last round may overdraw the credit. Merges done.

        A round merges at most once in each pending period and commits all its merges together: one
        journal, their files written and fsynced in parallel, instead of a commit each in a row.
        """
        merges = taken = 0
        budget = math.inf if max_merges is None else max_merges
        rows_budget = math.inf if max_rows is None else max_rows
        while self._pending and self._credit > 0 and merges < budget and taken < rows_budget:
            chosen: list[tuple[Series, _SeriesState, str, slice]] = []
            for item in list(self._pending):
                if self._credit <= 0 or merges + len(chosen) >= budget or (chosen and taken >= rows_budget):
                    break
                key, period = item
                try:
                    state = self._state(key)
                except (StoreError, OSError) as exc:
                    self._merge_failed([item], exc)
                    continue
                plan = self._plan(state, period)
                if plan is None:
                    del self._pending[item]
                    continue
                inputs = state.periods[period][plan]
                rows = sum(f.rows for f in inputs)
                self._credit -= self.policy.cost(len(inputs), rows)
                taken += rows
                chosen.append((key, state, period, plan))
            prepared = []
            for key, state, period, plan in chosen:
                try:
                    if self._states.get(key) is state and (merge := self._prepare_merge(key, state, period, plan)):
                        prepared.append(merge)
                except (StoreError, OSError) as exc:
                    self._merge_failed([(key, period)], exc)
            try:
                merges += len(self._commit_merges(prepared))
            except (StoreError, OSError) as exc:
                self._merge_failed([(m.key, m.period) for m in prepared], exc)
        if not self._pending:
            self._credit = 0.0  # no hoarding: an idle store must not save up for one long stall
        return merges

    def _merge_failed(self, items: Sequence[tuple[Series, str]], exc: Exception) -> None:
        for key, period in items:
            self.compaction_errors += 1
            logger.error("automatic compaction of %s %s failed (retried when next written): %s", key, period, exc)
            self._pending.pop((key, period), None)

    def _merge(self, key: Series, state: _SeriesState, period: str, plan: slice) -> int:
        """Merge ``state.periods[period][plan]`` into one file; its rows, or 0 if the inputs changed.

        Raises :class:`StoreWriteError` if writing fails (the inputs stay), :class:`StoreError` if an
        input cannot be read (``EIO``).
        """
        merge = self._prepare_merge(key, state, period, plan)
        return self._commit_merges([merge])[0].table.num_rows if merge is not None else 0

    def _prepare_merge(self, key: Series, state: _SeriesState, period: str, plan: slice) -> _Merge | None:
        """The merged table of ``state.periods[period][plan]``, or ``None`` if the inputs changed (a
        corrupt one is quarantined, a missing one makes the series be listed again).

        Raises :class:`StoreError` if an input cannot be read (``EIO``).
        """
        inputs = state.periods[period][plan]
        tables = []
        for info in inputs:
            path = state.path(info.name)
            cached = self._cache.get(path)
            if cached is not None and path.exists():  # gone: a reader quarantined it (handled below)
                tables.append(cached)
                continue
            try:
                tables.append(read_file(path, key, info.name))
            except CorruptFile as exc:
                self._quarantine(exc.path, exc.reason)
                state.forget(info)
                return None
            except FileNotFoundError:  # moved by a reader's quarantine: look at the disk again
                self._reset(key)
                return None
            except OSError as exc:
                raise StoreError(f"cannot read {state.path(info.name)}: {exc}") from exc
        with _arrow_errors(f"merge {key} {period}"):
            merged = merge_tables(tables)
            times = open_times(merged)
        name = FileName(period, min(f.name.lo for f in inputs), max(f.name.hi for f in inputs))
        out = FileInfo(name, merged.num_rows, int(times[0]), int(times[-1]))
        return _Merge(key, state, period, plan, list(inputs), merged, out)

    def _commit_merges(self, merges: Sequence[_Merge]) -> Sequence[_Merge]:
        """Put the merged files in place (atomically together), then remove their inputs.

        Raises :class:`StoreWriteError` if writing fails (the inputs stay).
        """
        if not merges:
            return merges
        with _arrow_errors("build the files of a merge"):
            files = [NewFile(m.state.path(m.out.name), serialize(m.table, m.key)) for m in merges]
        try:
            finished = commit(self.root, self._ops, files)
        except StoreWriteError as exc:
            if exc.committed:  # the merged files are coming: finish their journal now if the disk lets us
                for m in merges:
                    self._reset(m.key)
                self._journal_unfinished = True
                with contextlib.suppress(StoreWriteError):  # else at the next use of the store
                    self._finish_journal()
            raise
        if not finished:  # complete, but its journal is still there: removed at the next use
            self._journal_unfinished = True
        # The merged files are in place: the inputs are redundant, and any left behind is removed at open.
        redundant = []
        for m, new in zip(merges, files, strict=True):
            m.state.periods[m.period][m.plan] = [m.out]
            self._cache.remember(new.path, m.table)
            for info in m.inputs:
                self._cache.forget(m.state.path(info.name))
                redundant.append(m.state.path(info.name))
        # Removals wait on the file system's journal: overlapped where the disk is real.
        self._ops.for_each(lambda path: self._unlink_quietly(path, "merged, removed", logging.DEBUG), redundant)
        return merges

    def compact(self) -> CompactionSummary:
        """Merge every period that has more than one file into one sorted, unique file.

        Interrupting it (even by a crash) loses nothing: a merged file is in place before its inputs go.
        Periods that fail (disk full, unreadable file) are listed in the summary's ``errors``.
        """
        self._check_open()
        for key in self._states:  # read the disk again: this also removes what a failed unlink left
            self._states[key] = None
        self._cache.clear()
        quarantined = self.quarantined
        stored = periods = before = after = rows = 0
        errors = []
        for key in sorted(self._states):
            try:
                for period in sorted(self._state(key).periods):
                    count = len(self._state(key).periods.get(period, []))
                    try:
                        merged = self._merge_whole(key, period) if count > 1 else 0
                    except (StoreError, OSError) as exc:
                        errors.append(f"{key} {period}: {exc}")
                        continue
                    if merged:
                        periods, before, after, rows = periods + 1, before + count, after + 1, rows + merged
                    self._pending.pop((key, period), None)
                stored += bool(self._state(key).periods)
            except StoreError as exc:
                errors.append(str(exc))
        return CompactionSummary(stored, periods, before, after, rows, self.quarantined - quarantined, tuple(errors))

    def _merge_whole(self, key: Series, period: str) -> int:
        """Merge all files of a period, again if an input turned out corrupt or missing; rows merged."""
        for _ in range(_MERGE_ATTEMPTS):
            state = self._state(key)
            if len(state.periods.get(period, [])) < 2:
                return 0
            merged = self._merge(key, state, period, slice(None))
            if merged:
                return merged
        raise StoreError(f"the files of {key} {period} kept changing")


def compact(root: str | os.PathLike[str]) -> CompactionSummary:
    """Open the store at ``root``, merge every period into one file, and close it (for the CLI).

    Raises :class:`StoreLocked` while a recorder writes the root, :class:`StoreError` if there is none.
    """
    with Store(root, create=False) as store:
        return store.compact()
