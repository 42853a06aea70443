"""Virtual time for the cluster simulator: a clock that jumps, and timers that are cheap to wait on.

`JumpClock` is what `trio.testing.MockClock(autojump_threshold=0)` does, in one pass of trio's
loop instead of two: trio asks the clock how long it may sleep only when nothing is runnable,
and this clock answers by moving its time to the next deadline and saying "not at all", so
the deadline expires in the same pass (MockClock spends an empty pass noticing that everything
waits, then jumps). Nothing in the simulation waits on real I/O or threads, which is what
makes "nothing runnable" mean "idle until the next timer". With no deadline at all the run is
deadlocked, and the clock sleeps as trio would.

The clock also keeps timers of its own (`sleep`, `wake_at`). A `trio.sleep` is a cancel scope
with a deadline: when the deadline passes, trio cancels the scope, builds a `Cancelled`
exception, throws it into the task and catches it again at the scope's end. That is the right
machinery for a real timeout and far too much for a tick, and the simulator's processes tick a
lot (lease renewals, heartbeats, the network's deliveries): a third of a run went on it. A
timer here parks the task with `trio.lowlevel.wait_task_rescheduled` and, when the clock jumps
to its time, puts it back on the run queue, which is all a sleep needs. Cancellation works as
for any trio wait (the abort callback disarms the timer), and timers due together go back on
the run queue in the order they were set, where trio's scheduler (seeded in a simulation)
orders the batch: runs stay deterministic.
"""

from __future__ import annotations

import heapq
import math
from itertools import count

import trio


class Wakeup:
    """A parked task that whichever comes first (a timer, a direct `wake()`) puts back to work once."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = trio.lowlevel.current_task()

    def wake(self) -> None:
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> None:
        """Park until woken; raises `Cancelled` (and disarms) if the surrounding scope is cancelled."""
        await trio.lowlevel.wait_task_rescheduled(self._abort)


class JumpClock(trio.abc.Clock):
    """Virtual time that jumps to the next deadline (trio's or a timer's) as soon as no task can run."""

    def __init__(self) -> None:
        self._now = 0.0
        self._timers: list[tuple[float, int, Wakeup]] = []
        self._order = count()

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        timers = self._timers
        while timers and timers[0][2].task is None:
            heapq.heappop(timers)  # woken or cancelled already
        if timers and timers[0][0] < deadline:
            deadline = timers[0][0]
        if deadline == math.inf:
            return math.inf
        if deadline > self._now:
            self._now = deadline
        now = self._now
        while timers and timers[0][0] <= now:
            heapq.heappop(timers)[2].wake()
        return 0.0

    def wake_at(self, at: float, wakeup: Wakeup) -> None:
        """Wake `wakeup` at virtual time `at` (at once if that has come), unless something wakes it first."""
        if at <= self._now:
            wakeup.wake()
        else:
            heapq.heappush(self._timers, (at, next(self._order), wakeup))

    async def sleep(self, seconds: float) -> None:
        """`trio.sleep` on this clock's timers."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        if seconds == 0:
            await trio.lowlevel.checkpoint()
            return
        wakeup = Wakeup()
        heapq.heappush(self._timers, (self._now + seconds, next(self._order), wakeup))
        await wakeup.wait()


def clock() -> JumpClock:
    """The running simulation's clock (every simulated run is on a `JumpClock`)."""
    current = trio.lowlevel.current_clock()
    if not isinstance(current, JumpClock):
        raise RuntimeError("the cluster simulator runs on sim.dr.clock.JumpClock")
    return current


async def sleep(seconds: float) -> None:
    """`trio.sleep` for the simulator's own tasks (workload, fault scripts, network)."""
    await clock().sleep(seconds)
