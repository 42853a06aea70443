"""Routing: which free agent takes which waiting interaction (docs/design.md invariants 5 and 6).

An arrival is offered at once to a free agent; an agent who becomes free is offered the
best waiting interaction they may take. See `acd.core.center` for who goes first and which
agent is chosen.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from .agents import Agents
from .base import (
    _NOT_READY,
    _READY,
    _WAITING,
    _moved,
    invariant,
)
from .config import Queue
from .events import CallOffered, OfferWithdrawn
from .state import AgentRecord, Interaction
from .statistics import _callback_attempted

if TYPE_CHECKING:
    from .center import Center


class Routing(Agents):
    """Offers: a waiting interaction to the best free agent, a free agent to the best interaction."""

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
            head = self._head(heap, tokens)  # the head with a current token (stale entries go)
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
                head = self._head(heap, tokens)
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
        call.state = _moved(call, "offer")
        call.agent = name
        call.offer_expires_at = expires = now + self._queues[call.queue].ring_timeout
        state = self.state
        state.order = order = state.order + 1
        agent.offer = call_id
        agent.last_offer_order = order
        self._push_timer(expires, "offer", call_id)
        self._touched_calls.add(call_id)
        if call.callback:
            call.attempts += 1
            self._count_callback(call, _callback_attempted)
        self._events.append(
            CallOffered(
                at=now, call=call_id, agent=name, queue=call.queue, channel=call.channel,
                expires_at=expires, callback=call.callback, warning=call.warning,
            )
        )
        self._agent_changed(agent, now)

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
        call.state = _moved(call, "withdraw")
        call.agent = None
        call.offer_expires_at = None
        call.last_offer_agent = agent.name
        call.last_offer_outcome = reason
        self._enqueue(call)
        self._touch(call, agent)
        self._emit(OfferWithdrawn(at=now, call=call.id, agent=agent.name, reason=reason))
        self._agent_changed(agent, now)
        return agent

    def _rebalance(self, now: float) -> None:
        for agent in self.state.agents.values():
            self._dispatch_agent(agent, now)


def on_offer_timeout(center: Center, call_id: str, _detail: str, now: float) -> None:
    call = center.state.interactions[call_id]
    agent = center.state.agents[call.agent or ""]
    center._withdraw_offer(call, "no_answer", now)
    if center.state.config.no_answer_not_ready:
        agent.presence = _NOT_READY
        agent.reason = "no_answer"
        center._agent_changed(agent, now)
    center._dispatch_call(call, now)
    center._dispatch_agent(agent, now)


def on_relax(center: Center, call_id: str, _detail: str, now: float) -> None:
    center._dispatch_call(center.state.interactions[call_id], now)
