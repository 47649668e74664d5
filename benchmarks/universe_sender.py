"""A paced WebSocket server that sends kline streams as Binance does, at Binance's real rates, on a simulated clock.

    python -m benchmarks.universe_sender --sim-start MS --sim-end MS [--tick-ms 5] [--seed 7] [--report FILE]

Run by :mod:`benchmarks.universe` in its own process, so that its CPU is never the recorder's. One thread,
non-blocking sockets, one listener on 127.0.0.1 (an ephemeral port) for every market: a client opens
``/<market>/stream?streams=a/b/…`` (the recorder's combined-stream URL under the endpoints map
``{"<market>": {"ws": "ws://127.0.0.1:PORT/<market>"}}``). The upgrade is checked and answered as
:mod:`benchmarks.blaster` does; market, stream names and intervals are validated before they are used.

Nothing is sent until the clock starts (``start`` on stdin, once the recorder's connections are up): the
simulated time is then ``sim_start`` at wall time ``wall0`` (printed) and runs at real speed to ``sim_end``.
Every ``--tick-ms`` each connection gets one write holding the frames due in that tick:

- open-candle updates (``"x":false``): every stream but spot's ``1s`` once per update period (USDⓈ-M and
  COIN-M 250 ms, spot 2 s), each stream at its own phase within the period (a hash of its name), so a
  connection's updates are spread over the period as Binance's are;
- closed candles (``"x":true``): at each whole second ``B``, every stream whose interval opens at ``B``
  gets the close of the candle that ends there, in the tick of ``B`` itself. So an hour boundary closes
  every interval up to ``1h`` at once and 00:00 UTC every interval up to ``1d`` (``3d``/``1w``/``1M``
  too on their days): the burst. Spot's ``1s`` streams send only this close, once a second (their
  update period).

Open updates are pre-encoded once per stream (their content never changes; the recorder recognises them
without decoding). Closed frames carry real times (``E`` = ``B``, ``T`` = ``B`` - 1) and, in the trade count
``n``, the wall time in µs at which the simulated clock reached ``B``, so the recorder can time close →
durable without knowing the clock; they are encoded ahead of their second (up to
:data:`LOOKAHEAD_MS`, in small steps between ticks) so that a burst of 40,000 closes goes out on time.

Stdout, one JSON object a line: ``listening`` (the port), ``upgraded`` (per connection), ``started``
(``wall0``), ``progress`` (every second), ``done`` (totals, once every due frame is handed to the kernel,
or after :data:`FLUSH_TIMEOUT_S`); ``--report`` then holds the closes sent per series
(``"market|SYMBOL|interval": count``). The server keeps answering pings and closes until stdin is closed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import socket
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from benchmarks.blaster import accept_key, encode_frame
from trio_klines.core.markets import INTERVALS, MARKETS, floor_open_time, get_market, is_open_time
from trio_klines.testing.wire import WireKline

__all__ = ["LOOKAHEAD_MS", "Sender", "close_template", "parse_request", "update_frame"]

#: How far ahead of its second a batch of closed frames is encoded.
LOOKAHEAD_MS: Final = 1500
#: Longest upgrade request taken: a combined URL of 1,024 spot streams is about 21 KB.
MAX_REQUEST: Final = 256 * 1024
#: Seconds the sender waits at the end for its queued frames to reach the kernel before it reports anyway.
FLUSH_TIMEOUT_S: Final = 30.0
#: Seconds of work per loop pass spent encoding closes ahead (a tick's budget is a few ms).
PREPARE_BUDGET_S: Final = 0.002
_STREAM_RE: Final = re.compile(r"([a-z0-9_]{1,32})@kline_([0-9]{1,2}[smhdwM])")
_RECV: Final = 65536
# Sentinels for the four numbers of a closed frame; each is asserted to occur once in the template.
_SENTINELS: Final = (4_444_444_444_444, 1_111_111_111_111, 2_222_222_222_222, 3_333_333_333_333_333)


def close_template(symbol: str, interval: str) -> bytes:
    """A closed frame's text with ``%d`` for, in order, ``E``, ``t``, ``T`` and ``n`` (built by :class:`WireKline`,
    so Binance's key order lives in one place)."""
    e, t, big_t, n = _SENTINELS
    text = WireKline(symbol, interval, t, big_t, open="100.0", high="102.0", low="99.5", close="101.5",
                     volume="12.345", quote_volume="1250.5", trades=n, taker_base="6.1", taker_quote="620.2",
                     first_id=100, last_id=200, closed=True).frame(event_time=e)  # fmt: skip
    positions = []
    for sentinel in _SENTINELS:
        assert text.count(str(sentinel)) == 1, (sentinel, text)
        positions.append(text.index(str(sentinel)))
        text = text.replace(str(sentinel), "%d")
    assert positions == sorted(positions), text  # E, t, T, n in this order in Binance's layout
    return text.encode()


def update_frame(symbol: str, interval: str, sim_start: int) -> bytes:
    """An open-candle update of the candle open at ``sim_start``, encoded as a WebSocket frame."""
    open_time = floor_open_time(interval, sim_start)
    text = WireKline(symbol, interval, open_time, open="100.0", high="102.0", low="99.5", close="101.0",
                     volume="6.2", quote_volume="625.1", trades=50, taker_base="3.0", taker_quote="300.4",
                     first_id=100, last_id=150, closed=False).frame(event_time=sim_start)  # fmt: skip
    return encode_frame(text.encode())


def parse_request(target: str) -> tuple[str, list[tuple[str, str]]]:
    """``/<market>/stream?streams=a@kline_1m/…`` → the market and its ``(SYMBOL, interval)`` pairs.

    Raises ``ValueError`` with the reason for anything else: an unknown market, a stream name that is not
    a kline stream of a valid symbol, an interval the market lacks, a repeat.
    """
    parts = urlsplit(target)
    market = parts.path.strip("/").removesuffix("/stream").strip("/")
    if market not in MARKETS or not parts.path.rstrip("/").endswith("/stream"):
        raise ValueError(f"unknown path {parts.path[:80]!r}: expected /<market>/stream")
    names = parse_qs(parts.query).get("streams", [""])[0].split("/")
    out: list[tuple[str, str]] = []
    for name in names:
        match = _STREAM_RE.fullmatch(name)
        if match is None or match[2] not in get_market(market).intervals:
            raise ValueError(f"not a {market} kline stream: {name[:80]!r}")
        out.append((match[1].upper(), match[2]))
    if len(set(out)) != len(out):
        raise ValueError("a stream is named twice")
    return market, out


# --- one connection ---------------------------------------------------------------------------


@dataclass(eq=False)
class Conn:
    """One accepted socket: its upgrade, its schedule once upgraded, and what waits to be written."""

    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    upgraded: bool = False
    closing: bool = False  # a close frame was queued: nothing may follow it
    market: str = ""
    series: list[tuple[str, str]] = field(default_factory=list)
    #: The update frames due in each tick slot of the update period (joined) and how many each holds.
    ring: list[bytes] = field(default_factory=list)
    ring_counts: list[int] = field(default_factory=list)
    #: Interval → the closed-frame templates of this connection's streams of that interval.
    templates: dict[str, list[bytes]] = field(default_factory=dict)
    #: Interval → how many boundaries of it this connection was sent (every stream of it got one close each).
    boundaries: Counter[str] = field(default_factory=Counter)

    def schedule(self, market: str, series: list[tuple[str, str]], sim_start: int, tick_ms: int, seed: int) -> None:
        self.market, self.series = market, series
        period = get_market(market).update_period_ms
        slots = period // tick_ms
        frames: list[list[bytes]] = [[] for _ in range(slots)]
        for symbol, interval in series:
            self.templates.setdefault(interval, []).append(close_template(symbol, interval))
            if interval != "1s":  # a 1s stream's one frame a second is its close
                phase = zlib.crc32(f"{seed}/{market}/{symbol}/{interval}".encode()) % slots
                frames[phase].append(update_frame(symbol, interval, sim_start))
        self.ring = [b"".join(f) for f in frames]
        self.ring_counts = [len(f) for f in frames]


def _handshake(request: bytes) -> tuple[str, str]:
    """The request target and the ``Sec-WebSocket-Accept`` of a valid upgrade request; ``ValueError`` otherwise."""
    head = request.decode("latin-1").split("\r\n")
    parts = head[0].split(" ")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    key = headers.get("sec-websocket-key", "")
    if not (
        len(parts) == 3
        and parts[0] == "GET"
        and parts[2] == "HTTP/1.1"
        and headers.get("upgrade", "").lower() == "websocket"
        and "upgrade" in headers.get("connection", "").lower()
        and headers.get("sec-websocket-version") == "13"
        and len(key) == 24
    ):
        raise ValueError("not a WebSocket upgrade request")
    return parts[1], accept_key(key)


def _client_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Whole client frames at the start of ``buf`` (removed from it): ``(opcode, unmasked payload)``."""
    out: list[tuple[int, bytes]] = []
    while len(buf) >= 2:
        length, at = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                break
            (length,) = struct.unpack_from("!H", buf, 2)
            at = 4
        elif length == 127:
            if len(buf) < 10:
                break
            (length,) = struct.unpack_from("!Q", buf, 2)
            at = 10
        masked = buf[1] & 0x80
        end = at + (4 if masked else 0) + length
        if len(buf) < end:
            break
        payload = bytes(buf[end - length : end])
        if masked:
            mask = buf[at : at + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        out.append((buf[0] & 0x0F, payload))
        del buf[:end]
    return out


# --- the server -------------------------------------------------------------------------------


class Sender:
    """The listener, the connections and the simulated clock (see the module's docstring)."""

    def __init__(self, sim_start: int, sim_end: int, tick_ms: int, seed: int, report: Path | None) -> None:
        if sim_start % 1000 or sim_end <= sim_start or 250 % tick_ms:
            raise ValueError("sim_start must be a whole second before sim_end, and tick_ms divide 250")
        self.sim_start, self.sim_end, self.tick_ms, self.seed, self.report = sim_start, sim_end, tick_ms, seed, report
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "listener")
        self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        self.conns: dict[int, Conn] = {}
        self.wall0: float | None = None
        self.next_tick = sim_start  # simulated ms of the next tick to send
        self.prepared: dict[int, dict[Conn, tuple[bytes, int]]] = {}  # boundary → conn → (frames, count)
        self.prepare_next = sim_start + 1000  # the next boundary to encode ahead
        self.frames = self.closes = self.upgrades = self.refused = 0
        self.late_ms_max = 0.0
        self.burst: dict[str, float] = {"closes": 0, "late_ms": 0.0, "at": 0}
        self.backlog_max = 0
        self.done_at: float | None = None
        self.reported = False
        self.closes_by_series: Counter[str] = Counter()
        self.stdin_open = True

    # --- output -------------------------------------------------------------------------------

    @staticmethod
    def say(**event: Any) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.say(event="listening", port=self.listener.getsockname()[1])
        last_progress = time.monotonic()
        while self.stdin_open:
            timeout = 0.1
            if self.wall0 is not None and self.done_at is None:
                timeout = max(0.0, self.wall0 + (self.next_tick - self.sim_start) / 1000 - time.time())
            for key, mask in self.sel.select(timeout):
                if key.data == "listener":
                    self._accept()
                elif key.data == "stdin":
                    self._command()
                elif key.data.sock.fileno() in self.conns:  # not dropped earlier in this pass
                    conn = key.data
                    if mask & selectors.EVENT_READ:
                        self._read(conn)
                    if mask & selectors.EVENT_WRITE and conn.sock.fileno() in self.conns:
                        self._flush(conn)
            if self.wall0 is not None and self.done_at is None:
                self._tick()
                self._prepare_ahead()
            if self.done_at is not None and not self.reported:
                backlog = sum(len(c.out) for c in self.conns.values())
                if backlog == 0 or time.monotonic() - self.done_at > FLUSH_TIMEOUT_S:
                    self._report(backlog)
            if time.monotonic() - last_progress >= 1.0 and self.wall0 is not None and not self.reported:
                last_progress = time.monotonic()
                self.say(event="progress", frames=self.frames, closes=self.closes, late_ms_max=self.late_ms_max,
                         backlog_bytes=sum(len(c.out) for c in self.conns.values()))  # fmt: skip
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.listener.close()

    def _command(self) -> None:
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:
            self.stdin_open = False
            return
        if b"start" in data and self.wall0 is None:
            # A moment ahead, so that the first second's closes are encoded before they are due.
            self.wall0 = time.time() + 0.3
            self._prepare_ahead(budget=10.0)
            self.say(event="started", wall0=self.wall0, sim_start=self.sim_start, sim_end=self.sim_end,
                     connections=sum(c.upgraded for c in self.conns.values()))  # fmt: skip

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock)
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: Conn) -> None:
        if self.conns.pop(conn.sock.fileno(), None) is not None:
            # Its closes stay counted: a connection the client replaced still sent them.
            for symbol, interval in conn.series:
                self.closes_by_series[f"{conn.market}|{symbol}|{interval}"] += conn.boundaries[interval]
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.inbuf += data
        if not conn.upgraded:
            self._upgrade(conn)
            return
        for opcode, payload in _client_frames(conn.inbuf):
            if opcode == 0x9:  # ping → pong with its payload
                self._queue(conn, encode_frame(payload, 0xA))
            elif opcode == 0x1:  # SUBSCRIBE and the like: acknowledged by id, as Binance does
                try:
                    request = json.loads(payload)
                    request_id = request.get("id")
                except (ValueError, AttributeError):
                    request, request_id = {}, None
                if request.get("method") == "SUBSCRIBE" and isinstance(request.get("params"), list):
                    self._subscribe(conn, request["params"])
                if request_id is not None:
                    self._queue(conn, encode_frame(json.dumps({"result": None, "id": request_id}).encode()))
                    self.frames += 1  # the recorder counts the reply as a message received
            elif opcode == 0x8:  # echo the close, then nothing more
                self._queue(conn, encode_frame(payload[:2], 0x8))
                conn.closing = True

    def _upgrade(self, conn: Conn) -> None:
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbuf) > MAX_REQUEST:
                self._refuse(conn, "request too long")
            return
        try:
            target, accept = _handshake(bytes(conn.inbuf[:end]))
            market, series = parse_request(target)
        except ValueError as exc:
            self._refuse(conn, str(exc))
            return
        del conn.inbuf[: end + 4]
        conn.schedule(market, series, self.sim_start, self.tick_ms, self.seed)
        conn.upgraded = True
        self.upgrades += 1
        self._queue(conn, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n")  # fmt: skip
        self.say(event="upgraded", connections=sum(c.upgraded for c in self.conns.values()),
                 streams=sum(len(c.series) for c in self.conns.values()), market=market)  # fmt: skip

    def _subscribe(self, conn: Conn, params: list[object]) -> None:
        """Add the kline streams a SUBSCRIBE names to ``conn``'s schedule (a connection carries what its URL
        could not, as the recorder's do); anything else in it is ignored, as Binance ignores no stream."""
        known = set(conn.series)
        added = []
        for name in params:
            match = _STREAM_RE.fullmatch(name) if isinstance(name, str) else None
            if match is not None and match[2] in get_market(conn.market).intervals:
                pair = (match[1].upper(), match[2])
                if pair not in known:
                    known.add(pair)
                    added.append(pair)
        if added:
            conn.templates.clear()
            conn.schedule(conn.market, conn.series + added, self.sim_start, self.tick_ms, self.seed)
            self.say(event="subscribed", connections=sum(c.upgraded for c in self.conns.values()),
                     streams=sum(len(c.series) for c in self.conns.values()))  # fmt: skip

    def _refuse(self, conn: Conn, reason: str) -> None:
        self.refused += 1
        body = reason.encode()[:200]
        with contextlib.suppress(OSError):
            conn.sock.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                           % (len(body), body))  # fmt: skip
        self._drop(conn)

    def _queue(self, conn: Conn, data: bytes) -> None:
        if conn.closing or not data:
            return
        was_empty = not conn.out
        conn.out += data
        if was_empty:
            self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out) if conn.out else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(conn)
            return
        del conn.out[:sent]
        self.backlog_max = max(self.backlog_max, len(conn.out))
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if self.sel.get_key(conn.sock).events != events:
            self.sel.modify(conn.sock, events, conn)
        if not conn.out and conn.closing:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)

    # --- the clock ----------------------------------------------------------------------------

    def _tick(self) -> None:
        """Queue every frame due up to now (several ticks' worth when the loop ran late), one write per connection."""
        assert self.wall0 is not None
        now = self.sim_start + (time.time() - self.wall0) * 1000
        last = min(now, self.sim_end)
        if self.next_tick > last:
            return
        live = [c for c in self.conns.values() if c.upgraded and not c.closing]
        parts: dict[Conn, list[bytes]] = {c: [] for c in live}
        tick, step = self.next_tick, self.tick_ms
        self.late_ms_max = max(self.late_ms_max, now - tick)
        while tick <= last:
            index = (tick - self.sim_start) // step
            for conn in live:
                slot = index % len(conn.ring)
                if conn.ring_counts[slot]:
                    parts[conn].append(conn.ring[slot])
                    self.frames += conn.ring_counts[slot]
            if tick % 1000 == 0 and tick > self.sim_start:
                self._closes_due(tick, live, parts, now)
            tick += step
        self.next_tick = tick
        for conn, chunks in parts.items():
            if chunks:
                self._queue(conn, b"".join(chunks))
        if self.next_tick > self.sim_end:
            self.done_at = time.monotonic()

    def _closes_due(self, boundary: int, live: list[Conn], parts: dict[Conn, list[bytes]], now: float) -> None:
        batch = self.prepared.pop(boundary, {})
        closing = [i for i in INTERVALS if is_open_time(i, boundary)]
        count = 0
        for conn in live:
            frames, n = batch.get(conn) or self._encode_closes(conn, boundary)
            if n:
                parts[conn].append(frames)
                count += n
                for interval in closing:
                    if interval in conn.templates:
                        conn.boundaries[interval] += 1
        self.frames += count
        self.closes += count
        if count >= self.burst["closes"]:
            self.burst = {"closes": count, "late_ms": now - boundary, "at": boundary}

    def _encode_closes(self, conn: Conn, boundary: int) -> tuple[bytes, int]:
        """The closed frames of ``conn``'s streams whose candles end at ``boundary``, joined, and their count."""
        assert self.wall0 is not None
        stamp = round((self.wall0 + (boundary - self.sim_start) / 1000) * 1e6)  # the close's wall time, µs
        frames: list[bytes] = []
        for interval, templates in conn.templates.items():
            if is_open_time(interval, boundary):
                values = (boundary, floor_open_time(interval, boundary - 1), boundary - 1, stamp)
                frames += [encode_frame(t % values) for t in templates]
        return b"".join(frames), len(frames)

    def _prepare_ahead(self, budget: float = PREPARE_BUDGET_S) -> None:
        """Encode the closes of the coming seconds, a connection at a time, within ``budget`` seconds."""
        assert self.wall0 is not None
        now = self.sim_start + (time.time() - self.wall0) * 1000
        deadline = time.perf_counter() + budget
        while time.perf_counter() < deadline:
            boundary = self.prepare_next
            if boundary > min(now + LOOKAHEAD_MS, self.sim_end):
                return
            if boundary < self.next_tick:  # already sent (encoded at the time): skip it
                self.prepare_next += 1000
                continue
            batch = self.prepared.setdefault(boundary, {})
            todo = next((c for c in self.conns.values() if c.upgraded and c not in batch), None)
            if todo is None:
                self.prepare_next += 1000
                continue
            batch[todo] = self._encode_closes(todo, boundary)

    def _report(self, backlog: int) -> None:
        self.reported = True
        by_series: Counter[str] = Counter()
        for conn in self.conns.values():
            for symbol, interval in conn.series:
                by_series[f"{conn.market}|{symbol}|{interval}"] += conn.boundaries[interval]
        by_series += self.closes_by_series
        if self.report is not None:
            self.report.write_text(json.dumps(by_series), encoding="utf-8")
        self.say(event="done", frames=self.frames, closes=self.closes, late_ms_max=self.late_ms_max,
                 burst=self.burst, backlog_max_bytes=self.backlog_max, unflushed_bytes=backlog,
                 upgrades=self.upgrades, refused=self.refused)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.universe_sender",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--sim-start", type=int, required=True, help="simulated ms when the clock starts")
    parser.add_argument("--sim-end", type=int, required=True, help="simulated ms of the last tick")
    parser.add_argument("--tick-ms", type=int, default=5, help="ms between two writes of a connection")
    parser.add_argument("--seed", type=int, default=7, help="spreads the streams' update phases")
    parser.add_argument("--report", type=Path, default=None, help="where to write the closes sent per series")
    args = parser.parse_args(argv)
    if args.tick_ms < 1 or 250 % args.tick_ms or args.sim_start % 1000 or args.sim_end <= args.sim_start:
        parser.error("--tick-ms must divide 250; --sim-start a whole second before --sim-end")
    Sender(args.sim_start, args.sim_end, args.tick_ms, args.seed, args.report).run()


if __name__ == "__main__":
    main()
