"""The sd_notify protocol, without systemd's library: tell a service manager the recorder is ready, alive,
reloading or stopping.

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET`` naming an ``AF_UNIX`` datagram socket: a
path, or ``@name`` for Linux's abstract namespace. Each message is one datagram of newline-separated
``KEY=VALUE`` assignments (``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``).
With ``WatchdogSec=`` set, systemd also passes ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``) and kills the
service when ``WATCHDOG=1`` does not arrive that often.

Notifying is best effort: a message that cannot be delivered (the socket gone, ``ECONNREFUSED``, a manager
too busy to read it within :data:`SEND_TIMEOUT`) is counted and logged, never raised, so the recorder never
stops for it. The environment is read once, by :meth:`Notifier.from_env`, and never changed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Final

import trio
from trio.socket import AF_UNIX, SOCK_DGRAM

from ..errors import ConfigError

__all__ = ["SEND_TIMEOUT", "STATUS_MAX_BYTES", "Notifier"]

log = logging.getLogger("trio_klines.notify")

#: Longest a message waits for the manager to make room in its socket's queue; then it is dropped.
SEND_TIMEOUT: Final = 2.0
#: A status longer than this (UTF-8) is cut: systemd reads a datagram of at most 4096 bytes.
STATUS_MAX_BYTES: Final = 1024

# sun_path is 108 bytes: a path needs its terminating NUL, an abstract name its leading one.
_SUN_PATH_MAX: Final = 107
_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Notifier:
    """Sends sd_notify messages to the service manager listening on ``address`` (``/path`` or ``@name``).

    Every method sends one datagram and returns ``True`` if it was delivered, ``False`` if not (counted in
    :attr:`failures`; the first failure of a run of them is logged at WARNING, the rest at DEBUG, and a
    later delivery says so at INFO). A datagram is either sent whole or not at all: if cancelled, a method
    raises ``trio.Cancelled`` and the manager may or may not have got the message.

    Raises:
      ConfigError: ``address`` is neither an absolute path nor ``@name``, or too long for a socket address;
        ``watchdog_usec`` is not positive.
    """

    def __init__(self, address: str, *, watchdog_usec: int | None = None, send_timeout: float = SEND_TIMEOUT) -> None:
        self.address = address
        self._sockaddr = _socket_address(address)
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise ConfigError(f"the watchdog period must be a positive number of microseconds, not {watchdog_usec}")
        self._watchdog_usec = watchdog_usec
        self.send_timeout = send_timeout
        #: Messages not delivered since this notifier was made.
        self.failures = 0
        self._failing = 0  # failures since the last delivery

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier | None:
        """The notifier ``environ`` asks for: ``None`` when ``NOTIFY_SOCKET`` is unset or empty (not run by a
        service manager that listens).

        The watchdog is on when ``WATCHDOG_USEC`` is set and ``WATCHDOG_PID`` is unset or this process's id
        (a watchdog meant for another process of the service is not ours to feed).

        Raises:
          ConfigError: ``NOTIFY_SOCKET`` is not a path or ``@name`` (systemd's ``vsock:`` addresses
            included), or ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` is not a positive integer.
        """
        address = environ.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        watchdog_usec = _positive_int(environ, "WATCHDOG_USEC")
        watchdog_pid = _positive_int(environ, "WATCHDOG_PID")
        if watchdog_pid is not None and watchdog_pid != os.getpid():
            watchdog_usec = None
        return cls(address, watchdog_usec=watchdog_usec)

    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1`` (half the manager's period, as systemd advises), or ``None``
        when the manager runs no watchdog for this process."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2_000_000

    async def ready(self, status: str | None = None) -> bool:
        """``READY=1``: started (or done reloading); with a ``STATUS=`` line when ``status`` is given."""
        return await self.send({"READY": "1"} | _status(status))

    async def status(self, text: str) -> bool:
        """``STATUS=text``: one line ``systemctl status`` shows; newlines and control characters become a
        space, and a text longer than :data:`STATUS_MAX_BYTES` is cut."""
        return await self.send(_status(text))

    async def watchdog(self) -> bool:
        """``WATCHDOG=1``: still alive (:meth:`run_watchdog` sends it as often as the manager wants)."""
        return await self.send({"WATCHDOG": "1"})

    async def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (``CLOCK_MONOTONIC`` now, which systemd ≥ 253 requires
        with ``Type=notify-reload``); send :meth:`ready` when the reload is done."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return await self.send({"RELOADING": "1", "MONOTONIC_USEC": str(monotonic_usec)} | _status(status))

    async def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutting down (the manager stops expecting watchdog messages)."""
        return await self.send({"STOPPING": "1"} | _status(status))

    async def run_watchdog(self, *, task_status: trio.TaskStatus[float | None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send ``WATCHDOG=1`` now and every :meth:`watchdog_interval` seconds, until cancelled.

        Reports the interval to ``nursery.start`` once the first message is sent; returns at once (reporting
        ``None``) when there is no watchdog. A late wake-up does not send a burst to catch up.
        """
        interval = self.watchdog_interval()
        if interval is None:
            task_status.started(None)
            return
        await self.watchdog()
        task_status.started(interval)
        deadline = trio.current_time()
        while True:
            deadline = max(deadline + interval, trio.current_time())
            await trio.sleep_until(deadline)
            await self.watchdog()

    async def send(self, fields: Mapping[str, str]) -> bool:
        """Send ``fields`` as one datagram of ``KEY=VALUE`` lines, in order; ``True`` if delivered.

        A fresh socket per message, as libsystemd does: it finds the manager again after a re-exec. The
        socket is connected so that a full queue wakes it when the manager drains it (an unconnected
        datagram socket polls writable and would spin on ``EAGAIN``).

        Raises:
          ValueError: a key is not ``UPPER_CASE`` or a value holds a newline (a bug of the caller).
        """
        datagram = _datagram(fields)
        try:
            with trio.fail_after(self.send_timeout), trio.socket.socket(AF_UNIX, SOCK_DGRAM) as sock:
                await sock.connect(self._sockaddr)
                sent = await sock.send(datagram)
            if sent != len(datagram):
                raise OSError(f"sent {sent} of {len(datagram)} bytes")
        except trio.TooSlowError:
            self._failed(f"the manager read nothing for {self.send_timeout:g} s")
            return False
        except OSError as exc:
            self._failed(str(exc))
            return False
        if self._failing:
            log.info("notifications to %s delivered again, after %d that were not", self.address, self._failing)
            self._failing = 0
        return True

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self._failing += 1
        if self._failing == 1:
            log.warning(
                "cannot notify the service manager at %s: %s; going on without (more failures logged at DEBUG)",
                self.address,
                reason,
            )
        else:
            log.debug("cannot notify the service manager at %s: %s", self.address, reason)


def _socket_address(address: str) -> bytes:
    """``address`` as ``AF_UNIX`` wants it: a path's bytes, or NUL then the name for ``@name``."""
    if "\0" in address:
        raise ConfigError(f"NOTIFY_SOCKET must not contain a NUL character: {address!r}")
    if address.startswith("@"):
        name = os.fsencode(address[1:])
        if not name:
            raise ConfigError("NOTIFY_SOCKET '@' names no abstract socket: expected @NAME")
        raw = b"\0" + name
    elif address.startswith("/"):
        raw = os.fsencode(address)
    else:
        raise ConfigError(
            f"NOTIFY_SOCKET must be an absolute socket path or @NAME (an abstract socket), not {address!r}"
        )
    if len(raw) > _SUN_PATH_MAX + (1 if raw.startswith(b"\0") else 0):
        raise ConfigError(f"NOTIFY_SOCKET is longer than a socket address allows ({_SUN_PATH_MAX} bytes): {address!r}")
    return raw


def _positive_int(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise ConfigError(f"{name} must be a positive integer, not {text!r}")
    return int(text)


def _status(text: str | None) -> dict[str, str]:
    """``{"STATUS": text}`` on one line and at most :data:`STATUS_MAX_BYTES`, or nothing for ``None``."""
    if text is None:
        return {}
    line = _CONTROL.sub(" ", text).strip()
    encoded = line.encode()
    if len(encoded) > STATUS_MAX_BYTES:
        # Cut on a character boundary, leaving room for the ellipsis (3 bytes).
        line = encoded[: STATUS_MAX_BYTES - 3].decode(errors="ignore") + "…"
    return {"STATUS": line}


def _datagram(fields: Mapping[str, str]) -> bytes:
    for key, value in fields.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"a notification key is UPPER_CASE, not {key!r}")
        if "\n" in value:
            raise ValueError(f"the value of {key} holds a newline: {value!r}")
    return "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
