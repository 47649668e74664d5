"""Every change the store makes to the disk goes through :class:`FileOps`: the one seam for faults.

Each method is one step that a crash can fall before or after. Tests subclass :class:`FileOps` to fail
(``ENOSPC``, ``EIO``) or to "crash" at any step; the store never touches the disk another way except to
read. Errors are plain :class:`OSError`; the store maps them to its own errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

__all__ = ["FileOps", "run_all"]

# O_DIRECTORY is missing on Windows, where directories cannot be opened for fsync anyway.
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
#: Threads that overlap the fsyncs of one batch. A file system commits concurrent fsyncs together
#: (ext4's journal, XFS's log), so 50 files cost a few commits instead of 50 in a row.
MAX_PARALLEL: Final = 8
_T = TypeVar("_T")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def run_all(action: Callable[[_T], object], items: Sequence[_T]) -> list[BaseException | None]:
    """``action(item)`` for every item, in parallel threads; once all are done, each one's exception or ``None``.

    Blocking file calls (``write``, ``fsync``) release the GIL, so this overlaps the waits on the disk.
    """
    global _pool
    if len(items) < 2:
        return [_outcome(action, item) for item in items]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_PARALLEL, thread_name_prefix="trio-klines-fsync")
        pool = _pool
    return list(pool.map(lambda item: _outcome(action, item), items))


def _outcome(action: Callable[[_T], object], item: _T) -> BaseException | None:
    try:
        action(item)
    except BaseException as exc:  # handed to the caller, which raises the first one
        return exc
    return None


class FileOps:
    """Durable file operations on a POSIX file system.

    ``durable=False`` skips every fsync: for tests and throw-away stores only.
    """

    def __init__(self, *, durable: bool = True) -> None:
        self.durable = durable

    def for_each(self, action: Callable[[_T], object], items: Sequence[_T]) -> None:
        """``action(item)`` for every item; raises the first error.

        Durable, they run in parallel threads (:func:`run_all`), all of them, so that their waits on the
        disk overlap. Without fsyncs (tests, whose fault layers count the steps) they run in order and
        stop at the first error.
        """
        if not self.durable:
            for item in items:
                action(item)
            return
        for error in run_all(action, items):
            if error is not None:
                raise error

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents, each made durable in its own parent."""
        missing = []
        for candidate in (path, *path.parents):
            if candidate.is_dir():
                break
            missing.append(candidate)
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                if not directory.is_dir():
                    raise
            self.fsync_dir(directory.parent)

    def write(self, path: Path, data: bytes | memoryview, *, sync: bool = True) -> None:
        """Create ``path`` (it must not exist) holding ``data``, flushed to the disk when this returns
        (unless ``sync`` is false: then :meth:`sync_files` must follow before the data is relied on).

        A failure removes what was written so far and raises the :class:`OSError`.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:  # pragma: no cover - os.write raises rather than returning 0 on a full disk
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                view = view[written:]
            if self.durable and sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _remove_quietly(path)
            raise
        os.close(fd)

    def sync_files(self, paths: Sequence[Path]) -> None:
        """Flush the data of the files ``paths`` (written with ``sync=False``) to the disk.

        On Linux 5.8 and later, one ``syncfs`` of their file system, which reports write-back errors
        since that version: thousands of files cost one call instead of one fsync each (measured here:
        70 µs of CPU per fsync). Elsewhere each file is fsynced, in parallel threads.
        """
        if not self.durable or not paths:
            return
        if _syncfs is not None:
            _sync_file_system(paths[0].parent)
            return
        self.for_each(_fsync_file, paths)

    def sync_dirs(self, paths: Sequence[Path]) -> None:
        """Make the entries of the directories ``paths`` durable (as :meth:`sync_files`)."""
        if not self.durable or not paths:
            return
        if _syncfs is not None:
            _sync_file_system(paths[0])
            return
        self.for_each(self.fsync_dir, paths)

    def rename(self, source: Path, target: Path) -> None:
        """Atomically give ``source`` the name ``target`` (same directory or file system)."""
        os.rename(source, target)

    def fsync_dir(self, path: Path) -> None:
        """Make the entries of directory ``path`` (created, renamed, removed names) durable."""
        if not self.durable or os.name != "posix":
            return
        fd = os.open(path, _DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        """Remove the file ``path``; a missing file is not an error."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _sync_file_system(directory: Path) -> None:
    assert _syncfs is not None
    fd = os.open(directory, _DIR_FLAGS)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(directory))
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs`` where it reports write-back errors (Linux 5.8 and later), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        version = tuple(int(part) for part in platform.release().split("-")[0].split(".")[:2])
        if version < (5, 8):
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError, ValueError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_syncfs: Final = _load_syncfs()


def _remove_quietly(path: Path) -> None:
    # The original error matters more; a leftover temporary file is removed when the store next opens.
    with contextlib.suppress(OSError):
        path.unlink()
