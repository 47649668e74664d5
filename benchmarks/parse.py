"""Parse throughput: trio-klines' parser against the seed recorder's way, in one run.

    python -m benchmarks.parse [--messages N] [--repeat R] [--json]

Every figure is closed-candle WebSocket frames per second on one core, measured in the same process
on the same frames, so the ratios hold even on a machine whose speed drifts:

- ``parse``: :func:`trio_klines.core.parse.frame_parser`, the path a connection uses (decode, validate,
  build a :class:`~trio_klines.core.parse.Candle`);
- ``parse_exact``: the same with ``exact=True``: the values kept as Binance's decimal strings, their shape
  checked by one regular expression per candle (issue 18's target: ``exact_over_float`` at most 1.5 in time,
  that is ``parse_exact`` at least 2/3 of ``parse``'s rate);
- ``parse_frame``: the convenience function that looks the market up per call;
- ``msgspec_decode`` / ``orjson_extract``: the JSON decoders alone, the first typed (what the parser
  uses), the second ``orjson.loads`` plus the dict look-ups and ``float()`` calls it would need;
- ``open_update``: frames of still-open candles (most of the traffic), through the same parser;
- ``baseline``: the seed recorder: ``json.loads`` and a one-row pandas DataFrame per closed candle.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from trio_klines.core.parse import Candle, _frame_decoder, frame_parser, parse_frame
from trio_klines.store.tables import COLUMNS
from trio_klines.testing.wire import WireKline

MARKET = "usdt_futures"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT")


def make_frames(count: int, seed: int = 7, *, closed: bool = True) -> list[bytes]:
    """``count`` 1m candles (closed, or open updates) in Binance's combined-stream form."""
    rng = random.Random(seed)
    out = []
    t0 = 1_767_225_600_000  # 2026-01-01
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        t = t0 + (i // len(SYMBOLS)) * 60_000
        prices = sorted(rng.randrange(3_000_000, 3_100_000) for _ in range(4))
        o, c = rng.sample(prices[1:3], 2)
        v = rng.randrange(1, 10**7)
        q = v * prices[1] // 100
        kline = WireKline(
            symbol, "1m", t, open=f"{o / 100:.2f}", high=f"{prices[3] / 100:.2f}", low=f"{prices[0] / 100:.2f}",
            close=f"{c / 100:.2f}", volume=f"{v / 1000:.3f}", quote_volume=f"{q / 1000:.5f}",
            trades=rng.randrange(0, 5000), taker_base=f"{v // 2 / 1000:.3f}", taker_quote=f"{q // 2 / 1000:.5f}",
            first_id=10**9 + i * 100, last_id=10**9 + i * 100 + 99, closed=closed,
        )  # fmt: skip
        out.append(kline.frame(event_time=t + 60_001).encode())
    return out


def seed_style(frame: bytes) -> pd.DataFrame | None:
    """What the original asyncio recorder does per frame: ``json``, then a one-row DataFrame."""
    k = json.loads(frame)["data"]["k"]
    if not k["x"]:
        return None
    f = float
    row = [k["t"], f(k["o"]), f(k["h"]), f(k["l"]), f(k["c"]), f(k["v"]), f(k["q"]), k["n"], f(k["V"]), f(k["Q"])]
    df = pd.DataFrame([row], columns=COLUMNS)
    df["candle_begin_time"] = pd.to_datetime(df["candle_begin_time"], unit="ms", utc=True)
    df.index = pd.DatetimeIndex(df["candle_begin_time"] + pd.Timedelta(minutes=1), name="candle_end_time")
    return df


def orjson_extract() -> Callable[[bytes], Any] | None:
    try:
        import orjson
    except ImportError:  # orjson is in the test extra only
        return None
    loads = orjson.loads

    def run(frame: bytes) -> Candle | None:
        data = loads(frame)["data"]
        k = data["k"]
        if not k["x"]:
            return None
        f = float
        return Candle(MARKET, k["s"], k["i"], k["t"], f(k["o"]), f(k["h"]), f(k["l"]), f(k["c"]), f(k["v"]),
                      f(k["q"]), k["n"], f(k["V"]), f(k["Q"]))  # fmt: skip

    return run


def rate(fn: Callable[[bytes], Any], frames: Sequence[bytes], repeat: int) -> float:
    """Median messages/s over ``repeat`` passes (after one warm-up pass)."""
    for f in frames[:1000]:
        fn(f)
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        for f in frames:
            fn(f)
        rates.append(len(frames) / (time.perf_counter() - start))
    return statistics.median(rates)


def run(messages: int, repeat: int, baseline_messages: int) -> dict[str, Any]:
    frames = make_frames(messages)
    parse = frame_parser(MARKET)
    assert all(isinstance(parse(f), Candle) for f in frames[:100])
    results: dict[str, Any] = {
        "messages": messages,
        "parse_msgs_per_s": rate(parse, frames, repeat),
        "parse_exact_msgs_per_s": rate(frame_parser(MARKET, exact=True), frames, repeat),
        "parse_frame_msgs_per_s": rate(lambda f: parse_frame(f, MARKET), frames, repeat),
        "msgspec_decode_msgs_per_s": rate(_frame_decoder.decode, frames, repeat),
        # Updates of still-open candles, the bulk of real traffic: recognised without a full decode.
        "open_update_msgs_per_s": rate(parse, make_frames(messages, closed=False), repeat),
    }
    extract = orjson_extract()
    if extract is not None:
        results["orjson_extract_msgs_per_s"] = rate(extract, frames, repeat)
    results["baseline_msgs_per_s"] = rate(seed_style, frames[:baseline_messages], max(1, repeat // 2))
    results["ratio"] = results["parse_msgs_per_s"] / results["baseline_msgs_per_s"]
    # Time per message in exact mode over float mode (1.5 at most, issue 18).
    results["exact_over_float"] = results["parse_msgs_per_s"] / results["parse_exact_msgs_per_s"]
    results["python"] = sys.version.split()[0]
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parse", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="frames per pass (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="passes per measurement; the median counts")
    parser.add_argument("--baseline-messages", type=int, default=2_000, help="frames per baseline pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repeat < 1 or args.baseline_messages < 1:
        parser.error("--messages, --repeat and --baseline-messages must be positive")
    results = run(args.messages, args.repeat, min(args.baseline_messages, args.messages))
    if args.json:
        print(json.dumps(results))
        return
    print(f"closed-candle frames per second, one core, Python {results['python']}")
    for key, value in results.items():
        if key.endswith("_msgs_per_s"):
            label = key.removesuffix("_msgs_per_s")
            print(f"  {label:<18} {value:>12,.0f} /s   {value / results['baseline_msgs_per_s']:>8.1f}× baseline")
    print(f"  ratio parse/baseline: {results['ratio']:.0f}×")
    print(f"  exact/float time per message: {results['exact_over_float']:.2f} (target at most 1.5)")


if __name__ == "__main__":
    main()
