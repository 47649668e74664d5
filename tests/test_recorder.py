"""The Recorder engine in-process: scripted transport, in-memory sink, MockClock."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_klines.config import RecorderConfig
from trio_klines.core.markets import Series, stream_name
from trio_klines.core.parse import Candle
from trio_klines.errors import ConfigError
from trio_klines.net.stream import StreamConnection
from trio_klines.pipeline.writer import call_inline
from trio_klines.recorder import Recorder
from trio_klines.testing import ScriptedTransport, WireKline

from fakes import FakeBinance, FakeTransport, MemorySink, kline_frame

pytestmark = pytest.mark.timeout(10)


def config(*specs: str, **kw: object) -> RecorderConfig:
    kw.setdefault("backfill", False)  # the backfill tests bring their own scripted REST endpoint
    kw.setdefault("check_symbols", False)  # no exchangeInfo to ask: the transport is scripted
    return RecorderConfig.build(streams=specs, receive_timeout=5, flush_seconds=0.5, silence_min=1000, **kw)


async def test_records_closed_candles_and_flushes_on_exit(autojump_clock: trio.testing.MockClock) -> None:
    transport, sink = FakeTransport(), MemorySink()
    cfg = config("usdt_futures:1m:BTCUSDT,ETHUSDT", "spot:1h:BTCUSDT")
    async with Recorder(cfg, sink=sink, transport=transport, run_sink=call_inline) as rec:
        um = await transport.next_connection(1)
        spot = await transport.next_connection(2)
        assert "fstream.binance.com/market/stream" in um.url or "fstream.binance.com/market/stream" in spot.url
        if "fstream" not in um.url:
            um, spot = spot, um
        await um.push(kline_frame("BTCUSDT", "1m", 60_000, closed=False))
        await um.push(kline_frame("BTCUSDT", "1m", 60_000))
        await um.push(kline_frame("ETHUSDT", "1m", 60_000))
        await spot.push(kline_frame("BTCUSDT", "1h", 3_600_000))
        await trio.sleep(1)
        assert len(sink.candles) == 3
        await um.push(kline_frame("BTCUSDT", "1m", 120_000))  # still pending when we leave
        await trio.sleep(0.01)
        stats = rec.stats()
        assert stats.messages == 5
        assert stats.candles == 4
        assert len(stats.connections) == 2
    assert sorted((c.market, c.symbol, c.interval, c.open_time) for c in sink.candles) == [
        ("spot", "BTCUSDT", "1h", 3_600_000),
        ("usdt_futures", "BTCUSDT", "1m", 60_000),
        ("usdt_futures", "BTCUSDT", "1m", 120_000),
        ("usdt_futures", "ETHUSDT", "1m", 60_000),
    ]


async def test_one_failing_connection_does_not_stop_the_others(autojump_clock: trio.testing.MockClock) -> None:
    transport, sink = FakeTransport(), MemorySink()
    async with Recorder(
        config("spot:1m:BTCUSDT", "coin_futures:1m:BTCUSD_PERP"), sink=sink, transport=transport, run_sink=call_inline
    ):
        a = await transport.next_connection(1)
        b = await transport.next_connection(2)
        a.cut()
        await b.push(kline_frame("BTCUSD_PERP" if "dstream" in b.url else "BTCUSDT", "1m", 60_000))
        await trio.sleep(1)
        assert len(sink.candles) == 1
        await transport.next_connection(3)  # the cut one came back


async def test_embedders_receive_durable_candles(autojump_clock: trio.testing.MockClock) -> None:
    transport, sink = FakeTransport(), MemorySink()
    got: list[Candle] = []
    async with Recorder(config("spot:1m:BTCUSDT"), sink=sink, transport=transport, run_sink=call_inline) as rec:
        channel = rec.candles()
        ws = await transport.next_connection(1)
        for minute in (1, 2, 2, 3):
            await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000))
        await trio.sleep(1)
        while True:
            try:
                got.extend(channel.receive_nowait())
            except trio.WouldBlock:
                break
    assert [c.open_time // 60_000 for c in got] == [1, 2, 3]
    assert got == sink.candles


async def test_gaps_are_reported(autojump_clock: trio.testing.MockClock) -> None:
    transport, sink = FakeTransport(), MemorySink()
    async with Recorder(config("spot:1m:BTCUSDT"), sink=sink, transport=transport, run_sink=call_inline) as rec:
        ws = await transport.next_connection(1)
        await ws.push(kline_frame("BTCUSDT", "1m", 60_000))
        await ws.push(kline_frame("BTCUSDT", "1m", 240_000))
        await trio.sleep(1)
        assert rec.stats().gaps == 1
        assert rec.stats().missing_candles == 2
        assert rec.gaps[0].start == 120_000


async def test_streams_added_and_removed_at_run_time(autojump_clock: trio.testing.MockClock) -> None:
    transport, sink = FakeTransport(), MemorySink()
    async with Recorder(config("spot:1m:BTCUSDT"), sink=sink, transport=transport, run_sink=call_inline) as rec:
        ws = await transport.next_connection(1)
        await ws.push('{"result":null,"id":0}')
        await trio.sleep(0.1)
        await rec.add_streams([Series("spot", "ETHUSDT", "1m"), Series("coin_futures", "BTCUSD_PERP", "1h")])
        assert ws.sent == [{"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 1}]
        cm = await transport.next_connection(2)  # a new market needs a new connection
        assert cm.url.endswith("/stream?streams=btcusd_perp@kline_1h")
        await rec.remove_streams([Series("spot", "BTCUSDT", "1m")])
        assert ws.sent[-1] == {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 2}
        await rec.remove_streams([Series("coin_futures", "BTCUSD_PERP", "1h")])
        await trio.sleep(0.1)
        assert cm.closed
        assert {s.symbol for s in rec.config.streams} == {"ETHUSDT"}


async def test_nursery_start_returns_once_the_recorder_runs(autojump_clock: trio.testing.MockClock) -> None:
    transport, sink = FakeTransport(), MemorySink()
    rec = Recorder(config("spot:1m:BTCUSDT"), sink=sink, transport=transport, run_sink=call_inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        await rec.add_streams([Series("spot", "ETHUSDT", "1m")])  # refused unless it runs
        ws = await transport.next_connection(1)
        await ws.push(kline_frame("BTCUSDT", "1m", 60_000))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [c.open_time for c in sink.candles] == [60_000]


class BuggySink(MemorySink):
    def append(self, candles: Sequence[Candle]) -> None:
        raise ZeroDivisionError("a bug in the sink")


async def record_one_candle(sink: MemorySink) -> None:
    transport = FakeTransport()
    async with Recorder(config("spot:1m:BTCUSDT"), sink=sink, transport=transport, run_sink=call_inline):
        ws = await transport.next_connection(1)
        await ws.push(kline_frame("BTCUSDT", "1m", 60_000))
        await trio.sleep(5)


async def test_a_bug_in_a_task_comes_out_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(ZeroDivisionError, match="a bug in the sink"):  # not an ExceptionGroup, three deep
        await record_one_candle(BuggySink())


async def test_a_bug_in_a_task_ends_run_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    rec = Recorder(config("spot:1m:BTCUSDT"), sink=BuggySink(), transport=transport, run_sink=call_inline)
    with pytest.RaisesGroup(ZeroDivisionError):  # the test's own nursery groups it once; the recorder did not
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            ws = await transport.next_connection(1)
            await ws.push(kline_frame("BTCUSDT", "1m", 60_000))


async def test_misuse_is_reported() -> None:
    rec = Recorder(config("spot:1m:BTCUSDT"), sink=MemorySink(), transport=FakeTransport())
    with pytest.raises(RuntimeError, match="not running"):
        await rec.add_streams([Series("spot", "ETHUSDT", "1m")])


def test_config_validation_says_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="no streams"):
        RecorderConfig.build(streams=[])
    with pytest.raises(ConfigError, match="MARKET:INTERVAL:SYMBOL"):
        RecorderConfig.build(streams=["spot:BTCUSDT"])
    with pytest.raises(ConfigError, match="invalid interval '1s' for usdt_futures"):
        RecorderConfig.build(streams=["usdt_futures:1s:BTCUSDT"])
    with pytest.raises(ConfigError, match="flush_seconds"):
        RecorderConfig.build(streams=["spot:1m:BTCUSDT"], flush_seconds=-1)
    with pytest.raises(ConfigError, match="unknown setting"):
        RecorderConfig.build(streams=["spot:1m:BTCUSDT"], flush_secs=1)
    with pytest.raises(ConfigError, match="transport"):
        RecorderConfig.build(streams=["spot:1m:BTCUSDT"], transport="carrier-pigeon")
    cfg = RecorderConfig.build(streams=["spot:1m:btcusdt,ethusdt", "spot:1m:BTCUSDT"])
    assert cfg.streams == (Series("spot", "BTCUSDT", "1m"), Series("spot", "ETHUSDT", "1m"))


async def test_a_gap_is_backfilled_over_rest(autojump_clock: trio.testing.MockClock) -> None:
    now = 10 * 60_000 + 5_000
    fake = FakeBinance("spot", now)
    transport, sink = FakeTransport(), MemorySink()
    cfg = config("spot:1m:BTCUSDT", backfill=True, endpoints={"spot": {"rest": "http://exchange.test"}})
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    async with Recorder(cfg, sink=sink, transport=transport, run_sink=call_inline, http=http) as rec:
        ws = await transport.next_connection(1)
        await ws.push(kline_frame("BTCUSDT", "1m", 2 * 60_000))
        await ws.push(kline_frame("BTCUSDT", "1m", 7 * 60_000))  # 3, 4, 5, 6 missing
        await trio.sleep(1)
        assert rec.backfiller is not None
        await rec.backfiller.wait_idle()
        await trio.sleep(1)
    assert sorted(c.open_time // 60_000 for c in sink.candles) == [2, 3, 4, 5, 6, 7]
    assert rec.stats().gaps == 1


async def test_start_up_catches_up_from_since(autojump_clock: trio.testing.MockClock) -> None:
    now = 10 * 60_000 + 5_000
    fake = FakeBinance("usdt_futures", now)
    sink = MemorySink()
    cfg = config("usdt_futures:1m:BTCUSDT", backfill=True, since=4 * 60_000,
                 endpoints={"usdt_futures": {"rest": "http://exchange.test"}})  # fmt: skip
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    async with Recorder(cfg, sink=sink, transport=FakeTransport(), run_sink=call_inline, http=http) as rec:
        assert rec.backfiller is not None
        await rec.backfiller.wait_idle()
        await trio.sleep(1)
    assert [c.open_time // 60_000 for c in sink.candles] == [4, 5, 6, 7, 8, 9]


async def test_since_is_honoured_again_when_the_stored_record_starts_after_it(tmp_path: object) -> None:
    # A first run killed before its --since backfill landed left only live candles (7, 8): the next
    # start must still fill 4, 5, 6, not only what follows the last stored candle.
    from trio_klines.core.parse import parse_rest_klines
    from trio_klines.store.dataset import Store, load

    data = Path(str(tmp_path)) / "data"
    now = 10 * 60_000 + 5_000
    fake = FakeBinance("usdt_futures", now)
    rows = fake(httpx.Request("GET", "http://exchange.test/fapi/v1/klines?symbol=BTCUSDT&interval=1m"
                              "&startTime=420000&endTime=539999&limit=2")).content  # fmt: skip
    with Store(data) as store:
        store.append(parse_rest_klines(rows, "usdt_futures", "BTCUSDT", "1m"))
    cfg = config("usdt_futures:1m:BTCUSDT", backfill=True, since=4 * 60_000, data_dir=data,
                 endpoints={"usdt_futures": {"rest": "http://exchange.test"}})  # fmt: skip
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    with trio.fail_after(8):
        async with Recorder(cfg, transport=FakeTransport(), http=http) as rec:
            assert rec.backfiller is not None
            await rec.backfiller.wait_idle()
    opens = [int(t.value // 10**6) // 60_000 for t in load(data, "usdt_futures", "BTCUSDT", "1m")["candle_begin_time"]]
    assert opens == [4, 5, 6, 7, 8, 9]


async def test_stop_fills_the_holes_in_what_was_received_before_it(autojump_clock: trio.testing.MockClock) -> None:
    # The writer is busy (its sink is slow) when the stop comes, and the candle that reveals a hole is
    # still in the channel: the stop lets the writer take it and the backfill fill the hole.
    fake = FakeBinance("spot", 10 * 60_000 + 5_000)
    transport, sink, release = FakeTransport(), MemorySink(), trio.Event()

    async def slow_sink(fn: object, batch: list[Candle]) -> object:
        await release.wait()
        return fn(batch)  # type: ignore[operator]

    async def release_later() -> None:
        await trio.sleep(1)
        release.set()

    cfg = config("spot:1m:BTCUSDT", backfill=True, flush_size=1, endpoints={"spot": {"rest": "http://exchange.test"}})
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    async with (
        trio.open_nursery() as nursery,
        Recorder(cfg, sink=sink, transport=transport, run_sink=slow_sink, http=http) as rec,
    ):
        ws = await transport.next_connection(1)
        for minute in (2, 3, 7):  # 2 stuck in the sink, 3 waiting for it, 7 left in the channel
            await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000))
            await trio.sleep(0.5)
        assert rec.stats().gaps == 0  # not seen yet
        nursery.start_soon(release_later)
    assert sorted(c.open_time // 60_000 for c in sink.candles) == [2, 3, 4, 5, 6, 7]


# --- add_streams / remove_streams against a model ------------------------------------------------

POOL = [Series(m, sym, i) for m, sym in (("spot", "BTCUSDT"), ("usdt_futures", "BTCUSDT"), ("spot", "ETHUSDT"),
                                         ("coin_futures", "BTCUSD_PERP")) for i in ("1m", "1h")]  # fmt: skip


async def churn(operations: list[tuple[bool, list[int]]]) -> None:
    """Apply the operations to a recorder and to a model (a set), checking after each that every live
    connection subscribes exactly the model's streams, and that ended connections are not kept."""
    transport = ScriptedTransport()
    rec = Recorder(config("spot:1m:BTCUSDT"), sink=MemorySink(), transport=transport, run_sink=call_inline)
    model = {Series("spot", "BTCUSDT", "1m")}
    async with rec:
        for add, picks in operations:
            chosen = [POOL[i] for i in picks]
            if add:
                await rec.add_streams(chosen)
                model |= set(chosen)
            else:
                await rec.remove_streams(chosen)
                model -= set(chosen)
            await trio.sleep(1)  # cancelled connections end, new ones connect
            subscribed = [(c.market.name, s) for c, _ in rec._connections.values() for s in c.streams]
            assert sorted(subscribed) == sorted({(s.market, stream_name(s.symbol, s.interval)) for s in model})
            assert set(rec.series) == model
            assert not hasattr(rec, "_retired")
            # Each market's streams fit on one connection here: never more than one live connection each.
            assert len(rec._connections) == len({s.market for s in model})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, len(POOL) - 1), max_size=4)), max_size=12))
def test_add_and_remove_do_exactly_what_they_say(operations: list[tuple[bool, list[int]]]) -> None:
    trio.run(churn, operations, clock=trio.testing.MockClock(autojump_threshold=0))


def test_remove_everything_then_add_one_back_records_it() -> None:
    trio.run(churn, [(False, [0]), (True, [1])], clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_same_stream_on_two_markets_is_removed_on_both() -> None:
    trio.run(churn, [(True, [1]), (False, [0, 1])], clock=trio.testing.MockClock(autojump_threshold=0))


def test_churn_keeps_no_ended_connection() -> None:
    async def main() -> None:
        rec = Recorder(config("spot:1m:BTCUSDT"), sink=MemorySink(), transport=ScriptedTransport(),
                       run_sink=call_inline)  # fmt: skip
        eth = Series("coin_futures", "BTCUSD_PERP", "1m")
        async with rec:
            for _ in range(50):
                await rec.add_streams([eth])
                await trio.sleep(0.5)
                await rec.remove_streams([eth])
                await trio.sleep(0.5)
            assert len(rec._connections) == 1
            assert gc.collect() >= 0 and sum(isinstance(o, StreamConnection) for o in gc.get_objects()) <= 2

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def never_returns(fn: object, batch: list[Candle]) -> object:
    await trio.sleep_forever()  # a disk that never answers


async def test_a_stop_cut_short_counts_every_received_candle_not_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    cfg = config("spot:1m:BTCUSDT", flush_size=1, max_pending=1, channel_size=2)
    rec = Recorder(cfg, sink=MemorySink(), transport=transport, run_sink=never_returns)
    with trio.CancelScope() as outside:
        async with rec:
            ws = await transport.next_connection(1)
            for minute in range(1, 5):  # one in the sink's hands, one pending, two left in the channel
                await ws.push(kline_frame("BTCUSDT", "1m", minute * 60_000))
                await trio.sleep(0.1)
            outside.cancel()
    assert rec.stats().pending == 4


async def test_a_stored_row_from_the_future_is_not_where_the_series_stands(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    from trio_klines.store.dataset import Store

    year_3000 = 32_503_680_000_000
    with Store(tmp_path) as store:  # an older version let a candle from the future in
        store.append([WireKline("BTCUSDT", "1m", t).candle("spot") for t in (60_000, 120_000, year_3000)])
    transport = FakeTransport()
    rec = Recorder(config("spot:1m:BTCUSDT", data_dir=tmp_path), transport=transport, run_sink=call_inline)
    async with rec:
        ws = await transport.next_connection(1)
        await ws.push(kline_frame("BTCUSDT", "1m", 180_000))
        await trio.sleep(1)
    assert rec._writer_stats.late == 0 and rec.stats().written == 1
    assert "hold rows beyond the clock" in caplog.text


async def test_a_restart_logs_its_catch_up_not_a_gap(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    # The hole between the last stored candle and the first live one is what the start-up catch-up fills:
    # logged as the catch-up, with its size and end, never as a warning about a gap.
    import logging

    from trio_klines.core.parse import parse_rest_klines
    from trio_klines.store.dataset import Store, load

    caplog.set_level(logging.INFO, logger="trio_klines")
    data = Path(str(tmp_path)) / "data"
    fake = FakeBinance("spot", 10 * 60_000 + 5_000)
    rows = fake(httpx.Request("GET", "http://exchange.test/api/v3/klines?symbol=BTCUSDT&interval=1m"
                              "&startTime=120000&endTime=179999&limit=1")).content  # fmt: skip
    with Store(data) as store:
        store.append(parse_rest_klines(rows, "spot", "BTCUSDT", "1m"))
    cfg = config("spot:1m:BTCUSDT", backfill=True, data_dir=data, endpoints={"spot": {"rest": "http://exchange.test"}})
    transport = FakeTransport()
    klines = trio.Event()  # REST klines answer once the live candle is written: the order a real restart sees

    async def exchange(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/klines"):
            await klines.wait()
        return fake(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(exchange))
    with trio.fail_after(20):
        async with Recorder(cfg, transport=transport, http=http) as rec:
            durable = rec.candles()
            ws = await transport.next_connection(1)
            await ws.push(kline_frame("BTCUSDT", "1m", 9 * 60_000))  # 3 … 8 missing since the last run
            assert [c.open_time for c in await durable.receive()] == [9 * 60_000]
            durable.close()
            klines.set()
            assert rec.backfiller is not None
            await rec.backfiller.wait_idle()
    opens = [int(t.value // 10**6) // 60_000 for t in load(data, "spot", "BTCUSDT", "1m")["candle_begin_time"]]
    assert opens == list(range(2, 10))
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(m.startswith("catch-up: ") and "candles of 1 series to fetch from 1970-01-01T00:03:00Z on" in m
               for _, m in messages)  # fmt: skip
    assert (logging.INFO, "live again: spot BTCUSDT-1m: 6 candle(s) missing from 1970-01-01T00:03:00Z to "
            "1970-01-01T00:09:00Z, which the catch-up fills") in messages  # fmt: skip
    assert not [m for level, m in messages if level >= logging.WARNING and "gap" in m]
