"""One writer per store root: an advisory lock on the root directory itself.

The lock is not data, so it bypasses :class:`~trio_klines.store.fileops.FileOps`; closing the
descriptors releases it, also when the process dies. :func:`lock_holder` tells, without writing
anything, whether some process holds it (what ``status`` reports as ``recorder_running``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import Final, NamedTuple

from ..errors import StoreError, StoreLocked, StoreWriteError
from .layout import LOCK_NAME

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockHolder", "RootLock", "lock_holder"]

#: How long (s) a writer keeps trying the root's lock before it is refused: :func:`lock_holder` holds a
#: shared lock on the root for microseconds, and a writer starting just then must not take it for a writer.
PROBE_GRACE: Final = 0.05
_PROBE_RETRY: Final = 0.002


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
            _flock_within(self._root_fd, PROBE_GRACE)
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
        pid = _written_pid(self.root)
        return "?" if pid is None else str(pid)


def _flock_within(fd: int, grace: float) -> None:
    """An exclusive ``flock`` on ``fd``, tried again for up to ``grace`` seconds while a shared holder (a
    :func:`lock_holder` probe) has it; :class:`OSError` (``EWOULDBLOCK``) if it is still held then."""
    deadline = time.monotonic() + grace
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_PROBE_RETRY)  # a probe lets go within microseconds; a writer holds it for its life


class LockHolder(NamedTuple):
    """Who writes a store: the ``pid`` its writer wrote in ``ROOT/_lock``, ``None`` if unknown (the file
    was removed, or the writer was killed before writing it)."""

    pid: int | None


def lock_holder(root: Path) -> LockHolder | None:
    """Whether a process holds the lock of ``root`` (:class:`RootLock`: ``record``, ``backfill``,
    ``compact`` or an embedding program), and which; ``None`` if none does, if ``root`` is not a
    directory, or where there is no advisory lock (Windows).

    Side-effect free: it creates nothing and writes nothing. It takes a *shared* lock on the root for as
    long as one system call, then lets go: two probes never see each other, a writer's exclusive lock
    makes it fail (the writer's own process included: ``flock`` locks belong to open file descriptions,
    not processes, and closing the probe's descriptor leaves the writer's lock in place), and a writer
    that starts meanwhile retries for :data:`PROBE_GRACE`. Raises nothing.
    """
    if fcntl is None:  # pragma: no cover - Windows: nothing to probe
        return None
    try:
        fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None  # not there, not a directory, not readable: nothing writes it that we can tell
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        return LockHolder(_written_pid(root))
    finally:
        os.close(fd)  # releases the shared lock if taken; a lock held through another descriptor stays
    return None


def _written_pid(root: Path) -> int | None:
    """The pid in ``ROOT/_lock`` (a link is not followed), or ``None``."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isascii() and text.isdigit() else None
