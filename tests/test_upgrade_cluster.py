"""Raising the core version of a real pair (a witness and two `acd serve` processes on loopback).

Node a starts with the test switch (`ACD_ENABLE_NEXT_CORE=1`, core versions 1..2), node b
without it (1..1): finalize is refused and nothing changes. Node b is then restarted with the
switch (the rolling upgrade of its binary), finalize raises the cluster to version 2, and the
rule that version changes (a `longest-idle` queue offers to the agent who handled the fewest)
is in effect on the primary and, after a switchover, on the other node, whose state hash
equals its peer's at the same LSN. Last, the standby goes back to a binary without version 2:
it refuses to start, naming both versions, and the primary goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acd.core import versions
from acd.tools.launcher import LocalCluster, prepare_config, wait_for

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "busan-120.toml"


def acd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acd", *args, "--config", str(config)], capture_output=True, text=True, timeout=60)


class Desk:
    """Agents kim and lee of queue transport (both at skill level 5), driven over HTTP."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.calls = 0

    def post(self, node: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.cluster.client.post(self.cluster.api(node) + path, json=body or {}, timeout=10)
        assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text}"
        result: dict[str, Any] = response.json()
        return result

    def arrive(self, node: str, prefix: str) -> str:
        self.calls += 1
        call = f"{prefix}-{self.calls}"
        self.post(node, "/v1/calls", {"id": call, "queue": "transport", "caller": f"0105100{self.calls:04d}"})
        return call

    def offered_to(self, node: str, call: str) -> str:
        view = self.cluster.client.get(self.cluster.api(node) + f"/v1/calls/{call}", timeout=10).json()
        assert view["state"] == "offered", view
        return str(view["agent"])

    def serve(self, node: str, call: str, agent: str) -> None:
        self.post(node, f"/v1/calls/{call}/answer", {"agent": agent})
        self.post(node, f"/v1/calls/{call}/hangup")
        self.post(node, f"/v1/calls/{call}/wrapup", {"agent": agent, "disposition": "resolved"})

    def who_gets_the_next_call(self, node: str) -> str:
        """kim serves a call while lee is on a break, then lee comes back: kim is the agent idle
        longest, lee the one who handled fewer. The agent offered the next call tells the rule."""
        self.post(node, "/v1/agents/lee/not-ready", {"reason": "break"})
        warm = self.arrive(node, "warm")
        assert self.offered_to(node, warm) == "kim"
        self.serve(node, warm, "kim")
        self.post(node, "/v1/agents/lee/ready")
        agents = {agent["id"]: agent for agent in self.cluster.client.get(self.cluster.api(node) + "/v1/agents", timeout=10).json()}
        assert agents["kim"]["state"] == agents["lee"]["state"] == "ready"
        probe = self.arrive(node, "probe")
        agent = self.offered_to(node, probe)
        self.serve(node, probe, agent)
        return agent


def state(cluster: LocalCluster, node: str) -> dict[str, Any]:
    response = cluster.client.get(cluster.api(node) + "/v1/admin/state", timeout=5)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def converged(cluster: LocalCluster) -> tuple[int, str]:
    """Wait until both nodes hold the same LSN and the same state hash there."""

    def same() -> tuple[int, str] | None:
        a, b = state(cluster, "a"), state(cluster, "b")
        if a["lsn"] == b["lsn"] and a["state_hash"] == b["state_hash"]:
            return a["lsn"], a["state_hash"]
        return None

    return wait_for(same, 20, interval=0.1, what="both nodes at the same LSN with the same state hash")  # type: ignore[no-any-return]


def start_node(cluster: LocalCluster, name: str, monkeypatch: pytest.MonkeyPatch, *, next_core: bool) -> None:
    if next_core:
        monkeypatch.setenv(versions.NEXT_CORE_ENV, "1")
    else:
        monkeypatch.delenv(versions.NEXT_CORE_ENV, raising=False)
    cluster.start_node(name)  # the child takes the environment as it is now
    wait_for(lambda: cluster.healthy(cluster.settings.node(name).api), 30, what=f"node {name} to answer /healthz")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    config = prepare_config(SAMPLE, tmp_path, always_open=True)
    cluster = LocalCluster(config, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def test_finalize_waits_for_both_binaries_then_the_new_rule_holds_on_both_nodes(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    config = cluster.config
    cluster.start_witness()
    start_node(cluster, "a", monkeypatch, next_core=True)
    start_node(cluster, "b", monkeypatch, next_core=False)
    monkeypatch.delenv(versions.NEXT_CORE_ENV, raising=False)
    primary = cluster.wait_primary(30)
    wait_for(lambda: cluster.configured(primary), 30, what="the center's configuration")
    desk = Desk(cluster)
    for agent in ("kim", "lee"):
        desk.post(primary, f"/v1/agents/{agent}/login")
        desk.post(primary, f"/v1/agents/{agent}/ready")

    # b's binary supports version 1 only: finalize is refused and nothing changes.
    status = acd(config, "upgrade", "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["active_core_version"] == 1 and report["finalize_to"] == 1
    assert {row["node"]: row["core_versions"] for row in report["nodes"]} == {"a": [1, 2], "b": [1, 1]}
    refused = acd(config, "upgrade", "finalize", "--version", "2")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    code = "peer_unsupported" if primary == "a" else "version_unsupported"
    assert f"refused ({code})" in refused.stderr and "supports core versions 1..1, not 2" in refused.stderr
    assert desk.who_gets_the_next_call(primary) == "kim"  # version 1: the agent idle longest
    converged(cluster)
    assert state(cluster, "a")["state_hash"] == state(cluster, "b")["state_hash"]
    for name in ("a", "b"):
        view = cluster.view(name)
        assert view is not None and view["active_core_version"] == 1

    # The rolling upgrade of b: stopped, started again with a binary that supports version 2.
    cluster.signal("b", signal.SIGTERM)
    cluster.processes["b"].wait(timeout=20)
    start_node(cluster, "b", monkeypatch, next_core=True)
    monkeypatch.delenv(versions.NEXT_CORE_ENV, raising=False)
    primary = cluster.wait_primary(30)
    wait_for(lambda: (cluster.view(primary) or {}).get("peer_connected"), 30, what="the standby to reconnect")
    converged(cluster)
    assert desk.who_gets_the_next_call(primary) == "kim"  # still version 1 until finalize

    finalized = acd(config, "upgrade", "finalize")
    assert finalized.returncode == 0, finalized.stdout + finalized.stderr
    result = json.loads(finalized.stdout)
    assert (result["changed"], result["previous_core_version"], result["active_core_version"]) == (True, 1, 2)
    assert desk.who_gets_the_next_call(primary) == "lee"  # version 2: the fewest handled
    lsn, _hash = converged(cluster)
    assert lsn >= result["lsn"]
    for name in ("a", "b"):
        view = cluster.view(name)
        assert view is not None and view["active_core_version"] == 2 and view["core_versions"] == [1, 2]

    # Switchover: the other node applies version 2's rule as primary too.
    switched = acd(config, "switchover")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    other = cluster.wait_primary(30, other_than=primary)
    assert desk.who_gets_the_next_call(other) == "lee"
    converged(cluster)
    status = acd(config, "upgrade", "status")
    assert status.returncode == 0, status.stderr
    assert "active core version 2" in status.stdout
    table = acd(config, "status")
    assert table.returncode == 0, table.stdout + table.stderr
    header, *rows = table.stdout.splitlines()[1:3]
    assert "binary" in header.split() and "core" in header.split()
    for row in rows:
        cells = row.split()
        assert cells[cells.index(versions.RELEASE) + 1:][:2] == ["2", "(1..2)"], table.stdout

    # The standby goes back to a binary without version 2: it refuses to start, and says why.
    standby = cluster.standby_of(other)
    cluster.signal(standby, signal.SIGTERM)
    cluster.processes[standby].wait(timeout=20)
    log = cluster.logs / f"{standby}.log"
    logged = log.stat().st_size
    monkeypatch.delenv(versions.NEXT_CORE_ENV, raising=False)
    cluster.start_node(standby)
    assert cluster.processes[standby].wait(timeout=60) != 0
    output = log.read_bytes()[logged:].decode(errors="replace")
    assert "the store's active core version 2 (" in output and "is newer than this binary supports (1..1): upgrade the binary" in output, output
    assert "Traceback" not in output, output
    assert cluster.primary() == other  # the primary goes on alone
    assert os.environ.get(versions.NEXT_CORE_ENV) is None
