"""Caller numbers at rest (issue: one bad request..., section 5).

No clear number in the log, the snapshots or a backup once an interaction is over: the
number is sealed at the edge under a key of its own that the store keeps apart from the log
and destroys when the interaction ends (acd.node.privacy). Data, backups and exports are
readable by their owner only; the caller-hash key is never in the log.
"""

from __future__ import annotations

import stat
from pathlib import Path

import trio

from acd import settings as settings_module
from acd.core import commands
from acd.node.node import Node
from acd.store import Store
from acd.tools import backup as backup_module
from acd.tools.launcher import LocalCluster, prepare_config, wait_for
from tests.helpers.inprocess import running_node, write_settings

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "busan-120.toml"


def number(index: int) -> str:
    return f"0105555{index:04d}"


def files_of(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


def occurrences(directory: Path, needles: list[str]) -> list[tuple[str, str]]:
    found = []
    for path in files_of(directory):
        data = path.read_bytes()
        found += [(needle, path.name) for needle in needles if needle.encode() in data]
    return found


def test_no_clear_number_of_an_ended_interaction_in_the_store_or_a_backup(tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "node", store={"snapshot_every_records": 10})
    ended = [number(i) for i in range(40)]
    live = [number(i) for i in range(40, 45)]

    async def main() -> None:
        async with running_node(settings) as running:
            client, node = running.client, running.node
            for index, caller in enumerate(ended + live):
                reply = await client.post("/v1/calls", json={"id": f"c{index}", "queue": "general", "caller": caller})
                assert reply.status_code == 201, reply.text
            # A retried create is idempotent and leaves no second key behind.
            retry = await client.post("/v1/calls", json={"id": "c40", "queue": "general", "caller": live[0]})
            assert retry.status_code == 201
            for index in range(len(ended)):
                assert (await client.post(f"/v1/calls/c{index}/abandon")).status_code == 200
            # While an interaction lives, the node can open its number; once over, nobody can.
            assert node.caller_number("c40") == live[0]
            assert node.caller_number("c0") is None
            assert sorted(node.store.secrets()) == sorted(node.center.state.interactions[f"c{i}"].caller_key for i in range(40, 45))
            await node.snapshot_now()

    trio.run(main)
    data_dir = settings.data_dir("a")
    assert occurrences(data_dir, ended + live) == []  # the log holds ciphertext only
    assert "standalone-sample-key" not in "".join(path.read_bytes().decode("latin-1") for path in files_of(data_dir))
    for path in files_of(data_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    target = tmp_path / "backup"
    backup_module.backup(settings, "a", target)
    assert occurrences(target, ended + live) == []
    assert {stat.S_IMODE(path.stat().st_mode) for path in files_of(target)} == {0o600}
    # The backup keeps the keys of the live interactions only: their numbers can be opened
    # from it (a restore keeps its promises), the ended ones' cannot.
    restored = Node(settings, "a", store=Store(target, cluster=settings.cluster.name, node="a"))
    try:
        assert restored.caller_number("c41") == live[1]
        assert restored.caller_number("c1") is None
    finally:
        restored.close()


def test_the_caller_hash_key_comes_from_its_own_file_and_never_reaches_the_log(tmp_path: Path) -> None:
    key_file = tmp_path / "node" / "abuse-hash.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("a-key-kept-in-its-own-file\n")
    settings = write_settings(tmp_path / "node", extra="")
    text = Path(settings.path).read_text().replace('hash_key = "standalone-sample-key"', 'hash_key_file = "abuse-hash.key"')
    Path(settings.path).write_text(text)
    settings = settings_module.load(settings.path)
    assert settings.caller_hash_key() == b"a-key-kept-in-its-own-file"

    async def main() -> None:
        async with running_node(settings) as running:
            assert (await running.client.post("/v1/calls", json={"id": "k1", "queue": "general", "caller": number(1)})).status_code == 201
            call = running.node.center.state.interactions["k1"]
            assert call.caller_hash == running.node.sealer.caller_hash(number(1))

    trio.run(main)
    assert occurrences(settings.data_dir("a"), ["a-key-kept-in-its-own-file", number(1)]) == []


def test_a_missing_hash_key_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    text = Path(settings.path).read_text().replace('hash_key = "standalone-sample-key"', 'hash_key_file = "nowhere.key"')
    Path(settings.path).write_text(text)
    try:
        settings_module.load(settings.path)
    except settings_module.SettingsError as error:
        assert any("abuse.hash_key_file" in problem and "nowhere.key" in problem for problem in error.problems), error.problems
    else:
        raise AssertionError("a missing hash_key_file was accepted")


def test_the_standby_holds_the_keys_of_live_interactions_only(tmp_path: Path) -> None:
    """Keys travel beside the records to the standby and are destroyed there too."""
    config = prepare_config(SAMPLE, tmp_path, always_open=True)
    ended = [number(i) for i in range(20)]
    live = [number(i) for i in range(20, 23)]
    with LocalCluster(config, tmp_path) as cluster:
        primary = cluster.start()
        standby = cluster.standby_of(primary)
        client = cluster.client
        api = cluster.api(primary)
        for index, caller in enumerate(ended + live):
            assert client.post(f"{api}/v1/calls", json={"id": f"p{index}", "queue": "transport", "caller": caller}).status_code == 201
        for index in range(len(ended)):
            assert client.post(f"{api}/v1/calls/p{index}/abandon").status_code == 200
        lsn = client.get(f"{api}/v1/admin/state").json()["lsn"]
        wait_for(lambda: client.get(f"{cluster.api(standby)}/v1/admin/state").json()["lsn"] >= lsn, 10, what="the standby to catch up")
        cluster.stop()
        settings = cluster.settings
        for name in (primary, standby):
            assert occurrences(settings.data_dir(name), ended + live) == [], name
            node = Node(settings, name, store=Store(settings.data_dir(name), cluster=settings.cluster.name, node=name))
            try:
                assert [node.caller_number(f"p{i}") for i in range(20, 23)] == live, name
                assert all(node.caller_number(f"p{i}") is None for i in range(20)), name
                assert len(node.store.secrets()) == len(live), name
            finally:
                node.close()


def test_a_command_sealed_once_is_not_sealed_again() -> None:
    command = commands.Arrive(id="x", queue="q", caller="01012345678")
    from acd.node.privacy import Sealer

    sealer = Sealer(b"k")
    logged, secret = sealer.seal(command)
    assert logged.caller == "" and logged.caller_masked == "*******5678" and len(secret) == 64
    assert "01012345678" not in commands.encode_command(logged).decode("latin-1")
    assert Sealer.open("x", logged.caller_sealed, secret[32:]) == "01012345678"
    assert Sealer.open("y", logged.caller_sealed, secret[32:]) is None  # bound to its interaction
    # The fingerprint is that of the command as submitted: a retry with a new key matches.
    assert sealer.seal(command)[0].fingerprint == logged.fingerprint
