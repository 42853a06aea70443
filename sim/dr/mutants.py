"""The mutation catalogue: planted replication bugs the simulator must catch, one at a time.

    python -m sim.dr.mutants                     # every mutant; a table at the end (make mutants)
    python -m sim.dr.mutants --only hole-1-clear-reply-lost --only no-pre-vote
    python -m sim.dr.mutants --list              # names, what each breaks, where it is hunted

A sweep that finds nothing is weak evidence unless planted bugs do not survive it. Each
mutant is a small text edit of the real source (`acd/`, `replication/`), applied to a scratch
copy of the source tree, never to the working tree. The simulator of that copy then runs the
mutant's hunts in order (a named scenario for up to 200 seeds, `swarm` for up to 1,000, or a test
of `make test` for a bug the simulator cannot see any more),
seeds in increasing order, until one run breaks an invariant: the mutant is *caught*, and the
first failing scenario and seed are printed (`python -m sim dr --scenario S --seed N` in the
mutated copy reproduces it). A mutant whose text no longer occurs in the source is reported
as *stale* and fails the catalogue, so the catalogue cannot silently rot when the code moves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("acd", "replication", "sim", "examples")   # examples: the sample center the simulator runs
NAMED_SEEDS_MAX = 200
SWARM_SEEDS_MAX = 1000
# A hunt named "test:<pytest node id>" runs that test of `make test` against the mutated copy
# instead of the simulator: for a bug the simulator no longer sees (its harm was taken away by
# another defence) but whose rule a test still states.
TEST_HUNT = "test:"


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str                                  # what the planted bug does
    edits: tuple[tuple[str, str, str], ...]      # (path, text, replacement): each text occurs exactly once
    hunts: tuple[tuple[str, int], ...]           # (scenario, seeds) tried in order


def _one(path: str, old: str, new: str) -> tuple[tuple[str, str, str], ...]:
    return ((path, old, new),)


CLUSTER = "replication/cluster.py"   # the Trio driver
CORE = "replication/core.py"         # the pure decisions
WITNESS = "replication/witness.py"
NODE = "acd/node/node.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "witness-ignores-behind-sequence",
        "the witness applies a RecordBehind or ClearBehind however old its sequence number (a clear the primary "
        "gave up on, read late, undoes a later confirmed record)",
        _one(WITNESS, "            if order < (state.behind_request_epoch, state.behind_request_sequence):\n",
             "            if False:\n"),
        (("witness-late-request", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "ack-before-standby-durable",
        "sync mode acknowledges a batch without waiting for the standby's durable copy",
        _one(CLUSTER, 'if self.mode == "async" or not records:\n            return\n',
             'if True:\n            return\n'),
        (("primary-crash", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "skip-lease-check",
        "the primary role alone counts as a valid lease (a zombie keeps acknowledging)",
        _one(CORE, "    return primary and (forced or now < until)\n", "    return primary\n"),
        (("lease-edge", NAMED_SEEDS_MAX), ("zombie-primary", NAMED_SEEDS_MAX)),
    ),
    Mutant(
        "no-lease-recheck-after-replication",
        "the pipeline replies without checking the lease again after its commit and replication",
        _one(NODE, "        if not self.replicator.lease_valid():\n            # Fencing: the lease may have expired while we committed",
             "        if False:\n            # Fencing: the lease may have expired while we committed"),
        (("lease-edge", NAMED_SEEDS_MAX), ("zombie-primary", NAMED_SEEDS_MAX)),
    ),
    Mutant(
        "lease-from-reply-without-margin",
        "the primary counts its lease from the reply's receipt, without the drift bound and margin",
        _one(CLUSTER, "until = core.lease_end(sent_at, self.lease_seconds)",
             "until = self.clock() + self.lease_seconds"),
        (("lease-edge", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "snapshot-without-epoch-history",
        "a standby that installs the primary's snapshot keeps its own epoch history, which gives the LSNs the "
        "snapshot covers to its old epoch",
        _one(CLUSTER, "store.install_snapshot(message.snapshot, secrets=message.secrets, epoch_history=message.epoch_history)",
             "store.install_snapshot(message.snapshot, secrets=message.secrets)"),
        (("swarm", SWARM_SEEDS_MAX),),
    ),
    Mutant(
        "snapshot-older-than-standby",
        "the primary replaces a standby's state with its stored snapshot even when that is older than the "
        "acknowledged records the standby holds (they are gone from it until it catches up)",
        _one(CLUSTER, "snapshot.lsn < max(store.first_lsn() - 1, plan.floor)", "snapshot.lsn < store.first_lsn() - 1"),
        (("swarm", SWARM_SEEDS_MAX),),
    ),
    Mutant(
        "no-pre-vote",
        "a node that cannot win still raises its epoch and deposes a healthy primary",
        _one(CLUSTER, "        if pre_vote and not force:\n", "        if False:\n"),
        (("swarm", SWARM_SEEDS_MAX),),
    ),
    Mutant(
        "witness-forgets-promises-on-restart",
        "the witness's state (epoch, leader, behind) does not survive its restart",
        _one(WITNESS, "        return msgspec.structs.replace(self.state)\n",
             "        return WitnessState(cluster=self.state.cluster)\n"),
        (("witness-crash", NAMED_SEEDS_MAX), ("swarm", SWARM_SEEDS_MAX)),
    ),
    Mutant(
        "witness-forgets-lease-on-restart",
        "a restarted witness votes at once, although a lease it granted before may still run",
        _one(WITNESS, "self.lease_until = now + lease_seconds if state.leader else 0.0",
             "self.lease_until = 0.0"),
        (("witness-crash", NAMED_SEEDS_MAX), ("swarm", SWARM_SEEDS_MAX)),
    ),
    Mutant(
        "witness-ignores-behind",
        "the witness votes for a node it recorded behind",
        _one(WITNESS, '            if state.behind == message.candidate and not message.force:\n                return self._refuse(message, "behind"), False',
             '            if False:\n                return self._refuse(message, "behind"), False'),
        (("double-fault", NAMED_SEEDS_MAX), ("swarm", SWARM_SEEDS_MAX)),
    ),
    Mutant(
        "new-primary-skips-peer-behind",
        "a primary elected with the witness's vote does not have its peer recorded behind",
        _one(CORE, 'peer_behind=peer if sync else "",', 'peer_behind="",'),
        (("primary-crash", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "record-behind-without-witness",
        "the primary goes on alone without the witness having recorded the standby behind",
        _one(CLUSTER, "            reply = await self.witness.request(\n                RecordBehind(",
             "            reply = Ack(ok=True, epoch=self.promised_epoch) or await self.witness.request(\n                RecordBehind("),
        (("standby-crash", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "peer-vote-without-log-check",
        "a node votes for a peer whose log is behind its own",
        _one(CORE, '        if (request.last_epoch, request.last_lsn) < last:\n            return self.refuse(request, "log_behind"), False',
             '        if False:\n            return self.refuse(request, "log_behind"), False'),
        (("double-fault", NAMED_SEEDS_MAX), ("swarm", SWARM_SEEDS_MAX)),
    ),
    Mutant(
        "clear-behind-before-catch-up",
        "the witness's behind record is cleared as soon as the standby answers, before it caught up",
        (
            (CORE, "        return self.pending and caught_up\n", "        return self.pending\n"),
            (CLUSTER, "            target = self.node.store.last_lsn()\n            with trio.move_on_after(self.standby_timeout):",
             "            target = 0\n            with trio.move_on_after(self.standby_timeout):"),
        ),
        (("standby-crash", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "standby-acks-before-fsync",
        "the standby acknowledges an append before the records are durable on its disk",
        _one(CLUSTER, "            reply = await self._append(message)\n        await channel.send(reply)",
             "            if message.records:\n"
             "                await channel.send(AppendReply(epoch=self.promised_epoch, ok=True, last_lsn=message.records[-1].lsn))\n"
             "            reply = await self._append(message)\n        await channel.send(reply)"),
        (("primary-crash", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "election-without-batch-lock",
        "a standby becomes primary while the old primary's shipped batch is still being committed",
        _one(CLUSTER, "            async with self.node.batch_lock:\n                if self.promised_epoch == epoch and not self.primary:",
             "            if True:\n                if self.promised_epoch == epoch and not self.primary:"),
        (("zombie-primary", NAMED_SEEDS_MAX), ("swarm", SWARM_SEEDS_MAX)),
    ),
    Mutant(
        "hole-1-clear-reply-lost",
        "issue 19, hole 1: without an answer to ClearBehind the primary goes back to acknowledging alone",
        _one(CORE, "        # Not confirmed: stay synchronous; only a fresh confirmed RecordBehind goes alone again.\n",
             "        self.require_standby = False\n        self.recorded = True\n        self.maybe = False\n"),
        (("witness-reply-loss", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "hole-2-record-reply-lost",
        "issue 19, hole 2: an unanswered RecordBehind (or vote with peer_behind) is forgotten, never cleared",
        (
            (CORE, "        was_maybe = self.maybe\n        self.maybe = True\n", "        was_maybe = self.maybe\n"),
            (CORE, "self.maybe = witness_unanswered and not witness_granted and", "self.maybe = False and"),
        ),
        (("witness-reply-loss", NAMED_SEEDS_MAX),),
    ),
    Mutant(
        "rejoin-without-truncate",
        "a rejoining node's log is taken as it is, its divergent (never acknowledged) tail included",
        _one(CORE, "    if start and not (start <= mine and epoch_at(start) == sync.last_epoch):", "    if False:"),
        (("primary-crash", NAMED_SEEDS_MAX), ("swarm", SWARM_SEEDS_MAX)),
    ),
    Mutant(
        "reconcile-ignores-batch-in-flight",
        "a standby that already holds the batch the primary is still committing is taken as divergent and truncated",
        _one(CORE, "    mine = queue.top(log)\n    start = floor = sync.last_lsn", "    mine = log.last_lsn()\n    start = floor = sync.last_lsn"),
        # The simulator no longer sees it (3,000 swarm seeds): acknowledgements restart at the
        # reconcile point, and the snapshot sent is never older than the standby's shared
        # records, so only a crash between the Truncate and the Append that follows it, which
        # arrive together, would lose a write. The reconcile's rule is still a test.
        (("test:tests/test_replication_core.py::test_reconcile_keeps_a_standby_that_holds_the_batch_still_in_flight", 1),),
    ),
    Mutant(
        "switchover-releases-before-stepping-down",
        "a switchover releases the witness's lease and only then steps down (a lost answer leaves it primary)",
        _one(CLUSTER, '                self.step_down("switchover")\n                self.granted_until = 0.0\n'
                      '                if self.witness is not None:\n'
                      '                    await self.witness.request(Release(epoch=epoch, node=self.name), self.standby_timeout)',
             '                if self.witness is not None:\n'
             '                    await self.witness.request(Release(epoch=epoch, node=self.name), self.standby_timeout)\n'
             '                self.step_down("switchover")\n                self.granted_until = 0.0'),
        (("swarm", SWARM_SEEDS_MAX),),
    ),
    Mutant(
        "stand-after-voting-for-peer",
        "a node whose pre-vote passed stands for election although it voted for the peer meanwhile",
        _one(CORE, '    return now < granted_until and leader not in (None, "", me)', '    return False'),
        (("swarm", SWARM_SEEDS_MAX),),
    ),
    Mutant(
        "stale-vote-reply-counts",
        "a reply left on a kept connection counts as a vote, for any epoch",
        (
            (CLUSTER, "            finally:\n                if not answered:\n                    await self.reset()",
             "            finally:\n                if False:\n                    await self.reset()"),
            (CORE, "return isinstance(reply, VoteReply) and reply.granted and reply.epoch == self.request.epoch",
             "return isinstance(reply, VoteReply) and reply.granted"),
        ),
        (("swarm", SWARM_SEEDS_MAX),),
    ),
)


def by_name(name: str) -> Mutant:
    for mutant in MUTANTS:
        if mutant.name == name:
            return mutant
    raise KeyError(f"unknown mutant {name!r}; known: {', '.join(m.name for m in MUTANTS)}")


# ---------------------------------------------------------------------- applying


def apply(mutant: Mutant, source: Path, target: Path) -> list[str]:
    """Copy the packages of `source` to `target` and plant the mutant there; the problems (stale edits)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(source / package, target / package, ignore=ignore)
    problems = []
    for path, old, new in mutant.edits:
        file = target / path
        text = file.read_text(encoding="utf-8")
        count = text.count(old)
        if count != 1:
            problems.append(f"{path}: the text to mutate occurs {count} times (expected once): {old.strip()[:80]!r}")
            continue
        file.write_text(text.replace(old, new), encoding="utf-8")
    return problems


# ---------------------------------------------------------------------- hunting (inside the mutated copy)


def _hunt_one(item: tuple[str, int, float | None]) -> tuple[int, str]:
    from . import runner

    scenario, seed, minutes = item
    result = runner.run(scenario, seed, minutes=minutes)
    return seed, "" if result.ok else result.violations[0]


def hunt(scenario: str, seeds: int, *, jobs: int = 1, minutes: float | None = None) -> dict[str, Any]:
    """Run seeds 1..`seeds` in order until one breaks an invariant; the first such seed."""
    from . import runner

    scratch = Path(tempfile.mkdtemp(prefix="acd-mutant-hunt-"))
    items = [(scenario, seed, minutes) for seed in range(1, seeds + 1)]
    tried = 0
    try:
        if jobs <= 1:
            runner.use_scratch(scratch / "0")
            for item in items:
                tried += 1
                seed, violation = _hunt_one(item)
                if violation:
                    return {"scenario": scenario, "seed": seed, "violation": violation, "tried": tried}
            return {"scenario": scenario, "seed": 0, "violation": "", "tried": tried}
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with context.Pool(jobs, initializer=_worker_scratch, initargs=(str(scratch),)) as pool:
            for seed, violation in pool.imap(_hunt_one, items, chunksize=1):
                tried += 1
                if violation:
                    pool.terminate()
                    return {"scenario": scenario, "seed": seed, "violation": violation, "tried": tried}
        return {"scenario": scenario, "seed": 0, "violation": "", "tried": tried}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _worker_scratch(scratch: str) -> None:
    from . import runner

    runner.use_scratch(Path(scratch) / str(os.getpid()))


# ---------------------------------------------------------------------- the catalogue


def run_mutant(mutant: Mutant, *, jobs: int = 2, hunts: Sequence[tuple[str, int]] | None = None,
               minutes: float | None = None, timeout: float = 3600.0) -> dict[str, Any]:
    """Plant `mutant` in a scratch copy and hunt it; the outcome as a record."""
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f"acd-mutant-{mutant.name}-"))
    record: dict[str, Any] = {"mutant": mutant.name, "breaks": mutant.breaks, "caught": False, "stale": False,
                              "scenario": "", "seed": 0, "violation": "", "seeds_run": 0}
    try:
        problems = apply(mutant, ROOT, scratch)
        if problems:
            record.update(stale=True, violation="; ".join(problems))
            return record
        environment = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONHASHSEED": "0"}
        for scenario, seeds in hunts or mutant.hunts:
            if scenario.startswith(TEST_HUNT):
                found = _hunt_test(scenario.removeprefix(TEST_HUNT), scratch, environment, timeout)
                record["seeds_run"] += found["tried"]
                if found["seed"]:
                    record.update(caught=True, scenario=scenario, seed=0, violation=found["violation"])
                    return record
                continue
            command = [sys.executable, "-m", "sim.dr.mutants", "--hunt", scenario, "--seeds", str(seeds), "--jobs", str(jobs)]
            if minutes is not None:
                command += ["--minutes", str(minutes)]
            completed = subprocess.run(command, cwd=scratch, env=environment, capture_output=True, text=True, timeout=timeout)
            if completed.returncode != 0:
                record["violation"] = f"hunt failed: {completed.stderr.strip().splitlines()[-1:] or completed.returncode}"
                return record
            found = json.loads(completed.stdout.strip().splitlines()[-1])
            record["seeds_run"] += found["tried"]
            if found["seed"]:
                record.update(caught=True, scenario=scenario, seed=found["seed"], violation=found["violation"])
                return record
        return record
    finally:
        record["wall_seconds"] = round(time.perf_counter() - started, 1)
        shutil.rmtree(scratch, ignore_errors=True)


def _hunt_test(test: str, scratch: Path, environment: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run one test of the suite against the mutated copy (its tests copied beside it)."""
    if not (scratch / "tests").exists():
        shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", test]
    completed = subprocess.run(command, cwd=scratch, env=environment, capture_output=True, text=True, timeout=timeout)
    if completed.returncode not in (0, 1):   # 1: a test failed; anything else: it did not run
        raise RuntimeError(f"{test} did not run (pytest exit {completed.returncode}): {completed.stdout.strip()[-300:]}")
    failed = [line for line in completed.stdout.splitlines() if line.startswith(("E ", "FAILED"))]
    return {"seed": 1 if completed.returncode == 1 else 0, "tried": 1,
            "violation": "test failed: " + (failed[0][2:].strip() if failed else test)}


def _where(record: dict[str, Any]) -> str:
    if record["scenario"].startswith(TEST_HUNT):
        return f"`{record['scenario'].removeprefix(TEST_HUNT).split('::')[-1]}`"
    return f"`{record['scenario']}` seed {record['seed']}"


def table(records: list[dict[str, Any]]) -> str:
    caught = sum(1 for record in records if record["caught"])
    lines = [f"mutation score: {caught} caught / {len(records)} planted", "",
             "| mutant | caught by | seeds run | first violation |", "|---|---|---|---|"]
    for record in records:
        if record["caught"]:
            where = _where(record)
        else:
            where = "STALE" if record["stale"] else "NOT CAUGHT"
        violation = record["violation"].split(":")[0].split(" at ")[0] if record["caught"] else record["violation"][:60]
        lines.append(f"| {record['mutant']} | {where} | {record['seeds_run']} | {violation} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.dr.mutants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this mutant (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes per hunt (default 2)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    parser.add_argument("--minutes", type=float, help="simulated minutes of faults per run (default 1)")
    parser.add_argument("--hunt", metavar="SCENARIO", help=argparse.SUPPRESS)   # inside a mutated copy
    parser.add_argument("--seeds", type=int, default=NAMED_SEEDS_MAX, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hunt:
        print(json.dumps(hunt(args.hunt, args.seeds, jobs=args.jobs, minutes=args.minutes)))
        return 0
    if args.list:
        for mutant in MUTANTS:
            hunts = ", then ".join(f"{scenario} x{seeds}" for scenario, seeds in mutant.hunts)
            print(f"{mutant.name:38} {mutant.breaks}\n{'':38} hunted by: {hunts}")
        return 0
    chosen = [by_name(name) for name in args.only] if args.only else list(MUTANTS)
    records = []
    for mutant in chosen:
        record = run_mutant(mutant, jobs=args.jobs, minutes=args.minutes)
        records.append(record)
        if not args.json:
            verdict = (f"caught by {_where(record)} after {record['seeds_run']} runs"
                       if record["caught"] else ("STALE" if record["stale"] else "NOT CAUGHT") + f" after {record['seeds_run']} seeds")
            print(f"{mutant.name:38} {verdict} ({record['wall_seconds']} s)\n{'':38} {record['violation'][:200]}", flush=True)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print()
        print(table(records))
    return 0 if all(record["caught"] for record in records) else 1


if __name__ == "__main__":
    sys.exit(main())
