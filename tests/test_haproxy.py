"""HAProxy with the shipped config (deploy/haproxy.cfg) follows a failover to the new primary."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from acd.tools.launcher import LocalCluster, free_port, haproxy_config, prepare_config, wait_for
from tests.helpers.tools import system_tool

ROOT = Path(__file__).resolve().parent.parent


def haproxy_binary() -> str:
    # CI must prove this, not skip it: `make test` installs haproxy (scripts/system-deps.sh).
    return system_tool("haproxy", "haproxy")


def render_config(cluster: LocalCluster, port: int, target: Path) -> Path:
    """The shipped config with this test's loopback addresses in place of the sample hosts."""
    return haproxy_config(ROOT / "deploy" / "haproxy.cfg", port, {node.name: node.api for node in cluster.settings.nodes}, target)


def test_requests_through_haproxy_reach_the_new_primary_after_a_failover(tmp_path: Path) -> None:
    binary = haproxy_binary()
    cluster = LocalCluster(prepare_config(ROOT / "examples" / "busan-120.toml", tmp_path, always_open=True), tmp_path)
    port = free_port()
    proxy = None
    try:
        first = cluster.start()
        config = render_config(cluster, port, tmp_path / "haproxy.cfg")
        subprocess.run([binary, "-c", "-f", str(config)], check=True, capture_output=True)
        proxy = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=3) as client:

            def create(call_id: str) -> bool:
                try:
                    response = client.post(f"{base}/v1/calls", json={"id": call_id, "queue": "transport", "caller": "01012345678"})
                except httpx.HTTPError:
                    return False
                return response.status_code == 201

            def routed_to() -> str | None:
                try:
                    return client.get(f"{base}/v1/cluster").json()["name"]
                except (httpx.HTTPError, ValueError, KeyError):
                    return None

            # HAProxy starts with every server up; its /readyz checks mark the standby down.
            wait_for(lambda: all(routed_to() == first for _ in range(4)), 10, what="HAProxy to route only to the primary")
            assert create("through-haproxy-1")
            cluster.kill(first)
            killed_at = time.monotonic()
            wait_for(lambda: create("through-haproxy-2"), 15, interval=0.05, what="a write through HAProxy after the failover")
            print(f"HAProxy-side outage: {time.monotonic() - killed_at:.2f} s")
            second = cluster.standby_of(first)
            wait_for(lambda: all(routed_to() == second for _ in range(4)), 10, what="HAProxy to route only to the new primary")
            assert client.get(f"{base}/v1/calls/through-haproxy-1").status_code == 200
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        cluster.close()
