"""What every part of the routing core shares: the fields of a `Center`, the step's output, the checks.

`acd.core.center.Center` is assembled from one class per concept, each building on the one
below (what it may call sits underneath it):

    CenterBase      (this module) the fields, the step's events and touched records
    Statistics      acd.core.statistics: the day's and the interval's counters
    Privacy         acd.core.privacy: the caller hash, the sealing keys' release
    Timers          acd.core.timers: the timer heap, retention
    Indices         acd.core.indices: the indices derived from the state (waiting calls, free agents)
    Agents          acd.core.agents: an agent's shown state and its time in it
    Routing         acd.core.routing: offers to free agents, withdrawn offers
    Invariants      acd.core.invariants: the checks of docs/design.md's invariants
    Center          acd.core.center: apply, tick, next_deadline, snapshot and restore

The command and timer handlers are plain functions of `(center, ...)`, by concept:
`acd.core.calls` (arrival, overflow, transfer), `acd.core.conversations` (answer, reject,
abandon, hang-up, hold), `acd.core.callbacks`, `acd.core.wrapups` (wrap-up, survey),
`acd.core.agents` (presence) and `acd.core.validation` (configuration). `Center` maps each
command type and timer kind to its handler.

Everything here but `state` is derived from the state and rebuilt by a restore
(`Indices._rebuild_indices`).
"""

from __future__ import annotations

from typing import Any

from .calendar import DayClock
from .config import Calendar, Queue
from .events import Event
from .state import (
    TERMINAL,
    TRANSITIONS,
    AgentDay,
    AgentRecord,
    AgentState,
    CallState,
    Counters,
    Interaction,
    Presence,
    State,
)

# Enum members as module constants: `CallState.WAITING` goes through the enum's class
# attribute lookup, several times the cost of reading a global.
_SCHEDULED = CallState.SCHEDULED
_WAITING = CallState.WAITING
_OFFERED = CallState.OFFERED
_CONNECTED = CallState.CONNECTED
_WRAPUP = CallState.WRAPUP
_COMPLETED = CallState.COMPLETED
_ABANDONED = CallState.ABANDONED
_TRANSFERRED = CallState.TRANSFERRED
_CLOSED = CallState.CLOSED
_READY = Presence.READY
_NOT_READY = Presence.NOT_READY
_LOGGED_OUT = Presence.LOGGED_OUT
_SHOWN_LOGGED_OUT = AgentState.LOGGED_OUT
_SHOWN_READY = AgentState.READY
_SHOWN_NOT_READY = AgentState.NOT_READY
_SHOWN_OFFERED = AgentState.OFFERED
_SHOWN_BUSY = AgentState.BUSY
_SHOWN_WRAPUP = AgentState.WRAPUP
_SHOWN_RECOVERING = AgentState.RECOVERING
# A tuple, not the frozenset: `in` on a few enum members by identity is cheaper than hashing.
_TERMINAL = tuple(TERMINAL)


class InvariantViolation(RuntimeError):
    """A broken invariant is a bug in the core: the process must stop, never reject."""


def invariant(condition: bool, message: str) -> None:
    # Not `assert`: Python drops asserts under -O, and these checks must always run.
    if not condition:
        raise InvariantViolation(message)


def _moved(call: Interaction, move: str) -> CallState:
    """The state `move` takes `call` to (`acd.core.state.TRANSITIONS`); an illegal move is a bug."""
    target = TRANSITIONS.get((call.state, move))
    if target is None:
        raise InvariantViolation(f"{call.id}: no move {move!r} from {call.state._value_}")
    return target


class CenterBase:
    """The fields of a `Center`: its state, and the indices derived from it."""

    state: State
    # The step being applied: its events, the records it touched (checked at its end), its instant.
    _events: list[Event]
    _touched_calls: set[str]
    _touched_agents: set[str]
    _instant: float
    # Ids of the keys that sealed caller numbers of interactions now over: the node destroys
    # them in the store (`take_released_keys`). Not part of the state.
    _released_keys: list[str]
    # The configuration, by name and per agent.
    _queues: dict[str, Queue]
    _calendars: dict[str, Calendar]
    _open_cache: dict[str, tuple[float, float, bool]]  # calendar -> [start, end) and answer
    _capacity: dict[str, dict[str, int]]
    _channels: dict[str, tuple[str, ...]]
    _voice_only: dict[str, bool]  # agents who take voice only: holding anything, they are not free
    _agent_queues: dict[str, list[tuple[str, int]]]  # agent -> (queue, skill level) it serves
    _queue_agents: dict[str, tuple[str, ...]]
    _day_clock: DayClock
    # Privacy: the keyed hashes of caller numbers, and the live holders of each sealing key.
    _caller_pads: tuple[Any, Any]
    _fingerprint_hash: Any
    _key_refs: dict[str, int]
    # Routing: the waiting-call and free-agent heaps (lazy deletion by token).
    _token: int
    _call_token: dict[str, int]
    _agent_token: dict[str, int]
    _waiting: dict[tuple[str, str], dict[int, list[tuple[float, int, int, str]]]]
    _waiting_count: dict[str, dict[int, int]]  # queue -> priority -> waiting or ringing
    _personal: dict[str, list[tuple[float, int, int, str]]]
    _available: dict[tuple[str, str], list[list[tuple[float, float, int, int, str]]]]
    _available_levels: dict[tuple[str, str], list[tuple[int, list[Any]]]]
    _agent_lines: dict[str, list[tuple[dict[int, list[Any]], str, int, bool]]]
    _agent_slots: dict[str, list[tuple[str, str, tuple[tuple[str, list[Any]], ...]]]]
    _free: dict[str, set[str]]  # agents free now, per queue (for EWT)
    _free_anywhere: set[str]  # agents in some free-agent heap, in any queue
    _unindexed: dict[str, None]  # agents changed since the heaps were last updated
    _staffed: dict[str, int]
    _on_break: dict[str, int]  # agents of the queue shown not ready (EWT leaves them out)
    _moved: dict[str, None]  # queues whose line moved in this step (queue.updated)
    # Interactions: pending call-backs, live ones, ended ones (for retention).
    _pending_callbacks: dict[tuple[str, str], str]
    _live: dict[str, None]
    _terminal: list[tuple[float, str]]
    # Timers: (due, rank, kind, subject, detail).
    _timers: list[tuple[float, int, str, str, str]]
    # Statistics records remembered for the day and interval (see `Statistics._forget_stats`).
    _agent_days: dict[str, AgentDay]
    _agent_days_day: str
    _agent_days_start: float
    _agent_days_end: float
    _counter_cache: dict[tuple[str | None, tuple[str, int]], tuple[Counters, Counters]]

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _touch(self, call: Interaction | None, agent: AgentRecord | None = None) -> None:
        if call is not None:
            self._touched_calls.add(call.id)
        if agent is not None:
            self._touched_agents.add(agent.name)
