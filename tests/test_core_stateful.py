"""Random command sequences against the routing core (Hypothesis stateful testing).

The machine drives one center the way the node's pipeline does: every command gets a
timestamp (mostly moving forward, sometimes stamped a little in the past, as after a
failover to a node whose clock lags), and a `Tick` is logged before any command whose
timestamp has passed `next_deadline()`. Only accepted commands go into the log, as in the
real one. After every step it checks

- `check_invariants()`: docs/design.md invariants 3, 4, 5 and 8, over the whole state;
- invariant 6 from the outside: when an interaction is offered, no interaction of the same
  queue, channel and priority with an earlier place in line was waiting for that agent;
- that a refused command left the state byte-for-byte unchanged (its hash);

and, at a random point and at the end, invariant 7: restoring the snapshot taken after a
random log entry and applying the rest of the log, and replaying the whole log on a fresh
center, both give exactly the live state hash.

The moves are drawn from one weighted menu (`MOVES`) rather than from one rule each:
Hypothesis picks rules unevenly and switches some off per example (swarm testing), which
left the lifecycle (offer, answer, hang up, wrap up) rarely complete. Most moves are what a
working center does; `anything` sends any command with arbitrary ids, mostly refused.

CORE_STATEFUL_EXAMPLES (default 150) sets the number of examples, for a longer hunt.
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from acd.core import AgentState, Center, CenterConfig, Rejection
from acd.core.commands import (
    Abandon,
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
from acd.core.config import Abuse, Agent, Calendar, Capacity, Queue, RelaxationStep
from acd.core.events import CallOffered, Event
from acd.core.rejections import Code
from acd.core.state import CallState, State
from tests.helpers.core_harness import MONDAY_9AM

CODES = {code.code for code in Code}
CALLERS = ("01012340001", "01012340002", "01012340003", "0511200004", "0511200005")
QUEUES = ("transport", "welfare", "tax", "evening", "district", "protect", "nowhere")
AGENTS = ("kim", "lee", "park", "choi", "jung", "kang", "ghost")
DISPOSITIONS = ("resolved", "transferred", "callback", "unresolved")


def center_config(variant: int) -> CenterConfig:
    """The center the machine runs; variants differ the way an operator's edits would."""
    strategies = ("longest-idle", "fewest-handled", "best-skill-level", "round-robin")
    queues = [
        Queue(
            name="transport", skills=["transport"], min_level=3,
            relaxation=[RelaxationStep(after=40, min_level=2), RelaxationStep(after=90, min_level=1)],
            strategy=strategies[variant % 4], ring_timeout=12, wrapup_seconds=30,
            max_wait=400, overflow="district", aht_seconds=120,
        ),
        Queue(
            name="welfare", skills=["welfare"], strategy=strategies[(variant + 1) % 4],
            max_length=3, overflow="callback", ring_timeout=8, wrapup_seconds=20,
        ),
        Queue(name="tax", skills=["tax"], strategy="best-skill-level", calendar="office", channels=["voice", "sms"]),
        Queue(name="evening", strategy="round-robin", calendar="late", channels=["voice"], wrapup_seconds=0 if variant == 2 else 15),
        Queue(name="district", external=True),
        Queue(name="protect", skills=["protect"], ring_timeout=20),
    ]
    agents = [
        Agent(name="kim", skills={"transport": 5, "welfare": 2, "protect": 3}),
        Agent(name="lee", skills={"transport": 2, "tax": 4}),
        Agent(name="park", skills={"transport": 3, "welfare": 4, "tax": 2}, capacity=Capacity(voice=1, chat=2, sms=1)),
        Agent(name="choi", skills={"welfare": 3, "transport": 1}, capacity=Capacity(voice=0, chat=3, sms=2)),
        Agent(name="jung", skills={"protect": 5, "tax": 5}),
    ]
    if variant == 1:
        agents.append(Agent(name="kang", skills={"transport": 4, "welfare": 4}, capacity=Capacity(voice=1, chat=1)))
    if variant == 3:
        agents = [agent for agent in agents if agent.name != "lee"]  # refused while lee is logged in
    return CenterConfig(
        priority_weight_seconds=30 + 30 * variant,
        callback_preferred_seconds=100,
        short_abandon_seconds=5,
        abuse=Abuse(recovery_seconds=60, flags=2, window_days=1, route_to="protect", hash_key="test-key"),
        calendars=[
            Calendar(name="office", hours={day: ["08:30-18:30"] for day in ("mon", "tue", "wed", "thu", "fri")},
                     holidays={"2024-03-05": []}, closed_action="callback"),
            Calendar(name="late", hours={day: ["08:00-22:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
                     | {"sat": ["09:00-18:00"], "sun": ["09:00-18:00"]}, closed_action="reject"),
        ],
        queues=queues,
        agents=agents,
    )


def differences(left: Center, right: Center) -> list[str]:
    """The paths at which two centers' states differ (for a readable failure)."""
    found: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(found) > 10:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            if list(a) != list(b) and set(a) == set(b):
                found.append(f"{path}: key order {list(a)} != {list(b)}")
            for key in list(a) + [key for key in b if key not in a]:
                walk(a.get(key), b.get(key), f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{index}]")
        elif a != b or type(a) is not type(b):
            found.append(f"{path}: {a!r} != {b!r}")

    walk(msgspec.to_builtins(left.state), msgspec.to_builtins(right.state), "state")
    return found


# (queue, channel) pairs that some agent of every variant serves.
SERVED_LINES = (
    ("transport", "voice"), ("transport", "voice"), ("transport", "chat"), ("welfare", "voice"), ("welfare", "chat"),
    ("welfare", "sms"), ("tax", "voice"), ("tax", "sms"), ("evening", "voice"), ("protect", "voice"),
)
INVALID = CenterConfig(queues=[Queue(name="q", overflow="missing", max_wait=10)])


MOVES = (
    ["work"] * 8 + ["arrive"] * 4 + ["staff"] * 2 + ["presence"] * 2 + ["tick"] * 2
    + ["arrive_anywhere", "survey", "configure", "anything", "anything"]
)


class CenterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.center = Center()
        self.now = MONDAY_9AM
        self.log: list[tuple[Command, float]] = []
        self.snapshots: list[tuple[int, bytes]] = []
        self.arrivals: dict[str, Arrive] = {}
        self.counter = 0

    # -- driving --------------------------------------------------------------------

    def _apply(self, command: Command, at: float) -> list[Event] | Rejection:
        before = self.center.snapshot()
        result = self.center.apply(command, at)
        if isinstance(result, Rejection):
            assert result.code in CODES, result
            assert (result.code, result.status) == Code[result.code].value, result
            assert self.center.snapshot() == before, f"{command!r} refused with {result.code} but changed the state"
            return result
        self.log.append((command, at))
        self.snapshots.append((len(self.log), self.center.snapshot()))  # a restore point after every entry
        self._check_offer_order(msgspec.msgpack.decode(before, type=State), result)
        if isinstance(command, Tick):
            deadline = self.center.next_deadline()
            assert deadline is None or deadline > self.center.now, "a tick left a timer due"
        return result

    def step(self, command: Command, seconds: float) -> list[Event] | Rejection:
        self.now += seconds
        deadline = self.center.next_deadline()
        # The pipeline ticks first whenever the deadline has passed (acd.node), judged at
        # the time the core will apply the command: a stamp in the past counts as now.
        if deadline is not None and deadline <= max(self.now, self.center.now):
            self._apply(Tick(), self.now)
        result = self._apply(command, self.now)
        self.center.check_invariants()
        outcome = result.code if isinstance(result, Rejection) else "accepted"
        hypothesis.event(f"{type(command).__name__}: {outcome}")
        return result

    def _check_offer_order(self, before: State, events: list[Event]) -> None:
        """Invariant 6: an offer never passes over an earlier caller of the same line.

        For each offer, no interaction that waited before the command (and that nothing
        in this command touched before the offer) may have the same queue, channel and
        priority and an earlier place. Call-backs kept for one agent, and a call that
        agent still wraps up, are not in that agent's line.
        """
        weight = self.center.config.priority_weight_seconds
        after = self.center.state.interactions
        seen: set[str] = set()
        for event in events:
            if isinstance(event, CallOffered):
                offered = after.get(event.call)
                if offered is not None and offered.preferred_agent is None:
                    # The line is the event's: the call may move on later in the same step
                    # (overflow), but its place and priority go with it.
                    line = (event.queue, event.channel, offered.priority)
                    key = (offered.place_at - offered.priority * weight, offered.order)
                    agent = before.agents.get(event.agent)
                    held = agent.held if agent is not None else {}
                    for other in before.interactions.values():
                        if (
                            other.id == event.call or other.id in seen or other.id in held
                            or other.state is not CallState.WAITING or other.preferred_agent is not None
                            or (other.queue, other.channel, other.priority) != line
                        ):
                            continue
                        assert (other.place_at - other.priority * weight, other.order) >= key, (
                            f"{event.call} offered to {event.agent} ahead of {other.id}, which waited "
                            f"in {other.queue} with an earlier place"
                        )
            subject = getattr(event, "call", None)
            if subject is not None:
                seen.add(subject)

    def _time(self, data: st.DataObject) -> float:
        # Commands come seconds apart, some stamped a little in the past (a new primary's
        # clock may lag); long quiet spells come from ticks (`_quiet_time`).
        return data.draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, -3.0]), label="seconds")

    def _quiet_time(self, data: st.DataObject) -> float:
        # Ring timeouts, wrap-ups, relaxation, overflow; closing time, the next day, retention.
        return data.draw(st.sampled_from([1.0, 5.0, 13.0, 30.0, 45.0, 100.0, 420.0, 3600.0, 9 * 3600.0, 3 * 86400.0]), label="quiet")

    def _calls_in(self, *states: CallState) -> list[str]:
        return sorted(call.id for call in self.center.state.interactions.values() if call.state in states)

    def _in_progress(self) -> list[tuple[str, str, str]]:
        """(what, interaction, agent) for everything in progress: offers, talks, wrap-ups, waits."""
        work = []
        for name, agent in sorted(self.center.state.agents.items()):
            if agent.state is AgentState.NOT_READY and agent.reason in ("no_answer", ""):
                work.append(("back", "", name))  # an agent who missed or turned down an offer
            if agent.offer:
                work.append(("offer", agent.offer, name))
            for call, held in sorted(agent.held.items()):
                work.append((held.phase, call, name))
        work += [("waiting", call, "") for call in self._calls_in(CallState.WAITING)]
        return work

    # -- the moves ------------------------------------------------------------------

    @initialize(variant=st.integers(0, 3), staff=st.lists(st.sampled_from(AGENTS[:5]), max_size=4, unique=True))
    def open_the_center(self, variant: int, staff: list[str]) -> None:
        self.step(Configure(center=center_config(variant)), 0)
        for agent in staff:
            self.step(Login(agent=agent), 0)
            self.step(Ready(agent=agent), 0)

    @rule(data=st.data(), move=st.sampled_from(MOVES))
    def act(self, data: st.DataObject, move: str) -> None:
        getattr(self, f"_{move}")(data)

    @rule(data=st.data())
    def compare_a_snapshot_and_a_replay_with_the_live_state(self, data: st.DataObject) -> None:
        if self.snapshots:
            self._check_replay(data.draw(st.sampled_from(self.snapshots), label="snapshot"))

    def _new_arrival(self, data: st.DataObject, queue: str, channel: str) -> None:
        self.counter += 1
        call = f"c{self.counter}"
        attributes: dict[str, Any] = data.draw(
            st.sampled_from([{}, {}, {}, {}, {"elderly": True}, {"disabled": False}, {"vulnerable": 1, "topic": "bus"}]),
            label="attributes",
        )
        command = Arrive(
            id=call, queue=queue, channel=channel,  # type: ignore[arg-type]
            caller=data.draw(st.sampled_from(CALLERS), label="caller"),
            priority=data.draw(st.sampled_from((0, 0, 0, 0, 1, 5, 9)), label="priority"),
            attributes=attributes,
        )
        result = self.step(command, self._time(data))
        if not isinstance(result, Rejection):
            self.arrivals[call] = command

    def _arrive(self, data: st.DataObject) -> None:
        self._new_arrival(data, *data.draw(st.sampled_from(SERVED_LINES), label="line"))

    def _arrive_anywhere(self, data: st.DataObject) -> None:
        if self.arrivals and data.draw(st.integers(0, 2), label="repeat an id?") == 0:
            command = self.arrivals[data.draw(st.sampled_from(sorted(self.arrivals)), label="repeat")]
            if data.draw(st.booleans(), label="different body?"):
                command = Arrive(id=command.id, queue=command.queue, caller=command.caller, channel=command.channel,
                                   priority=(command.priority + 1) % 10, attributes=command.attributes)
            self.step(command, self._time(data))
            return
        queue = data.draw(st.sampled_from(QUEUES), label="queue")
        self._new_arrival(data, queue, data.draw(st.sampled_from(("voice", "chat", "sms")), label="channel"))

    def _staff(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(AGENTS[:-1]), label="agent")
        self.step(Login(agent=agent), self._time(data))
        self.step(Ready(agent=agent), 0)

    def _presence(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(AGENTS[:-1]), label="agent")
        action = data.draw(st.sampled_from(["not_ready", "not_ready", "logout", "ready"]), label="action")
        command: Command
        if action == "not_ready":
            command = NotReady(agent=agent, reason=data.draw(st.sampled_from(["", "lunch", "training"]), label="reason"))
        elif action == "logout":
            command = Logout(agent=agent)
        else:
            command = Ready(agent=agent)
        self.step(command, self._time(data))

    def _work(self, data: st.DataObject) -> None:
        """The next natural move of something in progress, or a tick when nothing is."""
        work = self._in_progress()
        if not work:
            self._tick(data)
            return
        busy = [item for item in work if item[0] != "waiting"]
        if busy and data.draw(st.integers(0, 4), label="a waiting caller instead?") != 4:
            work = busy  # mostly the agents' work; sometimes a waiting caller gives up or moves
        what, call, agent = data.draw(st.sampled_from(work), label="work")
        seconds = data.draw(st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, 30.0]), label="seconds")
        if what == "offer":
            take = data.draw(st.sampled_from(["answer"] * 6 + ["reject", "abandon", "callback", "transfer", "attempt"]), label="take")
        elif what == "connected":
            take = data.draw(st.sampled_from(["hangup"] * 4 + ["transfer", "hold", "unhold"]), label="take")
        elif what == "wrapup":
            take = "wrapup"
        elif what == "back":
            self.step(Ready(agent=agent), seconds)
            return
        else:
            take = data.draw(st.sampled_from(["abandon", "callback", "transfer"]), label="take")
        command: Command
        if take == "answer":
            command = Answer(call=call, agent=agent)
        elif take == "reject":
            command = Reject(call=call, agent=agent)
        elif take == "abandon":
            command = Abandon(call=call)
        elif take == "callback":
            command = RequestCallback(call=call)
        elif take == "transfer":
            command = Transfer(call=call, queue=data.draw(st.sampled_from(QUEUES[:-1]), label="target"))
        elif take == "hangup":
            command = Hangup(call=call)
        elif take == "attempt":  # a dialler's outcome (refused unless a call-back rings)
            outcome = data.draw(st.sampled_from(["reached", "no_answer", "busy", "wrong_number"]), label="outcome")
            command = CallbackAttempt(call=call, outcome=outcome)  # type: ignore[arg-type]
        elif take == "hold":
            command = Hold(call=call)
        elif take == "unhold":
            command = Unhold(call=call)
        else:
            disposition = data.draw(st.sampled_from(DISPOSITIONS), label="disposition")
            callback_at = None
            if disposition == "callback":
                callback_at = self.now + data.draw(st.sampled_from([0.0, 30.0, 300.0, 12 * 3600.0]), label="due in")
            abusive = data.draw(st.sampled_from([False] * 5 + [True]), label="abusive")
            command = WrapUp(call=call, agent=agent, disposition=disposition, abusive=abusive, callback_at=callback_at)  # type: ignore[arg-type]
        self.step(command, seconds)

    def _survey(self, data: st.DataObject) -> None:
        ended = self._calls_in(CallState.COMPLETED, CallState.TRANSFERRED, CallState.CONNECTED)
        call = data.draw(st.sampled_from(ended), label="ended") if ended else "nope"
        self.step(Survey(call=call, score=data.draw(st.integers(1, 5), label="score")), self._time(data))

    def _tick(self, data: st.DataObject) -> None:
        self.step(Tick(), self._quiet_time(data))

    def _configure(self, data: st.DataObject) -> None:
        variant = data.draw(st.integers(-1, 3), label="variant")
        result = self.step(Configure(center=INVALID if variant < 0 else center_config(variant)), self._time(data))
        if variant < 0:
            assert isinstance(result, Rejection) and result.code == "invalid_config"

    def _anything(self, data: st.DataObject) -> None:
        """Any command on any interaction and agent, known or not: mostly refused."""
        known = sorted(self.arrivals)
        call = data.draw(st.sampled_from(known), label="call") if known and data.draw(st.integers(0, 9), label="unknown?") else "nope"
        agent = data.draw(st.sampled_from(AGENTS), label="agent")
        kind = data.draw(st.sampled_from([
            "answer", "reject", "abandon", "hangup", "transfer", "callback", "wrapup", "survey", "login", "ready",
            "not_ready", "logout", "audit",
        ]), label="kind")
        command: Command
        if kind == "answer":
            command = Answer(call=call, agent=agent)
        elif kind == "reject":
            command = Reject(call=call, agent=agent)
        elif kind == "abandon":
            command = Abandon(call=call)
        elif kind == "hangup":
            command = Hangup(call=call)
        elif kind == "transfer":
            command = Transfer(call=call, queue=data.draw(st.sampled_from(QUEUES), label="target"))
        elif kind == "callback":
            command = RequestCallback(call=call)
        elif kind == "wrapup":
            disposition = data.draw(st.sampled_from(DISPOSITIONS), label="disposition")
            callback_at = self.now + 60 if disposition == "callback" and data.draw(st.booleans(), label="time?") else None
            command = WrapUp(call=call, agent=agent, disposition=disposition, callback_at=callback_at)  # type: ignore[arg-type]
        elif kind == "survey":
            command = Survey(call=call, score=data.draw(st.integers(1, 5), label="score"))
        elif kind == "login":
            command = Login(agent=agent)
        elif kind == "ready":
            command = Ready(agent=agent)
        elif kind == "not_ready":
            command = NotReady(agent=agent, reason="break")
        elif kind == "logout":
            command = Logout(agent=agent)
        else:
            command = Audit(actor="supervisor", action="note")
        self.step(command, self._time(data))

    # -- invariant 7 ----------------------------------------------------------------

    def _check_replay(self, snapshot: tuple[int, bytes]) -> None:
        expected = self.center.state_hash()
        position, data = snapshot
        restored = Center.restore(data)
        for command, at in self.log[position:]:
            assert not isinstance(restored.apply(command, at), Rejection), command
        assert restored.state_hash() == expected, (
            f"restoring the snapshot after log entry {position} diverged: {differences(restored, self.center)}"
        )
        fresh = Center()
        for command, at in self.log:
            assert not isinstance(fresh.apply(command, at), Rejection), command
        assert fresh.state_hash() == expected, f"replaying the log diverged: {differences(fresh, self.center)}"

    def teardown(self) -> None:
        hypothesis.event(f"commands logged: {len(self.log) // 20 * 20}+")
        if self.snapshots:
            self._check_replay(self.snapshots[len(self.snapshots) // 2])


CenterMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CORE_STATEFUL_EXAMPLES", "150")), stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestCenterMachine = CenterMachine.TestCase
