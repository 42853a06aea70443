"""The timer heap: ring timeouts, wrap-up ends, recovery ends, call-backs due, preferred-agent
ends, skill relaxation, overflow and the hourly retention prune.

A timer is `(due, rank, kind, subject, detail)`; it is never removed, only found stale when it
comes up (`_timer_valid`). The handlers live with their concepts; `Center` maps each kind to
one (`Center._timer_handlers`). The prune, which forgets what retention no longer keeps, is here.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from .base import _OFFERED, _SCHEDULED, _TERMINAL, _WAITING, invariant
from .privacy import Privacy

# At one instant, calls go back to (or take) their places before agents come free, so that a
# freed agent takes the caller who was first in line (an offer that timed out at the same
# instant is back in its place by then).
TIMER_RANK = {
    "offer": 0, "due": 1, "preferred": 2, "relax": 3, "overflow": 4, "wrapup": 5, "recovery": 6, "prune": 7,
}

if TYPE_CHECKING:
    from .center import Center


class Timers(Privacy):
    """The timer heap: timers pushed, and told stale from valid when they come up."""

    def _push_timer(self, due: float, kind: str, subject: str, detail: str = "") -> None:
        # Timers due at the same instant fire in an order given by the state alone (kind,
        # then subject), never by the order they were pushed: a center restored from a
        # snapshot pushes them in another order, and must still fire them identically
        # (invariant 7).
        heapq.heappush(self._timers, (due, TIMER_RANK[kind], kind, subject, detail))

    def _timer_valid(self, timer: tuple[float, int, str, str, str]) -> bool:
        due, _order, kind, subject, detail = timer
        # The usual kinds first: ring timeouts and wrap-up ends, mostly stale by their time.
        if kind == "offer":
            call = self.state.interactions.get(subject)
            return call is not None and call.state is _OFFERED and call.offer_expires_at == due
        if kind == "prune":
            return True
        if kind in ("recovery", "wrapup"):
            agent = self.state.agents.get(subject)
            if agent is None:
                return False
            if kind == "recovery":
                return agent.recovering_until == due
            held = agent.held.get(detail)
            return held is not None and held.wrap_deadline == due
        call = self.state.interactions.get(subject)
        if call is None:
            return False
        if kind == "due":
            return call.state is _SCHEDULED and call.due_at == due
        if kind == "preferred":
            return call.state in (_WAITING, _OFFERED) and call.preferred_until == due
        if kind == "relax":
            return call.state is _WAITING
        if kind == "overflow":
            queue = self._queues.get(call.queue)
            return (
                call.state is _WAITING
                and queue is not None
                and bool(queue.max_wait)
                and not call.callback
                and call.queued_at + queue.max_wait == due
            )
        return False

    @staticmethod
    def _next_prune(now: float) -> float:
        return (now // 3600 + 1) * 3600


def on_prune(center: Center, _subject: str, _detail: str, _due: float) -> None:
    """Forget interactions, statistics and abuse flags past their retention (privacy, memory).

    Runs at the machine's current time, not at its due time, and schedules itself an hour
    later: after a long idle period it runs once, not once per hour missed.
    """
    now = center.state.now
    config = center.state.config
    horizon = now - config.retention_days * 86400
    while center._terminal and center._terminal[0][0] < horizon:
        _at, call_id = heapq.heappop(center._terminal)
        call = center.state.interactions.get(call_id)
        if call is not None and call.state in _TERMINAL and (call.completed_at or 0.0) < horizon:
            del center.state.interactions[call_id]
    today, _interval = center._day_clock.locate(now)
    oldest_day = center._day_clock.locate(horizon)[0]
    for day in [day for day in center.state.stats if day < oldest_day]:
        del center.state.stats[day]
        center._forget_stats()
    abuse_horizon = now - config.abuse.window_days * 86400
    for key in list(center.state.abuse):
        flags = [at for at in center.state.abuse[key] if at >= abuse_horizon]
        if flags:
            center.state.abuse[key] = flags
        else:
            del center.state.abuse[key]
    invariant(today >= oldest_day, "retention horizon after today")
    center._push_timer(center._next_prune(now), "prune", "")
