"""Statistics folded into the state: per queue and center, per 15-minute interval and per day.

The core keeps raw counters (`acd.core.state.Counters`); the KPIs a wallboard shows are
ratios of them, computed here the way a reader of the state would:

    ASA  = wait_answered_seconds / answered           (average speed of answer)
    AHT  = (talk_seconds + wrapup_seconds) / handled  (average handling time)
    SL   = answered_within / answered                 (service level)
    FCR  = resolved / dispositions                    (first-contact resolution)
    CSAT = satisfied / surveys (scores 4 and 5)
    occupancy = (offered + busy + wrapup seconds) / seconds logged in
"""

from __future__ import annotations

from acd.core import CenterConfig
from acd.core.commands import Abandon, Login, Logout, Ready, RequestCallback, Survey, Transfer
from acd.core.config import Agent, Queue
from acd.core.state import Counters
from tests.helpers.core_harness import Desk, one_queue_center, seoul


def busy_morning() -> Desk:
    config = CenterConfig(
        queues=[Queue(name="q", service_level_threshold=20, wrapup_seconds=30), Queue(name="other")],
        agents=[Agent(name="a1")],
        short_abandon_seconds=5,
    )
    desk = Desk(config)
    desk.do(Login(agent="a1"))
    desk.do(Ready(agent="a1"), after=100)
    desk.arrive("fast")
    desk.answer("fast", after=5)
    desk.hangup("fast", after=60)
    desk.wrapup("fast", disposition="resolved", after=10)
    desk.do(Survey(call="fast", score=5))
    desk.arrive("slow")
    desk.answer("slow", after=2)
    desk.arrive("short", after=1)
    desk.do(Abandon(call="short"), after=3)  # gave up within 5 s: a short abandon
    desk.arrive("long")
    desk.do(Abandon(call="long"), after=40)
    desk.hangup("slow", after=100)
    desk.wrapup("slow", disposition="unresolved", after=20)
    desk.do(Survey(call="slow", score=2))
    desk.do(Logout(agent="a1"), after=50)
    return desk


def test_center_and_queue_count_offered_answered_and_abandoned_with_short_abandons_apart() -> None:
    desk = busy_morning()
    for counters in (desk.day().center.total, desk.day().queues["q"].total):
        assert (counters.offered, counters.answered, counters.abandoned, counters.short_abandoned) == (4, 2, 2, 1)
        assert counters.answered_within == 2
        assert counters.wait_abandoned_seconds == 43.0  # abandon time: 3 s + 40 s


def test_kpis_follow_from_the_counters() -> None:
    total = busy_morning().day().center.total
    assert total.wait_answered_seconds / total.answered == 3.5  # ASA: (5 + 2) / 2
    assert (total.talk_seconds + total.wrapup_seconds) / total.handled == (60 + 10 + 144 + 20) / 2  # AHT
    assert total.resolved / total.dispositions == 0.5  # FCR
    assert (total.surveys, total.survey_points, total.satisfied) == (2, 7, 1)  # CSAT 50 %, mean 3.5


def test_agent_seconds_by_state_give_occupancy() -> None:
    desk = busy_morning()
    agent = desk.day().agents["a1"]
    assert agent.handled == 2
    assert agent.seconds == {"not_ready": 100.0, "ready": 50.0, "offered": 7.0, "busy": 204.0, "wrapup": 30.0}
    working = agent.seconds["offered"] + agent.seconds["busy"] + agent.seconds["wrapup"]
    assert round(working / sum(agent.seconds.values()), 3) == 0.616


def test_counts_fall_into_the_fifteen_minute_interval_of_arrival() -> None:
    desk = Desk(one_queue_center(agents=1), start=seoul(2024, 3, 4, 9, 0))
    desk.arrive("nine", after=0)
    desk.arrive("nine-fourteen", after=14 * 60 + 59)
    desk.arrive("nine-fifteen", after=1)
    desk.do(Abandon(call="nine"), after=30 * 60)  # abandoned at 09:45, counted at 09:00
    intervals = desk.day().center.intervals
    assert {index: counters.offered for index, counters in intervals.items()} == {36: 2, 37: 1}
    assert intervals[36].abandoned == 1
    assert desk.day().queues["q"].intervals[36].offered == 2


def test_counts_are_kept_per_local_day() -> None:
    desk = Desk(one_queue_center(agents=1), start=seoul(2024, 3, 4, 23, 50))
    desk.arrive("monday")
    desk.arrive("tuesday", after=20 * 60)  # 00:10 in Seoul, still 15:10 UTC on Monday
    assert desk.day(seoul(2024, 3, 4, 12)).center.total.offered == 1
    assert desk.day(seoul(2024, 3, 5, 12)).center.total.offered == 1
    assert list(desk.day(seoul(2024, 3, 5, 12)).center.intervals) == [0]


def test_answered_within_uses_each_queue_threshold_and_the_center_threshold() -> None:
    config = CenterConfig(service_level_threshold=30, queues=[Queue(name="q", service_level_threshold=10)], agents=[Agent(name="a1")])
    desk = Desk(config)
    desk.arrive("x")
    desk.do(Login(agent="a1"))
    desk.do(Ready(agent="a1"), after=12)
    desk.answer("x", after=3)  # waited 15 s
    assert desk.day().queues["q"].total.answered_within == 0
    assert desk.day().center.total.answered_within == 1


def test_transfers_overflows_and_callbacks_are_counted() -> None:
    config = CenterConfig(
        queues=[Queue(name="q", max_wait=60, overflow="spare"), Queue(name="spare"), Queue(name="district", external=True)],
        agents=[Agent(name="a1")],
    )
    desk = Desk(config)
    desk.arrive("overflows")
    desk.wait(60)
    desk.arrive("out")
    desk.do(Transfer(call="out", queue="district"))
    desk.arrive("asks", queue="spare")
    desk.do(RequestCallback(call="asks"))
    desk.ready("a1")
    desk.serve("overflows")
    desk.serve("asks")
    day = desk.day()
    assert (day.queues["q"].total.overflows, day.queues["q"].total.transfers_out) == (1, 2)
    assert (day.queues["spare"].total.transfers_in, day.queues["spare"].total.offered) == (1, 2)
    assert (day.queues["spare"].total.callbacks_requested, day.queues["spare"].total.callbacks_completed) == (1, 1)
    assert day.center.total.transfers_out == 1  # left the center: counted once, as its outcome
    assert day.center.total.callbacks_completed == 1


def test_every_interaction_is_counted_once_in_one_outcome() -> None:
    desk = busy_morning()
    desk.arrive("transferred-after-answer")
    desk.ready("a1")
    desk.answer("transferred-after-answer")
    desk.do(Transfer(call="transferred-after-answer", queue="other"))
    desk.do(Abandon(call="transferred-after-answer"))  # answered first: counted as answered
    total: Counters = desk.day().center.total
    assert total.offered == 5
    assert total.offered == total.answered + total.abandoned + total.closed + total.transfers_out
    assert (total.answered, total.abandoned) == (3, 2)
    assert desk.day().queues["other"].total.abandoned == 1  # the queue still sees its abandon


def test_closed_callers_are_counted_as_closed() -> None:
    from acd.core.config import Calendar

    config = CenterConfig(calendars=[Calendar(name="never")], queues=[Queue(name="q", calendar="never")])
    desk = Desk(config)
    desk.arrive("x")
    assert (desk.day().center.total.offered, desk.day().center.total.closed) == (1, 1)
