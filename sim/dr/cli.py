"""`python -m sim dr` (and `python -m sim.dr`): disaster-recovery drills on virtual time.

    python -m sim dr --scenario primary-crash --seed 7 [--minutes 1] [--json] [--out DIR]
    python -m sim dr --scenario swarm --seeds 1..1000 [--jobs 2] [--json] [--out DIR]
    python -m sim dr --list

One seed: the run's verdict and figures (or its JSON record), and with `--out` its event
log, timeline chart and record. A sweep: a progress bar on stderr, then the summary (runs,
violations with the seeds that reproduce them, lost acknowledged writes, failover time p50,
p99 and max, time without a writable primary, seeds per minute); with `--out` the summary
and the evidence of every violating seed. The exit status is 1 when any run broke an
invariant, 0 otherwise (2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from acd.argtypes import positive
from acd.buggify import KNOWN_BUGS

from .scenarios import SCENARIOS

DESCRIPTIONS = {
    "primary-crash": "kill the primary (half the time while a write is in flight), restart it later",
    "standby-crash": "kill the standby; the primary records it behind and goes on alone",
    "witness-crash": "kill the witness; the pair keeps its lease through each other",
    "primary-partition": "cut the primary off: both ways, one way, from the witness only, from the standby only",
    "zombie-primary": "pause the primary (its network held, its commit blocked), resume it after the failover",
    "double-fault": "two faults close together (standby then primary, witness and primary, both nodes, ...)",
    "rolling-restart": "planned maintenance: restart the standby, switch over, restart the old primary",
    "switchover-under-load": "switch over again and again under a heavy workload, sometimes crashing mid-handover",
    "disk-full": "the primary's, the standby's or both disks fill up, then are freed",
    "swarm": "a random mix of all of the above, with drawn network, disk and clock weather",
}


def _seed_range(text: str) -> tuple[int, int]:
    first, separator, last = text.partition("..")
    try:
        if not separator:
            value = int(text)
            return value, value
        low, high = int(first), int(last)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A..B (for example 1..100), got {text!r}") from None
    if high < low:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return low, high


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="swarm", choices=[*SCENARIOS, "all"],
                        help="which drill (default swarm); 'all' sweeps every named scenario")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="run one seed (default 1)")
    which.add_argument("--seeds", type=_seed_range, metavar="A..B", help="sweep the seeds A to B (inclusive)")
    parser.add_argument("--minutes", type=positive(), help="simulated minutes of faults per run (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines instead of text")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write the event log and timeline chart (and a sweep's summary)")
    parser.add_argument("--jobs", type=int, help="worker processes for a sweep (default: one per core)")
    parser.add_argument("--bug", action="append", default=[], choices=sorted(KNOWN_BUGS),
                        help="switch on a deliberately broken variant (to see the simulator catch it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `dr` subcommand to `python -m sim`."""
    parser = subparsers.add_parser(
        "dr", help="disaster-recovery drills: the real cluster under seeded faults on virtual time",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.list:
        for name in SCENARIOS:
            print(f"{name:24} {DESCRIPTIONS.get(name, '')}")
        return 0
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if args.seeds is None and args.scenario != "all":
        return _one(args)
    first, last = args.seeds if args.seeds is not None else (args.seed or 1, args.seed or 1)
    return _sweep(args, scenarios, first, last)


def _one(args: argparse.Namespace) -> int:
    from .report import run_text, write_run
    from .runner import run

    result = run(args.scenario, args.seed if args.seed is not None else 1, minutes=args.minutes, bugs=tuple(args.bug))
    if args.out is not None:
        written = write_run(result, args.out)
        if not args.json:
            print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(run_text(result))
    return 0 if result.ok else 1


def _sweep(args: argparse.Namespace, scenarios: list[str], first: int, last: int) -> int:
    from .report import sweep_summary, sweep_text
    from .sweep import default_jobs, sweep

    jobs = args.jobs or default_jobs()
    records, wall = sweep(scenarios, range(first, last + 1), minutes=args.minutes, jobs=jobs, bugs=args.bug,
                          out=args.out, progress=not args.no_progress and not args.json)
    label = args.scenario if len(scenarios) == 1 else "all"
    summary = sweep_summary(records, scenario=label, first=first, last=last, wall_seconds=wall, jobs=jobs,
                            minutes=args.minutes, bugs=args.bug)
    if len(scenarios) > 1:
        summary["per_scenario"] = {
            name: {key: value for key, value in sweep_summary(
                [record for record in records if record["scenario"] == name], scenario=name, first=first, last=last,
                wall_seconds=wall, jobs=jobs, minutes=args.minutes, bugs=args.bug).items() if key != "runs_detail"}
            for name in scenarios
        }
    text = sweep_text(summary)
    if len(scenarios) > 1:
        text += "\n" + "\n".join(
            f"  {name:22} runs {part['runs']:5}  violations {part['violations']:3}  lost {part['lost_acknowledged_writes']}  "
            f"failover p50 {part['failover_seconds']['p50']:.2f} p99 {part['failover_seconds']['p99']:.2f} "
            f"max {part['failover_seconds']['max']:.2f}"
            for name, part in summary["per_scenario"].items()
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (args.out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2) if args.json else text)
    return 0 if summary["violations"] == 0 else 1


def standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.dr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    return main(parser.parse_args(argv))
