"""WebSocket transports: how a connection task opens a socket, behind one small interface.

A transport is a callable ``transport(url)`` returning an async context manager that yields a
:class:`Connection`. Every failure surfaces as :class:`~trio_klines.errors.ConnectionLost`, so the
connection task never sees a library's own exceptions. Tests and embedders can pass their own.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, Protocol, runtime_checkable

import trio
import trio_websocket

from .errors import ConnectionLost

__all__ = ["BatchConnection", "Connection", "Transport", "trio_websocket_transport"]

#: Kline frames are < 1 KiB; anything near this is not a kline frame.
MAX_MESSAGE_SIZE: Final = 1 << 20
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

_LOST = (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError, trio.BrokenResourceError)


class _TrioWebsocketConnection:
    __slots__ = ("_queue", "_ws")

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        # The queue between trio-websocket's reader task and get_message (a private attribute: without
        # it, receive_batch returns one message per call, which is correct, only slower).
        queue = getattr(ws, "_recv_channel", None)
        self._queue: trio.MemoryReceiveChannel[str | bytes] | None = (
            queue if isinstance(queue, trio.MemoryReceiveChannel) else None
        )

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except _LOST as exc:
            raise ConnectionLost(f"connection closed: {exc}") from exc

    async def receive_batch(self) -> list[str | bytes]:
        # get_message costs a checkpoint per message; what the reader task has queued already is taken
        # without one (at most MESSAGE_QUEUE_SIZE: the queue's bound).
        batch = [await self.receive()]
        queue = self._queue
        if queue is not None:
            take = queue.receive_nowait
            try:
                while True:
                    batch.append(take())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                pass
        return batch

    async def send(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except _LOST as exc:
            raise ConnectionLost(f"connection closed while sending: {exc}") from exc


def trio_websocket_transport(
    *, connect_timeout: float = 10.0, disconnect_timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None
) -> Transport:
    """The default transport, on trio-websocket (wsproto). Pings are answered by the library.

    ``connect_timeout`` bounds the TCP + TLS + HTTP upgrade; ``disconnect_timeout`` the close handshake,
    so a dead peer cannot hold a reconnect up.
    """

    @asynccontextmanager
    async def open_connection(url: str) -> AsyncIterator[Connection]:
        try:
            async with trio_websocket.open_websocket_url(
                url,
                ssl_context=ssl_context if url.startswith("wss:") else None,
                message_queue_size=MESSAGE_QUEUE_SIZE,
                max_message_size=MAX_MESSAGE_SIZE,
                connect_timeout=connect_timeout,
                disconnect_timeout=disconnect_timeout,
            ) as ws:
                yield _TrioWebsocketConnection(ws)
        except _LOST as exc:
            raise ConnectionLost(f"cannot connect to {url.split('?')[0]}: {exc}") from exc

    return open_connection
