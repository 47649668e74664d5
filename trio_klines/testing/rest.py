"""The fake exchange's REST endpoints: klines, exchangeInfo, ping and time, weights, errors and REST faults.

No sockets here: :meth:`RestApi.handle` maps (market, path, query, exchange time) to a
:class:`RestResponse`. Window rules (``shared/binance.md`` §5): spot and USDⓈ-M return the oldest
candles from ``startTime`` or the newest up to ``endTime``/now; COIN-M returns the ``limit`` candles
closest to ``endTime`` within a window of at most 200 days (``-4088`` beyond). The still-open candle is
included as it stands (once the symbol has traded in it). The universe is read at the exchange's time:
``exchangeInfo`` lists what :meth:`~.symbols.Universe.listed` says then; klines of a symbol it does not
list yet are ``-1121 Invalid symbol.``, and a listed one's are the candles that exist (none while it is
``PENDING_TRADING``; a delisted one keeps its history). Request weight is counted per exchange-time
minute, in one pool for spot and one shared by USDⓈ-M and COIN-M.

The REST faults (:class:`~trio_klines.testing.faults.Faults`): ``rest418``, ``rest429`` and ``rest5xx`` replace
the answer before the request is served; ``rest_bad_gzip`` serves the klines (weight charged) but marks the
body ``Content-Encoding: gzip`` without compressing it, a garbled answer the client cannot decode;
``rest_empty`` answers a klines page that has candles ``200 []`` and ``rest_short`` drops its first row(s),
the transient faults a client must not take for an exchange gap. Those two are decided per window
(symbol, interval, startTime, endTime) and per repeat of it, not per request serial: the same run hits the
same pages whatever the order concurrent requests arrive in. Those that fired are counted in
:attr:`RestApi.stats` (``fault_rest_bad_gzip``, ``fault_rest_empty``, …).

Like Binance, a client that keeps calling after a ``429`` is banned: a request that reaches a pool
inside a 429's ``Retry-After`` window (later than requests already in flight could) is a violation,
answered ``429`` again; the :data:`BAN_AFTER`-th violation in a row gets ``418``. One stray call (a
process restarted during another's wait, say) is not a ban.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qsl

from ..core.markets import Market
from .faults import Dice, Faults
from .history import History, key_of
from .wire import binance_error, encode_json, exchange_info, rest_row

__all__ = ["RestApi", "RestResponse", "WeightBudget"]

_JSON: Final = "application/json;charset=UTF-8"
_MINUTE: Final = 60_000
_WINDOW_200_DAYS: Final = 200 * 86_400_000
_MICROS: Final = 10**14
_DIGITS: Final = "^[0-9]{1,20}$"
_SYMBOLS_RANGE: Final = r'^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$'
_UTC_ZONES: Final = frozenset({"0", "+0", "-0", "00:00", "+00:00", "-00:00", "0:00", "+0:00"})
# What spot's exchangeInfo takes for symbolStatus (binance.md §6).
_SPOT_STATUSES: Final = ("TRADING", "HALT", "BREAK")
#: Wall seconds after a 429 is delivered during which requests the client had already sent may still
#: arrive without counting as ignoring it.
IN_FLIGHT_GRACE_S: Final = 0.1
#: Calls inside Retry-After windows, with no compliant call between them, that get a pool banned.
BAN_AFTER: Final = 5
_TOO_MANY_REQUESTS: Final = (
    "Too many requests; current limit of IP is exceeded. Please use WebSocket Streams for live updates."
)


@dataclasses.dataclass(frozen=True, slots=True)
class RestResponse:
    """Status, body and extra headers of one REST answer."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = _JSON


class _Reject(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        self.response = RestResponse(status, binance_error(code, msg))


def _bad(code: int, msg: str) -> _Reject:
    return _Reject(400, code, msg)


class WeightBudget:
    """Request weight used per pool in the current exchange-time minute (Binance resets on the minute)."""

    def __init__(self) -> None:
        self._used: dict[str, tuple[int, int]] = {}

    def used(self, market: Market, now: int) -> int:
        """Weight already used in ``market``'s pool this minute."""
        window, used = self._used.get(market.weight_pool, (now // _MINUTE, 0))
        return used if window == now // _MINUTE else 0

    def charge(self, market: Market, weight: int, now: int) -> int:
        """Add ``weight`` to the pool; returns the weight used this minute, this request included."""
        used = self.used(market, now) + weight
        self._used[market.weight_pool] = (now // _MINUTE, used)
        return used


class RestApi:
    """Answers REST requests from a :class:`History`; ``now`` gives the exchange time in ms."""

    def __init__(
        self,
        history: History,
        now: Callable[[], int],
        *,
        faults: Faults,
        dice: Dice,
        wall_seconds: Callable[[float], float],
        stats: collections.Counter[str] | None = None,
    ) -> None:
        self._history = history
        self._now = now
        self._faults = faults
        self._dice = dice
        self._wall_seconds = wall_seconds
        self._serial = 0
        self.budget = WeightBudget()
        #: Per weight pool, the exchange-time window in which a call ignores the last 429.
        self._penalty: dict[str, tuple[int, int]] = {}
        self._violations: dict[str, int] = {}
        #: Per klines window, how often it was asked (the rest_empty and rest_short dice roll per repeat).
        self._asked: collections.Counter[int] = collections.Counter()
        #: The answer-altering faults that fired, by name (``fault_rest_bad_gzip``); pass the exchange's own
        #: counter to have them there.
        self.stats: collections.Counter[str] = collections.Counter() if stats is None else stats

    def handle(self, market: Market, path: str, query: bytes | str) -> RestResponse:
        """The response to ``GET <market prefix><path>?<query>``, headers included."""
        self._serial += 1
        now = self._now()
        routes = {
            market.klines_path: self._klines,
            market.exchange_info_path: self._exchange_info,
            market.ping_path: self._ping,
            market.time_path: self._time,
        }
        if market.name == "spot":
            routes["/api/v3/uiKlines"] = self._klines
        route = routes.get(path)
        if route is None:
            return RestResponse(404, b"<html><body><h2>404 Not found</h2></body></html>", content_type="text/html")
        violation = self._violation(market, now)
        if violation is not None:
            return _with_weight(violation, market, self.budget.used(market, now))
        injected = self._injected_fault(now)
        if injected is not None:
            return self._penalise(_with_weight(injected, market, self.budget.used(market, now)), market, now)
        try:
            params = _params(query)
            weight, answer = route(market, params, now)
        except _Reject as exc:
            # Binance counts rejected requests against the budget too (the cost is our assumption: 1).
            used = self.budget.charge(market, 1, now)
            return _with_weight(exc.response, market, used)
        if self.budget.used(market, now) + weight > market.weight_limit_per_minute:
            used = self.budget.charge(market, weight, now)
            msg = (
                f"Too much request weight used; current limit is {market.weight_limit_per_minute} request weight "
                "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
            )
            response = RestResponse(429, binance_error(-1003, msg), self._retry_after(now))
            return self._penalise(_with_weight(response, market, used), market, now)
        used = self.budget.charge(market, weight, now)
        response = _with_weight(RestResponse(200, answer()), market, used)
        if route == self._klines and self._dice.hit("rest_bad_gzip", self._faults.rest_bad_gzip, self._serial):
            # Served and charged like any answer, then garbled on its way: what a broken proxy does.
            self.stats["fault_rest_bad_gzip"] += 1
            response = dataclasses.replace(response, headers=(*response.headers, ("content-encoding", "gzip")))
        return response

    # --- faults -------------------------------------------------------------------------------

    def _retry_after(self, now: int) -> tuple[tuple[str, str], ...]:
        seconds = self._faults.retry_after
        if seconds is None:
            seconds = math.ceil(self._wall_seconds(_MINUTE - now % _MINUTE))
        return (("retry-after", str(seconds)),)

    def _ban(self, now: int) -> RestResponse:
        until = now + 2 * _MINUTE
        msg = (
            f"Way too much request weight used; IP banned until {until}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        return RestResponse(418, binance_error(-1003, msg), self._retry_after(now))

    def _violation(self, market: Market, now: int) -> RestResponse | None:
        """The answer to a call that ignores the pool's last 429, or ``None`` for a compliant call."""
        pool = market.weight_pool
        lo, hi = self._penalty.get(pool, (0, 0))
        if not lo < now < hi:
            self._violations[pool] = 0
            return None
        self._violations[pool] = count = self._violations.get(pool, 0) + 1
        if count >= BAN_AFTER:
            return self._ban(now)
        wait = math.ceil(self._wall_seconds(hi - now))
        return RestResponse(429, binance_error(-1003, _TOO_MANY_REQUESTS), (("retry-after", str(max(1, wait))),))

    def _penalise(self, response: RestResponse, market: Market, now: int) -> RestResponse:
        """After a 429, open the window in which calls to its pool ignore it (see :meth:`_violation`)."""
        if response.status == 429:
            retry_after = float(dict(response.headers)["retry-after"])
            per_wall_s = 1.0 / self._wall_seconds(1.0)
            grace = self._faults.rest_slow + IN_FLIGHT_GRACE_S  # the 429 itself waits rest_slow to leave
            self._penalty[market.weight_pool] = (now + round(grace * per_wall_s), now + round(retry_after * per_wall_s))
        return response

    def _injected_fault(self, now: int) -> RestResponse | None:
        f, dice, serial = self._faults, self._dice, self._serial
        if dice.hit("rest418", f.rest418, serial):
            return self._ban(now)
        if dice.hit("rest429", f.rest429, serial):
            return RestResponse(429, binance_error(-1003, _TOO_MANY_REQUESTS), self._retry_after(now))
        if dice.hit("rest5xx", f.rest5xx, serial):
            kind = int(dice.roll("5xx_kind", serial) * 4)
            if kind == 0:
                return RestResponse(
                    500, binance_error(-1000, "An unknown error occurred while processing the request.")
                )
            if kind == 1:
                return RestResponse(
                    502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
                )
            if kind == 2:
                msg = "Server is currently overloaded with other requests. Please try again in a few minutes."
                return RestResponse(503, binance_error(-1008, msg))
            return RestResponse(
                504, b"<html><body><h1>504 Gateway Time-out</h1></body></html>", content_type="text/html"
            )
        return None

    def _transient_fault(self, market: Market, params: dict[str, str], times: list[int]) -> list[int]:
        """``times`` as ``rest_empty`` or ``rest_short`` leave them for this window and this repeat of it."""
        f = self._faults
        if not (f.rest_empty or f.rest_short) or not times:
            return times
        window = key_of(market.name, *(params.get(k) for k in ("symbol", "interval", "startTime", "endTime")))
        self._asked[window] += 1
        keys = (window, self._asked[window])
        if self._dice.hit("rest_empty", f.rest_empty, *keys):
            self.stats["fault_rest_empty"] += 1
            return []
        if len(times) > 1 and self._dice.hit("rest_short", f.rest_short, *keys):
            self.stats["fault_rest_short"] += 1
            return times[1 + int(self._dice.roll("short_rows", *keys) * (len(times) - 1)) :]
        return times

    # --- endpoints ----------------------------------------------------------------------------

    def _ping(self, market: Market, params: dict[str, str], now: int) -> tuple[int, Callable[[], bytes]]:
        _only(params, set())
        return 1, lambda: b"{}"

    def _time(self, market: Market, params: dict[str, str], now: int) -> tuple[int, Callable[[], bytes]]:
        _only(params, set())
        return 1, lambda: encode_json({"serverTime": now})

    def _exchange_info(self, market: Market, params: dict[str, str], now: int) -> tuple[int, Callable[[], bytes]]:
        symbols = self._history.universe.listed(market.name, now)
        if market.name == "spot":
            _only(params, {"symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"})
        else:
            _only(params, set())
        wanted = list(symbols)
        if "symbol" in params:
            wanted = [params["symbol"]]
        elif "symbols" in params:
            wanted = _symbol_list(params["symbols"])
        if any(s not in symbols for s in wanted):
            raise _bad(-1121, "Invalid symbol.")
        status = params.get("symbolStatus")
        if status is not None:
            if status not in _SPOT_STATUSES:
                legal = "|".join(_SPOT_STATUSES)
                raise _bad(-1100, f"Illegal characters found in parameter 'symbolStatus'; legal range is '{legal}'.")
            if "symbol" in params or "symbols" in params:
                raise _bad(-1128, "Combination of optional parameters invalid.")
            wanted = [s for s in wanted if symbols[s].status == status]
        weight = 20 if market.name == "spot" else 1
        return weight, lambda: exchange_info(market.name, [symbols[s] for s in wanted], now)

    def _klines(self, market: Market, params: dict[str, str], now: int) -> tuple[int, Callable[[], bytes]]:
        allowed = {"symbol", "interval", "startTime", "endTime", "limit"}
        _only(params, allowed | {"timeZone"} if market.name == "spot" else allowed)
        for name in ("symbol", "interval"):
            if not params.get(name):
                raise _bad(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        start, end, limit = (_integer(params, n) for n in ("startTime", "endTime", "limit"))
        universe = self._history.universe
        spec = universe.get(market.name, params["symbol"])
        if spec is None or universe.status_at(market.name, spec.symbol, now) is None:
            raise _bad(-1121, "Invalid symbol.")
        interval = params["interval"]
        if interval not in market.intervals:
            raise _bad(-1120, "Invalid interval.")
        if limit is None:
            limit = market.default_klines_limit
        if not 1 <= limit <= market.max_klines_per_request:
            raise _bad(-1130, "Data sent for parameter 'limit' is not valid.")
        if params.get("timeZone", "0") not in _UTC_ZONES:
            # The fake exchange buckets in UTC only; better a loud error than silently wrong candles.
            raise _bad(-1130, "Data sent for parameter 'timeZone' is not valid.")
        if market.name == "spot":
            start, end = (t // 1000 if t is not None and t >= _MICROS else t for t in (start, end))
        if start is not None and end is not None and start > end:
            raise _bad(-1023, "Start time is greater than end time.")

        history = self._history
        if market.name == "coin_futures":
            if start is not None and end is not None and end - start > _WINDOW_200_DAYS:
                raise _bad(-4088, "Maximum time interval is 200 days.")
            if end is None:
                end = now if start is None else min(start + _WINDOW_200_DAYS, now)
            times = history.open_times_before(spec, interval, min(end, now), limit, floor=start or 0)
        elif start is not None:
            stop = min(end, now) if end is not None else now
            times = history.open_times(spec, interval, start, stop + 1, limit)
        else:
            times = history.open_times_before(spec, interval, min(end, now) if end is not None else now, limit, 0)

        if times:
            # The newest candle may not have started: the symbol is listed, or resumes, later inside it.
            first = history.first_trade(spec, interval, times[-1])
            if first is None or first > now:
                times.pop()
        times = self._transient_fault(market, params, times)

        def body() -> bytes:
            return encode_json([rest_row(spec, history.kline_at(spec, interval, t, now)) for t in times])

        return market.kline_weight(limit), body


def _with_weight(response: RestResponse, market: Market, used: int) -> RestResponse:
    headers = [("x-mbx-used-weight-1m", str(used))]
    if market.name == "spot":
        headers.append(("x-mbx-used-weight", str(used)))
    return dataclasses.replace(response, headers=(*response.headers, *headers))


def _params(query: bytes | str) -> dict[str, str]:
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise _bad(-1100, "Illegal characters found in a parameter.") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise _bad(-1101, "Duplicate values for a parameter detected.")
        params[key] = value
    return params


def _only(params: dict[str, str], allowed: set[str]) -> None:
    read = [k for k in params if k in allowed]
    if len(read) != len(params):
        raise _bad(
            -1104, f"Not all sent parameters were read; read '{len(read)}' parameter(s) but was sent '{len(params)}'."
        )


def _integer(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 20):
        raise _bad(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{_DIGITS}'.")
    return int(value)


def _symbol_list(text: str) -> list[str]:
    inner = text.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        raise _bad(-1100, f"Illegal characters found in parameter 'symbols'; legal range is '{_SYMBOLS_RANGE}'.")
    return [s.strip().strip('"') for s in inner[1:-1].split(",") if s.strip()]
