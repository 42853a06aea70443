"""Exceptions raised by the durable store.

Every message is written for the operator who reads it in a log: it names the
data directory or the LSN involved and, where one exists, the way out.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises."""


class WrongCluster(StoreError):
    """The data directory belongs to another cluster than the one configured."""


class CorruptRecord(StoreError):
    """A stored record or snapshot failed decoding or its checksum.

    ``lsn`` is the LSN of the damaged entry, or ``None`` when the damage could
    not be tied to one entry (for example a damaged LMDB page).
    """

    def __init__(self, message: str, *, lsn: int | None = None) -> None:
        super().__init__(message)
        self.lsn = lsn


class LogGap(StoreError):
    """The log is not contiguous: ``expected`` was due but ``found`` came instead."""

    def __init__(self, message: str, *, expected: int, found: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class UnsupportedFormat(StoreError):
    """The store's format is not one this binary opens (``supported``); ``found`` is its own."""

    def __init__(self, message: str, *, found: int, supported: tuple[int, ...]) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class StaleEpoch(StoreError):
    """An epoch went backwards, or a record claims an epoch the store has not reached."""


class StorageFull(StoreError):
    """The map is full and may not grow, or the disk is full; nothing was written."""
