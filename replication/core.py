"""The decisions of replication, free of I/O: no Trio, no sockets, no clock, no node.

`replication.driver.ReplicationDriver` does the I/O (connections, timers, the node's store)
and asks this module what to do; the witness's own decisions are `replication.witness.WitnessCore`.
Time is an input (`now`, `sent_at`), never read here, so every rule below can be driven by a
test step by step, as `tests/test_replication_core.py` does (a Hypothesis state machine that
loses, duplicates and reorders the messages between two nodes and a witness).

- Votes: `Voter` answers a `VoteRequest` (and records the vote it grants); `Ballot` counts the
  replies of one election and ends at the first grant (with our own vote, a majority of three).
- The lease: `lease_end` (from the moment the request was *sent*, shortened by the drift bound
  and a margin) and `lease_holds`.
- Behind records: `BehindRecord`, the primary's knowledge of whether the witness records the
  standby behind (confirmed, maybe, or not), and so whether a batch may be acknowledged alone.
- Shipping: `ShipQueue`, the newest records of the term kept in memory for the ship loop, their
  withdrawal when the local commit failed, and what to send next; `caught_up`.
- Divergence: `reconcile`, where shipping to a standby starts after its `Sync` (which tail to
  truncate, whether a snapshot must replace its state); `check_append`, the standby's side.
- State comparison (the divergence alarm): `StateCheck`, the primary's state hashes against
  the standby's at the same LSNs, the alarm, and the rebuild that clears it (`rebuild_plan`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from acd.store import Record

from .protocol import Ack, AppendReply, FrameError, Message, Sync, VoteReply, VoteRequest

DRIFT = 0.01     # clocks may run up to 1 % apart over a lease period
MARGIN = 0.05    # seconds, for scheduling delays between the reply and our reading the clock
TAIL_RECORDS = 4096      # newest records of the term the ship loop sends from memory
CATCH_UP_RECORDS = 1024  # a standby this close (and keeping up) is asked to catch up for good
APPEND_RECORDS = 256     # records per Append


# ---------------------------------------------------------------------- the lease


def lease_end(sent_at: float, lease_seconds: float) -> float:
    """Until when a lease granted in answer to a request sent at `sent_at` surely runs.

    Counted from the sending, not the receipt: the voter granted after we sent. Shortened by
    the drift bound and a margin, so the holder stops acknowledging before any voter, whose
    clock may run faster, grants another node a vote.
    """
    return sent_at + lease_seconds * (1 - DRIFT) - MARGIN


def lease_holds(primary: bool, forced: bool, now: float, until: float) -> bool:
    """Whether a node may acknowledge writes: primary, and its lease runs (or it was forced)."""
    return primary and (forced or now < until)


def epoch_news(epoch: int, promised: int) -> str:
    """How a message of `epoch` relates to ours: "stale" (drop it), "same", or "higher" (adopt it)."""
    if epoch < promised:
        return "stale"
    return "higher" if epoch > promised else "same"


# ---------------------------------------------------------------------- votes


def vote_request(*, epoch: int, candidate: str, last: tuple[int, int], force: bool, sync: bool, peer: str) -> VoteRequest:
    """The request of an election for `epoch`; in sync mode a grant records the peer behind."""
    last_epoch, last_lsn = last
    return VoteRequest(
        epoch=epoch, candidate=candidate, last_epoch=last_epoch, last_lsn=last_lsn, force=force,
        peer_behind=peer if sync else "",
    )


def voted_for_other_meanwhile(now: float, granted_until: float, leader: str | None, me: str) -> bool:
    """After a passed pre-vote: did we vote for the peer while it was out? That vote is a lease
    too, and standing now would break it (the simulator found two primaries so)."""
    return now < granted_until and leader not in (None, "", me)


@dataclass
class Voter:
    """A node's side of the vote: what it promised, to whom, and the lease its vote granted."""

    name: str
    lease_seconds: float
    promised_epoch: int = 0
    voted_for: str = ""
    leader: str | None = None
    granted_until: float = 0.0

    def refuse(self, request: VoteRequest, reason: str) -> VoteReply:
        return VoteReply(epoch=request.epoch, granted=False, reason=reason, promised_epoch=self.promised_epoch, leader=self.leader or "")

    def answer(self, request: VoteRequest, *, now: float, last: tuple[int, int], primary_with_lease: bool) -> tuple[VoteReply, bool]:
        """The reply to `request`, and whether a vote was granted and recorded.

        A recorded vote changes this voter (promised epoch, vote, leader, lease); the caller
        makes the promise durable and, if it was primary, steps down.
        """
        if request.renew:
            return self.refuse(request, "renew_goes_with_append"), False
        if request.epoch < self.promised_epoch or (request.epoch == self.promised_epoch and self.voted_for != request.candidate):
            return self.refuse(request, "stale_epoch"), False
        if primary_with_lease:
            return self.refuse(request, "primary_alive"), False
        if now < self.granted_until and request.candidate != self.leader:
            return self.refuse(request, "lease_held"), False
        if (request.last_epoch, request.last_lsn) < last:
            return self.refuse(request, "log_behind"), False
        if request.pre:  # would grant; nothing is recorded
            return VoteReply(epoch=request.epoch, granted=True, promised_epoch=self.promised_epoch, leader=self.leader or ""), False
        self.promise(request.epoch, request.candidate)
        self.leader = request.candidate
        self.granted_until = now + self.lease_seconds
        reply = VoteReply(epoch=request.epoch, granted=True, lease_seconds=self.lease_seconds, promised_epoch=request.epoch, leader=request.candidate)
        return reply, True

    def promise(self, epoch: int, candidate: str) -> None:
        self.promised_epoch = epoch
        self.voted_for = candidate


class Ballot:
    """The replies of one election (or pre-vote) from the witness and the peer.

    Ends as soon as the outcome is known: one grant is a majority (with the candidate's own
    vote), and an answer from every voter is all there is. After a refusal, a pre-vote gives
    a silent voter only a grace period (`add` says so): the pre-vote records nothing, so
    asking again soon costs nothing, while waiting would hold the candidate for the timeout.
    A voter the grace cut short in the last ballot is `patient`-ly waited for in this one (up
    to the timeout): a request cut short drops its connection, so a voter that takes longer
    than the grace to reach (connect and handshake) would otherwise be cut every time, and
    two nodes that each need the other's refusal overruled by the witness would never hear
    it again (a cluster with every process up and no primary).
    """

    def __init__(self, request: VoteRequest, voters: Iterable[str], *, patient: Iterable[str] = ()) -> None:
        self.request = request
        self.voters = tuple(voters)
        self.replies: dict[str, Message | None] = {}
        self.patient = frozenset(patient)
        self.graced = False

    def grants(self, reply: Message | None) -> bool:
        # A reply counts only for the epoch it answers (a kept connection never has a reply
        # outstanding; this is the second line of defence).
        return isinstance(reply, VoteReply) and reply.granted and reply.epoch == self.request.epoch

    def add(self, voter: str, reply: Message | None) -> str:
        """Count one reply (None: no answer); "done", "grace" (shorten the wait) or "wait"."""
        self.replies[voter] = reply
        if self.grants(reply) or len(self.replies) == len(self.voters):
            return "done"
        if self.request.pre and reply is not None:
            if any(other in self.patient and other not in self.replies for other in self.voters):
                return "wait"
            self.graced = True
            return "grace"
        return "wait"

    def cut_short(self) -> frozenset[str]:
        """The voters the grace may have cut short (to be waited for in the next ballot)."""
        return frozenset(voter for voter in self.voters if self.graced and self.unanswered(voter))

    @property
    def granted(self) -> list[str]:
        return [voter for voter, reply in self.replies.items() if self.grants(reply)]

    def won(self) -> bool:
        return bool(self.granted)

    def unanswered(self, voter: str) -> bool:
        """`voter` was asked and did not answer (it may have granted, and recorded what it grants)."""
        return voter in self.voters and self.replies.get(voter) is None

    def higher_epochs(self) -> list[tuple[int, str]]:
        """Epochs above the ballot's that voters reported, with their leaders: to adopt."""
        return [(reply.promised_epoch, reply.leader) for reply in self.replies.values()
                if isinstance(reply, VoteReply) and reply.promised_epoch > self.request.epoch]

    def reasons(self) -> dict[str, str]:
        return {voter: (reply.reason if isinstance(reply, VoteReply) else "no answer") for voter, reply in sorted(self.replies.items())}


def renewal(reply: Message | None, *, promised: int, forced: bool) -> str:
    """What a primary does with the witness's answer to its renewal.

    "extend" (granted), "update_witness" (the witness missed our election, won with the peer's
    vote: bring it to our epoch), "step_down" (it promised a newer epoch, or refuses us as
    leader of ours), or "none".
    """
    if not isinstance(reply, VoteReply):
        return "none"
    if reply.granted:
        return "extend"
    if reply.promised_epoch < promised:
        return "none" if forced else "update_witness"
    if reply.promised_epoch > promised or (reply.reason in ("stale_epoch", "not_leader") and reply.promised_epoch == promised):
        # (A witness still at a lower epoch missed our election, won with the peer's vote:
        # the peer's lease carries us; nobody won anything newer.)
        return "none" if forced else "step_down"
    return "none"


# ---------------------------------------------------------------------- behind records


@dataclass
class BehindRecord:
    """The primary's knowledge of the witness's "behind" record of the standby (sync mode).

    `recorded`: the witness confirmed it records the standby behind, so a batch may be
    acknowledged alone. `maybe`: a request that would record it went unanswered, or a clear
    did (the witness saves before it replies, and a reply can be lost): it may be there, and
    is cleared once the standby has caught up. `require_standby`: every batch waits for the
    standby's acknowledgement. `sequence`: the number of the last behind request of this
    term; each new `RecordBehind` or `ClearBehind` takes the next (`next_sequence`), a resend
    of the same request keeps its own, and the witness refuses a request older than the last
    it applied (`stale_request`), which is never a confirmation.
    """

    recorded: bool = False
    maybe: bool = False
    require_standby: bool = True
    sequence: int = 0

    def next_sequence(self) -> int:
        """The number of a new behind request of this term (greater than any sent before)."""
        self.sequence += 1
        return self.sequence

    @property
    def pending(self) -> bool:
        """The standby may be recorded behind: it must catch up and be cleared."""
        return self.recorded or self.maybe

    def elected(self, *, sync_with_peer: bool, witness_granted: bool, witness_unanswered: bool) -> None:
        """A new term. In sync mode the witness recorded the peer behind with its vote (an
        unanswered vote may have been granted, and recorded it: "maybe")."""
        self.recorded = witness_granted and sync_with_peer
        self.maybe = witness_unanswered and not witness_granted and sync_with_peer
        self.sequence = 0   # ordered within the epoch: the new epoch orders after any older request
        self.require_standby = sync_with_peer and not self.recorded

    def record_wanted(self, acked_lsn: int, lsn: int) -> bool:
        """Whether a RecordBehind is still needed for a batch ending at `lsn`."""
        return acked_lsn < lsn and self.require_standby

    def record_sent(self) -> bool:
        """A RecordBehind leaves: from now on the witness may hold it. Returns what to restore
        if the witness refuses (then it recorded nothing)."""
        was_maybe = self.maybe
        self.maybe = True
        return was_maybe

    def record_answered(self, reply: Message | None, was_maybe: bool) -> bool:
        """The witness's answer to RecordBehind; True: confirmed, acknowledge alone."""
        if isinstance(reply, Ack) and reply.ok:
            self.recorded = True
            self.maybe = False
            self.require_standby = False
            return True
        if isinstance(reply, Ack):  # refused: the witness recorded nothing
            self.maybe = was_maybe
        return False

    def clear_wanted(self, *, caught_up: bool) -> bool:
        """Whether to start clearing: the standby may be recorded behind and keeps up."""
        return self.pending and caught_up

    def clear_begin(self) -> bool:
        """A clear starts: from here every batch waits for the standby. False: nothing to clear."""
        if not self.pending:
            return False
        self.require_standby = True
        return True

    def clear_not_caught_up(self) -> None:
        """The standby did not hold everything acknowledged alone in time: no clear is sent."""
        if self.recorded and not self.maybe:
            # The confirmed record still stands (no clear was sent since): alone is safe.
            self.require_standby = False

    def clear_sent(self) -> None:
        self.recorded = False
        self.maybe = True   # no answer means "maybe cleared" as much as "maybe not"

    def clear_answered(self, reply: Message | None) -> bool:
        """The witness's answer to ClearBehind; True when confirmed (the standby is in sync)."""
        if isinstance(reply, Ack) and reply.ok:
            self.maybe = False
            return True
        # Not confirmed: stay synchronous; only a fresh confirmed RecordBehind goes alone again.
        return False

    def witness_updated(self, reply: Message | None, epoch: int, *, sync_with_peer: bool) -> None:
        """The answer to bringing a witness that missed our election to our epoch."""
        if isinstance(reply, VoteReply) and reply.granted and reply.epoch == epoch:
            self.maybe = sync_with_peer and not self.recorded
        elif isinstance(reply, VoteReply):
            # Still at its older epoch: none of this epoch's RecordBehind or ClearBehind was
            # applied there, so there is nothing of ours to clear (what it holds we cannot).
            self.maybe = False
        else:
            self.maybe = sync_with_peer and not self.recorded   # no answer: maybe granted


def caught_up(last_lsn: int, acked_lsn: int, lag_seconds: float, standby_timeout: float) -> bool:
    """Whether the standby keeps up closely enough for a clear of its behind record to work.

    The clear itself is exact (it requires the standby for every batch from then on and waits
    until it holds every record written before, all that was acknowledged alone); this only
    says when to start it. Waiting for a reply that names our very last LSN, as continuous
    writes may postpone for seconds, would leave the standby unelectable all that time.
    """
    behind = last_lsn - acked_lsn
    return behind <= 0 or (behind <= CATCH_UP_RECORDS and lag_seconds < standby_timeout / 2)


# ---------------------------------------------------------------------- shipping


class LogView(Protocol):
    """A read view of a node's log, as replication needs it."""

    def last_lsn(self) -> int: ...

    def first_lsn(self) -> int: ...

    def read(self, after_lsn: int, limit: int) -> list[Record]: ...

    def epoch_history(self) -> dict[int, int]: ...


@dataclass
class ShipQueue:
    """What the primary has to ship: its log, and the newest records of this term in memory.

    Shipping starts while the primary's own commit runs: the newest records, in LSN order,
    are shipped from memory (`tail`), so shipping never waits for, nor reads back, the local
    store. A batch whose local commit failed is withdrawn (`retract`): the standby may hold
    records after `retracted_after` that are in no log of ours; it is truncated back before
    anything after that LSN counts as acknowledged, and replies to what was sent before the
    withdrawal (`generation`) acknowledge nothing.
    """

    tail: list[Record] = field(default_factory=list)
    retracted_after: int | None = None
    generation: int = 0
    acked_lsn: int = 0
    append_times: deque[tuple[int, float]] = field(default_factory=deque)

    def add(self, records: Sequence[Record], now: float) -> None:
        tail = self.tail
        if tail and tail[-1].lsn + 1 != records[0].lsn:
            tail.clear()
        tail.extend(records)
        if len(tail) > 2 * TAIL_RECORDS:
            del tail[:-TAIL_RECORDS]
        self.append_times.append((records[-1].lsn, now))
        while len(self.append_times) > 10_000:
            self.append_times.popleft()

    def retract(self, after_lsn: int) -> None:
        """Nothing after `after_lsn` was acknowledged (the pipeline waits for the local commit
        first): the standby is truncated back to it before it is shipped anything else, and
        acknowledgements it sent for the withdrawn records do not count."""
        del self.tail[next((i for i, r in enumerate(self.tail) if r.lsn > after_lsn), len(self.tail)):]
        self.generation += 1
        if self.retracted_after is None or after_lsn < self.retracted_after:
            self.retracted_after = after_lsn
        if self.acked_lsn > after_lsn:
            self.acked_lsn = after_lsn
        while self.append_times and self.append_times[-1][0] > after_lsn:
            self.append_times.pop()

    def new_term(self) -> None:
        self.acked_lsn = 0
        self.tail.clear()
        self.retracted_after = None
        self.generation += 1

    def acked(self, lsn: int) -> None:
        if lsn > self.acked_lsn:
            self.acked_lsn = lsn

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest record the standby has not acknowledged yet."""
        times = self.append_times
        while times and times[0][0] <= self.acked_lsn:
            times.popleft()
        return round(now - times[0][1], 3) if times else 0.0

    def top(self, log: LogView) -> int:
        """The last LSN there is to ship: durable here, or in flight to our own store."""
        last = log.last_lsn()
        return max(last, self.tail[-1].lsn) if self.tail else last

    def shippable(self, log: LogView, after_lsn: int, limit: int = APPEND_RECORDS) -> list[Record]:
        """Up to `limit` records after `after_lsn`: from this term's tail, else from the log."""
        tail = self.tail
        if tail and tail[0].lsn <= after_lsn + 1 <= tail[-1].lsn:
            start = after_lsn + 1 - tail[0].lsn
            return tail[start:start + limit]
        if after_lsn < log.last_lsn():
            return log.read(after_lsn, limit)
        return []

    def epoch_in_tail(self, lsn: int) -> int | None:
        tail = self.tail
        if tail and tail[0].lsn <= lsn <= tail[-1].lsn:
            return tail[lsn - tail[0].lsn].epoch
        return None

    def withdrawal(self, generation: int, sent: int) -> tuple[int, int | None]:
        """On a shipping connection that last looked at `generation` and sent up to `sent`:
        the generation now, and the LSN to truncate the standby back to (None: nothing).

        A withdrawal since then means records after it may have been shipped on the
        connection but never became durable here.
        """
        if generation == self.generation:
            return generation, None
        withdrawn = self.retracted_after
        if withdrawn is not None and sent > withdrawn:
            return self.generation, withdrawn
        return self.generation, None


@dataclass(frozen=True)
class ReplyOutcome:
    """What one `AppendReply` means to the primary's ship loop."""

    stop: bool = False               # shipping on this connection ends
    refused: bool = False            # ... because the standby refused (the connection is dropped)
    higher_epoch: int = 0            # adopt this epoch (and step down)
    extend_from: float | None = None  # the lease runs from this sending
    acked: int | None = None         # the standby holds everything up to here
    settles: bool = False            # the withdrawal's Truncate was applied


def account_reply(reply: Message, sent: tuple[float, int, bool], *, promised: int, generation: int) -> ReplyOutcome:
    """Account for one reply of the standby to an Append sent at (time, generation, settles)."""
    if not isinstance(reply, AppendReply):
        raise FrameError("expected AppendReply")
    sent_at, sent_generation, settles = sent
    if reply.epoch > promised:
        return ReplyOutcome(stop=True, higher_epoch=reply.epoch)
    if not reply.ok:
        return ReplyOutcome(stop=True, refused=True)
    extend = sent_at if reply.lease_granted and reply.epoch == promised else None
    if sent_generation != generation:
        return ReplyOutcome(extend_from=extend)   # sent before a withdrawal: its LSNs may name withdrawn records
    return ReplyOutcome(extend_from=extend, acked=reply.last_lsn, settles=settles)


# ---------------------------------------------------------------------- divergence


def divergence(mine: Mapping[int, int], sync: Sync, my_top: int) -> int:
    """The last LSN both logs surely share, from the epochs' start LSNs of each."""
    theirs = sync.epoch_history
    best = 0
    for epoch in sorted(set(mine) & set(theirs)):
        if epoch > sync.last_epoch or mine[epoch] != theirs[epoch]:
            continue
        later_mine = [lsn for e, lsn in mine.items() if e > epoch]
        later_theirs = [lsn for e, lsn in theirs.items() if e > epoch]
        end_mine = min(later_mine) - 1 if later_mine else my_top
        end_theirs = min(later_theirs) - 1 if later_theirs else sync.last_lsn
        best = max(best, min(end_mine, end_theirs))
    return best


@dataclass(frozen=True)
class Plan:
    """Where shipping to a standby starts, and what comes first."""

    truncate: tuple[int, ...]   # Truncate(after_lsn) to send, in order
    start: int                  # -1: its state is replaced by a snapshot
    snapshot: bool              # an InstallSnapshot is needed (start is then the snapshot's LSN)
    # The standby holds our records up to here: a snapshot it is sent must not be older, or
    # it would forget acknowledged records until it caught up again, and a failover in
    # that window (it is not recorded behind) would lose them.
    floor: int = 0


class EpochAt(Protocol):
    def __call__(self, lsn: int) -> int | None: ...


def reconcile(sync: Sync, *, log: LogView, queue: ShipQueue, epoch_at: EpochAt) -> Plan:
    """Where shipping starts after the standby's `Sync`; its divergent tail is truncated, or a
    snapshot replaces its state.

    Ours is what is durable here and what is still being committed (shipped from the tail
    meanwhile; a commit that fails withdraws it). Counting only the durable log, a standby
    that already holds the batch in flight would look divergent and be truncated,
    acknowledged records before it included.
    """
    truncate: list[int] = []
    mine = queue.top(log)
    start = floor = sync.last_lsn
    if start and not (start <= mine and epoch_at(start) == sync.last_epoch):
        start = floor = divergence(log.epoch_history(), sync, mine)
        if start < sync.snapshot_lsn:
            start = -1  # its snapshot holds divergent state: replace everything
        else:
            truncate.append(start)
    withdrawn = queue.retracted_after
    if withdrawn is not None and start > withdrawn:
        # It may hold records this primary shipped but could not commit itself.
        floor = withdrawn
        if withdrawn < sync.snapshot_lsn:
            # ... and already a snapshot of them (its log may be pruned past them): a log
            # truncation cannot take them back out, so its state is replaced.
            start = -1
        else:
            truncate.append(withdrawn)
            start = withdrawn
    return Plan(truncate=tuple(truncate), start=start, snapshot=start < log.first_lsn() - 1, floor=max(floor, 0))


def check_append(records: Sequence[Record], prev_epoch: int, last: tuple[int, int]) -> str:
    """The standby's check of an Append against its log's end; "" to apply it, else the reason."""
    if not records:
        return ""
    last_epoch, last_lsn = last
    if records[0].lsn != last_lsn + 1:
        return "gap"
    if prev_epoch >= 0 and prev_epoch != last_epoch:
        # Our record at last_lsn is not the primary's: a tail of an older epoch.
        return "diverged"
    return ""


# ---------------------------------------------------------------------- state comparison

STATE_HASHES_KEPT = 64   # (LSN, hash) pairs of each side kept until the other side's arrives


@dataclass(frozen=True)
class Comparison:
    """One LSN whose state hash both sides computed."""

    lsn: int
    mine: str
    theirs: str
    # "agree"; "diverged" (the alarm is raised, or raised again); "rebuilt" (the standby's state
    # after installing our snapshot is the snapshot's); "cleared" (a rebuilt standby agrees
    # after applying records of its own: the alarm ends); "ignored" (the diverged state).
    news: str


@dataclass
class StateCheck:
    """The primary's comparison of its state hashes with the standby's, at the same LSNs.

    Both nodes hash their state right after applying the record at every LSN that is a
    multiple of `compare_every_records`; the standby reports its (LSN, hash) pairs in its
    `AppendReply`. Either side's hash may come first, so each waits here (the newest
    `STATE_HASHES_KEPT`) for the other's. The primary adds only hashes of records durable in
    its log; the driver passes only reports of the current shipping generation.

    A mismatch raises the alarm (`diverged_at`): the standby must be recorded behind (not
    electable) and rebuilt from a snapshot of the primary. Until the rebuild (`rebuilding`,
    the snapshot's LSN and hash) nothing the standby reports counts. After it, the standby's
    hash at the snapshot's LSN shows the snapshot installed as it was sent ("rebuilt"), and
    the first comparison after it, of a state the standby reached by applying records itself,
    clears the alarm; a difference at either raises it again (another rebuild).
    """

    compared: int = 0
    divergences: int = 0
    diverged_at: int | None = None
    rebuild_from: int | None = None
    rebuild_installed: bool = False   # the standby's hash at the snapshot's LSN was the snapshot's
    mine: dict[int, str] = field(default_factory=dict)
    theirs: dict[int, str] = field(default_factory=dict)
    last: Comparison | None = None   # the last comparison that raised the alarm

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def rebuild_wanted(self) -> bool:
        """The standby diverged and no snapshot was sent to rebuild it yet."""
        return self.diverged and self.rebuild_from is None

    def add_mine(self, lsn: int, digest: str) -> list[Comparison]:
        self.mine[lsn] = digest
        _keep_newest(self.mine)
        return self._settle([lsn])

    def add_theirs(self, pairs: Iterable[tuple[int, str]]) -> list[Comparison]:
        lsns = []
        for lsn, digest in pairs:
            self.theirs[lsn] = digest
            lsns.append(lsn)
        _keep_newest(self.theirs)
        return self._settle(lsns)

    def rebuilding(self, snapshot_lsn: int, digest: str) -> None:
        """A snapshot of ours at `snapshot_lsn` (state hash `digest`) replaces the standby's state."""
        self.rebuild_from = snapshot_lsn
        self.rebuild_installed = False
        self.theirs.clear()          # what it reported of its diverged state counts no more
        self.mine[snapshot_lsn] = digest

    def connection_lost(self) -> None:
        """A rebuild whose snapshot may not have been installed is sent again on the next connection."""
        if self.diverged and not self.rebuild_installed:
            self.rebuild_from = None

    def new_term(self) -> None:
        self.mine.clear()
        self.theirs.clear()

    def withdraw(self, after_lsn: int) -> None:
        """The records after `after_lsn` were withdrawn (`ShipQueue.retract`): the standby may
        have reported hashes of them, acknowledged before the withdrawal; others take their LSNs."""
        for hashes in (self.mine, self.theirs):
            for lsn in [lsn for lsn in hashes if lsn > after_lsn]:
                del hashes[lsn]

    def _settle(self, lsns: Iterable[int]) -> list[Comparison]:
        outcomes = []
        for lsn in lsns:
            if lsn not in self.mine or lsn not in self.theirs:
                continue
            mine, theirs = self.mine.pop(lsn), self.theirs.pop(lsn)
            outcome = Comparison(lsn=lsn, mine=mine, theirs=theirs, news=self._news(lsn, mine == theirs))
            if outcome.news != "ignored":
                self.compared += 1
            if outcome.news == "diverged":
                self.divergences += 1
                self.diverged_at = lsn
                self.rebuild_from = None
                self.rebuild_installed = False
                self.last = outcome
            elif outcome.news == "rebuilt":
                self.rebuild_installed = True
            elif outcome.news == "cleared":
                self.diverged_at = None
                self.rebuild_from = None
                self.rebuild_installed = False
            outcomes.append(outcome)
        return outcomes

    def _news(self, lsn: int, equal: bool) -> str:
        if not self.diverged:
            return "agree" if equal else "diverged"
        if self.rebuild_from is None or lsn < self.rebuild_from:
            return "ignored"   # the diverged state, or a report from before the rebuild
        if not equal:
            return "diverged"
        return "rebuilt" if lsn == self.rebuild_from else "cleared"


def _keep_newest(hashes: dict[int, str]) -> None:
    while len(hashes) > STATE_HASHES_KEPT:
        del hashes[min(hashes)]


def rebuild_plan() -> Plan:
    """A diverged standby's state is replaced by a snapshot of ours, whatever its log holds."""
    return Plan(truncate=(), start=-1, snapshot=True)
