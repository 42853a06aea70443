"""Failover time on real processes, per kind of primary loss, and no false failover under stress.

Short versions of `make bench-failover` and `make bench-false-failovers` (bench/). The bounds are
looser than the targets (docs/replication.md, Timing budget) because the suite may share the
machine with other work; they still fail for a candidate that waits on a silent voter (a
paused or cut-off primary then costs twice the timeout).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from acd.tools.launcher import prepare_config, wait_for
from bench import false_failovers
from bench.failover import SAMPLE, Bench, BenchCluster

pytestmark = pytest.mark.slow


def test_a_paused_or_isolated_primary_is_replaced_within_the_budget_and_rejoins(tmp_path: Path) -> None:
    cluster = BenchCluster(prepare_config(SAMPLE, tmp_path, always_open=True, proxied=True), tmp_path)
    timeout = cluster.settings.cluster.failover_timeout
    try:
        cluster.start()
        wait_for(lambda: cluster.primary() is not None, 20.0, what="a writable primary")
        results = trio.run(Bench(cluster).run, ["stop", "isolate", "kill"], 1)
    finally:
        cluster.close()
    for result in results:
        assert result["zombie_acks"] == 0, result
        assert result["failover"] < timeout + 0.7, result   # detection + one ballot, never two timeouts
        assert result["rejoin"] < 5.0, result


def test_a_healthy_cluster_under_stress_does_not_fail_over() -> None:
    result = false_failovers.soak(20.0, None, 4)
    assert result["writes_acknowledged"] > 0
    assert result["epoch_changes"] == 0, result

