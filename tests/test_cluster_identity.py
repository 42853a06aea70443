"""`acd status`, `drill`, `switchover`, `promote` and `backup` check which cluster every address
answers for before they report, write or signal; `acd status` exit codes. Real processes on
loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from acd.tools.launcher import LocalCluster, prepare_config, wait_for
from tests.helpers.node_process import ROOT, NodeProcess, child_environment
from tests.helpers.tls import tls_sample_config

SAMPLE = ROOT / "examples" / "busan-120.toml"


def acd(*arguments: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acd", *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=child_environment())


def fingerprint(node: NodeProcess) -> tuple[int, int, list[str]]:
    """What a write would change: the log's last LSN, the calls in the node's queues, its pid."""
    view = httpx.get(node.url + "/v1/cluster", timeout=5).json()
    queues = httpx.get(node.url + "/v1/queues", timeout=5).json()
    return view["lsn"], view["pid"], sorted(f"{q['id']}:{q['waiting']}:{q['today']['offered']}" for q in queues)


def test_a_config_whose_address_another_cluster_holds_is_refused_and_that_cluster_left_untouched(tmp_path: Path) -> None:
    stranger = NodeProcess(tmp_path / "stranger").start()
    try:
        config = prepare_config(SAMPLE, tmp_path / "busan", always_open=True)
        text = config.read_text()
        node_a_api = re.search(r'(?m)^api = "([^"]*)"', text)
        assert node_a_api is not None
        config.write_text(text.replace(node_a_api[0], f'api = "127.0.0.1:{stranger.port}"', 1))
        before = fingerprint(stranger)

        status = acd("status", "--config", str(config), cwd=tmp_path)
        assert status.returncode == 2, status.stdout + status.stderr
        assert "'standalone'" in status.stdout and "'busan-120'" in status.stdout, status.stdout
        assert "MISMATCH" in status.stdout and "ConnectError" not in status.stdout + status.stderr
        report = json.loads(acd("status", "--config", str(config), "--json", cwd=tmp_path).stdout)
        assert report["health"] == "mismatch" and report["exit"] == 2
        assert report["nodes"][0]["answered_as"] == {"cluster": "standalone", "node": "a"}
        assert "role" not in report["nodes"][0], "nothing another cluster answers is shown as this cluster's"

        drill = acd("drill", "--config", str(config), "--scenario", "kill-primary", "--out", str(tmp_path / "drills"), cwd=tmp_path)
        assert drill.returncode == 2, drill.stdout + drill.stderr
        assert "Traceback" not in drill.stderr and len(drill.stderr.strip().splitlines()) == 1, drill.stderr
        assert "'standalone'" in drill.stderr and "'busan-120'" in drill.stderr, drill.stderr

        for command in (("switchover", "--config", str(config)), ("promote", "--config", str(config), "--node", "a"),
                        ("config", "reload", "--config", str(config)),
                        ("backup", "--config", str(config), "--node", "a", "--to", str(tmp_path / "copy"))):
            refused = acd(*command, cwd=tmp_path)
            assert refused.returncode == 2, f"{command}: {refused.stdout}{refused.stderr}"
            assert "'standalone'" in refused.stderr and "'busan-120'" in refused.stderr, refused.stderr
        assert not (tmp_path / "copy").exists()

        assert stranger.process is not None and stranger.process.poll() is None, "the other cluster's node was signalled"
        assert fingerprint(stranger) == before, "the other cluster was written to"
    finally:
        stranger.kill()


def test_status_exit_codes_healthy_degraded_unreachable(tmp_path: Path) -> None:
    # With the witness and the standby gone the primary keeps its lease for failover_timeout
    # only: long enough here for `acd status` (a new process) to find it still primary.
    config = prepare_config(SAMPLE, tmp_path, always_open=True, overrides={"cluster.failover_timeout": "4"})
    cluster = LocalCluster(config, tmp_path)
    try:
        primary = cluster.start()

        def status() -> tuple[int, dict[str, object]]:
            result = acd("status", "--config", str(config), "--json", cwd=tmp_path)
            return result.returncode, json.loads(result.stdout)

        code, report = wait_for(lambda: (found := status())[0] == 0 and found, 20, interval=0.2, what="a healthy cluster")
        assert report["health"] == "healthy" and report["reasons"] == []
        table = acd("status", "--config", str(config), cwd=tmp_path)
        assert table.returncode == 0 and "healthy" in table.stdout

        cluster.kill("witness")
        code, report = status()
        assert code == 1 and report["health"] == "degraded"
        assert any("witness" in reason and "connection refused" in reason for reason in report["reasons"]), report  # type: ignore[attr-defined]

        cluster.kill(cluster.standby_of(primary))
        code, report = status()
        assert code == 1, report

        cluster.stop()
        result = acd("status", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 2, result.stdout
        assert "connection refused" in result.stdout
        assert "ConnectError" not in result.stdout + result.stderr and "OSError" not in result.stdout + result.stderr
    finally:
        cluster.close()


def test_drill_refuses_bad_numbers_and_a_config_without_a_drill_queue(tmp_path: Path) -> None:
    for bad in ("-1", "0", "nan", "lots"):
        result = acd("drill", "--config", str(SAMPLE), "--scenario", "kill-primary", "--load", bad, cwd=tmp_path)
        assert result.returncode == 2 and "--load" in result.stderr and "Traceback" not in result.stderr, result.stderr
    text = SAMPLE.read_text().replace('drill_queue = "drill"', "")
    (tmp_path / "no-drill.toml").write_text(text)
    result = acd("drill", "--config", str(tmp_path / "no-drill.toml"), "--scenario", "kill-primary", "--out",
                 str(tmp_path / "drills"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "drill queue" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "drills").exists()


def test_status_reads_an_api_served_over_tls(tmp_path: Path) -> None:
    tls_sample_config(tmp_path)
    config = prepare_config(tmp_path / "tls.toml", tmp_path / "cluster", always_open=True)
    cluster = LocalCluster(config, tmp_path / "cluster")
    try:
        cluster.start()
        result = wait_for(lambda: (found := acd("status", "--config", str(config), "--json", cwd=tmp_path)).returncode == 0 and found,
                          20, interval=0.2, what="a healthy TLS cluster")
        report = json.loads(result.stdout)
        assert {node["role"] for node in report["nodes"]} == {"primary", "standby"}
    finally:
        cluster.close()


def test_a_drill_signals_only_the_pid_that_holds_the_nodes_listening_socket() -> None:
    import os
    import socket

    import pytest

    from acd.identity import IdentityError, local_pid

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        assert local_pid({"pid": os.getpid()}, address) == os.getpid()
        for view in ({"pid": os.getppid()}, {"pid": 1}, {}):
            with pytest.raises(IdentityError):
                local_pid(view, address)  # another process, or no pid reported: never signalled
    with pytest.raises(IdentityError):
        local_pid({"pid": os.getpid()}, address)  # nobody listens there any more
