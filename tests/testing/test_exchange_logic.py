"""The fake exchange's pure logic: fault syntax, seeded dice, control requests, the feed schedule, routes."""

from __future__ import annotations

import json

import pytest

from trio_klines.core.markets import MARKETS
from trio_klines.errors import ConfigError
from trio_klines.testing import FAULT_KEYS, Faults, History, Outage, parse_faults
from trio_klines.testing.control import ControlState, handle_control, kline_stream
from trio_klines.testing.faults import Dice
from trio_klines.testing.feed import Feed
from trio_klines.testing.ws import resolve_ws_path

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_200_000
SPOT, UM, CM = MARKETS["spot"], MARKETS["usdt_futures"], MARKETS["coin_futures"]


# --- faults -----------------------------------------------------------------------------------


def test_parse_faults_reads_every_key() -> None:
    text = (
        "drop=0.1, close=0.2,stall=0.3,stall_s=0.5,garbage=0.4,error=0.5,dup=0.6,reorder=0.7,cutoff=86400,"
        "outage=10-20,outage=1-5,rest429=0.1,rest418=0.01,rest5xx=0.2,rest_slow=0.25,retry_after=0,"
        "rest_bad_gzip=0.05,rest_empty=0.02,rest_short=0.03,archive_bad_checksum=0.1,archive_truncated=0.2,"
        "archive_missing_days=3,archive_slow=0.5"
    )
    faults = parse_faults(text)
    assert faults == Faults(
        drop=0.1,
        close=0.2,
        stall=0.3,
        stall_s=0.5,
        garbage=0.4,
        error=0.5,
        dup=0.6,
        reorder=0.7,
        cutoff=86400,
        outages=(Outage(1, 5), Outage(10, 20)),
        rest429=0.1,
        rest418=0.01,
        rest5xx=0.2,
        rest_slow=0.25,
        retry_after=0,
        rest_bad_gzip=0.05,
        rest_empty=0.02,
        rest_short=0.03,
        archive_bad_checksum=0.1,
        archive_truncated=0.2,
        archive_missing_days=3,
        archive_slow=0.5,
    )
    assert parse_faults(str(faults)) == faults
    assert set(FAULT_KEYS) == {f for f in text.replace(" ", "").split(",") for f in [f.split("=")[0]]}
    assert parse_faults("") == parse_faults(None) == Faults()
    assert parse_faults({"drop": 0.5, "outage": [(1, 2)]}) == Faults(drop=0.5, outages=(Outage(1, 2),))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode=1", "unknown fault 'explode'; known faults: drop, close"),
        ("drop", "needs a value"),
        ("drop=2", "probability from 0 to 1"),
        ("drop=x", "needs a number"),
        ("drop=nan", "needs a number"),
        ("drop=0.1,drop=0.2", "given twice"),
        ("stall_s=-1", "seconds >= 0"),
        ("cutoff=0", "exchange seconds > 0"),
        ("outage=5", "START-END"),
        ("outage=9-3", "START < END"),
        ("retry_after=1.5", "whole number"),
    ],
)
def test_bad_faults_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_faults(text)


def test_dice_are_seeded_and_stateless() -> None:
    a, b, c = Dice(1), Dice(1), Dice(2)
    rolls = [a.roll("drop", i, 7) for i in range(1000)]
    assert rolls == [b.roll("drop", i, 7) for i in range(1000)]
    assert rolls != [c.roll("drop", i, 7) for i in range(1000)]
    assert all(0 <= r < 1 for r in rolls)
    assert 0.45 < sum(r < 0.5 for r in rolls) / 1000 < 0.55
    assert not a.hit("drop", 0.0, 1) and a.hit("drop", 1.0, 1)


# --- control requests -------------------------------------------------------------------------


def control(state: ControlState, request: object) -> dict[str, object]:
    text = request if isinstance(request, str) else json.dumps(request)
    return json.loads(handle_control(text, state).reply)


def test_subscribe_unsubscribe_list_and_properties() -> None:
    state = ControlState(SPOT, combined=True)
    streams = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
    assert control(state, {"method": "SUBSCRIBE", "params": streams, "id": 1}) == {"result": None, "id": 1}
    assert control(state, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {"result": streams, "id": 3}
    outcome = handle_control(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 312}), state)
    assert json.loads(outcome.reply) == {"result": None, "id": 312} and outcome.removed == ("btcusdt@kline_1m",)
    assert control(state, {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == {"result": True, "id": 2}
    assert control(state, {"method": "SET_PROPERTY", "params": ["combined", False], "id": 5}) == {
        "result": None,
        "id": 5,
    }
    assert state.combined is False and list(state.streams) == ["ethusdt@kline_1m"]
    # Spot accepts alphanumeric string ids and null.
    assert control(state, {"method": "LIST_SUBSCRIPTIONS", "id": "abc123"})["id"] == "abc123"


@pytest.mark.parametrize(
    ("market", "request_", "code", "msg"),
    [
        (SPOT, "{not json", 3, "Invalid JSON"),
        (SPOT, {"params": [], "id": 1}, 2, "missing field `method`"),
        (SPOT, {"method": "FLY", "id": 1}, 2, "unknown variant `FLY`"),
        (SPOT, {"method": "SUBSCRIBE", "params": ["no stream here"], "id": 1}, 2, "invalid stream"),
        (SPOT, {"method": "SUBSCRIBE", "params": "btcusdt@kline_1m", "id": 1}, 2, "invalid stream"),
        (SPOT, {"method": "SET_PROPERTY", "params": ["colour", True], "id": 1}, 0, "Unknown property"),
        (SPOT, {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1}, 1, "expected Boolean"),
        (SPOT, {"method": "SET_PROPERTY", "params": [5, True], "id": 1}, 2, "property name must be a string"),
        (UM, {"method": "LIST_SUBSCRIPTIONS", "id": "a1b2"}, 2, "request ID must be an unsigned integer"),
        (CM, {"method": "LIST_SUBSCRIPTIONS", "id": -1}, 2, "request ID must be an unsigned integer"),
    ],
)
def test_bad_control_requests_get_binance_error_replies(market: object, request_: object, code: int, msg: str) -> None:
    state = ControlState(market, combined=True)  # type: ignore[arg-type]
    reply = control(state, request_)
    assert set(reply) == {"error", "id"}
    assert reply["error"]["code"] == code and msg in reply["error"]["msg"]  # type: ignore[index]
    assert not state.streams


def test_kline_stream_names() -> None:
    assert kline_stream("btcusdt@kline_1m", SPOT) == ("BTCUSDT", "1m")
    assert kline_stream("btcusd_perp@kline_1M", CM) == ("BTCUSD_PERP", "1M")
    assert kline_stream("btcusdt@kline_1s", UM) is None  # futures have no 1s klines
    assert kline_stream("BTCUSDT@kline_1m", SPOT) is None  # stream names are lower case
    assert kline_stream("btcusdt@depth", SPOT) is None


def test_ws_routes() -> None:
    raw = resolve_ws_path(SPOT, "/ws/btcusdt@kline_1m/ethusdt@kline_1m", b"")
    assert raw is not None and not raw.combined and raw.streams == ("btcusdt@kline_1m", "ethusdt@kline_1m")
    combined = resolve_ws_path(CM, "/stream", b"streams=btcusd_perp@kline_1m/ethusd_perp@kline_1m")
    assert combined is not None and combined.combined and combined.delivers and len(combined.streams) == 2
    routed = resolve_ws_path(UM, "/market/stream", b"streams=btcusdt@kline_1m")
    assert routed is not None and routed.delivers
    for path in ("/stream", "/ws/btcusdt@kline_1m", "/public/stream"):
        unrouted = resolve_ws_path(UM, path, b"streams=btcusdt@kline_1m")
        assert unrouted is not None and not unrouted.delivers
    assert resolve_ws_path(SPOT, "/market/stream", b"") is None
    assert resolve_ws_path(SPOT, "/nowhere", b"") is None
    assert resolve_ws_path(SPOT, "/ws/<script>", b"") is None


# --- the feed schedule ------------------------------------------------------------------------


def run_feed(feed: Feed, start: int, stop: int, step: int) -> list[tuple[int, str, int, bool]]:
    events = []
    for now in range(start, stop, step):
        events += [(e.time, e.stream, e.kline.open_time, e.closed) for e in feed.due(now, limit=10_000)]
    return events


def test_feed_sends_several_growing_open_updates_before_each_close() -> None:
    history = History(0)
    spec = history.spec("usdt_futures", "BTCUSDT")
    feed = Feed(history, UM, speed=1.0)
    feed.subscribe("btcusdt@kline_1m", spec, "1m", T0 + 1)
    events = run_feed(feed, T0, T0 + 5 * 60_000 + 1, 50)
    closes = [e for e in events if e[3]]
    assert [e[2] for e in closes] == [T0 + i * 60_000 for i in range(5)]
    assert all(e[0] == e[2] + 60_000 for e in closes)  # E of the closed frame = close time + 1
    for open_time in (e[2] for e in closes):
        updates = [e for e in events if e[2] == open_time and not e[3]]
        assert len(updates) == 240  # every 250 ms, as USDⓈ-M pushes
    assert [e[0] for e in events] == sorted(e[0] for e in events)


def test_fast_exchange_thins_open_updates_but_never_closes() -> None:
    history = History(0)
    feed = Feed(history, SPOT, speed=6000.0, min_update_gap_s=0.002)
    feed.subscribe("btcusdt@kline_1m", history.spec("spot", "BTCUSDT"), "1m", T0)
    events = run_feed(feed, T0, T0 + 10 * 60_000 + 1, 1000)
    closes = [e for e in events if e[3]]
    assert len(closes) == 10
    for open_time in (e[2] for e in closes):
        assert 3 <= len([e for e in events if e[2] == open_time and not e[3]]) <= 5


def test_a_sender_that_falls_behind_gets_every_close_in_order_and_no_stale_updates() -> None:
    history = History(0, outages=[Outage(T0 + 30 * 60_000, T0 + 40 * 60_000)])
    feed = Feed(history, CM, speed=1.0)
    feed.subscribe("btcusd_perp@kline_1m", history.spec("coin_futures", "BTCUSD_PERP"), "1m", T0)
    feed.subscribe("ethusd_perp@kline_3m", history.spec("coin_futures", "ETHUSD_PERP"), "3m", T0)
    feed.subscribe("gone@kline_1m", history.spec("coin_futures", "ETHUSD_PERP"), "1m", T0)
    feed.unsubscribe("gone@kline_1m")
    now = T0 + 60 * 60_000 + 1000  # an hour late
    events = [(e.stream, e.kline.open_time, e.closed) for e in feed.due(now, limit=10_000)]
    btc = [t for s, t, closed in events if s.startswith("btc") and closed]
    assert btc == [T0 + i * 60_000 for i in range(60) if not 30 <= i < 40]  # the outage sends nothing
    assert (
        len([1 for s, _, closed in events if s.startswith("eth") and closed]) == 20 - 4
    )  # 30, 33, 36, 39 fall in the outage
    assert not any(s == "gone@kline_1m" for s, _, _ in events)
    # Only the current candles get an open update: one each, the newest.
    assert sorted((s, t) for s, t, closed in events if not closed) == [
        ("btcusd_perp@kline_1m", T0 + 60 * 60_000),
        ("ethusd_perp@kline_3m", T0 + 60 * 60_000),
    ]
    assert feed.next_time() is not None and feed.next_time() > now


# --- the public surface -----------------------------------------------------------------------


def test_public_names_are_pinned() -> None:
    import trio_klines.testing as testing

    assert sorted(testing.__all__) == sorted(
        [
            "FAULT_KEYS",
            "Close",
            "ExchangeConfig",
            "FakeExchange",
            "Faults",
            "History",
            "MemorySink",
            "Outage",
            "Pause",
            "ScriptedBatchConnection",
            "ScriptedConnection",
            "ScriptedTransport",
            "SymbolSpec",
            "Universe",
            "WireKline",
            "ground_truth",
            "open_exchange",
            "parse_faults",
        ]
    )
    for name in testing.__all__:
        assert getattr(testing, name) is not None
    with pytest.raises(AttributeError):
        _ = testing.no_such_name  # type: ignore[attr-defined]


def test_the_fault_syntax_and_history_load_without_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, trio_klines.cli, trio_klines.testing; trio_klines.cli.build_parser(); "
        "print('hypercorn' in sys.modules, 'trio_klines.testing.scripted' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False False"
