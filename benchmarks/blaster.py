"""A lean WebSocket server that sends pre-encoded kline frames as fast as the socket takes them.

    python -m benchmarks.blaster SHAPE COUNT [--rate R]

Run by the end-to-end benchmark in its own process, so that the sender never competes with the
measured receiver for a core and never is the ceiling itself: a trio-websocket server tops out near
12k frames/s, this one writes several hundred thousand per second (whole frames, built before the
port is announced, written in chunks of ``CHUNK`` bytes).

It prints its port on stdout once ready and serves until its stdin is closed (the parent's way to
stop it; the parent kills it if it does not go). Each connection gets the same ``COUNT`` frames:

- ``SHAPE`` ``closed``: every frame a closed candle; ``realistic``: 240 open-candle updates per closed
  candle, as a ``1m`` futures stream sends, round-robin over :data:`SYMBOLS`;
- ``--rate R`` (latency mode): closed frames paced at R per second, each stamped with its send time
  in µs since the epoch in the trade count (``"n"``), so the receiver can compute its latency.

The server side of RFC 6455 that a client can observe is honoured: the upgrade request is checked and
answered with the right ``Sec-WebSocket-Accept``, frames are unmasked text frames with 7/16/64-bit
lengths, client pings are answered with their payload, requests carrying an ``id`` get Binance's
``{"result":null,"id":…}``, and a close frame is echoed before the socket is closed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Final

from trio_klines.testing.wire import WireKline

__all__ = ["SYMBOLS", "T0", "accept_key", "encode_frame", "frames", "kline_json", "main"]

SYMBOLS: Final = [f"SYM{i:03d}USDT" for i in range(50)]
T0: Final = 1_767_225_600_000  # 2026-01-01T00:00Z
OPEN_PER_CLOSE: Final = 240
#: Bytes per write: big enough to amortise the system call, small enough to let a pong in between.
CHUNK: Final = 256 * 1024
#: A stamped trade count is always this wide (µs since the epoch), so the frame length never changes.
STAMP_WIDTH: Final = 16
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_REQUEST: Final = 16 * 1024


def kline_json(symbol: str, open_time: int, closed: bool, trades: int | str) -> bytes:
    """One combined-stream ``1m`` kline frame's text, as Binance futures writes it.

    A ``str`` ``trades`` goes into the text as it is, unquoted: the latency mode's placeholder, which
    the sender overwrites with a stamp of the same width.
    """
    kline = WireKline(symbol, "1m", open_time, open="100.0", high="102.0", low="99.5", close="101.5",
                      volume="12.345", quote_volume="1250.5", trades=0 if isinstance(trades, str) else trades,
                      taker_base="6.1", taker_quote="620.2", closed=closed)  # fmt: skip
    text = kline.frame(event_time=open_time + 60_000).encode()  # stamped as its minute ends, as Binance does
    if isinstance(trades, str):
        text = text.replace(b'"n":0,', f'"n":{trades},'.encode(), 1)
    return text


def frames(shape: str, count: int) -> list[bytes]:
    """``count`` message texts of ``shape`` (``closed`` or ``realistic``), round-robin over symbols.

    Closed candles of a symbol follow each other minute by minute, so the writer sees no repeat and
    no gap. The open updates before each close are one shared object per symbol: they cost the
    receiver the same whatever their content, and sharing keeps a million-frame run cheap to build.
    """
    if shape not in ("closed", "realistic"):
        raise ValueError(f"unknown traffic shape {shape!r}")
    per_close = 1 if shape == "closed" else OPEN_PER_CLOSE + 1
    opens = {s: kline_json(s, T0, False, 100) for s in SYMBOLS}
    out: list[bytes] = []
    i = 0
    while len(out) < count:
        symbol = SYMBOLS[i % len(SYMBOLS)]
        out += [opens[symbol]] * (per_close - 1)
        out.append(kline_json(symbol, T0 + (i // len(SYMBOLS)) * 60_000, True, 100))
        i += 1
    return out[:count]


def encode_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A final, unmasked server frame (RFC 6455 §5.2): 7-, 16- or 64-bit payload length."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def _chunks(encoded: list[bytes]) -> Iterator[bytes]:
    """Whole frames joined into writes of about ``CHUNK`` bytes (a control frame may go between)."""
    batch: list[bytes] = []
    size = 0
    for frame in encoded:
        batch.append(frame)
        size += len(frame)
        if size >= CHUNK:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


# --- one connection ---------------------------------------------------------------------------


class _Client:
    """One accepted socket: the handshake, then a sender (this thread) and a control reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()  # whole frames only: a pong never lands inside a data frame
        self.closing = threading.Event()

    def send(self, data: bytes, *, last: bool = False) -> bool:
        """Write whole frames; ``last`` (a close frame): nothing may follow it."""
        with self.lock:
            if self.closing.is_set():
                return False
            if last:
                self.closing.set()
            try:
                self.sock.sendall(data)
            except OSError:
                self.closing.set()
                return False
        return True

    def handshake(self) -> bool:
        request = b""
        while b"\r\n\r\n" not in request:
            data = self.sock.recv(4096)
            if not data or len(request) > _MAX_REQUEST:
                return False
            request += data
        head, _, rest = request.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        method, version = (parts[0], parts[2]) if len(parts) == 3 else ("", "")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key", "")
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            key_ok = False
        if not (
            method == "GET"
            and version == "HTTP/1.1"
            and headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in headers.get("connection", "").lower()
            and headers.get("sec-websocket-version") == "13"
            and key_ok
            and not rest  # a client must wait for the 101 before sending frames
        ):
            self.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        self.sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n\r\n"
        )
        return True

    def _recv_exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            more = self.sock.recv(n - len(data))
            if not more:
                return None
            data += more
        return data

    def read_control(self) -> None:
        """Client frames until close or EOF: pings answered, requests acknowledged, close echoed."""
        try:
            while True:
                head = self._recv_exactly(2)
                if head is None:
                    break
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", self._recv_exactly(2) or b"\0\0")
                elif length == 127:
                    (length,) = struct.unpack("!Q", self._recv_exactly(8) or b"\0" * 8)
                mask = self._recv_exactly(4) if head[1] & 0x80 else b"\0\0\0\0"
                payload = self._recv_exactly(length) if length else b""
                if mask is None or payload is None:
                    break
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 0x9:  # ping → pong with the same payload
                    self.send(encode_frame(payload, 0xA))
                elif opcode == 0x1:  # SUBSCRIBE and the like: Binance acknowledges them by id
                    try:
                        request_id = json.loads(payload).get("id")
                    except (ValueError, AttributeError):
                        request_id = None
                    if request_id is not None:
                        self.send(encode_frame(json.dumps({"result": None, "id": request_id}).encode()))
                elif opcode == 0x8:  # echo the close code, then stop sending
                    self.send(encode_frame(payload[:2], 0x8), last=True)
                    break
        except OSError:
            pass
        finally:
            self.closing.set()
            with suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def blast(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            if not self.send(chunk):
                return

    def pace(self, texts: list[bytes], rate: float) -> None:
        """One frame every 1/rate s on a fixed schedule, its trade count set to the send time (µs)."""
        start = time.perf_counter()
        for i, text in enumerate(texts):
            delay = start + i / rate - time.perf_counter()
            if delay > 0 and self.closing.wait(delay):
                return
            stamp = str(time.time_ns() // 1000).rjust(STAMP_WIDTH, "0").encode()
            if not self.send(encode_frame(text.replace(b"#" * STAMP_WIDTH, stamp))):
                return


def _serve(sock: socket.socket, chunks: list[bytes], texts: list[bytes], rate: float) -> None:
    client = _Client(sock)
    with sock:
        try:
            if not client.handshake():
                return
        except OSError:
            return
        reader = threading.Thread(target=client.read_control, daemon=True)
        reader.start()
        if rate > 0:
            client.pace(texts, rate)
        else:
            client.blast(chunks)
        reader.join()  # until the client closes: the socket must stay open while it reads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.blaster", description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=("closed", "realistic"))
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float, default=0.0, help="latency mode: frames per second, stamped")
    args = parser.parse_args(argv)
    if args.rate > 0:
        placeholder = "#" * STAMP_WIDTH
        texts = [kline_json(SYMBOLS[i % len(SYMBOLS)], T0 + (i // len(SYMBOLS)) * 60_000, True, placeholder)
                 for i in range(args.count)]  # fmt: skip
        chunks: list[bytes] = []
    else:
        texts = []
        chunks = list(_chunks([encode_frame(t) for t in frames(args.shape, args.count)]))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    print(listener.getsockname()[1], flush=True)

    def accept_loop() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve, args=(sock, chunks, texts, args.rate), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    listener.close()
    sys.stdout.flush()
    os._exit(0)  # daemon threads may sit in a blocking send to a client that stopped reading


if __name__ == "__main__":
    main()
