"""When the writer flushes, seals, waits or stops, and when it stops receiving. Pure: time is an argument.

The writer (:mod:`trio_klines.pipeline.writer`) runs two tasks over one state: one receives candles from
the channel, one hands batches to the store. Both ask a :class:`FlushPolicy` what to do and only carry
it out, so every rule about batching, backlog, retries, deferred sealing and backpressure is here:

* **Flush** a batch once it is full (``flush_size`` candles), once its oldest candle has waited
  ``flush_seconds``, at once when it is *overdue* (it holds candles that queued in the channel while
  receiving was held back: they have waited already), and whatever its age once the channel is closed.
  Never while a failed write's retry delay runs, and never while the store's sealing has fallen behind
  (its :meth:`~trio_klines.store.dataset.Store.seal_debt` above 1).
* **Seal** one step whenever sealing is owed and no flush is due: a due flush waits for one step at
  most, unless sealing has fallen behind.
* **Wait** until the batch falls due or the retry delay ends, or until the other task changes something.
* **Done** once the channel is closed, nothing is pending and no sealing is owed.
* **Hold receiving** at one full batch (the flush task takes it as soon as the sink is free), or at
  ``max_pending`` while writes fail; beyond that the bounded channel fills and the connections wait, so
  memory stays bounded and nothing received is dropped.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Action", "FlushPolicy", "FlushState", "Step"]


class Action(enum.Enum):
    """What the flush task does next."""

    FLUSH = "flush"  #: hand every pending candle to the sink
    SEAL = "seal"  #: do one step of the sealing the store is owed
    WAIT = "wait"  #: sleep until :attr:`Step.until`, or until the other task changes the state
    DONE = "done"  #: return: the channel is closed and everything is written and sealed


class Step(NamedTuple):
    """The decision: ``action``, and for :attr:`Action.WAIT` the time to wake at the latest."""

    action: Action
    #: Only for :attr:`Action.WAIT`: wake at this time even if nothing changes (``inf``: only on a change).
    until: float = math.inf


_FLUSH: Step = Step(Action.FLUSH)
_SEAL: Step = Step(Action.SEAL)
_DONE: Step = Step(Action.DONE)
_IDLE: Step = Step(Action.WAIT)


@dataclass(frozen=True, slots=True)
class FlushState:
    """What the writer holds, as the policy needs to see it. Times are on the caller's clock."""

    #: candles received and not yet handed to the sink
    pending: int = 0
    #: when the oldest of them arrived (``inf`` when none is pending)
    first_pending_at: float = math.inf
    #: the pending candles include a caught-up backlog: they have waited in the channel already
    overdue: bool = False
    #: no write before this time: a write failed and its backoff runs (``-inf`` when none failed)
    retry_at: float = -math.inf
    #: some sender may still send
    open_channel: bool = True
    #: sealing owed (see :meth:`~trio_klines.store.dataset.Store.seal_debt`)
    debt: float = 0.0


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """The writer's batching rules (see the module's docstring), from its settings.

    The values are those of a :class:`~trio_klines.config.WriterSettings`, which checks them
    (``flush_seconds`` positive and finite, ``1 <= flush_size <= max_pending``).
    """

    flush_size: int
    flush_seconds: float
    max_pending: int

    def next_step(self, state: FlushState, now: float) -> Step:
        """What the flush task does at time ``now``.

        A :attr:`Action.WAIT` step's ``until`` is always later than ``now`` (or ``inf``): a wait never
        spins.
        """
        pending = state.pending
        if (
            pending
            and now >= state.retry_at
            and state.debt <= 1
            and (
                pending >= self.flush_size
                or state.overdue
                or not state.open_channel
                or now >= state.first_pending_at + self.flush_seconds
            )
        ):
            return _FLUSH
        if state.debt > 0:
            # Merges go after the batch that paid for them is reported, a step at a time, so that a due
            # flush waits for one step at most.
            return _SEAL
        if not pending:
            return _IDLE if state.open_channel else _DONE
        # Pending, not flushable yet: either the retry delay runs (then retry_at > now) or the batch is
        # young (then its due time > now), so this deadline is in the future.
        if not state.open_channel:
            return Step(Action.WAIT, state.retry_at)
        return Step(Action.WAIT, max(state.first_pending_at + self.flush_seconds, state.retry_at))

    def holds_receiving(self, pending: int, retry_at: float, now: float) -> bool:
        """Whether the receive task should stop taking candles from the channel until something changes.

        Held at one full batch (``flush_size``) normally, at ``max_pending`` while a failed write's retry
        delay runs (``now < retry_at``), so that a failing disk does not stop the connections at once.
        """
        if pending >= self.max_pending:
            return True
        return pending >= self.flush_size and now >= retry_at
