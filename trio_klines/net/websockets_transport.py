"""The fast transport: the ``websockets`` library's Sans-I/O protocol driven over a plain trio stream.

trio-websocket runs a reader task and hands every message through a memory channel, a task switch per
frame (40–60 µs). Here there is no background task: :meth:`receive` itself reads the socket in large
chunks, feeds the bytes to :class:`websockets.client.ClientProtocol` and keeps the messages of one read
in a local deque, so the following calls return without touching trio at all (a few µs per message).

Cancellation safety rests on two facts:

* Bytes leave the socket only inside ``receive_some``, which either returns them or raises
  ``Cancelled`` having consumed nothing (trio's socket and TLS streams both guarantee it). Everything
  after it, up to the return of the first message, is synchronous except the write below, so a
  ``receive()`` cancelled by the caller's ``move_on_after`` never drops a byte: what was read is in
  the protocol's buffer or in the deque, and the next call carries on.
* Writes (pongs, requests, the close frame) are shielded from outside cancellation and bounded by
  ``disconnect_timeout`` instead: a frame cut in half by a cancel would corrupt the stream, and a write
  that cannot finish in that time means the peer stopped reading, so the connection is lost anyway.

Errors: once open, only the stream raises (the protocol reports a failure in its state instead), so a
connection maps :data:`~trio_klines.net.transport.STREAM_ERRORS` to
:class:`~trio_klines.errors.ConnectionLost` on its reads and writes; opening maps those, the library's
own (:data:`_HANDSHAKE_ERRORS`), the timeout and a bad URL (:class:`~trio_klines.errors.ConfigError`) in
one table. Both go through :func:`~trio_klines.net.transport.map_errors`.
"""

from __future__ import annotations

import functools
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Final

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from ..config import DEFAULT_READ_INTERVAL
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

__all__ = ["DEFAULT_READ_INTERVAL", "READ_SIZE", "websockets_transport"]

#: Bytes asked of the socket per read: a burst of hundreds of kline frames in one wakeup.
READ_SIZE: Final = 1 << 16
#: Bytes per second above which a connection is read without waiting: 4× what Binance's busiest paced
#: connection sends (200 futures streams × 4 updates/s × ~330 bytes ≈ 264 KB/s).
FAST_READ_RATE: Final = 1_000_000

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_OPEN, _CLOSED = State.OPEN, State.CLOSED
#: What opening a connection may raise besides the stream's errors: the library's (a refused upgrade, a bad
#: answer) and a server that hangs up during the handshake.
_HANDSHAKE_ERRORS: Final = (WebSocketException, EOFError)


class _WebsocketsConnection:
    """One open WebSocket. A single task receives; any task may send."""

    __slots__ = (
        "_fragments",
        "_last_read",
        "_lost",
        "_messages",
        "_next_read",
        "_protocol",
        "_read_errors",
        "_read_interval",
        "_send_lock",
        "_stream",
        "_write_errors",
        "_write_timeout",
    )

    def __init__(
        self, stream: trio.abc.Stream, protocol: ClientProtocol, write_timeout: float, read_interval: float = 0.0
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._write_timeout = write_timeout
        self._read_interval = read_interval
        #: The earliest the socket is read again, and when it was last read (trio time): see DEFAULT_READ_INTERVAL.
        self._next_read = 0.0
        self._last_read = 0.0
        self._messages: deque[str | bytes] = deque()
        #: The frames of a fragmented message received so far (Binance never fragments, others may).
        self._fragments: list[Frame] = []
        #: Why the connection is over, once it is; buffered messages are still delivered first.
        self._lost: str | None = None
        # Held by whoever writes; it also writes whatever others queued meanwhile (see _write_queued).
        self._send_lock = trio.Lock()
        # The stream is all that raises once the connection is open (the protocol reports, never raises).
        self._read_errors: ErrorMap = {STREAM_ERRORS: functools.partial(self._stream_failed, "connection lost")}
        self._write_errors: ErrorMap = {
            STREAM_ERRORS: functools.partial(self._stream_failed, "connection lost while sending")
        }

    # --- receiving ----------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for a text frame, ``bytes`` for a binary one.

        Returns at once, without a checkpoint, while messages of the last read are buffered; otherwise
        reads the socket. Raises :class:`ConnectionLost` once the buffer is empty and the connection is
        closed, failed or cut. Cancelled while waiting for data, it loses nothing: the next call
        resumes where this one stopped.
        """
        messages = self._messages
        if messages:
            return messages.popleft()
        return await self._read()

    async def receive_batch(self) -> list[str | bytes]:
        """Every buffered message (reading the socket first if there is none): one read's worth.

        Same errors and cancellation guarantee as :meth:`receive`.
        """
        messages = self._messages
        if not messages:
            await self._fill()
        batch = list(messages)
        messages.clear()
        return batch

    async def _read(self) -> str | bytes:
        await self._fill()
        return self._messages.popleft()

    async def _fill(self) -> None:
        """Read the socket until at least one message is buffered."""
        messages = self._messages
        protocol = self._protocol
        while not messages:
            if self._lost is not None:
                raise ConnectionLost(self._lost)
            if self._next_read and trio.current_time() < self._next_read:
                await trio.sleep_until(self._next_read)  # cancellable: nothing is read yet
            with map_errors(self._read_errors):
                data = await self._stream.receive_some(READ_SIZE)
            if self._read_interval:
                self._pace(len(data))
            # From here to the return nothing can be cancelled: the bytes are the protocol's now.
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            self._take(protocol.events_received())
            # Pongs (and the echo of a close frame) are queued by the protocol: write them now. Checked
            # first because a write costs a shielded cancel scope, and almost every read queues none.
            if protocol.writes:
                await self._write_queued()

    def _pace(self, size: int) -> None:
        """When to read next, after a read of ``size`` bytes: at once while data streams in faster than a
        paced feed can send it (a full buffer, or :data:`FAST_READ_RATE`: a burst, a backlog), else after
        the read interval. Waiting on a fast stream would let the socket's buffer cap the throughput."""
        now = trio.current_time()
        rate = size / max(now - self._last_read, 1e-6) if self._last_read else 0.0
        self._last_read = now
        fast = size == READ_SIZE or rate > FAST_READ_RATE
        self._next_read = 0.0 if fast else now + self._read_interval

    def _take(self, events: Iterable[object]) -> None:
        """Append the data messages among ``events`` to the buffer; note a close or a failure."""
        append = self._messages.append
        for frame in events:
            if not isinstance(frame, Frame):  # the handshake response, dealt with by _connect
                continue
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if not frame.fin:
                    self._fragments = [frame]
                    continue
                data = frame.data
            elif opcode is _CONT:
                # The protocol checks the order of fragments and their total size against max_size.
                self._fragments.append(frame)
                if not frame.fin:
                    continue
                fragments, self._fragments = self._fragments, []
                opcode = fragments[0].opcode
                data = b"".join(f.data for f in fragments)
            else:
                continue  # ping, pong, close: the protocol has queued the answer itself
            if opcode is _TEXT:
                try:
                    append(data.decode())
                except UnicodeDecodeError:
                    # RFC 6455 §8.1: fail the connection (1007), as wsproto does.
                    self._protocol.fail(1007, "invalid UTF-8 in a text frame")
                    self._lose("connection failed: invalid UTF-8 in a text frame")
                    break
            else:
                append(bytes(data))
        if self._lost is None and self._protocol.state is not _OPEN:
            self._lose(self._describe_close())

    def _describe_close(self) -> str:
        protocol = self._protocol
        if protocol.close_rcvd is not None:
            close = protocol.close_rcvd
            return f"connection closed by the server: {close.code} {close.reason}".rstrip()
        if isinstance(protocol.parser_exc, EOFError):
            return "connection lost: the stream ended without a close frame"
        if protocol.parser_exc is not None:
            return f"connection failed: {protocol.parser_exc}"
        return "connection closed"

    def _stream_failed(self, what: str, exc: BaseException) -> ConnectionLost:
        """Ours for an error of the stream (one of ``STREAM_ERRORS``): the connection is over, and says why."""
        self._lose(f"{what}: {describe(exc)}", dead=True)
        return ConnectionLost(self._lost or "connection lost")

    def _lose(self, reason: str, *, dead: bool = False) -> None:
        """The connection is over: remember why (the first reason wins).

        ``dead``: the stream itself failed or ended, so the protocol is told (it reaches CLOSED).
        Otherwise a close handshake is under way and :meth:`aclose` waits for the server to finish it.
        """
        if self._lost is None:
            self._lost = reason
        if dead:
            self._protocol.receive_eof()  # idempotent

    # --- sending ------------------------------------------------------------------------------

    async def send(self, message: str) -> None:
        """Send a text frame. Raises :class:`ConnectionLost` if the connection is closed or breaks.

        Cancelled while another task is writing, it sends nothing; once its frame is queued, the
        write finishes (shielded, within ``disconnect_timeout``) so that no half frame is left behind.
        """
        if self._lost is not None:
            raise ConnectionLost(f"cannot send: {self._lost}")
        async with self._send_lock:
            if self._lost is not None or self._protocol.state is not _OPEN:
                raise ConnectionLost(f"cannot send: {self._lost or 'connection closing'}")
            self._protocol.send_text(message.encode())
            if not await self._drain():
                raise ConnectionLost(f"cannot send: {self._lost}")

    async def _write_queued(self, deadline: float | None = None) -> None:
        """Write what the protocol has queued, unless a writer is busy: it writes our bytes too."""
        lock = self._send_lock
        if lock.locked():
            return
        lock.acquire_nowait()  # no checkpoint: this task keeps going without a yield
        try:
            await self._drain(deadline)
        finally:
            lock.release()

    async def _drain(self, deadline: float | None = None) -> bool:
        """Write until the protocol's queue is empty (send lock held). False if the connection broke.

        Shielded: outside cancellation waits until the frames are out, or until ``deadline`` (default:
        ``write_timeout`` from now). Bytes queued by other tasks meanwhile are written in the same loop.
        """
        protocol, stream = self._protocol, self._stream
        if deadline is None:
            deadline = trio.current_time() + self._write_timeout
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            try:
                with map_errors(self._write_errors):
                    while writes := protocol.data_to_send():
                        for data in writes:
                            if data:  # b"" asks for a half-close; the socket is closed on exit anyway
                                await stream.send_all(data)
            except ConnectionLost:
                return False  # _stream_failed has noted why, for the caller and every later call
        if scope.cancelled_caught:
            # Part of a frame may be out: nothing more can be written or trusted on this stream.
            self._lose("connection lost: a write did not finish in time", dead=True)
            return False
        return True

    # --- closing ------------------------------------------------------------------------------

    async def aclose(self, close_timeout: float) -> None:
        """Close handshake, then close the socket, all within ``close_timeout``. Never raises but ``Cancelled``.

        The close frame is written even when cancelled (shielded: see :meth:`_drain`), so a connection
        closed by a cancel scope still says goodbye; waiting for the server to answer and end the TCP
        connection stops at once when cancelled.
        """
        deadline = trio.current_time() + close_timeout
        protocol = self._protocol
        try:
            if protocol.state is _OPEN and self._lost is None:
                protocol.send_close(1000)
                self._lost = "connection closed by this side"
                await self._write_queued(deadline)  # no checkpoint before the write: a cancel cannot skip it
            if protocol.state is not _CLOSED:
                with trio.move_on_at(deadline):
                    while protocol.state is not _CLOSED:
                        data = await self._stream.receive_some(READ_SIZE)
                        if not data:
                            break
                        protocol.receive_data(data)
                        protocol.events_received()  # late messages: nobody is reading any more
        except STREAM_ERRORS:
            pass  # closing: the stream is gone already, which is what we wanted
        finally:
            self._lose(self._lost or "connection closed by this side", dead=True)
            # A graceful close lets TLS say close_notify (strict peers call a bare TCP close a truncation);
            # trio's aclose closes the socket even when cancelled, past the deadline or broken.
            with trio.move_on_at(deadline), suppress(*STREAM_ERRORS):
                await self._stream.aclose()


async def _connect(
    url: str, tls_context: Callable[[], ssl.SSLContext], *, write_timeout: float, read_interval: float
) -> _WebsocketsConnection:
    """TCP (+ TLS), then the HTTP upgrade. Raises the stream's or the handshake's own errors."""
    uri = parse_uri(url)
    stream: trio.abc.Stream = await trio.open_tcp_stream(uri.host, uri.port)
    try:
        if uri.secure:
            # server_hostname gives SNI and the name the certificate is verified against.
            stream = trio.SSLStream(stream, tls_context(), server_hostname=uri.host)
            await stream.do_handshake()
        protocol = ClientProtocol(uri, max_size=MAX_MESSAGE_SIZE)
        protocol.send_request(protocol.connect())
        for data in protocol.data_to_send():
            await stream.send_all(data)
        while True:
            data = await stream.receive_some(READ_SIZE)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
            events = protocol.events_received()
            if events:
                break
            if not data:
                raise EOFError("the server closed the connection during the handshake")
        conn = _WebsocketsConnection(stream, protocol, write_timeout, read_interval)
        # Frames may share the response's read: they are the first messages, not to be lost.
        conn._take(events[1:])
        await conn._write_queued()
        return conn
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def websockets_transport(
    *,
    connect_timeout: float = 10.0,
    disconnect_timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
    read_interval: float = DEFAULT_READ_INTERVAL,
) -> Transport:
    """A transport on the ``websockets`` Sans-I/O protocol over trio TCP (TLS for ``wss://``).

    ``connect_timeout`` bounds the TCP + TLS + HTTP upgrade; ``disconnect_timeout`` the close
    handshake and any single write; ``read_interval`` the pace of reads of a drained socket (0: read as
    soon as data arrives; see :data:`DEFAULT_READ_INTERVAL`). TLS verifies certificates with
    ``ssl_context`` (default: the system's trust store). Pings are answered while receiving; messages
    over 1 MiB fail the connection. Entering the context manager raises :class:`ConnectionLost` if the connection cannot
    be opened (:class:`ConfigError` for a URL that is not ``ws://`` or ``wss://``).
    """

    tls_context = tls_contexts(ssl_context)

    @asynccontextmanager
    async def open_connection(url: str) -> AsyncIterator[Connection]:
        where = url.split("?")[0]
        connect_errors: ErrorMap = {
            InvalidURI: lambda exc: ConfigError(f"not a WebSocket URL: {where}: {exc}"),
            trio.TooSlowError: lambda _: ConnectionLost(
                f"cannot connect to {where}: no answer within {connect_timeout:g}s"
            ),
            (*STREAM_ERRORS, *_HANDSHAKE_ERRORS): lambda exc: ConnectionLost(
                f"cannot connect to {where}: {describe(exc)}"
            ),
        }
        with map_errors(connect_errors), trio.fail_after(connect_timeout):
            conn = await _connect(url, tls_context, write_timeout=disconnect_timeout, read_interval=read_interval)
        try:
            yield conn
        finally:
            await conn.aclose(disconnect_timeout)

    return open_connection
