"""Simulator benchmark: speed through the real core, and agreement with Erlang C / Erlang A.

    python -m bench.sim              # make bench-sim: the full sweep (several minutes)
    python -m bench.sim --quick      # shorter runs, for a look
    python -m bench.sim --speed-only

1. Speed. The same M/M/c point (360 calls/h, AHT 180 s, 20 agents: 90 % occupancy) runs
   through the full ACD core (`sim.engine.run_mmc`) and through a bare M/M/c queue in SimPy
   (`sim.simpy_baseline`, a queue model only); then a 2,000-call day of the busan-weekday
   scenario. The three run back to back in each of a few rounds and the best of each is kept
   (a busy machine then slows them alike); a short cProfile says how much of the ACD run is
   spent inside the core.
2. Agreement. Ten (L, AHT, N) points from 50 % to 97 % occupancy, Erlang C without patience
   and Erlang A with it. Each point runs until its own 95 % batch-means interval is inside
   the tolerance (service level +- 2 points, ASA +- 10 %, abandon rate +- 2 points): it
   starts with the planned number of calls and extends itself batch by batch (one stream, so
   the longer run is the shorter one continued) up to a cap. PASS when the simulated figure
   is within the tolerance of the analytic one. Points run in parallel processes (one per
   core by default).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from sim.engine import run_mmc, simulate_days
from sim.erlang import erlang_a_metrics, erlang_c_metrics
from sim.simpy_baseline import run_mmc_simpy
from sim.workload import load_scenario

SPEED_POINT = {"arrivals_per_hour": 360.0, "aht_seconds": 180.0, "agents": 20}
TARGET_RATIO = 0.1   # "about a tenth of the bare SimPy queue's speed on this machine"
TOLERANCE = {"service_level": 0.02, "asa_relative": 0.10, "abandon_rate": 0.02}

# (arrivals per hour, AHT seconds, agents, patience seconds or None, planned calls).
# Near full load a run needs many calls: the waiting time's correlation spans about
# rho / (1 - rho)^2 calls (20 at 80 %, 90 at 90 %, 380 at 95 %), so the planned counts grow
# with the load. Without patience the heaviest point is 90 %: at 94 % Erlang C would need over
# a million calls for +-2 points; with patience (Erlang A) abandonment keeps the queue short
# and 94-97 % occupancy settles quickly.
POINTS: list[tuple[float, float, int, float | None, int]] = [
    (36.0, 200.0, 4, None, 100_000),      # Erlang C, 50 % occupancy
    (120.0, 180.0, 10, None, 100_000),    # Erlang C, 60 %
    (200.0, 180.0, 14, None, 100_000),    # Erlang C, 71 %
    (300.0, 240.0, 25, None, 150_000),    # Erlang C, 80 %
    (360.0, 180.0, 21, None, 200_000),    # Erlang C, 86 %
    (360.0, 180.0, 20, None, 300_000),    # Erlang C, 90 %
    (100.0, 300.0, 8, 60.0, 100_000),     # Erlang A, 83 % (21 % abandon)
    (400.0, 180.0, 20, 120.0, 150_000),   # Erlang A, 90 %
    (1000.0, 180.0, 50, 180.0, 200_000),  # Erlang A, 94 %
    (720.0, 150.0, 28, 300.0, 250_000),   # Erlang A, 97 % (offered load above the agents)
]
# Aim the intervals a little inside the tolerance, so that "inside" holds with some margin.
PRECISION_MARGIN = 0.9


def speed(calls: int, repeats: int) -> dict[str, Any]:
    """Best of `repeats` rounds; each round runs the ACD, SimPy and the day back to back, so
    that a busy machine slows all three alike and the ratio stays meaningful.

    Each is timed by the wall clock and by the process's CPU time (on a shared machine the
    CPU figure is the steadier one); the best round of each is kept, for either clock."""
    hours = calls / SPEED_POINT["arrivals_per_hour"]
    scenario = load_scenario("busan-weekday")
    acd_wall = acd_cpu = simpy_wall = simpy_cpu = day_wall = day_cpu = math.inf
    acd: dict[str, Any] | None = None
    simpy: dict[str, Any] | None = None
    day = None
    for _ in range(repeats):
        run = run_mmc(**SPEED_POINT, hours=hours, warmup_hours=0.0, seed=1)
        acd = run
        acd_wall = min(acd_wall, run["wall_seconds"])
        acd_cpu = min(acd_cpu, run["cpu_seconds"])
        cpu_began = time.process_time()
        baseline = run_mmc_simpy(**SPEED_POINT, calls=calls, seed=1)
        simpy_cpu = min(simpy_cpu, time.process_time() - cpu_began)
        simpy_wall = min(simpy_wall, baseline["wall_seconds"])
        simpy = baseline
        day = simulate_days(scenario)
        day_wall = min(day_wall, day.wall_seconds)
        day_cpu = min(day_cpu, day.cpu_seconds)
    assert acd is not None and simpy is not None and day is not None
    profiler = cProfile.Profile()
    profiler.enable()
    run_mmc(**SPEED_POINT, hours=8_000 / SPEED_POINT["arrivals_per_hour"], warmup_hours=0.0, seed=2)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in stats.values())
    # Everything inside Center.apply (its callees included) is the core's; the rest is ours.
    core = sum(row[3] for key, row in stats.items() if key[0].endswith("acd/core/center.py") and key[2] == "apply")
    top = sorted(((row[2], f"{key[0].rsplit('/', 1)[-1]}:{key[2]}") for key, row in stats.items()
                  if "/acd/core/" in key[0]), reverse=True)[:8]
    acd_calls = acd["simulated_calls"]
    return {
        "calls": calls,
        "acd_calls": acd_calls,
        "acd_calls_per_second": acd_calls / acd_wall,
        "acd_calls_per_cpu_second": acd_calls / acd_cpu,
        "acd_commands_per_call": acd["commands"] / acd_calls,
        "acd_commands_per_second": acd["commands"] / acd_wall,
        "simpy_calls_per_second": simpy["calls"] / simpy_wall,
        "simpy_calls_per_cpu_second": simpy["calls"] / simpy_cpu,
        "ratio": (acd_calls / acd_wall) / (simpy["calls"] / simpy_wall),
        "ratio_cpu": (acd_calls / acd_cpu) / (simpy["calls"] / simpy_cpu),
        "day_calls": day.calls,
        "day_commands_per_call": day.commands / day.calls,
        "day_wall_seconds": day_wall,
        "day_cpu_seconds": day_cpu,
        "day_calls_per_second": day.calls / day_wall,
        "day_calls_per_cpu_second": day.calls / day_cpu,
        "day_ratio": (day.calls / day_wall) / (simpy["calls"] / simpy_wall),
        "day_ratio_cpu": (day.calls / day_cpu) / (simpy["calls"] / simpy_cpu),
        "profile_core_share": core / total if total else None,
        "profile_core_top": [(name, seconds / total) for seconds, name in top],
    }


def _point(arguments: tuple[float, float, int, float | None, int, int, int]) -> dict[str, Any]:
    """One point: the planned calls, extended until the intervals fit the tolerance (or the cap)."""
    arrivals, aht, agents, patience, calls, cap, seed = arguments
    if patience:
        analytic = erlang_a_metrics(arrivals_per_hour=arrivals, aht_seconds=aht, agents=agents, patience_seconds=patience)
    else:
        analytic = erlang_c_metrics(arrivals_per_hour=arrivals, aht_seconds=aht, agents=agents)
    precision = {
        "service_level": TOLERANCE["service_level"] * PRECISION_MARGIN,
        "asa": TOLERANCE["asa_relative"] * analytic.asa * PRECISION_MARGIN,
    }
    if patience:
        precision["abandon_rate"] = TOLERANCE["abandon_rate"] * PRECISION_MARGIN
    result = run_mmc(arrivals_per_hour=arrivals, aht_seconds=aht, agents=agents, patience_seconds=patience,
                     hours=calls / arrivals, seed=seed, precision=precision, max_hours=cap / arrivals)
    result["judgement"] = judge(result)
    result.pop("core_counters", None)
    return result


def judge(result: dict[str, Any]) -> dict[str, Any]:
    """Half-widths against the tolerances, and the differences from the analytic figures."""
    analytic = result["analytic"]
    half = {name: (high - low) / 2 for name, (low, high) in result["ci"].items()}
    tolerance = {
        "service_level": TOLERANCE["service_level"],
        "asa": TOLERANCE["asa_relative"] * analytic["asa"],
        "abandon_rate": TOLERANCE["abandon_rate"],
    }
    checked = ["service_level", "asa"] + (["abandon_rate"] if result["patience_seconds"] else [])
    difference = {name: result[name] - analytic[name] for name in checked}
    return {
        "tolerance": tolerance,
        "half_width": half,
        "difference": difference,
        "precise": all(half[name] <= tolerance[name] for name in checked),
        "pass": all(abs(difference[name]) <= tolerance[name] for name in checked),
    }


def agreement(points: list[tuple[float, float, int, float | None, int]], scale: float, cap_factor: int,
              workers: int) -> list[dict[str, Any]]:
    jobs = [(a, h, n, p, max(5_000, int(calls * scale)), max(5_000, int(calls * scale)) * cap_factor, 1000 + index)
            for index, (a, h, n, p, calls) in enumerate(points)]
    # Longest first, so that two workers finish together.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][4])
    results: dict[int, dict[str, Any]] = {}
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {index: pool.submit(_point, jobs[index]) for index in order}
        for done, index in enumerate(order, 1):
            results[index] = futures[index].result()
            print(f"  [{done}/{len(jobs)}] point {index + 1} done after {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return [results[i] for i in range(len(jobs))]


def print_speed(figures: dict[str, Any]) -> None:
    print("Speed (M/M/c at 360 calls/h, AHT 180 s, 20 agents; best of several runs; wall clock and CPU time)")
    print(f"  through the full ACD core : {figures['acd_calls_per_second']:>9,.0f} calls/s wall, "
          f"{figures['acd_calls_per_cpu_second']:>9,.0f} per CPU second "
          f"({figures['acd_commands_per_call']:.2f} core commands per call, {figures['acd_commands_per_second']:,.0f}/s)")
    print(f"  bare M/M/c queue in SimPy : {figures['simpy_calls_per_second']:>9,.0f} calls/s wall, "
          f"{figures['simpy_calls_per_cpu_second']:>9,.0f} per CPU second")
    print(f"  ratio ACD / SimPy         : {figures['ratio']:>9.3f} wall, {figures['ratio_cpu']:>9.3f} CPU"
          f"  (target: >= {TARGET_RATIO}: {'met' if figures['ratio_cpu'] >= TARGET_RATIO else 'NOT met'}; and >= 10,000 calls/s)")
    print(f"  2,000-call day (busan-weekday, calls drawn and run): {figures['day_wall_seconds']:.3f} s wall, "
          f"{figures['day_cpu_seconds']:.3f} s CPU for {figures['day_calls']:,} callers = "
          f"{figures['day_calls_per_second']:,.0f} / {figures['day_calls_per_cpu_second']:,.0f} calls/s "
          f"({figures['day_commands_per_call']:.2f} core commands per call; target 0.2 s)")
    # The issue's targets (10,000 calls/s, a day in 0.2 s) are "about a tenth of the bare SimPy
    # queue's speed on this machine": on a shared machine whose speed varies from run to run, the
    # ratio to SimPy measured in the same rounds is the comparable figure.
    print(f"  ratio day / SimPy         : {figures['day_ratio']:>9.3f} wall, {figures['day_ratio_cpu']:>9.3f} CPU"
          f"  (target: >= {TARGET_RATIO}: {'met' if figures['day_ratio_cpu'] >= TARGET_RATIO else 'NOT met'})")
    if figures["profile_core_share"] is not None:
        print(f"  profile (cProfile, 8,000 calls): {figures['profile_core_share'] * 100:.0f} % of the time inside "
              f"Center.apply, {100 - figures['profile_core_share'] * 100:.0f} % in the simulator around it")
        print("  busiest core functions (own time): " + ", ".join(f"{name} {share * 100:.0f} %" for name, share in figures["profile_core_top"]))


def print_agreement(results: list[dict[str, Any]]) -> None:
    print("\nAgreement with queueing theory (95 % batch-means intervals; tolerance SL +-2 pts, ASA +-10 %, abandon +-2 pts)")
    header = (f"{'#':>2} {'model':8} {'L/h':>5} {'AHT':>4} {'N':>3} {'pat':>4} {'occ':>5} {'calls':>9}  "
              f"{'SL sim [95 % CI]':>24} {'Erlang':>7} {'diff':>6}  {'ASA sim [95 % CI]':>24} {'Erlang':>7} {'diff':>6}  "
              f"{'aband sim [CI]':>22} {'Erlang':>6}  result")
    print(header)
    print("-" * len(header))
    for index, r in enumerate(results, 1):
        a = r["analytic"]
        ci = r["ci"]
        judged = r["judgement"]
        model = "Erlang A" if r["patience_seconds"] else "Erlang C"
        patience = f"{r['patience_seconds']:.0f}" if r["patience_seconds"] else "-"
        sl = f"{r['service_level'] * 100:6.2f} [{ci['service_level'][0] * 100:6.2f},{ci['service_level'][1] * 100:6.2f}]"
        asa = f"{r['asa']:6.2f} [{ci['asa'][0]:6.2f},{ci['asa'][1]:6.2f}]"
        if r["patience_seconds"]:
            abandon = f"{r['abandon_rate'] * 100:5.2f} [{ci['abandon_rate'][0] * 100:5.2f},{ci['abandon_rate'][1] * 100:5.2f}]"
            abandon_analytic = f"{a['abandon_rate'] * 100:6.2f}"
        else:
            abandon, abandon_analytic = "-", "-"
        verdict = "PASS" if judged["pass"] else "FAIL"
        if not judged["precise"]:
            verdict += " (CI wider than the tolerance)"
        print(f"{index:>2} {model:8} {r['arrivals_per_hour']:>5.0f} {r['aht_seconds']:>4.0f} {r['agents']:>3} {patience:>4} "
              f"{a['occupancy'] * 100:4.1f}% {r['offered']:>9,}  {sl:>24} {a['service_level'] * 100:7.2f} "
              f"{judged['difference']['service_level'] * 100:+6.2f}  {asa:>24} {a['asa']:7.2f} "
              f"{judged['difference']['asa'] / a['asa'] * 100 if a['asa'] else 0.0:+5.1f}%  {abandon:>22} {abandon_analytic:>6}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls (wider intervals)")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--agreement-only", action="store_true")
    parser.add_argument("--speed-calls", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3, help="speed rounds; the best of each is kept")
    parser.add_argument("--workers", type=int, default=max(1, min(len(os.sched_getaffinity(0)), 4)))
    parser.add_argument("--cap-factor", type=int, default=4, help="a point may extend to this many times its planned calls")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    arguments = parser.parse_args(argv)
    output: dict[str, Any] = {}
    if not arguments.agreement_only:
        output["speed"] = speed(arguments.speed_calls if not arguments.quick else 10_000, repeats=arguments.repeats)
        print_speed(output["speed"])
    ok = True
    if not arguments.speed_only:
        scale = 0.1 if arguments.quick else 1.0
        results = agreement(POINTS, scale, 1 if arguments.quick else arguments.cap_factor, arguments.workers)
        print_agreement(results)
        output["agreement"] = results
        passed = sum(r["judgement"]["pass"] for r in results)
        print(f"\n{passed}/{len(results)} points within tolerance")
        ok = passed == len(results)
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as handle:
            json.dump(output, handle, indent=2, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
