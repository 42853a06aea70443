"""`make bench-failover`: the failover time distribution over 20 SIGKILLs of the primary.

Starts a two-node cluster with a witness (the sample config, failover_timeout = 1.5 s), keeps
writing to it, and kills whichever node is primary 20 times, restarting it each time. For
each kill it records the time from the kill to the first /readyz 200 on the other node, and
the outage a writing client saw (last acknowledged write before the kill to the first after).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import trio

from acd.drill import Drill
from acd.launcher import LocalCluster, prepare_config

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "busan-120.toml"


def main(kills: int = 20) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="acd-bench-failover-"))
    cluster = LocalCluster(prepare_config(SAMPLE, workdir, always_open=True), workdir)
    ready, outage, lost = [], [], 0
    try:
        cluster.start()
        for number in range(1, kills + 1):
            report = trio.run(lambda: Drill(cluster.settings, cluster, load_rate=40).run("kill-primary", hold_seconds=0.3))
            ready.append(report.time_without_primary_seconds)
            outage.append(report.outage_seconds)
            lost += sum(report.writes_missing.values())
            print(f"kill {number:2d}: {report.primary_before} -> {report.primary_after}  "
                  f"new primary ready after {report.time_without_primary_seconds:.3f} s, "
                  f"client outage {report.outage_seconds:.3f} s, {report.writes_acknowledged} writes, "
                  f"converged {report.converged}", flush=True)
    finally:
        cluster.close()

    def line(name: str, values: list[float]) -> str:
        ordered = sorted(values)
        p90 = ordered[max(0, int(round(0.9 * len(ordered))) - 1)]
        return f"{name:<34} median {statistics.median(values):.3f} s   p90 {p90:.3f} s   max {max(values):.3f} s"

    print()
    print(f"failover over {kills} kills (failover_timeout = {cluster.settings.cluster.failover_timeout} s)")
    print(line("kill -> new primary ready", ready))
    print(line("client outage (last ack -> next)", outage))
    print(f"acknowledged writes lost: {lost}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
