"""The dashboards and alert rules of grafana/, proven against a real Prometheus and real nodes.

The fast tests check the files themselves: promtool accepts the rules and their unit tests,
every rule has a runbook and a firing and a quiet case, the dashboards are well-formed for a
stock Grafana, and the shipped scrape configs agree. The slow test starts Debian's Prometheus
against a two-node cluster with a witness, drives a little traffic, and asks Prometheus for
every query of every panel (each must return data), then kills the primary and the witness
and waits for the alerts that must fire, each within its `for:` window plus scrape slack.

CI must prove all this, not skip it: `make test` installs Prometheus (scripts/system-deps.sh);
with CI=true a missing tool fails the test. Grafana itself is not in Debian, so the
dashboards are checked for the structure Grafana's provisioning needs, not loaded into one.
"""

from __future__ import annotations

import json
import math
import re
import runpy
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from acd.tools.launcher import LocalCluster, free_port, prepare_config, wait_for
from tests.helpers.tools import system_tool

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = GRAFANA / "prometheus" / "alerts.yml"
RULE_TESTS = GRAFANA / "prometheus" / "alerts_test.yml"
SCRAPE_CONFIG = GRAFANA / "prometheus" / "prometheus.yml"

# Metrics that alert rules already name but the nodes do not export yet (asked for in the
# observability issue's report); the rules that use them stay quiet until they exist.
AWAITED_METRICS: set[str] = set()

# How the test fills in Grafana's variables: the queue that gets the traffic, and intervals
# that hold enough 1 s scrapes.
VARIABLES = {"$queue": "transport", "$cluster": "busan-120", "$node": ".*", "$__rate_interval": "1m", "$__range": "5m"}




# ---------------------------------------------------------------------------------- the files


def alert_names() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), flags=re.MULTILINE)


def rule_blocks() -> dict[str, str]:
    """Each rule's text in alerts.yml, by alert name (the file keeps one rule per `- alert:`)."""
    text = RULES.read_text()
    starts = [(match.start(), match[1]) for match in re.finditer(r"^\s+- alert: (\w+)$", text, flags=re.MULTILINE)]
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return {name: text[start:end] for (start, name), end in zip(starts, ends, strict=True)}


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    promtool = system_tool("promtool", "prometheus")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    configured = subprocess.run([promtool, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True, check=False)
    assert configured.returncode == 0, configured.stdout + configured.stderr


def test_every_alert_has_labels_a_runbook_and_a_firing_and_a_quiet_unit_test() -> None:
    names = alert_names()
    # The list: no writable primary, two primaries, standby lost in sync mode,
    # replication lag, witness down, commit latency, storage nearly full, service level,
    # longest wait, call-backs overdue.
    for required in (
        "AcdNoWritablePrimary", "AcdTwoPrimaries", "AcdStandbyLostInSyncMode", "AcdReplicationLagHigh", "AcdWitnessDown",
        "AcdCommitLatencyHigh", "AcdStorageNearlyFull", "AcdServiceLevelBelowTarget", "AcdLongestWaitTooLong",
        "AcdCallbacksOverdue",
    ):
        assert required in names
    assert len(names) == len(set(names))
    for name, block in rule_blocks().items():
        assert re.search(r"^\s+severity: (critical|warning)$", block, flags=re.MULTILINE), name
        assert re.search(r"^\s+team: (ops|center)$", block, flags=re.MULTILINE), name
        assert re.search(r"^\s+summary: \"", block, flags=re.MULTILINE), name
        assert re.search(r"^\s+description: \"", block, flags=re.MULTILINE), name
        assert f'runbook_url: "{{{{ $externalLabels.runbook_base_url }}}}/operations.md#{name.lower()}"' in block, name

    # In alerts_test.yml each `alertname:` is followed by its `exp_alerts:` (empty or not).
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", RULE_TESTS.read_text())
    fired = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert set(names) <= fired, f"rules never fired in a unit test: {set(names) - fired}"
    assert set(names) <= quiet, f"rules never kept quiet in a unit test: {set(names) - quiet}"


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_dashboards_are_what_grafana_provisioning_loads() -> None:
    assert {path.stem for path in DASHBOARDS} == {"center", "cluster"}
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids and re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
        uids.add(dashboard["uid"])
        assert dashboard["title"] and dashboard["schemaVersion"] >= 36 and "id" not in dashboard
        variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids: set[int] = set()
        cells: set[tuple[int, int]] = set()
        for panel in panels(dashboard):
            assert panel["id"] not in ids, f"{path.name}: panel id {panel['id']} twice"
            ids.add(panel["id"])
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, (path.name, panel["title"])
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{path.name}: {panel['title']!r} overlaps another panel"
                    cells.add((x, y))
            if panel["type"] == "row":
                continue
            assert panel["title"] and panel["description"], (path.name, panel["id"])
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]
                for used in re.findall(r"\$(\w+)", target["expr"]):
                    assert used.startswith("__") or used in variables, f"{panel['title']}: ${used} is not a variable"


def test_the_committed_dashboards_are_what_the_generator_builds() -> None:
    """grafana/generate.py (grafana-foundation-sdk) is the source; the JSON files are its output."""
    generate = runpy.run_path(str(GRAFANA / "generate.py"))
    built = generate["dashboards"]()
    assert set(built) == {path.stem for path in DASHBOARDS}
    for path in DASHBOARDS:
        assert path.read_text(encoding="utf-8") == generate["render"](built[path.stem]), (
            f"{path.name} differs from what grafana/generate.py builds: run `python grafana/generate.py`")
    for dashboard in built.values():
        variables = {variable["name"] for variable in dashboard["templating"]["list"]}
        assert "cluster" in variables
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                assert 'cluster=~"$cluster"' in target["expr"], (panel["title"], target["expr"])


def test_provisioning_points_grafana_at_the_dashboards_and_the_datasource_they_use() -> None:
    datasources = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^apiVersion: 1$", datasources, flags=re.MULTILINE)
    assert re.search(r"^\s+type: prometheus$", datasources, flags=re.MULTILINE)
    assert re.search(r"^\s+isDefault: true$", datasources, flags=re.MULTILINE)  # the ${datasource} variable's default
    providers = (GRAFANA / "provisioning" / "dashboards" / "acd.yml").read_text()
    assert re.search(r"^apiVersion: 1$", providers, flags=re.MULTILINE)
    assert re.search(r"^\s+type: file$", providers, flags=re.MULTILINE)
    assert re.search(r"^\s+path: /var/lib/grafana/dashboards/acd$", providers, flags=re.MULTILINE)


def scrape_jobs(text: str) -> list[tuple[str, str]]:
    """(job, labels) of a scrape config, in order."""
    jobs = re.findall(r"- job_name: (\S+)\n\s+static_configs:\n\s+- targets: \[[^\]]*\]\n((?:\s+labels:\n(?:\s+\w+: \S+.*\n)+)?)", text)
    return [(job, re.sub(r"\s+#.*|\s+", " ", labels).strip()) for job, labels in jobs]


def test_deploy_scrape_config_has_the_same_jobs_and_labels_as_the_sample() -> None:
    sample = scrape_jobs(SCRAPE_CONFIG.read_text())
    deploy = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert [job for job, _ in sample] == ["acd-node", "acd-witness"]
    assert scrape_jobs(deploy) == sample
    assert "/etc/prometheus/acd-alerts.yml" in deploy


# ---------------------------------------------------------------------------------- the real thing


class Prometheus:
    """Debian's Prometheus on a free loopback port, with its data and log in a folder."""

    def __init__(self, binary: str, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=self.url, timeout=5)
        wait_for(self.ready, 30, interval=0.1, what="Prometheus to be ready")

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body.get('error')}"
        return list(body["data"]["result"])

    def get(self, path: str, **params: Any) -> Any:
        body = self.client.get(path, params=params).json()
        assert body["status"] == "success", body
        return body["data"]

    def firing(self) -> set[str]:
        return {alert["labels"]["alertname"] for alert in self.get("/api/v1/alerts")["alerts"] if alert["state"] == "firing"}

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def render_scrape_config(cluster: LocalCluster, target: Path) -> Path:
    """grafana/prometheus/prometheus.yml with this cluster's ports, a 1 s interval and the rules."""
    text = SCRAPE_CONFIG.read_text()
    text = re.sub(r"(scrape_interval|evaluation_interval): \S+", r"\1: 1s", text)
    text = text.replace("- alerts.yml", f"- {RULES}")
    nodes = ", ".join(f'"{node.api}"' for node in cluster.settings.nodes)
    assert cluster.settings.witness is not None
    targets = iter([nodes, f'"{cluster.settings.witness.address}"'])
    text = re.sub(r"targets: \[[^\]]*\]", lambda _: f"targets: [{next(targets)}]", text)
    target.write_text(text)
    return target


def drive_traffic(base: str) -> None:
    """A little of everything the panels show: answered, wrapped-up and surveyed calls, an
    abandoned one, a call-back, a refused command, agents in several states."""
    with httpx.Client(base_url=base, timeout=5) as client:

        def post(path: str, body: dict[str, Any] | None = None, expect: int = 200) -> dict[str, Any]:
            response = client.post(path, json=body or {})
            assert response.status_code == expect, (path, response.status_code, response.text)
            return dict(response.json())

        agents = ("kim", "lee", "park")
        for agent in (*agents, "choi"):
            post(f"/v1/agents/{agent}/login")
        for agent in agents:
            post(f"/v1/agents/{agent}/ready")
        for number in range(3):
            post("/v1/calls", {"id": f"grafana-{number}", "queue": "transport", "caller": f"0101234500{number}"}, 201)
        for number in range(3):
            call = client.get(f"/v1/calls/grafana-{number}").json()
            assert call["state"] == "offered", call
            if number == 0:
                wrong = next(agent for agent in agents if agent != call["agent"])
                post(f"/v1/calls/grafana-{number}/answer", {"agent": wrong}, 409)  # a refused command
            post(f"/v1/calls/grafana-{number}/answer", {"agent": call["agent"]})
            if number < 2:
                post(f"/v1/calls/grafana-{number}/hangup")
                wrapup: dict[str, Any] = {"agent": call["agent"], "disposition": "resolved"}
                if number == 1:  # a call-back promised for an hour from now
                    wrapup = {"agent": call["agent"], "disposition": "callback", "callback_at": time.time() + 3600}
                post(f"/v1/calls/grafana-{number}/wrapup", wrapup)
                post(f"/v1/calls/grafana-{number}/survey", {"score": 5})
        # Every agent with the skill is busy now: one caller waits and hangs up, another asks
        # for a call-back and one stays in the queue.
        for number in (3, 4, 5):
            post("/v1/calls", {"id": f"grafana-{number}", "queue": "transport", "caller": f"0101234500{number}"}, 201)
        post("/v1/calls/grafana-3/abandon")
        post("/v1/calls/grafana-4/callback")
        post("/v1/agents/choi/not-ready", {"reason": "training"})


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana's variables filled in."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in {**VARIABLES, "$__interval": panel.get("interval", "1m")}.items():
                expr = expr.replace(name, value)
            yield panel["title"], expr


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.slow
def test_every_panel_returns_data_and_a_killed_primary_fires_its_alerts(tmp_path: Path) -> None:
    binary = system_tool("prometheus", "prometheus")
    started = time.monotonic()
    cluster = LocalCluster(prepare_config(ROOT / "examples" / "busan-120.toml", tmp_path / "cluster", always_open=True), tmp_path / "cluster")
    prometheus: Prometheus | None = None
    try:
        primary = cluster.start()
        prometheus = Prometheus(binary, render_scrape_config(cluster, tmp_path / "prometheus.yml"), tmp_path)
        server = prometheus
        # The traffic comes after the first scrape, so that rates see it happen.
        wait_for(lambda: len(server.query("up == 1")) == 3, 15, interval=0.2, what="Prometheus to scrape both nodes and the witness")
        drive_traffic(cluster.api(primary))

        # Every query of every panel parses and returns at least one number once a few
        # scrapes are in (a rate needs two).
        queries = [(path.name, title, expr) for path in DASHBOARDS for title, expr in expressions(json.loads(path.read_text()))]
        assert len(queries) > 40

        def empty() -> list[str]:
            return [f"{name} / {title}: {expr}" for name, title, expr in queries if not finite(server.query(expr))]

        missing: list[str] = []
        deadline = time.monotonic() + 30
        while True:
            missing = empty()
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not missing, "panels without data:\n" + "\n".join(missing)
        assert "transport" in server.get("/api/v1/label/queue/values", **{"match[]": "acd_queue_waiting"})  # the $queue variable

        # Prometheus loaded every rule; each names only metrics the cluster exports (or that
        # are awaited, see AWAITED_METRICS).
        rules = {rule["name"]: rule for group in server.get("/api/v1/rules")["groups"] for rule in group["rules"]}
        assert set(rules) == set(alert_names())
        assert all(rule["health"] == "ok" for rule in rules.values()), rules
        exported = set(server.get("/api/v1/label/__name__/values"))
        named = {name for rule in rules.values() for name in re.findall(r"\b(acd_\w+|up)\b", rule["query"])}
        assert named - exported == AWAITED_METRICS, f"rules name metrics nobody exports: {named - exported - AWAITED_METRICS}"
        assert AWAITED_METRICS.isdisjoint(exported), "an awaited metric exists now: drop it from AWAITED_METRICS"
        assert server.firing() == set(), server.get("/api/v1/alerts")
        print(f"{len(queries)} panel queries answered after {time.monotonic() - started:.1f} s")

        # The primary dies: the standby takes over and, in sync mode, goes on alone.
        failover_timeout = cluster.settings.cluster.failover_timeout
        slack = 3 * 1.0 + 5  # three scrape/evaluation intervals, and the test's own polling
        cluster.kill(primary)
        killed = time.monotonic()
        survivor = cluster.wait_primary(10, other_than=primary)
        window = rules["AcdStandbyLostInSyncMode"]["duration"] + failover_timeout + slack
        wait_for(lambda: "AcdStandbyLostInSyncMode" in server.firing(), window, interval=0.5, what="AcdStandbyLostInSyncMode to fire")
        print(f"AcdStandbyLostInSyncMode firing {time.monotonic() - killed:.1f} s after the kill (for: {rules['AcdStandbyLostInSyncMode']['duration']:g} s)")
        assert "AcdNoWritablePrimary" not in server.firing()

        # Then the witness: the survivor cannot renew its lease with anyone and stops
        # accepting writes; the cluster has no writable primary.
        cluster.kill("witness")
        killed = time.monotonic()
        wait_for(lambda: cluster.primary() is None, 3 * failover_timeout, what=f"{survivor} to lose its lease")
        window = rules["AcdNoWritablePrimary"]["duration"] + failover_timeout + slack
        wait_for(lambda: "AcdNoWritablePrimary" in server.firing(), window, interval=0.5, what="AcdNoWritablePrimary to fire")
        print(f"AcdNoWritablePrimary firing {time.monotonic() - killed:.1f} s after the witness died (for: {rules['AcdNoWritablePrimary']['duration']:g} s)")
        assert "AcdTwoPrimaries" not in server.firing()
        print(f"whole test: {time.monotonic() - started:.1f} s")
    finally:
        if prometheus is not None:
            prometheus.close()
        cluster.close()
