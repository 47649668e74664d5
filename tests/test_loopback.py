"""The suite's guard (tests/conftest.py): a test that would reach a real host fails instead."""

from __future__ import annotations

import socket

import pytest
import trio


def test_resolving_a_real_host_fails() -> None:
    with pytest.raises(OSError, match="tests stay on loopback"):
        socket.getaddrinfo("api.binance.com", 443)


async def test_a_trio_connection_to_a_real_host_fails() -> None:
    with pytest.raises(OSError, match="tests stay on loopback"):
        await trio.open_tcp_stream("fstream.binance.com", 443)


def test_loopback_still_resolves() -> None:
    assert socket.getaddrinfo("127.0.0.1", 80)
