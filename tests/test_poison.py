"""One bad command never stops a node (issue: poison commands).

- The edge refuses what the core cannot hold: integers past 2**53, NaN and the infinities,
  strings past their limit, too many attributes, bodies nested deeper than a request can be.
- Every command the node is given is checked against its type's bounds before the core sees
  it (`commands.validate`), so a command built in Python cannot slip a 2**70 past the edge.
- If applying a command raises anyway (a core bug), the pipeline survives: that request gets
  422 `command_failed` with an error id that is in the log, the state is rebuilt from the
  store (the command was never committed or shipped), the rest of the batch is served, and
  the same command is refused on retry without reaching the core again.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acd.core import Center, Rejection, commands
from acd.node.node import Node
from tests.helpers.core_harness import Desk, one_queue_center
from tests.helpers.inprocess import running_node, write_settings

HUGE = 2**70

# Values at and past every edge: huge and tiny numbers, NaN, the infinities, long and
# unusual strings (lone surrogates included), nesting.
extreme_numbers = st.sampled_from([HUGE, -HUGE, 2**64, 2**63, -(2**63) - 1, 2**53 + 1, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf, 0, -1, 1, 3, 2e9])
extreme_strings = st.one_of(
    st.sampled_from(["", "\ud800", "\x00", "a" * 10_000, "💥" * 300, "../../etc", "0" * 65]),
    st.sampled_from(["q", "q1", "q2", "a1", "a2", "0101234567", "voice", "chat", "resolved", "callback"]),
    st.text(max_size=300),
)
extreme_values = st.recursive(
    extreme_numbers | extreme_strings | st.booleans() | st.none(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(extreme_strings, children, max_size=3),
    max_leaves=8,
)


def _command_strategies() -> st.SearchStrategy[commands.Command]:
    """Every command type but Configure and Tick, each field drawn from the extreme values."""
    strategies = []
    for kind in (commands.Arrive, commands.Answer, commands.Reject, commands.Abandon, commands.Hangup, commands.Transfer, commands.RequestCallback, commands.WrapUp, commands.Survey, commands.Login, commands.Ready, commands.NotReady, commands.Logout, commands.Audit):
        fields = {name: extreme_values for name in kind.__struct_fields__}
        if "attributes" in fields:
            fields["attributes"] = st.dictionaries(extreme_strings, extreme_values, max_size=70)
        strategies.append(st.fixed_dictionaries(fields).map(lambda values, kind=kind: kind(**values)))
    return st.one_of(strategies)


def _desk() -> Desk:
    desk = Desk(one_queue_center(agents=2))
    desk.ready("a1", "a2")
    desk.arrive("q1")
    desk.arrive("q2")
    desk.arrive("q3")
    return desk


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=_command_strategies())
def test_the_core_behind_its_check_holds_every_command_with_extreme_values(command: commands.Command) -> None:
    desk = _desk()
    try:
        payload = commands.validate(command)
    except msgspec.ValidationError as error:
        assert str(error)  # refused with a reason; nothing reached the core
        return
    # What passes the check decodes to the same command, and the core takes it or refuses
    # it by name: never an exception.
    assert commands.decode_command(payload) == command
    result = desk.center.apply(command, desk.now + 1)
    assert isinstance(result, (list, Rejection))


@pytest.mark.parametrize("command", [
    commands.Arrive(id="x", queue="q", caller="0101234567", attributes={"n": HUGE}),
    commands.Arrive(id="x", queue="q", caller="0101234567", attributes={"n": -HUGE}),
    commands.Arrive(id="x", queue="q", caller="0101234567", attributes={"n": 2**53 + 1}),
    commands.Arrive(id="x", queue="q", caller="0101234567", attributes={f"k{i}": i for i in range(65)}),
    commands.Arrive(id="x", queue="q", caller="0101234567", attributes={"s": "\ud800"}),
    commands.Arrive(id="x" * 65, queue="q", caller="0101234567"),
    commands.WrapUp(call="x", agent="a1", disposition="callback", callback_at=math.nan),
    commands.WrapUp(call="x", agent="a1", disposition="callback", callback_at=math.inf),
    commands.WrapUp(call="x", agent="a1", disposition="callback", callback_at=1e308),
    commands.NotReady(agent="a1", reason="r" * 201),
])
def test_validate_refuses_what_the_core_cannot_hold(command: commands.Command) -> None:
    with pytest.raises(msgspec.ValidationError):
        commands.validate(command)


def test_validate_keeps_what_the_core_holds() -> None:
    command = commands.Arrive(id="x", queue="q", caller="0101234567", attributes={"n": 2**53, "m": -(2**53), "vip": True, "s": "ü" * 200})
    assert commands.decode_command(commands.validate(command)) == command


# ----------------------------------------------------------------------------- the node


def _plant_core_fault(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """The core raises for an arrival with id `poison`, after it changed its state (the worst
    case: half a command applied in memory)."""
    arrive = Center._handlers[commands.Arrive]

    def faulty(center: Center, command: commands.Arrive, now: float) -> Rejection | None:
        calls.append(command.id)
        result = arrive(center, command, now)
        if command.id == "poison":
            raise RuntimeError("planted core fault")
        return result

    monkeypatch.setitem(Center._handlers, commands.Arrive, faulty)


def _call(call_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": call_id, "queue": "general", "caller": "01012345678", **extra}


def test_a_command_that_makes_the_core_raise_is_refused_and_the_node_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    settings_ = write_settings(tmp_path)
    calls: list[str] = []
    _plant_core_fault(monkeypatch, calls)
    caplog.set_level(logging.ERROR, logger="acd.node")
    replies: dict[str, httpx.Response] = {}

    async def main() -> None:
        async with running_node(settings_) as running:
            client, node = running.client, running.node
            assert (await client.post("/v1/calls", json=_call("before"))).status_code == 201
            lsn = node.lsn

            async def post(call_id: str) -> None:
                replies[call_id] = await client.post("/v1/calls", json=_call(call_id))

            # Several at once, so the poison shares a batch with good commands.
            async with trio.open_nursery() as nursery:
                for call_id in ("good-1", "poison", "good-2", "good-3"):
                    nursery.start_soon(post, call_id)
            failed = replies["poison"]
            assert failed.status_code == 422, failed.text
            error_id = failed.json()["error_id"]
            assert failed.json()["error"] == "command_failed" and error_id in failed.json()["message"]
            assert [replies[f"good-{n}"].status_code for n in (1, 2, 3)] == [201, 201, 201]
            assert node.lsn == lsn + 3  # the three good ones, nothing of the poison
            assert "poison" not in node.center.state.interactions
            # The state in memory is the state of the store: the half-applied poison is gone.
            assert node.center.state_hash() == Node(settings_, "a", store=node.store).center.state_hash()
            assert any(error_id in record.getMessage() for record in caplog.records)
            assert node.metrics.command_failures._value.get() == 1

            # A retry is refused with the same error id, and the core never sees it again.
            before = calls.count("poison")
            retry = await client.post("/v1/calls", json=_call("poison"))
            assert (retry.status_code, retry.json()["error"], retry.json()["error_id"]) == (422, "command_failed", error_id)
            assert calls.count("poison") == before
            # And the node goes on serving.
            assert (await client.post("/v1/calls", json=_call("after"))).status_code == 201
            assert (await client.get("/v1/calls/after")).status_code == 200

    trio.run(main)


def test_the_other_node_refuses_the_same_command_after_a_failover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PBX retries against the new primary: that node was never shipped the command (it was
    not committed), applies it, raises and refuses it the same way, and lives."""
    calls: list[str] = []
    _plant_core_fault(monkeypatch, calls)

    async def one_node(directory: Path) -> tuple[int, int]:
        async with running_node(write_settings(directory)) as running:
            first = await running.client.post("/v1/calls", json=_call("poison"))
            assert first.status_code == 422 and first.json()["error"] == "command_failed"
            second = await running.client.post("/v1/calls", json=_call("good"))
            return first.status_code, second.status_code

    assert trio.run(one_node, tmp_path / "a") == (422, 201)
    assert trio.run(one_node, tmp_path / "b") == (422, 201)


def test_a_timer_that_raises_fails_its_batch_and_the_node_serves_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail = {"on": False}
    tick = Center.tick

    def faulty_tick(center: Center, now: float) -> Any:
        if fail["on"]:
            raise RuntimeError("planted timer fault")
        return tick(center, now)

    monkeypatch.setattr(Center, "tick", faulty_tick)

    async def main() -> None:
        async with running_node(write_settings(tmp_path)) as running:
            client, node = running.client, running.node
            assert (await client.post("/v1/calls", json=_call("c1"))).status_code == 201
            lsn = node.lsn
            fail["on"] = True
            monkeypatch.setattr(Center, "next_deadline", lambda center: 0.0)  # a timer is due now
            refused = await client.post("/v1/calls", json=_call("c2"))
            assert (refused.status_code, refused.json()["error"]) == (422, "command_failed")
            assert node.lsn == lsn
            fail["on"] = False
            monkeypatch.undo()
            assert (await client.post("/v1/calls", json=_call("c2"))).status_code == 201

    trio.run(main)


def test_a_command_built_in_python_with_a_huge_integer_is_refused_before_the_core(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_node(write_settings(tmp_path)) as running:
            node = running.node
            from acd.node.node import InvalidCommand

            with pytest.raises(InvalidCommand):
                await node.submit(commands.Arrive(id="big", queue="general", caller="0101", attributes={"n": HUGE}))
            assert "big" not in node.center.state.interactions

    trio.run(main)


# ------------------------------------------------------------------------- over HTTP


def _nested(depth: int) -> bytes:
    # One integral float first (the lenient second decode), then the nesting.
    return b'{"priority": 1.0, "attributes": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("body", [
    json.dumps(_call("c", attributes={"n": HUGE})).encode(),
    json.dumps(_call("c", attributes={"n": -HUGE})).encode(),
    json.dumps(_call("c", attributes={"n": 1e308})).encode(),
    json.dumps(_call("c", priority=1.0, attributes={"n": 1e308})).encode(),
    json.dumps(_call("c", attributes={f"k{i}": i for i in range(65)})).encode(),
    b'{"id": "c", "queue": "general", "caller": "0101", "attributes": {"n": NaN}}',
    b'{"id": "c", "queue": "general", "caller": "0101", "attributes": {"n": 1e999}}',
    _nested(800),
    _nested(5000),
])
def test_bodies_the_core_cannot_hold_get_a_named_4xx(tmp_path: Path, body: bytes) -> None:
    async def main() -> None:
        async with running_node(write_settings(tmp_path)) as running:
            reply = await running.client.post("/v1/calls", content=body, headers={"content-type": "application/json"})
            assert 400 <= reply.status_code < 500, reply.text
            assert reply.json()["error"] in {"invalid", "bad_json"}
            assert (await running.client.post("/v1/calls", json=_call("fine"))).status_code == 201

    trio.run(main)


def test_a_standby_refuses_a_write_before_it_reads_the_body(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_node(write_settings(tmp_path)) as running:
            running.node.role = "standby"
            reply = await running.client.post("/v1/calls", content=_nested(5000), headers={"content-type": "application/json"})
            assert (reply.status_code, reply.json()["error"]) == (503, "not_primary")
            running.node.role = "primary"

    trio.run(main)


def test_the_reproduction_a_huge_integer_no_longer_stops_a_node_process(tmp_path: Path) -> None:
    """The original finding, on a real process: one body with 2**70 in its attributes made the
    node exit, and the same body retried on the next node made that one exit too."""
    from tests.helpers.node_process import NodeProcess

    body = json.dumps(_call("poison", attributes={"n": HUGE})).encode()
    with NodeProcess(tmp_path) as node:
        with httpx.Client(base_url=node.url, timeout=10) as client:
            for _attempt in range(3):
                reply = client.post("/v1/calls", content=body, headers={"content-type": "application/json"})
                assert (reply.status_code, reply.json()["error"]) == (400, "invalid"), reply.text
            assert client.post("/v1/calls", json=_call("fine")).status_code == 201
        assert node.process is not None and node.process.poll() is None, node.log_tail()
        assert "Traceback" not in node.log_path.read_text(errors="replace")
