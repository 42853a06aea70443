"""Replication figures for `/metrics`, read from the cluster member at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .cluster import Member


class ReplicationCollector:
    def __init__(self, member: Member) -> None:
        self.member = member

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        member = self.member
        view = member.view()
        primary = view["role"] == "primary"

        def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], value)
            return family

        yield gauge("acd_lease_remaining_seconds", "Lease this primary holds (0 on a standby)", view["lease_remaining"])
        yield gauge("acd_promised_epoch", "Highest epoch this node promised or holds", view["epoch"])
        yield gauge("acd_replication_lag_records", "Records the standby has not acknowledged (primary only)", view["lag_records"])
        yield gauge("acd_replication_lag_seconds", "Age of the oldest record the standby has not acknowledged", member.lag_seconds() if primary else 0.0)
        yield gauge("acd_replication_peer_connected", "1 while the primary ships to a connected standby", 1.0 if view["peer_connected"] else 0.0)
        yield gauge("acd_standby_behind", "1 while the witness records the standby as behind (sync mode acknowledges alone)", 1.0 if view["standby_behind"] else 0.0)
        yield gauge("acd_async_loss_window_records", "Acknowledged records not yet on the standby (async mode)", view["loss_window_records"])
        yield gauge("acd_seconds_without_primary", "Seconds this node has seen no writable primary", view["seconds_without_primary"])
        yield gauge("acd_last_failover_seconds", "Time without a primary before this node's last promotion", view["last_failover_seconds"])
        yield gauge("acd_last_rejoin_seconds", "Time from the standby's last (re)connection until it was in sync (connected, not behind)", view["last_rejoin_seconds"])
        yield gauge("acd_sync_mode", "1 in sync mode, 0 in async mode", 1.0 if view["mode"] == "sync" else 0.0)
        counter = CounterMetricFamily("acd_failovers", "Times this node became primary")
        counter.add_metric([], view["failovers"])
        yield counter
        counter = CounterMetricFamily("acd_replication_frames_refused", "Replication frames refused (bad HMAC, garbage, other cluster)")
        counter.add_metric([], member.frames_refused)
        yield counter
        gate = getattr(member.network, "gate", None)
        if gate is not None:  # the replication port's guard (replication/network.py): TCP only
            yield gauge("acd_replication_connections", "Connections open on the replication port", gate.open)
            counter = CounterMetricFamily("acd_replication_handshakes_failed", "Replication connections closed before a verified Hello, by reason", labels=["reason"])
            for reason, count in sorted(gate.handshakes_failed.items()):
                counter.add_metric([reason], count)
            yield counter
            counter = CounterMetricFamily("acd_replication_connections_refused", "Replication connections refused at accept, by reason", labels=["reason"])
            for reason, count in sorted(gate.connections_refused.items()):
                counter.add_metric([reason], count)
            yield counter
        counter = CounterMetricFamily("acd_stale_epoch_messages_dropped", "Messages of a stale epoch dropped")
        counter.add_metric([], member.stale_dropped)
        yield counter
