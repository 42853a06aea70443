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


class SimStore(Store):
    """`acd.store.Store` whose writes fail while `disk_full()` says so."""

    def __init__(self, path: str | os.PathLike[str], *, disk_full: Callable[[], bool], **options: Any) -> None:
        self._disk_full = disk_full
        super().__init__(path, sync=False, **options)

    def _refuse_if_full(self, what: str) -> None:
        if self._disk_full():
            raise StorageFull(f"cannot write to the store in {self.path}: the disk is full (simulated) during {what}; nothing was written")

    def append(self, records: Sequence[Record], *, forget: Sequence[str] = ()) -> None:
        if records:
            self._refuse_if_full("append")
        super().append(records, forget=forget)

    def set_epoch(self, epoch: int, first_lsn: int) -> None:
        self._refuse_if_full("set_epoch")
        super().set_epoch(epoch, first_lsn)

    def truncate_tail(self, after_lsn: int) -> int:
        self._refuse_if_full("truncate_tail")
        return super().truncate_tail(after_lsn)

    def save_snapshot(self, *, lsn: int, epoch: int, at: float, state: bytes) -> None:
        self._refuse_if_full("save_snapshot")
        super().save_snapshot(lsn=lsn, epoch=epoch, at=at, state=state)

    def install_snapshot(self, snapshot: Snapshot, secrets: dict[str, tuple[int, bytes]] | None = None) -> None:
        self._refuse_if_full("install_snapshot")
        super().install_snapshot(snapshot, secrets=secrets)

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
