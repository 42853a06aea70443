"""Bare M/M/c (+M) queue in SimPy: a speed and sanity baseline, no ACD logic.

Poisson arrivals, exponential handling times, optionally exponential patience
(reneging via ``yield request | env.timeout(patience)``), FCFS over ``agents``
identical servers.  All randomness comes from one ``random.Random(seed)``, so a
run is deterministic for a seed (only ``wall_seconds`` / ``calls_per_second``
vary).  The system starts empty and every offered call is counted (no warm-up
cut), which biases short runs slightly towards a better service level.

    python -m sim.simpy_baseline --arrivals-per-hour 360 --aht 180 --agents 20 --calls 50000
"""

from __future__ import annotations

import argparse
import json
import random
import time

import simpy


def run_mmc_simpy(
    *,
    arrivals_per_hour: float,
    aht_seconds: float,
    agents: int,
    calls: int,
    seed: int,
    patience_seconds: float | None = None,
    threshold_seconds: float = 20,
) -> dict:
    """Simulate ``calls`` offered calls through an M/M/agents(+M) queue.

    Returns ``{"calls", "wall_seconds", "calls_per_second", "service_level",
    "asa", "abandon_rate"}`` where ``calls`` is the number of calls that
    finished (answered and completed, or abandoned), ``service_level`` is the
    fraction of offered calls answered with wait <= ``threshold_seconds``,
    ``asa`` the mean wait of answered calls and ``abandon_rate`` the fraction of
    offered calls that abandoned -- the same conventions as
    :class:`sim.erlang.Analytic`.
    """
    if arrivals_per_hour <= 0 or aht_seconds <= 0:
        raise ValueError("arrivals_per_hour and aht_seconds must be > 0")
    if agents < 1 or calls < 1:
        raise ValueError("agents and calls must be >= 1")
    if patience_seconds is not None and patience_seconds <= 0:
        raise ValueError("patience_seconds must be > 0 (or None for no abandonment)")

    rng = random.Random(seed)
    expo = rng.expovariate
    arrival_rate = arrivals_per_hour / 3600.0
    service_rate = 1.0 / aht_seconds
    abandon_rate = None if patience_seconds is None else 1.0 / patience_seconds

    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=agents)
    stats = {"finished": 0, "answered": 0, "in_time": 0, "abandoned": 0, "wait": 0.0}

    def call(arrived: float):
        with servers.request() as req:
            if abandon_rate is None:
                yield req
            else:
                fired = yield req | env.timeout(expo(abandon_rate))
                if req not in fired:  # patience ran out first: renege
                    stats["abandoned"] += 1
                    stats["finished"] += 1
                    return
            wait = env.now - arrived
            stats["answered"] += 1
            stats["wait"] += wait
            if wait <= threshold_seconds:
                stats["in_time"] += 1
            yield env.timeout(expo(service_rate))
        stats["finished"] += 1

    def source():
        for _ in range(calls):
            env.process(call(env.now))
            yield env.timeout(expo(arrival_rate))

    env.process(source())
    start = time.perf_counter()
    env.run()
    wall = time.perf_counter() - start

    answered = stats["answered"]
    return {
        "calls": stats["finished"],
        "wall_seconds": wall,
        "calls_per_second": stats["finished"] / wall if wall > 0 else float("inf"),
        "service_level": stats["in_time"] / calls,
        "asa": stats["wait"] / answered if answered else 0.0,
        "abandon_rate": stats["abandoned"] / calls,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arrivals-per-hour", type=float, default=360.0)
    p.add_argument("--aht", type=float, default=180.0, help="mean handling time, seconds")
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--calls", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--patience", type=float, default=None, help="mean patience, seconds")
    p.add_argument("--threshold", type=float, default=20.0)
    a = p.parse_args(argv)
    result = run_mmc_simpy(
        arrivals_per_hour=a.arrivals_per_hour,
        aht_seconds=a.aht,
        agents=a.agents,
        calls=a.calls,
        seed=a.seed,
        patience_seconds=a.patience,
        threshold_seconds=a.threshold,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
