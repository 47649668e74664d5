"""Each market's ``exchangeInfo``: which symbols it lists and whether they trade; the start-up series check.

The verdict itself is pure (:func:`trio_klines.core.symbols.classify_series`); here the listings are
fetched through the market's :class:`~trio_klines.net.rest.RestClient`, so the call shares its weight
budget, its retries and its error mapping. ``exchangeInfo`` costs 20 on spot and 1 on the futures markets.

A listing that cannot be fetched (the network is down, the retries are spent, an answer that does not
parse, or ``give_up_after`` passes, e.g. during a long 418 ban) does not stop recording: a warning is logged and
that market's series are ``unchecked``, recorded as if the check did not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final, TypeVar

import trio

from ..core.markets import Series
from ..core.symbols import Listing, SeriesCheck, classify_series, parse_listings, parse_symbol_statuses
from ..errors import BinanceError, ConfigError, MalformedMessage, RestError
from .rest import RestClient

__all__ = ["DEFAULT_CHECK_TIMEOUT", "check_series", "fetch_listings", "fetch_symbol_statuses"]

log = logging.getLogger("trio_klines.symbols")

#: Seconds the start-up check may take before the markets not yet fetched are recorded unchecked.
DEFAULT_CHECK_TIMEOUT: Final = 60.0
_T = TypeVar("_T")


async def fetch_symbol_statuses(client: RestClient) -> dict[str, str]:
    """Symbol → trading status of every symbol ``client``'s market lists (``TRADING``, ``BREAK``…).

    Raises:
      RestError, BinanceError, ConfigError: as the client's requests (its retries included).
      MalformedMessage: the answer is not an ``exchangeInfo`` body.

    Cancelled, it stops wherever it waits, leaving nothing running (see ``RestClient._get``).
    """
    return parse_symbol_statuses(client.market, await client.exchange_info())


async def check_series(
    series: Iterable[Series], clients: Mapping[str, RestClient], *, give_up_after: float = DEFAULT_CHECK_TIMEOUT
) -> SeriesCheck:
    """Checks every series against its market's listing; the markets are fetched at once, in parallel.

    ``clients`` needs one client per market of ``series``. A market whose listing cannot be had within
    ``give_up_after`` seconds (or at all) is logged as a warning and its series come back ``unchecked``.

    Raises:
      ConfigError: a market's REST URL cannot be built.
      KeyError: ``clients`` lacks a market of ``series``.

    Cancelled, it stops every fetch under way.
    """
    wanted = list(dict.fromkeys(series))
    markets = sorted({s.market for s in wanted})
    chosen = {m: clients[m] for m in markets}
    listings = await _fetch_each(chosen, markets, fetch_symbol_statuses, give_up_after, "symbols are not checked")
    return classify_series(wanted, listings)


async def fetch_listings(
    clients: Mapping[str, RestClient], markets: Iterable[str], *, give_up_after: float = DEFAULT_CHECK_TIMEOUT
) -> dict[str, dict[str, Listing]]:
    """Each of ``markets``' listing (symbol → :class:`Listing`), fetched at once through its client.

    A market whose listing cannot be had within ``give_up_after`` seconds, or at all, is logged as a
    warning and left out of the answer: nothing is known of it this time. Raises :class:`ConfigError`
    when a market's REST URL cannot be built; cancelled, it stops every fetch under way.
    """

    async def listing(client: RestClient) -> dict[str, Listing]:
        return parse_listings(client.market, await client.exchange_info())

    return await _fetch_each(clients, sorted(set(markets)), listing, give_up_after, "universe is not updated this time")


async def _fetch_each(
    clients: Mapping[str, RestClient],
    markets: Sequence[str],
    fetch: Callable[[RestClient], Awaitable[_T]],
    give_up_after: float,
    unless: str,
) -> dict[str, _T]:
    """``fetch`` of each market's client, all at once; a market that fails or is late is left out, with a
    warning ending "its/their ``unless``". Raises the first :class:`ConfigError` (a bad URL), never a group."""
    found: dict[str, _T] = {}
    failed: set[str] = set()
    bad_url: list[ConfigError] = []

    async def one(name: str) -> None:
        try:
            found[name] = await fetch(clients[name])
        except (RestError, BinanceError, MalformedMessage) as exc:
            failed.add(name)
            log.warning("%s: exchangeInfo not available (%s); its %s", name, exc, unless)
        except ConfigError as exc:  # raised after the nursery: one exception, never a group
            bad_url.append(exc)

    with trio.move_on_after(give_up_after):
        async with trio.open_nursery() as nursery:
            for name in markets:
                nursery.start_soon(one, name)
    if bad_url:
        raise bad_url[0]
    late = [m for m in markets if m not in found and m not in failed]
    if late:
        log.warning("exchangeInfo of %s not fetched within %gs; their %s", ", ".join(late), give_up_after, unless)
    return found
