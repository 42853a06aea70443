"""What one load-test run is and what it gathers: its options, the failover's moments, the
samples and scrapes taken while it ran, and the figures read from them.

The runner (`loadtest.runner`) fills a `Run`; the checks (`loadtest.checks`) and the report
(`loadtest.report`) only read it, so neither imports the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plan as plans
from . import records


@dataclass
class Options:
    shape: str
    config: Path = plans.DEFAULT_CONFIG
    minutes: float | None = None
    failover_at: float | None = None
    upgrade_at: float | None = None    # a rolling upgrade of the core version S s into the day
    out: Path | None = None
    calls: int = 2000
    seed: int = 120
    scenario: str = "busan-weekday"
    drain: float | None = None
    rates: list[float] | None = None
    step_seconds: float | None = None
    rate: float = 10.0
    agents: int = 400
    talk: float = 1.0
    threshold: float = 1.0
    rejoin_after: float | None = 5.0
    haproxy: bool = False
    haproxy_config: Path | None = None
    mode: str | None = None            # override [cluster] mode: "sync" or "async"
    pin: bool = False                  # primary on a core of its own, the rest on the others
    p99_ms: float = 100.0              # stress: 50 (the target); a day: 100, for people
    max_error_ratio: float = 0.001
    max_outage: float = 3.0
    target_rate: float = 100.0
    max_bytes_per_call: float = 16384.0
    locust_log_level: str = "INFO"


@dataclass
class Failover:
    killed: str | None = None
    kill_time: float | None = None
    new_primary: str | None = None
    promoted_time: float | None = None
    rejoin_started: float | None = None
    rejoined_time: float | None = None
    note: str = ""


@dataclass
class Upgrade:
    """The rolling upgrade's steps and observations (`loadtest.upgrade`)."""

    started: float | None = None
    ended: float | None = None
    finalized_time: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)    # step, start, end, seconds, detail
    hashes: list[dict[str, Any]] = field(default_factory=list)   # step, lsn, hashes per node, tries, equal
    probes: list[dict[str, Any]] = field(default_factory=list)   # step, node, active_core_version, rule
    alarm: list[dict[str, Any]] = field(default_factory=list)    # the primaries' comparison counters
    status_before: dict[str, Any] = field(default_factory=dict)
    status_after: dict[str, Any] = field(default_factory=dict)
    finalize: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    note: str = ""


@dataclass
class Run:
    """Everything the checks and the report need, gathered by the runner."""

    options: Options
    out: Path
    plan: dict[str, Any]
    cluster_nodes: dict[str, str] = field(default_factory=dict)   # name -> http://address
    time_zone: str = "Asia/Seoul"
    started: float = 0.0
    locust_exit: int | None = None
    locust_seconds: float = 0.0
    failover: Failover = field(default_factory=Failover)
    upgrade: Upgrade = field(default_factory=Upgrade)
    samples: list[dict[str, Any]] = field(default_factory=list)
    scrapes: list[dict[str, Any]] = field(default_factory=list)
    primary_at_end: str | None = None
    states: dict[str, dict[str, str | None]] = field(default_factory=dict)  # node -> id -> state (None: 404)
    standby_caught_up: bool | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    stats_days: list[str] = field(default_factory=list)
    journal: records.Journal | None = None
    timeline: dict[int, records.Second] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> `acd verify --json`


# ---------------------------------------------------------------------------------- figures from the samples


def pipeline_figures(scrapes: list[dict[str, Any]], node: str, start: float, end: float, slow_ms: float = 50.0) -> dict[str, float | None]:
    """Mean command latency, commit time and batch size of `node` in [start, end], and the
    share of its commands slower than `slow_ms` (when that is one of the histogram's bounds)."""
    inside = [s for s in scrapes if s["node"] == node and start <= s["t"] <= end]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]

    def mean(metric: str) -> float | None:
        count = last.get(f"{metric}_count", 0) - first.get(f"{metric}_count", 0)
        total = last.get(f"{metric}_sum", 0) - first.get(f"{metric}_sum", 0)
        return total / count if count > 0 else None

    seconds = last["t"] - first["t"]
    batches = last.get("acd_commit_latency_seconds_count", 0) - first.get("acd_commit_latency_seconds_count", 0)
    commands = last.get("acd_command_latency_seconds_count", 0) - first.get("acd_command_latency_seconds_count", 0)
    bound = f"le:{slow_ms / 1000:g}"
    within = last.get(bound, 0) - first.get(bound, 0) if bound in last else None
    return {
        "command_ms": (mean("acd_command_latency_seconds") or 0) * 1000 or None,
        "commit_ms": (mean("acd_commit_latency_seconds") or 0) * 1000 or None,
        "batch_records": mean("acd_commit_batch_records"),
        "batches_per_second": batches / seconds if seconds else None,
        "slow_share": 1 - within / commands if within is not None and commands > 0 else None,
    }


def cpu_share(samples: list[dict[str, Any]], name: str, start: float, end: float) -> float | None:
    """Share of one core a process used in [start, end] (1.0 = one core busy)."""
    inside = [s for s in samples if start <= s["t"] <= end and name in s]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    if first[name]["pid"] != last[name]["pid"]:
        return None
    return (last[name]["cpu"] - first[name]["cpu"]) / (last["t"] - first["t"])


def machine_busy(samples: list[dict[str, Any]], start: float, end: float) -> float | None:
    """Share of the whole machine (all cores) that was busy in [start, end]."""
    inside = [s for s in samples if start <= s["t"] <= end]
    if len(inside) < 2:
        return None
    first, last = inside[0]["machine"], inside[-1]["machine"]
    total = last["total"] - first["total"]
    return 1 - (last["idle"] - first["idle"]) / total if total else None
