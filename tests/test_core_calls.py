"""An interaction's life through the routing core: arrive, wait, offer, answer, end, wrap up.

Each test drives the core through commands only and reads the events and the state a
client would see. Timestamps are real instants (Monday 09:00 in Seoul and after).
"""

from __future__ import annotations

import pytest

from acd.core import Center, CenterConfig
from acd.core.commands import (
    Abandon,
    Answer,
    Arrive,
    Command,
    Hangup,
    Login,
    Logout,
    NotReady,
    Ready,
    Reject,
    RequestCallback,
    Survey,
    Transfer,
    WrapUp,
)
from acd.core.config import Agent, Capacity, Queue
from acd.core.events import (
    AgentChanged,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallOffered,
    CallQueued,
    CallTransferred,
    CallWrappedUp,
    OfferWithdrawn,
    SurveyRecorded,
)
from acd.core.rejections import Code
from tests.helpers.core_harness import Desk, of_type, one_queue_center, only


@pytest.mark.parametrize("channel", ["voice", "chat", "sms"])
def test_interaction_on_each_channel_goes_from_arrival_to_completed(channel: str) -> None:
    config = CenterConfig(queues=[Queue(name="q", wrapup_seconds=30)], agents=[Agent(name="a1", capacity=Capacity(voice=1, chat=2, sms=2))])
    desk = Desk(config)
    desk.ready("a1")

    arrived = desk.arrive("x", channel=channel)
    queued = only(arrived, CallQueued)
    assert (queued.call, queued.queue, queued.channel, queued.position) == ("x", "q", channel, 1)
    offered = only(arrived, CallOffered)
    assert (offered.call, offered.agent, offered.channel) == ("x", "a1", channel)
    assert desk.state_of("x") == "offered"
    assert desk.agent_state("a1") == "offered"

    answered = only(desk.answer("x", "a1", after=4), CallAnswered)
    assert (answered.agent, answered.wait) == ("a1", 4.0)
    assert desk.state_of("x") == "connected"
    assert desk.agent_state("a1") == "busy"

    ended = only(desk.hangup("x", after=100), CallEnded)
    assert ended.talk == 100.0
    assert desk.state_of("x") == "wrapup"
    assert desk.agent_state("a1") == "wrapup"

    wrapped = only(desk.wrapup("x", "a1", "resolved", after=12), CallWrappedUp)
    assert (wrapped.disposition, wrapped.timed_out) == ("resolved", False)
    assert desk.state_of("x") == "completed"
    assert desk.agent_state("a1") == "ready"


def test_caller_waits_in_queue_while_no_agent_is_ready() -> None:
    desk = Desk(one_queue_center(agents=1))
    events = desk.arrive("x")
    assert of_type(events, CallOffered) == []
    assert desk.state_of("x") == "waiting"
    assert desk.center.position("x") == 1
    offered = only(desk.ready("a1"), CallOffered)
    assert (offered.call, offered.agent) == ("x", "a1")


def test_waiting_caller_who_hangs_up_is_abandoned() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("x")
    abandoned = only(desk.do(Abandon(call="x"), after=42), CallAbandoned)
    assert (abandoned.call, abandoned.wait) == ("x", 42.0)
    assert desk.state_of("x") == "abandoned"
    assert desk.center.waiting_count("q") == 0


def test_caller_who_hangs_up_while_ringing_withdraws_the_offer_and_frees_the_agent() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    desk.arrive("y")
    events = desk.do(Abandon(call="x"), after=3)
    assert only(events, OfferWithdrawn).reason == "abandoned"
    assert only(events, CallOffered).call == "y"
    assert desk.state_of("x") == "abandoned"


def test_wrapup_ends_by_itself_after_the_queue_wrapup_time() -> None:
    desk = Desk(one_queue_center(agents=1, wrapup_seconds=30))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.hangup("x", after=60)
    assert desk.center.next_deadline() == desk.now + 30
    assert of_type(desk.wait(29), CallWrappedUp) == []
    wrapped = only(desk.wait(1), CallWrappedUp)
    assert (wrapped.disposition, wrapped.timed_out) == ("not_recorded", True)
    assert desk.state_of("x") == "completed"
    assert desk.agent_state("a1") == "ready"


def test_agent_who_finishes_wrapup_is_offered_the_next_caller_at_once() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.arrive("y")
    desk.hangup("x", after=30)
    assert desk.state_of("y") == "waiting"
    events = desk.wrapup("x", "a1", after=5)
    assert [type(event) for event in events] == [CallWrappedUp, AgentChanged, CallOffered, AgentChanged]
    assert only(events, CallOffered).call == "y"


def test_transfer_to_another_queue_keeps_the_place_in_line() -> None:
    config = CenterConfig(
        queues=[Queue(name="q"), Queue(name="tax", skills=["tax"])],
        agents=[Agent(name="a1"), Agent(name="t1", skills={"tax": 3})],
    )
    desk = Desk(config)
    desk.arrive("early", queue="tax")
    desk.arrive("x", queue="q", after=10)
    desk.arrive("late", queue="tax", after=10)
    desk.ready("a1")
    events = desk.do(Transfer(call="x", queue="tax"), after=5)  # ringing at a1: withdrawn
    assert only(events, OfferWithdrawn).reason == "transferred"
    moved = only(events, CallTransferred)
    assert (moved.source, moved.target, moved.external) == ("q", "tax", False)
    assert only(events, CallQueued).queue == "tax"
    # x arrived between "early" and "late", and keeps that place in the tax queue.
    assert [desk.center.position(call) for call in ("early", "x", "late")] == [1, 2, 3]
    desk.ready("t1")
    assert desk.offer_of("t1") == "early"


def test_transfer_of_a_conversation_puts_the_caller_back_in_line_and_the_agent_into_wrapup() -> None:
    config = CenterConfig(
        queues=[Queue(name="q"), Queue(name="tax", skills=["tax"])],
        agents=[Agent(name="a1"), Agent(name="t1", skills={"tax": 3})],
    )
    desk = Desk(config)
    desk.ready("a1", "t1")
    desk.arrive("x")
    desk.answer("x", "a1")
    events = desk.do(Transfer(call="x", queue="tax"), after=60)
    assert only(events, CallEnded).agent == "a1"
    assert only(events, CallOffered).agent == "t1"
    assert desk.agent_state("a1") == "wrapup"
    desk.answer("x", "t1")
    desk.wrapup("x", "a1", "transferred", after=5)  # the first leg's wrap-up
    assert desk.state_of("x") == "connected"
    desk.hangup("x", after=20)
    desk.wrapup("x", "t1")
    assert desk.state_of("x") == "completed"


def test_transfer_to_an_external_queue_ends_the_interaction_as_transferred() -> None:
    config = CenterConfig(queues=[Queue(name="q"), Queue(name="district", external=True)], agents=[Agent(name="a1")])
    desk = Desk(config)
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    events = desk.do(Transfer(call="x", queue="district"), after=30)
    moved = only(events, CallTransferred)
    assert (moved.target, moved.external) == ("district", True)
    assert desk.state_of("x") == "transferred"
    assert desk.agent_state("a1") == "wrapup"
    desk.wrapup("x", "a1", "transferred")
    assert desk.agent_state("a1") == "ready"
    assert desk.state_of("x") == "transferred"


def test_arrival_in_an_external_queue_is_transferred_out_at_once() -> None:
    config = CenterConfig(queues=[Queue(name="q"), Queue(name="district", external=True)])
    desk = Desk(config)
    events = desk.arrive("x", queue="district")
    assert only(events, CallTransferred).external is True
    assert desk.state_of("x") == "transferred"


def test_caller_flagged_as_vulnerable_keeps_a_raised_priority() -> None:
    desk = Desk(one_queue_center())
    for attribute in ("vulnerable", "elderly", "disabled"):
        queued = only(desk.arrive(attribute, attributes={attribute: True}), CallQueued)
        assert queued.priority == desk.center.config.vulnerable_priority
    assert only(desk.arrive("plain", attributes={"elderly": False}), CallQueued).priority == 0
    assert only(desk.arrive("asked", priority=7, attributes={"disabled": True}), CallQueued).priority == 7


def test_repeated_arrival_with_the_same_body_takes_effect_once() -> None:
    desk = Desk(one_queue_center())
    command = Arrive(id="x", queue="q", caller="01012345678")
    desk.do(command)
    assert desk.do(command, after=5) == []
    assert desk.center.waiting_count("q") == 1
    assert desk.day().center.total.offered == 1


def test_arrival_with_a_known_id_and_another_body_is_an_id_conflict() -> None:
    desk = Desk(one_queue_center())
    desk.do(Arrive(id="x", queue="q", caller="01012345678"))
    rejection = desk.refuse(Arrive(id="x", queue="q", caller="01099999999"), Code.id_conflict)
    assert rejection.field == "id"
    desk.refuse(Arrive(id="x", queue="q", caller="01012345678", priority=3), Code.id_conflict)


@pytest.mark.parametrize(
    "command",
    [
        Answer(call="x", agent="a1"),
        Hangup(call="x"),
        WrapUp(call="x", agent="a1", disposition="resolved"),
        Survey(call="x", score=4),
    ],
    ids=lambda command: type(command).__name__,
)
def test_repeating_a_command_that_took_effect_returns_no_events(command: Command) -> None:
    desk = Desk(one_queue_center())
    desk.ready("a1")
    desk.arrive("x")
    for step in (Answer(call="x", agent="a1"), Hangup(call="x"), WrapUp(call="x", agent="a1", disposition="resolved"), Survey(call="x", score=4)):
        desk.do(step, after=1)
        if step == command:
            break
    before = desk.center.state_hash()
    assert desk.do(command) == []
    assert desk.center.state_hash() == before


def test_repeating_abandon_reject_transfer_and_callback_returns_no_events() -> None:
    config = CenterConfig(queues=[Queue(name="q"), Queue(name="other"), Queue(name="district", external=True)], agents=[Agent(name="a1")])
    desk = Desk(config)
    desk.ready("a1")
    desk.arrive("x")
    desk.do(Reject(call="x", agent="a1"))
    assert desk.do(Reject(call="x", agent="a1")) == []
    desk.do(Transfer(call="x", queue="other"))
    assert desk.do(Transfer(call="x", queue="other")) == []
    desk.do(RequestCallback(call="x"))
    assert desk.do(RequestCallback(call="x")) == []
    desk.do(Abandon(call="x"))
    assert desk.do(Abandon(call="x")) == []
    desk.arrive("y")
    desk.do(Transfer(call="y", queue="district"))
    assert desk.do(Transfer(call="y", queue="district")) == []


def test_repeating_agent_commands_returns_no_events() -> None:
    desk = Desk(one_queue_center())
    desk.do(Login(agent="a1"))
    assert desk.do(Login(agent="a1")) == []
    desk.do(Ready(agent="a1"))
    assert desk.do(Ready(agent="a1")) == []
    desk.do(NotReady(agent="a1", reason="lunch"))
    assert desk.do(NotReady(agent="a1", reason="lunch")) == []
    desk.do(Logout(agent="a1"))
    assert desk.do(Logout(agent="a1")) == []


def test_survey_scores_an_answered_interaction_once() -> None:
    desk = Desk(one_queue_center())
    desk.ready("a1")
    desk.arrive("x")
    desk.serve("x")
    recorded = only(desk.do(Survey(call="x", score=5)), SurveyRecorded)
    assert (recorded.call, recorded.agent, recorded.score) == ("x", "a1", 5)
    desk.refuse(Survey(call="x", score=2), Code.survey_already_recorded)
    desk.arrive("never")
    desk.do(Abandon(call="never"))
    desk.refuse(Survey(call="never", score=3), Code.call_not_answered)


def test_snapshot_restores_to_the_same_state_and_replay_reproduces_it() -> None:
    desk = Desk(one_queue_center(agents=2, wrapup_seconds=20))
    desk.ready("a1", "a2")
    for index in range(5):
        desk.arrive(f"c{index}", after=3)
    desk.serve("c0")
    snapshot = desk.center.snapshot()
    at = len(desk.log)
    desk.serve("c1")
    desk.wait(100)
    restored = Center.restore(snapshot)
    for command, moment in desk.log[at:]:
        restored.apply(command, moment)
    assert restored.state_hash() == desk.center.state_hash()
    assert desk.replayed().state_hash() == desk.center.state_hash()
