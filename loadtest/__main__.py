"""`python -m loadtest run SHAPE [--cluster CONFIG] [--minutes M] [--failover-at S] [--out DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acd.argtypes import non_negative, positive

from . import plan as plans

EPILOG = """\
examples:
  python -m loadtest run day                          # a 2,000-call day in 10 minutes
  python -m loadtest run day --failover-at 300        # ... with the primary killed half-way
  python -m loadtest run day --minutes 0.5 --calls 300 --failover-at 12   # the smoke test in make test
  python -m loadtest run day --upgrade-at 200         # ... with a rolling upgrade of the core version
  python -m loadtest run day --minutes 0.5 --calls 300 --upgrade-at 5    # its smoke test in make test
  python -m loadtest run stress                       # ramp 10..250 calls/s, print the breaking point
  python -m loadtest run stress --rates 50,100,150 --step-seconds 30
  python -m loadtest run soak --minutes 120 --rate 20
  python -m loadtest run day --haproxy                # clients go through HAProxy (needs haproxy)
"""


def _rates(text: str) -> list[float]:
    rates = [positive()(part.strip()) for part in text.split(",") if part.strip()]
    if not rates:
        raise argparse.ArgumentTypeError("give at least one rate, e.g. 25,50,100")
    return rates


def parser() -> argparse.ArgumentParser:
    from . import __doc__ as package_doc

    top = argparse.ArgumentParser(prog="python -m loadtest", description=package_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start a cluster, run Locust headless, check, report", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("shape", choices=("day", "stress", "soak"))
    run.add_argument("--cluster", type=Path, default=plans.DEFAULT_CONFIG, help="cluster config to copy (default: %(default)s)")
    run.add_argument("--minutes", type=positive(), default=None, help="length of the load: the compressed day (10), the ramp (4), the soak (60)")
    run.add_argument("--failover-at", type=non_negative(), default=None, metavar="S", help="SIGKILL the primary S seconds after the first arrival")
    run.add_argument("--upgrade-at", type=non_negative(), default=None, metavar="S",
                     help="day: S seconds after the first arrival, upgrade the standby to the next core version's binary, switch "
                          "over, upgrade the old primary, finalize (loadtest/upgrade.py)")
    run.add_argument("--rejoin-after", type=float, default=5.0, metavar="S", help="restart the killed node S seconds after the takeover (default: %(default)s; negative: never)")
    run.add_argument("--out", type=Path, default=None, help="run folder (default: out/loadtest-SHAPE-TIME)")
    run.add_argument("--haproxy", action="store_true", help="clients go through HAProxy with the shipped deploy/haproxy.cfg (needs haproxy)")
    run.add_argument("--mode", choices=("sync", "async"), default=None, help="replication mode (default: the config's, sync)")
    run.add_argument("--haproxy-config", type=Path, default=None, help="with --haproxy: another config in the shape of deploy/haproxy.cfg")
    run.add_argument("--pin", choices=("auto", "yes", "no"), default="auto",
                     help="give the primary a core of its own and put the standby, the witness, Locust and HAProxy on the "
                          "others, as separate machines would be (auto: for stress and soak on a machine with 2 or more "
                          "cores; default: %(default)s)")
    day = run.add_argument_group("day")
    day.add_argument("--calls", type=positive(int), default=2000, help="calls in the day (default: %(default)s)")
    day.add_argument("--scenario", default="busan-weekday", help="simulator scenario for the day (default: %(default)s)")
    day.add_argument("--seed", type=int, default=120, help="workload seed (default: %(default)s)")
    day.add_argument("--drain", type=non_negative(), default=None, help="seconds the agents get to empty the queues after the last arrival")
    rate = run.add_argument_group("stress and soak")
    rate.add_argument("--rates", type=_rates, default=None, help="ramp steps in calls/s, e.g. 25,50,100 (default: 10,25,50,...,250)")
    rate.add_argument("--step-seconds", type=positive(), default=None, help="seconds per ramp step (default: --minutes split evenly)")
    rate.add_argument("--rate", type=positive(), default=10.0, help="soak: calls per second (default: %(default)s)")
    rate.add_argument("--agents", type=positive(int), default=400, help="generated agents (default: %(default)s)")
    rate.add_argument("--talk", type=non_negative(), default=1.0, help="seconds each generated call is talked (default: %(default)s)")
    rate.add_argument("--threshold", type=positive(), default=1.0, help="service-level threshold in seconds (default: %(default)s)")
    rate.add_argument("--target-rate", type=positive(), default=100.0, help="stress passes at this many calls/s (default: %(default)s)")
    limits = run.add_argument_group("limits")
    limits.add_argument("--p99-ms", type=positive(), default=None, help="p99 latency limit outside the failover window (default: 100 for day and soak, 50 for stress)")
    limits.add_argument("--max-error-ratio", type=non_negative(), default=0.001, help="failed requests outside the failover window (default: %(default)s)")
    limits.add_argument("--max-outage", type=positive(), default=3.0, help="longest client-seen outage at failover, seconds (default: %(default)s)")
    limits.add_argument("--max-bytes-per-call", type=positive(), default=16384.0, help="soak: primary memory growth per interaction (default: %(default)s)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from acd.tools.launcher import config_problem

    from .runner import Options, run

    if args.upgrade_at is not None and (args.shape != "day" or args.failover_at is not None):
        print("loadtest: --upgrade-at is for the day shape, without --failover-at", file=sys.stderr)
        return 2
    problem = config_problem(args.cluster, args.scenario if args.shape == "day" else None)
    if problem is not None:
        print(f"loadtest: {problem}", file=sys.stderr)
        return 2

    options = Options(
        shape=args.shape, config=args.cluster.resolve(), minutes=args.minutes, failover_at=args.failover_at, upgrade_at=args.upgrade_at, out=args.out,
        calls=args.calls, seed=args.seed, scenario=args.scenario, drain=args.drain, rates=args.rates,
        step_seconds=args.step_seconds, rate=args.rate, agents=args.agents, talk=args.talk, threshold=args.threshold,
        rejoin_after=args.rejoin_after if args.rejoin_after >= 0 else None, haproxy=args.haproxy or args.haproxy_config is not None,
        haproxy_config=args.haproxy_config.resolve() if args.haproxy_config else None, mode=args.mode,
        pin=args.pin == "yes" or (args.pin == "auto" and args.shape != "day"),
        p99_ms=args.p99_ms if args.p99_ms is not None else (50.0 if args.shape == "stress" else 100.0),
        max_error_ratio=args.max_error_ratio, max_outage=args.max_outage, target_rate=args.target_rate,
        max_bytes_per_call=args.max_bytes_per_call,
    )
    try:
        return run(options)
    except KeyboardInterrupt:
        print("\nloadtest: interrupted; every process was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
