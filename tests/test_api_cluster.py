"""The API's seam for the replication layer: a `cluster` object with view/switchover/promote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from acd.api import build_app
from tests.helpers.inprocess import running_node, write_settings


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FakeCluster:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def view(self) -> dict[str, Any]:
        return {"name": "a", "role": "primary", "peer": "b", "lag": 0}

    async def switchover(self, to: str | None, actor: str = "") -> dict[str, Any]:
        self.calls.append(("switchover", to))
        if to == "c":
            raise Refused("unknown_node", "no standby named 'c'")
        if to == "busy":
            raise Refused("standby_not_ready", "the standby is behind")
        return {"role": "standby"}

    async def promote(self, force: bool, actor: str = "") -> dict[str, Any]:
        self.calls.append(("promote", force))
        raise Refused("not_primary", "ask the primary")


def test_cluster_operations_reach_the_replication_layer_and_refusals_become_errors(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            cluster = FakeCluster()
            app = build_app(running.node, cluster=cluster)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:  # type: ignore[arg-type]
                assert (await client.get("/v1/cluster")).json()["peer"] == "b"
                assert (await client.post("/v1/cluster/switchover", json={"to": "b"})).json() == {"role": "standby"}
                unknown = await client.post("/v1/cluster/switchover", json={"to": "c"})
                assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_node")
                busy = await client.post("/v1/cluster/switchover", json={"to": "busy"})
                assert (busy.status_code, busy.json()["error"]) == (409, "standby_not_ready")
                promote = await client.post("/v1/cluster/promote", json={"force": True})
                assert (promote.status_code, promote.json()["error"]) == (503, "not_primary")
                assert (await client.post("/v1/cluster/switchover", json={"to": 5})).status_code == 400
            assert cluster.calls == [("switchover", "b"), ("switchover", "c"), ("switchover", "busy"), ("promote", True)]
            # Standalone: no cluster object.
            standalone = await running.client.post("/v1/cluster/promote")
            assert (standalone.status_code, standalone.json()["error"]) == (409, "not_clustered")

    trio.run(main)


def test_readiness_follows_role_and_writes_on_a_standby_get_not_primary(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            client, node = running.client, running.node
            assert (await client.get("/readyz")).status_code == 200
            node.role = "standby"
            assert (await client.get("/readyz")).status_code == 503
            refused = await client.post("/v1/calls", json={"id": "s1", "queue": "general", "caller": "0101234567"})
            assert refused.status_code == 503 and refused.json()["error"] == "not_primary"
            assert (await client.get("/v1/stats")).status_code == 200  # reads still work on a standby
            node.role = "primary"
            running.api.begin_shutdown()
            assert (await client.get("/readyz")).status_code == 503
            closing = await client.post("/v1/calls", json={"id": "s1", "queue": "general", "caller": "0101234567"})
            assert closing.status_code == 503 and closing.json()["error"] == "shutting_down"

    trio.run(main)
