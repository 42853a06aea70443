"""Replication figures for `/metrics`, read at scrape time from a frozen snapshot.

The driver (`replication.cluster.ReplicationDriver`) offers `statistics()`, which returns a
`ReplicationStatistics`; the collector calls it and reads nothing else, so this module knows
the figures and not the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


@dataclass(frozen=True)
class PortStatistics:
    """The replication port's guard (`replication.network.Gate`): TCP only."""

    open: int
    handshakes_failed: Mapping[str, int] = field(default_factory=dict)
    connections_refused: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicationStatistics:
    primary: bool
    lease_remaining: float
    epoch: int
    lag_records: int
    lag_seconds: float
    peer_connected: bool
    standby_behind: bool
    loss_window_records: int
    seconds_without_primary: float
    last_failover_seconds: float
    last_rejoin_seconds: float
    sync_mode: bool
    failovers: int
    frames_refused: int
    stale_dropped: int
    port: PortStatistics | None = None
    state_comparisons: int = 0      # state hashes compared with the standby's (primary)
    state_divergences: int = 0      # ... that differed
    standby_diverged: bool = False  # the standby diverged and is not rebuilt yet


class ReplicationCollector:
    def __init__(self, statistics: Callable[[], ReplicationStatistics]) -> None:
        self.statistics = statistics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self.statistics()

        def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], value)
            return family

        yield gauge("acd_lease_remaining_seconds", "Lease this primary holds (0 on a standby)", stats.lease_remaining)
        yield gauge("acd_promised_epoch", "Highest epoch this node promised or holds", stats.epoch)
        yield gauge("acd_replication_lag_records", "Records the standby has not acknowledged (primary only)", stats.lag_records)
        yield gauge("acd_replication_lag_seconds", "Age of the oldest record the standby has not acknowledged", stats.lag_seconds if stats.primary else 0.0)
        yield gauge("acd_replication_peer_connected", "1 while the primary ships to a connected standby", 1.0 if stats.peer_connected else 0.0)
        yield gauge("acd_standby_behind", "1 while the witness records the standby as behind (sync mode acknowledges alone)", 1.0 if stats.standby_behind else 0.0)
        yield gauge("acd_async_loss_window_records", "Acknowledged records not yet on the standby (async mode)", stats.loss_window_records)
        yield gauge("acd_seconds_without_primary", "Seconds this node has seen no writable primary", stats.seconds_without_primary)
        yield gauge("acd_last_failover_seconds", "Time without a primary before this node's last promotion", stats.last_failover_seconds)
        yield gauge("acd_last_rejoin_seconds", "Time from the standby's last (re)connection until it was in sync (connected, not behind)", stats.last_rejoin_seconds)
        yield gauge("acd_sync_mode", "1 in sync mode, 0 in async mode", 1.0 if stats.sync_mode else 0.0)
        counter = CounterMetricFamily("acd_failovers", "Times this node became primary")
        counter.add_metric([], stats.failovers)
        yield counter
        counter = CounterMetricFamily("acd_replication_frames_refused", "Replication frames refused (bad HMAC, garbage, other cluster)")
        counter.add_metric([], stats.frames_refused)
        yield counter
        port = stats.port
        if port is not None:
            yield gauge("acd_replication_connections", "Connections open on the replication port", port.open)
            counter = CounterMetricFamily("acd_replication_handshakes_failed", "Replication connections closed before a verified Hello, by reason", labels=["reason"])
            for reason, count in sorted(port.handshakes_failed.items()):
                counter.add_metric([reason], count)
            yield counter
            counter = CounterMetricFamily("acd_replication_connections_refused", "Replication connections refused at accept, by reason", labels=["reason"])
            for reason, count in sorted(port.connections_refused.items()):
                counter.add_metric([reason], count)
            yield counter
        counter = CounterMetricFamily("acd_stale_epoch_messages_dropped", "Messages of a stale epoch dropped")
        counter.add_metric([], stats.stale_dropped)
        yield counter
        counter = CounterMetricFamily("acd_replication_state_compared", "State hashes this primary compared with its standby's at the same LSN")
        counter.add_metric([], stats.state_comparisons)
        yield counter
        counter = CounterMetricFamily("acd_replication_divergence", "Comparisons where the standby's state hash differed from this primary's")
        counter.add_metric([], stats.state_divergences)
        yield counter
        yield gauge("acd_standby_diverged", "1 while the standby's state differs from this primary's (not electable until rebuilt)", 1.0 if stats.standby_diverged else 0.0)
