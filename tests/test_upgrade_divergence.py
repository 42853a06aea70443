"""The rolling upgrade with the version gate removed makes the divergence alarm fire.

A real pair (a witness and two `acd serve` processes on loopback) compares state hashes every
20 records; before the upgrade the states are compared without a mismatch. Then the standby is upgraded, as
docs/operations.md tells, to a binary with the next core version, but one with the planted bug
`ACD_TEST_NO_CORE_GATE=1` (acd/core/versions.py): it applies version 2's rule although the
active version is still 1. The probe now offers the call to kim on the primary and to lee
on the standby: the states drift apart, and the alarm says so at the next comparison (an error
line with the LSN and both hashes, the counter, the standby recorded behind and rebuilt). The
same upgrade without the planted bug raises no alarm (tests/test_upgrade_cluster.py and the
load test's `--upgrade-at` check both nodes' hashes and the alarm's counters).

Before the upgrade only calls that no agent is offered are written: a standby restarted with the
bug replays its own log first, and a record whose outcome depends on the changed rule would make
that replay refuse to start the node (a refusal, not the alarm this test is about).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from acd.core import versions
from acd.tools.launcher import LocalCluster, prepare_config, wait_for
from tests.test_upgrade_cluster import SAMPLE, Desk

EVERY = 20  # cluster.compare_state_every_records in this test


def view(cluster: LocalCluster, name: str) -> dict[str, Any]:
    answer = cluster.view(name)
    assert answer is not None, f"node {name} did not answer /v1/cluster"
    return answer


def metric(cluster: LocalCluster, name: str, metric_name: str) -> float:
    text = httpx.get(cluster.api(name) + "/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(metric_name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{metric_name} not in node {name}'s /metrics"
    return float(match[1])


def log_of(cluster: LocalCluster, name: str) -> str:
    return (cluster.logs / f"{name}.log").read_text(errors="replace")


def write_past_a_comparison(cluster: LocalCluster, desk: Desk, primary: str, prefix: str) -> None:
    """Calls to the drill queue (no agent has its skill), each abandoned at once, until the
    primary's log is past the next multiple of EVERY and the standby has it."""
    target = (view(cluster, primary)["lsn"] // EVERY + 2) * EVERY
    number = 0
    while view(cluster, primary)["lsn"] < target:
        number += 1
        call = f"{prefix}-{number}"
        desk.post(primary, "/v1/calls", {"id": call, "queue": "drill", "caller": "01012345678"})
        desk.post(primary, f"/v1/calls/{call}/abandon")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    config = prepare_config(SAMPLE, tmp_path, always_open=True, overrides={"cluster.compare_state_every_records": str(EVERY)})
    cluster = LocalCluster(config, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def test_an_upgraded_standby_without_the_version_gate_raises_the_divergence_alarm(cluster: LocalCluster) -> None:
    primary = cluster.start()
    standby = cluster.standby_of(primary)
    desk = Desk(cluster)
    for agent in ("kim", "lee"):
        desk.post(primary, f"/v1/agents/{agent}/login")
        desk.post(primary, f"/v1/agents/{agent}/ready")

    # Before the upgrade: the same binary on both nodes, compared without a mismatch.
    write_past_a_comparison(cluster, desk, primary, "calm")
    wait_for(lambda: view(cluster, primary)["state_comparisons"] >= 1, 30, interval=0.1, what="a comparison before the upgrade")
    assert view(cluster, primary)["state_divergences"] == 0
    assert "STATE DIVERGED" not in log_of(cluster, primary)

    # Step 1 of the rolling upgrade, with the planted bug in the standby's new binary.
    cluster.signal(standby, signal.SIGTERM)
    cluster.processes[standby].wait(timeout=30)
    cluster.start_node(standby, env={versions.NEXT_CORE_ENV: "1", versions.NO_GATE_ENV: "1"})
    wait_for(lambda: cluster.healthy(cluster.settings.node(standby).api), 30, what=f"node {standby} to answer /healthz")
    wait_for(lambda: view(cluster, primary)["peer_connected"] and not view(cluster, primary)["standby_behind"], 60, interval=0.1,
             what="the upgraded standby to be in sync")
    assert "TEST HOOK: ACD_TEST_NO_CORE_GATE=1" in log_of(cluster, standby)
    assert view(cluster, standby)["core_versions"] == [1, 2] and view(cluster, standby)["active_core_version"] == 1
    compared = view(cluster, primary)["state_comparisons"]

    # The primary, at core version 1, offers the probe to kim; the standby applies the same
    # record with version 2's rule (lee handled fewer) and holds another state.
    # The probe call is abandoned, not answered: an answer by kim would be refused on the
    # standby (it offered the call to lee), which stops it before any comparison.
    desk.post(primary, "/v1/agents/lee/not-ready", {"reason": "break"})
    warm = desk.arrive(primary, "warm")
    desk.serve(primary, warm, desk.offered_to(primary, warm))
    desk.post(primary, "/v1/agents/lee/ready")
    probe = desk.arrive(primary, "probe")
    assert desk.offered_to(primary, probe) == "kim"
    desk.post(primary, f"/v1/calls/{probe}/abandon")
    write_past_a_comparison(cluster, desk, primary, "after")
    wait_for(lambda: view(cluster, primary)["state_divergences"] >= 1, 30, interval=0.1, what="the divergence alarm")

    line = next(line for line in log_of(cluster, primary).splitlines() if "STATE DIVERGED" in line)
    diverged_at = int(re.findall(r"lsn=(\d+)", line)[0])
    assert "level=error" in line and f"primary={primary}" in line and f"standby={standby}" in line, line
    hashes = re.findall(r"hash=([0-9a-f]{64})", line)
    assert len(hashes) == 2 and hashes[0] != hashes[1], line
    assert diverged_at % EVERY == 0
    assert metric(cluster, primary, "acd_replication_divergence_total") >= 1
    assert metric(cluster, primary, "acd_replication_state_compared_total") > compared
    shown = view(cluster, primary)
    assert shown["standby_diverged_at_lsn"] is not None or "divergence alarm cleared" in log_of(cluster, primary)
    # The primary rebuilds the diverged standby from its snapshot; it was recorded behind.
    wait_for(lambda: "diverged standby rebuilt from the snapshot" in log_of(cluster, primary), 30, interval=0.1,
             what="the standby to be rebuilt from the primary's snapshot")
    assert "diverged standby recorded behind" in log_of(cluster, primary)
    assert view(cluster, primary)["active_core_version"] == 1

