"""The center's configuration as data: the Configure command and its validation."""

from __future__ import annotations

import pytest

from acd.core import Center, CenterConfig, ConfigError
from acd.core.commands import Abandon, Configure, Login, Logout, Transfer
from acd.core.config import Abuse, Agent, Calendar, Queue, RelaxationStep
from acd.core.events import ConfigApplied
from acd.core.rejections import Code
from tests.helpers.core_harness import Desk, offers, one_queue_center, only


def test_configure_applies_the_center_and_reports_its_size() -> None:
    desk = Desk(CenterConfig())
    applied = only(desk.do(Configure(center=one_queue_center(agents=3), actor="ops")), ConfigApplied)
    assert (applied.version, applied.queues, applied.agents, applied.actor) == (2, 1, 3, "ops")
    assert desk.center.queue("q") is not None
    assert sorted(desk.center.state.agents) == ["a1", "a2", "a3"]


def test_center_built_from_a_config_applies_it_at_once() -> None:
    center = Center(one_queue_center(agents=2))
    assert center.state.config_version == 1
    assert sorted(center.state.agents) == ["a1", "a2"]


def test_center_built_from_an_invalid_config_raises_naming_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        Center(CenterConfig(queues=[Queue(name="q", calendar="missing")]))
    assert raised.value.key == "queues[0].calendar"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (CenterConfig(time_zone="Mars/Olympus"), "center.time_zone"),
        (CenterConfig(queues=[Queue(name="q"), Queue(name="q")]), "queues[1].name"),
        (CenterConfig(agents=[Agent(name="a"), Agent(name="a")]), "agents[1].name"),
        (CenterConfig(queues=[Queue(name="q", calendar="nope")]), "queues[0].calendar"),
        (CenterConfig(queues=[Queue(name="q", max_wait=60, overflow="nope")]), "queues[0].overflow"),
        (CenterConfig(queues=[Queue(name="q", max_wait=60, overflow="q")]), "queues[0].overflow"),
        (CenterConfig(queues=[Queue(name="q", max_length=5)]), "queues[0].overflow"),
        (CenterConfig(queues=[Queue(name="q", channels=[])]), "queues[0].channels"),
        (
            CenterConfig(queues=[Queue(name="q", min_level=3, relaxation=[RelaxationStep(after=60, min_level=2), RelaxationStep(after=30, min_level=1)])]),
            "queues[0].relaxation[1].after",
        ),
        (CenterConfig(queues=[Queue(name="q", min_level=2, relaxation=[RelaxationStep(after=60, min_level=2)])]), "queues[0].relaxation[0].min_level"),
        (CenterConfig(abuse=Abuse(route_to="nope")), "center.abuse.route_to"),
        (CenterConfig(calendars=[Calendar(name="c", time_zone="Nowhere/City")]), "calendars[0].time_zone"),
        (CenterConfig(calendars=[Calendar(name="c", hours={"funday": ["09:00-18:00"]})]), "calendars[0].hours.funday"),
        (CenterConfig(calendars=[Calendar(name="c", hours={"mon": ["18:00-09:00"]})]), "calendars[0].hours.mon"),
        (CenterConfig(calendars=[Calendar(name="c", hours={"mon": ["9-18"]})]), "calendars[0].hours.mon"),
        (CenterConfig(calendars=[Calendar(name="c", holidays={"5 May": []})]), "calendars[0].holidays.5 May"),
        (CenterConfig(queues=[Queue(name="q", ring_timeout=0)]), "queues[0].ring_timeout"),
        (CenterConfig(queues=[Queue(name="q", service_level_target=1.5)]), "queues[0].service_level_target"),
        (CenterConfig(short_abandon_seconds=-1), "center.short_abandon_seconds"),
        (CenterConfig(abuse=Abuse(flags=0)), "center.abuse.flags"),
        (CenterConfig(agents=[Agent(name="bad name")]), "agents[0].name"),
    ],
)
def test_invalid_config_is_rejected_naming_the_key(config: CenterConfig, key: str) -> None:
    desk = Desk(one_queue_center())
    rejection = desk.refuse(Configure(center=config), Code.invalid_config)
    assert rejection.field == key
    assert rejection.status == 400


def test_removing_a_logged_in_agent_is_refused() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.ready("a2")
    rejection = desk.refuse(Configure(center=one_queue_center(agents=1)), Code.invalid_config)
    assert rejection.field == "agents"
    assert "a2" in rejection.message
    desk.do(Logout(agent="a2"))
    desk.do(Configure(center=one_queue_center(agents=1)))
    assert list(desk.center.state.agents) == ["a1"]


def test_removing_a_queue_with_waiting_callers_is_refused() -> None:
    config = CenterConfig(queues=[Queue(name="q"), Queue(name="old")])
    desk = Desk(config)
    desk.arrive("x", queue="old")
    assert desk.refuse(Configure(center=CenterConfig(queues=[Queue(name="q")])), Code.invalid_config).field == "queues"
    desk.do(Abandon(call="x"))
    desk.do(Configure(center=CenterConfig(queues=[Queue(name="q")])))


def test_removing_a_queue_whose_call_an_agent_still_wraps_up_is_refused() -> None:
    config = CenterConfig(queues=[Queue(name="q"), Queue(name="old"), Queue(name="district", external=True)], agents=[Agent(name="a1")])
    desk = Desk(config)
    desk.ready("a1")
    desk.arrive("x", queue="old")
    desk.answer("x")
    desk.do(Transfer(call="x", queue="district"))  # the call is gone; a1's wrap-up is not
    smaller = CenterConfig(queues=[Queue(name="q"), Queue(name="district", external=True)], agents=[Agent(name="a1")])
    assert desk.refuse(Configure(center=smaller), Code.invalid_config).field == "queues"
    desk.wrapup("x", "a1", "transferred")
    desk.do(Configure(center=smaller))


def test_adding_an_agent_routes_waiting_callers_to_them_at_once() -> None:
    desk = Desk(one_queue_center(agents=1))
    desk.arrive("x")
    desk.do(Configure(center=one_queue_center(agents=2)))
    assert desk.agent_state("a2") == "logged_out"
    assert offers(desk.ready("a2")) == [("x", "a2")]


def test_giving_an_agent_a_skill_routes_waiting_callers_to_them_at_once() -> None:
    before = CenterConfig(queues=[Queue(name="tax", skills=["tax"])], agents=[Agent(name="a1")])
    after = CenterConfig(queues=[Queue(name="tax", skills=["tax"])], agents=[Agent(name="a1", skills={"tax": 1})])
    desk = Desk(before)
    desk.ready("a1")
    desk.arrive("x", queue="tax")
    assert desk.state_of("x") == "waiting"
    assert offers(desk.do(Configure(center=after))) == [("x", "a1")]


def test_queue_agents_lists_who_serves_each_queue_and_follows_a_reconfiguration() -> None:
    queues = [Queue(name="tax", skills=["tax"]), Queue(name="all"), Queue(name="out", external=True)]
    before = CenterConfig(queues=queues, agents=[Agent(name="a1"), Agent(name="a2", skills={"tax": 2})])
    desk = Desk(before)
    center = desk.center
    assert (center.queue_agents("tax"), center.queue_agents("all"), center.queue_agents("out")) == (("a2",), ("a1", "a2"), ())
    assert center.queue_agents("nope") == ()
    for agent in ("a1", "a2"):
        assert {q for q in ("tax", "all", "out") if agent in center.queue_agents(q)} == set(center.agent_levels(agent))
    desk.do(Configure(center=CenterConfig(queues=queues, agents=[Agent(name="a1", skills={"tax": 1}), Agent(name="a3")])))
    assert (center.queue_agents("tax"), center.queue_agents("all")) == (("a1",), ("a1", "a3"))


def test_reconfiguring_keeps_agents_and_callers_where_they_are() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.ready("a1")
    desk.do(Login(agent="a2"))
    desk.arrive("talking")
    desk.answer("talking")
    for index in range(3):
        desk.arrive(f"w{index}", after=1)
    desk.do(Configure(center=one_queue_center(agents=2, strategy="round-robin", wrapup_seconds=5)))
    assert (desk.agent_state("a1"), desk.agent_state("a2")) == ("busy", "not_ready")
    assert [desk.center.position(f"w{index}") for index in range(3)] == [1, 2, 3]
    desk.hangup("talking")
    assert desk.center.next_deadline() == desk.now + 5  # the new wrap-up time applies


def test_config_built_in_python_reads_back_identically_from_a_snapshot() -> None:
    # Ints where the fields are floats: the core normalises them so that the snapshot's
    # hash equals its restore's (invariant 7).
    center = Center(CenterConfig(short_abandon_seconds=5, queues=[Queue(name="q", ring_timeout=15, wrapup_seconds=60)]))
    assert Center.restore(center.snapshot()).state_hash() == center.state_hash()


def test_a_configuration_checked_again_gets_the_same_outcome_and_types() -> None:
    # The check of a configuration is remembered (a replay applies the same one at each
    # restart); an equal one must come out exactly as a fresh check would: a float field given
    # as an int is still stored as a float, and a value of the wrong type (True == 1.0 in
    # Python) is still refused right after an equal-comparing valid one was checked.
    base = one_queue_center(agents=1)
    queue = base.queues[0]

    def with_ring_timeout(value: object) -> CenterConfig:
        fields = {name: getattr(queue, name) for name in queue.__struct_fields__}
        return CenterConfig(time_zone=base.time_zone, calendars=base.calendars, agents=base.agents,
                            queues=[Queue(**{**fields, "ring_timeout": value})])

    as_float, as_int, as_bool = with_ring_timeout(1.0), with_ring_timeout(1), with_ring_timeout(True)
    assert as_float == as_int == as_bool  # what a cache keyed by equality would confuse
    for first, second in ((as_float, as_int), (as_int, as_float)):
        desk = Desk(base)
        desk.do(Configure(center=first))
        desk.do(Configure(center=second))
        stored = desk.center.config.queues[0].ring_timeout
        assert type(stored) is float and stored == 1.0
    desk = Desk(base)
    desk.do(Configure(center=as_float))
    rejection = desk.refuse(Configure(center=as_bool), Code.invalid_config)
    assert rejection.field == "queues[0].ring_timeout"
