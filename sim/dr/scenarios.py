"""Named disaster scenarios, and the swarm that mixes them, each drawn from one integer seed.

A scenario is two things drawn from the seed: the *parameters* of the run (workload rate,
link latency and flakiness, slow disks, clock drift, store snapshot interval) and a *script*
of faults for the safety phase. Scripts read like an SRE's drill:

    name = await ctx.wait_primary()
    ctx.crash(name, probe=True)           # probe: measure the time to the next acknowledged write
    await ctx.sleep(rng.uniform(0.2, 12))
    await ctx.restart(name)

Only faults the design promises to survive are injected (DESIGN.md, "Consistency"): any
number of process crashes (storage survives a process), partitions of any shape, pauses,
full and slow disks, clock drift within the lease bound. Two faults at once may cost
availability (no majority, or the only candidate is behind) but never safety; the liveness
phase then heals everything and the cluster must converge.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .network import LinkPolicy
from .workload import WorkloadShape

if TYPE_CHECKING:
    from .runner import Context

Script = Callable[["Context", random.Random], Awaitable[None]]


@dataclass
class RunConfig:
    """Everything one run needs, all of it drawn from (scenario, seed)."""

    scenario: str
    seed: int
    safety_seconds: float = 60.0
    liveness_seconds_max: float = 120.0
    mode: str = "sync"
    failover_timeout: float = 1.5
    snapshot_every_records: int = 200
    retention_records: int = 0
    drift: bool = True
    link: LinkPolicy = field(default_factory=LinkPolicy)
    connection_resets_per_minute: float = 0.0
    slow_disk_probability: float = 0.0
    slow_disk_seconds_max: float = 0.0
    crash_at_append_probability: float = 0.0
    workload: WorkloadShape = field(default_factory=WorkloadShape)

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode, "failover_timeout": self.failover_timeout,
            "calls_per_hour": round(self.workload.calls_per_hour, 1),
            "client_timeout_seconds": self.workload.client_timeout_seconds,
            "snapshot_every_records": self.snapshot_every_records, "retention_records": self.retention_records,
            "latency_ms": round(self.link.latency_seconds * 1000, 3), "jitter_ms": round(self.link.jitter_seconds * 1000, 3),
            "spike_probability": round(self.link.spike_probability, 4),
            "reset_probability": round(self.link.reset_probability, 5),
            "duplicate_probability": round(self.link.duplicate_probability, 5),
            "reorder_probability": round(self.link.reorder_probability, 5),
            "connection_resets_per_minute": round(self.connection_resets_per_minute, 2),
            "slow_disk_probability": round(self.slow_disk_probability, 3),
            "slow_disk_seconds_max": round(self.slow_disk_seconds_max, 3),
            "crash_at_append_probability": round(self.crash_at_append_probability, 4),
        }


def _base(scenario: str, seed: int, rng: random.Random) -> RunConfig:
    """Mild background weather for the named scenarios: a LAN with jitter, a busy disk."""
    config = RunConfig(scenario=scenario, seed=seed)
    config.link = LinkPolicy(
        latency_seconds=rng.uniform(0.0002, 0.002), jitter_seconds=rng.uniform(0.0001, 0.002),
        spike_probability=rng.choice([0.0, 0.001, 0.01]), spike_seconds_max=rng.uniform(0.01, 0.3),
    )
    config.slow_disk_probability = rng.choice([0.0, 0.05, 0.2])
    config.slow_disk_seconds_max = rng.uniform(0.005, 0.1)
    config.snapshot_every_records = rng.choice([50, 200, 1000])
    config.retention_records = rng.choice([0, 0, 100, 400])
    # Clients that wait long for a reply see what a paused node does when it resumes.
    config.workload = WorkloadShape(calls_per_hour=200.0 * rng.uniform(2.0, 10.0),
                                    client_timeout_seconds=rng.choice([1.0, 2.0, 5.0, 10.0]))
    return config


def _swarm(scenario: str, seed: int, rng: random.Random) -> RunConfig:
    """Swarm testing: every rate is drawn, many are zero, some are extreme."""
    config = _base(scenario, seed, rng)

    def maybe(value: float, probability: float = 0.5) -> float:
        return value if rng.random() < probability else 0.0

    config.link = LinkPolicy(
        latency_seconds=rng.choice([0.0001, 0.001, 0.005, 0.02]), jitter_seconds=rng.choice([0.0001, 0.001, 0.01]),
        spike_probability=maybe(rng.choice([0.001, 0.01, 0.05])), spike_seconds_max=rng.uniform(0.05, 1.0),
        reset_probability=maybe(rng.choice([0.0005, 0.002, 0.01]), 0.3),
        duplicate_probability=maybe(rng.choice([0.0005, 0.002]), 0.2),
        reorder_probability=maybe(rng.choice([0.0005, 0.002]), 0.2),
    )
    config.connection_resets_per_minute = maybe(rng.choice([0.5, 2.0, 10.0]), 0.4)
    config.slow_disk_probability = maybe(rng.choice([0.05, 0.3, 0.8]))
    config.slow_disk_seconds_max = rng.choice([0.01, 0.1, 0.6])
    config.crash_at_append_probability = maybe(rng.choice([0.0005, 0.002]), 0.2)
    config.failover_timeout = rng.choice([0.5, 1.0, 1.5, 1.5, 3.0])
    config.drift = rng.random() < 0.8
    # Async mode's loss window is by design; its lease is then the only fence (invariant 2).
    config.mode = "async" if rng.random() < 0.15 else "sync"
    config.workload = WorkloadShape(calls_per_hour=200.0 * rng.choice([1.0, 3.0, 10.0, 30.0]),
                                    client_timeout_seconds=rng.choice([1.0, 2.0, 5.0, 10.0]))
    return config


# ---------------------------------------------------------------------- scripts


async def primary_crash(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 20.0))
        name = await ctx.wait_primary()
        if rng.random() < 0.5:
            await ctx.crash_mid_write(name, rng)
        else:
            ctx.crash(name, probe=True)
        await ctx.sleep(rng.uniform(0.1, 12.0))
        await ctx.restart(name)


async def standby_crash(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 20.0))
        ctx.crash(ctx.standby_name(await ctx.wait_primary()), probe=True)
        await ctx.sleep(rng.uniform(0.1, 15.0))
        await ctx.restart_all()


async def witness_crash(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 20.0))
        await ctx.wait_primary()
        ctx.crash("witness", probe=True)
        await ctx.sleep(rng.uniform(0.1, 20.0))
        await ctx.restart("witness")


async def primary_partition(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 20.0))
        name = await ctx.wait_primary()
        standby = ctx.standby_name(name)
        shape = rng.choice(["isolated", "isolated", "deaf", "mute", "from-witness", "from-standby"])
        if shape == "isolated":
            ctx.partition({name}, {standby, "witness"}, label=f"partition {name} | {standby}, witness", probe=True)
        elif shape == "deaf":
            ctx.partition({standby, "witness"}, {name}, one_way=True, label=f"one-way: nothing reaches {name}", probe=True)
        elif shape == "mute":
            ctx.partition({name}, {standby, "witness"}, one_way=True, label=f"one-way: nothing from {name} arrives", probe=True)
        elif shape == "from-witness":
            ctx.partition({name}, {"witness"}, label=f"partition {name} | witness", probe=True)
        else:
            ctx.partition({name}, {standby}, label=f"partition {name} | {standby}", probe=True)
        await ctx.sleep(rng.uniform(0.2, 15.0))
        ctx.heal()


async def zombie_primary(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 20.0))
        name = await ctx.wait_primary()
        if rng.random() < 0.5:
            await ctx.pause_mid_write(name)
        else:
            ctx.pause(name, probe=True)
        # Mostly longer than the failover timeout, so that the standby takes over meanwhile.
        await ctx.sleep(rng.uniform(0.1, 1.0) if rng.random() < 0.2 else rng.uniform(2.0, 12.0))
        ctx.resume(name)


async def double_fault(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 15.0))
        name = await ctx.wait_primary()
        standby = ctx.standby_name(name)
        shape = rng.choice(["standby-then-primary", "witness-and-primary", "partition-and-standby",
                            "pause-and-witness", "both-nodes", "new-primary-during-catch-up", "all-three"])
        ctx.note(f"double fault: {shape}")
        if shape == "standby-then-primary":
            ctx.crash(standby)
            await ctx.sleep(rng.uniform(0.0, 5.0))
            ctx.crash(name, probe=True)
        elif shape == "witness-and-primary":
            ctx.crash("witness")
            await ctx.sleep(rng.uniform(0.0, 5.0))
            if rng.random() < 0.5:
                await ctx.crash_mid_write(name, rng, wait_seconds_max=5.0)
            else:
                ctx.crash(name, probe=True)
        elif shape == "partition-and-standby":
            ctx.partition({name}, {"witness"}, label=f"partition {name} | witness")
            await ctx.sleep(rng.uniform(0.0, 3.0))
            ctx.crash(standby, probe=True)
        elif shape == "pause-and-witness":
            ctx.pause(name, probe=True)
            await ctx.sleep(rng.uniform(0.0, 2.0))
            ctx.crash("witness")
        elif shape == "both-nodes":
            await ctx.crash_mid_write(name, rng, wait_seconds_max=5.0)
            await ctx.sleep(rng.uniform(0.0, 1.0))
            ctx.crash(standby)
        elif shape == "new-primary-during-catch-up":
            ctx.crash(name, probe=True)
            await ctx.sleep(rng.uniform(1.0, 6.0))
            await ctx.restart(name)
            await ctx.sleep(rng.uniform(0.0, 1.0))
            new = ctx.primary_name()
            if new is not None:
                ctx.crash(new, probe=True)
        else:
            ctx.crash(standby)
            ctx.crash("witness")
            await ctx.sleep(rng.uniform(0.0, 1.0))
            ctx.crash(name, probe=True)
        await ctx.sleep(rng.uniform(0.5, 15.0))
        ctx.heal()
        await ctx.restart_all()


async def rolling_restart(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 10.0))
        name = await ctx.wait_primary()
        standby = ctx.standby_name(name)
        # Upgrade the standby first, then hand over, then upgrade the old primary.
        ctx.crash(standby)
        await ctx.sleep(rng.uniform(0.5, 5.0))
        await ctx.restart(standby)
        await ctx.wait_healthy()
        await ctx.switchover(probe=True)
        await ctx.wait_healthy()
        old = ctx.standby_name(await ctx.wait_primary())
        ctx.crash(old)
        await ctx.sleep(rng.uniform(0.5, 5.0))
        await ctx.restart(old)


async def switchover_under_load(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(1.0, 10.0))
        await ctx.wait_primary()
        if rng.random() < 0.2:
            # A crash in the middle of the handover, on either side.
            async with ctx.background() as nursery:
                nursery.start_soon(ctx.switchover, True)
                await ctx.sleep(rng.uniform(0.0, 0.05))
                victim = rng.choice(ctx.node_names())
                ctx.crash(victim)
            await ctx.sleep(rng.uniform(0.5, 5.0))
            await ctx.restart_all()
        else:
            await ctx.switchover(probe=True)


async def disk_full(ctx: Context, rng: random.Random) -> None:
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 20.0))
        name = await ctx.wait_primary()
        standby = ctx.standby_name(name)
        targets = rng.choice([[name], [name], [standby], [name, standby]])
        for target in targets:
            ctx.disk_full(target, True, probe=target == name)
        await ctx.sleep(rng.uniform(0.5, 25.0))
        for target in targets:
            ctx.disk_full(target, False)
        await ctx.restart_all()


SINGLE_FAULTS: dict[str, Script] = {
    "primary-crash": primary_crash,
    "standby-crash": standby_crash,
    "witness-crash": witness_crash,
    "primary-partition": primary_partition,
    "zombie-primary": zombie_primary,
    "double-fault": double_fault,
    "rolling-restart": rolling_restart,
    "switchover-under-load": switchover_under_load,
    "disk-full": disk_full,
}


async def swarm(ctx: Context, rng: random.Random) -> None:
    """A random mix: each round picks one of the scenarios' moves, sometimes without waiting to heal."""
    weights = {name: rng.choice([0, 1, 1, 3]) for name in SINGLE_FAULTS}
    if not any(weights.values()):
        weights["primary-crash"] = 1
    names = [name for name in SINGLE_FAULTS if weights[name]]
    while True:
        choice = rng.choices(names, [weights[name] for name in names])[0]
        # One round of the chosen script, cut short at a random time: rounds overlap faults.
        async with ctx.background() as nursery:
            nursery.start_soon(SINGLE_FAULTS[choice], ctx, random.Random(rng.random()))
            await ctx.sleep(rng.uniform(5.0, 40.0))
            nursery.cancel_scope.cancel()
        if rng.random() < 0.7:
            ctx.heal()
            await ctx.restart_all()


SCENARIOS: dict[str, Script] = {**SINGLE_FAULTS, "swarm": swarm}


def draw(scenario: str, seed: int, *, minutes: float | None = None) -> tuple[RunConfig, Script]:
    """The run's parameters and fault script for (scenario, seed)."""
    if scenario not in SCENARIOS:
        raise KeyError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = random.Random(f"{scenario}:{seed}:parameters")
    config = _swarm(scenario, seed, rng) if scenario == "swarm" else _base(scenario, seed, rng)
    if scenario == "switchover-under-load":
        config.workload.calls_per_hour = 200.0 * rng.uniform(10.0, 30.0)
    if minutes is not None:
        config.safety_seconds = minutes * 60.0
    return config, SCENARIOS[scenario]
