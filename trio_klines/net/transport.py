"""WebSocket transports: how a connection task opens a socket, behind one small interface.

A transport is a callable ``transport(url)`` returning an async context manager that yields a
:class:`Connection`. Every failure surfaces as :class:`~trio_klines.errors.ConnectionLost`, so the
connection task never sees a library's own exceptions. Tests and embedders can pass their own.
"""

from __future__ import annotations

import math
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Final, NoReturn, Protocol, runtime_checkable

import trio
import trio_websocket
import wsproto.utilities

from ..errors import ConfigError, ConnectionLost

__all__ = ["BatchConnection", "Connection", "Transport", "trio_websocket_transport"]

#: Kline frames are < 1 KiB; anything near this is not a kline frame.
MAX_MESSAGE_SIZE: Final = 1 << 20
#: Bytes per socket read (trio-websocket's default is 4 KiB, a dozen kline frames).
RECEIVE_BUFFER_SIZE: Final = 64 * 1024
#: Frames buffered between the socket reader and the receive loop.
MESSAGE_QUEUE_SIZE: Final = 256


class Connection(Protocol):
    """An open WebSocket: text frames in, control requests out."""

    async def receive(self) -> str | bytes:
        """The next data frame; raises :class:`ConnectionLost` when the connection is gone.

        Cancelled while waiting, it must lose nothing: the connection task cancels a wait when its
        receive deadline needs re-arming, and carries on receiving.
        """
        ...

    async def send(self, message: str) -> None:
        """Send a text frame (a SUBSCRIBE request, say); raises :class:`ConnectionLost`."""
        ...


@runtime_checkable
class BatchConnection(Connection, Protocol):
    """A connection that can also hand over everything it has buffered in one call.

    Optional: the connection task uses :meth:`receive_batch` when a connection has it, so that a burst
    of frames costs one wakeup, one timeout update and one channel send instead of one each per frame.
    """

    async def receive_batch(self) -> list[str | bytes]:
        """The buffered messages (at least one: waits like :meth:`receive`); same errors and guarantees."""
        ...


Transport = Callable[[str], AbstractAsyncContextManager[Connection]]

#: When the exit is cancelled (a stopping connection task), how long the close may take: enough to write
#: the close frame. The server's answer is not worth waiting for: the cancelled reader task cannot read it.
CANCELLED_CLOSE_GRACE: Final = 0.05

_LOST = (
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


def _reason(exc: BaseException) -> str:
    """A readable reason: trio wraps TLS and socket errors in an empty ``BrokenResourceError``."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


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
    __slots__ = ("_broken", "_guard", "_queue", "_stream", "_write_timeout", "_ws")

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: trio.abc.Stream, guard: _ReaderGuard, write_timeout: float
    ) -> None:
        self._ws = ws
        self._stream = stream
        self._guard = guard
        self._write_timeout = write_timeout
        self._broken: str | None = None
        # The queue between trio-websocket's reader task and get_message (a private attribute: without
        # it, receive_batch returns one message per call, which is correct, only slower).
        queue = getattr(ws, "_recv_channel", None)
        self._queue: trio.MemoryReceiveChannel[str | bytes] | None = (
            queue if isinstance(queue, trio.MemoryReceiveChannel) else None
        )

    def _lost(self, exc: BaseException | None) -> ConnectionLost:
        if self._broken is not None:
            return ConnectionLost(self._broken)
        error = self._guard.error
        if error is not None and not isinstance(error, trio_websocket.ConnectionClosed):
            return ConnectionLost(f"connection failed: {_reason(error)}")
        return ConnectionLost(f"connection closed: {_reason(exc) if exc is not None else self._ws.closed}")

    async def receive(self) -> str | bytes:
        if self._broken is not None:
            raise ConnectionLost(self._broken)
        try:
            return await self._ws.get_message()
        except _LOST as exc:
            raise self._lost(exc) from exc

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
        with trio.move_on_after(self._write_timeout) as scope:
            try:
                await self._ws.send_message(message)
            except _LOST as exc:
                raise self._lost(exc) from exc
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
            with suppress(*_LOST, wsproto.utilities.LocalProtocolError):
                await self._ws.aclose()
            await trio.aclose_forcefully(self._stream)


def _collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception the body of ``async with`` raised, out of the group our nursery wrapped it in.

    The reader task never raises (see :class:`_ReaderGuard`) but ``Cancelled``, so a group holds the
    body's exception and maybe some ``Cancelled``; a group of several real errors is kept whole.
    """
    real = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if not real:
        return group.exceptions[0]
    if len(real) == 1:
        return real[0]
    return group


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


def trio_websocket_transport(
    *, connect_timeout: float = 10.0, disconnect_timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None
) -> Transport:
    """The default transport, on trio-websocket (wsproto). Pings are answered by the library.

    ``connect_timeout`` bounds the TCP + TLS + HTTP upgrade; ``disconnect_timeout`` the close
    handshake (a moment only when the exit is cancelled, but the close frame is always sent) and
    every send, so a dead peer cannot hold a reconnect up. TLS verifies certificates with
    ``ssl_context`` (default: the system's trust store) and reports a failure as such.
    """
    contexts: list[ssl.SSLContext] = [ssl_context] if ssl_context is not None else []

    def tls_context() -> ssl.SSLContext:
        # Made on first use and kept: loading the trust store costs milliseconds per connection.
        if not contexts:
            contexts.append(ssl.create_default_context())
        return contexts[0]

    @asynccontextmanager
    async def open_connection(url: str) -> AsyncIterator[Connection]:
        where = url.split("?")[0]
        try:
            async with trio.open_nursery() as nursery:
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
                if ws is None or ws.closed is not None:
                    if stream is not None:
                        await trio.aclose_forcefully(stream)
                    nursery.cancel_scope.cancel()
                    if guard.error is not None:
                        reason = _reason(guard.error)
                    elif timer.cancelled_caught:
                        reason = f"no answer within {connect_timeout:g}s"
                    else:
                        reason = str(ws.closed if ws is not None else "connection closed")
                    raise ConnectionLost(f"cannot connect to {where}: {reason}")
                assert stream is not None
                conn = _TrioWebsocketConnection(ws, stream, guard, disconnect_timeout)
                try:
                    yield conn
                finally:
                    await conn.aclose(disconnect_timeout)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            exc = _collapse(group)
            if isinstance(exc, _LOST):  # refused, reset, TLS: from the connect, as when not grouped
                raise ConnectionLost(f"cannot connect to {where}: {_reason(exc)}") from exc
            _reraise(exc)
        except _LOST as exc:
            raise ConnectionLost(f"cannot connect to {where}: {_reason(exc)}") from exc

    return open_connection


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as it was, not chained to the group it came out of."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
