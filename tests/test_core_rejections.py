"""Refused commands: named, in Code's precedence order, and leaving the state untouched.

The last test is the exhaustive one: interactions driven into every
CallState and agents into every AgentState, and every command type applied to each. Each
pair gives either a rejection named in `rejections.Code` with the state hash unchanged, or
events after which every invariant the core can see holds.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from acd.core import AgentState, CallState, Center, CenterConfig, Rejection
from acd.core import commands as c
from acd.core.config import Abuse, Agent, Calendar, Capacity, Queue
from acd.core.rejections import Code
from tests.helpers.core_harness import Desk, one_queue_center


def test_refused_command_stamped_later_leaves_even_the_clock_unchanged() -> None:
    desk = Desk(one_queue_center())
    before = desk.center.state_hash()
    result = desk.center.apply(c.Answer(call="nobody", agent="a1"), desk.now + 5)
    assert isinstance(result, Rejection) and result.code == "unknown_call"
    assert desk.center.state_hash() == before
    assert desk.replayed().state_hash() == before


def test_rejection_carries_the_code_its_http_status_and_the_field() -> None:
    desk = Desk(one_queue_center())
    rejection = desk.refuse(c.Arrive(id="x", queue="nowhere", caller="0101"), Code.unknown_queue)
    assert (rejection.code, rejection.status, rejection.field) == ("unknown_queue", 404, "queue")
    assert "nowhere" in rejection.message


def test_codes_are_named_and_carry_http_statuses() -> None:
    assert all(code.name == code.code for code in Code)
    assert {code.status for code in Code} <= {400, 404, 409}


# -- precedence: when several reasons apply, the first in Code wins ------------------------

def precedence_desk() -> Desk:
    config = CenterConfig(
        queues=[Queue(name="q"), Queue(name="voice-only", channels=["voice"])],
        agents=[Agent(name="a1"), Agent(name="a2"), Agent(name="c1", capacity=Capacity(voice=0, chat=2))],
    )
    desk = Desk(config)
    desk.arrive("chat", channel="chat")
    desk.arrive("x")
    return desk


def test_unknown_queue_comes_before_an_id_conflict() -> None:
    desk = precedence_desk()
    assert desk.refuse(c.Arrive(id="x", queue="nowhere", caller="0102"), Code.unknown_queue).field == "queue"


def test_id_conflict_comes_before_a_channel_the_queue_does_not_serve() -> None:
    desk = precedence_desk()
    assert desk.refuse(c.Arrive(id="x", queue="voice-only", caller="0102", channel="sms"), Code.id_conflict).field == "id"


def test_unknown_agent_comes_before_an_unknown_call() -> None:
    desk = precedence_desk()
    assert desk.refuse(c.Answer(call="nobody", agent="nobody"), Code.unknown_agent).field == "agent"
    assert desk.refuse(c.WrapUp(call="nobody", agent="nobody", disposition="resolved"), Code.unknown_agent).field == "agent"


def test_unknown_queue_comes_before_an_unknown_call_in_a_transfer() -> None:
    desk = precedence_desk()
    assert desk.refuse(c.Transfer(call="nobody", queue="nowhere"), Code.unknown_queue).field == "queue"


def test_channel_not_served_comes_before_call_finished_in_a_transfer() -> None:
    desk = precedence_desk()
    desk.do(c.Abandon(call="chat"))
    assert desk.refuse(c.Transfer(call="chat", queue="voice-only"), Code.channel_not_served).field == "queue"


def test_logged_out_agent_comes_before_an_offer_to_someone_else() -> None:
    desk = precedence_desk()
    desk.ready("a2")
    assert desk.offer_of("a2") == "x"
    desk.refuse(c.Answer(call="x", agent="a1"), Code.agent_logged_out)
    desk.refuse(c.Reject(call="x", agent="a1"), Code.agent_logged_out)
    desk.do(c.Login(agent="a1"))
    desk.refuse(c.Answer(call="x", agent="a1"), Code.not_offered_to_agent)


def test_call_finished_comes_before_not_handled_by_agent() -> None:
    desk = precedence_desk()
    desk.do(c.Login(agent="a1"))
    desk.do(c.Abandon(call="x"))
    assert "abandoned" in desk.refuse(c.WrapUp(call="x", agent="a1", disposition="resolved"), Code.call_finished).message


def test_call_not_ended_comes_before_a_missing_callback_time() -> None:
    desk = precedence_desk()
    desk.ready("a1")
    desk.answer("x", "a1")
    assert "still connected" in desk.refuse(c.WrapUp(call="x", agent="a1", disposition="callback"), Code.call_not_ended).message


def test_wrapup_repeated_with_other_values_is_refused() -> None:
    desk = precedence_desk()
    desk.ready("a1")
    desk.answer("x", "a1")
    desk.hangup("x")
    desk.wrapup("x", "a1", "resolved")
    desk.refuse(c.WrapUp(call="x", agent="a1", disposition="unresolved"), Code.already_wrapped_up)
    assert desk.do(c.WrapUp(call="x", agent="a1", disposition="resolved")) == []


def test_commands_on_the_wrong_state_are_named() -> None:
    # `refuse` checks the code and an unchanged state; the messages name the state and the way out.
    desk = precedence_desk()
    desk.ready("a1")
    assert "use abandon" in desk.refuse(c.Hangup(call="x"), Code.call_not_connected).message
    refused = desk.refuse(c.WrapUp(call="x", agent="a1", disposition="resolved"), Code.not_handled_by_agent)
    assert refused.field == "agent" and "holds no interaction 'x'" in refused.message
    desk.answer("x", "a1")
    assert "use hangup" in desk.refuse(c.Abandon(call="x"), Code.call_connected).message
    assert "hang up first" in desk.refuse(c.WrapUp(call="x", agent="a1", disposition="resolved"), Code.call_not_ended).message
    assert desk.refuse(c.Answer(call="chat", agent="c1"), Code.agent_logged_out).field == "agent"
    desk.hangup("x")
    assert "'x' is wrapup" in desk.refuse(c.Transfer(call="x", queue="voice-only"), Code.call_finished).message


# -- every (state, command) pair -----------------------------------------------------------

def matrix_config() -> CenterConfig:
    return CenterConfig(
        calendars=[Calendar(name="never")],
        queues=[
            Queue(name="q", wrapup_seconds=60, ring_timeout=15),
            Queue(name="other"),
            Queue(name="district", external=True),
            Queue(name="closed", calendar="never"),
        ],
        agents=[Agent(name="a1", capacity=Capacity(voice=1, chat=2)), Agent(name="a2")],
        abuse=Abuse(recovery_seconds=600),
    )


X_CALLER = "01012340000"


def drive_call(state: CallState) -> tuple[Desk, str]:
    """A desk with an interaction in `state` (agent a1 serves it where an agent does)."""
    desk = Desk(matrix_config())
    if state is CallState.CLOSED:
        desk.arrive("x", queue="closed", caller=X_CALLER)
        return desk, "x"
    desk.arrive("x", caller=X_CALLER)
    if state is CallState.WAITING:
        return desk, "x"
    if state is CallState.ABANDONED:
        desk.do(c.Abandon(call="x"))
        return desk, "x"
    if state is CallState.TRANSFERRED:
        desk.do(c.Transfer(call="x", queue="district"))
        return desk, "x"
    desk.ready("a1")
    if state is CallState.OFFERED:
        return desk, "x"
    desk.answer("x", "a1")
    if state is CallState.CONNECTED:
        return desk, "x"
    desk.hangup("x")
    if state is CallState.WRAPUP:
        return desk, "x"
    if state is CallState.SCHEDULED:
        desk.wrapup("x", "a1", "callback", callback_at=desk.now + 3600)
        return desk, "x:cb1"
    assert state is CallState.COMPLETED
    desk.wrapup("x", "a1", "resolved")
    return desk, "x"


def drive_agent(state: AgentState) -> tuple[Desk, str]:
    """A desk whose agent a1 is in `state`, with interaction "x" around it."""
    return agent_desk(state), "x"


def agent_desk(state: AgentState) -> Desk:
    desk = Desk(matrix_config())
    if state is AgentState.LOGGED_OUT:
        desk.arrive("x", caller=X_CALLER)
        return desk
    desk.do(c.Login(agent="a1"))
    if state is AgentState.NOT_READY:
        desk.arrive("x", caller=X_CALLER)
        return desk
    desk.do(c.Ready(agent="a1"))
    if state is AgentState.READY:
        desk.arrive("x", queue="district", caller=X_CALLER)
        return desk
    desk.arrive("x", caller=X_CALLER)
    if state is AgentState.OFFERED:
        return desk
    desk.answer("x", "a1")
    if state is AgentState.BUSY:
        return desk
    desk.hangup("x")
    if state is AgentState.WRAPUP:
        return desk
    desk.wrapup("x", "a1", "resolved", abusive=True)
    assert state is AgentState.RECOVERING
    return desk


COMMANDS: dict[str, Callable[[str], c.Command]] = {
    "arrive-new": lambda call: c.Arrive(id="new", queue="q", caller="01012345678"),
    "arrive-same": lambda call: c.Arrive(id="x", queue="q", caller=X_CALLER),
    "arrive-conflict": lambda call: c.Arrive(id=call, queue="q", caller="01099999999", priority=9),
    "arrive-unknown-queue": lambda call: c.Arrive(id="new", queue="nowhere", caller="0101"),
    "arrive-chat": lambda call: c.Arrive(id="new-chat", queue="q", caller="0101", channel="chat"),
    "answer-a1": lambda call: c.Answer(call=call, agent="a1"),
    "answer-a2": lambda call: c.Answer(call=call, agent="a2"),
    "answer-unknown-agent": lambda call: c.Answer(call=call, agent="nobody"),
    "reject-a1": lambda call: c.Reject(call=call, agent="a1"),
    "reject-a2": lambda call: c.Reject(call=call, agent="a2"),
    "abandon": lambda call: c.Abandon(call=call),
    "abandon-unknown": lambda call: c.Abandon(call="nobody"),
    "hangup": lambda call: c.Hangup(call=call),
    "transfer-other": lambda call: c.Transfer(call=call, queue="other"),
    "transfer-same": lambda call: c.Transfer(call=call, queue="q"),
    "transfer-external": lambda call: c.Transfer(call=call, queue="district"),
    "transfer-unknown": lambda call: c.Transfer(call=call, queue="nowhere"),
    "callback": lambda call: c.RequestCallback(call=call),
    "wrapup-a1": lambda call: c.WrapUp(call=call, agent="a1", disposition="resolved"),
    "wrapup-a1-callback": lambda call: c.WrapUp(call=call, agent="a1", disposition="callback", callback_at=2e9),
    "wrapup-a1-callback-no-time": lambda call: c.WrapUp(call=call, agent="a1", disposition="callback"),
    "wrapup-a2": lambda call: c.WrapUp(call=call, agent="a2", disposition="unresolved", abusive=True),
    "survey": lambda call: c.Survey(call=call, score=4),
    "login": lambda call: c.Login(agent="a1"),
    "ready": lambda call: c.Ready(agent="a1"),
    "not-ready": lambda call: c.NotReady(agent="a1", reason="lunch"),
    "logout": lambda call: c.Logout(agent="a1"),
    "logout-a2": lambda call: c.Logout(agent="a2"),
    "tick": lambda call: c.Tick(),
    "configure-same": lambda call: c.Configure(center=matrix_config()),
    "configure-without-a1": lambda call: c.Configure(center=CenterConfig(queues=matrix_config().queues, calendars=matrix_config().calendars, agents=[Agent(name="a2")])),
    "configure-without-q": lambda call: c.Configure(center=CenterConfig(queues=matrix_config().queues[1:], calendars=matrix_config().calendars, agents=matrix_config().agents)),
    "configure-invalid": lambda call: c.Configure(center=CenterConfig(queues=[Queue(name="q", calendar="nope")])),
    "audit": lambda call: c.Audit(actor="ops", action="check"),
    "activate-core-1": lambda call: c.ActivateCoreVersion(version=1),
}
CODES = {code.code: code for code in Code}
SCENARIOS: dict[str, Callable[[], tuple[Desk, str]]] = {
    **{f"call-{state.value}": (lambda state=state: drive_call(state)) for state in CallState},
    **{f"agent-{state.value}": (lambda state=state: drive_agent(state)) for state in AgentState},
}
_snapshots: dict[str, tuple[bytes, float, str]] = {}


def scenario(name: str) -> tuple[bytes, float, str]:
    """The scenario's snapshot, clock and subject call (built once, restored per test)."""
    if name not in _snapshots:
        desk, subject = SCENARIOS[name]()
        expected = name.removeprefix("call-").removeprefix("agent-")
        if name.startswith("call-"):
            assert desk.state_of(subject) == expected
        else:
            assert desk.agent_state("a1") == expected
        _snapshots[name] = (desk.center.snapshot(), desk.now, subject)
    return _snapshots[name]


@pytest.mark.parametrize("seconds", [0.0, 30.0], ids=["now", "30s-later"])
@pytest.mark.parametrize("command_name", list(COMMANDS))
@pytest.mark.parametrize("scenario_name", list(SCENARIOS))
def test_every_state_and_command_gives_a_named_rejection_or_a_legal_new_state(scenario_name: str, command_name: str, seconds: float) -> None:
    data, now, subject = scenario(scenario_name)
    center = Center.restore(data)
    center.tick(now + seconds)  # the driver ticks first when a deadline passed (acd.node)
    center.check_invariants()
    before = center.state_hash()
    command = COMMANDS[command_name](subject)
    result = center.apply(command, now + seconds)
    if isinstance(result, Rejection):
        assert result.code in CODES, result
        assert (result.code, result.status) == CODES[result.code].value
        assert center.state_hash() == before, f"{command_name} refused ({result.code}) but changed the state"
    else:
        center.check_invariants()
        # A command that took effect, applied again, takes no further effect (safe retry),
        # except those that are not requests to reach a state (ticks, audits, configure).
        if not isinstance(command, c.Tick | c.Audit | c.Configure):
            again = center.apply(command, now + seconds)
            assert again == [], (command_name, again)
        restored = Center.restore(center.snapshot())
        assert restored.state_hash() == center.state_hash()
