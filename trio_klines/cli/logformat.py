"""The two shapes of the command line's log lines on stderr: ``text`` for people, ``json`` for collectors.

``text``: ``2026-11-30T10:15:00.123Z INFO trio_klines.recorder: …``, then the traceback if there is one.

``json``: one object per line (a traceback too is inside it, its line breaks escaped), with the stable
keys ``time`` (ISO-8601 UTC with milliseconds), ``level``, ``logger`` and ``message``; then any fields a
call passed with ``extra=`` (``log.info(..., extra={"series": str(s), "candles": n})``) as top-level keys;
then ``exc`` (the formatted traceback) and ``stack`` when there is one. An extra field named like a stable
key is kept as ``extra_<name>``, never over it. Values that are not JSON's own (a ``Series``, a
``Path``) are written as their ``str``, a float NaN or infinity too, so every line parses as strict JSON;
characters beyond ASCII are escaped (``\\u00d7``), so a line survives any encoding of stderr.

The standard library only: python-json-logger would save the extra-field loop but not the time format or
the key names, which we would override anyway, for one more dependency of every install.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Final

from ..core.timefmt import iso_stamp

__all__ = ["JSON_KEYS", "JsonFormatter", "TextFormatter"]

#: The keys every JSON line has, in this order.
JSON_KEYS: Final = ("time", "level", "logger", "message")
#: What a LogRecord holds of its own (``taskName`` from Python 3.12 on included): the rest came with ``extra=``.
_RECORD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _stamp(record: logging.LogRecord) -> str:
    # The record's own msecs, not created * 1000: the float product can land a millisecond short.
    return iso_stamp(int(record.created) * 1000 + int(record.msecs))


class TextFormatter(logging.Formatter):
    """``<ISO time> <LEVEL> <logger>: <message>`` (the traceback on the lines after), times in UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _stamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module's docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _stamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS:
                while key in entry or key in ("exc", "stack"):
                    key = f"extra_{key}"
                entry[key] = _plain(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)  # cached, as logging.Formatter does
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, allow_nan=False)


def _plain(value: object) -> object:
    """``value`` as JSON can hold it: strings, whole numbers, booleans and ``None`` as they are, finite
    floats too; anything else as its ``str``."""
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)
