"""Views and KPIs: what the API, the wallboard and the simulator show, as pure functions of a Center.

Every function here reads a `Center` (and the instant `now` at which the view is taken) and
returns msgspec structs; nothing here mutates the center, touches the clock or does I/O, so
the simulator can call the same functions on its virtual clock.

KPI definitions: one module, `acd.core.kpis`, defines every figure (service level on the
"answered" and "offered" bases, ASA, abandon rate after short abandons, AHT per channel, FCR
over first contacts, CSAT, occupancy, call-back figures); docs/kpis.md gives the formulas.
Callers and call-back tasks are counted apart.
Timestamps are Unix time in seconds; durations are seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

import msgspec

from acd.core import Center
from acd.core import kpis as kpi
from acd.core.calendar import DayClock
from acd.core.config import Capacity, load_zone
from acd.core.kpis import (
    Kpis as Kpis,  # defined in acd.core.kpis, re-exported for the API's readers
)
from acd.core.kpis import kpis as kpis
from acd.core.state import (
    AgentRecord,
    AgentState,
    CallState,
    Counters,
    DayStats,
    Interaction,
)

AGENT_STATES: tuple[str, ...] = tuple(state.value for state in AgentState)
WORKING_STATES = kpi.WORKING_STATES
AVAILABLE_STATES = kpi.AVAILABLE_STATES


class CallCreated(msgspec.Struct, kw_only=True):
    id: str
    state: str
    position: int
    ewt: float


class HeldView(msgspec.Struct, kw_only=True):
    call: str
    channel: str
    phase: str
    queue: str
    since: float
    answered_at: float
    ended_at: float | None
    wrap_deadline: float | None


class CallView(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    queue: str
    channel: str
    state: str
    agent: str | None
    priority: int
    caller: str
    attributes: dict[str, bool | int | str]
    arrived_at: float
    queued_at: float
    answered_at: float | None
    ended_at: float | None
    completed_at: float | None
    offer_expires_at: float | None
    due_at: float | None
    callback: bool
    warning: bool
    disposition: str | None
    abusive: bool
    survey: int | None
    reason: str
    transfers: int
    origin: str | None
    # Only while the interaction waits in its queue:
    position: int | None = None
    ewt: float | None = None
    # Only while the caller is on hold:
    on_hold_since: float | None = None


class AgentView(msgspec.Struct, kw_only=True):
    id: str
    display_name: str
    state: str
    state_since: float
    reason: str
    pending: str
    presence: str
    offer: str | None
    interactions: list[HeldView]
    skills: dict[str, int]
    capacity: Capacity
    queues: dict[str, int]
    recovering_until: float | None
    handled_today: int


class QueueView(msgspec.Struct, kw_only=True):
    id: str
    topic: str
    channels: list[str]
    external: bool
    waiting: int
    offered_now: int
    scheduled_callbacks: int
    longest_wait_seconds: float
    agents: dict[str, int]
    staffed: int
    service_level_threshold: float
    service_level_target: float
    day: str
    today: Kpis


class AgentTime(msgspec.Struct, kw_only=True):
    agents: int
    seconds: dict[str, float]
    occupancy: float | None


class StatsView(msgspec.Struct, kw_only=True):
    day: str
    time_zone: str
    at: float
    waiting: int
    agents: dict[str, int]
    center: Kpis
    queues: dict[str, Kpis]
    agent_time: AgentTime


# ---------------------------------------------------------------------------------- helpers


def local_day(center: Center, now: float) -> str:
    """The center's local date (ISO) at `now`: the day whose statistics are "today"."""
    return DayClock(center.config.time_zone).locate(now)[0]


def _day_stats(center: Center, day: str) -> DayStats:
    return center.state.stats.get(day) or DayStats()


class QueueLoad(msgspec.Struct, kw_only=True):
    waiting: int = 0
    offered: int = 0
    scheduled: int = 0
    longest_wait_seconds: float = 0.0
    callbacks_overdue: int = 0
    callback_longest_overdue_seconds: float = 0.0


def queue_loads(center: Center, now: float) -> dict[str, QueueLoad]:
    """Per queue: interactions waiting, ringing and scheduled, and the longest current wait.

    One pass over the live interactions; an offered call still holds its place in line, so it
    counts in the longest wait too.
    """
    loads = {queue.name: QueueLoad() for queue in center.config.queues}
    for call in center.live_interactions():
        load = loads.get(call.queue)
        if load is None:
            continue
        if call.state is CallState.WAITING:
            load.waiting += 1
        elif call.state is CallState.OFFERED:
            load.offered += 1
        elif call.state is CallState.SCHEDULED:
            load.scheduled += 1
            continue
        else:
            continue
        load.longest_wait_seconds = max(load.longest_wait_seconds, round(now - call.queued_at, 3))
        if call.callback:
            # A call-back that came due waits with `queued_at` = its due time: how late it is.
            load.callbacks_overdue += 1
            load.callback_longest_overdue_seconds = max(load.callback_longest_overdue_seconds, round(now - call.queued_at, 3))
    return loads


def serving_agents(center: Center, queue: str) -> list[AgentRecord]:
    """The records of the agents who serve `queue`."""
    records = center.state.agents
    return [records[name] for name in center.queue_agents(queue) if name in records]


def agents_by_state(records: Iterable[AgentRecord]) -> dict[str, int]:
    counts = dict.fromkeys(AGENT_STATES, 0)
    for record in records:
        counts[record.state.value] += 1
    return counts


# ---------------------------------------------------------------------------------- views


def call_created(center: Center, call_id: str, queued_position: int | None = None, queued_ewt: float | None = None) -> CallCreated:
    """The reply to POST /v1/calls: the arrival's position and EWT, from its `CallQueued`
    event when the caller of this function has one, else computed from the current state."""
    call = center.state.interactions[call_id]
    if queued_position is None or queued_ewt is None:
        queued_position, queued_ewt = _position(center, call)
    return CallCreated(id=call.id, state=call.state.value, position=queued_position, ewt=queued_ewt)


def _position(center: Center, call: Interaction) -> tuple[int, float]:
    if call.state is not CallState.WAITING or center.queue(call.queue) is None:
        return 0, 0.0
    position = center.position(call.id)
    return position, center.ewt(call.queue, position)


def call_view(center: Center, call_id: str) -> CallView | None:
    call = center.state.interactions.get(call_id)
    if call is None:
        return None
    view = CallView(
        id=call.id, queue=call.queue, channel=call.channel, state=call.state.value, agent=call.agent,
        priority=call.priority, caller=call.caller_masked, attributes=call.attributes,
        arrived_at=call.arrived_at, queued_at=call.queued_at, answered_at=call.answered_at,
        ended_at=call.ended_at, completed_at=call.completed_at, offer_expires_at=call.offer_expires_at,
        due_at=call.due_at, callback=call.callback, warning=call.warning, disposition=call.disposition,
        abusive=call.abusive, survey=call.survey, reason=call.reason, transfers=call.transfers,
        origin=call.origin,
    )
    if call.state is CallState.WAITING:
        view.position, view.ewt = _position(center, call)
    elif call.state is CallState.CONNECTED and call.agent is not None:
        record = center.state.agents.get(call.agent)
        held = record.held.get(call.id) if record is not None else None
        if held is not None and held.hold_since is not None:
            view.on_hold_since = held.hold_since
    return view


def agent_view(center: Center, name: str) -> AgentView | None:
    record = center.state.agents.get(name)
    if record is None:
        return None
    config = next((agent for agent in center.config.agents if agent.name == name), None)
    if config is None:
        return None
    today = center.state.stats.get(local_day(center, center.now))
    handled = today.agents[name].handled if today is not None and name in today.agents else 0
    return AgentView(
        id=name, display_name=config.display_name, state=record.state.value, state_since=record.state_since,
        reason=record.shown_reason or record.reason, pending=record.pending, presence=record.presence.value,
        offer=record.offer,
        interactions=[
            HeldView(
                call=call_id, channel=held.channel, phase=held.phase, queue=held.queue, since=held.since,
                answered_at=held.answered_at, ended_at=held.ended_at, wrap_deadline=held.wrap_deadline,
            )
            for call_id, held in record.held.items()
        ],
        skills=dict(config.skills), capacity=config.capacity, queues=center.agent_levels(name),
        recovering_until=record.recovering_until, handled_today=handled,
    )


def agents_view(center: Center) -> list[AgentView]:
    views = (agent_view(center, agent.name) for agent in center.config.agents)
    return [view for view in views if view is not None]


def queue_view(center: Center, name: str, now: float, loads: dict[str, QueueLoad] | None = None, day: str | None = None) -> QueueView | None:
    queue = center.queue(name)
    if queue is None:
        return None
    loads = loads if loads is not None else queue_loads(center, now)
    load = loads.get(name, QueueLoad())
    day = day or local_day(center, now)
    queue_day = _day_stats(center, day).queues.get(name)
    serving = serving_agents(center, name)
    return QueueView(
        id=name, topic=queue.topic, channels=list(queue.channels), external=queue.external,
        waiting=load.waiting, offered_now=load.offered, scheduled_callbacks=load.scheduled,
        longest_wait_seconds=load.longest_wait_seconds, agents=agents_by_state(serving),
        staffed=center.staffed(name), service_level_threshold=queue.service_level_threshold,
        service_level_target=queue.service_level_target, day=day,
        today=kpis(queue_day.total if queue_day is not None else Counters()),
    )


def queues_view(center: Center, now: float) -> list[QueueView]:
    loads = queue_loads(center, now)
    day = local_day(center, now)
    views = (queue_view(center, queue.name, now, loads, day) for queue in center.config.queues)
    return [view for view in views if view is not None]


def agent_time(center: Center, day: str, now: float) -> AgentTime:
    """Seconds the agents spent in each state on `day`, and the occupancy.

    The core books time into a state when the agent leaves it; for today the time in the
    current state so far is added, so the figure does not lag by a whole break.
    """
    stats = _day_stats(center, day)
    seconds = dict.fromkeys(AGENT_STATES, 0.0)
    for agent_day in stats.agents.values():
        for state, spent in agent_day.seconds.items():
            seconds[state] = seconds.get(state, 0.0) + spent
    if day == local_day(center, now):
        day_start = _day_start(center.config.time_zone, now)
        for record in center.state.agents.values():
            if record.state is AgentState.LOGGED_OUT:
                continue
            since = max(record.state_since, day_start)
            if now > since:
                seconds[record.state.value] += now - since
    return AgentTime(
        agents=len(stats.agents), seconds={state: round(value, 1) for state, value in seconds.items()},
        occupancy=kpi.occupancy(seconds),
    )


def _day_start(time_zone: str, now: float) -> float:
    local = dt.datetime.fromtimestamp(now, load_zone(time_zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def stats_view(center: Center, now: float, day: str | None = None) -> StatsView:
    day = day or local_day(center, now)
    stats = _day_stats(center, day)
    loads = queue_loads(center, now)
    return StatsView(
        day=day, time_zone=center.config.time_zone, at=now,
        waiting=sum(load.waiting + load.offered for load in loads.values()),
        agents=agents_by_state(center.state.agents.values()),
        center=kpis(stats.center.total),
        queues={queue.name: kpis(stats.queues[queue.name].total if queue.name in stats.queues else Counters()) for queue in center.config.queues},
        agent_time=agent_time(center, day, now),
    )


class IntervalView(msgspec.Struct, kw_only=True):
    day: str
    interval: int                    # 0..95, the 15-minute interval of the local day
    start: str                       # local time HH:MM
    kpis: Kpis


class IntervalsView(msgspec.Struct, kw_only=True):
    queue: str | None                # None: the whole center
    first: str
    last: str
    intervals: list[IntervalView]    # only intervals with activity, in time order


class AgentStats(msgspec.Struct, kw_only=True):
    id: str
    handled: int
    aht_seconds: float | None
    aht_by_channel: dict[str, float | None]
    hold_seconds: float
    fcr: float | None
    first_contacts: int
    not_recorded: int
    csat: float | None
    surveys: int
    seconds: dict[str, float]        # time per shown state
    not_ready_reasons: dict[str, float]  # time not ready, per reason
    occupancy: float | None


class AgentStatsView(msgspec.Struct, kw_only=True):
    day: str
    agents: list[AgentStats]


def intervals_view(center: Center, first: str, last: str, queue: str | None = None) -> IntervalsView:
    """The 15-minute rows of the center (or one queue) for the local days first..last."""
    rows: list[IntervalView] = []
    for day in sorted(day for day in center.state.stats if first <= day <= last):
        stats = center.state.stats[day]
        queue_day = stats.center if queue is None else stats.queues.get(queue)
        if queue_day is None:
            continue
        for interval in sorted(queue_day.intervals):
            minutes = interval * 15
            rows.append(IntervalView(day=day, interval=interval, start=f"{minutes // 60:02d}:{minutes % 60:02d}",
                                     kpis=kpis(queue_day.intervals[interval])))
    return IntervalsView(queue=queue, first=first, last=last, intervals=rows)


def agent_stats_view(center: Center, now: float, day: str | None = None) -> AgentStatsView:
    """Per agent on `day` (default today): the legs they wrapped up, surveys, time per state and reason."""
    day = day or local_day(center, now)
    stats = _day_stats(center, day)
    today = day == local_day(center, now)
    day_start = _day_start(center.config.time_zone, now) if today else 0.0
    agents: list[AgentStats] = []
    for config in center.config.agents:
        record = stats.agents.get(config.name)
        counters = record.counters if record is not None else Counters()
        seconds = dict(record.seconds) if record is not None else {}
        reasons = dict(record.reasons) if record is not None else {}
        live = center.state.agents.get(config.name)
        if today and live is not None and live.state is not AgentState.LOGGED_OUT:
            since = max(live.state_since, day_start)
            if now > since:  # the time in the current state so far (booked when it ends)
                seconds[live.state.value] = seconds.get(live.state.value, 0.0) + now - since
                if live.state is AgentState.NOT_READY:
                    reasons[live.shown_reason] = reasons.get(live.shown_reason, 0.0) + now - since
        figures = kpis(counters)
        agents.append(AgentStats(
            id=config.name, handled=figures.handled, aht_seconds=figures.aht_seconds, aht_by_channel=figures.aht_by_channel,
            hold_seconds=figures.hold_seconds, fcr=figures.fcr, first_contacts=figures.first_contacts,
            not_recorded=figures.not_recorded, csat=figures.csat, surveys=figures.surveys,
            seconds={state: round(value, 1) for state, value in seconds.items()},
            not_ready_reasons={reason: round(value, 1) for reason, value in reasons.items()},
            occupancy=kpi.occupancy(seconds),
        ))
    return AgentStatsView(day=day, agents=agents)


class CallbackTask(msgspec.Struct, kw_only=True):
    id: str
    queue: str
    state: str                       # scheduled (not due yet) | waiting (due) | offered (ringing at `agent`)
    due_at: float | None
    requested_at: float | None
    source: str                      # waiting | after_hours | promised
    origin: str | None
    agent: str | None
    attempts: int
    caller: str                      # masked; the number itself only through POST /v1/calls/{id}/dial


class DialView(msgspec.Struct, kw_only=True):
    id: str
    number: str
    attempt: int


class AttemptBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    outcome: Literal["reached", "no_answer", "busy", "wrong_number"]


def callbacks_view(center: Center) -> list[CallbackTask]:
    """The call-backs the center owes: scheduled, due (waiting) and being dialled (offered)."""
    owed = (CallState.SCHEDULED, CallState.WAITING, CallState.OFFERED)
    return [
        CallbackTask(
            id=call.id, queue=call.queue, state=call.state.value, due_at=call.due_at, requested_at=call.requested_at,
            source=call.callback_source, origin=call.origin, agent=call.agent, attempts=call.attempts,
            caller=call.caller_masked,
        )
        for call in center.live_interactions()
        if call.callback and call.state in owed
    ]


# ---------------------------------------------------------------------------------- export rows

EXPORT_STATES = (CallState.COMPLETED, CallState.ABANDONED, CallState.TRANSFERRED, CallState.CLOSED, CallState.SCHEDULED)
INTERACTION_COLUMNS = [
    "id", "date", "arrived_at", "answered_at", "ended_at", "completed_at", "outcome", "queue", "agent", "channel",
    "caller", "disposition", "survey", "wait_seconds", "talk_seconds", "callback", "transfers",
    "kind", "caller_outcome", "center_wait_seconds", "after_hours", "origin", "callback_source", "requested_at",
    "callback_attempts", "callback_reached", "callback_delay_seconds", "legs", "hold_seconds",
]
LEG_COLUMNS = [
    "id", "leg", "date", "agent", "queue", "channel", "answered_at", "ended_at", "completed_at", "talk_seconds",
    "hold_seconds", "wrapup_seconds", "disposition", "callback", "first_contact",
]


def _flat_kpis(figures: Kpis) -> dict[str, object]:
    row: dict[str, object] = {}
    for name, value in msgspec.structs.asdict(figures).items():
        if name == "aht_by_channel":
            for channel in kpi.CHANNELS:
                row[f"aht_{channel}_seconds"] = value.get(channel, "")
        else:
            row[name] = "" if value is None else value
    return row


KPI_COLUMNS = list(_flat_kpis(kpis(Counters())))
INTERVAL_ROW_COLUMNS = ["date", "interval", "start", "queue", *KPI_COLUMNS]
AGENT_ROW_COLUMNS = [
    "date", "agent", "handled", "aht_seconds", *(f"aht_{channel}_seconds" for channel in kpi.CHANNELS), "hold_seconds",
    "fcr", "first_contacts", "not_recorded", "csat", "surveys", "occupancy", *(f"{state}_seconds" for state in AGENT_STATES),
    "not_ready_reasons",
]


def interval_export_rows(center: Center) -> list[dict[str, object]]:
    """The export's interval rows: every 15-minute interval with activity, center ("") and per queue."""
    rows: list[dict[str, object]] = []
    for day in sorted(center.state.stats):
        for queue in [None, *sorted(center.state.stats[day].queues)]:
            for row in intervals_view(center, day, day, queue).intervals:
                rows.append({"date": row.day, "interval": row.interval, "start": row.start, "queue": queue or "",
                             **_flat_kpis(row.kpis)})
    return rows


def agent_export_rows(center: Center) -> list[dict[str, object]]:
    """The export's agent rows: one per agent and day (as GET /v1/stats/agents)."""
    rows: list[dict[str, object]] = []
    for day in sorted(center.state.stats):
        for agent in agent_stats_view(center, center.now, day).agents:
            if not agent.handled and not agent.seconds:
                continue
            rows.append({
                "date": day, "agent": agent.id, "handled": agent.handled, "aht_seconds": agent.aht_seconds or "",
                **{f"aht_{channel}_seconds": agent.aht_by_channel.get(channel) or "" for channel in kpi.CHANNELS},
                "hold_seconds": agent.hold_seconds, "fcr": "" if agent.fcr is None else agent.fcr,
                "first_contacts": agent.first_contacts, "not_recorded": agent.not_recorded,
                "csat": "" if agent.csat is None else agent.csat, "surveys": agent.surveys,
                "occupancy": "" if agent.occupancy is None else agent.occupancy,
                **{f"{state}_seconds": agent.seconds.get(state, 0.0) for state in AGENT_STATES},
                "not_ready_reasons": ";".join(f"{reason or '-'}={seconds:g}" for reason, seconds in sorted(agent.not_ready_reasons.items())),
            })
    return rows


def _iso(at: float | None, zone: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(at, zone).isoformat(timespec="seconds") if at else ""


def caller_outcome(call: Interaction) -> str:
    """A caller's one outcome at the center (docs/kpis.md); "" for a call-back task.

    answered | abandoned | callback_requested (from the line) | after_hours | merged (a request
    from the line joined an earlier one) | sent_out (to an external queue before an answer) |
    in_progress.
    """
    if call.origin is not None:
        return ""
    if call.after_hours:
        return "after_hours"
    if call.callback_source == "waiting":
        return "callback_requested"
    if call.state is CallState.ABANDONED:
        return "abandoned"
    if call.state is CallState.CLOSED and call.reason == "merged":
        return "merged"
    if call.legs or call.answered_at is not None:
        return "answered"
    if call.state is CallState.TRANSFERRED:
        return "sent_out"
    return "in_progress"


def interaction_rows(center: Center) -> list[dict[str, object]]:
    """The export's interaction rows: every finished interaction and every call-back still owed.

    Times are local ISO strings; durations are seconds (3 decimals), enough to recompute every
    KPI of docs/kpis.md from the rows (tests/test_reconciliation.py does).
    """
    zone = load_zone(center.config.time_zone)
    rows: list[dict[str, object]] = []
    for call in center.state.interactions.values():
        if call.state not in EXPORT_STATES:
            continue
        wait_end = call.answered_at if call.answered_at is not None else call.completed_at
        first_answer = min((leg.answered_at for leg in call.legs), default=call.answered_at)
        outcome = caller_outcome(call)
        if outcome == "answered" and first_answer is not None:
            center_wait: float | str = round(first_answer - call.arrived_at, 3)
        elif outcome == "abandoned" and call.completed_at is not None:
            center_wait = round(call.completed_at - call.arrived_at, 3)
        else:
            center_wait = ""
        reached = [leg for leg in call.legs if leg.callback]
        requested = call.requested_at
        rows.append({
            "id": call.id,
            "date": dt.datetime.fromtimestamp(call.arrived_at, zone).date().isoformat(),
            "arrived_at": _iso(call.arrived_at, zone),
            "answered_at": _iso(call.answered_at, zone),
            "ended_at": _iso(call.ended_at, zone),
            "completed_at": _iso(call.completed_at, zone),
            "outcome": call.state.value,
            "queue": call.handled_queue or call.queue,
            "agent": call.agent or "",
            "channel": call.channel,
            "caller": call.caller_masked,
            "caller_hash": call.caller_hash,
            "disposition": call.disposition or "",
            "survey": call.survey if call.survey is not None else "",
            "wait_seconds": round((wait_end or call.arrived_at) - call.queued_at, 1) if wait_end else "",
            "talk_seconds": round(call.ended_at - call.answered_at, 1) if call.ended_at and call.answered_at else "",
            "callback": call.callback,
            "transfers": call.transfers,
            "kind": "callback_task" if call.origin is not None else "caller",
            "caller_outcome": outcome,
            "center_wait_seconds": center_wait,
            "after_hours": call.after_hours,
            "origin": call.origin or "",
            "callback_source": call.callback_source,
            "requested_at": _iso(requested, zone),
            "callback_attempts": call.attempts,
            "callback_reached": bool(reached),
            "callback_delay_seconds": round(reached[0].completed_at - requested, 3) if reached and requested is not None else "",
            "legs": len(call.legs),
            "hold_seconds": round(sum(leg.hold_seconds for leg in call.legs), 3),
        })
    return rows


def leg_rows(center: Center) -> list[dict[str, object]]:
    """The export's leg rows: one per agent who handled an interaction, with talk, hold and wrap-up."""
    zone = load_zone(center.config.time_zone)
    rows: list[dict[str, object]] = []
    for call in center.state.interactions.values():
        if not call.legs:
            continue
        first = min(call.legs, key=lambda leg: leg.answered_at)
        date = dt.datetime.fromtimestamp(call.arrived_at, zone).date().isoformat()
        for number, leg in enumerate(sorted(call.legs, key=lambda leg: leg.answered_at), start=1):
            rows.append({
                "id": call.id, "leg": number, "date": date, "agent": leg.agent, "queue": leg.queue, "channel": leg.channel,
                "answered_at": _iso(leg.answered_at, zone), "ended_at": _iso(leg.ended_at, zone),
                "completed_at": _iso(leg.completed_at, zone),
                "talk_seconds": round(leg.ended_at - leg.answered_at - leg.hold_seconds, 3),
                "hold_seconds": round(leg.hold_seconds, 3),
                "wrapup_seconds": round(leg.completed_at - leg.ended_at, 3),
                "disposition": leg.disposition, "callback": leg.callback,
                "first_contact": leg is first and call.origin is None,
            })
    return rows
