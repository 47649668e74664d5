"""A scripted WebSocket transport: connections that deliver frames, pauses, errors and closes on cue.

For testing code that runs trio-klines' connection task (a :class:`~trio_klines.Recorder`, a
:class:`~trio_klines.net.stream.StreamConnection`) without a socket::

    transport = ScriptedTransport([
        [WireKline("BTCUSDT", "1m", 60_000).frame(), Pause(5), Close("restarting")],
        ConnectionLost("connection refused"),  # the second connect fails
        [WireKline("BTCUSDT", "1m", 120_000).frame()],  # the third delivers a frame, then stays silent
    ])
    async with Recorder(config, transport=transport, sink=MemorySink()):
        ...

Each connect takes the next script; once they run out, a connection starts empty, open and silent. A
test can also drive a connection as it goes: ``conn = await transport.next_connection(1)``, then
``await conn.push(frame)``, ``conn.cut()``, and read the control requests the client sent in
``conn.sent``. Pauses wait on trio's clock, so under ``MockClock(autojump_threshold=0)`` a script of
hours runs at once. Like every transport, a connection raises only
:class:`~trio_klines.errors.ConnectionLost` (unless the script itself holds another exception).
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Final, TypeAlias

import trio

from ..errors import ConnectionLost

__all__ = ["Close", "Pause", "ScriptedBatchConnection", "ScriptedConnection", "ScriptedTransport", "Step"]

#: Most frames one ``receive_batch`` hands over (trio-websocket's queue holds as many).
BATCH_LIMIT: Final = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Pause:
    """Nothing arrives for ``seconds`` of trio's clock (a receive waiting meanwhile keeps waiting)."""

    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    """The server ends the connection: this receive and every later one raise ``ConnectionLost(reason)``."""

    reason: str = "closed by the server"


#: One step of a script: a frame (text or binary), a pause, a close, or an exception the receive raises
#: (a :class:`ConnectionLost` ends the connection as :class:`Close` does; any other is raised once).
Step: TypeAlias = str | bytes | Pause | Close | BaseException


class ScriptedConnection:
    """One connection of a :class:`ScriptedTransport` (a :class:`~trio_klines.net.transport.Connection`)."""

    def __init__(self, url: str, script: Iterable[Step] = ()) -> None:
        self.url = url
        #: The messages the client sent, decoded from JSON where they are JSON (control requests are).
        self.sent: list[object] = []
        #: True once the server closed it (a close step was reached) or the client left.
        self.closed = False
        self._script: deque[Step] = deque(script)
        self._more = trio.lowlevel.ParkingLot()
        self._lost: str | None = None
        self._resume_at: float | None = None

    def push_nowait(self, *steps: Step) -> None:
        """Add ``steps`` to the end of the script."""
        self._script.extend(steps)
        self._more.unpark_all()

    async def push(self, *steps: Step) -> None:
        """Add ``steps`` to the end of the script, then yield so that a waiting client may run."""
        self.push_nowait(*steps)
        await trio.lowlevel.checkpoint()

    def cut(self, reason: str = "cut by the server") -> None:
        """The server drops the connection once the steps already pushed are delivered."""
        self.push_nowait(Close(reason))

    async def receive(self) -> str | bytes:
        """The next frame of the script, acting out the pauses, errors and closes before it.

        Waits while the script is empty. Cancelled while waiting, it loses nothing: a step is taken
        only when it is delivered, and a pause under way goes on where it was.

        Raises:
            ConnectionLost: the script closed the connection (or says so), or the client left it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._lost is not None:
                raise ConnectionLost(self._lost)
            if self._resume_at is not None:
                await trio.sleep_until(self._resume_at)
                self._resume_at, waited = None, True
                continue
            if not self._script:
                await self._more.park()
                waited = True
                continue
            step = self._script.popleft()
            if isinstance(step, str | bytes):
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return step
            self._act(step)

    def _act(self, step: Pause | Close | BaseException) -> None:
        if isinstance(step, Pause):
            self._resume_at = trio.current_time() + step.seconds
        elif isinstance(step, Close):
            self._end(step.reason)
        else:
            if isinstance(step, ConnectionLost):
                self._end(str(step))
            raise step

    def _end(self, reason: str) -> None:
        self._lost = reason
        self.closed = True
        self._more.unpark_all()

    async def send(self, message: str) -> None:
        """Record ``message`` in :attr:`sent`.

        Raises:
            ConnectionLost: the connection is closed.
        """
        if self._lost is not None:
            raise ConnectionLost(f"cannot send: {self._lost}")
        try:
            self.sent.append(json.loads(message))
        except ValueError:
            self.sent.append(message)

    def _client_left(self) -> None:
        if self._lost is None:
            self._end("closed")


class ScriptedBatchConnection(ScriptedConnection):
    """A scripted connection that also has ``receive_batch`` (a :class:`~trio_klines.net.transport.BatchConnection`)."""

    async def receive_batch(self) -> list[str | bytes]:
        """The next frame (waiting as :meth:`receive` does) and every frame right behind it in the
        script, up to the next pause, error or close (at most :data:`BATCH_LIMIT`).

        Raises:
            ConnectionLost: as :meth:`receive`.
        """
        batch = [await self.receive()]
        script = self._script
        while script and len(batch) < BATCH_LIMIT and isinstance(script[0], str | bytes):
            batch.append(script.popleft())  # type: ignore[arg-type]  # just checked: a frame
        return batch


class ScriptedTransport:
    """A :data:`~trio_klines.net.transport.Transport` whose connections follow ``scripts``, one per connect.

    A script is a sequence of :data:`Step` s, or an exception that the connect raises instead (a
    :class:`ConnectionLost`, as a refused connection). With ``batch=True`` the connections have
    ``receive_batch`` too, as the library's own transports do. ``refuse`` makes the next connects fail
    without using a script.
    """

    def __init__(self, scripts: Iterable[Sequence[Step] | BaseException] = (), *, batch: bool = False) -> None:
        self._scripts: deque[Sequence[Step] | BaseException] = deque(scripts)
        self._batch = batch
        #: Every connection opened, in order.
        self.connections: list[ScriptedConnection] = []
        #: ``trio.current_time()`` of every connect, refused ones included.
        self.attempts: list[float] = []
        #: The next ``refuse`` connects raise ``ConnectionLost("connection refused")``.
        self.refuse = 0
        self._opened = trio.lowlevel.ParkingLot()

    @asynccontextmanager
    async def __call__(self, url: str) -> AsyncIterator[ScriptedConnection]:
        self.attempts.append(trio.current_time())
        if self.refuse:
            self.refuse -= 1
            raise ConnectionLost("connection refused")
        script = self._scripts.popleft() if self._scripts else ()
        if isinstance(script, BaseException):
            raise script
        conn = (ScriptedBatchConnection if self._batch else ScriptedConnection)(url, script)
        self.connections.append(conn)
        self._opened.unpark_all()
        try:
            yield conn
        finally:
            conn._client_left()

    async def next_connection(self, count: int) -> ScriptedConnection:
        """Wait until at least ``count`` connections have been opened; return the ``count``-th."""
        while len(self.connections) < count:
            await self._opened.park()
        return self.connections[count - 1]
