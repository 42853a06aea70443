"""Who is offered what: strategies, priorities, ageing, several queues, skill relaxation."""

from __future__ import annotations

import pytest

from acd.core import CenterConfig
from acd.core.commands import Login, Ready, RequestCallback
from acd.core.config import Agent, Queue, RelaxationStep
from acd.core.events import CallOffered
from tests.helpers.core_harness import Desk, of_type, offers, one_queue_center


def staffed_then_idle(desk: Desk, agents: list[str], gap: float = 10.0) -> None:
    """Log agents in and make them ready one after another, `gap` seconds apart."""
    for agent in agents:
        desk.do(Login(agent=agent), after=gap)
        desk.do(Ready(agent=agent))


def test_longest_idle_agent_gets_the_call() -> None:
    desk = Desk(one_queue_center(agents=3, strategy="longest-idle"))
    staffed_then_idle(desk, ["a2", "a3", "a1"])
    assert offers(desk.arrive("x", after=5)) == [("x", "a2")]
    assert offers(desk.arrive("y")) == [("y", "a3")]


def test_longest_idle_counts_idle_time_from_the_end_of_the_last_wrapup() -> None:
    desk = Desk(one_queue_center(agents=2, strategy="longest-idle"))
    staffed_then_idle(desk, ["a1", "a2"])
    desk.arrive("x")
    desk.serve("x")  # a1 was idle longest, served x, and is idle again only now
    assert offers(desk.arrive("y", after=1)) == [("y", "a2")]


def test_fewest_handled_agent_gets_the_call() -> None:
    desk = Desk(one_queue_center(agents=2, strategy="fewest-handled"))
    staffed_then_idle(desk, ["a1"])
    for index in range(2):
        desk.arrive(f"warmup{index}")
        desk.serve(f"warmup{index}")
    staffed_then_idle(desk, ["a2"])
    desk.arrive("one")
    assert desk.agent_of("one") == "a2"  # a2 has handled none
    desk.serve("one")
    desk.arrive("two", after=100)
    assert desk.agent_of("two") == "a2"  # 1 against 2, though a1 has been idle longer


def test_best_skill_level_agent_gets_the_call() -> None:
    config = CenterConfig(
        queues=[Queue(name="tax", skills=["tax"], strategy="best-skill-level")],
        agents=[Agent(name="junior", skills={"tax": 2}), Agent(name="expert", skills={"tax": 5}), Agent(name="mid", skills={"tax": 3})],
    )
    desk = Desk(config)
    staffed_then_idle(desk, ["junior", "mid", "expert"])
    assert offers(desk.arrive("x", queue="tax")) == [("x", "expert")]
    assert offers(desk.arrive("y", queue="tax")) == [("y", "mid")]
    assert offers(desk.arrive("z", queue="tax")) == [("z", "junior")]


def test_round_robin_offers_in_turn() -> None:
    desk = Desk(one_queue_center(agents=3, strategy="round-robin", wrapup_seconds=0))
    staffed_then_idle(desk, ["a1", "a2", "a3"])
    served = []
    for index in range(6):
        desk.arrive(f"c{index}", after=1)
        served.append(desk.serve(f"c{index}", talk=5, wrap=1))
    assert served == ["a1", "a2", "a3", "a1", "a2", "a3"]


def test_agent_serving_several_queues_gets_the_longest_waiting_caller_across_them() -> None:
    config = CenterConfig(
        queues=[Queue(name="transport"), Queue(name="welfare"), Queue(name="tax")],
        agents=[Agent(name="a1")],
    )
    desk = Desk(config)
    desk.arrive("tax", queue="tax")
    desk.arrive("welfare", queue="welfare", after=5)
    desk.arrive("transport", queue="transport", after=5)
    desk.arrive("tax-again", queue="tax", after=5)
    desk.arrive("welfare-same-instant", queue="welfare")  # a tie: arrival order decides
    desk.ready("a1")
    served = []
    while (call := desk.offer_of("a1")) is not None:
        served.append(call)
        desk.serve(call, wrap=1)
    assert served == ["tax", "welfare", "transport", "tax-again", "welfare-same-instant"]


def test_agent_serving_several_queues_weighs_waits_by_priority() -> None:
    config = CenterConfig(queues=[Queue(name="general"), Queue(name="urgent")], agents=[Agent(name="a1")], priority_weight_seconds=60)
    desk = Desk(config)
    desk.arrive("normal", queue="general")
    desk.arrive("priority", queue="urgent", priority=2, after=100)  # counts as 120 s earlier
    assert offers(desk.ready("a1")) == [("priority", "a1")]


def test_vulnerable_caller_is_served_first() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("x")
    desk.arrive("y", after=10)
    desk.arrive("elder", attributes={"elderly": True}, after=10)
    assert desk.center.position("elder") == 1
    assert offers(desk.ready("a1")) == [("elder", "a1")]


def test_priority_ageing_a_caller_waiting_longer_than_priority_weight_beats_a_new_priority_caller() -> None:
    # priority 5 x 60 s: a vulnerable caller counts as 5 minutes earlier, no more.
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("patient")
    desk.arrive("vulnerable", attributes={"vulnerable": True}, after=301)
    assert [desk.center.position(call) for call in ("patient", "vulnerable")] == [1, 2]
    assert offers(desk.ready("a1")) == [("patient", "a1")]


def test_priority_caller_arriving_within_the_priority_weight_goes_first() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("patient")
    desk.arrive("vulnerable", attributes={"vulnerable": True}, after=299)
    assert offers(desk.ready("a1")) == [("vulnerable", "a1")]


def test_callers_of_one_queue_and_priority_are_offered_in_arrival_order() -> None:
    desk = Desk(one_queue_center(agents=1, wrapup_seconds=0))
    for index in range(5):
        desk.arrive(f"c{index}", after=1)
    desk.ready("a1")
    served = []
    for _ in range(5):
        call = desk.offer_of("a1")
        assert call is not None
        desk.serve(call, talk=10, wrap=1)
        served.append(call)
    assert served == [f"c{index}" for index in range(5)]


def relaxation_center() -> CenterConfig:
    return CenterConfig(
        queues=[Queue(name="tax", skills=["tax"], min_level=4, relaxation=[RelaxationStep(after=60, min_level=2)])],
        agents=[Agent(name="expert", skills={"tax": 5}), Agent(name="novice", skills={"tax": 2})],
    )


def test_skill_relaxation_lets_a_lower_level_agent_take_a_caller_after_the_wait() -> None:
    desk = Desk(relaxation_center())
    desk.ready("novice")
    assert offers(desk.arrive("x", queue="tax")) == []
    assert desk.center.next_deadline() == desk.now + 60
    assert offers(desk.wait(59)) == []
    assert offers(desk.wait(1)) == [("x", "novice")]


def test_skill_relaxation_keeps_the_callers_place() -> None:
    desk = Desk(relaxation_center())
    desk.arrive("first", queue="tax")
    desk.arrive("second", queue="tax", after=30)
    desk.ready("novice")
    assert [event.call for event in of_type(desk.wait(30), CallOffered)] == ["first"]
    assert desk.center.position("second") == 1
    desk.ready("expert")
    assert desk.offer_of("expert") == "second"


def test_agent_without_the_queue_skill_is_never_offered_its_callers() -> None:
    config = CenterConfig(queues=[Queue(name="tax", skills=["tax"])], agents=[Agent(name="other", skills={"water": 5})])
    desk = Desk(config)
    desk.ready("other")
    assert offers(desk.arrive("x", queue="tax")) == []
    assert offers(desk.wait(3600)) == []


@pytest.mark.parametrize("strategy", ["longest-idle", "fewest-handled", "best-skill-level", "round-robin"])
def test_every_strategy_prefers_an_eligible_agent_over_waiting(strategy: str) -> None:
    desk = Desk(one_queue_center(agents=3, strategy=strategy))
    staffed_then_idle(desk, ["a1", "a2", "a3"])
    for index in range(3):
        desk.arrive(f"c{index}")
    assert sorted(desk.agent_of(f"c{index}") for index in range(3)) == ["a1", "a2", "a3"]


def test_caller_goes_to_another_free_agent_when_the_first_choice_takes_someone_else() -> None:
    config = CenterConfig(
        queues=[Queue(name="transport"), Queue(name="tax", skills=["tax"])],
        agents=[Agent(name="both", skills={"tax": 3}), Agent(name="transport-only")],
    )
    desk = Desk(config)
    desk.ready("both")  # idle the longest from here on
    desk.arrive("transport-caller", queue="transport", after=1)
    assert desk.offer_of("both") == "transport-caller"
    desk.arrive("tax-caller", queue="tax", priority=5, after=1)  # waits: only "both" knows tax
    desk.ready("transport-only")
    # The transport caller asks for a call-back while ringing: back in line, and "both" is
    # free again. The queue's first choice, "both", takes the tax caller (priority 5); the
    # transport caller must then go to the other free agent, not wait beside them.
    desk.do(RequestCallback(call="transport-caller"), after=1)
    assert desk.offer_of("both") == "tax-caller"
    assert desk.offer_of("transport-only") == "transport-caller"
