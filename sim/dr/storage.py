"""Crashable storage for the cluster simulator: the real LMDB store in a scratch directory.

A simulated crash is the cancellation of the node's tasks, not a power cut: the process dies
between two `await`s, never inside a commit, so whatever `Store.append` (or any other write)
returned is durable and everything the node still held only in memory is gone. That is the
crash semantics of the real store with `sync=True` too, so the simulation runs the very same
`acd.store.Store` with `sync=False` (no fsync: the page cache outlives a cancelled task) in a
directory on tmpfs, and a restart opens the same directory again.

A full disk is a flag: while it is set every write transaction raises `StorageFull` before
touching LMDB, as the store does when its map cannot grow (nothing is written). Reads go on.
A slow disk is not here but at the `store.append` fault point (`acd.buggify`), because only
an `await` can take virtual time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from acd.store import Record, Snapshot, StorageFull, Store


class DurableLog:
    """What a node's disk holds, as the checks see it: outlives the process (and its store).

    `epochs` maps each LSN written to the store to its epoch (kept when retention prunes the
    log: the records live on in the snapshot); a truncated tail is removed; an installed
    snapshot (the primary's state) stands for every record at or below its LSN of an epoch
    up to its own: the records are gone, so that is as precise as the continuous checks get
    there (the final check compares whole logs). The continuous checks ask
    `holds(lsn, epoch)` of a node that may be down at that instant.
    """

    __slots__ = ("epochs", "base_lsn", "base_epoch", "anomalies", "on_forget")

    def __init__(self) -> None:
        self.epochs: dict[int, int] = {}
        self.base_lsn = 0
        self.base_epoch = 0
        self.anomalies: list[str] = []   # records written against the log's own epoch history
        # Told of the (LSN, epoch) pairs the disk held and no longer holds, after a truncated
        # tail or an installed snapshot (the monitor: an acknowledged one is a violation).
        self.on_forget: Callable[[list[tuple[int, int]]], None] | None = None

    def forgot(self, before: dict[int, int]) -> None:
        """Report what of `before` (the epochs held until now) the disk no longer holds."""
        if self.on_forget is None:
            return
        gone = [(lsn, epoch) for lsn, epoch in before.items() if not self.holds(lsn, epoch)]
        if gone:
            self.on_forget(gone)

    def holds(self, lsn: int, epoch: int) -> bool:
        found = self.epochs.get(lsn)
        if found is not None:
            return found == epoch
        return lsn <= self.base_lsn and epoch <= self.base_epoch


class SimStore(Store):
    """`acd.store.Store` whose writes fail while `disk_full()` says so."""

    def __init__(self, path: str | os.PathLike[str], *, disk_full: Callable[[], bool], disk: DurableLog | None = None,
                 **options: Any) -> None:
        self._disk_full = disk_full
        self.disk = disk if disk is not None else DurableLog()
        super().__init__(path, sync=False, **options)

    def _refuse_if_full(self, what: str) -> None:
        if self._disk_full():
            raise StorageFull(f"cannot write to the store in {self.path}: the disk is full (simulated) during {what}; nothing was written")

    def append(self, records: Sequence[Record], *, forget: Sequence[str] = ()) -> None:
        if records:
            self._refuse_if_full("append")
        super().append(records, forget=forget)
        epochs = self.disk.epochs
        history = self.epoch_history()
        for record in records:
            epochs[record.lsn] = record.epoch
            # Each record belongs to the epoch its LSN falls in: an older epoch's record landing
            # after a newer epoch began here (its batch outlived an election) is a forked log.
            covering = [epoch for epoch, first in history.items() if first <= record.lsn]
            if covering and max(covering) != record.epoch and not self.disk.anomalies:
                self.disk.anomalies.append(f"record lsn {record.lsn} of epoch {record.epoch} written where the epoch "
                                           f"history gives epoch {max(covering)} ({dict(sorted(history.items()))})")

    def set_epoch(self, epoch: int, first_lsn: int) -> None:
        self._refuse_if_full("set_epoch")
        super().set_epoch(epoch, first_lsn)

    def truncate_tail(self, after_lsn: int) -> int:
        self._refuse_if_full("truncate_tail")
        removed = super().truncate_tail(after_lsn)
        epochs = self.disk.epochs
        before = dict(epochs)
        for lsn in [lsn for lsn in epochs if lsn > after_lsn]:
            del epochs[lsn]
        self.disk.forgot(before)
        return removed

    def save_snapshot(self, *, lsn: int, epoch: int, at: float, state: bytes) -> None:
        self._refuse_if_full("save_snapshot")
        super().save_snapshot(lsn=lsn, epoch=epoch, at=at, state=state)

    def install_snapshot(self, snapshot: Snapshot, secrets: dict[str, tuple[int, bytes]] | None = None,
                         epoch_history: dict[int, int] | None = None) -> None:
        self._refuse_if_full("install_snapshot")
        super().install_snapshot(snapshot, secrets=secrets, epoch_history=epoch_history)
        before = dict(self.disk.epochs)
        self.disk.epochs.clear()
        self.disk.base_lsn = snapshot.lsn
        self.disk.base_epoch = snapshot.epoch
        self.disk.forgot(before)

    def truncate_log(self, before_lsn: int) -> int:
        self._refuse_if_full("truncate_log")
        return super().truncate_log(before_lsn)

    def put_meta(self, key: str, value: bytes) -> None:
        self._refuse_if_full("put_meta")
        super().put_meta(key, value)


def scratch_root() -> Path:
    """A per-process directory for the runs' data, on tmpfs when there is one."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"acd-dr-{os.getpid()}-", dir=parent))


def wipe(directory: Path) -> None:
    """Empty a run's directory (the previous run's stores are closed by then)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
