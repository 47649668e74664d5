"""The silence monitor: when a stream is silent, what to do about it, and that it forgets what it must."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from trio_klines.core.markets import MARKETS, Market
from trio_klines.core.silence import MAX_DOUBLINGS, SilenceMonitor, silence_limit

UM = MARKETS["usdt_futures"]
SPOT = MARKETS["spot"]
BTC, ETH, BNB = "btcusdt@kline_1m", "ethusdt@kline_1m", "bnbusdt@kline_1m"
POOL = [BTC, ETH, BNB, "solusdt@kline_1s", "xrpusdt@kline_1h", "adausdt@kline_1d"]


def test_the_limit_is_periods_of_the_update_period_but_never_below_the_minimum() -> None:
    assert silence_limit(UM, BTC, periods=30, minimum=1) == 30 * 0.25
    assert silence_limit(SPOT, BTC, periods=30, minimum=1) == 30 * 2.0
    assert silence_limit(SPOT, "btcusdt@kline_1s", periods=30, minimum=1) == 30 * 1.0  # spot pushes 1s faster
    assert silence_limit(UM, BTC, periods=30, minimum=60) == 60
    assert SilenceMonitor(UM, [BTC], periods=4, minimum=10).limit(BTC) == 10


def test_a_silent_stream_is_resubscribed_then_reconnected_then_alarms_ever_further_apart() -> None:
    m = SilenceMonitor(UM, [BTC, ETH], periods=4, minimum=10)
    m.new_session(0.0)
    assert m.next_check == 1.0
    times, alarms = [], []
    for t in range(1, 2000):
        m.heard_at[BTC] = float(t)  # BTC flows, ETH says nothing
        if (alarm := m.check(float(t))) is not None:
            assert alarm.streams == (ETH,) and alarm.limit == 10
            times.append(t)
            alarms.append(alarm.reconnect)
    assert alarms[:3] == [False, True, False]  # resubscribe, reconnect, then resubscribes only
    assert not any(alarms[2:])
    assert [b - a for a, b in pairwise(times)] == [10 * 2 ** min(n, MAX_DOUBLINGS) for n in range(1, len(times))]


def test_a_stream_that_speaks_again_starts_afresh() -> None:
    m = SilenceMonitor(UM, [BTC], periods=4, minimum=10)
    m.new_session(0.0)
    first = m.check(10.0)
    assert first is not None and not first.reconnect
    m.heard_at[BTC] = 25.0
    assert m.check(30.0) is None  # spoke within its limit: the alarms in a row are forgotten
    again = m.check(35.0)
    assert again is not None and not again.reconnect  # a first alarm again, not a second in a row


def test_a_new_session_gives_every_stream_its_full_allowance() -> None:
    m = SilenceMonitor(UM, [BTC, ETH], periods=4, minimum=10)
    m.heard_at[BTC] = 0.0
    assert m.check(100.0) is not None  # BTC silent; ETH, never heard, counts as heard now
    m.new_session(112.0)
    assert m.heard_at == {BTC: 112.0, ETH: 112.0}
    assert m.check(121.9) is None  # within the allowance: the alarms in a row are forgotten too
    alarm = m.check(122.0)
    assert alarm is not None and alarm.streams == (BTC, ETH) and not alarm.reconnect


def test_names_heard_but_not_tracked_are_dropped_by_the_next_check() -> None:
    m = SilenceMonitor(UM, [BTC], periods=4, minimum=10)
    m.new_session(0.0)
    heard_at = m.heard_at
    heard_at["!serverShutdown"] = 1.0
    heard_at[ETH] = 1.0
    m.check(1.0)
    assert m.heard_at is heard_at  # a receive loop holds this very dict
    assert m.remembered == {BTC}


def test_added_streams_get_their_allowance_from_now_and_removed_ones_are_forgotten() -> None:
    m = SilenceMonitor(UM, [BTC], periods=4, minimum=10)
    m.new_session(0.0)
    m.add([ETH, BTC], 50.0)
    assert m.streams == (BTC, ETH)
    alarm = m.check(55.0)
    assert alarm is not None and alarm.streams == (BTC,)
    m.remove([BTC])
    assert m.remembered == {ETH}
    with pytest.raises(KeyError):
        m.limit(BTC)


class SilenceMachine(RuleBasedStateMachine):
    """Random add/remove churn, frames, sessions and checks against a model of what was heard when."""

    @initialize(
        market=st.sampled_from(list(MARKETS.values())),
        periods=st.integers(1, 60),
        minimum=st.floats(0.5, 100),
        streams=st.lists(st.sampled_from(POOL), min_size=1, unique=True),
    )
    def start(self, market: Market, periods: int, minimum: float, streams: list[str]) -> None:
        self.monitor = SilenceMonitor(market, streams, periods=periods, minimum=minimum)
        self.limit = {s: silence_limit(market, s, periods=periods, minimum=minimum) for s in POOL}
        self.now = 0.0
        self.tracked = list(streams)
        self.heard: dict[str, float | None] = dict.fromkeys(streams)  # None: never heard
        self.in_row = dict.fromkeys(streams, 0)  # alarms in a row
        self.last_alarm: dict[str, float] = {}
        self.strangers: set[str] = set()  # names heard but not tracked since the last check

    @rule(dt=st.floats(0, 200))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(stream=st.sampled_from([*POOL, "!serverShutdown"]))
    def a_frame_arrives(self, stream: str) -> None:
        self.monitor.heard_at[stream] = self.now
        if stream in self.heard:
            self.heard[stream] = self.now
        else:
            self.strangers.add(stream)

    @rule(streams=st.lists(st.sampled_from(POOL), min_size=1))
    def add(self, streams: list[str]) -> None:
        self.monitor.add(streams, self.now)
        for s in streams:
            if s not in self.heard:
                self.tracked.append(s)
                self.heard[s] = self.now
                self.in_row[s] = 0
                self.strangers.discard(s)

    @rule(streams=st.lists(st.sampled_from(POOL), min_size=1))
    def remove(self, streams: list[str]) -> None:
        self.monitor.remove(streams)
        for s in streams:
            if s in self.heard:
                self.tracked.remove(s)
                del self.heard[s], self.in_row[s]
                self.last_alarm.pop(s, None)
            self.strangers.discard(s)
            assert s not in self.monitor.remembered  # forgotten at once

    @rule()
    def new_session(self) -> None:
        self.monitor.new_session(self.now)
        self.heard = dict.fromkeys(self.tracked, self.now)
        self.strangers.clear()
        assert self.monitor.next_check > self.now

    @rule()
    def check(self) -> None:
        alarm = self.monitor.check(self.now)
        alarmed = alarm.streams if alarm is not None else ()
        assert list(alarmed) == [s for s in self.tracked if s in alarmed]  # tracked ones, in order
        for s in self.tracked:
            heard = self.heard[s]
            if heard is None:  # never heard: as if heard at this first check
                heard = self.heard[s] = self.now
            silent_for = self.now - heard
            if silent_for < self.limit[s]:
                assert s not in alarmed  # heard within its limit: never an alarm
                self.in_row[s] = 0
            elif self.in_row[s] == 0:
                assert s in alarmed  # silent, and the first alarm since it last spoke: raised at once
        for s in alarmed:
            assert self.now - self.last_alarm.get(s, -1e18) >= self.limit[s]  # never closer than its limit
            self.last_alarm[s] = self.now
            self.in_row[s] += 1
        if alarm is not None:
            event("alarm: reconnect" if alarm.reconnect else "alarm: resubscribe")
            assert alarm.reconnect == any(self.in_row[s] == 2 for s in alarmed)  # the second in a row
            assert alarm.limit == min(self.limit[s] for s in alarmed)
        self.strangers.clear()
        assert self.monitor.remembered <= set(self.tracked)

    @invariant()
    def memory_is_bounded_by_the_streams_tracked(self) -> None:
        if hasattr(self, "monitor"):
            assert self.monitor.streams == tuple(self.tracked)
            assert self.monitor.remembered <= set(self.tracked) | self.strangers


TestSilenceMachine = SilenceMachine.TestCase
