"""The start-up symbol check's pure half: reading exchangeInfo, sorting series, suggesting real names."""

from __future__ import annotations

import json
from difflib import SequenceMatcher

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trio_klines.core.markets import Series, series
from trio_klines.core.symbols import (
    CLOSEST_CUTOFF,
    SeriesCheck,
    classify_series,
    closest_symbols,
    describe_not_trading,
    describe_unknown,
    parse_symbol_statuses,
)
from trio_klines.errors import MalformedMessage
from trio_klines.testing.symbols import Universe
from trio_klines.testing.wire import exchange_info

SPOT_NAMES = list(Universe(20).symbols("spot"))
SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
STATUSES = ["TRADING", "BREAK", "HALT", "SETTLING", "PENDING_TRADING", "DELIVERED", "CLOSE"]


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def test_statuses_are_read_from_each_markets_own_field() -> None:
    universe = Universe(statuses={"spot:ETHBTC": "BREAK", "usdt_futures:XRPUSDT": "SETTLING",
                                  "coin_futures:SOLUSD_PERP": "DELIVERED"})  # fmt: skip
    for market, halted, status in [("spot", "ETHBTC", "BREAK"), ("usdt_futures", "XRPUSDT", "SETTLING"),
                                   ("coin_futures", "SOLUSD_PERP", "DELIVERED")]:  # fmt: skip
        body = exchange_info(market, universe.symbols(market).values(), 0)
        statuses = parse_symbol_statuses(market, body)
        assert list(statuses) == list(universe.symbols(market))
        assert statuses[halted] == status
        assert {s for s, v in statuses.items() if v != "TRADING"} == {halted}
    coin = json.loads(exchange_info("coin_futures", universe.symbols("coin_futures").values(), 0))
    assert "status" not in coin["symbols"][0] and coin["symbols"][0]["contractStatus"] == "TRADING"


def test_coin_m_prefers_contract_status_and_the_others_status() -> None:
    symbols = [{"symbol": "X", "status": "A", "contractStatus": "B"}, {"symbol": "Y", "status": "C"}]
    body = json.dumps({"symbols": symbols})
    assert parse_symbol_statuses("coin_futures", body) == {"X": "B", "Y": "C"}
    assert parse_symbol_statuses("spot", body) == {"X": "A", "Y": "C"}


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"symbols": 3}', b'{"symbols": [{"status": "TRADING"}]}', b'{"symbols": [{"symbol": "X"}]}',
     b'{"symbols": [{"symbol": 1, "status": "TRADING"}]}', b"<html>busy</html>"],
)  # fmt: skip
def test_a_body_that_is_not_exchange_info_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMessage, match="exchangeInfo"):
        parse_symbol_statuses("spot", body)


def test_a_misspelt_symbol_gets_the_real_names_first() -> None:
    assert closest_symbols("BTCUSTD", SPOT_NAMES)[0] == "BTCUSDT"
    assert closest_symbols("ETHUDST", SPOT_NAMES)[0] == "ETHUSDT"
    assert closest_symbols("BNBUSDT1", SPOT_NAMES)[0] == "BNBUSDT"
    assert closest_symbols("QQQQQ", SPOT_NAMES) == []


@given(
    symbol=st.text(SYMBOL_CHARS, min_size=1, max_size=12),
    listed=st.lists(st.text(SYMBOL_CHARS, min_size=1, max_size=12), max_size=30),
    count=st.integers(1, 5),
)
def test_closest_names_are_the_best_alike_names_in_a_stable_order(symbol: str, listed: list[str], count: int) -> None:
    got = closest_symbols(symbol, listed, count=count)
    assert len(got) <= count and len(set(got)) == len(got) and set(got) <= set(listed)
    ratios = [_ratio(name, symbol) for name in got]
    assert all(r >= CLOSEST_CUTOFF for r in ratios)
    ranked = [(-r, n) for r, n in zip(ratios, got, strict=True)]
    assert ranked == sorted(ranked)
    left_out = [_ratio(n, symbol) for n in set(listed) - set(got)]
    if len(got) < count:  # nothing alike enough was left out
        assert all(r < CLOSEST_CUTOFF for r in left_out)
    else:  # nothing left out is more alike than what was kept
        assert all(r <= min(ratios) for r in left_out)
    assert closest_symbols(symbol, reversed(listed), count=count) == got


@given(name=st.sampled_from(SPOT_NAMES), data=st.data())
def test_a_one_letter_typo_of_a_listed_name_suggests_it_or_something_as_alike(name: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(name) - 1))
    typo = name[:at] + data.draw(st.sampled_from(SYMBOL_CHARS)) + name[at + 1 :]
    assume(typo != name and typo not in SPOT_NAMES)
    got = closest_symbols(typo, SPOT_NAMES)
    assert got and (name in got or _ratio(got[-1], typo) >= _ratio(name, typo))


SERIES = st.builds(
    series,
    st.sampled_from(["spot", "usdt_futures"]),
    st.sampled_from(["BTCUSDT", "ETHUSDT", "BTCUSTD", "ETHBTC", "DOGEUSDT", "NOPE"]),
    st.sampled_from(["1m", "1h"]),
)
LISTINGS = st.dictionaries(
    st.sampled_from(["spot", "usdt_futures"]),
    st.dictionaries(st.sampled_from(["BTCUSDT", "ETHUSDT", "ETHBTC", "DOGEUSDT"]), st.sampled_from(STATUSES)),
)


@given(wanted=st.lists(SERIES), listings=LISTINGS)
def test_every_series_lands_in_exactly_the_group_its_listing_says(
    wanted: list[Series], listings: dict[str, dict[str, str]]
) -> None:
    check = classify_series(wanted, listings)
    groups = [set(check.unknown), set(check.not_trading), set(check.ok), set(check.unchecked)]
    assert sum(len(g) for g in groups) == len(set(wanted))
    assert set().union(*groups) == set(wanted)
    for s in dict.fromkeys(wanted):
        listing = listings.get(s.market)
        if listing is None:
            assert s in check.unchecked
        elif s.symbol not in listing:
            assert check.unknown[s] == closest_symbols(s.symbol, listing)
        elif listing[s.symbol] != "TRADING":
            assert check.not_trading[s] == listing[s.symbol]
        else:
            assert s in check.ok
    order = list(dict.fromkeys(wanted))
    for group in (list(check.unknown), list(check.not_trading), list(check.ok), list(check.unchecked)):
        assert group == sorted(group, key=order.index)  # each group keeps the order given
    assert check.recordable == check.ok + check.unchecked


def test_the_messages_name_each_series_as_the_config_does() -> None:
    check = SeriesCheck(
        unknown={series("spot", "BTCUSTD", "1m"): ["BTCUSDT", "BTCUSD"], series("spot", "QQQ", "1h"): []},
        not_trading={series("spot", "ETHBTC", "1m"): "BREAK", series("coin_futures", "SOLUSD_PERP", "1m"): "CLOSE"},
    )
    assert describe_unknown(check.unknown) == (
        "spot:1m:BTCUSTD: spot lists no symbol BTCUSTD (closest: BTCUSDT, BTCUSD); "
        "spot:1h:QQQ: spot lists no symbol QQQ (no listed symbol is close)"
    )
    assert describe_not_trading(check.not_trading) == "spot:1m:ETHBTC (BREAK); coin_futures:1m:SOLUSD_PERP (CLOSE)"


def test_the_fake_exchange_declares_statuses_only_for_what_it_lists() -> None:
    from trio_klines.errors import ConfigError

    for bad in ({"spot:NOPE": "BREAK"}, {"mars:BTCUSDT": "BREAK"}, {"BTCUSDT": "BREAK"}, {"spot:BTCUSDT": "break"}):
        with pytest.raises(ConfigError):
            Universe(statuses=bad)
    universe = Universe(statuses={"spot:btcusdt": "HALT"})
    assert universe.symbols("spot")["BTCUSDT"].status == "HALT" and universe.get("spot", "BTCUSDT") is None
    with pytest.raises(ConfigError, match="does not trade"):
        universe.spec("spot", "BTCUSDT")
    assert universe.get("usdt_futures", "BTCUSDT") is not None  # only on the market named
