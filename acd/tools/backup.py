"""Backup, restore and export of a node's store (`acd backup`, `acd restore`, `acd export`).

A backup is LMDB's own consistent copy with compaction, taken from the running node's data
directory by a read-only reader in this process (LMDB lets any number of readers work beside
the writer), then opened and fully verified (checksums, LSN continuity, epochs) before a
manifest with the cluster, node, epoch, LSN and the file's SHA-256 is written next to it.

`restore` seeds a node's data directory from a backup: it refuses a backup of another
cluster, a damaged file, and a data directory in use; it keeps a directory it replaces. A
restored node starts as standby and catches up from the primary (or is truncated to what the
cluster acknowledged).

`export` writes one record per finished interaction (and per call-back still owed), or one per
leg (`--rows legs`: talk, hold and wrap-up seconds), from a consistent copy of the store; the
columns suffice to recompute every KPI of docs/kpis.md.
Caller numbers are personal data: the core keeps them only as a masked form and a keyed hash
(the clear number only while a call-back is pending), so an export carries the masked number;
`--unmask` (admin token when tokens are configured) adds the keyed hash, which links repeat
callers without revealing them. No clear number is retained for completed interactions.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgspec

from acd import settings as settings_module
from acd.store import Store, StoreError
from acd.store.lmdb_store import private_files

MANIFEST = "manifest.json"


class BackupError(Exception):
    """A backup or restore that must not go on; the message names the problem."""


class Manifest(msgspec.Struct, kw_only=True):
    cluster: str
    node: str
    epoch: int
    lsn: int
    snapshot_lsn: int
    records: int
    sha256: str
    created_at: str
    format: int = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_store(data_dir: Path, target: Path) -> None:
    """A consistent, compacted copy of the LMDB environment in `data_dir` (node may be running)."""
    if not (data_dir / "data.mdb").exists():
        raise BackupError(f"{data_dir}: no store here (no data.mdb)")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise BackupError(f"{target}: the backup folder must be empty")
    try:
        env = lmdb.open(str(data_dir), readonly=True, lock=True, max_dbs=8, subdir=True)
    except lmdb.Error as error:
        raise BackupError(f"{data_dir}: cannot open the store to copy it: {error}") from None
    try:
        env.copy(str(target), compact=True)
    finally:
        env.close()
    private_files(target)


def backup(settings: settings_module.Settings, node: str, target: Path) -> Manifest:
    data_dir = settings.data_dir(node)
    copy_store(data_dir, target)
    try:
        store = Store(target, cluster=settings.cluster.name, node=node, migrate=False)  # a copy: as it was
    except StoreError as error:
        shutil.rmtree(target, ignore_errors=True)
        raise BackupError(f"the copy of {data_dir} does not verify: {error}") from None
    try:
        statistics = store.statistics()
        snapshot = store.latest_snapshot()
        manifest = Manifest(
            cluster=settings.cluster.name, node=node, epoch=store.epoch(), lsn=store.last_lsn(),
            snapshot_lsn=snapshot.lsn if snapshot else 0, records=statistics.records, sha256="",
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    finally:
        store.close()
    (target / "store.lock").unlink(missing_ok=True)
    (target / "lock.mdb").unlink(missing_ok=True)
    manifest.sha256 = _sha256(target / "data.mdb")
    (target / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    os.chmod(target / MANIFEST, 0o600)
    return manifest


def read_manifest(source: Path) -> Manifest:
    try:
        return msgspec.json.decode((source / MANIFEST).read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise BackupError(f"{source}: not a backup (no {MANIFEST})") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise BackupError(f"{source / MANIFEST}: damaged manifest: {error}") from None


def _in_use(data_dir: Path) -> bool:
    lock = data_dir / "store.lock"
    if not lock.exists():
        return False
    descriptor = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def restore(settings: settings_module.Settings, node: str, source: Path, *, force: bool = False) -> tuple[Manifest, Path | None]:
    manifest = read_manifest(source)
    settings.node(node)
    if manifest.cluster != settings.cluster.name:
        raise BackupError(f"{source}: this backup is of cluster {manifest.cluster!r}, not {settings.cluster.name!r}")
    if _sha256(source / "data.mdb") != manifest.sha256:
        raise BackupError(f"{source / 'data.mdb'}: checksum does not match the manifest (damaged backup)")
    data_dir = settings.data_dir(node)
    kept: Path | None = None
    if data_dir.exists() and any(data_dir.iterdir()):
        if _in_use(data_dir):
            raise BackupError(f"{data_dir}: node {node} is running on this data directory; stop it first")
        if not force:
            raise BackupError(f"{data_dir} is not empty; pass --force to replace it (it is kept aside, not deleted)")
        kept = data_dir.with_name(f"{data_dir.name}.replaced-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
        data_dir.rename(kept)
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "data.mdb", data_dir / "data.mdb")
    if manifest.node != node:
        # Seeding another node (replacing a dead one from the survivor's backup): the
        # store records which node it belongs to, so say so before the node opens it.
        env = lmdb.open(str(data_dir), max_dbs=8, subdir=True)
        try:
            meta = env.open_db(b"meta")
            with env.begin(write=True) as txn:
                txn.put(b"node", node.encode(), db=meta)
        finally:
            env.close()
    try:
        Store(data_dir, cluster=settings.cluster.name, node=node, migrate=False).close()  # the node migrates at start
    except StoreError as error:
        raise BackupError(f"the restored store in {data_dir} does not verify: {error}") from None
    return manifest, kept


def completed_interactions(settings: settings_module.Settings, node: str, rows: str = "interactions") -> Iterator[dict[str, Any]]:
    """Export records from a consistent copy of the node's state: one per finished interaction
    (and per call-back still owed), or with `rows="legs"` one per leg (acd.api.views)."""
    from acd.api import views
    from acd.node.node import Node

    with tempfile.TemporaryDirectory(prefix="acd-export-") as temporary:
        copy = Path(temporary) / "store"
        copy_store(settings.data_dir(node), copy)
        store = Store(copy, cluster=settings.cluster.name, node=node, migrate=False)
        replica = Node(settings, node, store=store)
        try:
            builders = {"legs": views.leg_rows, "intervals": views.interval_export_rows, "agents": views.agent_export_rows}
            yield from builders.get(rows, views.interaction_rows)(replica.center)
        finally:
            store.close()


def _iso(at: float | None, zone: Any) -> str:
    return dt.datetime.fromtimestamp(at, zone).isoformat(timespec="seconds") if at else ""


def _admin(settings: settings_module.Settings, token: str) -> bool:
    if not settings.tokens:
        return True
    wanted = settings_module.hash_token(token)
    return any(entry.role == "admin" and entry.hash == wanted for entry in settings.tokens)


def export(settings: settings_module.Settings, node: str, first: dt.date, last: dt.date, fmt: str, out: Any, *, unmask: bool,
           rows_of: str = "interactions") -> int:
    from acd.api import views

    columns = list({"legs": views.LEG_COLUMNS, "intervals": views.INTERVAL_ROW_COLUMNS,
                    "agents": views.AGENT_ROW_COLUMNS}.get(rows_of, views.INTERACTION_COLUMNS))
    if unmask and rows_of == "interactions":
        columns.append("caller_hash")
    rows = sorted(
        (record for record in completed_interactions(settings, node, rows_of) if first.isoformat() <= record["date"] <= last.isoformat()),
        key=lambda record: (record["date"], str(record.get("arrived_at") or record.get("answered_at") or record.get("queue") or ""),
                            str(record.get("id") or record.get("agent") or ""), record.get("interval", 0), record.get("leg", 0)),
    )
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        for row in rows:
            out.write(json.dumps({column: row[column] for column in columns}, ensure_ascii=False) + "\n")
    return len(rows)


# ---------------------------------------------------------------------------------- CLI


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backup", help="consistent, verified copy of a node's store with a manifest",
        description="Copy node NAME's store (LMDB's copy with compaction; the node may be running) to PATH, verify it "
                    "and write manifest.json (cluster, node, epoch, LSN, SHA-256).",
        epilog="example: acd backup --config cluster.toml --node a --to /backup/acd-2026-11-23",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    parser.add_argument("--node", required=True, metavar="NAME", help="the node whose store to copy (it may be running)")
    parser.add_argument("--to", required=True, metavar="PATH", help="an empty or new folder")
    parser.add_argument("--token", default="", help="supervisor or admin token when authentication is on (default: $ACD_TOKEN)")
    parser.set_defaults(run=_backup)

    parser = subparsers.add_parser(
        "restore", help="seed a node's data directory from a backup",
        description="Seed node NAME's data directory from a backup folder. Refuses a backup of another cluster, a damaged "
                    "backup and a running node; replaces a non-empty data directory only with --force, keeping the old "
                    "one aside. The node then starts as standby and catches up from the primary.",
        epilog="example: acd restore --config cluster.toml --node b --from /backup/acd-2026-11-23 --force",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    parser.add_argument("--node", required=True, metavar="NAME", help="the stopped node whose data directory to seed")
    parser.add_argument("--from", dest="source", required=True, metavar="PATH", help="the backup folder (with manifest.json)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty data directory (kept aside)")
    parser.set_defaults(run=_restore)

    parser = subparsers.add_parser(
        "export", help="one record per completed interaction, CSV or JSON lines",
        description="Export completed interactions (answered and wrapped up, abandoned, transferred out, closed) whose "
                    "local arrival date is within --from..--to, from a consistent copy of a node's store. Caller numbers "
                    "are masked; --unmask (admin) adds the keyed caller hash. Clear numbers are not retained.",
        epilog="example: acd export --config cluster.toml --from 2026-11-01 --to 2026-11-30 --format csv > november.csv",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    parser.add_argument("--node", default="", metavar="NAME", help="node whose store to read (default: the first node)")
    parser.add_argument("--from", dest="first", required=True, metavar="DATE", type=_date, help="first local day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", required=True, metavar="DATE", type=_date, help="last local day, YYYY-MM-DD (included)")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="default: %(default)s")
    parser.add_argument("--output", default="-", metavar="FILE", help="file to write (default: standard output)")
    parser.add_argument("--unmask", action="store_true", help="add the keyed caller hash (admin only)")
    parser.add_argument("--rows", choices=("interactions", "legs", "intervals", "agents"), default="interactions",
                        help="one row per interaction, per leg (talk, hold and wrap-up seconds), per 15-minute interval "
                             "(center and queues, every KPI) or per agent and day (default: %(default)s)")
    parser.add_argument("--token", default=os.environ.get("ACD_TOKEN", ""), help="admin token when tokens are configured")
    parser.set_defaults(run=_export)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _backup(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config)
    settings.node(args.node)
    # The node's address must answer as that node of this cluster (or not at all: a stopped
    # node is backed up from its data directory, whose store names its cluster too).
    from acd import identity

    with identity.client(settings) as http:
        answer = identity.ask(settings, http, args.node, args.token)
    if answer.mismatch:
        return _fail(f"backup: refused, nothing was copied: {answer.mismatch}")
    try:
        manifest = backup(settings, args.node, Path(args.to))
    except BackupError as error:
        return _fail(f"backup: {error}")
    print(f"backup of node {manifest.node} (cluster {manifest.cluster}) at epoch {manifest.epoch}, LSN {manifest.lsn}: "
          f"{args.to} (sha256 {manifest.sha256[:16]}...)")
    return 0


def _restore(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config)
    try:
        manifest, kept = restore(settings, args.node, Path(args.source), force=args.force)
    except BackupError as error:
        return _fail(f"restore: {error}")
    print(f"restored node {args.node} from the backup of node {manifest.node} at LSN {manifest.lsn} (epoch {manifest.epoch})"
          + (f"; the old data directory is kept at {kept}" if kept else ""))
    print("start the node: it joins as standby and catches up from the primary")
    return 0


def _export(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config)
    node = args.node or settings.nodes[0].name
    settings.node(node)
    if args.first > args.last:
        return _fail(f"export: --from {args.first} is after --to {args.last}")
    if args.unmask and not _admin(settings, args.token):
        return _fail("export: --unmask needs an admin token (--token or ACD_TOKEN)")
    try:
        if args.output == "-":
            count = export(settings, node, args.first, args.last, args.format, sys.stdout, unmask=args.unmask, rows_of=args.rows)
        else:
            # Created readable by its owner only: an export holds interactions of citizens.
            descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w", newline="", encoding="utf-8") as out:
                count = export(settings, node, args.first, args.last, args.format, out, unmask=args.unmask, rows_of=args.rows)
    except (BackupError, StoreError) as error:
        return _fail(f"export: {error}")
    print(f"exported {count} interactions", file=sys.stderr)
    return 0
