"""A real third-party Binance client, unchanged but for its URLs, against the fake exchange.

Optional: runs only where Binance's own (deprecated, synchronous) ``binance-connector`` package is
installed; it is not a test dependency of trio-klines.
"""

from __future__ import annotations

import json
import queue
import threading

import pytest
import trio

from trio_klines.core.parse import parse_frame, parse_rest_klines
from trio_klines.testing import open_exchange

spot_client = pytest.importorskip("binance.spot", reason="binance-connector is not installed")
ws_client = pytest.importorskip("binance.websocket.spot.websocket_stream")

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_200_000


async def test_binance_connector_rest_and_kline_socket() -> None:
    async with open_exchange(seed=2, speed=6000, start=T0) as ex:
        spot = ex.markets["spot"]

        def rest() -> tuple[list[list[object]], dict[str, int]]:
            client = spot_client.Spot(base_url=spot.rest_url, timeout=10)
            return client.klines("ETHUSDT", "1h", startTime=T0 - 10 * 3_600_000, limit=10), client.time()

        rows, server_time = await trio.to_thread.run_sync(rest)
        candles = parse_rest_klines(json.dumps(rows), "spot", "ETHUSDT", "1h")
        assert candles == ex.ground_truth("spot", "ETHUSDT", "1h", T0 - 10 * 3_600_000, T0)
        assert abs(server_time["serverTime"] - ex.now()) < 600_000

        def socket() -> list[str]:
            received: queue.Queue[str] = queue.Queue()
            client = ws_client.SpotWebsocketStreamClient(
                stream_url=spot.ws_url, is_combined=True, on_message=lambda _, message: received.put(message)
            )
            try:
                client.kline(symbol="btcusdt", interval="1m")  # a live SUBSCRIBE with a timestamp id
                messages: list[str] = []
                while sum('"x":true' in m for m in messages) < 3:
                    messages.append(received.get(timeout=10))
                return messages
            finally:
                client.stop()

        messages = await trio.to_thread.run_sync(socket)
        assert json.loads(messages[0])["result"] is None  # the SUBSCRIBE acknowledgement
        closed = [c for c in (parse_frame(m, "spot") for m in messages[1:]) if c is not None]
        assert closed == ex.ground_truth("spot", "BTCUSDT", "1m", closed[0].open_time, closed[-1].open_time + 1)
        assert not [t for t in threading.enumerate() if t.name.startswith("Thread-") and t.is_alive()]
