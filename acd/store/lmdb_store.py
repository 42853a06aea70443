"""The durable LMDB store of one node: command log, snapshots and a little metadata.

The store knows LMDB and msgspec and nothing of the network.  It keeps three
named databases in one LMDB environment:

``log``
    key: 8-byte big-endian LSN (so cursor order is LSN order),
    value: a msgpack-encoded :class:`Record`.
``snapshots``
    key: 8-byte big-endian LSN, value: a msgpack-encoded :class:`Snapshot`.
``meta``
    key: UTF-8 name, value: bytes.  The store's own keys are listed in
    ``RESERVED_META_KEYS``; other layers may keep small values under other names.

The store's format (meta key ``format``) says which of these keys and layouts it uses; the
formats this binary opens are ``acd.versions.STORE_FORMATS``.  A store at an older format is
migrated to ``acd.versions.STORE_FORMAT`` when it is opened (``migrate=True``, what a node
does): first a compacted copy is written beside the data directory and verified, then every
change of the migration is made in one write transaction, so a crash leaves the store at its
old format, untouched, or at the new one.  A store at a newer format than this binary opens is
refused with both formats in the message.

Every record is verified (checksum, LSN continuity, epoch) just before it is
written and again just after it is read, so damage is reported with the LSN
it affects instead of being replayed into the call distributor's state.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import resource
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import lmdb
import msgspec

from acd.store.datafile import check_data_file
from acd.store.errors import (
    CorruptRecord,
    LogGap,
    StaleEpoch,
    StorageFull,
    StoreError,
    UnsupportedFormat,
    WrongCluster,
)
from acd.store.records import (
    SECRET_ID_BYTES,
    Record,
    Snapshot,
    decode_record,
    decode_snapshot,
    encode,
)
from acd.versions import RELEASE, STORE_FORMAT, STORE_FORMATS, describe

_T = TypeVar("_T")

log = logging.getLogger("acd.store")

_LOG_DB = b"log"
_SNAPSHOTS_DB = b"snapshots"
_SNAPSHOT_PARTS_DB = b"snapshot_parts"
_META_DB = b"meta"
# Keys that seal caller numbers in the log (see Record.secret): key id -> LSN + key, and
# LSN -> key id, so that a shipment read back from the log carries its record's key.
_SECRETS_DB = b"secrets"
_SECRET_LSNS_DB = b"secret_lsns"
_KNOWN_DBS = frozenset({_LOG_DB, _SNAPSHOTS_DB, _SNAPSHOT_PARTS_DB, _META_DB, _SECRETS_DB, _SECRET_LSNS_DB})

# A snapshot larger than this is written in parts, one write transaction each, so that the
# pipeline's commits (one writer at a time in LMDB) wait for at most one part, never for the
# whole state (17 MB at 25,000 interactions: 40-140 ms of writing and fsync). Its entry in the
# snapshots database, written last, is then a header naming the parts; until that header is
# committed the parts are not a snapshot, and a crash in between leaves parts that the next
# snapshot removes.
SNAPSHOT_PART_BYTES = 1 << 20
# msgpack never uses the byte 0xc1, so no whole snapshot (a msgpack map) starts with it.
_PARTS_HEADER = b"\xc1parts"
_parts_header = struct.Struct(">II")  # number of parts, total bytes

_META_FORMAT = b"format"  # the store's format, in ASCII decimal digits
_META_CLUSTER = b"cluster"
_META_NODE = b"node"
_META_EPOCH = b"epoch"
# The LSN of the last record written to the log.  It lives in meta rather than
# being derived from the log's last key because retention (truncate_log) and
# snapshot installation can leave the log empty while last_lsn() must still
# report the last LSN this node holds.
_META_APPLIED_LSN = b"applied_lsn"
_META_EPOCH_HISTORY = b"epoch_history"
# Format 2: the release of the binary that last opened the store, and its format migrations.
_META_RELEASE = b"release"
_META_MIGRATIONS = b"migrations"

RESERVED_META_KEYS = frozenset(
    k.decode()
    for k in (
        _META_FORMAT,
        _META_CLUSTER,
        _META_NODE,
        _META_EPOCH,
        _META_APPLIED_LSN,
        _META_EPOCH_HISTORY,
        _META_RELEASE,
        _META_MIGRATIONS,
    )
)

_LOCK_FILE = "store.lock"
# truncate_log deletes in chunks so that pruning a very long log never hits
# LMDB's per-transaction dirty-page limit; each chunk leaves a valid log.
_TRUNCATE_CHUNK_RECORDS = 50_000

_history_encoder = msgspec.msgpack.Encoder()
_history_decoder = msgspec.msgpack.Decoder(dict[int, int])


class Migration(msgspec.Struct, frozen=True, kw_only=True):
    """One format migration the store went through (meta key ``migrations``, format 2 on)."""

    from_format: int
    to_format: int
    release: str   # the release of the binary that migrated it
    at: float      # Unix time at which it was migrated
    backup: str    # the verified copy of the store at ``from_format``, taken just before


_migrations_decoder = msgspec.msgpack.Decoder(list[Migration])

# The manifest written next to a backup's data.mdb: the same file `acd backup` writes, so a
# backup taken before a migration is restored by `acd restore` like any other.
BACKUP_MANIFEST = "manifest.json"


def _format_of(raw: bytes | None) -> int | None:
    """The format recorded in meta, or None when the entry is missing or not a number."""
    if raw is None or not raw.isdigit() or len(raw) > 9:
        return None
    return int(raw)


def _to_format_2(txn: lmdb.Transaction[Any], meta: lmdb._Database) -> None:
    """Format 1 to 2: record the release that opens the store and start its migration history."""
    txn.put(_META_RELEASE, RELEASE.encode(), db=meta)
    if txn.get(_META_MIGRATIONS, db=meta) is None:
        txn.put(_META_MIGRATIONS, _history_encoder.encode([]), db=meta)


# The migration from each format to the next, all run in one write transaction (nothing of a
# migration that fails is written). A format listed in STORE_FORMATS below the newest needs
# its step here.
MIGRATIONS: dict[int, Callable[[lmdb.Transaction[Any], lmdb._Database], None]] = {1: _to_format_2}


def private_files(directory: Path) -> None:
    """Make `directory` and the files in it readable by their owner only (a copy of a store
    holds what the store holds, whatever the umask of the process that made it)."""
    os.chmod(directory, 0o700)
    for entry in directory.iterdir():
        if entry.is_file():
            os.chmod(entry, 0o600)


def _key(lsn: int) -> bytes:
    return lsn.to_bytes(8, "big")


def _part_key(lsn: int, index: int) -> bytes:
    return lsn.to_bytes(8, "big") + index.to_bytes(4, "big")


def _lsn_of(key: bytes | memoryview) -> int:
    if len(key) != 8:
        raise CorruptRecord(f"the store holds a key of {len(key)} bytes instead of an 8-byte LSN")
    return int.from_bytes(key, "big")


def _int_value(raw: bytes | memoryview | None, name: str) -> int:
    if raw is None or len(raw) != 8:
        raise StoreError(f"the store's meta entry {name!r} is missing or damaged")
    return int.from_bytes(raw, "big")


def _fsync_directory(path: Path) -> None:
    """Make the directory entries (new files, new subdirectories) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Below this much free space an I/O error while writing is taken to be the
# disk filling up rather than a failing device.
_NEARLY_FULL_DISK_BYTES = 16 * 2**20


def _out_of_space_reason(exc: lmdb.Error, directory: Path) -> str | None:
    """Say why the file system refused to grow data.mdb, or None when ``exc`` is another failure.

    LMDB reports ENOSPC only when a write fails outright.  When the disk (or
    the process's file-size limit) runs out in the middle of a write, the
    write is short and LMDB reports EIO instead, so an I/O error is checked
    against the free space and RLIMIT_FSIZE before it is called a device error.
    """
    text = str(exc)
    if isinstance(exc, lmdb.DiskError) or any(
        os.strerror(code) in text for code in (errno.ENOSPC, errno.EDQUOT)
    ):
        return "the disk is full"
    if os.strerror(errno.EFBIG) not in text and os.strerror(errno.EIO) not in text:
        return None
    try:
        free_bytes = shutil.disk_usage(directory).free
        file_bytes = (directory / "data.mdb").stat().st_size
    except OSError:
        return None
    if free_bytes < _NEARLY_FULL_DISK_BYTES:
        return f"the disk is full ({free_bytes} bytes free)"
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft_limit != resource.RLIM_INFINITY and file_bytes + _NEARLY_FULL_DISK_BYTES > soft_limit:
        return f"the process may not grow files beyond {soft_limit} bytes (RLIMIT_FSIZE)"
    if os.strerror(errno.EFBIG) in text:
        return "the data file reached the largest size the file system allows"
    return None


@contextmanager
def _lmdb_errors(action: str) -> Iterator[None]:
    """Turn liblmdb's exceptions into the store's own, naming what was being done."""
    try:
        yield
    except (lmdb.CorruptedError, lmdb.PageNotFoundError) as exc:
        raise CorruptRecord(f"{action} failed because the data file is damaged: {exc}") from exc
    except lmdb.Error as exc:
        raise StoreError(f"{action} failed: {exc}") from exc


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A point-in-time view of the store for metrics and the operator."""

    size_bytes: int  # size of data.mdb on disk
    # The current LMDB map size: data.mdb may grow this far before the map must grow.
    map_size_bytes: int
    used_bytes: int  # bytes of data.mdb in use by the last commit
    free_disk_bytes: int  # free space on the file system that holds the store
    first_lsn: int
    last_lsn: int
    snapshot_lsn: int  # 0 when there is no snapshot
    records: int  # records currently in the log
    commits: int  # write transactions committed since this Store was opened
    map_grows: int  # times the map grew since this Store was opened


class Store:
    """The durable store of one node.

    All methods are safe to call from several threads: one lock serialises
    them, because LMDB may only resize the map while this process has no
    transaction open, and because the in-memory copies of last_lsn and the
    epoch must change together with the commit that changes them on disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cluster: str,
        node: str,
        map_size_bytes: int = 64 * 2**20,
        map_size_max_bytes: int = 16 * 2**30,
        sync: bool = True,
        snapshots_kept: int = 2,
        migrate: bool = True,
    ) -> None:
        """Open (or create) the store in ``path`` and verify it.

        A store at an older format is migrated to ``STORE_FORMAT`` after a verified backup
        (see the module's docstring); with ``migrate=False`` it is opened at its own format and
        left there (for copies that are only read, such as a backup being verified).
        """
        if not cluster or not node:
            raise StoreError("a store needs a non-empty cluster name and node name")
        if map_size_bytes <= 0:
            raise StoreError(f"map_size_bytes must be positive, got {map_size_bytes}")
        if map_size_max_bytes < map_size_bytes:
            raise StoreError(
                f"map_size_max_bytes ({map_size_max_bytes}) is below map_size_bytes ({map_size_bytes})"
            )
        if snapshots_kept < 1:
            raise StoreError(f"snapshots_kept must be at least 1, got {snapshots_kept}")
        self.path = Path(path)
        self.cluster = cluster
        self.node = node
        self._sync = sync
        self._snapshots_kept = snapshots_kept
        self._parts_in_progress: set[int] = set()  # LSNs of snapshots whose parts are being written
        self._map_size_max_bytes = map_size_max_bytes
        self._lock = threading.RLock()
        # Backups run without holding the main lock so that appends continue,
        # but LMDB may only resize the map (or close) while no transaction of
        # this process is open.  Map growth and close therefore wait, still
        # holding the main lock, until running copies finish; the copies
        # count under a lock of their own so that finishing needs no main lock.
        self._copy_lock = threading.Lock()
        self._no_copy_running = threading.Condition(self._copy_lock)
        self._copies_running = 0
        self._lock_fd: int | None = None
        self._env: lmdb.Environment | None = None
        self._commits = 0
        self._map_grows = 0
        # In-memory copies of what is on disk; they change only after the
        # commit that changes the disk has succeeded.
        self._epoch = 0
        self._last_lsn = 0
        self._first_lsn = 1
        # The epoch of the last record in the log, the lower bound for the
        # next append; 0 when the log is empty, because the snapshot's epoch
        # is the epoch it was taken in and may be later than its last record's.
        self._last_epoch = 0
        self._snapshot_lsn = 0
        self._history: dict[int, int] = {}
        self._format = STORE_FORMAT
        try:
            self._open(map_size_bytes)
            if self._format < STORE_FORMAT and migrate:
                self._migrate()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------ open

    def _open(self, map_size_bytes: int) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise StoreError(f"the store path {path} exists but is not a directory")
        created = not path.exists()
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if created:
                _fsync_directory(path.parent)
            self._lock_fd = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create or open the store directory {path}: {exc}") from exc
        try:
            # flock is per open file description, so this also refuses a second
            # Store on the same directory inside this process, which LMDB forbids.
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreError(
                f"the store directory {path} is already open by another Store (in this or another "
                f"process); two writers on one log would corrupt it"
            ) from exc

        recorded_map_bytes = check_data_file(path)
        if recorded_map_bytes is not None:
            # Reopen with the map the store had grown to, so the first writes
            # after a restart do not have to grow it again.
            map_size_bytes = max(map_size_bytes, min(recorded_map_bytes, self._map_size_max_bytes))
        try:
            # Durability: with sync=True LMDB's commit writes the data pages,
            # fdatasync()s them, then writes the meta page through an O_DSYNC
            # descriptor.  That is two flushes per commit, and it is the fewest
            # that give both durability and integrity: a single flush (sync=False
            # followed by env.sync()) lets the disk persist the meta page before
            # the pages it points to, and a power cut in between leaves a
            # corrupted B-tree.  metasync=False would save the second flush but
            # lets a power cut undo the last commit.  So commits are durable when
            # they return and append() needs no extra env.sync() (a third flush).
            # With sync=False nothing is flushed: a killed process loses nothing
            # (the page cache survives it) but a power cut can lose or corrupt data.
            self._env = lmdb.open(
                str(path),
                map_size=map_size_bytes,
                max_dbs=8,
                subdir=True,
                lock=True,
                readahead=False,
                sync=self._sync,
                metasync=self._sync,
                create=True,
                mode=0o600,  # the store holds interactions of citizens: its owner's only
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the LMDB environment in {path}: {exc}") from exc
        try:
            self._open_databases()
            if recorded_map_bytes is None:
                # The directory entries of a new data.mdb and lock.mdb must
                # survive a power cut too, not only the file contents.
                _fsync_directory(path)
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"the LMDB environment in {path} cannot be set up: {exc}") from exc
        with _lmdb_errors(f"verifying the store in {path}"):
            self._load_and_verify()

    def _open_databases(self) -> None:
        env = self._require_env()
        with env.begin(write=True) as txn:
            # A store's main database holds only its named databases; anything
            # else means the directory belongs to some other LMDB application.
            with txn.cursor() as cursor:
                for name in cursor.iternext(keys=True, values=False):
                    if name not in _KNOWN_DBS:
                        raise StoreError(
                            f"{self.path} holds an LMDB environment that is not an ACD store "
                            f"(unexpected database {bytes(name)!r})"
                        )
            self._log = env.open_db(_LOG_DB, txn=txn, create=True)
            self._snapshots = env.open_db(_SNAPSHOTS_DB, txn=txn, create=True)
            self._snapshot_parts = env.open_db(_SNAPSHOT_PARTS_DB, txn=txn, create=True)
            self._meta = env.open_db(_META_DB, txn=txn, create=True)
            self._secrets = env.open_db(_SECRETS_DB, txn=txn, create=True)
            self._secret_lsns = env.open_db(_SECRET_LSNS_DB, txn=txn, create=True)
            stored_cluster = txn.get(_META_CLUSTER, db=self._meta)
            if stored_cluster is None:
                if txn.stat(self._log)["entries"] or txn.stat(self._snapshots)["entries"]:
                    raise StoreError(
                        f"the store in {self.path} holds records but no cluster identity; "
                        f"its metadata is damaged"
                    )
                txn.put(_META_FORMAT, str(STORE_FORMAT).encode(), db=self._meta)
                txn.put(_META_RELEASE, RELEASE.encode(), db=self._meta)
                txn.put(_META_MIGRATIONS, _history_encoder.encode([]), db=self._meta)
                txn.put(_META_CLUSTER, self.cluster.encode(), db=self._meta)
                txn.put(_META_NODE, self.node.encode(), db=self._meta)
                txn.put(_META_EPOCH, _key(0), db=self._meta)
                txn.put(_META_APPLIED_LSN, _key(0), db=self._meta)
                txn.put(_META_EPOCH_HISTORY, _history_encoder.encode({}), db=self._meta)
                return
            if stored_cluster != self.cluster.encode():
                raise WrongCluster(
                    f"the store in {self.path} belongs to cluster "
                    f"{stored_cluster.decode(errors='replace')!r}, not to the configured cluster "
                    f"{self.cluster!r}; point this node at its own data directory"
                )
            stored_node = txn.get(_META_NODE, db=self._meta) or b""
            if stored_node != self.node.encode():
                raise StoreError(
                    f"the store in {self.path} belongs to node {stored_node.decode(errors='replace')!r} "
                    f"of cluster {self.cluster!r}, not to node {self.node!r}; point this node at its "
                    f"own data directory (a new node starts empty and receives a snapshot)"
                )
            raw_format = txn.get(_META_FORMAT, db=self._meta)
            stored_format = _format_of(raw_format)
            if stored_format is None:
                raise StoreError(
                    f"the store in {self.path} records no readable format ({raw_format!r}); its "
                    f"metadata is damaged"
                )
            if stored_format not in STORE_FORMATS:
                raise self._unsupported(stored_format, txn.get(_META_RELEASE, db=self._meta))
            self._format = stored_format
            if stored_format >= 2 and txn.get(_META_RELEASE, db=self._meta) != RELEASE.encode():
                txn.put(_META_RELEASE, RELEASE.encode(), db=self._meta)
        # Leaving the block commits, which keeps the database handles valid
        # (LMDB closes handles opened in an aborted transaction).

    def _unsupported(self, found: int, release: bytes | None) -> UnsupportedFormat:
        by = f" (last opened by release {release.decode(errors='replace')})" if release else ""
        if found > STORE_FORMATS[-1]:
            way = (f"run a release that opens format {found}, or restore the backup taken before "
                   f"its migration (acd restore)")
        else:
            way = "open it once with an earlier release that opens both formats, which migrates it"
        return UnsupportedFormat(
            f"the store in {self.path} has format {found}{by}; this binary (release {RELEASE}) "
            f"opens store formats {describe(STORE_FORMATS)}; {way}",
            found=found, supported=STORE_FORMATS,
        )

    # ------------------------------------------------------------- migration

    def _migrate(self) -> None:
        """Migrate the store to STORE_FORMAT: verified backup first, then one transaction."""
        old = self._format
        backup = self._backup_before_migration(old)
        entry = Migration(from_format=old, to_format=STORE_FORMAT, release=RELEASE, at=time.time(), backup=str(backup))

        def work(txn: lmdb.Transaction[Any]) -> None:
            for version in range(old, STORE_FORMAT):
                MIGRATIONS[version](txn, self._meta)
            raw = txn.get(_META_MIGRATIONS, db=self._meta)
            history = _migrations_decoder.decode(raw) if raw is not None else []
            txn.put(_META_MIGRATIONS, _history_encoder.encode([*history, entry]), db=self._meta)
            txn.put(_META_RELEASE, RELEASE.encode(), db=self._meta)
            txn.put(_META_FORMAT, str(STORE_FORMAT).encode(), db=self._meta)

        with self._lock:
            try:
                self._write(work)
            except Exception as exc:
                log.error("store migration failed path=%s from_format=%d to_format=%d backup=%s: %s",
                          self.path, old, STORE_FORMAT, backup, exc)
                raise StoreError(
                    f"migrating the store in {self.path} from format {old} to format "
                    f"{STORE_FORMAT} failed ({exc}); nothing was changed, the store is still at "
                    f"format {old}; a verified backup taken before is in {backup}"
                ) from exc
            self._format = STORE_FORMAT
        log.warning("store migrated path=%s from_format=%d to_format=%d release=%s backup=%s",
                    self.path, old, STORE_FORMAT, RELEASE, backup)

    def _backup_before_migration(self, old: int) -> Path:
        """A compacted copy of the store beside it, verified as a store at format ``old``, with
        the manifest `acd backup` writes; raises StoreError (nothing migrated) if it cannot be."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.format-{old}-backup-{stamp}")
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.path.with_name(f"{self.path.name}.format-{old}-backup-{stamp}-{suffix}")
        try:
            self.copy_to(target)
        except StoreError as exc:
            raise StoreError(
                f"the store in {self.path} is at format {old} and must be migrated to format "
                f"{STORE_FORMAT}, but the backup taken first could not be written ({exc}); "
                f"nothing was migrated"
            ) from exc
        try:
            copy = Store(target, cluster=self.cluster, node=self.node, migrate=False,
                         map_size_max_bytes=self._map_size_max_bytes, sync=self._sync)
        except StoreError as exc:
            raise StoreError(
                f"the backup {target} taken before migrating the store in {self.path} does not "
                f"verify ({exc}); nothing was migrated"
            ) from exc
        try:
            statistics = copy.statistics()
            held = (copy._format, copy.last_lsn(), copy.epoch(), copy._snapshot_lsn, copy.epoch_history())
            expected = (old, self._last_lsn, self._epoch, self._snapshot_lsn, self._history)
        finally:
            copy.close()
        if held != expected:
            raise StoreError(
                f"the backup {target} taken before migrating the store in {self.path} holds "
                f"(format, LSN, epoch, snapshot LSN, epochs) {held}, the store {expected}; "
                f"nothing was migrated"
            )
        for name in (_LOCK_FILE, "lock.mdb"):
            (target / name).unlink(missing_ok=True)
        digest = hashlib.sha256()
        with open(target / "data.mdb", "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        manifest = {
            "cluster": self.cluster, "node": self.node, "epoch": self._epoch, "lsn": self._last_lsn,
            "snapshot_lsn": self._snapshot_lsn, "records": statistics.records, "sha256": digest.hexdigest(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "format": old,
        }
        path = target / BACKUP_MANIFEST
        with open(path, "w", encoding="utf-8") as file:
            json.dump(manifest, file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(path, 0o600)
        _fsync_directory(target)
        return target

    def format(self) -> int:
        """The store's format (STORE_FORMAT unless opened with ``migrate=False``)."""
        return self._format

    def migrations(self) -> list[Migration]:
        """The format migrations the store went through, oldest first (none before format 2)."""
        raw = self.get_meta(_META_MIGRATIONS.decode())
        if raw is None:
            return []
        try:
            return _migrations_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"the migration history of the store in {self.path} is damaged: {exc}") from exc

    def _load_and_verify(self) -> None:
        """Load the in-memory copies and verify the whole log after the latest snapshot."""
        env = self._require_env()
        with env.begin(buffers=True) as txn:
            epoch = _int_value(txn.get(_META_EPOCH, db=self._meta), "epoch")
            applied = _int_value(txn.get(_META_APPLIED_LSN, db=self._meta), "applied_lsn")
            raw_history = txn.get(_META_EPOCH_HISTORY, db=self._meta)
            try:
                history = _history_decoder.decode(raw_history if raw_history is not None else b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise StoreError(
                    f"the epoch history of the store in {self.path} is damaged: {exc}"
                ) from exc

            snapshot: Snapshot | None = None
            with txn.cursor(self._snapshots) as cursor:
                if cursor.last():
                    snapshot = self._read_snapshot(txn, _lsn_of(cursor.key()), cursor.value())
            snapshot_lsn = snapshot.lsn if snapshot else 0
            if snapshot_lsn > applied:
                raise StoreError(
                    f"the store in {self.path} has a snapshot at LSN {snapshot_lsn} beyond its last "
                    f"record LSN {applied}; its metadata is damaged"
                )

            with txn.cursor(self._log) as cursor:
                first_key = _lsn_of(cursor.key()) if cursor.first() else None
                last_key = _lsn_of(cursor.key()) if cursor.last() else None
                if last_key is None:
                    if applied != snapshot_lsn:
                        raise StoreError(
                            f"the log in {self.path} is empty but the store recorded LSN {applied} "
                            f"as written (latest snapshot: LSN {snapshot_lsn}); records are missing"
                        )
                    first_lsn = applied + 1
                    last_epoch = 0
                else:
                    assert first_key is not None
                    if last_key != applied:
                        raise StoreError(
                            f"the log in {self.path} ends at LSN {last_key} but the store recorded "
                            f"LSN {applied} as the last one written; its metadata is damaged"
                        )
                    if first_key > snapshot_lsn + 1:
                        raise LogGap(
                            f"the log in {self.path} starts at LSN {first_key} but LSN "
                            f"{snapshot_lsn + 1} is needed after "
                            + (
                                f"the snapshot at LSN {snapshot_lsn}"
                                if snapshot
                                else "an empty state"
                            ),
                            expected=snapshot_lsn + 1,
                            found=first_key,
                        )
                    first_lsn = first_key
                    last_epoch = self._verify_tail(cursor, first_key, snapshot_lsn, epoch)

        self._epoch = epoch
        self._last_lsn = applied
        self._first_lsn = first_lsn
        self._last_epoch = last_epoch
        self._snapshot_lsn = snapshot_lsn
        self._history = history

    def _verify_tail(
        self, cursor: lmdb.Cursor[Any], first_lsn: int, snapshot_lsn: int, epoch: int
    ) -> int:
        """Verify every record after the snapshot; return the last record's epoch.

        The record at the snapshot's LSN is verified too when the log still
        holds it, because its epoch is the bound for the records after it (the
        snapshot's own epoch may be later, as it is the epoch it was taken in).
        """
        expected = max(first_lsn, snapshot_lsn)
        previous_epoch = 0
        cursor.set_range(_key(expected))
        for key, value in cursor.iternext():
            lsn = _lsn_of(key)
            if lsn != expected:
                raise LogGap(
                    f"the log in {self.path} jumps from LSN {expected - 1} to LSN {lsn}",
                    expected=expected,
                    found=lsn,
                )
            record = decode_record(lsn, value)
            if record.epoch < previous_epoch:
                raise StaleEpoch(
                    f"record LSN {lsn} in {self.path} has epoch {record.epoch}, lower than the "
                    f"epoch {previous_epoch} before it; the log is damaged"
                )
            if record.epoch > epoch:
                raise StaleEpoch(
                    f"record LSN {lsn} in {self.path} has epoch {record.epoch}, above the store's "
                    f"epoch {epoch}; the metadata is damaged"
                )
            previous_epoch = record.epoch
            expected += 1
        return previous_epoch

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the environment and release the directory; closing twice is harmless."""
        with self._lock:
            self._wait_for_copies()
            self._release()

    def _release(self) -> None:
        env, self._env = self._env, None
        try:
            if env is not None:
                if not self._sync:
                    # Without per-commit flushes, flush once on a clean shutdown.
                    try:
                        env.sync(True)
                    except lmdb.Error:
                        pass
                env.close()
        finally:
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, cluster={self.cluster!r}, node={self.node!r})"

    def _wait_for_copies(self) -> None:
        """Wait, holding the main lock, until no copy_to() has a transaction open."""
        with self._no_copy_running:
            self._no_copy_running.wait_for(lambda: self._copies_running == 0)

    def _require_env(self) -> lmdb.Environment:
        if self._env is None:
            raise StoreError(f"the store in {self.path} is closed")
        return self._env

    # ---------------------------------------------------------------- writes

    def _write(self, work: Callable[[lmdb.Transaction[Any]], _T]) -> _T:
        """Run ``work`` in one write transaction and commit it durably.

        On a full map the transaction is aborted, the map grows and ``work``
        runs again from the start, so a caller never sees a partial write.
        """
        env = self._require_env()
        while True:
            try:
                with env.begin(write=True) as txn:
                    result = work(txn)
            except lmdb.MapFullError:
                self._grow_map()
                continue
            except lmdb.PanicError as exc:
                raise StoreError(
                    f"LMDB could not write the meta page of {self.path} ({exc}); the environment is "
                    f"unusable until the store is closed and reopened"
                ) from exc
            except lmdb.Error as exc:
                reason = _out_of_space_reason(exc, self.path)
                if reason is not None:
                    raise StorageFull(
                        f"cannot write to the store in {self.path}: {reason} ({exc}); nothing was "
                        f"written"
                    ) from exc
                raise StoreError(f"writing to the store in {self.path} failed: {exc}") from exc
            self._commits += 1
            return result

    def _grow_map(self) -> None:
        """Grow the map (doubling, capped by the limit and by the free disk), or raise StorageFull."""
        env = self._require_env()
        self._wait_for_copies()
        info = env.info()
        current = int(info["map_size"])
        page_bytes = int(env.stat()["psize"])
        limit = self._map_size_max_bytes
        if current >= limit:
            raise StorageFull(
                f"the store in {self.path} is full: its map of {current} bytes has reached "
                f"map_size_max_bytes={limit}; nothing was written. Take a snapshot and truncate the "
                f"log, or raise the limit"
            )
        try:
            file_bytes = (self.path / "data.mdb").stat().st_size
            free_disk = shutil.disk_usage(self.path).free
        except OSError as exc:
            raise StoreError(f"cannot measure the disk holding {self.path}: {exc}") from exc
        # The map may only promise pages the disk can actually hold; a map
        # larger than the disk would turn a clean MapFullError into an I/O
        # failure half way through a commit.
        room = file_bytes + free_disk
        target = min(current * 2, limit, room)
        target -= target % page_bytes
        if target <= current:
            raise StorageFull(
                f"the store in {self.path} is full: its map of {current} bytes cannot grow because the "
                f"disk has only {free_disk} bytes free; nothing was written. Free disk space"
            )
        try:
            env.set_mapsize(target)
        except lmdb.Error as exc:
            raise StoreError(
                f"cannot grow the map of {self.path} to {target} bytes: {exc}"
            ) from exc
        self._map_grows += 1

    def _release_freed_pages(self) -> None:
        """Commit one more small transaction so that pages freed by the last one can be reused.

        LMDB keeps the previous committed tree intact until the next commit, so
        pages freed by transaction N are reusable only from transaction N + 2.
        A full store whose appends keep failing never commits, so without this
        commit the space that truncation just freed would stay out of reach.
        """

        def work(txn: lmdb.Transaction[Any]) -> None:
            # Rewriting a value with itself dirties a page, which is all a
            # commit needs; reading it in the same transaction keeps the rewrite
            # independent of the in-memory copies.
            value = txn.get(_META_APPLIED_LSN, db=self._meta)
            if value is not None:
                txn.put(_META_APPLIED_LSN, bytes(value), db=self._meta)

        self._write(work)

    @property
    def map_size_max_bytes(self) -> int:
        """The largest map size the store may grow to."""
        return self._map_size_max_bytes

    def set_map_size_max_bytes(self, map_size_max_bytes: int) -> None:
        """Change the limit the map may grow to (after an operator freed or added disk)."""
        if map_size_max_bytes <= 0:
            raise StoreError(f"map_size_max_bytes must be positive, got {map_size_max_bytes}")
        with self._lock:
            self._map_size_max_bytes = map_size_max_bytes

    def append(self, records: Sequence[Record], *, forget: Sequence[str] = ()) -> None:
        """Write a batch of records in one durable transaction (group commit).

        Every record is verified first: checksum, LSNs continuing last_lsn()
        without gaps, epochs never decreasing and never above epoch().  A
        refused batch leaves the store untouched.  Records' secrets go to the
        secrets database (a key already there is kept), and the keys named in
        `forget` are destroyed in the same transaction.  A record of an epoch
        the epoch history does not reach yet (its entry went with a truncated
        tail or an installed snapshot) starts that epoch in the history, in
        the same transaction: the history always covers the log.
        """
        if not records:
            if forget:
                self.forget_secrets(forget)
            return
        with self._lock:
            self._require_env()
            expected = self._last_lsn + 1
            previous_epoch = self._last_epoch
            history = self._history
            latest_epoch = max(history, default=0)
            items: list[tuple[bytes, bytes]] = []
            secrets: list[Record] = []
            for record in records:
                if not isinstance(record, Record):
                    raise StoreError(f"append() takes Record objects, got {type(record).__name__}")
                record.verify()
                if record.lsn != expected:
                    raise LogGap(
                        f"cannot append record LSN {record.lsn}: the log continues at LSN {expected}",
                        expected=expected,
                        found=record.lsn,
                    )
                if record.epoch < previous_epoch:
                    raise StaleEpoch(
                        f"cannot append record LSN {record.lsn} of epoch {record.epoch}: the record "
                        f"before it is of epoch {previous_epoch}, and epochs never go back"
                    )
                if record.epoch > self._epoch:
                    raise StaleEpoch(
                        f"cannot append record LSN {record.lsn} of epoch {record.epoch}: this store is "
                        f"at epoch {self._epoch}; call set_epoch() first"
                    )
                if record.epoch > latest_epoch:
                    history = {**history, record.epoch: record.lsn}
                    latest_epoch = record.epoch
                items.append((_key(record.lsn), encode(record)))
                if record.secret:
                    secrets.append(record)
                previous_epoch = record.epoch
                expected += 1
            last_lsn = expected - 1

            def work(txn: lmdb.Transaction[Any]) -> None:
                for record in secrets:
                    self._put_secret(txn, record.lsn, record.secret)
                for key_id in forget:
                    self._forget_secret(txn, key_id)
                with txn.cursor(self._log) as cursor:
                    # append=True (MDB_APPEND) skips the B-tree search because
                    # keys arrive in order; it refuses a key that is not past
                    # the last one, which would mean the log holds more than
                    # last_lsn says.
                    _, added = cursor.putmulti(items, append=True)
                if added != len(items):
                    raise StoreError(
                        f"the log in {self.path} already holds records after LSN {self._last_lsn}; "
                        f"the store is inconsistent, reopen it"
                    )
                txn.put(_META_APPLIED_LSN, _key(last_lsn), db=self._meta)
                if history is not self._history:
                    txn.put(_META_EPOCH_HISTORY, _history_encoder.encode(history), db=self._meta)

            self._write(work)
            self._last_lsn = last_lsn
            self._last_epoch = previous_epoch
            self._history = history

    def set_epoch(self, epoch: int, first_lsn: int) -> None:
        """Move durably to a higher epoch whose first record is ``first_lsn``."""
        with self._lock:
            self._require_env()
            if epoch <= self._epoch:
                raise StaleEpoch(
                    f"cannot move the store in {self.path} to epoch {epoch}: it is already at epoch "
                    f"{self._epoch}, and epochs only increase"
                )
            if first_lsn < 1:
                raise StoreError(
                    f"epoch {epoch} must start at an LSN of at least 1, got {first_lsn}"
                )
            history = {**self._history, epoch: first_lsn}

            def work(txn: lmdb.Transaction[Any]) -> None:
                txn.put(_META_EPOCH, _key(epoch), db=self._meta)
                txn.put(_META_EPOCH_HISTORY, _history_encoder.encode(history), db=self._meta)

            self._write(work)
            self._epoch = epoch
            self._history = history

    def truncate_tail(self, after_lsn: int) -> int:
        """Durably delete the records after ``after_lsn``; return how many were deleted.

        A rejoining node uses this to discard a tail the cluster never
        acknowledged.  Snapshots beyond ``after_lsn`` and epoch-history entries
        that start after it go too; the current epoch stays, because an epoch
        this node has seen must never be accepted again from an old primary.
        """
        if after_lsn < 0:
            raise StoreError(f"truncate_tail() needs an LSN of at least 0, got {after_lsn}")
        with self._lock:
            self._require_env()
            if after_lsn >= self._last_lsn:
                return 0
            floor = self._first_lsn - 1
            if after_lsn < floor:
                raise StoreError(
                    f"cannot truncate the log of {self.path} to LSN {after_lsn}: records up to LSN "
                    f"{floor} were already pruned into a snapshot; install a snapshot from the "
                    f"primary instead"
                )
            history = {e: lsn for e, lsn in self._history.items() if lsn <= after_lsn}

            def work(txn: lmdb.Transaction[Any]) -> tuple[int, int, int]:
                # Some snapshot at or after the log's floor must survive, or
                # the state at after_lsn could no longer be rebuilt.
                snapshot_lsn = 0
                with txn.cursor(self._snapshots) as cursor:
                    if cursor.set_range(_key(after_lsn + 1)):
                        while cursor.delete():
                            pass
                    if cursor.last():
                        snapshot_lsn = _lsn_of(cursor.key())
                self._drop_unused_parts(txn)
                if floor > 0 and snapshot_lsn < floor:
                    raise StoreError(
                        f"cannot truncate the log of {self.path} to LSN {after_lsn}: no snapshot at or "
                        f"after LSN {floor} would remain to rebuild the state; install a snapshot "
                        f"from the primary instead"
                    )
                deleted = 0
                last_epoch = 0
                with txn.cursor(self._secret_lsns) as cursor:
                    doomed = [bytes(value).decode() for _, value in cursor.iternext()] if cursor.set_range(_key(after_lsn + 1)) else []
                for key_id in doomed:
                    self._forget_secret(txn, key_id)
                with txn.cursor(self._log) as cursor:
                    if cursor.set_range(_key(after_lsn + 1)):
                        while cursor.delete():
                            deleted += 1
                    if cursor.set_key(_key(after_lsn)):
                        last_epoch = decode_record(after_lsn, cursor.value()).epoch
                txn.put(_META_APPLIED_LSN, _key(after_lsn), db=self._meta)
                txn.put(_META_EPOCH_HISTORY, _history_encoder.encode(history), db=self._meta)
                return deleted, snapshot_lsn, last_epoch

            deleted, snapshot_lsn, last_epoch = self._write(work)
            self._release_freed_pages()
            self._last_lsn = after_lsn
            if self._first_lsn > after_lsn:
                self._first_lsn = after_lsn + 1
            self._snapshot_lsn = snapshot_lsn
            self._last_epoch = last_epoch
            self._history = history
            return deleted

    def save_snapshot(self, *, lsn: int, epoch: int, at: float, state: bytes) -> None:
        """Durably store the state after applying LSN ``lsn``; keep the newest few snapshots.

        A snapshot over SNAPSHOT_PART_BYTES goes in parts, each in its own write transaction,
        with the store's lock released in between so that appends (from another thread) go on;
        the snapshot exists once its header is committed, after every part.
        """
        with self._lock:
            self._check_snapshot(lsn, epoch)
            if lsn == self._snapshot_lsn and self._has_snapshot(lsn):
                return  # the state at an LSN is always the same: this one is stored already
        self.save_encoded_snapshot(lsn=lsn, epoch=epoch, encoded=encode(Snapshot.make(lsn=lsn, epoch=epoch, at=at, state=state)))

    def save_encoded_snapshot(self, *, lsn: int, epoch: int, encoded: bytes | memoryview) -> None:
        """`save_snapshot` for a snapshot already built and encoded for the store
        (`records.encode(Snapshot.make(...))` with this `lsn` and `epoch`: the node's forked
        child does that, so the event loop's process never copies the state to build it)."""
        with self._lock:
            self._check_snapshot(lsn, epoch)
            if lsn == self._snapshot_lsn and self._has_snapshot(lsn):
                return
        header = None
        if len(encoded) > SNAPSHOT_PART_BYTES:
            starts = range(0, len(encoded), SNAPSHOT_PART_BYTES)
            header = _PARTS_HEADER + _parts_header.pack(len(starts), len(encoded))
            view = memoryview(encoded)
            with self._lock:
                self._parts_in_progress.add(lsn)
            try:
                for index, start in enumerate(starts):
                    key, part = _part_key(lsn, index), view[start : start + SNAPSHOT_PART_BYTES]

                    def put_part(txn: lmdb.Transaction[Any], key: bytes = key, part: memoryview = part) -> None:
                        txn.put(key, part, db=self._snapshot_parts)

                    with self._lock:
                        self._require_env()
                        self._write(put_part)
            except BaseException:
                with self._lock:
                    self._parts_in_progress.discard(lsn)
                raise
        kept = self._snapshots_kept
        with self._lock:
            try:
                self._check_snapshot(lsn, epoch)

                def work(txn: lmdb.Transaction[Any]) -> None:
                    raw = txn.get(_key(lsn), db=self._log)
                    if raw is not None:
                        record_epoch = decode_record(lsn, raw).epoch
                        if record_epoch > epoch:
                            raise StaleEpoch(
                                f"cannot save a snapshot at LSN {lsn} claiming epoch {epoch}: the record "
                                f"at that LSN was written in the later epoch {record_epoch}"
                            )
                    txn.put(_key(lsn), header if header is not None else encoded, db=self._snapshots)
                    excess = txn.stat(self._snapshots)["entries"] - kept
                    with txn.cursor(self._snapshots) as cursor:
                        cursor.first()
                        for _ in range(excess):
                            cursor.delete()
                    self._drop_unused_parts(txn)

                self._write(work)
            finally:
                self._parts_in_progress.discard(lsn)
            self._snapshot_lsn = lsn

    def _has_snapshot(self, lsn: int) -> bool:
        with self._require_env().begin() as txn:
            return txn.get(_key(lsn), db=self._snapshots) is not None

    def _check_snapshot(self, lsn: int, epoch: int) -> None:
        """Refuse a snapshot the log does not back (called with the lock held)."""
        self._require_env()
        if lsn > self._last_lsn:
            raise StoreError(
                f"cannot save a snapshot at LSN {lsn}: the log of {self.path} ends at LSN "
                f"{self._last_lsn}"
            )
        if lsn < self._snapshot_lsn:
            raise StoreError(
                f"cannot save a snapshot at LSN {lsn}: a newer snapshot at LSN "
                f"{self._snapshot_lsn} exists"
            )
        if epoch > self._epoch:
            raise StaleEpoch(
                f"cannot save a snapshot of epoch {epoch}: this store is at epoch {self._epoch}"
            )

    def install_snapshot(self, snapshot: Snapshot, secrets: dict[str, tuple[int, bytes]] | None = None,
                         epoch_history: dict[int, int] | None = None) -> None:
        """Replace the whole log with a snapshot received from the primary, in one transaction.

        Afterwards last_lsn() is the snapshot's LSN and the log is empty. The
        epoch history becomes the primary's ``epoch_history`` up to the
        snapshot's LSN (which epoch wrote the LSNs it covers), since this
        node's own history described the log it replaces; without one (a
        primary of an older release) the history is left as it is.
        """
        if not isinstance(snapshot, Snapshot):
            raise StoreError(f"install_snapshot() takes a Snapshot, got {type(snapshot).__name__}")
        snapshot.verify()
        with self._lock:
            self._require_env()
            if snapshot.epoch > self._epoch:
                raise StaleEpoch(
                    f"cannot install a snapshot of epoch {snapshot.epoch}: this store is at epoch "
                    f"{self._epoch}; call set_epoch() first"
                )
            encoded = encode(snapshot)
            history = self._history
            if epoch_history:
                history = {e: lsn for e, lsn in epoch_history.items() if 1 <= lsn <= snapshot.lsn and e <= self._epoch}

            def work(txn: lmdb.Transaction[Any]) -> None:
                txn.put(_META_EPOCH_HISTORY, _history_encoder.encode(history), db=self._meta)
                txn.drop(self._log, delete=False)
                txn.drop(self._snapshots, delete=False)
                txn.drop(self._secrets, delete=False)
                txn.drop(self._secret_lsns, delete=False)
                for key_id, (lsn, key) in (secrets or {}).items():
                    self._put_secret(txn, lsn, key_id.encode() + key)
                self._drop_unused_parts(txn)
                txn.put(_key(snapshot.lsn), encoded, db=self._snapshots)
                txn.put(_META_APPLIED_LSN, _key(snapshot.lsn), db=self._meta)

            self._write(work)
            self._release_freed_pages()
            self._last_lsn = snapshot.lsn
            self._first_lsn = snapshot.lsn + 1
            self._last_epoch = 0
            self._snapshot_lsn = snapshot.lsn
            self._history = history

    def truncate_log(self, before_lsn: int) -> int:
        """Delete records before ``before_lsn`` for retention; return how many were deleted.

        Records after the latest snapshot are always kept, since the state can
        only be rebuilt from a snapshot plus every record after it.
        """
        with self._lock:
            self._require_env()
            stop = min(before_lsn, self._snapshot_lsn + 1)
            deleted = 0
            while self._first_lsn < stop:
                chunk_stop = min(stop, self._first_lsn + _TRUNCATE_CHUNK_RECORDS)

                def work(
                    txn: lmdb.Transaction[Any], chunk_stop: int = chunk_stop
                ) -> tuple[int, int]:
                    count = 0
                    with txn.cursor(self._log) as cursor:
                        cursor.first()
                        # An unpositioned cursor (empty log, or the last record
                        # deleted) has an empty key.
                        while (key := cursor.key()) and _lsn_of(key) < chunk_stop:
                            cursor.delete()
                            count += 1
                        key = cursor.key()
                        return count, (_lsn_of(key) if key else self._last_lsn + 1)

                count, first_lsn = self._write(work)
                deleted += count
                self._first_lsn = first_lsn
            if deleted:
                self._release_freed_pages()
            return deleted

    # ----------------------------------------------------------------- secrets

    def _put_secret(self, txn: lmdb.Transaction[Any], lsn: int, secret: bytes) -> None:
        if len(secret) <= SECRET_ID_BYTES:
            raise StoreError(f"record LSN {lsn}: a secret is a {SECRET_ID_BYTES}-byte key id and a key")
        key_id, key = secret[:SECRET_ID_BYTES], secret[SECRET_ID_BYTES:]
        if txn.put(key_id, _key(lsn) + key, db=self._secrets, overwrite=False):
            txn.put(_key(lsn), key_id, db=self._secret_lsns)

    def _forget_secret(self, txn: lmdb.Transaction[Any], key_id: str) -> None:
        raw = key_id.encode()
        stored = txn.get(raw, db=self._secrets)
        if stored is not None:
            txn.delete(bytes(stored)[:8], db=self._secret_lsns)
            txn.delete(raw, db=self._secrets)

    def forget_secrets(self, key_ids: Sequence[str]) -> None:
        """Durably destroy the keys `key_ids` (those not here are ignored)."""
        if not key_ids:
            return
        with self._lock:
            self._require_env()

            def work(txn: lmdb.Transaction[Any]) -> None:
                for key_id in key_ids:
                    self._forget_secret(txn, key_id)

            self._write(work)

    def secret(self, key_id: str) -> bytes | None:
        """The key `key_id`, or None once it was destroyed (or never stored)."""
        with self._lock:
            env = self._require_env()
            with env.begin() as txn:
                stored = txn.get(key_id.encode(), db=self._secrets)
        return None if stored is None else bytes(stored)[8:]

    def secrets(self) -> dict[str, tuple[int, bytes]]:
        """Every key still kept: `{key id: (LSN of its record, key)}` (for a snapshot's transfer)."""
        with self._lock:
            env = self._require_env()
            with env.begin() as txn, txn.cursor(self._secrets) as cursor:
                return {bytes(k).decode(): (_lsn_of(bytes(v)[:8]), bytes(v)[8:]) for k, v in cursor.iternext()}

    def put_meta(self, key: str, value: bytes) -> None:
        """Durably store a small value for another layer (for example replication)."""
        if key in RESERVED_META_KEYS:
            raise StoreError(
                f"the meta key {key!r} belongs to the store itself and cannot be written"
            )
        raw_key = self._meta_key(key)
        value = bytes(value)
        with self._lock:
            self._require_env()

            def work(txn: lmdb.Transaction[Any]) -> None:
                txn.put(raw_key, value, db=self._meta)

            self._write(work)

    # ----------------------------------------------------------------- reads

    def last_lsn(self) -> int:
        """The last LSN written (0 for a new store); retention does not lower it."""
        return self._last_lsn

    def first_lsn(self) -> int:
        """The first LSN still in the log, or last_lsn() + 1 when the log is empty."""
        return self._first_lsn

    def epoch(self) -> int:
        """The current epoch (0 for a new store)."""
        return self._epoch

    def epoch_history(self) -> dict[int, int]:
        """``{epoch: first LSN written in it}``."""
        return dict(self._history)

    def read(self, after_lsn: int, limit: int = 1000) -> list[Record]:
        """Return up to ``limit`` records with LSN > ``after_lsn``, in order, each verified.

        Raises LogGap when records right after ``after_lsn`` were already
        pruned by retention: the caller then needs a snapshot instead.
        """
        if limit < 1:
            raise StoreError(f"read() needs a limit of at least 1, got {limit}")
        if after_lsn < 0:
            raise StoreError(f"read() needs an LSN of at least 0, got {after_lsn}")
        with self._lock:
            env = self._require_env()
            if after_lsn >= self._last_lsn:
                return []
            if after_lsn + 1 < self._first_lsn:
                raise LogGap(
                    f"records after LSN {after_lsn} are no longer in the log of {self.path}, which "
                    f"starts at LSN {self._first_lsn}; a snapshot is needed",
                    expected=after_lsn + 1,
                    found=self._first_lsn,
                )
            records: list[Record] = []
            expected = after_lsn + 1
            with (
                _lmdb_errors(f"reading the log of {self.path} after LSN {after_lsn}"),
                env.begin(buffers=True) as txn,
                txn.cursor(self._log) as cursor,
            ):
                # buffers=True hands msgspec a view into the map instead of
                # a copy; decoding copies the payload out before the
                # transaction ends.
                if not cursor.set_range(_key(expected)):
                    raise LogGap(
                        f"the log of {self.path} ends before LSN {expected}, but LSN "
                        f"{self._last_lsn} was written",
                        expected=expected,
                        found=0,
                    )
                for key, value in cursor.iternext():
                    lsn = _lsn_of(key)
                    if lsn != expected:
                        raise LogGap(
                            f"the log of {self.path} jumps from LSN {expected - 1} to LSN {lsn}",
                            expected=expected,
                            found=lsn,
                        )
                    record = decode_record(lsn, value)
                    key_id = txn.get(key, db=self._secret_lsns)
                    if key_id is not None:
                        sealed = txn.get(bytes(key_id), db=self._secrets)
                        if sealed is not None:
                            record = msgspec.structs.replace(record, secret=bytes(key_id) + bytes(sealed)[8:])
                    if records and record.epoch < records[-1].epoch:
                        raise StaleEpoch(
                            f"record LSN {lsn} in {self.path} has epoch {record.epoch}, lower "
                            f"than the epoch {records[-1].epoch} before it; the log is damaged"
                        )
                    records.append(record)
                    if len(records) >= limit:
                        break
                    expected += 1
            return records

    def latest_snapshot(self) -> Snapshot | None:
        """The newest snapshot, verified, or None when there is none."""
        with self._lock:
            env = self._require_env()
            with (
                _lmdb_errors(f"reading the snapshots of {self.path}"),
                env.begin(buffers=True) as txn,
                txn.cursor(self._snapshots) as cursor,
            ):
                if not cursor.last():
                    return None
                return self._read_snapshot(txn, _lsn_of(cursor.key()), cursor.value())

    def _read_snapshot(self, txn: lmdb.Transaction[Any], lsn: int, value: bytes | memoryview) -> Snapshot:
        """Decode and verify the snapshot stored under `lsn`, joining its parts if it has any."""
        if bytes(value[: len(_PARTS_HEADER)]) != _PARTS_HEADER:
            return decode_snapshot(lsn, value)
        try:
            count, total = _parts_header.unpack(bytes(value[len(_PARTS_HEADER):]))
        except struct.error:
            raise CorruptRecord(f"the header of the snapshot at LSN {lsn} is damaged", lsn=lsn) from None
        parts = []
        for index in range(count):
            part = txn.get(_part_key(lsn, index), db=self._snapshot_parts)
            if part is None:
                raise CorruptRecord(f"the snapshot at LSN {lsn} is missing part {index + 1} of {count}; it is damaged", lsn=lsn)
            parts.append(bytes(part))
        data = b"".join(parts)
        if len(data) != total:
            raise CorruptRecord(f"the parts of the snapshot at LSN {lsn} hold {len(data)} bytes, its header says {total}; it is damaged", lsn=lsn)
        return decode_snapshot(lsn, data)

    def _drop_unused_parts(self, txn: lmdb.Transaction[Any]) -> None:
        """Delete the parts of snapshots that are gone (or were never finished), except those
        of a snapshot being written now."""
        keep = self._parts_in_progress
        with txn.cursor(self._snapshot_parts) as parts:
            found = parts.first()
            while found:
                lsn = int.from_bytes(parts.key()[:8], "big")
                if lsn in keep or txn.get(_key(lsn), db=self._snapshots) is not None:
                    found = parts.next()
                else:
                    found = parts.delete()

    def get_meta(self, key: str) -> bytes | None:
        """Read a value stored with put_meta() (or one of the store's own keys)."""
        raw_key = self._meta_key(key)
        with self._lock:
            env = self._require_env()
            with _lmdb_errors(f"reading meta key {key!r} of {self.path}"), env.begin() as txn:
                return txn.get(raw_key, db=self._meta)

    def _meta_key(self, key: str) -> bytes:
        raw = key.encode()
        if not raw or len(raw) > 511:
            raise StoreError(f"a meta key must be 1 to 511 bytes of UTF-8, got {len(raw)} bytes")
        return raw

    def log_bytes_estimate(self) -> int:
        """Bytes of pages the log occupies in the data file."""
        with self._lock:
            env = self._require_env()
            with _lmdb_errors(f"measuring the log of {self.path}"), env.begin() as txn:
                stat = txn.stat(self._log)
            return int(
                (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]
            )

    def statistics(self) -> StoreStatistics:
        """A point-in-time view of sizes, LSNs and counters."""
        with self._lock:
            env = self._require_env()
            with _lmdb_errors(f"measuring the store in {self.path}"), env.begin() as txn:
                info = env.info()
                stat = txn.stat(self._log)
            try:
                size_bytes = (self.path / "data.mdb").stat().st_size
                free_disk_bytes = shutil.disk_usage(self.path).free
            except OSError as exc:
                raise StoreError(f"cannot measure the store in {self.path}: {exc}") from exc
            return StoreStatistics(
                size_bytes=size_bytes,
                map_size_bytes=int(info["map_size"]),
                used_bytes=int((info["last_pgno"] + 1) * stat["psize"]),
                free_disk_bytes=free_disk_bytes,
                first_lsn=self._first_lsn,
                last_lsn=self._last_lsn,
                snapshot_lsn=self._snapshot_lsn,
                records=int(stat["entries"]),
                commits=self._commits,
                map_grows=self._map_grows,
            )

    def copy_to(self, path: str | os.PathLike[str], *, compact: bool = True) -> None:
        """Write a consistent, durable backup of the store into the directory ``path``.

        The copy is taken from one read transaction, so writers keep going;
        it opens as a store of the same cluster and node.
        """
        target = Path(path)
        with self._lock:
            env = self._require_env()
            with self._copy_lock:
                self._copies_running += 1
        try:
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
            if (target / "data.mdb").exists():
                raise StoreError(f"cannot copy the store to {target}: it already holds a data.mdb")
            env.copy(str(target), compact=compact)
            private_files(target)
            # LMDB's copy does not flush; a backup must survive a power cut.
            fd = os.open(target / "data.mdb", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_directory(target)
        except lmdb.Error as exc:
            reason = _out_of_space_reason(exc, target)
            if reason is not None:
                raise StorageFull(f"cannot copy the store to {target}: {reason} ({exc})") from exc
            raise StoreError(f"cannot copy the store to {target}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot copy the store to {target}: {exc}") from exc
        finally:
            with self._no_copy_running:
                self._copies_running -= 1
                self._no_copy_running.notify_all()
