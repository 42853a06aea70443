"""One ACD node: the Trio shell around the routing core and the store.

Theory of operation
-------------------
One task, the pipeline, owns the core (`acd.core.Center`) and the store. Everything else (the
HTTP API, replication, the CLI) hands it commands over a memory channel and awaits the result.
For each batch of waiting commands the pipeline

    decode -> core -> ship to the standby | LMDB commit (fsync) -> wait for the standby's
    acknowledgement -> re-check the lease -> reply -> publish

(shipping and the local commit run at the same time, so the two fsyncs overlap) so that a
reply is sent only once the batch is durable (on both nodes in `sync` mode) and
event-stream readers see only durable events (docs/design.md, "Consistency"). The batch is every
command waiting in the channel when the pipeline comes round (group commit): with one client
it stays 1, under concurrency it grows while the previous commit's fsync runs in a worker
thread.

Timers live in the core's state; the pipeline wakes at `next_deadline()` and logs a `Tick`,
and it ticks before any command whose timestamp has passed the deadline, so a command never
fires a timer itself and replay is exact.

Roles: a standalone node is always primary. In a cluster the replication layer
(`replication.cluster`) decides the role (`become_primary`, `step_down`) and supplies a
`Replicator` that ships each batch to the standby and holds the lease; a standby applies what
the primary ships through `append_records()` and `apply_replicated()`. The two meet only through
the interfaces of `acd.replica` (the node is a `ReplicaNode`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import prometheus_client
import trio

from acd import buggify
from acd.core import Center, Rejection, commands
from acd.core.events import Event
from acd.core.versions import CoreVersionUnsupported, describe
from acd.locks import QuickLock
from acd.replica import (
    NodeError as NodeError,  # re-exported: the node's errors are raised by both sides
)
from acd.replica import NotPrimary as NotPrimary
from acd.replica import Replicator, Role, Standalone
from acd.settings import Settings
from acd.store import Record, Snapshot, StorageFull, Store, StoreError

from . import snapshots
from .broker import Broker
from .metrics import NodeMetrics
from .privacy import Sealer
from .statehash import StateHashes, perturbation_hook

log = logging.getLogger("acd.node")

_TICK = commands.encode_command(commands.Tick())


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


class StorageFullError(NodeError):
    """The store has no room; nothing of the refused batch was applied."""


class NodeClosed(NodeError):
    """The node is shutting down."""


class InvalidCommand(NodeError):
    """The command holds a value the core cannot hold (checked before the core sees it)."""


class CommandFailed(NodeError):
    """Applying the command raised in the core: it was not recorded, the state was restored
    from the store, and the same command is refused from now on. `error_id` is in the log."""

    def __init__(self, message: str, error_id: str) -> None:
        super().__init__(message)
        self.error_id = error_id


class ReplayMismatch(StoreError):
    """The log holds a command that the core refuses on replay: the state would differ."""


class CoreVersionRefused(StoreError):
    """The store (its snapshot, a record replayed at start-up, or a record the primary shipped
    to this standby) needs a core version this binary does not apply (acd.core.versions).

    The node cannot apply anything after it: at start-up it refuses to start (`acd serve`
    prints the message, no traceback); on a standby `apply_replicated` raises it, and again for
    anything shipped later (`Node.core_refusal` keeps the message). The replication driver
    catches it: it refuses the shipment, stops the node and must not let it stand for election."""

    @classmethod
    def of(cls, error: CoreVersionUnsupported, where: str) -> CoreVersionRefused:
        return cls(
            f"the store's active core version {error.version} ({where}) is newer than this binary "
            f"supports ({describe(error.supported)}): upgrade the binary"
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    lsn: int
    events: list[Event]


# How many commands that made the core raise a node remembers (refused again on retry).
_POISON_REMEMBERED = 1024


class _Submission:
    __slots__ = ("command", "payload", "secret", "digest", "done", "result", "error", "started")

    def __init__(self, command: commands.Command, payload: bytes, secret: bytes, digest: bytes) -> None:
        self.command = command
        self.payload = payload  # as the log holds it (an arrival's number sealed)
        self.secret = secret    # the key that goes beside the record (acd.node.privacy)
        self.digest = digest    # of the command as submitted: what a retry repeats
        self.done = trio.Event()
        self.result: Accepted | Rejection | None = None
        self.error: NodeError | None = None
        self.started = time.perf_counter()


class Node:
    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
        append_in_thread: bool = True,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings
        self.name = name
        self.clock = clock
        # The simulator appends inline: on a mock clock, waiting for a worker thread would
        # let virtual time jump while the commit runs.
        self.append_in_thread = append_in_thread
        # Encode the periodic snapshot in a forked child (acd.node.snapshots) rather than in
        # the event loop; only with the store in a worker thread (not in the simulator).
        self.snapshot_fork = append_in_thread and snapshots.CAN_FORK
        self.section = settings.node(name)
        self.store = store or Store(
            settings.data_dir(name), cluster=settings.cluster.name, node=name,
            map_size_bytes=settings.store.map_size_bytes,
            map_size_max_bytes=settings.store.map_size_max_bytes,
        )
        self.broker = Broker(buffer_events=settings.limits.stream_buffer_events)
        self.metrics = NodeMetrics(name)
        self.replicator: Replicator = Standalone()
        self.role = Role.PRIMARY if settings.standalone else Role.STANDBY
        self.center = Center()
        self.sealer = Sealer(settings.caller_hash_key(), random_bytes=random_bytes)
        # Sealing keys released by records applied on a standby, destroyed with its next append
        # (or before its next snapshot, whichever comes first).
        self._forget: list[str] = []
        self.lsn = 0
        self.core_refusal: str | None = None  # set once a record needs a core version this binary lacks
        self._last_at = 0.0
        self._since_snapshot = 0
        self._snapshot_writing = False  # a snapshot is being written in the background
        self._snapshot_done = trio.Event()
        self._background: trio.Nursery | None = None  # the pipeline's, for snapshot writes
        self._send, self._receive = trio.open_memory_channel[_Submission](settings.store.batch_records_max * 4)
        self.batch_lock = QuickLock()  # held while a batch is applied but not yet durable
        # Commands that made the core raise (by digest of their encoding), with their error
        # ids: a retry is refused at once instead of being applied again.
        self._poisoned: dict[bytes, str] = {}
        self._closed = False
        # On a primary, between applying a batch in the core and its commit: the batch's last
        # LSN (the core's state already holds it; `lsn` follows once it is durable).
        self._batch_lsn: int | None = None
        # The state hash every `cluster.compare_state_every_records` records, which replication
        # compares between primary and standby (acd.node.statehash); and a test hook.
        every = 0 if settings.standalone else settings.cluster.compare_state_every_records
        self.state_hashes = StateHashes(every, fork=self.snapshot_fork)
        self._test_perturb = perturbation_hook()
        if settings.standalone and self.store.epoch() == 0:
            # A standalone node is the primary of epoch 1 from its first start: records carry
            # an epoch of at least 1 (acd.store), and no election ever moves it on.
            self.store.set_epoch(1, self.store.last_lsn() + 1)
        try:
            self.recover()
        except CoreVersionRefused:
            self.store.close()  # refused to start: the store is free for a binary that can apply it
            raise

    # ------------------------------------------------------------------ recovery

    def recover(self, *, publish: bool = True) -> None:
        """Load the latest snapshot, replay the log tail, verify; refuse to serve otherwise.

        With `publish` the broker is refilled from the replayed tail (start-up); without it the
        broker is left alone, since its readers already saw every durable event (a rebuild
        after a refused batch).
        """
        self._batch_lsn = None
        snapshot = self.store.latest_snapshot()
        if snapshot is not None:
            try:
                self.center = Center.restore(snapshot.state)
            except CoreVersionUnsupported as error:
                raise CoreVersionRefused.of(error, f"snapshot at LSN {snapshot.lsn}") from None
            self.lsn = snapshot.lsn
            self._last_at = snapshot.at
        else:
            self.center = Center()
            self.lsn = 0
        if publish:
            self.broker.reset(self.lsn)
        replayed = 0
        while True:
            records = self.store.read(self.lsn, limit=1000)
            if not records:
                break
            for record in records:
                self._apply_record(record, publish=publish)
                replayed += 1
        self._since_snapshot = replayed
        # Keys released by the replayed records may have outlived a crash: destroy them now.
        self._forget = []
        self.store.forget_secrets(self.center.take_released_keys())
        self.state_hashes.forget_after(self.lsn)  # hashes of a failed batch or a truncated tail
        if self.lsn != self.store.last_lsn():
            raise ReplayMismatch(f"log ends at LSN {self.store.last_lsn()} but replay reached {self.lsn}")
        log.info("recovered node=%s lsn=%d snapshot_lsn=%d replayed=%d", self.name, self.lsn, snapshot.lsn if snapshot else 0, replayed)

    def _apply_record(self, record: Record, *, publish: bool = True) -> list[Event]:
        invariant_lsn = self.lsn + 1
        if record.lsn != invariant_lsn:
            raise ReplayMismatch(f"expected LSN {invariant_lsn}, got {record.lsn}")
        try:
            command = commands.decode_command(record.payload)
        except msgspec.DecodeError as error:
            raise ReplayMismatch(f"record LSN {record.lsn} does not decode: {error}") from None
        try:
            result = self.center.apply(command, record.at)
        except CoreVersionUnsupported as error:
            refused = CoreVersionRefused.of(error, f"activated at LSN {record.lsn}")
            self.core_refusal = str(refused)
            raise refused from None
        if isinstance(result, Rejection):
            raise ReplayMismatch(f"record LSN {record.lsn} ({type(command).__name__}) is refused on replay: {result.code}")
        self.lsn = record.lsn
        self._last_at = max(self._last_at, record.at)
        if publish:
            self.broker.publish(record.lsn, result)
        return result

    async def append_records(self, records: Sequence[Record], forget: Sequence[str] = ()) -> None:
        """Durably append records to the store (in a worker thread, so the loop keeps serving),
        destroying the sealing keys in `forget` (and those a standby's records released) in
        the same transaction."""
        await buggify.point("store.append", self.name)  # simulator only: slow disk, paused process
        if self._forget:
            forget, self._forget = [*self._forget, *forget], []
        try:
            if self.append_in_thread:
                await trio.to_thread.run_sync(functools.partial(self.store.append, records, forget=forget))
            else:
                self.store.append(records, forget=forget)
        except BaseException:
            self._forget = [*forget, *self._forget]  # not destroyed: the next append tries again
            raise

    def apply_replicated(self, records: Sequence[Record]) -> None:
        """A standby applies records the primary shipped (already durable in our store).

        Raises `CoreVersionRefused` for a record of a core version this binary does not apply,
        and for everything shipped after it."""
        if self.core_refusal is not None:
            raise CoreVersionRefused(self.core_refusal)
        for record in records:
            self._apply_record(record)
            self._replicated_applied(record)
        self._forget.extend(self.center.take_released_keys())
        self._since_snapshot += len(records)
        self._snapshot_when_due()

    def _replicated_applied(self, record: Record) -> None:
        """After a shipped record is applied: the state hash when due (and a test hook)."""
        if self._test_perturb(record.lsn):
            self.center.apply(commands.Audit(actor="test-hook", action="diverge", detail=f"ACD_TEST_DIVERGE_AT_LSN={record.lsn}"), record.at)
            log.warning("TEST HOOK: state perturbed after lsn=%d node=%s (ACD_TEST_DIVERGE_AT_LSN)", record.lsn, self.name)
        if self.state_hashes.due(record.lsn):
            self.state_hashes.hash_now(record.lsn, self.center, self._background)

    def take_state_hashes(self) -> list[tuple[int, str]]:
        """The state hashes computed since the last call, of durable records only (oldest first)."""
        return self.state_hashes.take(self.lsn)

    def rehash_state(self) -> None:
        """Forget the hashes not taken yet and hash the state as it is now (a snapshot installed)."""
        self.state_hashes.forget_all()
        self.state_hashes.hash_now(self.lsn, self.center, self._background)

    def caller_number(self, call_id: str) -> str | None:
        """The clear number of a live interaction: kept in clear (an unsealed arrival's
        call-back), or opened with its key (a promised call-back's is its origin's, sealed for
        the origin's id); None once it is over (the key is destroyed) or when none is kept."""
        call = self.center.state.interactions.get(call_id)
        if call is None:
            return None
        if call.caller is not None:
            return call.caller
        if call.caller_sealed is None or call.caller_key is None:
            return None
        key = self.store.secret(call.caller_key)
        return None if key is None else self.sealer.open(call.sealed_for or call_id, call.caller_sealed, key)

    @property
    def state_lsn(self) -> int:
        """The LSN of the last record the core's state holds: `lsn`, or on a primary while a batch
        it applied is being committed, that batch's last LSN (what a state hash describes)."""
        return self.lsn if self._batch_lsn is None else self._batch_lsn

    def writable_error(self) -> NotPrimary | None:
        """Why this node takes no write now (the refusal to raise), or None when it does."""
        if self.role == Role.PRIMARY and self.replicator.can_accept() and self.core_refusal is None:
            return None
        return NotPrimary(f"node {self.name} is {self.role}", self.replicator.primary_api())

    # ------------------------------------------------------------------ the replication layer's interface (acd.replica.ReplicaNode)

    def become_primary(self, epoch: int) -> None:
        """Start epoch `epoch` after the log's last record, and accept writes."""
        self.store.set_epoch(epoch, self.store.last_lsn() + 1)
        self.role = Role.PRIMARY

    def step_down(self) -> None:
        """Stop accepting writes; a batch in flight fails at its lease check."""
        self.role = Role.STANDBY

    @property
    def metrics_registry(self) -> prometheus_client.CollectorRegistry:
        return self.metrics.registry

    def config_version(self) -> int:
        """The version of the center's configuration the state holds (0: never configured)."""
        return self.center.state.config_version

    def reload(self, *, publish: bool = True) -> None:
        """Rebuild the in-memory state from the store (after a refused batch or a rejoin)."""
        self.recover(publish=publish)

    # ------------------------------------------------------------------ submitting

    async def submit(self, command: commands.Command) -> Accepted | Rejection:
        """Run a command through the pipeline; returns once durable (and replicated)."""
        if self._closed:
            raise NodeClosed("node is shutting down")
        refusal = self.writable_error()
        if refusal is not None:
            raise refusal
        try:
            payload = commands.validate(command)
        except msgspec.ValidationError as error:
            raise InvalidCommand(str(error)) from None
        digest = _digest(payload)
        error_id = self._poisoned.get(digest)
        if error_id is not None:
            raise CommandFailed(f"this command made the node fail before (error id {error_id}); it is refused", error_id)
        secret = b""
        if type(command) is commands.Arrive and command.caller:
            command, secret = self.sealer.seal(command, payload)
            payload = commands.encode_command(command)
        submission = _Submission(command, payload, secret, digest)
        await self._send.send(submission)
        await submission.done.wait()
        if submission.error is not None:
            raise submission.error
        invariant_result = submission.result
        if invariant_result is None:
            raise NodeClosed("the pipeline stopped before this command completed")
        return invariant_result

    def stamp(self) -> float:
        """The timestamp of the next command: the wall clock, never running backwards."""
        now = self.clock()
        if now < self._last_at:
            now = self._last_at
        self._last_at = now
        return now

    # ------------------------------------------------------------------ the pipeline

    async def run_pipeline(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        batch_max = self.settings.store.batch_records_max
        try:
            async with trio.open_nursery() as background:
                self._background = background
                task_status.started()
                while True:
                    await buggify.point("node.pipeline", self.name)  # simulator only: a paused process waits here
                    deadline = self.center.next_deadline() if self.role == Role.PRIMARY else None
                    batch: list[_Submission] = []
                    if deadline is None:
                        batch.append(await self._receive.receive())
                    else:
                        delay = max(0.0, deadline - self.clock())
                        with trio.move_on_after(delay):
                            batch.append(await self._receive.receive())
                    while len(batch) < batch_max:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    async with self.batch_lock:
                        await self._process(batch)
        finally:
            self._background = None
            self._closed = True
            error = NodeClosed("node is shutting down")
            while True:
                try:
                    pending = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                pending.error = error
                pending.done.set()

    async def _process(self, batch: list[_Submission]) -> None:
        refusal = self.writable_error()
        if refusal is not None:
            self._fail(batch, refusal)
            return
        epoch = self.store.epoch()
        records: list[Record] = []
        published: list[tuple[int, list[Event]]] = []
        lsn = self.lsn

        def log_command(payload: bytes, at: float, events: list[Event], secret: bytes = b"") -> int:
            nonlocal lsn
            lsn += 1
            records.append(Record.make(lsn=lsn, epoch=epoch, at=at, payload=payload, secret=secret))
            if events:
                published.append((lsn, events))
            if self.state_hashes.due(lsn):  # the state right after this record (taken once durable)
                self.state_hashes.hash_now(lsn, self.center, self._background)
            return lsn

        def tick_if_due(at: float) -> None:
            deadline = self.center.next_deadline()
            if deadline is not None and deadline <= at:
                log_command(_TICK, at, self.center.tick(at))

        applying: _Submission | None = None  # the command in the core, if one is
        try:
            tick_if_due(self.stamp())
            for submission in batch:
                at = self.stamp()
                tick_if_due(at)
                applying = submission
                result = self.center.apply(submission.command, at)
                if isinstance(result, Rejection):
                    submission.result = result
                else:
                    submission.result = Accepted(log_command(submission.payload, at, result, submission.secret), result)
                applying = None
        except Exception as error:
            # The core raised: a bug, or a value it cannot hold. Nothing of this batch was
            # written or shipped, so the state is rebuilt from the store (the last committed
            # LSN) and the batch goes again without the command at fault, which is refused
            # from now on. One bad command never stops the node.
            await self._poisoned_batch(batch, applying, error)
            return

        if records:
            self._batch_lsn = lsn
            started = time.perf_counter()
            # The batch leaves for the standby now, while the local commit (fsync) runs: the
            # two fsyncs overlap. Nothing is acknowledged before both are durable
            # (replicate() below waits for the standby's acknowledgement).
            self.replicator.ship(records)
            try:
                await self.append_records(records, forget=self.center.take_released_keys())
            except StorageFull as error:
                # Nothing was written; the core already applied the batch in memory, so
                # rebuild it from the store: the refused batch leaves no trace. The standby
                # may already hold it: replication withdraws it there (truncates the standby
                # back to our log's end) before anything after it is acknowledged.
                self.replicator.retract(self.lsn)
                log.error("storage full node=%s lsn=%d: %s", self.name, self.lsn, error)
                self.metrics.storage_full.inc()
                self.reload(publish=False)
                self._fail(batch, StorageFullError(str(error)))
                await trio.sleep(0.5)  # a due timer would retry at once: back off, not spin (sim/dr)
                return
            except BaseException:
                # Any other failure ends the pipeline; the batch may or may not be durable here,
                # so the standby must not count it as part of this term's log either.
                self.replicator.retract(self.lsn)
                raise
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_records.observe(len(records))
            self.lsn = lsn
            self._batch_lsn = None
            self._since_snapshot += len(records)
            try:
                await self.replicator.replicate(records)
            except NotPrimary as error:
                self._fail(batch, error)
                return
        if not self.replicator.lease_valid():
            # Fencing: the lease may have expired while we committed; another node may be
            # primary by now, so nothing here may be acknowledged (docs/design.md, Consistency).
            self._fail(batch, NotPrimary(f"node {self.name} lost its lease", self.replicator.primary_api()))
            return
        for lsn_published, events in published:
            self.broker.publish(lsn_published, events)
        now = time.perf_counter()
        outcomes: dict[tuple[str, str], int] = {}
        observe = self.metrics.command_seconds.observe
        for submission in batch:
            reply = submission.result
            key = (type(submission.command).__name__, reply.code if isinstance(reply, Rejection) else "accepted")
            outcomes[key] = outcomes.get(key, 0) + 1
            observe(now - submission.started)
            submission.done.set()
        for (kind, outcome), count in outcomes.items():  # one labelled update per kind and batch
            self.metrics.command_counter(kind, outcome).inc(count)
        self.metrics.lsn.set(self.lsn)
        self._snapshot_when_due()

    async def _poisoned_batch(self, batch: list[_Submission], culprit: _Submission | None, error: Exception) -> None:
        error_id = secrets.token_hex(6)
        kind = type(culprit.command).__name__ if culprit is not None else "Tick"
        log.error(
            "command failed in the core error_id=%s node=%s command=%s lsn=%d: %s: %s; state restored from the store, the command is refused",
            error_id, self.name, kind, self.lsn, type(error).__name__, error, exc_info=error,
        )
        self.metrics.command_failures.inc()
        self.reload(publish=False)
        if culprit is None:
            # A timer raised, not a command: nothing to refuse or to retry without it. The
            # batch is refused; back off so that a timer that keeps failing does not spin.
            self._fail(batch, CommandFailed(f"the node could not fire a timer (error id {error_id}); nothing was recorded", error_id))
            await trio.sleep(0.5)
            return
        if len(self._poisoned) >= _POISON_REMEMBERED:
            self._poisoned.pop(next(iter(self._poisoned)))
        self._poisoned[culprit.digest] = error_id
        self._fail([culprit], CommandFailed(f"the node could not apply this command (error id {error_id}); nothing was recorded", error_id))
        rest = [submission for submission in batch if submission is not culprit]
        for submission in rest:
            submission.result = None
        if rest:
            await self._process(rest)  # at most once per command of the batch

    def _fail(self, batch: list[_Submission], error: NodeError) -> None:
        for submission in batch:
            submission.error = error
            submission.result = None
            self.metrics.command_counter(type(submission.command).__name__, type(error).__name__).inc()
            submission.done.set()

    def _snapshot_when_due(self) -> None:
        """Take the periodic snapshot once enough records came since the last one.

        Called between two batches (primary) or two shipments (standby), where the state
        equals the durable log, and taken right here: a forked child gets the state as it is
        now and encodes it (acd.node.snapshots; where fork is not possible it is encoded here).
        With a worker thread for the store it is written in the background while batches go
        on (the store writes a large snapshot in parts, so a commit waits for one part at
        most). One snapshot at a time; without a worker thread (the simulator) it is encoded
        and written here.
        """
        every = self.settings.store.snapshot_every_records
        if self._since_snapshot < every or self._snapshot_writing:
            return
        if self._forget:
            # Replay after a crash starts at this snapshot: keys its records released must be
            # gone by then, since nothing after it would release them again.
            forget, self._forget = self._forget, []
            self.store.forget_secrets(forget)
        background = self._background
        if not self.append_in_thread or background is None:
            try:
                self.save_snapshot()
            except StorageFull as error:
                self._snapshot_refused(error)
            return
        lsn, epoch, at = self.lsn, self.store.epoch(), self._last_at
        source: bytes | snapshots.EncodingChild
        if self.snapshot_fork:
            try:
                source = snapshots.fork_encoder(self.center, lsn=lsn, epoch=epoch, at=at)
            except OSError as error:
                log.warning("cannot fork to encode the snapshot, encoding it here node=%s: %s", self.name, error)
                source = self.center.snapshot()
        else:
            source = self.center.snapshot()
        self._since_snapshot = 0
        self._snapshot_writing = True
        self._snapshot_done = trio.Event()
        background.start_soon(self._write_snapshot_in_background, lsn, epoch, at, source)

    async def _write_snapshot_in_background(self, lsn: int, epoch: int, at: float, source: bytes | snapshots.EncodingChild) -> None:
        started = time.perf_counter()
        try:
            if isinstance(source, bytes):
                state, encoded = source, None
            else:
                state, encoded = None, await trio.to_thread.run_sync(source.collect)
            removed = await trio.to_thread.run_sync(self._write_snapshot, lsn, epoch, at, state, encoded)
        except StorageFull as error:
            self._snapshot_refused(error)
        except snapshots.ChildFailed as error:
            self._since_snapshot = self.settings.store.snapshot_every_records // 2
            log.warning("snapshot skipped node=%s lsn=%d: %s", self.name, lsn, error)
        except StoreError as error:
            # The log moved meanwhile (a standby's tail withdrawn, a snapshot installed from the
            # primary): this one no longer fits it. The log keeps everything; the next will do.
            log.warning("snapshot skipped node=%s lsn=%d: %s", self.name, lsn, error)
        else:
            self._snapshot_written(removed)
            log.debug("snapshot written node=%s lsn=%d bytes=%d seconds=%.3f", self.name, lsn, len(encoded if encoded is not None else state or b""), time.perf_counter() - started)
        finally:
            self._snapshot_writing = False
            self._snapshot_done.set()

    async def snapshot_settled(self) -> None:
        """Wait until no snapshot is being written in the background."""
        if self._snapshot_writing:
            await self._snapshot_done.wait()

    def _snapshot_refused(self, error: StorageFull) -> None:
        # The log still holds everything, so a missing snapshot costs only replay time at the
        # next start. Try again after another half interval, not on every batch.
        self._since_snapshot = self.settings.store.snapshot_every_records // 2
        log.warning("snapshot skipped, store full node=%s lsn=%d: %s", self.name, self.lsn, error)

    async def snapshot_now(self) -> Snapshot:
        """Take a snapshot between batches (the state then equals the durable log) and store
        it; when the disk refuses it, it is only returned."""
        async with self.batch_lock:
            state = self.center.snapshot()
            try:
                self._save_snapshot(state)
            except StorageFull as error:
                self._snapshot_refused(error)
                return Snapshot.make(lsn=self.lsn, epoch=self.store.epoch(), at=self._last_at, state=state)
            snapshot = self.store.latest_snapshot()
            assert snapshot is not None
            return snapshot

    def save_snapshot(self) -> None:
        self._save_snapshot(self.center.snapshot())

    def _save_snapshot(self, state: bytes) -> None:
        removed = self._write_snapshot(self.lsn, self.store.epoch(), self._last_at, state)
        self._since_snapshot = 0
        self._snapshot_written(removed)

    def _write_snapshot(self, lsn: int, epoch: int, at: float, state: bytes | None, encoded: memoryview | None = None) -> int:
        """Store a snapshot (its state, or as the child encoded it for the store) and apply log
        retention; how many records retention removed."""
        if encoded is not None:
            self.store.save_encoded_snapshot(lsn=lsn, epoch=epoch, encoded=encoded)
        else:
            assert state is not None
            self.store.save_snapshot(lsn=lsn, epoch=epoch, at=at, state=state)
        retention = self.settings.store.retention_records
        return self.store.truncate_log(max(1, lsn - retention + 1)) if retention else 0

    def _snapshot_written(self, removed: int) -> None:
        if removed:
            log.info("log truncated node=%s removed=%d first_lsn=%d", self.name, removed, self.store.first_lsn())

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._closed = True
        self.broker.close_all()
        self.store.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def apply_settings_center(self, actor: str = "startup") -> Accepted | Rejection | None:
        """Apply the config file's center when it differs from the replicated one (primary only)."""
        if self.center.state.config_version and self.center.config == self.settings.center:
            return None
        return await self.submit(commands.Configure(center=self.settings.center, actor=actor))
