"""Raising the core version on a node: the finalize endpoint and its refusals, what /v1/cluster and
/v1/version show, and a node whose binary is too old for its store's active version, which
refuses to start (in-process and as a real `acd serve`) or, as a standby, to apply the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from acd.core import versions
from acd.node import upgrade
from acd.node.node import CoreVersionRefused, Node
from acd.settings import NodeSection, Settings
from tests.helpers.inprocess import running_node, write_settings
from tests.helpers.node_process import NodeProcess

TOO_OLD = "the store's active core version 2 ({where}) is newer than this binary supports (1..1): upgrade the binary"


def finalize_to_2(settings: Settings, **node_options: Any) -> int:
    """Start the node with the test switch, raise its core version to 2; the LSN of the record."""
    lsn = 0

    async def main() -> None:
        nonlocal lsn
        async with running_node(settings, **node_options) as running:
            raised = await running.client.post("/v1/cluster/upgrade", json={})
            assert raised.status_code == 200, raised.text
            lsn = raised.json()["lsn"]
            assert running.node.center.state.core_version == 2

    trio.run(main)
    return lsn


def test_a_standalone_node_shows_its_versions_and_raises_the_core_version_with_the_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    settings = write_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            client, node = running.client, running.node
            version = (await client.get("/v1/version")).json()
            assert version == {"name": "a", "cluster": "standalone", "binary_version": versions.RELEASE,
                               "core_versions": [1, 2], "active_core_version": 1}
            view = (await client.get("/v1/cluster")).json()
            assert (view["binary_version"], view["core_versions"], view["active_core_version"]) == (versions.RELEASE, [1, 2], 1)
            lsn = node.lsn
            raised = await client.post("/v1/cluster/upgrade", json={})  # default: the highest every node supports
            assert raised.status_code == 200, raised.text
            body = raised.json()
            assert (body["changed"], body["previous_core_version"], body["active_core_version"]) == (True, 1, 2)
            assert body["lsn"] == node.lsn == lsn + 1
            assert node.center.state.core_version == 2
            assert node.center.state.audit[-1][1:] == ("api:anonymous", "core_version.activated", "1 -> 2")
            assert (await client.get("/v1/cluster")).json()["active_core_version"] == 2
            again = await client.post("/v1/cluster/upgrade", json={"version": 2})
            assert (again.status_code, again.json()["changed"]) == (200, False)
            assert node.lsn == lsn + 1  # nothing written for a version already active
            down = await client.post("/v1/cluster/upgrade", json={"version": 1})
            assert (down.status_code, down.json()["error"]) == (409, "core_version_downgrade")
            bad = await client.post("/v1/cluster/upgrade", json={"version": 0})
            assert bad.status_code == 400
            empty = await client.post("/v1/cluster/upgrade")  # the body is required: `{}` for the default
            assert (empty.status_code, empty.json()["error"]) == (400, "bad_json")
            assert node.lsn == lsn + 1

    trio.run(main)


def test_finalize_is_refused_beyond_this_binarys_range_and_on_a_standby(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(versions.NEXT_CORE_ENV, raising=False)
    settings = write_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            client, node = running.client, running.node
            assert (await client.get("/v1/version")).json()["core_versions"] == [1, 1]
            lsn = node.lsn
            same = await client.post("/v1/cluster/upgrade", json={})  # nothing higher is supported: nothing to do
            assert (same.status_code, same.json()["changed"], same.json()["active_core_version"]) == (200, False, 1)
            refused = await client.post("/v1/cluster/upgrade", json={"version": 2})
            assert refused.status_code == 409
            assert refused.json()["error"] == "version_unsupported"
            assert "supports core versions 1..1, not 2" in refused.json()["message"]
            node.role = "standby"
            standby = await client.post("/v1/cluster/upgrade", json={"version": 1})
            assert (standby.status_code, standby.json()["error"]) == (503, "not_primary")
            node.role = "primary"
            assert node.lsn == lsn and node.center.state.core_version == 1

    trio.run(main)


def two_nodes(settings: Settings) -> Settings:
    """The same settings naming a second node, b (only what finalize reads of it)."""
    peer = msgspec.structs.replace(settings.nodes[0], name="b", api="127.0.0.1:1")
    nodes: list[NodeSection] = [settings.nodes[0], peer]
    return msgspec.structs.replace(settings, nodes=nodes)


@pytest.mark.parametrize(
    ("peer", "code"),
    [
        ({"name": "b", "cluster": "standalone", "binary_version": "0.1.0", "core_versions": [1, 1], "active_core_version": 1}, "peer_unsupported"),
        (upgrade.UpgradeRefused("peer_unreachable", "node b could not be asked"), "peer_unreachable"),
    ],
    ids=["peer-too-old", "peer-down"],
)
def test_finalize_is_refused_unless_the_peer_supports_the_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: Any, code: str) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    settings = write_settings(tmp_path)

    async def fake_peer(node: Node, name: str) -> dict[str, Any]:
        assert name == "b"
        if isinstance(peer, Exception):
            raise peer
        return dict(peer)

    monkeypatch.setattr(upgrade, "peer_versions", fake_peer)

    async def main() -> None:
        async with running_node(settings) as running:
            client, node = running.client, running.node
            node.settings = two_nodes(settings)
            lsn = node.lsn
            refused = await client.post("/v1/cluster/upgrade", json={"version": 2})
            assert (refused.status_code, refused.json()["error"]) == (409, code), refused.text
            if code == "peer_unsupported":
                assert "node b runs binary 0.1.0, which supports core versions 1..1, not 2" in refused.json()["message"]
                # By default: the highest version both support, the active one: nothing to do.
                same = await client.post("/v1/cluster/upgrade", json={})
                assert (same.status_code, same.json()["changed"]) == (200, False)
            assert node.lsn == lsn and node.center.state.core_version == 1

    trio.run(main)


def test_finalize_reads_the_peers_range_and_shows_it_in_the_cluster_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    settings = write_settings(tmp_path)
    peer = {"name": "b", "cluster": "standalone", "binary_version": "0.1.0", "core_versions": [1, 2], "active_core_version": 1}

    async def fake_peer(node: Node, name: str) -> dict[str, Any]:
        return dict(peer)

    monkeypatch.setattr(upgrade, "peer_versions", fake_peer)

    async def main() -> None:
        async with running_node(settings) as running:
            running.node.settings = two_nodes(settings)
            raised = await running.client.post("/v1/cluster/upgrade", json={})
            assert raised.status_code == 200, raised.text
            assert raised.json()["active_core_version"] == 2
            assert [view["name"] for view in raised.json()["nodes"]] == ["a", "b"]
            binary = {key: peer[key] for key in ("name", "cluster", "binary_version", "core_versions")}
            assert raised.json()["nodes"][1] == binary
            assert (await running.client.get("/v1/cluster")).json()["peer_versions"] == binary

    trio.run(main)


def test_a_node_too_old_for_its_stores_core_version_refuses_to_start_from_the_log_or_a_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    settings = write_settings(tmp_path)
    lsn = finalize_to_2(settings)
    monkeypatch.delenv(versions.NEXT_CORE_ENV)
    with pytest.raises(CoreVersionRefused) as refused:
        Node(settings, "a")
    assert str(refused.value) == TOO_OLD.format(where=f"activated at LSN {lsn}")
    # The same store after a snapshot that holds the version.
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    node = Node(settings, "a")
    node.save_snapshot()
    snapshot_lsn = node.lsn
    node.close()
    monkeypatch.delenv(versions.NEXT_CORE_ENV)
    with pytest.raises(CoreVersionRefused) as refused:
        Node(settings, "a")
    assert str(refused.value) == TOO_OLD.format(where=f"snapshot at LSN {snapshot_lsn}")


def test_a_standby_too_old_for_a_shipped_record_stops_applying_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    primary_settings = write_settings(tmp_path / "primary")
    lsn = finalize_to_2(primary_settings)
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    primary = Node(primary_settings, "a")
    records = primary.store.read(0, limit=10_000)
    primary.close()
    assert records[-1].lsn == lsn

    monkeypatch.delenv(versions.NEXT_CORE_ENV)
    standby = Node(write_settings(tmp_path / "standby"), "a")
    try:
        before, after = records[:-1], records[-1:]
        standby.store.append(before)
        standby.apply_replicated(before)
        assert standby.lsn == lsn - 1 and standby.core_refusal is None
        standby.store.append(after)
        with pytest.raises(CoreVersionRefused) as refused:
            standby.apply_replicated(after)
        message = TOO_OLD.format(where=f"activated at LSN {lsn}")
        assert str(refused.value) == message == standby.core_refusal
        assert standby.lsn == lsn - 1  # the record was not applied
        with pytest.raises(CoreVersionRefused, match="upgrade the binary"):
            standby.apply_replicated([])  # nor anything after it
        standby.role = "primary"
        assert standby.writable_error() is not None  # and it takes no write
    finally:
        standby.close()


def test_acd_serve_on_a_store_of_a_newer_core_version_exits_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    node = NodeProcess(tmp_path)
    with node:
        raised = httpx.post(node.url + "/v1/cluster/upgrade", json={"version": 2}, timeout=10)
        assert raised.status_code == 200, raised.text
        lsn = raised.json()["lsn"]
    monkeypatch.delenv(versions.NEXT_CORE_ENV)
    result = node.serve_once()
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert TOO_OLD.format(where=f"activated at LSN {lsn}") in output, output
    assert "Traceback" not in output
    verified = node.run_cli("verify", "--config", str(node.config_path), "--node", "a")
    assert verified.returncode == 2 and "core version 2 is newer than this binary supports (1..1): upgrade the binary" in verified.stderr, verified.stderr
    # With the switch, the same binary starts on it and runs version 2.
    monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    with node:
        assert httpx.get(node.url + "/v1/version", timeout=5).json()["active_core_version"] == 2
