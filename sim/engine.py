"""The simulator's engine: the real routing core driven on virtual time by a heap of events.

Theory of operation
-------------------
`Simulation` owns one `acd.core.Center` and a heap of its own events `(time, sequence, kind,
subject, detail)`: a call arrives, an agent answers after the ring, a conversation ends, a
wrap-up is done, a caller loses patience or asks for a call-back, a survey is answered, an
agent logs in, takes a break or logs out. Popping an event turns it into a command for the
core (`Arrive`, `Answer`, `Hangup`, `Transfer`, `WrapUp`, `Abandon`, `RequestCallback`,
`Survey`, `Login`, `Ready`, `NotReady`, `Logout`); the core's events (`CallOffered`,
`CallAnswered`, ...) schedule what the people involved do next. The core's own timers (ring
timeout, wrap-up limit, skill relaxation, overflow, call-back due) are honoured exactly: before
each event the engine asks `center.next_deadline()` and sends a `Tick` at that instant if it
comes first. No Trio, no sockets, no clock: a day of a center runs in a fraction of a second.

Determinism. One integer seed gives the run: calls come from one random stream drawn in a
fixed order (`sim.workload.CallFactory`), agents' desk behaviour (ring delay, missed offers)
from another, ties in the heap break by insertion order, and the core is deterministic. The
trace hash is a SHA-256 over every event the core emitted (msgpack, one array per command) and
every interaction's record (one array of rows); the same seed gives the same hash
(tests/test_sim.py checks it).

Who decides what. The caller decides when to hang up (talk time, patience, asking for a
call-back); the agent decides when to answer (ring delay, or not at all), how long to wrap up
and the disposition; the core decides everything else (routing, priorities, overflow,
closed hours). A command the core refuses is counted by its rejection code: the engine skips
commands it knows to be stale (an answer after the caller left), so any rejection in the
counts is worth a look.

Commands the engine issues "at once" (an answer with no ring delay, a wrap-up of zero
seconds) are queued and applied after the current command's events have all been handled, so
that the engine sees the core's events in the order the core emitted them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import itertools
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from acd.core import Center, ConfigError, Presence, Rejection, State, commands, events
from acd.core.calendar import is_open
from acd.core.config import Agent, Calendar, CenterConfig, Queue

from .workload import INTERVAL_SECONDS, CallFactory, CallSpec, Scenario, agent_plan

# Kinds of the engine's own events, in no particular order (ties break by sequence number).
ARRIVE, ANSWER, END_TALK, WRAPUP, ABANDON, ASK_CALLBACK, SURVEY, AGENT, READY_AGAIN, INTERVAL, STAFF = range(11)
AGENT_STATES = ("ready", "offered", "busy", "wrapup", "not_ready", "recovering")
TICK = commands.Tick()
NO_ATTRIBUTES: dict[str, Any] = {}
VULNERABLE = {"vulnerable": True}
_trace_encoder = msgspec.msgpack.Encoder()


@dataclass
class Behaviour:
    """How agents act at the desk (all draws from the engine's own random stream)."""

    ring_delay: Callable[[], float] | None = None      # None: answer the instant it rings
    miss_probability: float = 0.0                      # the offer rings out unanswered
    ready_after_miss_seconds: float = 30.0
    max_occupancy: float = 1.0                         # above it over the window: a short rest
    occupancy_window_seconds: float = 1800.0
    rest_seconds: float = 120.0
    callback_talk: Callable[[], float] | None = None   # talk time of a call-back task


@dataclass
class IntervalFigures:
    """What the engine itself observes in one 15-minute interval (the core counts the rest)."""

    waiting_max: int = 0          # most callers on the line at once (ringing ones included)
    longest_wait: float = 0.0     # longest time any caller on the line had waited
    agent_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(AGENT_STATES, 0.0))


class Simulation:
    """One run: a core, a heap of events, the calls in progress and what has been observed."""

    def __init__(
        self, config: CenterConfig, *, seed: int, start: float, behaviour: Behaviour | None = None,
        detail: bool = False, trace: bool = True, command_log: list[tuple[commands.Command, float]] | None = None,
    ) -> None:
        # The core starts at the run's first instant: `Center(config)` would configure it at
        # t = 0 (1970), and the engine would then tick its hourly timers all the way to `start`.
        self.center = Center(state=State(now=start))
        configure = commands.Configure(center=config)
        configured = self.center.apply(configure, start)
        if isinstance(configured, Rejection):
            raise ConfigError(configured.field or "center", configured.message)
        # Every accepted command with its instant, when asked for: the run's log, which a
        # replay (or a node) applies to reach the same state and statistics.
        self.command_log = command_log
        if command_log is not None:
            command_log.append((configure, start))
        self.seed = seed
        self.now = start
        self.behaviour = behaviour or Behaviour()
        self.random = random.Random(seed * 7919 + 17)  # the agents' stream (calls have their own)
        self.heap: list[tuple[float, int, int, Any, Any]] = []
        self._sequence = itertools.count(1)  # ties in the heap break by insertion order
        self._next_sequence = self._sequence.__next__
        self._push = heapq.heappush
        self.live: dict[str, CallSpec] = {}
        self.records: list[CallSpec] | None = [] if detail else None
        self.source: Iterator[CallSpec] = iter(())
        self.offers: dict[str, int] = {}
        self.offer_token = 0
        self.wrapping: set[tuple[str, str]] = set()
        self.planned: dict[str, str] = {}
        self.rejections: Counter[str] = Counter()
        self.commands = 0
        self.soon: deque[commands.Command] = deque()
        self.on_outcome: Callable[[CallSpec], None] | None = None
        self.on_talk: Callable[[CallSpec, float, float], None] | None = None
        self.detail = detail
        self.trace = trace
        # Each command's events are encoded as they come (msgpack, appended to one buffer that
        # is hashed and emptied now and then): the events themselves are not kept alive, which
        # would make the garbage collector walk them (and the core's state) again and again.
        self._trace_buffer = bytearray()
        self._trace_encode_into = _trace_encoder.encode_into
        self._trace_hash = hashlib.sha256()
        # Per-interval observation (detail only): the current interval's key, callers on the
        # line (call -> since when), each agent's shown state and since when.
        self.interval_key: tuple[int, int] | None = None
        self.intervals: dict[tuple[int, int], IntervalFigures] = {}
        self.waiting: dict[str, float] = {}
        self.agent_state: dict[str, tuple[str, float]] = {}
        self.worked: dict[str, deque[tuple[float, float]]] = {}
        self._actions: dict[int, Callable[[float, Any, Any], None]] = {
            ARRIVE: self._arrive, ANSWER: self._answer, END_TALK: self._end_talk, WRAPUP: self._wrapup,
            ABANDON: self._abandon, ASK_CALLBACK: self._ask_callback, SURVEY: self._survey,
            AGENT: self._agent_action, READY_AGAIN: self._ready_again, INTERVAL: self._interval,
            STAFF: self._staff,
        }
        # The core's events the engine reacts to (the others are only traced). Without detail
        # nobody looks at the line or the agents' shown states: those handlers are left out.
        self._on: dict[type, Callable[[Any], None]] = {
            events.CallOffered: self._on_offered, events.CallAnswered: self._on_answered,
            events.CallWrappedUp: self._on_wrapped_up, events.CallAbandoned: self._on_abandoned,
            events.CallScheduled: self._on_scheduled,
            events.CallClosed: self._on_closed, events.CallTransferred: self._on_transferred,
            events.CallbackRequested: self._on_callback_requested, events.OfferWithdrawn: self._on_withdrawn,
            events.AgentChanged: self._on_agent_changed if detail else self._on_agent_missed,
        }
        if detail:
            self._on[events.CallQueued] = self._on_queued
        self._on_get = self._on.get  # bound once: looked up for every event of every command
        self._center_apply = self.center.apply
        self._figures: IntervalFigures | None = None   # the current interval's
        self._seconds: dict[str, float] | None = None  # and its agent_seconds
        # Staffing control (sim.engine.plan_staffing): agents on duty, and those off.
        self.on_duty: list[str] = []
        self.off_duty: list[str] = []

    # ------------------------------------------------------------------ scheduling

    def schedule(self, at: float, kind: int, subject: Any = None, detail: Any = None) -> None:
        self._push(self.heap, (at, self._next_sequence(), kind, subject, detail))

    def feed(self, calls: Iterable[CallSpec]) -> None:
        """Calls to arrive, in arrival order; drawn one at a time (the heap stays small)."""
        self.source = iter(calls)
        first = next(self.source, None)
        if first is not None:
            self.schedule(first.arrival, ARRIVE, first)

    def run(self, until: float = math.inf) -> None:
        """Process events up to `until` (inclusive), or until none are left if it is infinite.

        The core's timers interleave with the engine's events in time order; with a finite
        `until`, they are honoured up to it even when the engine has nothing left to do, so a
        run can be resumed later exactly as if it had never stopped.
        """
        heap = self.heap
        next_deadline = self.center.next_deadline
        actions = self._actions
        pop = heapq.heappop
        endless = until == math.inf
        inf = math.inf
        # The core's timers change only when it applies a command: its next deadline is asked
        # again only after one (events the engine drops as stale cost nothing there).
        asked = -1
        deadline = None
        while True:
            if self.commands != asked:
                asked = self.commands
                deadline = next_deadline()
            at = heap[0][0] if heap else inf
            if deadline is not None and deadline < at and (heap or not endless):
                if deadline > until:
                    break
                self.now = deadline
                self.command(TICK, deadline)
                continue
            if not heap or at > until:
                break
            _at, _sequence, kind, subject, detail = pop(heap)
            self.now = at
            actions[kind](at, subject, detail)
        if not endless:
            self.now = until
        self._flush_trace()

    # ------------------------------------------------------------------ talking to the core

    def command(self, command: commands.Command, now: float) -> bool:
        """Apply a command and everything it makes people do at the same instant.

        What the handlers queue in `soon` is applied after this command's events have all
        been handled, first in first out (a command applied from the queue drains it too,
        which keeps that order).
        """
        self.commands += 1
        result = self._center_apply(command, now)
        if result.__class__ is Rejection:
            self.rejections[f"{type(command).__name__}:{result.code}"] += 1  # type: ignore[union-attr]
            ok = False
        else:
            if self.command_log is not None:
                self.command_log.append((command, now))
            if self.trace:
                buffer = self._trace_buffer
                self._trace_encode_into(result, buffer, -1)
                if len(buffer) > 1 << 16:
                    self._flush_trace()
            get = self._on_get
            for event in result:  # type: ignore[union-attr]
                handler = get(event.__class__)
                if handler is not None:
                    handler(event)
            ok = True
        soon = self.soon
        while soon:
            self.command(soon.popleft(), now)
        return ok

    def _flush_trace(self) -> None:
        if self._trace_buffer:
            self._trace_hash.update(self._trace_buffer)
            self._trace_buffer.clear()

    def trace_hash(self) -> str:
        """SHA-256 over every core event so far, then every interaction's record (both
        msgpack-encoded: the records as one array of `record_row` tuples)."""
        self._flush_trace()
        digest = self._trace_hash.copy()
        if self.records:
            digest.update(_trace_encoder.encode([record_row(record) for record in self.records]))
        return digest.hexdigest()

    # ------------------------------------------------------------------ the engine's events

    def _arrive(self, at: float, call: CallSpec, _detail: Any) -> None:
        self.live[call.id] = call
        if self.records is not None:
            self.records.append(call)
        self.command(
            commands.Arrive(id=call.id, queue=call.queue, caller=call.caller, channel=call.channel,
                     attributes=VULNERABLE if call.vulnerable else NO_ATTRIBUTES),
            at,
        )
        if not call.outcome and not call.callback and call.answered_at is None:
            if call.patience < math.inf:
                self.schedule(at + call.patience, ABANDON, call)
            if call.callback_after < math.inf:
                self.schedule(at + call.callback_after, ASK_CALLBACK, call)
        following = next(self.source, None)
        if following is not None:
            self.schedule(following.arrival, ARRIVE, following)

    def _answer(self, at: float, call_id: str, detail: tuple[str, int]) -> None:
        agent, token = detail
        if self.offers.get(call_id) == token:
            self.command(commands.Answer(call=call_id, agent=agent), at)

    def _end_talk(self, at: float, call: CallSpec, detail: tuple[str, int]) -> None:
        """The conversation is over: the caller hangs up, or the agent transfers the call."""
        agent, leg = detail
        if call.legs != leg or call.agent != agent:
            return
        if self.on_talk is not None:
            self.on_talk(call, call.connected_at, at)
        if call.transfer_to and call.transfers == 0:
            call.transfers = 1
            if self.command(commands.Transfer(call=call.id, queue=call.transfer_to), at):
                self._start_wrapup(call, agent, at, "transferred", abusive=call.abusive)
                return
            # Refused (counted in `rejections`): the agent ends the call instead.
        if self.command(commands.Hangup(call=call.id), at):
            disposition = call.disposition if call.disposition != "transferred" else "resolved"
            self._start_wrapup(call, agent, at, disposition, abusive=call.abusive and call.transfers == 0)

    def _start_wrapup(self, call: CallSpec, agent: str, at: float, disposition: str, abusive: bool) -> None:
        self.wrapping.add((call.id, agent))
        detail = (agent, disposition, abusive)
        if call.wrapup <= 0:
            self.command(self._wrapup_command(call, detail, at), at)
        else:
            self.schedule(at + call.wrapup, WRAPUP, call, detail)

    def _wrapup_command(self, call: CallSpec, detail: tuple[str, str, bool], at: float) -> commands.WrapUp:
        agent, disposition, abusive = detail
        callback_at = at + call.callback_in if disposition == "callback" else None
        return commands.WrapUp(call=call.id, agent=agent, disposition=disposition, abusive=abusive, callback_at=callback_at)  # type: ignore[arg-type]

    def _wrapup(self, at: float, call: CallSpec, detail: tuple[str, str, bool]) -> None:
        if (call.id, detail[0]) in self.wrapping:  # not already ended by the core's wrap-up limit
            self.command(self._wrapup_command(call, detail, at), at)

    def _abandon(self, at: float, call: CallSpec, _detail: Any) -> None:
        if not call.outcome and not call.callback and call.answered_at is None:
            self.command(commands.Abandon(call=call.id), at)

    def _ask_callback(self, at: float, call: CallSpec, _detail: Any) -> None:
        if not call.outcome and not call.callback and call.answered_at is None:
            self.command(commands.RequestCallback(call=call.id), at)

    def _survey(self, at: float, call_id: str, score: int) -> None:
        self.command(commands.Survey(call=call_id, score=score), at)

    def _agent_action(self, at: float, agent: str, detail: tuple[str, str]) -> None:
        action, reason = detail
        if action == "login":
            self.planned[agent] = "login"
            self.command(commands.Login(agent=agent), at)
        elif action == "ready":
            self.planned[agent] = "ready"
            self.command(commands.Ready(agent=agent), at)
        elif action == "not_ready":
            self.planned[agent] = "break"
            self.command(commands.NotReady(agent=agent, reason=reason), at)
        elif action == "logout":
            self.planned[agent] = "off"
            self.command(commands.Logout(agent=agent), at)

    def _ready_again(self, at: float, agent: str, reason: str) -> None:
        """Back from a missed offer or a rest, if the plan still says ready and nothing changed."""
        record = self.center.state.agents.get(agent)
        if self.planned.get(agent) != "ready" or record is None:
            return
        resting = record.presence is Presence.NOT_READY and record.reason == reason
        deferred = record.pending == "not_ready" and record.pending_reason == reason  # still on a call
        if resting or deferred:
            self.command(commands.Ready(agent=agent), at)

    def _interval(self, at: float, key: tuple[int, int], _detail: Any) -> None:
        """An interval boundary: close the previous interval's figures, open the next."""
        self._close_interval(at)
        self.interval_key = key
        figures = self.intervals.setdefault(key, IntervalFigures())
        self._figures = figures
        self._seconds = figures.agent_seconds
        figures.waiting_max = len(self.waiting)
        if self.waiting:
            figures.longest_wait = max(at - since for since in self.waiting.values())

    def _close_interval(self, at: float) -> None:
        key = self.interval_key
        if key is None:
            return
        figures = self.intervals[key]
        if self.waiting:
            figures.longest_wait = max(figures.longest_wait, max(at - since for since in self.waiting.values()))
        seconds = figures.agent_seconds
        for agent, (state, since) in self.agent_state.items():
            if state in seconds:
                seconds[state] += at - since
            self.agent_state[agent] = (state, at)

    def _staff(self, at: float, required: int, _detail: Any) -> None:
        """Bring the number of agents on duty to `required` (staffing confirmation runs)."""
        while len(self.on_duty) < required and self.off_duty:
            agent = self.off_duty.pop()
            self.on_duty.append(agent)
            self.planned[agent] = "ready"
            self.command(commands.Login(agent=agent), at)
            self.command(commands.Ready(agent=agent), at)
        while len(self.on_duty) > required:
            agent = self.on_duty.pop()
            self.off_duty.append(agent)
            self.planned[agent] = "off"
            self.command(commands.Logout(agent=agent), at)  # deferred by the core while busy

    # ------------------------------------------------------------------ the core's events

    def _adopt(self, event: events.CallOffered) -> CallSpec:
        """A call-back task the core created (promised at wrap-up): make it a record."""
        talk = self.behaviour.callback_talk() if self.behaviour.callback_talk else 0.0
        call = CallSpec(id=event.call, arrival=event.at, queue=event.queue, channel=event.channel, talk=talk, topic="callback")
        call.callback = True
        call.outcome = "callback_task"
        self.live[call.id] = call
        if self.records is not None:
            self.records.append(call)
        return call

    def _on_offered(self, event: events.CallOffered) -> None:
        call = self.live.get(event.call)
        if call is None:
            call = self._adopt(event)
        self.offer_token += 1
        token = self.offer_token
        self.offers[event.call] = token
        behaviour = self.behaviour
        if behaviour.miss_probability and self.random.random() < behaviour.miss_probability:
            return  # nobody picks up; the core's ring timeout takes the offer back
        delay = behaviour.ring_delay() if behaviour.ring_delay is not None else 0.0
        if delay <= 0:
            self.soon.append(commands.Answer(call=event.call, agent=event.agent))
        else:
            self.schedule(event.at + delay, ANSWER, event.call, (event.agent, token))

    def _on_withdrawn(self, event: events.OfferWithdrawn) -> None:
        self.offers.pop(event.call, None)

    def _on_answered(self, event: events.CallAnswered) -> None:
        self.offers.pop(event.call, None)
        call = self.live[event.call]
        at = event.at
        call.legs += 1
        call.agent = event.agent
        call.connected_at = at
        if call.answered_at is None:
            call.answered_at = at
            call.wait = at - call.arrival
            if not call.outcome:
                call.outcome = "answered"
                if self.on_outcome is not None:
                    self.on_outcome(call)
        if self.waiting:
            self._left_line(call.id, at)
        talk = call.talk if call.legs == 1 else call.talk_after_transfer
        self.schedule(at + talk, END_TALK, call, (event.agent, call.legs))

    def _on_wrapped_up(self, event: events.CallWrappedUp) -> None:
        self.wrapping.discard((event.call, event.agent))
        call = self.live.get(event.call)
        if call is None:
            return
        call.wrapups += 1
        call.wrapped_as = event.disposition
        if self.detail:
            self._rest_if_tired(event.agent, call, event.at)
        if event.disposition == "transferred" and call.final_queue != call.queue:
            if call.final_queue in self.external_queues:
                call.ended_at = event.at
                del self.live[call.id]
            return  # the caller goes on in the queue it was transferred to
        call.ended_at = event.at
        if call.survey and call.answered_at is not None:
            self.schedule(event.at + self.survey_after, SURVEY, call.id, call.survey)
        del self.live[call.id]

    def _rest_if_tired(self, agent: str, call: CallSpec, at: float) -> None:
        behaviour = self.behaviour
        if behaviour.max_occupancy >= 1.0:
            return
        worked = self.worked.setdefault(agent, deque())
        worked.append((min(call.connected_at, at), at))
        window_start = at - behaviour.occupancy_window_seconds
        while worked and worked[0][1] < window_start:
            worked.popleft()
        busy = sum(end - max(begin, window_start) for begin, end in worked)
        if busy / behaviour.occupancy_window_seconds > behaviour.max_occupancy and self.planned.get(agent) == "ready":
            worked.clear()
            self.soon.append(commands.NotReady(agent=agent, reason="rest"))
            self.schedule(at + behaviour.rest_seconds, READY_AGAIN, agent, "rest")

    def _finish(self, call: CallSpec | None, outcome: str, at: float) -> None:
        if call is None:
            return
        call.outcome = outcome
        call.wait = at - call.arrival
        call.ended_at = at
        self.live.pop(call.id, None)
        if self.on_outcome is not None:
            self.on_outcome(call)
        if self.waiting:
            self._left_line(call.id, at)

    def _on_abandoned(self, event: events.CallAbandoned) -> None:
        self.offers.pop(event.call, None)
        self._finish(self.live.get(event.call), "abandoned", event.at)

    def _on_closed(self, event: events.CallClosed) -> None:
        call = self.live.get(event.call)
        if call is not None:
            call.after_hours = event.reason == "closed"
        self._finish(call, "closed" if event.reason == "closed" else event.reason, event.at)

    def _on_scheduled(self, event: events.CallScheduled) -> None:
        call = self.live.get(event.call)
        if call is not None and call.answered_at is None and not call.callback:
            # Arrived while closed: the caller left a number for a call-back (docs/domain.md).
            call.callback = True
            call.after_hours = True

    def _on_transferred(self, event: events.CallTransferred) -> None:
        call = self.live.get(event.call)
        if call is None:
            return
        call.final_queue = event.target
        if event.external and call.answered_at is None:
            self._finish(call, "overflow" if event.overflow else "transferred", event.at)

    def _on_callback_requested(self, event: events.CallbackRequested) -> None:
        call = self.live.get(event.call)
        if call is None:
            return
        if event.merged_into:
            self._finish(call, "merged", event.at)
            return
        call.callback = True  # the caller hung up and waits to be called back
        if self.waiting:
            self._left_line(call.id, event.at)

    def _on_queued(self, event: events.CallQueued) -> None:
        if event.callback:
            return
        waiting = self.waiting
        if event.call not in waiting:
            waiting[event.call] = event.at
            figures = self._figures
            if figures is not None and len(waiting) > figures.waiting_max:
                figures.waiting_max = len(waiting)

    def _left_line(self, call_id: str, at: float) -> None:
        since = self.waiting.pop(call_id, None)
        figures = self._figures
        if since is not None and figures is not None and at - since > figures.longest_wait:
            figures.longest_wait = at - since

    def _on_agent_missed(self, event: events.AgentChanged) -> None:
        """Without detail only a missed offer matters: the agent is ready again a while later."""
        if event.reason == "no_answer" and event.state == "not_ready":
            self.schedule(event.at + self.behaviour.ready_after_miss_seconds, READY_AGAIN, event.agent, "no_answer")

    def _on_agent_changed(self, event: events.AgentChanged) -> None:
        state = event.state
        if event.reason == "no_answer" and state == "not_ready":
            self.schedule(event.at + self.behaviour.ready_after_miss_seconds, READY_AGAIN, event.agent, "no_answer")
        seconds = self._seconds
        if seconds is None:
            return
        agent_state = self.agent_state
        previous = agent_state.get(event.agent)
        if previous is not None:
            old_state = previous[0]
            if old_state in seconds:
                seconds[old_state] += event.at - previous[1]
        agent_state[event.agent] = (state, event.at)

    # Set by the runs below (defaults keep a bare Simulation usable).
    external_queues: frozenset[str] = frozenset()
    survey_after: float = 60.0


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


class Tally:
    """Caller counts for an interval, a day or a queue."""

    __slots__ = ("offered", "after_hours", "answered", "answered_within", "answered_on_line", "wait_on_line",
                 "abandoned", "short_abandoned", "overflowed", "callbacks_requested", "transferred")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def add(self, record: Any, threshold: float, short_abandon: float) -> None:
        self.offered += 1
        self.after_hours += record.after_hours
        outcome = record.outcome
        if outcome == "answered":
            self.answered += 1
            wait = record.wait or 0.0
            if wait <= threshold and not record.after_hours:
                self.answered_within += 1
            if not record.callback:
                self.answered_on_line += 1
                self.wait_on_line += wait
        elif outcome == "abandoned":
            self.abandoned += 1
            self.short_abandoned += (record.wait or 0.0) < short_abandon
        elif outcome == "overflow":
            self.overflowed += 1
        if record.callback and not record.after_hours:
            self.callbacks_requested += 1
        self.transferred += record.transfers > 0 and record.answered_at is not None

    def figures(self) -> dict[str, Any]:
        open_offered = self.offered - self.after_hours
        return {
            "offered": self.offered,
            "after_hours": self.after_hours,
            "answered": self.answered,
            "answered_within": self.answered_within,
            "abandoned": self.abandoned,
            "short_abandoned": self.short_abandoned,
            "overflowed": self.overflowed,
            "callbacks_requested": self.callbacks_requested,
            "service_level": ratio(self.answered_within, open_offered),
            "asa": ratio(self.wait_on_line, self.answered_on_line),
            "abandon_rate": ratio(self.abandoned, open_offered),
        }


def record_row(call: CallSpec) -> tuple[Any, ...]:
    """An interaction's record: what happened to it (not what its pre-drawn plan would have been)."""
    answered = call.answered_at is not None
    return (
        call.id, call.arrival, call.queue, call.final_queue, call.channel, call.topic, call.vulnerable,
        call.after_hours, call.callback, call.outcome, call.wait, call.answered_at, call.agent,
        call.ended_at, call.transfers, call.wrapped_as, call.abusive and answered,
        call.survey if answered and call.wrapped_as and call.wrapped_as != "transferred" else 0,
    )


def t_quantile_975(degrees: int) -> float:
    """Student's t 97.5 % quantile (two-sided 95 %), exact enough for batch counts >= 5."""
    table = {4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 12: 2.179,
             14: 2.145, 16: 2.120, 19: 2.093, 20: 2.086, 24: 2.064, 29: 2.045, 30: 2.042, 39: 2.023,
             49: 2.010, 99: 1.984}
    if degrees in table:
        return table[degrees]
    if degrees > 99:
        return 1.96 + 2.4 / degrees
    lower = max(k for k in table if k < degrees)
    upper = min(k for k in table if k > degrees)
    return table[lower] + (table[upper] - table[lower]) * (degrees - lower) / (upper - lower)


def batch_interval(values: list[float]) -> tuple[float, float]:
    """(mean, 95 % half-width) of batch means (Student's t over the batches)."""
    count = len(values)
    mean = sum(values) / count
    if count < 2:
        return mean, math.inf
    variance = sum((v - mean) ** 2 for v in values) / (count - 1)
    return mean, t_quantile_975(count - 1) * math.sqrt(variance / count)


# ---------------------------------------------------------------------------------- M/M/c


MMC_START = 1_767_538_800.0  # 2026-01-05 00:00 Asia/Seoul; any instant would do (always open)
MMC_DEFAULT_CALLS = 20_000


def mmc_center(agents: int, threshold_seconds: float, *, retention_days: int = 1) -> CenterConfig:
    """One queue, `agents` identical agents, no calendar, no wrap-up limit, no abandon rules.

    `wrapup_seconds = 0` means no wrap-up limit: the simulated agent posts the wrap-up the
    instant the call ends, so the handling time is the talk time. A short retention lets the
    core forget finished calls while a long run goes on (memory stays flat).
    """
    return CenterConfig(
        name="mmc", service_level_threshold=threshold_seconds, short_abandon_seconds=0.0,
        retention_days=retention_days,
        queues=[Queue(name="mmc", channels=["voice"], wrapup_seconds=0.0, ring_timeout=1.0,
                      service_level_threshold=threshold_seconds, aht_seconds=180.0)],
        agents=[Agent(name=f"agent{number:04d}") for number in range(agents)],
    )


class BatchMeans:
    """Per-call outcomes after the warm-up, folded into equal-time batches by arrival time.

    Batches are counted as calls arrive and as their outcome (answered or abandoned) comes,
    so a batch is complete when every call that arrived in it has an outcome; the run can be
    extended batch by batch without losing or double-counting a call.
    """

    def __init__(self, start: float, batch_seconds: float, threshold: float) -> None:
        self.start = start
        self.length = batch_seconds
        self.threshold = threshold
        self.arrived: list[int] = []
        self.offered: list[int] = []
        self.answered: list[int] = []
        self.within: list[int] = []
        self.abandoned: list[int] = []
        self.wait: list[float] = []
        self.busy: list[float] = []
        self.all_offered = 0
        self.all_answered = 0
        self.all_within = 0
        self.all_abandoned = 0

    def _grow(self, index: int) -> None:
        while len(self.arrived) <= index:
            for series in (self.arrived, self.offered, self.answered, self.within, self.abandoned):
                series.append(0)
            self.wait.append(0.0)
            self.busy.append(0.0)

    def arrival(self, at: float) -> None:
        if at >= self.start:
            index = int((at - self.start) / self.length)
            if index >= len(self.arrived):
                self._grow(index)
            self.arrived[index] += 1

    def outcome(self, call: CallSpec) -> None:
        outcome = call.outcome
        self.all_offered += 1
        if outcome == "answered":
            wait = call.wait or 0.0
            within = wait <= self.threshold
            self.all_answered += 1
            self.all_within += within
        elif outcome == "abandoned":
            self.all_abandoned += 1
        start = self.start
        arrival = call.arrival
        if arrival < start:
            return
        index = int((arrival - start) / self.length)
        if index >= len(self.arrived):
            self._grow(index)
        self.offered[index] += 1
        if outcome == "answered":
            self.answered[index] += 1
            self.wait[index] += wait
            self.within[index] += within
        else:
            self.abandoned[index] += 1

    def talk(self, _call: CallSpec, begin: float, end: float) -> None:
        """Agent busy time, cut into the batches it overlaps."""
        start = self.start
        length = self.length
        if begin < start:
            begin = start
        if begin >= end:
            return
        index = int((begin - start) / length)
        boundary = start + (index + 1) * length
        busy = self.busy
        if begin < boundary and end <= boundary and index < len(busy):
            busy[index] += end - begin  # the usual case: the whole talk inside one batch
            return
        while begin < end:
            # Step by index, not by recomputing it from `begin`: a boundary computed in floating
            # point may round to `begin` itself and the loop would never advance.
            boundary = start + (index + 1) * length
            if boundary > begin:
                upto = min(end, boundary)
                if index >= len(busy):
                    self._grow(index)
                busy[index] += upto - begin
                begin = upto
            index += 1

    def complete(self, batches: int) -> bool:
        """Whether every call that arrived in the first `batches` batches has its outcome."""
        self._grow(batches - 1)
        return self.arrived[:batches] == self.offered[:batches]

    def figures(self, batches: int, agents: int) -> tuple[dict[str, float], dict[str, float]]:
        """Point estimates over the first `batches` batches and their 95 % half-widths."""
        offered = self.offered[:batches]
        answered = self.answered[:batches]
        per_batch = {
            "service_level": [w / o if o else 0.0 for w, o in zip(self.within, offered, strict=False)],
            "asa": [s / a if a else 0.0 for s, a in zip(self.wait, answered, strict=False)],
            "abandon_rate": [b / o if o else 0.0 for b, o in zip(self.abandoned, offered, strict=False)],
            "occupancy": [busy / (agents * self.length) for busy in self.busy[:batches]],
        }
        total_offered = sum(offered)
        total_answered = sum(answered)
        point = {
            "service_level": sum(self.within[:batches]) / total_offered if total_offered else 0.0,
            "asa": sum(self.wait[:batches]) / total_answered if total_answered else 0.0,
            "abandon_rate": sum(self.abandoned[:batches]) / total_offered if total_offered else 0.0,
            "occupancy": sum(self.busy[:batches]) / (agents * self.length * batches),
        }
        half = {name: batch_interval(values)[1] for name, values in per_batch.items()}
        return point, half


MMC_REPLICATIONS = 10
MMC_FIGURES = ("service_level", "asa", "abandon_rate", "occupancy")


def run_mmc(
    *, arrivals_per_hour: float, aht_seconds: float, agents: int, patience_seconds: float | None = None,
    threshold_seconds: float = 20.0, hours: float | None = None, warmup_hours: float | None = None,
    seed: int = 1, batches: int = 25, progress: bool = False, retention_days: int = 1,
    precision: dict[str, float] | None = None, max_hours: float | None = None,
    method: str = "replications", replications: int | None = None,
) -> dict[str, Any]:
    """A single M/M/c(+M) queue through the real core; figures with 95 % confidence intervals.

    `method="replications"` (the default): `replications` independent runs (default 10), each
    with its own random stream, its own warm-up and an equal share of `hours`; a figure is the
    mean of the replications' figures and its interval mean +- t(0.975, R - 1) * sd / sqrt(R)
    (Law, "Simulation Modeling and Analysis", 9.4.1). The replications are independent by
    construction, so the interval holds its 95 % even at heavy load, where the batches of one
    long run stay correlated for hours and batch means understate the spread.
    `tests/test_mmc_coverage.py` checks the coverage over a grid of Erlang C and A points.

    `method="batch-means"`: one long run cut into `batches` (the former default; kept for
    comparison). With `precision`, replications (or batches) are added until every named
    half-width is that narrow or `max_hours` is reached; the replications added are those a
    run planned that long would have had.
    """
    if method == "batch-means":
        return _run_mmc_batch_means(
            arrivals_per_hour=arrivals_per_hour, aht_seconds=aht_seconds, agents=agents, patience_seconds=patience_seconds,
            threshold_seconds=threshold_seconds, hours=hours, warmup_hours=warmup_hours, seed=seed, batches=batches,
            progress=progress, retention_days=retention_days, precision=precision, max_hours=max_hours,
        )
    if method != "replications":
        raise ValueError(f"method must be 'replications' or 'batch-means', not {method!r}")
    count = replications or MMC_REPLICATIONS
    if count < 2:
        raise ValueError("at least 2 replications are needed for an interval")
    if arrivals_per_hour <= 0 or aht_seconds <= 0 or agents < 1:
        raise ValueError("arrivals per hour and AHT must be > 0, agents >= 1")
    if hours is None:
        hours = max(1.0, 1.03 * MMC_DEFAULT_CALLS / arrivals_per_hour)
    share = hours / count
    limit = max(count, int(round((max_hours or hours) / share)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="replication", desc="mmc", leave=False, disable=None)
    runs: list[dict[str, Any]] = []
    began = time.perf_counter()
    cpu_began = time.process_time()

    def replicate(number: int) -> None:
        # Replication k's streams depend on (seed, k) only: a run extended to more replications
        # is the run planned with that many.
        runs.append(_run_mmc_batch_means(
            arrivals_per_hour=arrivals_per_hour, aht_seconds=aht_seconds, agents=agents, patience_seconds=patience_seconds,
            threshold_seconds=threshold_seconds, hours=share, warmup_hours=warmup_hours,
            seed=seed * 1_000_003 + number, batches=1, retention_days=retention_days,
        ))
        if bar is not None:
            bar.update(1)

    for number in range(count):
        replicate(number)
    while True:
        point = {name: sum(run[name] for run in runs) / len(runs) for name in MMC_FIGURES}
        half = {name: batch_interval([run[name] for run in runs])[1] for name in MMC_FIGURES}
        if not precision or len(runs) >= limit:
            break
        excess = max((half[name] / wanted) ** 2 for name, wanted in precision.items() if wanted > 0)
        if excess <= 1.0:
            break
        more = min(limit, max(len(runs) + 1, int(math.ceil(len(runs) * excess * 1.1))))
        if bar is not None:
            bar.total = more
            bar.refresh()
        for number in range(len(runs), more):
            replicate(number)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    first = runs[0]
    total_calls = sum(run["simulated_calls"] for run in runs)
    rejections: dict[str, int] = {}
    for run in runs:
        for key, value in run["rejections"].items():
            rejections[key] = rejections.get(key, 0) + value
    core: dict[str, Any] = {}
    for run in runs:
        for key, value in run["core_counters"].items():
            if isinstance(value, dict):
                merged = core.setdefault(key, {})
                for inner, amount in value.items():
                    merged[inner] = merged.get(inner, 0) + amount
            else:
                core[key] = core.get(key, 0) + value
    digest = hashlib.sha256("".join(run["trace_hash"] for run in runs).encode()).hexdigest()
    return {
        "model": first["model"], "method": "replications", "replications": len(runs),
        "arrivals_per_hour": arrivals_per_hour, "aht_seconds": aht_seconds, "agents": agents,
        "patience_seconds": patience_seconds, "threshold_seconds": threshold_seconds, "seed": seed,
        "hours": share * len(runs), "warmup_hours": first["warmup_hours"], "batches": len(runs),
        **{key: sum(run[key] for run in runs) for key in ("offered", "answered", "answered_within", "abandoned")},
        **point,
        "ci": {name: [point[name] - half[name], point[name] + half[name]] for name in MMC_FIGURES},
        "analytic": first["analytic"],
        "simulated_calls": total_calls,
        "commands": sum(run["commands"] for run in runs),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "calls_per_second": total_calls / wall if wall > 0 else math.inf,
        "rejections": rejections,
        "core_counters": core,
        "core_counters_days": sorted({day for run in runs for day in run["core_counters_days"]}),
        "whole_run": {key: sum(run["whole_run"][key] for run in runs) for key in first["whole_run"]},
        "trace_hash": digest,
        "per_replication": [{name: run[name] for name in ("seed", "offered", *MMC_FIGURES)} for run in runs],
    }


def _run_mmc_batch_means(
    *, arrivals_per_hour: float, aht_seconds: float, agents: int, patience_seconds: float | None = None,
    threshold_seconds: float = 20.0, hours: float | None = None, warmup_hours: float | None = None,
    seed: int = 1, batches: int = 25, progress: bool = False, retention_days: int = 1,
    precision: dict[str, float] | None = None, max_hours: float | None = None,
) -> dict[str, Any]:
    """One run of a single M/M/c(+M) queue through the real core; batch-means 95 % intervals.

    Poisson arrivals, exponential talk time (the whole handling time: no ring, no wrap-up) and,
    with `patience_seconds`, exponential patience. The first `warmup_hours` (default: the
    longer of one hour and 50 handling times) run but are not measured, so that measuring
    starts near steady state; then `hours` (default: enough for at least 20,000 calls) are measured,
    cut into `batches` equal batches by arrival time. A figure's interval is its estimate
    +- t(0.975, batches - 1) * sd(batch means) / sqrt(batches) (batch means: Law, "Simulation
    Modeling and Analysis", 9.5.3); batches of hundreds of calls are long enough for their
    correlation to be negligible except right at full load.

    `precision` ({"service_level": 0.02, "asa": 5.0, ...}, absolute half-widths) extends the
    run, batch by batch, until every named interval is that narrow or `max_hours` is reached.
    The simulation is one stream: stopping to look does not change it, so an extended run is
    the same run as one planned that long from the start.
    """
    from .erlang import erlang_a_metrics, erlang_c_metrics

    if arrivals_per_hour <= 0 or aht_seconds <= 0 or agents < 1:
        raise ValueError("arrivals per hour and AHT must be > 0, agents >= 1")
    if patience_seconds:
        analytic = erlang_a_metrics(arrivals_per_hour=arrivals_per_hour, aht_seconds=aht_seconds, agents=agents,
                                    patience_seconds=patience_seconds, threshold_seconds=threshold_seconds)
    else:
        analytic = erlang_c_metrics(arrivals_per_hour=arrivals_per_hour, aht_seconds=aht_seconds, agents=agents,
                                    threshold_seconds=threshold_seconds)
    rate = arrivals_per_hour / 3600.0
    if hours is None:
        # 3 % more than 20,000 calls' worth: a Poisson count falls below 20,000 with
        # probability about 2e-5 (the issue asks for at least 20,000 measured calls).
        hours = max(1.0, 1.03 * MMC_DEFAULT_CALLS / arrivals_per_hour)
    if warmup_hours is None:
        warmup_hours = max(1.0, 50 * aht_seconds / 3600.0)
    start = MMC_START
    measure_from = start + warmup_hours * 3600.0
    batch_seconds = hours * 3600.0 / batches
    stats = BatchMeans(measure_from, batch_seconds, threshold_seconds)
    calls_stream = random.Random(seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int((warmup_hours + hours) * arrivals_per_hour), unit="call", desc="mmc", leave=False, disable=None)

    def arrivals() -> Iterator[CallSpec]:
        # An endless stream: the run stops by time, and may be extended. The draws are
        # random.expovariate written out (the same numbers).
        draw = calls_stream.random
        log = math.log
        service_rate = 1.0 / aht_seconds
        patience_rate = 1.0 / patience_seconds if patience_seconds else 0.0
        arrival = stats.arrival
        at = start
        number = 0
        while True:
            at += -log(1.0 - draw()) / rate
            number += 1
            talk = -log(1.0 - draw()) / service_rate
            patience = -log(1.0 - draw()) / patience_rate if patience_rate else math.inf
            if bar is not None and number % 2000 == 0:
                bar.update(2000)
            arrival(at)
            yield CallSpec(f"c{number}", at, "mmc", talk, patience)

    simulation = Simulation(mmc_center(agents, threshold_seconds, retention_days=retention_days), seed=seed, start=start)
    simulation.on_outcome = stats.outcome
    simulation.on_talk = stats.talk
    for agent in simulation.center.config.agents:
        simulation.command(commands.Login(agent=agent.name), start)
        simulation.command(commands.Ready(agent=agent.name), start)
    simulation.feed(arrivals())
    began = time.perf_counter()
    cpu_began = time.process_time()
    measured = batches
    limit = max(batches, int(round((max_hours or hours) * 3600.0 / batch_seconds)))
    while True:
        until = measure_from + measured * batch_seconds
        simulation.run(until=until)
        while not stats.complete(measured):  # the last callers of the window get their outcome
            until += 600.0
            simulation.run(until=until)
        point, half = stats.figures(measured, agents)
        if not precision or measured >= limit:
            break
        excess = max((half[name] / wanted) ** 2 for name, wanted in precision.items() if wanted > 0)
        if excess <= 1.0:
            break
        more = min(limit, max(measured + 1, int(math.ceil(measured * excess * 1.1))))
        if bar is not None:
            bar.total = int(arrivals_per_hour * (warmup_hours + more * batch_seconds / 3600.0))
            bar.refresh()
        measured = more
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    if bar is not None:
        bar.close()
    offered = sum(stats.offered[:measured])
    answered = sum(stats.answered[:measured])
    ci = {name: [point[name] - half[name], point[name] + half[name]] for name in point}
    total_calls = stats.all_offered
    return {
        "model": analytic.model, "method": "batch-means",
        "arrivals_per_hour": arrivals_per_hour, "aht_seconds": aht_seconds, "agents": agents,
        "patience_seconds": patience_seconds, "threshold_seconds": threshold_seconds, "seed": seed,
        "hours": measured * batch_seconds / 3600.0, "warmup_hours": warmup_hours, "batches": measured,
        "offered": offered, "answered": answered, "answered_within": sum(stats.within[:measured]),
        "abandoned": sum(stats.abandoned[:measured]),
        **point,
        "ci": ci,
        "analytic": analytic.to_dict(),
        "simulated_calls": total_calls,
        "commands": simulation.commands,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "calls_per_second": total_calls / wall if wall > 0 else math.inf,
        "rejections": dict(simulation.rejections),
        # The core's own center counters, over the days it still keeps (retention_days = 1
        # keeps a long run's memory flat): equal to "whole_run" when the run is under a day.
        "core_counters": core_totals(simulation.center),
        "core_counters_days": sorted(simulation.center.state.stats),
        "whole_run": {"offered": stats.all_offered, "answered": stats.all_answered,
                      "answered_within": stats.all_within, "abandoned": stats.all_abandoned},
        "trace_hash": simulation.trace_hash(),
    }


def core_totals(center: Center) -> dict[str, float]:
    """The core's own center-wide counters summed over the days it still keeps."""
    from acd.core.kpis import summed

    return msgspec.structs.asdict(summed(day.center.total for day in center.state.stats.values()))


# ---------------------------------------------------------------------------------- a day


@dataclass
class DayRun:
    """Everything a `day` run produced (sim.report turns it into tables, CSV and charts)."""

    scenario: Scenario
    seed: int
    dates: list[dt.date]
    day_starts: list[float]
    records: list[CallSpec]
    intervals: dict[tuple[int, int], IntervalFigures]
    center: Center
    rejections: dict[str, int]
    commands: int
    wall_seconds: float
    trace_hash: str
    state_hash: str
    cpu_seconds: float = 0.0  # process CPU time over the same span as wall_seconds

    @property
    def calls(self) -> int:
        return sum(1 for r in self.records if r.topic != "callback")


def scenario_behaviour(scenario: Scenario, stream: random.Random) -> Behaviour:
    agents = scenario.agents
    talk = scenario.durations.pick("voice", "talk")
    return Behaviour(
        ring_delay=agents.ring_delay.sampler(stream) if agents.ring_delay is not None else None,
        miss_probability=agents.miss_probability,
        ready_after_miss_seconds=agents.ready_after_miss_seconds,
        max_occupancy=agents.max_occupancy,
        occupancy_window_seconds=agents.occupancy_window_seconds,
        rest_seconds=agents.rest_seconds,
        callback_talk=talk.sampler(stream) if talk is not None else None,
    )


def _days_calls(factory: CallFactory, dates: list[dt.date], transform: Callable[[CallSpec], CallSpec | None] | None = None,
                progress: Any = None) -> Iterator[CallSpec]:
    for day in dates:
        for call in factory.day(day):
            if transform is not None:
                call = transform(call)  # type: ignore[assignment]
                if call is None:
                    continue
            yield call
        if progress is not None:
            progress.update(1)


def simulate_days(
    scenario: Scenario, *, seed: int | None = None, days: int | None = None, start: str | None = None,
    config: CenterConfig | None = None, staffing: dict[tuple[int, int], int] | None = None,
    transform: Callable[[CallSpec], CallSpec | None] | None = None, progress: bool = False,
    trace: bool = True, command_log: list[tuple[commands.Command, float]] | None = None,
) -> DayRun:
    """Run the scenario's days through the core.

    `command_log`, a list, receives every accepted command with its instant (the run's log).

    `config`, `staffing` and `transform` serve the staffing confirmation: another center (one
    pooled queue), agents on duty per interval instead of the shifts, and a change to each call
    (all voice calls to the pooled queue).
    """
    seed = scenario.scenario.seed if seed is None else seed
    dates = scenario.dates(days, start)
    config = config or scenario.center
    day_starts = [scenario.day_start(day) for day in dates]
    calls_stream = random.Random(seed)
    agents_stream = random.Random(seed * 1_000_003 + 7)
    simulation = Simulation(config, seed=seed, start=day_starts[0], behaviour=scenario_behaviour(scenario, agents_stream),
                            detail=True, trace=trace, command_log=command_log)
    simulation.external_queues = frozenset(q.name for q in config.queues if q.external)
    simulation.survey_after = scenario.mix.survey_after_seconds
    for index, day_start in enumerate(day_starts):
        for interval in range(96):
            simulation.schedule(day_start + interval * INTERVAL_SECONDS, INTERVAL, (index, interval))
    if staffing is None:
        for day in dates:
            for action in agent_plan(scenario, day):
                simulation.schedule(action.at, AGENT, action.agent, (action.action, action.reason))
    else:
        simulation.off_duty = [a.name for a in reversed(config.agents)]
        for (index, interval), required in sorted(staffing.items()):
            simulation.schedule(day_starts[index] + interval * INTERVAL_SECONDS, STAFF, required)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dates), unit="day", desc=scenario.scenario.name, leave=False, disable=None)
    # Timed from the first call drawn (the workload is part of simulating the day) to the last event.
    began = time.perf_counter()
    cpu_began = time.process_time()
    factory = CallFactory(scenario, calls_stream)
    simulation.feed(_days_calls(factory, dates, transform, bar))
    end = day_starts[-1] + 86400.0
    simulation.run(until=end)
    simulation._close_interval(end)
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    if bar is not None:
        bar.close()
    for call in simulation.live.values():
        if not call.outcome:
            call.outcome = "pending"
    return DayRun(
        scenario=scenario, seed=seed, dates=dates, day_starts=day_starts, records=simulation.records or [],
        intervals=simulation.intervals, center=simulation.center, rejections=dict(simulation.rejections),
        commands=simulation.commands, wall_seconds=wall, trace_hash=simulation.trace_hash(),
        state_hash=simulation.center.state_hash(), cpu_seconds=cpu,
    )


def open_intervals(calendar: Calendar | None, day_start: float) -> list[bool]:
    """For each interval of the day, whether the calendar is open at its middle."""
    return [is_open(calendar, day_start + (interval + 0.5) * INTERVAL_SECONDS) for interval in range(96)]


# ---------------------------------------------------------------------------------- staffing


def interval_tallies(run: DayRun, day_index: int = 0) -> dict[int, Tally]:
    """Callers of one day by arrival interval."""
    threshold = run.scenario.target.threshold_seconds
    short = run.center.config.short_abandon_seconds
    start = run.day_starts[day_index]
    tallies: dict[int, Tally] = {}
    for record in run.records:
        if record.outcome == "callback_task" or not start <= record.arrival < start + 86400:
            continue
        interval = min(95, int((record.arrival - start) // INTERVAL_SECONDS))
        tallies.setdefault(interval, Tally()).add(record, threshold, short)
    return tallies


def plan_staffing(
    scenario: Scenario, *, target_service_level: float, threshold_seconds: float, max_abandon: float | None = None,
    replications: int = 10, rounds: int = 8, seed: int | None = None, date: str | None = None, progress: bool = False,
    after_hours: bool = False,
) -> dict[str, Any]:
    """The fewest voice agents per interval that meet the target: Erlang first, then simulation.

    1. Erlang: each open interval's voice arrival rate (the scenario's volume, profile and
       channel mix) and AHT (ring delay + talk + wrap-up, capped by the queue's wrap-up limit)
       give the fewest agents by Erlang C, or by Erlang A with the scenario's mean patience when
       `max_abandon` is given (`sim.erlang.staffing`).
    2. Simulation: the day is run through the core with one pooled voice queue (every agent
       takes every topic: the Erlang model's assumption) and exactly that many agents on duty in
       each interval (logged in and ready at its start, logged out as the requirement falls;
       the core defers a logout until the call ends). The calls are the scenario's own: real
       handling-time distribution, patience, ring delay, missed offers, call-back requests,
       and, with `after_hours`, the call-backs of callers who rang while closed (they fall due
       at the opening, ahead of the callers then arriving, and need far more agents at 08:30
       than any Erlang figure: a question for the call-back policy rather than for staffing,
       so they are left out by default). `replications` days with consecutive seeds are
       pooled per interval.
    3. Every interval that misses the target in simulation gets more agents (one for a near
       miss, one per ten points short), and the day is simulated again on the same calls
       (common random numbers), up to `rounds` times. Only agents are added: a few intervals
       may end a little over-staffed where simulation noise made them look short.
    The result lists both numbers; where they differ, the simulation knows something Erlang
    does not (non-exponential talk, queues carried over from the previous interval, ring
    time, call-backs at opening).
    """
    from .erlang import staffing as erlang_staffing

    seed = scenario.scenario.seed if seed is None else seed
    day = dt.date.fromisoformat(date) if date else scenario.dates()[0]
    center = scenario.center
    voice_queues = [q for q in center.queues if not q.external and "voice" in q.channels]
    if not voice_queues:
        raise ValueError("the center has no voice queue to staff")
    calendars = {cal.name: cal for cal in center.calendars}
    calendar = calendars.get(voice_queues[0].calendar)
    day_start = scenario.day_start(day)
    open_flags = open_intervals(calendar, day_start)
    channels = scenario.mix.channels
    voice_share = channels.get("voice", 0.0) / sum(channels.values())
    expected = scenario.expected_arrivals(day)
    ring = scenario.agents.ring_delay.expected() if scenario.agents.ring_delay is not None else 0.0
    aht = scenario.handling_seconds("voice") + ring
    patience = scenario.durations.pick("voice", "patience")
    patience_mean = patience.expected() if (patience is not None and max_abandon is not None) else None
    erlang: dict[int, int] = {}
    rates: dict[int, float] = {}
    for interval in range(96):
        rate = expected[interval] * voice_share * 3600 / INTERVAL_SECONDS
        rates[interval] = rate
        if not open_flags[interval] or rate <= 0:
            erlang[interval] = 0
            continue
        erlang[interval] = erlang_staffing(
            arrivals_per_hour=rate, aht_seconds=aht, target_service_level=target_service_level,
            threshold_seconds=threshold_seconds, patience_seconds=patience_mean, max_abandon_rate=max_abandon,
        )
    agents = dict(erlang)
    pool = max(agents.values(), default=0) + rounds + 5
    model_queue = voice_queues[0]
    config = CenterConfig(
        name=f"{center.name} (pooled voice)", time_zone=center.time_zone, service_level_threshold=threshold_seconds,
        short_abandon_seconds=center.short_abandon_seconds, priority_weight_seconds=center.priority_weight_seconds,
        vulnerable_priority=center.vulnerable_priority, retention_days=center.retention_days,
        abuse=msgspec.structs.replace(center.abuse, route_to=""),
        calendars=[calendar] if calendar is not None else [],
        queues=[Queue(name="voice", channels=["voice"], calendar=calendar.name if calendar is not None else "",
                      wrapup_seconds=model_queue.wrapup_seconds, ring_timeout=model_queue.ring_timeout,
                      service_level_threshold=threshold_seconds, service_level_target=target_service_level,
                      aht_seconds=aht)],
        agents=[Agent(name=f"pool{number:03d}") for number in range(pool)],
    )

    def pooled(call: CallSpec) -> CallSpec | None:
        if call.channel != "voice":
            return None
        interval = min(95, max(0, int((call.arrival - day_start) // INTERVAL_SECONDS)))
        if not after_hours and not open_flags[interval]:
            return None
        call.queue = call.final_queue = "voice"
        if call.transfer_to:
            call.transfer_to = ""
            call.disposition = "resolved"
        return call

    def duty(plan: dict[int, int]) -> dict[tuple[int, int], int]:
        # Agents stay one interval past the last open one to finish the queue.
        schedule = {}
        for interval in range(96):
            required = plan[interval]
            if not required and interval and plan[interval - 1] and not open_flags[interval]:
                required = plan[interval - 1]
            schedule[(0, interval)] = required
        return schedule

    target_scenario = msgspec.structs.replace(scenario, target=msgspec.structs.replace(scenario.target, threshold_seconds=threshold_seconds))
    began = time.perf_counter()
    simulated = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=rounds * replications, unit="day", desc="staffing", leave=False, disable=None)
    for round_number in range(1, rounds + 1):
        tallies: dict[int, Tally] = {}
        busy: dict[int, float] = {}
        ready: dict[int, float] = {}
        for replication in range(replications):
            run = simulate_days(target_scenario, seed=seed + replication, days=1, start=day.isoformat(), config=config,
                                staffing=duty(agents), transform=pooled, trace=False)
            simulated += run.calls
            for interval, tally in interval_tallies(run).items():
                total = tallies.setdefault(interval, Tally())
                for name in Tally.__slots__:
                    setattr(total, name, getattr(total, name) + getattr(tally, name))
            for (_day, interval), figures in run.intervals.items():
                seconds = figures.agent_seconds
                busy[interval] = busy.get(interval, 0.0) + seconds["offered"] + seconds["busy"] + seconds["wrapup"]
                ready[interval] = ready.get(interval, 0.0) + seconds["ready"]
            if bar is not None:
                bar.update(1)
        missed: dict[int, int] = {}
        for interval in range(96):
            if not open_flags[interval] or interval not in tallies:
                continue
            figures = tallies[interval].figures()
            level = figures["service_level"]
            abandon = figures["abandon_rate"]
            # One more agent for a near miss, more for a wide one (a point of service level
            # is worth about a tenth of an agent near the target; abandonment likewise).
            extra = 0
            if level is not None and level < target_service_level:
                extra = max(1, math.ceil((target_service_level - level) / 0.1))
            if max_abandon is not None and abandon is not None and abandon > max_abandon:
                extra = max(extra, math.ceil((abandon - max_abandon) / 0.02))
            if extra:
                missed[interval] = extra
        if not missed or round_number == rounds:
            break
        for interval, extra in missed.items():
            agents[interval] += extra
    if bar is not None:
        bar.close()
    rows = []
    day_tally = Tally()
    for interval in range(96):
        if not open_flags[interval]:
            continue
        tally = tallies.get(interval, Tally())
        for name in Tally.__slots__:
            setattr(day_tally, name, getattr(day_tally, name) + getattr(tally, name))
        figures = tally.figures()
        level, abandon = figures["service_level"], figures["abandon_rate"]
        met = (level is None or level >= target_service_level) and (
            max_abandon is None or abandon is None or abandon <= max_abandon
        )
        clock = dt.datetime.fromtimestamp(day_start + interval * INTERVAL_SECONDS, scenario.zone).strftime("%H:%M")
        working = busy.get(interval, 0.0)
        rows.append({
            "interval": interval, "start": clock, "arrivals_per_hour": rates[interval], "aht": aht,
            "erlang_agents": erlang[interval], "agents": agents[interval],
            "offered": figures["offered"] - figures["after_hours"], "service_level": level, "asa": figures["asa"],
            "abandon_rate": abandon, "occupancy": ratio(working, working + ready.get(interval, 0.0)), "met": met,
        })
    return {
        "scenario": scenario.scenario.name, "center": center.name, "date": day.isoformat(),
        "target": {"service_level": target_service_level, "threshold_seconds": threshold_seconds},
        "max_abandon": max_abandon, "model": "Erlang A" if patience_mean is not None else "Erlang C",
        "after_hours": after_hours,
        "patience_seconds": patience_mean, "aht": aht, "replications": replications, "rounds": round_number,
        "intervals": rows,
        "erlang_agent_hours": sum(erlang.values()) / 4, "agent_hours": sum(agents.values()) / 4,
        "service_level": day_tally.figures()["service_level"], "abandon_rate": day_tally.figures()["abandon_rate"],
        "all_met": all(row["met"] for row in rows),
        "simulated_calls": simulated, "wall_seconds": time.perf_counter() - began,
    }
