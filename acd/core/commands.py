"""Commands: every input the routing core accepts, each one entry of the replicated log.

Commands are frozen msgspec structs with keyword-only fields, tagged by `type` so that one
decoder reads any of them from the log. The timestamp is not part of the command: the node
stamps it when the command enters the pipeline and the log stores both (see `acd.store`), so a
replay applies every command at the instant it was first applied.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .config import Center, Channel, Name

Text = Annotated[str, msgspec.Meta(max_length=200)]
Caller = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[0-9+*#-]+$")]
SealedCaller = Annotated[str, msgspec.Meta(max_length=32, pattern=r"^[0-9+*#-]*$")]  # empty: sealed
Disposition = Literal["resolved", "transferred", "callback", "unresolved"]
Priority = Annotated[int, msgspec.Meta(ge=0, le=9)]
Score = Annotated[int, msgspec.Meta(ge=1, le=5)]
# The bounds of what the core holds. An integer beyond 64 bits cannot be encoded into the log
# (msgpack), so the edge refuses it; +-2**53 is also what every JSON reader keeps exactly.
SAFE_INTEGER = 2**53
AttributeValue = bool | Annotated[int, msgspec.Meta(ge=-SAFE_INTEGER, le=SAFE_INTEGER)] | Annotated[str, msgspec.Meta(max_length=200)]
AttributeName = Annotated[str, msgspec.Meta(max_length=64)]
Attributes = Annotated[dict[AttributeName, AttributeValue], msgspec.Meta(max_length=64)]
# Unix time in seconds up to the year 3000; NaN and the infinities are outside every bound.
Instant = Annotated[float, msgspec.Meta(ge=0, le=32503680000)]


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    """Base of all commands."""


class Configure(Command, tag="configure", frozen=True):
    """Replace the center's configuration (queues, agents, calendars); applied atomically."""

    center: Center
    actor: str = ""


class Arrive(Command, tag="call.arrive", frozen=True, omit_defaults=True):
    """An interaction arrived from the PBX or a chat/SMS gateway.

    As the node logs it, the caller's number is sealed: `caller` is empty and the number is
    in `caller_sealed` (AES-GCM under the key `caller_key`, which the store keeps apart from
    the log and destroys once the interaction is over), with the keyed hash, the masked form
    and the fingerprint computed at the edge with a key the log never holds
    (`acd.node.privacy`). An arrival with `caller` in clear (older logs, the simulator) has
    them computed by the core with the center's `abuse.hash_key`.
    """

    id: Name
    queue: Name
    caller: SealedCaller
    channel: Channel = "voice"
    priority: Priority = 0
    attributes: Attributes = {}
    caller_hash: Annotated[str, msgspec.Meta(max_length=64)] = ""
    caller_masked: Annotated[str, msgspec.Meta(max_length=32)] = ""
    caller_sealed: Annotated[bytes, msgspec.Meta(max_length=128)] = b""
    caller_key: Annotated[str, msgspec.Meta(max_length=32)] = ""
    fingerprint: Annotated[str, msgspec.Meta(max_length=64)] = ""


class Answer(Command, tag="call.answer", frozen=True):
    call: Name
    agent: Name


class Reject(Command, tag="call.reject", frozen=True):
    call: Name
    agent: Name


class Abandon(Command, tag="call.abandon", frozen=True):
    call: Name


class Hangup(Command, tag="call.hangup", frozen=True):
    call: Name


class Hold(Command, tag="call.hold", frozen=True):
    """The agent put the caller on hold (the time counts in AHT, apart from talk)."""

    call: Name


class Unhold(Command, tag="call.unhold", frozen=True):
    call: Name


class Transfer(Command, tag="call.transfer", frozen=True):
    call: Name
    queue: Name


class RequestCallback(Command, tag="call.callback", frozen=True):
    call: Name


class WrapUp(Command, tag="call.wrapup", frozen=True):
    call: Name
    agent: Name
    disposition: Disposition
    abusive: bool = False
    callback_at: Instant | None = None


class CallbackAttempt(Command, tag="call.callback_attempt", frozen=True):
    """The outcome of dialling a call-back ringing at an agent (the dialler's report).

    "reached" answers it for that agent; "no_answer" and "busy" take it back and make it due
    again after the retry spacing (or end it "unreachable" after the last attempt);
    "wrong_number" ends it at once.
    """

    call: Name
    outcome: Literal["reached", "no_answer", "busy", "wrong_number"]


class Survey(Command, tag="call.survey", frozen=True):
    call: Name
    score: Score


class Login(Command, tag="agent.login", frozen=True):
    agent: Name


class Ready(Command, tag="agent.ready", frozen=True):
    agent: Name


class NotReady(Command, tag="agent.not_ready", frozen=True):
    agent: Name
    reason: Text = ""


class Logout(Command, tag="agent.logout", frozen=True):
    agent: Name


class Tick(Command, tag="tick", frozen=True):
    """Time passed: fire every timer due at or before the command's timestamp."""


class Audit(Command, tag="audit", frozen=True):
    """An operator action recorded in the log (switchover, promotion, forced actions)."""

    actor: str
    action: Text
    detail: Text = ""


class ActivateCoreVersion(Command, tag="core.activate", frozen=True):
    """From this record on, the center applies the rules of core `version` (acd.core.versions).

    Logged by `acd upgrade finalize` once every node runs a binary that supports it."""

    version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    actor: Text = ""


AnyCommand = (
    Configure | Arrive | Answer | Reject | Abandon | Hangup | Hold | Unhold | Transfer | RequestCallback | WrapUp
    | CallbackAttempt | Survey | Login | Ready | NotReady | Logout | Tick | Audit | ActivateCoreVersion
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyCommand)


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_command(data: bytes) -> Command:
    command: Command = _decoder.decode(data)
    return command



def validate(command: Command) -> bytes:
    """`command` encoded for the log, once checked against every bound its type declares.

    A command built in Python (not decoded from JSON or from the log) skips msgspec's checks,
    so a value the core cannot hold (an integer beyond 64 bits, NaN, a string past its
    limit) would reach the core. The node passes every command through here before the
    core sees it; raises msgspec.ValidationError naming the problem.
    """
    try:
        payload = _encoder.encode(command)
    except (OverflowError, TypeError, ValueError) as error:  # ValueError: lone surrogates
        raise msgspec.ValidationError(f"{type(command).__name__} cannot be encoded: {error}") from None
    _decoder.decode(payload)
    return payload
