"""The report of a run: `summary.md`, `summary.json`, `chart.png` and the console table.

Locust writes its own `report.html` and `locust_stats*.csv` next to them. The chart has three
panels on one time axis (seconds since the first arrival): interactions created, answered and
abandoned per second; request latency p50 and p99 per second; requests and failures per
second. The failover (kill, client-seen outage) and the stress steps are marked.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .checks import Result, failover_window, limiting_process
from .records import percentile, read_locust_totals

if TYPE_CHECKING:
    from .rundata import Run


def _mark(result: Result) -> str:
    return {True: "PASS", False: "FAIL", None: "info"}[result.passed]


def verdict(results: list[Result]) -> str:
    return "PASS" if all(result.passed is not False for result in results) else "FAIL"


def table(run: Run, results: list[Result]) -> str:
    width = max(len(result.name) for result in results) + 2
    lines = ["", "=" * 100, f" load test {run.plan['shape']}: {verdict(results)}    ({run.out})", "-" * 100]
    for result in results:
        lines.append(f" {_mark(result):5} {result.name:<{width}} {result.value:<22} target {result.target}")
        if result.detail:
            lines.append(f"{'':7}{result.detail}")
    if run.plan["shape"] == "stress":
        lines.append("-" * 100)
        lines.extend(" " + line for line in _steps_table(run.figures.get("steps", [])))
    lines += ["-" * 100, f" summary {run.out / 'summary.md'}  chart {run.out / 'chart.png'}  Locust {run.out / 'report.html'}", "=" * 100]
    return "\n".join(lines)


def _steps_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| rate (calls/s) | created/s | calls a day | service level | p50 | p99 | over the p99 limit: requests · node's commands "
        "| errors | requests/s | CPU ms/call primary · standby · Locust | node: command ms · commit ms · records/batch | busiest | holds |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|---|---|",
    ]

    def number(value: Any, digits: int = 0, unit: str = "") -> str:
        return "-" if value is None else f"{value:.{digits}f}{unit}"

    def percent(share: float | None) -> str:
        return "-" if share is None else f"{share * 100:.2f} %"

    for row in rows:
        cpu = row.get("cpu_ms_per_call", {})
        nodes = [name for name in cpu if name not in ("locust", "witness")]
        primary = row.get("primary")
        standby = next((name for name in nodes if name != primary), None)
        pipeline = row.get("pipeline", {})
        level = "-" if row["service_level"] is None else f"{row['service_level'] * 100:.1f} %"
        lines.append(
            f"| {row['rate']:g}{' (again)' if row.get('again') else ''} | {row['achieved']:.1f} | {row['achieved'] * 86400:,.0f} | {level} | {number(row['p50_ms'], 0, ' ms')} "
            f"| {number(row['p99_ms'], 0, ' ms')} | {percent(row.get('slow_share'))} · {percent(pipeline.get('slow_share'))} "
            f"| {row['error_ratio'] * 100:.2f} % | {row['requests_per_second']:.0f} "
            f"| {number(cpu.get(primary or ''), 1)} · {number(cpu.get(standby or ''), 1)} · {number(cpu.get('locust'), 1)} "
            f"| {number(pipeline.get('command_ms'), 1)} · {number(pipeline.get('commit_ms'), 1)} · {number(pipeline.get('batch_records'), 1)} "
            f"| {limiting_process(row)} | {'yes' if row['holds'] else 'no: ' + ', '.join(row['reasons'])} |"
        )
    return lines


def _relative(span: Any, run: Run) -> str:
    if not span:
        return "-"
    t0 = (run.journal.t0 if run.journal else None) or run.started
    return f"+{span[0] - t0:.1f} s to +{span[1] - t0:.1f} s after the first arrival"


def _upgrade_section(run: Run, upgrade: dict[str, Any]) -> list[str]:
    t0 = (run.journal.t0 if run.journal else None) or run.started
    lines = ["", "## Rolling upgrade", ""]
    if upgrade.get("note"):
        lines += [f"- stopped: {upgrade['note']}", ""]
    lines += ["| step | started | took | detail |", "|---|---:|---:|---|"]
    for step in upgrade["steps"]:
        lines.append(f"| {step['step']} | +{step['start'] - t0:.1f} s | {step['seconds']:.2f} s | {step['detail']} |")
    lines += ["", "| after | LSN | state hashes | tries |", "|---|---:|---|---:|"]
    for entry in upgrade["hashes"]:
        hashes = ", ".join(f"{node} {value[:12]}" for node, value in entry["hashes"].items())
        lines.append(f"| {entry['step']} | {entry['lsn']} | {'equal' if entry['equal'] else 'DIFFER'}: {hashes} | {entry['tries']} |")
    lines += ["", "| after | primary | active core version | probe offered to the agent of the rule |", "|---|---|---:|---|"]
    for probe in upgrade["probes"]:
        lines.append(f"| {probe['step']} | {probe['node']} | {probe['active_core_version']} | {probe['rule']} |")
    if "alarm_comparisons" in upgrade:
        lines.append(f"\nDivergence alarm: {upgrade['alarm_comparisons']} state comparisons by the primaries, "
                     f"{upgrade['alarm_divergences']} differed.")
    lines.append(f"\nLongest client-seen outage during the upgrade: {upgrade.get('outage_seconds')} s "
                 f"({upgrade.get('clients_with_outage')} clients saw one); left out of the steady-state latency and error "
                 f"figures: {_relative(upgrade.get('window'), run)}.")
    return lines


def write(run: Run, results: list[Result]) -> None:
    out = run.out
    figures = run.figures
    plan = run.plan
    totals = read_locust_totals(out)
    lines = [
        f"# Load test `{plan['shape']}`: {verdict(results)}", "",
        f"- when: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(run.started or time.time()))}; folder `{out}`",
        f"- cluster: two nodes and a witness from `{run.options.config}` ({run.options.mode or 'sync'} mode), "
        + ("through HAProxy" if run.options.haproxy else "clients find the primary themselves"),
    ]
    if plan["shape"] == "day":
        lines.append(
            f"- workload: {len(plan['calls'])} calls of the `{plan['scenario']}` day compressed {plan['factor']:.1f} times "
            f"into {plan['duration'] / 60:g} min (a model second lasts {1000 / plan['factor']:.1f} ms); "
            f"{len(plan['agents'])} agent desks, a PBX, a supervisor"
        )
    else:
        lines.append(
            f"- workload: {len(plan['agents'])} generated agents answering at once and talking {plan['talk']:g} s; "
            f"rates {', '.join(f'{rate:g}' for rate, _ in plan['steps'])} calls/s, {plan['steps'][0][1]:g} s each"
        )
    if totals:
        lines.append(
            f"- Locust: {totals.get('Request Count')} requests, {totals.get('Failure Count')} failures, "
            f"median {totals.get('Median Response Time')} ms, p99 {totals.get('99%')} ms (whole run, every retry counted)"
        )
    lines += ["", "## Checks", "", "| | check | value | target | detail |", "|---|---|---|---|---|"]
    for result in results:
        lines.append(f"| {_mark(result)} | {result.name} | {result.value} | {result.target} | {result.detail} |")
    if plan["shape"] == "stress":
        lines += ["", "## Ramp", "", *_steps_table(figures.get("steps", [])), "",
                  f"Breaking point: **{figures.get('breaking_point', 0):g} calls/s** "
                  f"({figures.get('breaking_point', 0) * 86400:,.0f} calls a day). Limit: {figures.get('limit')}.",
                  "", f"Without the p99 limit (service level and errors only): {figures.get('capacity_without_latency_limit', 0):g} calls/s. "
                  "CPU time per call at the highest rate reached would let a whole core carry: "
                  + ", ".join(f"{name} {value:,} calls/s" for name, value in (figures.get("cpu_bound_calls_per_second") or {}).items()) + "."]
    if run.failover.kill_time is not None or run.failover.note:
        failover = run.failover
        lines += ["", "## Failover", ""]
        if failover.note:
            lines.append(f"- note: {failover.note}")
        if failover.kill_time is not None:
            lines += [
                f"- killed: node {failover.killed} (SIGKILL); new primary: node {failover.new_primary}",
                f"- kill → new primary answers /readyz: {figures.get('kill_to_readyz_seconds')} s",
                f"- kill → first acknowledged write seen by a client: {figures.get('kill_to_first_write_seconds')} s",
                f"- longest client-seen outage (first failed write → next success, per client): {figures.get('outage_seconds')} s "
                f"({figures.get('clients_with_outage')} clients saw one)",
                f"- old primary back as standby: {figures.get('rejoin_seconds')} s after its restart",
                f"- window left out of the steady-state latency and error figures: {_relative(figures.get('failover_window'), run)}",
            ]
    upgrade = figures.get("upgrade")
    if upgrade:
        lines += _upgrade_section(run, upgrade)
    counts = figures.get("counts")
    if counts:
        lines += ["", "## Counts", "", "| | offered | answered | abandoned |", "|---|---:|---:|---:|"]
        for who in ("acd", "locust"):
            row = counts[who]
            lines.append(f"| {who} | {row['offered']} | {row['answered']} | {row['abandoned']} |")
        lines.append(f"\nStatistics days (Asia/Seoul local dates, summed when a run crosses midnight): {', '.join(counts['days'])}.")
    lines += ["", "## Files", "",
              "- `report.html`, `locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`: Locust's own report",
              "- `journal-*.jsonl`: every interaction Locust created and what happened to it; `timeline-*.json`: per-second latency",
              "- `chart.png`: calls, latency and errors over time; `summary.json`: the figures above",
              "- `plan.json`, `source.toml`, `cluster.toml`: what ran; `logs/`: node and witness logs; `locust.log`"]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {
        "shape": plan["shape"], "verdict": verdict(results), "figures": figures,
        "checks": [result.__dict__ for result in results],
        "failover": run.failover.__dict__, "upgrade_done": run.upgrade.done, "locust_exit": run.locust_exit, "locust_totals": totals,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    try:
        chart(run)
    except Exception as error:  # the chart is a convenience; a broken one must not hide the verdict
        (out / "chart-error.txt").write_text(repr(error), encoding="utf-8")


def chart(run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    journal = run.journal
    if journal is None:
        return
    t0 = journal.t0 or run.started
    per_second: dict[str, dict[int, int]] = {"created": defaultdict(int), "answered": defaultdict(int), "abandoned": defaultdict(int)}
    for kind, table_ in (("created", journal.created), ("answered", journal.answered), ("abandoned", journal.abandoned)):
        for event in table_.values():
            per_second[kind][int(event["t"] - t0)] += 1
    seconds = sorted(second for second in run.timeline if second >= t0 - 2)
    x = [second - t0 for second in seconds]
    p50 = [percentile(run.timeline[s].latency_ms, 0.5) for s in seconds]
    p99 = [percentile(run.timeline[s].latency_ms, 0.99) for s in seconds]
    requests = [run.timeline[s].requests for s in seconds]
    failures = [run.timeline[s].failures for s in seconds]

    figure, (calls, latency, errors) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    last = int(max(x, default=0)) + 1
    span = list(range(-2, last + 1))
    for kind, colour in (("created", "tab:blue"), ("answered", "tab:green"), ("abandoned", "tab:red")):
        calls.plot(span, [per_second[kind].get(k, 0) for k in span], label=kind, color=colour, linewidth=0.9)
    calls.set_ylabel("interactions / s")
    calls.legend(loc="upper right")
    latency.plot(x, p50, label="p50", color="tab:blue", linewidth=0.9)
    latency.plot(x, p99, label="p99", color="tab:orange", linewidth=0.9)
    latency.axhline(run.options.p99_ms, color="grey", linestyle=":", linewidth=0.8, label=f"{run.options.p99_ms:g} ms")
    latency.set_yscale("log")
    latency.set_ylabel("latency (ms)")
    latency.legend(loc="upper right")
    errors.plot(x, requests, label="requests", color="tab:blue", linewidth=0.9)
    errors.plot(x, failures, label="failures", color="tab:red", linewidth=0.9)
    errors.set_ylabel("per second")
    errors.set_xlabel("seconds since the first arrival")
    errors.legend(loc="upper right")
    excluded = failover_window(run)
    for axis in (calls, latency, errors):
        if run.failover.kill_time is not None:
            axis.axvline(run.failover.kill_time - t0, color="red", linestyle="--", linewidth=1.0)
            if excluded is not None:
                axis.axvspan(excluded[0] - t0, excluded[1] - t0, color="red", alpha=0.08)
        for step in journal.steps:
            axis.axvline(step["start"] - t0, color="grey", linewidth=0.5, alpha=0.5)
        for step in run.upgrade.steps:
            axis.axvline(step["end"] - t0, color="purple", linestyle="--", linewidth=0.8)
        if run.failover.kill_time is None and excluded is not None:
            axis.axvspan(excluded[0] - t0, excluded[1] - t0, color="purple", alpha=0.06)
    title = f"ACD load test '{run.plan['shape']}'"
    if run.failover.kill_time is not None:
        title += f": primary {run.failover.killed} killed at +{run.failover.kill_time - t0:.0f} s, client-seen outage {run.figures.get('outage_seconds')} s"
    if run.upgrade.steps:
        title += f": rolling upgrade from +{run.upgrade.steps[0]['start'] - t0:.0f} s ({len(run.upgrade.steps)} steps)"
    if run.plan["shape"] == "stress":
        title += f": breaking point {run.figures.get('breaking_point', 0):g} calls/s"
        for step in journal.steps:
            calls.text(step["start"] - t0, 0, f"{step['rate']:g}/s", fontsize=7, color="grey", va="bottom")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(run.out / "chart.png", dpi=110)
    plt.close(figure)
