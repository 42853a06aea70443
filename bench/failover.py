"""`make bench-failover`: failover time per kind of primary loss, and the rejoin time after it.

Starts a two-node cluster with a witness on loopback (the sample config, its shipped
`failover_timeout` unless `--failover-timeout` says otherwise), keeps four writers busy, and
loses the primary N times for each kind of fault:

- `kill`: SIGKILL (the kernel closes the dead process's sockets); then it is restarted;
- `stop`: SIGSTOP (a hung host: nothing closes); then SIGCONT;
- `isolate`: the primary's links to the standby and to the witness black-holed through link
  proxies (connections stay open, nothing gets through); then the links are healed.

Failover time: from the fault to the first write acknowledged (201) by the other node, which a
probe asks every 10 ms; "elected" splits it: from the fault to the new primary's log line
"became primary" (the rest is its first commit and the probe's round trip). Rejoin time: from the restart (resume, heal) of the former primary to
the new primary reporting it connected and not behind. A write acknowledged by the former
primary after the new one acknowledged its first is counted (it must be 0).

    python -m bench.failover [N] [--kinds kill,stop,isolate] [--failover-timeout S] [--json FILE] [--haproxy]

With --haproxy, HAProxy with the shipped deploy/haproxy.cfg (its /readyz checks as shipped)
stands in front of both nodes, and a second probe times the first write acknowledged through it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from acd.tools.launcher import (
    LocalCluster,
    free_port,
    haproxy_config,
    prepare_config,
    stop,
    wait_for,
)
from acd.tools.proxy import LinkProxy

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "busan-120.toml"
KINDS = ("kill", "stop", "isolate")
WRITERS = 4
IN_SYNC_LIMIT = 30.0


class BenchCluster(LocalCluster):
    """A LocalCluster whose every link can be black-holed: each node reaches the other node's
    replication port and the witness through its own LinkProxy."""

    def __init__(self, config: Path, workdir: Path, log_level: str = "warning") -> None:
        super().__init__(config, workdir, log_level=log_level)
        self.links: dict[str, LinkProxy] = self.proxies()   # in front of each node's replication port
        text = config.read_text(encoding="utf-8")
        witness = self.settings.witness
        assert witness is not None
        self.witness_links: dict[str, LinkProxy] = {}
        self.node_configs: dict[str, Path] = {}
        for node in self.settings.nodes:
            address = f"127.0.0.1:{free_port()}"
            self.witness_links[node.name] = LinkProxy(address, witness.address)
            path = workdir / f"cluster-{node.name}.toml"
            path.write_text(text.replace(f'address = "{witness.address}"', f'address = "{address}"'), encoding="utf-8")
            self.node_configs[node.name] = path

    def start_node(self, name: str) -> None:
        self._spawn(name, ["serve", "--config", str(self.node_configs[name]), "--node", name, "--log-level", self.log_level])

    def isolate(self, name: str) -> None:
        other = self.standby_of(name)
        for proxy in (self.links[name], self.links[other], self.witness_links[name]):
            proxy.stall()

    def heal(self) -> None:
        for proxy in [*self.links.values(), *self.witness_links.values()]:
            proxy.heal()

    def close(self) -> None:
        super().close()
        for proxy in [*self.links.values(), *self.witness_links.values()]:
            proxy.close()


class Bench:
    def __init__(self, cluster: BenchCluster) -> None:
        self.cluster = cluster
        self.api = {node.name: node.api for node in cluster.settings.nodes}
        self.target = ""
        self.acks: list[tuple[float, str]] = []
        self.serial = itertools.count()
        self.queue = cluster.settings.cluster.drill_queue or "drill"

    async def write(self, client: httpx.AsyncClient, node: str, timeout: float = 0.5) -> bool:
        """One write to `node` (a node's name, or "haproxy": through HAProxy); True if acknowledged."""
        call_id = f"bench-{time.monotonic_ns()}-{next(self.serial)}"
        body = {"id": call_id, "queue": self.queue, "caller": "01000000000", "channel": "voice", "attributes": {"drill": "true"}}
        try:
            response = await client.post(f"http://{self.api[node]}/v1/calls", json=body, timeout=timeout)
        except httpx.HTTPError:
            return False
        if response.status_code != 201:
            return False
        self.acks.append((trio.current_time(), node))
        try:
            await client.post(f"http://{self.api[node]}/v1/calls/{call_id}/abandon", json={}, timeout=timeout)
        except httpx.HTTPError:
            pass
        return True

    async def writer(self, client: httpx.AsyncClient) -> None:
        while True:
            if not self.target or not await self.write(client, self.target):
                await trio.sleep(0.02)

    async def view(self, client: httpx.AsyncClient, node: str) -> dict[str, Any] | None:
        try:
            response = await client.get(f"http://{self.api[node]}/v1/cluster", timeout=0.5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    async def in_sync(self, client: httpx.AsyncClient, primary: str, limit: float) -> float | None:
        """Seconds until `primary` reports its standby connected and not behind (None: not in `limit`)."""
        start = trio.current_time()
        while trio.current_time() - start < limit:
            view = await self.view(client, primary)
            if view and view.get("role") == "primary" and view.get("peer_connected") and not view.get("standby_behind"):
                return trio.current_time() - start
            await trio.sleep(0.01)
        return None

    async def first_ack(self, client: httpx.AsyncClient, node: str, limit: float) -> float | None:
        start = trio.current_time()
        while trio.current_time() - start < limit:
            if await self.write(client, node, timeout=0.3):
                return trio.current_time()
            await trio.sleep(0.01)
        return None

    async def one(self, client: httpx.AsyncClient, kind: str, primary: str) -> dict[str, Any]:
        cluster = self.cluster
        other = cluster.standby_of(primary)
        self.target = primary
        await trio.sleep(0.5)
        fault = trio.current_time()
        fault_wall = time.time()
        if kind == "kill":
            cluster.kill(primary)
        elif kind == "stop":
            cluster.pause(primary)
        else:
            cluster.isolate(primary)
        via_haproxy: list[float | None] = []
        async with trio.open_nursery() as nursery:
            if "haproxy" in self.api:
                async def through_haproxy() -> None:
                    via_haproxy.append(await self.first_ack(client, "haproxy", 30.0))

                nursery.start_soon(through_haproxy)
            acked = await self.first_ack(client, other, 30.0)
        if acked is None:
            raise RuntimeError(f"{kind}: no write acknowledged by {other} within 30 s")
        self.target = other
        failover = acked - fault
        await trio.sleep(0.3)
        if kind == "kill":
            await trio.to_thread.run_sync(cluster.restart, primary)
        elif kind == "stop":
            cluster.resume(primary)
        else:
            cluster.heal()
        rejoin = await self.in_sync(client, other, IN_SYNC_LIMIT)
        zombie = sum(1 for at, node in self.acks if node == primary and at > acked)
        elected = self.elected_at(other)
        haproxy = via_haproxy[0] - fault if via_haproxy and via_haproxy[0] is not None else None
        return {"kind": kind, "from": primary, "to": other, "failover": failover, "haproxy": haproxy,
                "elected": elected - fault_wall if elected is not None and elected > fault_wall else None,
                "rejoin": rejoin if rejoin is not None else float("inf"), "zombie_acks": zombie}

    def elected_at(self, node: str) -> float | None:
        """Wall-clock time of the node's last "became primary" (its log), to split the failover."""
        try:
            text = (self.cluster.logs / f"{node}.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        found = re.findall(r'^time=(\S+) .*msg="became primary"', text, flags=re.MULTILINE)
        return dt.datetime.fromisoformat(found[-1]).timestamp() if found else None

    async def run(self, kinds: list[str], count: int) -> list[dict[str, Any]]:
        results = []
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20)) as client, trio.open_nursery() as nursery:
            primary = await trio.to_thread.run_sync(self.cluster.wait_primary)
            for _ in range(WRITERS):
                nursery.start_soon(self.writer, client)
            if await self.in_sync(client, primary, IN_SYNC_LIMIT) is None:
                raise RuntimeError("the pair never got in sync")
            for kind in kinds:
                for number in range(1, count + 1):
                    result = await self.one(client, kind, primary)
                    results.append(result)
                    through = f"  via HAProxy {result['haproxy']:.3f} s" if result.get("haproxy") is not None else ""
                    print(f"{kind:<8}{number:3d}: {result['from']} -> {result['to']}  failover {result['failover']:.3f} s{through}  "
                          f"rejoin {result['rejoin']:.3f} s  zombie acks {result['zombie_acks']}", flush=True)
                    primary = result["to"]
                    if result["rejoin"] == float("inf"):
                        print(f"  {primary} still reports its standby behind or gone after {IN_SYNC_LIMIT:.0f} s", flush=True)
            nursery.cancel_scope.cancel()
        return results


def start_haproxy(cluster: BenchCluster, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """HAProxy with the shipped config in front of the cluster's APIs; its address once it routes."""
    binary = shutil.which("haproxy")
    if binary is None:
        raise SystemExit("bench.failover: --haproxy needs the haproxy binary (apt-get install haproxy)")
    port = free_port()
    servers = {node.name: node.api for node in cluster.settings.nodes}
    config = haproxy_config(REPO / "deploy" / "haproxy.cfg", port, servers, workdir / "haproxy.cfg")
    log = open(workdir / "logs" / "haproxy.log", "wb")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    address = f"127.0.0.1:{port}"

    def routes() -> bool:
        try:
            return httpx.get(f"http://{address}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(routes, 15.0, what="HAProxy to route to the primary")
    return process, address


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def summary(results: list[dict[str, Any]], failover_timeout: float) -> str:
    lines = [f"failover_timeout = {failover_timeout} s; seconds, from the fault to the first write acknowledged by the other node",
             f"{'fault':<10}{'n':>4}{'median':>9}{'p99':>9}{'max':>9}   {'elected (median)':>16}   {'rejoin median':>13}{'p99':>9}{'max':>9}   zombie acks"]
    for kind in KINDS:
        rows = [r for r in results if r["kind"] == kind]
        if not rows:
            continue
        failover = [r["failover"] for r in rows]
        rejoin = [r["rejoin"] for r in rows]
        elected = [r["elected"] for r in rows if r.get("elected") is not None]
        elected_text = f"{statistics.median(elected):.3f}" if elected else "-"
        lines.append(f"{kind:<10}{len(rows):>4}{statistics.median(failover):>9.3f}{quantile(failover, 0.99):>9.3f}{max(failover):>9.3f}"
                     f"   {elected_text:>16}   {statistics.median(rejoin):>13.3f}{quantile(rejoin, 0.99):>9.3f}{max(rejoin):>9.3f}"
                     f"   {sum(r['zombie_acks'] for r in rows)}")
    through = [r for r in results if r.get("haproxy") is not None]
    if through:
        lines.append("through HAProxy (deploy/haproxy.cfg's checks): seconds from the fault to the first write acknowledged through it")
        for kind in KINDS:
            values = [r["haproxy"] for r in through if r["kind"] == kind]
            if values:
                lines.append(f"{kind:<10}{len(values):>4}{statistics.median(values):>9.3f}{quantile(values, 0.99):>9.3f}{max(values):>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("count", nargs="?", type=int, default=20, help="faults of each kind (default 20)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: kill, stop, isolate")
    parser.add_argument("--failover-timeout", type=float, default=None, help="override the sample's failover_timeout")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement here")
    parser.add_argument("--haproxy", action="store_true",
                        help="also put HAProxy (deploy/haproxy.cfg, its checks as shipped) in front and time the first write acknowledged through it")
    parser.add_argument("--log-level", default="warning", help="the nodes' and the witness's log level (their logs stay in the work directory)")
    args = parser.parse_args(argv)
    kinds = [kind for kind in args.kinds.split(",") if kind]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="acd-bench-failover-"))
    overrides = {"cluster.failover_timeout": str(args.failover_timeout)} if args.failover_timeout else None
    cluster = BenchCluster(prepare_config(SAMPLE, workdir, always_open=True, proxied=True, overrides=overrides), workdir, args.log_level)
    haproxy: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        wait_for(lambda: cluster.primary() is not None, 20.0, what="a writable primary")
        bench = Bench(cluster)
        if args.haproxy:
            haproxy, bench.api["haproxy"] = start_haproxy(cluster, workdir)
        started = time.monotonic()
        results = trio.run(bench.run, kinds, args.count)
        elapsed = time.monotonic() - started
    finally:
        if haproxy is not None:
            stop(haproxy)
        cluster.close()
    timeout = cluster.settings.cluster.failover_timeout
    print()
    print(f"logs: {workdir / 'logs'}")
    print(summary(results, timeout))
    # The load the faults and rejoins ran under (compare: `make loadtest-day` offers about
    # 2,000 calls in 10 minutes, some 15 writes a second).
    print(f"load: {len(bench.acks)} writes acknowledged in {elapsed:.0f} s ({len(bench.acks) / elapsed:.0f} per second, "
          f"{WRITERS} writers, faults and rejoins included)")
    if args.json:
        args.json.write_text(json.dumps({"failover_timeout": timeout, "results": results}, indent=1), encoding="utf-8")
    zombies = sum(r["zombie_acks"] for r in results)
    return 0 if zombies == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
