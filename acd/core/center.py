"""The routing core: one deterministic state machine for the whole center.

Theory of operation
-------------------
Inputs are commands (`acd.core.commands`) with a timestamp, and `Tick`, which says that time
has passed. `Center.apply(command, now)` either returns the list of events the command
produced, or a named `Rejection` and leaves the state untouched. Nothing else changes the
state: no clock, no randomness, no I/O. `next_deadline()` tells the driver when the next
timer (ring timeout, wrap-up end, recovery end, call-back due, skill relaxation, overflow)
falls due, so that it sends a `Tick` then.

Routing happens inside the command that makes it possible: an arrival is offered at once to
a free agent; an agent who becomes free is offered the best waiting interaction. So after
every command, no free agent and no interaction that agent may take coexist (docs/design.md
invariant 5), except while that agent's single outstanding offer rings.

Who goes first. Every waiting interaction has a key: the time it took its place in line,
minus `priority * priority_weight_seconds`. A vulnerable caller (priority 5 by default) is
treated as if they had arrived five minutes earlier; the key still ages with real waiting
time, so a normal caller who has waited longer than that beats a new priority caller and
nobody starves. Within one queue and priority, keys follow arrival order (invariant 6),
and a requeued call keeps its key, hence its place. An agent who serves several queues
takes the smallest key across them.

Which agent. Among free agents eligible for the queue (skill level at least the queue's
current minimum, which relaxes with the caller's wait), the queue's strategy picks:
longest-idle (default), fewest-handled, best-skill-level, or round-robin.

Speed. Waiting interactions live in heaps per (queue, channel, priority) and free agents in
heaps per (queue, channel, skill level), both with lazy deletion by token, so a command
costs O(log n) in the numbers of waiting interactions and agents, not O(n).

Layout. This module keeps the step itself (`apply`, `tick`, `next_deadline`, the timers'
firing) and the snapshot and restore; `Center` builds on one class per concept, and the
command and timer handlers are functions of the concept modules (see `acd.core.base` for the
map). The legal moves of an interaction are the table `acd.core.state.TRANSITIONS`.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any

import msgspec

from . import agents, callbacks, calls, conversations, routing, timers, validation, wrapups
from .base import (
    _CONNECTED,
    _LOGGED_OUT,
    _OFFERED,
    _WAITING,
    _WRAPUP,
    InvariantViolation,
    invariant,
)
from .commands import (
    Abandon,
    ActivateCoreVersion,
    Answer,
    Arrive,
    Audit,
    CallbackAttempt,
    Command,
    Configure,
    Hangup,
    Hold,
    Login,
    Logout,
    NotReady,
    Ready,
    Reject,
    RequestCallback,
    Survey,
    Tick,
    Transfer,
    Unhold,
    WrapUp,
)
from .config import CenterConfig, ConfigError
from .events import Audited, Event
from .invariants import Invariants
from .rejections import Rejection
from .state import AgentRecord, State
from .versions import activate as _activate_core_version
from .versions import require_supported

__all__ = ["Center", "InvariantViolation", "invariant"]


def _by_name(agent: AgentRecord) -> str:
    return agent.name


class Center(Invariants):
    """The routing state machine. See the module docstring."""

    def __init__(self, config: CenterConfig | None = None, state: State | None = None) -> None:
        self.state = state if state is not None else State()
        self._events: list[Event] = []
        self._touched_calls: set[str] = set()
        self._touched_agents: set[str] = set()
        # Ids of the keys that sealed caller numbers of interactions now over: the node
        # destroys them in the store (`take_released_keys`). Not part of the state.
        self._released_keys: list[str] = []
        self._rebuild_indices()
        if config is not None and state is None:
            result = self.apply(Configure(center=config), 0.0)
            if isinstance(result, Rejection):
                raise ConfigError(result.field or "center", result.message)

    def take_released_keys(self) -> list[str]:
        """The ids of the sealing keys that no interaction needs any more, since the last call."""
        released, self._released_keys = self._released_keys, []
        return released

    @property
    def config(self) -> CenterConfig:
        return self.state.config

    @property
    def now(self) -> float:
        return self.state.now

    def apply(self, command: Command, now: float) -> list[Event] | Rejection:
        """Apply one command at time `now`; the events, or a rejection with no change.

        Timers due by `now` fire first. A driver that ticks whenever `next_deadline()` has
        passed (as the node's pipeline does) never has one due here, and then a rejection
        leaves the state byte-for-byte as it was, clock included.
        """
        # Time never runs backwards inside the machine: a command stamped earlier (the clock
        # of a new primary may lag the old one's) is applied at the machine's current time.
        # The log stores the original stamp and replay clamps the same way, so it is exact.
        state = self.state
        previous_now = state.now
        now = float(now)
        if now > previous_now:
            state.now = now
        else:
            now = previous_now
        handler = self._handlers[type(command)]
        events: list[Event] = []
        touched_calls: set[str] = set()
        touched_agents: set[str] = set()
        self._events = events
        self._touched_calls = touched_calls
        self._touched_agents = touched_agents
        # Timers due by now fire first, each at its own due time, so their effect does not
        # depend on which command happened to carry the clock past them (a rejected command
        # is not logged; replay fires the same timers at the same instants on the next one).
        # A driver that wants a rejection to change nothing at all ticks first whenever
        # next_deadline() has passed, as the node's pipeline does.
        timers = self._timers
        if timers and timers[0][0] <= now:
            timers_fired = self._fire_timers(now)
            fired = len(events)
        else:
            timers_fired = fired = 0
        self._instant = now
        rejection = handler(self, command, now)
        if rejection is not None:
            invariant(len(events) == fired, f"{type(command).__name__} rejected after emitting events")
        # The end of the step: check the local invariants of everything this step touched
        # (cheap, every step). The common cases are checked inline; anything unusual goes
        # through `_check_call` and `_check_agent`, which raise with the message when a check
        # fails.
        interactions = state.interactions
        agents = state.agents
        unindexed = self._unindexed
        if unindexed:
            self._flush_index()
        for call_id in touched_calls:
            call = interactions.get(call_id)
            if call is None:
                continue
            call_state = call.state
            if call_state is _OFFERED:
                agent = agents.get(call.agent)  # type: ignore[arg-type]  # None: no agent
                if agent is not None and agent.offer == call_id:
                    continue
            elif call_state is _CONNECTED or call_state is _WRAPUP:
                agent = agents.get(call.agent)  # type: ignore[arg-type]  # None: no agent
                if agent is not None and call_id in agent.held:
                    continue
            elif call_state is _WAITING:
                if call.agent is None:
                    continue
            elif call.caller is None and call.caller_key is None:
                continue
            self._check_call(call)
        deferred: list[AgentRecord] | None = None
        for name in touched_agents:
            agent = agents.get(name)
            if agent is None:
                continue
            held = agent.held
            if held:
                if len(held) > 1:
                    self._check_agent(agent)
                else:
                    for item in held.values():
                        if item.channel != "voice" or agent.offer is not None or agent.presence is _LOGGED_OUT:
                            self._check_agent(agent)
            elif agent.offer is not None:
                call = interactions.get(agent.offer)
                if call is None or call.state is not _OFFERED or call.agent != name or agent.presence is _LOGGED_OUT:
                    self._check_agent(agent)
            if agent.pending:
                if deferred is None:
                    deferred = [agent]
                else:
                    deferred.append(agent)
        if deferred is not None:
            # In name order: a set's order of strings differs between processes (hash seed),
            # and the events of these status changes must come out the same on every node.
            if len(deferred) > 1:
                deferred.sort(key=_by_name)
            for agent in deferred:
                self._apply_pending(agent, now)
        if self._moved:
            if rejection is None:
                self._queue_updates(now)
            self._moved.clear()
        if rejection is not None:
            if not timers_fired:
                # A refused command is not logged, so it must not move the clock either:
                # replay would apply the next command at a different `now` (and the
                # snapshot would differ from the standby's at the same LSN).
                state.now = previous_now
            return rejection
        return events

    def tick(self, now: float) -> list[Event]:
        result = self.apply(Tick(), now)
        invariant(not isinstance(result, Rejection), "a tick cannot be rejected")
        return result  # type: ignore[return-value]

    def next_deadline(self) -> float | None:
        """When the first valid timer falls due (stale ones at the top are dropped), or None."""
        timers = self._timers
        while timers:
            timer = timers[0]
            if self._timer_valid(timer):
                return timer[0]
            heapq.heappop(timers)
        return None

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(self.state)

    @classmethod
    def restore(cls, data: bytes) -> Center:
        state = msgspec.msgpack.decode(data, type=State)
        require_supported(state.core_version)  # rules this binary does not have: refused
        return cls(state=state)

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    def _fire_timers(self, now: float) -> int:
        """Fire every valid timer due by `now`; how many fired (stale ones do not count)."""
        timers = self._timers
        fired = 0
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)
            if not self._timer_valid(timer):
                continue
            due, _order, kind, subject, detail = timer
            self._instant = due
            self._timer_handlers[kind](self, subject, detail, due)
            if self._moved:
                # At the timer's own instant: a replay fires it in another command, maybe.
                self._queue_updates(due)
                self._moved.clear()
            fired += 1
        return fired

    # ------------------------------------------------------------------ the handlers

    def _tick(self, command: Tick, now: float) -> Rejection | None:
        return None  # timers fire in apply() for every command

    def _audit(self, command: Audit, now: float) -> Rejection | None:
        self.state.audit.append((now, command.actor, command.action, command.detail))
        del self.state.audit[:-1000]
        self._emit(Audited(at=now, actor=command.actor, action=command.action, detail=command.detail))
        return None

    _handlers: dict[type, Callable[[Center, Any, float], Rejection | None]] = {
        Configure: validation.configure,
        Arrive: calls.arrive,
        Answer: conversations.answer,
        Reject: conversations.reject_offer,
        Abandon: conversations.abandon,
        Hangup: conversations.hangup,
        Hold: conversations.hold,
        CallbackAttempt: callbacks.callback_attempt,
        Unhold: conversations.unhold,
        Transfer: calls.transfer,
        RequestCallback: callbacks.request_callback,
        WrapUp: wrapups.wrap_up,
        Survey: wrapups.survey,
        Login: agents.login,
        Ready: agents.ready,
        NotReady: agents.not_ready,
        Logout: agents.logout,
        Tick: _tick,
        Audit: _audit,
        ActivateCoreVersion: _activate_core_version,
    }

    _timer_handlers: dict[str, Callable[[Center, str, str, float], None]] = {
        "offer": routing.on_offer_timeout,
        "wrapup": wrapups.on_wrapup_timeout,
        "recovery": agents.on_recovery_end,
        "due": callbacks.on_callback_due,
        "preferred": callbacks.on_preferred_end,
        "relax": routing.on_relax,
        "overflow": calls.on_overflow,
        "prune": timers.on_prune,
    }
