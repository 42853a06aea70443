"""A node's part in the cluster: the Trio driver of the replication core.

`ReplicationDriver` does the I/O of replication (connections to the peer and the witness,
timers, the node's store) and leaves the decisions to `replication.core`, which is pure: who
gets a vote, when a ballot is won, how long a lease runs, when the standby is recorded behind
and cleared, what to ship next, where a rejoining standby's log diverged and what to truncate.
The same driver runs in a real process and in the disaster-recovery simulator (`sim/dr`).
It sees the node only through `acd.replica.ReplicaNode`.

See `docs/replication.md` for the protocol (glossary, messages, safety argument). In short:

- A node becomes primary of epoch E with the votes of a majority of {A, B, witness}: itself
  and the witness or the peer. Every vote is also a lease: the voter votes for nobody else
  until `lease_seconds` after it granted. The primary renews with the witness and with the
  standby (each `Append` asks for it) every `renew_interval`.
- The primary counts its lease from the moment it *sent* the request, shortened by the clock
  drift bound and a margin (`core.DRIFT`, `core.MARGIN`), so it stops acknowledging before any voter
  can grant another node a vote. The pipeline re-checks the lease before every reply.
- `sync` mode: a batch is acknowledged once the standby has it durably. If the standby does
  not answer within `standby_timeout`, the primary asks the witness to record it *behind*;
  only then does it acknowledge alone. A node recorded behind cannot be elected; it is
  cleared once it has caught up again. A request to the witness that gets no answer may
  still have been applied: after an unanswered `ClearBehind` the primary stays synchronous
  until a fresh `RecordBehind` is confirmed, and after an unanswered `RecordBehind` (or an
  unanswered vote that carried `peer_behind`) it remembers "maybe recorded" and sends the
  idempotent clear once the standby has caught up.
- A new primary ships its log to the other node. The standby first tells where its log ends
  (`Sync`); the primary truncates a tail that never reached it (a rejoining old primary's
  unacknowledged records), sends a snapshot when the standby is behind the truncated log,
  then streams records.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from acd import buggify
from acd.core import commands
from acd.locks import QuickLock
from acd.replica import NotPrimary, ReplicaNode, Role
from acd.settings import Settings
from acd.store import Record, StoreError
from acd.versions import BEHIND_ORDERED_PROTOCOL

from . import core
from .core import Ballot, BehindRecord, ShipQueue, Voter
from .metrics import PortStatistics, ReplicationCollector, ReplicationStatistics
from .network import Network, TcpNetwork, replication_limits
from .protocol import (
    Ack,
    Append,
    AppendReply,
    Channel,
    ClearBehind,
    FrameError,
    Handover,
    HandshakeError,
    InstallSnapshot,
    Message,
    RecordBehind,
    Release,
    StatusRequest,
    Sync,
    Truncate,
    VoteReply,
    VoteRequest,
    WitnessStatus,
    handshake,
)

log = logging.getLogger("acd.replication")

SHIP_RETRY_MIN = 0.05   # seconds between attempts to reach the standby, at first
SHIP_RETRY_MAX = 0.1    # and at most (a restarted standby waits at most this long to be reached)
DIVERGED_META = "standby_diverged_at_lsn"   # store meta: the alarm this node raised, until it clears
CONNECTION_ERRORS = (OSError, FrameError, trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError)


class PeerClient:
    """Request/reply over one framed connection, reconnecting on failure."""

    def __init__(self, member: ReplicationDriver, address: str, purpose: str) -> None:
        self.member = member
        self.address = address
        self.purpose = purpose
        self.channel: Channel | None = None
        self.lock = QuickLock()
        self.protocol = 0   # the wire protocol version agreed on the last connection

    async def request(self, message: Message, timeout: float) -> Message | None:
        """Send `message` and return its reply (None on timeout or a broken connection).

        A request that does not get its reply, for whatever reason (timeout, connection error,
        or the caller cancelled, e.g. a primary stepping down mid-renewal), drops the
        connection: its reply may still arrive, and on a kept connection the next request
        would read it as its own (a stale "granted" taken for a new election's vote).
        """
        async with self.lock:
            answered = False
            try:
                with trio.move_on_after(timeout):
                    # A kept connection may be dead without our knowing (the peer restarted
                    # since the last request: a rolling upgrade, a switchover right after
                    # one). Its failure says nothing about the peer, so the request is sent
                    # once more on a new connection, within the same timeout. The message is
                    # safe to send twice: a vote, a handover or a status request answered
                    # twice is answered the same.
                    for fresh in ((False, True) if self.channel is not None else (True,)):
                        try:
                            if fresh:
                                await self.reset()
                                stream = await self.member.network.connect(self.address)
                                channel = Channel(stream, cluster=self.member.cluster, secret=self.member.secret)
                                await handshake(channel, node=self.member.name, role=str(self.member.node.role), purpose=self.purpose, initiator=True)
                                self.channel = channel
                                self.protocol = channel.protocol
                            assert self.channel is not None
                            await self.channel.send(message)
                            reply = await self.channel.receive()
                            answered = True
                            return reply
                        except CONNECTION_ERRORS as error:
                            log.debug("request to %s failed%s: %s", self.address, "" if fresh else " on a kept connection", error)
                return None
            finally:
                if not answered:
                    await self.reset()

    async def reset(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            with trio.CancelScope(shield=True):
                try:
                    await channel.aclose()
                except CONNECTION_ERRORS:
                    pass


class ReplicationDriver:
    """The replication layer of one node (the Trio driver of `replication.core`); also the
    node's `Replicator`."""

    def __init__(self, node: ReplicaNode, settings: Settings, *, network: Network | None = None,
                 clock: Callable[[], float] = trio.current_time, secret: bytes | None = None) -> None:
        self.node = node
        self.settings = settings
        self.name = node.name
        self.cluster = settings.cluster.name
        if network is None:
            server_tls, client_tls = settings.replication_tls(node.section.tls_cert, node.section.tls_key)
            network = TcpNetwork(server_tls, client_tls, limits=replication_limits(settings))  # type: ignore[arg-type]
        self.network: Network = network
        self.clock = clock
        self.secret = secret if secret is not None else settings.secret()
        peers = [n for n in settings.nodes if n.name != node.name]
        self.peer = peers[0] if peers else None
        self.witness_address = settings.witness.address if settings.witness else None
        self.mode = settings.cluster.mode
        self.failover_timeout = settings.cluster.failover_timeout
        self.lease_seconds = self.failover_timeout
        self.renew_interval = self.failover_timeout / 5
        self.standby_timeout = self.failover_timeout / 3
        self.ballot_grace = max(0.02, self.failover_timeout / 20)
        self._grace_cut: frozenset[str] = frozenset()   # voters the last pre-vote's grace cut short
        store = node.store
        promised = store.get_meta("promised_epoch")
        voted = store.get_meta("voted_for")
        self.voter = Voter(
            self.name, self.lease_seconds, promised_epoch=max(int(promised) if promised else 0, store.epoch()),
            voted_for=voted.decode() if voted else "",
        )
        self.lease_until = 0.0
        self.forced = False
        now = clock()
        self.last_heard = now
        self.queue = ShipQueue()      # what there is to ship, and what the standby acknowledged
        self.acked_changed = trio.Event()
        self.peer_connected = False
        self.behind = BehindRecord()   # whether the witness records the peer behind
        self.peer_in_sync = False      # standby side: the primary requires our acknowledgements
        self.new_records = trio.Event()
        self.handover_requested = False   # primary side: a switchover stopped taking writes
        # Standby side: the primary handed over to us. Kept apart from `handover_requested`: the
        # stepping-down primary's role loop must not take its own switchover for an invitation
        # (it stood at once, before its peer, and won its own handover).
        self.invited = False
        self._role_news = trio.Event()  # wakes the role loop (a handover, a manual promotion)
        self.failovers = 0
        self.promoted = trio.Event()
        self.last_failover_seconds = 0.0
        self.last_rejoin_seconds = 0.0   # the standby's last (re)connection until it was in sync
        self.rejoins = 0
        self._rejoin_from: float | None = None
        self.no_primary_since: float | None = now
        self.frames_refused = 0
        self.stale_dropped = 0
        self._primary_scope: trio.CancelScope | None = None
        self._last_refusal: dict[str, str] = {}
        self._promotion_detail = ""
        self.witness = PeerClient(self, self.witness_address, "witness") if self.witness_address else None
        self.peer_votes = PeerClient(self, self.peer.replication, "vote") if self.peer else None
        self._ship_sessions = 0               # shipping connections that got as far as shipping
        self._ship_serial = 0                 # standby side: the newest shipping connection
        self._ship_apply_lock = QuickLock()
        self._clearing = False                # a clear of the witness's behind record is running
        # RecordBehind and ClearBehind one at a time, each with the state it settles: a record
        # confirmed while a clear waited for the standby would otherwise be cleared at once.
        self._behind_lock = QuickLock()
        self._unordered_warned = 0
        # Primary side: its state hashes against the standby's (the divergence alarm). An alarm
        # outlives a restart: after one this node still refuses the peer its vote, and rebuilds
        # it once primary again.
        self.state_check = core.StateCheck()
        diverged = store.get_meta(DIVERGED_META)
        if diverged:
            self.state_check.diverged_at = int(diverged)
        node.replicator = self
        node.step_down()
        node.metrics_registry.register(ReplicationCollector(self.statistics))

    # ------------------------------------------------------------------ the core's state, by name

    @property
    def promised_epoch(self) -> int:
        return self.voter.promised_epoch

    @property
    def voted_for(self) -> str:
        return self.voter.voted_for

    @property
    def leader(self) -> str | None:
        return self.voter.leader

    @leader.setter
    def leader(self, value: str | None) -> None:
        self.voter.leader = value

    @property
    def granted_until(self) -> float:
        return self.voter.granted_until

    @granted_until.setter
    def granted_until(self, value: float) -> None:
        self.voter.granted_until = value

    @property
    def acked_lsn(self) -> int:
        return self.queue.acked_lsn

    @property
    def behind_recorded(self) -> bool:
        return self.behind.recorded

    @property
    def behind_maybe(self) -> bool:
        return self.behind.maybe

    @property
    def require_standby(self) -> bool:
        return self.behind.require_standby

    @property
    def primary(self) -> bool:
        return self.node.role == Role.PRIMARY

    # ------------------------------------------------------------------ Replicator

    def lease_valid(self) -> bool:
        return core.lease_holds(self.primary, self.forced, self.clock(), self.lease_until)

    def can_accept(self) -> bool:
        return self.lease_valid() and not self.handover_requested

    def primary_api(self) -> str | None:
        if self.leader and self.leader != self.name:
            for section in self.settings.nodes:
                if section.name == self.leader:
                    return section.api
        return None

    def lag_seconds(self) -> float:
        """Age of the oldest record the standby has not acknowledged yet."""
        return self.queue.lag_seconds(self.clock())

    def ship(self, records: list[Record] | Any) -> None:
        """Hand a batch to the ship loop before it is durable here (the commits overlap)."""
        if not records or not self.primary:
            return
        self.queue.add(records, self.clock())
        self.new_records.set()
        self.new_records = trio.Event()

    def retract(self, after_lsn: int) -> None:
        """The local commit of what was shipped after `after_lsn` failed: withdraw it
        (`ShipQueue.retract`)."""
        self.queue.retract(after_lsn)
        self.state_check.withdraw(after_lsn)
        self.new_records.set()
        self.new_records = trio.Event()

    def _ship_top(self) -> int:
        """The last LSN there is to ship: durable here, or in flight to our own store."""
        return self.queue.top(self.node.store)

    async def replicate(self, records: list[Record] | Any) -> None:
        if self.mode == "async" or not records:
            return
        if buggify.bug("ack_before_standby"):  # a deliberately broken variant for sim/dr's tests
            return
        target = records[-1].lsn
        deadline = self.clock() + self.standby_timeout
        while self.acked_lsn < target and self.require_standby:
            if not self.primary:
                raise NotPrimary(f"node {self.name} stepped down", self.primary_api())
            if self.clock() >= deadline:
                # The standby is slow or gone: go on alone only once the witness recorded
                # it as behind, so that it cannot be promoted (docs/design.md, Consistency).
                if await self._record_behind(target):
                    return
                if not self.lease_valid():
                    raise NotPrimary(f"node {self.name} lost its lease", self.primary_api())
                deadline = self.clock() + self.standby_timeout
            with trio.move_on_after(deadline - self.clock()):  # self.clock may be injected: not trio's
                await self.acked_changed.wait()

    def _acked(self, lsn: int) -> None:
        self.queue.acked(lsn)
        self.acked_changed.set()
        self.acked_changed = trio.Event()

    # ------------------------------------------------------------------ state

    def _persist_vote(self, epoch: int, candidate: str) -> None:
        self.voter.promise(epoch, candidate)
        self._save_vote()

    def _save_vote(self) -> None:
        epoch, candidate = self.voter.promised_epoch, self.voter.voted_for
        self.node.store.put_meta("promised_epoch", str(epoch).encode())
        self.node.store.put_meta("voted_for", candidate.encode())

    def _last_position(self) -> tuple[int, int]:
        last = self.node.store.last_lsn()
        return self._epoch_at(last) or 0, last

    def _prev_epoch(self, lsn: int) -> int:
        """The epoch of our record at `lsn`, for the standby's check (-1: unknown)."""
        epoch = self._epoch_at(lsn)
        return -1 if epoch is None else epoch

    def _epoch_at(self, lsn: int) -> int | None:
        """The epoch of our record at `lsn` (durable or still being committed); None: unknown."""
        if lsn == 0:
            return 0
        # From memory first: reading the store would wait for a commit in progress (its lock).
        in_tail = self.queue.epoch_in_tail(lsn)
        if in_tail is not None:
            return in_tail
        store = self.node.store
        if lsn >= store.first_lsn():
            try:
                records = store.read(lsn - 1, 1)
            except StoreError:
                return None
            return records[0].epoch if records else None
        snapshot = store.latest_snapshot()
        if snapshot is not None and snapshot.lsn == lsn:
            return snapshot.epoch
        return None

    def _extend_lease(self, sent_at: float, epoch: int) -> None:
        if epoch != self.promised_epoch or not self.primary:
            return
        until = core.lease_end(sent_at, self.lease_seconds)
        if until > self.lease_until:
            self.lease_until = until

    def step_down(self, reason: str) -> None:
        if self.primary:
            log.warning("stepping down node=%s epoch=%d reason=%s", self.name, self.promised_epoch, reason)
        self.node.step_down()
        self.forced = False
        self.lease_until = 0.0
        self._rejoin_from = None
        self.queue.tail.clear()
        self.acked_changed.set()  # a batch waiting for the standby fails now, not at its timeout
        self.acked_changed = trio.Event()
        self.last_heard = self.clock()
        self.no_primary_since = self.clock()
        if self._primary_scope is not None:
            self._primary_scope.cancel()

    def _see_epoch(self, epoch: int, leader: str | None = None) -> bool:
        """A message from a higher epoch: adopt it (and step down). False if stale."""
        news = core.epoch_news(epoch, self.promised_epoch)
        if news == "stale":
            self.stale_dropped += 1
            log.info("dropped stale-epoch message node=%s epoch=%d promised=%d", self.name, epoch, self.promised_epoch)
            return False
        if news == "higher":
            if self.primary:
                self.step_down(f"saw higher epoch {epoch}")
            self._persist_vote(epoch, leader or "")
        if leader:
            self.leader = leader
        return True

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            section = self.node.section
            await nursery.start(self.network.serve, section.replication_bind or section.replication, self._serve_connection)
            task_status.started()
            nursery.start_soon(self._role_loop)

    async def _role_loop(self) -> None:
        while True:
            if self.primary:
                with trio.CancelScope() as scope:
                    self._primary_scope = scope
                    async with trio.open_nursery() as nursery:
                        if self.peer is not None:
                            nursery.start_soon(self._ship_loop)
                        nursery.start_soon(self._renew_loop)
                        nursery.start_soon(self._watch_lease)
                self._primary_scope = None
                self.peer_connected = False
                continue
            invited = await self._wait_election_due()
            if not self.primary:
                await self._try_election(pre_vote=not invited)

    async def _wait_election_due(self) -> bool:
        """Wait until an election is due; True when the primary handed over to us."""
        while not self.primary:
            if self.invited:
                self.invited = False
                return True
            await buggify.point("member.timer", self.name)  # simulator only: a paused process acts on resume
            due = max(self.last_heard + self.failover_timeout, self.granted_until)
            now = self.clock()
            if now >= due:
                return False
            # Sleep until the deadline as it stands; news from a primary only moves it later,
            # so waking then and looking again is exact. A handover or a manual promotion
            # wakes the loop at once.
            with trio.move_on_after(due - now):
                await self._role_news.wait()
        return False

    def _wake_role_loop(self) -> None:
        self._role_news.set()
        self._role_news = trio.Event()

    async def _try_election(self, force: bool = False, pre_vote: bool = True) -> bool:
        """One election for the next epoch; True when this node became primary.

        Unless forced or invited by a handover, a pre-vote comes first: the same question
        with nothing recorded anywhere. Only a candidate that would win raises its epoch, so a
        node that cannot win (cut off from the primary's shipping, behind, or racing a live
        lease) never pushes its epoch past the primary's and so never makes a healthy primary
        step down when it hears that epoch (Raft's PreVote).
        """
        epoch = max(self.promised_epoch, self.node.store.epoch()) + 1
        peer_name = self.peer.name if self.peer else ""
        request = core.vote_request(epoch=epoch, candidate=self.name, last=self._last_position(), force=force,
                                    sync=self.mode == "sync", peer=peer_name)
        if pre_vote and not force:
            ballot = await self._ballot(msgspec.structs.replace(request, pre=True))
            if not ballot.won():
                await self._lost(f"pre-vote epoch={epoch}", ballot)
                return False
            epoch = max(self.promised_epoch, self.node.store.epoch()) + 1
            request = msgspec.structs.replace(request, epoch=epoch)
            if core.voted_for_other_meanwhile(self.clock(), self.granted_until, self.leader, self.name):
                await self._lost(f"epoch={epoch} (voted for {self.leader} meanwhile)", ballot)
                return False
        self._persist_vote(epoch, self.name)
        sent_at = self.clock()
        ballot = await self._ballot(request)
        if ballot.won() and self.promised_epoch == epoch:
            # A replicated append that passed its epoch check before our vote may still be
            # committing: it lands first, so the new epoch starts after it, and nothing of an
            # older epoch lands after the new epoch's start (_receive_one checks again).
            async with self.node.batch_lock:
                if self.promised_epoch == epoch and not self.primary:
                    # An unanswered vote may have been granted, and with it the peer recorded
                    # behind (`peer_behind`): remembered as "maybe recorded", to be cleared.
                    self._become_primary(epoch, sent_at, witness_granted="witness" in ballot.granted, peer_granted="peer" in ballot.granted,
                                         witness_unanswered=ballot.unanswered("witness"))
                    return True
        await self._lost(f"epoch={epoch}", ballot)
        return False

    async def _ballot(self, request: VoteRequest) -> Ballot:
        """Ask the witness and the peer at once, counting with `core.Ballot`; adopt any higher
        epoch they report.

        Returns as soon as the ballot says the outcome is known (the first grant, or every
        answer); after a refusal, a pre-vote gives a silent voter only `ballot_grace`. A
        request cut short drops its connection (`PeerClient`): its reply, if any, is never
        read as another request's.
        """
        timeout = max(0.1, self.failover_timeout / 3)
        voters = [(label, client) for label, client in (("witness", self.witness), ("peer", self.peer_votes)) if client is not None]
        ballot = Ballot(request, [label for label, _ in voters], patient=self._grace_cut)

        async with trio.open_nursery() as nursery:
            async def ask(label: str, client: PeerClient) -> None:
                reply = await client.request(request, timeout)
                outcome = ballot.add(label, reply)
                if outcome == "done":
                    nursery.cancel_scope.cancel()
                elif outcome == "grace":
                    nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, trio.current_time() + self.ballot_grace)

            for label, client in voters:
                nursery.start_soon(ask, label, client)
        self._grace_cut = ballot.cut_short()
        for epoch, leader in ballot.higher_epochs():
            self._see_epoch(epoch, leader or None)
        return ballot

    async def _lost(self, what: str, ballot: Ballot) -> None:
        reasons = ballot.reasons()
        # Say it once per change of circumstances, not every retry.
        level = logging.INFO if reasons != self._last_refusal else logging.DEBUG
        self._last_refusal = reasons
        log.log(level, "election lost node=%s %s replies=%s", self.name, what, reasons)
        peer_name = self.peer.name if self.peer else ""
        await buggify.sleep(0.1 + (0.05 if self.name > peer_name else 0.0))

    def _become_primary(self, epoch: int, sent_at: float, *, witness_granted: bool, peer_granted: bool,
                        witness_unanswered: bool = False) -> None:
        store = self.node.store
        self.node.become_primary(epoch)
        self.leader = self.name
        self.lease_until = 0.0
        self._extend_lease(sent_at, epoch)
        # In sync mode the witness recorded the peer as behind with its vote: we acknowledge
        # alone until the peer has caught up and the record is cleared.
        self.behind.elected(sync_with_peer=self.mode == "sync" and self.peer is not None,
                            witness_granted=witness_granted, witness_unanswered=witness_unanswered)
        self.queue.new_term()
        self.state_check.new_term()
        # Time without a writable primary, as this node saw it: since it last heard one.
        self.last_failover_seconds = self.clock() - min(self.last_heard, self.no_primary_since or self.last_heard)
        self.no_primary_since = None
        self.failovers += 1
        self.promoted.set()
        self.promoted = trio.Event()
        self._wake_role_loop()
        log.warning("became primary node=%s epoch=%d lsn=%d witness=%s peer=%s", self.name, epoch, store.last_lsn(), witness_granted, peer_granted)

    # ------------------------------------------------------------------ primary tasks

    async def _watch_lease(self) -> None:
        while True:
            if self.forced:
                await buggify.sleep(self.renew_interval)
                continue
            await buggify.point("member.timer", self.name)  # simulator only: a paused process acts on resume
            now = self.clock()
            if now >= self.lease_until:
                self.step_down("lease expired")
                return
            await buggify.sleep(self.lease_until - now)

    async def _renew_loop(self) -> None:
        while True:
            if self.witness is not None:
                sent_at = self.clock()
                last_epoch, last_lsn = self._last_position()
                # A slow answer still counts: the lease runs from when the request was sent.
                reply = await self.witness.request(
                    VoteRequest(epoch=self.promised_epoch, candidate=self.name, last_epoch=last_epoch, last_lsn=last_lsn, renew=True),
                    self.lease_seconds / 3,
                )
                action = core.renewal(reply, promised=self.promised_epoch, forced=self.forced)
                if action == "extend":
                    assert isinstance(reply, VoteReply)
                    self._extend_lease(sent_at, reply.epoch)
                    self.forced = False
                elif action == "update_witness":
                    await self._update_witness(sent_at)
                elif action == "step_down":
                    assert isinstance(reply, VoteReply)
                    self._see_epoch(reply.promised_epoch, reply.leader or None)
                    self.step_down(f"witness refused renewal: {reply.reason}")
                    return
            if self.peer is None and self.witness is None:
                self.lease_until = self.clock() + self.lease_seconds
            await buggify.sleep(max(0.0, sent_at + self.renew_interval - self.clock()) if self.witness is not None else self.renew_interval)

    async def _update_witness(self, sent_at: float) -> None:
        """The witness missed our election (won with the peer's vote): bring it to our epoch.

        It may still hold a "behind" record made with a vote it granted in an election we did
        not win that way (the peer refused, or the reply was lost), which it lets only the
        leader of its promised epoch clear: left there, that record would keep the peer from
        being elected after we fail. The same vote as our election's, for our epoch (the
        witness grants it: we hold the lease it knows of, or none runs), makes us its leader;
        the record is then "maybe" there and is cleared once the standby has caught up.
        """
        assert self.witness is not None
        sync = self.mode == "sync" and self.peer is not None
        last_epoch, last_lsn = self._last_position()
        reply = await self.witness.request(
            VoteRequest(epoch=self.promised_epoch, candidate=self.name, last_epoch=last_epoch, last_lsn=last_lsn),
            self.lease_seconds / 3,
        )
        if isinstance(reply, VoteReply) and reply.granted and reply.epoch == self.promised_epoch:
            log.info("witness brought to epoch=%d node=%s", self.promised_epoch, self.name)
            self._extend_lease(sent_at, reply.epoch)
        elif isinstance(reply, VoteReply):
            log.info("witness not brought to epoch=%d node=%s: %s", self.promised_epoch, self.name, reply.reason)
        self.behind.witness_updated(reply, self.promised_epoch, sync_with_peer=sync)

    async def _record_behind(self, lsn: int) -> bool:
        """Ask the witness to record the standby behind; True once it confirmed (go on alone).

        From the moment the request leaves, the witness may hold the record (it saves before it
        replies, and a reply can be lost): `behind_maybe` says so until a clear is confirmed,
        so that the record is cleared once the standby has caught up, whatever the answer.
        """
        if self.witness is None or self.peer is None:
            return False
        async with self._behind_lock:
            if not self.behind.record_wanted(self.acked_lsn, lsn):
                return False  # settled while a clear held the lock: the caller looks again
            was_maybe = self.behind.record_sent()
            reply = await self.witness.request(
                RecordBehind(epoch=self.promised_epoch, primary=self.name, standby=self.peer.name, lsn=lsn,
                             sequence=self.behind.next_sequence()), self.standby_timeout
            )
            if self.behind.record_answered(reply, was_maybe):
                log.warning("standby recorded behind node=%s standby=%s lsn=%d: acknowledging alone", self.name, self.peer.name, lsn)
                self._warn_unordered_witness()
                return True
            if isinstance(reply, Ack):
                log.warning("RecordBehind refused node=%s standby=%s (%s): staying synchronous", self.name, self.peer.name, reply.reason)
            else:
                log.warning("no answer to RecordBehind node=%s standby=%s: maybe recorded, staying synchronous", self.name, self.peer.name)
            return False

    def _warn_unordered_witness(self) -> None:
        """A witness older than protocol version 2 applies behind requests unordered: a clear
        the primary gave up on may still undo this record (docs/versions.md: upgrade the
        witness first). Said once per connection's version."""
        assert self.witness is not None
        protocol = self.witness.protocol
        if 0 < protocol < BEHIND_ORDERED_PROTOCOL and self._unordered_warned != protocol:
            self._unordered_warned = protocol
            log.warning("the witness speaks protocol version %d, which does not order behind requests: "
                        "upgrade the witness (docs/versions.md) node=%s", protocol, self.name)

    async def _clear_behind(self) -> None:
        """The standby caught up: require it again, then clear the witness's record.

        Once a `ClearBehind` has left, only its confirmation settles anything: without an
        answer the witness may have cleared the record (it saves before it replies), so the
        primary stays synchronous, and goes back to acknowledging alone only through a fresh
        `RecordBehind` the witness confirms (`replicate`). The clear is idempotent and is sent
        again once the standby has caught up.
        """
        assert self.peer is not None and self.witness is not None
        async with self._behind_lock:
            # From here every batch waits for the standby (or for a RecordBehind, which waits
            # for this lock): what was acknowledged alone is durable here, at or below target.
            if self.state_check.diverged or not self.behind.clear_begin():
                return  # (a diverged standby stays behind until it is rebuilt and agrees)
            target = self.node.store.last_lsn()
            with trio.move_on_after(self.standby_timeout):
                while self.acked_lsn < target:
                    await self.acked_changed.wait()
            if self.acked_lsn < target:
                self.behind.clear_not_caught_up()
                return
            self.behind.clear_sent()
            reply = await self.witness.request(
                ClearBehind(epoch=self.promised_epoch, primary=self.name, standby=self.peer.name,
                            sequence=self.behind.next_sequence()), self.standby_timeout
            )
            if self.behind.clear_answered(reply):
                log.info("standby caught up node=%s standby=%s lsn=%d", self.name, self.peer.name, self.acked_lsn)
                self._note_in_sync()
            else:
                log.warning("ClearBehind not confirmed node=%s standby=%s (%s): staying synchronous",
                            self.name, self.peer.name, getattr(reply, "reason", "no answer"))

    async def _ship_loop(self) -> None:
        assert self.peer is not None
        retry = SHIP_RETRY_MIN
        while True:
            sessions = self._ship_sessions
            try:
                await self._ship_once()
            except* CONNECTION_ERRORS as group:
                log.info("shipping to %s interrupted: %r", self.peer.name, _first(group))
            except* (_StandbyTooSlow, trio.TooSlowError):  # TooSlowError: connect hung (partition)
                log.warning("standby %s stopped answering", self.peer.name)
            except* StoreError as group:
                log.error("shipping to %s stopped on a store error: %s", self.peer.name, _first(group))
            self.peer_connected = False
            # A standby that is down (crashed, restarting, cut off) is retried quickly at first,
            # then less often, up to SHIP_RETRY_MAX: a rejoin is noticed within that time (it is
            # part of the rejoin budget: at 0.4 s a restarted standby waited 0.2 s on average to
            # be reached), and a long outage costs ten refused connection attempts a second.
            retry = SHIP_RETRY_MIN if self._ship_sessions != sessions else min(2 * retry, SHIP_RETRY_MAX)
            await buggify.sleep(retry)

    async def _ship_once(self) -> None:
        assert self.peer is not None
        with trio.fail_after(self.standby_timeout):
            stream = await self.network.connect(self.peer.replication)
        channel = Channel(stream, cluster=self.cluster, secret=self.secret)
        try:
            with trio.move_on_after(self.standby_timeout) as scope:
                await handshake(channel, node=self.name, role=Role.PRIMARY.value, purpose="ship", initiator=True)
                sync = await channel.receive()
            if scope.cancelled_caught:
                raise _StandbyTooSlow
            if not isinstance(sync, Sync):
                raise FrameError("expected Sync from the standby")
            if sync.epoch > self.promised_epoch:
                self._see_epoch(sync.epoch)
                return
            queue = self.queue
            generation = queue.generation
            start = await self._reconcile(channel, sync)
            # A withdrawal reconcile has dealt with (a Truncate sent, or a standby with nothing
            # after the withdrawn LSN) is settled by the first reply on this connection.
            truncating = queue.retracted_after is not None and generation == queue.generation
            self._acked(start)
            queue.acked_lsn = start
            self.peer_connected = True
            if self._rejoin_from is None:
                self._rejoin_from = self.clock()
            self._ship_sessions += 1
            sent_times: deque[tuple[float, int, bool]] = deque()
            sent = start
            prev_epoch = self._prev_epoch(sent)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_replies, channel, sent_times, nursery)
                while True:
                    now = self.clock()
                    if generation != queue.generation:
                        # A withdrawal since this connection's reconcile (or its last Truncate).
                        # (One the reconcile dealt with, by a Truncate or by a snapshot that
                        # replaced the standby's state, needs nothing more: what was shipped
                        # since then is durable, and a standby whose log was replaced by a
                        # snapshot could not truncate below it.)
                        truncating = queue.retracted_after is not None
                        generation, withdrawn = queue.withdrawal(generation, sent)
                        if withdrawn is not None:
                            await channel.send(Truncate(epoch=self.promised_epoch, after_lsn=withdrawn))
                            log.warning("withdrew records from the standby after_lsn=%d (local commit failed)", withdrawn)
                            sent = withdrawn
                            prev_epoch = self._prev_epoch(sent)
                    if sent < self._ship_top():
                        records = queue.shippable(self.node.store, sent)
                        if not records:
                            break
                        message = Append(epoch=self.promised_epoch, records=records, commit_lsn=self.acked_lsn, lease=True,
                                         sync=self.require_standby, prev_epoch=prev_epoch)
                        sent = records[-1].lsn
                        prev_epoch = records[-1].epoch
                    else:
                        message = Append(epoch=self.promised_epoch, records=[], commit_lsn=self.acked_lsn, lease=True, sync=self.require_standby)
                    sent_times.append((now, generation, truncating))
                    truncating = False
                    await channel.send(message)
                    if sent >= self._ship_top():
                        with trio.move_on_after(self.renew_interval):
                            await self.new_records.wait()
        finally:
            self.peer_connected = False
            self.state_check.connection_lost()
            with trio.CancelScope(shield=True):
                try:
                    await channel.aclose()
                except CONNECTION_ERRORS:
                    pass

    async def _clear_behind_once(self) -> None:
        # Not gated on require_standby: a clear cancelled after the witness took it (the
        # shipping connection dropped) leaves require_standby set and must still be retried.
        if (self.behind_recorded or self.behind_maybe) and not self._clearing:
            self._clearing = True
            try:
                await self._clear_behind()
            finally:
                self._clearing = False

    async def _read_replies(self, channel: Channel, sent_times: deque[tuple[float, int, bool]], nursery: trio.Nursery) -> None:
        while True:
            # One timer for many replies: its deadline moves on with each one (handling a
            # reply never waits), and only a silence of `standby_timeout` ends it.
            with trio.CancelScope() as timer:
                while True:
                    timer.deadline = trio.current_time() + self.standby_timeout
                    if not self._take_reply(await channel.receive(), sent_times, nursery):
                        return
            if sent_times:  # silent with appends outstanding: the standby stopped answering
                nursery.cancel_scope.cancel()
                return

    def _take_reply(self, reply: Message, sent_times: deque[tuple[float, int, bool]], nursery: trio.Nursery) -> bool:
        """Account for one reply of the standby; False when shipping on this connection ends."""
        sent = sent_times.popleft() if sent_times else (self.clock(), -1, False)
        outcome = core.account_reply(reply, sent, promised=self.promised_epoch, generation=self.queue.generation)
        if outcome.higher_epoch:
            self._see_epoch(outcome.higher_epoch)
            return False
        if outcome.refused:
            assert isinstance(reply, AppendReply)
            log.info("standby refused append: %s (its last LSN %d)", reply.reason, reply.last_lsn)
            nursery.cancel_scope.cancel()
            return False
        if outcome.extend_from is not None:
            self._extend_lease(outcome.extend_from, self.promised_epoch)
        if outcome.acked is None:
            return True  # sent before a withdrawal: its LSNs may name withdrawn records
        if outcome.settles:
            self.queue.retracted_after = None  # the standby applied the Truncate sent before it
        self._acked(outcome.acked)
        assert isinstance(reply, AppendReply)
        if self._compare_states(reply):
            nursery.cancel_scope.cancel()  # the next connection records it behind and rebuilds it
            return False
        if self.behind.clear_wanted(caught_up=self._caught_up() and not self.state_check.diverged):
            nursery.start_soon(self._clear_behind_once)
        self._note_in_sync()
        return True

    def _compare_states(self, reply: AppendReply) -> bool:
        """Compare our state hashes with those the standby reported (`core.StateCheck`); True
        when they differ: the standby diverged, shipping on this connection ends."""
        outcomes = [outcome for lsn, digest in self.node.take_state_hashes() for outcome in self.state_check.add_mine(lsn, digest)]
        outcomes += self.state_check.add_theirs(reply.state_hashes)
        diverged = False
        peer = self.peer.name if self.peer else ""
        if any(outcome.news in ("diverged", "cleared") for outcome in outcomes):
            self._save_divergence()
        for outcome in outcomes:
            if outcome.news == "diverged":
                diverged = True
                log.error("STATE DIVERGED: the standby's state differs from the primary's at lsn=%d primary=%s hash=%s "
                          "standby=%s hash=%s; the standby is recorded behind (not electable) and rebuilt from a snapshot",
                          outcome.lsn, self.name, outcome.mine, peer, outcome.theirs)
            elif outcome.news == "rebuilt":
                log.warning("diverged standby rebuilt from the snapshot at lsn=%d primary=%s standby=%s hash=%s; "
                            "the alarm holds until its state agrees after records it applied itself", outcome.lsn, self.name, peer, outcome.mine)
            elif outcome.news == "cleared":
                log.warning("divergence alarm cleared: state hashes agree again at lsn=%d primary=%s standby=%s hash=%s",
                            outcome.lsn, self.name, peer, outcome.mine)
        return diverged

    def _save_divergence(self) -> None:
        at = self.state_check.diverged_at
        self.node.store.put_meta(DIVERGED_META, b"" if at is None else str(at).encode())

    async def _record_diverged(self) -> None:
        """Record the diverged standby behind at the witness, so that it cannot be elected; it is
        cleared like any behind standby once it has been rebuilt, agrees and has caught up."""
        if self.witness is None or self.peer is None:
            return
        async with self._behind_lock:
            was_maybe = self.behind.record_sent()
            request = RecordBehind(epoch=self.promised_epoch, primary=self.name, standby=self.peer.name, lsn=self.state_check.diverged_at or 0,
                                   sequence=self.behind.next_sequence())
            answer = await self.witness.request(request, self.standby_timeout)
            if self.behind.record_answered(answer, was_maybe):
                log.warning("diverged standby recorded behind node=%s standby=%s", self.name, self.peer.name)
            else:
                log.warning("diverged standby not confirmed behind node=%s standby=%s (%s): tried again at the next connection",
                            self.name, self.peer.name, getattr(answer, "reason", "no answer"))

    def _caught_up(self) -> bool:
        """Whether to start clearing the standby's behind record (`core.caught_up`)."""
        return core.caught_up(self.node.store.last_lsn(), self.acked_lsn, self.lag_seconds(), self.standby_timeout)

    def _note_in_sync(self) -> None:
        """The standby is connected and not behind: the rejoin that began at its `Sync` ends."""
        if self._rejoin_from is not None and self.peer_connected and not (self.behind_recorded or self.behind_maybe):
            self.last_rejoin_seconds = self.clock() - self._rejoin_from
            self._rejoin_from = None
            self.rejoins += 1
            log.info("standby in sync node=%s standby=%s after %.3f s", self.name, self.peer.name if self.peer else "", self.last_rejoin_seconds)

    async def _reconcile(self, channel: Channel, sync: Sync) -> int:
        """Where shipping starts (`core.reconcile`); truncate the standby's divergent tail or
        send a snapshot."""
        store = self.node.store
        plan = core.reconcile(sync, log=store, queue=self.queue, epoch_at=self._epoch_at)
        if self.state_check.rebuild_wanted:
            await self._record_diverged()
            plan = core.rebuild_plan()
        for after_lsn in plan.truncate:
            log.warning("truncating standby tail standby=%s after_lsn=%d (its last %d)", self.peer.name if self.peer else "", after_lsn, sync.last_lsn)
            await channel.send(Truncate(epoch=self.promised_epoch, after_lsn=after_lsn))
        start = plan.start
        if plan.snapshot:
            snapshot = store.latest_snapshot()
            if snapshot is None or snapshot.lsn < max(store.first_lsn() - 1, plan.floor):
                # None stored is recent enough: the log before it is pruned, or the standby
                # holds (acknowledged) records past it. One of the state as it is now, taken
                # between batches; it need not be stored (the disk may be full).
                snapshot = await self.node.snapshot_now()
            log.warning("sending snapshot to standby lsn=%d", snapshot.lsn)
            if self.state_check.rebuild_wanted:
                self.state_check.rebuilding(snapshot.lsn, hashlib.sha256(snapshot.state).hexdigest())
            await channel.send(InstallSnapshot(epoch=self.promised_epoch, snapshot=snapshot, secrets=store.secrets(),
                                               epoch_history=store.epoch_history()))
            start = snapshot.lsn
        return start

    # ------------------------------------------------------------------ serving peers

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        channel = Channel(stream, cluster=self.cluster, secret=self.secret)
        try:
            hello = await handshake(channel, node=self.name, role=str(self.node.role), purpose="", initiator=False)
            if self.peer is None or hello.node != self.peer.name:
                raise FrameError(f"unknown peer {hello.node!r}")
            if hello.purpose == "ship":
                await self._receive_log(channel, hello.node)
            else:
                while True:
                    message = await channel.receive()
                    await channel.send(await self._answer(message))
        except HandshakeError:
            self.frames_refused += 1  # logged by the port's guard, with the peer's address (network.Gate)
        except FrameError as error:
            self.frames_refused += 1
            log.warning("refused a replication frame and closed the connection: %s", error)
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except CONNECTION_ERRORS:
                    pass

    async def _answer(self, message: Message) -> Message:
        if isinstance(message, VoteRequest):
            return self._vote(message)
        if isinstance(message, Handover):
            if self._see_epoch(message.epoch) and self.node.store.last_lsn() >= message.lsn:
                self.invited = True
                self.granted_until = 0.0
                self._wake_role_loop()
                return Ack(ok=True, epoch=self.promised_epoch)
            return Ack(ok=False, reason="not_caught_up", epoch=self.promised_epoch)
        if isinstance(message, StatusRequest):
            return Ack(ok=True, epoch=self.promised_epoch)
        return Ack(ok=False, reason="unexpected_message")

    def _vote(self, request: VoteRequest) -> VoteReply:
        """Answer a vote (`core.Voter.answer`); a recorded vote is made durable, and a primary
        that grants one steps down."""
        now = self.clock()
        if self.state_check.diverged and self.peer is not None and request.candidate == self.peer.name:
            return self.voter.refuse(request, "diverged")  # its state is not ours: never elect it
        reply, recorded = self.voter.answer(request, now=now, last=self._last_position(), primary_with_lease=self.lease_valid())
        if recorded:
            self._save_vote()
            if self.primary:
                self.step_down(f"voted for {request.candidate} in epoch {request.epoch}")
            self.last_heard = now
        return reply

    async def _receive_log(self, channel: Channel, primary: str) -> None:
        """Standby side of shipping: reconcile, then apply records as they come.

        Only the newest shipping connection applies anything: a message still buffered on an
        older one (the primary reconnected) must not land after the newer one's `Sync` told
        the primary where our log ends, or after a `Truncate` it sent on the newer one.
        """
        store = self.node.store
        self._ship_serial += 1
        serial = self._ship_serial
        async with self._ship_apply_lock:  # an older connection's message in progress ends first
            # A snapshot still being written in the background would change what this Sync
            # reports (its LSN decides between a Truncate and a snapshot from the primary).
            await self.node.snapshot_settled()
            last_epoch, last_lsn = self._last_position()
            snapshot = store.latest_snapshot()
            sync = Sync(
                last_lsn=last_lsn, last_epoch=last_epoch, epoch=self.promised_epoch,
                epoch_history=store.epoch_history(), snapshot_lsn=snapshot.lsn if snapshot else 0,
            )
        await channel.send(sync)
        while True:
            message = await channel.receive()
            async with self._ship_apply_lock:
                if serial != self._ship_serial:
                    log.info("closing a shipping connection replaced by a newer one node=%s", self.name)
                    return
                if not await self._receive_one(channel, primary, message):
                    return

    async def _receive_one(self, channel: Channel, primary: str, message: Message) -> bool:
        """Apply one message of the shipping connection; False when the connection must end."""
        store = self.node.store
        epoch = getattr(message, "epoch", 0)
        if not self._see_epoch(epoch, primary):
            await channel.send(AppendReply(epoch=self.promised_epoch, ok=False, last_lsn=store.last_lsn(), reason="stale_epoch"))
            return False
        if self.primary:
            self.step_down(f"primary {primary} ships epoch {epoch}")
        self.last_heard = self.clock()
        if self.no_primary_since is not None:
            self.no_primary_since = None
        if self.state_check.diverged:
            # An alarm this node raised as primary about its peer, which is primary now (by
            # an operator's forced promotion): its state is the reference from here on.
            log.warning("divergence alarm dropped node=%s: the peer %s is primary now", self.name, primary)
            self.state_check.diverged_at = None
            self._save_divergence()
        if not isinstance(message, Truncate | InstallSnapshot | Append):
            raise FrameError(f"unexpected {type(message).__name__} on the shipping connection")
        # A batch our own pipeline took while we were primary (applied in memory, its commit
        # still running) ends first: it fails, and what it wrote is a tail the new primary
        # truncates. Without the lock the two would write the same LSNs.
        async with self.node.batch_lock:
            if epoch != self.promised_epoch or self.primary:
                # We stood for (or won) a newer epoch while waiting for the lock.
                await channel.send(AppendReply(epoch=self.promised_epoch, ok=False, last_lsn=store.last_lsn(), reason="stale_epoch"))
                return False
            if isinstance(message, Truncate | InstallSnapshot):
                await self.node.snapshot_settled()  # the store's snapshots as the Sync said
            if isinstance(message, Truncate):
                removed = store.truncate_tail(message.after_lsn)
                log.warning("discarded unacknowledged tail node=%s after_lsn=%d records=%d", self.name, message.after_lsn, removed)
                self.node.reload()
                return True
            if isinstance(message, InstallSnapshot):
                if message.snapshot.epoch > store.epoch():
                    store.set_epoch(message.snapshot.epoch, message.snapshot.lsn + 1)
                store.install_snapshot(message.snapshot, secrets=message.secrets, epoch_history=message.epoch_history)
                log.warning("installed snapshot node=%s lsn=%d", self.name, message.snapshot.lsn)
                self.node.reload()
                self.node.rehash_state()  # the primary compares it with its snapshot's
                return True
            reply = await self._append(message)
        await channel.send(reply)
        # After a refusal nothing more on this connection may land: appends already in flight
        # behind the refused one would continue a log the primary has not reconciled.
        return reply.ok

    async def _append(self, message: Append) -> AppendReply:
        store = self.node.store
        records = message.records
        if records:
            last = self._last_position()
            refused = core.check_append(records, message.prev_epoch, last)
            if refused:
                return AppendReply(epoch=self.promised_epoch, ok=False, last_lsn=last[1], reason=refused)
            for record in records:
                if record.epoch > store.epoch():
                    store.set_epoch(record.epoch, record.lsn)
            await self.node.append_records(records)
            self.node.apply_replicated(records)
        self.peer_in_sync = message.sync
        granted = message.lease and not self.primary
        if granted:
            self.granted_until = self.clock() + self.lease_seconds
        return AppendReply(epoch=self.promised_epoch, ok=True, last_lsn=store.last_lsn(), lease_granted=granted,
                           state_hashes=self.node.take_state_hashes())

    # ------------------------------------------------------------------ operations

    async def switchover(self, to: str | None = None, actor: str = "operator") -> dict[str, Any]:
        """Planned swap: stop writing, let the standby catch up, hand over, step down."""
        if not self.primary:
            raise SwitchoverRefused("not_primary", f"node {self.name} is {self.node.role}; run the switchover on the primary")
        if self.peer is None or (to is not None and to != self.peer.name):
            raise SwitchoverRefused("unknown_node", f"no standby named {to!r}")
        if not self.peer_connected or self.behind_recorded or self.behind_maybe:
            raise SwitchoverRefused("standby_not_ready", f"standby {self.peer.name} is not connected and caught up")
        # The audit record goes through the log first, so both nodes keep who asked and when.
        await self.node.submit(commands.Audit(actor=actor, action="switchover", detail=f"{self.name} -> {self.peer.name}"))
        self.handover_requested = True
        started = self.clock()
        try:
            async with self.node.batch_lock:
                target = self.node.store.last_lsn()
                with trio.move_on_after(self.failover_timeout) as scope:
                    while self.acked_lsn < target:
                        await self.acked_changed.wait()
                if scope.cancelled_caught:
                    raise SwitchoverRefused("standby_not_ready", "the standby did not catch up in time")
                epoch = self.promised_epoch
                assert self.peer_votes is not None
                reply = await self.peer_votes.request(Handover(epoch=epoch, lsn=target), self.failover_timeout)
                if not (isinstance(reply, Ack) and reply.ok):
                    raise SwitchoverRefused("standby_not_ready", f"standby refused the handover: {getattr(reply, 'reason', 'no answer')}")
                # Step down before the witness ends our lease: a Release it applied is enough
                # for the standby to win, whether or not its answer reaches us, and even if this
                # switchover is cancelled while waiting for it.
                self.step_down("switchover")
                self.granted_until = 0.0
                if self.witness is not None:
                    await self.witness.request(Release(epoch=epoch, node=self.name), self.standby_timeout)
        finally:
            self.handover_requested = False
        with trio.move_on_after(3 * self.failover_timeout):
            while self.leader in (None, self.name) or self.promised_epoch == epoch:
                await trio.sleep(0.01)
        return {"from": self.name, "to": self.leader, "seconds": round(self.clock() - started, 3), **self.view()}

    async def promote(self, force: bool = False, actor: str = "operator") -> dict[str, Any]:
        """Manual promotion when the witness is gone (docs/design.md: `acd promote`)."""
        if self.primary:
            raise SwitchoverRefused("already_primary", f"node {self.name} is primary")
        if self.clock() - self.last_heard < self.failover_timeout:
            raise SwitchoverRefused("primary_alive", "a primary shipped to this node less than failover_timeout ago")
        if not self.peer_in_sync and not force:
            raise SwitchoverRefused(
                "may_lose_writes",
                "this node was not in sync with the last primary: it may lack acknowledged writes; use --force to promote anyway",
            )
        self._promotion_detail = f"manual promotion by {actor}" + (" (forced)" if force else "")
        if await self._try_election(force=force):
            return self.view()
        if not force:
            raise SwitchoverRefused("no_majority", "no vote from the witness or the peer; use --force to promote alone")
        async with self.node.batch_lock:  # as in _try_election
            epoch = max(self.promised_epoch, self.node.store.epoch()) + 1
            self._persist_vote(epoch, self.name)
            log.error("FORCED promotion node=%s epoch=%d without a majority: the operator vouches the old primary is dead", self.name, epoch)
            self.forced = True
            self._become_primary(epoch, self.clock(), witness_granted=False, peer_granted=False)
        self.forced = True
        self.behind.require_standby = False
        return self.view()

    def promotion_detail(self) -> str:
        detail, self._promotion_detail = self._promotion_detail, ""
        return detail or f"automatic failover after {self.last_failover_seconds:.2f} s without a primary"

    async def witness_status(self) -> WitnessStatus | None:
        if self.witness is None:
            return None
        reply = await self.witness.request(StatusRequest(), self.standby_timeout)
        return reply if isinstance(reply, WitnessStatus) else None

    def view(self) -> dict[str, Any]:
        store = self.node.store
        now = self.clock()
        lag = max(0, store.last_lsn() - self.acked_lsn) if self.primary and self.peer else 0
        return {
            "name": self.name,
            "cluster": self.cluster,
            "role": str(self.node.role),
            "epoch": self.promised_epoch,
            "leader": self.leader,
            "primary": self.primary_api() if not self.primary else self.node.section.api,
            "lsn": store.last_lsn(),
            "applied_lsn": self.node.lsn,
            "mode": self.mode,
            "peer": self.peer.name if self.peer else None,
            "peer_connected": self.peer_connected,
            "standby_acked_lsn": self.acked_lsn if self.primary else None,
            "lag": lag,
            "lag_records": lag,
            "lag_seconds": self.lag_seconds() if self.primary else 0.0,
            "standby_behind": self.behind_recorded or self.behind_maybe,
            "lease_remaining": round(max(0.0, self.lease_until - now), 3) if self.primary else 0.0,
            "forced": self.forced,
            "failovers": self.failovers,
            "last_failover_seconds": round(self.last_failover_seconds, 3),
            "last_rejoin_seconds": round(self.last_rejoin_seconds, 3),
            "rejoins": self.rejoins,
            "seconds_without_primary": round(now - self.no_primary_since, 3) if self.no_primary_since is not None else 0.0,
            "witness": self.witness_address,
            "loss_window_records": lag if self.mode == "async" else 0,
            # The divergence alarm (primary only): the LSN where the standby's state hash last
            # differed from ours, until it was rebuilt and agrees again; comparisons made.
            "standby_diverged_at_lsn": self.state_check.diverged_at if self.primary else None,
            "state_comparisons": self.state_check.compared,
            "state_divergences": self.state_check.divergences,
        }


    def statistics(self) -> ReplicationStatistics:
        """A frozen snapshot of the figures `/metrics` shows (`replication.metrics`)."""
        view = self.view()
        gate = getattr(self.network, "gate", None)
        port = None
        if gate is not None:  # the replication port's guard (replication/network.py): TCP only
            port = PortStatistics(open=gate.open, handshakes_failed=dict(gate.handshakes_failed),
                                  connections_refused=dict(gate.connections_refused))
        return ReplicationStatistics(
            primary=self.primary, lease_remaining=view["lease_remaining"], epoch=view["epoch"], lag_records=view["lag_records"],
            lag_seconds=view["lag_seconds"], peer_connected=view["peer_connected"], standby_behind=view["standby_behind"],
            loss_window_records=view["loss_window_records"], seconds_without_primary=view["seconds_without_primary"],
            last_failover_seconds=view["last_failover_seconds"], last_rejoin_seconds=view["last_rejoin_seconds"],
            sync_mode=self.mode == "sync", failovers=self.failovers, frames_refused=self.frames_refused,
            stale_dropped=self.stale_dropped, port=port, state_comparisons=self.state_check.compared,
            state_divergences=self.state_check.divergences, standby_diverged=view["standby_diverged_at_lsn"] is not None,
        )


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of a group, for a one-line log message."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class SwitchoverRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _StandbyTooSlow(Exception):
    pass


async def run(node: ReplicaNode, nursery: trio.Nursery, settings: Settings, *, network: Network | None = None) -> ReplicationDriver:
    """Start the replication layer of `node` inside `nursery` (called by `acd serve`)."""
    member = ReplicationDriver(node, settings, network=network)
    await nursery.start(member.run)
    nursery.start_soon(_promotion_audit, member)
    return member


async def _promotion_audit(member: ReplicationDriver) -> None:
    """Write an audit record at every promotion: also the new epoch's first record."""
    while True:
        await member.promoted.wait()
        if member.primary:
            try:
                await member.node.submit(commands.Audit(
                    actor=member.name, action="promoted", detail=f"epoch {member.promised_epoch}: {member.promotion_detail()}",
                ))
                if member.node.config_version() == 0:
                    await member.node.apply_settings_center(actor="first-primary")
            except NotPrimary:
                pass
