"""Universe specs: parsing, filters against exchangeInfo listings, the series they select."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.markets import Series
from trio_klines.core.symbols import Listing, parse_listings, parse_symbol_statuses
from trio_klines.core.universe import (
    UniverseSpec,
    is_universe_spec,
    parse_universe_spec,
    select_symbols,
    universe_series,
)
from trio_klines.errors import ConfigError, MalformedMessage

USDM = {
    "BTCUSDT": Listing("BTCUSDT", "TRADING", "USDT", "BTC", "PERPETUAL", 1_569_398_400_000),
    "ETHUSDC": Listing("ETHUSDC", "TRADING", "USDC", "ETH", "PERPETUAL", 1_700_000_000_000),
    "BTCUSDT_261225": Listing("BTCUSDT_261225", "TRADING", "USDT", "BTC", "CURRENT_QUARTER", 1_750_000_000_000),
    "BTCDOMUSDT": Listing("BTCDOMUSDT", "TRADING", "USDT", "BTCDOM", "PERPETUAL", 1_620_000_000_000),
    "XAUUSDT": Listing("XAUUSDT", "TRADING", "USDT", "XAU", "TRADIFI_PERPETUAL", 1_760_000_000_000),
    "LUNAUSDT": Listing("LUNAUSDT", "SETTLING", "USDT", "LUNA", "PERPETUAL", 1_600_000_000_000),
    "NEWUSDT": Listing("NEWUSDT", "PENDING_TRADING", "USDT", "NEW", "PERPETUAL", 1_800_000_000_000),
}


def test_a_spec_with_a_star_is_a_universe_and_others_are_symbols() -> None:
    assert is_universe_spec("usdt_futures:1m:*") and is_universe_spec("spot:1m,5m:*USDT?exclude=X")
    assert not is_universe_spec("spot:1m:BTCUSDT,ETHUSDT") and not is_universe_spec("nonsense")


def test_every_filter_parses_and_prints_back() -> None:
    spec = parse_universe_spec("usdt_futures: 1m,1h ,1m:*usdt?contract=Perpetual&exclude=btcdomusdt,XAUUSDT")
    assert spec == UniverseSpec(
        "usdt_futures", ("1m", "1h"), quote="USDT", contract="perpetual", exclude=frozenset({"BTCDOMUSDT", "XAUUSDT"})
    )
    assert str(spec) == "usdt_futures:1m,1h:*USDT?contract=perpetual&exclude=BTCDOMUSDT,XAUUSDT"
    assert parse_universe_spec(str(spec)) == spec
    assert str(parse_universe_spec("spot:1s:*")) == "spot:1s:*"
    assert parse_universe_spec("coin_futures:1d:*?status=TRADING,PENDING_TRADING").statuses == {
        "TRADING",
        "PENDING_TRADING",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("spot:1m:*?contract=perpetual", "spot has no contracts"),
        ("spot:1m:BTC*", "the symbol part is * or *QUOTE"),
        ("spot:1m:*US*", "the symbol part is * or *QUOTE"),
        ("spot:2m:*", "invalid interval '2m' for spot"),
        ("spot:1m:*?colour=red", "invalid universe filter 'colour=red'"),
        ("spot:1m:*?exclude=A&exclude=B", "use each of contract, status, exclude once"),
        ("moon:1m:*", "unknown market 'moon'"),
        ("spot::*", "needs at least one interval"),
        ("usdt_futures:1m:*?contract=weekly", "contract must be one of any, perpetual, delivery"),
        ("spot:1m:*US-DT", "a quote asset is an upper-case name"),
        ("spot:1m:*?status=trading!", "statuses are upper-case words"),
        ("spot:1m:*?exclude=../etc", "symbol"),
        ("spot:1m", "invalid universe"),
    ],
)
def test_a_bad_spec_is_a_one_line_error_naming_it(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_universe_spec(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_filters_select_what_users_mean_by_all() -> None:
    assert select_symbols(parse_universe_spec("usdt_futures:1m:*"), USDM) == [
        "BTCDOMUSDT",
        "BTCUSDT",
        "BTCUSDT_261225",
        "ETHUSDC",
        "XAUUSDT",
    ]
    assert select_symbols(parse_universe_spec("usdt_futures:1m:*USDT?contract=perpetual&exclude=BTCDOMUSDT"), USDM) == [
        "BTCUSDT",
        "XAUUSDT",
    ]
    assert select_symbols(parse_universe_spec("usdt_futures:1m:*?contract=delivery"), USDM) == ["BTCUSDT_261225"]
    assert select_symbols(parse_universe_spec("usdt_futures:1m:*?status=PENDING_TRADING"), USDM) == ["NEWUSDT"]


def test_the_quote_filter_reads_the_asset_not_the_name() -> None:
    listings = {"USDTUSDC": Listing("USDTUSDC", "TRADING", "USDC", "USDT")}
    assert select_symbols(parse_universe_spec("spot:1m:*USDT"), listings) == []
    assert select_symbols(parse_universe_spec("spot:1m:*USDC"), listings) == ["USDTUSDC"]


def test_universe_series_are_every_interval_of_every_kept_symbol_once() -> None:
    specs = [
        parse_universe_spec("usdt_futures:1m,5m:*USDT?contract=perpetual"),
        parse_universe_spec("usdt_futures:1m:*"),
    ]
    found = universe_series(specs, {"usdt_futures": USDM})
    assert len(found) == len(set(found)) and found == sorted(found)
    assert Series("usdt_futures", "BTCUSDT", "5m") in found and Series("usdt_futures", "ETHUSDC", "1m") in found
    assert Series("usdt_futures", "ETHUSDC", "5m") not in found  # USDC is not USDT
    assert universe_series(specs, {}) == []  # a market whose listing is unknown selects nothing


def exchange_info(symbols: list[dict[str, object]]) -> bytes:
    return json.dumps({"timezone": "UTC", "symbols": symbols}).encode()


def test_listings_parse_each_market_s_fields() -> None:
    body = exchange_info(
        [
            {
                "symbol": "BTCUSD_PERP",
                "contractStatus": "TRADING",
                "contractType": "PERPETUAL",
                "quoteAsset": "USD",
                "baseAsset": "BTC",
                "onboardDate": 1_597_042_800_000,
                "filters": [],
            },
            {"symbol": "btcusd_200925", "contractStatus": "DELIVERED"},  # not a Binance name: left out
            {"symbol": "../../x", "contractStatus": "TRADING"},
        ]
    )
    listings = parse_listings("coin_futures", body)
    assert listings == {
        "BTCUSD_PERP": Listing("BTCUSD_PERP", "TRADING", "USD", "BTC", "PERPETUAL", 1_597_042_800_000),
    }
    assert parse_symbol_statuses("coin_futures", body)["btcusd_200925"] == "DELIVERED"  # the check keeps names
    with pytest.raises(MalformedMessage):
        parse_listings("spot", exchange_info([{"symbol": "BTCUSDT"}]))
    with pytest.raises(MalformedMessage):
        parse_listings("spot", b'{"code": -1003, "msg": "Too much request weight used"}')


STATUSES = st.sampled_from(["TRADING", "BREAK", "HALT", "PENDING_TRADING", "SETTLING"])
CONTRACT_TYPES = st.sampled_from(["PERPETUAL", "TRADIFI_PERPETUAL", "CURRENT_QUARTER", "NEXT_MONTH"])
ASSETS = st.sampled_from(["USDT", "USDC", "BTC", "FDUSD"])


@st.composite
def listings(draw: st.DrawFn) -> dict[str, Listing]:
    names = draw(st.lists(st.from_regex(r"[A-Z]{2,6}", fullmatch=True), unique=True, max_size=12))
    return {n: Listing(n, draw(STATUSES), draw(ASSETS), "X", draw(CONTRACT_TYPES), None) for n in names}


@settings(max_examples=200, deadline=None)
@given(
    listings(),
    st.none() | ASSETS,
    st.sampled_from(["any", "perpetual", "delivery"]),
    st.sets(STATUSES, min_size=1),
    st.sets(st.from_regex(r"[A-Z]{2,6}", fullmatch=True), max_size=3),
)
def test_a_symbol_is_selected_iff_every_filter_keeps_it(
    listing: dict[str, Listing], quote: str | None, contract: str, statuses: set[str], exclude: set[str]
) -> None:
    spec = UniverseSpec("usdt_futures", ("1m",), quote=quote, contract=contract,
                        statuses=frozenset(statuses), exclude=frozenset(exclude))  # fmt: skip
    chosen = set(select_symbols(spec, listing))
    for name, item in listing.items():
        perpetual = item.contract_type in {"PERPETUAL", "TRADIFI_PERPETUAL"}
        expected = (
            name not in exclude
            and item.status in statuses
            and (quote is None or item.quote_asset == quote)
            and (contract == "any" or perpetual == (contract == "perpetual"))
        )
        assert (name in chosen) == expected, item
    assert parse_universe_spec(str(spec)) == spec
