"""The invariants of docs/design.md that the core checks: after every step on what the step
touched (`_check_call`, `_check_agent`), and over the whole state on demand (`check_invariants`).
"""

from __future__ import annotations

from .base import (
    _CONNECTED,
    _LOGGED_OUT,
    _OFFERED,
    _READY,
    _SCHEDULED,
    _TERMINAL,
    _WAITING,
    _WRAPUP,
    invariant,
)
from .routing import Routing
from .state import AgentRecord, Counters, Interaction


class Invariants(Routing):
    """The checks of docs/design.md's invariants that the core can see in its state."""

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
