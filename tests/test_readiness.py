"""Ready means configured: at a cluster's first start, a node that answers /readyz 200 already
holds every queue of the config (a load balancer sends calls as soon as it sees 200)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from acd.tools.launcher import LocalCluster, prepare_config

ROOT = Path(__file__).resolve().parent.parent


def test_at_first_start_readyz_200_implies_the_configured_queues_are_present(tmp_path: Path) -> None:
    config = prepare_config(ROOT / "examples" / "busan-120.toml", tmp_path, always_open=True)
    cluster = LocalCluster(config, tmp_path)
    expected = {queue.name for queue in cluster.settings.center.queues}
    try:
        cluster.start_witness()
        for node in cluster.settings.nodes:
            cluster.start_node(node.name)
        deadline = time.monotonic() + 30
        ready: dict[str, set[str]] = {}
        with httpx.Client(timeout=1.0) as client:
            while not ready and time.monotonic() < deadline:
                for node in cluster.settings.nodes:
                    base = f"http://{node.api}"
                    try:
                        if client.get(base + "/readyz").status_code != 200:
                            continue
                        queues = client.get(base + "/v1/queues").json()
                    except httpx.HTTPError:
                        continue
                    ready[node.name] = {queue["id"] for queue in queues}
                time.sleep(0.005)
        assert ready, "no node became ready within 30 s"
        for name, queues in ready.items():
            assert queues == expected, f"node {name} answered /readyz 200 while holding queues {sorted(queues)}"
    finally:
        cluster.close()
