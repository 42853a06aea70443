"""Every command of docs/operations.md runs, in order, against a real local cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from acd import settings as settings_module
from acd.identity import listening_pids
from acd.tools.launcher import LocalCluster, prepare_config

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "operations.md"


def blocks(kind: str) -> list[str]:
    text = RUNBOOK.read_text()
    lines = []
    for block in re.findall(rf"```{kind}\n(.*?)```", text, flags=re.DOTALL):
        lines += [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return lines


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
    config = prepare_config(ROOT / "examples" / "busan-120.toml", tmp_path / "cluster", always_open=True)
    backup = tmp_path / "backup"
    backup.mkdir()
    cluster = LocalCluster(config, tmp_path / "cluster")
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    try:
        cluster.start()
        for command in commands:
            # Each step of the runbook starts from a healthy cluster (one writable primary),
            # as an operator would check with `acd status` before the next step.
            cluster.wait_primary(30)
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
