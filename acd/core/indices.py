"""The indices a `Center` derives from its state: waiting interactions and free agents in heaps,
live and pending call-back interactions, staffing counts.

None of this is stored: a restored snapshot rebuilds it (`_rebuild_indices`), and a restored
center behaves exactly as the one that took the snapshot (invariant 7). Waiting interactions
live in heaps per (queue, channel, priority) and free agents in heaps per (queue, channel,
skill level), both with lazy deletion by token, so a command costs O(log n).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from typing import Any

from .base import (
    _COMPLETED,
    _LOGGED_OUT,
    _OFFERED,
    _READY,
    _SCHEDULED,
    _SHOWN_NOT_READY,
    _TERMINAL,
    _WAITING,
    _moved,
)
from .calendar import DayClock, open_between
from .config import Calendar, CenterConfig, Queue
from .events import CallQueued, QueueUpdated
from .privacy import _hmac_pads
from .state import AgentRecord, Interaction
from .timers import Timers
from .versions import routing_strategy


class Indices(Timers):
    """The indices derived from the state, and the queries that read them."""

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

    def _rebuild_indices(self) -> None:
        config = self.state.config
        self._queues: dict[str, Queue] = {q.name: q for q in config.queues}
        self._calendars: dict[str, Calendar] = {cal.name: cal for cal in config.calendars}
        self._open_cache: dict[str, tuple[float, float, bool]] = {}  # calendar -> [start, end) and answer
        self._capacity = {a.name: {ch: a.capacity.of(ch) for ch in ("voice", "chat", "sms")} for a in config.agents}
        self._channels = {a.name: tuple(ch for ch in ("voice", "chat", "sms") if a.capacity.of(ch)) for a in config.agents}
        # Agents who take voice only: while they hold anything, they are not free.
        self._voice_only = {a.name: not a.capacity.chat and not a.capacity.sms for a in config.agents}
        self._caller_pads = _hmac_pads(config.abuse.hash_key.encode())
        fingerprint_key = hashlib.sha256(b"fingerprint:" + config.abuse.hash_key.encode()).digest()
        # The keyed hash before any data: a copy per arrival costs less than a new keyed object.
        self._fingerprint_hash = hashlib.blake2b(digest_size=12, key=fingerprint_key)
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

    def _finish(self, call: Interaction, move: str, now: float, reason: str = "") -> None:
        """The interaction ends by `move` (to a terminal state): out of every index."""
        call.state = state = _moved(call, move)
        # A store into a state record costs more than a read, hence the tests first.
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

    def _forget_callback(self, call: Interaction, queue: str | None = None) -> None:
        """Drop `call`'s pending call-back entry, never another interaction's."""
        key = (call.caller_hash, call.queue if queue is None else queue)
        if self._pending_callbacks.get(key) == call.id:
            del self._pending_callbacks[key]

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
            CallQueued(
                at=now, call=call.id, queue=queue, channel=call.channel, priority=priority,
                position=position, ewt=ewt, warning=call.warning, callback=call.callback,
            )
        )
        return position, ewt

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
            self._events.append(QueueUpdated(
                at=now, queue=queue_name, waiting=waiting, available=available,
                ewt=[self.ewt(queue_name, position) for position in range(1, min(waiting, 10) + 1)],
            ))
