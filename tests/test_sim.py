"""The simulator: agreement with Erlang C / A, determinism, the core's own counters, the CLI.

The M/M/c points are short (a few thousand calls), so each is compared with the analytic
figure within a tolerance derived from the run's own 95 % interval (1.5 half-widths, about
three standard errors, with a small floor); `make bench-sim` runs the long points with the
issue's fixed tolerances. Seeds are fixed: a failure reproduces.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from acd.settings import load as load_settings
from sim import engine
from sim.workload import (
    SCENARIO_DIR,
    CallFactory,
    Distribution,
    ScenarioError,
    agent_plan,
    load_scenario,
    loads_scenario,
    shipped_scenarios,
)

ROOT = Path(__file__).resolve().parent.parent


def assert_agrees(result: dict, name: str, floor: float) -> None:
    low, high = result["ci"][name]
    half_width = (high - low) / 2
    simulated, analytic = result[name], result["analytic"][name]
    tolerance = max(1.5 * half_width, floor)
    assert abs(simulated - analytic) <= tolerance, (
        f"{name}: simulated {simulated:.4f} vs {result['model']} {analytic:.4f}, "
        f"tolerance {tolerance:.4f} (95 % half-width {half_width:.4f}); seed {result['seed']}"
    )


# ---------------------------------------------------------------------------------- M/M/c


@pytest.mark.parametrize(
    ("arrivals", "aht", "agents", "calls"),
    [
        (36.0, 200.0, 4, 6_000),      # 50 % occupancy
        (200.0, 180.0, 14, 8_000),    # 71 %
        (360.0, 180.0, 21, 12_000),   # 86 %
    ],
)
def test_mmc_agrees_with_erlang_c_from_light_to_heavy_load(arrivals: float, aht: float, agents: int, calls: int) -> None:
    result = engine.run_mmc(arrivals_per_hour=arrivals, aht_seconds=aht, agents=agents, hours=calls / arrivals, seed=5)
    assert result["model"] == "erlang_c"
    assert result["rejections"] == {}
    assert result["abandoned"] == 0
    assert_agrees(result, "service_level", floor=0.01)
    assert_agrees(result, "asa", floor=0.05 * result["analytic"]["asa"])
    assert_agrees(result, "occupancy", floor=0.01)


def test_mmc_with_patience_agrees_with_erlang_a() -> None:
    result = engine.run_mmc(arrivals_per_hour=100.0, aht_seconds=300.0, agents=8, patience_seconds=60.0,
                            hours=8_000 / 100.0, seed=6)
    assert result["model"] == "erlang_a"
    assert result["abandoned"] > 0
    assert_agrees(result, "abandon_rate", floor=0.01)
    assert_agrees(result, "service_level", floor=0.01)
    assert_agrees(result, "asa", floor=0.05 * result["analytic"]["asa"])


def test_mmc_counts_match_the_cores_own_counters() -> None:
    # Under a day of virtual time nothing is pruned, so the core's counters cover the run.
    result = engine.run_mmc(arrivals_per_hour=300.0, aht_seconds=180.0, agents=17, patience_seconds=120.0,
                            hours=6.0, warmup_hours=0.5, seed=7)
    core = result["core_counters"]
    whole = result["whole_run"]
    assert len(result["core_counters_days"]) == 1
    assert core["offered"] >= whole["offered"]  # the core also counts the callers still waiting
    assert core["answered"] == whole["answered"]
    assert core["answered_within"] == whole["answered_within"]
    assert core["abandoned"] == whole["abandoned"]
    assert core["handled"] <= core["answered"]


def test_mmc_extends_itself_until_the_interval_is_narrow_enough() -> None:
    result = engine.run_mmc(arrivals_per_hour=120.0, aht_seconds=180.0, agents=10, hours=1_000 / 120.0, seed=8,
                            precision={"service_level": 0.02}, max_hours=20_000 / 120.0)
    low, high = result["ci"]["service_level"]
    assert result["replications"] > engine.MMC_REPLICATIONS
    assert (high - low) / 2 <= 0.02


def test_mmc_extended_run_is_the_same_run_as_a_planned_one() -> None:
    base = {"arrivals_per_hour": 120.0, "aht_seconds": 180.0, "agents": 10, "seed": 9, "warmup_hours": 1.0}
    extended = engine.run_mmc(**base, hours=1_000 / 120.0, precision={"service_level": 1e-9}, max_hours=2_000 / 120.0)
    planned = engine.run_mmc(**base, hours=extended["hours"], replications=extended["replications"])
    assert extended["offered"] == planned["offered"]
    assert extended["service_level"] == planned["service_level"]


# ---------------------------------------------------------------------------------- a day


@pytest.fixture(scope="module")
def weekday() -> engine.DayRun:
    return engine.simulate_days(load_scenario("busan-weekday"))


def test_a_day_replays_identically_for_the_same_seed(weekday: engine.DayRun) -> None:
    again = engine.simulate_days(load_scenario("busan-weekday"))
    assert again.trace_hash == weekday.trace_hash
    assert again.state_hash == weekday.state_hash
    other = engine.simulate_days(load_scenario("busan-weekday"), seed=weekday.seed + 1)
    assert other.trace_hash != weekday.trace_hash


def test_the_weekday_scenario_is_a_2000_call_day_with_no_refused_commands(weekday: engine.DayRun) -> None:
    assert weekday.calls == 2000
    assert weekday.rejections == {}
    outcomes = {record.outcome for record in weekday.records}
    assert {"answered", "abandoned"} <= outcomes
    assert any(record.after_hours for record in weekday.records)  # callers before 08:30
    assert any(record.transfers for record in weekday.records)


def test_day_figures_agree_with_the_cores_counters(weekday: engine.DayRun) -> None:
    callers = [r for r in weekday.records if r.outcome != "callback_task"]
    tasks = [r for r in weekday.records if r.outcome == "callback_task"]
    core = engine.core_totals(weekday.center)
    threshold = weekday.scenario.target.threshold_seconds
    # Callers answered on the line only; call-backs reached (a caller's request or a promised
    # task) are counted apart (docs/kpis.md).
    on_line = [r for r in callers if r.outcome == "answered" and not r.callback]
    assert core["answered"] == len(on_line)
    assert core["callbacks_reached"] == sum(r.outcome == "answered" and r.callback for r in callers) + sum(
        r.answered_at is not None for r in tasks)
    assert core["answered_within"] == sum(r.wait <= threshold for r in on_line)
    assert core["abandoned"] == sum(r.outcome == "abandoned" for r in callers)
    assert core["offered"] == len(callers)
    assert core["after_hours"] == sum(r.after_hours for r in callers)
    assert core["callbacks_promised"] >= len(tasks)  # the simulator sees a task once it is offered
    weekday.center.check_invariants()


def test_interval_rows_add_up_to_the_day(weekday: engine.DayRun) -> None:
    from sim.report import day_totals, interval_rows

    rows = interval_rows(weekday)
    assert len(rows) == 96
    (day,) = day_totals(weekday)
    assert sum(r["offered"] for r in rows) == day["offered"] == 2000
    assert sum(r["answered"] for r in rows) == day["answered"]
    busiest = max(rows, key=lambda r: r["offered"])
    assert "09:30" <= busiest["start"] <= "11:30"  # the morning peak (docs/domain.md's 120 pattern)
    lunch = [r["offered"] for r in rows if "12:00" <= r["start"] < "13:00"]
    assert max(lunch) < busiest["offered"] * 0.7
    assert max(r["agents_logged_in"] for r in rows) == pytest.approx(28, abs=0.01)


def test_a_closed_weekend_turns_callers_into_monday_call_backs() -> None:
    # The sample calendar opens weekdays only (examples/busan-120.toml, closed_action = "callback").
    run = engine.simulate_days(load_scenario("busan-weekday"), start="2026-11-28", days=3, seed=3)
    saturday = [r for r in run.records if r.arrival < run.day_starts[1] and r.outcome != "callback_task"]
    assert saturday and all(r.after_hours for r in saturday)
    monday_open = run.day_starts[2] + 8.5 * 3600
    answered = [r for r in saturday if r.answered_at is not None]
    assert answered and all(r.answered_at >= monday_open for r in answered)


def test_the_weekend_scenario_opens_on_saturday_with_a_small_load() -> None:
    scenario = load_scenario("weekend")
    day = scenario.dates()[0]
    assert scenario.day_type(day) == "weekend"
    assert 0.08 <= scenario.volume_of(day) / scenario.volume.weekday <= 0.10  # docs/domain.md
    run = engine.simulate_days(scenario)
    answered = [r for r in run.records if r.outcome == "answered" and not r.after_hours]
    assert len(answered) > 100


def test_the_monday_after_a_holiday_brings_more_calls() -> None:
    scenario = load_scenario("busan-weekday")
    christmas_monday = dt.date(2026, 12, 28)  # Friday the 25th is a holiday in the sample calendar
    assert scenario.day_type(dt.date(2026, 12, 25)) == "holiday"
    assert scenario.volume_of(christmas_monday) == pytest.approx(2000 * scenario.volume.after_holiday)
    assert scenario.volume_of(dt.date(2026, 11, 23)) == pytest.approx(2000)  # after a plain weekend


def test_storm_overloads_the_center() -> None:
    scenario = load_scenario("storm")
    assert scenario.volume_of(scenario.dates()[0]) == pytest.approx(6000)
    plan = agent_plan(scenario, scenario.dates()[0])
    assert sum(action.action == "login" for action in plan) == 28


# ---------------------------------------------------------------------------------- workload


def test_empirical_durations_follow_their_table() -> None:
    table = Distribution(distribution="empirical", table=[(60.0, 0.0), (300.0, 0.5), (600.0, 1.0)])
    draw = table.sampler(random.Random(1))
    values = [draw() for _ in range(20_000)]
    assert 60 <= min(values) and max(values) <= 600
    assert sum(v <= 300 for v in values) / len(values) == pytest.approx(0.5, abs=0.02)
    assert table.expected() == pytest.approx((180 + 450) / 2, rel=0.02)


def test_lognormal_durations_have_the_mean_and_sd_asked_for() -> None:
    draw = Distribution(distribution="lognormal", mean=170.0, sd=110.0).sampler(random.Random(2))
    values = [draw() for _ in range(50_000)]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    assert mean == pytest.approx(170, rel=0.02)
    assert sd == pytest.approx(110, rel=0.05)


def test_inline_draws_are_the_standard_librarys() -> None:
    # The samplers write the standard library's draws out inline: the same numbers.
    mean, sd = 170.0, 110.0
    sigma = math.sqrt(math.log1p((sd / mean) ** 2))
    mu = math.log(mean) - sigma * sigma / 2
    cases = [
        (Distribution(distribution="lognormal", mean=mean, sd=sd, high=3600.0),
         lambda r: min(3600.0, max(0.0, r.lognormvariate(mu, sigma)))),
        (Distribution(distribution="exponential", mean=90.0), lambda r: r.expovariate(1 / 90.0)),
        (Distribution(distribution="exponential", mean=90.0, low=5.0, high=100.0),
         lambda r: min(100.0, max(5.0, r.expovariate(1 / 90.0)))),
        (Distribution(distribution="uniform", low=1800, high=7200), lambda r: r.uniform(1800.0, 7200.0)),
    ]
    for distribution, reference in cases:
        draw = distribution.sampler(random.Random(7))
        stream = random.Random(7)
        assert [draw() for _ in range(5_000)] == [reference(stream) for _ in range(5_000)], distribution.distribution


def test_the_mix_follows_the_scenario() -> None:
    scenario = load_scenario("busan-weekday")
    factory = CallFactory(scenario, random.Random(4))
    calls = [call for _ in range(3) for call in factory.day(dt.date(2026, 11, 23))]
    share = sum(call.topic == "transport" for call in calls) / len(calls)
    assert share == pytest.approx(0.387, abs=0.02)  # docs/domain.md: transport 38.7 %
    assert all(call.queue == "text" for call in calls if call.channel != "voice")
    assert sum(call.vulnerable for call in calls) / len(calls) == pytest.approx(0.08, abs=0.01)


def test_scenario_errors_name_the_key() -> None:
    text = (SCENARIO_DIR / "busan-weekday.toml").read_text()
    with pytest.raises(ScenarioError, match="mix.topics.ferries"):
        loads_scenario(text.replace("transport = 0.387", "transport = 0.387, ferries = 0.01"), SCENARIO_DIR / "x.toml")
    with pytest.raises(ScenarioError, match="volumes"):
        loads_scenario(text + "\n[volumes]\nweekday = 1\n", SCENARIO_DIR / "x.toml")
    with pytest.raises(ScenarioError, match="neither a file nor a shipped scenario"):
        load_scenario("no-such-scenario")


def test_the_shipped_center_copy_matches_the_example() -> None:
    # The copy serves an installed package that has no examples/ directory.
    shipped = load_settings(SCENARIO_DIR / "busan-120.center.toml").center
    example = load_settings(ROOT / "examples" / "busan-120.toml").center
    assert shipped == example
    assert {"busan-weekday", "storm", "weekend"} <= set(shipped_scenarios())


# ---------------------------------------------------------------------------------- CLI


def run_cli(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", *arguments], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_mmc_prints_json_with_the_analytic_figures() -> None:
    done = run_cli("mmc", "--arrivals-per-hour", "360", "--aht", "180", "--agents", "21", "--patience", "200",
                   "--hours", "4", "--seed", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("offered", "answered", "abandoned", "service_level", "asa", "abandon_rate", "occupancy", "ci", "analytic"):
        assert key in result
    assert result["analytic"]["model"] == "erlang_a"
    assert set(result["ci"]) >= {"service_level", "asa", "abandon_rate"}
    assert result["offered"] == result["answered"] + result["abandoned"]


def test_cli_mmc_refuses_an_unstable_erlang_c_point() -> None:
    done = run_cli("mmc", "--arrivals-per-hour", "400", "--aht", "180", "--agents", "20", "--json")
    assert done.returncode == 2
    assert "unstable" in done.stderr


def test_cli_day_writes_report_csv_and_charts(tmp_path: Path, weekday: engine.DayRun) -> None:
    done = run_cli("day", "busan-weekday", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "service level" in done.stdout
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["calls"] == 2000
    # Another process (another string-hash seed) replays the very same run.
    assert report["trace_hash"] == weekday.trace_hash
    with (out / "intervals.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 96
    for column in ("start", "offered", "answered", "abandoned", "service_level", "asa", "waiting_max", "longest_wait", "agents_busy"):
        assert column in rows[0]
    for chart in ("arrivals.png", "waiting.png", "service_level.png", "agents.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_staff_prints_a_table_and_writes_csv(tmp_path: Path) -> None:
    done = run_cli("staff", "weekend", "--target", "0.8/20", "--max-abandon", "0.05", "--replications", "2",
                   "--rounds", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "Erlang N" in done.stdout and "confirmed N" in done.stdout
    with (tmp_path / "staffing.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(int(r["agents"]) >= int(r["erlang_agents"]) for r in rows)
