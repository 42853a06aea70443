"""The clients of the simulated cluster: a PBX sending calls, agents working them, a probe.

Everything goes through `Node.submit()`, the entry point the HTTP API uses, on whichever
node the client believes is primary. Like a real client it follows `NotPrimary.primary`,
tries the other node when one is down, gives up waiting after a timeout, and retries
idempotently (docs/design.md: repeating a command that took effect succeeds again). Reads (an
agent's desktop looking for an offer, a caller checking whether they are still waiting) look
at the state of the node the client believes is primary, as `GET /v1/...` would.

Every acknowledged write goes into `History`, with the node, epoch and LSN of its record and
the virtual instant of the reply: the raw material of the invariant checks.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

import trio

from acd.core import CallState, Presence, Rejection, commands
from acd.node.node import Accepted, NodeClosed, NodeError, NotPrimary, StorageFullError
from acd.store import StoreError

from .clock import sleep
from .cluster import SimCluster
from .trace import Trace


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged write, as the client saw it."""

    at: float
    node: str
    epoch: int
    lsn: int
    kind: str
    subject: str
    payload: bytes
    reply: tuple[str, ...] = ()   # the events the reply carried (their types)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    label: str
    fault_at: float
    node: str            # the primary hit by the fault
    epoch_before: int
    acked_at: float | None = None
    epoch_after: int = 0
    acked_by: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.fault_at

    @property
    def failed_over(self) -> bool:
        return self.acked_at is not None and self.epoch_after > self.epoch_before


@dataclass
class History:
    acks: list[Ack] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    probes: list[ProbeResult] = field(default_factory=list)


def describe(command: commands.Command) -> tuple[str, str]:
    kind = type(command).__struct_config__.tag
    subject = " ".join(str(getattr(command, name)) for name in ("id", "call", "agent", "action") if hasattr(command, name))
    return str(kind), subject


class Client:
    """One client connection's behaviour: find the primary, submit, retry, record the ack."""

    def __init__(self, cluster: SimCluster, history: History, trace: Trace, *, timeout_seconds: float = 2.0,
                 retry_seconds: float = 0.1) -> None:
        self.cluster = cluster
        self.history = history
        self.trace = trace
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.guess = cluster.names[0]
        self._api = {section.api: section.name for section in cluster.settings.nodes}

    def _other(self, name: str) -> str:
        names = self.cluster.names
        return names[(names.index(name) + 1) % len(names)]

    def view(self):  # type: ignore[no-untyped-def]
        """The state of the node believed primary (None while it is down or paused)."""
        process = self.cluster.processes[self.guess]
        if process.up and not process.paused and process.node is not None:
            monitor = self.cluster.monitor
            if monitor is not None:
                monitor.on_read(process)
            return process.node.center
        return None

    async def submit(self, command: commands.Command, *, give_up_after: float = 30.0) -> Accepted | Rejection | None:
        counters = self.history.counters
        deadline = trio.current_time() + give_up_after
        target = self.guess
        backoff = self.retry_seconds
        first = True
        while trio.current_time() < deadline:
            if not first:
                # Like a real client: retry soon, then back off (up to a second) while the
                # cluster has no primary to offer.
                await sleep(backoff)
                backoff = min(1.0, backoff * 1.5)
            first = False
            process = self.cluster.processes[target]
            node = process.node
            if not process.up or node is None:
                counters["refused_down"] += 1
                target = self._other(target)
                continue
            if process.paused:
                # The request sits in the socket of a stopped process until our timeout.
                with trio.move_on_after(self.timeout_seconds):
                    await process.resumed.wait()
                if process.paused:
                    counters["timeout"] += 1
                    target = self._other(target)
                    continue
            try:
                with trio.move_on_after(self.timeout_seconds) as scope:
                    result = await node.submit(command)
            except NotPrimary as error:
                counters["not_primary"] += 1
                target = self._api.get(error.primary or "", "") or self._other(target)
                continue
            except NodeClosed:
                counters["node_closed"] += 1
                target = self._other(target)
                continue
            except StorageFullError:
                counters["storage_full"] += 1
                continue
            except NodeError as error:  # any other refusal of the node: try again
                counters[f"node_error_{type(error).__name__}"] += 1
                continue
            if scope.cancelled_caught:
                counters["timeout"] += 1
                target = self._other(target)
                continue
            self.guess = target
            if isinstance(result, Accepted):
                self._record(process.name, node, command, result)
            else:
                counters["rejected"] += 1
            return result
        counters["gave_up"] += 1
        return None

    def _record(self, name: str, node, command: commands.Command, result: Accepted) -> None:  # type: ignore[no-untyped-def]
        # The bytes the node logged (an arrival's number is sealed there, under a fresh key:
        # not the bytes of the command as sent).
        payload = commands.encode_command(command)
        try:
            records = node.store.read(result.lsn - 1, 1)
        except StoreError:
            records = []
        if records:
            epoch = records[0].epoch
            payload = records[0].payload
        else:
            # Pruned already (retention ran between the commit and this reply, as in a burst):
            # the epoch history still says which epoch wrote that LSN.
            covering = [e for e, first in node.store.epoch_history().items() if first <= result.lsn]
            epoch = max(covering) if covering else node.store.epoch()
        kind, subject = describe(command)
        ack = Ack(trio.current_time(), name, epoch, result.lsn, kind, subject, payload,
                  tuple(type(event).__name__ for event in result.events))
        self.history.acks.append(ack)
        monitor = self.cluster.monitor
        if monitor is not None:
            monitor.on_ack(ack)
        self.history.counters["acked"] += 1
        self.trace.add("ack", "client", f"{name} e{epoch} lsn {result.lsn} {kind} {subject}")


# The voice agents of the sample center the workload staffs, the chat agent, and where calls go.
VOICE_AGENTS = ("kim", "lee", "park", "cho", "yoon", "seo")
CHAT_AGENTS = ("son",)
QUEUES = (("transport", "voice", 0.45), ("welfare", "voice", 0.2), ("tax", "voice", 0.15),
          ("culture", "voice", 0.1), ("text", "chat", 0.1))


@dataclass
class WorkloadShape:
    calls_per_hour: float = 200.0          # 2,000 calls over a ten-hour day
    talk_seconds_mean: float = 25.0
    wrap_seconds_mean: float = 5.0
    patience_seconds_mean: float = 90.0
    ring_seconds_max: float = 5.0
    break_probability: float = 0.01        # per poll, an agent takes a short break
    client_timeout_seconds: float = 2.0    # how long a client waits for one reply before trying again


class Workload:
    def __init__(self, cluster: SimCluster, history: History, trace: Trace, rng: random.Random, shape: WorkloadShape) -> None:
        self.cluster = cluster
        self.history = history
        self.trace = trace
        self.rng = rng
        self.shape = shape
        self.client = Client(cluster, history, trace, timeout_seconds=shape.client_timeout_seconds)
        self.calls = 0
        self.arriving = True
        self.breaks = True
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for name in VOICE_AGENTS + CHAT_AGENTS:
                nursery.start_soon(self._agent, name)
            nursery.start_soon(self._arrivals)

    # ------------------------------------------------------------------ callers

    async def _arrivals(self) -> None:
        rate = self.shape.calls_per_hour / 3600.0
        if rate <= 0:
            return
        queues = [(name, channel) for name, channel, _ in QUEUES]
        weights = [weight for _, _, weight in QUEUES]
        while True:
            await sleep(self.rng.expovariate(rate))
            if not self.arriving:
                return
            self.calls += 1
            call_id = f"c{self.calls}"
            queue, channel = self.rng.choices(queues, weights)[0]
            caller = f"010{self.rng.randrange(10**7, 10**8)}"
            assert self.nursery is not None
            self.nursery.start_soon(self._caller, commands.Arrive(id=call_id, queue=queue, caller=caller, channel=channel))

    async def _caller(self, arrive: commands.Arrive) -> None:
        patience = self.rng.expovariate(1.0 / self.shape.patience_seconds_mean)
        result = await self.client.submit(arrive)
        if result is None or isinstance(result, Rejection):
            return
        await sleep(patience)
        center = self.client.view()
        call = center.state.interactions.get(arrive.id) if center is not None else None
        if call is not None and call.state in (CallState.WAITING, CallState.OFFERED):
            await self.client.submit(commands.Abandon(call=arrive.id))

    # ------------------------------------------------------------------ agents

    async def _agent(self, name: str) -> None:
        client = Client(self.cluster, self.history, self.trace, timeout_seconds=self.shape.client_timeout_seconds)
        await client.submit(commands.Login(agent=name))
        await client.submit(commands.Ready(agent=name))
        answered: set[str] = set()
        on_break_until = 0.0
        while True:
            await sleep(self.rng.uniform(1.0, 3.0))
            center = client.view()
            if center is None:
                continue
            record = center.state.agents.get(name)
            if record is None:
                continue
            now = trio.current_time()
            if record.presence is Presence.LOGGED_OUT:
                await client.submit(commands.Login(agent=name))
                continue
            if record.offer is not None and record.offer not in answered:
                call_id = record.offer
                await sleep(self.rng.uniform(0.2, self.shape.ring_seconds_max))
                result = await client.submit(commands.Answer(call=call_id, agent=name))
                if result is not None and not isinstance(result, Rejection):
                    answered.add(call_id)
                    assert self.nursery is not None
                    self.nursery.start_soon(self._conversation, client, name, call_id)
                continue
            if record.presence is Presence.NOT_READY and now >= on_break_until and not record.pending:
                await client.submit(commands.Ready(agent=name))
                continue
            if self.breaks and record.presence is Presence.READY and not record.held and self.rng.random() < self.shape.break_probability:
                on_break_until = now + self.rng.uniform(5.0, 40.0)
                await client.submit(commands.NotReady(agent=name, reason="break"))

    async def _conversation(self, client: Client, agent: str, call_id: str) -> None:
        await sleep(self.rng.expovariate(1.0 / self.shape.talk_seconds_mean))
        await client.submit(commands.Hangup(call=call_id))
        await sleep(self.rng.expovariate(1.0 / self.shape.wrap_seconds_mean))
        await client.submit(commands.WrapUp(call=call_id, agent=agent, disposition="resolved"))

    # ------------------------------------------------------------------ the end of the day

    def stop_arrivals(self) -> None:
        self.arriving = False
        self.breaks = False

    async def finish_all(self, *, rounds: int = 20) -> list[str]:
        """End every interaction still open (invariant 8 is checked on a finished day)."""
        open_ids: list[str] = []
        for _ in range(rounds):
            center = self.client.view()
            if center is None:
                primary = self.cluster.primary()
                center = primary.node.center if primary is not None and primary.node is not None else None
                if primary is not None:
                    self.client.guess = primary.name
            if center is None:
                await sleep(0.5)
                continue
            open_ids = []
            for call in list(center.state.interactions.values()):
                if call.state in (CallState.WAITING, CallState.OFFERED, CallState.SCHEDULED):
                    open_ids.append(call.id)
                    await self.client.submit(commands.Abandon(call=call.id))
                elif call.state is CallState.CONNECTED:
                    open_ids.append(call.id)
                    await self.client.submit(commands.Hangup(call=call.id))
                elif call.state is CallState.WRAPUP:
                    open_ids.append(call.id)
                    await self.client.submit(commands.WrapUp(call=call.id, agent=call.agent or "", disposition="resolved"))
            if not open_ids:
                return []
            await sleep(0.2)
        return open_ids

    async def probe(self, label: str, node: str, epoch_before: int) -> None:
        """Write until a write is acknowledged after a fault: the failover time."""
        fault_at = trio.current_time()
        index = len(self.history.probes)
        self.history.probes.append(ProbeResult(label, fault_at, node, epoch_before))
        client = Client(self.cluster, self.history, self.trace, timeout_seconds=0.5, retry_seconds=0.05)
        result = await client.submit(commands.Audit(actor="dr-probe", action="probe", detail=label[:200]), give_up_after=math.inf)
        ack = self.history.acks[-1] if isinstance(result, Accepted) else None
        if ack is not None and ack.kind == "audit":
            self.history.probes[index] = ProbeResult(label, fault_at, node, epoch_before, ack.at, ack.epoch, ack.node)
            self.trace.add("probe", ack.node, f"first write after '{label}' in {ack.at - fault_at:.3f} s (epoch {epoch_before} -> {ack.epoch})")
