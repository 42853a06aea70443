"""What the divergence alarm's state hash costs (docs/replication.md, "Divergence alarm").

Run with `python -m bench.state_hash`. It drives a center of 20 queues and 500 agents with
about 300 callers kept waiting (the `bench.core` workload) and prints the size of the state,
the time `Center.state_hash()` takes in the process (what a node without a fork would pay in
its event loop), and what a node pays with the fork it uses (`acd.node.statehash`): the fork
call in the event loop, and the child's time to the digest. Medians of several runs; it
asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import bench.core as workload_module
from acd.node import statehash

QUEUES = 20
AGENTS = 500
WAITING = 300


def build(commands: int) -> workload_module.Workload:
    workload_module.TOPICS = tuple(f"topic{index:02d}" for index in range(QUEUES))
    workload_module.TOPIC_SHARE = tuple([1 / QUEUES] * QUEUES)
    workload = workload_module.Workload(AGENTS, 7, waiting_target=WAITING)
    workload.open(prefill=AGENTS + WAITING)
    workload.run(commands=commands)
    return workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=30_000, help="commands driven before measuring")
    parser.add_argument("--repeat", type=int, default=15)
    arguments = parser.parse_args()
    workload = build(arguments.commands)
    center = workload.center
    waiting = sum(center.waiting_count(queue) for queue in workload_module.TOPICS)
    print(f"state: {QUEUES} queues, {len(center.state.agents)} agents, {waiting} waiting, "
          f"{len(center.state.interactions)} interactions, {len(center.snapshot()) / 1e6:.1f} MB encoded")
    inline = []
    for _ in range(arguments.repeat):
        started = time.perf_counter()
        center.state_hash()
        inline.append(time.perf_counter() - started)
    forks, children = [], []
    for _ in range(arguments.repeat):
        started = time.perf_counter()
        child = statehash._fork_hasher(center)
        forked = time.perf_counter()
        digest = child.collect()
        forks.append(forked - started)
        children.append(time.perf_counter() - forked)
        assert digest == center.state_hash()
    print(f"state_hash in the process: median {statistics.median(inline) * 1e3:.1f} ms (min {min(inline) * 1e3:.1f})")
    print(f"forked: the fork {statistics.median(forks) * 1e3:.2f} ms in the event loop, "
          f"the child's digest after {statistics.median(children) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
