"""`acd demo`: a local cluster, a compressed busy morning, a primary killed part-way, a summary.

What it does, in order:
1. copies the sample cluster config into a fresh folder (free loopback ports, data and logs
   inside it, calendars open so the demo works at any hour) and starts the witness and both
   nodes as real processes;
2. logs the agents in, then replays a busy morning of the sample scenario (the simulator's
   workload generator: topics, channels, vulnerable callers, patience, call-back requests,
   transfers, abusive calls) compressed `--speed` times, through the HTTP API, with agents
   that follow the event stream, answer, talk, hang up and wrap up;
3. kills the primary with SIGKILL at `--kill-at` seconds, measures how long writes were
   refused, restarts the old primary and waits until it has rejoined as standby;
4. checks that every call the API acknowledged is on both nodes in a terminal state, and
   prints a summary with where the data, logs and report are.

Everything it writes (the config copy, the nodes' data, logs, the report) goes under its run
folder (`--out`, by default `demo-run/<time>`). It prints each node's API and wallboard
address when the cluster is up; with `--keep` the cluster stays up after the summary, until
Ctrl-C, so you can look around (the wallboard, `acd status --config <run folder>/cluster.toml`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from acd.argtypes import non_negative, positive
from acd.tools.client import Router
from acd.tools.launcher import LocalCluster, config_problem, prepare_config

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "abandoned", "transferred", "closed"}


@dataclass
class Tally:
    created: dict[str, str] = field(default_factory=dict)   # id -> state at creation
    answered_ids: set[str] = field(default_factory=set)   # calls and call-backs (`<id>:cbN`) answered
    abandoned: int = 0
    callbacks: int = 0           # call-backs requested by waiting callers
    offers_again: int = 0        # offers of a call answered already, skipped
    wrapped: int = 0
    offers: int = 0
    events: int = 0
    last_lsn: int = 0
    stream_reconnects: int = 0

    @property
    def answered(self) -> int:
        """Calls the API created, answered by an agent."""
        return len(self.answered_ids) - self.callbacks_answered

    @property
    def callbacks_answered(self) -> int:
        return sum(1 for call_id in self.answered_ids if _is_callback(call_id))


def _is_callback(call_id: str) -> bool:
    """A call-back the ACD made of a call (`<id>:cbN`)."""
    return ":cb" in call_id


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.workdir = Path(args.out) if args.out else REPO / "demo-run" / stamp
        self.tally = Tally()
        self.rng = random.Random(args.seed)
        self.log_lines: list[str] = []
        self.kill_time: float | None = None
        self.killed: str | None = None
        self.failover_seconds: float | None = None
        self.rejoin_seconds: float | None = None
        self.views: dict[str, dict[str, Any] | None] = {}
        self.stats: dict[str, Any] = {}
        self.queues: list[dict[str, Any]] = []
        self.agents_by_state: dict[str, int] = {}
        self.phase = "starting"
        self.offers: dict[str, trio.MemorySendChannel[str]] = {}

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log_lines.append(line)
        if not sys.stdout.isatty():
            print(line, flush=True)

    # ------------------------------------------------------------------ workload

    def plan(self) -> tuple[list[Any], float, str]:
        """The calls of the busy morning (10:00-11:30 local) from the sample scenario."""
        from sim.workload import CallFactory, load_scenario

        scenario = load_scenario(self.args.scenario)
        day = dt.date(2026, 11, 23)  # a Monday: the weekday profile
        calls = CallFactory(scenario, random.Random(self.args.seed)).day(day)
        start = scenario.day_start(day) + 10 * 3600  # 10:00 local, the morning peak
        morning = [spec for spec in calls if 0 <= spec.arrival - start < self.args.window * 60]
        morning = morning[: self.args.calls] if self.args.calls else morning
        return morning, start, scenario.center.name

    async def pbx(self, router: Router, calls: list[Any], start: float, t0: float) -> None:
        speed = self.args.speed
        async with trio.open_nursery() as nursery:
            for spec in calls:
                due = t0 + (spec.arrival - start) / speed
                await trio.sleep_until(due)
                nursery.start_soon(self.caller, router, spec)
            self.say(f"all {len(calls)} callers have arrived")

    async def caller(self, router: Router, spec: Any) -> None:
        body = {"id": spec.id, "queue": spec.queue, "caller": spec.caller, "channel": spec.channel}
        if spec.vulnerable:
            body["attributes"] = {"vulnerable": True}
        response = await router.request("POST", "/v1/calls", body)
        if response.status_code != 201:
            self.say(f"call {spec.id} refused: {response.status_code} {response.text[:120]}")
            return
        state = response.json()["state"]
        self.tally.created[spec.id] = state
        if state in TERMINAL or state == "scheduled":
            return
        speed = self.args.speed
        patience = min(spec.patience, spec.callback_after) / speed
        if math.isinf(patience):
            return
        await trio.sleep(patience)
        current = await router.request("GET", f"/v1/calls/{spec.id}")
        if current.status_code == 200 and current.json()["state"] in ("waiting", "offered"):
            if spec.callback_after < spec.patience:
                if (await router.request("POST", f"/v1/calls/{spec.id}/callback", {})).status_code == 200:
                    self.tally.callbacks += 1
            elif (await router.request("POST", f"/v1/calls/{spec.id}/abandon", {})).status_code == 200:
                self.tally.abandoned += 1

    async def agent(self, router: Router, name: str, receive: trio.MemoryReceiveChannel[str], specs: dict[str, Any]) -> None:
        await router.request("POST", f"/v1/agents/{name}/login", {})
        await router.request("POST", f"/v1/agents/{name}/ready", {})
        speed = self.args.speed
        async for call_id in receive:
            spec = specs.get(call_id.split(":cb")[0])
            await trio.sleep(self.rng.uniform(0.1, 0.4))  # the phone rings
            if call_id in self.tally.answered_ids:
                self.tally.offers_again += 1
                # Answered already: a caller who asks for a call-back while ringing at this desk
                # is offered to it again at once, and both offers sit in the desk's queue.
                continue
            answered = await router.request("POST", f"/v1/calls/{call_id}/answer", {"agent": name})
            if answered.status_code != 200:
                continue
            self.tally.answered_ids.add(call_id)
            talk = (spec.talk if spec else 180.0) / speed
            await trio.sleep(talk)
            await router.request("POST", f"/v1/calls/{call_id}/hangup", {})
            await trio.sleep((spec.wrapup if spec else 20.0) / speed)
            disposition = spec.disposition if spec and spec.disposition != "transferred" else "resolved"
            body: dict[str, Any] = {"agent": name, "disposition": disposition, "abusive": bool(spec and spec.abusive)}
            if disposition == "callback":
                body["callback_at"] = time.time() + 30
            wrapped = await router.request("POST", f"/v1/calls/{call_id}/wrapup", body)
            if wrapped.status_code == 200:
                self.tally.wrapped += 1
            if spec and spec.survey:
                await router.request("POST", f"/v1/calls/{call_id}/survey", {"score": spec.survey})

    async def events(self, router: Router) -> None:
        """Follow /v1/events; resume with Last-Event-ID on whichever node answers after a failover."""
        while True:
            headers = {"Last-Event-ID": str(self.tally.last_lsn)} if self.tally.last_lsn else {}
            try:
                async with router.client.stream("GET", f"http://{router.current}/v1/events", headers=headers, timeout=httpx.Timeout(5.0, read=30.0)) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPError(f"status {response.status_code}")
                    event_type = ""
                    async for line in response.aiter_lines():
                        if line.startswith("id:"):
                            self.tally.last_lsn = int(line[3:].strip() or 0)
                        elif line.startswith("event:"):
                            event_type = line[6:].strip()
                        elif line.startswith("data:") and event_type == "call.offered":
                            data = json.loads(line[5:])
                            self.tally.offers += 1
                            send = self.offers.get(data["agent"])
                            if send is not None:
                                try:
                                    send.send_nowait(data["call"])
                                except (trio.ClosedResourceError, trio.WouldBlock):
                                    pass  # the morning is over, or the desk is far behind: the offer rings out
                        elif line.startswith("data:"):
                            self.tally.events += 1
            except (httpx.HTTPError, trio.BrokenResourceError, ValueError):
                pass
            self.tally.stream_reconnects += 1
            router.current = router.addresses[(router.addresses.index(router.current) + 1) % len(router.addresses)]
            await trio.sleep(0.1)

    # ------------------------------------------------------------------ faults and view

    async def chaos(self, cluster: LocalCluster, router: Router, t0: float) -> None:
        if self.args.no_kill:
            return
        await trio.sleep_until(t0 + self.args.kill_at)
        primary = await trio.to_thread.run_sync(cluster.primary)
        if primary is None:
            self.say("no single writable primary at kill time; skipping the kill")
            return
        self.phase = f"killing primary {primary}"
        self.say(f"SIGKILL to the primary, node {primary}")
        self.killed = primary
        self.kill_time = time.monotonic()
        await trio.to_thread.run_sync(cluster.kill, primary)
        survivor = cluster.standby_of(primary)
        new = await trio.to_thread.run_sync(lambda: cluster.wait_primary(15.0, other_than=primary))
        # The client-side measure: from the kill to the first acknowledged write on the new primary.
        probe = {"id": f"probe-{int(time.time())}", "queue": "transport", "caller": "01000000000", "channel": "voice"}
        await router.request("POST", "/v1/calls", probe)
        await router.request("POST", f"/v1/calls/{probe['id']}/abandon", {})
        self.failover_seconds = time.monotonic() - self.kill_time
        self.phase = f"node {new} is primary"
        self.say(f"node {survivor} took over: first acknowledged write {self.failover_seconds:.2f} s after the kill")
        await trio.sleep(self.args.rejoin_after)
        self.say(f"restarting node {primary}; it rejoins as standby")
        rejoin_started = time.monotonic()
        await trio.to_thread.run_sync(cluster.start_node, primary)

        def caught_up() -> bool:
            mine, theirs = cluster.view(primary), cluster.view(new)
            return bool(mine and theirs and mine.get("role") == "standby" and mine.get("lsn") == theirs.get("lsn"))

        while not await trio.to_thread.run_sync(caught_up):
            await trio.sleep(0.2)
        self.rejoin_seconds = time.monotonic() - rejoin_started
        self.phase = f"node {primary} rejoined as standby"
        self.say(f"node {primary} rejoined and caught up in {self.rejoin_seconds:.1f} s")

    async def poll(self, cluster: LocalCluster, router: Router) -> None:
        while True:
            for node in cluster.settings.nodes:
                try:
                    response = await router.client.get(f"http://{node.api}/v1/cluster", timeout=0.5)
                    self.views[node.name] = response.json() if response.status_code == 200 else None
                except httpx.HTTPError:
                    self.views[node.name] = None
            try:
                stats = await router.client.get(f"http://{router.current}/v1/stats", timeout=0.5)
                queues = await router.client.get(f"http://{router.current}/v1/queues", timeout=0.5)
                agents = await router.client.get(f"http://{router.current}/v1/agents", timeout=0.5)
                if stats.status_code == 200:
                    self.stats = stats.json()
                if queues.status_code == 200:
                    body = queues.json()
                    self.queues = body.get("queues", body) if isinstance(body, dict) else body
                if agents.status_code == 200:
                    body = agents.json()
                    listing = body.get("agents", body) if isinstance(body, dict) else body
                    counts: dict[str, int] = {}
                    for agent in listing:
                        counts[agent["state"]] = counts.get(agent["state"], 0) + 1
                    self.agents_by_state = counts
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            await trio.sleep(0.5)

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        nodes = Table(title="cluster", expand=True)
        for column in ("node", "role", "epoch", "lsn", "lag", "peer connected", "lease s"):
            nodes.add_column(column)
        for name, view in sorted(self.views.items()):
            if view is None:
                nodes.add_row(name, "[red]down[/red]", "-", "-", "-", "-", "-")
            else:
                role = view.get("role", "?")
                style = "bold green" if role == "primary" else "cyan"
                nodes.add_row(name, f"[{style}]{role}[/{style}]", str(view.get("epoch")), str(view.get("lsn")),
                              str(view.get("lag_records", view.get("lag", ""))), str(view.get("peer_connected", "")),
                              str(view.get("lease_remaining", "")))
        queues = Table(title="queues", expand=True)
        for column in ("queue", "waiting", "longest wait s", "offered", "answered", "abandoned", "service level"):
            queues.add_column(column)
        for queue in self.queues[:12]:
            today = queue.get("today") or queue.get("kpis") or {}
            level = today.get("service_level_offered")
            queues.add_row(
                str(queue.get("id") or queue.get("name")), str(queue.get("waiting", "")),
                f"{queue.get('longest_wait', queue.get('longest_wait_seconds', 0)) or 0:.0f}",
                str(today.get("offered", "")), str(today.get("answered", "")), str(today.get("abandoned", "")),
                f"{level:.0%}" if isinstance(level, int | float) else "-",
            )
        stats = self.stats if isinstance(self.stats, dict) else {}
        # /v1/stats: the center's KPIs under "center" (docs/kpis.md; the offered basis, as the wallboard).
        level = (stats.get("center") or {}).get("service_level_offered")
        center = Table.grid(padding=(0, 3))
        center.add_row(
            f"phase: [bold]{self.phase}[/bold]",
            f"created {len(self.tally.created)}", f"answered {self.tally.answered}",
            f"abandoned {self.tally.abandoned}", f"call-backs {self.tally.callbacks} asked, {self.tally.callbacks_answered} answered",
            f"service level {level:.0%}" if isinstance(level, int | float) else "service level -",
            "agents " + ", ".join(f"{state} {count}" for state, count in sorted(self.agents_by_state.items())),
        )
        return Group(center, nodes, queues, "\n".join(self.log_lines[-6:]))

    async def live(self) -> None:
        if not sys.stdout.isatty():
            while True:
                await trio.sleep(5)
                print(f"  {self.phase}: created {len(self.tally.created)}, answered {self.tally.answered}, "
                      f"abandoned {self.tally.abandoned}, roles " + ", ".join(
                          f"{name}={(view or {}).get('role', 'down')}" for name, view in sorted(self.views.items())), flush=True)
        from rich.live import Live

        with Live(self.render(), refresh_per_second=4, screen=False) as live:
            while True:
                await trio.sleep(0.25)
                live.update(self.render())

    # ------------------------------------------------------------------ the run

    async def run(self) -> int:
        args = self.args
        config = prepare_config(REPO / args.config, self.workdir, always_open=True)  # an absolute --config stays as it is
        cluster = LocalCluster(config, self.workdir)
        print(f"demo: a two-node cluster with a witness in {self.workdir}", flush=True)
        try:
            first = await trio.to_thread.run_sync(cluster.start)
            self.say(f"cluster up: node {first} is primary, {cluster.standby_of(first)} is standby")
            print(self.addresses(cluster), flush=True)
            calls, start, center = self.plan()
            specs = {spec.id: spec for spec in calls}
            self.say(f"replaying {len(calls)} calls of a busy {center} morning, {args.speed:.0f}x faster than real time")
            t0 = trio.current_time()
            started = time.monotonic()
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:
                router = Router([node.api for node in cluster.settings.nodes], client, started)
                router.current = cluster.settings.node(first).api
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.poll, cluster, router)
                    nursery.start_soon(self.live)
                    nursery.start_soon(self.events, router)
                    async with trio.open_nursery() as work:
                        for agent in cluster.settings.center.agents:
                            send, receive = trio.open_memory_channel[str](100)
                            self.offers[agent.name] = send
                            work.start_soon(self.agent, router, agent.name, receive, specs)
                        work.start_soon(self.chaos, cluster, router, t0)
                        self.phase = "busy morning"
                        await self.pbx(router, calls, start, t0)
                        self.phase = "draining the queues"
                        await self.drain(router)
                        for send in self.offers.values():
                            send.close()
                        work.cancel_scope.cancel()
                    result = await self.verify(cluster, router)
                    nursery.cancel_scope.cancel()
            code = self.report(cluster, result)
            if args.keep:
                print(f"\nthe cluster keeps running (--keep); Ctrl-C stops it.\n{self.addresses(cluster)}\n"
                      f"  acd status --config {config}\n", flush=True)
                try:
                    await trio.sleep_forever()
                except KeyboardInterrupt:
                    print("demo: stopping the cluster", flush=True)
            return code
        finally:
            await trio.to_thread.run_sync(cluster.close)

    @staticmethod
    def addresses(cluster: LocalCluster) -> str:
        """Where a newcomer can look: each node's API and wallboard (any node serves both)."""
        lines = []
        for node in cluster.settings.nodes:
            base = cluster.api(node.name)
            lines.append(f"  node {node.name}: API {base}/v1/queues   wallboard {base}/wallboard   metrics {base}/metrics")
        return "\n".join(lines)

    async def drain(self, router: Router) -> None:
        deadline = trio.current_time() + self.args.drain
        while trio.current_time() < deadline:
            response = await router.request("GET", "/v1/queues")
            body = response.json() if response.status_code == 200 else {}
            queues = body.get("queues", body) if isinstance(body, dict) else body
            busy = sum(queue.get("waiting", 0) for queue in queues) if isinstance(queues, list) else 1
            if busy == 0 and self.agents_by_state.get("busy", 0) == 0 and self.agents_by_state.get("wrapup", 0) == 0:
                return
            await trio.sleep(0.5)
        # Callers still waiting at the end of the morning hang up: nothing is left stranded.
        for call_id in list(self.tally.created):
            current = await router.request("GET", f"/v1/calls/{call_id}")
            if current.status_code == 200 and current.json()["state"] in ("waiting", "offered", "scheduled"):
                if (await router.request("POST", f"/v1/calls/{call_id}/abandon", {})).status_code == 200:
                    self.tally.abandoned += 1

    async def verify(self, cluster: LocalCluster, router: Router) -> dict[str, Any]:
        """Every acknowledged call is on every running node, each in one terminal state."""
        self.phase = "checking every acknowledged call on both nodes"
        await trio.sleep(0.5)
        result: dict[str, Any] = {}
        for node in cluster.settings.nodes:
            if not cluster.alive(node.name):
                continue
            missing, states = 0, dict[str, int]()
            for call_id in self.tally.created:
                try:
                    response = await router.client.get(f"http://{node.api}/v1/calls/{call_id}", timeout=2.0)
                except httpx.HTTPError:
                    missing += 1
                    continue
                if response.status_code != 200:
                    missing += 1
                    continue
                state = response.json()["state"]
                states[state] = states.get(state, 0) + 1
            result[node.name] = {"missing": missing, "states": states,
                                 "not_terminal": sum(count for state, count in states.items() if state not in TERMINAL)}
        return result

    def report(self, cluster: LocalCluster, result: dict[str, Any]) -> int:
        lost = max((entry["missing"] for entry in result.values()), default=0)
        stranded = max((entry["not_terminal"] for entry in result.values()), default=0)
        stats = self.stats if isinstance(self.stats, dict) else {}
        center_kpis = stats.get("center") or {}
        report = {
            "workdir": str(self.workdir), "calls_acknowledged": len(self.tally.created), "answered": self.tally.answered,
            "abandoned": self.tally.abandoned, "callbacks": self.tally.callbacks,
            "callbacks_answered": self.tally.callbacks_answered, "offers_again": self.tally.offers_again, "killed": self.killed,
            "failover_seconds": self.failover_seconds, "rejoin_seconds": self.rejoin_seconds,
            "lost_calls": lost, "stranded_calls": stranded, "per_node": result, "stats": stats,
            "event_stream_reconnects": self.tally.stream_reconnects,
        }
        (self.workdir / "report.json").write_text(json.dumps(report, indent=2))
        lines = [
            "# ACD demo report", "",
            f"- calls acknowledged by the API: {len(self.tally.created)}",
            f"- answered by agents: {self.tally.answered}, abandoned: {self.tally.abandoned}, call-backs requested by waiting callers: {self.tally.callbacks}",
            f"- call-back interactions answered (asked by callers or set at wrap-up): {self.tally.callbacks_answered}",
            f"- primary killed: node {self.killed}" if self.killed else "- no fault injected",
            f"- failover (kill to first acknowledged write on the new primary): {self.failover_seconds:.2f} s" if self.failover_seconds else "",
            f"- old primary rejoined and caught up in: {self.rejoin_seconds:.1f} s" if self.rejoin_seconds else "",
            f"- lost calls: {lost}; calls not in a terminal state: {stranded}",
            f"- center service level (offered basis, docs/kpis.md): {_percent(center_kpis.get('service_level_offered'))}; "
            f"ASA {center_kpis.get('asa_seconds')} s; abandon rate {_percent(center_kpis.get('abandon_rate'))}; "
            f"call-backs reached {center_kpis.get('callbacks_reached', 0)} of {center_kpis.get('callbacks_requested', 0)} requested",
            "", "## Log", "", *[f"    {line}" for line in self.log_lines],
        ]
        (self.workdir / "report.md").write_text("\n".join(line for line in lines if line is not None) + "\n")
        ok = lost == 0 and stranded == 0
        print()
        print("=" * 72)
        print(f" ACD demo: {'PASS' if ok else 'FAIL'}")
        print(f"   calls acknowledged      {len(self.tally.created)}  (answered {self.tally.answered}, abandoned {self.tally.abandoned}, "
              f"call-back asked {self.tally.callbacks})")
        print(f"   call-backs answered     {self.tally.callbacks_answered}")
        if self.failover_seconds is not None:
            print(f"   failover                node {self.killed} killed; first acknowledged write {self.failover_seconds:.2f} s later")
        if self.rejoin_seconds is not None:
            print(f"   rejoin                  node {self.killed} back as standby, caught up in {self.rejoin_seconds:.1f} s")
        print(f"   lost calls              {lost}")
        print(f"   calls left unfinished   {stranded}")
        print(f"   data                    {self.workdir / 'data'}")
        print(f"   logs                    {self.workdir / 'logs'}")
        print(f"   report                  {self.workdir / 'report.md'}")
        print("=" * 72)
        return 0 if ok else 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="start a local cluster, drive a busy morning, kill the primary, show it working",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  acd demo\n  acd demo --speed 60 --kill-at 20\n  acd demo --no-kill --calls 100\n  acd demo --out /tmp/acd-demo",
    )
    parser.add_argument("--config", default="examples/busan-120.toml", help="cluster config to copy (default: %(default)s)")
    parser.add_argument("--scenario", default="busan-weekday", help="simulator scenario for the workload (default: %(default)s)")
    parser.add_argument("--window", type=positive(), default=90, help="minutes of the morning to replay, from 10:00 (default: %(default)s)")
    parser.add_argument("--calls", type=non_negative(int), default=0, help="at most this many calls (default: all in the window)")
    parser.add_argument("--speed", type=positive(), default=90, help="compression factor of time (default: %(default)s)")
    parser.add_argument("--kill-at", type=non_negative(), default=25, help="seconds into the run to kill the primary (default: %(default)s)")
    parser.add_argument("--rejoin-after", type=non_negative(), default=8, help="seconds after the kill to restart the old primary (default: %(default)s)")
    parser.add_argument("--drain", type=non_negative(), default=25, help="seconds to let agents finish after the last arrival (default: %(default)s)")
    parser.add_argument("--no-kill", action="store_true", help="do not kill the primary")
    parser.add_argument("--seed", type=int, default=120, help="workload seed (default: %(default)s)")
    parser.add_argument("--out", default="", metavar="DIR",
                        help="run folder for the config copy, data, logs and report (default: demo-run/<time>)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running after the summary, until Ctrl-C")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    problem = config_problem(REPO / args.config, args.scenario)  # a relative --config is in the repository
    if problem is None and args.out and Path(args.out).resolve().is_relative_to(REPO / "examples"):
        problem = "--out: the run folder holds data and logs; choose one outside examples/"
    if problem is not None:
        print(f"demo: {problem}", file=sys.stderr)
        return 2
    # Ctrl-C (SIGINT) stops the demo and its cluster even when it was started where SIGINT is
    # ignored (a background job of a shell without job control passes that on to its children).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return trio.run(Demo(args).run)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; every process was stopped", file=sys.stderr)
        return 130


def _percent(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "- (no caller with an outcome yet)"
