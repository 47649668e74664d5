"""The default transport: trio-websocket (wsproto) over trio's TCP and TLS streams.

trio-websocket runs a reader task per connection, in a nursery we lend it through :class:`_ReaderGuard`
so that the reader's own failures end the connection instead of escaping as foreign exceptions. Every
error of the library, of wsproto and of the stream is mapped to
:class:`~trio_klines.errors.ConnectionLost` by :func:`~trio_klines.net.transport.map_errors` with this
module's one table, :data:`_LOST`: while connecting (exception groups of that nursery included) and on
each receive and send.
"""

from __future__ import annotations

import math
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Final

import trio
import trio_websocket
import wsproto.utilities

from ..errors import ConfigError, ConnectionLost
from .transport import (
    MAX_MESSAGE_SIZE,
    STREAM_ERRORS,
    Connection,
    ErrorMap,
    Transport,
    describe,
    map_errors,
    tls_contexts,
)

__all__ = ["trio_websocket_transport"]

#: Bytes per socket read (trio-websocket's default is 4 KiB, a dozen kline frames).
RECEIVE_BUFFER_SIZE: Final = 64 * 1024
#: Frames buffered between the socket reader and the receive loop.
MESSAGE_QUEUE_SIZE: Final = 256

#: When the exit is cancelled (a stopping connection task), how long the close may take: enough to write
#: the close frame. The server's answer is not worth waiting for: the cancelled reader task cannot read it.
CANCELLED_CLOSE_GRACE: Final = 0.05

#: What trio-websocket, wsproto and the stream raise when the connection cannot be opened or is gone: the
#: one table of this transport's errors, mapped to ours by :func:`~trio_klines.net.transport.map_errors`.
_LOST: Final = (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, *STREAM_ERRORS)
#: What closing may raise on top: wsproto refuses to answer a ping while the close handshake is under way.
_CLOSING: Final = (*_LOST, wsproto.utilities.LocalProtocolError)


class _ReaderGuard:
    """Stands in for the nursery trio-websocket starts its reader task in (``start_soon`` is all it uses).

    The reader's own errors (a rejected upgrade, wsproto refusing to answer a ping while closing, a
    library bug) would otherwise escape from the ``async with`` as foreign exceptions. Here they end the
    connection instead: the reader's exit closes the message queue, so a waiting receive raises
    :class:`ConnectionLost` carrying the reason, and a connect still under way is called off.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.error: BaseException | None = None
        self.connecting = trio.CancelScope()

    def start_soon(self, fn: Callable[[], Awaitable[object]], *args: object, name: object = None) -> None:
        self._nursery.start_soon(self._run, fn, *args)

    async def _run(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            await fn(*args)
        except Exception as exc:  # the reader's end is the connection's end, whatever the cause
            self.error = exc
        finally:
            self.connecting.cancel()  # a reader gone before the upgrade completed: the connect failed


class _TrioWebsocketConnection:
    __slots__ = ("_broken", "_errors", "_guard", "_queue", "_stream", "_write_timeout", "_ws")

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: trio.abc.Stream, guard: _ReaderGuard, write_timeout: float
    ) -> None:
        self._ws = ws
        self._stream = stream
        self._guard = guard
        self._write_timeout = write_timeout
        self._broken: str | None = None
        self._errors: ErrorMap = {_LOST: self._lost}
        # The queue between trio-websocket's reader task and get_message (a private attribute: without
        # it, receive_batch returns one message per call, which is correct, only slower).
        queue = getattr(ws, "_recv_channel", None)
        self._queue: trio.MemoryReceiveChannel[str | bytes] | None = (
            queue if isinstance(queue, trio.MemoryReceiveChannel) else None
        )

    def _lost(self, exc: BaseException | None) -> ConnectionLost:
        """Ours for ``exc`` (one of :data:`_LOST`), saying why: a broken write, the reader's failure or the close."""
        if self._broken is not None:
            return ConnectionLost(self._broken)
        error = self._guard.error
        if error is not None and not isinstance(error, trio_websocket.ConnectionClosed):
            return ConnectionLost(f"connection failed: {describe(error)}")
        return ConnectionLost(f"connection closed: {describe(exc) if exc is not None else self._ws.closed}")

    async def receive(self) -> str | bytes:
        if self._broken is not None:
            raise ConnectionLost(self._broken)
        with map_errors(self._errors):
            return await self._ws.get_message()

    async def receive_batch(self) -> list[str | bytes]:
        # trio-websocket's reader task yields after queueing each message, so the queue rarely holds
        # more than one: left alone, every frame would cost the connection task a wakeup, a timeout
        # update and a channel send. Instead, while each yield brings another message (a burst being
        # parsed), keep yielding and collecting, up to the queue's size; the first yield that brings
        # nothing ends the batch, so a lone frame waits no longer than one pass of the scheduler.
        batch = [await self.receive()]
        queue = self._queue
        if queue is None:
            return batch
        take = queue.receive_nowait
        while len(batch) < MESSAGE_QUEUE_SIZE:
            # Yield first, then take: the reader has queued at most one more by then, so a message
            # costs one pass and one take, and only the end of the batch raises WouldBlock. Shielded:
            # a cancel here would lose the messages already taken; the next wait sees it.
            await trio.lowlevel.cancel_shielded_checkpoint()
            try:
                batch.append(take())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        return batch

    async def send(self, message: str) -> None:
        """Send a text frame within ``write_timeout``; a write cut short breaks the connection."""
        if self._broken is not None:
            raise ConnectionLost(f"cannot send: {self._broken}")
        with trio.move_on_after(self._write_timeout) as scope, map_errors(self._errors):
            await self._ws.send_message(message)
        if scope.cancelled_caught:
            # Part of a frame may be out: nothing more can be written or trusted on this stream. Closing
            # it wakes the reader task, which closes the queue, so a waiting receive raises too.
            self._broken = "connection lost: a write did not finish in time"
            await trio.aclose_forcefully(self._stream)
            raise ConnectionLost(f"cannot send: {self._broken}")

    async def aclose(self, close_timeout: float) -> None:
        """The close handshake within ``close_timeout``, even when cancelled (then within a short grace).

        trio-websocket skips the close frame when its close is cancelled (its send lock checkpoints
        first), so it runs shielded here; the stream is closed at the end in every case.
        """
        if trio.current_effective_deadline() == -math.inf:  # this task is being cancelled
            close_timeout = min(close_timeout, CANCELLED_CLOSE_GRACE)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + close_timeout):
            with suppress(*_CLOSING):
                await self._ws.aclose()
            await trio.aclose_forcefully(self._stream)


async def _open_stream(url: str, ssl_context: ssl.SSLContext | None) -> tuple[trio.abc.Stream, str, str]:
    """TCP, then TLS with its handshake done here so that a certificate problem is reported as such."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"not a WebSocket URL: {url.split('?')[0]}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if secure:
        try:
            tls = trio.SSLStream(stream, ssl_context or ssl.create_default_context(), server_hostname=host,
                                 https_compatible=True)  # fmt: skip
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        stream = tls
    host_header = host if port in (80, 443) else f"{host}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return stream, host_header, resource


async def _connect(
    nursery: trio.Nursery,
    url: str,
    tls_context: Callable[[], ssl.SSLContext],
    connect_timeout: float,
    write_timeout: float,
) -> _TrioWebsocketConnection:
    """TCP, TLS and the HTTP upgrade within ``connect_timeout``, the reader task in ``nursery``.

    Raises :class:`ConnectionLost` for a timeout or an upgrade the reader gave up on, :class:`ConfigError`
    for a URL that is not ``ws://`` or ``wss://``, and the stream's and the library's own errors as they
    are (the caller maps them).
    """
    guard = _ReaderGuard(nursery)
    ws: trio_websocket.WebSocketConnection | None = None
    stream: trio.abc.Stream | None = None
    with trio.move_on_after(connect_timeout) as timer, guard.connecting:
        stream, host, resource = await _open_stream(url, tls_context() if url.startswith("wss:") else None)
        ws = await trio_websocket.wrap_client_stream(
            guard,  # type: ignore[arg-type]
            stream,  # type: ignore[arg-type]
            host,
            resource,
            message_queue_size=MESSAGE_QUEUE_SIZE,
            max_message_size=MAX_MESSAGE_SIZE,
            receive_buffer_size=RECEIVE_BUFFER_SIZE,
        )
    if ws is None or ws.closed is not None or stream is None:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()
        if guard.error is not None:
            reason = describe(guard.error)
        elif timer.cancelled_caught:
            reason = f"no answer within {connect_timeout:g}s"
        else:
            reason = str(ws.closed if ws is not None else "connection closed")
        raise ConnectionLost(f"cannot connect to {url.split('?')[0]}: {reason}")
    return _TrioWebsocketConnection(ws, stream, guard, write_timeout)


def trio_websocket_transport(
    *, connect_timeout: float = 10.0, disconnect_timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None
) -> Transport:
    """The default transport, on trio-websocket (wsproto). Pings are answered by the library.

    ``connect_timeout`` bounds the TCP + TLS + HTTP upgrade; ``disconnect_timeout`` the close
    handshake (a moment only when the exit is cancelled, but the close frame is always sent) and
    every send, so a dead peer cannot hold a reconnect up. TLS verifies certificates with
    ``ssl_context`` (default: the system's trust store) and reports a failure as such.
    """
    tls_context = tls_contexts(ssl_context)

    @asynccontextmanager
    async def open_connection(url: str) -> AsyncIterator[Connection]:
        where = url.split("?")[0]
        # Refused, reset, TLS, a rejected upgrade: raised alone or in the group our nursery wraps them in.
        with map_errors({_LOST: lambda exc: ConnectionLost(f"cannot connect to {where}: {describe(exc)}")}):
            async with trio.open_nursery() as nursery:
                conn = await _connect(nursery, url, tls_context, connect_timeout, disconnect_timeout)
                try:
                    yield conn
                finally:
                    await conn.aclose(disconnect_timeout)
                    nursery.cancel_scope.cancel()

    return open_connection
