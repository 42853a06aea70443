"""An offered interaction answered, refused or abandoned; the conversation, its holds and its end.

Command handlers: `(center, command, now)`, a rejection or None (see `Center.apply`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    _ABANDONED,
    _COMPLETED,
    _CONNECTED,
    _LOGGED_OUT,
    _NOT_READY,
    _OFFERED,
    _READY,
    _SCHEDULED,
    _TERMINAL,
    _WAITING,
    _WRAPUP,
    _moved,
    invariant,
)
from .commands import Abandon, Answer, Hangup, Hold, Reject, Unhold
from .events import CallAbandoned, CallAnswered, CallEnded, CallHeld, CallResumed
from .rejections import Code, Rejection, reject
from .state import TRANSITIONS, AgentRecord, Held, Interaction
from .statistics import _callback_reached

if TYPE_CHECKING:
    from .center import Center


def find_call(center: Center, call_id: str) -> Interaction | Rejection:
    call = center.state.interactions.get(call_id)
    if call is None:
        return reject(Code.unknown_call, f"no interaction {call_id!r}", field="call")
    return call


def find_agent(center: Center, name: str) -> AgentRecord | Rejection:
    agent = center.state.agents.get(name)
    if agent is None:
        return reject(Code.unknown_agent, f"no agent {name!r}", field="agent")
    return agent


def logged_out(agent: AgentRecord) -> Rejection:
    """The rejection of a command for an agent who is logged out."""
    return reject(Code.agent_logged_out, f"agent {agent.name!r} is logged out", field="agent")


def not_found(center: Center, call_id: str, agent_name: str) -> Rejection:
    """The rejection when the agent or the interaction does not exist (the agent first)."""
    found = call_and_agent(center, call_id, agent_name)
    invariant(isinstance(found, Rejection), "both exist")
    assert isinstance(found, Rejection)  # for mypy; checked by the invariant above
    return found


def call_and_agent(center: Center, call_id: str, agent_name: str) -> tuple[Interaction, AgentRecord] | Rejection:
    agent = find_agent(center, agent_name)
    if isinstance(agent, Rejection):
        return agent
    call = find_call(center, call_id)
    if isinstance(call, Rejection):
        return call
    return call, agent


def answer(center: Center, command: Answer, now: float) -> Rejection | None:
    agent = center.state.agents.get(command.agent)
    call = center.state.interactions.get(command.call)
    if agent is None or call is None:
        return not_found(center, command.call, command.agent)
    if call.agent == command.agent and call.state in (_CONNECTED, _WRAPUP, _COMPLETED):
        return None  # answered already, by this agent
    if command.call in agent.held:
        return None  # answered, then transferred onwards: it took effect
    if agent.presence is _LOGGED_OUT:
        return logged_out(agent)
    if call.state in _TERMINAL:
        return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
    if (call.state, "answer") not in TRANSITIONS:  # only a ringing offer is answered
        return reject(Code.call_not_offered, f"interaction {call.id!r} is {call.state.value}, not offered")
    if call.agent != agent.name:
        return reject(Code.not_offered_to_agent, f"interaction {call.id!r} is offered to another agent", field="agent")
    agent.offer = None
    counts = center._waiting_count[call.queue]
    counts[call.priority] -= 1  # counted while it waited and rang
    call.state = _moved(call, "answer")
    call.offer_expires_at = None
    call.answered_at = now
    if call.preferred_agent is not None:
        call.preferred_agent = None
    if call.preferred_until is not None:
        call.preferred_until = None
    call.last_offer_agent = name = agent.name
    call.last_offer_outcome = "answered"
    callback = call.callback
    if callback:
        center._forget_callback(call)
        call.caller = None
    queue_name = call.queue
    stats_key = call.queue_stats_key
    call_id = call.id
    agent.held[call_id] = Held(
        channel=call.channel, phase="connected", queue=queue_name, since=now, answered_at=now,
        stats_key=stats_key, first=call.handled_queue == "",
    )
    if callback:
        # A call-back reached: call-back work, apart from the callers' answers.
        agent.held[call_id].callback = True
        center._count_callback(call, _callback_reached)
        wait = now - call.queued_at
    else:
        wait = now - call.queued_at
        within = wait <= center._queues[queue_name].service_level_threshold
        center._count_answered(queue_name, stats_key, wait, within, False)
        if not call.counted:  # the center counts the first answer only (invariant 8)
            call.counted = True
            center_wait = now - call.arrived_at
            center_within = center_wait <= center.state.config.service_level_threshold
            center._count_answered(None, call.center_stats_key, center_wait, center_within, False)
    # The call-back is done: from here the caller is on the line like any other (if
    # transferred, max wait applies again and it is no pending call-back request).
    if callback:
        call.callback = False
    call.handled_queue = queue_name
    call.handled_key = stats_key
    center._touched_calls.add(call_id)
    center._events.append(CallAnswered(at=now, call=call_id, agent=name, queue=queue_name, wait=round(wait, 3)))
    center._agent_changed(agent, now)
    if not center._voice_only.get(name):
        center._dispatch_agent(agent, now)  # a chat agent may take more
    return None


def reject_offer(center: Center, command: Reject, now: float) -> Rejection | None:
    found = call_and_agent(center, command.call, command.agent)
    if isinstance(found, Rejection):
        return found
    call, agent = found
    if call.state is _OFFERED and call.agent == agent.name:
        center._withdraw_offer(call, "rejected", now)
        if agent.presence is _READY:
            agent.presence = _NOT_READY
            agent.reason = ""
            center._agent_changed(agent, now)
        center._dispatch_call(call, now)
        return None
    if call.last_offer_agent == agent.name and call.last_offer_outcome in ("rejected", "no_answer"):
        return None  # the offer already ended without an answer
    if agent.presence is _LOGGED_OUT:
        return logged_out(agent)
    if call.state in _TERMINAL:
        return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
    if call.state is _OFFERED:
        return reject(Code.not_offered_to_agent, f"interaction {call.id!r} is offered to another agent", field="agent")
    return reject(Code.call_not_offered, f"interaction {call.id!r} is {call.state.value}, not offered")


def abandon(center: Center, command: Abandon, now: float) -> Rejection | None:
    call = find_call(center, command.call)
    if isinstance(call, Rejection):
        return call
    if call.state is _ABANDONED:
        return None
    if call.state in _TERMINAL:
        return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
    if call.state in (_CONNECTED, _WRAPUP):
        return reject(Code.call_connected, f"interaction {call.id!r} was answered; use hangup")
    if call.state is _SCHEDULED:
        # Nobody is on the line: the caller left a request and hung up already.
        return reject(Code.call_not_waiting, f"interaction {call.id!r} is a scheduled call-back; nobody waits on the line")
    agent = None
    if call.state is _OFFERED:
        agent = center._withdraw_offer(call, "abandoned", now)
    if call.state is _WAITING:
        center._dequeue(call)
    wait = now - call.queued_at
    short_abandon = center.state.config.short_abandon_seconds
    # The queue's day and interval, then the center's once (invariant 8); adding False
    # changes nothing, so it is skipped.
    short = wait < short_abandon
    for counters in center._counters(call.queue, call.queue_stats_key):
        counters.abandoned += 1
        if short:
            counters.short_abandoned += 1
        counters.wait_abandoned_seconds += wait
    if not call.counted:
        call.counted = True
        center_wait = now - call.arrived_at
        center_short = center_wait < short_abandon
        for counters in center._counters(None, call.center_stats_key):
            counters.abandoned += 1
            if center_short:
                counters.short_abandoned += 1
            counters.wait_abandoned_seconds += center_wait
    center._finish(call, "abandon", now, "abandoned")
    center._emit(CallAbandoned(at=now, call=call.id, queue=call.queue, wait=round(wait, 3)))
    if agent is not None:
        center._dispatch_agent(agent, now)
    return None


def hangup(center: Center, command: Hangup, now: float) -> Rejection | None:
    call = center.state.interactions.get(command.call)
    if call is None:
        return reject(Code.unknown_call, f"no interaction {command.call!r}", field="call")
    if (call.state, "hangup") not in TRANSITIONS:  # only a conversation hangs up
        if call.state in (_WRAPUP, _COMPLETED):
            return None
        if call.state in _TERMINAL:
            return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
        return reject(Code.call_not_connected, f"interaction {call.id!r} is {call.state.value}; use abandon")
    end_leg(center, call, center.state.agents[call.agent or ""], now, transferred=False)
    call.state = _moved(call, "hangup")
    call.ended_at = now
    return None


def hold(center: Center, command: Hold, now: float) -> Rejection | None:
    found = connected_leg(center, command.call)
    if isinstance(found, Rejection):
        return found
    call, agent, held = found
    if held.hold_since is not None:
        return None  # on hold already
    held.hold_since = now
    center._touch(call, agent)
    center._emit(CallHeld(at=now, call=call.id, agent=agent.name))
    return None


def unhold(center: Center, command: Unhold, now: float) -> Rejection | None:
    found = connected_leg(center, command.call)
    if isinstance(found, Rejection):
        return found
    call, agent, held = found
    if held.hold_since is None:
        return None  # not on hold (resumed already)
    center._touch(call, agent)
    end_hold(center, call.id, agent.name, held, now)
    return None


def connected_leg(center: Center, call_id: str) -> tuple[Interaction, AgentRecord, Held] | Rejection:
    call = find_call(center, call_id)
    if isinstance(call, Rejection):
        return call
    if call.state in _TERMINAL or call.state is _WRAPUP:
        return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
    if call.state is not _CONNECTED:
        return reject(Code.call_not_connected, f"interaction {call.id!r} is {call.state.value}; only a conversation is held")
    agent = center.state.agents[call.agent or ""]
    return call, agent, agent.held[call.id]


def end_hold(center: Center, call_id: str, agent_name: str, held: Held, now: float) -> None:
    since = held.hold_since if held.hold_since is not None else now
    held.hold_seconds += now - since
    held.hold_since = None
    center._events.append(CallResumed(at=now, call=call_id, agent=agent_name, hold=round(now - since, 3)))


def end_leg(center: Center, call: Interaction, agent: AgentRecord, now: float, transferred: bool) -> None:
    call_id = call.id
    held = agent.held[call_id]
    held.phase = "wrapup"
    held.ended_at = now
    held.transferred = transferred
    if held.hold_since is not None:
        end_hold(center, call_id, agent.name, held, now)
    wrapup = center._queues[held.queue].wrapup_seconds
    if wrapup:
        held.wrap_deadline = deadline = now + wrapup
        center._push_timer(deadline, "wrapup", agent.name, call_id)
    center._touched_calls.add(call_id)
    name = agent.name
    center._events.append(CallEnded(at=now, call=call_id, agent=name, talk=round(now - held.answered_at, 3)))
    center._agent_changed(agent, now)
