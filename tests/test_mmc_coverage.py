"""Coverage of `sim mmc`'s 95 % interval: it must contain the analytic service level about
95 % of the time, not just look narrow.

Over a grid of Erlang C and Erlang A points and 20 seeds each, the interval of the simulated
service level must cover the analytic value (sim/erlang.py) in at least 85 % of the runs (a
true 95 % interval fails that with a probability well under 1 %). The in-suite grid is small
and short (under a minute); `make mmc-coverage` runs the long grid (the README's example point
among them, at the default run length) with ACD_MMC_COVERAGE=long.

Measured when the interval came from 25 batch means of one run: 67 of 80 on the short grid
(84 %); with 10 independent replications: 73 of 80 (91 %).
"""

from __future__ import annotations

import os

from sim import engine

SEEDS = range(1, 21)
# (arrivals per hour, AHT seconds, agents, patience seconds or None: Erlang C)
SHORT_GRID = [(120.0, 180.0, 8, None), (200.0, 180.0, 13, None), (120.0, 180.0, 7, 120.0), (200.0, 180.0, 11, 180.0)]
LONG_GRID = [(600.0, 180.0, 34, None), (600.0, 180.0, 34, 120.0), (360.0, 180.0, 21, 200.0), (200.0, 180.0, 14, None),
             (100.0, 300.0, 8, 60.0)]
LONG = os.environ.get("ACD_MMC_COVERAGE") == "long"


def _coverage(grid: list[tuple[float, float, int, float | None]], calls: int | None, warmup_hours: float | None,
              method: str) -> tuple[int, int, list[str]]:
    covered = runs = 0
    lines = []
    for arrivals, aht, agents, patience in grid:
        hits = 0
        for seed in SEEDS:
            result = engine.run_mmc(
                arrivals_per_hour=arrivals, aht_seconds=aht, agents=agents, patience_seconds=patience, seed=seed,
                hours=None if calls is None else calls / arrivals, warmup_hours=warmup_hours, method=method,
            )
            low, high = result["ci"]["service_level"]
            hits += low <= result["analytic"]["service_level"] <= high
        covered += hits
        runs += len(SEEDS)
        lines.append(f"{arrivals:g}/h AHT {aht:g} s N={agents} patience {patience}: {hits}/{len(SEEDS)}")
    return covered, runs, lines


def test_the_interval_covers_the_analytic_service_level() -> None:
    """The short grid in the suite; the long one (no run-length limit) with ACD_MMC_COVERAGE=long."""
    if LONG:
        covered, runs, lines = _coverage(LONG_GRID, calls=None, warmup_hours=None, method="replications")
    else:
        covered, runs, lines = _coverage(SHORT_GRID, calls=2_000, warmup_hours=1.0, method="replications")
    print("\n".join([*lines, f"covered {covered}/{runs} ({covered / runs:.1%})"]))
    assert covered >= 0.85 * runs, "; ".join(lines)
