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
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_refused_before_start

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


@pytest.mark.slow
def test_short_day_with_a_rolling_upgrade_loses_nothing_and_changes_the_rule_only_after_finalize(tmp_path: Path) -> None:
    # The rolling upgrade of `make loadtest-upgrade`, short: 300 calls in 30 seconds, the
    # upgrade from 5 seconds in (standby, switchover, old primary, finalize). The upgrade
    # outlasts the short day's arrivals; what is checked is that every step is done and
    # observed (state hashes, the probe's rule) and that nothing is lost or stranded.
    out = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable, "-m", "loadtest", "run", "day", "--minutes", "0.5", "--calls", "300",
            "--upgrade-at", "5", "--out", str(out), "--p99-ms", "5000", "--max-outage", "10",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=420,
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    figures = summary["figures"]
    assert figures["created"] == 300 and figures["lost"] == 0 and figures["stranded"] == 0
    assert figures["counts"]["acd"] == figures["counts"]["locust"]
    upgrade = figures["upgrade"]
    standby, primary = upgrade["steps"][0]["step"].split()[-1], upgrade["steps"][4]["step"].split()[-1]
    assert {standby, primary} == {"a", "b"}
    assert [step["step"] for step in upgrade["steps"]] == [
        f"upgrade node {standby}", f"node {standby} in sync", f"node {standby} compared", "switchover",
        f"upgrade node {primary}", f"node {primary} in sync", f"node {primary} compared", "finalize",
    ]
    assert [entry["step"] for entry in upgrade["hashes"]] == ["before", f"node {standby} upgraded", "switched over", f"node {primary} upgraded", "finalized"]
    for entry in upgrade["hashes"]:
        assert entry["equal"] and len(set(entry["hashes"].values())) == 1 and set(entry["hashes"]) == {"a", "b"}, entry
    assert [(probe["active_core_version"], probe["rule"]) for probe in upgrade["probes"]] == [(1, "longest-idle")] * 4 + [(2, "fewest-handled")]
    assert [probe["node"] for probe in upgrade["probes"]] == [primary, primary, standby, standby, standby]
    assert (upgrade["finalize"]["previous_core_version"], upgrade["finalize"]["active_core_version"]) == (1, 2)
    assert {row["node"]: row["core_versions"] for row in upgrade["status_after"]["nodes"]} == {"a": [1, 2], "b": [1, 2]}
    assert upgrade["status_after"]["active_core_version"] == 2
    assert upgrade["alarm_comparisons"] > 0 and upgrade["alarm_divergences"] == 0
    for report in figures["verify"].values():
        assert not report.get("problems"), report
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert text.splitlines()[0].endswith("PASS") and "## Rolling upgrade" in text


def test_compressed_center_divides_every_duration_and_keeps_timer_floors(tmp_path: Path) -> None:
    from acd import settings as settings_module
    from loadtest import plan

    text = (REPO / "examples" / "busan-120.toml").read_text(encoding="utf-8")
    source = tmp_path / "compressed.toml"
    source.write_text(plan.compress_center(text, 84.0), encoding="utf-8")
    center = settings_module.load(source).center
    transport = next(queue for queue in center.queues if queue.name == "transport")
    assert center.service_level_threshold == round(20 / 84, 6)
    assert center.abuse.recovery_seconds == round(300 / 84, 6)
    assert transport.max_wait == round(300 / 84, 6)
    assert transport.relaxation[0].after == round(30 / 84, 6)
    assert transport.ring_timeout == 1.0      # 15 / 84 would race the desks' answers: floored
    assert transport.wrapup_seconds == 1.0


def test_stress_center_has_the_generated_agents_on_every_voice_topic(tmp_path: Path) -> None:
    from acd import settings as settings_module
    from loadtest import plan

    text, names = plan.stress_center((REPO / "examples" / "busan-120.toml").read_text(encoding="utf-8"), 50, 1.0)
    source = tmp_path / "stress.toml"
    source.write_text(text, encoding="utf-8")
    center = settings_module.load(source).center
    assert [agent.name for agent in center.agents] == names and len(names) == 50
    assert set(center.agents[1].skills) == set(plan.voice_topics(text))
    assert center.service_level_threshold == 1.0


@pytest.mark.slow
def test_short_stress_ramp_reports_each_step_runs_a_missed_step_again_and_pins_the_primary(tmp_path: Path) -> None:
    # The `stress` shape end to end, short: two rates, a small generated center, and a p99
    # limit no request can meet (1 ms). What is checked is that every step is measured and
    # judged, that a step that misses the limit runs once more at the same rate and, missed
    # again, sets the breaking point (no more repeats after it), that nothing is lost or
    # stranded, and that the primary got a core of its own.
    out = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable, "-m", "loadtest", "run", "stress", "--rates", "4,8", "--step-seconds", "8",
            "--agents", "40", "--pin", "yes", "--out", str(out), "--p99-ms", "1", "--target-rate", "4",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 1, completed.stdout[-6000:] + completed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    failed = [check["name"] for check in summary["checks"] if check["passed"] is False]
    assert failed == ["stress: highest sustained call rate"], completed.stdout[-6000:]
    figures = summary["figures"]
    assert [(step["rate"], step["again"]) for step in figures["steps"]] == [(4.0, False), (4.0, True), (8.0, False)]
    for step in figures["steps"]:
        assert step["created"] > 0 and step["p99_ms"] is not None and step["cpu_ms_per_call"]
        assert step["slow_share"] is not None and step["pipeline"]["command_ms"] is not None
        assert step["reasons"] == [f"p99 {step['p99_ms']:.0f} ms"]
    assert figures["breaking_point"] == 0.0 and figures["limit"].startswith("at 4 calls/s (in both runs): p99")
    assert figures["capacity_without_latency_limit"] == 8.0
    assert "| 4 (again) |" in completed.stdout
    assert figures["lost"] == 0 and figures["stranded"] == 0
    assert figures["counts"]["acd"] == figures["counts"]["locust"]
    if len(os.sched_getaffinity(0)) >= 2:
        assert "pinned: primary" in completed.stdout
    else:
        assert "one core only; not pinned" in completed.stdout


def _step(rate: float, *reasons: str) -> dict[str, object]:
    return {"rate": rate, "reasons": list(reasons), "holds": not reasons}


def test_a_rate_holds_when_one_of_its_runs_holds_and_the_breaking_point_needs_both_to_miss() -> None:
    from loadtest.checks import judge_ramp

    # 25 missed once (a disk stall) and held when run again; 125 missed twice.
    rows = [_step(10), _step(25, "p99 53 ms"), _step(25), _step(100), _step(125, "p99 75 ms"), _step(125, "p99 61 ms"), _step(150, "p99 91 ms")]
    runs, breaking, first_failure, capacity = judge_ramp(rows)
    assert list(runs) == [10, 25, 100, 125, 150] and len(runs[25]) == 2
    assert breaking is rows[3] and first_failure is rows[5]
    assert capacity is rows[6]  # only the latency limit missed all the way up

    # A step that misses something other than latency ends the capacity figure too.
    rows = [_step(10), _step(25, "service level 60.0 %"), _step(50)]
    _runs, breaking, first_failure, capacity = judge_ramp(rows)
    assert (breaking, first_failure, capacity) == (rows[0], rows[1], rows[0])

    # Every step held: the breaking point is the last one, no failure.
    rows = [_step(10), _step(25)]
    assert judge_ramp(rows)[1:] == (rows[1], None, rows[1])
    assert judge_ramp([]) == ({}, None, None, None)


def test_slow_shares_client_side_from_the_timeline_and_node_side_from_the_histogram() -> None:
    from loadtest.records import Second, window
    from loadtest.rundata import pipeline_figures
    from loadtest.runner import MetricsScraper

    timeline = {
        10: Second(requests=4, failures=0, writes=4, latency_ms={5: 2, 50: 1, 60: 1}),
        11: Second(requests=4, failures=0, writes=4, latency_ms={5: 3, 120: 1}),
        12: Second(requests=100, failures=0, writes=100, latency_ms={900: 100}),  # outside
    }
    steady = window(timeline, 10, 12)
    assert steady.share_over(50) == 2 / 8, "50 ms itself is within the limit"
    assert window(timeline, 20, 30).share_over(50) is None

    exposition = "\n".join([
        "# TYPE acd_command_latency_seconds histogram",
        'acd_command_latency_seconds_bucket{le="0.025"} 950.0',
        'acd_command_latency_seconds_bucket{le="0.05"} 990.0',
        'acd_command_latency_seconds_bucket{le="+Inf"} 1000.0',
        "acd_command_latency_seconds_count 1000.0",
        "acd_command_latency_seconds_sum 5.0",
        "acd_commit_batch_records_count 400.0",
    ])
    assert MetricsScraper.parse(exposition) == {
        "le:0.025": 950.0, "le:0.05": 990.0, "le:+Inf": 1000.0, "acd_command_latency_seconds_count": 1000.0,
        "acd_command_latency_seconds_sum": 5.0, "acd_commit_batch_records_count": 400.0,
    }
    scrapes = [
        {"node": "a", "t": 100.0, "acd_command_latency_seconds_count": 1000.0, "acd_command_latency_seconds_sum": 5.0, "le:0.05": 990.0},
        {"node": "b", "t": 101.0, "acd_command_latency_seconds_count": 7.0, "le:0.05": 7.0},
        {"node": "a", "t": 110.0, "acd_command_latency_seconds_count": 1400.0, "acd_command_latency_seconds_sum": 9.0, "le:0.05": 1380.0},
    ]
    figures = pipeline_figures(scrapes, "a", 90.0, 120.0, slow_ms=50.0)
    assert figures["command_ms"] == 10.0
    assert abs(figures["slow_share"] - 10 / 400) < 1e-12  # type: ignore[operator]
    # A limit that is not one of the histogram's bounds gives no node-side share.
    assert pipeline_figures(scrapes, "a", 90.0, 120.0, slow_ms=40.0)["slow_share"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["day", "--minutes", "-1"], "argument --minutes: '-1' must be > 0"),
        (["stress", "--rates", "10,,x"], "argument --rates: 'x' is not a number"),
        (["stress", "--rates", ","], "argument --rates: give at least one rate"),
        (["stress", "--cluster", "/nonexistent/cluster.toml"], "loadtest: /nonexistent/cluster.toml: no such file"),
        (["day", "--scenario", "nope"], "loadtest: --scenario: 'nope' is neither a file nor a shipped scenario"),
        (["day", "--cluster", "{bad}"], "bad.toml:2: cluster.name: Expected `str`, got `int`"),
        (["stress", "--upgrade-at", "5"], "loadtest: --upgrade-at is for the day shape, without --failover-at"),
        (["day", "--upgrade-at", "5", "--failover-at", "9"], "loadtest: --upgrade-at is for the day shape, without --failover-at"),
    ],
)
def test_runner_refuses_bad_options_before_starting_anything(tmp_path: Path, args: list[str], message: str) -> None:
    assert_refused_before_start([sys.executable, "-m", "loadtest", "run", *args], tmp_path, message)
