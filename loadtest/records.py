"""Reading what the Locust process wrote: its journal, its latency timeline, Locust's CSV.

Plain functions over files; nothing here imports Locust or talks to the cluster.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Journal:
    """Every journal line of every Locust process, folded per interaction."""

    events: list[dict[str, Any]] = field(default_factory=list)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)     # id -> "created" line
    acd_created: set[str] = field(default_factory=set)                   # call-backs the ACD made
    callback_requested: set[str] = field(default_factory=set)            # callers who asked for one in line
    answered: dict[str, dict[str, Any]] = field(default_factory=dict)    # id -> first "answered" line
    abandoned: dict[str, dict[str, Any]] = field(default_factory=dict)   # id -> "abandoned" line
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    outages: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    t0: float | None = None
    end: float | None = None

    @property
    def interactions(self) -> set[str]:
        """Every interaction Locust knows exists in the ACD: created by it, or made for it."""
        return set(self.created) | self.acd_created


def read_journal(out: Path) -> Journal:
    journal = Journal()
    for path in sorted(out.glob("journal-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                journal.events.append(json.loads(line))
    journal.events.sort(key=lambda event: event.get("t", 0.0))
    for event in journal.events:
        kind = event["e"]
        journal.counts[kind] += 1
        if kind == "created":
            journal.created.setdefault(event["id"], event)
        elif kind == "acd_created":
            journal.acd_created.add(event["id"])
        elif kind == "callback_requested":
            journal.callback_requested.add(event["id"])
        elif kind == "answered":
            journal.answered.setdefault(event["id"], event)
        elif kind == "abandoned":
            journal.abandoned.setdefault(event["id"], event)
        elif kind == "outage":
            journal.outages.append(event)
        elif kind == "step":
            journal.steps.append(event)
        elif kind == "phase":
            journal.phases.setdefault(event["name"], event["t"])
        elif kind == "start":
            journal.t0 = event["t0"] if journal.t0 is None else min(journal.t0, event["t0"])
        elif kind == "end":
            journal.end = event["t"]
    return journal


@dataclass
class Second:
    requests: int = 0
    failures: int = 0
    writes: int = 0
    latency_ms: dict[int, int] = field(default_factory=lambda: defaultdict(int))


def read_timeline(out: Path) -> dict[int, Second]:
    """Per wall-clock second (Unix time): requests, failures, latency histogram, all processes."""
    merged: dict[int, Second] = {}
    for path in sorted(out.glob("timeline-*.json")):
        for key, row in json.loads(path.read_text(encoding="utf-8")).items():
            second = merged.setdefault(int(key), Second())
            second.requests += row["requests"]
            second.failures += row["failures"]
            second.writes += row.get("writes", 0)
            for bucket, count in row["latency_ms"].items():
                second.latency_ms[int(bucket)] += count
    return merged


def percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """The smallest bucket at or below which `fraction` of the samples fall."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return float(bucket)
    return float(max(histogram))


@dataclass
class Window:
    requests: int = 0
    failures: int = 0
    histogram: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def p(self, fraction: float) -> float | None:
        return percentile(self.histogram, fraction)

    def share_over(self, milliseconds: float) -> float | None:
        """The share of requests slower than `milliseconds`."""
        total = sum(self.histogram.values())
        return sum(count for bucket, count in self.histogram.items() if bucket > milliseconds) / total if total else None


def window(timeline: dict[int, Second], start: float, end: float, exclude: tuple[float, float] | None = None) -> Window:
    """Requests completed in [start, end), leaving out the seconds that touch `exclude`."""
    result = Window()
    for second, row in timeline.items():
        if not start <= second < end:
            continue
        if exclude is not None and exclude[0] - 1 <= second <= exclude[1]:
            continue
        result.requests += row.requests
        result.failures += row.failures
        for bucket, count in row.latency_ms.items():
            result.histogram[bucket] += count
    return result


def read_locust_totals(out: Path) -> dict[str, Any]:
    """The "Aggregated" row of Locust's `locust_stats.csv` (what its HTML report shows)."""
    import csv

    path = out / "locust_stats.csv"
    if not path.exists():
        return {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated":
                return dict(row)
    return {}
