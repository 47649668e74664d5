"""The sd_notify client against a fake service manager: a datagram socket bound to a path or an abstract name."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_klines.errors import ConfigError
from trio_klines.ops.notify import STATUS_MAX_BYTES, Notifier


class FakeManager:
    """The listening end of ``NOTIFY_SOCKET``. A message is queued on it before the sender's call returns, so
    :meth:`pending` reads what was sent without waiting."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.raw.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock = trio.socket.from_stdlib_socket(self.raw)  # the same socket, for awaiting a message

    async def next(self) -> bytes:
        with trio.fail_after(30):
            return await self.sock.recv(65536)

    def pending(self) -> list[bytes]:
        messages = []
        while True:
            try:
                messages.append(self.raw.recv(65536))
            except BlockingIOError:
                return messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or a shorter directory when a socket path in it would not fit in ``sun_path``."""
    if len(os.fsencode(tmp_path / "notify")) <= 100:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="tk-") as directory:
        yield Path(directory)


@pytest.fixture
async def manager(short_dir: Path) -> AsyncIterator[FakeManager]:
    fake = FakeManager(str(short_dir / "notify"))
    yield fake
    fake.close()


@pytest.fixture
async def abstract_manager() -> AsyncIterator[FakeManager]:
    fake = FakeManager(f"@trio-klines-test-{os.getpid()}-{id(object())}")
    yield fake
    fake.close()


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# --- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["path", "abstract"])
async def test_each_message_is_one_datagram_of_key_value_lines(
    which: str, manager: FakeManager, abstract_manager: FakeManager
) -> None:
    fake = manager if which == "path" else abstract_manager
    notifier = Notifier.from_env({"NOTIFY_SOCKET": fake.address})
    assert notifier is not None

    assert await notifier.ready()
    assert await notifier.ready("recording 3 series")
    assert await notifier.status("1200 candles written, 0 gaps")
    assert await notifier.watchdog()
    assert await notifier.stopping()
    assert await notifier.stopping("flushing")
    assert fake.pending() == [
        b"READY=1",
        b"READY=1\nSTATUS=recording 3 series",
        b"STATUS=1200 candles written, 0 gaps",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"STOPPING=1\nSTATUS=flushing",
    ]
    assert notifier.failures == 0


async def test_reloading_carries_the_monotonic_clock(manager: FakeManager) -> None:
    notifier = Notifier(manager.address)
    before = monotonic_usec()
    assert await notifier.reloading()
    after = monotonic_usec()
    assert await notifier.reloading("reading the config")
    assert await notifier.ready("recording 4 series")

    first, second, ready = manager.pending()
    reloading, stamp = first.decode().split("\n")
    assert reloading == "RELOADING=1"
    assert stamp.startswith("MONOTONIC_USEC=")
    assert before <= int(stamp.removeprefix("MONOTONIC_USEC=")) <= after
    assert second.decode().split("\n")[::2] == ["RELOADING=1", "STATUS=reading the config"]
    assert ready == b"READY=1\nSTATUS=recording 4 series"


async def test_a_status_is_one_line_and_fits_a_datagram(manager: FakeManager) -> None:
    notifier = Notifier(manager.address)
    await notifier.status(" flushing\nand\r\nsealing\x00now\n")
    await notifier.status("é" * 2000)  # two bytes each: cut on a character boundary
    one_line, long = manager.pending()
    assert one_line == b"STATUS=flushing and sealing now"
    text = long.decode().removeprefix("STATUS=")
    assert len(text.encode()) <= STATUS_MAX_BYTES
    assert text.endswith("é…")


async def test_send_refuses_what_the_protocol_cannot_carry(manager: FakeManager) -> None:
    notifier = Notifier(manager.address)
    with pytest.raises(ValueError, match="newline"):
        await notifier.send({"STATUS": "two\nlines"})
    with pytest.raises(ValueError, match="UPPER_CASE"):
        await notifier.send({"ready": "1"})
    assert await notifier.send({"EXTEND_TIMEOUT_USEC": "30000000"})
    assert manager.pending() == [b"EXTEND_TIMEOUT_USEC=30000000"]


# --- the environment ----------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "60000000"}])
def test_no_socket_no_notifier(environ: dict[str, str]) -> None:
    assert Notifier.from_env(environ) is None


@pytest.mark.parametrize(
    "address",
    ["notify", "./run/notify", "vsock:2:1234", "@", " /run/notify", "/run/\0notify", "/" + "x" * 107, "@" + "x" * 108],
)
def test_a_bad_address_is_a_one_line_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFY_SOCKET") as caught:
        Notifier.from_env({"NOTIFY_SOCKET": address})
    assert "\n" not in str(caught.value)


def test_the_longest_addresses_are_accepted() -> None:
    assert Notifier("/" + "x" * 106) is not None
    assert Notifier("@" + "x" * 107) is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [("WATCHDOG_USEC", "0"), ("WATCHDOG_USEC", "60s"), ("WATCHDOG_USEC", "²"), ("WATCHDOG_PID", "-1")],
)
def test_a_bad_watchdog_setting_is_a_config_error(name: str, value: str) -> None:
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "60000000"} | {name: value}
    with pytest.raises(ConfigError, match=name):
        Notifier.from_env(environ)


def test_the_watchdog_interval_is_half_the_managers_period() -> None:
    base = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    assert Notifier.from_env(base).watchdog_interval() is None  # type: ignore[union-attr]
    with_watchdog = Notifier.from_env(base | {"WATCHDOG_USEC": "60000000"})
    assert with_watchdog.watchdog_interval() == 30.0  # type: ignore[union-attr]
    ours = Notifier.from_env(base | {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())})
    assert ours.watchdog_interval() == 1.5  # type: ignore[union-attr]


def test_a_watchdog_for_another_process_is_not_ours() -> None:
    others = str(os.getpid() + 1)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": others})
    assert notifier is not None
    assert notifier.watchdog_interval() is None


# --- the watchdog loop --------------------------------------------------------------------------


async def test_the_watchdog_loop_pings_at_half_the_period(
    manager: FakeManager, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "10000000"})
    assert notifier is not None
    arrivals: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        assert await nursery.start(notifier.run_watchdog) == 5.0
        for _ in range(4):
            message = await manager.next()
            arrivals.append((trio.current_time() - start, message))
        nursery.cancel_scope.cancel()
    assert arrivals == [(0.0, b"WATCHDOG=1"), (5.0, b"WATCHDOG=1"), (10.0, b"WATCHDOG=1"), (15.0, b"WATCHDOG=1")]


async def test_no_watchdog_no_loop(manager: FakeManager, autojump_clock: trio.testing.MockClock) -> None:
    environ = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    notifier = Notifier.from_env(environ)
    assert notifier is not None
    async with trio.open_nursery() as nursery:
        assert await nursery.start(notifier.run_watchdog) is None
    await trio.sleep(60)
    assert manager.pending() == []


# --- failures -----------------------------------------------------------------------------------


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trio_klines.notify" and r.levelno >= logging.WARNING]


async def test_a_vanished_socket_warns_once_and_raises_nothing(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_klines.notify")
    path = short_dir / "notify"
    fake = FakeManager(str(path))
    notifier = Notifier(str(path))
    assert await notifier.ready()
    fake.close()  # the file is still there: ECONNREFUSED
    assert not await notifier.watchdog()
    path.unlink()  # now gone: ENOENT
    assert not await notifier.watchdog()
    assert not await notifier.stopping()
    assert notifier.failures == 3
    [warning] = warnings(caplog)
    assert str(path) in warning
    assert "refused" in warning.lower()

    back = FakeManager(str(path))  # the manager re-executed: the next message finds it
    try:
        assert await notifier.status("still here")
        assert back.pending() == [b"STATUS=still here"]
        assert any("delivered again, after 3" in r.getMessage() for r in caplog.records)
        back.close()
        assert not await notifier.watchdog()  # a new outage warns again
        assert len(warnings(caplog)) == 2
    finally:
        back.close()


async def test_a_full_queue_drops_the_message_after_the_timeout(
    manager: FakeManager, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(manager.address, send_timeout=2.0)
    queued = 0
    start = trio.current_time()
    while await notifier.watchdog():  # the manager reads nothing: its queue fills up
        queued += 1
        assert queued < 10_000
    assert trio.current_time() - start == pytest.approx(2.0)  # waited for room, did not spin or give up at once
    assert notifier.failures == 1
    assert "read nothing for 2 s" in warnings(caplog)[0]
    assert len(manager.pending()) == queued
    assert await notifier.watchdog()  # room again
