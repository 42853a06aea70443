"""What a fault script of `sim.dr.scenarios` may do to the simulated cluster, and wait for."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .clock import sleep
from .cluster import WITNESS, SimCluster
from .network import Connection, LinkPolicy
from .params import RunConfig
from .workload import Workload


class Context:
    """What a fault script may do and wait for (see `sim.dr.scenarios`)."""

    def __init__(self, cluster: SimCluster, workload: Workload, nursery: trio.Nursery, config: RunConfig | None = None) -> None:
        self.cluster = cluster
        self.workload = workload
        self.nursery = nursery
        self.config = config if config is not None else RunConfig(scenario="", seed=0)

    # waiting
    async def sleep(self, seconds: float) -> None:
        await sleep(max(0.0, seconds))

    def primary_name(self) -> str | None:
        primary = self.cluster.primary()
        return primary.name if primary is not None else None

    async def wait_primary(self) -> str:
        while True:
            name = self.primary_name()
            if name is not None:
                return name
            with trio.move_on_after(0.25):
                await self.cluster.changed.wait()

    def healthy(self) -> bool:
        primary = self.cluster.primary()
        if primary is None or primary.member is None or primary.node is None:
            return False
        standby = self.cluster.processes[self.standby_name(primary.name)]
        witness = self.cluster.processes[WITNESS]
        member = primary.member
        return (
            standby.up and not standby.paused and witness.up and standby.node is not None and standby.node.role == "standby"
            and member.peer_connected and not member.behind_recorded and not getattr(member, "behind_maybe", False)
            and member.acked_lsn >= primary.node.store.last_lsn()
        )

    async def wait_healthy(self) -> None:
        while not self.healthy():
            await sleep(0.25)

    def converged(self) -> bool:
        if not self.healthy():
            return False
        primary = self.cluster.primary()
        assert primary is not None and primary.node is not None
        standby = self.cluster.processes[self.standby_name(primary.name)]
        assert standby.node is not None
        return standby.node.lsn == primary.node.lsn and standby.node.center.state_hash() == primary.node.center.state_hash()

    def node_names(self) -> list[str]:
        return list(self.cluster.names)

    def standby_name(self, primary: str) -> str:
        return next(name for name in self.cluster.names if name != primary)

    # faults
    def _epoch(self) -> int:
        return max((epoch for _, _, epoch in self.cluster.promotions), default=0)

    def _probe(self, label: str, node: str) -> None:
        self.workload_nursery().start_soon(self.workload.probe, label, node, self._epoch())

    def workload_nursery(self) -> trio.Nursery:
        return self.workload.nursery or self.nursery

    def note(self, text: str) -> None:
        self.cluster.trace.add("fault", "*", text)

    def failover_timeout(self) -> float:
        return self.config.failover_timeout

    def lease_remaining(self, name: str) -> float:
        """Virtual seconds until `name`'s lease runs out by its own clock (0 if it holds none)."""
        process = self.cluster.process(name)
        if process.member is None:
            return 0.0
        return max(0.0, (process.member.lease_until - process.clock.monotonic()) / process.clock.rate)

    def hold_witness_connections(self, name: str, seconds: float, only: list[Connection] | None = None) -> list[Connection]:
        """What `name` sends on its connections to the witness open now (or on `only` of them)
        arrives `seconds` from now, no earlier."""
        until = trio.current_time() + seconds
        return self.cluster.network.hold_open_connections(name, WITNESS, until, only)

    def clear_unanswered(self, name: str) -> bool:
        """`name` is primary and gave up on a ClearBehind (no answer: "maybe cleared")."""
        member = self.cluster.process(name).member
        if member is None or not member.primary:
            return False
        return member.behind.maybe and not member.behind.recorded and not member._clearing

    def stall(self, name: str, seconds: float) -> None:
        self.cluster.stall(name, seconds)

    def slow_disk(self, name: str, seconds: float | None) -> None:
        """Every write of `name` takes up to `seconds` from now on (None: the run's own weather again)."""
        process = self.cluster.process(name)
        if seconds is None:
            process.slow_disk_probability = self.config.slow_disk_probability
            process.slow_disk_seconds_max = self.config.slow_disk_seconds_max
        else:
            process.slow_disk_probability = 1.0
            process.slow_disk_seconds_max = seconds
            self.note(f"disk of {name} slow: up to {seconds * 1000:.0f} ms a write")

    def write(self, label: str, *, node: str | None = None, delay: float = 0.0) -> None:
        """One write in `delay` seconds, in the background, as a client would send it (to `node` first)."""
        from acd.core import commands

        from .workload import Client

        client = Client(self.cluster, self.workload.history, self.cluster.trace, timeout_seconds=5.0)
        if node is not None:
            client.guess = node
        command = commands.Audit(actor="dr-script", action="write", detail=label[:200])

        async def write() -> None:
            if delay:
                await sleep(delay)
            await client.submit(command, give_up_after=30.0)

        self.workload_nursery().start_soon(write)

    def lose_witness_replies(self, name: str, how: str, rng: random.Random) -> None:
        """From now on the witness's replies to `name` die after the witness applied the request."""
        timeout = self.config.failover_timeout
        if how == "one-way":
            self.partition({WITNESS}, {name}, one_way=True, label=f"one-way: nothing from the witness reaches {name}")
        elif how == "slow-fsync":
            witness = self.cluster.process(WITNESS)
            witness.witness_fsync_probability = 1.0
            witness.witness_fsync_seconds_min = 0.4 * timeout
            witness.witness_fsync_seconds_max = rng.uniform(0.5, 1.2) * timeout
            self.note(f"witness fsync slow: {witness.witness_fsync_seconds_min:.3f}-{witness.witness_fsync_seconds_max:.3f} s")
        else:
            self.cluster.network.reply_loss[WITNESS] = 1.0
            self.note("every witness reply is lost")

    def find_witness_replies(self) -> None:
        """Undo `lose_witness_replies`: the run's own weather again."""
        witness = self.cluster.process(WITNESS)
        witness.witness_fsync_probability = self.config.witness_fsync_probability
        witness.witness_fsync_seconds_min = 0.0
        witness.witness_fsync_seconds_max = self.config.witness_fsync_seconds_max
        loss = self.config.reply_loss.get(WITNESS, 0.0)
        if loss:
            self.cluster.network.reply_loss[WITNESS] = loss
        else:
            self.cluster.network.reply_loss.pop(WITNESS, None)
        self.heal()

    def slow_replies(self, name: str, latency: float) -> None:
        """Everything sent to `name` takes `latency` seconds (its renewals are answered late)."""
        network = self.cluster.network
        for other in [WITNESS, *self.cluster.names]:
            if other != name:
                network.policies[(other, name)] = LinkPolicy(latency_seconds=latency, jitter_seconds=0.0001)
        self.note(f"replies to {name} take {latency * 1000:.0f} ms")

    def fast_replies(self, name: str) -> None:
        network = self.cluster.network
        for other in [WITNESS, *self.cluster.names]:
            network.policies.pop((other, name), None)

    def crash(self, name: str, *, probe: bool = False) -> None:
        if self.cluster.crash(name) and probe:
            self._probe(f"crash {name}", name)

    async def crash_mid_write(self, name: str, rng: random.Random, *, probe: bool = True, wait_seconds_max: float = 30.0) -> None:
        """Crash `name` while a write is in flight: durable on it, not yet (known) on the standby.

        A crash can come at any instant; this one is the instant that decides whether an
        acknowledged write survives (invariant 1), so the scripts aim for it half the time.
        """
        with trio.move_on_after(wait_seconds_max):
            await self.cluster.wait_replicating(name)
        delay = rng.choice([0.0, 0.0, rng.uniform(0.0, 0.005), rng.uniform(0.0, 0.05)])
        if delay:
            await sleep(delay)
        self.crash(name, probe=probe)

    async def restart(self, name: str) -> None:
        await self.cluster.restart(name)

    async def restart_all(self) -> None:
        for name in [WITNESS, *self.cluster.names]:
            await self.cluster.restart(name)

    def partition(self, side: set[str], other: set[str], *, one_way: bool = False, label: str = "", probe: bool = False) -> None:
        self.cluster.network.partition(side, other, one_way=one_way)
        text = label or f"partition {sorted(side)} {'->' if one_way else '|'} {sorted(other)}"
        for name in sorted(side):
            self.cluster.marks.append((trio.current_time(), name, "partition"))
        self.cluster.trace.add("fault", "*", text)
        self.cluster._changed()
        if probe:
            self._probe(text, sorted(side)[0])

    def heal(self) -> None:
        if self.cluster.network.cut:
            self.cluster.network.heal()
            self.cluster.marks.append((trio.current_time(), "*", "heal"))
            self.cluster.trace.add("heal", "*", "network healed")

    def pause(self, name: str, *, probe: bool = False) -> None:
        if self.cluster.pause(name) and probe:
            self._probe(f"pause {name}", name)

    async def pause_mid_write(self, name: str, *, probe: bool = True, wait_seconds_max: float = 30.0) -> None:
        """Pause `name` in the middle of its next commit (its batch blocked before the write).

        The resumed batch then meets the lease check long after the lease ran out: the
        zombie's moment of truth (invariant 2).
        """
        process = self.cluster.process(name)
        process.pause_at_next_append = True
        try:
            with trio.move_on_after(wait_seconds_max):
                while not process.paused and process.up:
                    await self.cluster.changed.wait()
        finally:
            process.pause_at_next_append = False  # also when the safety phase ends meanwhile
        if not process.paused:
            self.cluster.pause(name)
        if process.paused and probe:
            self._probe(f"pause {name}", name)

    def resume(self, name: str) -> None:
        self.cluster.resume(name)

    def disk_full(self, name: str, full: bool, *, probe: bool = False) -> None:
        self.cluster.set_disk_full(name, full)
        if full and probe:
            self._probe(f"disk full {name}", name)

    async def switchover(self, probe: bool = False) -> str:
        primary = self.primary_name()
        if probe and primary is not None:
            self._probe(f"switchover from {primary}", primary)
        return await self.cluster.switchover()

    @asynccontextmanager
    async def background(self) -> AsyncIterator[trio.Nursery]:
        async with trio.open_nursery() as nursery:
            yield nursery
