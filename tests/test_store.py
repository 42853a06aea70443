"""Behaviour of the durable LMDB store (acd.store)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import lmdb
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.store import (
    CorruptRecord,
    LogGap,
    Record,
    Snapshot,
    StaleEpoch,
    StorageFull,
    Store,
    StoreError,
    WrongCluster,
)

CLUSTER = "citizens-line"
NODE = "node-a"


def records(first_lsn: int, count: int, *, epoch: int = 1, size: int = 16) -> list[Record]:
    return [
        Record.make(
            lsn=lsn,
            epoch=epoch,
            at=1_700_000_000.0 + lsn,
            payload=f"cmd-{lsn}-".encode() + b"x" * size,
        )
        for lsn in range(first_lsn, first_lsn + count)
    ]


def open_store(path: Path, **kwargs: object) -> Store:
    return Store(path, cluster=CLUSTER, node=NODE, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path) -> Store:
    s = open_store(store_path)
    s.set_epoch(1, 1)
    yield s  # type: ignore[misc]
    s.close()


def raw_put(path: Path, db_name: bytes, key: bytes, value: bytes) -> None:
    """Write straight into one of the store's databases, behind the store's back."""
    env = lmdb.open(str(path), max_dbs=8)
    try:
        db = env.open_db(db_name, create=False)
        with env.begin(write=True) as txn:
            txn.put(key, value, db=db)
    finally:
        env.close()


# --------------------------------------------------------------- append/read


def test_appended_records_read_back_unchanged(store: Store) -> None:
    written = records(1, 10)
    store.append(written)
    assert store.read(0) == written
    assert store.read(4, limit=3) == written[4:7]
    assert store.read(10) == []
    assert (store.first_lsn(), store.last_lsn()) == (1, 10)


def test_new_store_is_empty(store_path: Path) -> None:
    with open_store(store_path) as s:
        assert (s.last_lsn(), s.first_lsn(), s.epoch()) == (0, 1, 0)
        assert s.epoch_history() == {}
        assert s.latest_snapshot() is None
        assert s.read(0) == []


def test_a_batch_of_many_records_is_one_commit(store: Store) -> None:
    before = store.statistics().commits
    store.append(records(1, 500))
    stats = store.statistics()
    assert stats.commits == before + 1
    assert stats.records == 500
    assert len(store.read(0, limit=10_000)) == 500


def test_empty_batch_writes_nothing(store: Store) -> None:
    before = store.statistics().commits
    store.append([])
    assert store.statistics().commits == before


def test_records_and_epoch_survive_reopen(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.set_epoch(3, 6)
        s.append(records(6, 2, epoch=3))
        s.put_meta("replication.acked", b"\x07")
    with open_store(store_path) as s:
        assert s.last_lsn() == 7
        assert s.epoch() == 3
        assert s.epoch_history() == {1: 1, 3: 6}
        assert s.get_meta("replication.acked") == b"\x07"
        assert [r.epoch for r in s.read(0)] == [1] * 5 + [3, 3]


# ----------------------------------------------------------- refused batches


def test_lsn_gap_is_refused_and_nothing_is_written(store: Store) -> None:
    store.append(records(1, 3))
    batch = records(4, 2) + records(7, 1)
    with pytest.raises(LogGap) as caught:
        store.append(batch)
    assert (caught.value.expected, caught.value.found) == (6, 7)
    assert store.last_lsn() == 3
    assert store.read(0) == records(1, 3)


def test_batch_not_continuing_the_log_is_refused(store: Store) -> None:
    store.append(records(1, 3))
    with pytest.raises(LogGap, match="continues at LSN 4"):
        store.append(records(3, 2))
    assert store.last_lsn() == 3


def test_epoch_going_backwards_is_refused(store: Store) -> None:
    store.set_epoch(2, 1)
    store.append(records(1, 2, epoch=2))
    with pytest.raises(StaleEpoch, match="epochs never go back"):
        store.append(records(3, 1, epoch=1))
    assert store.last_lsn() == 2


def test_record_from_a_future_epoch_is_refused(store: Store) -> None:
    with pytest.raises(StaleEpoch, match="set_epoch"):
        store.append(records(1, 1, epoch=5))
    assert store.last_lsn() == 0


def test_epoch_can_only_increase(store: Store) -> None:
    store.set_epoch(4, 1)
    with pytest.raises(StaleEpoch, match="already at epoch 4"):
        store.set_epoch(4, 1)
    with pytest.raises(StaleEpoch):
        store.set_epoch(2, 1)
    assert store.epoch() == 4
    assert store.epoch_history() == {1: 1, 4: 1}


def test_record_with_a_wrong_checksum_is_refused(store: Store) -> None:
    good = records(1, 1)[0]
    bad = msgspec.structs.replace(good, payload=b"tampered")
    with pytest.raises(CorruptRecord) as caught:
        store.append([bad])
    assert caught.value.lsn == 1
    assert store.last_lsn() == 0


# ------------------------------------------------------------ damaged data


def encoded_record_with_payload_changed(lsn: int) -> bytes:
    original = records(lsn, 1)[0]
    return msgspec.msgpack.encode(msgspec.structs.replace(original, payload=b"changed"))


@pytest.mark.parametrize(
    "damage",
    [b"\xc1 definitely not msgpack", encoded_record_with_payload_changed(3)],
    ids=["undecodable", "checksum-mismatch"],
)
def test_corrupt_record_is_detected_at_open_naming_its_lsn(store_path: Path, damage: bytes) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
    raw_put(store_path, b"log", (3).to_bytes(8, "big"), damage)
    with pytest.raises(CorruptRecord, match="LSN 3") as caught:
        open_store(store_path)
    assert caught.value.lsn == 3


def test_record_under_the_wrong_key_is_detected_at_open(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
    raw_put(store_path, b"log", (2).to_bytes(8, "big"), msgspec.msgpack.encode(records(4, 1)[0]))
    with pytest.raises(CorruptRecord, match="LSN 2"):
        open_store(store_path)


def test_corrupt_record_before_the_snapshot_is_detected_on_read(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.save_snapshot(lsn=4, epoch=1, at=1.0, state=b"state@4")
    raw_put(store_path, b"log", (2).to_bytes(8, "big"), encoded_record_with_payload_changed(2))
    # Opening verifies only the tail after the snapshot, so it succeeds.
    with open_store(store_path) as s:
        assert s.read(3) == records(4, 2)
        with pytest.raises(CorruptRecord, match="LSN 2"):
            s.read(0)


def test_missing_record_in_the_tail_is_detected_at_open(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
    env = lmdb.open(str(store_path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.delete((3).to_bytes(8, "big"), db=env.open_db(b"log", txn=txn, create=False))
    env.close()
    with pytest.raises(LogGap) as caught:
        open_store(store_path)
    assert (caught.value.expected, caught.value.found) == (3, 4)


def test_epoch_going_backwards_on_disk_is_detected_at_open(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(2, 1)
        s.append(records(1, 3, epoch=2))
    older = records(3, 1, epoch=1)[0]  # a valid checksum, but an older epoch
    raw_put(store_path, b"log", (3).to_bytes(8, "big"), msgspec.msgpack.encode(older))
    with pytest.raises(StaleEpoch, match="LSN 3"):
        open_store(store_path)


def test_corrupt_snapshot_is_detected(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.save_snapshot(lsn=5, epoch=1, at=1.0, state=b"state@5")
    snapshot = Snapshot.make(lsn=5, epoch=1, at=1.0, state=b"state@5")
    damaged = msgspec.structs.replace(snapshot, state=b"state@X")
    raw_put(store_path, b"snapshots", (5).to_bytes(8, "big"), msgspec.msgpack.encode(damaged))
    with pytest.raises(CorruptRecord, match="snapshot at LSN 5"):
        open_store(store_path)


@pytest.mark.parametrize("keep", ["half", "one-page", "zero"])
def test_truncated_data_file_is_refused_at_open(store_path: Path, keep: str) -> None:
    with open_store(store_path, sync=False) as s:
        s.set_epoch(1, 1)
        for first in range(1, 401, 50):
            s.append(records(first, 50, size=3000))
    data = store_path / "data.mdb"
    size = data.stat().st_size
    assert size > 1_000_000
    new_size = {"half": size // 2, "one-page": 4096, "zero": 0}[keep]
    os.truncate(data, new_size)
    with pytest.raises(StoreError, match="truncated|empty") as caught:
        open_store(store_path)
    assert not isinstance(caught.value, lmdb.Error)
    assert "data.mdb" in str(caught.value)


def test_directory_without_an_lmdb_file_is_refused(store_path: Path) -> None:
    store_path.mkdir()
    (store_path / "data.mdb").write_bytes(b"this is a text file, not a database\n" * 300)
    with pytest.raises(StoreError, match="not an LMDB data file"):
        open_store(store_path)


def test_lmdb_environment_of_another_program_is_refused(store_path: Path) -> None:
    env = lmdb.open(str(store_path))
    with env.begin(write=True) as txn:
        txn.put(b"some-key", b"some-value")
    env.close()
    with pytest.raises(StoreError, match="not an ACD store"):
        open_store(store_path)


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        open_store(path)


# --------------------------------------------------------------- identity


def test_another_clusters_directory_is_refused(store_path: Path) -> None:
    open_store(store_path).close()
    with pytest.raises(WrongCluster) as caught:
        Store(store_path, cluster="other-cluster", node=NODE)
    assert CLUSTER in str(caught.value)
    assert "other-cluster" in str(caught.value)


def test_another_nodes_directory_is_refused(store_path: Path) -> None:
    open_store(store_path).close()
    with pytest.raises(StoreError, match="node-a"):
        Store(store_path, cluster=CLUSTER, node="node-b")


def test_directory_already_open_is_refused(store: Store, store_path: Path) -> None:
    with pytest.raises(StoreError, match="already open"):
        open_store(store_path)
    store.append(records(1, 1))
    assert store.last_lsn() == 1


def test_directory_can_be_reopened_after_close(store_path: Path) -> None:
    open_store(store_path).close()
    s = open_store(store_path)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.read(0)


# ---------------------------------------------------------------- snapshots


def test_saved_snapshot_is_the_latest(store: Store) -> None:
    store.append(records(1, 10))
    store.save_snapshot(lsn=4, epoch=1, at=2.0, state=b"state@4")
    store.save_snapshot(lsn=8, epoch=1, at=3.0, state=b"state@8")
    latest = store.latest_snapshot()
    assert latest == Snapshot.make(lsn=8, epoch=1, at=3.0, state=b"state@8")
    assert store.statistics().snapshot_lsn == 8


def test_only_the_newest_snapshots_are_kept(store_path: Path) -> None:
    with open_store(store_path, snapshots_kept=2) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 10))
        for lsn in (2, 4, 6, 8):
            s.save_snapshot(lsn=lsn, epoch=1, at=1.0, state=b"s%d" % lsn)
    env = lmdb.open(str(store_path), max_dbs=8, readonly=True)
    with env.begin() as txn:
        keys = [
            int.from_bytes(k, "big")
            for k, _ in txn.cursor(env.open_db(b"snapshots", txn=txn, create=False))
        ]
    env.close()
    assert keys == [6, 8]


def test_snapshot_beyond_the_log_is_refused(store: Store) -> None:
    store.append(records(1, 3))
    with pytest.raises(StoreError, match="ends at LSN 3"):
        store.save_snapshot(lsn=4, epoch=1, at=1.0, state=b"")


def test_snapshot_older_than_its_record_is_refused(store: Store) -> None:
    store.set_epoch(2, 3)
    store.append(records(1, 2) + records(3, 1, epoch=2))
    with pytest.raises(StaleEpoch, match="later epoch 2"):
        store.save_snapshot(lsn=3, epoch=1, at=1.0, state=b"")


def test_snapshot_taken_in_a_later_epoch_does_not_block_older_records(store_path: Path) -> None:
    # A standby that already knows epoch 3 may still be catching up on records
    # of epoch 1; its snapshots carry epoch 3 but the records after them don't.
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 4))
        s.set_epoch(3, 20)
        s.save_snapshot(lsn=4, epoch=3, at=1.0, state=b"state@4")
        s.append(records(5, 2))
        s.save_snapshot(lsn=6, epoch=3, at=1.0, state=b"state@6")
        s.truncate_log(7)
        s.append(records(7, 1))
    with open_store(store_path) as s:
        assert s.read(6) == records(7, 1)
        s.append(records(8, 1))


def test_truncate_log_never_deletes_past_the_snapshot(store: Store) -> None:
    store.append(records(1, 20))
    assert store.truncate_log(15) == 0  # no snapshot yet: every record is needed
    store.save_snapshot(lsn=10, epoch=1, at=1.0, state=b"state@10")
    assert store.truncate_log(15) == 10
    assert store.first_lsn() == 11
    assert store.last_lsn() == 20
    assert store.read(10) == records(11, 10)
    assert store.truncate_log(15) == 0


def test_truncate_log_keeps_records_after_the_retention_point(store: Store) -> None:
    store.append(records(1, 20))
    store.save_snapshot(lsn=18, epoch=1, at=1.0, state=b"state@18")
    assert store.truncate_log(6) == 5
    assert store.first_lsn() == 6
    assert store.statistics().records == 15


def test_truncate_log_up_to_the_snapshot_empties_the_log(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.save_snapshot(lsn=5, epoch=1, at=1.0, state=b"state@5")
        assert s.truncate_log(100) == 5
        assert (s.first_lsn(), s.last_lsn()) == (6, 5)
    with open_store(store_path) as s:
        assert (s.first_lsn(), s.last_lsn()) == (6, 5)
        s.append(records(6, 2))
        assert s.read(5) == records(6, 2)


def test_reading_pruned_records_raises_log_gap(store: Store) -> None:
    store.append(records(1, 10))
    store.save_snapshot(lsn=6, epoch=1, at=1.0, state=b"state@6")
    store.truncate_log(7)
    with pytest.raises(LogGap, match="snapshot is needed") as caught:
        store.read(2)
    assert (caught.value.expected, caught.value.found) == (3, 7)
    assert store.read(6) == records(7, 4)


def test_install_snapshot_replaces_the_log(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.save_snapshot(lsn=3, epoch=1, at=1.0, state=b"old")
        s.set_epoch(2, 40)
        snapshot = Snapshot.make(lsn=50, epoch=2, at=9.0, state=b"primary-state@50")
        s.install_snapshot(snapshot)
        assert (s.first_lsn(), s.last_lsn()) == (51, 50)
        assert s.read(50) == []
        with pytest.raises(LogGap):
            s.read(0)
        assert s.latest_snapshot() == snapshot
        s.append(records(51, 2, epoch=2))
    with open_store(store_path) as s:
        assert s.latest_snapshot() == snapshot
        assert s.read(50) == records(51, 2, epoch=2)
        assert s.statistics().records == 2


def test_install_snapshot_takes_the_primary_epoch_history_up_to_its_lsn(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.set_epoch(3, 60)
        snapshot = Snapshot.make(lsn=50, epoch=2, at=9.0, state=b"primary-state@50")
        # Epoch 2 wrote LSNs 20 to 50; the entry for 4 (after the snapshot) is not its to keep.
        s.install_snapshot(snapshot, epoch_history={1: 1, 2: 20, 4: 51})
        assert s.epoch_history() == {1: 1, 2: 20}
        assert s.epoch() == 3
    with open_store(store_path) as s:
        assert s.epoch_history() == {1: 1, 2: 20}
        # Without one (a primary of an older release) the history stays as it was.
        s.install_snapshot(Snapshot.make(lsn=60, epoch=2, at=9.0, state=b"x"))
        assert s.epoch_history() == {1: 1, 2: 20}


def test_append_starts_an_epoch_the_history_lost_in_the_same_transaction(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 3))
        s.set_epoch(2, 4)
        s.append(records(4, 3, epoch=2))
        s.truncate_tail(3)                    # epoch 2's entry goes with its records
        assert s.epoch_history() == {1: 1} and s.epoch() == 2
        s.append(records(4, 2, epoch=2))      # shipped again: epoch 2 starts at 4 once more
        assert s.epoch_history() == {1: 1, 2: 4}
        s.append(records(6, 1, epoch=2))
        assert s.epoch_history() == {1: 1, 2: 4}
    with open_store(store_path) as s:
        assert s.epoch_history() == {1: 1, 2: 4}


def test_install_snapshot_refuses_a_damaged_snapshot(store: Store) -> None:
    snapshot = Snapshot.make(lsn=5, epoch=1, at=1.0, state=b"good")
    with pytest.raises(CorruptRecord):
        store.install_snapshot(msgspec.structs.replace(snapshot, state=b"evil"))
    assert store.last_lsn() == 0


# ------------------------------------------------------ snapshots in parts


def _parts(where: Path | Store) -> list[tuple[int, int]]:
    """(LSN, part index) of every snapshot part in a closed store (or an open one), read
    behind its back."""
    if isinstance(where, Store):
        env = where._require_env()
        with env.begin() as txn:
            return [(int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big")) for k, _ in txn.cursor(where._snapshot_parts)]
    env = lmdb.open(str(where), max_dbs=8, readonly=True)
    try:
        with env.begin() as txn:
            db = env.open_db(b"snapshot_parts", txn=txn, create=False)
            return [(int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big")) for k, _ in txn.cursor(db)]
    finally:
        env.close()


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    import acd.store.lmdb_store

    monkeypatch.setattr(acd.store.lmdb_store, "SNAPSHOT_PART_BYTES", 64)
    return 64


def test_a_large_snapshot_is_stored_in_parts_and_reads_back_whole(store_path: Path, small_parts: int) -> None:
    state = bytes(range(256)) * 3  # several parts of 64 bytes
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 6))
        s.save_snapshot(lsn=5, epoch=1, at=2.0, state=state)
        assert s.latest_snapshot() == Snapshot.make(lsn=5, epoch=1, at=2.0, state=state)
    parts = _parts(store_path)
    assert len(parts) > len(state) // small_parts and parts == [(5, i) for i in range(len(parts))]
    with open_store(store_path) as s:  # and the next start recovers from it
        assert s.latest_snapshot() == Snapshot.make(lsn=5, epoch=1, at=2.0, state=state)
        assert s.statistics().snapshot_lsn == 5


def test_a_snapshot_encoded_elsewhere_is_stored_from_any_buffer(store_path: Path, small_parts: int) -> None:
    import mmap

    from acd.store.records import encode

    snapshot = Snapshot.make(lsn=5, epoch=1, at=2.0, state=bytes(range(256)) * 2)
    encoded = encode(snapshot)
    buffer = mmap.mmap(-1, len(encoded))  # what the node's forked encoder hands over
    buffer[:] = encoded
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 6))
        s.save_encoded_snapshot(lsn=5, epoch=1, encoded=memoryview(buffer))
        assert s.latest_snapshot() == snapshot and len(_parts(s)) > 1
        with pytest.raises(StoreError, match="ends at LSN 6"):
            s.save_encoded_snapshot(lsn=7, epoch=1, encoded=encoded)  # the same checks as save_snapshot


def test_the_parts_of_snapshots_no_longer_kept_are_deleted(store_path: Path, small_parts: int) -> None:
    with open_store(store_path, snapshots_kept=2) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 10))
        for lsn in (2, 4, 6):
            s.save_snapshot(lsn=lsn, epoch=1, at=1.0, state=b"%d" % lsn * 200)
        s.save_snapshot(lsn=8, epoch=1, at=1.0, state=b"small")  # one piece: no parts
        assert s.latest_snapshot() == Snapshot.make(lsn=8, epoch=1, at=1.0, state=b"small")
    assert {lsn for lsn, _ in _parts(store_path)} == {6}


def test_a_missing_part_refuses_the_start_naming_the_snapshot(store_path: Path, small_parts: int) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.save_snapshot(lsn=4, epoch=1, at=1.0, state=b"x" * 300)
    env = lmdb.open(str(store_path), max_dbs=8)
    with env.begin(write=True) as txn:
        assert txn.delete((4).to_bytes(8, "big") + (1).to_bytes(4, "big"), db=env.open_db(b"snapshot_parts", txn=txn, create=False))
    env.close()
    with pytest.raises(CorruptRecord, match="snapshot at LSN 4 is missing part 2 of"):
        open_store(store_path)


def test_a_damaged_part_fails_the_snapshot_checksum(store_path: Path, small_parts: int) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 5))
        s.save_snapshot(lsn=4, epoch=1, at=1.0, state=b"x" * 300)
    raw_put(store_path, b"snapshot_parts", (4).to_bytes(8, "big") + (2).to_bytes(4, "big"), b"y" * 64)
    with pytest.raises(CorruptRecord, match="LSN 4"):
        open_store(store_path)


def test_parts_of_a_snapshot_cut_short_are_not_a_snapshot_and_go_with_the_next(
    store_path: Path, small_parts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 8))
        s.save_snapshot(lsn=2, epoch=1, at=1.0, state=b"two")
        original = Store._write
        calls = [0]

        def crash_after_two_parts(self: Store, work: object) -> object:
            calls[0] += 1
            if calls[0] == 3:
                raise OSError("power lost")
            return original(self, work)  # type: ignore[arg-type]

        monkeypatch.setattr(Store, "_write", crash_after_two_parts)
        with pytest.raises(OSError):
            s.save_snapshot(lsn=6, epoch=1, at=1.0, state=b"z" * 300)
        monkeypatch.setattr(Store, "_write", original)
        assert _parts(s) == [(6, 0), (6, 1)]  # two parts, no header
        assert s.latest_snapshot() == Snapshot.make(lsn=2, epoch=1, at=1.0, state=b"two")
    with open_store(store_path) as s:
        assert s.latest_snapshot() == Snapshot.make(lsn=2, epoch=1, at=1.0, state=b"two")
        s.save_snapshot(lsn=7, epoch=1, at=1.0, state=b"seven")
    assert _parts(store_path) == []


def test_the_store_lock_is_let_go_between_the_parts_of_a_snapshot(store_path: Path, small_parts: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends (the pipeline's commits, from another thread) take the same lock: between two
    parts they get their turn, so a commit waits for one part, not for the whole snapshot."""
    import threading

    class CountingLock:
        def __init__(self) -> None:
            self.lock = threading.RLock()
            self.depth = 0
            self.turns = 0  # how many times the lock was taken from free

        def __enter__(self) -> None:
            self.lock.acquire()
            self.depth += 1
            self.turns += self.depth == 1

        def __exit__(self, *exc: object) -> None:
            self.depth -= 1
            self.lock.release()

    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 4))
        lock = CountingLock()
        s._lock = lock  # type: ignore[assignment]
        original = Store._write
        turns: list[int] = []

        def recording_write(self: Store, work: object) -> object:
            turns.append(lock.turns)
            return original(self, work)  # type: ignore[arg-type]

        monkeypatch.setattr(Store, "_write", recording_write)
        s.save_snapshot(lsn=4, epoch=1, at=1.0, state=b"q" * 300)
        monkeypatch.setattr(Store, "_write", original)
        assert len(turns) >= 5 and turns == sorted(set(turns))  # every part and the header in a turn of its own
        assert s.latest_snapshot() == Snapshot.make(lsn=4, epoch=1, at=1.0, state=b"q" * 300)


def test_truncating_the_tail_and_installing_a_snapshot_remove_parts(store_path: Path, small_parts: int) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 8))
        s.save_snapshot(lsn=3, epoch=1, at=1.0, state=b"3" * 200)
        s.save_snapshot(lsn=6, epoch=1, at=1.0, state=b"6" * 200)
        s.truncate_tail(4)  # the snapshot at 6 goes, and its parts
        assert {lsn for lsn, _ in _parts(s)} == {3}
        assert s.latest_snapshot() == Snapshot.make(lsn=3, epoch=1, at=1.0, state=b"3" * 200)
        s.install_snapshot(Snapshot.make(lsn=20, epoch=1, at=1.0, state=b"from the primary"))
        assert _parts(s) == []


# -------------------------------------------------------------- truncate_tail


def test_truncate_tail_discards_the_unacknowledged_tail(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.set_epoch(1, 1)
        s.append(records(1, 6))
        s.save_snapshot(lsn=4, epoch=1, at=1.0, state=b"state@4")
        s.set_epoch(2, 7)
        s.append(records(7, 3, epoch=2))
        s.save_snapshot(lsn=8, epoch=2, at=1.0, state=b"state@8")
        assert s.truncate_tail(5) == 4
        assert s.last_lsn() == 5
        assert s.epoch_history() == {1: 1}
        assert s.epoch() == 2  # an epoch once seen is never forgotten
        assert s.latest_snapshot() is not None
        assert s.latest_snapshot().lsn == 4  # type: ignore[union-attr]
        assert s.read(0) == records(1, 5)
    with open_store(store_path) as s:
        assert s.last_lsn() == 5
        s.append(records(6, 1, epoch=2))
        assert s.read(5) == records(6, 1, epoch=2)


def test_truncate_tail_at_or_after_the_end_deletes_nothing(store: Store) -> None:
    store.append(records(1, 3))
    assert store.truncate_tail(3) == 0
    assert store.truncate_tail(10) == 0
    assert store.last_lsn() == 3


def test_truncate_tail_below_pruned_records_is_refused(store: Store) -> None:
    store.append(records(1, 10))
    store.save_snapshot(lsn=6, epoch=1, at=1.0, state=b"state@6")
    store.truncate_log(7)
    with pytest.raises(StoreError, match="install a snapshot"):
        store.truncate_tail(3)
    assert store.last_lsn() == 10


# ------------------------------------------------------------- storage full


def fill_until_full(s: Store, first_lsn: int) -> int:
    """Append batches until StorageFull; return the next LSN that was refused."""
    lsn = first_lsn
    for _ in range(1000):
        try:
            s.append(records(lsn, 4, size=2000))
        except StorageFull:
            return lsn
        lsn += 4
    raise AssertionError("the store never filled up")


def test_storage_full_keeps_data_intact_and_writes_resume_after_growth(store_path: Path) -> None:
    tiny = 256 * 1024
    s = open_store(store_path, map_size_bytes=tiny, map_size_max_bytes=tiny)
    try:
        s.set_epoch(1, 1)
        refused = fill_until_full(s, 1)
        assert refused > 1
        written = refused - 1
        assert s.last_lsn() == written
        assert s.read(0, limit=10_000) == records(1, written, size=2000)
        assert s.statistics().map_grows == 0
        with pytest.raises(StorageFull, match="map_size_max_bytes"):
            s.append(records(refused, 4, size=2000))
        s.set_map_size_max_bytes(4 * tiny)
        s.append(records(refused, 4, size=2000))
        assert s.last_lsn() == written + 4
        assert s.statistics().map_grows >= 1
    finally:
        s.close()
    with open_store(store_path, map_size_bytes=tiny, map_size_max_bytes=4 * tiny) as s:
        assert s.read(0, limit=10_000) == records(1, written + 4, size=2000)


def test_storage_full_store_accepts_writes_after_reopen_with_a_larger_limit(
    store_path: Path,
) -> None:
    tiny = 256 * 1024
    with open_store(store_path, map_size_bytes=tiny, map_size_max_bytes=tiny) as s:
        s.set_epoch(1, 1)
        refused = fill_until_full(s, 1)
    with open_store(store_path, map_size_bytes=tiny, map_size_max_bytes=8 * tiny) as s:
        s.append(records(refused, 4, size=2000))
        assert s.read(0, limit=10_000) == records(1, refused + 3, size=2000)


def test_full_store_accepts_writes_again_after_snapshot_and_truncation(store_path: Path) -> None:
    tiny = 256 * 1024
    with open_store(store_path, map_size_bytes=tiny, map_size_max_bytes=tiny) as s:
        s.set_epoch(1, 1)
        refused = fill_until_full(s, 1)
        s.save_snapshot(lsn=refused - 1, epoch=1, at=1.0, state=b"state")
        assert s.truncate_log(refused) == refused - 1
        s.append(records(refused, 4, size=2000))
        assert s.read(refused - 1) == records(refused, 4, size=2000)
        assert s.statistics().map_size_bytes == tiny


def test_map_grows_automatically_up_to_the_limit(store_path: Path) -> None:
    small = 256 * 1024
    with open_store(store_path, map_size_bytes=small, map_size_max_bytes=64 * small) as s:
        s.set_epoch(1, 1)
        for first in range(1, 401, 40):
            s.append(records(first, 40, size=3000))
        stats = s.statistics()
        assert stats.map_grows >= 2
        assert stats.map_size_bytes > small
        assert stats.used_bytes <= stats.map_size_bytes
        assert s.read(0, limit=10_000) == records(1, 400, size=3000)


def test_file_size_limit_during_commit_writes_nothing(store_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel refuse to grow data.mdb, which is the
    # closest a test can get to a real full disk: the commit fails in the
    # middle of writing pages.  It runs in a child so the limit stays there.
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from acd.store import Record, Store, StoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        s = Store(sys.argv[1], cluster="citizens-line", node="node-a")
        s.set_epoch(1, 1)
        def batch(first):
            return [Record.make(lsn=l, epoch=1, at=1.0, payload=b"p" * 3000) for l in range(first, first + 8)]
        s.append(batch(1))
        limit = (s.path / "data.mdb").stat().st_size + 64 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        lsn = 9
        try:
            while True:
                s.append(batch(lsn))
                lsn += 8
        except StoreError as exc:
            print(type(exc).__name__, lsn, s.last_lsn(), flush=True)
        assert len(s.read(0, limit=100_000)) == lsn - 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        s.append(batch(lsn))
        print(s.last_lsn(), flush=True)
        s.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(store_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    failure, refused, last_after_failure, last = done.stdout.split()
    assert failure == "StorageFull"
    assert int(last_after_failure) == int(refused) - 1
    assert int(last) == int(refused) + 7
    with open_store(store_path) as s:
        assert [r.lsn for r in s.read(0, limit=100_000)] == list(range(1, int(last) + 1))


# ----------------------------------------------------------------- backups


def test_copy_to_makes_a_store_that_opens_with_the_same_records(
    store: Store, tmp_path: Path
) -> None:
    store.append(records(1, 30))
    store.save_snapshot(lsn=20, epoch=1, at=1.0, state=b"state@20")
    store.put_meta("replication.peer", b"node-b")
    backup = tmp_path / "backup"
    store.copy_to(backup)
    with pytest.raises(StoreError, match="already holds"):
        store.copy_to(backup)
    with open_store(backup) as copy:
        assert copy.read(0, limit=100) == records(1, 30)
        assert copy.latest_snapshot() == store.latest_snapshot()
        assert copy.epoch() == 1
        assert copy.get_meta("replication.peer") == b"node-b"


# -------------------------------------------------------------------- meta


def test_meta_values_round_trip_and_store_keys_are_protected(store: Store) -> None:
    assert store.get_meta("replication.term") is None
    store.put_meta("replication.term", b"abc")
    assert store.get_meta("replication.term") == b"abc"
    with pytest.raises(StoreError, match="belongs to the store"):
        store.put_meta("applied_lsn", b"\x00" * 8)
    store.append(records(1, 2))
    assert store.get_meta("applied_lsn") == (2).to_bytes(8, "big")


def test_statistics_describe_the_store(store: Store) -> None:
    store.append(records(1, 12))
    stats = store.statistics()
    assert (stats.first_lsn, stats.last_lsn, stats.records, stats.snapshot_lsn) == (1, 12, 12, 0)
    assert stats.size_bytes >= stats.used_bytes > 0
    assert stats.free_disk_bytes > 0
    assert 0 < store.log_bytes_estimate() <= stats.used_bytes


# ---------------------------------------------------------------- property


@settings(max_examples=40, deadline=None, database=None)
@given(
    batches=st.lists(
        st.tuples(st.lists(st.binary(max_size=600), min_size=1, max_size=25), st.booleans()),
        max_size=12,
    ),
    page=st.integers(min_value=1, max_value=40),
)
def test_random_batches_read_back_as_written(
    batches: list[tuple[list[bytes], bool]], page: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "store"
        written: list[Record] = []
        with open_store(path, sync=False) as s:
            epoch = 1
            s.set_epoch(epoch, 1)
            for payloads, new_epoch in batches:
                if new_epoch:
                    epoch += 1
                    s.set_epoch(epoch, len(written) + 1)
                batch = [
                    Record.make(lsn=len(written) + i + 1, epoch=epoch, at=i * 0.5, payload=p)
                    for i, p in enumerate(payloads)
                ]
                s.append(batch)
                written.extend(batch)
            read: list[Record] = []
            while chunk := s.read(len(read), limit=page):
                read.extend(chunk)
            assert read == written
        with open_store(path, sync=False) as s:
            assert s.read(0, limit=100_000) == written


# --------------------------------------------------------------- durability


def test_record_survives_sigkill_right_after_append_returned(store_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from acd.store import Record, Store
        s = Store(sys.argv[1], cluster="citizens-line", node="node-a")
        s.set_epoch(1, 1)
        s.append([Record.make(lsn=1, epoch=1, at=1.5, payload=b"call-42 queued")])
        print(s.last_lsn(), flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(store_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "1", child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    with open_store(store_path) as s:
        assert s.last_lsn() == 1
        assert s.read(0) == [Record.make(lsn=1, epoch=1, at=1.5, payload=b"call-42 queued")]
