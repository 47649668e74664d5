"""One writer per store root: an advisory lock on the root directory itself.

The lock is not data, so it bypasses :class:`~trio_klines.store.fileops.FileOps`; closing the
descriptors releases it, also when the process dies.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import StoreError, StoreLocked, StoreWriteError
from .layout import LOCK_NAME

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["RootLock"]


class RootLock:
    """The lock of ``root``, taken when constructed: an ``flock`` on the root directory, which cannot be
    unlinked while held (it stays non-empty), so deleting ``ROOT/_lock`` cannot let a second writer in;
    ``ROOT/_lock`` is locked too (as earlier versions did) and carries the holder's pid for the message.

    Raises :class:`StoreLocked` if another process holds it, :class:`StoreWriteError` if the root or
    the lock file cannot be opened, :class:`StoreError` if ``ROOT/_lock`` is a symbolic link.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock_fd: int | None = None
        self._root_fd: int | None = None
        if fcntl is None:  # pragma: no cover - Windows: directories cannot be opened, no advisory lock
            self._lock_fd = self._lock_file()
            return
        try:
            self._root_fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise StoreWriteError(f"could not open {root}: {exc.strerror}", exc, committed=False) from exc
        try:
            self._lock_fd = self._lock_file()
            fcntl.flock(self._root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._holder()
            self.release()
            raise StoreLocked(f"{root} is being written by another process (pid {holder})") from exc
        except BaseException:
            self.release()
            raise
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(self._lock_fd, 0)
            os.write(self._lock_fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        for fd in (self._lock_fd, self._root_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._root_fd = None

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
