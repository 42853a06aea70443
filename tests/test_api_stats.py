"""Hold, interval and per-agent statistics over HTTP, on an in-process node with a clock the
test moves (docs/kpis.md, docs/api.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import trio

from acd.api import views

from .helpers.inprocess import running_node, write_settings

# 10:00 in Seoul: what a test does in its few simulated minutes stays inside one 15-minute
# interval and one statistics day of the center, whatever the hour the suite runs at.
MORNING = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=9))).timestamp()


def test_hold_intervals_and_agents_over_http(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    clock = [MORNING]

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


def test_the_callback_desk_dials_a_promised_callback_end_to_end(tmp_path: Path) -> None:
    from acd.core import commands

    settings = write_settings(tmp_path)
    clock = [MORNING]
    number = "01012345678"

    async def main() -> None:
        async with running_node(settings, clock=lambda: clock[0]) as running:
            client, node = running.client, running.node

            async def post(path: str, body: dict[str, object] | None = None, after: float = 0.0, status: int = 200) -> dict[str, object]:
                clock[0] += after
                response = await client.post(path, json=body or {})
                assert response.status_code == status, response.text
                result: dict[str, object] = response.json()
                return result

            async def tick(after: float) -> None:
                clock[0] += after
                await node.submit(commands.Tick())

            await post("/v1/agents/kim/login")
            await post("/v1/agents/kim/ready")
            await post("/v1/calls", {"id": "x", "queue": "general", "caller": number}, status=201)
            await post("/v1/calls/x/answer", {"agent": "kim"})
            await post("/v1/calls/x/hangup", after=60)
            await post("/v1/calls/x/wrapup", {"agent": "kim", "disposition": "callback", "callback_at": clock[0] + 600}, after=5)
            key = node.center.state.interactions["x:cb1"].caller_key
            assert key is not None and node.store.secret(key) is not None  # kept for the call-back
            assert node.caller_number("x") is None  # the origin is over
            (task,) = (await client.get("/v1/callbacks")).json()
            assert (task["id"], task["state"], task["source"], task["caller"]) == ("x:cb1", "scheduled", "promised", "*******5678")
            await post("/v1/calls/x:cb1/dial", status=409)  # not due yet
            await tick(600)
            assert node.center.state.interactions["x:cb1"].agent == "kim"  # ringing at kim: dial now
            dialled = await post("/v1/calls/x:cb1/dial")
            assert dialled == {"id": "x:cb1", "number": number, "attempt": 1}
            assert node.center.state.audit[-1][1:] == ("anonymous", "callback.dial", "x:cb1")
            again = await post("/v1/calls/x:cb1/attempt", {"outcome": "no_answer"}, after=5)
            assert again["state"] == "scheduled"
            await tick(900)
            await post("/v1/calls/x:cb1/dial")
            await post("/v1/calls/x:cb1/attempt", {"outcome": "reached"}, after=5)
            await post("/v1/calls/x:cb1/hangup", after=30)
            await post("/v1/calls/x:cb1/wrapup", {"agent": "kim", "disposition": "resolved"}, after=5)
            assert node.store.secret(key) is None  # destroyed with the call-back
            await post("/v1/calls/x:cb1/dial", status=409)
            assert (await client.post("/v1/calls/x:cb1/attempt", json={"outcome": "maybe"})).status_code == 400
            stats = (await client.get("/v1/stats", params={"day": views.local_day(node.center, clock[0])})).json()["center"]
            assert (stats["callbacks_promised"], stats["callbacks_attempted"], stats["callbacks_reached"], stats["callbacks_completed"]) == (1, 2, 1, 1)
            assert (stats["offered"], stats["answered"]) == (1, 1)

    trio.run(main)


def test_a_dialer_token_reads_callbacks_and_numbers_and_a_supervisor_gets_no_number(tmp_path: Path) -> None:
    from acd.settings import hash_token

    tokens = [{"name": "desk", "role": "dialer", "hash": hash_token("dialer-token")},
              {"name": "boss", "role": "supervisor", "hash": hash_token("boss-token")}]
    settings = write_settings(tmp_path, tokens=tokens)
    dialer, boss = {"authorization": "Bearer dialer-token"}, {"authorization": "Bearer boss-token"}

    async def main() -> None:
        async with running_node(settings) as running:
            client = running.client
            assert (await client.get("/v1/callbacks", headers=dialer)).json() == []
            assert (await client.get("/v1/callbacks", headers=boss)).status_code == 200
            assert (await client.post("/v1/calls/nobody/dial", headers=boss)).status_code == 403
            assert (await client.post("/v1/calls/nobody/dial", headers=dialer)).status_code == 404
            assert (await client.post("/v1/calls/nobody/attempt", json={"outcome": "busy"}, headers=boss)).status_code == 403
            assert (await client.get("/v1/stats", headers=dialer)).status_code == 403

    trio.run(main)
