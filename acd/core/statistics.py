"""Statistics folded into the state: per queue (and the center) and per day and interval, per agent and day.

The counters are docs/kpis.md's. `Statistics` finds (and remembers) the records a step
counts in; the small functions at the end are the updates handed to `_count_queue` and
`_count_center`, one per outcome.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import CenterBase
from .state import AgentDay, Counters, DayStats, Interaction, QueueDay


class Statistics(CenterBase):
    """The counters a step writes to: found in the state (created on first use) and remembered."""

    def _forget_stats(self) -> None:
        """Drop the remembered statistics records (after retention removed a day)."""
        self._agent_days: dict[str, AgentDay] = {}  # statistics record per agent, for one day
        self._agent_days_day = ""
        self._agent_days_start = 1.0  # that day's bounds (none yet: start after end)
        self._agent_days_end = 0.0
        # (queue or None, (day, interval)) -> the day's and the interval's counters
        self._counter_cache: dict[tuple[str | None, tuple[str, int]], tuple[Counters, Counters]] = {}

    def _counters(self, queue: str | None, key: tuple[str, int]) -> tuple[Counters, Counters]:
        """The day's total and the interval's counters of `queue` (None: the center)."""
        found = self._counter_cache.get((queue, key))
        if found is not None:
            return found
        day, interval = key
        day_stats = self.state.stats.get(day)
        if day_stats is None:
            day_stats = self.state.stats[day] = DayStats()
        queue_day: QueueDay | None
        if queue is None:
            queue_day = day_stats.center
        else:
            queue_day = day_stats.queues.get(queue)
            if queue_day is None:
                queue_day = day_stats.queues[queue] = QueueDay()
        counters = queue_day.intervals.get(interval)
        if counters is None:
            counters = queue_day.intervals[interval] = Counters()
        found = self._counter_cache[(queue, key)] = (queue_day.total, counters)
        return found

    def _count_answered(self, queue: str | None, key: tuple[str, int], wait: float, within: bool, callback: bool) -> None:
        """An answer in the day's and the interval's counters of `queue` (None: the center)."""
        for counters in self._counter_cache.get((queue, key)) or self._counters(queue, key):
            counters.answered += 1
            counters.wait_answered_seconds += wait
            if within:  # adding False changes nothing, so it is skipped
                counters.answered_within += 1

    def _callback_from_line(self, call: Interaction, now: float) -> None:
        """A caller in line asks for a call-back (or overflows to one): the caller's wait ends
        unanswered, and a call-back task, due now, keeps the place in line."""
        call.callback_source = "waiting"
        call.requested_at = now
        self._count_queue(call, _callback_waiting)
        self._count_outcome(call, _callback_waiting_requested)
        self._count_center(call, _callback_due)

    def _count_callback(self, call: Interaction, update: Callable[[Counters], None]) -> None:
        """A call-back task's step, in its queue's counters and the center's."""
        self._count_queue(call, update)
        self._count_center(call, update)

    def _count_queue_arrival(self, call: Interaction, now: float) -> None:
        call.queue_stats_key = key = self._day_clock.locate(now)
        total, interval = self._counter_cache.get((call.queue, key)) or self._counters(call.queue, key)
        total.offered += 1
        interval.offered += 1

    def _count_center(self, call: Interaction, update: Callable[[Counters], None]) -> None:
        for counters in self._counters(None, call.center_stats_key):
            update(counters)

    def _count_outcome(self, call: Interaction, update: Callable[[Counters], None]) -> None:
        """Count the interaction's outcome for the center, once (invariant 8)."""
        if not call.counted:
            call.counted = True
            self._count_center(call, update)

    def _count_queue(self, call: Interaction, update: Callable[[Counters], None]) -> None:
        for counters in self._counters(call.queue, call.queue_stats_key):
            update(counters)

    def _agent_day(self, agent: str, now: float) -> AgentDay:
        if not self._agent_days_start <= now < self._agent_days_end:
            # Another day: the records remembered are the day's (retention never removes
            # today; pruning an older day forgets them).
            day, self._agent_days_start, self._agent_days_end = self._day_clock.bounds(now)
            self._agent_days_day = day
            self._agent_days = {}
        else:
            cached = self._agent_days.get(agent)
            if cached is not None:
                return cached
            day = self._agent_days_day
        day_stats = self.state.stats.get(day)
        if day_stats is None:
            day_stats = self.state.stats[day] = DayStats()
        record = day_stats.agents.get(agent)
        if record is None:
            record = day_stats.agents[agent] = AgentDay()
        self._agent_days[agent] = record
        return record


def _closed(counters: Counters) -> None:
    counters.closed += 1


def _transferred_out(counters: Counters) -> None:
    counters.transfers_out += 1


def _transferred_in(counters: Counters) -> None:
    counters.transfers_in += 1


def _overflowed(counters: Counters) -> None:
    counters.overflows += 1


def _callback_requested(counters: Counters) -> None:
    counters.callbacks_requested += 1


def _after_hours(counters: Counters) -> None:
    counters.after_hours += 1


def _sent_out(counters: Counters) -> None:
    """Sent out of the center (a district office) before an answer: the caller's outcome."""
    counters.transfers_out += 1
    counters.left_unanswered += 1


def _transferred_out_unanswered(counters: Counters) -> None:
    counters.transfers_out += 1
    counters.left_unanswered += 1


def _left_unanswered(counters: Counters) -> None:
    counters.left_unanswered += 1


def _closed_left(counters: Counters) -> None:
    counters.closed += 1
    counters.left_unanswered += 1


def _callback_waiting(counters: Counters) -> None:
    """In the queue: the caller left the line for a call-back, which is due at once."""
    counters.callbacks_waiting += 1
    counters.left_unanswered += 1
    counters.callbacks_due += 1


def _callback_waiting_requested(counters: Counters) -> None:
    """At the center: the caller's outcome is a call-back request from the line."""
    counters.callbacks_requested += 1
    counters.callbacks_waiting += 1
    counters.left_unanswered += 1


def _callback_after_hours(counters: Counters) -> None:
    counters.callbacks_after_hours += 1


def _callback_after_hours_requested(counters: Counters) -> None:
    counters.callbacks_requested += 1
    counters.callbacks_after_hours += 1


def _callback_promised(counters: Counters) -> None:
    counters.callbacks_requested += 1
    counters.callbacks_promised += 1


def _callback_due(counters: Counters) -> None:
    counters.callbacks_due += 1


def _callback_attempted(counters: Counters) -> None:
    counters.callbacks_attempted += 1


def _callback_reached(counters: Counters) -> None:
    counters.callbacks_reached += 1


def _callback_expired(counters: Counters) -> None:
    counters.callbacks_expired += 1
