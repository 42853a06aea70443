"""The legal moves of an interaction (`acd.core.state.TRANSITIONS`) against the invariants, and
the core's handlers against the table.

Three checks: the table's shape (every state reachable from an initial one, every live state
can end, terminal states have no move out); no module of the core changes an interaction's
state except through the table (read from the source); and driving the core through every
move records exactly the table's moves, each at least once, so no entry is dead and no
handler moves outside it (an illegal move raises `InvariantViolation` in the core).
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

from acd.core import base, state
from acd.core.commands import (
    Abandon,
    Answer,
    Arrive,
    CallbackAttempt,
    Hangup,
    Login,
    Ready,
    Reject,
    Tick,
    Transfer,
    WrapUp,
)
from acd.core.config import Agent, Calendar, CenterConfig, Queue
from acd.core.state import INITIAL, TERMINAL, TRANSITIONS, CallState
from tests.helpers.core_harness import Desk

CORE = pathlib.Path(state.__file__).parent
# The names the core's modules give the CallState members (`_WAITING = CallState.WAITING`).
STATE_NAMES = {f"_{member.name}" for member in CallState}


def reachable(start: frozenset[CallState]) -> set[CallState]:
    seen = set(start)
    frontier = list(start)
    while frontier:
        current = frontier.pop()
        for (source, _move), target in TRANSITIONS.items():
            if source is current and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_every_state_is_reachable_from_an_initial_state() -> None:
    assert reachable(INITIAL) == set(CallState)


def test_terminal_states_have_no_move_out() -> None:
    assert not [key for key in TRANSITIONS if key[0] in TERMINAL]


def test_every_live_state_can_end() -> None:
    for current in set(CallState) - TERMINAL:
        assert reachable(frozenset({current})) & TERMINAL, f"{current} can never end"


def test_a_move_names_one_kind_of_change() -> None:
    """Where a move applies from several states, it leads to the same place (`send_out`, `close`)."""
    targets: dict[str, set[CallState]] = {}
    for (_source, move), target in TRANSITIONS.items():
        targets.setdefault(move, set()).add(target)
    assert all(len(found) == 1 for found in targets.values()), targets


def _state_writes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, source) of every store into an interaction's state not made through `_moved`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "state":
                    value = node.value
                    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "_moved":
                        continue
                    names = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
                    attrs = {n.attr for n in ast.walk(value) if isinstance(n, ast.Attribute)}
                    if names & STATE_NAMES or "CallState" in names or attrs & {m.name for m in CallState}:
                        yield node.lineno, ast.unparse(node)
        if isinstance(node, ast.Call):
            # `_finish(call, move, ...)` takes a move of the table, never a state.
            if isinstance(node.func, ast.Attribute) and node.func.attr == "_finish" and len(node.args) >= 2:
                move = node.args[1]
                if not (isinstance(move, ast.Constant) and any(move.value == m for _s, m in TRANSITIONS)):
                    yield node.lineno, ast.unparse(node)


def test_the_core_changes_an_interactions_state_only_through_the_table() -> None:
    found = []
    for path in sorted(CORE.glob("*.py")):
        for line, text in _state_writes(ast.parse(path.read_text())):
            found.append(f"{path.name}:{line}: {text}")
    assert not found, "state changed outside TRANSITIONS:\n" + "\n".join(found)


def test_the_source_check_sees_a_direct_store() -> None:
    planted = ast.parse("call.state = _COMPLETED\ncenter._finish(call, _CLOSED, now)\n")
    assert [line for line, _text in _state_writes(planted)] == [1, 2]


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[CallState, str]]:
    """Every (state, move) the core looks up in the table while the test drives it."""
    seen: list[tuple[CallState, str]] = []

    class Recording(dict[tuple[CallState, str], CallState]):
        def get(self, key, default=None):  # type: ignore[no-untyped-def, override]
            seen.append(key)
            return super().get(key, default)

    monkeypatch.setattr(base, "TRANSITIONS", Recording(TRANSITIONS))
    return seen


def test_driving_the_core_makes_every_move_of_the_table_and_no_other(moves: list[tuple[CallState, str]]) -> None:
    monday_only = {"mon": ["00:00-00:01"]}  # closed at the desk's 09:00
    desk = Desk(CenterConfig(
        queues=[
            Queue(name="q"), Queue(name="night", calendar="night"), Queue(name="shut", calendar="shut"),
            Queue(name="office", external=True),
        ],
        calendars=[
            Calendar(name="night", hours=monday_only, closed_action="callback"),
            Calendar(name="shut", hours=monday_only, closed_action="reject"),
        ],
        agents=[Agent(name="a1"), Agent(name="a2")],
    ))
    desk.do(Login(agent="a1"))
    desk.do(Ready(agent="a1"))
    # Offered, answered, hung up, wrapped up with a promised call-back (SCHEDULED), which comes
    # due, is offered, and whose dial fails: withdrawn, scheduled again; then sent out.
    desk.do(Arrive(id="c1", queue="q", channel="voice", caller="01012345678"))
    desk.do(Answer(call="c1", agent="a1"))
    desk.do(Hangup(call="c1"))
    desk.do(WrapUp(call="c1", agent="a1", disposition="callback", callback_at=desk.now + 60))
    desk.do(Tick(), after=61)
    assert desk.center.state.interactions["c1:cb1"].state is CallState.OFFERED
    desk.do(CallbackAttempt(call="c1:cb1", outcome="no_answer"))
    assert desk.center.state.interactions["c1:cb1"].state is CallState.SCHEDULED
    desk.do(Transfer(call="c1:cb1", queue="office"))
    # After hours: a call-back request; the same caller again: merged into it.
    desk.do(Arrive(id="n1", queue="night", channel="voice", caller="01099990000"))
    desk.do(Arrive(id="n2", queue="night", channel="voice", caller="01099990000"))
    assert desk.center.state.interactions["n2"].reason == "merged"
    # Rejected (back to its place), then abandoned.
    desk.do(Arrive(id="r1", queue="q", channel="voice", caller="01077778888"))
    desk.do(Reject(call="r1", agent="a1"))
    desk.do(Abandon(call="r1"))
    # Sent out on arrival; closed on arrival.
    desk.do(Arrive(id="x1", queue="office", channel="voice", caller="01011112222"))
    desk.do(Arrive(id="x2", queue="shut", channel="voice", caller="01033334444"))
    # Transferred from a conversation.
    desk.do(Login(agent="a2"))
    desk.do(Ready(agent="a2"))
    desk.do(Arrive(id="t1", queue="q", channel="voice", caller="01055556666"))
    desk.do(Answer(call="t1", agent="a2"))
    desk.do(Transfer(call="t1", queue="office"))
    assert set(moves) <= set(TRANSITIONS), set(moves) - set(TRANSITIONS)
    assert set(TRANSITIONS) <= set(moves), f"never made: {sorted(set(TRANSITIONS) - set(moves), key=str)}"


def test_an_illegal_move_is_a_bug_not_a_jump(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without (CONNECTED, hangup) in the table, a hang-up cannot move the call: the core stops."""
    table = dict(TRANSITIONS)
    del table[(CallState.CONNECTED, "hangup")]
    desk = Desk(CenterConfig(queues=[Queue(name="q")], agents=[Agent(name="a1")]))
    desk.do(Login(agent="a1"))
    desk.do(Ready(agent="a1"))
    desk.do(Arrive(id="c1", queue="q", channel="voice", caller="01012345678"))
    desk.do(Answer(call="c1", agent="a1"))
    monkeypatch.setattr(base, "TRANSITIONS", table)
    with pytest.raises(base.InvariantViolation):
        desk.center.apply(Hangup(call="c1"), desk.now)
