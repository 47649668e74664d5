"""The command line's logging: text and JSON lines on stderr, times in ISO-8601 UTC, third-party chatter
heard only at DEBUG. Every test runs on a bare root logger and puts the logging state back afterwards."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from trio_klines.cli.common import CHATTY_LOGGERS, LOG_FORMATS, configure_logging
from trio_klines.cli.logformat import JSON_KEYS, JsonFormatter, TextFormatter
from trio_klines.core.gaps import Gap
from trio_klines.core.markets import Series
from trio_klines.errors import ConfigError

pytestmark = pytest.mark.timeout(30)

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.-]+: .*")
#: 2026-11-30T10:15:00.123Z as a LogRecord's ``created``.
CREATED = 1_796_033_700.123


@contextlib.contextmanager
def bare_root() -> Iterator[io.StringIO]:
    """A bare root logger, as in a fresh process, and stderr captured; the logging state restored after.

    Entered inside the test, not in a fixture: pytest adds its capturing handlers to the root logger for
    each phase (setup, call, teardown), so only the call phase's are there to take off and put back.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    stream = io.StringIO()
    root.handlers = []
    try:
        with contextlib.redirect_stderr(stream):
            yield stream
    finally:
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_chatty.items():
            logging.getLogger(name).setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    def no_nan(name: str) -> object:
        raise AssertionError(f"{name} is not JSON")

    return [json.loads(line, parse_constant=no_nan) for line in lines(stream)]


def record(message: str, *args: object, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("trio_klines.recorder", logging.WARNING, __file__, 1, message, args, None)
    rec.created, rec.msecs = CREATED, 123.0
    rec.__dict__.update(fields)
    return rec


# --- text ---------------------------------------------------------------------------------------


def test_text_lines_carry_an_iso_utc_time() -> None:
    with bare_root() as stderr:
        configure_logging("INFO")
        log = logging.getLogger("trio_klines.test")
        log.info("hello %s", "world")
        log.debug("not at INFO")
        assert len(lines(stderr)) == 1
        assert TEXT_LINE.fullmatch(lines(stderr)[0])
        assert lines(stderr)[0].endswith(" INFO trio_klines.test: hello world")


def test_text_format_of_a_record() -> None:
    gap = Gap(Series("spot", "BTCUSDT", "1m"), 1_796_033_700_000, 1_796_033_880_000)
    assert TextFormatter().format(record("gap: %s", gap)) == (
        "2026-11-30T10:15:00.123Z WARNING trio_klines.recorder: gap: spot BTCUSDT-1m: 3 candle(s) missing "
        "from 2026-11-30T10:15:00Z to 2026-11-30T10:18:00Z"
    )


def log_a_failure(fmt: str) -> str:
    """What ``configure_logging("INFO", fmt)`` writes for an exception logged with its traceback."""
    with bare_root() as stderr:
        configure_logging("INFO", fmt)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("trio_klines.test").exception("it failed")
        return stderr.getvalue()


def test_text_shows_the_traceback_after_the_line() -> None:
    first, *rest = log_a_failure("text").splitlines()
    assert TEXT_LINE.fullmatch(first) and first.endswith("ERROR trio_klines.test: it failed")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


# --- JSON ---------------------------------------------------------------------------------------


def test_json_lines_have_the_stable_keys() -> None:
    with bare_root() as stderr:
        configure_logging("INFO", "json")
        log = logging.getLogger("trio_klines.test")
        log.info("one")
        log.warning("two\nlines, ünïcode ×")
        log.error("three %d", 3)
        raw = lines(stderr)
        assert len(raw) == 3 and all(line.isascii() for line in raw)
        entries = json_lines(stderr)
        for entry in entries:
            assert tuple(entry)[: len(JSON_KEYS)] == JSON_KEYS
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(entry["time"]))
            assert entry["logger"] == "trio_klines.test"
            assert "exc" not in entry
        assert [(e["level"], e["message"]) for e in entries] == [
            ("INFO", "one"),
            ("WARNING", "two\nlines, ünïcode ×"),
            ("ERROR", "three 3"),
        ]


def test_json_time_of_a_record() -> None:
    entry = json.loads(JsonFormatter().format(record("x")))
    assert entry == {"time": "2026-11-30T10:15:00.123Z", "level": "WARNING", "logger": "trio_klines.recorder",
                     "message": "x"}  # fmt: skip


def test_json_includes_the_traceback() -> None:
    (entry,) = [json.loads(line) for line in log_a_failure("json").splitlines()]
    assert entry["message"] == "it failed" and entry["level"] == "ERROR"
    exc = str(entry["exc"])
    assert exc.startswith("Traceback (most recent call last):") and exc.endswith("ValueError: boom")
    assert list(entry)[-1] == "exc"


def test_json_carries_extra_fields_without_clobbering_the_stable_keys() -> None:
    with bare_root() as stderr:
        configure_logging("INFO", "json")
        series = Series("spot", "BTCUSDT", "1m")
        log = logging.getLogger("trio_klines.test")
        log.info("backfilled", extra={"series": series, "candles": 3, "start": "2026-11-30T10:15:00Z", "end": None})
        log.info("odd", extra={"level": "mine", "logger": "mine too", "time": 5, "exc": "not a traceback",
                               "where": Path("/tmp/x"), "ratio": 0.5, "bad": math.nan, "ok": True})  # fmt: skip
        first, second = json_lines(stderr)
        assert first["series"] == "spot BTCUSDT-1m" and first["candles"] == 3
        assert first["start"] == "2026-11-30T10:15:00Z" and first["end"] is None
        assert second["level"] == "INFO" and second["logger"] == "trio_klines.test" and second["time"] != 5
        assert "exc" not in second
        assert second["extra_level"] == "mine" and second["extra_logger"] == "mine too" and second["extra_time"] == 5
        assert second["extra_exc"] == "not a traceback"
        assert (
            second["where"] == "/tmp/x" and second["ratio"] == 0.5 and second["bad"] == "nan" and second["ok"] is True
        )


def test_the_backfillers_lines_carry_fields() -> None:
    from trio_klines.pipeline.backfill import _fields

    series = Series("usdt_futures", "ETHUSDT", "1m")
    assert _fields(series, 1_796_033_700_000, None) == {
        "series": "usdt_futures ETHUSDT-1m", "start": "2026-11-30T10:15:00Z", "end": None}  # fmt: skip
    assert _fields(series, 0, 60_000, 1)["candles"] == 1


# --- levels, chatter and set-up -------------------------------------------------------------------


def _http_get() -> None:
    """One request through httpx, answered in memory: httpx logs it at INFO ("HTTP Request: …")."""
    with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200))) as client:
        client.get("http://127.0.0.1/time")


@pytest.mark.parametrize("fmt", LOG_FORMATS)
def test_third_party_chatter_is_silent_at_info(fmt: str) -> None:
    with bare_root() as stderr:
        configure_logging("INFO", fmt)
        _http_get()
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).info("chatter")
            logging.getLogger(f"{name}.child").info("chatter")
            assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        logging.getLogger("websockets.client").warning("a real problem")
        logging.getLogger("trio_klines.test").info("ours")
        text = stderr.getvalue()
        assert "HTTP Request" not in text and "chatter" not in text
        assert "a real problem" in text and "ours" in text


def test_third_party_chatter_is_heard_at_debug() -> None:
    with bare_root() as stderr:
        configure_logging("DEBUG")
        _http_get()
        logging.getLogger("websockets.client").debug("> TEXT frame")
        text = stderr.getvalue()
        assert "httpx: HTTP Request: GET http://127.0.0.1/time" in text
        assert "websockets.client: > TEXT frame" in text
        assert all(TEXT_LINE.fullmatch(line) for line in lines(stderr))


def test_at_error_third_party_warnings_stay_out_too() -> None:
    with bare_root() as stderr:
        configure_logging("ERROR")
        logging.getLogger("httpx").warning("a warning")
        logging.getLogger("trio_klines.test").warning("ours, a warning")
        logging.getLogger("httpx").error("an error")
        assert [line.split(": ", 1)[1] for line in lines(stderr)] == ["an error"]


def test_an_existing_configuration_is_left_alone() -> None:
    with bare_root():
        mine = logging.StreamHandler(io.StringIO())
        logging.getLogger().addHandler(mine)
        configure_logging("INFO", "json")
        assert logging.getLogger().handlers == [mine]
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)  # the chatter is still kept out


def test_unknown_format_or_level_is_a_config_error() -> None:
    with bare_root():
        with pytest.raises(ConfigError, match="unknown log format 'xml'; choose one of: text, json"):
            configure_logging("INFO", "xml")
        with pytest.raises(ConfigError, match="unknown log level 'LOUD'"):
            configure_logging("LOUD")
        assert logging.getLogger().handlers == []
