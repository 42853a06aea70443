"""Every version this binary states, speaks or reads, in one place (docs/operations.md, "Versions").

A pair is upgraded one node at a time, so for a while two releases run side by side and must
agree on what they exchange and what they leave on disk. Four kinds of version matter:

- `RELEASE`: this binary's release (the project's version in pyproject.toml). It names the
  binary in log lines, in the Hello of every replication and witness connection and in the
  store's metadata; nothing is decided by comparing releases.
- `CORE_VERSIONS`: the core (routing semantics) versions this binary can apply. Today the
  core has one version.
- `PROTOCOL_VERSIONS`: the replication and witness wire protocol versions this binary speaks.
  Each side of a connection lists its own in its Hello; both then use the highest version
  they have in common, and a connection without one is refused (replication/protocol.py).
- `STORE_FORMATS` and `STORE_FORMAT`: the store formats this binary can open, and the one it
  writes. A store at an older format in `STORE_FORMATS` is migrated to `STORE_FORMAT` when a
  node opens it, after a verified backup; a store at a format outside `STORE_FORMATS` is
  refused (acd/store/lmdb_store.py).

A version is a positive integer and only ever grows; a release may stop supporting the oldest
versions, never skip one in the middle.
"""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

DISTRIBUTION: Final = "acd-ha"   # the project's name in pyproject.toml


def _release() -> str:
    """The project's version: from pyproject.toml in a source checkout (always current there),
    else from the installed package's metadata (which was built from that same file)."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        project = {}
    if project.get("name") == DISTRIBUTION and isinstance(project.get("version"), str):
        return str(project["version"])
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


# This binary's release, e.g. "0.1.0".
RELEASE: Final[str] = _release()

# Core (routing semantics) versions this binary can apply, oldest first. A node applies each
# record of the log with the semantics of the version active at that record, so a binary must
# support every version still active in its cluster's log (acd/core/versions.py has the rules).
CORE_VERSIONS: Final[tuple[int, ...]] = (1,)
# The test-only "next" core version, and the environment switch that makes a binary support it
# (tests and upgrade drills only: the shipped binary cannot activate it).
CORE_VERSION_NEXT: Final = 2
NEXT_CORE_ENV: Final = "ACD_ENABLE_NEXT_CORE"


def supported_core_versions(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The (lowest, highest) core version this binary applies: `CORE_VERSIONS`, extended to
    `CORE_VERSION_NEXT` when the environment sets `NEXT_CORE_ENV=1`."""
    environ = os.environ if environ is None else environ
    low, high = CORE_VERSIONS[0], CORE_VERSIONS[-1]
    if environ.get(NEXT_CORE_ENV) == "1":
        high = max(high, CORE_VERSION_NEXT)
    return (low, high)

# Replication and witness wire protocol versions this binary speaks, oldest first. Version 1
# is the message set of replication/protocol.py as it stands.
PROTOCOL_VERSIONS: Final[tuple[int, ...]] = (1,)
# What a peer whose Hello lists no versions speaks: its binary predates the list, and every
# such binary speaks version 1.
LEGACY_PROTOCOL_VERSIONS: Final[tuple[int, ...]] = (1,)

# Store formats this binary can open, oldest first, and the one it writes (the newest).
# Format 1: the log, snapshots, sealing keys and the store's identity (cluster, node, epoch,
#   epoch history, last LSN) in the meta database.
# Format 2: also the release of the binary that last opened the store (meta key "release")
#   and the history of the store's format migrations (meta key "migrations": from, to,
#   release, time and the path of the verified backup taken before each).
STORE_FORMATS: Final[tuple[int, ...]] = (1, 2)
STORE_FORMAT: Final[int] = STORE_FORMATS[-1]


def highest_common(mine: Iterable[int], theirs: Iterable[int]) -> int | None:
    """The highest version both sides list, or None when they have none in common."""
    common = {version for version in mine if version > 0} & set(theirs)
    return max(common) if common else None


def describe(versions: Iterable[int]) -> str:
    """Versions for a log line: "1", "1-3" for a contiguous run, "1, 3" otherwise; "none"."""
    ordered = sorted(set(versions))
    if not ordered:
        return "none"
    if len(ordered) > 1 and ordered[-1] - ordered[0] == len(ordered) - 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(str(version) for version in ordered)
