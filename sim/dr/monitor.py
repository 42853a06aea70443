"""The continuous invariants: judged while the run goes on, not only at its end.

`sim.dr.checks` looks at the final logs; a bug that loses nothing *this time* (the next fault
would have lost the writes) or that stalls the cluster until the liveness phase heals it
passes those. The monitor watches every acknowledgement, every read and, every
`sample_seconds` of virtual time, the whole cluster:

- **ack-alone** (sync mode): whenever a node holds no durable copy of an acknowledged write,
  the witness's durable state records that node as behind (so it cannot be elected with the
  witness's vote). Checked at every acknowledgement (the primary acknowledged alone), at
  every save of the witness's state (no record was cleared before the node caught up) and at
  every sample (no witness forgot one).
  A node that *forgets* an acknowledged write it held (a truncated tail, a snapshot installed
  over its log) is judged at that instant too: however soon the primary ships it again, a
  failover in between would lose it unless the witness records that node behind.
- **elected nodes hold every acknowledged write** (sync mode): at each promotion the new
  primary's disk holds every acknowledged write.
- **lease** (the fencing margin): a node that holds the primary role with a valid lease has
  it end, in virtual time, no later than the later of the witness's grant to it (the
  witness's lease for that leader and epoch) and the earliest moment the other node may
  stand for election (`max(last heard + failover_timeout, its own grant)`): the two voters an
  election needs. A voter that is down or paused cannot vote meanwhile and sets no bound.
- **log epochs**: every record a node writes falls, by its LSN, in its own epoch according to
  that node's epoch history (an old epoch's batch that lands after a new epoch began forks
  the log, even where a later truncation would hide it from the final checks).
- **reads**: a read served by a node that holds the primary role with a valid lease includes
  every write acknowledged before it (the newest acknowledged write is applied there); it may
  also show writes still in flight, never acknowledged yet. A read served by a standby shows a
  prefix of the log (the node applies records in order); in sync mode, while the witness does
  not record that standby behind, it includes every write acknowledged before the read
  started. Checked at every read of the workload and on every node at every sample.
- **bounded liveness** (during the safety phase for runs whose weather stays within the
  design's envelope, see `sim.dr.runner.within_envelope`; in the liveness phase always): at each sample, if at most one fault is in force (a process down,
  paused or busy (a slow fsync stalls the witness that way), a network cut: each counts one;
  weather such as latency, spikes, lost replies or slow disks does not) and no disk is full (a full disk is survived safely, but the primary
  keeps its lease and refuses writes until space is freed: no failover is promised), and some node that holds every acknowledged write is up
  and can talk both ways with a second voter that would vote for it (the witness, unless it
  records the node behind; or the other node, if the candidate's log is at least as long),
  then a writable primary must exist within `3 x failover_timeout + 1 s` (the second for
  weather: a latency spike may hold any one message that long; plus one sample) of the moment
  this began or the faults last changed. A witness record
  "behind" that outlived its reason (the node has held every acknowledged write for
  `failover_timeout` while the primary that owns the record could reach it and the witness)
  does not excuse the wait: the primary had every chance to clear it. (A record whose owner
  is no longer primary, e.g. the witness missed an election won with the peer's vote alone,
  can be cleared by nobody until that node leads again: docs/replication.md, "Limits".)

A violation is reported once per invariant and run (with how often it recurred), with the
virtual time it was found at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .clock import sleep
from .workload import Ack

if TYPE_CHECKING:
    from .cluster import Process, SimCluster
    from .trace import Trace

WITNESS = "witness"
LIVENESS_BOUND_TIMEOUTS = 3.0
LIVENESS_ALLOWANCE_SECONDS = 1.0   # weather: a latency spike (up to 1 s in swarm) may hold any one message


class Monitor:
    def __init__(self, cluster: SimCluster, trace: Trace, *, mode: str, failover_timeout: float, envelope: bool = True) -> None:
        self.cluster = cluster
        self.trace = trace
        self.mode = mode
        self.failover_timeout = failover_timeout
        self.bound = LIVENESS_BOUND_TIMEOUTS * failover_timeout + LIVENESS_ALLOWANCE_SECONDS
        self.sample_seconds = max(0.1, failover_timeout / 4)
        self.violations: dict[str, str] = {}
        self.repeats: dict[str, int] = {}
        self.last_ack: Ack | None = None
        self.missing: dict[str, list[Ack]] = {name: [] for name in cluster.names}  # acks a node may not hold yet
        self.stale_watch: dict[str, float] = {name: 0.0 for name in cluster.names}
        self.stretch_since: float | None = None
        self.faults: tuple[str, ...] = ()
        self.samples = 0
        # Liveness is promised for weather within the design's envelope (runner.within_envelope);
        # in the liveness phase, once the weather is calm, it is judged in every run.
        self.judge_liveness = envelope
        self.acked: dict[tuple[int, int], Ack] = {}   # every acknowledged write, by (LSN, epoch)
        for name, process in cluster.processes.items():
            if name in self.missing:
                process.disk.on_forget = lambda gone, name=name: self.on_forget(name, gone)

    # ------------------------------------------------------------------ reporting

    def report(self, invariant: str, text: str) -> None:
        if invariant in self.violations:
            self.repeats[invariant] += 1
            return
        now = trio.current_time()
        message = f"{invariant} at {now:.6f}: {text}"
        self.violations[invariant] = message
        self.repeats[invariant] = 0
        self.trace.add("check", "*", "VIOLATION (during the run) " + message)

    def results(self) -> list[str]:
        return [message + (f" (and {self.repeats[key]} more times)" if self.repeats[key] else "")
                for key, message in self.violations.items()]

    # ------------------------------------------------------------------ events

    def _behind(self) -> str:
        return self.cluster.witness_store.state.behind

    def on_ack(self, ack: Ack) -> None:
        self.last_ack = ack
        self.acked[(ack.lsn, ack.epoch)] = ack
        for name, missing in self.missing.items():
            disk = self.cluster.processes[name].disk
            if not disk.holds(ack.lsn, ack.epoch):
                missing.append(ack)
                if self.mode == "sync" and name != ack.node and self._behind() != name:
                    self.report("ack-alone", f"{ack.node} acknowledged lsn {ack.lsn} (epoch {ack.epoch}) while {name} holds no "
                                f"durable copy and the witness does not record {name} behind")

    def on_forget(self, name: str, gone: list[tuple[int, int]]) -> None:
        """`name`'s disk no longer holds `gone` (LSN, epoch), which it held until now."""
        lost = sorted((self.acked[key] for key in gone if key in self.acked), key=lambda ack: ack.lsn)
        if not lost:
            return
        self.missing[name].extend(lost)
        if self.mode == "sync" and self._behind() != name:
            ack = lost[0]
            self.report("ack-alone", f"{name} discarded acknowledged lsn {ack.lsn} (epoch {ack.epoch}, acked by {ack.node} at "
                        f"{ack.at:.6f}) it held ({len(lost)} acknowledged in all) while the witness does not record it behind")

    def on_witness_saved(self, behind: str) -> None:
        """The witness's durable state changed (a vote, a record, a clear): ack-alone at that instant."""
        if self.mode != "sync":
            return
        for name in self.cluster.names:
            self._settle(name)
            missing = self.missing[name]
            if missing and behind != name:
                ack = missing[0]
                self.report("ack-alone", f"the witness saved a state that does not record {name} behind while {name} holds no "
                            f"durable copy of acknowledged lsn {ack.lsn} (epoch {ack.epoch}, acked by {ack.node} at {ack.at:.6f})")

    def on_primary(self, name: str, epoch: int) -> None:
        if self.mode != "sync":
            return  # async mode: the loss window is by design
        self._settle(name)
        missing = self.missing[name]
        if missing:
            ack = missing[0]
            self.report("elected-without-acks", f"{name} became primary for epoch {epoch} without acknowledged lsn {ack.lsn} "
                        f"(epoch {ack.epoch}, acked by {ack.node}) ({len(missing)} missing)")

    def on_read(self, process: Process) -> None:
        """A client read the state of `process` (it is up and running)."""
        node, member, ack = process.node, process.member, self.last_ack
        if node is None or member is None or ack is None:
            return
        if node.role == "primary":
            if not member.lease_valid():
                return  # refused as a primary read (the role goes with the lease)
            if self.mode != "sync" and ack.epoch != node.store.epoch():
                return  # async mode: an earlier epoch's acknowledged writes may be lost by design
            kind = "read-primary"
        elif self.mode == "sync" and node.role == "standby" and self._behind() != process.name:
            kind = "read-standby"
        else:
            return
        if node.lsn < ack.lsn or not process.disk.holds(ack.lsn, ack.epoch):
            self.report(kind, f"a read on {process.name} ({node.role}, applied lsn {node.lsn}) misses the acknowledged "
                        f"lsn {ack.lsn} (epoch {ack.epoch}, acked by {ack.node} at {ack.at:.6f})")

    # ------------------------------------------------------------------ sampling

    def _settle(self, name: str) -> None:
        disk = self.cluster.processes[name].disk
        missing = self.missing[name]
        if missing:
            self.missing[name] = [ack for ack in missing if not disk.holds(ack.lsn, ack.epoch)]

    async def run(self) -> None:
        while True:
            await sleep(self.sample_seconds)
            self.sample()

    def sample(self) -> None:
        self.samples += 1
        cluster = self.cluster
        now = trio.current_time()
        for name in cluster.names:
            self._settle(name)
        behind = self._behind()
        if self.mode == "sync":
            for name, missing in self.missing.items():
                if missing and behind != name:
                    ack = missing[0]
                    self.report("ack-alone", f"{name} holds no durable copy of acknowledged lsn {ack.lsn} (epoch {ack.epoch}, "
                                f"acked by {ack.node} at {ack.at:.6f}) and the witness does not record it behind")
        for name in cluster.names:
            process = cluster.processes[name]
            if process.up and not process.paused and not process.stalled:
                self.on_read(process)
        self._lease(now)
        for name in cluster.names:
            anomalies = cluster.processes[name].disk.anomalies
            if anomalies:
                self.report("log-epochs", f"{name}: {anomalies[0]}")
        if self.judge_liveness:
            self._liveness(now, behind)

    def _lease(self, now: float) -> None:
        cluster = self.cluster
        for name in cluster.names:
            process = cluster.processes[name]
            member = process.member
            if not process.up or member is None or process.node is None or process.node.role != "primary" \
                    or member.forced or not member.lease_valid():
                continue
            clock = process.clock
            ends = now + (member.lease_until - clock.monotonic()) / clock.rate
            bounds: list[float] = []
            witness = cluster.processes[WITNESS]
            if not witness.up or witness.paused or witness.witness is None:
                continue   # cannot vote meanwhile (and honours a whole lease when it restarts)
            core = witness.witness.core
            if core.state.leader == name and core.state.promised_epoch == member.promised_epoch:
                bounds.append(now + (core.lease_until - witness.clock.monotonic()) / witness.clock.rate)
            other = cluster.processes[next(n for n in cluster.names if n != name)]
            if not other.up or other.paused or other.member is None:
                continue
            peer = other.member
            free_at = max(peer.last_heard + peer.failover_timeout, peer.granted_until)
            bounds.append(now + (free_at - other.clock.monotonic()) / other.clock.rate)
            if ends > max(bounds) + 1e-9:
                self.report("lease", f"{name}'s lease (epoch {member.promised_epoch}) runs {ends - max(bounds):.6f} s past "
                            f"the witness's grant and {other.name}'s wait: another node could win an election meanwhile")

    def _talk(self, one: str, other: str) -> bool:
        network = self.cluster.network
        return self._running(one) and self._running(other) and network.flowing(one, other) and network.flowing(other, one)

    def _running(self, name: str) -> bool:
        process = self.cluster.processes[name]
        return process.up and not process.paused

    def _liveness(self, now: float, behind: str) -> None:
        cluster = self.cluster
        faults: list[str] = []
        for name, process in cluster.processes.items():
            if not process.up:
                faults.append(f"{name} down")
            elif process.paused:
                faults.append(f"{name} paused")
            elif process.stalled:
                faults.append(f"{name} busy")
            if process.disk_full:
                faults.append(f"{name} disk full")
        if cluster.network.cut:
            faults.append("network cut")
        if cluster.network.policies:
            faults.append("slow links")
        signature = tuple(faults)
        if signature != self.faults:
            self.faults = signature
            self.stretch_since = None
        # How long a witness record "behind" has outlived its reason under a working primary.
        state = cluster.witness_store.state
        owner = cluster.processes.get(state.leader)
        owner_primary = (owner is not None and owner.member is not None and owner.node is not None
                         and owner.node.role == "primary" and owner.member.promised_epoch == state.promised_epoch)
        for name in cluster.names:
            if behind != name or self.missing[name]:
                self.stale_watch[name] = 0.0
            elif owner_primary and state.leader != name and self._talk(state.leader, WITNESS) and self._talk(state.leader, name):
                self.stale_watch[name] += self.sample_seconds   # kept (not reset) while the primary is away
        # A full disk is survived safely but is no reason to fail over: the primary keeps its
        # lease and refuses writes until space is freed. Liveness is not judged meanwhile.
        if cluster.writable() is not None or len(faults) > 1 or any(p.disk_full for p in cluster.processes.values()):
            self.stretch_since = None
            return
        candidate = self._candidate(behind)
        if candidate is None:
            self.stretch_since = None
            return
        if self.stretch_since is None:
            self.stretch_since = now
            return
        waited = now - self.stretch_since
        if waited > self.bound + self.sample_seconds:
            self.report("liveness", f"no writable primary for {waited:.2f} s (bound {self.bound:.2f} s = "
                        f"{LIVENESS_BOUND_TIMEOUTS:g} x failover_timeout + {LIVENESS_ALLOWANCE_SECONDS:g} s) "
                        f"with faults [{', '.join(faults) or 'none'}], "
                        f"while {candidate}")

    def _candidate(self, behind: str) -> str | None:
        cluster = self.cluster
        for name in cluster.names:
            process = cluster.processes[name]
            if not self._running(name) or process.disk_full or self.missing[name] or process.member is None:
                continue
            stale = self.stale_watch[name] >= self.failover_timeout
            if self._talk(name, WITNESS) and (behind != name or stale):
                return f"{name} holds every acknowledged write and can talk with the witness" + (
                    " (which records it behind long after it caught up)" if behind == name else "")
            other = next(n for n in cluster.names if n != name)
            peer = cluster.processes[other]
            if self._talk(name, other) and peer.member is not None and not peer.disk_full:
                if process.member._last_position() >= peer.member._last_position():
                    return f"{name} holds every acknowledged write and can talk with {other}, whose log is not longer"
        return None

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples}
