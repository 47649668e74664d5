"""Blocking work in a worker thread without letting a busy event loop starve it of the GIL.

CPython's GIL starves such a thread. The store's appends release the GIL dozens of times per file
(every system call, every pyarrow call). Meanwhile the event loop, when busy, also releases it every few
microseconds (each ``epoll_wait``, each socket ``recv``) and takes it back before the woken worker can.
Every re-take counts as a switch, which resets the worker's wait: its five-millisecond request for
the GIL never fires. Measured on 50 one-minute series at 20k WebSocket frames/s, an append of 50 small
files took 2–3.5 s instead of 40 ms, and the worker's futile wake-ups cost the event loop's thread 40 %
more CPU per frame (``python -m benchmarks.e2e``).

:func:`run_in_thread` runs the call in trio's worker thread. While it runs, the event loop blocks for
:data:`HANDOFF_PAUSE` every :data:`HANDOFF_EVERY`: long enough for the waiting worker to take the
GIL. Linux's timer slack stretches the 50 µs sleep to ~0.14 ms, so a loop that is busy throughout a
call gives up at most ~20 % of its time to the pauses, and only during the call. A 1 µs sleep (~60 µs
in fact) measured no better; the gain is in the worker no longer waiting seconds for the GIL.

An idle loop needs none of it: it waits in ``epoll_wait`` with the GIL released, and the worker runs. So
the pause is made only when other tasks are queued to run (the loop is busy), and while the loop stays
idle the checks space out, up to :data:`HANDOFF_IDLE_MAX` apart: at Binance's paced rates the loop is
idle most of the time, and a wake-up every 0.5 ms during every store call would cost more than the frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

import outcome
import trio

__all__ = ["HANDOFF_EVERY", "HANDOFF_IDLE_MAX", "HANDOFF_PAUSE", "run_in_thread"]

#: How often, and for how long, the event loop blocks while a worker thread runs (seconds).
HANDOFF_EVERY: Final = 0.0005
HANDOFF_PAUSE: Final = 0.00005
#: The longest wait between two checks while the loop is idle (the check interval doubles up to it).
HANDOFF_IDLE_MAX: Final = 0.008

_T = TypeVar("_T")
_A = TypeVar("_A")


async def run_in_thread(fn: Callable[[_A], _T], arg: _A) -> _T:
    """``trio.to_thread.run_sync(fn, arg)``, with the GIL handed over to the worker now and then.

    A :data:`~trio_klines.pipeline.writer.SinkRunner`; like ``trio.to_thread.run_sync``, a cancellation waits
    for the call to finish, which returns its result or raises its error, and is raised at the next
    checkpoint.
    """
    await trio.lowlevel.checkpoint_if_cancelled()  # as trio.to_thread.run_sync: cancelled before, not run
    # Shielded: the call cannot be abandoned anyway, and a cancellation delivered when the nursery exits
    # would lose its result (a batch written but not known to be). It comes at the caller's next checkpoint.
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hand_over_gil)
            # Captured, raised below as it is: through the nursery an error would come out grouped.
            result = await outcome.acapture(trio.to_thread.run_sync, fn, arg)
            nursery.cancel_scope.cancel()
    return result.unwrap()


async def _hand_over_gil() -> None:
    every = HANDOFF_EVERY
    statistics = trio.lowlevel.current_statistics
    while True:
        await trio.sleep(every)
        if statistics().tasks_runnable:
            every = HANDOFF_EVERY
            # Blocking on purpose: the GIL is released for the whole pause, so the waiting worker wins it.
            time.sleep(HANDOFF_PAUSE)  # noqa: ASYNC251
        else:  # idle: the loop's next epoll_wait releases the GIL anyway
            every = min(every * 2, HANDOFF_IDLE_MAX)
