"""`acd drill`: a failover drill against a running cluster on this host.

Before anything else the drill checks that every configured address answers as the node the
config names, of the cluster the config names (GET /v1/cluster), and that the witness answers
for that cluster; any mismatch stops it with both names, before it writes or signals anything.
It signals only processes tied to a node by the pid the node reports, on this host.

A drill applies a light load of its own: calls created in the config's drill queue
(`[cluster] drill_queue`, a queue no agent serves) and abandoned at once, each id recorded when
the API acknowledged it. It injects one fault, measures the time without a writable primary
as a client sees it, heals the cluster (restarts what it killed, continues what it stopped),
waits until both nodes hold the same state, and checks that every write it got acknowledged
is on both nodes. Afterwards it ends any drill call still open and checks that the drill queue
is empty; the report says so. It prints a report (also `--json`) and writes a markdown file
for the drill record.

Scenarios: kill-primary (SIGKILL), stop-primary (SIGSTOP past the failover timeout, then
SIGCONT: the zombie must acknowledge nothing), kill-standby, kill-witness, switchover, and
partition (cut the replication link; needs link proxies in front of the replication ports).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import trio

from acd import identity
from acd import settings as settings_module
from acd.argtypes import positive
from acd.groups import find_exception
from acd.tools.client import Router

SCENARIOS = ("kill-primary", "stop-primary", "kill-standby", "kill-witness", "partition", "switchover")


class DrillError(Exception):
    """The drill cannot run (wrong cluster state, missing processes, production without consent)."""


class Processes(Protocol):
    def kill(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...


class HostProcesses:
    """The cluster's processes on this host, tied to each node by the pid the node reports.

    Before the fault the drill asks every node for `GET /v1/cluster` (its cluster, name and
    pid) and the witness for its status (its cluster); `prepare` keeps a pid only when that
    process on this host holds the listening socket of the configured address. Nothing is
    ever looked up or signalled by its name or command line.
    """

    def __init__(self, settings: settings_module.Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.found: dict[str, tuple[int, list[str], str]] = {}
        self.supervised: dict[str, bool] = {}

    def prepare(self, views: dict[str, dict[str, Any]], witness_checked: bool) -> None:
        self.found.clear()
        for node in self.settings.nodes:
            self.found[node.name] = self._describe(identity.local_pid(views[node.name], node.api))
        if witness_checked and self.settings.witness is not None:
            pids = identity.listening_pids(self.settings.witness.address)
            if len(pids) == 1:
                self.found["witness"] = self._describe(pids.pop())
        self.supervised = {name: _supervised(pid) for name, (pid, _argv, _cwd) in self.found.items()}

    @staticmethod
    def _describe(pid: int) -> tuple[int, list[str], str]:
        try:
            argv = [word.decode(errors="replace") for word in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if word]
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError as error:
            raise DrillError(f"process {pid} cannot be inspected on this host ({error.strerror})") from None
        return pid, argv, cwd

    def _pid(self, name: str) -> int:
        if name not in self.found:
            where = self.settings.witness.address if name == "witness" and self.settings.witness else self.settings.node(name).api
            raise DrillError(f"no process of {name!r} of cluster {self.settings.cluster.name!r} found on this host "
                             f"(listening on {where}); run the drill on the host that runs it")
        return self.found[name][0]

    def kill(self, name: str) -> None:
        os.kill(self._pid(name), signal.SIGKILL)

    def pause(self, name: str) -> None:
        os.kill(self._pid(name), signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self._pid(name), signal.SIGCONT)

    def restart(self, name: str) -> None:
        _pid, argv, cwd = self.found[name]
        # A process under a service manager (a systemd unit with Restart=always) comes back by
        # itself: wait for it rather than start a second one that would fight it for the port.
        address = self.settings.witness.address if name == "witness" and self.settings.witness else self.settings.node(name).api
        if self.supervised.get(name):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                back = identity.listening_pids(address)
                if back:
                    self.found[name] = self._describe(back.pop())
                    return
                time.sleep(0.2)
            raise DrillError(f"{name} runs under a service manager that did not restart it within 30 s")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.found[name] = (process.pid, argv, cwd)


def _supervised(pid: int) -> bool:
    """Whether the process runs in a systemd service's cgroup (`acd-node@a.service`, ...)."""
    try:
        groups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return any(line.rsplit("/", 1)[-1].endswith(".service") and "user@" not in line for line in groups.splitlines())


@dataclass
class DrillReport:
    scenario: str
    cluster: str
    primary_before: str
    primary_after: str | None = None
    fault_at: str = ""
    outage_seconds: float = 0.0
    time_without_primary_seconds: float = 0.0
    writes_acknowledged: int = 0
    writes_failed: int = 0
    writes_missing: dict[str, int] = field(default_factory=dict)
    zombie_acknowledged_after_lease: int = 0
    heal_seconds: float = 0.0
    converged: bool = False
    drill_queue: str = ""
    drill_calls_ended_after: int = 0
    drill_calls_left_open: int = 0
    drill_queue_empty_after: bool = False
    passed: bool = False
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"# Drill `{self.scenario}` on cluster `{self.cluster}` — {'PASS' if self.passed else 'FAIL'}", ""]
        for key, value in asdict(self).items():
            if key not in ("scenario", "cluster", "notes"):
                lines.append(f"- {key.replace('_', ' ')}: {value}")
        lines += ["", *[f"- {note}" for note in self.notes]]
        return "\n".join(lines) + "\n"


FINAL_STATES = frozenset({"completed", "abandoned", "transferred", "closed"})


class Drill:
    def __init__(self, settings: settings_module.Settings, processes: Processes, *, load_rate: float = 20.0,
                 proxies: dict[str, Any] | None = None, client: httpx.AsyncClient | None = None, token: str = "") -> None:
        self.settings = settings
        self.processes = processes
        self.load_rate = load_rate
        self.proxies = proxies or {}
        self.addresses = [node.api for node in settings.nodes]
        self.acknowledged: list[str] = []
        self.acknowledged_by: dict[str, str] = {}
        self.failed = 0
        self.tag = dt.datetime.now().strftime("%H%M%S")
        self.queue = settings.cluster.drill_queue
        self.scheme = identity.scheme(settings)
        self.headers = identity.headers(token)
        self._client = client

    def url(self, address: str, path: str) -> str:
        return f"{self.scheme}://{address}{path}"

    async def check_identity(self, client: httpx.AsyncClient, scenario: str) -> dict[str, dict[str, Any]]:
        """Every node answers as itself, of this cluster, and so does the witness; else DrillError."""
        views: dict[str, dict[str, Any]] = {}
        problems = []
        for node in self.settings.nodes:
            try:
                response = await client.get(self.url(node.api, "/v1/cluster"), headers=self.headers, timeout=2.0)
                view = response.json() if response.status_code == 200 else None
            except httpx.HTTPError as error:
                problems.append(identity.reason(error, node.api, self.settings))
                continue
            except ValueError:
                view = None
            if not isinstance(view, dict):
                problems.append(f"{node.api}: HTTP {response.status_code} to /v1/cluster (a token is needed when "
                                "authentication is on: --token or ACD_TOKEN)")
                continue
            mismatch = identity.mismatch(self.settings, node.name, view)
            if mismatch:
                problems.append(mismatch)
            views[node.name] = view
        if self.settings.witness is not None:
            from replication.cli import witness_status

            witness = await witness_status(self.settings)
            if "error" in witness:
                problems.append(f"witness {witness['error']}")
        if problems:
            raise DrillError("; ".join(problems))
        return views

    async def view(self, client: httpx.AsyncClient, address: str) -> dict[str, Any] | None:
        try:
            response = await client.get(self.url(address, "/v1/cluster"), headers=self.headers, timeout=1.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    async def primary(self, client: httpx.AsyncClient) -> str | None:
        ready = []
        for node in self.settings.nodes:
            try:
                if (await client.get(self.url(node.api, "/readyz"), timeout=0.5)).status_code == 200:
                    ready.append(node.name)
            except httpx.HTTPError:
                pass
        return ready[0] if len(ready) == 1 else None

    async def wait_primary(self, client: httpx.AsyncClient, timeout: float, other_than: str | None = None) -> str:
        deadline = trio.current_time() + timeout
        while trio.current_time() < deadline:
            name = await self.primary(client)
            if name is not None and name != other_than:
                return name
            await trio.sleep(0.02)
        raise DrillError(f"no writable primary within {timeout} s")

    async def load(self, router: Router, stop: trio.Event) -> None:
        """Create and abandon drill calls at the load rate, recording every acknowledged create."""
        number = 0
        interval = 1.0 / self.load_rate
        next_at = trio.current_time()
        while not stop.is_set():
            number += 1
            call_id = f"drill-{self.tag}-{number}"
            body = {"id": call_id, "queue": self.queue, "caller": "01000000000", "channel": "voice",
                    "attributes": {"drill": "true"}}
            try:
                response = await router.request("POST", "/v1/calls", body, deadline=10.0)
                if response.status_code == 201:
                    self.acknowledged.append(call_id)
                    self.acknowledged_by[call_id] = router.current
                    await router.request("POST", f"/v1/calls/{call_id}/abandon", {}, deadline=10.0)
                else:
                    self.failed += 1
            except TimeoutError:
                self.failed += 1
            next_at += interval
            await trio.sleep_until(max(next_at, trio.current_time()))

    async def clean_up(self, router: Router, report: DrillReport) -> None:
        """End every drill call still open (abandon is idempotent) and check the drill queue is empty."""
        ended = left = 0
        for call_id in self.acknowledged:
            try:
                response = await router.request("GET", f"/v1/calls/{call_id}", deadline=5.0)
                state = response.json().get("state") if response.status_code == 200 else None
                if state not in FINAL_STATES:
                    await router.request("POST", f"/v1/calls/{call_id}/abandon", {}, deadline=5.0)
                    response = await router.request("GET", f"/v1/calls/{call_id}", deadline=5.0)
                    state = response.json().get("state") if response.status_code == 200 else None
                    ended += state in FINAL_STATES
                left += state not in FINAL_STATES
            except (TimeoutError, ValueError):
                left += 1
        report.drill_calls_ended_after = ended
        report.drill_calls_left_open = left
        try:
            response = await router.request("GET", f"/v1/queues/{self.queue}", deadline=5.0)
            queue = response.json() if response.status_code == 200 else {}
        except (TimeoutError, ValueError):
            queue = {}
        report.drill_queue_empty_after = bool(queue) and queue.get("waiting") == 0 and queue.get("offered_now") == 0
        report.notes.append(
            f"drill traffic went only to queue {self.queue!r}: {len(self.acknowledged)} calls, "
            + (f"all ended (abandoned); {ended} of them ended by the clean-up" if left == 0 else f"{left} still open")
            + ("; the queue is empty after the drill" if report.drill_queue_empty_after else "; the queue is NOT empty after the drill")
        )

    async def converged(self, client: httpx.AsyncClient, timeout: float) -> bool:
        deadline = trio.current_time() + timeout
        while trio.current_time() < deadline:
            digests = []
            for address in self.addresses:
                try:
                    response = await client.get(self.url(address, "/v1/admin/state"), headers=self.headers, timeout=1.0)
                    digests.append(response.json() if response.status_code == 200 else None)
                except (httpx.HTTPError, ValueError):
                    digests.append(None)
            if all(digests) and len({(d["lsn"], d["state_hash"]) for d in digests if d}) == 1:
                return True
            await trio.sleep(0.1)
        return False

    async def missing_on(self, client: httpx.AsyncClient, address: str) -> int:
        missing = 0
        for call_id in self.acknowledged:
            try:
                response = await client.get(self.url(address, f"/v1/calls/{call_id}"), headers=self.headers, timeout=2.0)
            except httpx.HTTPError:
                missing += 1
                continue
            missing += response.status_code != 200
        return missing

    async def run(self, scenario: str, *, hold_seconds: float | None = None) -> DrillReport:
        if scenario not in SCENARIOS:
            raise DrillError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if not self.queue:
            raise DrillError(f"{self.settings.path}: no drill queue: declare one ([cluster] drill_queue = \"drill\" and a "
                             "[[queues]] entry with a skill no agent has), so drill calls never reach a real queue")
        failover = self.settings.cluster.failover_timeout
        async with identity.async_client(self.settings, limits=httpx.Limits(max_connections=50)) as client:
            client.headers.update(self.headers)
            views = await self.check_identity(client, scenario)
            prepare = getattr(self.processes, "prepare", None)
            if prepare is not None:
                try:
                    prepare(views, witness_checked=self.settings.witness is not None)
                except identity.IdentityError as error:
                    raise DrillError(str(error)) from None
            try:
                before = await self.wait_primary(client, 10 * failover)
            except DrillError:
                raise DrillError("the cluster has no single writable primary; heal it before drilling") from None
            standby = next(node.name for node in self.settings.nodes if node.name != before)
            report = DrillReport(scenario=scenario, cluster=self.settings.cluster.name, primary_before=before, drill_queue=self.queue)
            router = Router(self.addresses, client, scheme=self.scheme)
            router.current = self.settings.node(before).api
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.load, router, stop)
                await trio.sleep(1.0)
                report.fault_at = dt.datetime.now().isoformat(timespec="milliseconds")
                fault_time = trio.current_time()
                healed_from = fault_time
                if scenario == "kill-primary":
                    await trio.to_thread.run_sync(self.processes.kill, before)
                    report.primary_after = await self.wait_primary(client, 10 * failover, other_than=before)
                    report.time_without_primary_seconds = trio.current_time() - fault_time
                    await trio.sleep(hold_seconds if hold_seconds is not None else 1.0)
                    healed_from = trio.current_time()
                    await trio.to_thread.run_sync(self.processes.restart, before)
                elif scenario == "stop-primary":
                    zombie = self.settings.node(before).api
                    await trio.to_thread.run_sync(self.processes.pause, before)
                    report.primary_after = await self.wait_primary(client, 10 * failover, other_than=before)
                    report.time_without_primary_seconds = trio.current_time() - fault_time
                    await trio.sleep(hold_seconds if hold_seconds is not None else failover)
                    resumed_at = time.time()
                    healed_from = trio.current_time()
                    await trio.to_thread.run_sync(self.processes.resume, before)
                    report.zombie_acknowledged_after_lease = await self.probe_zombie(client, zombie, resumed_at)
                elif scenario == "kill-standby":
                    await trio.to_thread.run_sync(self.processes.kill, standby)
                    await trio.sleep(hold_seconds if hold_seconds is not None else 2 * failover)
                    healed_from = trio.current_time()
                    await trio.to_thread.run_sync(self.processes.restart, standby)
                elif scenario == "kill-witness":
                    await trio.to_thread.run_sync(self.processes.kill, "witness")
                    await trio.sleep(hold_seconds if hold_seconds is not None else 3 * failover)
                    healed_from = trio.current_time()
                    await trio.to_thread.run_sync(self.processes.restart, "witness")
                elif scenario == "switchover":
                    response = await client.post(self.url(self.settings.node(before).api, "/v1/cluster/switchover"), json={}, timeout=10)
                    if response.status_code != 200:
                        report.notes.append(f"switchover refused: {response.text[:200]}")
                    report.primary_after = await self.wait_primary(client, 10 * failover, other_than=before)
                    report.time_without_primary_seconds = trio.current_time() - fault_time
                elif scenario == "partition":
                    if not self.proxies:
                        raise DrillError("partition needs the replication link to pass through link proxies (replication_bind); "
                                         "this cluster was not started that way")
                    for proxy in self.proxies.values():
                        proxy.cut()
                    await trio.sleep(hold_seconds if hold_seconds is not None else 3 * failover)
                    healed_from = trio.current_time()
                    for proxy in self.proxies.values():
                        proxy.heal()
                await trio.sleep(1.0)
                stop.set()
            report.outage_seconds = round(router.outage.longest, 3)
            report.time_without_primary_seconds = round(report.time_without_primary_seconds, 3)
            report.writes_acknowledged = len(self.acknowledged)
            report.writes_failed = self.failed
            report.converged = await self.converged(client, 20 * failover)
            report.heal_seconds = round(trio.current_time() - healed_from, 3)
            report.primary_after = report.primary_after or await self.primary(client)
            for node in self.settings.nodes:
                report.writes_missing[node.name] = await self.missing_on(client, node.api)
            await self.clean_up(router, report)
            report.passed = (
                report.converged and not any(report.writes_missing.values()) and report.zombie_acknowledged_after_lease == 0
                and report.primary_after is not None and report.drill_calls_left_open == 0
            )
            return report

    async def probe_zombie(self, client: httpx.AsyncClient, zombie: str, resumed_at: float) -> int:
        """Write straight to the resumed old primary: it must acknowledge nothing (its lease ran out)."""
        acknowledged = 0
        for number in range(20):
            call_id = f"zombie-{self.tag}-{number}"
            body: dict[str, Any] = {"id": call_id, "queue": self.queue, "caller": "01000000000", "channel": "voice",
                                    "attributes": {"drill": "true"}}
            try:
                response = await client.post(self.url(zombie, "/v1/calls"), json=body, timeout=2.0)
            except httpx.HTTPError:
                continue
            if response.status_code == 201:
                # The old primary's lease ran out while it was stopped: acknowledging now
                # would be split brain (docs/design.md, invariant 2). Count it, and check it anyway.
                self.acknowledged.append(call_id)
                acknowledged += 1
        return acknowledged


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drill", help="run a failover drill against a running cluster on this host",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  acd drill --config cluster.toml --scenario kill-primary\n"
               "  acd drill --config cluster.toml --scenario stop-primary --load 50 --json",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file (with [cluster] drill_queue)")
    parser.add_argument("--scenario", required=True, choices=SCENARIOS, help="the fault to inject")
    parser.add_argument("--load", type=positive(float), default=20.0, metavar="RATE",
                        help="drill calls per second, > 0 (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", default="drills", metavar="DIR", help="folder for the markdown drill record (default: %(default)s)")
    parser.add_argument("--token", default="", help="admin token when authentication is on (default: $ACD_TOKEN)")
    parser.add_argument("--yes-production", action="store_true", help="allow a drill on a cluster marked production")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config)
    if settings.cluster.production and not args.yes_production:
        print(f"drill: {args.config}: cluster {settings.cluster.name!r} is marked production (cluster.production = true); "
              "pass --yes-production to drill it anyway", file=sys.stderr)
        return 2
    if len(settings.nodes) != 2:
        print(f"drill: {args.config}: a drill needs a two-node cluster", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        processes = HostProcesses(settings, out / "logs")
        report = trio.run(Drill(settings, processes, load_rate=args.load, token=args.token).run, args.scenario)
    except BaseException as error:  # noqa: BLE001 - a DrillError, however deep in a nursery, is one line
        known = find_exception(error, (DrillError, identity.IdentityError, httpx.HTTPError))
        if known is None:
            raise
        message = identity.reason(known, "the cluster", settings) if isinstance(known, httpx.HTTPError) else str(known)
        print(f"drill: {message}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    record = out / f"drill-{args.scenario}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    record.write_text(report.markdown())
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(report.markdown())
        print(f"drill record: {record}")
    return 0 if report.passed else 1
