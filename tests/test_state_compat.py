"""A snapshot written before the KPI, hold and call-back fields existed still restores: the
new fields take their defaults and the center goes on (old logs replay the same way, their
commands being unchanged)."""

from __future__ import annotations

from typing import Any

import msgspec

from acd.core import Center, Rejection
from acd.core.commands import Hangup, Tick, WrapUp
from tests.helpers.core_harness import Desk, one_queue_center

NEW_FIELDS = {
    "counters": {"after_hours", "left_unanswered", "callbacks_waiting", "callbacks_after_hours", "callbacks_promised",
                 "callbacks_due", "callbacks_attempted", "callbacks_reached", "callback_delay_seconds", "not_recorded",
                 "first_contacts", "first_resolved", "hold_seconds", "channel_handled", "channel_handle_seconds",
                 "callbacks_expired"},
    "interaction": {"callback_source", "requested_at", "after_hours", "attempts", "sealed_for", "legs"},
    "held": {"callback", "first", "hold_since", "hold_seconds"},
    "agent_day": {"reasons", "counters"},
    "state": {"queue_updates"},
    "config": {"callback_attempts", "callback_retry_seconds", "callback_calendar", "queue_update_seconds"},
}


def _strip(counters: dict[str, Any]) -> None:
    for name in NEW_FIELDS["counters"]:
        counters.pop(name, None)


def old_shape(snapshot: bytes) -> bytes:
    state: dict[str, Any] = msgspec.msgpack.decode(snapshot)
    for name in NEW_FIELDS["state"]:
        state.pop(name)
    for name in NEW_FIELDS["config"]:
        state["config"].pop(name)
    for call in state["interactions"].values():
        for name in NEW_FIELDS["interaction"]:
            call.pop(name)
    for agent in state["agents"].values():
        for held in agent["held"].values():
            for name in NEW_FIELDS["held"]:
                held.pop(name)
    for day in state["stats"].values():
        for queue_day in [day["center"], *day["queues"].values()]:
            _strip(queue_day["total"])
            for interval in queue_day["intervals"].values():
                _strip(interval)
        for agent_day in day["agents"].values():
            for name in NEW_FIELDS["agent_day"]:
                agent_day.pop(name)
    return msgspec.msgpack.encode(state)


def test_a_snapshot_of_the_former_shape_restores_and_goes_on() -> None:
    desk = Desk(one_queue_center(agents=2))
    desk.ready("a1", "a2")
    desk.arrive("x")
    desk.answer("x")
    desk.arrive("y")
    desk.answer("y")
    desk.hangup("x", after=30)
    desk.wrapup("x", disposition="callback", after=5, callback_at=desk.now + 600)
    old = old_shape(desk.center.snapshot())
    assert b"queue_updates" not in old and b"legs" not in old
    restored = Center.restore(old)
    for command, after in ((Hangup(call="y"), 10.0), (WrapUp(call="y", agent="a2", disposition="resolved"), 5.0), (Tick(), 590.0)):
        desk.now += after
        assert not isinstance(restored.apply(command, desk.now), Rejection), command
    restored.check_invariants()
    assert restored.state.interactions["y"].disposition == "resolved"
    assert restored.state.interactions["x:cb1"].state.value == "offered"  # the promised call-back came due
    day = next(iter(restored.state.stats.values()))
    assert day.center.total.handled == 2 and day.center.total.channel_handled == {"voice": 1}
