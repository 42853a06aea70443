"""Request bodies of the HTTP API and the small response records that are not views.

Field types and limits come from the core's commands (`acd.core.commands`), so the API
refuses at the edge exactly what the core would never accept. Every body refuses unknown
fields: a misspelt optional field (`"prority": 5`) is a 400, not a silently ignored wish.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from acd.core.commands import Attributes, Caller, Disposition, Priority, Score, Text
from acd.core.config import Channel, Name

Timestamp = Annotated[float, msgspec.Meta(ge=0, le=32503680000, description="Unix time in seconds")]


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies."""


class CallArrival(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An interaction arrives from the PBX or a chat/SMS gateway."""

    id: Name
    queue: Name
    caller: Caller
    channel: Channel = "voice"
    priority: Priority = 0
    attributes: Attributes = {}


class AgentAction(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Answer or reject: the agent the call is offered to."""

    agent: Name


class NoFields(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """No fields; an empty body is accepted too."""


class TransferTo(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    queue: Name


class WrapUpBody(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    agent: Name
    disposition: Disposition
    abusive: bool = False
    callback_at: Timestamp | None = None


class SurveyBody(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    score: Score


class NotReadyBody(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Text = ""


class SwitchoverBody(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None


class PromoteBody(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    force: bool = False


class UpgradeBody(Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The core version to activate (default: the highest every node supports)."""

    version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None


class VersionView(msgspec.Struct, kw_only=True):
    """A node's binary, the core versions it supports ([lowest, highest]) and the active one."""

    name: str
    cluster: str
    binary_version: str
    core_versions: list[int]
    active_core_version: int | None = None  # absent for a peer in an upgrade's result (it follows the log)


class UpgradeResult(msgspec.Struct, kw_only=True):
    changed: bool  # false: the version was active already
    active_core_version: int
    previous_core_version: int
    lsn: int
    nodes: list[VersionView]


class Error(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every error reply (docs/design.md, HTTP API contract)."""

    error: str
    message: str
    field: str | None = None
    primary: str | None = None
    problems: list[str] | None = None
    error_id: str | None = None  # command_failed: the id of the operator's log line


class StreamMessage(msgspec.Struct, kw_only=True):
    """A message of an event stream itself, not of the center (`acd.api.sse.frame_control`)."""

    type: Literal["stream.reset", "stream.behind", "stream.closed"]
    lsn: int
    message: str


class Health(msgspec.Struct, kw_only=True):
    status: str
    node: str
    role: str
    lsn: int


class ClusterView(msgspec.Struct, kw_only=True):
    name: str
    cluster: str
    role: str
    epoch: int
    lsn: int
    mode: str
    peer: str | None  # the other node's name (none on a standalone node)
    lag: int | None
    witness: str | None  # the witness's address (none on a standalone node)
    pid: int | None = None  # the node's process id: a drill on its host signals this process only
    binary_version: str | None = None
    core_versions: list[int] | None = None  # [lowest, highest] this node's binary applies
    active_core_version: int | None = None
    peer_versions: VersionView | None = None  # the peer's binary and core versions, as last asked (acd upgrade finalize)


class ConfigReloaded(msgspec.Struct, kw_only=True):
    changed: bool
    version: int
    lsn: int
    queues: int
    agents: int
    tokens: int
    restart_needed: list[str]


class StateDigest(msgspec.Struct, kw_only=True):
    """The node's state at one LSN, for checking that it equals a replay of the log."""

    node: str
    lsn: int
    state_hash: str
    config_version: int
    interactions: int
