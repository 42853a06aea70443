"""An in-memory network for the cluster simulator: `replication.network.Network` with faults.

Replication talks over reliable byte streams (TCP in production), so the faults a real
network can inflict on it are the ones TCP lets through, and that is what this network
injects. What each fault means, and what it does to a stream:

| fault | on a TCP stream | here |
|---|---|---|
| delay | latency, jitter, spikes; bytes stay in order | each chunk is delivered at `max(now + latency, previous chunk)` |
| drop | a lost segment is retransmitted; a lost *connection* is a reset | `reset`: both ends get `BrokenResourceError` |
| partition | segments do not arrive; the connection hangs, it does not fail | bytes (and the FIN of a close) are held until the link heals; `connect` hangs |
| one-way partition | one direction holds, the other flows | the same, per direction |
| pause (SIGSTOP) | the kernel keeps the connection; nothing is read or written | bytes to and from the paused node are held until it resumes |
| crash | the kernel resets the process's connections | `reset` of every connection of the node; its listener is gone (refused) |
| lost reply | the request arrived and was applied; the connection dies before the reply crosses | `reply_loss`: a send by the *serving* end (a witness's or a peer's reply, an append acknowledgement) resets the connection instead, with the probability set for that process |
| held connection | one connection's segments are lost and retransmitted with backoff for seconds, while a new connection goes through | `hold_open_connections`: bytes sent on the connections open now arrive no earlier than a given time; a request whose sender gave up and closed the connection is still read, late |
| duplicate, reorder | cannot happen inside one TCP stream | `corrupt`: a chunk delivered twice or swapped with the next; models a replayed or mangled frame, which the protocol's sequence numbers and HMAC must catch (it closes the connection) |

Messages on *different* connections (witness and peer, an old and a new connection) do
overtake each other: every connection has its own latency draws, and a reconnecting client
may resend a request whose first copy was processed. That is the reordering and duplication
replication really has to survive, and it happens here by construction.

Each node sees the network through its own `Endpoint` (`network.endpoint("a")`), which knows
who is connecting, so that partitions can be per pair of nodes.
"""

from __future__ import annotations

import errno
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .clock import Wakeup, clock, sleep
from .trace import CURRENT_PROCESS

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


@dataclass
class LinkPolicy:
    """How one direction of a link behaves (seconds and per-chunk probabilities)."""

    latency_seconds: float = 0.0005      # one-way base latency
    jitter_seconds: float = 0.0002       # mean of an exponential extra delay
    spike_probability: float = 0.0       # a chunk is held up by `spike_seconds_max` at most
    spike_seconds_max: float = 0.2
    reset_probability: float = 0.0       # a send resets the connection (a dropped connection)
    duplicate_probability: float = 0.0   # a chunk arrives twice (replayed frame)
    reorder_probability: float = 0.0     # a chunk swaps places with the one before it


@dataclass
class NetworkStatistics:
    connections: int = 0
    refused: int = 0
    resets: int = 0
    chunks: int = 0
    bytes: int = 0
    spikes: int = 0
    duplicated: int = 0
    reordered: int = 0
    replies_lost: int = 0


class _Pipe:
    """One direction of a connection: chunks with delivery times, then maybe end-of-stream."""

    __slots__ = ("src", "dst", "chunks", "eof", "broken", "reader_closed", "last_deliver_at", "waiting", "wake_at")

    def __init__(self, src: str, dst: str) -> None:
        self.src = src
        self.dst = dst
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.eof = False
        self.broken = False
        self.reader_closed = False
        self.last_deliver_at = 0.0
        # The reader, while it waits, and the time its timer wakes it (the first chunk's delivery).
        self.waiting: Wakeup | None = None
        self.wake_at = math.inf

    def deliver_by(self, at: float) -> None:
        """A chunk was queued for `at`: wake the reader then (not now, to find it not yet due)."""
        waiting = self.waiting
        if waiting is not None and at < self.wake_at:
            self.wake_at = at
            clock().wake_at(at, waiting)

    def notify(self) -> None:
        waiting = self.waiting
        if waiting is not None:
            waiting.wake()


class Connection:
    """Both directions between a client endpoint and a server endpoint."""

    def __init__(self, network: SimNetwork, client: str, server: str, address: str) -> None:
        self.network = network
        self.client = client
        self.server = server
        self.address = address
        self.up = _Pipe(client, server)
        self.down = _Pipe(server, client)
        self.client_stream = SimStream(self, send=self.up, receive=self.down)
        self.server_stream = SimStream(self, send=self.down, receive=self.up)
        self.alive = True
        self.server_sends = 0

    def involves(self, name: str) -> bool:
        return name in (self.client, self.server)

    def reset(self) -> None:
        if not self.alive:
            return
        self.alive = False
        for pipe in (self.up, self.down):
            pipe.broken = True
            pipe.notify()
        self.network._forget(self)

    def notify(self) -> None:
        self.up.notify()
        self.down.notify()

    def maybe_finished(self) -> None:
        if self.client_stream.closed and self.server_stream.closed:
            self.alive = False
            self.network._forget(self)


class SimStream(trio.abc.Stream):
    """One end of a simulated connection."""

    def __init__(self, connection: Connection, *, send: _Pipe, receive: _Pipe) -> None:
        self.connection = connection
        self._send = send
        self._receive = receive
        self.closed = False
        self._send_conflict = False
        self._receive_conflict = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._send_conflict:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._send_conflict = True
        try:
            # A cancellation point but no schedule point: the simulator's speed is its number
            # of task steps, and a send never blocks here (the buffer is unbounded).
            await trio.lowlevel.checkpoint_if_cancelled()
            if self.closed:
                raise trio.ClosedResourceError("this end of the stream is closed")
            pipe = self._send
            if pipe.broken or pipe.reader_closed:
                raise trio.BrokenResourceError("connection reset by peer")
            if not data:
                return
            network = self.connection.network
            policy = network.policy(pipe.src, pipe.dst)
            rng = network.rng
            loss = 0.0
            if pipe is self.connection.down:
                self.connection.server_sends += 1
                if self.connection.server_sends > 1:  # a reply, not the server's Hello
                    loss = network.reply_loss.get(pipe.src, 0.0)
            if loss and rng.random() < loss:
                # The server applied the request; its reply dies with the connection.
                network.trace("net", pipe.src, f"reply lost {pipe.src}->{pipe.dst} ({self.connection.address})")
                network.statistics.replies_lost += 1
                self.connection.reset()
                raise trio.BrokenResourceError("connection reset (simulated lost reply)")
            if policy.reset_probability and rng.random() < policy.reset_probability:
                network.trace("net", pipe.src, f"connection reset {pipe.src}->{pipe.dst} ({self.connection.address})")
                network.statistics.resets += 1
                self.connection.reset()
                raise trio.BrokenResourceError("connection reset (simulated drop)")
            chunk = bytes(data)
            deliver_at = max(trio.current_time() + network.latency(policy), pipe.last_deliver_at)
            pipe.last_deliver_at = deliver_at
            network.statistics.chunks += 1
            network.statistics.bytes += len(chunk)
            if policy.reorder_probability and pipe.chunks and rng.random() < policy.reorder_probability:
                # Swap with the chunk still in flight before it (keeping delivery times in order).
                previous_at, previous = pipe.chunks.pop()
                pipe.chunks.append((previous_at, chunk))
                pipe.chunks.append((deliver_at, previous))
                network.statistics.reordered += 1
            else:
                pipe.chunks.append((deliver_at, chunk))
            if policy.duplicate_probability and rng.random() < policy.duplicate_probability:
                pipe.chunks.append((deliver_at, chunk))
                network.statistics.duplicated += 1
            if network.flowing(pipe.src, pipe.dst):
                pipe.deliver_by(pipe.chunks[0][0])
            # else: held by a partition; healing it wakes every reader (SimNetwork.heal)
        finally:
            self._send_conflict = False

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receive_conflict:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receive_conflict = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            pipe = self._receive
            network = self.connection.network
            while True:
                if self.closed:
                    raise trio.ClosedResourceError("this end of the stream is closed")
                if pipe.broken:
                    raise trio.BrokenResourceError("connection reset by peer")
                flowing = network.flowing(pipe.src, pipe.dst)
                now = trio.current_time()
                if flowing and pipe.chunks and pipe.chunks[0][0] <= now:
                    deliver_at, chunk = pipe.chunks.popleft()
                    if max_bytes is not None and len(chunk) > max_bytes:
                        pipe.chunks.appendleft((deliver_at, chunk[max_bytes:]))
                        chunk = chunk[:max_bytes]
                    return chunk
                if flowing and not pipe.chunks and pipe.eof:
                    return b""
                # One task step per delivery: the reader sleeps until the first chunk is due,
                # and a sender brings that time forward (deliver_by) rather than waking the
                # reader to find its chunk still in flight.
                pipe.waiting = waiting = Wakeup()
                pipe.wake_at = math.inf
                if flowing and pipe.chunks:
                    pipe.deliver_by(pipe.chunks[0][0])
                try:
                    await waiting.wait()
                finally:
                    pipe.waiting = None
        finally:
            self._receive_conflict = False

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            # Our FIN travels like data: it is held by a partition like any byte before it.
            self._send.eof = True
            self._send.notify()
            self._receive.reader_closed = True
            self._receive.chunks.clear()
            self._receive.notify()
            self.connection.maybe_finished()
        await trio.lowlevel.checkpoint_if_cancelled()


@dataclass
class _Listener:
    owner: str
    handler: Handler
    nursery: trio.Nursery


@dataclass
class SimNetwork:
    """Every node's and the witness's connections, partitions and pauses, on the virtual clock."""

    rng: random.Random
    default_policy: LinkPolicy = field(default_factory=LinkPolicy)
    trace: Callable[[str, str, str], None] = lambda kind, node, text: None

    def __post_init__(self) -> None:
        self.owners: dict[str, str] = {}           # address -> endpoint name
        self.listeners: dict[str, _Listener] = {}
        self.connections: list[Connection] = []
        self.cut: set[tuple[str, str]] = set()     # directed: bytes from src do not reach dst
        self.paused: set[str] = set()
        self._holds: dict[str, int] = {}           # pause() and stall() calls not yet undone, per process
        self.reply_loss: dict[str, float] = {}     # per serving process: probability a reply is lost
        self.policies: dict[tuple[str, str], LinkPolicy] = {}
        self.statistics = NetworkStatistics()
        self.changed = trio.Event()

    # ------------------------------------------------------------------ wiring

    def endpoint(self, name: str) -> Endpoint:
        return Endpoint(self, name)

    def register(self, address: str, owner: str) -> None:
        self.owners[address] = owner

    def policy(self, src: str, dst: str) -> LinkPolicy:
        return self.policies.get((src, dst), self.default_policy)

    def latency(self, policy: LinkPolicy) -> float:
        delay = policy.latency_seconds
        if policy.jitter_seconds:
            delay += self.rng.expovariate(1.0 / policy.jitter_seconds)
        if policy.spike_probability and self.rng.random() < policy.spike_probability:
            delay += self.rng.uniform(0.0, policy.spike_seconds_max)
            self.statistics.spikes += 1
        return delay

    def flowing(self, src: str, dst: str) -> bool:
        """Bytes from `src` reach `dst` now (no cut in that direction, neither end paused)."""
        return (src, dst) not in self.cut and src not in self.paused and dst not in self.paused

    def _forget(self, connection: Connection) -> None:
        try:
            self.connections.remove(connection)
        except ValueError:
            pass

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        for connection in list(self.connections):
            connection.notify()

    # ------------------------------------------------------------------ faults

    def partition(self, side: set[str] | frozenset[str], other: set[str] | frozenset[str], *, one_way: bool = False) -> None:
        """Cut every link from `side` to `other` (and back unless `one_way`)."""
        for src in side:
            for dst in other:
                if src != dst:
                    self.cut.add((src, dst))
                    if not one_way:
                        self.cut.add((dst, src))
        self._changed()

    def heal(self) -> None:
        self.cut.clear()
        self._changed()

    def calm(self) -> None:
        """End the weather: latency and jitter stay; spikes, resets, duplicates and reorders stop."""
        def quiet(policy: LinkPolicy) -> LinkPolicy:
            return LinkPolicy(latency_seconds=policy.latency_seconds, jitter_seconds=policy.jitter_seconds)

        self.default_policy = quiet(self.default_policy)
        self.policies = {link: quiet(policy) for link, policy in self.policies.items()}

    def pause(self, name: str) -> None:
        """Hold bytes to and from `name` (a paused or busy process) until as many `resume`s."""
        self._holds[name] = self._holds.get(name, 0) + 1
        self.paused.add(name)
        self._changed()

    def hold_open_connections(self, src: str, dst: str, until: float, only: list[Connection] | None = None) -> list[Connection]:
        """What `src` sends on its connections to `dst` open now (or on `only` of them) arrives
        no earlier than `until` (a TCP connection whose segments are lost and retransmitted
        with backoff); connections opened later flow. A client that gives up on such a
        connection and closes it leaves its request buffered there: the server reads it late.
        Returns the connections held."""
        held = []
        for connection in self.connections:
            if connection.client != src or connection.server != dst or not connection.alive:
                continue
            if only is not None and connection not in only:
                continue
            pipe = connection.up
            pipe.last_deliver_at = max(pipe.last_deliver_at, until)
            pipe.chunks = deque((max(at, until), chunk) for at, chunk in pipe.chunks)
            held.append(connection)
        return held

    def resume(self, name: str) -> None:
        left = self._holds.get(name, 0) - 1
        if left > 0:
            self._holds[name] = left
            return
        self._holds.pop(name, None)
        self.paused.discard(name)
        self._changed()

    def kill(self, name: str) -> int:
        """`name`'s process died: the kernel resets its connections and stops its listeners."""
        for address, listener in list(self.listeners.items()):
            if listener.owner == name:
                del self.listeners[address]
        doomed = [connection for connection in self.connections if connection.involves(name)]
        for connection in doomed:
            connection.reset()
        self.statistics.resets += len(doomed)
        return len(doomed)

    def reset_random(self) -> Connection | None:
        """Reset one live connection chosen by the seed (a dropped connection)."""
        if not self.connections:
            return None
        connection = self.rng.choice(self.connections)
        connection.reset()
        self.statistics.resets += 1
        return connection

    # ------------------------------------------------------------------ Network protocol

    async def connect(self, src: str, address: str) -> SimStream:
        await trio.lowlevel.checkpoint_if_cancelled()
        dst = self.owners.get(address)
        if dst is None:
            raise OSError(errno.EHOSTUNREACH, f"no route to {address}")
        # A SYN (or its answer) that cannot cross waits, as TCP retries it; the caller's own
        # timeout ends the wait.
        while not (self.flowing(src, dst) and self.flowing(dst, src)):
            await self.changed.wait()
        policy_there = self.policy(src, dst)
        policy_back = self.policy(dst, src)
        round_trip = self.latency(policy_there) + self.latency(policy_back)
        if round_trip > 0:
            await sleep(round_trip)
        listener = self.listeners.get(address)
        if listener is None:
            self.statistics.refused += 1
            raise OSError(errno.ECONNREFUSED, f"connection refused by {address}")
        connection = Connection(self, src, listener.owner, address)
        self.connections.append(connection)
        self.statistics.connections += 1
        listener.nursery.start_soon(_serve_as, listener.owner, listener.handler, connection.server_stream)
        return connection.client_stream

    async def serve(self, owner: str, address: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listener = _Listener(owner, handler, nursery)
            self.listeners[address] = listener
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                if self.listeners.get(address) is listener:
                    del self.listeners[address]


async def _serve_as(owner: str, handler: Handler, stream: SimStream) -> None:
    CURRENT_PROCESS.set(owner)  # the handler runs in the listener's process, not the caller's
    await handler(stream)


class Endpoint:
    """One node's (or the witness's) view of the network: `replication.network.Network`."""

    def __init__(self, network: SimNetwork, name: str) -> None:
        self.network = network
        self.name = name

    async def connect(self, address: str) -> trio.abc.Stream:
        return await self.network.connect(self.name, address)

    async def serve(self, address: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.network.serve(self.name, address, handler, task_status=task_status)
