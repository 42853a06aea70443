"""Time in the core: next_deadline(), tick(), EWT and position."""

from __future__ import annotations

from acd.core import Center, CenterConfig, Rejection
from acd.core.commands import Abandon, Answer, Login, NotReady, Reject
from acd.core.config import Agent, Queue
from acd.core.events import CallQueued, CallWrappedUp, OfferWithdrawn
from tests.helpers.core_harness import Desk, offers, one_queue_center, only, seoul


def test_next_deadline_is_the_earliest_timer_and_tick_fires_it_at_its_own_time() -> None:
    desk = Desk(one_queue_center(agents=2, ring_timeout=15, wrapup_seconds=40))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.hangup("x", after=10)  # wrap-up ends at +40
    desk.ready("a2")
    desk.arrive("y", after=30)  # rings at a2 until +15
    ring_end = desk.now + 15
    wrap_end = desk.now + 10
    assert desk.center.next_deadline() == wrap_end
    events = desk.wait(20)  # one late tick fires both, each at its own instant
    assert [(type(event).__name__, event.at) for event in events if isinstance(event, CallWrappedUp | OfferWithdrawn)] == [
        ("CallWrappedUp", wrap_end),
        ("OfferWithdrawn", ring_end),
    ]
    assert only(events, OfferWithdrawn).call == "y"
    # a1 came free while y still rang at a2; when that offer timed out, a1 got y.
    assert offers(events) == [("y", "a1")]
    assert desk.center.next_deadline() == ring_end + 15


def test_tick_before_any_deadline_changes_nothing_but_the_clock() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    assert desk.wait(14) == []
    assert desk.state_of("x") == "offered"


def test_tick_is_never_rejected_and_time_never_runs_backwards() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    events = desk.center.tick(desk.now - 3600)
    assert events == []
    assert desk.center.now == desk.now
    # A command stamped in the past is applied at the machine's current time.
    answered = desk.center.apply(Answer(call="x", agent="a1"), desk.now - 60)
    assert not isinstance(answered, Rejection)
    assert desk.call("x").answered_at == desk.now


def test_command_that_carries_the_clock_past_a_deadline_sees_the_timer_fired_first() -> None:
    desk = Desk(one_queue_center(agents=1, ring_timeout=15))
    desk.ready("a1")
    desk.arrive("x")
    result = desk.center.apply(Answer(call="x", agent="a1"), desk.now + 20)
    assert isinstance(result, Rejection) and result.code == "call_not_offered"
    assert desk.state_of("x") == "waiting"  # the ring timeout fired at +15, before the answer


def test_next_deadline_includes_the_hourly_retention_pass() -> None:
    center = Center(one_queue_center())
    assert center.next_deadline() == 3600.0  # configured at time 0
    center.tick(7200.5)
    assert center.next_deadline() == 10800.0


def test_ended_interactions_and_old_statistics_are_forgotten_after_the_retention_period() -> None:
    config = one_queue_center()
    desk = Desk(CenterConfig(queues=config.queues, agents=config.agents, retention_days=2), start=seoul(2024, 3, 4, 9, 0))
    desk.arrive("x")
    desk.do(Abandon(call="x"))
    desk.wait_until(seoul(2024, 3, 6, 9, 0))
    assert "x" in desk.center.state.interactions
    desk.wait_until(seoul(2024, 3, 6, 10, 0))  # the hourly pass after two days
    assert "x" not in desk.center.state.interactions
    assert "2024-03-04" in desk.center.state.stats  # whole days are kept for two days
    desk.wait_until(seoul(2024, 3, 7, 1, 0))
    assert "2024-03-04" not in desk.center.state.stats


# -- EWT and position ----------------------------------------------------------------------

def test_position_counts_waiting_callers_ahead_by_place_and_priority() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("x")
    desk.arrive("y", after=1)
    desk.arrive("z", after=1, priority=1)  # 60 s of priority: ahead of both
    assert [desk.center.position(call) for call in ("z", "x", "y")] == [1, 2, 3]
    desk.ready("a1")
    assert desk.center.position("z") == 0  # offered: no longer waiting
    assert desk.center.position("nobody") == 0


def test_queued_event_gives_position_and_ewt() -> None:
    config = CenterConfig(queues=[Queue(name="q", aht_seconds=120)], agents=[Agent(name="a1"), Agent(name="a2")])
    desk = Desk(config)
    desk.ready("a1", "a2")
    first = only(desk.arrive("x"), CallQueued)
    assert (first.position, first.ewt) == (1, 0.0)  # two free agents
    only(desk.arrive("y"), CallQueued)
    third = only(desk.arrive("z"), CallQueued)
    # Both agents are ringing: the third caller's EWT is (3 - 0 free) / 2 staffed x 120 s.
    assert (third.position, third.ewt) == (3, 180.0)


def test_ewt_with_nobody_staffed_is_one_aht_per_caller_ahead_and_this_one() -> None:
    center = Center(CenterConfig(queues=[Queue(name="q", aht_seconds=200)]))
    assert [center.ewt("q", position) for position in (1, 2, 3)] == [200.0, 400.0, 600.0]


def test_ewt_subtracts_free_agents_and_divides_by_available_agents() -> None:
    config = CenterConfig(queues=[Queue(name="q", aht_seconds=100)], agents=[Agent(name=f"a{index}") for index in range(1, 5)])
    desk = Desk(config)
    desk.ready("a1", "a2", "a3")
    desk.arrive("busy")  # a3's now: available soon, not free
    # 3 available, 2 free: position p waits (p - 2) / 3 x AHT, never less than nothing.
    assert [desk.center.ewt("q", position) for position in (1, 2, 3, 5)] == [0.0, 0.0, 33.3, 100.0]
    desk.do(Login(agent="a4"))  # logged in, not ready (on a break): not counted
    assert desk.center.ewt("q", 5) == 100.0


def test_ewt_follows_the_moving_average_of_handling_time() -> None:
    desk = Desk(CenterConfig(queues=[Queue(name="q", aht_seconds=180)], agents=[Agent(name="a1")]))
    desk.ready("a1")
    desk.arrive("x")
    desk.serve("x", talk=80, wrap=20)  # handled in 100 s: AHT 180 + 0.1 x (100 - 180) = 172
    desk.do(NotReady(agent="a1"))
    assert desk.center.ewt("q", 1) == 172.0


def test_position_and_ewt_after_a_requeue() -> None:
    desk = Desk(one_queue_center(agents=1, aht_seconds=60))
    desk.arrive("x")
    desk.arrive("y", after=1)
    desk.ready("a1")
    desk.do(Reject(call="x", agent="a1"))  # a1 goes not ready: staffed, not free
    assert [desk.center.position(call) for call in ("x", "y")] == [1, 2]
    assert [desk.center.ewt("q", desk.center.position(call)) for call in ("x", "y")] == [60.0, 120.0]
