"""The pass/fail checks of a load test run, from the ACD's answers and Locust's own records.

Every check is a `Result`: passed True or False, or None when a figure is reported but not
judged (for example the service level of a day compressed so far that HTTP noise decides it).

Checks, for every shape:
* no interaction lost: every id Locust created (201) or was offered as an ACD-made call-back
  is known to the primary at the end;
* none stranded: each is in a terminal state (completed, abandoned, transferred, closed), and
  the standby, once caught up, reports the very same state (one state per interaction);
* counts agree: the ACD's offered, answered and abandoned for the day(s) of the run equal
  Locust's records of the callers it created (distinct ids created, answered by a desk,
  abandoned by the PBX); the ACD's own call-back tasks are counted apart, as the ACD does;
* every request eventually got an answer (no retry gave up, no create refused);
* outside the failover window: error ratio and p99 latency within their limits;
* with a failover: the longest outage a client saw (first failed write to next success);
* with a rolling upgrade (`--upgrade-at`): every step done, equal state hashes of both nodes
  after every step, the probe's routing rule that of core version 1 until finalize and of
  version 2 after it, the divergence alarm's comparisons without a mismatch, and the longest
  outage a client saw during the upgrade.
Per shape: the day's service level; the stress ramp's breaking point; the soak's flatness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .records import Window, window

if TYPE_CHECKING:
    from .rundata import Run

TERMINAL = {"completed", "abandoned", "transferred", "closed"}
# After the last client-seen outage ends, event streams reconnect, offers that rang out during
# the outage come back and the queue that built up drains: latency in these seconds belongs
# to the failover, not to steady operation.
SETTLE_SECONDS = 5.0


@dataclass
class Result:
    name: str
    passed: bool | None
    value: str
    target: str
    detail: str = ""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def failover_window(run: Run) -> tuple[float, float] | None:
    """[kill, end of the last client-seen outage + settle]; with a rolling upgrade, [its start,
    the end of its last step or of the last client-seen outage in it + settle]; else None."""
    failover = run.failover
    if failover.kill_time is None:
        upgrade = run.upgrade
        if upgrade.started is None:
            return None
        end = max([upgrade.ended or upgrade.started, *(outage["end"] for outage in upgrade_outages(run))])
        return upgrade.started, end + SETTLE_SECONDS
    kill = failover.kill_time
    outages = related_outages(run)
    end = max((outage["end"] for outage in outages), default=failover.promoted_time or kill)
    return kill, end + SETTLE_SECONDS


def related_outages(run: Run) -> list[dict[str, Any]]:
    kill = run.failover.kill_time
    if kill is None or run.journal is None:
        return []
    return [outage for outage in run.journal.outages if outage["end"] >= kill and outage["start"] <= kill + 60]


def upgrade_outages(run: Run) -> list[dict[str, Any]]:
    upgrade = run.upgrade
    if upgrade.started is None or run.journal is None:
        return []
    end = upgrade.ended or upgrade.started
    return [outage for outage in run.journal.outages if outage["end"] >= upgrade.started and outage["start"] <= end]


def steady_window(run: Run) -> tuple[float, float]:
    journal = run.journal
    assert journal is not None
    start = journal.t0 or run.started
    end = journal.end or (run.started + run.locust_seconds)
    return start, end + 1


def evaluate(run: Run) -> list[Result]:
    results: list[Result] = []
    figures = run.figures
    journal = run.journal
    if journal is None or not run.states:
        results.append(Result("the run completed", False, "no data", "", "; ".join(run.errors) or "see the logs"))
        return results
    for error in run.errors:
        results.append(Result("the run completed", False, "error", "", error))

    # ------------------------------------------------------------------ every interaction
    ids = journal.interactions
    primary_states = run.states.get(run.primary_at_end or "", {})
    lost = sorted(call_id for call_id in ids if primary_states.get(call_id) is None)
    stranded = sorted(call_id for call_id in ids if primary_states.get(call_id) not in TERMINAL and call_id not in lost)
    late = sorted(created.get("late", 0.0) for created in journal.created.values())
    figures["create_late_p99_ms"] = round(late[int(0.99 * (len(late) - 1))] * 1000, 1) if late else None
    figures.update(interactions=len(ids), created=len(journal.created), acd_created=len(journal.acd_created), lost=len(lost), stranded=len(stranded))
    states: dict[str, int] = {}
    for call_id in ids:
        state = str(primary_states.get(call_id))
        states[state] = states.get(state, 0) + 1
    figures["states"] = states
    results.append(Result(
        "no interaction lost", not lost, f"{len(lost)} of {len(ids)}", "0",
        ("e.g. " + ", ".join(lost[:5])) if lost else f"all {len(ids)} known to node {run.primary_at_end}",
    ))
    results.append(Result(
        "none stranded (each in one terminal state)", not stranded, f"{len(stranded)}", "0",
        ("e.g. " + ", ".join(f"{i}={primary_states.get(i)}" for i in stranded[:5])) if stranded
        else ", ".join(f"{state} {count}" for state, count in sorted(states.items())),
    ))
    others = [name for name in run.states if name != run.primary_at_end]
    if others:
        standby = others[0]
        differ = sorted(call_id for call_id in ids if run.states[standby].get(call_id) != primary_states.get(call_id))
        figures["nodes_differ"] = len(differ)
        results.append(Result(
            "both nodes agree on every interaction", not differ, f"{len(differ)} differ", "0",
            ("e.g. " + ", ".join(f"{i}: {primary_states.get(i)} vs {run.states[standby].get(i)}" for i in differ[:5])) if differ
            else f"node {standby} (standby) matches node {run.primary_at_end}",
        ))
    elif run.standby_caught_up is False:
        results.append(Result("both nodes agree on every interaction", False, "standby behind", "caught up", "the standby did not reach the primary's LSN within 30 s"))

    if run.verify:
        problems = [f"{name}: {problem}" for name, report in run.verify.items() for problem in report.get("problems", [])]
        positions = {(report.get("lsn"), report.get("state_hash")) for report in run.verify.values() if not report.get("problems")}
        lsns = {report.get("lsn") for report in run.verify.values()}
        same = len(positions) == 1 or len(lsns) > 1  # equal hashes are expected only at equal LSNs
        figures["verify"] = run.verify
        results.append(Result(
            "each node's log replays to its state (acd verify)", not problems and same,
            ", ".join(f"{name} LSN {report.get('lsn')}" for name, report in run.verify.items()), "replay = state",
            "; ".join(problems[:3]) if problems else
            ("same state hash on every node" if len(positions) == 1 else "nodes stopped at different LSNs" if len(lsns) > 1 else "state hashes differ at the same LSN"),
        ))

    # ------------------------------------------------------------------ counts
    stats = run.stats
    # The ACD counts callers (live-caller KPIs) apart from its own call-back tasks
    # (docs/kpis.md): compared here are the interactions Locust created. A caller who asked in
    # line to be called back and was then answered is a call-back reached, not a live answer.
    created = set(journal.created)
    mine = {
        "offered": len(created),
        "answered": sum(1 for call_id in journal.answered if call_id in created and call_id not in journal.callback_requested),
        "abandoned": sum(1 for call_id in journal.abandoned if call_id in created),
    }
    theirs = {key: int(stats.get(key, -1)) for key in mine}
    figures["counts"] = {
        "locust": mine, "acd": theirs, "days": run.stats_days,
        "callback_tasks": len(journal.acd_created),
        "callback_tasks_answered": sum(1 for call_id in journal.answered if call_id in journal.acd_created),
    }
    agree = mine == theirs
    results.append(Result(
        "ACD counts equal Locust's records", agree,
        " / ".join(f"{theirs[key]}" for key in mine), " / ".join(f"{mine[key]}" for key in mine),
        f"offered / answered / abandoned on {', '.join(run.stats_days)} (ACD) vs Locust's journal",
    ))
    gave_up = journal.counts.get("gave_up", 0)
    refused = journal.counts.get("create_refused", 0)
    results.append(Result(
        "every request eventually answered", gave_up == 0 and refused == 0, f"{gave_up} gave up, {refused} creates refused", "0",
        f"retries give up after the retry deadline; journal has {journal.counts.get('created', 0)} creates",
    ))

    # ------------------------------------------------------------------ latency and errors
    options = run.options
    start, end = steady_window(run)
    excluded = failover_window(run)
    steady = window(run.timeline, start, end, exclude=excluded)
    overall = window(run.timeline, start, end)
    figures.update(
        requests=overall.requests, failures=overall.failures, p50_ms=steady.p(0.5), p99_ms=steady.p(0.99),
        error_ratio=steady.error_ratio, p99_ms_all=overall.p(0.99), error_ratio_all=overall.error_ratio,
    )
    where = ("outside the upgrade window" if run.failover.kill_time is None else "outside the failover window") if excluded else "whole run"
    context = machine_context(run, start, end)
    figures["machine"] = context
    results.append(Result(
        f"error ratio ({where})", steady.error_ratio <= options.max_error_ratio,
        f"{steady.failures} / {steady.requests} = {_percent(steady.error_ratio)}", f"≤ {_percent(options.max_error_ratio)}",
        f"whole run {overall.failures} / {overall.requests}" if excluded else "",
    ))
    if run.plan["shape"] != "stress":
        results.append(Result(
            f"p99 latency ({where})", steady.p(0.99) is not None and steady.p(0.99) < options.p99_ms,  # type: ignore[operator]
            _ms(steady.p(0.99)), f"< {options.p99_ms:g} ms",
            f"p50 {_ms(steady.p(0.5))}, p99.9 {_ms(steady.p(0.999))}; whole run p99 {_ms(overall.p(0.99))}; {context['text']}",
        ))

    # ------------------------------------------------------------------ failover
    if options.failover_at is not None:
        results.extend(_failover(run, figures, excluded))
    if options.upgrade_at is not None:
        results.extend(rolling_upgrade(run, figures, excluded))

    # ------------------------------------------------------------------ per shape
    shape = run.plan["shape"]
    if shape == "day":
        results.extend(_day(run, figures))
    elif shape == "stress":
        results.extend(_stress(run, figures, excluded))
    elif shape == "soak":
        results.extend(_soak(run, figures))
    return results


def machine_context(run: Run, start: float, end: float) -> dict[str, Any]:
    """How busy the machine was and how much of it this test used; the primary's own timings.

    Latency on a machine shared with other work includes waiting for a CPU: the figures
    say how much of the machine the test had.
    """
    import os

    from .rundata import cpu_share, machine_busy, pipeline_figures

    cores = os.cpu_count() or 1
    shares = {name: cpu_share(run.samples, name, start, end) for name in ("locust", *run.cluster_nodes, "witness")}
    ours = sum(share for share in shares.values() if share is not None) / cores
    busy = machine_busy(run.samples, start, end)
    primary = run.failover.killed or run.primary_at_end
    pipeline = pipeline_figures(run.scrapes, primary, start, run.failover.kill_time or end) if primary else {}
    text = f"machine {busy * 100:.0f} % busy, this test {ours * 100:.0f} % of {cores} cores" if busy is not None else "machine load unknown"
    if pipeline.get("command_ms"):
        text += (
            f"; node {primary}: {pipeline['command_ms']:.1f} ms per command (submission to reply, mean), "
            f"{pipeline.get('commit_ms') or 0:.1f} ms local commit per batch, {pipeline.get('batch_records') or 0:.1f} records per batch"
        )
    return {"machine_busy": busy, "test_share": ours, "cores": cores, "cpu": shares, "pipeline": pipeline, "text": text}


def _failover(run: Run, figures: dict[str, Any], excluded: tuple[float, float] | None) -> list[Result]:
    failover = run.failover
    if failover.kill_time is None:
        return [Result("failover happened", False, "no", "primary killed", failover.note or "the kill did not happen")]
    outages = related_outages(run)
    longest = max((outage["end"] - outage["start"] for outage in outages), default=0.0)
    first_write = min((outage["end"] for outage in outages), default=None)
    promoted = failover.promoted_time - failover.kill_time if failover.promoted_time else None
    figures.update(
        killed=failover.killed, new_primary=failover.new_primary, outage_seconds=round(longest, 3),
        kill_to_first_write_seconds=round(first_write - failover.kill_time, 3) if first_write else None,
        kill_to_readyz_seconds=round(promoted, 3) if promoted is not None else None,
        rejoin_seconds=round(failover.rejoined_time - failover.rejoin_started, 3) if failover.rejoined_time and failover.rejoin_started else None,
        clients_with_outage=len({outage["client"] for outage in outages}),
        failover_window=excluded,
    )
    detail = (
        f"node {failover.killed} killed at +{failover.kill_time - (run.journal.t0 or run.started):.1f} s; "  # type: ignore[union-attr]
        f"node {failover.new_primary} ready after {promoted:.2f} s; " if promoted is not None else f"node {failover.killed} killed; "
    )
    detail += f"{len({outage['client'] for outage in outages})} clients saw an outage"
    if first_write is not None:
        detail += f"; first acknowledged write {first_write - failover.kill_time:.2f} s after the kill"
    return [Result("client-seen outage at failover", longest <= run.options.max_outage, f"{longest:.2f} s", f"≤ {run.options.max_outage:g} s", detail)]


def rolling_upgrade(run: Run, figures: dict[str, Any], excluded: tuple[float, float] | None) -> list[Result]:
    """The rolling upgrade's checks (`loadtest.upgrade`)."""
    from .upgrade import EXPECTED_RULE, alarm_totals

    upgrade = run.upgrade
    t0 = (run.journal.t0 if run.journal else None) or run.started
    steps = {step["step"]: step for step in upgrade.steps}
    figures["upgrade"] = {
        "steps": upgrade.steps, "hashes": upgrade.hashes, "probes": upgrade.probes, "alarm": upgrade.alarm,
        "finalize": upgrade.finalize, "status_before": upgrade.status_before, "status_after": upgrade.status_after,
        "window": excluded, "note": upgrade.note,
    }
    results = []
    total = (upgrade.ended - upgrade.started) if upgrade.started and upgrade.ended else None
    results.append(Result(
        "rolling upgrade: standby, switchover, old primary, finalize", upgrade.done and "finalize" in steps,
        f"{len(upgrade.steps)} steps" + (f" in {total:.1f} s" if total is not None else ""), "all done",
        upgrade.note or "; ".join(f"{step['step']} {step['seconds']:.2f} s (+{step['start'] - t0:.1f} s)" for step in upgrade.steps),
    ))

    compared = upgrade.hashes
    equal = [entry for entry in compared if entry["equal"]]
    results.append(Result(
        "equal state hashes of both nodes at every step", bool(compared) and len(equal) == len(compared) and len(compared) >= 5,
        f"{len(equal)} of {len(compared)} equal", "all, after each of 5 steps",
        "; ".join(f"{entry['step']}: LSN {entry['lsn']}" + ("" if entry["equal"] else " DIFFER " + str(entry["hashes"])) for entry in compared),
    ))

    probes = upgrade.probes
    finalized = upgrade.finalized_time
    wrong = [
        probe for probe in probes
        if probe["rule"] != EXPECTED_RULE[2 if finalized is not None and probe["t"] >= finalized else 1]
        or probe["active_core_version"] != (2 if finalized is not None and probe["t"] >= finalized else 1)
    ]
    after = [probe for probe in probes if finalized is not None and probe["t"] >= finalized]
    before = [probe for probe in probes if probe not in after]
    results.append(Result(
        "changed routing rule only after finalize", bool(before) and bool(after) and not wrong,
        f"{len(before)} before, {len(after)} after", "v1 rule before, v2 after",
        "; ".join(f"{probe['step']}: node {probe['node']} core {probe['active_core_version']} {probe['rule']}" for probe in probes),
    ))

    comparisons, divergences = alarm_totals(upgrade.alarm)
    figures["upgrade"]["alarm_comparisons"] = comparisons
    figures["upgrade"]["alarm_divergences"] = divergences
    results.append(Result(
        "divergence alarm: states compared, no mismatch", comparisons > 0 and divergences == 0,
        f"{comparisons} compared, {divergences} differed", "> 0 compared, 0 differed",
        "the primaries' state_comparisons and state_divergences (/v1/cluster), summed over each process",
    ))

    outages = upgrade_outages(run)
    longest = max((outage["end"] - outage["start"] for outage in outages), default=0.0)
    figures["upgrade"]["outage_seconds"] = round(longest, 3)
    figures["upgrade"]["clients_with_outage"] = len({outage["client"] for outage in outages})
    results.append(Result(
        "client-seen outage during the upgrade", longest <= run.options.max_outage, f"{longest:.2f} s", f"≤ {run.options.max_outage:g} s",
        f"{len({outage['client'] for outage in outages})} clients saw an outage",
    ))
    return results


def _day(run: Run, figures: dict[str, Any]) -> list[Result]:
    plan = run.plan
    journal = run.journal
    assert journal is not None
    stats = run.stats
    answered = stats.get("answered", 0)
    within = stats.get("answered_within_threshold", 0)
    level = within / answered if answered else None
    threshold = plan["threshold_seconds"]
    target = plan["target_service_level"]
    # The client's view: from sending the create to the answer's reply, in model seconds.
    waits = [
        (journal.answered[call_id]["at"] - created["sent"]) * plan["factor"]
        for call_id, created in journal.created.items() if call_id in journal.answered
    ]
    client_level = sum(wait <= plan["threshold_seconds"] * plan["factor"] for wait in waits) / len(waits) if waits else None
    figures.update(service_level=level, service_level_client=client_level, threshold_seconds=threshold, factor=plan["factor"])
    measurable = threshold >= _minimum_threshold()
    detail = (
        f"{within} of {answered} answered within {threshold * 1000:.0f} ms (20 s of the model day); "
        f"client-measured {_percent(client_level)}; abandoned {stats.get('abandoned', 0)}"
    )
    if not measurable:
        detail += f"; not checked: a {threshold * 1000:.0f} ms threshold is below what HTTP round trips can measure (use --minutes ≥ 8.4)"
    return [Result("service level of the compressed day", (level is not None and level >= target) if measurable else None, _percent(level), f"≥ {_percent(target)}", detail)]


def _minimum_threshold() -> float:
    from .plan import SERVICE_LEVEL_THRESHOLD_MIN_SECONDS

    return SERVICE_LEVEL_THRESHOLD_MIN_SECONDS


def step_figures(run: Run, step: dict[str, Any], excluded: tuple[float, float] | None) -> dict[str, Any]:
    """One ramp step: achieved rate, service level, latency, errors and who was busy."""
    from .rundata import cpu_share, machine_busy, pipeline_figures

    journal = run.journal
    assert journal is not None
    plan = run.plan
    start, end = step["start"], step.get("cut", step["end"])
    seconds = max(1e-9, end - start)
    created = [c for c in journal.created.values() if start <= c["sent"] < end]
    threshold = plan["threshold_seconds"]
    within = sum(1 for c in created if c["id"] in journal.answered and journal.answered[c["id"]]["at"] - c["sent"] <= threshold)
    # Latency of the step's steady part: its first second is the change of rate.
    requests: Window = window(run.timeline, start + 1, end, exclude=excluded)
    names = ["locust", *sorted(run.cluster_nodes), "witness"]
    cpu = {name: cpu_share(run.samples, name, start, end) for name in names}
    achieved = len(created) / seconds
    # CPU time each process spent per call: what a whole core would carry, whatever the
    # machine's other load (a shared machine gives each runnable process a slice).
    cpu_ms_per_call = {name: share * 1000 / achieved for name, share in cpu.items() if share is not None and achieved}
    late = sorted(c.get("late", 0.0) for c in created)
    primary = _primary_during(run, start)
    return {
        "rate": step["rate"], "start": start, "end": end, "created": len(created), "achieved": achieved,
        "cpu_ms_per_call": cpu_ms_per_call, "primary": primary,
        "pipeline": pipeline_figures(run.scrapes, primary, start, end, run.options.p99_ms) if primary else {},
        # The share of requests slower than the p99 limit as Locust saw them, next to the share
        # of the primary's commands that took that long inside the node (submission to reply):
        # what the node adds, and what HTTP, the network and the client's own delays add.
        "slow_share": requests.share_over(run.options.p99_ms),
        "late_p99_ms": late[int(0.99 * (len(late) - 1))] * 1000 if late else None,
        "service_level": within / len(created) if created else None, "p50_ms": requests.p(0.5), "p99_ms": requests.p(0.99),
        "requests_per_second": requests.requests / seconds, "error_ratio": requests.error_ratio, "failures": requests.failures,
        "cpu": cpu, "machine_busy": machine_busy(run.samples, start, end),
    }


def _primary_during(run: Run, moment: float) -> str | None:
    failover = run.failover
    if failover.kill_time is not None and moment >= failover.kill_time:
        return failover.new_primary
    if failover.killed is not None:
        return failover.killed
    return run.primary_at_end


def _step_holds(figure: dict[str, Any], run: Run) -> list[str]:
    """Why a step does not hold ([] when it does)."""
    options = run.options
    reasons = []
    # Poisson arrivals: over a step of T seconds at rate r the count varies by sqrt(r T).
    seconds = max(1e-9, figure["end"] - figure["start"])
    slack = 3 * (figure["rate"] / seconds) ** 0.5
    if figure["achieved"] < figure["rate"] - slack:
        reasons.append(f"only {figure['achieved']:.1f} calls/s created")
    if figure["late_p99_ms"] is not None and figure["late_p99_ms"] > 100:
        reasons.append(f"Locust sent creates {figure['late_p99_ms']:.0f} ms late (p99)")
    if figure["service_level"] is None or figure["service_level"] < run.plan["target_service_level"]:
        reasons.append(f"service level {_percent(figure['service_level'])}")
    if figure["p99_ms"] is None or figure["p99_ms"] >= options.p99_ms:
        reasons.append(f"p99 {_ms(figure['p99_ms'])}")
    if figure["error_ratio"] > options.max_error_ratio:
        reasons.append(f"errors {_percent(figure['error_ratio'])}")
    return reasons


def limiting_process(figure: dict[str, Any]) -> str:
    """Who was busy in a step, and whether the machine had CPU to spare."""
    import os

    busy = {name: share for name, share in figure["cpu"].items() if share is not None}
    if not busy:
        return "unknown"
    name, share = max(busy.items(), key=lambda item: item[1])
    text = f"{name} {share * 100:.0f} % of a core"
    per_call = figure.get("cpu_ms_per_call", {}).get(name)
    if per_call:
        text += f" ({per_call:.1f} ms CPU per call)"
    machine = figure.get("machine_busy")
    if machine is not None:
        cores = os.cpu_count() or 1
        ours = sum(busy.values()) / cores
        text += f"; machine {machine * 100:.0f} % busy, this test {ours * 100:.0f} %"
        if machine > 0.95 and ours < 0.8 * machine:
            text += " (other processes took the rest: CPU-starved)"
    return text


def judge_ramp(rows: list[dict[str, Any]]) -> tuple[dict[float, list[dict[str, Any]]], dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The ramp's steps (judged: `holds`, `reasons`) grouped by rate; the step that sets the
    breaking point, the run of the first rate that does not hold, and the step of the highest
    rate carried with only the latency limit missed (None where there is none).

    A rate holds when one of its runs holds: the ramp runs a step that missed the p99 limit
    once more at the same rate, and a limit of the pair misses in both.
    """
    runs: dict[float, list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault(row["rate"], []).append(row)
    breaking = first_failure = None
    for rate_runs in runs.values():
        held = next((row for row in rate_runs if row["holds"]), None)
        if held is None:
            first_failure = rate_runs[-1]
            break
        breaking = held
    # The same ramp judged without the latency limit: the rate the pair still carried with
    # its service level and error budget, however slowly each request was answered.
    capacity = None
    for rate_runs in runs.values():
        carried = [row for row in rate_runs if row["holds"] or (len(row["reasons"]) == 1 and row["reasons"][0].startswith("p99"))]
        if not carried:
            break
        capacity = carried[0]
    return runs, breaking, first_failure, capacity


def _stress(run: Run, figures: dict[str, Any], excluded: tuple[float, float] | None) -> list[Result]:
    journal = run.journal
    assert journal is not None
    cut = next((event for event in journal.events if event["e"] == "step_cut"), None)
    steps = []
    for step in journal.steps:
        step = dict(step)
        if cut is not None and step["index"] == cut["index"]:
            step["cut"] = cut["at"]
        if cut is not None and step["index"] > cut["index"]:
            continue
        steps.append(step)
    rows = [step_figures(run, step, excluded) for step in steps]
    for row, step in zip(rows, steps, strict=True):
        row["reasons"] = _step_holds(row, run)
        row["holds"] = not row["reasons"]
        row["again"] = bool(step.get("again"))
    runs, breaking, first_failure, capacity = judge_ramp(rows)
    figures["steps"] = rows
    figures["capacity_without_latency_limit"] = capacity["rate"] if capacity else 0.0
    figures["breaking_point"] = breaking["rate"] if breaking else 0.0
    figures["breaking_point_p99_ms"] = breaking["p99_ms"] if breaking else None
    figures["limit"] = (
        f"at {first_failure['rate']:g} calls/s{' (in both runs)' if len(runs[first_failure['rate']]) > 1 else ''}: "
        f"{', '.join(first_failure['reasons'])}; busiest: {limiting_process(first_failure)}"
        if first_failure else "no step failed: raise the ramp (--rates) to find the limit"
    )
    if breaking is not None:
        figures["breaking_point_cpu"] = limiting_process(breaking)
    # What a whole core per process would carry, from the CPU time per call at the highest
    # rate reached (where group commit amortises the most): a bound for an unshared machine.
    if rows:
        last = rows[-1]
        primary = last.get("primary")
        figures["cpu_bound_calls_per_second"] = {
            ("primary" if name == primary else "locust" if name == "locust" else "standby" if name != "witness" else name): round(1000 / ms)
            for name, ms in last.get("cpu_ms_per_call", {}).items() if ms > 0 and name != "witness"
        }
    rate = figures["breaking_point"]
    target = run.options.target_rate
    detail = (
        f"{rate:g} calls/s sustained = {rate * 86400:,.0f} calls a day, p99 {_ms(figures['breaking_point_p99_ms'])}; limit: {figures['limit']}"
    )
    detail += f"; without the p99 limit the pair carried {figures['capacity_without_latency_limit']:g} calls/s"
    bound = figures.get("cpu_bound_calls_per_second")
    if bound:
        detail += "; CPU time per call would let a whole core carry " + ", ".join(f"{name} {value:,} calls/s" for name, value in bound.items())
    return [Result("stress: highest sustained call rate", rate >= target, f"{rate:g} calls/s", f"≥ {target:g} calls/s", detail)]


def _soak(run: Run, figures: dict[str, Any]) -> list[Result]:
    """Latency and memory over time: windows of a sixth of the run (at most five minutes)."""
    journal = run.journal
    assert journal is not None
    start, end = steady_window(run)
    length = min(300.0, max(10.0, (end - start) / 6))
    rows = []
    moment = start
    while moment + length <= end + 1e-6:
        requests = window(run.timeline, moment, moment + length)
        created = sum(1 for c in journal.created.values() if c["sent"] < moment + length)
        rss = [s for s in run.samples if moment <= s["t"] < moment + length and run.primary_at_end in s]
        rows.append({
            "start": moment, "p99_ms": requests.p(0.99), "requests": requests.requests, "created_so_far": created,
            "primary_rss": rss[-1][run.primary_at_end]["rss"] if rss else None,
        })
        moment += length
    figures["soak_windows"] = rows
    results: list[Result] = []
    if len(rows) >= 3:
        first, last = rows[1], rows[-1]  # the first window is the warm-up
        p_first = max(5.0, first["p99_ms"] or 0.0)
        flat = last["p99_ms"] is not None and last["p99_ms"] <= 2 * p_first
        results.append(Result("soak: p99 latency stays flat", flat, f"{_ms(first['p99_ms'])} → {_ms(last['p99_ms'])}", "last ≤ 2 × second window", ""))
        if first["primary_rss"] and last["primary_rss"] and last["created_so_far"] > first["created_so_far"]:
            growth = (last["primary_rss"] - first["primary_rss"]) / (last["created_so_far"] - first["created_so_far"])
            figures["bytes_per_call"] = growth
            results.append(Result(
                "soak: primary memory per retained interaction", growth <= run.options.max_bytes_per_call,
                f"{growth:,.0f} B/call", f"≤ {run.options.max_bytes_per_call:,.0f} B/call",
                f"RSS {first['primary_rss'] / 2**20:.0f} → {last['primary_rss'] / 2**20:.0f} MiB; the ACD keeps interactions for "
                "retention_days, so memory grows with calls by design: a leak shows as far more per call",
            ))
    else:
        results.append(Result("soak: long enough to judge", None, f"{len(rows)} windows", "≥ 3", "run longer (--minutes)"))
    return results
