"""Every command of docs/operations.md runs, in order, against a real local cluster.

`sh` blocks are run as they are. A `restart` block's `systemctl restart acd-node@STANDBY` is
the rolling upgrade's "install the new release on the standby and restart it": the test stops
the node that is standby now and starts it again with the next core version's binary (the same
code with `ACD_ENABLE_NEXT_CORE=1`, acd/core/versions.py), so the upgrade section runs from
`acd upgrade status` to `acd upgrade finalize`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from acd import settings as settings_module
from acd.core import versions
from acd.identity import listening_pids
from acd.tools.launcher import LocalCluster, prepare_config, wait_for

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "operations.md"


def blocks(kind: str) -> list[str]:
    text = RUNBOOK.read_text()
    lines = []
    for block in re.findall(rf"```{kind}\n(.*?)```", text, flags=re.DOTALL):
        lines += [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return lines


def steps() -> list[tuple[str, str]]:
    """The `sh` commands and `restart` lines of the runbook, in the page's order."""
    found: list[tuple[str, str]] = []
    for kind, block in re.findall(r"```(sh|restart)\n(.*?)```", RUNBOOK.read_text(), flags=re.DOTALL):
        found += [(kind, line.strip()) for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return found


def upgrade_standby(cluster: LocalCluster) -> str:
    """Stop the node that is standby now (whoever started it: a drill restarts processes of
    its own) and start it again with the next core version's binary."""
    standby = cluster.standby_of(cluster.wait_primary(30))
    address = cluster.settings.node(standby).api
    pids = listening_pids(address)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    ours = cluster.processes.get(standby)
    if ours is not None and ours.pid in pids:
        ours.wait(timeout=30)
    elif ours is not None:
        ours.poll()  # the launcher's process for it ended earlier (a drill replaced it): reaped
    wait_for(lambda: not listening_pids(address), 30, interval=0.1, what=f"node {standby} to stop")
    cluster.start_node(standby, env={versions.NEXT_CORE_ENV: "1"})
    wait_for(lambda: cluster.healthy(address), 30, interval=0.1, what=f"node {standby} to answer /healthz")
    return standby


def test_every_service_command_is_what_the_launcher_runs() -> None:
    services = blocks("service")
    assert services, "the runbook shows how to start the processes"
    for line in services:
        words = line.split()
        assert words[0] == "acd" and words[1] in ("serve", "witness"), line
        assert words[2:4] == ["--config", "cluster.toml"], line


def test_every_runbook_command_works_against_a_live_cluster(tmp_path: Path) -> None:
    commands = blocks("sh")
    assert len(commands) >= 12
    restarts = [line for kind, line in steps() if kind == "restart"]
    assert restarts == ["systemctl restart acd-node@STANDBY"] * 2, "the rolling upgrade restarts the standby, then the old primary"
    config = prepare_config(ROOT / "examples" / "busan-120.toml", tmp_path / "cluster", always_open=True)
    backup = tmp_path / "backup"
    backup.mkdir()
    cluster = LocalCluster(config, tmp_path / "cluster")
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    try:
        cluster.start()
        upgraded: list[str] = []
        for kind, command in steps():
            # Each step of the runbook starts from a healthy cluster (one writable primary),
            # as an operator would check with `acd status` before the next step.
            cluster.wait_primary(30)
            if kind == "restart":
                upgraded.append(upgrade_standby(cluster))
                continue
            line = command.replace("cluster.toml", str(config)).replace("/backup", str(backup))
            result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"{command}\n{output}"
            if command.startswith("acd promote"):
                assert "refused" in output, output
            if command.startswith("acd export"):
                target = Path(line.split("--output ")[1])
                assert target.exists() and target.stat().st_size > 0
            if command.startswith("acd backup"):
                assert "LSN" in output
            if command.startswith("acd upgrade status") and len(upgraded) == 1:
                assert "the cluster runs the highest core version every node supports" in output, output
            if command.startswith("acd upgrade status") and len(upgraded) == 2:
                assert "every node supports core version 2" in output or "active core version 2" in output, output
            if command.startswith("acd upgrade finalize"):
                finalized = json.loads(result.stdout)
                assert (finalized["changed"], finalized["previous_core_version"], finalized["active_core_version"]) == (True, 1, 2), output
        assert sorted(upgraded) == ["a", "b"], "the standby, then the old primary"
        for name in ("a", "b"):
            view = cluster.view(name)
            assert view is not None and view["active_core_version"] == 2 and view["core_versions"] == [1, 2]
    finally:
        cluster.close()
        # Processes a drill restarted belong to the drill, not to the launcher: stop them too
        # (the processes holding this test's own listening ports).
        settings = settings_module.load(config)
        addresses = [node.api for node in settings.nodes] + ([settings.witness.address] if settings.witness else [])
        for address in addresses:
            for pid in listening_pids(address):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
