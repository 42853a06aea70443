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
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from . import commands as c
from . import events as e
from .calendar import DayClock, next_opening, open_between
from .config import Calendar, ConfigError, Queue, validate_center
from .config import Center as CenterConfig
from .rejections import Code, Rejection, reject
from .state import (
    TERMINAL,
    AgentDay,
    AgentRecord,
    AgentState,
    CallState,
    Counters,
    DayStats,
    Held,
    Interaction,
    Leg,
    Presence,
    QueueDay,
    State,
)
from .versions import activate as _activate_core_version
from .versions import require_supported, routing_strategy

S = CallState
_encode_command = c._encoder.encode  # c.encode_command without its Python call
_blake2b = hashlib.blake2b
_heappop = heapq.heappop
_heappush = heapq.heappush
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
VULNERABLE_ATTRIBUTES = ("vulnerable", "elderly", "disabled")
AHT_SMOOTHING = 0.1  # weight of the newest handling time in the per-queue moving average
# At one instant, calls go back to (or take) their places before agents come free, so that a
# freed agent takes the caller who was first in line (an offer that timed out at the same
# instant is back in its place by then).
TIMER_RANK = {
    "offer": 0, "due": 1, "preferred": 2, "relax": 3, "overflow": 4, "wrapup": 5, "recovery": 6, "prune": 7,
}
_RANK_OFFER = TIMER_RANK["offer"]
_SHOWN_OFFERED = _SHOWN_OFFERED
_SHOWN_BUSY = _SHOWN_BUSY
_SHOWN_WRAPUP = _SHOWN_WRAPUP
_RANK_WRAPUP = TIMER_RANK["wrapup"]
_RANK_PRUNE = TIMER_RANK["prune"]


class InvariantViolation(RuntimeError):
    """A broken invariant is a bug in the core: the process must stop, never reject."""


def invariant(condition: bool, message: str) -> None:
    # Not `assert`: Python drops asserts under -O, and these checks must always run.
    if not condition:
        raise InvariantViolation(message)


def mask_caller(caller: str) -> str:
    return "*" * max(0, len(caller) - 4) + caller[-4:]



def _by_name(agent: AgentRecord) -> str:
    return agent.name

class Center:
    """The routing state machine. See the module docstring."""

    def __init__(self, config: CenterConfig | None = None, state: State | None = None) -> None:
        self.state = state if state is not None else State()
        self._events: list[e.Event] = []
        self._touched_calls: set[str] = set()
        self._touched_agents: set[str] = set()
        # Ids of the keys that sealed caller numbers of interactions now over: the node
        # destroys them in the store (`take_released_keys`). Not part of the state.
        self._released_keys: list[str] = []
        self._rebuild_indices()
        if config is not None and state is None:
            result = self.apply(c.Configure(center=config), 0.0)
            if isinstance(result, Rejection):
                raise ConfigError(result.field or "center", result.message)

    # ------------------------------------------------------------------ public interface

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

    def apply(self, command: c.Command, now: float) -> list[e.Event] | Rejection:
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
        events: list[e.Event] = []
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

    def tick(self, now: float) -> list[e.Event]:
        result = self.apply(c.Tick(), now)
        invariant(not isinstance(result, Rejection), "a tick cannot be rejected")
        return result  # type: ignore[return-value]

    def next_deadline(self) -> float | None:
        timers = self._timers
        interactions = self.state.interactions
        while timers:
            timer = timers[0]
            rank = timer[1]
            # `_timer_valid`, inlined for the usual kinds: offers answered in time and wrap-ups
            # finished early are stale; the hourly prune is always valid.
            if rank == _RANK_OFFER:
                call = interactions.get(timer[3])
                if call is not None and call.state is _OFFERED and call.offer_expires_at == timer[0]:
                    return timer[0]
            elif rank == _RANK_PRUNE:
                return timer[0]
            elif rank == _RANK_WRAPUP:
                agent = self.state.agents.get(timer[3])
                if agent is not None:
                    held = agent.held.get(timer[4])
                    if held is not None and held.wrap_deadline == timer[0]:
                        return timer[0]
            elif self._timer_valid(timer):
                return timer[0]
            _heappop(timers)
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

    def waiting_count(self, queue: str) -> int:
        return sum(self._waiting_count.get(queue, {}).values())

    def staffed(self, queue: str) -> int:
        return self._staffed.get(queue, 0)

    def position(self, call_id: str) -> int:
        """1-based place of a waiting interaction among its queue's waiting ones (0 if not waiting)."""
        call = self.state.interactions.get(call_id)
        if call is None or call.state is not _WAITING:
            return 0
        key = (self._call_key(call), call.order)
        ahead = 0
        for other in self._waiting_in(call.queue):
            if (self._call_key(other), other.order) < key:
                ahead += 1
        return ahead + 1

    def ewt(self, queue: str, position: int) -> float:
        """Estimated wait for the caller at `position` (1-based) in `queue`.

        EWT = (position - 1 + 1 - free agents) / available agents * AHT, at least 0:
        the callers ahead, plus this one, are served `available` at a time, each taking the
        queue's moving-average handling time (seeded by the queue's `aht_seconds`). With
        nobody available the estimate is one AHT per caller ahead and this one. Available
        agents are those logged in who serve the queue and are not on a break (not ready:
        lunch, training), so they can take the call now or soon; free ones are ready with
        room for one of the queue's channels and no offer ringing.
        """
        if self._unindexed:
            self._flush_index()
        aht = self.state.aht.get(queue) or self._queues[queue].aht_seconds
        staffed = self._staffed.get(queue, 0) - self._on_break.get(queue, 0)
        if staffed == 0:
            return round(position * aht, 1)
        free = len(self._free.get(queue, ()))
        share = (position - free) / staffed
        return round(share * aht, 1) if share > 0 else 0.0

    def live_interactions(self) -> Iterator[Interaction]:
        """The interactions not in a terminal state (waiting, ringing, scheduled, connected, wrap-up)."""
        interactions = self.state.interactions
        return (interactions[call_id] for call_id in self._live)

    def agent_levels(self, agent: str) -> dict[str, int]:
        return dict(self._agent_queues.get(agent, ()))

    def queue_agents(self, queue: str) -> tuple[str, ...]:
        """The configured agents who serve `queue` (its skills at level 1 or more)."""
        return self._queue_agents.get(queue, ())

    def queue(self, name: str) -> Queue | None:
        return self._queues.get(name)

    # ------------------------------------------------------------------ derived indices

    def _rebuild_indices(self) -> None:
        config = self.state.config
        self._queues: dict[str, Queue] = {q.name: q for q in config.queues}
        self._calendars: dict[str, Calendar] = {cal.name: cal for cal in config.calendars}
        self._open_cache: dict[str, tuple[float, float, bool]] = {}  # calendar -> [start, end) and answer
        self._agent_configs = {a.name: a for a in config.agents}
        self._capacity = {a.name: {ch: a.capacity.of(ch) for ch in ("voice", "chat", "sms")} for a in config.agents}
        self._channels = {a.name: tuple(ch for ch in ("voice", "chat", "sms") if a.capacity.of(ch)) for a in config.agents}
        # Agents who take voice only: while they hold anything, they are not free.
        self._voice_only = {a.name: not a.capacity.chat and not a.capacity.sms for a in config.agents}
        self._caller_pads = _hmac_pads(config.abuse.hash_key.encode())
        self._fingerprint_key = hashlib.sha256(b"fingerprint:" + config.abuse.hash_key.encode()).digest()
        # The keyed hash before any data: a copy per arrival costs less than a new keyed object.
        self._fingerprint_hash = _blake2b(digest_size=12, key=self._fingerprint_key)
        self._day_clock = DayClock(config.time_zone)
        self._agent_queues: dict[str, list[tuple[str, int]]] = {}
        for agent in config.agents:
            served = []
            for queue in config.queues:
                if queue.external:
                    continue
                if queue.skills:
                    levels = [agent.skills.get(skill, 0) for skill in queue.skills]
                    level = min(levels)
                else:
                    level = 5
                if level >= 1:
                    served.append((queue.name, level))
            self._agent_queues[agent.name] = served
        queue_agents: dict[str, list[str]] = {}
        for agent_name, served in self._agent_queues.items():
            for queue_name, _level in served:
                queue_agents.setdefault(queue_name, []).append(agent_name)
        self._queue_agents = {name: tuple(agents) for name, agents in queue_agents.items()}
        self._build_lines(config)
        self._token = 0
        self._call_token: dict[str, int] = {}
        self._agent_token: dict[str, int] = {}
        self._waiting_count: dict[str, dict[int, int]] = {}  # queue -> priority -> waiting or ringing
        self._personal: dict[str, list[tuple[float, int, int, str]]] = {}
        self._timers: list[tuple[float, int, str, str, str]] = []
        self._pending_callbacks: dict[tuple[str, str], str] = {}
        # Live interactions per sealing key: a call-back promised at wrap-up carries its
        # origin's sealed number, so a key is released only when nobody live holds it.
        self._key_refs: dict[str, int] = {}
        self._terminal: list[tuple[float, str]] = []
        # The interactions not yet in a terminal state, in arrival order: what the queue views
        # and metrics walk (a day's terminal interactions stay in the state, hours of them).
        self._live: dict[str, None] = {}
        self._staffed: dict[str, int] = {}
        self._on_break: dict[str, int] = {}  # agents of the queue shown not ready (EWT leaves them out)
        self._moved: dict[str, None] = {}  # queues whose line moved in this step (queue.updated)
        self._free: dict[str, set[str]] = {}  # agents free now, per queue (for EWT)
        self._free_anywhere: set[str] = set()  # agents in some free-agent heap, in any queue
        self._instant = self.state.now  # the time of the step (or timer) being applied
        self._unindexed: dict[str, None] = {}  # agents changed since the heaps were last updated
        self._forget_stats()
        for agent_record in self.state.agents.values():
            if agent_record.presence is not _LOGGED_OUT:
                for queue_name, _level in self._agent_queues.get(agent_record.name, ()):
                    self._staffed[queue_name] = self._staffed.get(queue_name, 0) + 1
            if agent_record.state is _SHOWN_NOT_READY:
                for queue_name, _level in self._agent_queues.get(agent_record.name, ()):
                    self._on_break[queue_name] = self._on_break.get(queue_name, 0) + 1
            self._index_agent(agent_record)
            if agent_record.recovering_until is not None:
                self._push_timer(agent_record.recovering_until, "recovery", agent_record.name)
            for call_id, held in agent_record.held.items():
                if held.wrap_deadline is not None:
                    self._push_timer(held.wrap_deadline, "wrapup", agent_record.name, call_id)
        for call in self.state.interactions.values():
            self._index_call(call)
        self._push_timer(self._next_prune(self.state.now), "prune", "")

    def _build_lines(self, config: CenterConfig) -> None:
        """The waiting-call and free-agent heaps, and per agent the (queue, channel) lines it serves.

        An agent's lines hold the very heaps (built here for every queue and channel, never
        replaced), so routing reads them without building keys or looking them up.
        """
        # Waiting calls by (queue, channel), then by priority: within one priority the keys
        # follow the time in line, so a heap's head is also the first to relax its skill
        # level, and an agent need look at the heads only.
        self._waiting: dict[tuple[str, str], dict[int, list[tuple[float, int, int, str]]]] = {}
        for queue in config.queues:
            for channel in ("voice", "chat", "sms"):
                self._waiting[(queue.name, channel)] = {}
        # Free agents by (queue, channel), then by skill level (index 1..5).
        self._available: dict[tuple[str, str], list[list[tuple[float, float, int, int, str]]]] = {}
        for queue in config.queues:
            for channel in ("voice", "chat", "sms"):
                self._available[(queue.name, channel)] = [[] for _level in range(6)]
        # For routing to an agent: (waiting calls of the queue and channel, channel, level,
        # level always enough).
        self._agent_lines: dict[str, list[tuple[dict[int, list[Any]], str, int, bool]]] = {}
        # For indexing an agent: (queue, strategy, ((channel, free-agent heap), ...)).
        self._agent_slots: dict[str, list[tuple[str, str, tuple[tuple[str, list[Any]], ...]]]] = {}
        for agent in config.agents:
            channels = self._channels[agent.name]
            lines: list[tuple[dict[int, list[Any]], str, int, bool]] = []
            slots: list[tuple[str, str, tuple[tuple[str, list[Any]], ...]]] = []
            for queue_name, level in self._agent_queues[agent.name]:
                queue = self._queues[queue_name]
                for channel in channels:
                    lines.append((self._waiting[(queue_name, channel)], channel, level, level >= queue.min_level))
                heaps: tuple[tuple[str, list[Any]], ...] = tuple(
                    (channel, self._available[(queue_name, channel)][level]) for channel in channels if channel in queue.channels
                )
                slots.append((queue_name, routing_strategy(self.state.core_version, queue.strategy), heaps))
            self._agent_lines[agent.name] = lines
            self._agent_slots[agent.name] = slots
        # Per (queue, channel), the free-agent heaps of the levels some agent has there, best
        # level first: the others stay empty, and routing need not look at them.
        self._available_levels: dict[tuple[str, str], list[tuple[int, list[Any]]]] = {}
        used = {
            id(heap) for agent_slots in self._agent_slots.values() for _queue, _strategy, slot_heaps in agent_slots
            for _channel, heap in slot_heaps
        }
        for key, heaps_by_level in self._available.items():
            self._available_levels[key] = [
                (level, heaps_by_level[level]) for level in range(5, 0, -1) if id(heaps_by_level[level]) in used
            ]

    def _forget_stats(self) -> None:
        """Drop the remembered statistics records (after retention removed a day)."""
        self._agent_days: dict[str, AgentDay] = {}  # statistics record per agent, for one day
        self._agent_days_day = ""
        self._agent_days_start = 1.0  # that day's bounds (none yet: start after end)
        self._agent_days_end = 0.0
        # (queue or None, (day, interval)) -> the day's and the interval's counters
        self._counter_cache: dict[tuple[str | None, tuple[str, int]], tuple[Counters, Counters]] = {}

    def _index_call(self, call: Interaction) -> None:
        if call.state in _TERMINAL:
            heapq.heappush(self._terminal, (call.completed_at or 0.0, call.id))
            return
        self._live[call.id] = None
        if call.caller_key is not None:
            self._key_refs[call.caller_key] = self._key_refs.get(call.caller_key, 0) + 1
        if call.callback and call.state in (_SCHEDULED, _WAITING, _OFFERED) and call.caller_hash:
            self._pending_callbacks[(call.caller_hash, call.queue)] = call.id
        if call.state is _WAITING:
            self._enqueue(call)
        elif call.state is _OFFERED and call.offer_expires_at is not None:
            self._count_waiting(call, +1)
            self._push_timer(call.offer_expires_at, "offer", call.id)
        elif call.state is _SCHEDULED and call.due_at is not None:
            self._push_timer(call.due_at, "due", call.id)

    def _call_key(self, call: Interaction) -> float:
        return call.place_at - call.priority * self.state.config.priority_weight_seconds

    def _waiting_in(self, queue: str) -> list[Interaction]:
        return [
            call
            for call in self.state.interactions.values()
            if call.state is _WAITING and call.queue == queue
        ]

    def _count_waiting(self, call: Interaction, delta: int) -> None:
        counts = self._waiting_count.get(call.queue)
        if counts is None:
            counts = self._waiting_count[call.queue] = {}
        counts[call.priority] = counts.get(call.priority, 0) + delta

    def _enqueue(self, call: Interaction) -> None:
        """Put a WAITING call at its place in its queue's index and arm its timers."""
        self._token = token = self._token + 1
        call_id = call.id
        self._call_token[call_id] = token
        counts = self._waiting_count.get(call.queue)
        if counts is None:
            counts = self._waiting_count[call.queue] = {}
        priority = call.priority
        counts[priority] = counts.get(priority, 0) + 1
        entry = (call.place_at - priority * self.state.config.priority_weight_seconds, call.order, token, call_id)
        if call.preferred_agent is not None:
            heapq.heappush(self._personal.setdefault(call.preferred_agent, []), entry)
            if call.preferred_until is not None:
                self._push_timer(call.preferred_until, "preferred", call_id)
        else:
            by_priority = self._waiting.get((call.queue, call.channel))
            if by_priority is None:
                by_priority = self._waiting[(call.queue, call.channel)] = {}
            heap = by_priority.get(priority)
            if heap is None:
                by_priority[priority] = [entry]
            else:
                heapq.heappush(heap, entry)
        queue = self._queues[call.queue]
        for step in queue.relaxation:
            due = call.place_at + step.after
            # Compared with the instant being applied, not the step's `now`: a call requeued
            # by a timer that fires late in a long tick still needs its later relaxations.
            if due > self._instant:
                self._push_timer(due, "relax", call.id)
        if queue.max_wait and not call.callback:
            self._push_timer(call.queued_at + queue.max_wait, "overflow", call.id)

    def _dequeue(self, call: Interaction) -> None:
        """Take a call out of waiting (its heap entry goes stale)."""
        self._call_token.pop(call.id, None)
        self._count_waiting(call, -1)
        self._moved[call.queue] = None

    def _agent_available(self, agent: AgentRecord, channel: str) -> bool:
        return channel in self._free_channels(agent)

    def _free_channels(self, agent: AgentRecord) -> tuple[str, ...]:
        """The channels on which the agent may be offered an interaction now."""
        if (
            agent.presence is not _READY
            or agent.pending
            or agent.offer is not None
            or agent.recovering_until is not None
        ):
            return ()
        if not agent.held:
            return self._channels[agent.name]
        return self._held_channels(agent)

    def _held_channels(self, agent: AgentRecord) -> tuple[str, ...]:
        """The channels left to a free agent who holds work already."""
        if self._voice_only.get(agent.name, True):
            return ()
        # A voice call takes the whole agent; chat and SMS fill up to their capacity.
        chat = sms = 0
        for held in agent.held.values():
            channel = held.channel
            if channel == "chat":
                chat += 1
            elif channel == "sms":
                sms += 1
            else:
                return ()
        capacity = self._capacity[agent.name]
        # Spelled out rather than filtered by a generator: this runs whenever a chat agent frees up.
        if chat < capacity["chat"]:
            return ("chat", "sms") if sms < capacity["sms"] else ("chat",)
        return ("sms",) if sms < capacity["sms"] else ()

    @staticmethod
    def _strategy_key(agent: AgentRecord, strategy: str, token: int) -> tuple[float, float, int, int, str]:
        """The agent's entry in a free-agent heap of a queue with `strategy` (best first)."""
        if strategy == "fewest-handled":
            return (float(agent.handled), agent.available_since, agent.order, token, agent.name)
        if strategy == "round-robin":
            return (float(agent.last_offer_order), agent.available_since, agent.order, token, agent.name)
        return (agent.available_since, 0.0, agent.order, token, agent.name)

    def _flush_index(self) -> None:
        """Index every agent changed since the last flush.

        An agent often changes several times in one step (free after a wrap-up, then offered
        the next caller at once); indexing only when the free-agent heaps are read, and at
        the end of the step, skips pushing entries that would be stale the moment after.
        Callers test `self._unindexed` first (the usual case is nothing to do).
        """
        agents = self.state.agents
        free_anywhere = self._free_anywhere
        for name in self._unindexed:
            agent = agents[name]
            if name not in free_anywhere and (
                agent.presence is not _READY or agent.offer is not None or (agent.held and self._voice_only[name])
            ):
                continue  # was in no free-agent heap and still may take nothing (see _index_agent)
            self._index_agent(agent)
        self._unindexed.clear()

    def _index_agent(self, agent: AgentRecord) -> None:
        """(Re)publish the agent in the free-agent heaps of every queue and channel it may take."""
        name = agent.name
        if (
            agent.presence is not _READY
            or agent.pending
            or agent.offer is not None
            or agent.recovering_until is not None
        ):
            channels: tuple[str, ...] = ()
        elif not agent.held:
            channels = self._channels[name]
        elif self._voice_only[name]:
            channels = ()
        else:
            channels = self._held_channels(agent)
        if not channels:
            # Busy, ringing, away: in no free-agent heap. A new token makes the entries of an
            # agent who was free stale; one who was not has none left to invalidate.
            if name in self._free_anywhere:
                self._token += 1
                self._agent_token[name] = self._token
                self._free_anywhere.discard(name)
                for queue_name, _level in self._agent_queues.get(name, ()):
                    free_here = self._free.get(queue_name)
                    if free_here:
                        free_here.discard(name)
            return
        self._token += 1
        token = self._token
        self._agent_token[name] = token
        self._free_anywhere.add(name)
        keys: dict[str, tuple[float, float, int, int, str]] = {}
        free_by_queue = self._free
        for queue_name, strategy, heaps in self._agent_slots.get(name, ()):
            free = False
            for channel, heap in heaps:
                if channel not in channels:
                    continue
                free = True
                entry = keys.get(strategy)
                if entry is None:
                    entry = keys[strategy] = self._strategy_key(agent, strategy, token)
                heapq.heappush(heap, entry)
            if free:
                free_here = free_by_queue.get(queue_name)
                if free_here is None:
                    free_by_queue[queue_name] = {name}
                else:
                    free_here.add(name)
            elif queue_name in free_by_queue:
                free_by_queue[queue_name].discard(name)

    # ------------------------------------------------------------------ timers

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

    def _on_offer_timeout(self, call_id: str, _detail: str, now: float) -> None:
        call = self.state.interactions[call_id]
        agent = self.state.agents[call.agent or ""]
        self._withdraw_offer(call, "no_answer", now)
        if self.state.config.no_answer_not_ready:
            agent.presence = _NOT_READY
            agent.reason = "no_answer"
            self._agent_changed(agent, now)
        self._dispatch_call(call, now)
        self._dispatch_agent(agent, now)

    def _on_wrapup_timeout(self, agent_name: str, call_id: str, now: float) -> None:
        agent = self.state.agents[agent_name]
        call = self.state.interactions[call_id]
        held = agent.held[call_id]
        # The agent recorded nothing: "not recorded", never "unresolved" (docs/kpis.md, FCR).
        disposition = "transferred" if held.transferred else "not_recorded"
        self._complete_wrapup(call, agent, disposition, False, None, now, timed_out=True)

    def _on_recovery_end(self, agent_name: str, _detail: str, now: float) -> None:
        agent = self.state.agents[agent_name]
        agent.recovering_until = None
        agent.available_since = now
        self._agent_changed(agent, now)
        self._dispatch_agent(agent, now)

    def _on_callback_due(self, call_id: str, _detail: str, now: float) -> None:
        call = self.state.interactions[call_id]
        queue = self._queues[call.queue]
        calendar = self._calendars.get(queue.calendar)
        if not self._is_open(calendar, now):
            # A call-back due while closed waits for the opening (docs/domain.md: closed hours).
            opening = next_opening(calendar, now)
            if opening is not None:
                call.due_at = opening
                self._push_timer(opening, "due", call.id)
                self._emit(e.CallScheduled(at=now, call=call.id, queue=call.queue, due_at=opening, agent=call.preferred_agent))
                return
        call.due_at = None
        call.state = _WAITING
        call.queued_at = now
        call.place_at = now
        if call.preferred_agent is not None:
            call.preferred_until = now + self.state.config.callback_preferred_seconds
        # Call-back work, not a caller: counted as due, never as offered (docs/kpis.md); a
        # retry after an unanswered dial is not due a second time.
        if not call.attempts:
            call.queue_stats_key = self._day_clock.locate(now)
            self._count_queue(call, _callback_due)
            self._count_center(call, _callback_due)
        self._enqueue(call)
        self._emit_queued(call, now)
        self._dispatch_call(call, now)

    def _on_preferred_end(self, call_id: str, _detail: str, now: float) -> None:
        """The promised agent did not take the call-back in time: open it to everyone."""
        call = self.state.interactions[call_id]
        call.preferred_until = None
        previous = call.preferred_agent
        call.preferred_agent = None
        if call.state is _WAITING:
            self._dequeue(call)
            self._enqueue(call)
            self._dispatch_call(call, now)
        invariant(previous is not None, "preferred timer without a preferred agent")

    def _on_relax(self, call_id: str, _detail: str, now: float) -> None:
        self._dispatch_call(self.state.interactions[call_id], now)

    def _on_overflow(self, call_id: str, _detail: str, now: float) -> None:
        self._overflow(self.state.interactions[call_id], now)

    def _on_prune(self, _subject: str, _detail: str, _due: float) -> None:
        """Forget interactions, statistics and abuse flags past their retention (privacy, memory).

        Runs at the machine's current time, not at its due time, and schedules itself an hour
        later: after a long idle period it runs once, not once per hour missed.
        """
        now = self.state.now
        config = self.state.config
        horizon = now - config.retention_days * 86400
        while self._terminal and self._terminal[0][0] < horizon:
            _at, call_id = heapq.heappop(self._terminal)
            call = self.state.interactions.get(call_id)
            if call is not None and call.state in _TERMINAL and (call.completed_at or 0.0) < horizon:
                del self.state.interactions[call_id]
        today, _interval = self._day_clock.locate(now)
        oldest_day = self._day_clock.locate(horizon)[0]
        for day in [day for day in self.state.stats if day < oldest_day]:
            del self.state.stats[day]
            self._forget_stats()
        abuse_horizon = now - config.abuse.window_days * 86400
        for key in list(self.state.abuse):
            flags = [at for at in self.state.abuse[key] if at >= abuse_horizon]
            if flags:
                self.state.abuse[key] = flags
            else:
                del self.state.abuse[key]
        invariant(today >= oldest_day, "retention horizon after today")
        self._push_timer(self._next_prune(now), "prune", "")

    @staticmethod
    def _next_prune(now: float) -> float:
        return (now // 3600 + 1) * 3600

    _timer_handlers: dict[str, Callable[[Center, str, str, float], None]] = {
        "offer": _on_offer_timeout,
        "wrapup": _on_wrapup_timeout,
        "recovery": _on_recovery_end,
        "due": _on_callback_due,
        "preferred": _on_preferred_end,
        "relax": _on_relax,
        "overflow": _on_overflow,
        "prune": _on_prune,
    }

    # ------------------------------------------------------------------ routing

    def _min_level(self, call: Interaction, now: float) -> int:
        queue = self._queues[call.queue]
        level = queue.min_level
        waited = now - call.place_at
        for step in queue.relaxation:
            if waited >= step.after:
                level = min(level, step.min_level)
        return level

    def _head(self, heap: list[Any], tokens: dict[str, int]) -> Any:
        while heap:
            entry = heap[0]
            if tokens.get(entry[-1]) == entry[-2]:
                return entry
            heapq.heappop(heap)
        return None

    def _dispatch_call(self, call: Interaction, now: float) -> None:
        """Offer a waiting call to the best free agent, if any may take it now."""
        if call.state is not _WAITING:
            return
        if call.preferred_agent is not None:
            agent = self.state.agents.get(call.preferred_agent)
            if agent is not None and self._agent_available(agent, call.channel):
                self._dispatch_agent(agent, now)
            return
        if self._unindexed:
            self._flush_index()
        if not self._free.get(call.queue):
            return  # nobody free for this queue: the usual case in a long queue
        heaps = self._available_levels.get((call.queue, call.channel))
        if heaps is None:
            return
        queue = self._queues[call.queue]
        min_level = self._min_level(call, now) if queue.relaxation else queue.min_level
        passed_over: set[str] = set()
        agents = self.state.agents
        # The chosen agent takes the best call *for them*, so route from the agent's side to
        # stay fair (invariant 6). That may be another call, one this call's other agents
        # cannot take (another queue, a higher priority): then the next free agent is asked,
        # until this call is offered or nobody free may take it (invariant 5).
        while call.state is _WAITING:
            best = self._best_agent(heaps, queue, min_level, passed_over)
            if best is None:
                return
            agent = agents[best[4]]
            self._dispatch_agent(agent, now)
            if agent.offer is None:
                passed_over.add(agent.name)  # nothing they may take (they hold this call)

    def _best_agent(self, heaps: list[tuple[int, list[Any]]], queue: Queue, min_level: int, passed_over: set[str]) -> Any:
        """The entry of the free agent the queue's strategy picks from `heaps` ((level, heap),
        best level first; only the levels some agent has), or None."""
        if self._unindexed:
            self._flush_index()  # an agent offered a call in this loop must drop out of the heaps
        tokens = self._agent_token
        best: tuple[Any, ...] | None = None
        for level, heap in heaps:
            if level < min_level:
                break
            # The head with a current token (stale entries go), inlined.
            head = None
            while heap:
                entry = heap[0]
                if tokens.get(entry[4]) == entry[3]:
                    head = entry
                    break
                heapq.heappop(heap)
            if head is None:
                continue
            if passed_over and head[4] in passed_over:
                skipped = []
                while head is not None and head[4] in passed_over:
                    skipped.append(heapq.heappop(heap))
                    head = self._head(heap, tokens)
                for entry in skipped:
                    heapq.heappush(heap, entry)
                if head is None:
                    continue
            if queue.strategy == "best-skill-level":
                return head
            # (strategy key, tie-break, agent order): unique per agent.
            if best is None or head[:3] < best[:3]:
                best = head
        return best

    def _dispatch_agent(self, agent: AgentRecord, now: float) -> None:
        """Offer a free agent the waiting interaction with the smallest key it may take."""
        if agent.presence is not _READY or agent.offer is not None or agent.pending or agent.recovering_until is not None:
            return
        held = agent.held
        name = agent.name
        if held:
            if self._voice_only[name]:
                return
            channels = self._held_channels(agent)
            if not channels:
                return
        else:
            channels = self._channels[name]
        best: tuple[float, int, int, str] | None = None
        interactions = self.state.interactions
        if self._personal:
            personal = self._personal.get(name)
            if personal:
                head = self._head(personal, self._call_token)
                if head is not None and interactions[head[-1]].channel in channels:
                    best = head
        tokens = self._call_token
        for by_priority, channel, level, level_enough in self._agent_lines.get(name, ()):
            if not by_priority or (held and channel not in channels):
                continue
            emptied = False
            for heap in by_priority.values():
                # _head, inlined: this loop is the hottest in the core.
                head = None
                while heap:
                    entry = heap[0]
                    if tokens.get(entry[3]) == entry[2]:
                        head = entry
                        break
                    heapq.heappop(heap)
                if head is None:
                    emptied = True
                    continue
                if held and head[3] in held:
                    head = self._head_not_held(heap, agent)
                    if head is None:
                        continue
                # (place, order) decides, and an order belongs to one interaction: the smallest
                # entry across the lines wins.
                if best is not None and head >= best:
                    continue
                if not level_enough and self._min_level(interactions[head[3]], now) > level:
                    continue
                best = head
            if emptied:
                if len(by_priority) == 1:
                    by_priority.clear()  # the usual case: one priority, and its heap is empty
                else:
                    for priority in [p for p, heap in by_priority.items() if not heap]:
                        del by_priority[priority]
        if best is None:
            return
        # The offer.
        call_id = best[3]
        call = interactions[call_id]
        # Out of waiting, but an offered call still holds its place in line (and its count).
        tokens.pop(call_id, None)
        call.state = _OFFERED
        call.agent = name
        call.offer_expires_at = expires = now + self._queues[call.queue].ring_timeout
        state = self.state
        state.order = order = state.order + 1
        agent.offer = call_id
        agent.last_offer_order = order
        _heappush(self._timers, (expires, _RANK_OFFER, "offer", call_id, ""))
        self._touched_calls.add(call_id)
        if call.callback:
            call.attempts += 1
            self._count_callback(call, _callback_attempted)
        self._events.append(
            e.CallOffered(
                at=now, call=call_id, agent=name, queue=call.queue, channel=call.channel,
                expires_at=expires, callback=call.callback, warning=call.warning,
            )
        )
        # `_agent_changed`, with the state it would derive: the agent is ready (checked above).
        self._unindexed[name] = None
        self._show(agent, _SHOWN_OFFERED, now)

    def _head_not_held(self, heap: list[Any], agent: AgentRecord) -> Any:
        """The first valid entry of `heap` that `agent` does not hold already.

        A chat agent may still be wrapping up a conversation they transferred into a queue
        they also serve; that call must not come back to them, but the callers behind it
        may (invariant 5). The agent holds a handful at most, so this pops only a few.
        """
        skipped = []
        head = self._head(heap, self._call_token)
        while head is not None and head[-1] in agent.held:
            skipped.append(heapq.heappop(heap))
            head = self._head(heap, self._call_token)
        for entry in skipped:
            heapq.heappush(heap, entry)
        return head

    def _withdraw_offer(self, call: Interaction, reason: str, now: float) -> AgentRecord:
        """An offer ends without an answer: the call goes back to its own place."""
        agent = self.state.agents[call.agent or ""]
        invariant(agent.offer == call.id, f"offer of {call.id} not held by {agent.name}")
        agent.offer = None
        self._count_waiting(call, -1)
        call.state = _WAITING
        call.agent = None
        call.offer_expires_at = None
        call.last_offer_agent = agent.name
        call.last_offer_outcome = reason
        self._enqueue(call)
        self._touch(call, agent)
        self._emit(e.OfferWithdrawn(at=now, call=call.id, agent=agent.name, reason=reason))
        self._agent_changed(agent, now)
        return agent

    def _rebalance(self, now: float) -> None:
        for agent in self.state.agents.values():
            self._dispatch_agent(agent, now)

    # ------------------------------------------------------------------ statistics

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

    # ------------------------------------------------------------------ helpers

    def _emit(self, event: e.Event) -> None:
        self._events.append(event)

    def _touch(self, call: Interaction | None, agent: AgentRecord | None = None) -> None:
        if call is not None:
            self._touched_calls.add(call.id)
        if agent is not None:
            self._touched_agents.add(agent.name)

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

    def _show(self, agent: AgentRecord, state: AgentState, now: float) -> None:
        """`_agent_changed` for a caller that knows the new shown state (its reason empty).

        It does not mark the agent for re-indexing: the caller does when the agent may have
        come free or stopped being free.
        """
        name = agent.name
        self._touched_agents.add(name)
        previous = agent.state
        if state is previous and not agent.shown_reason:
            return
        self._shown(agent, previous, state, "", now)

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
        self._events.append(e.AgentChanged(at=now, agent=name, state=state._value_, reason=reason, pending=agent.pending))

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

    def _emit_queued(self, call: Interaction, now: float) -> tuple[int, float]:
        queue = call.queue
        priority = call.priority
        ahead = 0
        for other, count in self._waiting_count[queue].items():
            if other >= priority:
                ahead += count
        # The count includes the call itself (it is already indexed as waiting).
        position = ahead if ahead > 1 else 1
        ewt = self.ewt(queue, position)
        self._moved[queue] = None
        self._events.append(
            e.CallQueued(
                at=now, call=call.id, queue=queue, channel=call.channel, priority=priority,
                position=position, ewt=ewt, warning=call.warning, callback=call.callback,
            )
        )
        return position, ewt

    def _finish(self, call: Interaction, state: CallState, now: float, reason: str = "") -> None:
        # A store into a state record costs more than a read, hence the tests first.
        call.state = state
        call.completed_at = now
        if call.reason != reason:
            call.reason = reason
        if state is not _COMPLETED and call.agent is not None:
            call.agent = None
        if call.offer_expires_at is not None:
            call.offer_expires_at = None
        if call.due_at is not None:
            call.due_at = None
        if call.preferred_agent is not None:
            call.preferred_agent = None
        if call.preferred_until is not None:
            call.preferred_until = None
        if call.callback:
            self._forget_callback(call)
        # The clear number was kept only for the call-back; it goes with it (privacy), and
        # so does the key of the sealed one: the log's copy can no longer be opened.
        if call.caller is not None:
            call.caller = None
        if call.caller_key is not None:
            self._release_key(call.caller_key)
            call.caller_key = None
            call.caller_sealed = None
        heapq.heappush(self._terminal, (now, call.id))
        del self._live[call.id]
        self._touched_calls.add(call.id)

    def _release_key(self, key: str) -> None:
        """One live holder of a sealing key fewer; the last one releases it (the node destroys it)."""
        refs = self._key_refs
        left = refs.get(key, 1) - 1
        if left > 0:
            refs[key] = left
        else:
            refs.pop(key, None)
            self._released_keys.append(key)

    def _queue_updates(self, now: float) -> None:
        """One `queue.updated` per queue whose line moved, unless one went out too recently."""
        every = self.state.config.queue_update_seconds
        if not every:
            return
        sent = self.state.queue_updates
        for queue_name in sorted(self._moved):  # sorted: the same events on every node
            if queue_name not in self._queues or now - sent.get(queue_name, -every) < every:
                continue
            sent[queue_name] = now
            waiting = self.waiting_count(queue_name)
            available = self._staffed.get(queue_name, 0) - self._on_break.get(queue_name, 0)
            self._events.append(e.QueueUpdated(
                at=now, queue=queue_name, waiting=waiting, available=available,
                ewt=[self.ewt(queue_name, position) for position in range(1, min(waiting, 10) + 1)],
            ))

    def _is_open(self, calendar: Calendar | None, now: float) -> bool:
        """`calendar.is_open`, remembered until the next opening or closing."""
        if calendar is None or calendar.always_open:
            return True
        cached = self._open_cache.get(calendar.name)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        result, start, end = open_between(calendar, now)
        self._open_cache[calendar.name] = (start, end, result)
        return result

    def _forget_callback(self, call: Interaction, queue: str | None = None) -> None:
        """Drop `call`'s pending call-back entry, never another interaction's."""
        key = (call.caller_hash, call.queue if queue is None else queue)
        if self._pending_callbacks.get(key) == call.id:
            del self._pending_callbacks[key]

    def _caller_hash(self, caller: str) -> str:
        """HMAC-SHA256 of the number under the center's key (RFC 2104), first 32 hex digits."""
        inner_pad, outer_pad = self._caller_pads
        inner = inner_pad.copy()
        inner.update(caller.encode())
        outer = outer_pad.copy()
        outer.update(inner.digest())
        digest: str = outer.hexdigest()
        return digest[:32]

    # ------------------------------------------------------------------ commands

    def _configure(self, command: c.Configure, now: float) -> Rejection | None:
        center, problems = _checked(command.center)
        if isinstance(center, Rejection):
            return center
        if problems:
            first = problems[0]
            return reject(Code.invalid_config, "; ".join(str(p) for p in problems), field=first.key)
        new_queues = {q.name for q in center.queues}
        new_agents = {a.name for a in center.agents}
        for call in self.state.interactions.values():
            if call.state not in _TERMINAL and call.queue not in new_queues:
                return reject(Code.invalid_config, f"queue {call.queue!r} still has interaction {call.id!r}", field="queues")
        for agent in self.state.agents.values():
            if agent.name not in new_agents and agent.presence is not _LOGGED_OUT:
                return reject(Code.invalid_config, f"agent {agent.name!r} is logged in; log out before removing", field="agents")
            for call_id, held in agent.held.items():
                # A conversation transferred onwards is still wrapped up in its first queue.
                if held.queue not in new_queues:
                    return reject(Code.invalid_config, f"queue {held.queue!r} still has {call_id!r} in wrap-up with {agent.name!r}", field="queues")
        self.state.config = center
        self.state.config_version += 1
        for index, agent_config in enumerate(center.agents):
            record = self.state.agents.get(agent_config.name)
            if record is None:
                record = self.state.agents[agent_config.name] = AgentRecord(name=agent_config.name, state_since=now)
            record.order = index
        for name in [name for name in self.state.agents if name not in new_agents]:
            del self.state.agents[name]
        self._rebuild_indices()
        self._emit(
            e.ConfigApplied(
                at=now, version=self.state.config_version, queues=len(center.queues),
                agents=len(center.agents), actor=command.actor,
            )
        )
        self._rebalance(now)
        return None

    def _arrive(self, command: c.Arrive, now: float) -> Rejection | None:
        existing = self.state.interactions.get(command.id)
        sealed = command.caller_key != ""
        if sealed:
            # Sealed at the edge (acd.node.privacy): hash, mask and fingerprint come with it.
            fingerprint = command.fingerprint
        else:
            # Keyed like the caller hash: the command holds the caller's number, and an
            # unkeyed digest of a phone number is reversed by trying every number (privacy).
            fingerprint_hash = self._fingerprint_hash.copy()
            fingerprint_hash.update(_encode_command(command))
            fingerprint = fingerprint_hash.hexdigest()
        if existing is not None and existing.fingerprint == fingerprint:
            if sealed:
                self._released_keys.append(command.caller_key)  # this copy's key seals nothing kept
            return None  # the same create again: it already took effect
        queue = self._queues.get(command.queue)
        if queue is None:
            return reject(Code.unknown_queue, f"no queue named {command.queue!r}", field="queue")
        if existing is not None:
            return reject(Code.id_conflict, f"interaction {command.id!r} exists with a different body", field="id")
        if command.channel not in queue.channels:
            return reject(Code.channel_not_served, f"queue {queue.name!r} does not take {command.channel}", field="channel")
        state = self.state
        config = state.config
        caller = command.caller
        if sealed:
            caller_hash, caller_masked = command.caller_hash, command.caller_masked
        else:
            caller_hash, caller_masked = self._caller_hash(caller), mask_caller(caller)
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
            target = self._queues[config.abuse.route_to]
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
            self._key_refs[command.caller_key] = self._key_refs.get(command.caller_key, 0) + 1
        state.interactions[call_id] = call
        self._live[call_id] = None
        call.center_stats_key = key = self._day_clock.locate(now)
        cache = self._counter_cache
        total, counters = cache.get((None, key)) or self._counters(None, key)
        total.offered += 1
        counters.offered += 1
        self._touched_calls.add(call_id)
        calendar = self._calendars.get(queue.calendar)
        if calendar is not None and not calendar.always_open and not self._is_open(calendar, now):
            invariant(calendar is not None, "closed without a calendar")
            assert calendar is not None  # for mypy; checked by the invariant above
            call.after_hours = True
            self._count_queue_arrival(call, now)
            self._count_queue(call, _after_hours)
            self._count_center(call, _after_hours)
            opening = next_opening(calendar, now) if calendar.closed_action == "callback" else None
            if opening is None:
                self._count_outcome(call, _closed)
                self._finish(call, _CLOSED, now, "closed")
                self._emit(e.CallClosed(at=now, call=call.id, queue=call.queue, reason="closed", message=calendar.closed_message))
                return None
            if not sealed:
                call.caller = command.caller
            call.callback = True
            # Scheduled before the merge check: the new interaction never waited in line,
            # so a merge must not take it out of the queue's count.
            call.state = _SCHEDULED
            call.due_at = opening
            self._count_queue(call, _callback_requested)
            if self._merge_callback(call, now):
                return None
            call.callback_source = "after_hours"
            call.requested_at = now
            self._count_queue(call, _callback_after_hours)
            self._count_outcome(call, _callback_after_hours_requested)
            self._pending_callbacks[(call.caller_hash, call.queue)] = call.id
            self._push_timer(opening, "due", call.id)
            self._emit(e.CallScheduled(at=now, call=call.id, queue=call.queue, due_at=opening))
            return None
        if queue.external:
            self._count_queue_arrival(call, now)
            self._count_outcome(call, _sent_out)
            self._finish(call, _TRANSFERRED, now, "external")
            self._emit(e.CallTransferred(at=now, call=call.id, source="", target=queue.name, external=True))
            return None
        self._count_queue_arrival(call, now)
        queue_name = call.queue
        if queue.max_length and self.waiting_count(queue_name) >= queue.max_length:
            call.state = _WAITING
            self._count_waiting(call, +1)  # _overflow takes it out of the queue again
            self._call_token[call_id] = -1
            self._overflow(call, now)
            return None
        call.state = _WAITING
        self._enqueue(call)
        self._emit_queued(call, now)
        self._dispatch_call(call, now)
        return None

    def _merge_callback(self, call: Interaction, now: float) -> bool:
        """A second call-back request of the same caller for the same queue joins the first."""
        existing_id = self._pending_callbacks.get((call.caller_hash, call.queue))
        if existing_id is None or existing_id == call.id:
            return False
        agent = None
        if call.state is _WAITING or call.state is _OFFERED:
            # A caller on the line whose request joins an earlier one: their wait ended here.
            self._count_queue(call, _left_unanswered)
            self._count_outcome(call, _closed_left)
        if call.state is _WAITING:
            self._dequeue(call)
        elif call.state is _OFFERED:
            agent = self._withdraw_offer(call, "merged", now)
            self._dequeue(call)
        self._count_outcome(call, _closed)
        self._finish(call, _CLOSED, now, "merged")
        self._emit(e.CallbackRequested(at=now, call=call.id, queue=call.queue, merged_into=existing_id))
        if agent is not None:
            self._dispatch_agent(agent, now)  # the agent whose offer went is free again (invariant 5)
        return True

    def _overflow(self, call: Interaction, now: float) -> None:
        """Past max wait or max length: to the overflow queue, or a call-back request."""
        queue = self._queues[call.queue]
        self._count_queue(call, _overflowed)
        if queue.overflow == "callback":
            call.callback = True
            self._count_queue(call, _callback_requested)
            # _merge_callback takes a merged call out of the queue itself: dequeuing first
            # counted it out twice (the waiting count drifted from a restored center's).
            if self._merge_callback(call, now):
                return
            self._callback_from_line(call, now)
            self._dequeue(call)
            self._emit(e.CallbackRequested(at=now, call=call.id, queue=call.queue))
            self._pending_callbacks[(call.caller_hash, call.queue)] = call.id
            self._enqueue(call)
            self._dispatch_call(call, now)
            return
        self._move(call, self._queues[queue.overflow], now, overflow=True)

    def _move(self, call: Interaction, target: Queue, now: float, overflow: bool = False, answered: bool = False) -> None:
        """Move a WAITING call to another queue, keeping its place in line (its key).

        `answered`: the call leaves a conversation (an agent's transfer), not a wait.
        """
        source = call.queue
        self._dequeue(call)
        self._count_queue(call, _transferred_out if answered or call.callback else _transferred_out_unanswered)
        self._emit(e.CallTransferred(at=now, call=call.id, source=source, target=target.name, external=target.external, overflow=overflow))
        call.transfers += 1
        if call.callback:
            self._forget_callback(call, source)
        call.queue = target.name
        call.queued_at = now
        if target.external:
            self._count_queue_arrival(call, now)
            self._count_queue(call, _transferred_in)
            self._count_outcome(call, _sent_out)
            self._finish(call, _TRANSFERRED, now, "overflow" if overflow else "transfer")
            return
        self._count_queue_arrival(call, now)
        self._count_queue(call, _transferred_in)
        if call.callback:
            existing = self._pending_callbacks.get((call.caller_hash, call.queue))
            if existing is not None:
                # The caller already waits for a call-back from this queue: one is enough
                # (and one entry per caller and queue keeps a restored center identical).
                self._count_outcome(call, _closed)
                self._finish(call, _CLOSED, now, "merged")
                self._emit(e.CallbackRequested(at=now, call=call.id, queue=call.queue, merged_into=existing))
                return
            self._pending_callbacks[(call.caller_hash, call.queue)] = call.id
        self._enqueue(call)
        self._emit_queued(call, now)
        self._dispatch_call(call, now)

    def _call(self, call_id: str) -> Interaction | Rejection:
        call = self.state.interactions.get(call_id)
        if call is None:
            return reject(Code.unknown_call, f"no interaction {call_id!r}", field="call")
        return call

    def _agent(self, name: str) -> AgentRecord | Rejection:
        agent = self.state.agents.get(name)
        if agent is None:
            return reject(Code.unknown_agent, f"no agent {name!r}", field="agent")
        return agent

    def _not_found(self, call_id: str, agent_name: str) -> Rejection:
        """The rejection when the agent or the interaction does not exist (the agent first)."""
        found = self._call_and_agent(call_id, agent_name)
        invariant(isinstance(found, Rejection), "both exist")
        assert isinstance(found, Rejection)  # for mypy; checked by the invariant above
        return found

    def _call_and_agent(self, call_id: str, agent_name: str) -> tuple[Interaction, AgentRecord] | Rejection:
        agent = self._agent(agent_name)
        if isinstance(agent, Rejection):
            return agent
        call = self._call(call_id)
        if isinstance(call, Rejection):
            return call
        return call, agent

    def _answer(self, command: c.Answer, now: float) -> Rejection | None:
        agent = self.state.agents.get(command.agent)
        call = self.state.interactions.get(command.call)
        if agent is None or call is None:
            return self._not_found(command.call, command.agent)
        if call.agent == command.agent and call.state in (_CONNECTED, _WRAPUP, _COMPLETED):
            return None  # answered already, by this agent
        if command.call in agent.held:
            return None  # answered, then transferred onwards: it took effect
        if agent.presence is _LOGGED_OUT:
            return reject(Code.agent_logged_out, f"agent {agent.name!r} is logged out", field="agent")
        if call.state in _TERMINAL:
            return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
        if call.state is not _OFFERED:
            return reject(Code.call_not_offered, f"interaction {call.id!r} is {call.state.value}, not offered")
        if call.agent != agent.name:
            return reject(Code.not_offered_to_agent, f"interaction {call.id!r} is offered to another agent", field="agent")
        agent.offer = None
        counts = self._waiting_count[call.queue]
        counts[call.priority] -= 1  # counted while it waited and rang
        call.state = _CONNECTED
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
            self._forget_callback(call)
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
            self._count_callback(call, _callback_reached)
            wait = now - call.queued_at
        else:
            wait = now - call.queued_at
            within = wait <= self._queues[queue_name].service_level_threshold
            self._count_answered(queue_name, stats_key, wait, within, False)
            if not call.counted:  # the center counts the first answer only (invariant 8)
                call.counted = True
                center_wait = now - call.arrived_at
                center_within = center_wait <= self.state.config.service_level_threshold
                self._count_answered(None, call.center_stats_key, center_wait, center_within, False)
        # The call-back is done: from here the caller is on the line like any other (if
        # transferred, max wait applies again and it is no pending call-back request).
        if callback:
            call.callback = False
        call.handled_queue = queue_name
        call.handled_key = stats_key
        self._touched_calls.add(call_id)
        self._events.append(e.CallAnswered(at=now, call=call_id, agent=name, queue=queue_name, wait=round(wait, 3)))
        # `_agent_changed`, with the state it would derive (logged in, no offer, a call
        # connected). A voice-only agent holding a call is in no free-agent heap, nor was
        # while the offer rang, and re-indexing would find nothing to do.
        if not self._voice_only.get(name):
            self._unindexed[name] = None
            self._show(agent, _SHOWN_BUSY, now)
            self._dispatch_agent(agent, now)  # a chat agent may take more
        else:
            if name in self._free_anywhere:
                self._unindexed[name] = None
            self._show(agent, _SHOWN_BUSY, now)
        return None

    def _reject(self, command: c.Reject, now: float) -> Rejection | None:
        found = self._call_and_agent(command.call, command.agent)
        if isinstance(found, Rejection):
            return found
        call, agent = found
        if call.state is _OFFERED and call.agent == agent.name:
            self._withdraw_offer(call, "rejected", now)
            if agent.presence is _READY:
                agent.presence = _NOT_READY
                agent.reason = ""
                self._agent_changed(agent, now)
            self._dispatch_call(call, now)
            return None
        if call.last_offer_agent == agent.name and call.last_offer_outcome in ("rejected", "no_answer"):
            return None  # the offer already ended without an answer
        if agent.presence is _LOGGED_OUT:
            return reject(Code.agent_logged_out, f"agent {agent.name!r} is logged out", field="agent")
        if call.state in _TERMINAL:
            return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
        if call.state is _OFFERED:
            return reject(Code.not_offered_to_agent, f"interaction {call.id!r} is offered to another agent", field="agent")
        return reject(Code.call_not_offered, f"interaction {call.id!r} is {call.state.value}, not offered")

    def _abandon(self, command: c.Abandon, now: float) -> Rejection | None:
        call = self._call(command.call)
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
            agent = self._withdraw_offer(call, "abandoned", now)
        if call.state is _WAITING:
            self._dequeue(call)
        wait = now - call.queued_at
        short_abandon = self.state.config.short_abandon_seconds
        # The queue's day and interval, then the center's once (invariant 8); adding False
        # changes nothing, so it is skipped.
        short = wait < short_abandon
        for counters in self._counters(call.queue, call.queue_stats_key):
            counters.abandoned += 1
            if short:
                counters.short_abandoned += 1
            counters.wait_abandoned_seconds += wait
        if not call.counted:
            call.counted = True
            center_wait = now - call.arrived_at
            center_short = center_wait < short_abandon
            for counters in self._counters(None, call.center_stats_key):
                counters.abandoned += 1
                if center_short:
                    counters.short_abandoned += 1
                counters.wait_abandoned_seconds += center_wait
        self._finish(call, _ABANDONED, now, "abandoned")
        self._emit(e.CallAbandoned(at=now, call=call.id, queue=call.queue, wait=round(wait, 3)))
        if agent is not None:
            self._dispatch_agent(agent, now)
        return None

    def _hangup(self, command: c.Hangup, now: float) -> Rejection | None:
        call = self.state.interactions.get(command.call)
        if call is None:
            return reject(Code.unknown_call, f"no interaction {command.call!r}", field="call")
        if call.state is not _CONNECTED:
            if call.state in (_WRAPUP, _COMPLETED):
                return None
            if call.state in _TERMINAL:
                return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
            return reject(Code.call_not_connected, f"interaction {call.id!r} is {call.state.value}; use abandon")
        agent = self.state.agents[call.agent or ""]
        # `self._end_leg(call, agent, now, transferred=False)`, inlined.
        call_id = call.id
        name = agent.name
        agent_held = agent.held
        held = agent_held[call_id]
        held.phase = "wrapup"
        held.ended_at = now
        if held.hold_since is not None:
            self._end_hold(call_id, name, held, now)
        if held.transferred:
            held.transferred = False
        wrapup = self._queues[held.queue].wrapup_seconds
        if wrapup:
            held.wrap_deadline = deadline = now + wrapup
            _heappush(self._timers, (deadline, _RANK_WRAPUP, "wrapup", name, call_id))
        self._touched_calls.add(call_id)
        self._events.append(e.CallEnded(at=now, call=call_id, agent=name, talk=round(now - held.answered_at, 3)))
        if len(agent_held) == 1 and agent.offer is None and agent.presence is not _LOGGED_OUT:
            # `_agent_changed`, with the state it would derive: wrapping up the only call held.
            # Holding it, a voice-only agent stays out of the free-agent heaps.
            if name in self._free_anywhere or not self._voice_only[name]:
                self._unindexed[name] = None
            self._show(agent, _SHOWN_WRAPUP, now)
        else:
            self._agent_changed(agent, now)
        call.state = _WRAPUP
        call.ended_at = now
        return None

    def _hold(self, command: c.Hold, now: float) -> Rejection | None:
        found = self._connected_leg(command.call)
        if isinstance(found, Rejection):
            return found
        call, agent, held = found
        if held.hold_since is not None:
            return None  # on hold already
        held.hold_since = now
        self._touch(call, agent)
        self._emit(e.CallHeld(at=now, call=call.id, agent=agent.name))
        return None

    def _unhold(self, command: c.Unhold, now: float) -> Rejection | None:
        found = self._connected_leg(command.call)
        if isinstance(found, Rejection):
            return found
        call, agent, held = found
        if held.hold_since is None:
            return None  # not on hold (resumed already)
        self._touch(call, agent)
        self._end_hold(call.id, agent.name, held, now)
        return None

    def _connected_leg(self, call_id: str) -> tuple[Interaction, AgentRecord, Held] | Rejection:
        call = self._call(call_id)
        if isinstance(call, Rejection):
            return call
        if call.state in _TERMINAL or call.state is _WRAPUP:
            return reject(Code.call_finished, f"interaction {call.id!r} is {call.state.value}")
        if call.state is not _CONNECTED:
            return reject(Code.call_not_connected, f"interaction {call.id!r} is {call.state.value}; only a conversation is held")
        agent = self.state.agents[call.agent or ""]
        return call, agent, agent.held[call.id]

    def _end_hold(self, call_id: str, agent_name: str, held: Held, now: float) -> None:
        since = held.hold_since if held.hold_since is not None else now
        held.hold_seconds += now - since
        held.hold_since = None
        self._events.append(e.CallResumed(at=now, call=call_id, agent=agent_name, hold=round(now - since, 3)))

    def _end_leg(self, call: Interaction, agent: AgentRecord, now: float, transferred: bool) -> None:
        call_id = call.id
        held = agent.held[call_id]
        held.phase = "wrapup"
        held.ended_at = now
        held.transferred = transferred
        if held.hold_since is not None:
            self._end_hold(call_id, agent.name, held, now)
        wrapup = self._queues[held.queue].wrapup_seconds
        if wrapup:
            held.wrap_deadline = deadline = now + wrapup
            heapq.heappush(self._timers, (deadline, _RANK_WRAPUP, "wrapup", agent.name, call_id))
        self._touched_calls.add(call_id)
        name = agent.name
        self._events.append(e.CallEnded(at=now, call=call_id, agent=name, talk=round(now - held.answered_at, 3)))
        self._agent_changed(agent, now)

    def _transfer(self, command: c.Transfer, now: float) -> Rejection | None:
        found = self.state.interactions.get(command.call)
        if found is not None and found.state is _TRANSFERRED and found.queue == command.queue:
            return None  # transferred out there already
        target = self._queues.get(command.queue)
        if target is None:
            return reject(Code.unknown_queue, f"no queue named {command.queue!r}", field="queue")
        call = self._call(command.call)
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
            self._forget_callback(call)
            call.queue = target.name
            call.transfers += 1
            self._touch(call)
            self._emit(e.CallTransferred(at=now, call=call.id, source=source, target=target.name, external=target.external))
            if target.external:
                self._count_outcome(call, _sent_out)
                self._finish(call, _TRANSFERRED, now, "transfer")
            elif not self._merge_callback(call, now):
                self._pending_callbacks[(call.caller_hash, call.queue)] = call.id
            return None
        agent = None
        answered = call.state is _CONNECTED
        if call.state is _OFFERED:
            agent = self._withdraw_offer(call, "transferred", now)
        elif call.state is _CONNECTED:
            agent = self.state.agents[call.agent or ""]
            self._end_leg(call, agent, now, transferred=True)
            call.agent = None
            call.state = _WAITING
            self._count_waiting(call, +1)
            self._call_token[call.id] = -1
        self._move(call, target, now, answered=answered)
        if agent is not None:
            self._dispatch_agent(agent, now)
        return None

    def _request_callback(self, command: c.RequestCallback, now: float) -> Rejection | None:
        call = self._call(command.call)
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
        self._count_queue(call, _callback_requested)
        if self._merge_callback(call, now):
            return None
        agent = None
        if call.state is _OFFERED:
            agent = self._withdraw_offer(call, "callback", now)
        self._callback_from_line(call, now)
        call.callback = True
        self._pending_callbacks[(call.caller_hash, call.queue)] = call.id
        # The caller hangs up; max wait no longer applies (they are not on a line).
        self._dequeue(call)
        self._enqueue(call)
        self._touch(call)
        self._emit(e.CallbackRequested(at=now, call=call.id, queue=call.queue))
        self._dispatch_call(call, now)
        if agent is not None:
            self._dispatch_agent(agent, now)
        return None

    def _wrapup(self, command: c.WrapUp, now: float) -> Rejection | None:
        agent = self.state.agents.get(command.agent)
        call = self.state.interactions.get(command.call)
        if agent is None or call is None:
            return self._not_found(command.call, command.agent)
        held = agent.held.get(call.id)
        if held is None:
            same = call.disposition == command.disposition and call.abusive == command.abusive
            if call.state is _COMPLETED and call.agent == agent.name and same:
                return None  # wrapped up already, with these values
            # Otherwise refused; the reason is the first that applies, in Code's order.
            if agent.presence is _LOGGED_OUT:
                return reject(Code.agent_logged_out, f"agent {agent.name!r} is logged out", field="agent")
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
        self._complete_wrapup(call, agent, command.disposition, command.abusive, callback_at, now)
        return None

    def _complete_wrapup(
        self, call: Interaction, agent: AgentRecord, disposition: str, abusive: bool,
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
        cache = self._counter_cache
        center_key = call.center_stats_key
        # Written out for the four records (the queue's day and interval, the center's day
        # and interval); adding zero or False changes nothing, so it is skipped.
        total, counters = cache.get((queue_name, handled_key)) or self._counters(queue_name, handled_key)
        center_total, center_counters = cache.get((None, center_key)) or self._counters(None, center_key)
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
        if self._agent_days_start <= now < self._agent_days_end and name in self._agent_days:
            agent_day = self._agent_days[name]
        else:
            agent_day = self._agent_day(name, now)
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
        aht = self.state.aht
        previous = aht.get(queue_name) or self._queues[queue_name].aht_seconds
        aht[queue_name] = previous + AHT_SMOOTHING * (talk + wrapup - previous)
        agent.handled += 1
        sealed: tuple[bytes, str, str] | None = None
        if disposition == "callback" and callback_at is not None and call.caller_key is not None and call.caller_sealed is not None:
            # The task takes the sealed number with it: its key is held before the origin
            # lets go of it (a call-back that merges into a pending one releases it again).
            sealed = (call.caller_sealed, call.caller_key, call.sealed_for or call.id)
            self._key_refs[call.caller_key] = self._key_refs.get(call.caller_key, 0) + 1
        if call.state is _WRAPUP and call.agent == name:
            call.disposition = disposition
            if call.abusive is not abusive:
                call.abusive = abusive
            self._finish(call, _COMPLETED, now)
        else:
            self._touched_calls.add(call_id)
        self._events.append(
            e.CallWrappedUp(at=now, call=call_id, agent=name, disposition=disposition, abusive=abusive, timed_out=timed_out)
        )
        if abusive:
            self.state.abuse.setdefault(call.caller_hash, []).append(now)
            recovery = self.state.config.abuse.recovery_seconds
            if recovery:
                agent.recovering_until = now + recovery
                self._push_timer(agent.recovering_until, "recovery", name)
        if disposition == "callback" and callback_at is not None:
            self._schedule_callback(call, agent, queue_name, callback_at, now, sealed)
        if agent.pending:
            self._apply_pending(agent, now)
        agent.available_since = now
        self._agent_changed(agent, now)
        self._dispatch_agent(agent, now)

    def _schedule_callback(
        self, origin: Interaction, agent: AgentRecord, queue_name: str, callback_at: float, now: float,
        sealed: tuple[bytes, str, str] | None = None,
    ) -> None:
        """A call-back promised at wrap-up: first to the same agent for a while, then to anyone.

        It goes to the queue in which this agent handled the call, not to wherever the call
        went after: a conversation transferred to a district office ends in an external
        queue, which nobody here serves.
        """
        existing = self._pending_callbacks.get((origin.caller_hash, queue_name))
        if existing is not None:
            if sealed is not None:
                self._release_key(sealed[1])
            self._emit(e.CallbackRequested(at=now, call=origin.id, queue=queue_name, merged_into=existing))
            return
        number = 1
        while f"{origin.id}:cb{number}" in self.state.interactions:
            number += 1
        self.state.order += 1
        due = max(callback_at, now)
        call = Interaction(
            id=f"{origin.id}:cb{number}", queue=queue_name, channel="voice" if "voice" in self._queues[queue_name].channels else origin.channel,
            caller_hash=origin.caller_hash, caller_masked=origin.caller_masked, caller=None,
            priority=origin.priority, order=self.state.order, arrived_at=now, place_at=due, queued_at=due,
            state=_SCHEDULED, callback=True, due_at=due, preferred_agent=agent.name, origin=origin.id,
            callback_source="promised", requested_at=now,
        )
        if sealed is not None:
            call.caller_sealed, call.caller_key, call.sealed_for = sealed
        self.state.interactions[call.id] = call
        self._live[call.id] = None
        # A task, not a caller: never offered, answered or abandoned in the callers' counts.
        call.counted = True
        call.center_stats_key = call.queue_stats_key = self._day_clock.locate(now)
        self._count_callback(call, _callback_promised)
        self._pending_callbacks[(call.caller_hash, call.queue)] = call.id
        self._push_timer(due, "due", call.id)
        self._touch(call)
        self._emit(e.CallScheduled(at=now, call=call.id, queue=call.queue, due_at=due, agent=agent.name))

    def _callback_attempt(self, command: c.CallbackAttempt, now: float) -> Rejection | None:
        call = self._call(command.call)
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
            return self._answer(c.Answer(call=call.id, agent=name), now)
        attempt = call.attempts
        agent = self._withdraw_offer(call, command.outcome, now)
        self._dequeue(call)
        queue = self._queues[call.queue]
        config = self.state.config
        due: float | None = None
        if command.outcome != "wrong_number" and attempt < config.callback_attempts:
            due = now + config.callback_retry_seconds
            calendar = self._calendars.get(config.callback_calendar or queue.calendar)
            if not self._is_open(calendar, due):
                due = next_opening(calendar, due)
        if due is None:
            self._emit(e.CallbackAttempted(at=now, call=call.id, agent=name, outcome=command.outcome, attempt=attempt))
            self._count_callback(call, _callback_expired)
            self._finish(call, _CLOSED, now, "wrong_number" if command.outcome == "wrong_number" else "unreachable")
        else:
            call.state = _SCHEDULED
            call.due_at = due
            call.preferred_agent = None
            call.preferred_until = None
            self._push_timer(due, "due", call.id)
            self._touch(call)
            self._emit(e.CallbackAttempted(at=now, call=call.id, agent=name, outcome=command.outcome, attempt=attempt, next_due_at=due))
            self._emit(e.CallScheduled(at=now, call=call.id, queue=call.queue, due_at=due))
        self._dispatch_agent(agent, now)
        return None

    def _survey(self, command: c.Survey, now: float) -> Rejection | None:
        call = self._call(command.call)
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
        cache = self._counter_cache
        handled = (call.handled_queue, call.handled_key)
        center = (None, call.center_stats_key)
        for counters in (*(cache.get(handled) or self._counters(*handled)), *(cache.get(center) or self._counters(*center))):
            counters.surveys += 1
            counters.survey_points += score
            if satisfied:
                counters.satisfied += 1
        if call.agent is not None and call.agent in self.state.agents:
            agent_counters = self._agent_day(call.agent, now).counters
            agent_counters.surveys += 1
            agent_counters.survey_points += score
            if satisfied:
                agent_counters.satisfied += 1
        call_id = call.id
        self._touched_calls.add(call_id)
        self._events.append(e.SurveyRecorded(at=now, call=call_id, agent=call.agent, score=score))
        return None

    def _login(self, command: c.Login, now: float) -> Rejection | None:
        agent = self._agent(command.agent)
        if isinstance(agent, Rejection):
            return agent
        if agent.presence is not _LOGGED_OUT:
            return None
        agent.presence = _NOT_READY
        agent.reason = "login"
        for queue_name, _level in self._agent_queues.get(agent.name, ()):
            self._staffed[queue_name] = self._staffed.get(queue_name, 0) + 1
        self._agent_changed(agent, now)
        return None

    def _ready(self, command: c.Ready, now: float) -> Rejection | None:
        agent = self._agent(command.agent)
        if isinstance(agent, Rejection):
            return agent
        if agent.presence is _LOGGED_OUT:
            return reject(Code.agent_logged_out, f"agent {agent.name!r} is logged out", field="agent")
        if agent.presence is _READY and not agent.pending:
            return None
        if agent.presence is not _READY:
            agent.available_since = now
        agent.presence = _READY
        agent.reason = ""
        agent.pending = ""
        agent.pending_reason = ""
        self._agent_changed(agent, now)
        self._dispatch_agent(agent, now)
        return None

    def _not_ready(self, command: c.NotReady, now: float) -> Rejection | None:
        agent = self._agent(command.agent)
        if isinstance(agent, Rejection):
            return agent
        if agent.presence is _LOGGED_OUT:
            return reject(Code.agent_logged_out, f"agent {agent.name!r} is logged out", field="agent")
        if agent.held:
            if agent.pending == "not_ready" and agent.pending_reason == command.reason:
                return None
            withdrawn = None
            if agent.offer is not None:
                withdrawn = self.state.interactions[agent.offer]
                self._withdraw_offer(withdrawn, "agent_left", now)
            # The deferral is recorded before the withdrawn call is routed again, so that the
            # call cannot be offered straight back to the agent who is leaving.
            agent.pending = "not_ready"
            agent.pending_reason = command.reason
            self._agent_changed(agent, now)
            self._emit(e.AgentChanged(at=now, agent=agent.name, state=agent.state._value_, pending="not_ready", reason=command.reason))
            if withdrawn is not None:
                self._dispatch_call(withdrawn, now)
            return None
        if agent.presence is _NOT_READY and agent.reason == command.reason and agent.offer is None:
            return None
        agent.presence = _NOT_READY
        agent.reason = command.reason
        agent.pending = ""
        if agent.offer is not None:
            call = self.state.interactions[agent.offer]
            self._withdraw_offer(call, "agent_left", now)
            self._dispatch_call(call, now)
        self._agent_changed(agent, now)
        return None

    def _logout(self, command: c.Logout, now: float) -> Rejection | None:
        agent = self._agent(command.agent)
        if isinstance(agent, Rejection):
            return agent
        if agent.presence is _LOGGED_OUT:
            return None
        if agent.held and agent.pending == "logout":
            return None
        withdrawn = None
        if agent.offer is not None:
            withdrawn = self.state.interactions[agent.offer]
            self._withdraw_offer(withdrawn, "agent_left", now)
        # The logout (or its deferral) is recorded before the withdrawn call is routed again,
        # so that the call cannot be offered straight back to the agent who is leaving.
        if agent.held:
            agent.pending = "logout"
            agent.pending_reason = ""
            self._agent_changed(agent, now)
            self._emit(e.AgentChanged(at=now, agent=agent.name, state=agent.state._value_, pending="logout"))
        else:
            self._set_logged_out(agent)
            agent.pending = ""
            agent.pending_reason = ""
            self._agent_changed(agent, now)
        if withdrawn is not None:
            self._dispatch_call(withdrawn, now)
        return None

    def _tick(self, command: c.Tick, now: float) -> Rejection | None:
        return None  # timers fire in apply() for every command

    def _audit(self, command: c.Audit, now: float) -> Rejection | None:
        self.state.audit.append((now, command.actor, command.action, command.detail))
        del self.state.audit[:-1000]
        self._emit(e.Audited(at=now, actor=command.actor, action=command.action, detail=command.detail))
        return None

    _handlers: dict[type, Callable[[Center, Any, float], Rejection | None]] = {
        c.Configure: _configure,
        c.Arrive: _arrive,
        c.Answer: _answer,
        c.Reject: _reject,
        c.Abandon: _abandon,
        c.Hangup: _hangup,
        c.Hold: _hold,
        c.CallbackAttempt: _callback_attempt,
        c.Unhold: _unhold,
        c.Transfer: _transfer,
        c.RequestCallback: _request_callback,
        c.WrapUp: _wrapup,
        c.Survey: _survey,
        c.Login: _login,
        c.Ready: _ready,
        c.NotReady: _not_ready,
        c.Logout: _logout,
        c.Tick: _tick,
        c.Audit: _audit,
        c.ActivateCoreVersion: _activate_core_version,
    }

    # ------------------------------------------------------------------ invariants

    # These two run after every step on what it touched, so the messages are built only
    # when a check fails (an f-string per check costs more than the check).

    def _check_call(self, call: Interaction) -> None:
        state = call.state
        if state is _OFFERED:
            agent = self.state.agents.get(call.agent or "")
            if agent is None or agent.offer != call.id:
                invariant(False, f"{call.id} offered but not held as an offer")
        elif state is _CONNECTED or state is _WRAPUP:
            agent = self.state.agents.get(call.agent or "")
            if agent is None or call.id not in agent.held:
                invariant(False, f"{call.id} {state.value} but no agent holds it")
        elif state is _WAITING:
            if call.agent is not None:
                invariant(False, f"{call.id} waiting yet assigned to {call.agent}")
        elif state in _TERMINAL and (call.caller is not None or call.caller_key is not None):
            invariant(False, f"{call.id} ended but keeps the caller's number")

    def _check_agent(self, agent: AgentRecord) -> None:
        held = agent.held
        if held:
            used = {"voice": 0, "chat": 0, "sms": 0}
            for item in held.values():
                used[item.channel] += 1
            capacity = self._capacity[agent.name]
            if used["voice"] > 1:
                invariant(False, f"agent {agent.name} holds {used['voice']} voice calls")
            if used["voice"] and len(held) > 1:
                invariant(False, f"agent {agent.name} mixes a voice call with other work")
            for channel in ("chat", "sms"):
                if used[channel] > capacity[channel]:
                    invariant(False, f"agent {agent.name} holds {used[channel]} {channel} over capacity")
        if agent.offer is not None:
            call = self.state.interactions.get(agent.offer)
            if call is None or call.state is not _OFFERED or call.agent != agent.name:
                invariant(False, f"agent {agent.name} has a stale offer")
        if agent.presence is _LOGGED_OUT and (held or agent.offer is not None):
            invariant(False, f"agent {agent.name} logged out while working")

    def check_invariants(self) -> None:
        """Every docs/design.md invariant the core can see in one state (3, 4, 5, 8), over all of it.

        Invariant 6 (arrival order) needs the history of offers: the property tests check
        it from the events (tests/test_core_stateful.py).

        O(agents x waiting interactions): for tests and simulators, not for every step.
        """
        offers: dict[str, str] = {}
        pending: dict[tuple[str, str], str] = {}
        for call in self.state.interactions.values():
            self._check_call(call)
            if call.state is _OFFERED:
                invariant(call.id not in offers, f"{call.id} offered twice")
                offers[call.id] = call.agent or ""
            if call.state in (_SCHEDULED, _WAITING, _OFFERED):
                queue = self._queues.get(call.queue)
                invariant(queue is not None and not queue.external, f"{call.id} is {call.state.value} in {call.queue}, which nobody here serves")
            if call.callback and call.state in (_SCHEDULED, _WAITING, _OFFERED):
                key = (call.caller_hash, call.queue)
                invariant(key not in pending, f"{call.id} and {pending.get(key)} are call-backs for one caller and queue")
                pending[key] = call.id
        # One pending call-back per caller and queue, and the index knows exactly those: a
        # restored center rebuilds the index from the state, so it must match (invariant 7).
        invariant(pending == self._pending_callbacks, "the pending call-back index differs from the state")
        live_ids = [call.id for call in self.state.interactions.values() if call.state not in _TERMINAL]
        invariant(sorted(live_ids) == sorted(self._live), "the index of live interactions differs from the state")
        # The same for the counts of callers in line (max_length, position and EWT read them).
        in_line: dict[str, dict[int, int]] = {}
        for call in self.state.interactions.values():
            if call.state is _WAITING or call.state is _OFFERED:
                by_priority = in_line.setdefault(call.queue, {})
                by_priority[call.priority] = by_priority.get(call.priority, 0) + 1
        counted = {
            queue: {priority: count for priority, count in counts.items() if count}
            for queue, counts in self._waiting_count.items()
        }
        invariant(
            {queue: counts for queue, counts in counted.items() if counts} == in_line,
            f"the waiting counts {counted} differ from the callers in line {in_line}",
        )
        for agent in self.state.agents.values():
            self._check_agent(agent)
            for call_id, held in agent.held.items():
                call = self.state.interactions[call_id]
                # A leg in wrap-up may belong to a call transferred on and connected to
                # someone else by now; a leg in conversation is this agent's call.
                invariant(
                    held.phase != "connected" or (call.state is _CONNECTED and call.agent == agent.name),
                    f"{call_id} is {call.state.value} with {call.agent} but in conversation with {agent.name}",
                )
        # Invariant 5: work conservation.
        waiting = [call for call in self.state.interactions.values() if call.state is _WAITING]
        for agent in self.state.agents.values():
            if agent.presence is not _READY or agent.offer is not None or agent.pending:
                continue
            if agent.recovering_until is not None:
                continue
            levels = dict(self._agent_queues.get(agent.name, ()))
            for call in waiting:
                if call.preferred_agent not in (None, agent.name) or call.id in agent.held:
                    continue
                level = levels.get(call.queue)
                if level is None or level < self._min_level(call, self.state.now):
                    continue
                if call.channel not in self._queues[call.queue].channels:
                    continue
                invariant(
                    not self._agent_available(agent, call.channel),
                    f"agent {agent.name} is free while {call.id} waits in {call.queue}",
                )
        # Invariant 8: the center counts every interaction once, in one outcome. Checked
        # only while nothing has been pruned by retention (tests and simulations).
        totals = Counters()
        for day in self.state.stats.values():
            total = day.center.total
            totals.offered += total.offered
            totals.answered += total.answered
            totals.abandoned += total.abandoned
            totals.closed += total.closed
            totals.transfers_out += total.transfers_out
            totals.callbacks_waiting += total.callbacks_waiting
            totals.callbacks_after_hours += total.callbacks_after_hours
        callers = [call for call in self.state.interactions.values() if call.origin is None]
        if totals.offered == len(callers):
            live = sum(1 for call in callers if not call.counted)
            left = totals.callbacks_waiting + totals.callbacks_after_hours
            invariant(
                totals.offered == totals.answered + totals.abandoned + totals.closed + totals.transfers_out + left + live,
                f"statistics count {totals.offered} offered but {totals.answered} answered, {totals.abandoned} abandoned, "
                f"{totals.closed} closed, {totals.transfers_out} sent out, {left} call-back requests and {live} in progress",
            )
            for call in self.state.interactions.values():
                invariant(call.counted or call.state not in _TERMINAL, f"{call.id} ended uncounted")


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the HMAC key's inner and outer pads (RFC 2104).

    Copying them per message is what `hmac` does without its one-shot OpenSSL path, and
    costs less than either that path or copying an `hmac.HMAC` object.
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return hashlib.sha256(bytes(byte ^ 0x36 for byte in key)), hashlib.sha256(bytes(byte ^ 0x5C for byte in key))


_SHA256_BLOCK = 64


# The last configuration checked, with its outcome: a node replaying its log (every restart)
# or a standby applying what it is shipped checks the same configuration again and again.
# Keyed by its encoding, which tells 1 from 1.0 and True (equality would not), so the same
# key means the same input and the same outcome.
_last_checked: tuple[bytes, CenterConfig | Rejection, list[ConfigError]] | None = None


def _checked(center: CenterConfig) -> tuple[CenterConfig | Rejection, list[ConfigError]]:
    """`_normalized(center)` and, when it is valid, `validate_center` of the result."""
    global _last_checked
    key = msgspec.msgpack.encode(center)
    last = _last_checked
    if last is not None and last[0] == key:
        return last[1], last[2]
    normalized = _normalized(center)
    problems = [] if isinstance(normalized, Rejection) else validate_center(normalized)
    _last_checked = (key, normalized, problems)
    return normalized, problems


def _normalized(center: CenterConfig) -> CenterConfig | Rejection:
    """The configuration as it will read back from a snapshot, or why it is invalid.

    A configuration built in Python (tests, the simulator) skips msgspec's decoding: its
    ranges are unchecked and `5` stays an int where the field is a float, so the snapshot
    would encode `5` and its restore `5.0`, and their hashes would differ (invariant 7).
    Converting once through builtins checks the ranges and fixes the types.
    """
    try:
        return msgspec.convert(msgspec.to_builtins(center), CenterConfig)
    except msgspec.ValidationError as error:
        message = str(error)
        path = message.rpartition("at `$")[2].rstrip("`") if "at `$" in message else ""
        if path.startswith("."):
            path = path[1:]
        if not path.startswith(("queues[", "agents[", "calendars[")):
            path = "center." + path if path else "center"
        return reject(Code.invalid_config, message, field=path)


def _offered(counters: Counters) -> None:
    counters.offered += 1


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
