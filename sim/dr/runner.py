"""One run: a scenario and a seed in, a verdict and a trace out.

    result = run("primary-crash", 7)
    result.ok, result.violations, result.trace_hash

The run is one `trio.run` on a virtual clock (`JumpClock`) that jumps to the next timer
whenever every task waits, so a simulated minute of a quiet cluster costs only the steps its
tasks take. Determinism comes from seeding everything that chooses:

- trio's scheduler: the module-level `random.Random` in `trio._core._run` shuffles each batch
  of runnable tasks; it is seeded from the run's seed, and the batch is first sorted by task
  creation order (trio's own deterministic mode, the one its Hypothesis plugin switches on),
  so that neither memory addresses nor set order leak into the schedule;
- the nonces of the replication handshake (`replication.protocol.new_nonce`);
- the network, the processes' clocks, the workload and the fault script, each with its own
  `random.Random` derived from (scenario, seed).

Phases: start (the first election), safety (the scenario's faults, the workload running),
liveness (every fault healed, crashed processes restarted, no new calls; the cluster must
become healthy, the agents finish their calls, the rest is ended, the nodes converge), then
the checks of `sim.dr.checks`.
"""

from __future__ import annotations

import atexit
import logging
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from acd import buggify
from replication import protocol

from . import checks
from .clock import JumpClock, sleep
from .cluster import WITNESS, SimCluster
from .config import cluster_settings
from .context import Context
from .monitor import Monitor
from .network import SimNetwork
from .params import RunConfig
from .scenarios import Script, draw
from .storage import scratch_root, wipe
from .trace import Trace, TraceHandler
from .workload import History, Workload

STEPS_PER_SIMULATED_SECOND_MAX = 5_000   # a livelock (time stands still, tasks spin) ends the run
FIRST_PRIMARY_SECONDS_MAX = 30.0
LIVENESS_DRAIN_SECONDS = 5.0             # agents finish what they can, then the rest is ended


@dataclass
class RunResult:
    scenario: str
    seed: int
    ok: bool
    violations: list[str]
    trace_hash: str
    simulated_seconds: float
    wall_seconds: float
    acked_writes: int
    lost_writes: int
    lost_writes_async_window: int          # async mode only: lost by design (docs/design.md, the loss window)
    failover_seconds: list[float]          # fault -> first ack in a higher epoch
    stall_seconds: list[float]             # fault -> first ack, any epoch (probes that got one)
    unresolved_probes: int
    unavailable_seconds: float             # no node could acknowledge (role-based)
    converged: bool
    deaths: list[str]
    counters: dict[str, int]
    network: dict[str, int]
    parameters: dict[str, Any]
    final: dict[str, dict[str, Any]]
    events: int
    task_steps: int = 0
    cpu_seconds: float = 0.0
    bugs: list[str] = field(default_factory=list)
    trace: Trace | None = field(default=None, repr=False)          # for --out: the event log
    timeline: dict[str, Any] = field(default_factory=dict, repr=False)  # for --out: the chart

    def as_json(self) -> dict[str, Any]:
        data = {key: value for key, value in self.__dict__.items() if key not in ("trace", "timeline")}
        data["failover_seconds"] = [round(value, 6) for value in self.failover_seconds]
        data["stall_seconds"] = [round(value, 6) for value in self.stall_seconds]
        data["simulated_seconds"] = round(self.simulated_seconds, 3)
        data["wall_seconds"] = round(self.wall_seconds, 3)
        data["cpu_seconds"] = round(self.cpu_seconds, 3)
        data["unavailable_seconds"] = round(self.unavailable_seconds, 3)
        return data


class _StepGuard(trio.abc.Instrument):
    """Ends a run whose tasks keep running while virtual time stands still (a livelock)."""

    def __init__(self) -> None:
        self.steps = 0
        self.steps_at_time = 0
        self.time = -1.0
        self.scope: trio.CancelScope | None = None
        self.tripped = ""

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.steps - self.steps_at_time > STEPS_PER_SIMULATED_SECOND_MAX:
            now = trio.current_time()
            if now - self.time < 1.0 and not self.tripped:
                self.tripped = f"livelock: {self.steps - self.steps_at_time} task steps within one simulated second at t={now:.3f} (last: {task.name})"
                if self.scope is not None:
                    self.scope.cancel()
            self.steps_at_time = self.steps
            self.time = now


_SCRATCH: Path | None = None


def use_scratch(directory: Path) -> None:
    """Put this process's run directories under `directory` (a sweep's worker processes)."""
    global _SCRATCH
    directory.mkdir(parents=True, exist_ok=True)
    _SCRATCH = directory


def _scratch() -> Path:
    global _SCRATCH
    if _SCRATCH is None or not _SCRATCH.exists():
        _SCRATCH = scratch_root()
        atexit.register(shutil.rmtree, _SCRATCH, True)
    return _SCRATCH


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed trio's scheduler and the handshake nonces for one run; restore them afterwards."""
    from trio._core import _run as trio_run

    state = trio_run._r.getstate()
    flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    original_nonce = protocol.new_nonce
    nonces = random.Random(f"{seed}:nonces")
    trio_run._r.seed(seed)
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    protocol.new_nonce = lambda: nonces.randbytes(16)
    try:
        yield
    finally:
        trio_run._r.setstate(state)
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = flag  # type: ignore[misc]
        protocol.new_nonce = original_nonce


@contextmanager
def captured_logs(trace: Trace) -> Iterator[None]:
    """The node, replication and witness loggers write into the trace, not to stderr."""
    logger = logging.getLogger("acd")
    handler = TraceHandler(trace)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def run(scenario: str, seed: int, *, minutes: float | None = None, bugs: tuple[str, ...] = (),
        config: RunConfig | None = None, script: Script | None = None) -> RunResult:
    """Run one seed of one scenario and check it."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    if config is None or script is None:
        config, script = draw(scenario, seed, minutes=minutes)
    root = _scratch() / "run"
    wipe(root)
    settings = cluster_settings(
        str(root), mode=config.mode, failover_timeout=config.failover_timeout,
        snapshot_every_records=config.snapshot_every_records, retention_records=config.retention_records,
    )
    trace = Trace()

    def stream(label: str) -> random.Random:
        return random.Random(f"{scenario}:{seed}:{label}")

    network = SimNetwork(stream("network"), default_policy=config.link, trace=trace.add)
    cluster = SimCluster(settings, network=network, trace=trace, rng=stream("clocks"), drift=config.drift,
                         drift_edges=config.drift_edges)
    for name in cluster.names:
        process = cluster.process(name)
        process.slow_disk_probability = config.slow_disk_probability
        process.slow_disk_seconds_max = config.slow_disk_seconds_max
        process.crash_at_append_probability = config.crash_at_append_probability
        process.fsync_median_seconds = config.fsync_median_seconds
        process.fsync_sigma = config.fsync_sigma
    witness = cluster.process(WITNESS)
    witness.witness_fsync_probability = config.witness_fsync_probability
    witness.witness_fsync_seconds_max = config.witness_fsync_seconds_max
    cluster.witness_store.rng = stream("witness-fsync")
    network.reply_loss.update(config.reply_loss)
    monitor = Monitor(cluster, trace, mode=config.mode, failover_timeout=config.failover_timeout,
                      envelope=within_envelope(config))
    cluster.monitor = monitor
    history = History()
    workload = Workload(cluster, history, trace, stream("workload"), config.workload)
    hooks = cluster.hooks(stream("buggify"))
    guard = _StepGuard()
    outcome: dict[str, Any] = {"converged": False, "finals": {}, "liveness": [], "monitor": monitor}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            guard.scope = nursery.cancel_scope
            context = Context(cluster, workload, nursery, config)
            trace.add("phase", "*", f"start: {scenario} seed {seed}")
            cluster.start(nursery)
            with trio.move_on_after(FIRST_PRIMARY_SECONDS_MAX) as first:
                await context.wait_primary()
            if first.cancelled_caught:
                outcome["liveness"].append(f"no primary elected within {FIRST_PRIMARY_SECONDS_MAX:.0f} s of the start")
            nursery.start_soon(workload.run)
            nursery.start_soon(monitor.run)
            safety_end = trio.current_time() + config.safety_seconds
            trace.add("phase", "*", "safety: faults on")
            with trio.move_on_at(safety_end):
                async with trio.open_nursery() as faults:
                    if config.connection_resets_per_minute > 0:
                        faults.start_soon(_connection_resets, network, config.connection_resets_per_minute, stream("resets"))
                    if config.busy_per_minute > 0:
                        faults.start_soon(_busy, cluster, config.busy_per_minute, config.busy_seconds_max, stream("busy"))
                    await script(context, stream("script"))
            trace.add("phase", "*", "liveness: faults healed, processes restarted, no new calls")
            cluster.heal_all()
            monitor.judge_liveness = True
            await context.restart_all()
            workload.stop_arrivals()
            liveness_end = trio.current_time() + config.liveness_seconds_max
            with trio.move_on_at(liveness_end) as liveness:
                await context.wait_healthy()
                trace.add("phase", "*", "healthy")
                # Let the agents finish what they hold for a moment, then end the rest (invariant 8).
                with trio.move_on_after(LIVENESS_DRAIN_SECONDS):
                    while True:
                        center = workload.client.view()
                        if center is not None and all(call.state.value in ("completed", "abandoned", "transferred", "closed")
                                                      for call in center.state.interactions.values()):
                            break
                        await sleep(1.0)
                left = await workload.finish_all()
                if left:
                    outcome["liveness"].append(f"interactions still open after finishing the day: {', '.join(left[:5])}")
                trace.add("phase", "*", "day finished")
                while not context.converged():
                    await sleep(0.25)
                trace.add("phase", "*", "converged")
                outcome["converged"] = True
            if liveness.cancelled_caught:
                outcome["liveness"].append(_why_not_converged(context))
            outcome["end"] = trio.current_time()
            outcome["finals"] = {
                name: checks.capture(name, cluster.process(name).up, cluster.process(name).node) for name in cluster.names
            }
            nursery.cancel_scope.cancel()

    error: BaseException | None = None
    with deterministic(seed), captured_logs(trace), buggify.simulation(hooks), buggify.bugs(*bugs):
        try:
            trio.run(main, clock=JumpClock(), instruments=[guard])
        except BaseException as raised:  # noqa: BLE001 - a crash of the simulator is a finding too
            if isinstance(raised, KeyboardInterrupt):
                raise
            error = raised
    try:
        return _verdict(scenario, seed, config, bugs, settings, cluster, history, trace, guard, outcome, error, started, cpu_started)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _connection_resets(network: SimNetwork, per_minute: float, rng: random.Random) -> None:
    while True:
        await sleep(rng.expovariate(per_minute / 60.0))
        connection = network.reset_random()
        if connection is not None:
            network.trace("net", connection.client, f"connection reset {connection.client}->{connection.server} ({connection.address})")


def within_envelope(config: RunConfig) -> bool:
    """Whether the run's weather stays within what the timing of the protocol assumes.

    Elections, renewals and the standby's acknowledgements time out after a third of
    `failover_timeout`; weather that holds one message or one disk write for about that long
    (a latency spike, a slow disk, a busy process, a slow witness fsync: a vote the witness
    grants is saved before it is answered) makes that a fault of its own, as often as the
    weather strikes. Safety holds through any weather; bounded liveness is judged in the
    safety phase only while no single delay exceeds a quarter of `failover_timeout` (and in
    the liveness phase, where the weather is calm, always).
    """
    limit = config.failover_timeout / 4
    link = config.link
    delays = [
        link.latency_seconds + 4 * link.jitter_seconds,
        link.spike_seconds_max if link.spike_probability else 0.0,
        config.slow_disk_seconds_max if config.slow_disk_probability else 0.0,
        config.busy_seconds_max if config.busy_per_minute else 0.0,
        config.witness_fsync_seconds_max if config.witness_fsync_probability else 0.0,
        config.fsync_median_seconds * 20,
    ]
    return max(delays) <= limit


async def _busy(cluster: SimCluster, per_minute: float, seconds_max: float, rng: random.Random) -> None:
    """Now and then a process runs nothing for a moment (CPU starvation, a long GC pause)."""
    names = [*cluster.names, WITNESS]
    while True:
        await sleep(rng.expovariate(per_minute / 60.0))
        name = rng.choice(names)
        if cluster.process(name).up:
            cluster.stall(name, rng.uniform(0.0, seconds_max))


def _why_not_converged(context: Context) -> str:
    cluster = context.cluster
    states = ", ".join(
        f"{name}={cluster.role(name)}" + (f" lsn {cluster.process(name).node.lsn}" if cluster.process(name).node is not None else "")  # type: ignore[union-attr]
        for name in [*cluster.names, WITNESS]
    )
    primary = cluster.primary()
    member = primary.member if primary is not None else None
    detail = ""
    if member is not None and primary is not None and primary.node is not None:
        detail = (f"; primary {primary.name}: peer_connected={member.peer_connected} behind_recorded={member.behind_recorded} behind_maybe={getattr(member, 'behind_maybe', False)} "
                  f"acked_lsn={member.acked_lsn} last_lsn={primary.node.store.last_lsn()}")
    return f"liveness: the cluster did not converge after healing ({states}{detail})"


def _verdict(scenario: str, seed: int, config: RunConfig, bugs: tuple[str, ...], settings: Any, cluster: SimCluster,
             history: History, trace: Trace, guard: _StepGuard, outcome: dict[str, Any], error: BaseException | None,
             started: float, cpu_started: float) -> RunResult:
    violations: list[str] = []
    if error is not None:
        import traceback

        violations.append(f"simulator error: {type(error).__name__}: {error}")
        trace.add("check", "*", "simulator error\n" + "".join(traceback.format_exception(error)).rstrip())
    if guard.tripped:
        violations.append(guard.tripped)
    violations.extend(outcome["liveness"])
    violations.extend(outcome["monitor"].results())
    finals: dict[str, checks.NodeFinal] = outcome["finals"]
    primary = next((final for final in finals.values() if final.up and final.role == "primary"), None)
    reference = primary or max((final for final in finals.values() if final.up), key=lambda final: final.lsn, default=None)
    lost, lost_in_window = checks.lost_writes(history.acks, reference, mode=config.mode) if finals else ([], 0)
    violations.extend(lost)
    violations.extend(checks.split_brain(history.acks, cluster.promotions))
    if finals:
        try:
            violations.extend(checks.replay(settings, finals))
        except Exception as failure:  # noqa: BLE001
            violations.append(f"replay check failed: {type(failure).__name__}: {failure}")
        if outcome["converged"]:
            violations.extend(checks.terminal(primary))
    for at, name, summary, expected in cluster.deaths:
        if not expected:
            violations.append(f"{name} died at {at:.6f}: {summary}")
    for at, name, lsn in cluster.divergences:  # nothing in a run makes the states differ: a false alarm
        violations.append(f"divergence alarm at {at:.6f}: primary {name} found the standby's state hash different at lsn {lsn}")
    for violation in violations:
        trace.add("check", "*", "VIOLATION " + violation.splitlines()[0])
    if not violations:
        trace.add("check", "*", f"ok: {len(history.acks)} acknowledged writes checked")
    end = outcome.get("end", 0.0)
    probes = history.probes
    failovers = [probe.seconds for probe in probes if probe.failed_over and probe.seconds is not None]
    stalls = [probe.seconds for probe in probes if probe.seconds is not None]
    return RunResult(
        scenario=scenario, seed=seed, ok=not violations, violations=violations, trace_hash=trace.digest(),
        simulated_seconds=end, wall_seconds=time.perf_counter() - started, acked_writes=len(history.acks),
        lost_writes=len(lost), lost_writes_async_window=lost_in_window, failover_seconds=failovers, stall_seconds=stalls,
        unresolved_probes=sum(1 for probe in probes if probe.seconds is None),
        unavailable_seconds=_unavailable(cluster, end), converged=bool(outcome["converged"]),
        deaths=[f"{at:.3f} {name}: {summary.splitlines()[0]}" for at, name, summary, _ in cluster.deaths],
        counters={**history.counters, "state_comparisons": cluster.state_comparisons}, network=dict(cluster.network.statistics.__dict__),
        parameters={"scenario": scenario, "seed": seed, "safety_seconds": config.safety_seconds, **config.describe(),
                    "liveness_judged_under_faults": within_envelope(config)},
        final={name: {"up": final.up, "role": final.role, "lsn": final.lsn, "state_hash": final.state_hash[:16]} for name, final in finals.items()},
        events=len(trace.events), task_steps=guard.steps, cpu_seconds=time.process_time() - cpu_started,
        bugs=list(bugs), trace=trace,
        timeline={
            "end": end, "names": [*cluster.names, WITNESS], "promotions": list(cluster.promotions),
            "step_downs": list(cluster.step_downs), "marks": list(cluster.marks),
            "acks": [(ack.at, ack.node, ack.epoch) for ack in history.acks],
            "lost": [(ack.at, ack.lsn) for ack in checks.lost(history.acks, reference)] if finals else [],
            "life": [(event.at, event.node, event.text) for event in trace.events if event.kind in ("life", "death")],
            "writable": list(cluster.writable_changes),
        },
    )


def _unavailable(cluster: SimCluster, end: float) -> float:
    """Seconds without a node that could acknowledge, from the first election to the end."""
    changes = cluster.writable_changes
    if not changes:
        return end
    total = 0.0
    down_since: float | None = None
    for at, writable in changes:
        if writable and down_since is not None:
            total += at - down_since
            down_since = None
        elif not writable and down_since is None:
            down_since = at
    if down_since is not None:
        total += max(0.0, end - down_since)
    return total

