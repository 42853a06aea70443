"""`--upgrade-at S`: a rolling upgrade of the core version under the day's traffic.

S seconds after the first arrival the runner upgrades the cluster as docs/operations.md
("Rolling upgrade") tells an operator to, while Locust goes on:

1. `acd upgrade status`; the probe (below) on the primary and the state hashes of both nodes;
2. the standby is stopped (SIGTERM) and started again with the "new binary": the same code
   with `ACD_ENABLE_NEXT_CORE=1` in its environment, which supports the test-only core version
   2 (acd/core/versions.py); the runner waits until it is back in sync with the primary;
3. `acd switchover`: the upgraded node becomes primary, still applying version 1's rules;
4. the old primary, now standby, is upgraded the same way, and the runner waits for sync;
5. `acd upgrade finalize` raises the cluster's core version to 2.

After every step the runner compares the state hashes of both nodes at the same LSN
(`GET /v1/admin/state` on both at once, again until both answer the same LSN) and runs the
probe on the primary. The probe tells which routing rule is in force without touching the
day's queues: a queue of its own, `upgrade-probe` (strategy `longest-idle`), and two agents of
its own that Locust does not drive. `probe-2` takes a break while `probe-1` serves a first call,
then comes back: `probe-1` is then the agent idle longest and `probe-2` the one who handled
fewer. Version 1 offers the next call to `probe-1`, version 2 (`fewest-handled`) to `probe-2`.
The checks (`loadtest.checks`) require version 1's answer at every step before finalize and
version 2's after it. The probe's calls are left out of the counts compared with Locust's
records (the runner subtracts the probe queue's figures from the center's).

With the divergence alarm (`cluster.compare_state_every_records`, every 50 records here) the
runner does what the runbook asks before it goes on after each node's upgrade: it waits until
the primary has compared states with the upgraded standby, and stops the upgrade if the alarm
fired. It also reads the primary's comparison counters (`state_comparisons`,
`state_divergences` in `/v1/cluster`) at every step and before each node is stopped, since a
restarted process counts from zero.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from acd.tools.launcher import LocalCluster, wait_for
from acd.versions import NEXT_CORE_ENV

from . import plan as plans

if TYPE_CHECKING:
    from .rundata import Run

PROBE_QUEUE = "upgrade-probe"
IDLE_LONGEST, FEWEST_HANDLED = "probe-1", "probe-2"
RULE_OF = {IDLE_LONGEST: "longest-idle", FEWEST_HANDLED: "fewest-handled"}
# The rule each core version applies to a `longest-idle` queue (acd/core/versions.py).
EXPECTED_RULE = {1: "longest-idle", 2: "fewest-handled"}
# The "new binary": the environment a node is restarted with.
NEW_BINARY = {NEXT_CORE_ENV: "1"}
# States compared under the alarm every this many records during an upgrade run (a comparison
# every few seconds of the day's traffic: the upgrade waits for one after each node's upgrade).
COMPARE_EVERY_RECORDS = 50


def probe_center(center_text: str) -> str:
    """The probe's queue and agents, to append to the center `center_text`. The queue's
    service-level threshold is the center's, so that its figures are exactly what the probe's
    calls add to the center's (the runner subtracts them)."""
    found = re.search(r"^service_level_threshold = (\S+)", center_text, flags=re.MULTILINE)
    threshold = found[1] if found else "20.0"
    return PROBE_CENTER.replace("service_level_threshold = 20.0", f"service_level_threshold = {threshold}")


PROBE_CENTER = f"""
# The load test's rolling-upgrade probe (loadtest/upgrade.py): a queue and two agents of its
# own, which Locust does not drive; who is offered its next call tells the core version's rule.
[[queues]]
name = "{PROBE_QUEUE}"
topic = "Rolling-upgrade probe of the load test"
skills = ["{PROBE_QUEUE}"]
channels = ["voice"]
strategy = "longest-idle"
service_level_threshold = 20.0

[[agents]]
name = "{IDLE_LONGEST}"
skills = {{ {PROBE_QUEUE} = 5 }}
capacity = {{ voice = 1 }}

[[agents]]
name = "{FEWEST_HANDLED}"
skills = {{ {PROBE_QUEUE} = 5 }}
capacity = {{ voice = 1 }}
"""


class UpgradeFailed(Exception):
    pass


def acd_cli(config: Path, *arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`acd ARGUMENTS --config CONFIG`, as the operator runs it (this process's binary)."""
    return subprocess.run(
        [sys.executable, "-m", "acd", *arguments, "--config", str(config)],
        capture_output=True, text=True, timeout=timeout, cwd=plans.REPO,
    )


class Probe:
    """The probe queue's two agents, driven over HTTP on the primary."""

    def __init__(self, cluster: LocalCluster, client: httpx.Client) -> None:
        self.cluster = cluster
        self.client = client
        self.calls = 0
        self.logged_in = False

    def post(self, node: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post(self.cluster.api(node) + path, json=body or {})
        if response.status_code not in (200, 201):
            raise UpgradeFailed(f"probe: POST {path} on node {node}: {response.status_code} {response.text[:200]}")
        answer: dict[str, Any] = response.json()
        return answer

    def get(self, node: str, path: str) -> Any:
        response = self.client.get(self.cluster.api(node) + path)
        if response.status_code != 200:
            raise UpgradeFailed(f"probe: GET {path} on node {node}: {response.status_code} {response.text[:200]}")
        return response.json()

    def arrive(self, node: str, kind: str) -> str:
        self.calls += 1
        call = f"{PROBE_QUEUE}-{kind}-{self.calls}"
        self.post(node, "/v1/calls", {"id": call, "queue": PROBE_QUEUE, "caller": f"0105999{self.calls:04d}"})
        return call

    def offered_to(self, node: str, call: str) -> str:
        view = self.get(node, f"/v1/calls/{call}")
        if view.get("state") != "offered":
            raise UpgradeFailed(f"probe: call {call} is {view.get('state')}, not offered")
        return str(view["agent"])

    def serve(self, node: str, call: str, agent: str) -> None:
        self.post(node, f"/v1/calls/{call}/answer", {"agent": agent})
        self.post(node, f"/v1/calls/{call}/hangup")
        self.post(node, f"/v1/calls/{call}/wrapup", {"agent": agent, "disposition": "resolved"})

    def rule(self, node: str) -> str:
        """Which rule the primary `node` applies to the probe queue now."""
        if not self.logged_in:
            for agent in (IDLE_LONGEST, FEWEST_HANDLED):
                self.post(node, f"/v1/agents/{agent}/login")
                self.post(node, f"/v1/agents/{agent}/ready")
            self.logged_in = True
        self.post(node, f"/v1/agents/{FEWEST_HANDLED}/not-ready", {"reason": "break"})
        warm = self.arrive(node, "warm")
        first = self.offered_to(node, warm)
        if first != IDLE_LONGEST:
            raise UpgradeFailed(f"probe: the first call went to {first} while {FEWEST_HANDLED} was on a break")
        self.serve(node, warm, first)
        self.post(node, f"/v1/agents/{FEWEST_HANDLED}/ready")
        probe = self.arrive(node, "probe")
        agent = self.offered_to(node, probe)
        self.serve(node, probe, agent)
        return RULE_OF.get(agent, f"offered to {agent}")

    def log_out(self, node: str) -> None:
        if self.logged_in:
            for agent in (IDLE_LONGEST, FEWEST_HANDLED):
                self.post(node, f"/v1/agents/{agent}/logout")


class RollingUpgrade:
    """The upgrade's steps, run in a thread of the runner; everything lands in `run.upgrade`."""

    def __init__(self, run: Run, cluster: LocalCluster, config: Path, say: Any) -> None:
        self.run = run
        self.record = run.upgrade
        self.cluster = cluster
        self.config = config
        self.say = say
        self.client = httpx.Client(timeout=10.0)
        self.probe = Probe(cluster, self.client)
        self.t0 = 0.0
        self.new_binary = dict(NEW_BINARY)

    # ------------------------------------------------------------------ readings

    def digest(self, node: str) -> dict[str, Any] | None:
        try:
            response = self.client.get(self.cluster.api(node) + "/v1/admin/state", timeout=5.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def compare_hashes(self, step: str, timeout: float = 60.0) -> None:
        """Both nodes' state hashes at the same LSN: both asked at once, again until they answer
        the same LSN (traffic goes on), then compared."""
        names = list(self.run.cluster_nodes)
        deadline = time.time() + timeout
        tries = 0
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            while time.time() < deadline:
                tries += 1
                answers = list(pool.map(self.digest, names))
                if all(answer is not None for answer in answers) and len({answer["lsn"] for answer in answers if answer}) == 1:
                    hashes = {name: answer["state_hash"] for name, answer in zip(names, answers, strict=True) if answer}
                    equal = len(set(hashes.values())) == 1
                    lsn = answers[0]["lsn"] if answers[0] else None
                    self.record.hashes.append({"step": step, "t": time.time(), "lsn": lsn, "hashes": hashes, "tries": tries, "equal": equal})
                    self.say(f"upgrade: {step}: state hashes at LSN {lsn} {'equal' if equal else 'DIFFER'} ({tries} tries)")
                    return
                time.sleep(0.01)
        self.record.hashes.append({"step": step, "t": time.time(), "lsn": None, "hashes": {}, "tries": tries, "equal": False})
        self.say(f"upgrade: {step}: the nodes never answered the same LSN in {timeout:g} s ({tries} tries)")

    def read_alarm(self, node: str, when: str) -> None:
        """The primary's divergence-alarm counters, if this build has the alarm."""
        view = self.cluster.view(node)
        if view is None or "state_comparisons" not in view:
            return
        process = self.cluster.processes.get(node)
        self.record.alarm.append({
            "when": when, "t": time.time(), "node": node, "pid": process.pid if process else None,
            "role": view.get("role"), "comparisons": view.get("state_comparisons", 0),
            "divergences": view.get("state_divergences", 0), "diverged_at_lsn": view.get("standby_diverged_at_lsn"),
        })

    def status(self) -> dict[str, Any]:
        completed = acd_cli(self.config, "upgrade", "status", "--json")
        try:
            answer: dict[str, Any] = json.loads(completed.stdout)
        except ValueError as error:
            raise UpgradeFailed(f"acd upgrade status: exit {completed.returncode}: {completed.stderr[-300:]}") from error
        return answer

    def observe(self, step: str) -> None:
        """After a step: state hashes, the rule the primary applies, the alarm's counters."""
        self.compare_hashes(step)
        primary = self.cluster.wait_primary(30)
        view = self.cluster.view(primary) or {}
        active = view.get("active_core_version")
        rule = self.probe.rule(primary)
        self.record.probes.append({"step": step, "t": time.time(), "node": primary, "active_core_version": active, "rule": rule})
        self.say(f"upgrade: {step}: primary {primary} at core version {active} routes by {rule}")
        self.read_alarm(primary, step)

    # ------------------------------------------------------------------ steps

    def step(self, name: str, started: float, detail: str) -> None:
        ended = time.time()
        self.record.steps.append({"step": name, "start": started, "end": ended, "seconds": round(ended - started, 3), "detail": detail})
        self.say(f"upgrade: {name} in {ended - started:.2f} s (+{ended - self.t0:.1f} s): {detail}")

    def in_sync(self, primary: str, standby: str) -> None:
        def synced() -> bool:
            mine, theirs = self.cluster.view(primary), self.cluster.view(standby)
            return bool(
                mine and theirs and mine.get("role") == "primary" and theirs.get("role") == "standby"
                and mine.get("peer_connected") and not mine.get("standby_behind")
            )

        wait_for(synced, 120, interval=0.05, what=f"node {standby} to be back in sync with node {primary}")

    def alarm_counters(self, primary: str) -> tuple[int, int] | None:
        """The primary's (comparisons, divergences), or None without the alarm."""
        view = self.cluster.view(primary) or {}
        if "state_comparisons" not in view:
            return None
        return int(view["state_comparisons"]), int(view["state_divergences"])

    def compared(self, node: str, primary: str) -> None:
        """docs/operations.md: before going on, the primary compares states with the upgraded
        standby at least once; a mismatch stops the upgrade where it is."""
        before = self.alarm_counters(primary)
        if before is None:
            return
        started = time.time()

        def next_comparison() -> tuple[int, int] | None:
            now = self.alarm_counters(primary)
            if now is None or now[1] > before[1]:
                raise UpgradeFailed(f"the divergence alarm fired: node {node}'s state differs from node {primary}'s "
                                    f"({(self.cluster.view(primary) or {}).get('standby_diverged_at_lsn')}); upgrade stopped")
            return now if now[0] > before[0] else None

        now = wait_for(next_comparison, 120, interval=0.05, what=f"node {primary} to compare states with node {node}")
        self.step(f"node {node} compared", started, f"node {primary}'s comparisons {before[0]} -> {now[0]}, none differed")

    def upgrade_node(self, node: str, primary: str) -> None:
        """Stop `node` (the standby), start it with the new binary, wait until it is in sync and
        the primary has compared their states."""
        started = time.time()
        self.read_alarm(primary, f"before node {node} stops")
        self.cluster.signal(node, signal.SIGTERM)
        self.cluster.processes[node].wait(timeout=60)
        self.cluster.start_node(node, env=self.new_binary)
        wait_for(lambda: self.cluster.healthy(self.cluster.settings.node(node).api), 60, interval=0.05, what=f"node {node} to answer /healthz")
        view = self.cluster.view(node) or {}
        self.step(f"upgrade node {node}", started, f"restarted with {' '.join(f'{k}={v}' for k, v in self.new_binary.items())}: "
                                                   f"core versions {view.get('core_versions')}")
        started = time.time()
        self.in_sync(primary, node)
        self.step(f"node {node} in sync", started, f"node {primary} ships to it and does not record it behind")
        self.compared(node, primary)

    def __call__(self) -> None:
        record = self.record
        started_file = self.run.out / "started.json"
        try:
            wait_for(started_file.exists, 120, interval=0.1, what="the PBX to start the day")
            self.t0 = json.loads(started_file.read_text())["t0"]
            delay = self.t0 + self.run.options.upgrade_at - time.time()  # type: ignore[operator]
            if delay > 0:
                time.sleep(delay)
            record.started = time.time()
            record.status_before = self.status()
            self.observe("before")
            old = self.cluster.wait_primary(30)
            standby = self.cluster.standby_of(old)
            self.upgrade_node(standby, old)
            self.observe(f"node {standby} upgraded")

            started = time.time()
            self.read_alarm(old, "before the switchover")
            # Asked once: the standby is back in sync, so a refusal is a failure of the upgrade
            # (a retry here once hid a primary that could not reach its restarted standby).
            switched = acd_cli(self.config, "switchover")
            if switched.returncode != 0:
                raise UpgradeFailed(f"acd switchover: exit {switched.returncode}: {(switched.stdout + switched.stderr)[-400:]}")
            new = self.cluster.wait_primary(30, other_than=old)
            self.in_sync(new, old)
            self.step("switchover", started, f"node {new} primary, node {old} its standby")
            self.observe("switched over")

            self.upgrade_node(old, new)
            self.observe(f"node {old} upgraded")

            started = time.time()
            finalized = acd_cli(self.config, "upgrade", "finalize")
            if finalized.returncode != 0:
                raise UpgradeFailed(f"acd upgrade finalize: exit {finalized.returncode}: {(finalized.stdout + finalized.stderr)[-400:]}")
            record.finalize = json.loads(finalized.stdout)
            record.finalized_time = time.time()
            self.step("finalize", started, f"core version {record.finalize.get('previous_core_version')} -> "
                                           f"{record.finalize.get('active_core_version')} at LSN {record.finalize.get('lsn')}")
            self.observe("finalized")
            record.status_after = self.status()
            self.probe.log_out(self.cluster.wait_primary(30))
            record.done = True
        except (UpgradeFailed, TimeoutError, subprocess.TimeoutExpired, httpx.HTTPError, ValueError, KeyError) as error:
            record.note = f"{type(error).__name__}: {error}"
            self.say(f"upgrade: stopped: {record.note}")
        finally:
            record.ended = time.time()
            self.client.close()

    def final_reading(self) -> None:
        """The last reading of the alarm's counters, on the primary at the end of the run."""
        primary = self.cluster.primary()
        if primary is not None:
            self.read_alarm(primary, "end of the run")


def alarm_totals(alarm: list[dict[str, Any]]) -> tuple[int, int]:
    """Comparisons and divergences over the readings: each process counts from zero, so the
    highest reading of each process (node, pid) is summed."""
    highest: dict[tuple[str, Any], tuple[int, int]] = {}
    for reading in alarm:
        key = (reading["node"], reading["pid"])
        compared, diverged = highest.get(key, (0, 0))
        highest[key] = (max(compared, int(reading["comparisons"] or 0)), max(diverged, int(reading["divergences"] or 0)))
    return sum(value[0] for value in highest.values()), sum(value[1] for value in highest.values())
