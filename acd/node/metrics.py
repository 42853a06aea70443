"""The node's own Prometheus metrics (one registry per node, so several nodes share a process).

Names follow Prometheus conventions: base units (seconds, bytes), `_total` for counters.
Figures of the center (queues, agents, KPIs) are read from the core at scrape time by a
collector in `acd.api.metrics`; these here are updated by the pipeline as it goes.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The `_created` series prometheus-client adds to every counter and histogram double the
# exposition for no use here (Prometheus itself detects resets).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class NodeMetrics:
    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commands = Counter(
            "acd_commands", "Commands by type and result", ["command", "result"], registry=r
        )
        self.command_seconds = Histogram(
            "acd_command_latency_seconds", "Time from submission to reply", buckets=LATENCY_BUCKETS, registry=r
        )
        self.commit_seconds = Histogram(
            "acd_commit_latency_seconds", "Durable commit (fsync) time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_records = Histogram(
            "acd_commit_batch_records", "Records per group commit", buckets=BATCH_BUCKETS, registry=r
        )
        self.lsn = Gauge("acd_lsn", "Last applied log sequence number", registry=r)
        self.storage_full = Counter("acd_storage_full", "Batches refused because the store was full", registry=r)
        self.command_failures = Counter(
            "acd_command_failures", "Commands that made the routing core raise (refused, state restored from the store)", registry=r,
        )
        self.gc_pause_seconds = Histogram(
            "acd_gc_pause_seconds", "Pauses of Python's cyclic garbage collector (every request waits for them), by generation",
            ["generation"], buckets=GC_BUCKETS, registry=r,
        )
        self._command_children: dict[tuple[str, str], Counter] = {}

    def command_counter(self, command: str, result: str) -> Counter:
        """The `acd_commands` child for one command type and result (labels() is a locked lookup)."""
        child = self._command_children.get((command, result))
        if child is None:
            child = self._command_children[(command, result)] = self.commands.labels(command, result)
        return child


class GcPauses:
    """Times each run of the cyclic collector (`gc.callbacks`) into `acd_gc_pause_seconds`.

    The collector stops the whole process; a full collection over a large heap is a latency
    spike every request in flight shares, so operators see it next to the command latency.
    Installed by `acd serve` for the process's node (`install`, then `remove` at the end).
    """

    def __init__(self, metrics: NodeMetrics) -> None:
        self.children = [metrics.gc_pause_seconds.labels(str(generation)) for generation in range(3)]
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.children[info["generation"]].observe(time.perf_counter() - self.started)

    def install(self) -> None:
        gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
