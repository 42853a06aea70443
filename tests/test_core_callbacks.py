"""Call-backs, overflow and opening hours."""

from __future__ import annotations

from acd.core import CenterConfig
from acd.core.commands import NotReady, Ready, RequestCallback, Transfer, WrapUp
from acd.core.config import Agent, Calendar, Queue
from acd.core.events import (
    CallbackRequested,
    CallClosed,
    CallOffered,
    CallQueued,
    CallScheduled,
    CallTransferred,
    OfferWithdrawn,
)
from acd.core.rejections import Code
from tests.helpers.core_harness import (
    MONDAY_9AM,
    Desk,
    of_type,
    offers,
    one_queue_center,
    only,
    seoul,
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def office_hours(closed_action: str = "reject", **options: object) -> Calendar:
    """Busan 120's hours (docs/domain.md): weekdays 08:30-18:30, in Seoul time by default."""
    return Calendar(name="office", hours={day: ["08:30-18:30"] for day in WEEKDAYS}, closed_action=closed_action, **options)  # type: ignore[arg-type]


def office_center(closed_action: str = "reject", agents: int = 2, **calendar_options: object) -> CenterConfig:
    return CenterConfig(
        calendars=[office_hours(closed_action, **calendar_options)],
        queues=[Queue(name="q", calendar="office")],
        agents=[Agent(name=f"a{index}") for index in range(1, agents + 1)],
        callback_preferred_seconds=600,
    )


# -- call-backs requested while waiting ---------------------------------------------------

def test_waiting_caller_who_asks_for_a_callback_keeps_the_place() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("first")
    desk.arrive("asks", after=10)
    desk.arrive("last", after=10)
    requested = only(desk.do(RequestCallback(call="asks"), after=5), CallbackRequested)
    assert (requested.call, requested.merged_into) == ("asks", None)
    assert desk.state_of("asks") == "waiting"
    assert [desk.center.position(call) for call in ("first", "asks", "last")] == [1, 2, 3]
    desk.ready("a1")
    desk.serve("first")
    offered = of_type(desk.events, CallOffered)[-1]
    assert (offered.call, offered.callback) == ("asks", True)


def test_callback_request_while_ringing_withdraws_the_offer_and_keeps_the_place() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    events = desk.do(RequestCallback(call="x"))
    assert only(events, OfferWithdrawn).reason == "callback"
    offered = only(events, CallOffered)  # the agent is free, and the task is first in line
    assert (offered.call, offered.callback) == ("x", True)


def test_second_callback_request_of_the_same_caller_for_the_same_queue_merges_into_the_first() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("first", caller="01011112222")
    desk.do(RequestCallback(call="first"))
    desk.arrive("again", caller="01011112222", after=60)
    merged = only(desk.do(RequestCallback(call="again")), CallbackRequested)
    assert merged.merged_into == "first"
    assert desk.state_of("again") == "closed"
    assert desk.call("again").reason == "merged"
    assert desk.center.waiting_count("q") == 1
    assert desk.do(RequestCallback(call="again")) == []  # a repeat of a merge took effect


def test_callback_request_of_another_caller_does_not_merge() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("one", caller="01011112222")
    desk.do(RequestCallback(call="one"))
    desk.arrive("two", caller="01033334444")
    assert only(desk.do(RequestCallback(call="two")), CallbackRequested).merged_into is None
    assert desk.center.waiting_count("q") == 2


def test_callback_request_needs_a_waiting_caller() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    # `refuse` checks the code and an unchanged state; the message says why.
    assert "only a waiting caller asks for a call-back" in desk.refuse(RequestCallback(call="x"), Code.call_not_waiting).message
    desk.hangup("x")
    desk.wrapup("x")
    assert "'x' is completed" in desk.refuse(RequestCallback(call="x"), Code.call_finished).message


# -- call-backs promised at wrap-up --------------------------------------------------------

def promise_callback(desk: Desk, call: str, in_seconds: float) -> CallScheduled:
    desk.arrive(call)
    agent = desk.agent_of(call)
    desk.answer(call, agent)
    desk.hangup(call, after=60)
    events = desk.wrapup(call, agent, "callback", callback_at=desk.now + in_seconds)
    return only(events, CallScheduled)


def test_wrapup_with_a_callback_disposition_schedules_a_callback_for_that_agent() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.ready("a1")
    scheduled = promise_callback(desk, "x", 3600)
    assert (scheduled.call, scheduled.queue, scheduled.agent, scheduled.due_at) == ("x:cb1", "q", "a1", desk.now + 3600)
    assert desk.state_of("x:cb1") == "scheduled"
    assert of_type(desk.wait(3599), CallOffered) == []
    events = desk.wait(1)
    offered = only(events, CallOffered)
    assert (offered.call, offered.agent, offered.callback) == ("x:cb1", "a1", True)


def test_promised_callback_waits_for_its_agent_then_goes_to_anyone() -> None:
    config = one_queue_center(agents=2)
    desk = Desk(CenterConfig(queues=config.queues, agents=config.agents, callback_preferred_seconds=600))
    desk.ready("a1")
    promise_callback(desk, "x", 60)
    desk.do(NotReady(agent="a1", reason="meeting"))
    desk.ready("a2")
    assert offers(desk.wait(60)) == []  # due, but kept for a1 for ten minutes
    assert desk.state_of("x:cb1") == "waiting"
    assert offers(desk.wait(599)) == []
    assert offers(desk.wait(1)) == [("x:cb1", "a2")]


def test_promised_callback_takes_its_place_in_line_when_it_falls_due() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    promise_callback(desk, "x", 300)
    desk.arrive("talking")
    desk.answer("talking")
    desk.arrive("before-due", after=10)
    desk.wait(290)  # the call-back falls due while a1 talks
    desk.arrive("after-due", after=10)
    desk.hangup("talking")
    desk.wrapup("talking")
    served = []
    while (call := desk.offer_of("a1")) is not None:
        desk.serve(call)
        served.append(call)
    assert served == ["before-due", "x:cb1", "after-due"]


def test_wrapup_with_a_callback_disposition_needs_a_time() -> None:
    desk = Desk(one_queue_center())
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.hangup("x")
    rejection = desk.refuse(WrapUp(call="x", agent="a1", disposition="callback"), Code.callback_time_missing)
    assert rejection.field == "callback_at"


def test_promised_callback_due_while_closed_waits_for_the_opening() -> None:
    desk = Desk(office_center())
    desk.ready("a1")
    evening = seoul(2024, 3, 4, 20, 0)
    scheduled = promise_callback(desk, "x", evening - desk.now - 60)
    assert scheduled.due_at == evening
    rescheduled = only(desk.wait_until(evening), CallScheduled)
    assert rescheduled.due_at == seoul(2024, 3, 5, 8, 30)
    assert desk.state_of("x:cb1") == "scheduled"
    desk.do(Ready(agent="a1"))
    offered = only(desk.wait_until(seoul(2024, 3, 5, 8, 30)), CallOffered)
    assert (offered.call, offered.agent) == ("x:cb1", "a1")


def test_promised_callback_merges_into_a_pending_request_of_the_same_caller() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.arrive("waits", caller="01077778888")
    desk.do(RequestCallback(call="waits"))
    desk.ready("a1")
    desk.arrive("talks", caller="01077778888")  # behind "waits", which a1 gets first
    desk.answer("waits", "a1")
    desk.ready("a2")
    desk.answer("talks", "a2")
    desk.arrive("asks-again", caller="01077778888")
    desk.do(RequestCallback(call="asks-again"))
    desk.hangup("talks")
    events = desk.wrapup("talks", "a2", "callback", callback_at=desk.now + 60)
    assert only(events, CallbackRequested).merged_into == "asks-again"
    assert of_type(events, CallScheduled) == []


# -- overflow -------------------------------------------------------------------------------

def overflow_center(**queue_options: object) -> CenterConfig:
    return CenterConfig(
        queues=[Queue(name="q", **queue_options), Queue(name="spare"), Queue(name="district", external=True)],  # type: ignore[arg-type]
        agents=[Agent(name="a1")],
    )


def test_caller_waiting_past_max_wait_overflows_to_the_overflow_queue_keeping_the_place() -> None:
    desk = Desk(overflow_center(max_wait=120, overflow="spare"))
    desk.arrive("older", queue="spare")
    desk.arrive("x", after=10)
    desk.arrive("newer", queue="spare", after=10)
    assert desk.center.next_deadline() == desk.now - 10 + 120
    events = desk.wait(110)
    moved = only(events, CallTransferred)
    assert (moved.call, moved.source, moved.target, moved.overflow) == ("x", "q", "spare", True)
    assert [desk.center.position(call) for call in ("older", "x", "newer")] == [1, 2, 3]


def test_caller_past_max_wait_overflows_out_of_the_center_to_an_external_queue() -> None:
    desk = Desk(overflow_center(max_wait=60, overflow="district"))
    desk.arrive("x")
    moved = only(desk.wait(60), CallTransferred)
    assert (moved.target, moved.external, moved.overflow) == ("district", True, True)
    assert desk.state_of("x") == "transferred"


def test_caller_arriving_at_a_full_queue_overflows() -> None:
    desk = Desk(overflow_center(max_length=2, overflow="spare"))
    desk.arrive("one")
    desk.arrive("two")
    events = desk.arrive("three")
    assert only(events, CallTransferred).target == "spare"
    assert only(events, CallQueued).queue == "spare"
    assert desk.center.waiting_count("q") == 2


def test_caller_arriving_at_a_full_queue_may_overflow_to_a_callback() -> None:
    desk = Desk(overflow_center(max_length=1, overflow="callback"))
    desk.arrive("one")
    events = desk.arrive("two", after=5)
    requested = only(events, CallbackRequested)
    assert requested.call == "two"
    assert desk.call("two").callback
    desk.ready("a1")
    desk.serve("one")
    assert desk.offer_of("a1") == "two"


def test_caller_waiting_past_max_wait_may_overflow_to_a_callback_keeping_the_place() -> None:
    desk = Desk(overflow_center(max_wait=100, overflow="callback"))
    desk.arrive("x")
    desk.arrive("y", after=50)
    assert only(desk.wait(50), CallbackRequested).call == "x"
    assert desk.center.position("x") == 1
    assert desk.center.next_deadline() == desk.now + 50  # y's max wait; x waits no more
    assert only(desk.wait(50), CallbackRequested).call == "y"


def test_answered_caller_does_not_overflow() -> None:
    desk = Desk(overflow_center(max_wait=30, overflow="spare"))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    assert of_type(desk.wait(60), CallTransferred) == []


# -- calendars ------------------------------------------------------------------------------

def test_caller_arriving_while_closed_is_told_the_closed_message() -> None:
    desk = Desk(office_center("reject", closed_message="Open weekdays 08:30-18:30."), start=seoul(2024, 3, 4, 19, 0))
    closed = only(desk.arrive("x"), CallClosed)
    assert (closed.reason, closed.message) == ("closed", "Open weekdays 08:30-18:30.")
    assert desk.state_of("x") == "closed"


def test_caller_arriving_while_closed_may_leave_a_callback_for_the_next_opening() -> None:
    friday_evening = seoul(2024, 3, 8, 19, 0)
    desk = Desk(office_center("callback"), start=friday_evening)
    scheduled = only(desk.arrive("x"), CallScheduled)
    assert scheduled.due_at == seoul(2024, 3, 11, 8, 30)  # Monday: the weekend is closed
    desk.ready("a1")
    events = desk.wait_until(seoul(2024, 3, 11, 8, 30))
    queued = only(events, CallQueued)
    assert (queued.call, queued.callback) == ("x", True)
    assert offers(events) == [("x", "a1")]


def test_calendar_hours_are_read_in_seoul_time_by_default() -> None:
    assert office_hours().time_zone == "Asia/Seoul"
    desk = Desk(office_center(), start=seoul(2024, 3, 4, 8, 29))
    assert of_type(desk.arrive("early"), CallClosed)
    assert of_type(desk.arrive("open", after=60), CallQueued)
    assert of_type(desk.arrive("closing", after=10 * 3600), CallClosed)  # 18:30


def test_calendar_in_another_time_zone() -> None:
    desk = Desk(office_center(time_zone="UTC"), start=seoul(2024, 3, 4, 9, 0))  # 00:00 UTC
    assert of_type(desk.arrive("x"), CallClosed)
    assert of_type(desk.arrive("y", after=9 * 3600), CallQueued)  # 09:00 UTC


def test_holiday_closes_the_center_all_day() -> None:
    desk = Desk(office_center(holidays={"2024-03-04": []}))
    assert desk.now == MONDAY_9AM
    assert of_type(desk.arrive("x"), CallClosed)
    assert of_type(desk.arrive("y", after=86400), CallQueued)


def test_holiday_may_open_shorter_hours() -> None:
    desk = Desk(office_center(holidays={"2024-03-04": ["10:00-12:00"]}))
    assert of_type(desk.arrive("nine"), CallClosed)
    assert of_type(desk.arrive("ten", after=3600), CallQueued)


def test_weekend_hours_differ_from_weekday_hours() -> None:
    gwangju = Calendar(name="office", hours={**{day: ["08:00-22:00"] for day in WEEKDAYS}, "sat": ["09:00-18:00"], "sun": ["09:00-18:00"]})
    config = CenterConfig(calendars=[gwangju], queues=[Queue(name="q", calendar="office")])
    desk = Desk(config, start=seoul(2024, 3, 9, 8, 30))  # Saturday
    assert of_type(desk.arrive("x"), CallClosed)
    assert of_type(desk.arrive("y", after=1800), CallQueued)
    assert of_type(desk.arrive("z", after=9 * 3600), CallClosed)  # 18:00
    assert of_type(desk.arrive("monday-night", after=2 * 86400 + 3 * 3600 + 1800), CallQueued)  # Mon 21:00


def test_callback_promised_after_a_transfer_out_goes_to_the_queue_the_agent_served() -> None:
    config = CenterConfig(queues=[Queue(name="q"), Queue(name="district", external=True)], agents=[Agent(name="a1")])
    desk = Desk(config)
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.do(Transfer(call="x", queue="district"))  # to the district office: x ends here
    scheduled = only(desk.wrapup("x", "a1", "callback", callback_at=desk.now + 60), CallScheduled)
    assert (scheduled.call, scheduled.queue, scheduled.agent) == ("x:cb1", "q", "a1")
    assert offers(desk.wait(60)) == [("x:cb1", "a1")]
