"""The load tests cannot rot: a short headless Locust run against a real cluster, with a failover.

Locust runs in subprocesses only (`python -m loadtest run` starts it): gevent patches the
standard library when Locust starts, which must never happen inside pytest. The run is short
(300 calls of the day profile in 30 seconds, the primary killed 12 seconds in), so the limits
on latency and outage are loose here: this test checks that the users, the runner and the
checks work end to end and that no interaction is lost or stranded; `make loadtest-failover`
and `make loadtest-stress` judge speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_short_day_with_a_killed_primary_loses_and_strands_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable, "-m", "loadtest", "run", "day", "--minutes", "0.5", "--calls", "300",
            "--failover-at", "12", "--out", str(out), "--p99-ms", "5000", "--max-outage", "10",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    for name in ("summary.md", "summary.json", "chart.png", "report.html", "locust_stats.csv", "plan.json"):
        assert (out / name).is_file(), f"{name} missing from {out}"
    assert list(out.glob("journal-*.jsonl")), "Locust wrote no journal"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    figures = summary["figures"]
    assert summary["failover"]["killed"] is not None
    assert figures["created"] == 300
    assert figures["lost"] == 0
    assert figures["stranded"] == 0
    assert figures["counts"]["acd"] == figures["counts"]["locust"]
    assert "PASS" in (out / "summary.md").read_text(encoding="utf-8").splitlines()[0]
