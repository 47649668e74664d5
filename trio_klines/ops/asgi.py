"""What the recorder's ops server and the fake exchange share of ASGI: the lifespan handshake and a whole
response in one go. No framework: two small apps on hypercorn need no more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Receive", "Send", "lifespan", "respond"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the server's lifespan messages (nothing to start or stop) until it shuts down."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: tuple[tuple[str, str], ...] = (),
    *,
    length: int | None = None,
) -> None:
    """Send a whole response; ``length`` is the Content-Length when ``body`` is left out (a HEAD)."""
    size = len(body) if length is None else length
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(size).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
