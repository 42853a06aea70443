"""The witness: the third vote that lets a two-node cluster fail over without split brain.

The witness holds no log. It remembers, durably, the highest epoch it has promised and to
whom (the leader), and which node, if any, is recorded as *behind* (the primary went on
without it in sync mode). In memory it holds the lease it granted: until `lease_until` it
votes for nobody else. After a restart it assumes the lease it may have granted before is
still running for a full lease period, because it cannot know otherwise.

Rules (`WitnessCore.handle`):
- a vote for an epoch lower than the promised one is refused (`stale_epoch`);
- a renewal by the current leader for the promised epoch extends the lease;
- an election for a higher epoch is granted unless another node's lease is still running
  (`lease_held`) or the candidate is recorded behind (`behind`, unless forced);
- a pre-vote (`pre=True`) gets the answer that election would get and changes nothing;
- `RecordBehind`/`ClearBehind`/`Release` are accepted only from the current leader for the
  promised epoch while its lease runs;
- a `RecordBehind` or `ClearBehind` whose (epoch, sequence) is older than the last one applied
  is refused (`stale_request`) and changes nothing: a request the primary gave up on, still
  buffered on a connection it dropped, cannot undo a later request it saw confirmed. The same
  request again (a resend keeps its number) is applied again, to the same effect;
- a message that names a node not in the cluster's `[[nodes]]` (as candidate, leader, or node
  to record behind) is refused and changes nothing (`unknown_node`): whoever holds the secret,
  or reaches a witness without one, cannot make it promise an epoch to a stranger.

On the network a connection must say who it is in its Hello: a configured node, or `status`
for `acd status` (which may only ask for the status); a node may speak only for itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path

import msgspec
import trio

from .protocol import (
    PREAUTH_FRAME_BYTES_MAX,
    Ack,
    Channel,
    ClearBehind,
    FrameError,
    HandshakeError,
    Message,
    RecordBehind,
    Release,
    StatusRequest,
    VoteReply,
    VoteRequest,
    WitnessStatus,
    admission,
    handshake,
)

log = logging.getLogger("acd.witness")


class WitnessState(msgspec.Struct, kw_only=True):
    cluster: str
    promised_epoch: int = 0
    leader: str = ""
    behind: str = ""
    behind_since_epoch: int = 0
    # The newest behind request applied, (epoch, sequence): an older one is refused
    # (`stale_request`). Absent from an older witness's file: nothing applied yet.
    behind_request_epoch: int = 0
    behind_request_sequence: int = 0


class WitnessCore:
    """The witness's decisions, free of I/O: `handle(message, now)` -> reply, state changed."""

    def __init__(self, state: WitnessState, *, lease_seconds: float, now: float, nodes: Collection[str] | None = None) -> None:
        self.state = state
        self.lease_seconds = lease_seconds
        # The cluster's [[nodes]] names; None: any name (the simulator and unit tests).
        self.nodes = frozenset(nodes) if nodes is not None else None
        # After a (re)start, honour any lease granted before for a whole period.
        self.lease_until = now + lease_seconds if state.leader else 0.0
        self.votes = 0
        self.refusals = 0

    def handle(self, message: Message, now: float) -> tuple[Message, bool]:
        """The reply, and whether the durable state changed (must be saved before replying)."""
        state = self.state
        unknown = self._unknown_node(message)
        if unknown is not None:
            log.warning("witness refused %s naming unknown node %r", type(message).__name__, unknown)
            if isinstance(message, VoteRequest):
                return self._refuse(message, "unknown_node"), False
            return Ack(ok=False, reason="unknown_node", epoch=state.promised_epoch), False
        if isinstance(message, VoteRequest):
            if message.epoch < state.promised_epoch:
                return self._refuse(message, "stale_epoch"), False
            if message.renew:
                if message.epoch == state.promised_epoch and message.candidate == state.leader:
                    self.lease_until = now + self.lease_seconds
                    return self._grant(message), False
                return self._refuse(message, "not_leader"), False
            if message.epoch == state.promised_epoch:
                if message.candidate == state.leader:
                    return self._grant(message), False  # a retried election we already granted
                return self._refuse(message, "epoch_taken"), False
            if state.leader and state.leader != message.candidate and now < self.lease_until and not message.force:
                return self._refuse(message, "lease_held"), False
            if state.behind == message.candidate and not message.force:
                return self._refuse(message, "behind"), False
            if message.pre:  # would grant; nothing is recorded
                return self._grant(message), False
            state.promised_epoch = message.epoch
            state.leader = message.candidate
            if state.behind == message.candidate:
                state.behind = ""
            if message.peer_behind and message.peer_behind != message.candidate:
                state.behind = message.peer_behind
                state.behind_since_epoch = message.epoch
            self.lease_until = now + self.lease_seconds
            self.votes += 1
            log.info("witness granted epoch=%d leader=%s", message.epoch, message.candidate)
            return self._grant(message), True
        if isinstance(message, RecordBehind | ClearBehind | Release):
            leader = message.node if isinstance(message, Release) else message.primary
            if message.epoch != state.promised_epoch or leader != state.leader:
                return Ack(ok=False, reason="stale_epoch", epoch=state.promised_epoch), False
            if now >= self.lease_until:
                return Ack(ok=False, reason="lease_expired", epoch=state.promised_epoch), False
            if isinstance(message, Release):
                self.lease_until = 0.0
                log.info("witness released epoch=%d leader=%s", message.epoch, leader)
                return Ack(ok=True, epoch=state.promised_epoch), False
            order = (message.epoch, message.sequence)
            if order < (state.behind_request_epoch, state.behind_request_sequence):
                log.warning("witness refused a stale %s epoch=%d sequence=%d (applied sequence %d)", type(message).__name__,
                            message.epoch, message.sequence, state.behind_request_sequence)
                return Ack(ok=False, reason="stale_request", epoch=state.promised_epoch), False
            state.behind_request_epoch, state.behind_request_sequence = order
            if isinstance(message, RecordBehind):
                state.behind = message.standby
                state.behind_since_epoch = message.epoch
                log.warning("witness recorded standby=%s behind at lsn=%d epoch=%d", message.standby, message.lsn, message.epoch)
            else:
                if state.behind == message.standby:
                    state.behind = ""
                    log.info("witness cleared standby=%s epoch=%d", message.standby, message.epoch)
            return Ack(ok=True, epoch=state.promised_epoch), True
        if isinstance(message, StatusRequest):
            return self.status(now), False
        return Ack(ok=False, reason="unexpected_message"), False

    def _unknown_node(self, message: Message) -> str | None:
        """A node name in `message` that is not one of the cluster's nodes, if any."""
        if self.nodes is None:
            return None
        if isinstance(message, VoteRequest):
            names = (message.candidate, message.peer_behind)
        elif isinstance(message, RecordBehind | ClearBehind):
            names = (message.primary, message.standby)
        elif isinstance(message, Release):
            names = (message.node, "")
        else:
            return None
        speaker, other = names  # the other may be empty (no peer named)
        if speaker not in self.nodes:
            return speaker
        return other if other and other not in self.nodes else None

    def status(self, now: float) -> WitnessStatus:
        return WitnessStatus(
            cluster=self.state.cluster, promised_epoch=self.state.promised_epoch, leader=self.state.leader,
            lease_remaining=max(0.0, self.lease_until - now), behind=self.state.behind,
            behind_since_epoch=self.state.behind_since_epoch,
        )

    def _grant(self, message: VoteRequest) -> VoteReply:
        return VoteReply(epoch=message.epoch, granted=True, lease_seconds=self.lease_seconds,
                         promised_epoch=self.state.promised_epoch, leader=self.state.leader)

    def _refuse(self, message: VoteRequest, reason: str) -> VoteReply:
        self.refusals += 1
        return VoteReply(epoch=message.epoch, granted=False, reason=reason,
                         promised_epoch=self.state.promised_epoch, leader=self.state.leader)


class FileStateStore:
    """The witness's durable state: one small file, replaced atomically with fsync."""

    def __init__(self, directory: Path, cluster: str) -> None:
        self.directory = directory
        self.path = directory / "witness.json"
        self.cluster = cluster

    def load(self) -> WitnessState:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return WitnessState(cluster=self.cluster)
        try:
            state = msgspec.json.decode(self.path.read_bytes(), type=WitnessState)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise ValueError(f"{self.path}: witness state is corrupt: {error}") from None
        if state.cluster != self.cluster:
            raise ValueError(f"{self.path}: witness data belongs to cluster {state.cluster!r}, not {self.cluster!r}")
        return state

    def save(self, state: WitnessState) -> None:
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(msgspec.json.encode(state))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class MemoryStateStore:
    """For the simulator: durable across simulated crashes because it outlives the witness."""

    def __init__(self, cluster: str) -> None:
        self.state = WitnessState(cluster=cluster)

    def load(self) -> WitnessState:
        return msgspec.structs.replace(self.state)

    def save(self, state: WitnessState) -> None:
        self.state = msgspec.structs.replace(state)


class Witness:
    """The witness process: serves the framed protocol on its address."""

    def __init__(self, *, cluster: str, address: str, store: FileStateStore | MemoryStateStore,
                 lease_seconds: float, secret: bytes | None, network: object,
                 clock: Callable[[], float] = trio.current_time, nodes: Collection[str] | None = None) -> None:
        self.cluster = cluster
        self.address = address
        self.store = store
        self.secret = secret
        self.network = network
        self.clock = clock
        self.core = WitnessCore(store.load(), lease_seconds=lease_seconds, now=clock(), nodes=nodes)
        self.frames_refused = 0
        self.requests = 0

    async def _http(self, stream: trio.abc.Stream, request: bytes) -> None:
        path = request.split(b" ", 2)[1].decode("latin-1", "replace") if request.count(b" ") >= 2 else "/"
        now = self.clock()
        status = self.core.status(now)
        if path.startswith("/metrics"):
            lines = [
                "# HELP acd_witness_up The witness process is running.", "# TYPE acd_witness_up gauge", "acd_witness_up 1",
                "# HELP acd_witness_epoch Highest epoch the witness promised.", "# TYPE acd_witness_epoch gauge",
                f"acd_witness_epoch {status.promised_epoch}",
                "# HELP acd_witness_lease_remaining_seconds Lease the witness granted that is still running.",
                "# TYPE acd_witness_lease_remaining_seconds gauge", f"acd_witness_lease_remaining_seconds {status.lease_remaining:.3f}",
                "# HELP acd_witness_standby_behind A node is recorded behind (1) or not (0).", "# TYPE acd_witness_standby_behind gauge",
                f"acd_witness_standby_behind {1 if status.behind else 0}",
                "# HELP acd_witness_votes_total Elections the witness granted.", "# TYPE acd_witness_votes_total counter",
                f"acd_witness_votes_total {self.core.votes}",
                "# HELP acd_witness_refusals_total Votes the witness refused.", "# TYPE acd_witness_refusals_total counter",
                f"acd_witness_refusals_total {self.core.refusals}",
                "# HELP acd_witness_frames_refused_total Frames refused (bad HMAC, garbage, other cluster).",
                "# TYPE acd_witness_frames_refused_total counter", f"acd_witness_frames_refused_total {self.frames_refused}",
            ]
            gate = getattr(self.network, "gate", None)
            if gate is not None:  # the port's guard (replication/network.py): TCP only
                lines += [
                    "# HELP acd_witness_connections Connections open on the witness's port.", "# TYPE acd_witness_connections gauge",
                    f"acd_witness_connections {gate.open}",
                    "# HELP acd_witness_connections_max Connections the witness's port takes at once.",
                    "# TYPE acd_witness_connections_max gauge", f"acd_witness_connections_max {gate.connections_max}",
                    "# HELP acd_witness_handshakes_failed_total Connections closed before a verified Hello, by reason.",
                    "# TYPE acd_witness_handshakes_failed_total counter",
                    *(f'acd_witness_handshakes_failed_total{{reason="{reason}"}} {count}' for reason, count in sorted(gate.handshakes_failed.items())),
                    "# HELP acd_witness_connections_refused_total Connections refused at accept, by reason.",
                    "# TYPE acd_witness_connections_refused_total counter",
                    *(f'acd_witness_connections_refused_total{{reason="{reason}"}} {count}' for reason, count in sorted(gate.connections_refused.items())),
                ]
            body = ("\n".join(lines) + "\n").encode()
            content_type = b"text/plain; version=0.0.4"
        else:
            body = msgspec.json.encode(status)
            content_type = b"application/json"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        await stream.send_all(head + body)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.info("witness listening address=%s cluster=%s epoch=%d leader=%s", self.address, self.cluster,
                 self.core.state.promised_epoch, self.core.state.leader or "-")
        await self.network.serve(self.address, self._connection, task_status=task_status)  # type: ignore[attr-defined]

    async def _connection(self, stream: trio.abc.Stream) -> None:
        channel = Channel(stream, cluster=self.cluster, secret=self.secret)
        try:
            # No more than a Hello's worth before the peer is known (protocol.PREAUTH_FRAME_BYTES_MAX).
            first = await stream.receive_some(4 + PREAUTH_FRAME_BYTES_MAX)
            if first.startswith(b"GET "):
                # Plain HTTP on the same port (a frame never starts with "GET "): Prometheus
                # scrapes the witness here, and `curl` shows its state.
                await self._http(stream, bytes(first))
                return
            channel.feed(bytes(first))
            hello = await handshake(channel, node="witness", role="witness", purpose="witness", initiator=False)
            nodes = self.core.nodes
            if nodes is not None and hello.node not in nodes and not (hello.node == "status" and hello.purpose == "status"):
                reason = f"a Hello from {hello.node!r}, not a node of this cluster"
                watch = admission.get()
                if watch is None:
                    raise FrameError(reason)
                watch.refused(reason)  # logged and counted with the failed handshakes, with the peer's address
                raise HandshakeError(reason)
            while True:
                message = await channel.receive()
                self.requests += 1
                if nodes is not None and not self._may_send(hello.node, message):
                    reply: Message = Ack(ok=False, reason="not_yours", epoch=self.core.state.promised_epoch)
                    log.warning("witness refused %s from %r: it speaks for another node or is not a status request",
                                type(message).__name__, hello.node)
                    await channel.send(reply)
                    continue
                reply, changed = self.core.handle(message, self.clock())
                if changed:
                    self.store.save(self.core.state)
                await channel.send(reply)
        except HandshakeError:
            self.frames_refused += 1  # the port's guard logged it, with the peer's address
        except FrameError as error:
            self.frames_refused += 1
            log.warning("witness refused a frame and closed the connection: %s", error)
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    @staticmethod
    def _may_send(speaker: str, message: Message) -> bool:
        """A node asks only for itself; `acd status` only for the status."""
        if isinstance(message, StatusRequest):
            return True
        if isinstance(message, VoteRequest):
            return message.candidate == speaker
        if isinstance(message, RecordBehind | ClearBehind):
            return message.primary == speaker
        if isinstance(message, Release):
            return message.node == speaker
        return True  # answered "unexpected_message" by the core
