"""Cutting one TCP connection of this process without a WebSocket close frame (the ``drop`` fault).

ASGI gives an application no handle on its socket, and every way an ASGI app can end a WebSocket makes
the server send a close frame. A real network failure sends none, so the fake exchange finds the
server-side socket among the process's open descriptors by its two addresses and shuts it down: the
client sees the stream end with no close frame (code 1006 on its side), and the ASGI server notices
EOF and cleans up as after any network failure.
"""

from __future__ import annotations

import os
import socket
from typing import Final

__all__ = ["shutdown_tcp"]

_FD_DIRS: Final = ("/proc/self/fd", "/dev/fd")
_INET: Final = (socket.AF_INET, socket.AF_INET6)


def _open_descriptors() -> list[int]:
    for directory in _FD_DIRS:
        try:
            return [int(name) for name in os.listdir(directory) if name.isdigit()]
        except OSError:
            continue
    return []


def shutdown_tcp(local: tuple[str, int], peer: tuple[str, int]) -> bool:
    """Shut down (both ways) the TCP socket of this process bound to ``local`` and connected to ``peer``.

    Returns whether such a socket was found. Never raises: on a platform without a descriptor listing
    (``/proc/self/fd`` or ``/dev/fd``) it finds nothing and returns ``False``.
    """
    local, peer = (str(local[0]), int(local[1])), (str(peer[0]), int(peer[1]))
    for fd in _open_descriptors():
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:  # not a socket
            os.close(dup)
            continue
        # Closing the duplicate leaves the server's own descriptor open; shutdown() acts on the
        # connection itself, which both descriptors share.
        with sock:
            if sock.family not in _INET or sock.type != socket.SOCK_STREAM:
                continue
            try:
                if sock.getsockname()[:2] != local or sock.getpeername()[:2] != peer:
                    continue
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
            return True
    return False
