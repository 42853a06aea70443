"""Every shipped deployment file passes its own tool's check: systemd-analyze verify (units),
systemd-sysusers (the user), haproxy -c, keepalived -t, promtool (scrape configs, rules and
their unit tests). With CI=true a missing tool fails the test (tests/helpers/tools.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.tools import system_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
ACD = Path(sys.executable).parent / "acd"


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120)


def test_systemd_units_verify(tmp_path: Path) -> None:
    tool = system_tool("systemd-analyze", "systemd")
    assert {unit.name for unit in UNITS} == {"acd-node@.service", "acd-witness.service"}
    rendered = []
    for unit in UNITS:
        # The units run /opt/acd/bin/acd; here the one installed with this checkout stands in.
        name = unit.name.replace("@.", "@a.")
        (tmp_path / name).write_text(unit.read_text().replace("/opt/acd/bin/acd", str(ACD)))
        rendered.append(tmp_path / name)
    result = run(tool, "verify", *rendered)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stdout + result.stderr


def test_units_start_only_when_the_process_serves_and_link_docs_that_are_installed() -> None:
    for unit in UNITS:
        text = unit.read_text()
        assert re.search(r"^User=acd$", text, flags=re.MULTILINE)
        assert re.search(r"^ExecStartPost=/opt/acd/bin/acd health --config \S+ (--node %i|--witness) --wait \d+$", text,
                         flags=re.MULTILINE), unit.name
        links = re.findall(r"file:/usr/share/doc/acd-ha/(\S+)", text)
        assert links, unit.name
        for link in links:
            assert (ROOT / "docs" / link).is_file(), f"{unit.name}: Documentation= names {link}, which docs/ does not have"
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "/usr/share/doc/acd-ha" in operations and "sysusers.d" in operations, "the runbook installs the docs and the user"


def test_the_acd_user_is_declared_for_systemd_sysusers() -> None:
    tool = system_tool("systemd-sysusers", "systemd")
    result = run(tool, "--dry-run", DEPLOY / "acd.sysusers.conf")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^u acd ", (DEPLOY / "acd.sysusers.conf").read_text(), flags=re.MULTILINE)


def test_haproxy_accepts_its_config() -> None:
    tool = system_tool("haproxy", "haproxy")
    result = run(tool, "-c", "-f", DEPLOY / "haproxy.cfg")
    assert result.returncode == 0, result.stdout + result.stderr


def test_keepalived_accepts_its_config() -> None:
    tool = system_tool("keepalived", "keepalived")
    result = run(tool, "-t", "-f", DEPLOY / "keepalived.conf")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_every_prometheus_file(tmp_path: Path) -> None:
    tool = system_tool("promtool", "prometheus")
    rules = ROOT / "grafana" / "prometheus" / "alerts.yml"
    for config in (ROOT / "grafana" / "prometheus" / "prometheus.yml", DEPLOY / "prometheus.yml"):
        # deploy/prometheus.yml names the rules where they are installed; check it with the shipped file.
        rendered = tmp_path / f"{config.parent.name}-prometheus.yml"
        rendered.write_text(config.read_text().replace("/etc/prometheus/acd-alerts.yml", str(rules)).replace("- alerts.yml", f"- {rules}"))
        result = run(tool, "check", "config", rendered)
        assert result.returncode == 0, f"{config}: {result.stdout}{result.stderr}"
    result = run(tool, "check", "rules", rules)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(tool, "test", "rules", ROOT / "grafana" / "prometheus" / "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shipped_cluster_config_passes_acd_config_check(tmp_path: Path) -> None:
    import base64
    import os

    for config in (*sorted((ROOT / "examples").glob("*.toml")), DEPLOY / "cluster-3hosts.toml"):
        text = config.read_text()
        # Secrets live in /etc/acd on the hosts; here a file of the same kind stands in for each.
        for path in set(re.findall(r'"(/etc/acd/[^"]+)"', text)):
            stand_in = tmp_path / Path(path).name
            stand_in.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
            text = text.replace(f'"{path}"', f'"{stand_in}"')
        rendered = tmp_path / config.name
        rendered.write_text(text)
        result = run(ACD, "config", "check", rendered)
        assert result.returncode == 0 and result.stdout.startswith("ok:"), f"{config.name}: {result.stdout}{result.stderr}"
        if re.search(r"^\[witness\]", text, flags=re.MULTILINE):
            assert re.search(r'^drill_queue = "', text, flags=re.MULTILINE), f"{config.name}: a cluster sample declares its drill queue"
