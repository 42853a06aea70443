"""`acd verify`: check that a stopped node's state equals a replay of its log (docs/design.md invariant 7).

Start-up rebuilds the state from the newest snapshot and the log after it. This check rebuilds
it that way too and, when the log still starts at LSN 1 (no retention has pruned it), once
more from nothing by replaying every record; on the way it compares the replay with the
snapshot at the snapshot's LSN. All state hashes must agree, and the final state must pass
the core's full invariant check. The store must not be open elsewhere (stop the node first).
"""

from __future__ import annotations

import msgspec

from acd.core import Center, InvariantViolation, Rejection, commands
from acd.settings import Settings
from acd.store import Store

_BATCH = 2000


class VerifyReport(msgspec.Struct, kw_only=True):
    node: str
    lsn: int
    state_hash: str
    snapshot_lsn: int
    first_lsn: int
    records_replayed: int
    full_replay: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"MISMATCH ({len(self.problems)} problem(s))"
        how = "snapshot + tail and full replay agree" if self.full_replay else "snapshot + tail (log pruned, no full replay)"
        return (
            f"{verdict}: node {self.node} lsn {self.lsn} state_hash {self.state_hash} "
            f"snapshot_lsn {self.snapshot_lsn} first_lsn {self.first_lsn}: {how}"
        )


def _replay(store: Store, center: Center, after: int, until: int, problems: list[str], stop_at: int | None = None) -> tuple[int, str | None]:
    """Apply records after `after` up to `until`; return the LSN reached and the state hash at `stop_at`.

    The records are verified by the store as it reads them (`Store.read`: checksums, LSN
    continuity, epochs; a gap or a damaged record raises `StoreError`), so this loop only
    applies them and reports what the core refuses.
    """
    lsn = after
    hash_at_stop = center.state_hash() if stop_at == after else None
    while lsn < until:
        records = store.read(lsn, limit=_BATCH)
        if not records:
            problems.append(f"the log ends at LSN {lsn}, before LSN {until}")
            break
        for record in records:
            result = center.apply(commands.decode_command(record.payload), record.at)
            if isinstance(result, Rejection):
                problems.append(f"record LSN {record.lsn} is refused on replay: {result.code}: {result.message}")
            lsn = record.lsn
            if lsn == stop_at:
                hash_at_stop = center.state_hash()
    return lsn, hash_at_stop


def verify(settings: Settings, node_name: str) -> VerifyReport:
    """Rebuild the node's state both ways and compare; raises StoreError if the store cannot be read."""
    return rebuild(settings, node_name)[0]


def rebuild(settings: Settings, node_name: str) -> tuple[VerifyReport, Center]:
    """`verify`, also returning the state as start-up rebuilds it (for checks of its content)."""
    problems: list[str] = []
    store = Store(
        settings.data_dir(node_name), cluster=settings.cluster.name, node=node_name,
        map_size_bytes=settings.store.map_size_bytes, map_size_max_bytes=settings.store.map_size_max_bytes,
        migrate=False,  # verifying reads the store as it is
    )
    try:
        last_lsn = store.last_lsn()
        first_lsn = store.first_lsn()
        snapshot = store.latest_snapshot()
        snapshot_lsn = snapshot.lsn if snapshot is not None else 0
        # 1. As start-up does: snapshot, then the tail.
        started = Center.restore(snapshot.state) if snapshot is not None else Center()
        snapshot_hash = started.state_hash() if snapshot is not None else None
        reached, _ = _replay(store, started, snapshot_lsn, last_lsn, problems)
        final_hash = started.state_hash()
        replayed = reached - snapshot_lsn
        # 2. From nothing, when the whole log is still there.
        full = first_lsn == 1 or last_lsn == 0
        if full:
            fresh = Center()
            reached_full, at_snapshot = _replay(store, fresh, 0, last_lsn, problems, stop_at=snapshot_lsn if snapshot else None)
            replayed += reached_full
            if snapshot is not None and at_snapshot != snapshot_hash:
                problems.append(f"the snapshot at LSN {snapshot_lsn} differs from a replay of the log up to it")
            full_hash = fresh.state_hash()
            if full_hash != final_hash:
                problems.append(f"snapshot + tail gives state {final_hash[:16]}, a full replay gives {full_hash[:16]}")
        try:
            started.check_invariants()
        except InvariantViolation as error:
            problems.append(f"invariant broken after replay: {error}")
        report = VerifyReport(
            node=node_name, lsn=reached, state_hash=final_hash, snapshot_lsn=snapshot_lsn, first_lsn=first_lsn,
            records_replayed=replayed, full_replay=full, problems=problems,
        )
        return report, started
    finally:
        store.close()
