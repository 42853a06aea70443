"""Run a node and its API inside the test's own Trio loop (no sockets), for fast node tests.

    settings = write_settings(tmp_path, store={"snapshot_every_records": 10})
    async with running_node(settings) as running:
        response = await running.client.post("/v1/calls", json={...})
        running.node.center.state ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from acd import settings as settings_module
from acd.api import Api, build_app
from acd.node.node import Node

from .node_process import node_config


def write_settings(directory: Path, **config: Any) -> settings_module.Settings:
    """A config file in `directory` (examples/standalone.toml plus `config`), loaded."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "node.toml"
    path.write_text(node_config(directory / "data", 18120, **config), encoding="utf-8")
    return settings_module.load(path)


@dataclass
class Running:
    node: Node
    api: Api
    client: httpx.AsyncClient
    nursery: trio.Nursery


@asynccontextmanager
async def running_node(settings: settings_module.Settings, **node_options: Any) -> AsyncIterator[Running]:
    """A node with its pipeline and API; the center from the config is applied first."""
    node = Node(settings, "a", **node_options)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_pipeline)
            await node.apply_settings_center()
            api = build_app(node)
            transport = httpx.ASGITransport(app=api)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
                yield Running(node, api, client, nursery)
            nursery.cancel_scope.cancel()
    finally:
        node.close()
