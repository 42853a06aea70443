"""Hold, interval and per-agent statistics over HTTP, on an in-process node with a clock the
test moves (docs/kpis.md, docs/api.md)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import trio

from acd.api import views

from .helpers.inprocess import running_node, write_settings


def test_hold_intervals_and_agents_over_http(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    clock = [time.time()]

    async def main() -> None:
        async with running_node(settings, clock=lambda: clock[0]) as running:
            client = running.client

            async def post(path: str, body: dict[str, object] | None = None, after: float = 0.0) -> dict[str, object]:
                clock[0] += after
                response = await client.post(path, json=body or {})
                assert response.status_code in (200, 201), response.text
                result: dict[str, object] = response.json()
                return result

            await post("/v1/agents/kim/login")
            await post("/v1/agents/kim/ready", after=10)
            await post("/v1/calls", {"id": "h1", "queue": "general", "caller": "01012345678"})
            await post("/v1/calls/h1/answer", {"agent": "kim"})
            await post("/v1/calls/h1/hold", after=20)
            held = (await client.get("/v1/calls/h1")).json()
            assert held["on_hold_since"] == clock[0]
            resumed = await post("/v1/calls/h1/unhold", after=30)
            assert "on_hold_since" not in resumed
            await post("/v1/calls/h1/hangup", after=10)
            await post("/v1/calls/h1/wrapup", {"agent": "kim", "disposition": "resolved"}, after=10)
            # talk 60 s (30 s of it on hold) + wrap-up 10 s
            day = views.local_day(running.node.center, clock[0])
            stats = (await client.get("/v1/stats", params={"day": day})).json()
            assert (stats["center"]["hold_seconds"], stats["center"]["aht_seconds"]) == (30.0, 70.0)

            rows = (await client.get("/v1/stats/intervals", params={"from": day, "to": day})).json()
            assert rows["queue"] is None and sum(row["kpis"]["answered"] for row in rows["intervals"]) == 1
            queue_rows = (await client.get("/v1/stats/intervals", params={"from": day, "queue": "general"})).json()
            assert [row["kpis"]["handled"] for row in queue_rows["intervals"]] == [1]
            assert (await client.get("/v1/stats/intervals", params={"queue": "nowhere"})).status_code == 404
            assert (await client.get("/v1/stats/intervals", params={"from": "yesterday"})).status_code == 400

            agents = (await client.get("/v1/stats/agents", params={"day": day})).json()
            kim = next(agent for agent in agents["agents"] if agent["id"] == "kim")
            assert (kim["handled"], kim["hold_seconds"], kim["aht_seconds"], kim["fcr"]) == (1, 30.0, 70.0, 1.0)
            assert kim["not_ready_reasons"].get("login") == 10.0
            assert kim["seconds"]["busy"] == 60.0
            assert (await client.get("/v1/stats/agents", params={"day": "2026-13-01"})).status_code == 400

            document = (await client.get("/openapi.json")).json()
            for path in ("/v1/stats/intervals", "/v1/stats/agents", "/v1/calls/{id}/hold", "/v1/calls/{id}/unhold"):
                assert path in document["paths"], path
            parameters = {p["name"] for p in document["paths"]["/v1/stats/intervals"]["get"]["parameters"]}
            assert parameters == {"from", "to", "queue"}
            assert dt.date.fromisoformat(day)

    trio.run(main)
