"""The fake exchange's universe over time: listings, delistings and halts on exchangeInfo, WS, REST and History."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from trio_klines.cli import main
from trio_klines.core.markets import MARKETS
from trio_klines.core.parse import Candle, parse_frame, parse_rest_klines
from trio_klines.errors import ConfigError
from trio_klines.testing import ExchangeConfig, FakeExchange, History, Universe, ground_truth, open_exchange
from trio_klines.testing.feed import Feed, FeedEvent
from trio_klines.testing.schedule import parse_event_flag, parse_moment
from trio_klines.testing.wire import exchange_info

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
S, M = 1_000, 60_000
# Listed at +2m30s (mid-candle), delisted at +5m30s (mid-candle), halted +1m20s..+3m40s.
SCHEDULE: dict[str, Any] = {
    "listings": {"usdt_futures:SYM0003USDT": "+2m30s", "spot:SYM0003USDT": "+2m30s",
                 "coin_futures:SYM0003USD_PERP": "+2m30s"},
    "delistings": {"usdt_futures:SYM0002USDT": "+5m30s", "spot:SYM0002USDT": "+5m30s",
                   "coin_futures:SYM0002USD_PERP": "+5m30s"},
    "halts": {"spot:SYM0001USDT": "+1m20s..+3m40s", "usdt_futures:SYM0001USDT": [("+1m20s", "+3m40s")]},
}  # fmt: skip
STATUS_KEY = {"spot": "status", "usdt_futures": "status", "coin_futures": "contractStatus"}


def universe(start: int = T0, **kwargs: Any) -> Universe:
    return Universe(3, start=start, **{**SCHEDULE, **kwargs})


def listed_status(u: Universe, market: str, symbol: str, now: int) -> str | None:
    """The symbol's status in the exchangeInfo body at ``now``, by the market's own field name."""
    body = json.loads(exchange_info(market, u.listed(market, now).values(), now))
    entry = next((s for s in body["symbols"] if s["symbol"] == symbol), None)
    if entry is None:
        return None
    other = {"status", "contractStatus"} - {STATUS_KEY[market]}
    assert not other & set(entry), entry  # COIN-M says contractStatus, the others status
    return entry[STATUS_KEY[market]]


# --- exchangeInfo over time --------------------------------------------------------------------------


@pytest.mark.parametrize("market", ["spot", "usdt_futures", "coin_futures"])
def test_a_listing_is_absent_then_pending_on_futures_then_trading(market: str) -> None:
    u = universe()
    symbol = "SYM0003USD_PERP" if market == "coin_futures" else "SYM0003USDT"
    listing = T0 + 150 * S
    assert u.symbols(market)[symbol].listed_at == listing
    pending = None if market == "spot" else "PENDING_TRADING"
    assert listed_status(u, market, symbol, listing - 3_600_001) is None  # before the lead: absent everywhere
    assert listed_status(u, market, symbol, listing - 3_600_000) == pending
    assert listed_status(u, market, symbol, listing - 1) == pending
    assert listed_status(u, market, symbol, listing) == "TRADING"
    if market != "spot":
        entry = json.loads(exchange_info(market, u.listed(market, T0).values(), T0))["symbols"]
        assert next(s for s in entry if s["symbol"] == symbol)["onboardDate"] == listing


@pytest.mark.parametrize(
    ("market", "delisted"), [("spot", "BREAK"), ("usdt_futures", "SETTLING"), ("coin_futures", "DELIVERED")]
)
def test_a_delisted_symbol_stays_listed_with_a_closed_status(market: str, delisted: str) -> None:
    u = universe()
    symbol = "SYM0002USD_PERP" if market == "coin_futures" else "SYM0002USDT"
    delisting = T0 + 330 * S
    assert listed_status(u, market, symbol, delisting - 1) == "TRADING"
    assert listed_status(u, market, symbol, delisting) == delisted
    assert listed_status(u, market, symbol, delisting + 365 * 86_400_000) == delisted
    if market != "spot":  # the settlement moment of a perpetual being delisted
        entry = json.loads(exchange_info(market, u.listed(market, T0).values(), T0))["symbols"]
        assert next(s for s in entry if s["symbol"] == symbol)["deliveryDate"] == delisting


@pytest.mark.parametrize(("market", "halted"), [("spot", "HALT"), ("usdt_futures", "PENDING_TRADING")])
def test_a_halted_symbol_is_listed_as_not_trading_and_resumes(market: str, halted: str) -> None:
    u = universe()
    a, b = T0 + 80 * S, T0 + 220 * S
    assert [listed_status(u, market, "SYM0001USDT", t) for t in (a - 1, a, b - 1, b)] == [
        "TRADING",
        halted,
        halted,
        "TRADING",
    ]
    assert u.status_at(market, "SYM0001USDT", a) == halted and u.status_at(market, "NOPEUSDT", a) is None


def test_symbols_without_a_schedule_and_fixed_statuses_do_not_change() -> None:
    u = Universe(3, statuses={"spot:ETHBTC": "BREAK"}, **SCHEDULE, start=T0)
    for now in (T0 - 86_400_000, T0, T0 + 86_400_000):
        assert u.status_at("spot", "BTCUSDT", now) == "TRADING" and u.status_at("spot", "ETHBTC", now) == "BREAK"
    assert len(u.listed("spot", T0 + 86_400_000)) == len(u.symbols("spot"))
    assert [f"{s.market}:{s.symbol}" for s in u.scheduled][:2] == ["usdt_futures:SYM0003USDT", "spot:SYM0003USDT"]
    assert "usdt_futures:SYM0002USDT listed 2021-01-01T00:00:00Z, delisted 2024-01-01T00:05:30Z" in (
        u.describe_schedule()
    )


# --- candles: History ---------------------------------------------------------------------------------


def test_history_has_candles_only_while_a_symbol_trades() -> None:
    h = History(5, universe=universe())
    listed = h.candles("usdt_futures", "SYM0003USDT", "1m", T0 - 10 * M, T0 + 10 * M)
    assert listed[0].open_time == T0 + 2 * M  # the candle in which it is listed exists
    delisted = h.candles("usdt_futures", "SYM0002USDT", "1m", T0, T0 + 10 * M)
    assert [c.open_time for c in delisted] == [T0 + i * M for i in range(6)]  # the last one closes early
    halted = h.candles("spot", "SYM0001USDT", "1m", T0, T0 + 6 * M)
    # Halted from 1:20 to 3:40: the 1:00 candle closes early, 2:00 is missing, 3:00 resumes at 3:40.
    assert [c.open_time for c in halted] == [T0, T0 + M, T0 + 3 * M, T0 + 4 * M, T0 + 5 * M]
    # A candle that spans the whole halt exists; a day candle exists whatever happens in it.
    assert [c.open_time for c in h.candles("spot", "SYM0001USDT", "5m", T0, T0 + 10 * M)] == [T0, T0 + 5 * M]
    assert len(h.candles("usdt_futures", "SYM0002USDT", "1d", T0 - 86_400_000, T0 + 5 * 86_400_000)) == 2


def test_early_closes_keep_values_of_the_candle_as_it_stood() -> None:
    h = History(5, universe=universe())
    spec = h.spec("usdt_futures", "SYM0002USDT")
    last = T0 + 5 * M
    assert h.close_at(spec, "1m", last) == T0 + 330 * S
    early = h.kline(spec, "1m", last)
    assert early.close_time == T0 + 330 * S - 1
    assert early == h.partial(spec, "1m", last, T0 + 330 * S)
    assert early.volume <= h.partial(spec, "1m", last, T0 + 10 * M).volume
    halted = h.spec("spot", "SYM0001USDT")
    assert h.close_at(halted, "1m", T0 + M) == T0 + 80 * S  # closes early at the halt
    assert h.close_at(halted, "1m", T0 + 3 * M) == T0 + 4 * M  # resumes inside: a full candle
    assert h.close_at(halted, "5m", T0) == T0 + 5 * M  # the halt ends inside it


@pytest.mark.parametrize("interval", ["1m", "3m", "1h"])
def test_newest_first_paging_agrees_with_oldest_first_across_events(interval: str) -> None:
    h = History(2, universe=universe())
    for market, symbol in [("spot", "SYM0001USDT"), ("usdt_futures", "SYM0002USDT"), ("spot", "SYM0003USDT")]:
        spec = h.spec(market, symbol)
        forward = h.open_times(spec, interval, T0 - 10 * M, T0 + 60 * M)
        assert forward == [t for t in forward if h.exists(spec, interval, t)]
        assert h.open_times_before(spec, interval, forward[-1], len(forward), floor=T0 - 10 * M) == forward
        assert h.open_times_before(spec, interval, T0 + 60 * M - 1, 1000, floor=T0 - 10 * M) == forward


def test_ground_truth_takes_the_schedule() -> None:
    got = ground_truth("spot", "SYM0001USDT", "1m", T0, T0 + 6 * M, seed=5, symbols=3, exchange_start=T0, **SCHEDULE)
    assert got == History(5, universe=universe()).candles("spot", "SYM0001USDT", "1m", T0, T0 + 6 * M)
    absolute = {"halts": {"spot:SYM0001USDT": (T0 + 80 * S, T0 + 220 * S)}}
    assert ground_truth("spot", "SYM0001USDT", "1m", T0, T0 + 6 * M, seed=5, symbols=3, **absolute) == got
    with pytest.raises(ConfigError, match="needs that start"):
        ground_truth("spot", "SYM0001USDT", "1m", T0, T0 + M, symbols=3, halts={"spot:SYM0001USDT": "+1s..+2s"})


# --- candles: the WebSocket feed, on exchange time --------------------------------------------------------


def feed_events(h: History, market: str, stream: str, symbol: str, start: int, end: int) -> list[FeedEvent]:
    """Every event of one series, stepping the exchange time by 100 ms (a sender that keeps up)."""
    feed = Feed(h, MARKETS[market], speed=1.0, min_update_gap_s=0)
    feed.subscribe(stream, h.universe.symbols(market)[symbol], "1m", start)
    events: list[FeedEvent] = []
    for now in range(start, end, 100):
        events += feed.due(now)
    return events


@pytest.mark.parametrize("market", ["spot", "usdt_futures"])
def test_the_feed_sends_only_while_a_symbol_trades(market: str) -> None:
    h = History(5, universe=universe())
    for symbol in ("SYM0001USDT", "SYM0002USDT", "SYM0003USDT"):
        spec = h.universe.symbols(market)[symbol]
        events = feed_events(h, market, f"{symbol.lower()}@kline_1m", symbol, T0, T0 + 8 * M)
        assert events, symbol
        assert all(spec.trading_at(e.time) for e in events if not e.closed)
        closed = [e for e in events if e.closed]
        assert [h.candle(spec, "1m", e.kline) for e in closed] == h.candles(market, symbol, "1m", T0, T0 + 7 * M)
        for e in closed:  # E is the close: the candle's end, or the stop when it closes early
            assert e.time == e.kline.close_time + 1 == h.close_at(spec, "1m", e.kline.open_time)
    listed = feed_events(h, market, "sym0003usdt@kline_1m", "SYM0003USDT", T0, T0 + 8 * M)
    assert listed[0].time == T0 + 150 * S and not listed[0].closed  # nothing before the listing
    delisted = feed_events(h, market, "sym0002usdt@kline_1m", "SYM0002USDT", T0, T0 + 8 * M)
    assert delisted[-1].closed and delisted[-1].time == T0 + 330 * S  # the last frame closes early at it
    halted = feed_events(h, market, "sym0001usdt@kline_1m", "SYM0001USDT", T0, T0 + 8 * M)
    assert not [e for e in halted if T0 + 80 * S < e.time < T0 + 220 * S]
    assert [e.time for e in halted if e.closed][:3] == [T0 + M, T0 + 80 * S, T0 + 4 * M]


def test_a_feed_subscribed_after_the_delisting_is_silent_for_good() -> None:
    h = History(5, universe=universe())
    feed = Feed(h, MARKETS["spot"], speed=1.0)
    feed.subscribe("sym0002usdt@kline_1m", h.universe.symbols("spot")["SYM0002USDT"], "1m", T0 + 6 * M)
    assert feed.next_time() is None and feed.due(T0 + 86_400_000) == [] and len(feed) == 1


# --- the running exchange: exchangeInfo, REST, WebSocket ------------------------------------------------------


async def exchange_info_statuses(ex: FakeExchange, client: httpx.AsyncClient, market: str) -> dict[str, str]:
    m = ex.markets[market]
    body = (await client.get(m.rest_url + m.exchange_info_path)).json()
    return {s["symbol"]: s[STATUS_KEY[market]] for s in body["symbols"]}


async def test_exchange_info_at_the_exchanges_time() -> None:
    schedule = {
        "listings": {"spot:SYM0001USDT": "+1h", "usdt_futures:SYM0001USDT": "+30m",
                     "coin_futures:SYM0001USD_PERP": "+2h"},
        "delistings": {"spot:SYM0002USDT": "-1s", "usdt_futures:SYM0002USDT": "-1m",
                       "coin_futures:SYM0002USD_PERP": "-1d"},
        "halts": {"spot:SYM0003USDT": "-1m..+1h", "usdt_futures:SYM0003USDT": ("-1m", "+1h")},
    }  # fmt: skip
    async with open_exchange(seed=1, start=T0, symbols=3, **schedule) as ex, httpx.AsyncClient() as client:
        spot = await exchange_info_statuses(ex, client, "spot")
        assert "SYM0001USDT" not in spot and spot["SYM0002USDT"] == "BREAK" and spot["SYM0003USDT"] == "HALT"
        um = await exchange_info_statuses(ex, client, "usdt_futures")
        assert um["SYM0001USDT"] == "PENDING_TRADING" and um["SYM0002USDT"] == "SETTLING"
        assert um["SYM0003USDT"] == "PENDING_TRADING" and um["BTCUSDT"] == "TRADING"
        cm = await exchange_info_statuses(ex, client, "coin_futures")
        assert "SYM0001USD_PERP" not in cm and cm["SYM0002USD_PERP"] == "DELIVERED"
        assert ex.status("coin_futures", "SYM0002USD_PERP") == "DELIVERED" and ex.start == T0
        m = ex.markets["spot"]
        url = m.rest_url + m.exchange_info_path
        only = (await client.get(url, params={"symbolStatus": "BREAK"})).json()["symbols"]
        assert [s["symbol"] for s in only] == ["SYM0002USDT"]
        assert (await client.get(url, params={"symbol": "SYM0001USDT"})).json()["code"] == -1121
        assert (await client.get(url, params={"symbolStatus": "NOPE"})).json()["code"] == -1100


async def test_rest_klines_follow_the_schedule_and_agree_with_history() -> None:
    # The exchange starts 10 minutes after T0: every event is in its past.
    absolute = {
        "listings": {"usdt_futures:SYM0003USDT": T0 + 150 * S, "spot:SYM0003USDT": "2024-01-01T00:02:30Z"},
        "delistings": {"usdt_futures:SYM0002USDT": T0 + 330 * S, "coin_futures:SYM0002USD_PERP": T0 + 330 * S},
        "halts": {"spot:SYM0001USDT": [(T0 + 80 * S, T0 + 220 * S)]},
        "symbols": 3,
    }
    async with open_exchange(seed=5, start=T0 + 10 * M, **absolute) as ex, httpx.AsyncClient() as client:
        for market, symbol in [("usdt_futures", "SYM0003USDT"), ("spot", "SYM0003USDT"), ("spot", "SYM0001USDT"),
                               ("usdt_futures", "SYM0002USDT"), ("coin_futures", "SYM0002USD_PERP")]:  # fmt: skip
            m = ex.markets[market]
            params = {"symbol": symbol, "interval": "1m", "startTime": T0 - 5 * M, "endTime": T0 + 10 * M - 1}
            response = await client.get(m.rest_url + m.klines_path, params=params)
            assert response.status_code == 200, response.text
            rows = response.json()
            got = parse_rest_klines(response.content, market, symbol, "1m")
            truth = ex.ground_truth(market, symbol, "1m", T0 - 5 * M, T0 + 10 * M)
            assert got == truth and truth == ex.ground_truth(market, symbol, "1m", T0 - 5 * M), symbol
            spec = ex.history.spec(market, symbol)
            assert [r[6] for r in rows] == [ex.history.close_at(spec, "1m", r[0]) - 1 for r in rows]
        um = ex.markets["usdt_futures"]
        params = {"symbol": "SYM0002USDT", "interval": "1m", "limit": 3}
        delisted = (await client.get(um.rest_url + um.klines_path, params=params)).json()
        assert [r[0] for r in delisted] == [T0 + 3 * M, T0 + 4 * M, T0 + 5 * M]
        assert delisted[-1][6] == T0 + 330 * S - 1  # closed early at the delisting


async def test_rest_klines_before_a_listing() -> None:
    schedule = {"listings": {"spot:SYM0001USDT": "+1m", "usdt_futures:SYM0001USDT": "+1m"}, "symbols": 1}
    async with open_exchange(seed=5, start=T0 + 30 * S, **schedule) as ex, httpx.AsyncClient() as client:
        spot, um = ex.markets["spot"], ex.markets["usdt_futures"]
        params = {"symbol": "SYM0001USDT", "interval": "1m"}
        absent = await client.get(spot.rest_url + spot.klines_path, params=params)
        assert absent.status_code == 400 and absent.json() == {"code": -1121, "msg": "Invalid symbol."}
        pending = await client.get(um.rest_url + um.klines_path, params=params)
        # Listed at 00:01:30, inside the 00:01 candle: which has not started yet.
        assert pending.status_code == 200 and pending.json() == []


async def test_websocket_frames_start_at_the_listing_and_stop_at_the_delisting() -> None:
    # A 1m candle every 200 ms of wall time: SYM0003 listed at +4m30s, SYM0002 delisted at +6m30s,
    # SYM0001 halted from +1m20s to +3m40s (late enough for a loaded machine to connect before).
    schedule = {"listings": {"usdt_futures:SYM0003USDT": "+4m30s"},
                "delistings": {"usdt_futures:SYM0002USDT": "+6m30s"},
                "halts": {"usdt_futures:SYM0001USDT": "+1m20s..+3m40s"}}  # fmt: skip
    listing, delisting, halt = T0 + 270 * S, T0 + 390 * S, (T0 + 80 * S, T0 + 220 * S)
    async with open_exchange(seed=5, speed=300, start=T0, symbols=3, **schedule) as ex:
        path = "/stream?streams=" + "/".join(f"sym000{i}usdt@kline_1m" for i in (1, 2, 3))
        frames: list[dict[str, Any]] = []
        async with open_websocket_url(ex.endpoints["usdt_futures"]["ws"] + path, disconnect_timeout=2) as ws:
            with trio.fail_after(20):
                # Subscribing to a symbol listed later is accepted, as on Binance.
                await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": ["sym0003usdt@kline_3m"], "id": 1}))
                while not frames or frames[-1].get("data", {}).get("E", 0) < T0 + 9 * M:
                    frames.append(json.loads(await ws.get_message()))
    assert {"result": None, "id": 1} in frames
    data = {f"SYM000{i}USDT": [f["data"] for f in frames if f.get("stream") == f"sym000{i}usdt@kline_1m"]
            for i in (1, 2, 3)}  # fmt: skip
    listed, delisted, halted = data["SYM0003USDT"], data["SYM0002USDT"], data["SYM0001USDT"]
    assert listed and min(d["E"] for d in listed) >= listing
    assert delisted and max(d["E"] for d in delisted) <= delisting
    assert delisted[-1]["k"]["x"] and delisted[-1]["k"]["T"] == delisting - 1  # closed early, then silence
    assert halted and not [d for d in halted if halt[0] < d["E"] < halt[1]]
    for symbol, mine in data.items():
        closed: list[Candle] = []
        for d in mine:
            if d["k"]["x"] and d["k"]["t"] < T0 + 8 * M:
                candle = parse_frame(json.dumps({"stream": f"{symbol.lower()}@kline_1m", "data": d}), "usdt_futures")
                assert candle is not None
                closed.append(candle)
        assert closed == ex.ground_truth("usdt_futures", symbol, "1m", closed[0].open_time, T0 + 8 * M), symbol
    assert listed[0]["k"]["t"] == T0 + 4 * M  # the candle in which it is listed, from the listing on
    assert [d["k"]["T"] + 1 for d in halted if d["k"]["x"] and d["k"]["t"] == T0 + M] == [halt[0]]
    three = [f["data"] for f in frames if f.get("stream") == "sym0003usdt@kline_3m"]
    assert three and min(d["E"] for d in three) >= listing


# --- configuration and the command line ----------------------------------------------------------------


def test_moments_relative_and_absolute() -> None:
    assert parse_moment("+20s") == timedelta(seconds=20)
    assert parse_moment("-1h") == timedelta(hours=-1)
    assert parse_moment("+1m30s") == timedelta(seconds=90)
    assert parse_moment("+1.5s") == timedelta(milliseconds=1500)
    assert parse_moment("+250ms") == timedelta(milliseconds=250)
    assert parse_moment(timedelta(seconds=3)) == timedelta(seconds=3)
    assert parse_moment("2024-01-01T00:00:20Z") == T0 + 20 * S
    assert parse_moment(str(T0)) == T0 == parse_moment(T0)
    assert parse_event_flag("usdt_futures:sym0003usdt@+20s", "listing") == (
        "usdt_futures:SYM0003USDT",
        timedelta(seconds=20),
    )
    assert parse_event_flag("spot:SYM0001USDT@2024-01-01T00:00:10..+30s", "halt") == (
        "spot:SYM0001USDT",
        (T0 + 10 * S, timedelta(seconds=30)),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("+20x", r"invalid time '\+20x'"),
        ("soon", "invalid time 'soon'"),
        ("+", r"invalid time '\+'"),
        (20_000, "epoch ms in 1970; for a time after the exchange's start write \\+20s"),
        (True, "invalid time True"),
        ("+0.5ms", "not a whole number of milliseconds"),
    ],
)
def test_bad_moments_are_one_line_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_moment(value, "listing of spot:BTCUSDT")


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"listings": {"moon:SYM0001USDT": "+1s"}}, "listing: unknown market 'moon'"),
        ({"listings": {"SYM0001USDT": "+1s"}}, "name the symbol as MARKET:SYMBOL"),
        ({"listings": {"spot:SYM0009USDT": "+1s"}}, "lists no spot symbol 'SYM0009USDT'"),
        ({"listings": {"spot:SYM0001USDT": "+1x"}}, "invalid time"),
        ({"delistings": {"spot:SYM0001USDT": "-1s"}, "listings": {"spot:SYM0001USDT": "+1s"}},
         r"its delisting at -1s \(2024-01-01T00:00:59Z\) is not after its listing at \+1s"),
        ({"halts": {"spot:SYM0001USDT": "+2s..+1s"}}, "does not end after it starts"),
        ({"halts": {"spot:SYM0001USDT": "+2s"}}, "write FROM..TO"),
        ({"halts": {"spot:SYM0001USDT": ["+1s..+3s", "+2s..+4s"]}}, "overlap"),
        ({"halts": {"spot:SYM0001USDT": "+1s..+3s"}, "listings": {"spot:SYM0001USDT": "+2s"}},
         "starts before its listing"),
        ({"halts": {"spot:SYM0001USDT": "+5s..+9s"}, "delistings": {"spot:SYM0001USDT": "+5s"}},
         "starts at or after its delisting"),
        ({"halts": {"spot:ETHBTC": "+5s..+9s"}, "statuses": {"spot:ETHBTC": "BREAK"}}, "fixed status BREAK"),
        ({"pending_lead": -1}, "pending_lead must be"),
    ],
)  # fmt: skip
def test_bad_schedules_are_one_line_config_errors(schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        ExchangeConfig(start=T0 + M, symbols=1, **schedule)
    assert "\n" not in str(raised.value)


def test_the_config_keeps_the_schedule_normalised() -> None:
    config = ExchangeConfig(start=T0, symbols=3, **SCHEDULE)
    assert config.listings["spot:SYM0003USDT"] == timedelta(seconds=150)
    assert config.halts["usdt_futures:SYM0001USDT"] == ((timedelta(seconds=80), timedelta(seconds=220)),)
    assert config.universe(T0 + M).symbols("spot")["SYM0003USDT"].listed_at == T0 + M + 150 * S
    # Relative moments without a start are checked from now, and resolved when the exchange starts.
    assert ExchangeConfig(symbols=3, **SCHEDULE).start is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listing", "usdt_futures:SYM0003USDT"], "write MARKET:SYMBOL@TIME"),
        (["--listing", "usdt_futures:SYM0003USDT@+20x"], "invalid time '+20x'"),
        (["--listing", "moon:SYM0003USDT@+20s"], "unknown market 'moon'"),
        (["--halt", "spot:SYM0001USDT@+10s"], "write FROM..TO"),
        (["--listing", "spot:SYM0009USDT@+20s"], "lists no spot symbol 'SYM0009USDT'"),
        (["--listing", "spot:SYM0001USDT@+1s", "--listing", "spot:sym0001usdt@+2s"], "spot:SYM0001USDT is given twice"),
        (["--listing", "spot:SYM0001USDT@+9s", "--delisting", "spot:SYM0001USDT@+2s"], "is not after its listing"),
        (["--halt", "spot:SYM0001USDT@+1s..+3s", "--halt", "spot:SYM0001USDT@+2s..+4s"], "overlap"),
        (["--pending-lead", "-5"], "must be a number of seconds >= 0"),
    ],
)
def test_bad_schedule_flags_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["exchange", "--symbols", "3", "--port", "1", *args])
    except SystemExit as exited:  # argparse's own errors
        code = exited.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1] and "Traceback" not in err


def test_the_exchange_help_explains_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["exchange", "--help"])
    out = capsys.readouterr().out
    assert "--listing MARKET:SYMBOL@TIME" in out and "--halt MARKET:SYMBOL@FROM..TO" in out
    assert "universe schedule:" in out and "PENDING_TRADING" in out and "SETTLING" in out


def test_schedule_flags_build_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[ExchangeConfig] = []
    monkeypatch.setattr("trio.run", lambda _fn, config: built.append(config) or 15)
    code = main(["exchange", "--symbols", "3", "--start", str(T0), "--listing", "usdt_futures:SYM0003USDT@+20s",
                 "--delisting", "usdt_futures:SYM0002USDT@2024-01-01T00:00:40", "--halt", "spot:SYM0001USDT@+10s..+30s",
                 "--halt", "spot:SYM0001USDT@+1m..+2m", "--pending-lead", "60"])  # fmt: skip
    assert code == 143
    (config,) = built
    assert config.listings == {"usdt_futures:SYM0003USDT": timedelta(seconds=20)}
    assert config.delistings == {"usdt_futures:SYM0002USDT": T0 + 40 * S}
    assert config.halts == {"spot:SYM0001USDT": ((timedelta(seconds=10), timedelta(seconds=30)),
                                                 (timedelta(minutes=1), timedelta(minutes=2)))}  # fmt: skip
    assert config.pending_lead == 60
    assert config.universe(T0).status_at("usdt_futures", "SYM0003USDT", T0 + 20 * S - 60 * S) == "PENDING_TRADING"
    assert config.universe(T0).status_at("usdt_futures", "SYM0003USDT", T0 + 20 * S - 61 * S) is None


@pytest.mark.slow
async def test_the_exchange_command_serves_its_schedule() -> None:
    command = [sys.executable, "-m", "trio_klines", "exchange", "--symbols", "3", "--start", str(T0),
               "--listing", "usdt_futures:SYM0003USDT@+20s", "--delisting", "usdt_futures:SYM0002USDT@-1s",
               "--halt", "spot:SYM0001USDT@-10s..+30m"]  # fmt: skip
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(20):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the exchange ended before printing its endpoints"
                line += chunk
            endpoints = json.loads(line)
            async with httpx.AsyncClient() as client:
                um = MARKETS["usdt_futures"]
                body = (await client.get(endpoints["usdt_futures"]["rest"] + um.exchange_info_path)).json()
                statuses = {s["symbol"]: s["status"] for s in body["symbols"]}
                spot = (await client.get(endpoints["spot"]["rest"] + MARKETS["spot"].exchange_info_path)).json()
            assert statuses["SYM0003USDT"] == "PENDING_TRADING" and statuses["SYM0002USDT"] == "SETTLING"
            assert {s["symbol"]: s["status"] for s in spot["symbols"]}["SYM0001USDT"] == "HALT"
            process.terminate()
            assert await process.wait() == 143
            err = b""
            while chunk := await process.stderr.receive_some(65536):
                err += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
    assert b"scheduled: usdt_futures:SYM0003USDT listed 2024-01-01T00:00:20Z" in err
    assert b"scheduled: spot:SYM0001USDT listed 2021-01-01T00:00:00Z, halted 2023-12-31T23:59:50Z to" in err
