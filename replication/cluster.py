"""A node's part in the cluster: elections, the lease, log shipping, catch-up, switchover.

See `docs/replication.md` for the protocol (glossary, messages, safety argument). In short:

- A node becomes primary of epoch E with the votes of a majority of {A, B, witness}: itself
  and the witness or the peer. Every vote is also a lease: the voter votes for nobody else
  until `lease_seconds` after it granted. The primary renews with the witness and with the
  standby (each `Append` asks for it) every `renew_interval`.
- The primary counts its lease from the moment it *sent* the request, shortened by the clock
  drift bound and a margin (`DRIFT`, `MARGIN`), so it stops acknowledging before any voter
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

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from acd import buggify
from acd.core import commands as c
from acd.node.locks import QuickLock
from acd.node.node import Node, NotPrimary
from acd.settings import Settings
from acd.store import Record, StoreError

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

DRIFT = 0.01     # clocks may run up to 1 % apart over a lease period
MARGIN = 0.05    # seconds, for scheduling delays between the reply and our reading the clock
TAIL_RECORDS = 4096  # newest records of the term the ship loop sends from memory
SHIP_RETRY_MIN = 0.05   # seconds between attempts to reach the standby, at first
SHIP_RETRY_MAX = 0.4    # and at most
CATCH_UP_RECORDS = 1024  # a standby this close (and keeping up) is asked to catch up for good
CONNECTION_ERRORS = (OSError, FrameError, trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError)


class PeerClient:
    """Request/reply over one framed connection, reconnecting on failure."""

    def __init__(self, member: Member, address: str, purpose: str) -> None:
        self.member = member
        self.address = address
        self.purpose = purpose
        self.channel: Channel | None = None
        self.lock = QuickLock()

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
                    try:
                        if self.channel is None:
                            stream = await self.member.network.connect(self.address)
                            channel = Channel(stream, cluster=self.member.cluster, secret=self.member.secret)
                            await handshake(channel, node=self.member.name, role=self.member.node.role, purpose=self.purpose, initiator=True)
                            self.channel = channel
                        await self.channel.send(message)
                        reply = await self.channel.receive()
                        answered = True
                        return reply
                    except CONNECTION_ERRORS as error:
                        log.debug("request to %s failed: %s", self.address, error)
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


class Member:
    """The replication layer of one node; also the node's `Replicator`."""

    def __init__(self, node: Node, settings: Settings, *, network: Network | None = None,
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
        store = node.store
        promised = store.get_meta("promised_epoch")
        self.promised_epoch = max(int(promised) if promised else 0, store.epoch())
        voted = store.get_meta("voted_for")
        self.voted_for = voted.decode() if voted else ""
        self.leader: str | None = None
        self.lease_until = 0.0
        self.forced = False
        now = clock()
        self.last_heard = now
        self.granted_until = 0.0
        self.acked_lsn = 0
        self.acked_changed = trio.Event()
        self.peer_connected = False
        self.behind_recorded = False   # the witness confirmed it records the peer behind
        self.behind_maybe = False      # it may record the peer behind (a request went unanswered)
        self.require_standby = True
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
        self._append_times: deque[tuple[int, float]] = deque()
        # Shipping starts while the primary's own commit runs (Node._process): the newest
        # records of this term, in LSN order, are shipped from memory (`_tail`), so shipping
        # never waits for, nor reads back, the local store. A batch whose local commit failed
        # is withdrawn (`retract`): the standby may hold records after `_retracted_after`
        # that are in no log of ours; it is truncated back before anything after that LSN
        # counts as acknowledged, and replies to what was sent before the withdrawal
        # (`_ship_generation`) acknowledge nothing.
        self._tail: list[Record] = []
        self._retracted_after: int | None = None
        self._ship_generation = 0
        self._ship_sessions = 0               # shipping connections that got as far as shipping
        self._ship_serial = 0                 # standby side: the newest shipping connection
        self._ship_apply_lock = QuickLock()
        self._clearing = False                # a clear of the witness's behind record is running
        # RecordBehind and ClearBehind one at a time, each with the state it settles: a record
        # confirmed while a clear waited for the standby would otherwise be cleared at once.
        self._behind_lock = QuickLock()
        node.replicator = self
        node.role = "standby"
        from .metrics import ReplicationCollector

        node.metrics.registry.register(ReplicationCollector(self))

    # ------------------------------------------------------------------ Replicator

    def lease_valid(self) -> bool:
        return self.node.role == "primary" and (self.forced or self.clock() < self.lease_until)

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
        times = self._append_times
        while times and times[0][0] <= self.acked_lsn:
            times.popleft()
        return round(self.clock() - times[0][1], 3) if times else 0.0

    def ship(self, records: list[Record] | Any) -> None:
        """Hand a batch to the ship loop before it is durable here (the commits overlap)."""
        if not records or self.node.role != "primary":
            return
        tail = self._tail
        if tail and tail[-1].lsn + 1 != records[0].lsn:
            tail.clear()
        tail.extend(records)
        if len(tail) > 2 * TAIL_RECORDS:
            del tail[:-TAIL_RECORDS]
        self._append_times.append((records[-1].lsn, self.clock()))
        while len(self._append_times) > 10_000:
            self._append_times.popleft()
        self.new_records.set()
        self.new_records = trio.Event()

    def retract(self, after_lsn: int) -> None:
        """The local commit of what was shipped after `after_lsn` failed: withdraw it.

        Nothing after `after_lsn` was acknowledged (the pipeline waits for the local commit
        first). From here on the standby is truncated back to `after_lsn` before it is shipped
        anything else, and acknowledgements it sent for the withdrawn records do not count.
        """
        del self._tail[next((i for i, r in enumerate(self._tail) if r.lsn > after_lsn), len(self._tail)):]
        self._ship_generation += 1
        if self._retracted_after is None or after_lsn < self._retracted_after:
            self._retracted_after = after_lsn
        if self.acked_lsn > after_lsn:
            self.acked_lsn = after_lsn
        while self._append_times and self._append_times[-1][0] > after_lsn:
            self._append_times.pop()
        self.new_records.set()
        self.new_records = trio.Event()

    def _shippable(self, after_lsn: int, limit: int) -> list[Record]:
        """Up to `limit` records after `after_lsn`: from this term's tail, else from the store."""
        tail = self._tail
        if tail and tail[0].lsn <= after_lsn + 1 <= tail[-1].lsn:
            start = after_lsn + 1 - tail[0].lsn
            return tail[start:start + limit]
        if after_lsn < self.node.store.last_lsn():
            return self.node.store.read(after_lsn, limit)
        return []

    def _ship_top(self) -> int:
        """The last LSN there is to ship: durable here, or in flight to our own store."""
        last = self.node.store.last_lsn()
        return max(last, self._tail[-1].lsn) if self._tail else last

    async def replicate(self, records: list[Record] | Any) -> None:
        if self.mode == "async" or not records:
            return
        if buggify.bug("ack_before_standby"):  # a deliberately broken variant for sim/dr's tests
            return
        target = records[-1].lsn
        deadline = self.clock() + self.standby_timeout
        while self.acked_lsn < target and self.require_standby:
            if self.node.role != "primary":
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
        if lsn > self.acked_lsn:
            self.acked_lsn = lsn
        self.acked_changed.set()
        self.acked_changed = trio.Event()

    # ------------------------------------------------------------------ state

    def _persist_vote(self, epoch: int, candidate: str) -> None:
        self.promised_epoch = epoch
        self.voted_for = candidate
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
        tail = self._tail
        if tail and tail[0].lsn <= lsn <= tail[-1].lsn:
            # From memory: reading the store would wait for a commit in progress (its lock).
            return tail[lsn - tail[0].lsn].epoch
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
        if epoch != self.promised_epoch or self.node.role != "primary":
            return
        until = sent_at + self.lease_seconds * (1 - DRIFT) - MARGIN
        if until > self.lease_until:
            self.lease_until = until

    def step_down(self, reason: str) -> None:
        if self.node.role == "primary":
            log.warning("stepping down node=%s epoch=%d reason=%s", self.name, self.promised_epoch, reason)
        self.node.role = "standby"
        self.forced = False
        self.lease_until = 0.0
        self._rejoin_from = None
        self._tail.clear()
        self.acked_changed.set()  # a batch waiting for the standby fails now, not at its timeout
        self.acked_changed = trio.Event()
        self.last_heard = self.clock()
        self.no_primary_since = self.clock()
        if self._primary_scope is not None:
            self._primary_scope.cancel()

    def _see_epoch(self, epoch: int, leader: str | None = None) -> bool:
        """A message from a higher epoch: adopt it (and step down). False if stale."""
        if epoch < self.promised_epoch:
            self.stale_dropped += 1
            log.info("dropped stale-epoch message node=%s epoch=%d promised=%d", self.name, epoch, self.promised_epoch)
            return False
        if epoch > self.promised_epoch:
            if self.node.role == "primary":
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
            if self.node.role == "primary":
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
            if self.node.role != "primary":
                await self._try_election(pre_vote=not invited)

    async def _wait_election_due(self) -> bool:
        """Wait until an election is due; True when the primary handed over to us."""
        while self.node.role != "primary":
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
        last_epoch, last_lsn = self._last_position()
        peer_name = self.peer.name if self.peer else ""
        request = VoteRequest(
            epoch=epoch, candidate=self.name, last_epoch=last_epoch, last_lsn=last_lsn, force=force,
            peer_behind=peer_name if self.mode == "sync" else "",
        )
        if pre_vote and not force:
            replies, granted = await self._ballot(msgspec.structs.replace(request, pre=True), epoch)
            if not granted:
                await self._lost(f"pre-vote epoch={epoch}", replies)
                return False
            epoch = max(self.promised_epoch, self.node.store.epoch()) + 1
            request = msgspec.structs.replace(request, epoch=epoch)
            if self.clock() < self.granted_until and self.leader not in (None, "", self.name):
                # While the pre-vote was out we voted for the peer: that vote is a lease too,
                # and standing now would break it (the simulator found two primaries so).
                await self._lost(f"epoch={epoch} (voted for {self.leader} meanwhile)", replies)
                return False
        self._persist_vote(epoch, self.name)
        sent_at = self.clock()
        replies, granted = await self._ballot(request, epoch)
        if granted and self.promised_epoch == epoch:
            # A replicated append that passed its epoch check before our vote may still be
            # committing: it lands first, so the new epoch starts after it, and nothing of an
            # older epoch lands after the new epoch's start (_receive_one checks again).
            async with self.node.batch_lock:
                if self.promised_epoch == epoch and self.node.role != "primary":
                    # An unanswered vote may have been granted, and with it the peer recorded
                    # behind (`peer_behind`): remembered as "maybe recorded", to be cleared.
                    self._become_primary(epoch, sent_at, witness_granted="witness" in granted, peer_granted="peer" in granted,
                                         witness_unanswered=self.witness is not None and replies.get("witness") is None)
                    return True
        await self._lost(f"epoch={epoch}", replies)
        return False

    async def _ballot(self, request: VoteRequest, epoch: int) -> tuple[dict[str, Message | None], list[str]]:
        """Ask the witness and the peer at once; adopt any higher epoch they report.

        Returns as soon as the outcome is known: one grant is a majority (with our own vote),
        and two answers are all there is. A silent voter is never waited for once a grant is
        in; after a refusal, a pre-vote gives the silent one only `ballot_grace` (a paused or
        cut-off node would hold the candidate for the whole timeout, and the pre-vote records
        nothing, so asking again soon costs nothing). A request cut short drops its connection
        (`PeerClient`): its reply, if any, is never read as another request's.
        """
        replies: dict[str, Message | None] = {}
        timeout = max(0.1, self.failover_timeout / 3)
        voters = [(label, client) for label, client in (("witness", self.witness), ("peer", self.peer_votes)) if client is not None]

        def grants(reply: Message | None) -> bool:
            # A reply counts only for the epoch it answers (PeerClient never keeps a connection
            # with a reply outstanding; this is the second line of defence).
            return isinstance(reply, VoteReply) and reply.granted and reply.epoch == request.epoch

        async with trio.open_nursery() as nursery:
            async def ask(label: str, client: PeerClient) -> None:
                reply = await client.request(request, timeout)
                replies[label] = reply
                if grants(reply) or len(replies) == len(voters):
                    nursery.cancel_scope.cancel()
                elif request.pre and reply is not None:
                    nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, trio.current_time() + self.ballot_grace)

            for label, client in voters:
                nursery.start_soon(ask, label, client)
        granted = [label for label, reply in replies.items() if grants(reply)]
        for reply in replies.values():
            if isinstance(reply, VoteReply) and reply.promised_epoch > epoch:
                self._see_epoch(reply.promised_epoch, reply.leader or None)
        return replies, granted

    async def _lost(self, what: str, replies: dict[str, Message | None]) -> None:
        reasons = {label: (reply.reason if isinstance(reply, VoteReply) else "no answer") for label, reply in sorted(replies.items())}
        # Say it once per change of circumstances, not every retry.
        level = logging.INFO if reasons != self._last_refusal else logging.DEBUG
        self._last_refusal = reasons
        log.log(level, "election lost node=%s %s replies=%s", self.name, what, reasons)
        peer_name = self.peer.name if self.peer else ""
        await buggify.sleep(0.1 + (0.05 if self.name > peer_name else 0.0))

    def _become_primary(self, epoch: int, sent_at: float, *, witness_granted: bool, peer_granted: bool,
                        witness_unanswered: bool = False) -> None:
        store = self.node.store
        store.set_epoch(epoch, store.last_lsn() + 1)
        self.leader = self.name
        self.lease_until = 0.0
        self.node.role = "primary"
        self._extend_lease(sent_at, epoch)
        # In sync mode the witness recorded the peer as behind with its vote: we acknowledge
        # alone until the peer has caught up and the record is cleared.
        self.behind_recorded = witness_granted and self.mode == "sync" and self.peer is not None
        self.behind_maybe = witness_unanswered and not witness_granted and self.mode == "sync" and self.peer is not None
        self.require_standby = self.mode == "sync" and self.peer is not None and not self.behind_recorded
        self.acked_lsn = 0
        self._tail.clear()
        self._retracted_after = None
        self._ship_generation += 1
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
                if isinstance(reply, VoteReply):
                    if reply.granted:
                        self._extend_lease(sent_at, reply.epoch)
                    if reply.granted and self.forced:
                        self.forced = False
                    elif not reply.granted and reply.promised_epoch < self.promised_epoch and not self.forced:
                        await self._update_witness(sent_at)
                    elif reply.promised_epoch > self.promised_epoch or (
                        reply.reason in ("stale_epoch", "not_leader") and reply.promised_epoch == self.promised_epoch
                    ):
                        # (A witness still at a lower epoch missed our election, won with the
                        # peer's vote: the peer's lease carries us; nobody won anything newer.)
                        if not self.forced:
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
            self.behind_maybe = sync and not self.behind_recorded
        elif isinstance(reply, VoteReply):
            # Still at its older epoch: none of this epoch's RecordBehind or ClearBehind was
            # applied there, so there is nothing of ours to clear (what it holds we cannot).
            log.info("witness not brought to epoch=%d node=%s: %s", self.promised_epoch, self.name, reply.reason)
            self.behind_maybe = False
        else:
            self.behind_maybe = sync and not self.behind_recorded   # no answer: maybe granted

    async def _record_behind(self, lsn: int) -> bool:
        """Ask the witness to record the standby behind; True once it confirmed (go on alone).

        From the moment the request leaves, the witness may hold the record (it saves before it
        replies, and a reply can be lost): `behind_maybe` says so until a clear is confirmed,
        so that the record is cleared once the standby has caught up, whatever the answer.
        """
        if self.witness is None or self.peer is None:
            return False
        async with self._behind_lock:
            if self.acked_lsn >= lsn or not self.require_standby:
                return False  # settled while a clear held the lock: the caller looks again
            was_maybe = self.behind_maybe
            self.behind_maybe = True
            reply = await self.witness.request(
                RecordBehind(epoch=self.promised_epoch, primary=self.name, standby=self.peer.name, lsn=lsn), self.standby_timeout
            )
            if isinstance(reply, Ack) and reply.ok:
                log.warning("standby recorded behind node=%s standby=%s lsn=%d: acknowledging alone", self.name, self.peer.name, lsn)
                self.behind_recorded = True
                self.behind_maybe = False
                self.require_standby = False
                return True
            if isinstance(reply, Ack):  # refused: the witness recorded nothing
                self.behind_maybe = was_maybe
            else:
                log.warning("no answer to RecordBehind node=%s standby=%s: maybe recorded, staying synchronous", self.name, self.peer.name)
            return False

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
            if not (self.behind_recorded or self.behind_maybe):
                return
            # From here every batch waits for the standby (or for a RecordBehind, which waits
            # for this lock): what was acknowledged alone is durable here, at or below target.
            self.require_standby = True
            target = self.node.store.last_lsn()
            with trio.move_on_after(self.standby_timeout):
                while self.acked_lsn < target:
                    await self.acked_changed.wait()
            if self.acked_lsn < target:
                if self.behind_recorded and not self.behind_maybe:
                    # The confirmed record still stands (no clear was sent since): alone is safe.
                    self.require_standby = False
                return
            self.behind_recorded = False
            self.behind_maybe = True   # no answer means "maybe cleared" as much as "maybe not"
            reply = await self.witness.request(
                ClearBehind(epoch=self.promised_epoch, primary=self.name, standby=self.peer.name), self.standby_timeout
            )
            if isinstance(reply, Ack) and reply.ok:
                self.behind_maybe = False
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
            # then less often, up to SHIP_RETRY_MAX: a rejoin is noticed within that time, and a
            # long outage does not cost a connection attempt every 50 ms.
            retry = SHIP_RETRY_MIN if self._ship_sessions != sessions else min(2 * retry, SHIP_RETRY_MAX)
            await buggify.sleep(retry)

    async def _ship_once(self) -> None:
        assert self.peer is not None
        with trio.fail_after(self.standby_timeout):
            stream = await self.network.connect(self.peer.replication)
        channel = Channel(stream, cluster=self.cluster, secret=self.secret)
        try:
            with trio.move_on_after(self.standby_timeout) as scope:
                await handshake(channel, node=self.name, role="primary", purpose="ship", initiator=True)
                sync = await channel.receive()
            if scope.cancelled_caught:
                raise _StandbyTooSlow
            if not isinstance(sync, Sync):
                raise FrameError("expected Sync from the standby")
            if sync.epoch > self.promised_epoch:
                self._see_epoch(sync.epoch)
                return
            generation = self._ship_generation
            start = await self._reconcile(channel, sync)
            # A withdrawal reconcile has dealt with (a Truncate sent, or a standby with nothing
            # after the withdrawn LSN) is settled by the first reply on this connection.
            truncating = self._retracted_after is not None and generation == self._ship_generation
            self._acked(start)
            self.acked_lsn = start
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
                    withdrawn = self._retracted_after
                    if generation != self._ship_generation:
                        # A withdrawal since this connection's reconcile (or its last Truncate):
                        # records after `withdrawn` may have been shipped on it but never became
                        # durable here. (One the reconcile dealt with, by a Truncate or by a
                        # snapshot that replaced the standby's state, needs nothing more: what
                        # was shipped since then is durable, and a standby whose log was
                        # replaced by a snapshot could not truncate below it.)
                        generation = self._ship_generation
                        truncating = withdrawn is not None
                        if withdrawn is not None and sent > withdrawn:
                            await channel.send(Truncate(epoch=self.promised_epoch, after_lsn=withdrawn))
                            log.warning("withdrew records from the standby after_lsn=%d (local commit failed)", withdrawn)
                            sent = withdrawn
                            prev_epoch = self._prev_epoch(sent)
                    if sent < self._ship_top():
                        records = self._shippable(sent, 256)
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
        sent_at, generation, settles = sent_times.popleft() if sent_times else (self.clock(), -1, False)
        if not isinstance(reply, AppendReply):
            raise FrameError("expected AppendReply")
        if reply.epoch > self.promised_epoch:
            self._see_epoch(reply.epoch)
            return False
        if not reply.ok:
            log.info("standby refused append: %s (its last LSN %d)", reply.reason, reply.last_lsn)
            nursery.cancel_scope.cancel()
            return False
        if reply.lease_granted:
            self._extend_lease(sent_at, reply.epoch)
        if generation != self._ship_generation:
            return True  # sent before a withdrawal: its LSNs may name withdrawn records
        if settles:
            self._retracted_after = None  # the standby applied the Truncate sent before it
        self._acked(reply.last_lsn)
        if (self.behind_recorded or self.behind_maybe) and self._caught_up():
            nursery.start_soon(self._clear_behind_once)
        self._note_in_sync()
        return True

    def _caught_up(self) -> bool:
        """Whether the standby keeps up closely enough for a clear of its behind record to work.

        The clear itself is exact (`_clear_behind`: it requires the standby for every batch from
        then on and waits until it holds every record written before, all that was acknowledged
        alone); this only says when to start it. Waiting for a reply that names our very last
        LSN, as continuous writes may postpone for seconds, would leave the standby unelectable
        all that time: a standby that acknowledged everything but the last few records, the
        oldest of which was shipped a fraction of `standby_timeout` ago, will catch up in time.
        """
        behind = self.node.store.last_lsn() - self.acked_lsn
        return behind <= 0 or (behind <= CATCH_UP_RECORDS and self.lag_seconds() < self.standby_timeout / 2)

    def _note_in_sync(self) -> None:
        """The standby is connected and not behind: the rejoin that began at its `Sync` ends."""
        if self._rejoin_from is not None and self.peer_connected and not (self.behind_recorded or self.behind_maybe):
            self.last_rejoin_seconds = self.clock() - self._rejoin_from
            self._rejoin_from = None
            self.rejoins += 1
            log.info("standby in sync node=%s standby=%s after %.3f s", self.name, self.peer.name if self.peer else "", self.last_rejoin_seconds)

    async def _reconcile(self, channel: Channel, sync: Sync) -> int:
        """Where shipping starts; truncate the standby's divergent tail or send a snapshot."""
        store = self.node.store
        # Ours: what is durable here and what is still being committed (shipped from the tail
        # meanwhile; a commit that fails withdraws it). Counting only the durable log, a
        # standby that already holds the batch in flight would look divergent and be
        # truncated, acknowledged records before it included.
        mine = self._ship_top()
        start = sync.last_lsn
        if start and not (start <= mine and self._epoch_at(start) == sync.last_epoch):
            start = self._divergence(sync)
            if start < sync.snapshot_lsn:
                start = -1  # its snapshot holds divergent state: replace everything
            else:
                log.warning("truncating standby tail standby=%s after_lsn=%d (its last %d)", self.peer.name if self.peer else "", start, sync.last_lsn)
                await channel.send(Truncate(epoch=self.promised_epoch, after_lsn=start))
        withdrawn = self._retracted_after
        if withdrawn is not None and start > withdrawn:
            # It may hold records this primary shipped but could not commit itself.
            if withdrawn < sync.snapshot_lsn:
                # ... and already a snapshot of them (its log may be pruned past them): a log
                # truncation cannot take them back out, so its state is replaced.
                start = -1
            else:
                log.warning("truncating standby tail standby=%s after_lsn=%d (withdrawn records)", self.peer.name if self.peer else "", withdrawn)
                await channel.send(Truncate(epoch=self.promised_epoch, after_lsn=withdrawn))
                start = withdrawn
        if start < store.first_lsn() - 1:
            snapshot = store.latest_snapshot()
            if snapshot is None or snapshot.lsn < store.first_lsn() - 1:
                await self.node.snapshot_now()
                snapshot = store.latest_snapshot()
            assert snapshot is not None
            log.warning("sending snapshot to standby lsn=%d", snapshot.lsn)
            await channel.send(InstallSnapshot(epoch=self.promised_epoch, snapshot=snapshot, secrets=self.node.store.secrets()))
            start = snapshot.lsn
        return start

    def _divergence(self, sync: Sync) -> int:
        mine = self.node.store.epoch_history()
        theirs = sync.epoch_history
        best = 0
        for epoch in sorted(set(mine) & set(theirs)):
            if epoch > sync.last_epoch or mine[epoch] != theirs[epoch]:
                continue
            later_mine = [lsn for e, lsn in mine.items() if e > epoch]
            later_theirs = [lsn for e, lsn in theirs.items() if e > epoch]
            end_mine = min(later_mine) - 1 if later_mine else self._ship_top()
            end_theirs = min(later_theirs) - 1 if later_theirs else sync.last_lsn
            best = max(best, min(end_mine, end_theirs))
        return best

    # ------------------------------------------------------------------ serving peers

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        channel = Channel(stream, cluster=self.cluster, secret=self.secret)
        try:
            hello = await handshake(channel, node=self.name, role=self.node.role, purpose="", initiator=False)
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
        now = self.clock()

        def refuse(reason: str) -> VoteReply:
            return VoteReply(epoch=request.epoch, granted=False, reason=reason, promised_epoch=self.promised_epoch, leader=self.leader or "")

        if request.renew:
            return refuse("renew_goes_with_append")
        if request.epoch < self.promised_epoch or (request.epoch == self.promised_epoch and self.voted_for != request.candidate):
            return refuse("stale_epoch")
        if self.node.role == "primary" and self.lease_valid():
            return refuse("primary_alive")
        if now < self.granted_until and request.candidate != self.leader:
            return refuse("lease_held")
        if (request.last_epoch, request.last_lsn) < self._last_position():
            return refuse("log_behind")
        if request.pre:  # would grant; nothing is recorded
            return VoteReply(epoch=request.epoch, granted=True, promised_epoch=self.promised_epoch, leader=self.leader or "")
        self._persist_vote(request.epoch, request.candidate)
        if self.node.role == "primary":
            self.step_down(f"voted for {request.candidate} in epoch {request.epoch}")
        self.leader = request.candidate
        self.granted_until = now + self.lease_seconds
        self.last_heard = now
        return VoteReply(epoch=request.epoch, granted=True, lease_seconds=self.lease_seconds, promised_epoch=request.epoch, leader=request.candidate)

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
        if self.node.role == "primary":
            self.step_down(f"primary {primary} ships epoch {epoch}")
        self.last_heard = self.clock()
        if self.no_primary_since is not None:
            self.no_primary_since = None
        if not isinstance(message, Truncate | InstallSnapshot | Append):
            raise FrameError(f"unexpected {type(message).__name__} on the shipping connection")
        # A batch our own pipeline took while we were primary (applied in memory, its commit
        # still running) ends first: it fails, and what it wrote is a tail the new primary
        # truncates. Without the lock the two would write the same LSNs.
        async with self.node.batch_lock:
            if epoch != self.promised_epoch or self.node.role == "primary":
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
                store.install_snapshot(message.snapshot, secrets=message.secrets)
                log.warning("installed snapshot node=%s lsn=%d", self.name, message.snapshot.lsn)
                self.node.reload()
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
            last_epoch, last_lsn = self._last_position()
            if records[0].lsn != last_lsn + 1:
                return AppendReply(epoch=self.promised_epoch, ok=False, last_lsn=last_lsn, reason="gap")
            if message.prev_epoch >= 0 and message.prev_epoch != last_epoch:
                # Our record at last_lsn is not the primary's: a tail of an older epoch.
                return AppendReply(epoch=self.promised_epoch, ok=False, last_lsn=last_lsn, reason="diverged")
            for record in records:
                if record.epoch > store.epoch():
                    store.set_epoch(record.epoch, record.lsn)
            await self.node.append_records(records)
            self.node.apply_replicated(records)
        self.peer_in_sync = message.sync
        granted = message.lease and self.node.role != "primary"
        if granted:
            self.granted_until = self.clock() + self.lease_seconds
        return AppendReply(epoch=self.promised_epoch, ok=True, last_lsn=store.last_lsn(), lease_granted=granted)

    # ------------------------------------------------------------------ operations

    async def switchover(self, to: str | None = None, actor: str = "operator") -> dict[str, Any]:
        """Planned swap: stop writing, let the standby catch up, hand over, step down."""
        if self.node.role != "primary":
            raise SwitchoverRefused("not_primary", f"node {self.name} is {self.node.role}; run the switchover on the primary")
        if self.peer is None or (to is not None and to != self.peer.name):
            raise SwitchoverRefused("unknown_node", f"no standby named {to!r}")
        if not self.peer_connected or self.behind_recorded or self.behind_maybe:
            raise SwitchoverRefused("standby_not_ready", f"standby {self.peer.name} is not connected and caught up")
        # The audit record goes through the log first, so both nodes keep who asked and when.
        await self.node.submit(c.Audit(actor=actor, action="switchover", detail=f"{self.name} -> {self.peer.name}"))
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
        if self.node.role == "primary":
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
        self.require_standby = False
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
        lag = max(0, store.last_lsn() - self.acked_lsn) if self.node.role == "primary" and self.peer else 0
        return {
            "name": self.name,
            "cluster": self.cluster,
            "role": self.node.role,
            "epoch": self.promised_epoch,
            "leader": self.leader,
            "primary": self.primary_api() if self.node.role != "primary" else self.node.section.api,
            "lsn": store.last_lsn(),
            "applied_lsn": self.node.lsn,
            "mode": self.mode,
            "peer": self.peer.name if self.peer else None,
            "peer_connected": self.peer_connected,
            "standby_acked_lsn": self.acked_lsn if self.node.role == "primary" else None,
            "lag": lag,
            "lag_records": lag,
            "lag_seconds": self.lag_seconds() if self.node.role == "primary" else 0.0,
            "standby_behind": self.behind_recorded or self.behind_maybe,
            "lease_remaining": round(max(0.0, self.lease_until - now), 3) if self.node.role == "primary" else 0.0,
            "forced": self.forced,
            "failovers": self.failovers,
            "last_failover_seconds": round(self.last_failover_seconds, 3),
            "last_rejoin_seconds": round(self.last_rejoin_seconds, 3),
            "rejoins": self.rejoins,
            "seconds_without_primary": round(now - self.no_primary_since, 3) if self.no_primary_since is not None else 0.0,
            "witness": self.witness_address,
            "loss_window_records": lag if self.mode == "async" else 0,
        }


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


async def run(node: Node, nursery: trio.Nursery, settings: Settings, *, network: Network | None = None) -> Member:
    """Start the replication layer of `node` inside `nursery` (called by `acd serve`)."""
    member = Member(node, settings, network=network)
    await nursery.start(member.run)
    nursery.start_soon(_promotion_audit, member)
    return member


async def _promotion_audit(member: Member) -> None:
    """Write an audit record at every promotion: also the new epoch's first record."""
    while True:
        await member.promoted.wait()
        if member.node.role == "primary":
            try:
                await member.node.submit(c.Audit(
                    actor=member.name, action="promoted", detail=f"epoch {member.promised_epoch}: {member.promotion_detail()}",
                ))
                if member.node.center.state.config_version == 0:
                    await member.node.apply_settings_center(actor="first-primary")
            except NotPrimary:
                pass
