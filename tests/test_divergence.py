"""The divergence alarm on real processes: a witness and two nodes on loopback.

Primary and standby hash their state after every record whose LSN is a multiple of
`cluster.compare_state_every_records` and the primary compares (docs/replication.md,
"Divergence alarm"). The standby's state is made to differ on purpose with the test hook
`ACD_TEST_DIVERGE_AT_LSN` (acd.node.statehash): once, right after it applied the record at
that LSN, the standby adds an audit entry that is in no log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acd.tools.launcher import LocalCluster, prepare_config, wait_for
from replication.cli import cluster_status

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "busan-120.toml"
EVERY = 50          # compare_state_every_records in these tests
DIVERGE_AT = 60     # the standby's state changes after this LSN: the comparison at 100 differs


def start(tmp_path: Path) -> LocalCluster:
    config = prepare_config(SAMPLE, tmp_path, always_open=True, overrides={"cluster.compare_state_every_records": str(EVERY)})
    cluster = LocalCluster(config, tmp_path)
    cluster.start()
    return cluster


@pytest.fixture
def diverging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.setenv("ACD_TEST_DIVERGE_AT_LSN", str(DIVERGE_AT))
    cluster = start(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def healthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.delenv("ACD_TEST_DIVERGE_AT_LSN", raising=False)
    cluster = start(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def view(cluster: LocalCluster, name: str) -> dict:
    answer = cluster.view(name)
    assert answer is not None, f"{name} did not answer /v1/cluster"
    return answer


def write_until(cluster: LocalCluster, primary: str, lsn: int, prefix: str) -> None:
    """Arrivals and abandons (a record each) on the primary until its log reaches `lsn`."""
    api = cluster.api(primary)
    number = 0
    with httpx.Client(timeout=5) as client:
        while view(cluster, primary)["lsn"] < lsn:
            call_id = f"{prefix}-{number}"
            number += 1
            response = client.post(f"{api}/v1/calls", json={"id": call_id, "queue": "transport", "caller": "01012345678"})
            assert response.status_code == 201, response.text
            assert client.post(f"{api}/v1/calls/{call_id}/abandon", json={}).status_code == 200


def metric(cluster: LocalCluster, name: str, metric_name: str) -> float:
    text = httpx.get(cluster.api(name) + "/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(metric_name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{metric_name} not in {name}'s /metrics"
    return float(match[1])


def digest(cluster: LocalCluster, name: str) -> tuple[int, str]:
    body = httpx.get(cluster.api(name) + "/v1/admin/state", timeout=5).json()
    return body["lsn"], body["state_hash"]


def log_of(cluster: LocalCluster, name: str) -> str:
    return (cluster.logs / f"{name}.log").read_text()


def raise_alarm(cluster: LocalCluster) -> tuple[str, str, int]:
    """Write past the divergence and the next comparison; wait until the standby is recorded
    behind and rebuilt (the alarm then holds until the next comparison: no more writes)."""
    primary = cluster.wait_primary()
    standby = cluster.standby_of(primary)
    compared_at = (DIVERGE_AT // EVERY + 1) * EVERY
    write_until(cluster, primary, compared_at + 5, "diverge")
    wait_for(lambda: view(cluster, primary)["standby_diverged_at_lsn"] == compared_at, 20, interval=0.1,
             what="the primary to find the standby's state different")
    wait_for(lambda: "diverged standby rebuilt from the snapshot" in log_of(cluster, primary), 20, interval=0.1,
             what="the standby to be rebuilt from the primary's snapshot")
    return primary, standby, compared_at


def test_a_diverged_standby_raises_the_alarm_is_rebuilt_and_the_alarm_clears_once_it_agrees(diverging: LocalCluster) -> None:
    cluster = diverging
    primary, standby, compared_at = raise_alarm(cluster)
    assert f"TEST HOOK: state perturbed after lsn={DIVERGE_AT}" in log_of(cluster, standby)

    # The error names the LSN, both nodes and both hashes, and they differ.
    line = next(line for line in log_of(cluster, primary).splitlines() if "STATE DIVERGED" in line)
    assert "level=error" in line and f"lsn={compared_at}" in line and f"primary={primary}" in line and f"standby={standby}" in line
    hashes = re.findall(r"hash=([0-9a-f]{64})", line)
    assert len(hashes) == 2 and hashes[0] != hashes[1], line

    # Counted, shown, and the standby recorded behind at the witness (not electable).
    assert metric(cluster, primary, "acd_replication_divergence_total") == 1
    assert metric(cluster, primary, "acd_standby_diverged") == 1
    shown = view(cluster, primary)
    assert shown["standby_diverged_at_lsn"] == compared_at and shown["standby_behind"] is True
    assert shown["state_divergences"] == 1
    assert f"witness recorded standby={standby} behind" in log_of(cluster, "witness")
    status = cluster_status(cluster.settings)
    assert status["health"] == "degraded"
    assert any(f"differs from the primary's at LSN {compared_at}" in reason for reason in status["reasons"]), status["reasons"]
    assert "installed snapshot" in log_of(cluster, standby)

    # More writes: the next comparison, of a state the rebuilt standby reached by applying
    # records itself, agrees; the alarm clears and so does the behind record.
    before = view(cluster, primary)["state_comparisons"]
    write_until(cluster, primary, compared_at + 2 * EVERY + 5, "after")
    wait_for(lambda: view(cluster, primary)["standby_diverged_at_lsn"] is None, 20, interval=0.1, what="the alarm to clear")
    wait_for(lambda: view(cluster, primary)["standby_behind"] is False, 20, interval=0.1, what="the behind record to be cleared")
    assert "divergence alarm cleared: state hashes agree again" in log_of(cluster, primary)
    assert view(cluster, primary)["state_comparisons"] > before
    assert metric(cluster, primary, "acd_standby_diverged") == 0
    assert metric(cluster, primary, "acd_replication_divergence_total") == 1
    wait_for(lambda: digest(cluster, primary) == digest(cluster, standby), 20, interval=0.1, what="equal states")
    assert cluster_status(cluster.settings)["health"] == "healthy"


def test_a_diverged_standby_is_not_elected_when_the_primary_dies(diverging: LocalCluster) -> None:
    cluster = diverging
    primary, standby, _compared_at = raise_alarm(cluster)
    assert view(cluster, primary)["standby_behind"] is True
    cluster.kill(primary)
    timeout = cluster.settings.cluster.failover_timeout
    # Several failover timeouts: an electable standby would be primary within about one.
    wait_for(lambda: "'witness': 'behind'" in log_of(cluster, standby), 10 * timeout + 5, interval=0.1,
             what="the standby's election to be refused as behind")
    assert cluster.primary() is None
    assert view(cluster, standby)["role"] == "standby"
    # The old primary comes back and is elected; the standby, rebuilt, agrees from then on.
    cluster.restart(primary)
    assert cluster.wait_primary(30) == primary
    write_until(cluster, primary, view(cluster, primary)["lsn"] + 2 * EVERY, "back")
    wait_for(lambda: view(cluster, primary)["standby_behind"] is False, 20, interval=0.1, what="the standby to be cleared")
    wait_for(lambda: digest(cluster, primary) == digest(cluster, standby), 20, interval=0.1, what="equal states")
    # The alarm outlived the primary's restart (kept in its store): it refused the standby its
    # vote, and rebuilt it again once primary.
    assert "'peer': 'diverged'" in log_of(cluster, standby)
    assert log_of(cluster, primary).count("diverged standby recorded behind") >= 2
    assert view(cluster, primary)["state_divergences"] == 0
    assert view(cluster, primary)["state_comparisons"] >= 1


def test_without_divergence_the_states_are_compared_and_no_alarm_is_raised(healthy: LocalCluster) -> None:
    cluster = healthy
    primary = cluster.wait_primary()
    standby = cluster.standby_of(primary)
    write_until(cluster, primary, 320, "calm")
    wait_for(lambda: view(cluster, primary)["state_comparisons"] >= 5, 20, interval=0.1, what="five comparisons")
    shown = view(cluster, primary)
    assert shown["state_divergences"] == 0 and shown["standby_diverged_at_lsn"] is None
    assert metric(cluster, primary, "acd_replication_state_compared_total") >= 5
    assert metric(cluster, primary, "acd_replication_divergence_total") == 0
    assert metric(cluster, primary, "acd_standby_diverged") == 0
    assert "STATE DIVERGED" not in log_of(cluster, primary)
    wait_for(lambda: digest(cluster, primary) == digest(cluster, standby), 20, interval=0.1, what="equal states")
