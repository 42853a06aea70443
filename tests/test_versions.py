"""Versions: the wire protocol a pair agrees on, and the store format a node migrates.

- Two sides of a connection use the highest protocol version both speak; with none in common
  the connection is refused, the reason names both sides' versions on both sides, and the
  listening port counts it as a failed handshake (`protocol_version`). A Hello without the
  list (an older binary) is read as speaking version 1, and an older binary reads ours.
- A store at format 1 is migrated when opened: a verified backup (restorable, with its
  manifest) is written first, the migration is logged with both formats and the backup's path;
  an exception in the middle of the migration's transaction leaves the store at format 1,
  byte for byte as it was. A store at a newer format is refused, naming both formats.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import pytest
import trio
import trio.testing

from acd import versions
from acd.store import Record, Store, StoreError, UnsupportedFormat, lmdb_store
from replication import protocol
from replication.network import PortLimits, TcpNetwork
from replication.protocol import (
    Channel,
    HandshakeError,
    Hello,
    VersionMismatch,
    VoteReply,
    VoteRequest,
    decode_frame,
    handshake,
)
from replication.witness import MemoryStateStore, Witness

SECRET = b"s"


@pytest.fixture(autouse=True)
def _fresh_mismatch_log() -> None:
    protocol._mismatch_logged.clear()  # each test sees its own first refusal logged


# --------------------------------------------------------------------------- versions.py


def test_the_release_is_the_projects_version_and_the_ranges_are_stated() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert versions.RELEASE == pyproject["project"]["version"]
    assert versions.CORE_VERSIONS == (1,)
    assert versions.PROTOCOL_VERSIONS == (1,)
    assert versions.STORE_FORMAT == versions.STORE_FORMATS[-1] == 2
    for series in (versions.CORE_VERSIONS, versions.PROTOCOL_VERSIONS, versions.STORE_FORMATS):
        assert list(series) == list(range(series[0], series[-1] + 1))  # oldest first, no gap


def test_highest_common_and_describe() -> None:
    assert versions.highest_common((1, 2, 3), (2, 3, 4)) == 3
    assert versions.highest_common((1,), (1,)) == 1
    assert versions.highest_common((1, 2), (3, 4)) is None
    assert versions.highest_common((), (1,)) is None
    assert versions.describe((3, 1, 2)) == "1-3"
    assert versions.describe((1, 3)) == "1, 3"
    assert versions.describe((2,)) == "2"
    assert versions.describe(()) == "none"


# --------------------------------------------------------------------------- wire protocol


async def _pair(mine: tuple[int, ...], theirs: tuple[int, ...]) -> tuple[Channel, Channel, list[BaseException]]:
    """Handshake over memory streams: `mine` connects, `theirs` listens (no port guard)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = Channel(client_stream, cluster="c", secret=SECRET)
    server = Channel(server_stream, cluster="c", secret=SECRET)
    errors: list[BaseException] = []

    async def side(channel: Channel, node: str, protocols: tuple[int, ...], initiator: bool) -> None:
        try:
            await handshake(channel, node=node, role="standby", purpose="vote", initiator=initiator, protocols=protocols)
        except HandshakeError as error:
            errors.append(error)
            await channel.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, server, "b", theirs, False)
            nursery.start_soon(side, client, "a", mine, True)
    return client, server, errors


def test_both_sides_use_the_highest_version_they_have_in_common() -> None:
    async def main() -> None:
        client, server, errors = await _pair((1, 2, 3), (2, 3, 4))
        assert not errors
        assert client.protocol == server.protocol == 3
        assert client.peer is not None and client.peer.protocols == (2, 3, 4)
        assert server.peer is not None and server.peer.release == versions.RELEASE
        client, server, errors = await _pair((1, 2), (2,))
        assert not errors and client.protocol == server.protocol == 2
        # Today's binaries on both sides: the one version there is.
        client, server, errors = await _pair(versions.PROTOCOL_VERSIONS, versions.PROTOCOL_VERSIONS)
        assert not errors and client.protocol == server.protocol == max(versions.PROTOCOL_VERSIONS)

    trio.run(main)


def test_without_a_common_version_both_sides_refuse_and_name_both_sides_versions(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger="acd.replication"):
            client, server, errors = await _pair((3, 4), (1, 2))
        assert len(errors) == 2 and all(isinstance(error, VersionMismatch) for error in errors)
        for error in errors:
            assert "no common protocol version" in str(error)
            assert "speaks 3-4" in str(error) and "speaks 1-2" in str(error)
        assert client.protocol == server.protocol == 0
        # Both sides logged it (no port guard here: the handshake logs it itself).
        lines = [record.getMessage() for record in caplog.records if "no common protocol version" in record.getMessage()]
        assert len(lines) == 2
        assert all("3-4" in line and "1-2" in line for line in lines)

    trio.run(main)


def test_a_peer_refused_again_and_again_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger="acd.replication"):
            for _ in range(5):
                _client, _server, errors = await _pair((5,), (1,))
                assert len(errors) == 2
            assert len([r for r in caplog.records if "no common protocol version" in r.getMessage()]) == 2  # one per side
            await trio.sleep(0)
            key = next(iter(protocol._mismatch_logged))
            protocol._mismatch_logged[key] -= protocol._MISMATCH_LOG_SECONDS  # a minute later
            await _pair((5,), (1,))
            assert len([r for r in caplog.records if "no common protocol version" in r.getMessage()]) == 3

    trio.run(main)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_witness_port_refuses_a_peer_without_a_common_version_counts_it_and_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        address = f"127.0.0.1:{_free_port()}"
        witness = Witness(cluster="c", address=address, store=MemoryStateStore("c"), lease_seconds=1.0, secret=SECRET,
                          network=TcpNetwork(limits=PortLimits(name="witness", handshake_seconds=2.0)), nodes=["a", "b"])
        gate = witness.network.gate  # type: ignore[attr-defined]
        async with trio.open_nursery() as nursery:
            await nursery.start(witness.run)
            newer = max(versions.PROTOCOL_VERSIONS) + 1
            channel = Channel(await TcpNetwork().connect(address), cluster="c", secret=SECRET)
            with pytest.raises(VersionMismatch) as refused:
                await handshake(channel, node="a", role="standby", purpose="witness", initiator=True, protocols=(newer,))
            await channel.aclose()
            # The connecting side learnt the witness's versions from its Hello.
            assert f"'witness' (release {versions.RELEASE}) speaks {versions.describe(versions.PROTOCOL_VERSIONS)}" in str(refused.value)
            assert f"speaks {newer}" in str(refused.value)
            with trio.fail_after(3):  # counted, and its slot given back once the witness closed it
                while gate.handshakes_failed["protocol_version"] < 1 or gate.open:
                    await trio.sleep(0.01)
            assert gate.handshakes_failed["bad_hello"] == 0
            assert witness.frames_refused == 1
            assert not gate.pending
            # The witness goes on serving a peer that speaks its version.
            good = Channel(await TcpNetwork().connect(address), cluster="c", secret=SECRET)
            await handshake(good, node="a", role="standby", purpose="witness", initiator=True)
            assert good.protocol == max(versions.PROTOCOL_VERSIONS)
            await good.send(VoteRequest(epoch=1, candidate="a", last_epoch=0, last_lsn=0))
            reply = await good.receive()
            assert isinstance(reply, VoteReply) and reply.granted
            await good.aclose()
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING):
        trio.run(main)
    port_lines = [r.getMessage() for r in caplog.records if r.name == "acd.witness" and "handshake failed" in r.getMessage()]
    assert len(port_lines) == 1
    assert "reason=protocol_version" in port_lines[0] and "peer=127.0.0.1:" in port_lines[0]
    assert f"speaks {max(versions.PROTOCOL_VERSIONS) + 1}" in port_lines[0]


class _LegacyHello(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="hello"):
    """The Hello of a binary from before protocol versions."""

    node: str
    role: str
    nonce: bytes
    purpose: str = ""


class _LegacyEnvelope(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    cluster: str
    sequence: int
    message: _LegacyHello


def _legacy_frame_body(hello: _LegacyHello) -> bytes:
    body = msgspec.msgpack.encode(_LegacyEnvelope(cluster="c", sequence=1, message=hello))
    return body + hmac.digest(SECRET, body, "sha256")  # before the nonces are bound: no key


def test_a_hello_without_versions_is_read_as_version_1_and_an_older_binary_reads_ours() -> None:
    legacy = _LegacyHello(node="b", role="standby", nonce=b"n" * 16, purpose="vote")
    decoded = decode_frame(_legacy_frame_body(legacy), cluster="c", secret=SECRET, key=b"", expect=1)
    assert isinstance(decoded, Hello)
    assert decoded.protocols == (1,) and decoded.release == ""

    async def main() -> None:
        # A listener of this release takes an older binary's connection at version 1 ...
        client_stream, server_stream = trio.testing.memory_stream_pair()
        server = Channel(server_stream, cluster="c", secret=SECRET)
        body = _legacy_frame_body(legacy)
        await client_stream.send_all(len(body).to_bytes(4, "big") + body)
        with trio.fail_after(5):
            hello = await handshake(server, node="a", role="primary", purpose="", initiator=False, protocols=(1, 2))
            assert hello.node == "b" and server.protocol == 1
            # ... and the older binary decodes the Hello it gets back (unknown fields are skipped).
            frame = await client_stream.receive_some(4096)
        reply = msgspec.msgpack.decode(frame[4:-32], type=_LegacyEnvelope)
        assert reply.message.node == "a" and len(reply.message.nonce) == 16

    trio.run(main)


def test_an_older_binary_that_only_speaks_version_1_is_refused_by_a_binary_that_dropped_it() -> None:
    async def main() -> None:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        server = Channel(server_stream, cluster="c", secret=SECRET)
        body = _legacy_frame_body(_LegacyHello(node="b", role="standby", nonce=b"n" * 16))
        await client_stream.send_all(len(body).to_bytes(4, "big") + body)
        with trio.fail_after(5), pytest.raises(VersionMismatch, match=r"peer 'b' \(release unknown\) speaks 1, 'a' .* speaks 2-3"):
            await handshake(server, node="a", role="primary", purpose="", initiator=False, protocols=(2, 3))

    trio.run(main)


# --------------------------------------------------------------------------- store format


def _records(first: int, count: int, epoch: int = 1) -> list[Record]:
    return [Record.make(lsn=lsn, epoch=epoch, at=float(lsn), payload=b"command %d" % lsn)
            for lsn in range(first, first + count)]


def _store_at_format_1(path: Path) -> None:
    """A store as a format-1 binary left it: records, a snapshot, and no format-2 keys."""
    store = Store(path, cluster="c", node="a")
    store.set_epoch(1, 1)
    store.append(_records(1, 20))
    store.save_snapshot(lsn=10, epoch=1, at=10.0, state=b"state at 10")
    store.append(_records(21, 5))
    store.put_meta("promised_epoch", b"1")
    store.close()
    env = lmdb.open(str(path), max_dbs=8, subdir=True)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(b"format", b"1", db=meta)
            txn.delete(b"release", db=meta)
            txn.delete(b"migrations", db=meta)
    finally:
        env.close()


def _contents(path: Path) -> dict[str, dict[bytes, bytes]]:
    """Every key and value of every database of the store (its logical content)."""
    env = lmdb.open(str(path), max_dbs=8, subdir=True, readonly=True, lock=False)
    try:
        found: dict[str, dict[bytes, bytes]] = {}
        with env.begin() as txn:
            names = [bytes(name) for name in txn.cursor().iternext(keys=True, values=False)]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                found[name.decode()] = {bytes(k): bytes(v) for k, v in txn.cursor(db).iternext()}
        return found
    finally:
        env.close()


def _backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.format-1-backup-*"))


def test_a_format_1_store_is_migrated_after_a_verified_backup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a"
    _store_at_format_1(path)
    before = _contents(path)
    with caplog.at_level(logging.INFO, logger="acd.store"):
        store = Store(path, cluster="c", node="a")
    try:
        assert store.format() == 2
        assert store.get_meta("format") == b"2" and store.get_meta("release") == versions.RELEASE.encode()
        (migration,) = store.migrations()
        assert (migration.from_format, migration.to_format, migration.release) == (1, 2, versions.RELEASE)
        # Nothing else changed: the log, the snapshot, the other layers' meta keys.
        assert store.last_lsn() == 25 and store.epoch() == 1
        assert [r.payload for r in store.read(0, 100)] == [r.payload for r in _records(1, 25)]
        assert store.latest_snapshot() is not None and store.latest_snapshot().state == b"state at 10"  # type: ignore[union-attr]
        assert store.get_meta("promised_epoch") == b"1"
    finally:
        store.close()
    after = _contents(path)
    for name in before:
        if name != "meta":
            assert after[name] == before[name]
    assert {k: v for k, v in after["meta"].items() if k not in (b"format", b"release", b"migrations", b"applied_lsn")} == \
        {k: v for k, v in before["meta"].items() if k not in (b"format", b"applied_lsn")}
    # The backup: beside the store, at format 1, complete, verified, with a restorable manifest.
    (backup,) = _backups(path)
    assert Path(migration.backup) == backup
    assert not (backup / "lock.mdb").exists() and not (backup / "store.lock").exists()
    manifest = json.loads((backup / lmdb_store.BACKUP_MANIFEST).read_text())
    assert manifest["sha256"] == hashlib.sha256((backup / "data.mdb").read_bytes()).hexdigest()
    assert (manifest["cluster"], manifest["node"], manifest["lsn"], manifest["epoch"], manifest["snapshot_lsn"], manifest["format"]) == \
        ("c", "a", 25, 1, 10, 1)
    assert _contents(backup) == before
    copy = Store(backup, cluster="c", node="a", migrate=False)
    try:
        assert copy.format() == 1 and copy.last_lsn() == 25 and copy.migrations() == []
    finally:
        copy.close()
    # The log line names both formats and the backup.
    (line,) = [r.getMessage() for r in caplog.records if "store migrated" in r.getMessage()]
    assert "from_format=1" in line and "to_format=2" in line and f"backup={backup}" in line
    # Opened again: already at format 2, no second backup, no second migration.
    again = Store(path, cluster="c", node="a")
    try:
        again.append(_records(26, 1))  # and it takes writes
        assert len(again.migrations()) == 1 and again.last_lsn() == 26
    finally:
        again.close()
    assert len(_backups(path)) == 1


def test_the_backup_taken_before_a_migration_restores_with_acd_restore(tmp_path: Path) -> None:
    from types import SimpleNamespace

    try:
        from acd.tools import backup as backup_tool  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        from acd import backup as backup_tool  # type: ignore[no-redef, unused-ignore]
    path = tmp_path / "a"
    _store_at_format_1(path)
    log_before = _contents(path)["log"]
    Store(path, cluster="c", node="a").close()
    (backup,) = _backups(path)
    restored = tmp_path / "restored"
    settings = SimpleNamespace(cluster=SimpleNamespace(name="c"), node=lambda name: None, data_dir=lambda name: restored)
    manifest, kept = backup_tool.restore(settings, "a", backup)  # checks the manifest's checksum
    assert (manifest.lsn, manifest.format, kept) == (25, 1, None)
    store = Store(restored, cluster="c", node="a", migrate=False)
    try:
        assert store.last_lsn() == 25 and store.epoch() == 1
    finally:
        store.close()
    assert _contents(restored)["log"] == log_before


def test_a_failure_inside_the_migration_leaves_the_store_at_format_1_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a"
    _store_at_format_1(path)
    before = _contents(path)
    real = lmdb_store.MIGRATIONS[1]
    reached: list[bool] = []

    def crashes_midway(txn: Any, meta: Any) -> None:
        real(txn, meta)  # the step's writes are made ...
        assert txn.get(b"release", db=meta) == versions.RELEASE.encode()
        reached.append(True)
        raise OSError("injected: the process dies in the middle of the migration")  # ... and never committed

    monkeypatch.setitem(lmdb_store.MIGRATIONS, 1, crashes_midway)
    with pytest.raises(StoreError) as failed:
        Store(path, cluster="c", node="a")
    assert reached == [True]
    message = str(failed.value)
    assert "from format 1 to format 2 failed" in message and "still at format 1" in message
    (backup,) = _backups(path)
    assert str(backup) in message
    assert _contents(path) == before  # not one key of the migration reached the disk
    # The directory is free again (the failed open released it) and reads as format 1.
    old = Store(path, cluster="c", node="a", migrate=False)
    try:
        assert old.format() == 1 and old.get_meta("release") is None and old.last_lsn() == 25
    finally:
        old.close()
    # With the fault gone, the next start migrates it.
    monkeypatch.setitem(lmdb_store.MIGRATIONS, 1, real)
    store = Store(path, cluster="c", node="a")
    try:
        assert store.format() == 2 and len(store.migrations()) == 1
    finally:
        store.close()


def test_no_backup_no_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a"
    _store_at_format_1(path)
    before = _contents(path)

    def disk_full(self: Store, target: Any, *, compact: bool = True) -> None:
        raise StoreError(f"cannot copy the store to {target}: no space left on the device")

    monkeypatch.setattr(Store, "copy_to", disk_full)
    with pytest.raises(StoreError, match="the backup taken first could not be written .* nothing was migrated"):
        Store(path, cluster="c", node="a")
    assert _contents(path) == before


def test_a_store_newer_than_the_binary_is_refused_naming_both_formats(tmp_path: Path) -> None:
    path = tmp_path / "a"
    Store(path, cluster="c", node="a").close()
    before = _contents(path)
    newer = versions.STORE_FORMAT + 1
    env = lmdb.open(str(path), max_dbs=8, subdir=True)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(b"format", str(newer).encode(), db=meta)
            txn.put(b"release", b"9.9.9", db=meta)
    finally:
        env.close()
    with pytest.raises(UnsupportedFormat) as refused:
        Store(path, cluster="c", node="a")
    message = str(refused.value)
    assert f"has format {newer}" in message and "release 9.9.9" in message
    assert f"opens store formats {versions.describe(versions.STORE_FORMATS)}" in message
    assert f"release {versions.RELEASE}" in message
    assert refused.value.found == newer and refused.value.supported == versions.STORE_FORMATS
    assert _contents(path)["log"] == before["log"]
    assert not _backups(path)
    assert _contents(path)["meta"][b"format"] == str(newer).encode()  # refused, not touched


def test_a_new_store_is_created_at_the_current_format(tmp_path: Path) -> None:
    store = Store(tmp_path / "a", cluster="c", node="a")
    try:
        assert store.format() == versions.STORE_FORMAT
        assert store.get_meta("format") == str(versions.STORE_FORMAT).encode()
        assert store.get_meta("release") == versions.RELEASE.encode()
        assert store.migrations() == []
        with pytest.raises(StoreError, match="belongs to the store itself"):
            store.put_meta("release", b"x")
    finally:
        store.close()
    assert not _backups(tmp_path / "a")


def _rewrite_meta(path: Path, put: dict[bytes, bytes], delete: tuple[bytes, ...] = ()) -> None:
    env = lmdb.open(str(path), max_dbs=8, subdir=True)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            for key, value in put.items():
                txn.put(key, value, db=meta)
            for key in delete:
                txn.delete(key, db=meta)
    finally:
        env.close()


def test_a_node_started_on_a_format_1_store_migrates_it_and_keeps_its_state(tmp_path: Path) -> None:
    from acd.core import commands as c
    from acd.node.node import Node
    from acd.node.verify import verify
    from tests.helpers.inprocess import running_node, write_settings

    settings = write_settings(tmp_path)
    digest: dict[str, object] = {}

    async def write() -> None:
        async with running_node(settings) as running:
            await running.node.submit(c.Login(agent="kim"))
            await running.node.submit(c.Ready(agent="kim"))
            digest.update(lsn=running.node.lsn, hash=running.node.center.state_hash())

    trio.run(write)
    data = settings.data_dir("a")
    _rewrite_meta(data, {b"format": b"1"}, (b"release", b"migrations"))
    node = Node(settings, "a")  # start-up: migrated before anything is served
    try:
        assert (node.lsn, node.center.state_hash()) == (digest["lsn"], digest["hash"])
        assert node.store.format() == versions.STORE_FORMAT
        (migration,) = node.store.migrations()
    finally:
        node.close()
    (backup,) = _backups(data)
    assert migration.backup == str(backup)
    assert verify(settings, "a").ok
    # A store from a release with a newer format: the node does not start, and says why.
    _rewrite_meta(data, {b"format": str(versions.STORE_FORMAT + 1).encode()})
    with pytest.raises(UnsupportedFormat, match=rf"has format {versions.STORE_FORMAT + 1}.*opens store formats 1-{versions.STORE_FORMAT}"):
        Node(settings, "a")
