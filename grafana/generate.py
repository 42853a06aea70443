"""The Grafana dashboards, built with grafana-foundation-sdk (the Grafana project's typed SDK).

    python grafana/generate.py            # writes grafana/dashboards/*.json
    python grafana/generate.py --check    # exits 1 when a committed file differs

`tests/test_grafana.py` checks that the committed JSON is what this file generates. Edit the
panels here, never the JSON.

Every query is scoped to the `cluster` variable (the label the scrape config puts on every
series), so one Grafana watches several clusters; the cluster dashboard also has a `node`
variable (the nodes' `instance`), which filters the per-node panels.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models

HERE = Path(__file__).resolve().parent
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
PRIMARY = 'and on (instance) acd_node_role{role="primary"} == 1'

# ---------------------------------------------------------------------------- scoping queries

_KEYWORDS = {"and", "or", "unless", "by", "on", "without", "ignoring", "group_left", "group_right", "bool", "offset",
             "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
_GROUPING = {"by", "on", "without", "ignoring", "group_left", "group_right"}


def scoped(expr: str, *, node: bool) -> str:
    """`expr` with `cluster=~"$cluster"` (and, for a node's own series, `instance=~"$node"`)
    added to every series selector."""
    out: list[str] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char == '"':
            end = expr.index('"', i + 1)
            out.append(expr[i:end + 1])
            i = end + 1
            continue
        if char == "[":
            end = expr.index("]", i)
            out.append(expr[i:end + 1])
            i = end + 1
            continue
        match = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", expr[i:])
        if match is None or (i > 0 and (expr[i - 1].isalnum() or expr[i - 1] in "_$.")):
            out.append(char)
            i += 1
            continue
        word = match[0]
        i += len(word)
        rest = expr[i:].lstrip()
        gap = expr[i:len(expr) - len(rest)]
        if word in _GROUPING and rest.startswith("("):
            end = expr.index(")", i)
            out.append(word + expr[i:end + 1])
            i = end + 1
            continue
        if word in _KEYWORDS or rest.startswith("("):
            out.append(word)
            continue
        matchers = ['cluster=~"$cluster"']
        if node and word != "ALERTS" and not word.startswith("acd_witness") and 'job="acd-witness"' not in rest[:40]:
            matchers.append('instance=~"$node"')
        if rest.startswith("{"):
            start = len(expr) - len(rest)
            end = start + 1
            while expr[end] != "}":
                end = expr.index('"', expr.index('"', end) + 1) + 1 if expr[end] == '"' else end + 1
            inner = expr[start + 1:end]
            out.append(f"{word}{gap}{{{', '.join(matchers)}{', ' if inner else ''}{inner}}}")
            i = end + 1
        else:
            out.append(f"{word}{{{', '.join(matchers)}}}")
    return "".join(out)


# ---------------------------------------------------------------------------- panels


class Board:
    """Collects one dashboard's panels, numbering them and scoping their queries."""

    def __init__(self, node_variable: bool) -> None:
        self.node_variable = node_variable
        self.items: list[tuple[str, Any]] = []
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str, y: int) -> None:
        self.items.append(("row", builders.Row(title).id(self._id()).grid_pos(models.GridPos(h=1, w=24, x=0, y=y))))

    def _targets(self, queries: list[tuple[str, str]]) -> list[Any]:
        targets = []
        for index, (expr, legend) in enumerate(queries):
            targets.append(
                prometheus.Dataquery().ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
                .expr(scoped(expr, node=self.node_variable)).legend_format(legend).range()
                .editor_mode(prometheus_models.QueryEditorMode.CODE)
            )
        return targets

    def _common(self, panel: Any, title: str, description: str, queries: list[tuple[str, str]], grid: tuple[int, int, int, int],
                *, unit: str = "", decimals: int | None = None, minimum: float | None = None, maximum: float | None = None,
                thresholds: list[tuple[str, float | None]] | None = None, color: str = "thresholds",
                mappings: list[dict[str, Any]] | None = None, overrides: list[dict[str, Any]] | None = None,
                interval: str = "") -> Any:
        x, y, w, h = grid
        panel = (panel.id(self._id()).title(title).description(description).datasource(DATASOURCE)
                 .grid_pos(models.GridPos(h=h, w=w, x=x, y=y)).targets(self._targets(queries)))
        if unit:
            panel = panel.unit(unit)
        if decimals is not None:
            panel = panel.decimals(decimals)
        if minimum is not None:
            panel = panel.min(minimum)
        if maximum is not None:
            panel = panel.max(maximum)
        if interval:
            panel = panel.interval(interval)
        steps = [models.Threshold(color=step_color, value=value) for step_color, value in (thresholds or [("green", None)])]
        panel = panel.thresholds(builders.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps))
        panel = panel.color_scheme(builders.FieldColor().mode(models.FieldColorModeId(color)))
        if mappings:
            panel = panel.mappings([models.ValueMap(options={key: models.ValueMappingResult(text=text, color=map_color, index=index)
                                                              for index, (key, (text, map_color)) in enumerate(mapping.items())})
                                    for mapping in mappings])
        for override in overrides or []:
            panel = panel.with_override(
                models.MatcherConfig(id_val=override["matcher"][0], options=override["matcher"][1]),
                [models.DynamicConfigValue(id_val=key, value=value) for key, value in override["properties"]],
            )
        return panel

    def stat(self, title: str, description: str, queries: list[tuple[str, str]], grid: tuple[int, int, int, int], *,
             graph: str = "area", text: str = "value", **options: Any) -> None:
        panel = self._common(stat.Panel(), title, description, queries, grid, **options)
        panel = (panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields(""))
                 .color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode(graph))
                 .justify_mode(common.BigValueJustifyMode.CENTER).text_mode(common.BigValueTextMode(text))
                 .orientation(common.VizOrientation.AUTO))
        self.items.append(("panel", panel))

    def timeseries(self, title: str, description: str, queries: list[tuple[str, str]], grid: tuple[int, int, int, int], *,
                   draw: str = "line", fill: int = 0, stacked: bool = False, interpolation: str = "stepAfter",
                   dashed_thresholds: bool = False, **options: Any) -> None:
        options.setdefault("color", "palette-classic")
        panel = self._common(timeseries.Panel(), title, description, queries, grid, **options)
        panel = (panel.draw_style(common.GraphDrawStyle(draw)).line_width(2).fill_opacity(fill)
                 .show_points(common.VisibilityMode.NEVER).span_nulls(False)
                 .line_interpolation(common.LineInterpolation(interpolation))
                 .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL if stacked else common.StackingMode.NONE).group("A"))
                 .axis_soft_min(0)
                 .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                         .placement(common.LegendPlacement.BOTTOM).show_legend(True))
                 .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)))
        if dashed_thresholds:
            panel = panel.thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED))
        self.items.append(("panel", panel))

    def bargauge(self, title: str, description: str, queries: list[tuple[str, str]], grid: tuple[int, int, int, int], **options: Any) -> None:
        panel = self._common(bargauge.Panel(), title, description, queries, grid, **options)
        panel = (panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields(""))
                 .orientation(common.VizOrientation.HORIZONTAL).display_mode(common.BarGaugeDisplayMode.GRADIENT)
                 .show_unfilled(True).value_mode(common.BarGaugeValueMode.COLOR)
                 .min_viz_height(16).min_viz_width(0))
        self.items.append(("panel", panel))

    def state_timeline(self, title: str, description: str, queries: list[tuple[str, str]], grid: tuple[int, int, int, int], **options: Any) -> None:
        panel = self._common(statetimeline.Panel(), title, description, queries, grid, **options)
        panel = (panel.fill_opacity(80).line_width(0).show_value(common.VisibilityMode.AUTO).merge_values(True).row_height(0.8)
                 .align_value(common.TimelineValueAlignment.CENTER)
                 .legend(common_builders.VizLegendOptions().show_legend(False).display_mode(common.LegendDisplayMode.LIST)
                         .placement(common.LegendPlacement.BOTTOM))
                 .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.SINGLE)))
        self.items.append(("panel", panel))

    def build(self, uid: str, title: str, description: str, tags: list[str], variables: list[Any]) -> dict[str, Any]:
        board = (builders.Dashboard(title).uid(uid).description(description).tags(tags).editable()
                 .tooltip(models.DashboardCursorSync.CROSSHAIR).timezone("browser").refresh("10s").time("now-6h", "now")
                 .link(builders.DashboardLink("ACD dashboards").type(models.DashboardLinkType.DASHBOARDS).tags(["acd"])
                       .keep_time(True).as_dropdown(False).include_vars(True).target_blank(False).icon("external link")))
        for variable in variables:
            board = board.with_variable(variable)
        for kind, item in self.items:
            board = board.with_row(item) if kind == "row" else board.with_panel(item)
        encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
        encoded.pop("id", None)
        return encoded


def _datasource_variable() -> Any:
    return builders.DatasourceVariable("datasource").label("Data source").type("prometheus")


def _cluster_variable() -> Any:
    return (builders.QueryVariable("cluster").label("Cluster").datasource(DATASOURCE)
            .query("label_values(acd_node_role, cluster)").refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC))


def _node_variable() -> Any:
    return (builders.QueryVariable("node").label("Node").datasource(DATASOURCE)
            .query('label_values(acd_node_role{cluster=~"$cluster"}, instance)').refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True).all_value(".*").multi(True).sort(models.VariableSort.ALPHABETICAL_ASC))


def _queue_variable() -> Any:
    return (builders.QueryVariable("queue").label("Queue").datasource(DATASOURCE)
            .query('label_values(acd_queue_waiting{cluster=~"$cluster"}, queue)').refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True).all_value(".*").multi(True).sort(models.VariableSort.ALPHABETICAL_ASC))


# ---------------------------------------------------------------------------- the two dashboards


def center_panels(board: Board) -> None:
    board.row('Center today', y=0)
    board.stat(
        'Offered today',
        'Interactions that reached the center today (local day of the center).',
        [('max(acd_center_offered_today and on (instance) acd_node_role{role="primary"} == 1)', 'offered')],
        (0, 1, 3, 4),
        decimals=0,
        thresholds=[('blue', None)],
    )
    board.stat(
        'Answered today',
        'Interactions answered today, center-wide.',
        [('max(acd_center_answered_today and on (instance) acd_node_role{role="primary"} == 1)', 'answered')],
        (3, 1, 3, 4),
        decimals=0,
        thresholds=[('blue', None)],
    )
    board.stat(
        'Abandoned today',
        'Callers who hung up before an agent answered, today.',
        [('max(acd_center_abandoned_today and on (instance) acd_node_role{role="primary"} == 1)', 'abandoned')],
        (6, 1, 3, 4),
        decimals=0,
        thresholds=[('blue', None)],
    )
    board.stat(
        'Service level today',
        'Center-wide: answered within the threshold over answered plus abandoned, less short abandons (offered basis). Empty until a call is answered or abandoned.',
        [('max(acd_center_service_level_ratio{basis="offered"} and on (instance) acd_node_role{role="primary"} == 1)', 'service level')],
        (9, 1, 3, 4),
        unit='percentunit',
        minimum=0,
        maximum=1,
        thresholds=[('red', None), ('orange', 0.7), ('green', 0.8)],
    )
    board.stat(
        'Waiting now',
        'Interactions waiting in every queue, not yet offered.',
        [('sum(acd_queue_waiting and on (instance) acd_node_role{role="primary"} == 1)', 'waiting')],
        (12, 1, 3, 4),
        decimals=0,
        thresholds=[('green', None), ('orange', 5), ('red', 15)],
    )
    board.stat(
        'Longest wait now',
        'The longest current wait over all queues.',
        [('max(acd_queue_longest_wait_seconds and on (instance) acd_node_role{role="primary"} == 1)', 'longest wait')],
        (15, 1, 3, 4),
        unit='s',
        thresholds=[('green', None), ('orange', 20), ('red', 120)],
    )
    board.stat(
        'Agents ready',
        'Agents logged in and ready for work now.',
        [('max(acd_agents{state="ready"} and on (instance) acd_node_role{role="primary"} == 1)', 'ready')],
        (18, 1, 3, 4),
        decimals=0,
        thresholds=[('red', None), ('orange', 1), ('green', 3)],
    )
    board.stat(
        'Occupancy today',
        'Time offered, busy or in wrap-up over time available (ready, offered, busy, wrap-up), all agents today.',
        [('max(acd_agent_occupancy_ratio and on (instance) acd_node_role{role="primary"} == 1)', 'occupancy')],
        (21, 1, 3, 4),
        unit='percentunit',
        minimum=0,
        maximum=1,
        thresholds=[('blue', None), ('orange', 0.9)],
    )
    board.row('Queues now', y=5)
    board.bargauge(
        'Waiting per queue',
        'Interactions waiting in each queue now (ringing ones not counted).',
        [('max by (queue) (acd_queue_waiting{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (0, 6, 8, 9),
        decimals=0,
        minimum=0,
        thresholds=[('green', None), ('orange', 3), ('red', 10)],
    )
    board.bargauge(
        'Longest wait per queue',
        'The longest current wait in each queue (an offered call still holds its place).',
        [('max by (queue) (acd_queue_longest_wait_seconds{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (8, 6, 8, 9),
        unit='s',
        minimum=0,
        thresholds=[('green', None), ('orange', 20), ('red', 120)],
    )
    board.bargauge(
        'Call-backs pending per queue',
        'Call-backs scheduled for later (promised at wrap-up, or left while the center was closed), not yet due.',
        [('max by (queue) (acd_queue_scheduled_callbacks{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (16, 6, 8, 9),
        decimals=0,
        minimum=0,
        thresholds=[('blue', None)],
    )
    board.timeseries(
        'Waiting and ringing',
        'Interactions waiting and being offered, per queue, over time.',
        [('max by (queue) (acd_queue_waiting{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}} waiting'), ('max by (queue) (acd_queue_ringing{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}} ringing')],
        (0, 15, 12, 8),
        decimals=0,
        minimum=0,
        fill=10,
    )
    board.timeseries(
        'Longest wait',
        "The longest current wait per queue over time. The dashed line is the queue's service-level threshold of the sample center (20 s).",
        [('max by (queue) (acd_queue_longest_wait_seconds{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (12, 15, 12, 8),
        unit='s',
        minimum=0,
        thresholds=[('green', None), ('red', 20)],
        fill=10,
        dashed_thresholds=True,
    )
    board.row('Service', y=23)
    board.timeseries(
        'Service level today against target',
        "Per queue: answered within the threshold over answered plus abandoned less short abandons (offered basis), today so far; dashed: the queue's target.",
        [('max by (queue) (acd_queue_service_level_ratio{queue=~"$queue",basis="offered"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}'), ('max by (queue) (acd_queue_service_level_target_ratio{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}} target')],
        (0, 24, 12, 8),
        unit='percentunit',
        minimum=0,
        maximum=1,
        overrides=[{'matcher': ('byRegexp', '.* target$'), 'properties': [('custom.lineStyle', {'dash': [10, 10], 'fill': 'dash'}), ('custom.lineWidth', 1)]}],
    )
    board.bargauge(
        'Service level today',
        'Per queue, offered basis, today so far. Red under the target of the sample center (80 %).',
        [('max by (queue) (acd_queue_service_level_ratio{queue=~"$queue",basis="offered"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (12, 24, 6, 8),
        unit='percentunit',
        minimum=0,
        maximum=1,
        thresholds=[('red', None), ('orange', 0.7), ('green', 0.8)],
    )
    board.bargauge(
        'ASA today',
        'Average speed of answer per queue today: answered waiting time over answered calls.',
        [('max by (queue) (acd_queue_asa_seconds{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (18, 24, 6, 8),
        unit='s',
        minimum=0,
        thresholds=[('green', None), ('orange', 20), ('red', 60)],
    )
    board.timeseries(
        'ASA',
        'Average speed of answer per queue, today so far.',
        [('max by (queue) (acd_queue_asa_seconds{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (0, 32, 8, 8),
        unit='s',
        minimum=0,
    )
    board.timeseries(
        'Abandon rate',
        'Abandoned over offered per queue, today so far (queues without calls are left out).',
        [('max by (queue) (acd_queue_abandoned_today{queue=~"$queue"} / (acd_queue_offered_today{queue=~"$queue"} > 0) and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (8, 32, 8, 8),
        unit='percentunit',
        minimum=0,
        maximum=1,
    )
    board.timeseries(
        'Offered, answered and abandoned per interval',
        "Interactions per interval (15 minutes at least), selected queues together. The daily counts restart at the center's midnight, which increase() treats as a reset.",
        [('sum(max by (queue) (increase(acd_queue_offered_today{queue=~"$queue"}[$__interval]) and on (instance) acd_node_role{role="primary"} == 1))', 'offered'), ('sum(max by (queue) (increase(acd_queue_answered_today{queue=~"$queue"}[$__interval]) and on (instance) acd_node_role{role="primary"} == 1))', 'answered'), ('sum(max by (queue) (increase(acd_queue_abandoned_today{queue=~"$queue"}[$__interval]) and on (instance) acd_node_role{role="primary"} == 1))', 'abandoned')],
        (16, 32, 8, 8),
        decimals=0,
        minimum=0,
        interval='15m',
        draw='bars',
        fill=80,
        interpolation='linear',
    )
    board.row('Agents', y=40)
    board.timeseries(
        'Agents by state',
        'Configured agents by state, center-wide, stacked.',
        [('max by (state) (acd_agents and on (instance) acd_node_role{role="primary"} == 1)', '{{state}}')],
        (0, 41, 12, 8),
        decimals=0,
        minimum=0,
        overrides=[{'matcher': ('byName', 'ready'), 'properties': [('color', {'mode': 'fixed', 'fixedColor': 'green'})]}, {'matcher': ('byName', 'offered'), 'properties': [('color', {'mode': 'fixed', 'fixedColor': 'yellow'})]}, {'matcher': ('byName', 'busy'), 'properties': [('color', {'mode': 'fixed', 'fixedColor': 'blue'})]}, {'matcher': ('byName', 'wrapup'), 'properties': [('color', {'mode': 'fixed', 'fixedColor': 'purple'})]}, {'matcher': ('byName', 'not_ready'), 'properties': [('color', {'mode': 'fixed', 'fixedColor': 'orange'})]}, {'matcher': ('byName', 'recovering'), 'properties': [('color', {'mode': 'fixed', 'fixedColor': 'red'})]}, {'matcher': ('byName', 'logged_out'), 'properties': [('color', {'mode': 'fixed', 'fixedColor': 'transparent'})]}],
        fill=60,
        stacked=True,
    )
    board.bargauge(
        'Agents by state now',
        'Configured agents by state now, center-wide.',
        [('max by (state) (acd_agents and on (instance) acd_node_role{role="primary"} == 1)', '{{state}}')],
        (12, 41, 6, 8),
        decimals=0,
        minimum=0,
        thresholds=[('blue', None)],
    )
    board.bargauge(
        'Ready agents per queue',
        "Agents who serve the queue (have its skill at the queue's level) and are ready now.",
        [('max by (queue) (acd_queue_agents{queue=~"$queue",state="ready"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (18, 41, 6, 8),
        decimals=0,
        minimum=0,
        thresholds=[('red', None), ('green', 1)],
    )
    board.row('Quality', y=49)
    board.timeseries(
        'First-contact resolution',
        "Dispositions 'resolved' over dispositions recorded, per queue, today so far (Busan 120: 78 %).",
        [('max by (queue) (acd_queue_fcr_ratio{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (0, 50, 8, 8),
        unit='percentunit',
        minimum=0,
        maximum=1,
    )
    board.timeseries(
        'Satisfaction (CSAT)',
        'Surveys scored 4 or 5 over surveys, per queue, today so far.',
        [('max by (queue) (acd_queue_csat_ratio{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}}')],
        (8, 50, 8, 8),
        unit='percentunit',
        minimum=0,
        maximum=1,
    )
    board.timeseries(
        'Average handling time',
        'Talk, hold and wrap-up time over handled legs, per queue and channel, today so far (docs/kpis.md).',
        [('max by (queue, channel) (acd_queue_aht_seconds{queue=~"$queue"} and on (instance) acd_node_role{role="primary"} == 1)', '{{queue}} {{channel}}')],
        (16, 50, 8, 8),
        unit='s',
        minimum=0,
    )


def cluster_panels(board: Board) -> None:
    board.row('Roles and leases', y=0)
    board.state_timeline(
        'Role of each node',
        'Primary, standby, or down (not answering Prometheus).',
        [('(max by (instance) (acd_node_role{role="primary"}) + 1) or on (instance) (max by (instance) (up{job="acd-node"}) * 0)', '{{instance}}')],
        (0, 1, 12, 6),
        thresholds=[('red', None), ('blue', 1), ('green', 2)],
        mappings=[{'0': ('down', 'red'), '1': ('standby', 'blue'), '2': ('primary', 'green')}],
    )
    board.stat(
        'Writable primaries',
        'Nodes with the primary role and a running lease: 1 is healthy, 0 is an outage, 2 must never happen.',
        [('count(acd_node_role{role="primary"} == 1 unless on (instance) acd_lease_remaining_seconds <= 0) or vector(0)', 'writable')],
        (12, 1, 4, 6),
        decimals=0,
        thresholds=[('red', None), ('green', 1), ('red', 2)],
        graph='none',
    )
    board.stat(
        'Failovers in range',
        "Promotions of a node to primary within the time range (a cluster's first election counts too).",
        [('sum(increase(acd_failovers_total[$__range]))', 'failovers')],
        (16, 1, 4, 6),
        decimals=0,
        thresholds=[('blue', None)],
        graph='none',
    )
    board.stat(
        'ACD alerts firing',
        'Alert rules of grafana/prometheus/alerts.yml firing now.',
        [('count(ALERTS{alertstate="firing", alertname=~"Acd.*"}) or vector(0)', 'alerts')],
        (20, 1, 4, 6),
        decimals=0,
        thresholds=[('green', None), ('red', 1)],
        graph='none',
    )
    board.timeseries(
        'Epoch',
        "The epoch each node's store is at, the highest each node promised, and the witness's.",
        [('acd_epoch', '{{instance}} store'), ('acd_promised_epoch', '{{instance}} promised'), ('acd_witness_epoch', 'witness')],
        (0, 7, 8, 7),
        decimals=0,
    )
    board.timeseries(
        'Lease remaining',
        'Lease the primary holds (0 on a standby) and the lease the witness granted; renewed every failover_timeout / 5.',
        [('acd_lease_remaining_seconds', '{{instance}}'), ('acd_witness_lease_remaining_seconds', 'witness')],
        (8, 7, 8, 7),
        unit='s',
        minimum=0,
    )
    board.timeseries(
        'Time without a primary',
        'Seconds each node has seen no writable primary, and how long the gap before its last promotion was.',
        [('acd_seconds_without_primary', '{{instance}} now'), ('acd_last_failover_seconds', '{{instance}} last failover')],
        (16, 7, 8, 7),
        unit='s',
        minimum=0,
    )
    board.row('Replication', y=14)
    board.timeseries(
        'Replication lag',
        'Records the standby has not acknowledged, and the age of the oldest of them (on the primary).',
        [('acd_replication_lag_records', '{{instance}} records'), ('acd_replication_lag_seconds', '{{instance}} seconds')],
        (0, 15, 8, 7),
        minimum=0,
        overrides=[{'matcher': ('byRegexp', '.* seconds$'), 'properties': [('unit', 's'), ('custom.axisPlacement', 'right')]}],
    )
    board.timeseries(
        'Standby',
        'On the primary: standby connected (1), recorded behind at the witness (1: sync mode acknowledges alone), acknowledged records not yet on the standby (async mode).',
        [('acd_replication_peer_connected and on (instance) acd_node_role{role="primary"} == 1', '{{instance}} standby connected'), ('acd_standby_behind and on (instance) acd_node_role{role="primary"} == 1', '{{instance}} standby behind'), ('acd_witness_standby_behind', 'witness: a node behind'), ('acd_async_loss_window_records and on (instance) acd_node_role{role="primary"} == 1', '{{instance}} loss window (records)')],
        (8, 15, 8, 7),
        minimum=0,
    )
    board.timeseries(
        'Log position',
        'Last applied LSN of each node; the gap between them is what the standby still has to apply.',
        [('acd_lsn', '{{instance}}')],
        (16, 15, 8, 7),
        decimals=0,
    )
    board.row('Command pipeline', y=22)
    board.timeseries(
        'Commands accepted',
        'Commands per second accepted by the primary, by type.',
        [('sum by (command) (rate(acd_commands_total{result="accepted"}[$__rate_interval]))', '{{command}}')],
        (0, 23, 8, 8),
        unit='ops',
        minimum=0,
        fill=40,
        stacked=True,
    )
    board.timeseries(
        'Commands refused',
        'Commands per second refused, by type and reason: named rejections of the core (agent_not_ready, ...) and node errors (NotPrimary, StorageFullError).',
        [('sum by (command, result) (rate(acd_commands_total{result!="accepted"}[$__rate_interval]))', '{{command}} {{result}}')],
        (8, 23, 8, 8),
        unit='ops',
        minimum=0,
    )
    board.timeseries(
        'Command latency',
        'Time from submission to reply (commit, replication and fencing included), per node.',
        [('histogram_quantile(0.5, sum by (instance, le) (rate(acd_command_latency_seconds_bucket[$__rate_interval])))', '{{instance}} p50'), ('histogram_quantile(0.99, sum by (instance, le) (rate(acd_command_latency_seconds_bucket[$__rate_interval])))', '{{instance}} p99')],
        (16, 23, 8, 8),
        unit='s',
        minimum=0,
    )
    board.timeseries(
        'Commit latency',
        'Durable commit (fsync) time per batch; every reply waits for it. Alert AcdCommitLatencyHigh above 100 ms (p99).',
        [('histogram_quantile(0.5, sum by (instance, le) (rate(acd_commit_latency_seconds_bucket[$__rate_interval])))', '{{instance}} p50'), ('histogram_quantile(0.99, sum by (instance, le) (rate(acd_commit_latency_seconds_bucket[$__rate_interval])))', '{{instance}} p99')],
        (0, 31, 12, 8),
        unit='s',
        minimum=0,
    )
    board.timeseries(
        'Commit batch size',
        'Records per group commit: the mean and the 99th percentile.',
        [('sum by (instance) (rate(acd_commit_batch_records_sum[$__rate_interval])) / sum by (instance) (rate(acd_commit_batch_records_count[$__rate_interval]))', '{{instance}} mean'), ('histogram_quantile(0.99, sum by (instance, le) (rate(acd_commit_batch_records_bucket[$__rate_interval])))', '{{instance}} p99')],
        (12, 31, 12, 8),
        minimum=0,
    )
    board.timeseries(
        'Garbage-collection pauses',
        "Share of the time each node's process stood still for Python's cyclic garbage collector (every request in flight waits), and collections per second by generation (a generation-2 collection walks the day's whole state). Compare with the command latency's p99.",
        [('sum by (instance) (rate(acd_gc_pause_seconds_sum[$__rate_interval]))', '{{instance}} paused'), ('sum by (instance, generation) (rate(acd_gc_pause_seconds_count[$__rate_interval]))', '{{instance}} gen {{generation}} /s')],
        (0, 39, 24, 8),
        unit='percentunit',
        minimum=0,
        overrides=[{'matcher': ('byFrameRefID', 'B'), 'properties': [('unit', 'ops'), ('custom.axisPlacement', 'right')]}],
    )
    board.row('Store', y=47)
    board.timeseries(
        'Store size',
        'The data file on disk, the bytes in use, and the current LMDB map size.',
        [('acd_store_size_bytes', '{{instance}} file'), ('acd_store_used_bytes', '{{instance}} used'), ('acd_store_map_size_bytes', '{{instance}} map')],
        (0, 48, 8, 7),
        unit='bytes',
        minimum=0,
    )
    board.timeseries(
        'Free disk',
        "Free space on the file system that holds each node's store.",
        [('acd_store_free_disk_bytes', '{{instance}}')],
        (8, 48, 8, 7),
        unit='bytes',
        minimum=0,
    )
    board.bargauge(
        'Room used',
        'Bytes in use over the room the store can grow into (its file plus the free disk). Alert AcdStorageNearlyFull at 85 %.',
        [('acd_store_used_bytes / (acd_store_size_bytes + acd_store_free_disk_bytes)', '{{instance}}')],
        (16, 48, 8, 7),
        unit='percentunit',
        minimum=0,
        maximum=1,
        thresholds=[('green', None), ('orange', 0.7), ('red', 0.85)],
    )
    board.timeseries(
        'Log and snapshots',
        'Records held in the log, the first LSN still held, and the LSN of the newest snapshot.',
        [('acd_store_records', '{{instance}} records'), ('acd_store_first_lsn', '{{instance}} first LSN'), ('acd_store_snapshot_lsn', '{{instance}} snapshot LSN')],
        (0, 55, 8, 7),
        decimals=0,
        minimum=0,
    )
    board.stat(
        'Batches refused: store full',
        'Batches refused in the time range because the store could not grow (507 storage_full).',
        [('sum(increase(acd_storage_full_total[$__range]))', 'refused')],
        (8, 55, 8, 7),
        decimals=0,
        thresholds=[('green', None), ('red', 1)],
        graph='none',
    )
    board.timeseries(
        'Event streams',
        'Event-stream readers connected (agent desktops, wallboards, the PBX) and readers cut off because they fell behind.',
        [('acd_stream_readers', '{{instance}} readers'), ('rate(acd_stream_cut_off_total[$__rate_interval])', '{{instance}} cut off per second')],
        (16, 55, 8, 7),
        minimum=0,
    )
    board.row('Witness and links', y=62)
    board.stat(
        'Witness',
        'Whether Prometheus can scrape the witness. Without it the cluster cannot fail over by itself.',
        [('up{job="acd-witness"}', '{{instance}}')],
        (0, 63, 4, 7),
        thresholds=[('red', None), ('green', 1)],
        mappings=[{'0': ('DOWN', 'red'), '1': ('UP', 'green')}],
        graph='none',
        text='value_and_name',
    )
    board.stat(
        'Nodes answering',
        'Whether Prometheus can scrape each node.',
        [('up{job="acd-node"}', '{{instance}}')],
        (4, 63, 4, 7),
        thresholds=[('red', None), ('green', 1)],
        mappings=[{'0': ('DOWN', 'red'), '1': ('UP', 'green')}],
        graph='none',
        text='value_and_name',
    )
    board.timeseries(
        'Witness votes',
        'Elections the witness granted and votes it refused, per interval.',
        [('increase(acd_witness_votes_total[$__rate_interval])', 'granted'), ('increase(acd_witness_refusals_total[$__rate_interval])', 'refused')],
        (8, 63, 8, 7),
        decimals=0,
        minimum=0,
        draw='bars',
        fill=80,
        interpolation='linear',
    )
    board.timeseries(
        'Frames refused and stale messages',
        'Replication frames refused (bad HMAC, garbage, another cluster) by the nodes and the witness, and stale-epoch messages dropped.',
        [('rate(acd_replication_frames_refused_total[$__rate_interval])', '{{instance}} frames refused'), ('rate(acd_witness_frames_refused_total[$__rate_interval])', 'witness frames refused'), ('rate(acd_stale_epoch_messages_dropped_total[$__rate_interval])', '{{instance}} stale epoch dropped')],
        (16, 63, 8, 7),
        unit='ops',
        minimum=0,
    )




CLUSTER_DESCRIPTION = 'Roles, leases, replication, the command pipeline, the store and the witness of an ACD cluster.'


def dashboards() -> dict[str, dict[str, Any]]:
    center = Board(node_variable=False)
    center_panels(center)
    cluster = Board(node_variable=True)
    cluster_panels(cluster)
    return {
        "center": center.build(
            "acd-center", "ACD / Center", "Queues, service level, agents and quality of the call center, read from the primary node.",
            ["acd", "center"], [_datasource_variable(), _cluster_variable(), _queue_variable()]),
        "cluster": cluster.build(
            "acd-cluster", "ACD / Cluster", CLUSTER_DESCRIPTION, ["acd", "cluster"],
            [_datasource_variable(), _cluster_variable(), _node_variable()]),
    }



def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) grafana/dashboards/*.json from this file.")
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed dashboard differs from the generated one")
    args = parser.parse_args(argv)
    different = []
    for name, dashboard in dashboards().items():
        path = HERE / "dashboards" / f"{name}.json"
        text = render(dashboard)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                different.append(str(path.relative_to(HERE.parent)))
        else:
            path.write_text(text, encoding="utf-8")
    if different:
        print("differs from `python grafana/generate.py`: " + ", ".join(different), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
