"""What a node and its replication layer know of each other, and nothing more.

The node (`acd.node.Node`) runs the pipeline and owns the store; the replication layer
(`replication`) decides the role and holds the lease. Each sees the other only through the
small interfaces here, so neither imports the other:

- `Replicator`: what the node's pipeline asks of replication (may I accept writes, ship this
  batch, wait until the standby holds it, withdraw what failed to commit). A standalone node
  uses `Standalone`.
- `ReplicaNode`: what replication asks of the node (become primary at an epoch, step down,
  append and apply records the primary shipped, snapshots, a view of the store).
- `Role`: primary or standby; only the replication layer changes it (a standalone node is
  always primary).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from acd.store import Record, Snapshot

if TYPE_CHECKING:
    import prometheus_client

    from acd.core import Rejection, commands
    from acd.locks import QuickLock
    from acd.settings import NodeSection


class Role(enum.StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"


class NodeError(Exception):
    """Base of the node's own errors (translated to HTTP by the API layer)."""


class NotPrimary(NodeError):
    """This node does not accept writes now; `primary` is the primary's API address if known."""

    def __init__(self, message: str, primary: str | None = None) -> None:
        super().__init__(message)
        self.primary = primary


class Replicator(Protocol):
    """What the pipeline needs from replication (a standalone node uses `Standalone`)."""

    def can_accept(self) -> bool: ...

    def primary_api(self) -> str | None: ...

    def ship(self, records: Sequence[Record]) -> None: ...

    def retract(self, after_lsn: int) -> None: ...

    async def replicate(self, records: Sequence[Record]) -> None: ...

    def lease_valid(self) -> bool: ...


class Standalone:
    """A single node with no standby and no witness: always primary, nothing to ship."""

    def can_accept(self) -> bool:
        return True

    def primary_api(self) -> str | None:
        return None

    def ship(self, records: Sequence[Record]) -> None:
        return None

    def retract(self, after_lsn: int) -> None:
        return None

    async def replicate(self, records: Sequence[Record]) -> None:
        return None

    def lease_valid(self) -> bool:
        return True


class ReplicaStore(Protocol):
    """The node's store as replication sees it: a read view of the log, its epochs and
    snapshots, the vote it must keep durably, and the few writes a standby makes on the
    primary's word (an epoch, a truncated tail, an installed snapshot)."""

    def last_lsn(self) -> int: ...

    def first_lsn(self) -> int: ...

    def read(self, after_lsn: int, limit: int = 1000) -> list[Record]: ...

    def epoch(self) -> int: ...

    def epoch_history(self) -> dict[int, int]: ...

    def latest_snapshot(self) -> Snapshot | None: ...

    def secrets(self) -> dict[str, tuple[int, bytes]]: ...

    def get_meta(self, key: str) -> bytes | None: ...

    def put_meta(self, key: str, value: bytes) -> None: ...

    def set_epoch(self, epoch: int, first_lsn: int) -> None: ...

    def truncate_tail(self, after_lsn: int) -> int: ...

    def install_snapshot(self, snapshot: Snapshot, secrets: dict[str, tuple[int, bytes]] | None = None,
                         epoch_history: dict[int, int] | None = None) -> None: ...


class ReplicaNode(Protocol):
    """What the replication layer needs from its node (`acd.node.Node` is one)."""

    name: str
    section: NodeSection
    batch_lock: QuickLock        # held while a batch is applied but not yet durable
    replicator: Replicator       # set by the replication layer
    lsn: int                     # the last applied LSN

    @property
    def store(self) -> ReplicaStore: ...

    @property
    def role(self) -> Role: ...

    @property
    def metrics_registry(self) -> prometheus_client.CollectorRegistry: ...

    def become_primary(self, epoch: int) -> None:
        """Start epoch `epoch` after the log's last record, and accept writes."""

    def step_down(self) -> None:
        """Stop accepting writes (a batch in flight fails at its lease check)."""

    async def append_records(self, records: Sequence[Record], forget: Sequence[str] = ()) -> None: ...

    def apply_replicated(self, records: Sequence[Record]) -> None: ...

    def reload(self, *, publish: bool = True) -> None: ...

    async def snapshot_settled(self) -> None: ...

    async def snapshot_now(self) -> Snapshot: ...

    async def submit(self, command: commands.Command) -> Any | Rejection: ...

    def config_version(self) -> int: ...

    def take_state_hashes(self) -> list[tuple[int, str]]:
        """State hashes (LSN, hash) computed since the last call, of durable records only."""

    def rehash_state(self) -> None:
        """Forget the hashes not taken yet and hash the state as it is now."""

    async def apply_settings_center(self, actor: str = "startup") -> Any: ...
