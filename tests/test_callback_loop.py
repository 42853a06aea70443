"""The call-back loop in the core: a promised call-back carries its origin's sealed number,
its key outlives the origin (reference-counted) and is released once no live interaction
holds it; the dialler's attempt outcomes follow the retry policy of the config."""

from __future__ import annotations

from acd.core import Center, CenterConfig, commands, events, kpis
from acd.core.config import Agent, Queue
from acd.core.rejections import Code
from tests.helpers.core_harness import Desk, of_type, only


def sealed_arrival(call: str, key: str, caller_hash: str = "h-citizen") -> commands.Arrive:
    return commands.Arrive(id=call, queue="q", caller="", caller_hash=caller_hash, caller_masked="*******5678",
                    caller_sealed=b"nonce-and-ciphertext-" + key.encode(), caller_key=key, fingerprint=f"f-{call}")


def promise(desk: Desk, call: str, key: str, due_in: float = 600.0) -> None:
    desk.do(sealed_arrival(call, key))
    desk.answer(call)
    desk.hangup(call, after=60)
    desk.wrapup(call, disposition="callback", after=5, callback_at=desk.now + 5 + due_in)


def config(**options: object) -> CenterConfig:
    return CenterConfig(queues=[Queue(name="q", wrapup_seconds=0.0)], agents=[Agent(name="a1")], **options)  # type: ignore[arg-type]


def test_a_promised_callback_keeps_the_sealed_number_until_it_is_done() -> None:
    desk = Desk(config())
    desk.ready("a1")
    promise(desk, "x", "key-x")
    task = desk.call("x:cb1")
    origin = desk.call("x")
    assert (origin.caller_key, origin.caller_sealed) == (None, None)  # the origin is over
    assert (task.caller_key, task.caller_sealed, task.sealed_for) == ("key-x", b"nonce-and-ciphertext-key-x", "x")
    assert desk.center.take_released_keys() == []  # the task still needs the number
    desk.wait(600)
    assert desk.offer_of("a1") == "x:cb1"
    desk.answer("x:cb1")
    desk.hangup("x:cb1", after=30)
    desk.wrapup("x:cb1", after=5)
    assert desk.center.take_released_keys() == ["key-x"]
    assert desk.call("x:cb1").caller_key is None


def test_a_restored_center_counts_the_holders_of_a_key_from_its_state() -> None:
    desk = Desk(config())
    desk.ready("a1")
    promise(desk, "x", "key-x")
    desk.center.take_released_keys()
    restored = Center.restore(desk.center.snapshot())
    restored.apply(commands.Tick(), desk.now + 600)
    restored.apply(commands.Answer(call="x:cb1", agent="a1"), desk.now + 600)
    restored.apply(commands.Hangup(call="x:cb1"), desk.now + 630)
    restored.apply(commands.WrapUp(call="x:cb1", agent="a1", disposition="resolved"), desk.now + 635)
    assert restored.take_released_keys() == ["key-x"]


def test_a_promise_that_joins_a_pending_callback_releases_its_key() -> None:
    desk = Desk(config())
    desk.ready("a1")
    promise(desk, "x", "key-x")
    desk.center.take_released_keys()
    promise(desk, "y", "key-y")  # the same citizen (caller hash) again: one call-back is enough
    assert "y:cb1" not in desk.center.state.interactions
    assert desk.center.take_released_keys() == ["key-y"]


def test_unanswered_dials_follow_the_retry_policy_then_expire() -> None:
    desk = Desk(config(callback_attempts=2, callback_retry_seconds=300.0))
    desk.ready("a1")
    promise(desk, "x", "key-x")
    desk.center.take_released_keys()
    desk.wait(600)
    emitted = desk.do(commands.CallbackAttempt(call="x:cb1", outcome="no_answer"), after=5)
    attempted = only(emitted, events.CallbackAttempted)
    assert (attempted.attempt, attempted.next_due_at) == (1, desk.now + 300)
    assert desk.state_of("x:cb1") == "scheduled"
    assert desk.agent_state("a1") == "ready"
    desk.do(commands.CallbackAttempt(call="x:cb1", outcome="no_answer"))  # the same report again: nothing new
    desk.wait(300)
    assert desk.offer_of("a1") == "x:cb1"
    emitted = desk.do(commands.CallbackAttempt(call="x:cb1", outcome="busy"), after=5)
    assert only(emitted, events.CallbackAttempted).next_due_at is None
    assert (desk.state_of("x:cb1"), desk.call("x:cb1").reason) == ("closed", "unreachable")
    assert desk.center.take_released_keys() == ["key-x"]  # the number is destroyed with the task
    figures = kpis.kpis(desk.day().center.total)
    assert (figures.callbacks_due, figures.callbacks_attempted, figures.callbacks_reached, figures.callbacks_expired) == (1, 2, 0, 1)
    assert desk.replayed().state_hash() == desk.center.state_hash()


def test_a_wrong_number_ends_the_callback_and_reached_answers_it() -> None:
    desk = Desk(config())
    desk.ready("a1")
    promise(desk, "x", "key-x")
    desk.wait(600)
    desk.do(commands.CallbackAttempt(call="x:cb1", outcome="wrong_number"))
    assert (desk.state_of("x:cb1"), desk.call("x:cb1").reason) == ("closed", "wrong_number")
    desk.do(commands.CallbackAttempt(call="x:cb1", outcome="wrong_number"))  # repeated: took effect
    desk.refuse(commands.CallbackAttempt(call="x:cb1", outcome="busy"), Code.call_finished)
    desk.refuse(commands.CallbackAttempt(call="x", outcome="busy"), Code.call_finished)
    promise(desk, "y", "key-y")
    desk.refuse(commands.CallbackAttempt(call="y:cb1", outcome="no_answer"), Code.call_not_offered)  # not due yet
    desk.wait(600)
    emitted = desk.do(commands.CallbackAttempt(call="y:cb1", outcome="reached"))
    assert only(emitted, events.CallAnswered).agent == "a1"
    assert of_type(emitted, events.CallbackAttempted) == []
    assert kpis.kpis(desk.day().center.total).callbacks_reached == 1
