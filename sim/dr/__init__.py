"""The disaster-recovery simulator: the real cluster under seeded faults on virtual time.

FoundationDB's simulator and TigerBeetle's VOPR, in Python. One process runs the real node
pipeline (`acd.node`), replication members and witness (`replication`) on a virtual clock
(`clock`, MockClock's autojump with cheaper timers), over an in-memory network that drops, delays, corrupts and
partitions (`network`), with crashable LMDB storage (`storage`), clocks that drift within
the lease bound and pause like a stopped process (`cluster`), and a workload of calls and
agents that records every acknowledged write (`workload`). One integer seed draws the fault
rates and the fault script (`scenarios`); after the safety phase the cluster is healed and
must converge, and the checkers (`checks`) judge invariants 1, 2, 7 and 8 of docs/design.md.

    from sim.dr import run
    result = run("primary-crash", 7)      # result.ok, result.violations, result.trace_hash

Command line: `python -m sim dr --help` (`sim.dr.cli`).
"""

from .runner import RunResult, run
from .scenarios import SCENARIOS

__all__ = ["SCENARIOS", "RunResult", "run"]
