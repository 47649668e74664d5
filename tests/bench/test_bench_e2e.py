"""The end-to-end benchmark still runs (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
import trio
import wsproto.connection
import wsproto.events

from benchmarks import blaster, e2e
from trio_klines.core.parse import parse_frame


@pytest.mark.timeout(120)
def test_e2e_benchmark_reports_its_keys(capsys: pytest.CaptureFixture[str]) -> None:
    e2e.main(
        [
            "--messages",
            "482",
            "--closed-messages",
            "200",
            "--seed-messages",
            "5",
            "--latency-messages",
            "5",
            "--flush-seconds",
            "0.05",
            "--rounds",
            "2",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    for key in ("closed_msgs_per_s", "realistic_msgs_per_s", "ws_ceiling_msgs_per_s", "seed_closed_msgs_per_s",
                "ratio_closed_vs_seed", "cpu_us_per_msg_realistic", "latency_p99_ms"):  # fmt: skip
        assert result[key] > 0, key
    rounds = result["per_round"]["realistic_vs_ws_ceiling_trio_websocket"]
    assert len(rounds) == 2 and result["realistic_vs_ws_ceiling_trio_websocket"] == pytest.approx(sum(rounds) / 2)


def test_blaster_frames_parse() -> None:
    closed = [parse_frame(f, e2e.MARKET) for f in blaster.frames("closed", 120)]
    assert all(c is not None for c in closed)
    assert len({(c.symbol, c.open_time) for c in closed if c is not None}) == 120
    realistic = [parse_frame(f, e2e.MARKET) for f in blaster.frames("realistic", 482)]
    assert sum(c is not None for c in realistic) == 2


# --- the blaster ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", e2e.TRANSPORTS)
@pytest.mark.timeout(60)
def test_a_real_client_receives_the_blasters_frames_intact(transport: str) -> None:
    expected = [f.decode() for f in blaster.frames("realistic", 600)]

    async def receive(port: int) -> list[str | bytes]:
        async with e2e._transport(transport)(f"ws://127.0.0.1:{port}/stream") as conn:
            await conn.send('{"method":"LIST_SUBSCRIPTIONS","id":3}')
            return [await conn.receive() for _ in range(601)]

    with e2e.blaster("realistic", 600) as port:
        got = trio.run(receive, port)
    reply = [m for m in got if m not in expected]
    assert reply == ['{"result": null, "id": 3}']
    assert [m for m in got if m in expected] == expected


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 200_000])
def test_frames_carry_7_16_and_64_bit_lengths(size: int) -> None:
    client = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT)
    payload = "k" * size
    client.receive_data(blaster.encode_frame(payload.encode()))
    events = list(client.events())
    assert [type(e) for e in events] == [wsproto.events.TextMessage]
    assert events[0].data == payload and events[0].message_finished


def _raw_client(port: int, key: str = "dGhlIHNhbXBsZSBub25jZQ==", version: str = "13") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock, head


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    out = []
    while data:
        opcode, n = data[0] & 0x0F, data[1]
        assert n < 126
        out.append((opcode, data[2 : 2 + n]))
        data = data[2 + n :]
    return out


@pytest.mark.timeout(30)
def test_the_handshake_is_checked_pings_are_answered_and_close_is_echoed() -> None:
    with e2e.blaster("closed", 0) as port:
        sock, head = _raw_client(port, version="8")
        with sock:
            assert head.startswith(b"HTTP/1.1 400 ")
        sock, head = _raw_client(port)
        with sock:
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head  # RFC 6455's own example
            sock.sendall(_masked(0x9, b"hello") + _masked(0x8, b"\x03\xe8"))
            assert _read_frames(sock) == [(0xA, b"hello"), (0x8, b"\x03\xe8")]


@pytest.mark.timeout(30)
def test_latency_mode_stamps_the_send_time_in_microseconds() -> None:
    with e2e.blaster("closed", 3, rate=100) as port:
        before = time.time_ns() // 1000  # the first frame may be stamped before the 101 is read
        sock, _ = _raw_client(port)
        with sock:
            frames = []
            while len(frames) < 3:
                header = sock.recv(4)
                assert header[0] == 0x81 and header[1] == 126
                (n,) = struct.unpack("!H", header[2:])
                body = b""
                while len(body) < n:
                    body += sock.recv(n - len(body))
                frames.append(parse_frame(body, e2e.MARKET))
    stamps = [c.trade_num for c in frames if c is not None]
    assert len(stamps) == 3 and before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time_ns() // 1000
