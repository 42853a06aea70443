"""The two value types the store persists: log records and state snapshots.

Both carry a crc32 over their fields so that damage is detected when a value
is read back, not later when a corrupted command is replayed into the call
distributor's state.
"""

from __future__ import annotations

import struct
import zlib
from typing import Self

import msgspec

from acd.store.errors import CorruptRecord, StoreError

# The checksum covers a fixed binary header (LSN, epoch, timestamp) followed
# by the body.  A fixed layout, rather than the msgpack encoding, keeps the
# checksum independent of how msgspec chooses to encode integers and floats.
_HEADER = struct.Struct(">QQd")


def _checksum(lsn: int, epoch: int, at: float, body: bytes) -> int:
    """Return the crc32 of the header and body, or raise ValueError when a field does not fit."""
    try:
        header = _HEADER.pack(lsn, epoch, at)
    except struct.error as exc:
        raise ValueError(
            f"lsn={lsn!r}, epoch={epoch!r}, at={at!r} cannot be encoded: {exc}"
        ) from exc
    # Feeding the body separately avoids copying a large snapshot just to checksum it.
    return zlib.crc32(body, zlib.crc32(header))


class Record(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of the replicated command log.

    `secret` travels with the record (to the standby, in a shipment) but is never written
    into the log: the store keeps it apart, in its secrets database, so that it can be
    destroyed while the record stays (`SECRET_ID_BYTES` bytes of key id, then the key). An
    arrival's caller number is in the log only sealed under such a key, and the key goes
    once the interaction is over: old records, snapshots and backups keep only ciphertext.
    """

    lsn: int
    epoch: int
    at: float
    payload: bytes
    checksum: int
    secret: bytes = b""

    @classmethod
    def make(cls, *, lsn: int, epoch: int, at: float, payload: bytes, secret: bytes = b"") -> Self:
        """Build a record and compute its checksum."""
        if lsn < 1:
            raise StoreError(f"a record's LSN must be at least 1, got {lsn}")
        if epoch < 1:
            raise StoreError(f"record LSN {lsn}: epoch must be at least 1, got {epoch}")
        payload = bytes(payload)
        at = float(at)
        try:
            checksum = _checksum(lsn, epoch, at, payload)
        except ValueError as exc:
            raise StoreError(f"record LSN {lsn} cannot be built: {exc}") from exc
        return cls(lsn=lsn, epoch=epoch, at=at, payload=payload, checksum=checksum, secret=secret)

    def verify(self) -> None:
        """Raise CorruptRecord unless the checksum matches the fields."""
        try:
            computed = _checksum(self.lsn, self.epoch, self.at, self.payload)
        except ValueError as exc:
            raise CorruptRecord(f"record LSN {self.lsn} is damaged: {exc}", lsn=self.lsn) from exc
        if computed != self.checksum:
            raise CorruptRecord(
                f"record LSN {self.lsn} fails its checksum (stored {self.checksum:#010x}, "
                f"computed {computed:#010x}); the record was damaged after it was written",
                lsn=self.lsn,
            )


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The encoded state of the call distributor after applying the record at ``lsn``.

    ``epoch`` is the epoch the snapshot was taken in: at least the epoch of
    the record at ``lsn``, and possibly later.
    """

    lsn: int
    epoch: int
    at: float
    state: bytes
    checksum: int

    @classmethod
    def make(cls, *, lsn: int, epoch: int, at: float, state: bytes) -> Self:
        """Build a snapshot and compute its checksum."""
        if lsn < 1:
            raise StoreError(f"a snapshot's LSN must be at least 1, got {lsn}")
        if epoch < 1:
            raise StoreError(f"snapshot at LSN {lsn}: epoch must be at least 1, got {epoch}")
        state = bytes(state)
        at = float(at)
        try:
            checksum = _checksum(lsn, epoch, at, state)
        except ValueError as exc:
            raise StoreError(f"snapshot at LSN {lsn} cannot be built: {exc}") from exc
        return cls(lsn=lsn, epoch=epoch, at=at, state=state, checksum=checksum)

    def verify(self) -> None:
        """Raise CorruptRecord unless the checksum matches the fields."""
        try:
            computed = _checksum(self.lsn, self.epoch, self.at, self.state)
        except ValueError as exc:
            raise CorruptRecord(
                f"snapshot at LSN {self.lsn} is damaged: {exc}", lsn=self.lsn
            ) from exc
        if computed != self.checksum:
            raise CorruptRecord(
                f"snapshot at LSN {self.lsn} fails its checksum (stored {self.checksum:#010x}, "
                f"computed {computed:#010x}); the snapshot was damaged after it was written",
                lsn=self.lsn,
            )


_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


SECRET_ID_BYTES = 32  # the key id, as hex text


def encode(value: Record | Snapshot) -> bytes:
    """Encode a record (without its secret) or snapshot for storage."""
    if type(value) is Record and value.secret:
        value = msgspec.structs.replace(value, secret=b"")
    return _encoder.encode(value)


def decode_record(key_lsn: int, data: bytes | memoryview) -> Record:
    """Decode and verify the log value stored under ``key_lsn``."""
    try:
        record = _record_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptRecord(
            f"record LSN {key_lsn} cannot be decoded ({exc}); the log entry is damaged",
            lsn=key_lsn,
        ) from exc
    if record.lsn != key_lsn:
        raise CorruptRecord(
            f"the log entry stored under LSN {key_lsn} claims LSN {record.lsn}; the log is damaged",
            lsn=key_lsn,
        )
    record.verify()
    return record


def decode_snapshot(key_lsn: int, data: bytes | memoryview) -> Snapshot:
    """Decode and verify the snapshot stored under ``key_lsn``."""
    try:
        snapshot = _snapshot_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptRecord(
            f"snapshot at LSN {key_lsn} cannot be decoded ({exc}); the snapshot is damaged",
            lsn=key_lsn,
        ) from exc
    if snapshot.lsn != key_lsn:
        raise CorruptRecord(
            f"the snapshot stored under LSN {key_lsn} claims LSN {snapshot.lsn}; it is damaged",
            lsn=key_lsn,
        )
    snapshot.verify()
    return snapshot
