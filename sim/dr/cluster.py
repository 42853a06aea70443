"""The simulated cluster: the real nodes, replication members and witness, in one trio run.

Every process of a real cluster is a `Process` here: it runs in its own cancel scope inside
the simulation's nursery, with its own clock and its own view of the `SimNetwork`. The
scenario scripts read like operations on a cluster:

    cluster.crash("a"); await cluster.restart("a")
    cluster.pause("b"); cluster.resume("b")          # SIGSTOP / SIGCONT: a zombie
    cluster.network.partition({"a"}, {"b", "witness"})
    cluster.process("a").disk_full = True

What each fault is, and why it is one the design promises to survive (docs/design.md):

- crash: the node's tasks are cancelled, its connections reset, its store closed. What the
  store returned is durable; everything else is gone. `restart` opens the same directory.
- pause: bytes to and from the node are held; its pipeline, lease watch and election timer
  stop at their fault points (`node.pipeline`, `member.timer`), a batch in the middle of its
  commit stops at `store.append`, and no client reaches it. Its clocks run on, so when it
  resumes everything it does meets the real time at once, as after SIGCONT: the zombie's
  batch meets the pipeline's lease check long after the lease ran out. (Its renewal and
  shipping loops are not stopped; what they send waits in the held network. Freezing the
  clocks instead would let its timers, re-armed against the frozen clock, fire up to a lease
  period late after the resume: a window no real process has.)
- clocks: every process has its own monotonic clock (offset anywhere, rate within
  `1 ± DRIFT/2`, so that two clocks run at most `DRIFT` apart, the bound of the lease
  design) and a wall clock (a fixed weekday morning in Seoul, skewed by up to a second).
- disk full: the store refuses every write (`StorageFull`) while the flag is set.
- slow disk: `store.append` sleeps on the virtual clock before writing: now and then
  (`slow_disk_probability`), and on every write from an fsync latency distribution
  (log-normal: `fsync_median_seconds`, `fsync_sigma`).
- busy (`stall`): for a short time the process runs nothing (its pipeline and timers stop at
  their fault points, its bytes are held), as under CPU starvation; a witness whose fsync is
  slow is busy that way right after it saved and before its reply leaves.

A process that dies of an exception is restarted after `restart_seconds` (systemd's
`Restart=on-failure`); the death is recorded, and is a violation unless a full disk caused it
(`StorageFull`, or the node's `StorageFullError` escaping a task).
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import trio

from acd import buggify
from acd.node.node import Node, NodeError, StorageFullError
from acd.settings import Settings
from acd.store import StorageFull
from replication.cluster import ReplicationDriver, _promotion_audit
from replication.core import DRIFT
from replication.witness import MemoryStateStore, Witness

from .clock import sleep
from .network import SimNetwork
from .storage import DurableLog, SimStore
from .trace import CURRENT_PROCESS, Trace

# Tuesday 10 March 2026, 09:00 in Seoul: a working morning in the sample center's calendar.
BASE_WALL = datetime(2026, 3, 10, 9, 0, tzinfo=ZoneInfo("Asia/Seoul")).timestamp()
SECRET = b"disaster-recovery-simulation-secret"
WITNESS = "witness"


class ProcessClock:
    """A process's clocks on the virtual time line: a rate and offsets of its own."""

    def __init__(self, *, rate: float, monotonic_offset: float, wall_offset: float) -> None:
        self.rate = rate
        self.monotonic_offset = monotonic_offset
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.monotonic_offset + self.rate * trio.current_time()

    def wall(self) -> float:
        return BASE_WALL + self.wall_offset + self.rate * trio.current_time()


def draw_clock(rng: random.Random, *, drift: bool, edges: bool = False) -> ProcessClock:
    """A clock within the lease design's bound; `edges`: at one end of it or the other."""
    if edges:
        rate = 1.0 + (DRIFT / 2 if rng.random() < 0.5 else -DRIFT / 2)
    else:
        rate = 1.0 + rng.uniform(-DRIFT / 2, DRIFT / 2) if drift else 1.0
    return ProcessClock(rate=rate, monotonic_offset=rng.uniform(0, 10_000), wall_offset=rng.uniform(-1.0, 1.0) if drift else 0.0)


class SimReplica(ReplicationDriver):
    """The real replication member, reporting role changes to the simulation."""

    def __init__(self, node: Node, settings: Settings, *, sim: SimCluster, **options: Any) -> None:
        self.sim = sim
        super().__init__(node, settings, **options)

    def _become_primary(self, epoch: int, sent_at: float, *, witness_granted: bool, peer_granted: bool, **options: Any) -> None:
        super()._become_primary(epoch, sent_at, witness_granted=witness_granted, peer_granted=peer_granted, **options)
        self.sim.on_primary(self.name, epoch, witness_granted=witness_granted, peer_granted=peer_granted)

    def step_down(self, reason: str) -> None:
        was_primary = self.node.role == "primary"
        super().step_down(reason)
        if was_primary:
            self.sim.on_step_down(self.name, self.promised_epoch, reason)

    async def replicate(self, records: Any) -> None:
        if records:
            self.sim.on_replicate(self.name)
        await super().replicate(records)

    def _compare_states(self, reply: Any) -> bool:
        before = self.state_check.compared
        diverged = super()._compare_states(reply)
        self.sim.state_comparisons += self.state_check.compared - before
        if diverged and self.state_check.last is not None:
            self.sim.on_divergence(self.name, self.state_check.last.lsn)
        return diverged

    def lease_valid(self) -> bool:
        if buggify.bug("skip_lease_check"):
            return self.node.role == "primary"
        return super().lease_valid()


@dataclass
class Process:
    """One process of the cluster (node or witness) and its fault state."""

    name: str
    clock: ProcessClock
    state: str = "down"                  # "up" | "down"
    paused: bool = False
    disk_full: bool = False
    slow_disk_probability: float = 0.0
    slow_disk_seconds_max: float = 0.0
    crash_at_append_probability: float = 0.0
    fsync_median_seconds: float = 0.0    # every store.append takes a log-normal time (0: none)
    fsync_sigma: float = 1.0
    witness_fsync_probability: float = 0.0   # witness only: a save stalls the process
    witness_fsync_seconds_min: float = 0.0
    witness_fsync_seconds_max: float = 0.0
    pause_at_next_append: bool = False   # a scripted zombie: stop in the middle of a commit
    stalled: int = 0                     # busy: stalls in force (see SimCluster.stall)
    unstalled: trio.Event = field(default_factory=trio.Event)
    disk: DurableLog = field(default_factory=DurableLog)   # what its disk holds, for the checks
    incarnation: int = 0
    node: Node | None = None
    member: SimReplica | None = None
    witness: Witness | None = None
    scope: trio.CancelScope | None = None
    resumed: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)
    restart_pending: bool = False

    @property
    def up(self) -> bool:
        return self.state == "up"


class SimCluster:
    """Two nodes and a witness on one SimNetwork; every fault operation the scenarios use."""

    def __init__(self, settings: Settings, *, network: SimNetwork, trace: Trace, rng: random.Random,
                 drift: bool = True, drift_edges: bool = False, restart_seconds: float = 2.0) -> None:
        self.settings = settings
        self.network = network
        self.trace = trace
        self.rng = rng
        self.restart_seconds = restart_seconds
        self.names = [section.name for section in settings.nodes]
        self.processes: dict[str, Process] = {}
        for name in [*self.names, WITNESS]:
            self.processes[name] = Process(name, draw_clock(rng, drift=drift, edges=drift_edges))
        for section in settings.nodes:
            network.register(section.replication, section.name)
        assert settings.witness is not None
        network.register(settings.witness.address, WITNESS)
        self.witness_store = SimWitnessStore(settings.cluster.name, self)
        self.nursery: trio.Nursery | None = None
        # What the checks need: when each epoch's primary was elected, role changes, deaths.
        self.promotions: list[tuple[float, str, int]] = []
        self.step_downs: list[tuple[float, str, int, str]] = []
        self.deaths: list[tuple[float, str, str, bool]] = []   # (at, node, error, expected)
        self.divergences: list[tuple[float, str, int]] = []    # (at, primary, LSN): the alarm, raised
        self.state_comparisons = 0                             # state hashes compared, all primaries
        self.marks: list[tuple[float, str, str]] = []          # (at, node, what) for the chart
        self.changed = trio.Event()
        self.replicating: dict[str, trio.Event] = {}
        # Whether some node could acknowledge a write, each time that changed (role-based:
        # primary with a valid lease, running, disk not full).
        self.writable_now = False
        self.writable_changes: list[tuple[float, bool]] = []
        self.monitor: Any = None   # sim.dr.monitor.Monitor, set by the runner

    # ------------------------------------------------------------------ observation

    def process(self, name: str) -> Process:
        return self.processes[name]

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        writable = self.writable() is not None
        if writable != self.writable_now:
            self.writable_now = writable
            self.writable_changes.append((trio.current_time(), writable))

    def writable(self) -> Process | None:
        """The primary if it could acknowledge a write now (also: its disk takes writes)."""
        primary = self.primary()
        return primary if primary is not None and not primary.disk_full else None

    def on_primary(self, name: str, epoch: int, *, witness_granted: bool, peer_granted: bool) -> None:
        votes = "+".join(label for label, granted in (("witness", witness_granted), ("peer", peer_granted)) if granted)
        self.promotions.append((trio.current_time(), name, epoch))
        if self.monitor is not None:
            self.monitor.on_primary(name, epoch)
        self.trace.add("role", name, f"primary epoch {epoch} (votes: self+{votes})")
        self._changed()

    def on_divergence(self, name: str, lsn: int) -> None:
        self.divergences.append((trio.current_time(), name, lsn))
        self.trace.add("check", name, f"divergence alarm: the standby's state hash differs at lsn {lsn}")

    def on_step_down(self, name: str, epoch: int, reason: str) -> None:
        self.step_downs.append((trio.current_time(), name, epoch, reason))
        self.trace.add("role", name, f"standby epoch {epoch} ({reason})")
        self._changed()

    def on_replicate(self, name: str) -> None:
        event = self.replicating.pop(name, None)
        if event is not None:
            event.set()

    async def wait_replicating(self, name: str) -> None:
        """Until `name` (as primary) has a batch durable locally and on its way to the standby."""
        event = self.replicating.setdefault(name, trio.Event())
        await event.wait()

    def mark(self, node: str, what: str) -> None:
        self.marks.append((trio.current_time(), node, what))
        self.trace.add("fault", node, what)

    def primary(self) -> Process | None:
        """The process that would take a write now (role primary, lease valid, running)."""
        for name in self.names:
            process = self.processes[name]
            if process.up and not process.paused and process.node is not None and process.member is not None:
                if process.node.role == "primary" and process.member.can_accept():
                    return process
        return None

    def role(self, name: str) -> str:
        process = self.processes[name]
        if not process.up:
            return "down"
        if name == WITNESS:
            return "witness"
        assert process.node is not None
        return process.node.role

    # ------------------------------------------------------------------ life cycle

    def start(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        for name in [WITNESS, *self.names]:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        assert self.nursery is not None
        process = self.processes[name]
        process.state = "starting"
        process.stopped = trio.Event()
        runner = self._run_witness if name == WITNESS else self._run_node
        self.nursery.start_soon(runner, process)

    async def _run_node(self, process: Process) -> None:
        settings = self.settings
        name = process.name
        CURRENT_PROCESS.set(name)
        process.incarnation += 1
        store = None
        try:
            try:
                store = SimStore(
                    settings.data_dir(name), disk_full=lambda: process.disk_full, disk=process.disk,
                    cluster=settings.cluster.name, node=name,
                    map_size_bytes=settings.store.map_size_bytes, map_size_max_bytes=settings.store.map_size_max_bytes,
                )
                # Sealing keys from a generator of their own: deterministic, and drawing them
                # leaves the run's fault schedule (self.rng) as it was.
                keys = random.Random(f"keys:{name}:{process.incarnation}")
                node = Node(settings, name, clock=process.clock.wall, store=store, append_in_thread=False, random_bytes=keys.randbytes)
                member = SimReplica(node, settings, sim=self, network=self.network.endpoint(name),
                                   clock=process.clock.monotonic, secret=SECRET)
            except Exception as error:
                self._died(process, error)
                return
            process.node, process.member = node, member
            process.state = "up"
            self.trace.add("life", name, f"started (incarnation {process.incarnation}, lsn {node.lsn}, epoch {store.epoch()})")
            self._changed()
            try:
                with trio.CancelScope() as scope:
                    process.scope = scope
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(node.run_pipeline)
                        nursery.start_soon(member.run)
                        nursery.start_soon(_promotion_audit, member)
            except* Exception as group:
                self._died(process, group)
        finally:
            process.state = "down"
            process.scope = None
            if process.node is not None:
                process.node.close()
            elif store is not None:
                store.close()
            process.node = None
            process.member = None
            self.network.kill(name)
            process.stopped.set()
            self._changed()

    async def _run_witness(self, process: Process) -> None:
        settings = self.settings
        assert settings.witness is not None
        CURRENT_PROCESS.set(WITNESS)
        process.incarnation += 1
        try:
            witness = Witness(
                cluster=settings.cluster.name, address=settings.witness.address, store=self.witness_store,
                lease_seconds=settings.cluster.failover_timeout, secret=SECRET,
                network=self.network.endpoint(WITNESS), clock=process.clock.monotonic,
            )
            process.witness = witness
            process.state = "up"
            self.trace.add("life", WITNESS, f"started (incarnation {process.incarnation}, epoch {witness.core.state.promised_epoch})")
            try:
                with trio.CancelScope() as scope:
                    process.scope = scope
                    await witness.run()
            except* Exception as group:
                self._died(process, group)
        finally:
            process.state = "down"
            process.scope = None
            process.witness = None
            self.network.kill(WITNESS)
            process.stopped.set()
            self._changed()

    def _died(self, process: Process, error: BaseException) -> None:
        leaves = _leaves(error)
        # A full disk may end a process (the store's StorageFull, or the node's translation of
        # it escaping a task): it restarts, and the cluster must cope. Anything else is a bug.
        expected = all(isinstance(leaf, StorageFull | StorageFullError) for leaf in leaves)
        summary = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
        self.deaths.append((trio.current_time(), process.name, summary, expected))
        self.trace.add("death", process.name, summary if expected else summary + "\n" + "".join(traceback.format_exception(error)).rstrip())
        self.marks.append((trio.current_time(), process.name, "died"))
        if not process.restart_pending:
            process.restart_pending = True
            assert self.nursery is not None
            self.nursery.start_soon(self._restart_later, process)

    async def _restart_later(self, process: Process) -> None:
        await process.stopped.wait()
        await sleep(self.restart_seconds)
        process.restart_pending = False
        if process.state == "down":
            self.trace.add("life", process.name, "restarted by its supervisor")
            self._spawn(process.name)

    # ------------------------------------------------------------------ faults

    def crash(self, name: str) -> bool:
        """Kill the process now (no-op if it is not running)."""
        process = self.processes[name]
        if process.state != "up" or process.scope is None:
            return False
        self.mark(name, "crash")
        if process.paused:
            self._unpause(process)
        process.state = "crashing"
        process.scope.cancel()
        self.network.kill(name)
        self._changed()
        return True

    async def restart(self, name: str) -> None:
        """Start the process again on its data (waits until the old one is gone)."""
        process = self.processes[name]
        if process.state in ("up", "starting"):
            return
        await process.stopped.wait()
        if process.state == "down" and not process.restart_pending:
            self.mark(name, "restart")
            self._spawn(name)

    def pause(self, name: str) -> bool:
        process = self.processes[name]
        if process.state != "up" or process.paused:
            return False
        self.mark(name, "pause")
        process.paused = True
        process.resumed = trio.Event()
        self.network.pause(name)
        self._changed()
        return True

    def resume(self, name: str) -> None:
        process = self.processes[name]
        if process.paused:
            self.mark(name, "resume")
            self._unpause(process)

    def _unpause(self, process: Process) -> None:
        process.paused = False
        self.network.resume(process.name)
        process.resumed.set()
        self._changed()

    def stall(self, name: str, seconds: float, what: str = "busy") -> None:
        """`name` runs nothing for `seconds` (CPU starvation, a slow fsync): weather, not a fault."""
        process = self.processes[name]
        if seconds <= 0 or self.nursery is None:
            return
        process.stalled += 1
        self.network.pause(name)
        self.trace.add("fault", name, f"{what} for {seconds:.3f} s")
        self.nursery.start_soon(self._unstall, process, seconds)

    async def _unstall(self, process: Process, seconds: float) -> None:
        await sleep(seconds)
        process.stalled -= 1
        self.network.resume(process.name)
        if not process.stalled:
            process.unstalled.set()
            process.unstalled = trio.Event()

    def set_disk_full(self, name: str, full: bool) -> None:
        process = self.processes[name]
        if process.disk_full != full:
            process.disk_full = full
            self.mark(name, "disk full" if full else "disk freed")
            self._changed()

    def heal_all(self) -> None:
        """End every fault, the network's weather included, but the crashed processes (the liveness phase restarts those)."""
        for process in self.processes.values():
            if process.paused:
                self.resume(process.name)
            if process.disk_full:
                self.set_disk_full(process.name, False)
            process.slow_disk_probability = 0.0
            process.crash_at_append_probability = 0.0
            process.fsync_median_seconds = 0.0
            process.witness_fsync_probability = 0.0
            process.pause_at_next_append = False
        self.network.reply_loss.clear()
        self.network.policies.clear()   # links a script slowed down
        if self.network.cut:
            self.network.heal()
            self.marks.append((trio.current_time(), "*", "heal"))
            self.trace.add("heal", "*", "network healed")
        # The liveness phase asks whether the cluster converges once the trouble is over:
        # links keep their latency but no longer spike, reset, duplicate or reorder.
        self.network.calm()

    async def switchover(self) -> str:
        """A planned switchover on the current primary; the outcome as a short text."""
        from replication.cluster import SwitchoverRefused

        primary = self.primary()
        if primary is None or primary.member is None:
            return "no primary"
        self.mark(primary.name, "switchover")
        try:
            result = await primary.member.switchover()
        except SwitchoverRefused as refused:
            self.trace.add("fault", primary.name, f"switchover refused: {refused.code}")
            return f"refused: {refused.code}"
        except NodeError as error:  # the switchover's audit record could not be written
            self.trace.add("fault", primary.name, f"switchover failed: {type(error).__name__}: {error}")
            return f"failed: {type(error).__name__}"
        self.trace.add("fault", primary.name, f"switchover done to {result.get('to')} in {result.get('seconds')} s")
        return "done"

    # ------------------------------------------------------------------ hooks for acd.buggify

    def hooks(self, rng: random.Random) -> SimHooks:
        return SimHooks(self, rng)


class SimHooks:
    """`acd.buggify.Hooks`: what the fault points do in this simulation."""

    def __init__(self, cluster: SimCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.enabled: dict[str, bool] = {}
        self.fire_probability = 0.0
        self.appends_delayed = 0

    def fire(self, name: str, node: str) -> bool:
        # FoundationDB's rule: a point is enabled for the whole run or not at all, then fires
        # sometimes. No production code asks `fire` yet; the rule is here for the next point.
        if name not in self.enabled:
            self.enabled[name] = self.fire_probability > 0 and self.rng.random() < 0.25
        return self.enabled[name] and self.rng.random() < self.fire_probability

    async def point(self, name: str, node: str) -> None:
        process = self.cluster.processes.get(node)
        if process is None:
            return
        if name == "store.append" and process.pause_at_next_append:
            process.pause_at_next_append = False
            self.cluster.pause(node)
        await self._wait_running(process)
        if name == "store.append":
            if process.fsync_median_seconds:
                await sleep(min(5.0, process.fsync_median_seconds * self.rng.lognormvariate(0.0, process.fsync_sigma)))
                await self._wait_running(process)
            if process.slow_disk_probability and self.rng.random() < process.slow_disk_probability:
                self.appends_delayed += 1
                await sleep(self.rng.uniform(0.0, process.slow_disk_seconds_max))
                await self._wait_running(process)
            if process.crash_at_append_probability and self.rng.random() < process.crash_at_append_probability:
                self.cluster.crash(node)
                await trio.lowlevel.checkpoint()

    async def sleep(self, seconds: float) -> None:
        await sleep(seconds)

    @staticmethod
    async def _wait_running(process: Process) -> None:
        while process.paused or process.stalled:
            if process.paused:
                await process.resumed.wait()
            else:
                await process.unstalled.wait()


class SimWitnessStore(MemoryStateStore):
    """The witness's durable state; a save may be a slow fsync that stalls the witness process.

    The real witness saves synchronously before it replies, so a slow fsync holds its whole
    event loop: the reply to the request that changed the state, and every other request,
    wait. Here the state is kept at once (it is durable) and the process is stalled.
    """

    def __init__(self, cluster_name: str, cluster: SimCluster) -> None:
        super().__init__(cluster_name)
        self.cluster = cluster
        self.rng: random.Random | None = None

    def save(self, state: Any) -> None:
        super().save(state)
        if self.cluster.monitor is not None:
            self.cluster.monitor.on_witness_saved(state.behind)
        process = self.cluster.processes[WITNESS]
        if self.rng is not None and process.witness_fsync_probability and self.rng.random() < process.witness_fsync_probability:
            low = min(process.witness_fsync_seconds_min, process.witness_fsync_seconds_max)
            self.cluster.stall(WITNESS, self.rng.uniform(low, process.witness_fsync_seconds_max), "slow fsync")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in error.exceptions:
            found.extend(_leaves(inner))
        return found
    return [error]

