"""The parameters of one disaster-recovery run, all drawn from (scenario, seed) by `sim.dr.scenarios`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .network import LinkPolicy
from .workload import WorkloadShape


@dataclass
class RunConfig:
    """Everything one run needs, all of it drawn from (scenario, seed)."""

    scenario: str
    seed: int
    safety_seconds: float = 60.0
    liveness_seconds_max: float = 120.0
    mode: str = "sync"
    failover_timeout: float = 1.5
    snapshot_every_records: int = 200
    retention_records: int = 0
    drift: bool = True
    link: LinkPolicy = field(default_factory=LinkPolicy)
    connection_resets_per_minute: float = 0.0
    slow_disk_probability: float = 0.0
    slow_disk_seconds_max: float = 0.0
    crash_at_append_probability: float = 0.0
    fsync_median_seconds: float = 0.0        # every store.append: log-normal latency (0: none)
    fsync_sigma: float = 1.0
    busy_per_minute: float = 0.0             # a process runs nothing for a moment (CPU starvation)
    busy_seconds_max: float = 0.0
    witness_fsync_probability: float = 0.0   # a witness save stalls the witness (slow fsync)
    witness_fsync_seconds_max: float = 0.0
    reply_loss: dict[str, float] = field(default_factory=dict)   # per serving process
    drift_edges: bool = False                # clock rates at the ends of the drift bound
    workload: WorkloadShape = field(default_factory=WorkloadShape)

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode, "failover_timeout": self.failover_timeout,
            "calls_per_hour": round(self.workload.calls_per_hour, 1),
            "client_timeout_seconds": self.workload.client_timeout_seconds,
            "snapshot_every_records": self.snapshot_every_records, "retention_records": self.retention_records,
            "latency_ms": round(self.link.latency_seconds * 1000, 3), "jitter_ms": round(self.link.jitter_seconds * 1000, 3),
            "spike_probability": round(self.link.spike_probability, 4),
            "reset_probability": round(self.link.reset_probability, 5),
            "duplicate_probability": round(self.link.duplicate_probability, 5),
            "reorder_probability": round(self.link.reorder_probability, 5),
            "connection_resets_per_minute": round(self.connection_resets_per_minute, 2),
            "slow_disk_probability": round(self.slow_disk_probability, 3),
            "slow_disk_seconds_max": round(self.slow_disk_seconds_max, 3),
            "crash_at_append_probability": round(self.crash_at_append_probability, 4),
            "fsync_median_ms": round(self.fsync_median_seconds * 1000, 3), "fsync_sigma": round(self.fsync_sigma, 2),
            "busy_per_minute": round(self.busy_per_minute, 2), "busy_seconds_max": round(self.busy_seconds_max, 3),
            "witness_fsync_probability": round(self.witness_fsync_probability, 3),
            "witness_fsync_seconds_max": round(self.witness_fsync_seconds_max, 3),
            "reply_loss": {name: round(value, 4) for name, value in sorted(self.reply_loss.items())},
            "drift_edges": self.drift_edges,
        }
