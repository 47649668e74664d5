"""Every command ends an everyday mistake with one line and the right status, in process (``main``).

2 for bad configuration (the command cannot succeed until it is changed), 1 for a failure while
running, 130 for SIGINT before a command's own handler is in place; never a traceback or a group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trio_klines.cli import main
from trio_klines.cli.common import check_data_dir, signal_exit_status
from trio_klines.errors import ConfigError, StoreLocked
from trio_klines.store.dataset import Store

from e2e_support import mounted_tmpfs

PROG = "python -m trio_klines"
STREAM = ["--stream", "spot:1m:BTCUSDT"]
#: Every command that takes --data, with what it needs besides (nothing here reaches the network).
WITH_DATA = {
    "record": [*STREAM, "--no-check-symbols"],  # the symbol check would ask Binance's exchangeInfo first
    "backfill": [*STREAM, "--since", "2024-01-01"],
    "demo": [],
    "status": [],
    "compact": [],
    "verify": [],
}


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize("command", sorted(WITH_DATA))
def test_data_that_is_a_file_is_bad_configuration(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a store")
    assert main([command, *WITH_DATA[command], "--data", str(a_file)]) == 2
    assert one_line(capsys) == f"{PROG} {command}: error: data directory {a_file} is a file: give --data a directory"
    assert main([command, *WITH_DATA[command], "--data", str(a_file / "data")]) == 2
    assert one_line(capsys).endswith(f"cannot be created: {a_file} is a file; give --data another directory")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system (a tmpfs mounted ``ro``: root ignores permission bits, not that)."""
    with mounted_tmpfs(tmp_path / "ro", 1, read_only=True) as mount:
        yield mount


@pytest.mark.parametrize("command", ["record", "backfill", "demo"])
def test_a_read_only_data_directory_is_bad_configuration_for_the_writers(
    command: str, read_only_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, *WITH_DATA[command], "--data", str(read_only_dir)]) == 2
    assert one_line(capsys) == (
        f"{PROG} {command}: error: data directory {read_only_dir} is on a read-only file system: "
        "give --data a writable directory"
    )
    assert main([command, *WITH_DATA[command], "--data", str(read_only_dir / "new")]) == 2
    assert "cannot be created: " in one_line(capsys)


def test_check_data_dir_accepts_what_can_be_made(tmp_path: Path) -> None:
    check_data_dir(tmp_path, write=True)
    check_data_dir(tmp_path / "a" / "b", write=True)  # made when the store opens
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        check_data_dir(tmp_path / "f", write=False)


@pytest.mark.parametrize("command", ["record", "backfill", "compact"])
def test_a_locked_store_is_a_failure_in_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The lock is held by this process: the recorder's own open (in a worker thread, inside trio.run and
    # its nurseries) meets it as another process would, and fails before it touches the network (record
    # runs without its start-up symbol check here, which would ask the exchange first).
    with Store(tmp_path):
        status = main([command, *WITH_DATA[command], "--data", str(tmp_path)])
    assert status == 1
    line = one_line(capsys)
    assert line.startswith(f"{PROG} {command}: error: {tmp_path} is being written by another process"), line
    if command != "compact":  # compact says so in its own words
        assert line.endswith("; stop that process, or give --data another directory"), line


def test_a_failure_inside_a_group_is_reported_as_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import trio_klines.store.status

    def fail(_: Path, *, now: int | None = None) -> None:
        raise BaseExceptionGroup("nursery", [OSError(28, "No space left on device"), StoreLocked("later")])

    monkeypatch.setattr(trio_klines.store.status, "store_status", fail)
    assert main(["status", "--data", str(tmp_path)]) == 1
    assert one_line(capsys) == f"{PROG} status: error: [Errno 28] No space left on device"


def test_ctrl_c_before_a_commands_handler_exits_130_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import trio_klines.store.status

    def interrupted(_: Path, *, now: int | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trio_klines.store.status, "store_status", interrupted)
    assert main(["status", "--data", str(tmp_path)]) == 130
    assert one_line(capsys) == f"{PROG} status: interrupted (SIGINT)"


def test_a_bug_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import trio_klines.store.status

    def bug(_: Path, *, now: int | None = None) -> None:
        raise ZeroDivisionError

    monkeypatch.setattr(trio_klines.store.status, "store_status", bug)
    with pytest.raises(ZeroDivisionError):
        main(["status", "--data", str(tmp_path)])


def test_bad_configuration_is_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", "--data", str(tmp_path)]) == 2
    assert one_line(capsys) == (
        f"{PROG} record: error: no streams to record: give --stream MARKET:INTERVAL:SYMBOL (or MARKET:INTERVAL:* "
        "for every symbol) or streams in the config"
    )


def test_signal_statuses_follow_the_shells() -> None:
    import signal

    assert signal_exit_status(signal.SIGINT) == 130
    assert signal_exit_status(signal.SIGTERM) == 143


def test_http_request_lines_are_heard_only_at_debug() -> None:
    import logging

    from trio_klines.cli.common import configure_logging

    try:
        configure_logging("INFO")
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        configure_logging("DEBUG")
        assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:
        logging.getLogger("httpx").setLevel(logging.NOTSET)
