"""The durable LMDB store of one node: command log, snapshots and metadata."""

from acd.store.errors import (
    CorruptRecord,
    LogGap,
    StaleEpoch,
    StorageFull,
    StoreError,
    UnsupportedFormat,
    WrongCluster,
)
from acd.store.lmdb_store import RESERVED_META_KEYS, Store, StoreStatistics
from acd.store.records import Record, Snapshot

__all__ = [
    "RESERVED_META_KEYS",
    "CorruptRecord",
    "LogGap",
    "Record",
    "Snapshot",
    "StaleEpoch",
    "StorageFull",
    "Store",
    "StoreError",
    "StoreStatistics",
    "UnsupportedFormat",
    "WrongCluster",
]
