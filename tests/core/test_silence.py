"""The silence monitor: when a stream is silent, what to do about it, and that it forgets what it must."""

from __future__ import annotations

import math
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


def test_a_silent_stream_among_live_ones_is_resubscribed_ever_further_apart_and_never_reconnects() -> None:
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
    assert times[0] == 10 and not any(alarms)  # resubscribes only: BTC's candles are never cut off
    assert [b - a for a, b in pairwise(times)] == [10 * 2 ** min(n, MAX_DOUBLINGS) for n in range(1, len(times))]


def test_a_stream_that_speaks_again_starts_afresh() -> None:
    m = SilenceMonitor(UM, [BTC, ETH], periods=4, minimum=10)
    m.new_session(0.0)
    for t in range(1, 36):
        m.heard_at[ETH] = float(t)
        alarm = m.check(float(t))
        assert alarm is None or (alarm.streams == (BTC,) and t in (10, 35)), t
        if t == 25:
            m.heard_at[BTC] = 25.0  # spoke after its alarm at 10: its next one is due 10 s after it goes quiet
    assert m.check(36.0) is None  # not 10 + 20 = 30: the alarms in a row were forgotten


def test_only_a_connection_silent_as_a_whole_is_reconnected_and_ever_further_apart() -> None:
    m = SilenceMonitor(UM, [BTC, ETH], periods=4, minimum=10)
    m.new_session(0.0)
    reconnects = []
    session_at = 0.0
    for t in range(1, 400):
        alarm = m.check(float(t))
        if alarm is not None:
            assert alarm.reconnect and alarm.streams == (BTC, ETH)  # nothing delivers: the connection is at fault
            reconnects.append(t)
            session_at = t + 1.0
        if t == session_at:
            m.new_session(session_at)  # the reconnect's first frame (an ack, not a candle)
    # The new session's allowance is not speech: reconnects come 10, then 20, 40, 80… seconds apart.
    assert reconnects == [10, 30, 70, 150, 310]
    for t in range(311, 601):  # ETH delivers again; BTC stays silent, its next resubscribe far off
        m.heard_at[ETH] = float(t)
        assert m.check(float(t)) is None
    alarm = m.check(610.0)  # ETH quiet again: the whole connection is silent, and a frame came since the last
    assert alarm is not None and alarm.reconnect  # reconnect, so this one is not held back


def test_a_new_session_gives_every_stream_its_full_allowance_but_no_fresh_start() -> None:
    m = SilenceMonitor(UM, [BTC, ETH], periods=4, minimum=10)
    m.new_session(0.0)
    alarms = {}
    for t in range(1, 40):
        if t == 12:
            m.new_session(12.0)  # the connection was cut and came back
            assert m.heard_at == {ETH: 11.0}  # frames only: the allowance is kept apart
        m.heard_at[ETH] = float(t)  # ETH flows, BTC says nothing
        if (alarm := m.check(float(t))) is not None:
            alarms[t] = alarm
    # BTC: silent at 10; allowed again from 12 to 22; its second alarm is due 20 s after the first, at 30,
    # not at 22 as a fresh start would have it.
    assert list(alarms) == [10, 30]
    assert all(a.streams == (BTC,) and not a.reconnect for a in alarms.values())


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


#: Float slack for comparing the model's due times with the monitor's (sums rounded differently).
EPS = 1e-6


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
        self.heard: dict[str, float] = {}  # real frames only
        self.allowed: dict[str, float | None] = dict.fromkeys(streams)  # None: from the first check
        self.in_row = dict.fromkeys(streams, 0)  # alarms in a row since the stream last spoke
        self.last_alarm: dict[str, float] = {}
        self.reconnects_in_row = 0  # since any tracked stream last spoke
        self.last_reconnect = -math.inf
        self.reconnect_spacing = 0.0
        self.strangers: set[str] = set()  # names heard but not tracked since the last check

    @rule(dt=st.floats(0, 200))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(stream=st.sampled_from([*POOL, "!serverShutdown"]))
    def a_frame_arrives(self, stream: str) -> None:
        self.monitor.heard_at[stream] = self.now
        self.heard[stream] = self.now
        if stream not in self.allowed:
            self.strangers.add(stream)

    @rule(streams=st.lists(st.sampled_from(POOL), min_size=1))
    def add(self, streams: list[str]) -> None:
        self.monitor.add(streams, self.now)
        for s in streams:
            if s not in self.allowed:
                self.tracked.append(s)
                self.allowed[s] = self.now
                self.in_row[s] = 0
                self.strangers.discard(s)

    @rule(streams=st.lists(st.sampled_from(POOL), min_size=1))
    def remove(self, streams: list[str]) -> None:
        self.monitor.remove(streams)
        for s in streams:
            if s in self.allowed:
                self.tracked.remove(s)
                del self.allowed[s], self.in_row[s]
                self.last_alarm.pop(s, None)
            self.heard.pop(s, None)
            self.strangers.discard(s)
            assert s not in self.monitor.remembered  # forgotten at once

    @rule()
    def new_session(self) -> None:
        self.monitor.new_session(self.now)
        self.allowed = dict.fromkeys(self.tracked, self.now)  # an allowance, not speech: in_row stays
        assert self.monitor.next_check > self.now

    def _spoke_since(self, s: str, t: float) -> bool:
        return self.heard.get(s, -math.inf) >= t

    @rule()
    def check(self) -> None:
        alarm = self.monitor.check(self.now)
        alarmed = alarm.streams if alarm is not None else ()
        assert list(alarmed) == [s for s in self.tracked if s in alarmed]  # tracked ones, in order
        silent = set()
        for s in self.tracked:
            if self.in_row[s] and self._spoke_since(s, self.last_alarm[s]):
                self.in_row[s] = 0  # it spoke after its last alarm
            allowed = self.allowed[s] if self.allowed[s] is not None else self.now
            self.allowed[s] = allowed
            if self.now - max(self.heard.get(s, -math.inf), allowed) >= self.limit[s]:
                silent.add(s)
            else:
                assert s not in alarmed  # heard, or allowed, within its limit: never an alarm
        if any(self._spoke_since(s, self.last_reconnect) for s in self.tracked):
            self.reconnects_in_row = 0
        whole = bool(self.tracked) and silent == set(self.tracked)
        reconnect = alarm is not None and alarm.reconnect
        if reconnect:  # only a connection with nothing delivering is replaced, and every stream of it with it
            event("alarm: reconnect")
            assert whole and list(alarmed) == self.tracked
            assert self.reconnects_in_row == 0 or self.now - self.last_reconnect >= self.reconnect_spacing - EPS
            self.reconnects_in_row += 1
            self.last_reconnect = self.now
            # Spaced by the longest limit of the streams it had then, × 2 per reconnect in a row.
            longest = max(self.limit[s] for s in self.tracked)
            self.reconnect_spacing = longest * 2 ** min(self.reconnects_in_row, MAX_DOUBLINGS)
        else:
            assert not (whole and self.reconnects_in_row == 0)  # the first time it is all silent: at once
        for s in silent:
            due = self.limit[s] * 2 ** min(self.in_row[s], MAX_DOUBLINGS)
            waited = self.now - self.last_alarm.get(s, -math.inf)
            if not reconnect and self.in_row[s]:
                assert (s in alarmed) == (waited >= due) or abs(waited - due) < EPS  # ever further apart
            elif not reconnect:
                assert s in alarmed  # silent, and the first alarm since it last spoke: raised at once
        if alarm is not None:
            if not reconnect:
                event("alarm: resubscribe")
            assert alarm.limit == min(self.limit[s] for s in alarmed)
        for s in alarmed:
            self.last_alarm[s] = self.now
            self.in_row[s] += 1
        self.strangers.clear()
        self.heard = {s: t for s, t in self.heard.items() if s in self.allowed}
        assert self.monitor.remembered <= set(self.tracked)

    @invariant()
    def memory_is_bounded_by_the_streams_tracked(self) -> None:
        if hasattr(self, "monitor"):
            assert self.monitor.streams == tuple(self.tracked)
            assert self.monitor.remembered <= set(self.tracked) | self.strangers


TestSilenceMachine = SilenceMachine.TestCase
