"""Core versions: which routing rules the core applies, and which of them this binary may apply.

Theory of operation
-------------------
The log holds commands, and every node applies them through its own core. A rule that changes
between releases would make two nodes (or a replay after an upgrade) derive different states
from the same log. So every rule that may change sits behind a *core version*, and the version
in force is itself part of the replicated state: `ActivateCoreVersion(version=N)` is a command
in the log, and every record is applied with the rules of the version active at that point of
the log, whatever the binary's release. A center whose log never activated one runs version 1
(every log and snapshot written before versions existed).

A binary supports a range of core versions, `supported_core_versions()`. The operator raises
the active version (`acd upgrade finalize`) only once every node runs a binary that supports
it; a node whose store (snapshot and replay) is at a version above its range refuses to start,
and a standby that receives such a record stops applying (`CoreVersionUnsupported`).

Versions and their rules:

| version | rule |
|---|---|
| 1 | a queue with strategy `longest-idle` offers to the free agent idle longest |
| 2 | *test only, the "next" version*: such a queue offers to the free agent who handled the fewest interactions, the longest idle among equals (the `fewest-handled` order) |

Version 2 exists so that tests and upgrade drills can raise the version of a running cluster
and see the changed rule take effect. A binary supports it only when the environment variable
`ACD_ENABLE_NEXT_CORE=1` is set in its process (for tests and upgrade drills only): the shipped
binary cannot activate it, and refuses a store that did.

A planted bug, for one test only
--------------------------------
`ACD_TEST_NO_CORE_GATE=1` in a process that also has `ACD_ENABLE_NEXT_CORE=1` removes the
version gate: that binary applies version 2's rule whatever the active version, the bug this
module exists to prevent (a newer binary deriving another state from the same log). It is
there so that a test can show the divergence alarm catches it (tests/test_upgrade_divergence.py):
never set it anywhere else. A node started with it says so in its log (`TEST HOOK`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from acd.versions import CORE_VERSION_NEXT, NEXT_CORE_ENV, RELEASE, supported_core_versions

from .events import Audited
from .rejections import Code, Rejection, reject

if TYPE_CHECKING:
    from .center import Center
    from .commands import ActivateCoreVersion

# The version of a center whose log never activated one.
CORE_VERSION_INITIAL = 1

# TEST ONLY: the planted bug of the module's docstring (the version gate removed).
NO_GATE_ENV: Final = "ACD_TEST_NO_CORE_GATE"


def gate_removed(environ: Mapping[str, str] | None = None) -> bool:
    """True in a process with the planted bug: `NO_GATE_ENV=1` and a binary that supports the
    next core version (test only)."""
    environ = os.environ if environ is None else environ
    return environ.get(NO_GATE_ENV) == "1" and supported_core_versions(environ)[1] >= CORE_VERSION_NEXT


# Read once, when the process starts: the core stays a function of the log and this binary.
_GATE_REMOVED: Final = gate_removed()

# This binary's release and the core versions it supports are stated once, in acd.versions;
# they are named here too for the core's readers.
__all__ = [
    "CORE_VERSION_INITIAL", "CORE_VERSION_NEXT", "NEXT_CORE_ENV", "NO_GATE_ENV", "RELEASE", "CoreVersionUnsupported",
    "activate", "describe", "gate_removed", "require_supported", "routing_strategy", "supported_core_versions",
]


def describe(supported: tuple[int, int]) -> str:
    return f"{supported[0]}..{supported[1]}"


class CoreVersionUnsupported(Exception):
    """The state or the log asks for a core version this binary does not apply.

    Not a rejection: the record is in the log already (replay, a standby), so the node cannot
    go on with a state that would differ from its peer's; it must stop and say why.
    """

    def __init__(self, version: int, supported: tuple[int, int], what: str = "the active core version") -> None:
        self.version = version
        self.supported = supported
        super().__init__(
            f"{what} {version} is newer than this binary supports ({describe(supported)}): upgrade the binary"
        )


def require_supported(version: int, what: str = "the store's active core version") -> None:
    """Raise `CoreVersionUnsupported` unless this binary applies core `version`."""
    supported = supported_core_versions()
    if not supported[0] <= version <= supported[1]:
        raise CoreVersionUnsupported(version, supported, what)


def routing_strategy(version: int, strategy: str) -> str:
    """The order in which a queue configured with `strategy` picks among free agents under core
    `version` (the one rule version 2 changes; see the table above). With the planted bug
    (`NO_GATE_ENV`, test only) version 2's rule whatever `version`."""
    if (version >= CORE_VERSION_NEXT or _GATE_REMOVED) and strategy == "longest-idle":
        return "fewest-handled"
    return strategy


def activate(center: Center, command: ActivateCoreVersion, now: float) -> Rejection | None:
    """The core's handler of `ActivateCoreVersion`: from this record on, the center runs the
    rules of `command.version`. The same version again is a no-op (a retry); a lower one is
    refused; one this binary does not support raises `CoreVersionUnsupported` (the primary
    checks before it logs one, so only replay and a standby can meet it)."""
    state = center.state
    require_supported(command.version, what="core version")
    if command.version < state.core_version:
        return reject(
            Code.core_version_downgrade,
            f"the active core version is {state.core_version}; it cannot go back to {command.version}",
            field="version",
        )
    if command.version == state.core_version:
        return None
    previous = state.core_version
    state.core_version = command.version
    detail = f"{previous} -> {command.version}"
    state.audit.append((now, command.actor, "core_version.activated", detail))
    del state.audit[:-1000]
    # The free-agent heaps hold keys of the former rules: rebuilt from the state, as a center
    # restored from a snapshot taken now would build them.
    center._rebuild_indices()
    center._emit(Audited(at=now, actor=command.actor, action="core_version.activated", detail=detail))
    return None
