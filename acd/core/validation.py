"""A new configuration: checked, normalized, and applied to the running center.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .base import _LOGGED_OUT, _TERMINAL
from .commands import Configure
from .config import CenterConfig, ConfigError, validate_center
from .events import ConfigApplied
from .rejections import Code, Rejection, reject
from .state import AgentRecord

if TYPE_CHECKING:
    from .center import Center

# The last configuration checked, with its outcome: a node replaying its log (every restart)
# or a standby applying what it is shipped checks the same configuration again and again.
# Keyed by its encoding, which tells 1 from 1.0 and True (equality would not), so the same
# key means the same input and the same outcome.
_last_checked: tuple[bytes, CenterConfig | Rejection, list[ConfigError]] | None = None


def configure(center: Center, command: Configure, now: float) -> Rejection | None:
    config, problems = _checked(command.center)
    if isinstance(config, Rejection):
        return config
    if problems:
        first = problems[0]
        return reject(Code.invalid_config, "; ".join(str(p) for p in problems), field=first.key)
    new_queues = {q.name for q in config.queues}
    new_agents = {a.name for a in config.agents}
    for call in center.state.interactions.values():
        if call.state not in _TERMINAL and call.queue not in new_queues:
            return reject(Code.invalid_config, f"queue {call.queue!r} still has interaction {call.id!r}", field="queues")
    for agent in center.state.agents.values():
        if agent.name not in new_agents and agent.presence is not _LOGGED_OUT:
            return reject(Code.invalid_config, f"agent {agent.name!r} is logged in; log out before removing", field="agents")
        for call_id, held in agent.held.items():
            # A conversation transferred onwards is still wrapped up in its first queue.
            if held.queue not in new_queues:
                return reject(Code.invalid_config, f"queue {held.queue!r} still has {call_id!r} in wrap-up with {agent.name!r}", field="queues")
    center.state.config = config
    center.state.config_version += 1
    for index, agent_config in enumerate(config.agents):
        record = center.state.agents.get(agent_config.name)
        if record is None:
            record = center.state.agents[agent_config.name] = AgentRecord(name=agent_config.name, state_since=now)
        record.order = index
    for name in [name for name in center.state.agents if name not in new_agents]:
        del center.state.agents[name]
    center._rebuild_indices()
    center._emit(
        ConfigApplied(
            at=now, version=center.state.config_version, queues=len(config.queues),
            agents=len(config.agents), actor=command.actor,
        )
    )
    center._rebalance(now)
    return None


def _checked(center: CenterConfig) -> tuple[CenterConfig | Rejection, list[ConfigError]]:
    """`_normalized(center)` and, when it is valid, `validate_center` of the result."""
    global _last_checked
    key = msgspec.msgpack.encode(center)
    last = _last_checked
    if last is not None and last[0] == key:
        return last[1], last[2]
    normalized = _normalized(center)
    problems = [] if isinstance(normalized, Rejection) else validate_center(normalized)
    _last_checked = (key, normalized, problems)
    return normalized, problems


def _normalized(center: CenterConfig) -> CenterConfig | Rejection:
    """The configuration as it will read back from a snapshot, or why it is invalid.

    A configuration built in Python (tests, the simulator) skips msgspec's decoding: its
    ranges are unchecked and `5` stays an int where the field is a float, so the snapshot
    would encode `5` and its restore `5.0`, and their hashes would differ (invariant 7).
    Converting once through builtins checks the ranges and fixes the types.
    """
    try:
        return msgspec.convert(msgspec.to_builtins(center), CenterConfig)
    except msgspec.ValidationError as error:
        message = str(error)
        path = message.rpartition("at `$")[2].rstrip("`") if "at `$" in message else ""
        if path.startswith("."):
            path = path[1:]
        if not path.startswith(("queues[", "agents[", "calendars[")):
            path = "center." + path if path else "center"
        return reject(Code.invalid_config, message, field=path)
