"""The pure replication core (`replication.core`), without Trio, sockets or a clock.

First the rules one at a time (votes, the ballot, the lease, behind records, shipping,
divergence); then a Hypothesis state machine that runs two nodes and a witness on these rules
alone, with the messages between them lost, duplicated and reordered, and checks the safety
invariants after every step:

- one leader per epoch (and, beneath it, no voter votes for two candidates in one epoch);
- every acknowledged write is in the log of every node that could be elected (one the witness
  does not record behind, or whose log is at least as far as its peer's);
- a write acknowledged without the standby's copy is acknowledged only while the witness
  records the standby behind.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from acd.store import Record
from replication import core
from replication.core import Ballot, BehindRecord, ShipQueue, Voter
from replication.protocol import (
    Ack,
    Append,
    AppendReply,
    ClearBehind,
    FrameError,
    Message,
    RecordBehind,
    Sync,
    Truncate,
    VoteReply,
    VoteRequest,
)
from replication.witness import WitnessCore, WitnessState

LEASE = 1.0


def record(lsn: int, epoch: int) -> Record:
    return Record.make(lsn=lsn, epoch=epoch, at=float(lsn), payload=b"x")


class MemoryLog:
    """A node's log in memory (a `core.LogView`), with the store's epoch rules."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.history: dict[int, int] = {}
        self.epoch = 0

    def last_lsn(self) -> int:
        return len(self.records)

    def first_lsn(self) -> int:
        return 1

    def read(self, after_lsn: int, limit: int) -> list[Record]:
        return self.records[after_lsn:after_lsn + limit]

    def epoch_history(self) -> dict[int, int]:
        return dict(self.history)

    def last(self) -> tuple[int, int]:
        return (self.records[-1].epoch if self.records else 0), len(self.records)

    def epoch_at(self, lsn: int) -> int | None:
        if lsn == 0:
            return 0
        return self.records[lsn - 1].epoch if lsn <= len(self.records) else None

    def set_epoch(self, epoch: int, first_lsn: int) -> None:
        assert epoch > self.epoch
        self.epoch = epoch
        self.history[epoch] = first_lsn

    def append(self, records: list[Record]) -> None:
        for item in records:
            if item.epoch > self.epoch:
                self.set_epoch(item.epoch, item.lsn)
            assert item.lsn == len(self.records) + 1
            self.records.append(item)

    def truncate(self, after_lsn: int) -> None:
        del self.records[after_lsn:]
        self.history = {epoch: lsn for epoch, lsn in self.history.items() if lsn <= after_lsn or epoch == self.epoch}


# ---------------------------------------------------------------------- the rules, one at a time


def test_lease_counts_from_the_sending_shortened_by_drift_and_margin() -> None:
    assert core.lease_end(10.0, 1.0) == pytest.approx(10.0 + 0.99 - core.MARGIN)
    assert core.lease_holds(True, False, 10.5, 10.9)
    assert not core.lease_holds(True, False, 10.9, 10.9)
    assert not core.lease_holds(False, True, 0.0, 99.0)
    assert core.lease_holds(True, True, 99.0, 0.0)   # a forced primary holds no lease and needs none


def test_a_voter_grants_one_candidate_per_epoch_and_records_it() -> None:
    voter = Voter("b", LEASE)
    request = VoteRequest(epoch=3, candidate="a", last_epoch=1, last_lsn=5)
    reply, recorded = voter.answer(request, now=0.0, last=(1, 5), primary_with_lease=False)
    assert reply.granted and recorded and (voter.promised_epoch, voter.voted_for, voter.leader) == (3, "a", "a")
    assert voter.granted_until == LEASE
    again, recorded = voter.answer(request, now=0.1, last=(1, 5), primary_with_lease=False)
    assert again.granted and recorded   # a retried request of the same candidate
    other, recorded = voter.answer(VoteRequest(epoch=3, candidate="c", last_epoch=9, last_lsn=9), now=2.0, last=(1, 5), primary_with_lease=False)
    assert not other.granted and other.reason == "stale_epoch" and not recorded


def test_a_voter_refuses_a_candidate_behind_its_log_a_live_lease_and_a_live_primary() -> None:
    voter = Voter("b", LEASE, promised_epoch=2, leader="a", granted_until=5.0)
    behind = VoteRequest(epoch=3, candidate="a", last_epoch=1, last_lsn=4)
    assert voter.answer(behind, now=0.0, last=(1, 5), primary_with_lease=False)[0].reason == "log_behind"
    stranger = VoteRequest(epoch=3, candidate="c", last_epoch=1, last_lsn=9)
    assert voter.answer(stranger, now=1.0, last=(1, 5), primary_with_lease=False)[0].reason == "lease_held"
    assert voter.answer(stranger, now=6.0, last=(1, 5), primary_with_lease=True)[0].reason == "primary_alive"
    renew = VoteRequest(epoch=3, candidate="a", last_epoch=1, last_lsn=9, renew=True)
    assert voter.answer(renew, now=6.0, last=(1, 5), primary_with_lease=False)[0].reason == "renew_goes_with_append"
    assert voter.promised_epoch == 2


def test_a_pre_vote_grants_without_recording_anything() -> None:
    voter = Voter("b", LEASE, promised_epoch=2)
    reply, recorded = voter.answer(VoteRequest(epoch=3, candidate="a", last_epoch=2, last_lsn=1, pre=True), now=0.0,
                                   last=(1, 1), primary_with_lease=False)
    assert reply.granted and not recorded and voter.promised_epoch == 2 and voter.voted_for == "" and voter.granted_until == 0.0


def test_the_ballot_ends_at_the_first_grant() -> None:
    request = VoteRequest(epoch=4, candidate="a", last_epoch=1, last_lsn=1)
    ballot = Ballot(request, ["witness", "peer"])
    assert ballot.add("peer", VoteReply(epoch=4, granted=True)) == "done"
    assert ballot.won() and ballot.granted == ["peer"] and ballot.unanswered("witness") and not ballot.unanswered("peer")


def test_the_ballot_counts_no_grant_of_another_epoch_and_waits_for_a_silent_voter_after_a_refusal() -> None:
    request = VoteRequest(epoch=4, candidate="a", last_epoch=1, last_lsn=1)
    ballot = Ballot(request, ["witness", "peer"])
    assert ballot.add("peer", VoteReply(epoch=3, granted=True)) == "wait"   # a stale reply is no vote
    assert not ballot.won()
    assert ballot.add("witness", VoteReply(epoch=4, granted=False, reason="lease_held", promised_epoch=6, leader="b")) == "done"
    assert not ballot.won() and ballot.higher_epochs() == [(6, "b")]
    assert ballot.reasons() == {"peer": "", "witness": "lease_held"}


def test_a_pre_vote_gives_a_silent_voter_only_a_grace_after_a_refusal() -> None:
    request = VoteRequest(epoch=4, candidate="a", last_epoch=1, last_lsn=1, pre=True)
    ballot = Ballot(request, ["witness", "peer"])
    assert ballot.add("witness", VoteReply(epoch=4, granted=False, reason="behind")) == "grace"
    assert Ballot(request, ["witness", "peer"]).add("witness", None) == "wait"


def test_a_voter_the_grace_cut_short_is_waited_for_in_the_next_pre_vote() -> None:
    # Swarm seed 2645: the peer refused at once (log_behind, stale_epoch), the witness took
    # longer than the grace to reach (a cut request drops its connection, so every pre-vote
    # had to connect again) and was cut every time: both nodes up, no primary, for good.
    request = VoteRequest(epoch=4, candidate="b", last_epoch=2, last_lsn=6, pre=True)
    first = Ballot(request, ["witness", "peer"])
    assert first.add("peer", VoteReply(epoch=4, granted=False, reason="log_behind")) == "grace"
    assert first.cut_short() == {"witness"}
    second = Ballot(request, ["witness", "peer"], patient=first.cut_short())
    assert second.add("peer", VoteReply(epoch=4, granted=False, reason="log_behind")) == "wait"
    assert second.add("witness", VoteReply(epoch=4, granted=True)) == "done" and second.won()
    assert second.cut_short() == set()
    # A ballot that ended without the grace cut nobody short.
    assert Ballot(request, ["witness", "peer"]).cut_short() == set()


def test_after_a_pre_vote_a_node_that_voted_for_its_peer_meanwhile_does_not_stand() -> None:
    assert core.voted_for_other_meanwhile(1.0, 2.0, "b", "a")
    assert not core.voted_for_other_meanwhile(2.0, 2.0, "b", "a")
    assert not core.voted_for_other_meanwhile(1.0, 2.0, "a", "a")


def test_an_election_in_sync_mode_asks_the_witness_to_record_the_peer_behind() -> None:
    request = core.vote_request(epoch=2, candidate="a", last=(1, 7), force=False, sync=True, peer="b")
    assert (request.peer_behind, request.last_epoch, request.last_lsn) == ("b", 1, 7)
    assert core.vote_request(epoch=2, candidate="a", last=(1, 7), force=False, sync=False, peer="b").peer_behind == ""


def test_renewal_answers() -> None:
    assert core.renewal(VoteReply(epoch=3, granted=True), promised=3, forced=False) == "extend"
    assert core.renewal(VoteReply(epoch=3, granted=False, promised_epoch=2), promised=3, forced=False) == "update_witness"
    assert core.renewal(VoteReply(epoch=3, granted=False, promised_epoch=4), promised=3, forced=False) == "step_down"
    assert core.renewal(VoteReply(epoch=3, granted=False, reason="not_leader", promised_epoch=3), promised=3, forced=False) == "step_down"
    assert core.renewal(VoteReply(epoch=3, granted=False, promised_epoch=4), promised=3, forced=True) == "none"
    assert core.renewal(None, promised=3, forced=False) == "none"


def test_behind_record_goes_alone_only_on_a_confirmed_record() -> None:
    behind = BehindRecord()
    behind.elected(sync_with_peer=True, witness_granted=False, witness_unanswered=False)
    assert behind.require_standby and not behind.pending
    assert behind.record_wanted(acked_lsn=3, lsn=5) and not behind.record_wanted(acked_lsn=5, lsn=5)
    was = behind.record_sent()
    assert behind.maybe and not behind.record_answered(None, was)
    assert behind.maybe and behind.require_standby           # unanswered: maybe recorded, still synchronous
    was = behind.record_sent()
    assert not behind.record_answered(Ack(ok=False, reason="lease_expired"), was)
    assert behind.maybe                                     # refused now, but the earlier one may stand
    assert behind.record_answered(Ack(ok=True), behind.record_sent())
    assert (behind.recorded, behind.maybe, behind.require_standby) == (True, False, False)


def test_behind_record_clear_stays_synchronous_until_confirmed() -> None:
    behind = BehindRecord(recorded=True, require_standby=False)
    assert not behind.clear_wanted(caught_up=False) and behind.clear_wanted(caught_up=True)
    assert behind.clear_begin() and behind.require_standby
    behind.clear_not_caught_up()
    assert not behind.require_standby                       # the confirmed record still stands
    assert behind.clear_begin()
    behind.clear_sent()
    assert not behind.clear_answered(None)
    assert (behind.recorded, behind.maybe, behind.require_standby) == (False, True, True)
    behind.clear_not_caught_up()
    assert behind.require_standby                           # maybe cleared: never alone again without a record
    assert behind.clear_begin()
    behind.clear_sent()
    assert behind.clear_answered(Ack(ok=True)) and not behind.pending and behind.require_standby
    assert not behind.clear_begin()


def test_a_new_term_with_an_unanswered_witness_vote_may_have_recorded_the_peer_behind() -> None:
    behind = BehindRecord()
    behind.elected(sync_with_peer=True, witness_granted=False, witness_unanswered=True)
    assert behind.maybe and not behind.recorded and behind.require_standby
    behind.elected(sync_with_peer=True, witness_granted=True, witness_unanswered=False)
    assert behind.recorded and not behind.maybe and not behind.require_standby
    behind.elected(sync_with_peer=False, witness_granted=True, witness_unanswered=False)
    assert not behind.pending and not behind.require_standby


def test_caught_up_allows_a_short_fresh_gap() -> None:
    assert core.caught_up(10, 10, 5.0, 0.3)
    assert core.caught_up(10, 8, 0.1, 0.3)
    assert not core.caught_up(10, 8, 0.2, 0.3)
    assert not core.caught_up(5000, 1, 0.0, 0.3)


def test_the_ship_queue_ships_from_memory_and_withdraws_a_failed_commit() -> None:
    log = MemoryLog()
    log.set_epoch(1, 1)
    log.append([record(1, 1), record(2, 1)])
    queue = ShipQueue()
    queue.add([record(3, 1), record(4, 1)], now=1.0)
    assert queue.top(log) == 4 and [r.lsn for r in queue.shippable(log, 0)] == [1, 2]
    assert [r.lsn for r in queue.shippable(log, 2)] == [3, 4] and queue.epoch_in_tail(4) == 1
    queue.acked(4)
    generation = queue.generation
    queue.retract(3)
    assert queue.acked_lsn == 3 and queue.top(log) == 3 and queue.retracted_after == 3
    assert queue.withdrawal(generation, sent=4) == (queue.generation, 3)
    assert queue.withdrawal(generation, sent=3) == (queue.generation, None)
    assert queue.withdrawal(queue.generation, sent=4) == (queue.generation, None)
    assert queue.lag_seconds(2.0) == 0.0


def test_a_reply_counts_for_nothing_after_a_withdrawal_and_a_refusal_ends_shipping() -> None:
    ok = AppendReply(epoch=2, ok=True, last_lsn=7, lease_granted=True)
    assert core.account_reply(ok, (1.0, 5, True), promised=2, generation=5) == core.ReplyOutcome(extend_from=1.0, acked=7, settles=True)
    assert core.account_reply(ok, (1.0, 4, True), promised=2, generation=5) == core.ReplyOutcome(extend_from=1.0)
    assert core.account_reply(AppendReply(epoch=3, ok=False, last_lsn=0), (1.0, 5, False), promised=2, generation=5).higher_epoch == 3
    assert core.account_reply(AppendReply(epoch=2, ok=False, last_lsn=0, reason="gap"), (1.0, 5, False), promised=2, generation=5).refused
    with pytest.raises(FrameError):
        core.account_reply(Ack(ok=True), (1.0, 5, False), promised=2, generation=5)


def _logs(*epochs: int) -> MemoryLog:
    log = MemoryLog()
    log.append([record(lsn, epoch) for lsn, epoch in enumerate(epochs, start=1)])
    return log


def test_reconcile_truncates_the_divergent_tail_of_an_old_primary() -> None:
    primary = _logs(1, 1, 1, 2, 2)     # epoch 2 started at LSN 4
    standby = _logs(1, 1, 1, 1, 1, 1)  # the old primary wrote on in epoch 1 after losing
    sync = Sync(last_lsn=6, last_epoch=1, epoch=2, epoch_history=standby.epoch_history(), snapshot_lsn=0)
    plan = core.reconcile(sync, log=primary, queue=ShipQueue(), epoch_at=primary.epoch_at)
    assert plan == core.Plan(truncate=(3,), start=3, snapshot=False, floor=3)


def test_reconcile_keeps_a_standby_that_holds_the_batch_still_in_flight() -> None:
    primary = _logs(1, 1)
    queue = ShipQueue()
    queue.add([record(3, 1)], now=0.0)   # shipped while its own commit runs
    sync = Sync(last_lsn=3, last_epoch=1, epoch=1, epoch_history={1: 1}, snapshot_lsn=0)
    epoch_at = lambda lsn: queue.epoch_in_tail(lsn) or primary.epoch_at(lsn)  # noqa: E731
    assert core.reconcile(sync, log=primary, queue=queue, epoch_at=epoch_at) == core.Plan(truncate=(), start=3, snapshot=False, floor=3)


def test_reconcile_truncates_withdrawn_records_and_replaces_a_snapshot_holding_them() -> None:
    primary = _logs(1, 1, 1)
    queue = ShipQueue()
    queue.retract(2)
    sync = Sync(last_lsn=3, last_epoch=1, epoch=1, epoch_history={1: 1}, snapshot_lsn=0)
    assert core.reconcile(sync, log=primary, queue=queue, epoch_at=primary.epoch_at) == core.Plan(truncate=(2,), start=2, snapshot=False, floor=2)
    snapshotted = Sync(last_lsn=3, last_epoch=1, epoch=1, epoch_history={1: 1}, snapshot_lsn=3)
    plan = core.reconcile(snapshotted, log=primary, queue=queue, epoch_at=primary.epoch_at)
    # Its state is replaced, but by a snapshot no older than LSN 2, which it holds of ours:
    # an older one would take acknowledged records from it until it caught up.
    assert plan.start == -1 and plan.floor == 2


def test_check_append() -> None:
    assert core.check_append([record(4, 2)], prev_epoch=1, last=(1, 3)) == ""
    assert core.check_append([record(5, 2)], prev_epoch=1, last=(1, 3)) == "gap"
    assert core.check_append([record(4, 2)], prev_epoch=2, last=(1, 3)) == "diverged"
    assert core.check_append([], prev_epoch=9, last=(1, 3)) == ""


# ---------------------------------------------------------------------- the model


NAMES = ("a", "b")
WIRE_MAX = 8    # requests and replies in flight at most; older ones are lost
STRANDED_MAX = 4   # requests on connections their sender dropped, still to be read by the witness


class Open:
    """The first message of a shipping connection (its Hello): the standby answers with its Sync."""


@dataclass
class Session:
    """One shipping connection: the primary's end and the messages in flight each way."""

    serial: int
    primary: str
    to_standby: deque[Message | Open] = field(default_factory=deque)
    to_primary: deque[Message] = field(default_factory=deque)
    sent_times: deque[tuple[float, int, bool]] = field(default_factory=deque)
    synced: bool = False
    sent: int = 0
    prev_epoch: int = -1
    generation: int = 0
    closed: bool = False


@dataclass
class Envelope:
    """A request or reply in flight between a node and the witness or its peer."""

    source: str
    target: str
    message: Message
    tag: Any            # what a reply answers: (ballot serial, voter) or a witness request serial


class ModelNode:
    def __init__(self, name: str, peer: str) -> None:
        self.name = name
        self.peer = peer
        self.voter = Voter(name, LEASE)
        self.log = MemoryLog()
        self.primary = False
        self.lease_until = 0.0
        self.behind = BehindRecord()
        self.queue = ShipQueue()
        self.ballot: Ballot | None = None
        self.ballot_serial = 0
        self.ballot_sent_at = 0.0
        self.renew_sent_at = 0.0
        self.pending: list[int] = []          # LSNs written here and not yet acknowledged
        self.session: Session | None = None
        self.serving = 0                      # standby: the newest shipping connection's serial
        self.witness_request: tuple[int, str, bool] | None = None   # (serial, kind, was_maybe)
        self.clearing: int | None = None      # a clear waits for the standby to hold this LSN
        self.last_heard = 0.0                 # from a primary, or since a vote it granted

    def may_stand(self, now: float) -> bool:
        """The driver's election timer: a failover timeout of silence, and no vote's lease running."""
        return not self.primary and self.ballot is None and now >= max(self.last_heard + LEASE, self.voter.granted_until)


class ReplicationModel(RuleBasedStateMachine):
    """Two nodes and a witness on the pure core, over a network that loses, duplicates and
    reorders. Vote and witness messages travel one by one in any order (a request cut short
    drops its connection: a reply that arrives after the requester gave up is never read);
    shipping travels on connections (in order on one, lost when it breaks, and a standby
    applies only its newest connection's messages, as the driver does).

    A `RecordBehind` or `ClearBehind` the primary gave up on stays in flight: the witness may
    apply it late (it was paused, or read it from a connection the primary dropped), after a
    later request was confirmed, and may apply it twice (a resend of the same request). The
    sequence number the primary gives each behind request (`BehindRecord.next_sequence`) orders
    them at the witness, which refuses an older one (`stale_request`); without it the model
    finds a schedule where a `ClearBehind` the primary gave up on is applied after a later
    `RecordBehind` was confirmed, and the primary acknowledges alone while the witness no
    longer records the standby behind.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.nodes = {name: ModelNode(name, peer) for name, peer in (NAMES, NAMES[::-1])}
        self.witness = WitnessCore(WitnessState(cluster="model"), lease_seconds=LEASE, now=0.0)
        self.wire: list[Envelope] = []
        self.stranded: list[Envelope] = []   # witness requests whose sender gave up on them
        self.sessions: list[Session] = []
        self.serials = count(1)
        self.leaders: dict[int, str] = {}
        self.acknowledged: set[tuple[int, int]] = set()   # (lsn, epoch) of acknowledged writes
        self.votes: dict[tuple[str, int], str] = {}        # (voter, epoch) -> the candidate it voted for

    def _voted(self, voter: str, epoch: int, candidate: str) -> None:
        """A vote granted and recorded: no voter votes for two candidates in one epoch."""
        first = self.votes.setdefault((voter, epoch), candidate)
        assert first == candidate, f"{voter} voted for {first} and {candidate} in epoch {epoch}"

    # ------------------------------------------------------------------ node actions

    def _pick(self, index: int, eligible: Any) -> ModelNode:
        nodes = [node for node in self.nodes.values() if eligible(node)]
        return nodes[index % len(nodes)]

    def _any(self, eligible: Any) -> bool:
        return any(eligible(node) for node in self.nodes.values())

    def _see_epoch(self, node: ModelNode, epoch: int, leader: str | None) -> bool:
        news = core.epoch_news(epoch, node.voter.promised_epoch)
        if news == "stale":
            return False
        if news == "higher":
            if node.primary:
                self._step_down(node)
            node.voter.promise(epoch, leader or "")
        if leader:
            node.voter.leader = leader
        return True

    def _step_down(self, node: ModelNode) -> None:
        node.primary = False
        node.lease_until = 0.0
        node.queue.tail.clear()
        node.pending.clear()             # a batch waiting for its acknowledgement fails
        node.clearing = None
        node.witness_request = None      # the request is cut short (its connection dropped)
        if node.session is not None:
            node.session.closed = True
            node.session = None

    def _lease_holds(self, node: ModelNode) -> bool:
        return core.lease_holds(node.primary, False, self.now, node.lease_until)

    def _extend(self, node: ModelNode, sent_at: float) -> None:
        if node.primary:
            node.lease_until = max(node.lease_until, core.lease_end(sent_at, LEASE))

    def _send(self, source: str, target: str, message: Message, tag: Any) -> None:
        self.wire.append(Envelope(source, target, message, tag))
        if len(self.wire) > WIRE_MAX:
            del self.wire[0]   # lost: the oldest message in flight

    def _become_primary(self, node: ModelNode, ballot: Ballot) -> None:
        epoch = ballot.request.epoch
        assert self.leaders.setdefault(epoch, node.name) == node.name, f"two leaders in epoch {epoch}"
        node.log.set_epoch(epoch, node.log.last_lsn() + 1)
        node.primary = True
        node.voter.leader = node.name
        node.lease_until = 0.0
        self._extend(node, node.ballot_sent_at)
        node.behind.elected(sync_with_peer=True, witness_granted="witness" in ballot.granted,
                            witness_unanswered=ballot.unanswered("witness"))
        node.queue.new_term()
        event("elected")

    def _acknowledge(self, node: ModelNode) -> None:
        """The pipeline's replies: a write is acknowledged once the standby holds it, or alone
        while the standby is not required, and only while the lease holds."""
        if not self._lease_holds(node):
            return
        for lsn in list(node.pending):
            if node.queue.acked_lsn >= lsn:
                pass
            elif not node.behind.require_standby:
                assert self.witness.state.behind == node.peer, (
                    f"{node.name} acknowledged LSN {lsn} alone while the witness records {self.witness.state.behind!r} behind")
            else:
                continue
            event("acknowledged" if node.queue.acked_lsn >= lsn else "acknowledged alone")
            node.pending.remove(lsn)
            self.acknowledged.add((lsn, node.log.records[lsn - 1].epoch))

    # ------------------------------------------------------------------ the steps

    @initialize()
    def start(self) -> None:
        for node in self.nodes.values():
            node.log.set_epoch(1, 1)

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One action of those possible now (drawn here, not by rule preconditions, so that no
        draw is wasted on an action that cannot happen), with its arguments. Deliveries weigh
        more than timeouts, or hardly a ballot or a shipment would ever complete."""
        possible = {
            "tick": True,
            "stand": self._any(lambda node: node.may_stand(self.now)),
            "request_times_out": self._any(lambda node: node.ballot is not None or node.witness_request is not None),
            "deliver": bool(self.wire),
            "stale_delivered": bool(self.stranded),
            "renew": self._any(lambda node: node.primary and node.witness_request is None),
            "write": self._any(self._lease_holds),
            "standby_times_out": self._any(self._may_record),
            "clear_step": self._any(lambda node: node.clearing is not None and node.witness_request is None),
            "connect": self._any(lambda node: node.primary and node.session is None),
            "ship": self._any(self._shipping),
            "break_connection": any(not s.closed for s in self.sessions),
            "standby_receives": any(s.to_standby for s in self.sessions),
            "primary_receives": any(s.to_primary for s in self.sessions),
        }
        weights = {"deliver": 8, "standby_receives": 6, "primary_receives": 6, "ship": 3, "write": 2, "renew": 3, "clear_step": 4, "connect": 3}
        choices = [name for name, enabled in possible.items() if enabled for _ in range(weights.get(name, 1))]
        action = data.draw(st.sampled_from(choices), label="action")
        index = data.draw(st.integers(0, 1000), label="which")
        if action == "tick":
            self.tick(data.draw(st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.3, 1.2]), label="seconds"),
                      data.draw(st.sampled_from([False] * 7 + [True]), label="witness restarts"))
        elif action == "stand":
            self.stand(index, data.draw(st.booleans(), label="pre-vote"))
        elif action == "stale_delivered":
            self.stale_delivered(index)
        elif action == "deliver":
            self.deliver(index, data.draw(st.sampled_from(["deliver", "deliver", "duplicate", "lose"]), label="fate"))
        elif action == "ship":
            self.ship(index, data.draw(st.booleans(), label="heartbeat"))
        elif action == "clear_step":
            self.clear_step(index, data.draw(st.booleans(), label="wait"))
        else:
            getattr(self, action)(index)

    def tick(self, seconds: float, witness_restarts: bool) -> None:
        """Time passes (a lease may run out); `witness_restarts`: the witness restarted meanwhile."""
        if witness_restarts:
            state = WitnessState(**{f: getattr(self.witness.state, f) for f in WitnessState.__struct_fields__})
            self.witness = WitnessCore(state, lease_seconds=LEASE, now=self.now)
            self.stranded.clear()   # its connections, and what they buffered, are gone
        self.now += seconds
        for node in self.nodes.values():
            if node.primary and self.now >= node.lease_until:
                self._step_down(node)

    def stand(self, index: int, pre: bool) -> None:
        self._stand(self._pick(index, lambda node: node.may_stand(self.now)).name, pre)

    def _stand(self, name: str, pre: bool) -> None:
        node = self.nodes[name]
        if node.primary:
            return
        epoch = max(node.voter.promised_epoch, node.log.epoch) + 1
        request = core.vote_request(epoch=epoch, candidate=name, last=node.log.last(), force=False, sync=True, peer=node.peer)
        if pre:
            request = msgspec.structs.replace(request, pre=True)
        else:
            node.voter.promise(epoch, name)
            self._voted(name, epoch, name)
        node.ballot_serial = next(self.serials)
        node.ballot = Ballot(request, ["witness", "peer"])
        node.ballot_sent_at = self.now
        self._send(name, "witness", request, (node.ballot_serial, "witness"))
        self._send(name, node.peer, request, (node.ballot_serial, "peer"))

    def request_times_out(self, index: int) -> None:
        """A ballot or a request to the witness gives up waiting (its connection is dropped)."""
        node = self._pick(index, lambda node: node.ballot is not None or node.witness_request is not None)
        ballot = node.ballot
        if ballot is None:
            assert node.witness_request is not None
            # The request stays buffered on the connection the node dropped: the witness may
            # still read it, late (`stale_delivered`); its reply is never read.
            serial = node.witness_request[0]
            for envelope in [e for e in self.wire if e.target == "witness" and e.tag == serial]:
                self.wire.remove(envelope)
                self.stranded.append(envelope)
                del self.stranded[:-STRANDED_MAX]
            self._witness_answered(node, None)
            return
        for voter in ballot.voters:
            if voter not in ballot.replies:
                ballot.add(voter, None)
        self._close_ballot(node)

    def _close_ballot(self, node: ModelNode) -> None:
        ballot = node.ballot
        assert ballot is not None
        node.ballot = None
        for epoch, leader in ballot.higher_epochs():
            self._see_epoch(node, epoch, leader or None)
        request = ballot.request
        if not ballot.won():
            return
        if request.pre:
            if not core.voted_for_other_meanwhile(self.now, node.voter.granted_until, node.voter.leader, node.name):
                self._stand(node.name, pre=False)
            return
        if node.voter.promised_epoch == request.epoch and not node.primary:
            self._become_primary(node, ballot)

    # ------------------------------------------------------------------ rules: the wire

    def deliver(self, index: int, fate: str) -> None:
        """Deliver any message in flight (reordering), deliver it and keep a copy in flight
        (duplication), or lose it."""
        envelope = self.wire[-1 - index % len(self.wire)]   # the newest first, the older ones reordered
        if fate != "duplicate":
            self.wire.remove(envelope)
        if fate == "lose":
            return
        message = envelope.message
        if envelope.target == "witness":
            reply, _ = self.witness.handle(message, self.now)
            if isinstance(message, VoteRequest) and isinstance(reply, VoteReply) and reply.granted and not message.pre and not message.renew:
                self._voted("witness", message.epoch, message.candidate)
            self._send("witness", envelope.source, reply, envelope.tag)
        elif isinstance(message, VoteRequest):
            node = self.nodes[envelope.target]
            last = node.log.last()
            reply, recorded = node.voter.answer(message, now=self.now, last=last, primary_with_lease=self._lease_holds(node))
            if recorded:
                self._voted(node.name, message.epoch, message.candidate)
                node.last_heard = self.now
                if node.primary:
                    self._step_down(node)
            self._send(node.name, envelope.source, reply, envelope.tag)
        else:
            self._take_answer(self.nodes[envelope.target], envelope)

    def stale_delivered(self, index: int) -> None:
        """The witness reads a request its sender gave up on (the witness was paused, or the
        reply was lost): from a dropped connection, so its reply goes nowhere."""
        envelope = self.stranded.pop(index % len(self.stranded))
        message = envelope.message
        event(f"stale {type(message).__name__} delivered")
        reply, _ = self.witness.handle(message, self.now)
        if isinstance(message, VoteRequest) and isinstance(reply, VoteReply) and reply.granted and not message.pre and not message.renew:
            self._voted("witness", message.epoch, message.candidate)

    def _take_answer(self, node: ModelNode, envelope: Envelope) -> None:
        reply = envelope.message
        if isinstance(reply, VoteReply) and isinstance(envelope.tag, tuple):
            serial, voter = envelope.tag
            if node.ballot is None or serial != node.ballot_serial or voter in node.ballot.replies:
                return   # the ballot ended: its connections are gone
            if node.ballot.add(voter, reply) == "done":
                self._close_ballot(node)
            return
        pending = node.witness_request
        if pending is None or envelope.tag != pending[0]:
            return       # the request was cut short: its reply is never read
        self._witness_answered(node, reply)

    def _witness_answered(self, node: ModelNode, reply: Message | None) -> None:
        assert node.witness_request is not None
        _, kind, was_maybe = node.witness_request
        node.witness_request = None
        if kind == "record":
            node.behind.record_answered(reply, was_maybe)
        elif kind == "clear":
            node.clearing = None
            node.behind.clear_answered(reply)
        elif kind == "renew":
            action = core.renewal(reply, promised=node.voter.promised_epoch, forced=False)
            if action == "extend":
                assert isinstance(reply, VoteReply)
                self._extend(node, node.renew_sent_at)
            elif action == "step_down":
                assert isinstance(reply, VoteReply)
                self._see_epoch(node, reply.promised_epoch, reply.leader or None)
                if node.primary:
                    self._step_down(node)
        self._acknowledge(node)

    # ------------------------------------------------------------------ rules: the primary

    def renew(self, index: int) -> None:
        node = self._pick(index, lambda node: node.primary and node.witness_request is None)
        name = node.name
        serial = next(self.serials)
        node.witness_request = (serial, "renew", False)
        node.renew_sent_at = self.now   # the renewal's sending, from which its lease runs
        epoch, lsn = node.log.last()
        self._send(name, "witness", VoteRequest(epoch=node.voter.promised_epoch, candidate=name, last_epoch=epoch,
                                                last_lsn=lsn, renew=True), serial)

    def write(self, index: int) -> None:
        node = self._pick(index, self._lease_holds)
        new = record(node.log.last_lsn() + 1, node.log.epoch)
        node.queue.add([new], self.now)
        node.log.append([new])
        node.pending.append(new.lsn)
        self._acknowledge(node)

    def _may_record(self, node: ModelNode) -> bool:
        return (node.primary and bool(node.pending) and node.witness_request is None and node.clearing is None
                and node.behind.record_wanted(node.queue.acked_lsn, node.pending[-1]))

    def standby_times_out(self, index: int) -> None:
        """A batch waited `standby_timeout`: ask the witness to record the standby behind."""
        node = self._pick(index, self._may_record)
        name = node.name
        was_maybe = node.behind.record_sent()
        event("RecordBehind sent")
        serial = next(self.serials)
        node.witness_request = (serial, "record", was_maybe)
        self._send(name, "witness", RecordBehind(epoch=node.voter.promised_epoch, primary=name, standby=node.peer,
                                                 lsn=node.pending[-1], sequence=node.behind.next_sequence()), serial)

    def clear_step(self, index: int, wait: bool) -> None:
        """A clear under way: once the standby holds the target, send ClearBehind; else give up."""
        node = self._pick(index, lambda node: node.clearing is not None and node.witness_request is None)
        name = node.name
        assert node.clearing is not None
        if node.queue.acked_lsn < node.clearing:
            if wait:
                return
            node.behind.clear_not_caught_up()
            node.clearing = None
            self._acknowledge(node)
            return
        node.behind.clear_sent()
        event("ClearBehind sent")
        serial = next(self.serials)
        node.witness_request = (serial, "clear", False)
        self._send(name, "witness", ClearBehind(epoch=node.voter.promised_epoch, primary=name, standby=node.peer,
                                                sequence=node.behind.next_sequence()), serial)

    def connect(self, index: int) -> None:
        """A primary without a shipping connection opens one (the ship loop's retry)."""
        node = self._pick(index, lambda node: node.primary and node.session is None)
        name = node.name
        session = Session(serial=next(self.serials), primary=name)
        session.to_standby.append(Open())
        node.session = session
        self.sessions.append(session)

    def _shipping(self, node: ModelNode) -> bool:
        return node.session is not None and node.session.synced and not node.session.closed

    def ship(self, index: int, heartbeat: bool) -> None:
        node = self._pick(index, self._shipping)
        session = node.session
        assert session is not None
        generation, withdrawn = node.queue.withdrawal(session.generation, session.sent)
        session.generation = generation
        if withdrawn is not None:
            session.to_standby.append(Truncate(epoch=node.voter.promised_epoch, after_lsn=withdrawn))
            session.sent = withdrawn
        records = [] if heartbeat else node.queue.shippable(node.log, session.sent, 3)
        message = Append(epoch=node.voter.promised_epoch, records=records, commit_lsn=node.queue.acked_lsn,
                         sync=node.behind.require_standby, prev_epoch=session.prev_epoch if records else -1)
        if records:
            session.sent = records[-1].lsn
            session.prev_epoch = records[-1].epoch
        session.sent_times.append((self.now, session.generation, False))
        session.to_standby.append(message)

    def break_connection(self, index: int) -> None:
        open_sessions = [s for s in self.sessions if not s.closed]
        session = open_sessions[index % len(open_sessions)]
        session.closed = True
        session.to_standby.clear()
        session.to_primary.clear()
        owner = self.nodes[session.primary]
        if owner.session is session:
            owner.session = None

    # ------------------------------------------------------------------ rules: shipping connections

    def standby_receives(self, index: int) -> None:
        sessions = [s for s in self.sessions if s.to_standby]
        session = sessions[index % len(sessions)]
        message = session.to_standby.popleft()
        primary = session.primary
        standby = self.nodes[self.nodes[primary].peer]
        if isinstance(message, Open):
            standby.serving = session.serial
            epoch, lsn = standby.log.last()
            session.to_primary.append(Sync(last_lsn=lsn, last_epoch=epoch, epoch=standby.voter.promised_epoch,
                                           epoch_history=standby.log.epoch_history(), snapshot_lsn=0))
            return
        if session.serial != standby.serving:
            return                        # replaced by a newer connection
        epoch = getattr(message, "epoch", 0)
        if not self._see_epoch(standby, epoch, primary):
            session.to_primary.append(AppendReply(epoch=standby.voter.promised_epoch, ok=False, last_lsn=standby.log.last_lsn(), reason="stale_epoch"))
            standby.serving = 0
            return
        if standby.primary:
            self._step_down(standby)
        standby.last_heard = self.now
        if isinstance(message, Truncate):
            standby.log.truncate(message.after_lsn)
            return
        assert isinstance(message, Append)
        refused = core.check_append(message.records, message.prev_epoch, standby.log.last())
        if refused:
            session.to_primary.append(AppendReply(epoch=standby.voter.promised_epoch, ok=False, last_lsn=standby.log.last_lsn(), reason=refused))
            standby.serving = 0
            return
        standby.log.append(list(message.records))
        granted = message.lease and not standby.primary
        if granted:
            standby.voter.granted_until = self.now + LEASE
        session.to_primary.append(AppendReply(epoch=standby.voter.promised_epoch, ok=True, last_lsn=standby.log.last_lsn(), lease_granted=granted))

    def primary_receives(self, index: int) -> None:
        sessions = [s for s in self.sessions if s.to_primary]
        session = sessions[index % len(sessions)]
        message = session.to_primary.popleft()
        node = self.nodes[session.primary]
        if session.closed or node.session is not session:
            return                         # the primary's end of it is gone
        if isinstance(message, Sync):
            if message.epoch > node.voter.promised_epoch:
                self._see_epoch(node, message.epoch, None)
                return
            session.generation = node.queue.generation
            plan = core.reconcile(message, log=node.log, queue=node.queue, epoch_at=node.log.epoch_at)
            assert not plan.snapshot and plan.start >= 0
            for after_lsn in plan.truncate:
                session.to_standby.append(Truncate(epoch=node.voter.promised_epoch, after_lsn=after_lsn))
            node.queue.acked(plan.start)
            node.queue.acked_lsn = plan.start
            session.sent = plan.start
            session.prev_epoch = node.log.epoch_at(plan.start) or 0
            session.synced = True
            return
        sent = session.sent_times.popleft() if session.sent_times else (self.now, -1, False)
        outcome = core.account_reply(message, sent, promised=node.voter.promised_epoch, generation=node.queue.generation)
        if outcome.higher_epoch:
            self._see_epoch(node, outcome.higher_epoch, None)
            return
        if outcome.refused:
            session.closed = True
            node.session = None
            return
        if outcome.extend_from is not None:
            self._extend(node, outcome.extend_from)
        if outcome.acked is None:
            return
        if outcome.settles:
            node.queue.retracted_after = None
        node.queue.acked(outcome.acked)
        caught_up = core.caught_up(node.log.last_lsn(), node.queue.acked_lsn, node.queue.lag_seconds(self.now), LEASE / 3)
        if node.clearing is None and node.witness_request is None and node.behind.clear_wanted(caught_up=caught_up):
            node.behind.clear_begin()
            node.clearing = node.log.last_lsn()
        self._acknowledge(node)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def one_leader_per_epoch(self) -> None:
        primaries: dict[int, list[str]] = {}
        for node in self.nodes.values():
            if node.primary:
                primaries.setdefault(node.voter.promised_epoch, []).append(node.name)
        assert all(len(names) == 1 for names in primaries.values()), primaries

    @invariant()
    def no_acknowledged_write_missing_from_an_electable_node(self) -> None:
        for node in self.nodes.values():
            peer = self.nodes[node.peer]
            witness_would_vote = self.witness.state.behind != node.name
            peer_would_vote = node.log.last() >= peer.log.last()
            if not (witness_would_vote or peer_would_vote):
                continue
            for lsn, epoch in self.acknowledged:
                assert node.log.epoch_at(lsn) == epoch, (
                    f"{node.name} could be elected (witness: {witness_would_vote}, peer: {peer_would_vote}) "
                    f"but misses acknowledged LSN {lsn} of epoch {epoch}")


ReplicationModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestReplicationModel = ReplicationModel.TestCase


def _deliver_where(model: ReplicationModel, wanted: Any) -> None:
    """Deliver the message in flight that `wanted(envelope)` picks (the model's `deliver`
    counts from the newest)."""
    matches = [position for position, envelope in enumerate(model.wire) if wanted(envelope)]
    assert matches, [type(envelope.message).__name__ for envelope in model.wire]
    model.deliver(len(model.wire) - 1 - matches[0], "deliver")


def test_the_model_refuses_a_clear_the_primary_gave_up_on_after_a_later_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule of a `ClearBehind` read late: the primary sends it, gives up on it, has a
    later `RecordBehind` confirmed and acknowledges alone; then the witness reads the clear.
    It must be refused (`stale_request`), the standby still recorded behind, and every write
    acknowledged alone still safe."""
    monkeypatch.setattr(f"{__name__}.event", lambda *_: None)   # Hypothesis's, outside a Hypothesis test here
    model = ReplicationModel()
    model.start()
    model.tick(1.2, False)
    model._stand("a", pre=False)
    _deliver_where(model, lambda e: e.target == "witness" and isinstance(e.message, VoteRequest))
    _deliver_where(model, lambda e: e.target == "a" and isinstance(e.message, VoteReply))
    a = model.nodes["a"]
    assert a.primary and model.witness.state.behind == "b" and not a.behind.require_standby
    model.connect(0)
    model.standby_receives(0)        # the Open: the standby answers with its Sync
    model.primary_receives(0)        # the Sync
    model.ship(0, heartbeat=True)
    model.standby_receives(0)
    model.primary_receives(0)        # caught up: the clear begins
    assert a.clearing is not None
    model.clear_step(0, wait=True)   # ClearBehind leaves ...
    assert any(isinstance(e.message, ClearBehind) for e in model.wire)
    model.request_times_out(0)       # ... and the primary gives up on it (the witness is paused)
    assert [type(e.message) for e in model.stranded] == [ClearBehind] and a.behind.require_standby
    model.write(0)                   # the standby does not acknowledge it in time
    model.standby_times_out(0)
    _deliver_where(model, lambda e: e.target == "witness" and isinstance(e.message, RecordBehind))
    _deliver_where(model, lambda e: e.target == "a" and isinstance(e.message, Ack))
    assert not a.behind.require_standby and model.acknowledged == {(1, 2)}   # acknowledged alone
    model.stale_delivered(0)         # the witness reads the stale clear at last
    assert model.witness.state.behind == "b"
    model.write(0)                   # acknowledged alone: the witness must still record b behind
    assert (2, 2) in model.acknowledged
    model.no_acknowledged_write_missing_from_an_electable_node()
    model.one_leader_per_epoch()


def test_the_witness_orders_behind_requests_and_keeps_the_order_across_a_restart(tmp_path: Any) -> None:
    from replication.witness import FileStateStore

    store = FileStateStore(tmp_path, "c")
    witness = WitnessCore(store.load(), lease_seconds=LEASE, now=0.0)
    grant, changed = witness.handle(VoteRequest(epoch=2, candidate="a", last_epoch=1, last_lsn=0), 0.0)
    assert isinstance(grant, VoteReply) and grant.granted and changed
    clear = ClearBehind(epoch=2, primary="a", standby="b", sequence=1)
    record_ = RecordBehind(epoch=2, primary="a", standby="b", lsn=5, sequence=2)
    assert witness.handle(record_, 0.1) == (Ack(ok=True, epoch=2), True)
    store.save(witness.state)
    witness = WitnessCore(store.load(), lease_seconds=LEASE, now=0.2)   # restarted: the order is durable
    assert witness.handle(clear, 0.3) == (Ack(ok=False, reason="stale_request", epoch=2), False)
    assert witness.state.behind == "b"
    assert witness.handle(record_, 0.4) == (Ack(ok=True, epoch=2), True)   # a resend of the same request
    newer = ClearBehind(epoch=2, primary="a", standby="b", sequence=3)
    assert witness.handle(newer, 0.5) == (Ack(ok=True, epoch=2), True) and witness.state.behind == ""
    # An older primary sends no number (0): its requests are applied in the order they come.
    witness.handle(VoteRequest(epoch=3, candidate="a", last_epoch=2, last_lsn=5, renew=False), 2.0)
    assert witness.handle(RecordBehind(epoch=3, primary="a", standby="b", lsn=6), 2.1)[0] == Ack(ok=True, epoch=3)
    assert witness.handle(ClearBehind(epoch=3, primary="a", standby="b"), 2.2)[0] == Ack(ok=True, epoch=3)
    assert witness.state.behind == ""


def test_a_stale_refusal_is_never_a_confirmation() -> None:
    behind = BehindRecord()
    behind.elected(sync_with_peer=True, witness_granted=False, witness_unanswered=False)
    first = behind.next_sequence()
    was_maybe = behind.record_sent()
    assert not behind.record_answered(Ack(ok=False, reason="stale_request", epoch=1), was_maybe)
    assert behind.require_standby and not behind.recorded
    assert behind.next_sequence() == first + 1   # a new request takes a new number
    behind.clear_sent()
    assert not behind.clear_answered(Ack(ok=False, reason="stale_request", epoch=1)) and behind.maybe
    behind.elected(sync_with_peer=True, witness_granted=True, witness_unanswered=False)
    assert behind.next_sequence() == 1   # numbered afresh in a new epoch


def test_behind_requests_and_the_witness_state_of_an_older_binary_decode() -> None:
    """An older primary's requests carry no sequence (0: applied in the order they come), and
    an older witness's state file has no order yet: both decode with the defaults."""

    class OldRecordBehind(msgspec.Struct, tag="record_behind", frozen=True):
        epoch: int
        primary: str
        standby: str
        lsn: int

    old = msgspec.msgpack.decode(msgspec.msgpack.encode(OldRecordBehind(epoch=3, primary="a", standby="b", lsn=9)), type=RecordBehind)
    assert old == RecordBehind(epoch=3, primary="a", standby="b", lsn=9, sequence=0)
    new = RecordBehind(epoch=3, primary="a", standby="b", lsn=9, sequence=7)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(new), type=OldRecordBehind).lsn == 9   # an older witness skips it
    state = msgspec.json.decode(b'{"cluster":"c","promised_epoch":3,"leader":"a","behind":"b","behind_since_epoch":3}', type=WitnessState)
    assert (state.behind_request_epoch, state.behind_request_sequence) == (0, 0)
