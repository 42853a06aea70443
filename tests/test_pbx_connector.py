"""The reference PBX connector (examples/pbx_connector.py) against a real cluster, through a
failover: the primary is killed while callers arrive, and every call still ends in a final state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from acd.tools.launcher import LocalCluster, prepare_config
from tests.helpers.node_process import child_environment

ROOT = Path(__file__).resolve().parent.parent
AGENTS = {"kim": "sip:1001", "lee": "sip:1002", "park": "sip:1003", "choi": "sip:1004", "jung": "sip:1005", "kang": "sip:1006"}


def test_the_reference_connector_ends_every_call_through_a_failover(tmp_path: Path) -> None:
    config = prepare_config(ROOT / "examples" / "busan-120.toml", tmp_path, always_open=True)
    cluster = LocalCluster(config, tmp_path)
    try:
        primary = cluster.start()
        addresses = ",".join(node.api for node in cluster.settings.nodes)
        command = [
            sys.executable, str(ROOT / "examples" / "pbx_connector.py"), "--api", addresses, "--queue", "transport",
            "--calls", "60", "--rate", "6", "--talk", "0.5", "--patience", "20", "--settle", "90", "--login", "--json",
            *(argument for agent, device in AGENTS.items() for argument in ("--agent", f"{agent}={device}")),
        ]
        connector = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=child_environment())
        time.sleep(4)  # callers arriving, agents talking
        assert connector.poll() is None, connector.communicate()
        cluster.kill(primary)
        cluster.wait_primary(20, other_than=primary)
        cluster.restart(primary)
        out, err = connector.communicate(timeout=240)
        assert connector.returncode == 0, f"{out}\n{err}"
        summary = json.loads(out)
        whole = json.dumps(summary)   # the whole summary in a failure, notes included
        assert summary["calls"] == 60 and summary["all_final"], whole
        assert set(summary["final_states"]) <= {"completed", "abandoned"}, whole
        # A busy device's refusal makes its agent not ready; the connector makes it ready again
        # once the device is free (without that, each refusal took an agent away for good and
        # with six refusals no call after them was answered).
        assert summary["final_states"].get("completed", 0) >= 30, whole
        assert summary["retries"] > 0, "the failover was not seen by the connector"
    finally:
        cluster.close()
