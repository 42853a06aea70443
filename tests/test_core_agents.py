"""Agents through the routing core: presence, offers, deferred changes, channels, protection."""

from __future__ import annotations

from acd.core import CenterConfig
from acd.core.commands import Login, Logout, NotReady, Ready, Reject, Transfer
from acd.core.config import Abuse, Agent, Capacity, Queue
from acd.core.events import (
    AgentChanged,
    CallOffered,
    CallQueued,
    CallWrappedUp,
    Event,
    OfferWithdrawn,
)
from acd.core.rejections import Code
from tests.helpers.core_harness import Desk, chat_agent, of_type, offers, one_queue_center, only


def agent_states(events: list[Event], agent: str) -> list[str]:
    return [event.state for event in of_type(events, AgentChanged) if event.agent == agent]


def test_agent_moves_through_logged_out_not_ready_ready_offered_busy_wrapup() -> None:
    desk = Desk(one_queue_center(wrapup_seconds=30))
    assert desk.agent_state("a1") == "logged_out"
    login = only(desk.do(Login(agent="a1")), AgentChanged)
    assert (login.state, login.reason) == ("not_ready", "login")
    assert agent_states(desk.do(Ready(agent="a1")), "a1") == ["ready"]
    assert agent_states(desk.arrive("x"), "a1") == ["offered"]
    assert agent_states(desk.answer("x"), "a1") == ["busy"]
    assert agent_states(desk.hangup("x"), "a1") == ["wrapup"]
    assert agent_states(desk.wrapup("x"), "a1") == ["ready"]
    break_ = only(desk.do(NotReady(agent="a1", reason="lunch")), AgentChanged)
    assert (break_.state, break_.reason) == ("not_ready", "lunch")
    assert agent_states(desk.do(Logout(agent="a1")), "a1") == ["logged_out"]


def test_not_ready_agent_is_offered_nothing() -> None:
    desk = Desk(one_queue_center())
    desk.ready("a1")
    desk.do(NotReady(agent="a1", reason="training"))
    assert of_type(desk.arrive("x"), CallOffered) == []
    assert desk.state_of("x") == "waiting"


def test_not_ready_while_ringing_withdraws_the_offer() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.ready("a1")
    desk.arrive("x")
    desk.do(Login(agent="a2"))
    events = desk.do(NotReady(agent="a1", reason="meeting"))
    assert only(events, OfferWithdrawn).reason == "agent_left"
    assert desk.agent_state("a1") == "not_ready"
    assert desk.state_of("x") == "waiting"


def test_logout_while_ringing_withdraws_the_offer_without_offering_it_back() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.ready("a1")
    desk.arrive("x")
    events = desk.do(Logout(agent="a1"))
    assert only(events, OfferWithdrawn).reason == "agent_left"
    assert offers(events) == []
    assert desk.agent_state("a1") == "logged_out"
    assert offers(desk.ready("a2")) == [("x", "a2")]


def test_ring_timeout_returns_call_to_its_place_and_agent_goes_not_ready_no_answer() -> None:
    desk = Desk(one_queue_center(agents=2, ring_timeout=15))
    desk.ready("a1")
    desk.arrive("first")
    desk.arrive("second", after=5)
    desk.ready("a2")  # takes "second": "first" rings at a1
    assert desk.offer_of("a2") == "second"
    desk.do(Reject(call="second", agent="a2"))  # "second" goes back behind "first"
    desk.arrive("third", after=1)
    assert desk.center.next_deadline() == desk.call("first").offer_expires_at
    events = desk.wait_until(desk.call("first").offer_expires_at)
    withdrawn = only(events, OfferWithdrawn)
    assert (withdrawn.call, withdrawn.agent, withdrawn.reason) == ("first", "a1", "no_answer")
    assert desk.agent_state("a1") == "not_ready"
    assert desk.agent("a1").reason == "no_answer"
    assert [desk.center.position(call) for call in ("first", "second", "third")] == [1, 2, 3]


def test_ring_timeout_leaves_the_agent_ready_when_so_configured() -> None:
    config = one_queue_center(agents=1, ring_timeout=10)
    desk = Desk(CenterConfig(queues=config.queues, agents=config.agents, no_answer_not_ready=False))
    desk.ready("a1")
    desk.arrive("x")
    events = desk.wait(10)
    assert only(events, OfferWithdrawn).reason == "no_answer"
    assert offers(events) == [("x", "a1")]  # offered again: nobody else is free


def test_reject_returns_call_to_its_place_and_agent_goes_not_ready() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.arrive("first")
    desk.arrive("second", after=5)
    desk.ready("a1")
    events = desk.do(Reject(call="first", agent="a1"), after=2)
    assert only(events, OfferWithdrawn).reason == "rejected"
    assert desk.agent_state("a1") == "not_ready"
    assert [desk.center.position(call) for call in ("first", "second")] == [1, 2]
    assert offers(desk.ready("a2")) == [("first", "a2")]


def test_not_ready_during_a_call_is_applied_after_wrapup_with_no_offer_in_between() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    pending = of_type(desk.do(NotReady(agent="a1", reason="lunch")), AgentChanged)
    assert [(event.state, event.pending, event.reason) for event in pending][-1] == ("busy", "not_ready", "lunch")
    desk.arrive("y")
    desk.hangup("x", after=60)
    events = desk.wrapup("x", after=5)
    assert offers(events) == []
    assert desk.agent_state("a1") == "not_ready"
    assert desk.agent("a1").reason == "lunch"
    assert desk.state_of("y") == "waiting"


def test_logout_during_a_call_is_applied_after_wrapup_with_no_offer_in_between() -> None:
    desk = Desk(one_queue_center(agents=1, wrapup_seconds=20))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    assert only(desk.do(Logout(agent="a1")), AgentChanged).pending == "logout"
    assert desk.do(Logout(agent="a1")) == []
    desk.arrive("y")
    desk.hangup("x", after=60)
    events = desk.wait(20)  # the wrap-up times out
    assert only(events, CallWrappedUp).timed_out
    assert offers(events) == []
    assert desk.agent_state("a1") == "logged_out"


def test_ready_during_a_call_cancels_a_deferred_not_ready() -> None:
    desk = Desk(one_queue_center())
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.do(NotReady(agent="a1", reason="lunch"))
    desk.do(Ready(agent="a1"))
    desk.arrive("y")
    desk.hangup("x")
    assert offers(desk.wrapup("x")) == [("y", "a1")]


def test_chat_agent_deferring_not_ready_loses_the_ringing_offer_for_good() -> None:
    desk = Desk(CenterConfig(queues=[Queue(name="q")], agents=[chat_agent("c1", chats=2)]))
    desk.ready("c1")
    desk.arrive("x", channel="chat")
    desk.answer("x")
    desk.arrive("y", channel="chat")
    assert desk.offer_of("c1") == "y"
    events = desk.do(NotReady(agent="c1", reason="lunch"))
    assert only(events, OfferWithdrawn).call == "y"
    assert offers(events) == []
    assert desk.state_of("y") == "waiting"
    assert desk.agent("c1").pending == "not_ready"


def test_chat_agent_holds_up_to_the_capacity_at_once() -> None:
    desk = Desk(CenterConfig(queues=[Queue(name="q")], agents=[chat_agent("c1", chats=3)]))
    desk.ready("c1")
    for index in range(5):
        desk.arrive(f"chat{index}", channel="chat")
        if desk.offer_of("c1"):
            desk.answer(f"chat{index}", "c1")
    assert sorted(desk.agent("c1").held) == ["chat0", "chat1", "chat2"]
    assert [desk.state_of(f"chat{index}") for index in (3, 4)] == ["waiting", "waiting"]
    assert desk.agent_state("c1") == "busy"
    desk.hangup("chat1")
    assert desk.offer_of("c1") is None  # the conversation ended; wrap-up still holds the slot
    assert offers(desk.wrapup("chat1")) == [("chat3", "c1")]


def test_agent_holding_a_voice_call_gets_no_chat() -> None:
    desk = Desk(CenterConfig(queues=[Queue(name="q")], agents=[Agent(name="m1", capacity=Capacity(voice=1, chat=3))]))
    desk.ready("m1")
    desk.arrive("call", channel="voice")
    desk.answer("call")
    assert offers(desk.arrive("chat", channel="chat")) == []
    desk.hangup("call")
    assert offers(desk.wrapup("call")) == [("chat", "m1")]


def test_agent_holding_a_chat_gets_no_voice_call() -> None:
    desk = Desk(CenterConfig(queues=[Queue(name="q")], agents=[Agent(name="m1", capacity=Capacity(voice=1, chat=3))]))
    desk.ready("m1")
    desk.arrive("chat", channel="chat")
    desk.answer("chat")
    assert offers(desk.arrive("call", channel="voice")) == []
    assert offers(desk.arrive("chat2", channel="chat")) == [("chat2", "m1")]


def test_agent_with_no_capacity_on_a_channel_gets_none_of_it() -> None:
    desk = Desk(CenterConfig(queues=[Queue(name="q")], agents=[chat_agent("c1"), Agent(name="v1")]))
    desk.ready("c1")
    assert offers(desk.arrive("call", channel="voice")) == []
    assert offers(desk.ready("v1")) == [("call", "v1")]
    assert offers(desk.arrive("sms", channel="sms")) == [("sms", "c1")]


def test_abusive_wrapup_gives_the_agent_a_recovery_period_with_no_offers() -> None:
    config = one_queue_center(agents=1)
    desk = Desk(CenterConfig(queues=config.queues, agents=config.agents, abuse=Abuse(recovery_seconds=300)))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.hangup("x", after=30)
    desk.arrive("y")
    events = desk.wrapup("x", abusive=True)
    assert only(events, CallWrappedUp).abusive
    assert offers(events) == []
    assert desk.agent_state("a1") == "recovering"
    assert desk.center.next_deadline() == desk.now + 300
    assert offers(desk.wait(299)) == []
    events = desk.wait(1)
    assert agent_states(events, "a1") == ["ready", "offered"]
    assert offers(events) == [("y", "a1")]


def test_caller_flagged_abusive_k_times_within_d_days_arrives_warned_and_routed_to_protection() -> None:
    config = CenterConfig(
        queues=[Queue(name="q"), Queue(name="protect", skills=["protect"])],
        agents=[Agent(name="a1"), Agent(name="senior", skills={"protect": 5})],
        abuse=Abuse(flags=2, window_days=7, route_to="protect", recovery_seconds=0),
    )
    desk = Desk(config)
    desk.ready("a1")
    caller = "01055550000"
    for index in range(2):
        queued = only(desk.arrive(f"rude{index}", caller=caller, after=3600), CallQueued)
        assert (queued.queue, queued.warning) == ("q", False)
        desk.answer(f"rude{index}")
        desk.hangup(f"rude{index}", after=60)
        desk.wrapup(f"rude{index}", abusive=True)
    events = desk.arrive("rude2", caller=caller, after=3600)
    queued = only(events, CallQueued)
    assert (queued.queue, queued.warning) == ("protect", True)
    assert offers(events) == []
    offered = only(desk.ready("senior"), CallOffered)
    assert (offered.call, offered.warning) == ("rude2", True)
    # Another caller is not affected; the flags expire after the window.
    assert only(desk.arrive("polite", caller="01055551111"), CallQueued).queue == "q"
    assert only(desk.arrive("later", caller=caller, after=8 * 86400), CallQueued).warning is False


def test_caller_number_is_kept_only_as_a_keyed_hash_once_the_call_ended() -> None:
    desk = Desk(one_queue_center())
    desk.ready("a1")
    number = "01098765432"
    desk.arrive("x", caller=number)
    desk.serve("x")
    snapshot = desk.center.snapshot()
    assert number.encode() not in snapshot
    assert number[1:].encode() not in snapshot  # nor its national part
    assert desk.call("x").caller_masked == "*******5432"
    # The hash is keyed: another key gives another hash for the same number.
    other = Desk(CenterConfig(queues=[Queue(name="q")], abuse=Abuse(hash_key="another")))
    other.arrive("x", caller=number)
    assert other.call("x").caller_hash != desk.call("x").caller_hash
    assert desk.call("x").fingerprint != other.call("x").fingerprint


def test_presence_commands_for_logged_out_or_unknown_agents_are_refused() -> None:
    desk = Desk(one_queue_center())
    # Desk.refuse asserts the code and that the state did not change; the field names the agent.
    for command, code in (
        (Ready(agent="a1"), Code.agent_logged_out), (NotReady(agent="a1", reason="x"), Code.agent_logged_out),
        (Login(agent="nobody"), Code.unknown_agent), (Logout(agent="nobody"), Code.unknown_agent),
    ):
        assert desk.refuse(command, code).field == "agent"


def test_chat_agent_wrapping_up_a_transferred_chat_takes_the_callers_behind_it() -> None:
    config = CenterConfig(queues=[Queue(name="q"), Queue(name="tax")], agents=[chat_agent("c1", chats=3)])
    desk = Desk(config)
    desk.ready("c1")
    desk.arrive("x", channel="chat")
    desk.answer("x")
    desk.do(Transfer(call="x", queue="tax"))  # c1 wraps x up; x waits in tax, which c1 serves
    assert desk.offer_of("c1") is None  # x does not come back to c1
    assert offers(desk.arrive("y", queue="tax", channel="chat", after=1)) == [("y", "c1")]
