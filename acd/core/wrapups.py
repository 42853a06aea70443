"""The end of a conversation: the wrap-up (disposition, abuse flag, promised call-back), its
timeout, and the caller's survey. The handled counters are written here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import _COMPLETED, _LOGGED_OUT, _TERMINAL, _WRAPUP
from .callbacks import schedule_callback
from .commands import Survey, WrapUp
from .conversations import find_call, logged_out, not_found
from .events import CallWrappedUp, SurveyRecorded
from .rejections import Code, Rejection, reject
from .state import AgentRecord, Interaction, Leg

if TYPE_CHECKING:
    from .center import Center

AHT_SMOOTHING = 0.1  # weight of the newest handling time in the per-queue moving average


def wrap_up(center: Center, command: WrapUp, now: float) -> Rejection | None:
    agent = center.state.agents.get(command.agent)
    call = center.state.interactions.get(command.call)
    if agent is None or call is None:
        return not_found(center, command.call, command.agent)
    held = agent.held.get(call.id)
    if held is None:
        same = call.disposition == command.disposition and call.abusive == command.abusive
        if call.state is _COMPLETED and call.agent == agent.name and same:
            return None  # wrapped up already, with these values
        # Otherwise refused; the reason is the first that applies, in Code's order.
        if agent.presence is _LOGGED_OUT:
            return logged_out(agent)
        if call.state in _TERMINAL and not (call.state is _COMPLETED and call.agent == agent.name):
            return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
        if call.state is not _COMPLETED:
            return reject(Code.not_handled_by_agent, f"agent {agent.name!r} holds no interaction {call.id!r}", field="agent")
        return reject(Code.already_wrapped_up, f"interaction {call.id!r} was wrapped up as {call.disposition}")
    if held.phase != "wrapup":
        return reject(Code.call_not_ended, f"interaction {call.id!r} is still connected; hang up first")
    if command.disposition == "callback" and command.callback_at is None:
        return reject(Code.callback_time_missing, "disposition callback needs callback_at", field="callback_at")
    callback_at = None if command.callback_at is None else float(command.callback_at)
    complete_wrapup(center, call, agent, command.disposition, command.abusive, callback_at, now)
    return None


def complete_wrapup(
    center: Center, call: Interaction, agent: AgentRecord, disposition: str, abusive: bool,
    callback_at: float | None, now: float, timed_out: bool = False,
) -> None:
    call_id = call.id
    name = agent.name
    held = agent.held.pop(call_id)
    ended_at = held.ended_at or now
    talk = ended_at - held.answered_at
    wrapup = now - ended_at
    resolved = disposition == "resolved"
    # Counted where this agent's leg was answered: a call transferred on may have been
    # answered in another queue since (and `call.handled_*` moved there).
    queue_name = held.queue
    handled_key = held.stats_key if held.stats_key[0] else call.handled_key
    cache = center._counter_cache
    center_key = call.center_stats_key
    # Written out for the four records (the queue's day and interval, the center's day
    # and interval); adding zero or False changes nothing, so it is skipped.
    total, counters = cache.get((queue_name, handled_key)) or center._counters(queue_name, handled_key)
    center_total, center_counters = cache.get((None, center_key)) or center._counters(None, center_key)
    total.handled += 1
    counters.handled += 1
    center_total.handled += 1
    center_counters.handled += 1
    total.talk_seconds += talk
    counters.talk_seconds += talk
    center_total.talk_seconds += talk
    center_counters.talk_seconds += talk
    if wrapup:
        total.wrapup_seconds += wrapup
        counters.wrapup_seconds += wrapup
        center_total.wrapup_seconds += wrapup
        center_counters.wrapup_seconds += wrapup
    recorded = disposition != "not_recorded"
    # FCR's base: the first leg of a citizen's request (not a promised call-back task).
    first = held.first and call.origin is None
    channel = held.channel
    handle = talk + wrapup  # talk runs from answer to hang-up, holds included
    hold = held.hold_seconds
    if center._agent_days_start <= now < center._agent_days_end and name in center._agent_days:
        agent_day = center._agent_days[name]
    else:
        agent_day = center._agent_day(name, now)
    agent_day.handled += 1
    agent_counters = agent_day.counters
    agent_counters.handled += 1
    agent_counters.talk_seconds += talk
    agent_counters.wrapup_seconds += wrapup
    for record in (total, counters, center_total, center_counters, agent_counters):
        if hold:
            record.hold_seconds += hold
        if recorded:
            record.dispositions += 1
            if resolved:
                record.resolved += 1
            if first:
                record.first_contacts += 1
                if resolved:
                    record.first_resolved += 1
        else:
            record.not_recorded += 1
        by_channel = record.channel_handled
        if not by_channel:
            record.channel_handled = by_channel = {}
            record.channel_handle_seconds = {}
        by_channel[channel] = by_channel.get(channel, 0) + 1
        seconds = record.channel_handle_seconds
        seconds[channel] = seconds.get(channel, 0.0) + handle
        if held.callback:
            record.callbacks_completed += 1
            record.callback_delay_seconds += now - (call.requested_at if call.requested_at is not None else call.arrived_at)
    legs = call.legs
    if not legs:
        call.legs = legs = []
    legs.append(Leg(
        agent=name, queue=queue_name, channel=channel, answered_at=held.answered_at, ended_at=ended_at,
        completed_at=now, disposition=disposition, callback=held.callback, hold_seconds=hold,
    ))
    aht = center.state.aht
    previous = aht.get(queue_name) or center._queues[queue_name].aht_seconds
    aht[queue_name] = previous + AHT_SMOOTHING * (talk + wrapup - previous)
    agent.handled += 1
    sealed: tuple[bytes, str, str] | None = None
    if disposition == "callback" and callback_at is not None and call.caller_key is not None and call.caller_sealed is not None:
        # The task takes the sealed number with it: its key is held before the origin
        # lets go of it (a call-back that merges into a pending one releases it again).
        sealed = (call.caller_sealed, call.caller_key, call.sealed_for or call.id)
        center._key_refs[call.caller_key] = center._key_refs.get(call.caller_key, 0) + 1
    if call.state is _WRAPUP and call.agent == name:
        call.disposition = disposition
        if call.abusive is not abusive:
            call.abusive = abusive
        center._finish(call, "wrap_up", now)
    else:
        center._touched_calls.add(call_id)
    center._events.append(
        CallWrappedUp(at=now, call=call_id, agent=name, disposition=disposition, abusive=abusive, timed_out=timed_out)
    )
    if abusive:
        center.state.abuse.setdefault(call.caller_hash, []).append(now)
        recovery = center.state.config.abuse.recovery_seconds
        if recovery:
            agent.recovering_until = now + recovery
            center._push_timer(agent.recovering_until, "recovery", name)
    if disposition == "callback" and callback_at is not None:
        schedule_callback(center, call, agent, queue_name, callback_at, now, sealed)
    if agent.pending:
        center._apply_pending(agent, now)
    agent.available_since = now
    center._agent_changed(agent, now)
    center._dispatch_agent(agent, now)


def on_wrapup_timeout(center: Center, agent_name: str, call_id: str, now: float) -> None:
    agent = center.state.agents[agent_name]
    call = center.state.interactions[call_id]
    held = agent.held[call_id]
    # The agent recorded nothing: "not recorded", never "unresolved" (docs/kpis.md, FCR).
    disposition = "transferred" if held.transferred else "not_recorded"
    complete_wrapup(center, call, agent, disposition, False, None, now, timed_out=True)


def survey(center: Center, command: Survey, now: float) -> Rejection | None:
    call = find_call(center, command.call)
    if isinstance(call, Rejection):
        return call
    if call.survey is not None:
        if call.survey == command.score:
            return None
        return reject(Code.survey_already_recorded, f"interaction {call.id!r} already has score {call.survey}", field="score")
    if call.answered_at is None:
        return reject(Code.call_not_answered, f"interaction {call.id!r} was never answered")
    call.survey = score = command.score
    satisfied = score >= 4
    # The queue's day and interval where it was handled, then the center's; adding False
    # changes nothing, so it is skipped.
    cache = center._counter_cache
    handled = (call.handled_queue, call.handled_key)
    center_key = (None, call.center_stats_key)
    for counters in (*(cache.get(handled) or center._counters(*handled)), *(cache.get(center_key) or center._counters(*center_key))):
        counters.surveys += 1
        counters.survey_points += score
        if satisfied:
            counters.satisfied += 1
    if call.agent is not None and call.agent in center.state.agents:
        agent_counters = center._agent_day(call.agent, now).counters
        agent_counters.surveys += 1
        agent_counters.survey_points += score
        if satisfied:
            agent_counters.satisfied += 1
    call_id = call.id
    center._touched_calls.add(call_id)
    center._events.append(SurveyRecorded(at=now, call=call_id, agent=call.agent, score=score))
    return None
