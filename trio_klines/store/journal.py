"""Making several new files visible at once, or none of them, across crashes.

Each file is written under a hidden temporary name and fsynced. One file is then simply renamed into
place. Several are committed by writing the list of renames to ``ROOT/_journal.json`` (temporary name,
fsync, rename, directory fsync: that rename is the commit point), renaming every file, syncing their
directories and removing the journal. :func:`replay`, run when the store opens, finishes the renames of
a committed journal; without a journal the temporary files are garbage and are removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pyarrow as pa

from ..errors import StoreError, StoreWriteError
from .fileops import FileOps
from .layout import JOURNAL_NAME, FileName, parse_series_dir, temp_name
from .periodfiles import refuse_links

__all__ = ["NewFile", "commit", "replay"]

logger = logging.getLogger("trio_klines.store")


class NewFile(NamedTuple):
    """A period file to create at ``path`` (it must not exist) with ``data``."""

    path: Path
    data: pa.Buffer | bytes

    @property
    def temp(self) -> Path:
        return self.path.with_name(temp_name(self.path.name))


def commit(root: Path, ops: FileOps, files: Sequence[NewFile]) -> bool:
    """Create ``files`` (all under ``root``) atomically and durably; ``False`` if the journal is left
    behind (the batch is complete, but :func:`replay` should run again to remove it).

    Raises :class:`StoreWriteError`: with ``committed=False`` nothing is visible and no temporary file
    is left (as far as the disk lets us remove it); with ``committed=True`` the journal is on disk and
    :func:`replay` will finish the batch.
    """
    directories = list(dict.fromkeys(new.path.parent for new in files))
    journal, journal_temp = root / JOURNAL_NAME, root / temp_name(JOURNAL_NAME)
    written: list[Path] = []
    committed = False
    try:
        ops.for_each(ops.makedirs, directories)  # new series' directories: their parents' fsyncs overlap

        def write(new: NewFile) -> None:
            ops.write(new.temp, new.data)
            written.append(new.temp)  # what a failure must remove below

        # Written and fsynced in parallel: the slow part of a batch of many series is waiting for the
        # disk once per file. (The bytes are made beforehand, in one thread: serializing in the pool
        # fought the event loop's thread for the GIL and slowed the receiving end to end.)
        ops.for_each(write, files)
        if len(files) == 1:
            ops.rename(files[0].temp, files[0].path)
            committed = True
        else:
            ops.write(journal_temp, _encode(root, files))
            written.append(journal_temp)
            ops.rename(journal_temp, journal)
            committed = True
            ops.fsync_dir(root)
            for new in files:
                ops.rename(new.temp, new.path)
        ops.for_each(ops.fsync_dir, directories)
    except OSError as exc:
        if not committed:
            _remove_all(ops, written)
            raise StoreWriteError(f"{exc.strerror or exc}; nothing was stored, retry", exc, committed=False) from exc
        message = f"{exc.strerror or exc}; the batch is committed and is finished at the next use"
        raise StoreWriteError(message, exc, committed=True) from exc
    if len(files) > 1:
        try:
            ops.unlink(journal)
        except OSError as exc:  # the batch is complete; replaying this journal later renames nothing
            logger.warning("could not remove %s: %s", journal, exc)
            return False
    return True


def _remove_all(ops: FileOps, paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):  # a leftover is removed when the store next opens
            ops.unlink(path)


def replay(root: Path, ops: FileOps) -> list[Path] | None:
    """Finish the batch of a committed journal; the files it names, or ``None`` if there was none.

    A journal that cannot be parsed is moved aside (``.corrupt`` suffix, error logged): it was written
    atomically, so that is damage on disk, and only its one batch is lost. Raises
    :class:`StoreWriteError` (``committed=True``) if the renames cannot be done, or would go through a
    symbolic link (``ELOOP``: never followed).
    """
    journal = root / JOURNAL_NAME
    try:
        raw = journal.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreWriteError(f"cannot read {journal}: {exc.strerror}", exc, committed=True) from exc
    try:
        renames = _decode(root, raw)
    except ValueError as exc:
        logger.error("unreadable journal %s (%s): moved aside, its batch is lost", journal, exc)
        try:
            ops.rename(journal, journal.with_name(JOURNAL_NAME + ".corrupt"))
        except OSError as err:
            raise StoreWriteError(f"cannot move {journal} aside: {err.strerror}", err, committed=True) from err
        return []
    for _, target in renames:
        try:
            refuse_links(root, target.parent)
        except StoreError as exc:
            cause = OSError(errno.ELOOP, str(exc), str(target.parent))
            raise StoreWriteError(f"cannot finish the batch in {journal}: {exc}", cause, committed=True) from exc
    try:
        for source, target in renames:
            if source.exists():  # otherwise renamed before the interruption
                ops.rename(source, target)
        for directory in dict.fromkeys(target.parent for _, target in renames):
            if directory.exists():
                ops.fsync_dir(directory)
        ops.unlink(journal)
    except OSError as exc:
        raise StoreWriteError(f"cannot finish the batch in {journal}: {exc.strerror}", exc, committed=True) from exc
    logger.info("finished a batch of %d file(s) committed before an interruption", len(renames))
    return [target for _, target in renames]


def _encode(root: Path, files: Sequence[NewFile]) -> bytes:
    renames = [[new.temp.relative_to(root).as_posix(), new.path.relative_to(root).as_posix()] for new in files]
    return json.dumps({"version": 1, "renames": renames}).encode()


def _decode(root: Path, raw: bytes) -> list[tuple[Path, Path]]:
    """The renames a journal lists, each checked to be temp → period file of a series directory, so a
    damaged journal can never move anything else."""
    document = json.loads(raw)
    if not isinstance(document, dict) or document.get("version") != 1 or not isinstance(document.get("renames"), list):
        raise ValueError("not a version 1 journal")
    renames = []
    for entry in document["renames"]:
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(p, str) for p in entry)):
            raise ValueError(f"bad entry {entry!r}")
        source, target = PurePosixPath(entry[0]), PurePosixPath(entry[1])
        parts = target.parts
        if (
            len(parts) != 4
            or parse_series_dir(*parts[:3]) is None
            or FileName.parse(parts[3]) is None
            or source != target.parent / temp_name(parts[3])
        ):
            raise ValueError(f"bad entry {entry!r}")
        renames.append((root.joinpath(*source.parts), root.joinpath(*target.parts)))
    return renames
