"""Versioned semantics: every record is applied with the rules of the core version active at that
point of the log (acd.core.versions). Version 2 is the test-only next version: a
`longest-idle` queue offers to the free agent who handled the fewest interactions."""

from __future__ import annotations

import msgspec
import pytest

from acd.core import Center, Rejection, commands, events, versions
from acd.core.rejections import Code
from tests.helpers.core_harness import Desk, of_type, offers, one_queue_center

from .test_state_compat import old_shape


@pytest.fixture
def next_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")


@pytest.fixture
def shipped_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(versions.NEXT_CORE_ENV, raising=False)


def busy_agent_idle_longest(desk: Desk, call: str) -> None:
    """a1 serves `call` (one more handled), then a2 comes back from a break: a1 is the agent idle
    longest, a2 the one who handled fewer. The next caller tells which rule is in force."""
    desk.do(commands.NotReady(agent="a2"))
    desk.arrive(call, after=1)
    assert desk.agent_of(call) == "a1"
    desk.serve(call, talk=30, wrap=5)
    desk.do(commands.Ready(agent="a2"), after=1)
    assert desk.agent("a1").handled > desk.agent("a2").handled
    assert desk.agent("a1").available_since < desk.agent("a2").available_since


def two_agent_desk() -> Desk:
    desk = Desk(one_queue_center(agents=2))  # queue q: strategy longest-idle (the default)
    desk.ready("a1", "a2")
    return desk


def test_the_shipped_binary_supports_version_1_only_and_the_switch_adds_the_next(shipped_core: None) -> None:
    assert versions.supported_core_versions() == (1, 1)
    assert versions.supported_core_versions({versions.NEXT_CORE_ENV: "1"}) == (1, 2)
    assert versions.supported_core_versions({versions.NEXT_CORE_ENV: "0"}) == (1, 1)
    assert Center().state.core_version == 1


def test_the_binary_version_is_the_packages() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert versions.RELEASE == project["project"]["version"]


def test_replay_applies_the_old_rule_before_the_switch_and_the_new_one_after(next_core: None) -> None:
    desk = two_agent_desk()
    busy_agent_idle_longest(desk, "warm1")
    desk.arrive("before", after=1)
    assert desk.agent_of("before") == "a1"  # version 1: the longest idle
    desk.serve("before", talk=30, wrap=5)
    produced = desk.do(commands.ActivateCoreVersion(version=2, actor="test"), after=1)
    assert desk.center.state.core_version == 2
    assert [(event.action, event.detail) for event in of_type(produced, events.Audited)] == [("core_version.activated", "1 -> 2")]
    busy_agent_idle_longest(desk, "warm2")
    desk.arrive("after", after=1)
    assert desk.agent_of("after") == "a2"  # version 2: the fewest handled

    # A fresh center replaying the log offers the same calls to the same agents: the old rule
    # up to the record, the new one after it, and ends in the same state.
    replayed = Center()
    replayed_events: list[events.Event] = []
    for command, at in desk.log:
        result = replayed.apply(command, at)
        assert not isinstance(result, Rejection), result
        replayed_events += result
    replayed.check_invariants()
    assert offers(replayed_events) == offers(desk.events)
    assert ("before", "a1") in offers(replayed_events) and ("after", "a2") in offers(replayed_events)
    assert replayed.state_hash() == desk.center.state_hash()

    # The same log without the record keeps version 1's rule throughout: the gate decides.
    without = Center()
    without_events: list[events.Event] = []
    for command, at in desk.log:
        if isinstance(command, commands.ActivateCoreVersion):
            continue
        result = without.apply(command, at)
        assert not isinstance(result, Rejection), result
        without_events += result
    assert ("after", "a1") in offers(without_events)


def test_a_snapshot_keeps_the_active_version_and_its_rule(next_core: None) -> None:
    desk = two_agent_desk()
    desk.do(commands.ActivateCoreVersion(version=2), after=1)
    busy_agent_idle_longest(desk, "warm")
    restored = Center.restore(desk.center.snapshot())
    assert restored.state.core_version == 2
    assert restored.state_hash() == desk.center.state_hash()
    events = restored.apply(commands.Arrive(id="next", queue="q", caller="01012345678"), desk.now + 1)
    assert not isinstance(events, Rejection)
    assert offers(events) == [("next", "a2")]
    desk.arrive("next", caller="01012345678", after=1)
    assert restored.state_hash() == desk.center.state_hash()


def test_an_old_snapshot_without_the_field_restores_as_version_1(shipped_core: None) -> None:
    desk = two_agent_desk()
    busy_agent_idle_longest(desk, "warm")
    state = msgspec.msgpack.decode(old_shape(desk.center.snapshot()))
    del state["core_version"]
    old = msgspec.msgpack.encode(state)
    assert b"core_version" not in old
    restored = Center.restore(old)
    assert restored.state.core_version == 1
    events = restored.apply(commands.Arrive(id="next", queue="q", caller="01012345678"), desk.now + 1)
    assert not isinstance(events, Rejection)
    assert offers(events) == [("next", "a1")]


def test_a_lower_version_is_refused_and_the_same_one_again_changes_nothing(next_core: None) -> None:
    desk = two_agent_desk()
    desk.do(commands.ActivateCoreVersion(version=2), after=1)
    before = desk.center.state_hash()
    assert desk.do(commands.ActivateCoreVersion(version=2)) == []
    assert desk.center.state_hash() == before
    refusal = desk.refuse(commands.ActivateCoreVersion(version=1), Code.core_version_downgrade)
    assert refusal.field == "version"
    assert desk.center.state.core_version == 2


def test_a_version_the_binary_does_not_support_raises_on_the_record_and_on_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    desk = two_agent_desk()
    desk.do(commands.ActivateCoreVersion(version=2), after=1)
    snapshot = desk.center.snapshot()
    monkeypatch.delenv(versions.NEXT_CORE_ENV)
    with pytest.raises(versions.CoreVersionUnsupported) as raised:
        Center.restore(snapshot)
    assert str(raised.value) == "the store's active core version 2 is newer than this binary supports (1..1): upgrade the binary"
    assert (raised.value.version, raised.value.supported) == (2, (1, 1))
    fresh = Center(one_queue_center(agents=1))
    with pytest.raises(versions.CoreVersionUnsupported) as raised:
        fresh.apply(commands.ActivateCoreVersion(version=2), desk.now)
    assert "core version 2 is newer than this binary supports (1..1)" in str(raised.value)
    assert fresh.state.core_version == 1
    # Version 3 exists in no binary, even with the switch.
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    with pytest.raises(versions.CoreVersionUnsupported, match=r"3 is newer than this binary supports \(1\.\.2\)"):
        fresh.apply(commands.ActivateCoreVersion(version=3), desk.now)


def test_the_command_round_trips_through_the_log_and_its_bounds_are_checked() -> None:
    command = commands.ActivateCoreVersion(version=2, actor="api:ops")
    assert commands.decode_command(commands.validate(command)) == command
    with pytest.raises(msgspec.ValidationError):
        commands.validate(commands.ActivateCoreVersion(version=0))


def test_the_planted_bug_needs_both_switches_and_removes_the_gate_only_where_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # ACD_TEST_NO_CORE_GATE=1 (test only) takes effect only in a binary that supports version 2.
    assert versions.gate_removed({versions.NO_GATE_ENV: "1", versions.NEXT_CORE_ENV: "1"})
    assert not versions.gate_removed({versions.NO_GATE_ENV: "1"})
    assert not versions.gate_removed({versions.NEXT_CORE_ENV: "1"})
    assert not versions.gate_removed({versions.NO_GATE_ENV: "0", versions.NEXT_CORE_ENV: "1"})
    assert not versions._GATE_REMOVED  # never in the test process itself
    assert versions.routing_strategy(1, "longest-idle") == "longest-idle"
    monkeypatch.setattr(versions, "_GATE_REMOVED", True)
    assert versions.routing_strategy(1, "longest-idle") == "fewest-handled"  # the gate is gone
    assert versions.routing_strategy(1, "best-skill-level") == "best-skill-level"
