"""Named disaster scenarios, and the swarm that mixes them, each drawn from one integer seed.

A scenario is two things drawn from the seed: the *parameters* of the run (workload rate,
link latency and flakiness, slow disks, clock drift, store snapshot interval) and a *script*
of faults for the safety phase. Scripts read like an SRE's drill:

    name = await ctx.wait_primary()
    ctx.crash(name, probe=True)           # probe: measure the time to the next acknowledged write
    await ctx.sleep(rng.uniform(0.2, 12))
    await ctx.restart(name)

Only faults the design promises to survive are injected (docs/design.md, "Consistency"): any
number of process crashes (storage survives a process), partitions of any shape, pauses,
full and slow disks, clock drift within the lease bound. Two faults at once may cost
availability (no majority, or the only candidate is behind) but never safety; the liveness
phase then heals everything and the cluster must converge.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from .context import Context
from .network import LinkPolicy
from .params import RunConfig
from .workload import WorkloadShape

Script = Callable[["Context", random.Random], Awaitable[None]]


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
    config.fsync_median_seconds = random.Random(f"{scenario}:{seed}:fsync").choice([0.0, 0.0005, 0.002])
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
    _fragile(config, random.Random(f"{scenario}:{seed}:fragile"))
    return config


def _fragile(config: RunConfig, rng: random.Random) -> None:
    """Swarm weather where the protocol is fragile: lost replies, slow fsyncs, busy processes, clock edges.

    Drawn from a stream of its own, so the other parameters of a seed stay what they were.
    """
    def maybe(value: float, probability: float) -> float:
        return value if rng.random() < probability else 0.0

    timeout = config.failover_timeout
    config.fsync_median_seconds = maybe(rng.choice([0.0005, 0.002, 0.01]), 0.6)
    config.fsync_sigma = rng.choice([0.5, 1.0, 1.5])
    config.busy_per_minute = maybe(rng.choice([2.0, 10.0, 30.0]), 0.3)
    config.busy_seconds_max = rng.choice([0.05, 0.2, 0.6]) * timeout
    config.witness_fsync_probability = maybe(rng.choice([0.1, 0.5, 1.0]), 0.3)
    config.witness_fsync_seconds_max = rng.choice([0.1, 0.2, 0.5]) * timeout   # 0.5: past a vote's timeout
    config.reply_loss = {name: loss for name in ("witness", "a", "b")
                         if (loss := maybe(rng.choice([0.01, 0.05, 0.2] if name == "witness" else [0.002, 0.01]), 0.25))}
    config.drift_edges = config.drift and rng.random() < 0.3


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
        name = await ctx.wait_primary()
        ctx.crash(ctx.standby_name(name), probe=True)
        if rng.random() < 0.3:
            # A burst while it is down: its catch-up then takes several appends.
            for index in range(rng.choice([300, 600])):
                ctx.write(f"burst {index}", node=name, delay=0.5 + index * 0.005)
        await ctx.sleep(rng.uniform(0.1, 15.0))
        await ctx.restart_all()


async def witness_crash(ctx: Context, rng: random.Random) -> None:
    """Kill the witness; sometimes while it records the standby behind, or while the pair is cut apart.

    What the witness must keep through a restart (its promises, the "behind" record, the lease
    it granted) matters only when it restarts in the middle of such a state.
    """
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(2.0, 20.0))
        name = await ctx.wait_primary()
        standby = ctx.standby_name(name)
        variant = rng.choice(["plain", "plain", "standby-behind", "pair-cut"])
        if variant == "standby-behind":
            ctx.crash(standby)
            await ctx.sleep(rng.uniform(1.0, 3.0))   # recorded behind, writes acknowledged alone
        elif variant == "pair-cut":
            ctx.partition({name}, {standby}, label=f"partition {name} | {standby}")
            await ctx.sleep(rng.uniform(0.0, 1.0) * ctx.failover_timeout())
        ctx.crash("witness", probe=True)
        await ctx.sleep(rng.uniform(0.1, 20.0) if variant == "plain" else rng.uniform(0.1, 2.0))
        await ctx.restart("witness")
        await ctx.sleep(rng.uniform(0.5, 3.0) if variant != "plain" else 0.0)
        ctx.heal()
        await ctx.restart_all()


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
        if rng.random() < 0.25:
            # Resumed while the standby stands for election, its disk slow: the batch the
            # zombie shipped before its own commit lands there as the standby is about to win.
            standby = ctx.standby_name(name)
            await ctx.pause_mid_write(name)
            await ctx.sleep(ctx.failover_timeout() * rng.uniform(1.0, 1.7))
            ctx.slow_disk(standby, rng.uniform(0.05, 0.3))
            ctx.resume(name)
            await ctx.sleep(1.0)
            ctx.slow_disk(standby, None)
            continue
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


def reply_loss_script(*targets: str) -> Script:
    """`witness-reply-loss` aimed at some of its targets only: "record", "clear", "vote"."""
    async def script(ctx: Context, rng: random.Random) -> None:
        await witness_reply_loss(ctx, rng, targets=targets)
    return script


async def witness_reply_loss(ctx: Context, rng: random.Random, *, targets: tuple[str, ...] = ("record", "clear", "vote")) -> None:
    """The witness applies a request and its reply is lost: RecordBehind, ClearBehind, a vote.

    The reply dies three ways: a lost reply (the connection dies after the witness saved), a
    slow witness fsync past `failover_timeout / 3` (the primary gives up waiting), or a one-way
    cut witness -> primary. Then the primary is crashed and kept down for longer than the
    liveness bound, so that a record the primary forgot about (the standby caught up long
    ago, the witness still says "behind") shows as a cluster without a primary.
    """
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(1.0, 6.0))
        name = await ctx.wait_primary()
        standby = ctx.standby_name(name)
        timeout = ctx.failover_timeout()
        target = rng.choice(targets)
        how = rng.choice(["lost-reply", "slow-fsync", "one-way"])
        ctx.note(f"witness replies lost ({how}) around {target}")
        victim = standby if target == "vote" else name
        try:
            await _lose_replies(ctx, rng, target, how, name, standby, victim, timeout)
        finally:
            ctx.find_witness_replies()   # also when a swarm round cuts this one short
        await ctx.sleep(rng.uniform(1.0, 3.0) * timeout)
        primary = ctx.primary_name()
        if primary is not None and rng.random() < 0.8:
            ctx.crash(primary, probe=True)
            await ctx.sleep(rng.uniform(4.0, 6.0) * timeout + 2.0)   # past the liveness bound
            await ctx.restart(primary)


async def _lose_replies(ctx: Context, rng: random.Random, target: str, how: str, name: str, standby: str, victim: str,
                        timeout: float) -> None:
    """The witness's replies to `victim` die while it records the standby behind, clears it, or votes."""
    if target == "record":
        # The standby falls silent for longer than standby_timeout, then answers again.
        ctx.lose_witness_replies(victim, how, rng)
        ctx.stall(standby, rng.uniform(0.5, 1.0) * timeout)
        ctx.write(f"a write while {standby} is silent")   # it waits past standby_timeout
        await ctx.sleep(rng.uniform(1.0, 1.5) * timeout)
    elif target == "clear":
        # The standby is recorded behind (down a while), comes back and catches up.
        ctx.crash(standby)
        await ctx.sleep(rng.uniform(0.5, 3.0))
        ctx.lose_witness_replies(victim, how, rng)
        await ctx.restart(standby)
        await ctx.sleep(rng.uniform(0.5, 3.0))
    else:
        # A handover: the candidate skips the pre-vote, the old primary votes for it too.
        ctx.lose_witness_replies(victim, how, rng)
        await ctx.switchover(probe=True)
        await ctx.sleep(rng.uniform(0.2, 1.0) * timeout)


async def lease_edge(ctx: Context, rng: random.Random) -> None:
    """Replies to the primary slow, then the primary cut off and paused right around its lease expiry."""
    while True:
        await ctx.wait_healthy()
        await ctx.sleep(rng.uniform(1.0, 6.0))
        name = await ctx.wait_primary()
        standby = ctx.standby_name(name)
        timeout = ctx.failover_timeout()
        # Late answers: a lease counted from their receipt would outlast the voters' grants.
        ctx.slow_replies(name, rng.uniform(0.05, 1.0) * timeout)
        try:
            await ctx.sleep(rng.uniform(0.5, 2.0) * timeout)
            if rng.random() < 0.5:
                ctx.partition({name}, {standby, "witness"}, label=f"partition {name} | {standby}, witness", probe=True)
            else:
                ctx.partition({name}, {standby, "witness"}, one_way=True, label=f"one-way: nothing from {name} arrives", probe=True)
            for index in range(30):   # clients keep writing to it while its lease runs out
                ctx.write(f"write {index} to the cut-off {name}", node=name, delay=index * timeout / 10)
            remaining = ctx.lease_remaining(name)
            variant = rng.choice(["pause", "pause-mid-write", "run"])
            if variant == "run":
                # It keeps running (and writing) through its lease's end and the election.
                await ctx.sleep(rng.uniform(2.0, 4.0) * timeout)
            else:
                await ctx.sleep(max(0.0, remaining + rng.uniform(-0.15, 0.05) * timeout))
                if variant == "pause-mid-write":
                    await ctx.pause_mid_write(name, probe=False, wait_seconds_max=0.2 * timeout)
                else:
                    ctx.pause(name, probe=False)
                await ctx.sleep(rng.uniform(0.0, 2.0) * timeout)
                ctx.resume(name)
                await ctx.sleep(rng.uniform(0.0, 1.0) * timeout)
            ctx.heal()
        finally:
            ctx.fast_replies(name)   # also when a swarm round cuts this one short


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
    "witness-reply-loss": witness_reply_loss,
    "lease-edge": lease_edge,
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
    if scenario == "witness-reply-loss":
        config.failover_timeout = rng.choice([0.5, 1.0, 1.5])
        config.mode = "sync"
        config.link.spike_probability = 0.0   # liveness is judged: weather within the envelope
        config.slow_disk_seconds_max = min(config.slow_disk_seconds_max, 0.05)
    if scenario == "lease-edge":
        # The lease is the only fence of an async primary; drift at the edges of the bound.
        config.mode = "async" if rng.random() < 0.7 else "sync"
        config.drift_edges = True
        config.workload.calls_per_hour = 200.0 * rng.uniform(10.0, 30.0)
    if minutes is not None:
        config.safety_seconds = minutes * 60.0
    return config, SCENARIOS[scenario]
