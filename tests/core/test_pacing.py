"""The pacer: never more than ``limit`` takes in a window, and never a take later than that requires;
how many streams one control request carries; the figures per market."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_klines.core.markets import MARKETS
from trio_klines.core.pacing import (
    BINANCE_CONNECTS_PER_WINDOW,
    BINANCE_MESSAGES_PER_SECOND,
    CONNECT_LIMIT,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_ID,
    MAX_REQUEST_PARAMS,
    Pacer,
    connect_pacer,
    control_limit,
    control_pacer,
    pack_params,
    request_size,
)

from fakes import max_in_window

pytestmark = pytest.mark.timeout(60)


def first_float_at_or_after(x: Fraction) -> float:
    f = float(x)  # to nearest
    return f if Fraction(f) >= x else math.nextafter(f, math.inf)


def serve(pacer: Pacer, arrivals: list[float]) -> list[float]:
    """Serve ``arrivals`` (sorted) first come first served, each as soon as the pacer allows."""
    taken = []
    for arrival in arrivals:
        now = max(arrival, pacer.ready_at())  # the time a sleeper wakes at, exactly
        assert pacer.delay(now) == 0
        pacer.take(now)
        taken.append(now)
    return taken


def test_five_per_second() -> None:
    pacer = Pacer(5, 1)
    for t in (0, 0, 0.1, 0.2, 0.9):
        assert pacer.delay(t) == 0
        pacer.take(t)
    assert pacer.in_window(0.9) == 5
    assert pacer.delay(0.95) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no slot free"):
        pacer.take(0.99)
    assert pacer.ready_at() == 1.0  # a second after the oldest of the last five
    pacer.take(1.0)
    assert pacer.ready_at() == 1.0  # the next oldest was at 0 too
    pacer.take(1.0)
    assert pacer.ready_at() == 1.1
    assert pacer.in_window(1.0) == 5  # the takes at 0 left the window at 1.0


def test_a_fresh_pacer_allows_a_burst_of_limit() -> None:
    pacer = Pacer(3, 10)
    assert pacer.ready_at() == -math.inf
    assert serve(pacer, [5.0] * 4) == [5.0, 5.0, 5.0, 15.0]


def test_time_must_not_go_backwards() -> None:
    pacer = Pacer(3, 1)
    pacer.take(10)
    with pytest.raises(ValueError, match="backwards"):
        pacer.take(9)


@pytest.mark.parametrize(("limit", "per"), [(0, 1), (-1, 1), (1.5, 1), (True, 1), (1, 0), (1, -1), (1, math.inf),
                                            (1, math.nan)])  # fmt: skip
def test_bad_limits_are_refused(limit: object, per: object) -> None:
    with pytest.raises(ValueError, match=r"limit|per_seconds"):
        Pacer(limit, per)  # type: ignore[arg-type]


@given(
    limit=st.integers(1, 12),
    per=st.floats(0.001, 1000),
    gaps=st.lists(st.one_of(st.just(0.0), st.floats(0, 50)), max_size=150),
    offset=st.floats(-1e6, 1e6),
)
def test_no_window_holds_more_than_limit_and_no_take_is_later_than_needed(
    limit: int, per: float, gaps: list[float], offset: float
) -> None:
    arrivals = [offset + t for t in accumulate(gaps)]
    taken = serve(Pacer(limit, per), arrivals)
    # Any `limit` + 1 takes in a row span at least a window, exactly (no rounding): no half-open window
    # holds limit + 1.
    assert all(Fraction(taken[i + limit]) - Fraction(taken[i]) >= Fraction(per) for i in range(len(taken) - limit))
    assert max_in_window(taken, per) <= limit
    # As soon as allowed, never later: at its arrival, or the first instant a window after the take `limit` back.
    for i, (arrival, t) in enumerate(zip(arrivals, taken, strict=True)):
        earliest = first_float_at_or_after(Fraction(taken[i - limit]) + Fraction(per)) if i >= limit else -math.inf
        assert t == max(arrival, earliest)


@given(
    limit=st.integers(1, 8),
    per=st.floats(0.01, 100),
    times=st.lists(st.floats(0, 500), min_size=1, max_size=80),
)
def test_a_take_is_allowed_exactly_when_the_window_has_room(limit: int, per: float, times: list[float]) -> None:
    pacer = Pacer(limit, per)
    taken: list[float] = []
    for now in accumulate(times):
        room = sum(Fraction(t) + Fraction(per) > Fraction(now) for t in taken) < limit
        assert (pacer.delay(now) == 0) == room == (pacer.in_window(now) < limit)
        if room:
            pacer.take(now)
            taken.append(now)
        else:
            with pytest.raises(ValueError, match="no slot free"):
                pacer.take(now)
    assert max_in_window(taken, per) <= limit


def test_the_figures_per_market() -> None:
    assert BINANCE_MESSAGES_PER_SECOND.keys() == MARKETS.keys()  # a new market must say its figure
    assert [control_limit(m) for m in ("spot", "usdt_futures", "coin_futures")] == [3, 8, 8]
    assert control_limit("options") == 3  # unknown: the strictest
    assert (control_pacer("spot").limit, control_pacer("spot").per_seconds) == (3, 1.0)
    assert (connect_pacer().limit, connect_pacer().per_seconds) == (CONNECT_LIMIT, 300.0)
    assert CONNECT_LIMIT < BINANCE_CONNECTS_PER_WINDOW
    assert all(control_limit(m) < n for m, n in BINANCE_MESSAGES_PER_SECOND.items())


def test_a_request_of_kline_streams_stays_under_four_kilobytes() -> None:
    streams = [f"{i:06d}usdt@kline_1m" for i in range(1024)]
    n = pack_params("SUBSCRIBE", streams)
    assert 150 < n < MAX_REQUEST_PARAMS
    assert request_size("SUBSCRIBE", streams[:n]) <= MAX_REQUEST_BYTES < request_size("SUBSCRIBE", streams[: n + 1])
    assert pack_params("SUBSCRIBE", streams[:10]) == 10
    assert pack_params("SUBSCRIBE", []) == 0
    assert pack_params("SUBSCRIBE", ["x" * 5000, "y"]) == 1  # too long alone still goes, alone


@given(
    method=st.sampled_from(["SUBSCRIBE", "UNSUBSCRIBE"]),
    params=st.lists(st.text(min_size=1, max_size=60), max_size=300),
    max_params=st.integers(1, 250),
    max_bytes=st.integers(50, 6000),
)
def test_pack_params_takes_the_most_that_fit(method: str, params: list[str], max_params: int, max_bytes: int) -> None:
    n = pack_params(method, params, max_params=max_params, max_bytes=max_bytes)
    assert (n == 0) == (not params)
    wire = json.dumps({"method": method, "params": params[:n], "id": MAX_REQUEST_ID}).encode()
    assert request_size(method, params[:n]) == len(wire)  # the size is the wire's, not an estimate
    if n > 1:
        assert n <= max_params and len(wire) <= max_bytes
    if n < len(params):  # one more would break a bound
        assert n + 1 > max_params or request_size(method, params[: n + 1]) > max_bytes
