"""The routing core: a pure, deterministic state machine (sans-IO). See `center.py`; its parts by concept: `base.py`."""

from . import commands, events
from .center import Center, InvariantViolation, invariant
from .config import CenterConfig, ConfigError, validate_center
from .rejections import Code, Rejection
from .state import AgentState, CallState, Presence, State

__all__ = [
    "AgentState", "CallState", "Center", "CenterConfig", "Code", "ConfigError", "InvariantViolation",
    "Presence", "Rejection", "State", "commands", "events", "invariant", "validate_center",
]
