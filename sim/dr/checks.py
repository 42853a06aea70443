"""The verdicts after every run, one function per invariant of docs/design.md.

- `lost_writes` (invariant 1): every acknowledged write is in the final log at its LSN, with
  its epoch and its bytes. Where retention pruned the log, the final epoch history must
  still give that LSN to the ack's epoch (a later epoch starting at or before it would mean
  the record was overwritten).
- `split_brain` (invariant 2): no write of epoch E is acknowledged at or after the instant a
  node was elected for an epoch above E, and every ack comes from the node elected for its
  epoch. This is the lease's promise: the old primary stops acknowledging before anyone can
  win the next election. Two different-epoch acks at one instant are caught by it too, and
  so are two nodes promoted for the same epoch (election safety), acknowledged or not.
- `replay` (invariant 7): each node's store, replayed from its snapshot and from LSN 1
  (`acd.node.verify`), gives the state hash the node held in memory at the end, and the
  replayed state passes the core's full invariant check.
- `convergence` (liveness): after healing, one primary, its standby in sync (not behind),
  both at the same LSN with the same state hash, within the liveness deadline.
- `terminal` (invariant 8): after the day is finished, every interaction is terminal and
  the statistics count each exactly once (`Center.check_invariants`).
- `deaths`: a node that died of anything but a full disk has a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acd.core import Center, InvariantViolation
from acd.core.state import TERMINAL
from acd.node.verify import verify
from acd.settings import Settings

from .workload import Ack


@dataclass
class NodeFinal:
    """A node's state at the end of the run, captured in one instant."""

    name: str
    up: bool
    role: str = "down"
    lsn: int = 0
    state_hash: str = ""
    first_lsn: int = 1
    records: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    epoch_history: dict[int, int] = field(default_factory=dict)
    open_interactions: list[str] = field(default_factory=list)
    invariant_error: str = ""


def epoch_of(lsn: int, history: dict[int, int]) -> int:
    """The epoch whose records cover `lsn` according to an epoch history {epoch: first LSN}."""
    covering = [epoch for epoch, first in history.items() if first <= lsn]
    return max(covering) if covering else 0


def lost_writes(acks: list[Ack], reference: NodeFinal | None, *, mode: str = "sync") -> tuple[list[str], int]:
    """The violations, and (async mode) how many writes were lost inside the loss window.

    Async mode acknowledges before the standby has a write (docs/design.md: the loss window), so
    a failover may lose it; a write lost without a later epoch is still a violation there.
    """
    if reference is None:
        return [f"acknowledged write lsn {ack.lsn} cannot be checked: no node is up" for ack in acks[:1]], 0
    problems: list[str] = []
    in_window = 0
    final_epoch = max(reference.epoch_history, default=0)
    for ack in acks:
        problem = _check_ack(ack, reference)
        if problem is None:
            continue
        if mode == "async" and ack.epoch < final_epoch:
            in_window += 1
        else:
            problems.append(problem)
    return problems, in_window


def lost(acks: list[Ack], reference: NodeFinal | None) -> list[Ack]:
    """The acknowledged writes missing from the reference's final log (for the chart)."""
    if reference is None:
        return []
    return [ack for ack in acks if _check_ack(ack, reference) is not None]


def _check_ack(ack: Ack, reference: NodeFinal) -> str | None:
    """Why `ack` is not in the reference's final log, or None."""
    record = reference.records.get(ack.lsn)
    what = f"{ack.kind} {ack.subject} acked by {ack.node} at {ack.at:.6f} as lsn {ack.lsn} epoch {ack.epoch}"
    if record is not None:
        epoch, payload = record
        if epoch != ack.epoch or payload != ack.payload:
            bytes_note = "other bytes" if payload != ack.payload else "the same bytes"
            return f"acknowledged write lost: {what}; the final log of {reference.name} holds epoch {epoch}, {bytes_note} there"
        return None
    if ack.lsn > reference.lsn:
        return f"acknowledged write lost: {what}; the final log of {reference.name} ends at lsn {reference.lsn}"
    if ack.lsn < reference.first_lsn:
        covering = epoch_of(ack.lsn, reference.epoch_history)
        if covering != ack.epoch:
            return f"acknowledged write lost: {what}; the final epoch history of {reference.name} gives lsn {ack.lsn} to epoch {covering}"
        return None
    return f"acknowledged write lost: {what}; lsn {ack.lsn} is missing from the final log of {reference.name}"


def split_brain(acks: list[Ack], promotions: list[tuple[float, str, int]]) -> list[str]:
    problems: list[str] = []
    elected: dict[int, tuple[float, str]] = {}
    for at, node, epoch in promotions:
        first = elected.setdefault(epoch, (at, node))
        if first[1] != node:
            # Election safety: one leader per epoch, whether or not the second one got to
            # acknowledge anything (its records would still collide with the first's).
            problems.append(f"split brain: {node} became primary for epoch {epoch} at {at:.6f}, "
                            f"which {first[1]} had won at {first[0]:.6f}")
    # For each epoch, the earliest instant any higher epoch was won.
    later_win: dict[int, tuple[float, int, str]] = {}
    best: tuple[float, int, str] | None = None
    for epoch in sorted(elected, reverse=True):
        later_win[epoch] = best if best is not None else (float("inf"), 0, "")
        at, node = elected[epoch]
        if best is None or at < best[0]:
            best = (at, epoch, node)
    for ack in acks:
        owner = elected.get(ack.epoch)
        if owner is None:
            problems.append(f"write lsn {ack.lsn} acknowledged by {ack.node} in epoch {ack.epoch}, which nobody was elected for")
            continue
        if owner[1] != ack.node:
            problems.append(f"write lsn {ack.lsn} acknowledged by {ack.node} in epoch {ack.epoch}, which {owner[1]} was elected for")
        bound = later_win[ack.epoch]
        if ack.at >= bound[0]:
            problems.append(
                f"split brain: {ack.node} acknowledged {ack.kind} {ack.subject} (lsn {ack.lsn}, epoch {ack.epoch}) at {ack.at:.6f}, "
                f"after {bound[2]} was elected for epoch {bound[1]} at {bound[0]:.6f}"
            )
    return problems


def replay(settings: Settings, finals: dict[str, NodeFinal]) -> list[str]:
    problems: list[str] = []
    for name, final in finals.items():
        report = verify(settings, name)
        for problem in report.problems:
            problems.append(f"replay of {name}'s store: {problem}")
        if final.up and final.state_hash:
            if report.lsn != final.lsn:
                problems.append(f"replay of {name}'s store reaches lsn {report.lsn}, the node held lsn {final.lsn}")
            elif report.state_hash != final.state_hash:
                problems.append(
                    f"replay of {name}'s store gives state {report.state_hash[:16]} at lsn {report.lsn}, "
                    f"the node held {final.state_hash[:16]} in memory"
                )
    return problems


def terminal(final: NodeFinal | None) -> list[str]:
    if final is None:
        return ["no primary at the end: the day could not be finished"]
    problems = [f"interaction {call} is not terminal after the day was finished" for call in final.open_interactions[:10]]
    if final.invariant_error:
        problems.append(f"core invariant broken on {final.name}: {final.invariant_error}")
    return problems


def capture(name: str, up: bool, node: object | None) -> NodeFinal:
    """Read a node's in-memory state and its whole log (synchronously: one instant)."""
    from acd.node.node import Node

    if not up or not isinstance(node, Node):
        return NodeFinal(name, False)
    store = node.store
    records: dict[int, tuple[int, bytes]] = {}
    after = store.first_lsn() - 1
    while True:
        batch = store.read(after, 2000)
        if not batch:
            break
        for record in batch:
            records[record.lsn] = (record.epoch, record.payload)
        after = batch[-1].lsn
    center: Center = node.center
    open_calls = [call.id for call in center.state.interactions.values() if call.state not in TERMINAL]
    error = ""
    try:
        center.check_invariants()
    except InvariantViolation as violation:
        error = str(violation)
    return NodeFinal(
        name, True, role=node.role, lsn=node.lsn, state_hash=center.state_hash(), first_lsn=store.first_lsn(),
        records=records, epoch_history=store.epoch_history(), open_interactions=open_calls, invariant_error=error,
    )
