"""Named rejections: why the core refused a command, with a stable code and an HTTP hint.

A refused command leaves the state untouched. When several reasons apply, the one listed
first in `Code` wins (TigerBeetle's `CreateTransferStatus` orders its results the same way),
so a client always sees the same code for the same situation.
"""

from __future__ import annotations

import enum

import msgspec


class Code(enum.Enum):
    # value: (code string, HTTP status). Members are in precedence order.
    unknown_queue = ("unknown_queue", 404)          # the queue is not configured
    unknown_agent = ("unknown_agent", 404)          # the agent is not configured
    unknown_call = ("unknown_call", 404)            # no interaction with that id
    id_conflict = ("id_conflict", 409)              # the id exists with a different body
    channel_not_served = ("channel_not_served", 409)  # the queue does not take this channel
    agent_logged_out = ("agent_logged_out", 409)    # the agent must log in first
    call_finished = ("call_finished", 409)          # the interaction already ended otherwise
    not_offered_to_agent = ("not_offered_to_agent", 409)  # the offer belongs to someone else
    call_not_offered = ("call_not_offered", 409)    # nothing is offered to answer or reject
    call_not_connected = ("call_not_connected", 409)  # hangup of a call nobody answered
    call_connected = ("call_connected", 409)        # abandon of a call already answered
    call_not_waiting = ("call_not_waiting", 409)    # a call-back needs a waiting caller
    not_handled_by_agent = ("not_handled_by_agent", 409)  # wrap-up of someone else's call
    call_not_ended = ("call_not_ended", 409)        # wrap-up before the conversation ended
    already_wrapped_up = ("already_wrapped_up", 409)  # wrap-up repeated with other values
    callback_time_missing = ("callback_time_missing", 400)  # disposition callback needs callback_at
    call_not_answered = ("call_not_answered", 409)  # survey of a call nobody answered
    survey_already_recorded = ("survey_already_recorded", 409)
    same_queue = ("same_queue", 409)                # transfer into the queue it is in
    invalid_config = ("invalid_config", 400)        # a configuration that does not validate
    core_version_downgrade = ("core_version_downgrade", 409)  # the active core version never goes back

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    status: int
    message: str
    field: str | None = None


def reject(code: Code, message: str, field: str | None = None) -> Rejection:
    return Rejection(code=code.code, status=code.status, message=message, field=field)
