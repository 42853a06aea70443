"""An interaction's way into and through the queues: arrival, overflow, transfer.

Command handlers: `(center, command, now)`, a rejection or None (see `Center.apply`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    _CONNECTED,
    _OFFERED,
    _SCHEDULED,
    _TERMINAL,
    _TRANSFERRED,
    _WAITING,
    _WRAPUP,
    _moved,
    invariant,
)
from .calendar import next_opening
from .callbacks import merge_callback
from .commands import Arrive, Transfer
from .config import Queue
from .conversations import end_leg, find_call
from .events import CallbackRequested, CallClosed, CallScheduled, CallTransferred
from .privacy import _encode_command, mask_caller
from .rejections import Code, Rejection, reject
from .state import Interaction
from .statistics import (
    _after_hours,
    _callback_after_hours,
    _callback_after_hours_requested,
    _callback_requested,
    _closed,
    _overflowed,
    _sent_out,
    _transferred_in,
    _transferred_out,
    _transferred_out_unanswered,
)

if TYPE_CHECKING:
    from .center import Center

VULNERABLE_ATTRIBUTES = ("vulnerable", "elderly", "disabled")


def arrive(center: Center, command: Arrive, now: float) -> Rejection | None:
    existing = center.state.interactions.get(command.id)
    sealed = command.caller_key != ""
    if sealed:
        # Sealed at the edge (acd.node.privacy): hash, mask and fingerprint come with it.
        fingerprint = command.fingerprint
    else:
        # Keyed like the caller hash: the command holds the caller's number, and an
        # unkeyed digest of a phone number is reversed by trying every number (privacy).
        fingerprint_hash = center._fingerprint_hash.copy()
        fingerprint_hash.update(_encode_command(command))
        fingerprint = fingerprint_hash.hexdigest()
    if existing is not None and existing.fingerprint == fingerprint:
        if sealed:
            center._released_keys.append(command.caller_key)  # this copy's key seals nothing kept
        return None  # the same create again: it already took effect
    queue = center._queues.get(command.queue)
    if queue is None:
        return reject(Code.unknown_queue, f"no queue named {command.queue!r}", field="queue")
    if existing is not None:
        return reject(Code.id_conflict, f"interaction {command.id!r} exists with a different body", field="id")
    if command.channel not in queue.channels:
        return reject(Code.channel_not_served, f"queue {queue.name!r} does not take {command.channel}", field="channel")
    state = center.state
    config = state.config
    caller = command.caller
    if sealed:
        caller_hash, caller_masked = command.caller_hash, command.caller_masked
    else:
        caller_hash, caller_masked = center._caller_hash(caller), mask_caller(caller)
    priority = command.priority
    attributes = command.attributes
    if attributes and any(attributes.get(name) for name in VULNERABLE_ATTRIBUTES):
        priority = max(priority, config.vulnerable_priority)
    flagged = state.abuse.get(caller_hash)
    if flagged:
        horizon = now - config.abuse.window_days * 86400
        warning = len([at for at in flagged if at >= horizon]) >= config.abuse.flags
    else:
        warning = 0 >= config.abuse.flags
    if warning and config.abuse.route_to:
        target = center._queues[config.abuse.route_to]
        if command.channel in target.channels:
            queue = target
    state.order = order = state.order + 1
    call_id = command.id
    call = Interaction(
        id=call_id, queue=queue.name, channel=command.channel, caller_hash=caller_hash,
        caller_masked=caller_masked, priority=priority,
        attributes=dict(attributes), fingerprint=fingerprint, order=order,
        arrived_at=now, place_at=now, queued_at=now, warning=warning,
    )
    if sealed:
        # The sealed number stays with the interaction while it lives; its key goes with it.
        call.caller_sealed = command.caller_sealed
        call.caller_key = command.caller_key
        center._key_refs[command.caller_key] = center._key_refs.get(command.caller_key, 0) + 1
    state.interactions[call_id] = call
    center._live[call_id] = None
    call.center_stats_key = key = center._day_clock.locate(now)
    cache = center._counter_cache
    total, counters = cache.get((None, key)) or center._counters(None, key)
    total.offered += 1
    counters.offered += 1
    center._touched_calls.add(call_id)
    calendar = center._calendars.get(queue.calendar)
    if calendar is not None and not calendar.always_open and not center._is_open(calendar, now):
        invariant(calendar is not None, "closed without a calendar")
        assert calendar is not None  # for mypy; checked by the invariant above
        call.after_hours = True
        center._count_queue_arrival(call, now)
        center._count_queue(call, _after_hours)
        center._count_center(call, _after_hours)
        opening = next_opening(calendar, now) if calendar.closed_action == "callback" else None
        if opening is None:
            center._count_outcome(call, _closed)
            center._finish(call, "close", now, "closed")
            center._emit(CallClosed(at=now, call=call.id, queue=call.queue, reason="closed", message=calendar.closed_message))
            return None
        if not sealed:
            call.caller = command.caller
        call.callback = True
        # Scheduled before the merge check: the new interaction never waited in line,
        # so a merge must not take it out of the queue's count.
        call.state = _moved(call, "schedule")
        call.due_at = opening
        center._count_queue(call, _callback_requested)
        if merge_callback(center, call, now):
            return None
        call.callback_source = "after_hours"
        call.requested_at = now
        center._count_queue(call, _callback_after_hours)
        center._count_outcome(call, _callback_after_hours_requested)
        center._pending_callbacks[(call.caller_hash, call.queue)] = call.id
        center._push_timer(opening, "due", call.id)
        center._emit(CallScheduled(at=now, call=call.id, queue=call.queue, due_at=opening))
        return None
    if queue.external:
        center._count_queue_arrival(call, now)
        center._count_outcome(call, _sent_out)
        center._finish(call, "send_out", now, "external")
        center._emit(CallTransferred(at=now, call=call.id, source="", target=queue.name, external=True))
        return None
    center._count_queue_arrival(call, now)
    queue_name = call.queue
    if queue.max_length and center.waiting_count(queue_name) >= queue.max_length:
        center._count_waiting(call, +1)  # _overflow takes it out of the queue again
        center._call_token[call_id] = -1
        overflow(center, call, now)
        return None
    center._enqueue(call)
    center._emit_queued(call, now)
    center._dispatch_call(call, now)
    return None


def overflow(center: Center, call: Interaction, now: float) -> None:
    """Past max wait or max length: to the overflow queue, or a call-back request."""
    queue = center._queues[call.queue]
    center._count_queue(call, _overflowed)
    if queue.overflow == "callback":
        call.callback = True
        center._count_queue(call, _callback_requested)
        # _merge_callback takes a merged call out of the queue itself: dequeuing first
        # counted it out twice (the waiting count drifted from a restored center's).
        if merge_callback(center, call, now):
            return
        center._callback_from_line(call, now)
        center._dequeue(call)
        center._emit(CallbackRequested(at=now, call=call.id, queue=call.queue))
        center._pending_callbacks[(call.caller_hash, call.queue)] = call.id
        center._enqueue(call)
        center._dispatch_call(call, now)
        return
    move_to_queue(center, call, center._queues[queue.overflow], now, overflow=True)


def move_to_queue(center: Center, call: Interaction, target: Queue, now: float, overflow: bool = False, answered: bool = False) -> None:
    """Move a WAITING call to another queue, keeping its place in line (its key).

    `answered`: the call leaves a conversation (an agent's transfer), not a wait.
    """
    source = call.queue
    center._dequeue(call)
    center._count_queue(call, _transferred_out if answered or call.callback else _transferred_out_unanswered)
    center._emit(CallTransferred(at=now, call=call.id, source=source, target=target.name, external=target.external, overflow=overflow))
    call.transfers += 1
    if call.callback:
        center._forget_callback(call, source)
    call.queue = target.name
    call.queued_at = now
    if target.external:
        center._count_queue_arrival(call, now)
        center._count_queue(call, _transferred_in)
        center._count_outcome(call, _sent_out)
        center._finish(call, "send_out", now, "overflow" if overflow else "transfer")
        return
    center._count_queue_arrival(call, now)
    center._count_queue(call, _transferred_in)
    if call.callback:
        existing = center._pending_callbacks.get((call.caller_hash, call.queue))
        if existing is not None:
            # The caller already waits for a call-back from this queue: one is enough
            # (and one entry per caller and queue keeps a restored center identical).
            center._count_outcome(call, _closed)
            center._finish(call, "close", now, "merged")
            center._emit(CallbackRequested(at=now, call=call.id, queue=call.queue, merged_into=existing))
            return
        center._pending_callbacks[(call.caller_hash, call.queue)] = call.id
    center._enqueue(call)
    center._emit_queued(call, now)
    center._dispatch_call(call, now)


def transfer(center: Center, command: Transfer, now: float) -> Rejection | None:
    found = center.state.interactions.get(command.call)
    if found is not None and found.state is _TRANSFERRED and found.queue == command.queue:
        return None  # transferred out there already
    target = center._queues.get(command.queue)
    if target is None:
        return reject(Code.unknown_queue, f"no queue named {command.queue!r}", field="queue")
    call = find_call(center, command.call)
    if isinstance(call, Rejection):
        return call
    if call.channel not in target.channels:
        return reject(Code.channel_not_served, f"queue {target.name!r} does not take {call.channel}", field="queue")
    if call.state in _TERMINAL or call.state is _WRAPUP:
        return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
    if call.state in (_WAITING, _OFFERED, _SCHEDULED) and call.queue == target.name:
        return None  # already there
    if call.state is _SCHEDULED:
        # A call-back not yet due moves with its due time; out of the center, it ends.
        source = call.queue
        center._forget_callback(call)
        call.queue = target.name
        call.transfers += 1
        center._touch(call)
        center._emit(CallTransferred(at=now, call=call.id, source=source, target=target.name, external=target.external))
        if target.external:
            center._count_outcome(call, _sent_out)
            center._finish(call, "send_out", now, "transfer")
        elif not merge_callback(center, call, now):
            center._pending_callbacks[(call.caller_hash, call.queue)] = call.id
        return None
    agent = None
    answered = call.state is _CONNECTED
    if call.state is _OFFERED:
        agent = center._withdraw_offer(call, "transferred", now)
    elif call.state is _CONNECTED:
        agent = center.state.agents[call.agent or ""]
        end_leg(center, call, agent, now, transferred=True)
        call.agent = None
        call.state = _moved(call, "transfer")
        center._count_waiting(call, +1)
        center._call_token[call.id] = -1
    move_to_queue(center, call, target, now, answered=answered)
    if agent is not None:
        center._dispatch_agent(agent, now)
    return None


def on_overflow(center: Center, call_id: str, _detail: str, now: float) -> None:
    overflow(center, center.state.interactions[call_id], now)
