"""Which numbers a dataset holds, recorded once at its root so that it never mixes float and exact files.

``ROOT/_dataset.json`` holds ``{"numbers": "float"}`` or ``{"numbers": "exact"}`` (see
:data:`~trio_klines.store.tables.NUMBERS`). The writing store settles it when it opens a root
(:func:`settle_numbers`): a new root takes the numbers asked for (``float`` if none); a root of an older
release has none recorded and holds float numbers; asking for the other numbers than a root holds is a
:class:`~trio_klines.errors.ConfigError`. Readers take the recorded numbers (:func:`dataset_numbers`), so
every file of a root is read in one schema. The name starts with ``_``: pyarrow, pandas and the documented
``market=*/…`` glob skip it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, StoreError
from .fileops import FileOps
from .layout import temp_name
from .tables import NUMBERS

__all__ = ["MARKER_NAME", "dataset_numbers", "file_numbers", "read_numbers", "settle_numbers"]

logger = logging.getLogger("trio_klines.store")

MARKER_NAME: Final = "_dataset.json"
_LARGEST: Final = 4096  # a marker is a few bytes; more is not one


def read_numbers(root: Path) -> str | None:
    """The numbers recorded at ``root``, or ``None`` if none are (a new root, or an older release's).

    Raises :class:`~trio_klines.errors.StoreError` for a marker that cannot be read or is not one.
    """
    path = root / MARKER_NAME
    if path.is_symlink():
        raise StoreError(f"{path} is a symbolic link: refused, the store follows none")
    try:
        with open(path, "rb") as file:
            raw = file.read(_LARGEST + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        numbers = json.loads(raw)["numbers"] if len(raw) <= _LARGEST else None
    except (ValueError, TypeError, KeyError):
        numbers = None
    if numbers not in NUMBERS:
        expected = " or ".join(json.dumps({"numbers": n}) for n in NUMBERS)
        raise StoreError(f"{path} is not a dataset marker: it should hold {expected}, not {raw[:80]!r}")
    return str(numbers)


def dataset_numbers(root: Path) -> str:
    """The numbers of the dataset at ``root``: those recorded, ``float`` if none are (an older release's)."""
    return read_numbers(root) or "float"


def file_numbers(path: Path) -> str | None:
    """The numbers a store file holds, from its footer's schema; ``None`` if it cannot tell."""
    try:
        schema = pq.read_schema(path)
        open_type = schema.field("open").type
    except (OSError, KeyError, pa.ArrowException, UnicodeDecodeError):
        return None
    if pa.types.is_decimal(open_type):
        return "exact"
    return "float" if pa.types.is_floating(open_type) else None


def settle_numbers(root: Path, wanted: str | None, sample: Callable[[], Path | None], ops: FileOps) -> str:
    """The numbers of the store at ``root``, opened for writing with ``wanted`` (``None``: whatever it holds),
    recorded in its marker if they were not. ``sample()``: one of its files, if it has any, whose numbers
    stand for a root that records none (an older release's, or a marker lost).

    Raises :class:`~trio_klines.errors.ConfigError` if ``wanted`` is not one of
    :data:`~trio_klines.store.tables.NUMBERS` or not what the root holds,
    :class:`~trio_klines.errors.StoreError` for an unreadable marker, :class:`OSError` if it cannot be written.
    """
    if wanted is not None and wanted not in NUMBERS:
        raise ConfigError(f"numbers must be one of {', '.join(NUMBERS)}, not {wanted!r}")
    recorded = read_numbers(root)
    held = recorded
    found = sample() if recorded is None else None
    if found is not None:
        held = file_numbers(found) or "float"
    if held is not None and wanted is not None and wanted != held:
        raise ConfigError(
            f"the store at {root} holds {held} numbers, not {wanted}: a dataset never mixes both; "
            f"record {wanted} numbers under another data directory"
        )
    numbers = held or wanted or "float"
    if recorded is None:
        _write_marker(root, numbers, ops)
        if found is not None:
            logger.info("recorded %s numbers in %s (the files there hold them)", numbers, root / MARKER_NAME)
    return numbers


def _write_marker(root: Path, numbers: str, ops: FileOps) -> None:
    path = root / MARKER_NAME
    temp = path.with_name(temp_name(path.name))  # a leftover of a crash was removed as the store opened
    ops.write(temp, json.dumps({"numbers": numbers}).encode() + b"\n")
    try:
        ops.rename(temp, path)
        ops.fsync_dir(root)
    except OSError:
        ops.unlink(temp)
        raise
