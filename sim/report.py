"""What a run tells a person: KPI tables, `report.json`, per-interval CSV and PNG charts.

Every KPI comes from the core's own counters through `acd.core.kpis`, the module that defines
them for the API, `/metrics`, the wallboard and the export as well (docs/kpis.md): the report
of a day and `/v1/stats` of a node that applied the same commands show the same figures.

* offered: callers who reached the center (all channels), counted by arrival interval;
  call-back tasks are work, not callers, and are counted apart (requested, due, attempted,
  reached, completed).
* after hours: callers who arrived while their queue's calendar was closed (they left a number
  for a call-back, or heard the closed message); part of offered, never of the offered basis.
* service level: docs/kpis.md's two named bases, named as in the API: `service_level_offered`
  (the table's and the charts') is answered within the threshold over answered + abandoned -
  short abandons + left unanswered; `service_level` is over answered.
* waiting max: the most callers on the line at once in the interval (those ringing at an agent
  included: they are still waiting for an answer).
* longest wait: the longest any caller on the line had waited during the interval.
* agents by state: time-average number of agents in each state the core shows.
* occupancy: (offered + busy + wrap-up) over (ready + offered + busy + wrap-up) agent time.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, TextIO

import msgspec

from acd.core import kpis as kpi
from acd.core.state import Counters

from .engine import AGENT_STATES, DayRun, Tally, core_totals, record_row
from .workload import INTERVAL_SECONDS

INTERVAL_COLUMNS = [
    "day", "interval", "start", "offered", "after_hours", "answered", "answered_within", "abandoned",
    "short_abandoned", "left_unanswered", "callbacks_requested", "service_level_offered", "service_level", "asa",
    "abandon_rate",
    "waiting_max", "longest_wait", "agents_logged_in", *[f"agents_{state}" for state in AGENT_STATES],
    "occupancy",
]
INTERACTION_COLUMNS = [
    "id", "arrival", "queue", "final_queue", "channel", "topic", "vulnerable", "after_hours",
    "callback", "outcome", "wait", "answered_at", "agent", "ended_at", "transfers", "disposition",
    "abusive", "survey",
]


def _local(run: DayRun, at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, run.scenario.zone).replace(tzinfo=None)


def _callers(run: DayRun) -> list[Any]:
    return [r for r in run.records if r.outcome != "callback_task"]


def caller_figures(counters: Counters) -> dict[str, Any]:
    """The callers' figures of one interval, day or queue, from the core's counters (acd.core.kpis)."""
    return {
        "offered": counters.offered,
        "after_hours": counters.after_hours,
        "answered": counters.answered,
        "answered_within": counters.answered_within,
        "abandoned": counters.abandoned,
        "short_abandoned": counters.short_abandoned,
        "left_unanswered": counters.left_unanswered,
        "callbacks_requested": counters.callbacks_waiting + counters.callbacks_after_hours,
        # Named as everywhere else (the API, /metrics' basis label, docs/kpis.md).
        "service_level_offered": kpi.service_level(counters, "offered"),
        "service_level": kpi.service_level(counters, "answered"),
        "asa": kpi.asa(counters),
        "abandon_rate": kpi.abandon_rate(counters),
    }


def interval_rows(run: DayRun) -> list[dict[str, Any]]:
    """One row per day and 15-minute interval (the center's counters by arrival interval)."""
    rows = []
    for day_index, (day, day_start) in enumerate(zip(run.dates, run.day_starts, strict=True)):
        stats = run.center.state.stats.get(day.isoformat())
        intervals = stats.center.intervals if stats is not None else {}
        for interval in range(96):
            key = (day_index, interval)
            row: dict[str, Any] = {"day": day.isoformat(), "interval": interval,
                                   "start": _local(run, day_start + interval * INTERVAL_SECONDS).strftime("%H:%M")}
            row.update(caller_figures(intervals.get(interval) or Counters()))
            observed = run.intervals.get(key)
            seconds = observed.agent_seconds if observed is not None else dict.fromkeys(AGENT_STATES, 0.0)
            row["waiting_max"] = observed.waiting_max if observed is not None else 0
            row["longest_wait"] = observed.longest_wait if observed is not None else 0.0
            row["agents_logged_in"] = sum(seconds.values()) / INTERVAL_SECONDS
            for state in AGENT_STATES:
                row[f"agents_{state}"] = seconds[state] / INTERVAL_SECONDS
            row["occupancy"] = kpi.occupancy(seconds)
            rows.append(row)
    return rows


def _key_of(run: DayRun, at: float) -> tuple[int, int] | None:
    for index in range(len(run.day_starts) - 1, -1, -1):
        if at >= run.day_starts[index]:
            return index, min(95, int((at - run.day_starts[index]) // INTERVAL_SECONDS))
    return None


def _callers(run: DayRun) -> list[Any]:
    return [r for r in run.records if r.outcome != "callback_task"]


def day_totals(run: DayRun) -> list[dict[str, Any]]:
    """Each day's KPIs: acd.core.kpis over the core's center counters of the day."""
    threshold = run.scenario.target.threshold_seconds
    short = run.center.config.short_abandon_seconds
    rows = interval_rows(run)
    totals = []
    for day_index, day in enumerate(run.dates):
        tally = Tally()
        abusive = 0
        for record in _callers(run):
            key = _key_of(run, record.arrival)
            if key is not None and key[0] == day_index:
                tally.add(record, threshold, short)
                abusive += record.abusive and record.answered_at is not None
        stats = run.center.state.stats.get(day.isoformat())
        core = stats.center.total if stats is not None else Counters()
        figures = kpi.kpis(core)
        day_rows = [r for r in rows if r["day"] == day.isoformat()]
        agent_seconds = {state: sum(r[f"agents_{state}"] for r in day_rows) * INTERVAL_SECONDS for state in AGENT_STATES}
        totals.append({
            **caller_figures(core),
            "date": day.isoformat(),
            "weekday": day.strftime("%a"),
            "day_type": run.scenario.day_type(day),
            "transferred": tally.transferred,
            "sent_out": core.transfers_out,
            "waiting_max": max((r["waiting_max"] for r in day_rows), default=0),
            "longest_wait": max((r["longest_wait"] for r in day_rows), default=0.0),
            "occupancy": kpi.occupancy(agent_seconds),
            "agent_hours": {state: seconds / 3600 for state, seconds in agent_seconds.items()},
            "abusive_flagged": abusive,
            "first_contact_resolution": figures.fcr,
            "first_contacts": figures.first_contacts,
            "not_recorded": figures.not_recorded,
            "aht": figures.aht_seconds,
            "aht_by_channel": figures.aht_by_channel,
            "handled": figures.handled,
            "surveys": figures.surveys,
            "satisfaction": figures.csat,
            "survey_score_100": kpi.ratio(core.survey_points * 20, core.surveys),
            "callbacks": {
                "requested": figures.callbacks_requested, "requested_waiting": figures.callbacks_waiting,
                "requested_after_hours": figures.callbacks_after_hours, "promised": figures.callbacks_promised,
                "due": figures.callbacks_due, "attempted": figures.callbacks_attempted, "reached": figures.callbacks_reached,
                "completed": figures.callbacks_completed, "delay_seconds": figures.callback_delay_seconds,
            },
            "callbacks_completed": figures.callbacks_completed,
            "kpis": msgspec.to_builtins(figures),
        })
    return totals


def queue_totals(run: DayRun) -> dict[str, dict[str, Any]]:
    """Each queue's figures over the run, from the core's counters (by arrival in the queue)."""
    threshold_of = {q.name: q.service_level_threshold for q in run.center.config.queues}
    external = {q.name for q in run.center.config.queues if q.external}
    summed: dict[str, Counters] = {}
    for day in run.dates:
        stats = run.center.state.stats.get(day.isoformat())
        if stats is None:
            continue
        for name, queue_day in stats.queues.items():
            kpi.add(summed.setdefault(name, Counters()), queue_day.total)
    result: dict[str, dict[str, Any]] = {}
    for name, total in summed.items():
        entry = caller_figures(total)
        entry.update({
            "threshold_seconds": threshold_of.get(name), "external": name in external,
            "overflows": total.overflows, "transfers_in": total.transfers_in, "transfers_out": total.transfers_out,
            "handled": total.handled, "callbacks_due": total.callbacks_due, "callbacks_reached": total.callbacks_reached,
        })
        result[name] = entry
    return dict(sorted(result.items(), key=lambda item: -item[1]["offered"]))


# ---------------------------------------------------------------------------------- text


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 600:
        return f"{value / 60:.0f} min"
    return f"{value:.1f} s"


def format_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells: list[str]) -> str:
        parts = [str(cell).ljust(w) if a == "l" else str(cell).rjust(w) for cell, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def print_day_report(run: DayRun, out: TextIO) -> None:
    scenario = run.scenario
    totals = day_totals(run)
    target = scenario.target
    print(f"{run.center.config.name} · scenario {scenario.scenario.name} · seed {run.seed} · "
          f"{len(run.dates)} day{'s' if len(run.dates) > 1 else ''}", file=out)
    headers = ["KPI", *[f"{t['date']} {t['weekday']}" for t in totals], "target"]
    kpis: list[tuple[str, Any, str]] = [
        ("callers offered", lambda t: f"{t['offered']:,}", ""),
        ("  after hours (call-back / closed)", lambda t: f"{t['after_hours']:,}", ""),
        ("answered", lambda t: f"{t['answered']:,}", ""),
        (f"  within {target.threshold_seconds:g} s", lambda t: f"{t['answered_within']:,}", ""),
        ("abandoned", lambda t: f"{t['abandoned']:,}", ""),
        (f"  short (< {run.center.config.short_abandon_seconds:g} s)", lambda t: f"{t['short_abandoned']:,}", ""),
        ("left the line unanswered", lambda t: f"{t['left_unanswered']:,}", ""),
        ("  of which sent to a district", lambda t: f"{t['sent_out']:,}", ""),
        ("  of which asked for a call-back", lambda t: f"{t['callbacks']['requested_waiting']:,}", ""),
        ("transferred by the agent", lambda t: f"{t['transferred']:,}", ""),
        ("service level (offered basis)", lambda t: _percent(t["service_level_offered"]), f"{target.service_level * 100:.0f} % in {target.threshold_seconds:g} s"),
        ("service level (answered basis)", lambda t: _percent(t["service_level"]), ""),
        ("ASA", lambda t: _seconds(t["asa"]), ""),
        ("abandon rate (after short abandons)", lambda t: _percent(t["abandon_rate"]), ""),
        ("most waiting at once", lambda t: str(t["waiting_max"]), ""),
        ("longest wait", lambda t: _seconds(t["longest_wait"]), ""),
        ("occupancy", lambda t: _percent(t["occupancy"]), ""),
        ("AHT voice (talk + hold + wrap-up)", lambda t: _seconds(t["aht"]), ""),
        ("AHT chat and SMS (per session)", lambda t: " / ".join(_seconds(t["aht_by_channel"].get(ch)) for ch in ("chat", "sms")), ""),
        ("first-contact resolution", lambda t: _percent(t["first_contact_resolution"]), "78 % (Busan)"),
        ("  wrap-ups not recorded (not in FCR)", lambda t: f"{t['not_recorded']:,}", ""),
        ("call-backs requested (line / after hours / promised)",
         lambda t: f"{t['callbacks']['requested_waiting']} / {t['callbacks']['requested_after_hours']} / {t['callbacks']['promised']}", ""),
        ("call-backs due / attempted / reached / completed",
         lambda t: f"{t['callbacks']['due']} / {t['callbacks']['attempted']} / {t['callbacks']['reached']} / {t['callbacks']['completed']}", ""),
        ("call-back delay (request to completion)", lambda t: _seconds(t["callbacks"]["delay_seconds"]), ""),
        ("surveys / satisfied", lambda t: f"{t['surveys']} / {_percent(t['satisfaction'])}", ""),
        ("abusive calls flagged", lambda t: str(t["abusive_flagged"]), ""),
        ("agent hours logged in", lambda t: f"{sum(t['agent_hours'].values()):.1f}", ""),
    ]
    rows = [[name, *[render(t) for t in totals], goal] for name, render, goal in kpis]
    print(format_table(headers, rows, "l" + "r" * (len(headers) - 2) + "l"), file=out)
    queues = queue_totals(run)
    print(file=out)
    queue_rows = [[name + (" (external)" if q["external"] else ""), f"{q['offered']:,}", f"{q['answered']:,}", _percent(q["service_level_offered"]),
                   _seconds(q["asa"]), f"{q['abandoned']:,}", f"{q['overflows']:,}", f"{q['transfers_in']:,}",
                   f"{q['callbacks_requested']:,}", f"{q['callbacks_reached']:,}"]
                  for name, q in queues.items()]
    print(format_table(["queue", "offered", "answered", "SL", "ASA", "abandoned", "overflows", "transfers in", "call-backs asked",
                        "call-backs reached"], queue_rows), file=out)
    print("queues count each caller in every queue it enters (a transfer or overflow enters another); an external queue "
          "answers nothing here, so its SL is -", file=out)
    seconds = run.wall_seconds
    print(f"\n{run.calls:,} callers, {run.commands:,} core commands in {seconds:.2f} s, {run.cpu_seconds:.2f} s CPU "
          f"({run.calls / seconds:,.0f} calls/s); trace {run.trace_hash[:16]}", file=out)
    if run.rejections:
        print(f"rejections: {run.rejections}", file=out)


# ---------------------------------------------------------------------------------- files


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_day_outputs(run: DayRun, out_dir: Path, charts: bool = True) -> dict[str, Path]:
    """report.json, intervals.csv, interactions.csv and the charts; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = interval_rows(run)
    paths = {"report": out_dir / "report.json", "intervals": out_dir / "intervals.csv",
             "interactions": out_dir / "interactions.csv"}
    with paths["intervals"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=INTERVAL_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    with paths["interactions"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(INTERACTION_COLUMNS)
        for record in run.records:
            row = list(record_row(record))
            for index in (1, 11, 13):  # times as local ISO
                if row[index] is not None:
                    row[index] = _local(run, row[index]).isoformat(timespec="seconds")
            if row[10] is not None:
                row[10] = round(row[10], 3)
            writer.writerow(row)
    if charts:
        paths.update(write_charts(run, rows, out_dir))
    report = {
        "scenario": run.scenario.scenario.name,
        "scenario_path": run.scenario.path,
        "center": run.center.config.name,
        "seed": run.seed,
        "dates": [d.isoformat() for d in run.dates],
        "target": {"service_level": run.scenario.target.service_level, "threshold_seconds": run.scenario.target.threshold_seconds},
        "trace_hash": run.trace_hash,
        "state_hash": run.state_hash,
        "calls": run.calls,
        "commands": run.commands,
        "wall_seconds": run.wall_seconds,
        "cpu_seconds": run.cpu_seconds,
        "calls_per_second": run.calls / run.wall_seconds if run.wall_seconds else None,
        "rejections": run.rejections,
        "days": day_totals(run),
        "queues": queue_totals(run),
        "core_totals": core_totals(run.center),
        "intervals": [r for r in rows if r["offered"] or r["agents_logged_in"]],
        "files": {name: path.name for name, path in paths.items()},
    }
    paths["report"].write_text(json.dumps(_clean(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


def write_charts(run: DayRun, rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Four PNG charts over the active part of the run (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    active = [i for i, r in enumerate(rows) if r["offered"] or r["agents_logged_in"] > 0.01 or r["waiting_max"]]
    if not active:
        active = [0, len(rows) - 1]
    first, last = max(0, active[0] - 1), min(len(rows) - 1, active[-1] + 1)
    shown = rows[first:last + 1]
    starts = [run.day_starts[run.dates.index(dt.date.fromisoformat(r["day"]))] + r["interval"] * INTERVAL_SECONDS for r in shown]
    x = [_local(run, at) for at in starts]
    width = INTERVAL_SECONDS / 86400 * 0.85
    scenario = run.scenario
    target = scenario.target
    days = run.dates
    span = days[0].strftime("%Y-%m-%d (%a)") if len(days) == 1 else f"{days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}"
    where = f"{run.center.config.name} · {scenario.scenario.name} · {span} · seed {run.seed}"
    multi_day = len(days) > 1

    def finish(figure: Any, axes: list[Any], name: str) -> Path:
        for axis in axes:
            axis.grid(True, axis="y", alpha=0.3)
            if multi_day:
                axis.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M"))
            else:
                axis.xaxis.set_major_locator(mdates.HourLocator())
                axis.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        axes[-1].set_xlabel("local time (start of each 15-minute interval)" if not multi_day else "local time")
        figure.autofmt_xdate()
        figure.tight_layout()
        path = out_dir / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path

    paths: dict[str, Path] = {}
    plt.rcParams.update({"font.size": 9})

    # 1. Arrivals and answered.
    figure, axis = plt.subplots(figsize=(11, 4.2))
    axis.bar(x, [r["offered"] for r in shown], width=width, align="edge", color="#b8cfe6", label="callers offered (arrivals)")
    axis.bar(x, [r["after_hours"] for r in shown], width=width, align="edge", color="#999999", label="after hours (call-back requested)")
    centers = [d + dt.timedelta(seconds=INTERVAL_SECONDS / 2) for d in x]
    axis.plot(centers, [r["answered"] for r in shown], color="#1f5f9f", marker=".", label="answered (by arrival interval)")
    axis.plot(centers, [r["abandoned"] for r in shown], color="#c0392b", marker=".", label="abandoned")
    axis.plot(centers, [r["left_unanswered"] for r in shown], color="#e67e22", linestyle="--",
              label="left unanswered (call-back asked, overflowed, sent out)")
    axis.set_ylabel("callers per 15-minute interval")
    axis.set_title(f"Arrivals and answered calls\n{where}")
    axis.set_ylim(0, max([r["offered"] for r in shown] + [1]) * 1.35)  # room for the legend
    axis.legend(loc="upper left", fontsize=8, ncol=3)
    paths["chart_arrivals"] = finish(figure, [axis], "arrivals.png")

    # 2. Waiting callers and the longest wait.
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
    top.step(x, [r["waiting_max"] for r in shown], where="post", color="#1f5f9f")
    top.fill_between(x, [r["waiting_max"] for r in shown], step="post", alpha=0.25, color="#1f5f9f")
    top.set_ylabel("callers waiting or ringing\n(most at once)")
    top.set_ylim(0, max([r["waiting_max"] for r in shown] + [1]) * 1.15)
    top.set_title(f"Callers in queue and longest wait\n{where}")
    bottom.step(x, [r["longest_wait"] / 60 for r in shown], where="post", color="#c0392b", label="longest wait in the interval")
    bottom.plot(centers, [(r["asa"] or 0) / 60 for r in shown], color="#555555", marker=".", linewidth=0.8, label="ASA (answered on the line)")
    bottom.axhline(target.threshold_seconds / 60, color="#27ae60", linestyle="--", label=f"service-level threshold {target.threshold_seconds:g} s")
    bottom.set_ylabel("minutes")
    bottom.set_ylim(0, max([r["longest_wait"] / 60 for r in shown] + [target.threshold_seconds / 60]) * 1.3)
    bottom.legend(loc="upper left", fontsize=8, ncol=3)
    paths["chart_waiting"] = finish(figure, [top, bottom], "waiting.png")

    # 3. Service level against the target.
    figure, axis = plt.subplots(figsize=(11, 4.2))
    levels = [r["service_level_offered"] for r in shown]
    colours = ["#27ae60" if (v is not None and v >= target.service_level) else "#c0392b" for v in levels]
    axis.bar(x, [(v or 0) * 100 for v in levels], width=width, align="edge", color=colours, alpha=0.8)
    axis.axhline(target.service_level * 100, color="#333333", linestyle="--",
                 label=f"target {target.service_level * 100:.0f} % answered within {target.threshold_seconds:g} s")
    axis.plot(centers, [(r["abandon_rate"] or 0) * 100 if r["offered"] - r["after_hours"] else None for r in shown],
              color="#e67e22", marker=".", label="abandon rate")
    totals = day_totals(run)
    level = ", ".join(_percent(t["service_level_offered"]) for t in totals)
    axis.set_ylim(0, 105)
    axis.set_ylabel("% answered in time (offered basis)")
    axis.set_title(f"Service level by interval, offered basis (docs/kpis.md; green: target met) · day: {level}\n{where}")
    axis.legend(loc="lower right", fontsize=8)
    paths["chart_service_level"] = finish(figure, [axis], "service_level.png")

    # 4. Agents by state.
    figure, axis = plt.subplots(figsize=(11, 4.2))
    palette = {"busy": "#1f5f9f", "wrapup": "#6fa8dc", "offered": "#f1c232", "ready": "#93c47d",
               "recovering": "#c27ba0", "not_ready": "#b7b7b7"}
    labels = {"busy": "talking", "wrapup": "wrap-up", "offered": "ringing", "ready": "ready (idle)",
              "recovering": "recovering (abuse)", "not_ready": "not ready (break, lunch, missed)"}
    order = ["busy", "wrapup", "offered", "ready", "recovering", "not_ready"]
    axis.stackplot(x, *[[r[f"agents_{s}"] for r in shown] for s in order], labels=[labels[s] for s in order],
                   colors=[palette[s] for s in order], step="post")
    axis.set_ylabel("agents (average over the interval)")
    axis.set_title(f"Agents by state\n{where}")
    axis.set_ylim(0, max([r["agents_logged_in"] for r in shown] + [1]) * 1.3)  # room for the legend
    axis.legend(loc="upper left", fontsize=8, ncol=3)
    paths["chart_agents"] = finish(figure, [axis], "agents.png")
    return paths


# ---------------------------------------------------------------------------------- mmc


def print_mmc(result: dict[str, Any], out: TextIO) -> None:
    analytic = result["analytic"]
    ci = result["ci"]
    print(f"M/M/{result['agents']}{'+M' if result['patience_seconds'] else ''}: {result['arrivals_per_hour']:g} calls/h, "
          f"AHT {result['aht_seconds']:g} s" + (f", patience {result['patience_seconds']:g} s" if result["patience_seconds"] else "")
          + f", {result['hours']:.1f} h measured after {result['warmup_hours']:.1f} h warm-up"
          + (f" in each of {result['replications']} independent replications" if result.get("method") == "replications"
             else f" in {result['batches']} batches of one run")
          + f", seed {result['seed']}", file=out)
    rows = []
    for name, label, scale, unit in [("service_level", f"service level ({result['threshold_seconds']:g} s)", 100, " %"),
                                     ("asa", "ASA", 1, " s"), ("abandon_rate", "abandon rate", 100, " %"),
                                     ("occupancy", "occupancy", 100, " %")]:
        low, high = ci[name]
        rows.append([label, f"{result[name] * scale:.2f}{unit}", f"[{low * scale:.2f}, {high * scale:.2f}]",
                     f"{analytic[name] * scale:.2f}{unit}"])
    print(format_table(["figure", "simulated", "95 % interval", analytic["model"].replace("_", " ").title()], rows), file=out)
    if result.get("method") == "replications":
        print("simulated: the mean of the replications; interval: mean +- t(0.975, R - 1) x sd / sqrt(R)", file=out)
    print(f"{result['offered']:,} calls measured ({result['simulated_calls']:,} simulated) in {result['wall_seconds']:.1f} s, "
          f"{result['calls_per_second']:,.0f} calls/s through the core", file=out)


# ---------------------------------------------------------------------------------- staffing


STAFF_COLUMNS = ["interval", "start", "arrivals_per_hour", "aht", "erlang_agents", "agents", "offered",
                 "service_level", "asa", "abandon_rate", "occupancy", "met"]


def print_staffing(plan: dict[str, Any], out: TextIO) -> None:
    target = plan["target"]
    print(f"{plan['center']} · scenario {plan['scenario']} · {plan['date']} · target {target['service_level'] * 100:.0f} % in "
          f"{target['threshold_seconds']:g} s" + (f", abandon <= {plan['max_abandon'] * 100:.1f} %" if plan["max_abandon"] is not None else "")
          + f" · {plan['model']} · pooled voice agents · {plan['replications']} simulated days per round"
          + (" · with after-hours call-backs" if plan["after_hours"] else ""), file=out)
    rows = []
    for row in plan["intervals"]:
        rows.append([row["start"], f"{row['arrivals_per_hour']:.0f}", f"{row['aht']:.0f}", str(row["erlang_agents"]),
                     str(row["agents"]), str(row["offered"]), _percent(row["service_level"]), _seconds(row["asa"]),
                     _percent(row["abandon_rate"]), _percent(row["occupancy"]), "yes" if row["met"] else "NO"])
    print(format_table(["interval", "calls/h", "AHT s", "Erlang N", "confirmed N", "sim calls", "sim SL", "sim ASA",
                        "abandon", "occupancy", "met"], rows), file=out)
    print(f"\nagent-hours: Erlang {plan['erlang_agent_hours']:.1f}, confirmed {plan['agent_hours']:.1f}; "
          f"day service level {_percent(plan['service_level'])}, rounds {plan['rounds']}, "
          f"{plan['simulated_calls']:,} calls simulated in {plan['wall_seconds']:.1f} s", file=out)


def write_staffing_csv(plan: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=STAFF_COLUMNS)
        writer.writeheader()
        for row in plan["intervals"]:
            writer.writerow({k: ("" if row[k] is None else round(row[k], 4) if isinstance(row[k], float) else row[k]) for k in STAFF_COLUMNS})
    return path
