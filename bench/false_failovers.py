"""`make bench-false-failovers`: failovers of a healthy cluster under stress, per hour.

Starts a two-node cluster with a witness on loopback (the sample config), keeps writers busy
against it, and around it saturates every core with busy-looping processes and runs a
synchronous disk writer (4 KiB writes, each followed by fsync, in the cluster's directory).
Nothing is faulted: every change of epoch is a false failover. The nodes snapshot and collect
garbage as they do in service (the load crosses `snapshot_every_records`).

    python -m bench.false_failovers [--seconds 600] [--failover-timeout S[,S...]] [--writers 4]

With several timeouts it runs each in turn for the given time and prints the curve.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from acd.tools.launcher import LocalCluster, prepare_config

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "busan-120.toml"
HOG = "while True: pass"
DISK = (
    "import os, sys\n"
    "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
    "block = os.urandom(4096)\n"
    "for i in range(10**9):\n"
    "    os.pwrite(fd, block, (i % 25600) * 4096)\n"
    "    os.fsync(fd)\n"
)


def stressors(workdir: Path) -> list[subprocess.Popen[bytes]]:
    cores = os.cpu_count() or 2
    processes = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(cores)]
    processes.append(subprocess.Popen([sys.executable, "-c", DISK, str(workdir / "fsync-load.bin")]))
    return processes


def epochs(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    views = {}
    for node in cluster.settings.nodes:
        view = cluster.view(node.name)
        if view is not None:
            views[node.name] = view
    return views


async def write_load(cluster: LocalCluster, writers: int, stop: trio.Event) -> int:
    api = [node.api for node in cluster.settings.nodes]
    queue = cluster.settings.cluster.drill_queue or "drill"
    acknowledged = 0

    async def writer(number: int, client: httpx.AsyncClient) -> None:
        nonlocal acknowledged
        target = 0
        serial = 0
        while not stop.is_set():
            serial += 1
            call_id = f"soak-{number}-{time.monotonic_ns()}-{serial}"
            body = {"id": call_id, "queue": queue, "caller": "01000000000", "channel": "voice", "attributes": {"drill": "true"}}
            try:
                response = await client.post(f"http://{api[target]}/v1/calls", json=body, timeout=2.0)
                if response.status_code == 201:
                    acknowledged += 1
                    await client.post(f"http://{api[target]}/v1/calls/{call_id}/abandon", json={}, timeout=2.0)
                    continue
            except httpx.HTTPError:
                pass
            target = 1 - target
            await trio.sleep(0.05)

    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        for number in range(writers):
            nursery.start_soon(writer, number, client)
        await stop.wait()
        nursery.cancel_scope.cancel()
    return acknowledged


def soak(seconds: float, failover_timeout: float | None, writers: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="acd-bench-soak-"))
    overrides = {"cluster.failover_timeout": str(failover_timeout)} if failover_timeout else None
    cluster = LocalCluster(prepare_config(SAMPLE, workdir, always_open=True, overrides=overrides), workdir, log_level="warning")
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        cluster.start()
        primary = cluster.wait_primary()
        before = epochs(cluster)
        epoch = max(view["epoch"] for view in before.values())
        hogs = stressors(workdir)

        async def run() -> int:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                async def timer() -> None:
                    await trio.sleep(seconds)
                    stop.set()

                nursery.start_soon(timer)
                return await write_load(cluster, writers, stop)

        acknowledged = trio.run(run)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    try:
        after = epochs(cluster)
    finally:
        cluster.close()
    final = max((view["epoch"] for view in after.values()), default=epoch)
    changes = final - epoch
    return {
        "failover_timeout": cluster.settings.cluster.failover_timeout, "seconds": seconds, "primary_before": primary,
        "epoch_changes": changes, "per_hour": changes * 3600.0 / seconds, "writes_acknowledged": acknowledged,
        "nodes_answering_after": sorted(after),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.false_failovers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long each run lasts (default 600)")
    parser.add_argument("--failover-timeout", default="", help="one value or a comma-separated list (default: the sample's)")
    parser.add_argument("--writers", type=int, default=4)
    args = parser.parse_args(argv)
    timeouts = [float(value) for value in args.failover_timeout.split(",") if value] or [None]
    results = []
    for timeout in timeouts:
        result = soak(args.seconds, timeout, args.writers)
        results.append(result)
        print(f"failover_timeout {result['failover_timeout']:>5} s: {result['epoch_changes']} failovers in {args.seconds:.0f} s "
              f"({result['per_hour']:.1f} per hour), {result['writes_acknowledged']} writes acknowledged, "
              f"{(os.cpu_count() or 2)} cores saturated, fsync writer beside", flush=True)
    return 0 if all(result["epoch_changes"] == 0 for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
