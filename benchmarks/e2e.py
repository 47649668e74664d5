"""End to end: WebSocket → parse → channel → writer → store, against a blaster in another process.

    python -m benchmarks.e2e [--messages N] [--closed-messages N] [--rounds N] [--json]

The blaster (:mod:`benchmarks.blaster`, its own process) sends pre-encoded kline frames as fast as the
socket takes them, far faster than any client here receives them. Measured in one run, for each of
the two transports (``trio-websocket``, the default, and ``websockets``, the fast one):

- ``ws_ceiling``: the transport alone, receiving and discarding (its ceiling: the library's receive
  call, one message per call), and ``ws_ceiling_batched``: the same through ``receive_batch``, as
  the recorder reads (what the rest of the path costs shows against this one);
- ``closed``: the recorder's full path (``Recorder`` + the Parquet store, backfill off) on all-closed
  traffic, and ``closed_noop_sink``: the same with a sink that discards, to tell whether the closed
  path is bound by the receive side or by the writer and the store;
- ``realistic``: the full path on 240 open-candle updates per closed candle, as a ``1m`` futures
  stream sends;
- ``latency``: closed frame sent → durable on disk (the recorder's candle subscription), at a
  moderate rate (200 closed candles/s over 50 symbols), with the writer's ``flush_seconds`` reported
  beside it. Every recorder run uses the recorder's default flush settings, so the store sees the
  batch sizes it would in production; a throughput run stops the recorder once its last frame is in
  (as Ctrl-C would), so that its last batch does not idle out a flush interval;

and once, ``seed_closed``: the original recorder's way on closed traffic (asyncio + ``websockets``, a
one-row DataFrame per candle, a read-whole-file / concat / rewrite of its Parquet file per candle).

Rates are messages per second from the first message to the last one received (and, through the
recorder, to the last candle durable); CPU is µs per message of this process (``time.process_time``,
every thread: the store's worker thread included). Top-level keys without a transport suffix are the
fast transport's. The machine may be shared, and its speed drifts: each throughput figure is the
median of ``--rounds`` rounds (every round's figures are under ``per_round``), each ratio to the
ceiling or the no-op sink is taken within a round, and ratios of one run are what to compare, not
absolute figures of different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import trio

from benchmarks._util import emit, environment
from benchmarks.blaster import OPEN_PER_CLOSE, SYMBOLS

MARKET: Final = "usdt_futures"
TRANSPORTS: Final = ("trio-websocket", "websockets")
FAST: Final = "websockets"
#: The writer's flush interval in every recorder run (the recorder's default); latency is judged against it.
FLUSH_SECONDS: Final = 1.0
#: Latency mode: closed frames per second, and how many are timed.
LATENCY_RATE: Final = 200.0
#: Rounds of the throughput measurements per transport; the report gives each figure's median.
ROUNDS: Final = 3
#: A measurement that takes longer than this is stuck: the blaster is killed and the run fails.
RUN_TIMEOUT: Final = 300.0


# --- the blaster process ----------------------------------------------------------------------


@contextmanager
def blaster(shape: str, count: int, rate: float = 0.0) -> Iterator[int]:
    """A blaster process serving ``count`` frames of ``shape`` per connection; yields its port."""
    command = [sys.executable, "-m", "benchmarks.blaster", shape, str(count), "--rate", str(rate)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the blaster did not start (exit code {proc.poll()})")
        yield int(line)
    finally:
        stop_blaster(proc)


def stop_blaster(proc: subprocess.Popen[str]) -> None:
    """Close its stdin (its signal to exit); kill it if it does not go within a few seconds."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# --- measurements (each one in a fresh trio.run, against a fresh blaster) -----------------------


def _transport(name: str) -> Any:
    from trio_klines.net.transport import trio_websocket_transport
    from trio_klines.net.websockets_transport import websockets_transport

    return (websockets_transport if name == "websockets" else trio_websocket_transport)()


async def ws_ceiling(port: int, count: int, transport: str) -> tuple[float, float]:
    """Receive and discard ``count`` frames; the clock starts at the first one."""
    async with _transport(transport)(f"ws://127.0.0.1:{port}/stream") as conn:
        receive = conn.receive
        await receive()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count - 1):
            await receive()
        return time.perf_counter() - wall, time.process_time() - cpu


async def ws_ceiling_batched(port: int, count: int, transport: str) -> tuple[float, float, int]:
    """The same through the transport's ``receive_batch`` (as the recorder reads): returns wall, CPU and
    the frames timed (all but the first read's)."""
    async with _transport(transport)(f"ws://127.0.0.1:{port}/stream") as conn:
        receive_batch = conn.receive_batch
        got = first = len(await receive_batch())
        wall, cpu = time.perf_counter(), time.process_time()
        while got < count:
            got += len(await receive_batch())
        return time.perf_counter() - wall, time.process_time() - cpu, max(count - first, 1)


class NullSink:
    """Takes every batch and keeps nothing: the writer's side at no cost."""

    def append(self, candles: Sequence[object]) -> None:
        pass


def _config(port: int, data: Path, transport: str, flush: float) -> Any:
    from trio_klines import RecorderConfig

    return RecorderConfig.build(
        streams=[f"{MARKET}:1m:{','.join(SYMBOLS)}"],
        endpoints={MARKET: {"ws": f"ws://127.0.0.1:{port}/{MARKET}"}},
        data_dir=data, backfill=False, check_symbols=False, flush_seconds=flush, transport=transport,
    )  # fmt: skip


async def recorder_run(
    port: int, count: int, closed: int, data: Path, transport: str, flush: float, null_sink: bool = False
) -> tuple[float, float, int]:
    """The full path until ``count`` frames are received and ``closed`` candles durable.

    The clock starts at the first message (not at start-up) and stops when the last candle is durable;
    returns wall, CPU and the messages timed. Once the last frame is in, the recorder is stopped, as a
    user's Ctrl-C would, so that the last batch is written at once: left alone it would wait out its
    flush interval, up to a second of idling in a run of a few (the latency figure measures that wait).
    Polled, not subscribed: a candle subscriber would add its own work to the measured path.
    """
    from trio_klines import Recorder

    stopped: list[tuple[float, float]] = []

    async def clock_stop(rec: Recorder) -> None:
        while rec.stats().written < closed:  # noqa: ASYNC110
            await trio.sleep(0.002)
        stopped.append((time.perf_counter(), time.process_time()))

    sink = NullSink() if null_sink else None
    # The nursery outlives the recorder: clock_stop watches the final flush that exiting it triggers.
    async with trio.open_nursery() as nursery, Recorder(_config(port, data, transport, flush), sink=sink) as rec:
        while (first := rec.stats().messages) == 0:  # noqa: ASYNC110
            await trio.sleep(0.001)
        wall, cpu = time.perf_counter(), time.process_time()
        while rec.stats().messages < count:  # noqa: ASYNC110
            await trio.sleep(0.002)
        nursery.start_soon(clock_stop, rec)
        if rec.stats().malformed or rec.stats().reconnects:
            raise RuntimeError(f"the run was not clean: {rec.stats().summary()}")
    end_wall, end_cpu = stopped[0]
    return end_wall - wall, end_cpu - cpu, max(count - first, 1)  # tiny smoke runs may arrive in one read


async def latency(port: int, count: int, data: Path, transport: str, flush: float) -> list[float]:
    """Milliseconds from the blaster's send (stamped in the trade count, µs) to the candle durable."""
    from trio_klines import Recorder

    out: list[float] = []
    async with Recorder(_config(port, data, transport, flush)) as rec, rec.candles() as batches:
        async for batch in batches:
            now = time.time_ns() / 1000
            out += [(now - c.trade_num) / 1000 for c in batch]
            if len(out) >= count:
                break
    return out[:count]


def seed_closed(port: int, count: int, data: Path) -> tuple[float, float]:
    """The original recorder: asyncio + websockets, one-row DataFrame and a whole-file rewrite per candle."""
    import pandas as pd
    import websockets

    async def main() -> tuple[float, float]:
        async with (
            asyncio.timeout(RUN_TIMEOUT),
            websockets.connect(f"ws://127.0.0.1:{port}/stream", max_size=1 << 20) as ws,
        ):
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


def _rate(label: str, wall: float, cpu: float, count: int) -> dict[str, float]:
    return {f"{label}_msgs_per_s": count / wall, f"cpu_us_per_msg_{label}": cpu / count * 1e6}


async def _bounded(fn: Any, *args: Any) -> Any:
    with trio.fail_after(RUN_TIMEOUT):
        return await fn(*args)


def measure_round(transport: str, messages: int, closed_messages: int, flush: float) -> dict[str, float]:
    """One round of the throughput measurements of one transport, each against a fresh blaster."""
    out: dict[str, float] = {}
    with blaster("realistic", messages) as port:
        wall, cpu = trio.run(_bounded, ws_ceiling, port, messages, transport)
        out |= _rate("ws_ceiling", wall, cpu, messages - 1)
    with blaster("realistic", messages) as port:
        out |= _rate("ws_ceiling_batched", *trio.run(_bounded, ws_ceiling_batched, port, messages, transport))
    with blaster("realistic", messages) as port, tempfile.TemporaryDirectory() as tmp:
        closed = messages // (OPEN_PER_CLOSE + 1)
        wall, cpu, timed = trio.run(_bounded, recorder_run, port, messages, closed, Path(tmp), transport, flush)
        out |= _rate("realistic", wall, cpu, timed)
    for label, null in (("closed", False), ("closed_noop_sink", True)):
        with blaster("closed", closed_messages) as port, tempfile.TemporaryDirectory() as tmp:
            run = trio.run(
                _bounded, recorder_run, port, closed_messages, closed_messages, Path(tmp), transport, flush, null
            )
            out |= _rate(label, *run)
    # Ratios within the round: its runs are minutes apart at most, so the machine's drift cancels out.
    out["realistic_vs_ws_ceiling"] = out["realistic_msgs_per_s"] / out["ws_ceiling_msgs_per_s"]
    out["realistic_vs_ws_ceiling_batched"] = out["realistic_msgs_per_s"] / out["ws_ceiling_batched_msgs_per_s"]
    out["closed_vs_noop_sink"] = out["closed_msgs_per_s"] / out["closed_noop_sink_msgs_per_s"]
    return out


def measure_transport(
    transport: str, messages: int, closed_messages: int, latency_count: int, flush: float, rounds: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Every measurement of one transport: the median of ``rounds`` rounds for each figure (and each
    round's figures), then the latency once."""
    per_round = [measure_round(transport, messages, closed_messages, flush) for _ in range(rounds)]
    spread = {key: [r[key] for r in per_round] for key in per_round[0]}
    out = {key: statistics.median(values) for key, values in spread.items()}
    with blaster("closed", latency_count, LATENCY_RATE) as port, tempfile.TemporaryDirectory() as tmp:
        lat = sorted(trio.run(_bounded, latency, port, latency_count, Path(tmp), transport, flush))
    out["latency_p50_ms"] = statistics.median(lat)
    out["latency_p99_ms"] = lat[min(len(lat) - 1, round(len(lat) * 0.99))]
    out["latency_max_ms"] = lat[-1]
    return out, spread


def _suffix(transport: str) -> str:
    """The suffix of a transport's keys: ``trio_websocket``, ``websockets``."""
    return transport.replace("-", "_")


def run(
    messages: int,
    closed_messages: int,
    seed_messages: int,
    latency_count: int,
    flush: float = FLUSH_SECONDS,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "messages": messages, "closed_messages": closed_messages, "seed_messages": seed_messages,
        "latency_messages": latency_count, "latency_rate_per_s": LATENCY_RATE, "flush_seconds": flush,
        "rounds": rounds, "fast_transport": FAST, "default_transport": TRANSPORTS[0], "per_round": {},
    }  # fmt: skip
    with blaster("closed", seed_messages) as port, tempfile.TemporaryDirectory() as tmp:
        wall, cpu = seed_closed(port, seed_messages, Path(tmp))
    results |= _rate("seed_closed", wall, cpu, seed_messages)
    for transport in TRANSPORTS:
        figures, spread = measure_transport(transport, messages, closed_messages, latency_count, flush, rounds)
        suffix = _suffix(transport)
        results["per_round"] |= {f"{key}_{suffix}": values for key, values in spread.items()}
        results |= {f"{key}_{suffix}": value for key, value in figures.items()}
        results[f"ratio_closed_vs_seed_{suffix}"] = figures["closed_msgs_per_s"] / results["seed_closed_msgs_per_s"]
        if transport == FAST:
            results |= figures
    results["ratio_closed_vs_seed"] = results[f"ratio_closed_vs_seed_{FAST}"]
    results["environment"] = environment()
    return results


def table(results: dict[str, Any]) -> list[str]:
    rows = [
        ("ws_ceiling_msgs_per_s", "receive and discard, msg/s", ",.0f"),
        ("cpu_us_per_msg_ws_ceiling", "  CPU µs/msg", ".2f"),
        ("ws_ceiling_batched_msgs_per_s", "receive_batch and discard, msg/s", ",.0f"),
        ("realistic_msgs_per_s", "realistic (240 open : 1 closed), msg/s", ",.0f"),
        ("cpu_us_per_msg_realistic", "  CPU µs/msg", ".2f"),
        ("realistic_vs_ws_ceiling", "  share of the ceiling", ".2f"),
        ("realistic_vs_ws_ceiling_batched", "  share of the batched ceiling", ".2f"),
        ("closed_msgs_per_s", "all closed, candles/s", ",.0f"),
        ("cpu_us_per_msg_closed", "  CPU µs/msg", ".2f"),
        ("closed_noop_sink_msgs_per_s", "all closed, no-op sink, candles/s", ",.0f"),
        ("closed_vs_noop_sink", "  full path / no-op sink", ".2f"),
        ("ratio_closed_vs_seed", "all closed / seed baseline", ",.0f"),
        ("latency_p50_ms", f"latency p50 ms ({results['latency_rate_per_s']:g} closed/s)", ",.0f"),
        ("latency_p99_ms", f"latency p99 ms (flush {results['flush_seconds']:g} s)", ",.0f"),
    ]
    lines = [
        f"end to end, {results['messages']:,} frames (closed: {results['closed_messages']:,}), blaster in its own "
        f"process; medians of {results['rounds']} rounds; seed baseline {results['seed_closed_msgs_per_s']:,.1f} "
        "candles/s",
        f"  {'':<44}{'trio-websocket':>16}{'websockets':>16}",
    ]
    for key, label, fmt in rows:
        cells = [format(results[f"{key}_{_suffix(t)}"], fmt) for t in TRANSPORTS]
        lines.append(f"  {label:<44}{cells[0]:>16}{cells[1]:>16}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500_000, help="frames per ceiling/realistic run")
    parser.add_argument("--closed-messages", type=int, default=150_000, help="frames per all-closed run")
    parser.add_argument("--seed-messages", type=int, default=300, help="frames for the slow seed baseline")
    parser.add_argument("--latency-messages", type=int, default=600, help="closed frames timed for latency")
    parser.add_argument("--flush-seconds", type=float, default=FLUSH_SECONDS, help="the writer's flush interval")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of the throughput runs (medians)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.messages <= OPEN_PER_CLOSE or min(args.closed_messages, args.seed_messages, args.latency_messages) < 2:
        parser.error(f"--messages must exceed {OPEN_PER_CLOSE} and the other counts be at least 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    results = run(
        args.messages, args.closed_messages, args.seed_messages, args.latency_messages, args.flush_seconds, args.rounds
    )
    emit(results, table(results), as_json=args.json)


if __name__ == "__main__":
    main()
