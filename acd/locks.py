"""A Trio lock whose uncontended acquire is not a schedule point.

`trio.Lock.acquire()` always yields to the scheduler, even when the lock is free. The locks of
the replication protocol (one sender per connection, one request per peer, one batch at a time)
are free nearly always, and every needless yield is a task step: on a live node a little CPU,
in the disaster-recovery simulator (whose speed is its number of task steps) a large share of
the run. `QuickLock` keeps `trio.Lock`'s fairness (a released lock passes straight to the task
waiting longest, so `acquire_nowait` never jumps the queue) and stays a cancellation point;
only the schedule point of the free case is gone, and the protected code's own I/O provides one.
"""

from __future__ import annotations

from types import TracebackType

import trio


class QuickLock:
    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()
