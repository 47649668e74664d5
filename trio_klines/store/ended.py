"""Series that ended: delisted or halted symbols a universe stopped recording, so ``status`` can say so.

A small JSON file next to the data (``ROOT/_meta/ended.json``; Parquet readers skip ``_`` names)::

    {"format": 1, "ended": {"usdt_futures/1m/LUNAUSDT": {"at": 1700000000000, "why": "SETTLING"}}}

``at``: when the recorder stopped recording it (ms); ``why``: the listing status that ended it (or
``delisted`` when the listing dropped the symbol). A series that is listed again is taken off. Written
atomically (temporary file, fsync, rename, directory fsync). A file that cannot be read is logged and
read as empty: the mark is a courtesy to ``status``, never a reason to lose or refuse data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, NamedTuple

from ..core.markets import Series
from ..errors import ConfigError
from .fileops import FileOps
from .layout import key_series, series_key

__all__ = ["ENDED_PATH", "Ended", "mark_ended", "read_ended", "unmark_ended"]

log = logging.getLogger("trio_klines.store")

ENDED_PATH: Final = Path("_meta") / "ended.json"
_FORMAT: Final = 1


class Ended(NamedTuple):
    at: int
    why: str


def read_ended(root: Path) -> dict[Series, Ended]:
    """The ended series of the store at ``root`` (none if the file is absent or unreadable, logged)."""
    path = Path(root) / ENDED_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = raw["ended"] if raw.get("format") == _FORMAT else None
        if not isinstance(entries, dict):
            raise ValueError(f"not a format {_FORMAT} file")
        found = {}
        for key, value in entries.items():
            at, why = value["at"], value["why"]
            if type(at) is not int or not isinstance(why, str) or len(why) > 64:
                raise ValueError(f"bad entry {key!r}")
            found[key_series(key)] = Ended(at, why)
        return found
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        log.error("cannot read %s (%s); no series is shown as ended", path, exc)
        return {}


def _write(root: Path, ended: Mapping[Series, Ended], ops: FileOps) -> None:
    path = Path(root) / ENDED_PATH
    data = {"format": _FORMAT, "ended": {series_key(s): {"at": e.at, "why": e.why} for s, e in sorted(ended.items())}}
    temp = path.with_name(f".{path.name}.tmp")
    ops.makedirs(path.parent)
    ops.write(temp, json.dumps(data).encode())
    ops.rename(temp, path)
    ops.fsync_dir(path.parent)


def mark_ended(
    root: Path, ended: Iterable[Series], at: int, why: Mapping[Series, str], ops: FileOps | None = None
) -> None:
    """Record that ``ended`` stopped at ``at`` (ms), each for its ``why``. Raises :class:`OSError`."""
    current = read_ended(root)
    current.update({s: Ended(at, why.get(s, "delisted")) for s in ended})
    _write(root, current, ops or FileOps())


def unmark_ended(root: Path, listed: Iterable[Series], ops: FileOps | None = None) -> None:
    """Take ``listed`` (recorded again) off the ended series, if any is there. Raises :class:`OSError`."""
    current = read_ended(root)
    again = set(listed)
    kept = {s: e for s, e in current.items() if s not in again}
    if len(kept) != len(current):
        _write(root, kept, ops or FileOps())
