"""End to end: WebSocket → parse → channel → writer → store, against a blaster in another process.

    python -m benchmarks.e2e [--messages N] [--json]

A blaster process (trio-websocket server) sends pre-encoded kline frames as fast as the socket takes
them. Measured in one run:

- ``ws_ceiling``: a trio-websocket client that receives and discards (the transport's ceiling);
- ``closed``: the recorder's full path (``Recorder`` with the Parquet store) on all-closed traffic;
- ``realistic``: the same on 240 open-candle updates per closed candle, as a ``1m`` futures stream sends;
- ``seed_closed``: the original recorder's way on closed traffic: asyncio + ``websockets``, a one-row
  DataFrame per candle and a read-whole-file / concat / rewrite of its Parquet file per candle;
- ``latency_p99_ms``: closed frame sent → durable on disk, at a moderate rate (200 frames/s).

Messages/s come with CPU µs per message of the receiving process (``time.process_time``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

MARKET = "usdt_futures"
SYMBOLS = [f"SYM{i:03d}USDT" for i in range(50)]
T0 = 1_767_225_600_000


def frames(shape: str, count: int, *, stamp: bool = False) -> list[bytes]:
    """``count`` frames: all closed, or 240 open updates per closed candle, round-robin over symbols."""
    out: list[bytes] = []
    per_close = 1 if shape == "closed" else 241
    i = 0
    while len(out) < count:
        symbol = SYMBOLS[i % len(SYMBOLS)]
        t = T0 + (i // len(SYMBOLS)) * 60_000
        for j in range(per_close):
            closed = j == per_close - 1
            n = 0 if stamp else 100 + j
            k = (f'{{"t":{t},"T":{t + 59_999},"s":"{symbol}","i":"1m","f":1,"L":2,"o":"100.0","c":"101.5",'
                 f'"h":"102.0","l":"99.5","v":"12.345","n":{n},"x":{"true" if closed else "false"},'
                 f'"q":"1250.5","V":"6.1","Q":"620.2","B":"0"}}')  # fmt: skip
            out.append(
                f'{{"stream":"{symbol.lower()}@kline_1m","data":{{"e":"kline","E":{t},"s":"{symbol}","k":{k}}}}}'.encode()
            )
        i += 1
    return out[:count]


# --- the blaster (runs in its own process) ----------------------------------------------------


async def blast(shape: str, count: int, rate: float) -> None:
    from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

    payload = frames(shape, count, stamp=rate > 0)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            if rate > 0:  # latency mode: stamp the send time (ms) into the trade count
                for frame in payload:
                    text = frame.decode().replace('"n":0,', f'"n":{int(time.time() * 1000)},')
                    await ws.send_message(text)
                    await trio.sleep(1 / rate)
            else:
                for frame in payload:
                    await ws.send_message(frame.decode())
            await trio.sleep_forever()
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin
        nursery.cancel_scope.cancel()


def start_blaster(shape: str, count: int, rate: float = 0.0) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.e2e", "--blast", shape, str(count), str(rate)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def stop_blaster(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- measurements -----------------------------------------------------------------------------


async def ws_ceiling(port: int, count: int) -> tuple[float, float]:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(f"ws://127.0.0.1:{port}/stream", max_message_size=1 << 20) as ws:
        await ws.get_message()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count - 1):
            await ws.get_message()
        return time.perf_counter() - wall, time.process_time() - cpu


async def recorder_run(port: int, count: int, closed: int, data: Path, transport: str) -> tuple[float, float]:
    from trio_klines import Recorder, RecorderConfig

    config = RecorderConfig.build(
        streams=[f"{MARKET}:1m:{','.join(SYMBOLS)}"],
        endpoints={MARKET: {"ws": f"ws://127.0.0.1:{port}/{MARKET}"}},
        data_dir=data, backfill=False, flush_seconds=0.5, transport=transport,
    )  # fmt: skip
    wall, cpu = time.perf_counter(), time.process_time()
    async with Recorder(config) as rec:
        # Polled, not subscribed: a candle subscriber would add its own work to the measured path.
        while rec.stats().messages < count or rec.stats().written < closed:  # noqa: ASYNC110
            await trio.sleep(0.005)
        elapsed = time.perf_counter() - wall, time.process_time() - cpu
    return elapsed


async def latency(port: int, count: int, data: Path) -> list[float]:
    from trio_klines import Recorder, RecorderConfig

    config = RecorderConfig.build(
        streams=[f"{MARKET}:1m:{','.join(SYMBOLS)}"],
        endpoints={MARKET: {"ws": f"ws://127.0.0.1:{port}/{MARKET}"}},
        data_dir=data, backfill=False, flush_seconds=0.2,
    )  # fmt: skip
    out: list[float] = []
    async with Recorder(config) as rec, rec.candles() as batches:
        async for batch in batches:
            now = time.time() * 1000
            out += [now - c.trade_num for c in batch]
            if len(out) >= count:
                break
    return out


def seed_closed(port: int, count: int, data: Path) -> tuple[float, float]:
    """The original recorder: asyncio + websockets, one-row DataFrame and a whole-file rewrite per candle."""
    import pandas as pd
    import websockets

    async def main() -> tuple[float, float]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/stream", max_size=1 << 20) as ws:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                k = json.loads(await ws.recv())["data"]["k"]
                if not k["x"]:
                    continue
                row = {"candle_begin_time": pd.to_datetime(k["t"], unit="ms", utc=True), "open": float(k["o"]),
                       "high": float(k["h"]), "low": float(k["l"]), "close": float(k["c"]), "volume": float(k["v"]),
                       "quote_volume": float(k["q"]), "trade_num": int(k["n"]),
                       "taker_buy_base_asset_volume": float(k["V"]),
                       "taker_buy_quote_asset_volume": float(k["Q"])}  # fmt: skip
                df = pd.DataFrame([row])
                path = data / f"{k['s']}_{k['i']}.parquet"
                if path.exists():
                    df = pd.concat([pd.read_parquet(path), df], ignore_index=True)
                df.to_parquet(path)
            return time.perf_counter() - wall, time.process_time() - cpu

    return asyncio.run(main())


def measure(label: str, shape: str, count: int, fn: Any, *args: Any) -> dict[str, float]:
    proc, port = start_blaster(shape, count)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = (
                fn(port, count, *args, Path(tmp)) if label == "seed_closed" else trio.run(fn, port, count, *args)
            )
    finally:
        stop_blaster(proc)
    return {f"{label}_msgs_per_s": count / wall, f"cpu_us_per_msg_{label}": cpu / count * 1e6}


def run(messages: int, seed_messages: int, transport: str) -> dict[str, Any]:
    results: dict[str, Any] = {"messages": messages, "transport": transport}
    results |= measure("ws_ceiling", "realistic", messages, ws_ceiling)
    with tempfile.TemporaryDirectory() as tmp:
        closed = messages
        results |= measure("closed", "closed", messages, recorder_run, closed, Path(tmp) / "c", transport)
    with tempfile.TemporaryDirectory() as tmp:
        realistic_closed = messages // 241
        results |= measure(
            "realistic", "realistic", messages, recorder_run, realistic_closed, Path(tmp) / "r", transport
        )
    results |= measure("seed_closed", "closed", seed_messages, seed_closed)
    proc, port = start_blaster("closed", 2000, rate=200)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lat = trio.run(latency, port, 600, Path(tmp))
    finally:
        stop_blaster(proc)
    results["latency_p50_ms"] = statistics.median(lat)
    results["latency_p99_ms"] = sorted(lat)[int(len(lat) * 0.99) - 1]
    results["ratio_closed_vs_seed"] = results["closed_msgs_per_s"] / results["seed_closed_msgs_per_s"]
    results["realistic_vs_ws_ceiling"] = results["realistic_msgs_per_s"] / results["ws_ceiling_msgs_per_s"]
    results["cpu_us_per_msg_realistic"] = results.pop("cpu_us_per_msg_realistic")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="frames per measurement (default 100000)")
    parser.add_argument("--seed-messages", type=int, default=300, help="frames for the slow seed baseline")
    parser.add_argument("--transport", default="trio-websocket", help="recorder transport (default trio-websocket)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--blast", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.blast:
        shape, count, rate = args.blast
        trio.run(blast, shape, int(count), float(rate))
        return
    if args.messages < 241 or args.seed_messages < 1:
        parser.error("--messages must be at least 241 and --seed-messages positive")
    results = run(args.messages, args.seed_messages, args.transport)
    if args.json:
        print(json.dumps(results))
        return
    print(f"end to end, {args.messages} frames per run, transport {args.transport}, pid {os.getpid()}")
    for key, value in results.items():
        if isinstance(value, float):
            print(f"  {key:<32} {value:>14,.2f}")


if __name__ == "__main__":
    main()
