"""Hand-computed small cases for every KPI of acd.core.kpis (docs/kpis.md).

Each test drives the real core through a few commands on a clock it controls, works out the
figures by hand in its comments, and compares them with what `acd.core.kpis` computes from
the core's counters. The center's counters and the queue's are both checked where they differ.
"""

from __future__ import annotations

import pytest

from acd.core import CenterConfig, kpis
from acd.core.commands import (
    Abandon,
    Hold,
    Login,
    NotReady,
    Ready,
    RequestCallback,
    Survey,
    Tick,
    Transfer,
    Unhold,
)
from acd.core.config import Agent, Queue
from acd.core.state import Counters
from tests.helpers.core_harness import Desk, chat_agent, of_type, one_queue_center, only


def test_short_abandon_and_the_two_service_level_bases() -> None:
    # Threshold 20 s, short abandons under 5 s. Five callers:
    #   A answered after 10 s (within), B answered after 30 s (late),
    #   C hung up after 3 s (a short abandon), D hung up after 40 s,
    #   E asked for a call-back after 22 s in line (left unanswered).
    # offered basis = answered 2 + abandoned 2 - short 1 + left 1 = 4
    # SL (offered) = 1 / 4 = 0.25; SL (answered) = 1 / 2 = 0.5
    # abandon rate = (2 - 1) / 4 = 0.25; ASA = (10 + 30) / 2 = 20 s
    desk = Desk(one_queue_center(agents=2))
    desk.do(Login(agent="a1"))
    desk.do(Login(agent="a2"))
    start = desk.now
    desk.arrive("A")
    desk.arrive("B")
    desk.arrive("C", after=1)
    desk.arrive("D")
    desk.arrive("E")
    desk.do(Abandon(call="C"), after=3)                        # t = 4: waited 3 s
    desk.do(Ready(agent="a1"), after=start + 10 - desk.now)  # t = 10: A is offered
    desk.answer("A")
    desk.do(RequestCallback(call="E"), after=start + 23 - desk.now)  # waited 22 s
    desk.do(Ready(agent="a2"), after=start + 30 - desk.now)
    desk.answer("B")
    desk.do(Abandon(call="D"), after=start + 41 - desk.now)   # waited 40 s
    for counters in (desk.day().center.total, desk.day().queues["q"].total):
        figures = kpis.kpis(counters)
        assert (figures.offered, figures.answered, figures.answered_within_threshold) == (5, 2, 1)
        assert (figures.abandoned, figures.short_abandoned, figures.left_unanswered) == (2, 1, 1)
        assert kpis.offered_basis(counters) == 4
        assert figures.service_level_offered == 0.25
        assert figures.service_level == 0.5
        assert figures.abandon_rate == 0.25
        assert figures.asa_seconds == 20.0
    center = kpis.kpis(desk.day().center.total)
    assert (center.callbacks_requested, center.callbacks_waiting, center.callbacks_due) == (1, 1, 1)


def test_a_callback_promised_and_completed_is_work_not_a_second_caller() -> None:
    # X is answered at once (wait 0), talks 60 s, wraps up 10 s promising a call-back in an
    # hour. The task comes due, rings at a1, is answered after 5 s, talks 30 s, wraps up 10 s.
    #   callers: offered 1, answered 1, ASA 0 (the task's hour is not a wait)
    #   FCR: X's first contact ended "callback": 0 resolved of 1 first contact = 0.0
    #   call-backs: promised 1, due 1, attempted 1, reached 1, completed 1
    #   delay: request (X's wrap-up) to completion (the task's wrap-up) = 3600 + 5 + 30 + 10 = 3645 s
    #   AHT (voice) = ((60 + 10) + (30 + 10)) / 2 = 55 s over 2 legs
    #   CSAT: X scored 5, the task 3: 1 satisfied of 2 = 0.5, mean 4.0
    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("X")
    desk.answer("X")
    desk.hangup("X", after=60)
    desk.wrapup("X", disposition="callback", after=10, callback_at=desk.now + 10 + 3600)
    desk.do(Survey(call="X", score=5))
    desk.wait(3600)
    assert desk.offer_of("a1") == "X:cb1"
    desk.answer("X:cb1", after=5)
    desk.hangup("X:cb1", after=30)
    desk.wrapup("X:cb1", after=10)
    desk.do(Survey(call="X:cb1", score=3))
    figures = kpis.kpis(desk.day().center.total)
    assert (figures.offered, figures.answered, figures.asa_seconds) == (1, 1, 0.0)
    assert (figures.fcr, figures.first_contacts) == (0.0, 1)
    assert (figures.callbacks_requested, figures.callbacks_promised, figures.callbacks_due) == (1, 1, 1)
    assert (figures.callbacks_attempted, figures.callbacks_reached, figures.callbacks_completed) == (1, 1, 1)
    assert figures.callback_delay_seconds == 3645.0
    assert (figures.handled, figures.aht_seconds) == (2, 55.0)
    assert (figures.csat, figures.survey_mean, figures.surveys) == (0.5, 4.0, 2)
    queue = kpis.kpis(desk.day().queues["q"].total)
    assert (queue.offered, queue.answered, queue.callbacks_reached, queue.callbacks_completed) == (1, 1, 1, 1)


def test_a_transfer_counts_one_caller_two_legs_and_the_first_contact_only() -> None:
    # x is answered by a1 at once, transferred to tax after 60 s; t1 answers 4 s later.
    # a1 wraps up 9 s after the transfer ("transferred"); t1 talks 25 s, wraps up 10 s, "resolved".
    #   center: offered 1, answered 1 (once), ASA 0; legs 2, AHT = ((60 + 9) + (25 + 10)) / 2 = 52 s
    #   FCR: the first contact (a1's leg) was not resolved: 0 / 1
    #   queue tax: offered 1 (transfer in), answered 1, ASA 4 s
    config = CenterConfig(
        queues=[Queue(name="q"), Queue(name="tax", skills=["tax"])],
        agents=[Agent(name="a1"), Agent(name="t1", skills={"tax": 3})],
    )
    desk = Desk(config)
    desk.ready("a1")
    desk.do(Login(agent="t1"))
    desk.arrive("x")
    desk.answer("x", "a1")
    desk.do(Transfer(call="x", queue="tax"), after=60)
    desk.do(Ready(agent="t1"))
    desk.answer("x", "t1", after=4)
    desk.wrapup("x", "a1", "transferred", after=5)
    desk.hangup("x", after=20)  # 25 s after t1 answered
    desk.wrapup("x", "t1", after=10)
    center = kpis.kpis(desk.day().center.total)
    assert (center.offered, center.answered, center.asa_seconds) == (1, 1, 0.0)
    assert (center.handled, center.aht_seconds) == (2, 52.0)
    assert (center.fcr, center.first_contacts) == (0.0, 1)
    tax = kpis.kpis(desk.day().queues["tax"].total)
    assert (tax.offered, tax.transfers_in, tax.answered, tax.asa_seconds) == (1, 1, 1, 4.0)
    first = kpis.kpis(desk.day().queues["q"].total)
    assert (first.transfers_out, first.left_unanswered, first.service_level_offered) == (1, 0, 1.0)


def test_a_wrapup_timeout_is_not_recorded_and_stays_out_of_fcr() -> None:
    # x: the agent never posts a wrap-up; after the queue's 30 s it ends as "not recorded".
    # y: wrapped up "resolved". FCR = 1 resolved / 1 first contact recorded; 1 not recorded.
    desk = Desk(one_queue_center(agents=1, wrapup_seconds=30))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.hangup("x", after=60)
    desk.wait(30)
    assert desk.call("x").disposition == "not_recorded"
    desk.arrive("y")
    desk.answer("y")
    desk.hangup("y", after=60)
    desk.wrapup("y", after=5)
    figures = kpis.kpis(desk.day().center.total)
    assert (figures.fcr, figures.first_contacts, figures.not_recorded) == (1.0, 1, 1)
    # Both legs are work: AHT = ((60 + 30) + (60 + 5)) / 2 = 77.5 s
    assert figures.aht_seconds == 77.5


def test_a_chat_agent_with_three_sessions_has_an_aht_per_channel() -> None:
    # c1 holds three chats at once: 100, 200 and 300 s of conversation, wrapped up at once.
    # v1 takes one voice call: 60 s talk, 10 s wrap-up.
    #   AHT chat = (100 + 200 + 300) / 3 = 200 s (per session, not mixed with voice)
    #   AHT voice = 70 s; the center's aht_seconds is the voice figure
    config = CenterConfig(queues=[Queue(name="q")], agents=[chat_agent("c1", chats=3), Agent(name="v1")])
    desk = Desk(config)
    desk.ready("c1")
    for name in ("m1", "m2", "m3"):
        desk.arrive(name, channel="chat")
        desk.answer(name, "c1")
    desk.hangup("m1", after=100)
    desk.wrapup("m1", "c1")
    desk.hangup("m2", after=100)
    desk.wrapup("m2", "c1")
    desk.hangup("m3", after=100)
    desk.wrapup("m3", "c1")
    desk.ready("v1")
    desk.arrive("v")
    desk.answer("v", "v1")
    desk.hangup("v", after=60)
    desk.wrapup("v", after=10)
    figures = kpis.kpis(desk.day().center.total)
    assert figures.aht_by_channel == {"voice": 70.0, "chat": 200.0}
    assert figures.aht_seconds == 70.0
    assert figures.handled == 4


def test_occupancy_is_working_time_over_available_time() -> None:
    # working = offered 50 + busy 300 + wrap-up 50 = 400; available = ready 100 + 400 = 500
    # breaks (not ready) and logged-out time are outside both: 400 / 500 = 0.8
    seconds = {"ready": 100.0, "offered": 50.0, "busy": 300.0, "wrapup": 50.0, "not_ready": 500.0}
    assert kpis.occupancy(seconds) == 0.8
    assert kpis.occupancy({"not_ready": 10.0}) is None


def test_ratios_over_nothing_are_none_and_bases_are_named() -> None:
    empty = kpis.kpis(Counters())
    assert (empty.service_level, empty.service_level_offered, empty.asa_seconds, empty.fcr, empty.csat) == (None,) * 5
    with pytest.raises(ValueError, match="basis"):
        kpis.service_level(Counters(), "arrived")


def test_after_hours_callers_are_offered_but_not_in_the_offered_basis() -> None:
    from acd.core.config import Calendar

    # The queue is closed; the caller leaves a call-back request (closed_action "callback").
    config = CenterConfig(
        calendars=[Calendar(name="office", hours={"mon": ["18:00-19:00"]}, closed_action="callback")],
        queues=[Queue(name="q", calendar="office")], agents=[Agent(name="a1")],
    )
    desk = Desk(config)
    desk.arrive("late")
    figures = kpis.kpis(desk.day().center.total)
    assert (figures.offered, figures.after_hours, figures.callbacks_after_hours, figures.callbacks_requested) == (1, 1, 1, 1)
    assert figures.service_level_offered is None  # nobody waited in line yet


def test_counters_add_up_over_days_and_queues() -> None:
    one = Counters(offered=2, wait_answered_seconds=1.5, channel_handled={"voice": 1})
    two = Counters(offered=3, wait_answered_seconds=2.0, channel_handled={"voice": 2, "chat": 1})
    total = kpis.summed([one, two])
    assert (total.offered, total.wait_answered_seconds, total.channel_handled) == (5, 3.5, {"voice": 3, "chat": 1})
    assert one.channel_handled == {"voice": 1}  # the parts are left as they were


def test_a_held_call_counts_its_hold_in_aht_and_apart_from_talk() -> None:
    # x: answered at once, 30 s of talk, 45 s on hold, 25 s of talk, 10 s of wrap-up.
    #   hold 45 s; AHT = talk 55 + hold 45 + wrap-up 10 = 110 s; the leg's talk is 55 s
    from acd.api import views
    from acd.core.events import CallResumed

    desk = Desk(one_queue_center(agents=1))
    desk.ready("a1")
    desk.arrive("x")
    desk.answer("x")
    desk.do(Hold(call="x"), after=30)
    desk.do(Hold(call="x"), after=20)  # repeated: on hold already, nothing changes
    resumed = desk.do(Unhold(call="x"), after=25)
    assert [event.hold for event in resumed if isinstance(event, CallResumed)] == [45.0]
    desk.do(Unhold(call="x"))  # repeated: resumed already
    desk.hangup("x", after=25)
    desk.wrapup("x", after=10)
    figures = kpis.kpis(desk.day().center.total)
    assert (figures.hold_seconds, figures.aht_seconds) == (45.0, 110.0)
    (leg,) = views.leg_rows(desk.center)
    assert (leg["talk_seconds"], leg["hold_seconds"], leg["wrapup_seconds"]) == (55.0, 45.0, 10.0)
    assert desk.replayed().state_hash() == desk.center.state_hash()


def test_hold_needs_a_conversation() -> None:
    from acd.core.rejections import Code

    desk = Desk(one_queue_center(agents=1))
    desk.arrive("x")
    desk.refuse(Hold(call="x"), Code.call_not_connected)
    desk.refuse(Hold(call="nobody"), Code.unknown_call)
    desk.ready("a1")
    desk.answer("x")
    desk.do(Hold(call="x"), after=5)
    desk.hangup("x", after=5)  # hanging up on hold ends the hold
    assert desk.center.state.agents["a1"].held["x"].hold_seconds == 5.0
    desk.refuse(Unhold(call="x"), Code.call_finished)


def test_ewt_counts_only_agents_available_now_or_soon_and_updates_are_pushed() -> None:
    # Two agents serve q, both busy; a third caller waits at position 1 with AHT 180 s.
    # Both available: EWT = (1 - 0 free) / 2 * 180 = 90 s. One goes on lunch after the call
    # (not ready): EWT = 1 / 1 * AHT, never the optimistic half of it.
    from acd.core.events import CallQueued, QueueUpdated

    desk = Desk(one_queue_center(agents=3, aht_seconds=180.0, wrapup_seconds=0.0))
    desk.ready("a1", "a2")
    desk.do(Login(agent="a3"))  # logged in, not ready: not available
    desk.arrive("x")
    desk.answer("x")
    desk.arrive("y")
    desk.answer("y")
    events = desk.arrive("z", after=30)
    queued = only(events, CallQueued)
    assert (queued.position, queued.ewt) == (1, 90.0)
    assert [(u.queue, u.waiting, u.available, u.ewt) for u in of_type(events, QueueUpdated)] == [("q", 1, 2, [90.0])]
    events = desk.do(NotReady(agent="a2", reason="lunch"), after=3)  # deferred until after y
    assert of_type(events, QueueUpdated) == []
    desk.hangup("y", after=3)
    events = desk.wrapup("y")  # a2 goes to lunch, 6 s after the last update: not pushed yet
    assert of_type(events, QueueUpdated) == []
    assert desk.agent_state("a2") == "not_ready"
    # y's 36 s moved the queue's AHT average to 180 + 0.1 x (36 - 180) = 165.6 s; one agent left
    assert desk.center.ewt("q", 1) == 165.6  # with a2 counted it would be half that
    events = desk.do(Tick(), after=10)
    assert of_type(events, QueueUpdated) == []  # nothing moved since
    events = desk.do(Abandon(call="z"))
    assert [(u.waiting, u.available) for u in of_type(events, QueueUpdated)] == [(0, 1)]
