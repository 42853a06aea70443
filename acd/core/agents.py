"""Agents: the state shown to supervisors (derived from presence and held work, with the time
spent in each), and the presence commands login, ready, not ready and logout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    _LOGGED_OUT,
    _NOT_READY,
    _READY,
    _SHOWN_BUSY,
    _SHOWN_LOGGED_OUT,
    _SHOWN_NOT_READY,
    _SHOWN_OFFERED,
    _SHOWN_READY,
    _SHOWN_RECOVERING,
    _SHOWN_WRAPUP,
)
from .commands import Login, Logout, NotReady, Ready
from .conversations import find_agent, logged_out
from .events import AgentChanged
from .indices import Indices
from .rejections import Rejection
from .state import AgentRecord, AgentState

if TYPE_CHECKING:
    from .center import Center


class Agents(Indices):
    """An agent's shown state, derived from presence and held work, and the time spent in it."""

    def _agent_changed(self, agent: AgentRecord, now: float) -> None:
        """Re-derive the agent's shown state; account the time spent in the old one."""
        name = agent.name
        self._touched_agents.add(name)
        self._unindexed[name] = None  # re-indexed before anyone reads the free-agent heaps
        # The shown state follows from presence and held work, in this order of precedence.
        presence = agent.presence
        reason = ""
        if presence is _LOGGED_OUT:
            state = _SHOWN_LOGGED_OUT
        elif agent.offer is not None:
            state = _SHOWN_OFFERED
        elif agent.held:
            state = _SHOWN_WRAPUP
            for held in agent.held.values():
                if held.phase == "connected":
                    state = _SHOWN_BUSY
                    break
        elif agent.recovering_until is not None:
            state = _SHOWN_RECOVERING
        elif presence is _NOT_READY:
            state = _SHOWN_NOT_READY
            reason = agent.reason
        else:
            state = _SHOWN_READY
        previous = agent.state
        if state is previous and reason == agent.shown_reason:
            return
        self._shown(agent, previous, state, reason, now)

    def _shown(self, agent: AgentRecord, previous: AgentState, state: AgentState, reason: str, now: float) -> None:
        """Count the time spent in the previous shown state, show the new one, emit the event."""
        name = agent.name
        if previous is not _SHOWN_LOGGED_OUT:
            if self._agent_days_start <= now < self._agent_days_end:
                record = self._agent_days.get(name)
                if record is None:
                    record = self._agent_day(name, now)
            else:
                record = self._agent_day(name, now)
            seconds = record.seconds
            # `_value_`, not `.value`: the enum property costs more than the rest of this line.
            key = previous._value_
            spent = now - agent.state_since
            seconds[key] = seconds.get(key, 0.0) + spent
            if previous is _SHOWN_NOT_READY:
                reasons = record.reasons
                reason_key = agent.shown_reason
                reasons[reason_key] = reasons.get(reason_key, 0.0) + spent
        if (previous is _SHOWN_NOT_READY) is not (state is _SHOWN_NOT_READY):
            # On a break or back from one: the queues' EWT counts only agents not on a break.
            delta = 1 if state is _SHOWN_NOT_READY else -1
            on_break = self._on_break
            for queue_name, _level in self._agent_queues.get(name, ()):
                on_break[queue_name] = on_break.get(queue_name, 0) + delta
                if self.waiting_count(queue_name):  # a line to announce to
                    self._moved[queue_name] = None
        agent.state = state
        agent.state_since = now
        if agent.shown_reason != reason:
            agent.shown_reason = reason
        self._events.append(AgentChanged(at=now, agent=name, state=state._value_, reason=reason, pending=agent.pending))

    def _apply_pending(self, agent: AgentRecord, now: float) -> None:
        """Deferred not-ready or logout takes effect once the agent holds nothing."""
        if agent.held or agent.offer is not None or not agent.pending:
            return
        if agent.pending == "logout":
            self._set_logged_out(agent)
        else:
            agent.presence = _NOT_READY
            agent.reason = agent.pending_reason
        agent.pending = ""
        agent.pending_reason = ""

    def _set_logged_out(self, agent: AgentRecord) -> None:
        if agent.presence is not _LOGGED_OUT:
            for queue_name, _level in self._agent_queues.get(agent.name, ()):
                self._staffed[queue_name] -= 1
        agent.presence = _LOGGED_OUT
        agent.reason = ""


def login(center: Center, command: Login, now: float) -> Rejection | None:
    agent = find_agent(center, command.agent)
    if isinstance(agent, Rejection):
        return agent
    if agent.presence is not _LOGGED_OUT:
        return None
    agent.presence = _NOT_READY
    agent.reason = "login"
    for queue_name, _level in center._agent_queues.get(agent.name, ()):
        center._staffed[queue_name] = center._staffed.get(queue_name, 0) + 1
    center._agent_changed(agent, now)
    return None


def ready(center: Center, command: Ready, now: float) -> Rejection | None:
    agent = find_agent(center, command.agent)
    if isinstance(agent, Rejection):
        return agent
    if agent.presence is _LOGGED_OUT:
        return logged_out(agent)
    if agent.presence is _READY and not agent.pending:
        return None
    if agent.presence is not _READY:
        agent.available_since = now
    agent.presence = _READY
    agent.reason = ""
    agent.pending = ""
    agent.pending_reason = ""
    center._agent_changed(agent, now)
    center._dispatch_agent(agent, now)
    return None


def not_ready(center: Center, command: NotReady, now: float) -> Rejection | None:
    agent = find_agent(center, command.agent)
    if isinstance(agent, Rejection):
        return agent
    if agent.presence is _LOGGED_OUT:
        return logged_out(agent)
    if agent.held:
        if agent.pending == "not_ready" and agent.pending_reason == command.reason:
            return None
        withdrawn = None
        if agent.offer is not None:
            withdrawn = center.state.interactions[agent.offer]
            center._withdraw_offer(withdrawn, "agent_left", now)
        # The deferral is recorded before the withdrawn call is routed again, so that the
        # call cannot be offered straight back to the agent who is leaving.
        agent.pending = "not_ready"
        agent.pending_reason = command.reason
        center._agent_changed(agent, now)
        center._emit(AgentChanged(at=now, agent=agent.name, state=agent.state._value_, pending="not_ready", reason=command.reason))
        if withdrawn is not None:
            center._dispatch_call(withdrawn, now)
        return None
    if agent.presence is _NOT_READY and agent.reason == command.reason and agent.offer is None:
        return None
    agent.presence = _NOT_READY
    agent.reason = command.reason
    agent.pending = ""
    if agent.offer is not None:
        call = center.state.interactions[agent.offer]
        center._withdraw_offer(call, "agent_left", now)
        center._dispatch_call(call, now)
    center._agent_changed(agent, now)
    return None


def logout(center: Center, command: Logout, now: float) -> Rejection | None:
    agent = find_agent(center, command.agent)
    if isinstance(agent, Rejection):
        return agent
    if agent.presence is _LOGGED_OUT:
        return None
    if agent.held and agent.pending == "logout":
        return None
    withdrawn = None
    if agent.offer is not None:
        withdrawn = center.state.interactions[agent.offer]
        center._withdraw_offer(withdrawn, "agent_left", now)
    # The logout (or its deferral) is recorded before the withdrawn call is routed again,
    # so that the call cannot be offered straight back to the agent who is leaving.
    if agent.held:
        agent.pending = "logout"
        agent.pending_reason = ""
        center._agent_changed(agent, now)
        center._emit(AgentChanged(at=now, agent=agent.name, state=agent.state._value_, pending="logout"))
    else:
        center._set_logged_out(agent)
        agent.pending = ""
        agent.pending_reason = ""
        center._agent_changed(agent, now)
    if withdrawn is not None:
        center._dispatch_call(withdrawn, now)
    return None


def on_recovery_end(center: Center, agent_name: str, _detail: str, now: float) -> None:
    agent = center.state.agents[agent_name]
    agent.recovering_until = None
    agent.available_since = now
    center._agent_changed(agent, now)
    center._dispatch_agent(agent, now)
