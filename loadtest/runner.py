"""`python -m loadtest run SHAPE`: a real cluster, Locust headless in a subprocess, checks, report.

Order of a run:
1. write the center (`source.toml`: the sample, compressed for `day`, generated for `stress` and
   `soak`), copy it with `prepare_config` (free loopback ports, data in the run folder,
   calendars always open), write `plan.json`;
2. start the witness and both nodes (`acd.tools.launcher.LocalCluster`), optionally HAProxy in front;
3. start Locust headless as a subprocess (this process never imports Locust) and sample the
   CPU time and memory of every process once a second;
4. with `--failover-at S`, SIGKILL the primary S seconds after the first arrival, wait for the
   standby to take over, and restart the killed node `--rejoin-after` seconds later so that it
   rejoins as standby (then both nodes can be compared at the end); with `--upgrade-at S`, run a
   rolling upgrade of the core version from S seconds after the first arrival instead
   (`loadtest.upgrade`: standby, switchover, old primary, finalize, with state hashes and a
   probe of the routing rule after every step);
5. when Locust has stopped (the PBX user stops it once the day is closed), read back every
   interaction from the ACD and check it against Locust's journal (`loadtest.checks`), then
   write the report (`loadtest.report`) and exit 0 only if every check passed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from acd.tools.launcher import LocalCluster, free_port, haproxy_config, prepare_config, wait_for

from . import checks, records, report
from . import plan as plans
from . import upgrade as upgrades
from .rundata import Failover, Options, Run, cpu_share, machine_busy, pipeline_figures

__all__ = ["Failover", "MetricsScraper", "Options", "Run", "Runner", "Sampler", "cpu_share", "machine_busy", "pipeline_figures", "run"]

REPO = plans.REPO
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile_acd.py"
HAPROXY_CONFIG = REPO / "deploy" / "haproxy.cfg"
TERMINAL = {"completed", "abandoned", "transferred", "closed"}
# stress: how many steps of a run may be run a second time after missing the p99 limit
STEP_REPEATS_MAX = 3


# ---------------------------------------------------------------------------------- process sampling


class Sampler(threading.Thread):
    """Once a second: CPU seconds and resident memory of the witness, the nodes and Locust."""

    def __init__(self, processes: Callable[[], dict[str, Any]], samples: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.samples = samples
        self.stopped = threading.Event()
        self.ticks = os.sysconf("SC_CLK_TCK")

    def read(self, pid: int) -> tuple[float, int] | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / self.ticks
            rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            return cpu, rss
        except (OSError, IndexError, ValueError):
            return None

    @staticmethod
    def machine_idle() -> tuple[float, float]:
        values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return values[3] + values[4], sum(values)

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            sample: dict[str, Any] = {"t": time.time()}
            idle, total = self.machine_idle()
            sample["machine"] = {"idle": idle, "total": total}
            for name, process in self.processes().items():
                if process is None or process.poll() is not None:
                    continue
                reading = self.read(process.pid)
                if reading is not None:
                    sample[name] = {"pid": process.pid, "cpu": reading[0], "rss": reading[1]}
            self.samples.append(sample)


class MetricsScraper(threading.Thread):
    """Every two seconds: the pipeline's own histograms from each node's /metrics.

    Sums and counts of the command latency (submission to reply), the local durable commit
    (fsync) and the records per group commit: per ramp step they say where a write's time
    goes, which the CPU figures alone cannot.
    """

    NAMES = ("acd_command_latency_seconds", "acd_commit_latency_seconds", "acd_commit_batch_records")
    BUCKET = 'acd_command_latency_seconds_bucket{le="'

    def __init__(self, nodes: dict[str, str], scrapes: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.nodes = nodes
        self.scrapes = scrapes
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=1.0) as client:
            while not self.stopped.wait(2.0):
                for name, base in self.nodes.items():
                    try:
                        text = client.get(f"{base}/metrics").text
                    except httpx.HTTPError:
                        continue
                    self.scrapes.append({"node": name, "t": time.time(), **self.parse(text)})

    @classmethod
    def parse(cls, text: str) -> dict[str, float]:
        """The sums and counts of NAMES, and the command latency's buckets as "le:BOUND"."""
        values: dict[str, float] = {}
        for line in text.splitlines():
            for metric in cls.NAMES:
                if line.startswith((f"{metric}_sum ", f"{metric}_count ")):
                    key, _, value = line.partition(" ")
                    values[key] = float(value)
            if line.startswith(cls.BUCKET):
                # acd_command_latency_seconds_bucket{le="0.05"} 123.0 -> "le:0.05"
                bound, _, value = line[len(cls.BUCKET):].partition('"} ')
                values[f"le:{bound}"] = float(value)
        return values


# ---------------------------------------------------------------------------------- the runner


class Runner:
    def __init__(self, options: Options) -> None:
        self.options = options
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = (options.out or REPO / "out" / f"loadtest-{options.shape}-{stamp}").resolve()
        self.run_record: Run | None = None
        self.cluster: LocalCluster | None = None
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.locust: subprocess.Popen[bytes] | None = None

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -------------------------------------------------------------- preparing

    def prepare(self) -> tuple[Path, dict[str, Any]]:
        options = self.options
        if self.out.exists() and any(self.out.iterdir()):
            raise SystemExit(f"loadtest: {self.out} is not empty; choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        text = options.config.read_text(encoding="utf-8")
        if options.shape == "day":
            minutes = options.minutes if options.minutes is not None else 10.0
            day = plans.day_plan(
                scenario_name=options.scenario, minutes=minutes, calls=options.calls, seed=options.seed,
                agents=plans.agent_names(text), drain_seconds=options.drain,
            )
            text = plans.compress_center(text, day.factor)
            if options.upgrade_at is not None:
                text += upgrades.probe_center(text)  # after the plan: Locust does not drive its agents
            plan = day.plan
            model_hours = day.model_seconds / 3600
            self.say(f"day: {len(plan['calls'])} calls of a {model_hours:.1f} h day in {minutes:g} min "
                     f"(a model second lasts {1000 / day.factor:.1f} ms; factor {day.factor:.1f})")
        else:
            text, names = plans.stress_center(text, options.agents, options.threshold)
            if options.shape == "stress":
                minutes = options.minutes if options.minutes is not None else 4.0
                steps = plans.ramp_steps(minutes, options.rates, options.step_seconds)
            else:
                minutes = options.minutes if options.minutes is not None else 60.0
                steps = [[options.rate, minutes * 60.0]]
            plan = plans.rate_plan(
                shape=options.shape, steps=steps, agents=names, topics=plans.voice_topics(text), seed=options.seed,
                talk_seconds=options.talk, threshold_seconds=options.threshold, target_service_level=0.8,
                drain_seconds=options.drain if options.drain is not None else 15.0,
                p99_ms=options.p99_ms, step_repeats_max=STEP_REPEATS_MAX if options.shape == "stress" else 0,
            )
            self.say(f"{options.shape}: {len(names)} agents answering at once, talking {options.talk:g} s; "
                     f"rates {', '.join(f'{rate:g}' for rate, _ in steps)} calls/s, {steps[0][1]:g} s each")
        if options.mode is not None:
            text = re.sub(r'^mode = "[a-z]+"', f'mode = "{options.mode}"', text, count=1, flags=re.MULTILINE)
        source = self.out / "source.toml"
        source.write_text(text, encoding="utf-8")
        config = _prepare_config(source, self.out, upgrade=options.upgrade_at is not None)
        (self.out / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
        return config, plan

    # -------------------------------------------------------------- running

    def run(self) -> int:
        options = self.options
        config, plan = self.prepare()
        run = self.run_record = Run(options=options, out=self.out, plan=plan)
        cluster = self.cluster = LocalCluster(config, self.out)
        run.time_zone = cluster.settings.center.time_zone
        run.cluster_nodes = {node.name: cluster.api(node.name) for node in cluster.settings.nodes}
        sampler: Sampler | None = None
        try:
            primary = cluster.start()
            self.say(f"cluster up in {self.out}: node {primary} is primary")
            bases = list(run.cluster_nodes.values())
            if options.haproxy:
                bases = [self.start_haproxy(run)]
            # A callable, so that a restarted node is sampled under its new process id.
            sampler = Sampler(lambda: {**cluster.processes, "locust": self.locust, "haproxy": self.haproxy}, run.samples)
            sampler.start()
            scraper = MetricsScraper(run.cluster_nodes, run.scrapes)
            scraper.start()
            run.started = time.time()
            self.start_locust(plan, bases)
            if options.pin:
                self.pin(primary)
            failover = None
            if options.failover_at is not None:
                failover = threading.Thread(target=self.fail_over, args=(run,), daemon=True)
                failover.start()
            rolling = None
            if options.upgrade_at is not None:
                rolling = upgrades.RollingUpgrade(run, cluster, config, self.say)
                failover = threading.Thread(target=rolling, daemon=True)
                failover.start()
            repeats = plan.get("step_repeats_max", 0) * max((seconds for _rate, seconds in plan.get("steps", [])), default=0)
            limit = plan["duration"] + repeats + plan["drain"] + 240
            assert self.locust is not None
            try:
                run.locust_exit = self.locust.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                run.errors.append(f"Locust did not stop within {limit:.0f} s; terminated")
                self.locust.terminate()
                run.locust_exit = self.locust.wait(timeout=30)
            run.locust_seconds = time.time() - run.started
            self.say(f"Locust stopped (exit code {run.locust_exit}) after {run.locust_seconds:.0f} s")
            if failover is not None:
                failover.join(timeout=90 if rolling is None else 600)
                if failover.is_alive():
                    run.errors.append("the failover or upgrade thread did not end")
            if rolling is not None:
                rolling.final_reading()
            sampler.stopped.set()
            scraper.stopped.set()
            (self.out / "samples.json").write_text(json.dumps({"processes": run.samples, "metrics": run.scrapes}), encoding="utf-8")
            self.collect(run)
        finally:
            if sampler is not None:
                sampler.stopped.set()
            if self.locust is not None and self.locust.poll() is None:
                self.locust.terminate()
            if self.haproxy is not None and self.haproxy.poll() is None:
                self.haproxy.terminate()
                self.haproxy.wait(timeout=10)
            cluster.close()
        if run.primary_at_end is not None:
            run.verify = self.verify_nodes(config, run)
        results = checks.evaluate(run)
        report.write(run, results)
        print(report.table(run, results), flush=True)
        return 0 if all(result.passed is not False for result in results) else 1

    def pin(self, primary: str) -> None:
        """The primary alone on the first core, everything else on the others (`--pin`).

        On one shared machine the load generator and the standby otherwise take CPU from the
        primary at random moments, and the primary's latency is then partly Locust's; in a
        deployment they are separate machines. Every thread of each process is moved (a worker
        thread started before the call would keep the old affinity otherwise).
        """
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            self.say("pin: one core only; not pinned")
            return
        assert self.cluster is not None
        mine, rest = {cpus[0]}, set(cpus[1:])
        processes = {**self.cluster.processes, "locust": self.locust, "haproxy": self.haproxy}
        for name, process in processes.items():
            if process is None or process.poll() is not None:
                continue
            for task in Path(f"/proc/{process.pid}/task").iterdir():
                try:
                    os.sched_setaffinity(int(task.name), mine if name == primary else rest)
                except OSError:   # a thread that just ended
                    pass
        self.say(f"pinned: primary {primary} on core {cpus[0]}; standby, witness and Locust on {', '.join(map(str, sorted(rest)))}")

    def start_locust(self, plan: dict[str, Any], bases: list[str]) -> None:
        users = len(plan["agents"]) + 2
        arguments = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "-u", str(users), "-r", str(users), "--run-time", f"{int(plan['duration'] + plan['drain'] + 180)}s",
            "--stop-timeout", "5", "--only-summary",
            "--csv", str(self.out / "locust"), "--csv-full-history", "--html", str(self.out / "report.html"),
            "-H", bases[0], "--loglevel", self.options.locust_log_level, "--logfile", str(self.out / "locust.log"),
        ]
        environment = dict(
            os.environ, LOADTEST_PLAN=str(self.out / "plan.json"), LOADTEST_OUT=str(self.out),
            LOADTEST_NODES=",".join(bases), LOADTEST_PROXY="1" if self.options.haproxy else "0", PYTHONUNBUFFERED="1",
        )
        log = open(self.out / "locust.out", "wb")  # noqa: SIM115 - the child keeps it
        self.locust = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO, start_new_session=True)
        log.close()
        self.say(f"Locust started: {users} users ({len(plan['agents'])} agent desks, a PBX, a supervisor) against {', '.join(bases)}")

    def start_haproxy(self, run: Run) -> str:
        """HAProxy with the shipped deploy/haproxy.cfg, its bind and servers moved to this run's."""
        binary = shutil.which("haproxy")
        if binary is None:
            raise SystemExit("loadtest: --haproxy needs the haproxy binary (apt-get install haproxy)")
        shipped = self.options.haproxy_config or HAPROXY_CONFIG
        if not shipped.exists():
            raise SystemExit(f"loadtest: --haproxy needs {shipped}")
        port = free_port()
        servers = {name: address.split("://", 1)[1] for name, address in run.cluster_nodes.items()}
        config = haproxy_config(shipped, port, servers, self.out / "haproxy.cfg")
        log = open(self.out / "logs" / "haproxy.log", "wb")  # noqa: SIM115 - the child keeps it
        self.haproxy = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        address = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(address), 15, what="HAProxy to route to the primary")
        self.say(f"HAProxy on {address} (from {shipped})")
        return address

    def fail_over(self, run: Run) -> None:
        """SIGKILL the primary at --failover-at seconds after t0; restart it later as standby."""
        options = self.options
        failover = run.failover
        cluster = self.cluster
        assert cluster is not None and options.failover_at is not None
        started = self.out / "started.json"
        try:
            wait_for(started.exists, 120, interval=0.1, what="the PBX to start the day")
        except TimeoutError as error:
            failover.note = str(error)
            return
        t0 = json.loads(started.read_text())["t0"]
        delay = t0 + options.failover_at - time.time()
        if delay > 0:
            time.sleep(delay)
        if self.locust is not None and self.locust.poll() is not None:
            failover.note = "Locust had already stopped at the failover time"
            return
        try:
            primary = cluster.wait_primary(10)
        except TimeoutError:
            failover.note = "no single writable primary at the failover time; nothing killed"
            return
        failover.killed = primary
        failover.kill_time = time.time()
        cluster.kill(primary)
        self.say(f"SIGKILL to the primary, node {primary}, {failover.kill_time - t0:.1f} s into the day")
        try:
            failover.new_primary = cluster.wait_primary(30, other_than=primary)
            failover.promoted_time = time.time()
            self.say(f"node {failover.new_primary} answers /readyz {failover.promoted_time - failover.kill_time:.2f} s after the kill")
        except TimeoutError as error:
            failover.note = str(error)
            return
        if options.rejoin_after is None:
            return
        time.sleep(options.rejoin_after)
        failover.rejoin_started = time.time()
        cluster.start_node(primary)
        try:
            wait_for(lambda: (cluster.view(primary) or {}).get("role") == "standby", 60, interval=0.2, what=f"node {primary} to rejoin as standby")
            failover.rejoined_time = time.time()
            self.say(f"node {primary} rejoined as standby {failover.rejoined_time - failover.rejoin_started:.1f} s after its restart")
        except TimeoutError as error:
            failover.note = str(error)

    # -------------------------------------------------------------- reading back

    def verify_nodes(self, config: Path, run: Run) -> dict[str, dict[str, Any]]:
        """`acd verify` on each stopped node: its state equals a replay of its log (invariant 7).

        After a rolling upgrade the nodes' new binary verifies them (the old one refuses a store
        at the new core version)."""
        reports: dict[str, dict[str, Any]] = {}
        environment = dict(os.environ, **upgrades.NEW_BINARY) if run.options.upgrade_at is not None else None
        for name in run.cluster_nodes:
            try:
                completed = subprocess.run(
                    [sys.executable, "-m", "acd", "verify", "--config", str(config), "--node", name, "--json"],
                    capture_output=True, text=True, timeout=300, cwd=REPO, env=environment,
                )
                reports[name] = json.loads(completed.stdout.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError) as error:
                reports[name] = {"node": name, "problems": [f"acd verify did not report: {error!r}"]}
        return reports

    def collect(self, run: Run) -> None:
        cluster = self.cluster
        assert cluster is not None
        run.journal = records.read_journal(self.out)
        run.timeline = records.read_timeline(self.out)
        try:
            primary = cluster.wait_primary(30)
        except TimeoutError:
            run.errors.append("no writable primary after the run: cannot read the interactions back")
            return
        run.primary_at_end = primary
        base = cluster.api(primary)
        ids = sorted(run.journal.interactions)
        self.say(f"reading {len(ids)} interactions back from node {primary}")
        with httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=16)) as client:
            run.states[primary] = _states(client, base, ids)
            standby = next((name for name in run.cluster_nodes if name != primary and cluster.alive(name)), None)
            if standby is not None:
                run.standby_caught_up = _caught_up(cluster, primary, standby)
                if run.standby_caught_up:
                    run.states[standby] = _states(client, cluster.api(standby), ids)
            # Statistics are per local day of the center: a run that crosses midnight adds both days.
            start = (run.journal.t0 or run.started) - 60
            end = time.time()
            run.stats_days = _local_days(start, end, run.time_zone)
            totals: dict[str, Any] = {}
            for day in run.stats_days:
                response = client.get(f"{base}/v1/stats", params={"day": day})
                response.raise_for_status()
                body = response.json()
                center = body["center"]
                # The upgrade probe's calls are the runner's, not Locust's: left out.
                probe = body.get("queues", {}).get(upgrades.PROBE_QUEUE, {}) if run.options.upgrade_at is not None else {}
                for key, value in center.items():
                    if isinstance(value, int):
                        probed = probe.get(key, 0)
                        totals[key] = totals.get(key, 0) + value - (probed if isinstance(probed, int) else 0)
                if probe:
                    totals.setdefault("probe_by_day", {})[day] = probe
                totals.setdefault("by_day", {})[day] = center
            run.stats = totals


def _prepare_config(source: Path, out: Path, upgrade: bool = False) -> Path:
    """`prepare_config`, again when two free ports it drew happen to be the same one.

    `acd.tools.launcher.free_port` closes each probe socket before the next, so the kernel may hand
    out one port twice; `settings.load` then refuses the config ("also used by"). For an
    upgrade run the nodes compare their state hashes often (the divergence alarm).
    """
    from acd.settings import SettingsError

    overrides = {"cluster.compare_state_every_records": str(upgrades.COMPARE_EVERY_RECORDS)} if upgrade else {}
    for attempt in range(5):
        try:
            return prepare_config(source, out, always_open=True, overrides=overrides)
        except SettingsError as error:
            if "also used by" not in str(error) or attempt == 4:
                raise
    raise AssertionError("unreachable")


def _ready(address: str) -> bool:
    try:
        return httpx.get(f"{address}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _states(client: httpx.Client, base: str, ids: list[str]) -> dict[str, str | None]:
    def one(call_id: str) -> tuple[str, str | None]:
        for _attempt in range(5):
            try:
                response = client.get(f"{base}/v1/calls/{call_id}")
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if response.status_code == 404:
                return call_id, None
            if response.status_code == 200:
                return call_id, str(response.json()["state"])
            time.sleep(0.2)
        return call_id, "unreadable"

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, ids))


def _caught_up(cluster: LocalCluster, primary: str, standby: str, timeout: float = 30.0) -> bool:
    def same_lsn() -> bool:
        mine, theirs = cluster.view(primary), cluster.view(standby)
        return bool(mine and theirs and theirs.get("role") == "standby" and mine.get("lsn") == theirs.get("lsn"))

    try:
        wait_for(same_lsn, timeout, interval=0.2, what=f"node {standby} to catch up")
        return True
    except TimeoutError:
        return False


def _local_days(start: float, end: float, zone_name: str) -> list[str]:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(zone_name)
    first = dt.datetime.fromtimestamp(start, zone).date()
    last = dt.datetime.fromtimestamp(end, zone).date()
    days = []
    while first <= last:
        days.append(first.isoformat())
        first += dt.timedelta(days=1)
    return days


def run(options: Options) -> int:
    return Runner(options).run()


__all__ = ["Options", "Run", "Runner", "run", "cpu_share", "machine_busy", "TERMINAL"]
