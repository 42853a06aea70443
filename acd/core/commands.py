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
Disposition = Literal["resolved", "transferred", "callback", "unresolved"]
Priority = Annotated[int, msgspec.Meta(ge=0, le=9)]
Score = Annotated[int, msgspec.Meta(ge=1, le=5)]
AttributeValue = bool | int | Annotated[str, msgspec.Meta(max_length=200)]


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    """Base of all commands."""


class Configure(Command, tag="configure", frozen=True):
    """Replace the center's configuration (queues, agents, calendars); applied atomically."""

    center: Center
    actor: str = ""


class Arrive(Command, tag="call.arrive", frozen=True):
    """An interaction arrived from the PBX or a chat/SMS gateway."""

    id: Name
    queue: Name
    caller: Caller
    channel: Channel = "voice"
    priority: Priority = 0
    attributes: dict[Annotated[str, msgspec.Meta(max_length=64)], AttributeValue] = {}


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
    callback_at: float | None = None


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


AnyCommand = (
    Configure | Arrive | Answer | Reject | Abandon | Hangup | Transfer | RequestCallback | WrapUp
    | Survey | Login | Ready | NotReady | Logout | Tick | Audit
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyCommand)


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_command(data: bytes) -> Command:
    command: Command = _decoder.decode(data)
    return command
