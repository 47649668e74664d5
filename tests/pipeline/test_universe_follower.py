"""The universe follower: first selection, listings followed on a mock clock, removals confirmed, failures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
import trio
import trio.testing

from trio_klines.core.markets import Series
from trio_klines.core.symbols import Listing
from trio_klines.core.universe import parse_universe_spec
from trio_klines.pipeline.universe import UniverseFollower

pytestmark = pytest.mark.timeout(10)

MINUTE = 60_000


def listing(symbol: str, status: str = "TRADING", onboard: int | None = None) -> Listing:
    return Listing(symbol, status, "USDT", symbol.removesuffix("USDT"), "PERPETUAL", onboard)


class Exchange:
    """Listings that the test changes between refreshes; ``None`` for a market makes its fetch fail."""

    def __init__(self) -> None:
        self.listings: dict[str, dict[str, Listing] | None] = {
            "usdt_futures": {"BTCUSDT": listing("BTCUSDT", onboard=0), "ETHUSDT": listing("ETHUSDT", onboard=0)},
            "spot": {"BTCUSDT": Listing("BTCUSDT", "TRADING", "USDT", "BTC")},
        }
        self.fetches = 0

    async def fetch(self, markets: Sequence[str]) -> Mapping[str, Mapping[str, Listing]]:
        self.fetches += 1
        return {m: dict(found) for m in markets if (found := self.listings.get(m)) is not None}


class Calls:
    def __init__(self) -> None:
        self.added: list[tuple[list[Series], dict[Series, int | None]]] = []
        self.removed: list[list[Series]] = []
        self.why: dict[Series, str] = {}

    async def add(self, series: Sequence[Series], starts: Mapping[Series, int | None]) -> None:
        self.added.append((list(series), dict(starts)))

    async def remove(self, series: Sequence[Series], why: Mapping[Series, str]) -> None:
        self.removed.append(list(series))
        self.why.update(why)


SPECS = [parse_universe_spec("usdt_futures:1m,1h:*USDT"), parse_universe_spec("spot:1m:*")]


def follower(exchange: Exchange) -> UniverseFollower:
    return UniverseFollower(SPECS, exchange.fetch, refresh=180, clock=trio.current_time)


async def test_the_first_selection_is_every_interval_of_every_trading_symbol() -> None:
    exchange = Exchange()
    universe = follower(exchange)
    selected = await universe.resolve()
    assert selected == sorted(
        [Series("usdt_futures", s, i) for s in ("BTCUSDT", "ETHUSDT") for i in ("1m", "1h")]
        + [Series("spot", "BTCUSDT", "1m")]
    )
    assert universe.recorded == set(selected)
    assert universe.listed_at[Series("usdt_futures", "BTCUSDT", "1h")] == 0  # onboardDate, futures only
    assert Series("spot", "BTCUSDT", "1m") not in universe.listed_at


async def test_a_listing_is_added_from_its_onboard_date_and_a_delisting_ends_after_two_listings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange, calls = Exchange(), Calls()
    universe = follower(exchange)
    await universe.resolve()
    first_fetch = int(trio.current_time() * 1000)
    futures = exchange.listings["usdt_futures"]
    assert futures is not None
    futures["NEWUSDT"] = listing("NEWUSDT", onboard=first_fetch + 2 * MINUTE)
    futures["ETHUSDT"] = listing("ETHUSDT", status="SETTLING", onboard=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(universe.run, calls.add, calls.remove)
        await trio.sleep(181)  # the first refresh
        new = [Series("usdt_futures", "NEWUSDT", "1h"), Series("usdt_futures", "NEWUSDT", "1m")]
        assert calls.added == [(new, dict.fromkeys(new, first_fetch + 2 * MINUTE))]
        assert calls.removed == []  # missing once: doubtful, not ended
        await trio.sleep(180)
        assert calls.removed == [[Series("usdt_futures", "ETHUSDT", "1h"), Series("usdt_futures", "ETHUSDT", "1m")]]
        nursery.cancel_scope.cancel()
    assert Series("usdt_futures", "ETHUSDT", "1m") not in universe.recorded
    assert calls.why[Series("usdt_futures", "ETHUSDT", "1m")] == "SETTLING"
    assert Series("usdt_futures", "NEWUSDT", "1m") in universe.recorded and universe.refreshes == 2


async def test_a_symbol_back_in_the_next_listing_is_never_ended(autojump_clock: trio.testing.MockClock) -> None:
    exchange, calls = Exchange(), Calls()
    universe = follower(exchange)
    await universe.resolve()
    futures = exchange.listings["usdt_futures"]
    assert futures is not None
    eth = futures.pop("ETHUSDT")
    await universe.refresh_once(calls.add, calls.remove)
    futures["ETHUSDT"] = eth
    await universe.refresh_once(calls.add, calls.remove)
    assert calls.removed == [] and calls.added == []


async def test_a_failed_fetch_changes_nothing_and_a_symbol_without_onboard_date_starts_a_refresh_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange, calls = Exchange(), Calls()
    universe = follower(exchange)
    await universe.resolve()
    resolved_at = int(trio.current_time() * 1000)
    spot = exchange.listings["spot"]
    exchange.listings["spot"] = None  # spot's exchangeInfo fails twice: its series stay
    await trio.sleep(180)
    await universe.refresh_once(calls.add, calls.remove)
    await universe.refresh_once(calls.add, calls.remove)
    assert calls.removed == [] and Series("spot", "BTCUSDT", "1m") in universe.recorded
    assert spot is not None
    spot["BNBUSDT"] = Listing("BNBUSDT", "TRADING", "USDT", "BNB")
    exchange.listings["spot"] = spot
    await trio.sleep(180)
    await universe.refresh_once(calls.add, calls.remove)
    added, starts = calls.added[-1]
    assert added == [Series("spot", "BNBUSDT", "1m")]
    # Spot gives no listing moment: the symbol trades only since the last listing that was had (the first,
    # the two failed ones tell nothing), less a refresh's margin.
    assert starts[added[0]] == resolved_at - 180_000


async def test_a_market_that_never_answered_selects_nothing_until_it_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange, calls = Exchange(), Calls()
    exchange.listings["spot"] = None
    universe = follower(exchange)
    assert Series("spot", "BTCUSDT", "1m") not in await universe.resolve()
    exchange.listings["spot"] = {"BTCUSDT": Listing("BTCUSDT", "TRADING", "USDT", "BTC")}
    await universe.refresh_once(calls.add, calls.remove)
    assert calls.added == [([Series("spot", "BTCUSDT", "1m")], {Series("spot", "BTCUSDT", "1m"): None})]
