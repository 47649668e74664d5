"""The writer's flush policy: property tests of its invariants, and a simulated writer driven by it."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.flushing import Action, FlushPolicy, FlushState, Step

times = st.floats(0, 1e6, allow_nan=False)


@st.composite
def policies(draw: st.DrawFn) -> FlushPolicy:
    flush_size = draw(st.integers(1, 100))
    max_pending = draw(st.integers(flush_size, 400))
    return FlushPolicy(flush_size, draw(st.floats(1e-3, 100, allow_nan=False)), max_pending)


@st.composite
def situations(draw: st.DrawFn) -> tuple[FlushPolicy, FlushState, float]:
    """A policy, a writer's state as the writer can hold it, and the time."""
    policy = draw(policies())
    now = draw(times)
    pending = draw(st.integers(0, policy.max_pending + 10))  # a failed batch comes back on top of the held ones
    first = draw(st.floats(now - 1e4, now, allow_nan=False)) if pending else math.inf
    retry_at = draw(st.one_of(st.just(-math.inf), st.floats(now - 100, now + 100, allow_nan=False)))
    debt = draw(st.sampled_from([0.0, 1.0, 2.0]))  # Store.seal_debt: nothing due, due or running, behind
    state = FlushState(pending, first, draw(st.booleans()) and pending > 0, retry_at, draw(st.booleans()), debt)
    return policy, state, now


def flushable(state: FlushState, now: float) -> bool:
    """Nothing keeps the batch back: no retry delay runs and the store's sealing has not fallen behind."""
    return state.pending > 0 and now >= state.retry_at and state.debt <= 1


@settings(max_examples=500)
@given(situations())
def test_never_flushes_nothing_nor_a_kept_back_batch(situation: tuple[FlushPolicy, FlushState, float]) -> None:
    policy, state, now = situation
    if policy.next_step(state, now).action is Action.FLUSH:
        assert flushable(state, now)


@settings(max_examples=500)
@given(situations())
def test_a_full_overdue_aged_or_last_batch_flushes_at_once(situation: tuple[FlushPolicy, FlushState, float]) -> None:
    policy, state, now = situation
    due = (
        state.pending >= policy.flush_size
        or state.overdue
        or not state.open_channel
        or now >= state.first_pending_at + policy.flush_seconds
    )
    assert (policy.next_step(state, now).action is Action.FLUSH) == (flushable(state, now) and due)


@settings(max_examples=500)
@given(situations())
def test_done_only_when_closed_empty_and_nothing_owed(situation: tuple[FlushPolicy, FlushState, float]) -> None:
    policy, state, now = situation
    done = not state.open_channel and state.pending == 0 and state.debt <= 0
    assert (policy.next_step(state, now).action is Action.DONE) == done


@settings(max_examples=500)
@given(situations())
def test_sealing_owed_goes_first_unless_a_flush_is_due(situation: tuple[FlushPolicy, FlushState, float]) -> None:
    policy, state, now = situation
    step = policy.next_step(state, now)
    if step.action is Action.SEAL:
        assert state.debt > 0
    if state.debt > 0:
        assert step.action in (Action.FLUSH, Action.SEAL)


@settings(max_examples=500)
@given(situations())
def test_a_wait_ends_in_the_future_and_then_something_happens(
    situation: tuple[FlushPolicy, FlushState, float],
) -> None:
    policy, state, now = situation
    step = policy.next_step(state, now)
    if step.action is not Action.WAIT:
        return
    assert step.until > now
    if state.pending == 0:
        assert step.until == math.inf  # nothing to do until a candle arrives or the channel closes
    else:  # waking at the deadline with nothing changed: the batch goes
        assert policy.next_step(state, step.until) == Step(Action.FLUSH)


@settings(max_examples=500)
@given(policies(), st.integers(0, 500), st.one_of(st.just(-math.inf), times), times)
def test_receiving_is_held_exactly_at_the_bounds(
    policy: FlushPolicy, pending: int, retry_at: float, now: float
) -> None:
    failing = now < retry_at
    bound = policy.max_pending if failing else policy.flush_size
    assert policy.holds_receiving(pending, retry_at, now) == (pending >= bound)


@settings(max_examples=200)
@given(policies(), st.lists(st.floats(0, 50, allow_nan=False), max_size=60), st.floats(0, 200, allow_nan=False))
def test_a_simulated_writer_writes_every_candle_within_its_flush_interval(
    policy: FlushPolicy, gaps: list[float], close_after: float
) -> None:
    # An instant sink that never fails, one candle per arrival: every candle is written no later than
    # flush_seconds after it arrived, the batches never exceed flush_size (receiving holds there), and
    # the writer ends once the channel closes (after its last candle: end of channel comes last).
    arrivals, t = [], 0.0
    for gap in gaps:
        t += gap
        arrivals.append(t)
    closes_at = t + close_after
    now, pending, written, waited = 0.0, list[float](), 0, 0.0
    for _ in range(10 * len(arrivals) + 10):
        state = FlushState(
            len(pending), pending[0] if pending else math.inf, open_channel=bool(arrivals) or now < closes_at
        )
        step = policy.next_step(state, now)
        if step.action is Action.DONE:
            break
        if step.action is Action.FLUSH:
            assert len(pending) <= policy.flush_size
            waited = max(waited, *(now - arrived for arrived in pending))
            written += len(pending)
            pending = []
            continue
        assert step.action is Action.WAIT
        upcoming = arrivals[0] if arrivals else closes_at
        if step.until <= upcoming:
            now = step.until
        else:  # the receive task takes what arrived, unless it is held (then the arrival waits)
            now = max(now, upcoming)
            if arrivals and not policy.holds_receiving(len(pending), -math.inf, now):
                pending.append(arrivals.pop(0))
    else:
        raise AssertionError("the simulated writer never finished")
    assert written == len(gaps)
    assert waited <= policy.flush_seconds or math.isclose(waited, policy.flush_seconds)  # the deadline's rounding
