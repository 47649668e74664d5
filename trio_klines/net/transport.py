"""WebSocket transports: how a connection task opens a socket, behind one small interface; their errors as ours.

A transport is a callable ``transport(url)`` returning an async context manager that yields a
:class:`Connection`. Every failure surfaces as :class:`~trio_klines.errors.ConnectionLost` (a URL that is
not ``ws://`` or ``wss://``: :class:`~trio_klines.errors.ConfigError`), so the connection task never sees a
library's own exceptions. Tests and embedders can pass their own.

Two transports ship: :func:`trio_websocket_transport` (trio-websocket on wsproto, the default; in
:mod:`~trio_klines.net.trio_websocket_transport`, importable from here too) and
:func:`~trio_klines.net.websockets_transport.websockets_transport` (the ``websockets`` Sans-I/O protocol).
Each maps its library's errors with :func:`map_errors` and one table of what they mean, as httpcore's
``map_exceptions`` does; :data:`STREAM_ERRORS` and :func:`describe` are what both share about trio's streams.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, runtime_checkable

import trio

from ..errors import KlinesError

if TYPE_CHECKING:
    from .trio_websocket_transport import trio_websocket_transport as trio_websocket_transport

__all__ = [
    "MAX_MESSAGE_SIZE",
    "STREAM_ERRORS",
    "BatchConnection",
    "Connection",
    "ErrorMap",
    "Transport",
    "describe",
    "map_errors",
    "tls_contexts",
    "trio_websocket_transport",
]

#: Kline frames are < 1 KiB; anything near this is not a kline frame.
MAX_MESSAGE_SIZE: Final = 1 << 20

#: What a trio stream raises when the network fails or the stream was closed under us. ``ssl.SSLError`` is
#: an ``OSError``; trio's ``SSLStream`` raises it wrapped in a ``BrokenResourceError`` (see :func:`describe`).
STREAM_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


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


# --- errors -----------------------------------------------------------------------------------

#: Exception types (or tuples of them), each with what to raise in their place.
ErrorMap = Mapping[type[BaseException] | tuple[type[BaseException], ...], Callable[[BaseException], KlinesError]]


def describe(exc: BaseException) -> str:
    """A readable reason: trio wraps TLS and socket errors in an empty ``BrokenResourceError``."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


@contextmanager
def map_errors(mapping: ErrorMap) -> Iterator[None]:
    """Raise ours in place of a library's error, as httpcore's ``map_exceptions`` does.

    The first entry of ``mapping`` whose type matches builds the error raised instead, chained with
    ``from``. An exception group (a library's nursery) is unwrapped first when it holds a single real
    error beside any ``Cancelled``. Whatever matches no entry goes on as it was: our own errors,
    ``Cancelled``, a bug.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        exc = _sole_error(group)
        for kind, ours in mapping.items():
            if isinstance(exc, kind):
                raise ours(exc) from exc
        if exc is group:
            raise
        _reraise(exc)
    except Exception as exc:
        for kind, ours in mapping.items():
            if isinstance(exc, kind):
                raise ours(exc) from exc
        raise


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a group wraps (beside any ``Cancelled``), or the group itself when there are several.

    A group of ``Cancelled`` only gives its first: the cancellation goes on, unwrapped.
    """
    real = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if not real:
        return group.exceptions[0]
    if len(real) == 1:
        return real[0]
    return group


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as it was, not chained to the group it came out of."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


#: Names that moved to :mod:`trio_klines.net.trio_websocket_transport`, still importable from here.
_MOVED: Final = frozenset({"trio_websocket_transport", "MESSAGE_QUEUE_SIZE", "RECEIVE_BUFFER_SIZE"})


def __getattr__(name: str) -> object:
    # The trio-websocket transport lives in its own module, which imports this one: loaded on first use.
    if name in _MOVED:
        from . import trio_websocket_transport as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tls_contexts(ssl_context: ssl.SSLContext | None) -> Callable[[], ssl.SSLContext]:
    """What a transport calls for the TLS context of each ``wss://`` connection: ``ssl_context``, or the
    system's default, made on first use and kept (loading the trust store costs milliseconds a time)."""
    if ssl_context is not None:
        return lambda: ssl_context
    return functools.cache(ssl.create_default_context)
