"""The center's figures for `/metrics`, read from the core when Prometheus scrapes.

The pipeline's own metrics (commands, latencies, batch sizes) live in `acd.node.metrics`; this
collector adds, at scrape time, what the core knows (queues, agents, today's KPIs) and what
the node and its store know (role, epoch, store size, stream readers). Names follow the
Prometheus conventions: base units in the name (`_seconds`, `_bytes`, `_ratio`), `_total` only
on counters. Today's KPIs are gauges, not counters: they restart at the center's local
midnight, as the centers' own daily reports do (docs/domain.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from acd.core.state import Counters
from acd.store import StoreStatistics

from . import views

if TYPE_CHECKING:
    from acd.node.node import Node

ROLES = ("primary", "standby")


class CenterCollector(Collector):
    def __init__(self, node: Node, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.clock = clock
        self.store_statistics: StoreStatistics | None = None

    def describe(self) -> list[Metric]:
        # Describing would run a full collection at registration; the names are fixed anyway.
        return []

    def collect(self) -> Iterator[Metric]:
        node = self.node
        center = node.center
        now = self.clock()
        day = views.local_day(center, now)
        stats = center.state.stats.get(day)
        loads = views.queue_loads(center, now)

        waiting = GaugeMetricFamily("acd_queue_waiting", "Interactions waiting in the queue, not yet offered", labels=["queue"])
        ringing = GaugeMetricFamily("acd_queue_ringing", "Interactions of the queue being offered to an agent now", labels=["queue"])
        scheduled = GaugeMetricFamily("acd_queue_scheduled_callbacks", "Call-backs of the queue waiting for their due time", labels=["queue"])
        overdue = GaugeMetricFamily("acd_queue_callbacks_overdue", "Call-backs that came due and wait for an agent", labels=["queue"])
        overdue_longest = GaugeMetricFamily(
            "acd_queue_callback_longest_overdue_seconds", "How long the most overdue call-back has waited since it came due", labels=["queue"],
        )
        longest = GaugeMetricFamily("acd_queue_longest_wait_seconds", "Longest current wait in the queue", labels=["queue"])
        offered = GaugeMetricFamily("acd_queue_offered_today", "Interactions that entered the queue today (local day)", labels=["queue"])
        answered = GaugeMetricFamily("acd_queue_answered_today", "Interactions of the queue answered today", labels=["queue"])
        abandoned = GaugeMetricFamily("acd_queue_abandoned_today", "Interactions abandoned in the queue today", labels=["queue"])
        service_level = GaugeMetricFamily(
            "acd_queue_service_level_ratio",
            "Answered within the queue's threshold today, over answered (basis=answered) or answered plus abandoned less short abandons (basis=offered)",
            labels=["queue", "basis"],
        )
        target = GaugeMetricFamily("acd_queue_service_level_target_ratio", "The queue's service level target", labels=["queue"])
        asa = GaugeMetricFamily("acd_queue_asa_seconds", "Average speed of answer in the queue today", labels=["queue"])
        aht = GaugeMetricFamily(
            "acd_queue_aht_seconds", "Average handling time (talk, hold and wrap-up) of the queue's legs today, per channel", labels=["queue", "channel"],
        )
        fcr = GaugeMetricFamily(
            "acd_queue_fcr_ratio", "First-contact resolution in the queue today: first contacts resolved over first contacts recorded", labels=["queue"],
        )
        abandon_rate = GaugeMetricFamily(
            "acd_queue_abandon_rate_ratio", "Callers abandoned after the short-abandon threshold over the offered basis, today", labels=["queue"],
        )
        callbacks = GaugeMetricFamily("acd_queue_callbacks_today", "Call-back tasks of the queue today, by step", labels=["queue", "step"])
        csat = GaugeMetricFamily("acd_queue_csat_ratio", "Surveys scored 4 or 5 over surveys in the queue today", labels=["queue"])
        queue_agents = GaugeMetricFamily("acd_queue_agents", "Agents who serve the queue, by state", labels=["queue", "state"])
        for queue in center.config.queues:
            name = queue.name
            load = loads.get(name, views.QueueLoad())
            waiting.add_metric([name], load.waiting)
            ringing.add_metric([name], load.offered)
            scheduled.add_metric([name], load.scheduled)
            longest.add_metric([name], load.longest_wait_seconds)
            overdue.add_metric([name], load.callbacks_overdue)
            overdue_longest.add_metric([name], load.callback_longest_overdue_seconds)
            queue_day = stats.queues.get(name) if stats is not None else None
            kpis = views.kpis(queue_day.total) if queue_day is not None else views.kpis(Counters())
            offered.add_metric([name], kpis.offered)
            answered.add_metric([name], kpis.answered)
            abandoned.add_metric([name], kpis.abandoned)
            _maybe(service_level, [name, "answered"], kpis.service_level)
            _maybe(service_level, [name, "offered"], kpis.service_level_offered)
            target.add_metric([name], queue.service_level_target)
            _maybe(asa, [name], kpis.asa_seconds)
            for channel, value in kpis.aht_by_channel.items():
                _maybe(aht, [name, channel], value)
            _maybe(fcr, [name], kpis.fcr)
            _maybe(abandon_rate, [name], kpis.abandon_rate)
            for step, value in _callback_steps(kpis):
                callbacks.add_metric([name, step], value)
            _maybe(csat, [name], kpis.csat)
            serving = views.serving_agents(center, name)
            for state, count in views.agents_by_state(serving).items():
                queue_agents.add_metric([name, state], count)
        yield from (waiting, ringing, scheduled, overdue, overdue_longest, longest, offered, answered, abandoned, service_level, target, asa, aht, fcr,
                    abandon_rate, callbacks, csat, queue_agents)

        center_kpis = views.kpis(stats.center.total) if stats is not None else views.kpis(Counters())
        center_offered = GaugeMetricFamily("acd_center_offered_today", "Interactions that reached the center today (local day)")
        center_offered.add_metric([], center_kpis.offered)
        center_answered = GaugeMetricFamily("acd_center_answered_today", "Interactions answered today, center-wide")
        center_answered.add_metric([], center_kpis.answered)
        center_abandoned = GaugeMetricFamily("acd_center_abandoned_today", "Interactions abandoned today, center-wide")
        center_abandoned.add_metric([], center_kpis.abandoned)
        center_service_level = GaugeMetricFamily(
            "acd_center_service_level_ratio", "Center-wide service level today (see acd_queue_service_level_ratio)", labels=["basis"]
        )
        _maybe(center_service_level, ["answered"], center_kpis.service_level)
        _maybe(center_service_level, ["offered"], center_kpis.service_level_offered)
        center_asa = GaugeMetricFamily("acd_center_asa_seconds", "Average speed of answer of the callers answered today, center-wide")
        _maybe(center_asa, [], center_kpis.asa_seconds)
        center_abandon_rate = GaugeMetricFamily("acd_center_abandon_rate_ratio", "Center-wide abandon rate today (see acd_queue_abandon_rate_ratio)")
        _maybe(center_abandon_rate, [], center_kpis.abandon_rate)
        center_fcr = GaugeMetricFamily("acd_center_fcr_ratio", "Center-wide first-contact resolution today")
        _maybe(center_fcr, [], center_kpis.fcr)
        center_callbacks = GaugeMetricFamily("acd_center_callbacks_today", "Call-back tasks today, center-wide, by step", labels=["step"])
        for step, value in _callback_steps(center_kpis):
            center_callbacks.add_metric([step], value)
        agents = GaugeMetricFamily("acd_agents", "Configured agents by state", labels=["state"])
        for state, count in views.agents_by_state(center.state.agents.values()).items():
            agents.add_metric([state], count)
        occupancy = GaugeMetricFamily("acd_agent_occupancy_ratio", "Time offered, busy or in wrap-up over time available today, all agents")
        _maybe(occupancy, [], views.agent_time(center, day, now).occupancy)
        yield from (center_offered, center_answered, center_abandoned, center_service_level, center_asa, center_abandon_rate, center_fcr,
                    center_callbacks, agents, occupancy)

        role = GaugeMetricFamily("acd_node_role", "1 for the role this node has now", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if node.role == name else 0.0)
        epoch = GaugeMetricFamily("acd_epoch", "The epoch this node's store is at")
        epoch.add_metric([], node.store.epoch())
        config_version = GaugeMetricFamily("acd_config_version", "Version of the center configuration applied through the log")
        config_version.add_metric([], center.state.config_version)
        yield from (role, epoch, config_version)

        broker = node.broker.statistics()
        readers = GaugeMetricFamily("acd_stream_readers", "Event-stream readers connected now")
        readers.add_metric([], broker.subscribers)
        buffered = GaugeMetricFamily("acd_stream_buffered_events", "Events held for readers that resume")
        buffered.add_metric([], broker.buffered)
        cut_off = CounterMetricFamily("acd_stream_cut_off", "Readers cut off because they fell behind")
        cut_off.add_metric([], broker.cut_off)
        yield from (readers, buffered, cut_off)

        store = self.store_statistics
        if store is not None:
            for name, documentation, value in (
                ("acd_store_size_bytes", "Size of the store's data file on disk", store.size_bytes),
                ("acd_store_used_bytes", "Bytes of the data file in use by the last commit", store.used_bytes),
                ("acd_store_map_size_bytes", "Current LMDB map size (the data file may grow this far before the map grows)", store.map_size_bytes),
                ("acd_store_map_size_max_bytes", "Largest map size the store may grow to (store.map_size_max_bytes)", node.store.map_size_max_bytes),
                ("acd_store_free_disk_bytes", "Free space on the file system that holds the store", store.free_disk_bytes),
                ("acd_store_records", "Records currently held in the log", store.records),
                ("acd_store_first_lsn", "First LSN still held in the log", store.first_lsn),
                ("acd_store_snapshot_lsn", "LSN of the newest snapshot (0: none)", store.snapshot_lsn),
            ):
                gauge = GaugeMetricFamily(name, documentation)
                gauge.add_metric([], value)
                yield gauge


def _callback_steps(kpis: views.Kpis) -> list[tuple[str, int]]:
    return [
        ("requested_waiting", kpis.callbacks_waiting), ("requested_after_hours", kpis.callbacks_after_hours),
        ("promised", kpis.callbacks_promised), ("due", kpis.callbacks_due), ("attempted", kpis.callbacks_attempted),
        ("reached", kpis.callbacks_reached), ("completed", kpis.callbacks_completed), ("expired", kpis.callbacks_expired),
    ]


def _maybe(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    """Add a sample only when the figure is defined (a ratio over zero calls is not 0)."""
    if value is not None:
        family.add_metric(labels, value)
