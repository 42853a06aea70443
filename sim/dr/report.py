"""What a run or a sweep leaves behind: the event log, the timeline chart, the summary.

`--out DIR` of one run writes

- `events.log`: the trace, one event per line (see `sim.dr.trace`);
- `timeline.png`: one row per process (roles and epochs over time: primary in a colour per
  epoch, standby grey, down blank, paused orange), acknowledged writes as ticks under the
  node that acknowledged them, fault marks as labelled vertical lines, and red bands where
  no node could acknowledge a write, with a legend under the chart;
- `result.json`: the verdict and the figures of the run.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .runner import RunResult


def write_run(result: RunResult, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if result.trace is not None:
        path = directory / "events.log"
        path.write_text("\n".join(result.trace.lines()) + "\n", encoding="utf-8")
        written.append(path)
    path = directory / "result.json"
    path.write_text(json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8")
    written.append(path)
    if result.timeline:
        path = directory / "timeline.png"
        timeline_chart(result, path)
        written.append(path)
    return written


# ---------------------------------------------------------------------- the chart


def _segments(result: RunResult) -> dict[str, list[tuple[float, float, str, int]]]:
    """Per process: (start, end, state, epoch) with state primary | standby | paused | down."""
    timeline = result.timeline
    end = timeline["end"] or (result.trace.events[-1].at if result.trace and result.trace.events else 0.0)
    names: list[str] = timeline["names"]
    state = {name: ("down", 0) for name in names}
    since = {name: 0.0 for name in names}
    paused = {name: False for name in names}
    segments: dict[str, list[tuple[float, float, str, int]]] = {name: [] for name in names}

    def move(name: str, at: float, new: tuple[str, int]) -> None:
        if name not in state:
            return
        shown = ("paused", state[name][1]) if paused[name] and state[name][0] != "down" else state[name]
        if at > since[name]:
            segments[name].append((since[name], at, shown[0], shown[1]))
        since[name] = at
        state[name] = new

    assert result.trace is not None
    for event in result.trace.events:
        name, text = event.node, event.text
        if event.kind == "life" and text.startswith("started"):
            move(name, event.at, ("witness" if name == "witness" else "standby", 0))
        elif event.kind == "death" or (event.kind == "fault" and text == "crash"):
            move(name, event.at, ("down", 0))
            paused[name] = False
        elif event.kind == "role" and text.startswith("primary epoch"):
            move(name, event.at, ("primary", int(text.split()[2])))
        elif event.kind == "role" and text.startswith("standby"):
            move(name, event.at, ("standby", 0))
        elif event.kind == "fault" and text in ("pause", "resume") and name in paused:
            move(name, event.at, state[name])
            paused[name] = text == "pause"
    for name in names:
        move(name, end, state[name])
    return segments


def _legend_handles(palette: Sequence[str]) -> list[Any]:
    """What each colour and mark of the timeline means."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        Patch(facecolor=palette[1], label="primary (a colour per epoch, eN)"),
        Patch(facecolor="#c7c7c7", label="standby"),
        Patch(facecolor="#dddddd", label="witness"),
        Patch(facecolor="#ff7f0e", label="paused"),
        Patch(facecolor="#d62728", alpha=0.12, label="no writable primary"),
        Line2D([], [], color=palette[0], marker="|", linestyle="none", markersize=8, label="acknowledged write"),
        Line2D([], [], color="#d62728", marker="x", linestyle="none", markersize=6, label="lost write"),
        Line2D([], [], color="#d62728", linestyle="--", linewidth=0.8, label="fault"),
    ]


def timeline_chart(result: RunResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = result.timeline
    names: list[str] = timeline["names"]
    segments = _segments(result)
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#e377c2"]
    end = max(timeline["end"], 1.0)
    figure, axes = plt.subplots(figsize=(14, 1.2 + 0.9 * (len(names) + 1)))
    rows = {name: len(names) - index for index, name in enumerate(names)}
    for name, spans in segments.items():
        y = rows[name]
        for start, stop, state, epoch in spans:
            if state == "down":
                continue
            color = {"standby": "#c7c7c7", "witness": "#dddddd", "paused": "#ff7f0e"}.get(state, palette[epoch % len(palette)])
            axes.broken_barh([(start, stop - start)], (y - 0.35, 0.7), facecolors=color, edgecolor="none")
            if state == "primary" and stop - start > end / 60:
                axes.text(start + (stop - start) / 2, y, f"e{epoch}", ha="center", va="center", fontsize=7, color="white")
    # Acknowledged writes: ticks in the row under the names.
    acks = timeline["acks"]
    if acks:
        colors = [palette[epoch % len(palette)] for _, _, epoch in acks]
        axes.scatter([at for at, _, _ in acks], [0.0 for _ in acks], marker="|", s=60, c=colors, linewidths=0.8)
    lost = timeline.get("lost", [])
    if lost:
        axes.scatter([at for at, _ in lost], [0.0 for _ in lost], marker="x", s=50, c="#d62728", linewidths=1.5, zorder=5)
        axes.text(lost[0][0], 0.25, f" {len(lost)} lost", color="#d62728", fontsize=8, clip_on=True)
    # No writable primary: red bands.
    down_since: float | None = 0.0
    for at, writable in timeline["writable"]:
        if writable and down_since is not None:
            axes.axvspan(down_since, at, color="#d62728", alpha=0.12, linewidth=0)
            down_since = None
        elif not writable and down_since is None:
            down_since = at
    if down_since is not None:
        axes.axvspan(down_since, end, color="#d62728", alpha=0.12, linewidth=0)
    # Fault marks.
    top = len(names) + 0.55
    for index, (at, node, what) in enumerate(timeline["marks"]):
        axes.axvline(at, color="#d62728" if what in ("crash", "died", "pause", "partition", "disk full") else "#7f7f7f",
                     linewidth=0.6, linestyle="--", alpha=0.7)
        axes.text(at, top + 0.25 * (index % 3), f"{node} {what}", rotation=0, fontsize=6, ha="left", va="bottom",
                  clip_on=True)
    # Phases: faults on, healed (liveness), converged.
    assert result.trace is not None
    for event in result.trace.events:
        if event.kind == "phase" and event.text.split(":")[0] in ("safety", "liveness", "converged"):
            axes.axvline(event.at, color="black", linewidth=0.9, alpha=0.6)
            axes.text(event.at, -0.55, " " + event.text.split(":")[0], fontsize=7, ha="left", va="bottom", clip_on=True)
    axes.set_yticks([rows[name] for name in names] + [0.0])
    axes.set_yticklabels([*names, "acks"])
    axes.set_ylim(-0.6, len(names) + 1.5)
    axes.set_xlim(0, end)
    axes.set_xlabel("simulated seconds")
    verdict = "ok" if result.ok else f"{len(result.violations)} VIOLATION(S)"
    axes.set_title(f"{result.scenario} seed {result.seed}: {verdict}, {result.acked_writes} acknowledged writes, "
                   f"failovers: {', '.join(f'{value:.2f} s' for value in result.failover_seconds) or 'none'}", fontsize=9)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(handles=_legend_handles(palette), loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=8, fontsize=7, frameon=False)
    figure.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.24)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------- summaries


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p99 is a value that happened)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    return {"n": len(values), "p50": round(percentile(values, 0.5), 3), "p99": round(percentile(values, 0.99), 3),
            "max": round(max(values), 3), "mean": round(statistics.fmean(values), 3)}


def run_text(result: RunResult) -> str:
    lines = [
        f"scenario {result.scenario} seed {result.seed}: {'ok' if result.ok else 'VIOLATION'}",
        f"  simulated            {result.simulated_seconds:.1f} s ({result.parameters.get('safety_seconds', 0):.0f} s of faults), "
        f"wall {result.wall_seconds:.2f} s, {result.task_steps} task steps",
        f"  acknowledged writes  {result.acked_writes} (lost: {result.lost_writes})",
        f"  failovers            {', '.join(f'{value:.3f}' for value in result.failover_seconds) or 'none'} s "
        f"(fault -> first write acknowledged in a new epoch)",
        f"  write stalls         {', '.join(f'{value:.3f}' for value in result.stall_seconds) or 'none'} s (fault -> first write acknowledged)",
        f"  without a writable primary  {result.unavailable_seconds:.2f} s",
        f"  converged            {'yes' if result.converged else 'NO'}; final {json.dumps(result.final)}",
        f"  deaths               {len(result.deaths)}" + (f": {'; '.join(result.deaths[:3])}" if result.deaths else ""),
        f"  trace                {result.events} events, sha256 {result.trace_hash}",
    ]
    for violation in result.violations:
        lines.append("  VIOLATION " + violation.splitlines()[0])
    if result.violations:
        lines.append(f"  reproduce: python -m sim dr --scenario {result.scenario} --seed {result.seed}"
                     + (f" --minutes {result.parameters['safety_seconds'] / 60:g}" if result.parameters.get("safety_seconds") else "")
                     + "".join(f" --bug {bug}" for bug in result.bugs) + " --out DIR")
    return "\n".join(lines)


def sweep_summary(results: Sequence[dict[str, Any]], *, scenario: str, first: int, last: int, wall_seconds: float,
                  jobs: int, minutes: float | None, bugs: Sequence[str] = ()) -> dict[str, Any]:
    """Figures of a sweep from the runs' JSON records."""
    failed = [result for result in results if not result["ok"]]
    failovers = [value for result in results for value in result["failover_seconds"]]
    stalls = [value for result in results for value in result["stall_seconds"]]
    unavailable = [result["unavailable_seconds"] for result in results]
    return {
        "scenario": scenario, "seeds": [first, last], "runs": len(results), "jobs": jobs, "minutes": minutes,
        "bugs": list(bugs),
        "violations": len(failed),
        "violating_seeds": [{"scenario": result["scenario"], "seed": result["seed"], "first": result["violations"][0].splitlines()[0]}
                            for result in failed],
        "lost_acknowledged_writes": sum(result["lost_writes"] for result in results),
        "acknowledged_writes": sum(result["acked_writes"] for result in results),
        "failover_seconds": distribution(failovers),
        "write_stall_seconds": distribution(stalls),
        "unavailable_seconds_per_run": distribution(unavailable),
        "unavailable_seconds_total": round(sum(unavailable), 3),
        "simulated_seconds": round(sum(result["simulated_seconds"] for result in results), 1),
        "wall_seconds": round(wall_seconds, 2),
        "seeds_per_minute": round(60.0 * len(results) / wall_seconds, 1) if wall_seconds > 0 else 0.0,
        "runs_detail": [{"scenario": result["scenario"], "seed": result["seed"], "ok": result["ok"],
                         "trace_hash": result["trace_hash"][:16]} for result in results],
    }


def sweep_text(summary: dict[str, Any]) -> str:
    failover = summary["failover_seconds"]
    stall = summary["write_stall_seconds"]
    unavailable = summary["unavailable_seconds_per_run"]
    first, last = summary["seeds"]
    lines = [
        f"scenario {summary['scenario']}, seeds {first}..{last}: {summary['runs']} runs on {summary['jobs']} processes",
        f"  invariant violations       {summary['violations']}",
        f"  lost acknowledged writes   {summary['lost_acknowledged_writes']} (of {summary['acknowledged_writes']} acknowledged)",
        f"  failover (simulated s)     p50 {failover['p50']:.3f}  p99 {failover['p99']:.3f}  max {failover['max']:.3f}  (n={failover['n']})",
        f"  write stall (simulated s)  p50 {stall['p50']:.3f}  p99 {stall['p99']:.3f}  max {stall['max']:.3f}  (n={stall['n']})",
        f"  no writable primary        {summary['unavailable_seconds_total']:.1f} s in all; per run p50 {unavailable['p50']:.2f}  "
        f"p99 {unavailable['p99']:.2f}  max {unavailable['max']:.2f}",
        f"  speed                      {summary['seeds_per_minute']:.0f} seeds/min ({summary['wall_seconds']:.1f} s wall, "
        f"{summary['simulated_seconds']:.0f} simulated s)",
    ]
    for failure in summary["violating_seeds"][:50]:
        lines.append(f"  VIOLATION {failure['scenario']} seed {failure['seed']}: {failure['first'][:240]}")
        lines.append(f"    reproduce: python -m sim dr --scenario {failure['scenario']} --seed {failure['seed']}"
                     + (f" --minutes {summary['minutes']:g}" if summary["minutes"] else "")
                     + "".join(f" --bug {bug}" for bug in summary.get("bugs", [])) + " --out DIR")
    return "\n".join(lines)
