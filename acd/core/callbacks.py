"""Call-backs: requested by a caller in line (or after hours), promised at wrap-up, due, dialled.

One pending call-back per caller and queue: a second request merges into the first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import _CLOSED, _OFFERED, _SCHEDULED, _TERMINAL, _WAITING, _moved, invariant
from .calendar import next_opening
from .commands import Answer, CallbackAttempt, RequestCallback
from .conversations import answer, find_call
from .events import CallbackAttempted, CallbackRequested, CallScheduled
from .rejections import Code, Rejection, reject
from .state import AgentRecord, Interaction
from .statistics import (
    _callback_due,
    _callback_expired,
    _callback_promised,
    _callback_requested,
    _closed,
    _closed_left,
    _left_unanswered,
)

if TYPE_CHECKING:
    from .center import Center


def merge_callback(center: Center, call: Interaction, now: float) -> bool:
    """A second call-back request of the same caller for the same queue joins the first."""
    existing_id = center._pending_callbacks.get((call.caller_hash, call.queue))
    if existing_id is None or existing_id == call.id:
        return False
    agent = None
    if call.state is _WAITING or call.state is _OFFERED:
        # A caller on the line whose request joins an earlier one: their wait ended here.
        center._count_queue(call, _left_unanswered)
        center._count_outcome(call, _closed_left)
    if call.state is _WAITING:
        center._dequeue(call)
    elif call.state is _OFFERED:
        agent = center._withdraw_offer(call, "merged", now)
        center._dequeue(call)
    center._count_outcome(call, _closed)
    center._finish(call, "close", now, "merged")
    center._emit(CallbackRequested(at=now, call=call.id, queue=call.queue, merged_into=existing_id))
    if agent is not None:
        center._dispatch_agent(agent, now)  # the agent whose offer went is free again (invariant 5)
    return True


def request_callback(center: Center, command: RequestCallback, now: float) -> Rejection | None:
    call = find_call(center, command.call)
    if isinstance(call, Rejection):
        return call
    if call.callback and call.state in (_WAITING, _OFFERED, _SCHEDULED):
        return None
    if call.state is _CLOSED and call.reason == "merged":
        return None
    if call.state in _TERMINAL:
        return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
    if call.state not in (_WAITING, _OFFERED):
        return reject(Code.call_not_waiting, f"interaction {call.id!r} is {call.state.value}; only a waiting caller asks for a call-back")
    center._count_queue(call, _callback_requested)
    if merge_callback(center, call, now):
        return None
    agent = None
    if call.state is _OFFERED:
        agent = center._withdraw_offer(call, "callback", now)
    center._callback_from_line(call, now)
    call.callback = True
    center._pending_callbacks[(call.caller_hash, call.queue)] = call.id
    # The caller hangs up; max wait no longer applies (they are not on a line).
    center._dequeue(call)
    center._enqueue(call)
    center._touch(call)
    center._emit(CallbackRequested(at=now, call=call.id, queue=call.queue))
    center._dispatch_call(call, now)
    if agent is not None:
        center._dispatch_agent(agent, now)
    return None


def schedule_callback(
    center: Center, origin: Interaction, agent: AgentRecord, queue_name: str, callback_at: float, now: float,
    sealed: tuple[bytes, str, str] | None = None,
) -> None:
    """A call-back promised at wrap-up: first to the same agent for a while, then to anyone.

    It goes to the queue in which this agent handled the call, not to wherever the call
    went after: a conversation transferred to a district office ends in an external
    queue, which nobody here serves.
    """
    existing = center._pending_callbacks.get((origin.caller_hash, queue_name))
    if existing is not None:
        if sealed is not None:
            center._release_key(sealed[1])
        center._emit(CallbackRequested(at=now, call=origin.id, queue=queue_name, merged_into=existing))
        return
    number = 1
    while f"{origin.id}:cb{number}" in center.state.interactions:
        number += 1
    center.state.order += 1
    due = max(callback_at, now)
    call = Interaction(
        id=f"{origin.id}:cb{number}", queue=queue_name, channel="voice" if "voice" in center._queues[queue_name].channels else origin.channel,
        caller_hash=origin.caller_hash, caller_masked=origin.caller_masked, caller=None,
        priority=origin.priority, order=center.state.order, arrived_at=now, place_at=due, queued_at=due,
        state=_SCHEDULED, callback=True, due_at=due, preferred_agent=agent.name, origin=origin.id,
        callback_source="promised", requested_at=now,
    )
    if sealed is not None:
        call.caller_sealed, call.caller_key, call.sealed_for = sealed
    center.state.interactions[call.id] = call
    center._live[call.id] = None
    # A task, not a caller: never offered, answered or abandoned in the callers' counts.
    call.counted = True
    call.center_stats_key = call.queue_stats_key = center._day_clock.locate(now)
    center._count_callback(call, _callback_promised)
    center._pending_callbacks[(call.caller_hash, call.queue)] = call.id
    center._push_timer(due, "due", call.id)
    center._touch(call)
    center._emit(CallScheduled(at=now, call=call.id, queue=call.queue, due_at=due, agent=agent.name))


def callback_attempt(center: Center, command: CallbackAttempt, now: float) -> Rejection | None:
    call = find_call(center, command.call)
    if isinstance(call, Rejection):
        return call
    if call.state in _TERMINAL:
        if command.outcome == "wrong_number" and call.reason == "wrong_number":
            return None  # reported already
        return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
    if call.state is not _OFFERED or not call.callback:
        if command.outcome != "reached" and call.state is _SCHEDULED and call.last_offer_outcome == command.outcome:
            return None  # reported already: the task waits for its next attempt
        return reject(Code.call_not_offered, f"interaction {call.id!r} is {call.state.value}, not a call-back being dialled")
    name = call.agent or ""
    if command.outcome == "reached":
        return answer(center, Answer(call=call.id, agent=name), now)
    attempt = call.attempts
    agent = center._withdraw_offer(call, command.outcome, now)
    center._dequeue(call)
    queue = center._queues[call.queue]
    config = center.state.config
    due: float | None = None
    if command.outcome != "wrong_number" and attempt < config.callback_attempts:
        due = now + config.callback_retry_seconds
        calendar = center._calendars.get(config.callback_calendar or queue.calendar)
        if not center._is_open(calendar, due):
            due = next_opening(calendar, due)
    if due is None:
        center._emit(CallbackAttempted(at=now, call=call.id, agent=name, outcome=command.outcome, attempt=attempt))
        center._count_callback(call, _callback_expired)
        center._finish(call, "close", now, "wrong_number" if command.outcome == "wrong_number" else "unreachable")
    else:
        call.state = _moved(call, "schedule")
        call.due_at = due
        call.preferred_agent = None
        call.preferred_until = None
        center._push_timer(due, "due", call.id)
        center._touch(call)
        center._emit(CallbackAttempted(at=now, call=call.id, agent=name, outcome=command.outcome, attempt=attempt, next_due_at=due))
        center._emit(CallScheduled(at=now, call=call.id, queue=call.queue, due_at=due))
    center._dispatch_agent(agent, now)
    return None


def on_callback_due(center: Center, call_id: str, _detail: str, now: float) -> None:
    call = center.state.interactions[call_id]
    queue = center._queues[call.queue]
    calendar = center._calendars.get(queue.calendar)
    if not center._is_open(calendar, now):
        # A call-back due while closed waits for the opening (docs/domain.md: closed hours).
        opening = next_opening(calendar, now)
        if opening is not None:
            call.due_at = opening
            center._push_timer(opening, "due", call.id)
            center._emit(CallScheduled(at=now, call=call.id, queue=call.queue, due_at=opening, agent=call.preferred_agent))
            return
    call.due_at = None
    call.state = _moved(call, "due")
    call.queued_at = now
    call.place_at = now
    if call.preferred_agent is not None:
        call.preferred_until = now + center.state.config.callback_preferred_seconds
    # Call-back work, not a caller: counted as due, never as offered (docs/kpis.md); a
    # retry after an unanswered dial is not due a second time.
    if not call.attempts:
        call.queue_stats_key = center._day_clock.locate(now)
        center._count_queue(call, _callback_due)
        center._count_center(call, _callback_due)
    center._enqueue(call)
    center._emit_queued(call, now)
    center._dispatch_call(call, now)


def on_preferred_end(center: Center, call_id: str, _detail: str, now: float) -> None:
    """The promised agent did not take the call-back in time: open it to everyone."""
    call = center.state.interactions[call_id]
    call.preferred_until = None
    previous = call.preferred_agent
    call.preferred_agent = None
    if call.state is _WAITING:
        center._dequeue(call)
        center._enqueue(call)
        center._dispatch_call(call, now)
    invariant(previous is not None, "preferred timer without a preferred agent")
