"""Per-token limits: requests per second and concurrent event streams (config [limits])."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from acd.settings import hash_token
from tests.helpers.inprocess import running_node, write_settings

TOKENS = [{"name": "boss", "role": "supervisor", "hash": hash_token("boss-token")}]
BOSS = {"authorization": "Bearer boss-token"}


def test_requests_past_the_per_token_rate_get_429(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, tokens=TOKENS, limits={"requests_per_second_per_token": 5})

    async def main() -> None:
        async with running_node(settings) as running:
            statuses = [(await running.client.get("/v1/stats", headers=BOSS)).status_code for _ in range(8)]
            assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
            limited = await running.client.get("/v1/stats", headers=BOSS)
            assert limited.json()["error"] == "rate_limited" and limited.headers["retry-after"] == "1"
            assert (await running.client.get("/healthz")).status_code == 200  # public endpoints are not counted

    trio.run(main)


def test_streams_past_the_per_token_limit_get_429(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, tokens=TOKENS, limits={"streams_per_token_max": 2})

    async def main() -> None:
        async with running_node(settings) as running:
            api = running.api
            started: list[int] = []

            async def reader(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                async def receive() -> dict[str, Any]:
                    await trio.sleep_forever()
                    raise AssertionError

                async def send(message: dict[str, Any]) -> None:
                    if message["type"] == "http.response.start":
                        started.append(message["status"])
                        task_status.started()

                scope = {"type": "http", "method": "GET", "path": "/v1/events", "query_string": b"",
                         "headers": [(b"authorization", b"Bearer boss-token")]}
                await api(scope, receive, send)

            async with trio.open_nursery() as nursery:
                await nursery.start(reader)
                await nursery.start(reader)
                third = await running.client.get("/v1/events", headers=BOSS)
                assert third.status_code == 429 and third.json()["error"] == "too_many_streams"
                nursery.cancel_scope.cancel()
            assert started == [200, 200]
            # The closed streams no longer count.
            with trio.move_on_after(0.5):
                await reader()
            assert started == [200, 200, 200]

    trio.run(main)
