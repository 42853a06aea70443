"""Command line: `python -m sim mmc | day | staff` (see `python -m sim --help`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from acd.argtypes import positive

from . import engine, report
from .workload import ScenarioError, load_scenario, shipped_scenarios


def _target(text: str) -> tuple[float, float]:
    """"0.8/20" -> (0.8, 20.0); "80/20" is read as 80 %."""
    try:
        level_text, threshold_text = text.split("/")
        level, threshold = float(level_text), float(threshold_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write the target as LEVEL/SECONDS, e.g. 0.8/20") from None
    if level > 1:
        level /= 100
    if not 0 < level <= 1 or threshold < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the level is a fraction (0.8) and the threshold seconds >= 0")
    return level, threshold


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m sim",
        description="Discrete-event simulator of the ACD: the real routing core on virtual time.",
    )
    commands = top.add_subparsers(dest="command", required=True)

    mmc = commands.add_parser(
        "mmc", help="one queue, Poisson arrivals, exponential handling: compare with Erlang C / A",
        description="Run one queue through the real routing core on virtual time (Poisson arrivals, exponential "
        "handling, optionally exponential patience) and compare the measured service level, average speed of answer "
        "and abandonment with Erlang C (no abandonment) or Erlang A (with --patience), each with a 95 % confidence "
        "interval from batch means.",
        epilog="example: python -m sim mmc --arrivals-per-hour 600 --aht 180 --agents 34 --patience 120 --json",
    )
    mmc.add_argument("--arrivals-per-hour", type=positive(float), required=True, metavar="L", help="mean arrival rate, calls an hour")
    mmc.add_argument("--aht", type=positive(float), required=True, metavar="SECONDS", help="mean handling time")
    mmc.add_argument("--agents", type=positive(int), required=True, metavar="N", help="agents serving the queue")
    mmc.add_argument("--patience", type=positive(float), metavar="SECONDS", help="mean patience (exponential): Erlang A")
    mmc.add_argument("--threshold", type=float, default=20.0, metavar="SECONDS", help="service-level threshold (default 20)")
    mmc.add_argument("--hours", type=positive(float), metavar="H", help="measured hours (default: 20,000 calls' worth)")
    mmc.add_argument("--warmup-hours", type=float, metavar="H", help="unmeasured start (default: max(1 h, 50 AHT))")
    mmc.add_argument("--replications", type=int, default=10,
                     help="independent replications for the 95 %% intervals (default 10; each has its own warm-up)")
    mmc.add_argument("--method", choices=("replications", "batch-means"), default="replications",
                     help="interval method (default: replications; batch-means: one run cut into --batches)")
    mmc.add_argument("--batches", type=int, default=25, help="batches for --method batch-means (default 25)")
    mmc.add_argument("--seed", type=int, default=1, metavar="K", help="random seed (default 1)")
    mmc.add_argument("--json", action="store_true", help="print one JSON object")

    day = commands.add_parser(
        "day", help="run a scenario's day(s); KPI table, report.json, CSV and charts",
        description="Simulate whole days of a scenario (its center, staffing and workload: arrivals by interval, topics, "
        "channels, patience, call-backs, transfers) through the real routing core on virtual time, and write the "
        "day's KPIs per interval and queue: a table on screen, report.json, CSV files and charts in the output folder.",
        epilog="example: python -m sim day sim/scenarios/busan-weekday.toml --seed 1 --out out/day",
    )
    day.add_argument("scenario", metavar="SCENARIO", help=f"a TOML path or a shipped scenario ({', '.join(shipped_scenarios())})")
    day.add_argument("--seed", type=int, metavar="K", help="default: the scenario's seed")
    day.add_argument("--days", type=positive(int), metavar="N", help="default: the scenario's days")
    day.add_argument("--start", metavar="YYYY-MM-DD", help="first date (default: the scenario's)")
    day.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: out/<scenario>)")
    day.add_argument("--no-charts", action="store_true", help="skip the charts (no matplotlib needed)")

    staff = commands.add_parser(
        "staff", help="fewest agents per interval for a target: Erlang, confirmed by simulation",
        description="Find the fewest agents per interval of a scenario's day that meet a service-level target (and, "
        "with --max-abandon, an abandonment limit): Erlang C/A gives a first plan, simulated days of the real routing "
        "core confirm or adjust it; writes staffing.csv.",
        epilog="example: python -m sim staff sim/scenarios/busan-weekday.toml --target 0.8/20",
    )
    staff.add_argument("scenario", metavar="SCENARIO", help="a TOML path or a shipped scenario")
    staff.add_argument("--target", type=_target, default=(0.8, 20.0), metavar="LEVEL/SECONDS", help="e.g. 0.8/20 (default)")
    staff.add_argument("--max-abandon", type=float, metavar="RATE", help="e.g. 0.05: also keep abandonment under this (Erlang A)")
    staff.add_argument("--replications", type=positive(int), default=10, help="simulated days per round (default 10)")
    staff.add_argument("--rounds", type=positive(int), default=8, help="most simulate-and-adjust rounds (default 8)")
    staff.add_argument("--seed", type=int, metavar="K", help="default: the scenario's seed")
    staff.add_argument("--date", metavar="YYYY-MM-DD", help="the day to staff (default: the scenario's first)")
    staff.add_argument("--after-hours", action="store_true",
                       help="also simulate the call-backs of callers who rang while closed (due at the opening)")
    staff.add_argument("--out", type=Path, metavar="DIR", help="where staffing.csv goes (default: out/<scenario>)")
    staff.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")

    from sim.dr.cli import add_parser as add_disaster_recovery

    add_disaster_recovery(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        if arguments.command == "mmc":
            return _mmc(arguments)
        if arguments.command == "day":
            return _day(arguments)
        if arguments.command == "dr":
            return int(arguments.handler(arguments))
        return _staff(arguments)
    except ScenarioError as error:
        print(f"scenario error: {error}", file=sys.stderr)
        return 2


def _mmc(arguments: argparse.Namespace) -> int:
    try:
        result = engine.run_mmc(
            arrivals_per_hour=arguments.arrivals_per_hour, aht_seconds=arguments.aht, agents=arguments.agents,
            patience_seconds=arguments.patience, threshold_seconds=arguments.threshold, hours=arguments.hours,
            warmup_hours=arguments.warmup_hours, seed=arguments.seed, batches=arguments.batches, progress=True,
            method=arguments.method, replications=arguments.replications,
        )
    except ValueError as error:  # Erlang C has no steady state at or above full load
        print(f"error: {error}", file=sys.stderr)
        return 2
    if arguments.json:
        print(json.dumps(report._clean(result)))
    else:
        report.print_mmc(result, sys.stdout)
    return 0


def _day(arguments: argparse.Namespace) -> int:
    scenario = load_scenario(arguments.scenario)
    days = arguments.days or scenario.scenario.days
    run = engine.simulate_days(scenario, seed=arguments.seed, days=days, start=arguments.start, progress=True)
    out = arguments.out or Path("out") / scenario.scenario.name
    paths = report.write_day_outputs(run, out, charts=not arguments.no_charts)
    report.print_day_report(run, sys.stdout)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _staff(arguments: argparse.Namespace) -> int:
    scenario = load_scenario(arguments.scenario)
    level, threshold = arguments.target
    plan = engine.plan_staffing(
        scenario, target_service_level=level, threshold_seconds=threshold, max_abandon=arguments.max_abandon,
        replications=arguments.replications, rounds=arguments.rounds, seed=arguments.seed, date=arguments.date,
        progress=True, after_hours=arguments.after_hours,
    )
    out = arguments.out or Path("out") / scenario.scenario.name
    path = report.write_staffing_csv(plan, out / "staffing.csv")
    if arguments.json:
        print(json.dumps(report._clean(plan)))
    else:
        report.print_staffing(plan, sys.stdout)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
