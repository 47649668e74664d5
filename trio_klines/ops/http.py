"""``/metrics`` and ``/healthz`` over HTTP, served by hypercorn inside the recorder's trio program.

One ASGI app on trio: a request is a task of the program's own event loop, never a thread, and the
metrics are read from the recorder between two of its checkpoints. Only ``GET`` and ``HEAD`` of the two
paths are answered; everything else is a 404 or 405.

- ``GET /metrics``: Prometheus' text format (:mod:`trio_klines.ops.metrics`).
- ``GET /healthz``: ``200`` while every series is fresh and the writer writes, ``503`` otherwise, with a JSON
  body naming what is stale (:func:`trio_klines.core.health.health_body`).
"""

from __future__ import annotations

import functools
import json
import logging
import socket
from typing import TYPE_CHECKING, Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from ..errors import ConfigError
from .asgi import Receive, Send, lifespan, respond
from .metrics import CONTENT_TYPE, exposition, metrics_registry

if TYPE_CHECKING:
    from ..recorder import Recorder

__all__ = ["OpsApp", "serve_ops"]

log = logging.getLogger("trio_klines.ops")

_TEXT: Final = "text/plain; charset=utf-8"
#: Every answer is of the moment: no cache may keep it.
_NO_STORE: Final = (("cache-control", "no-store"),)
#: How long open scrapes may take to finish when the recorder stops.
GRACE_S: Final = 1.0


class OpsApp:
    """The ASGI app: ``/metrics`` and ``/healthz`` of one recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self._rec = recorder
        self._registry = metrics_registry(recorder)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path not in ("/metrics", "/healthz"):
            await respond(send, 404, b"not found: try /metrics or /healthz\n", _TEXT, _NO_STORE)
            return
        if method not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed\n", _TEXT, (*_NO_STORE, ("allow", "GET, HEAD")))
            return
        if path == "/metrics":
            status, body, kind = 200, exposition(self._registry), CONTENT_TYPE
        else:
            healthy, report = self._rec.health()
            status, body, kind = (200 if healthy else 503), json.dumps(report).encode() + b"\n", "application/json"
        await respond(send, status, b"" if method == "HEAD" else body, kind, _NO_STORE, length=len(body))


async def serve_ops(
    recorder: Recorder, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``recorder``'s ``/metrics`` and ``/healthz`` on ``host:port`` until cancelled.

    ``await nursery.start(serve_ops, rec, host, port)`` returns the base URL once listening (with port 0,
    the port the system chose). Raises :class:`ConfigError` when it cannot listen there (in use, not an
    address of this machine, a port that needs privileges). Once serving it raises nothing: a failure of
    the server is logged and ends it, never the recorder around it.
    """
    _check_bindable(host, port)
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = GRACE_S
    config.include_server_header = False

    app = OpsApp(recorder)
    serving = False
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(serve, app, config, shutdown_trigger=trio.sleep_forever))
            base = binds[0]
            log.info("serving %s/metrics and %s/healthz", base, base)
            task_status.started(base)
            serving = True
    except Exception:
        if not serving:
            raise
        # Watching must never stop the recording: the recorder goes on without its endpoints.
        log.exception("the metrics server failed; recording goes on without /metrics and /healthz")


def _check_bindable(host: str, port: int) -> None:
    """A :class:`ConfigError` now, naming the address, rather than an OSError inside hypercorn's nursery."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn does
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
