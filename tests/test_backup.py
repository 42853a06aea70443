"""Backup, restore and export: a round trip, and every refusal names its reason."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from acd import settings as settings_module
from acd.tools.backup import BackupError, backup, export, read_manifest, restore
from acd.tools.launcher import LocalCluster, prepare_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def node(tmp_path: Path):
    config = prepare_config(ROOT / "examples" / "standalone.toml", tmp_path / "node")
    cluster = LocalCluster(config, tmp_path / "node")
    cluster.start()
    api = cluster.api("a")
    with httpx.Client(timeout=5) as client:
        client.post(f"{api}/v1/agents/kim/login", json={})
        client.post(f"{api}/v1/agents/kim/ready", json={})
        for number in range(12):
            call = f"bk-{number}"
            assert client.post(f"{api}/v1/calls", json={"id": call, "queue": "transport", "caller": "01098765432"}).status_code == 201
            if number % 3 == 0:
                client.post(f"{api}/v1/calls/{call}/answer", json={"agent": "kim"})
                client.post(f"{api}/v1/calls/{call}/hangup", json={})
                client.post(f"{api}/v1/calls/{call}/wrapup", json={"agent": "kim", "disposition": "resolved"})
                client.post(f"{api}/v1/calls/{call}/survey", json={"score": 5})
            else:
                client.post(f"{api}/v1/calls/{call}/abandon", json={})
        digest = client.get(f"{api}/v1/admin/state").json()
    yield cluster, settings_module.load(config), digest
    cluster.close()


def test_backup_of_a_running_node_restores_to_the_same_state(node, tmp_path: Path) -> None:
    cluster, settings, digest = node
    manifest = backup(settings, "a", tmp_path / "backup")
    assert manifest.cluster == "standalone" and manifest.lsn == digest["lsn"]
    assert read_manifest(tmp_path / "backup").sha256 == manifest.sha256
    cluster.stop()
    restored, kept = restore(settings, "a", tmp_path / "backup", force=True)
    assert kept is not None and kept.exists()
    cluster.start_node("a")
    api = cluster.api("a")
    from acd.tools.launcher import wait_for

    wait_for(lambda: cluster.healthy(settings.node("a").api), 20, what="the restored node")
    after = httpx.get(f"{api}/v1/admin/state").json()
    assert (after["lsn"], after["state_hash"]) == (digest["lsn"], digest["state_hash"])


def test_restore_refuses_another_clusters_backup_a_damaged_one_and_a_running_node(node, tmp_path: Path) -> None:
    cluster, settings, _digest = node
    backup(settings, "a", tmp_path / "backup")
    with pytest.raises(BackupError, match="running"):
        restore(settings, "a", tmp_path / "backup", force=True)
    other = settings_module.loads(Path(settings.path).read_text().replace('name = "standalone"', 'name = "elsewhere"', 1), settings.path)
    with pytest.raises(BackupError, match="cluster 'standalone', not 'elsewhere'"):
        restore(other, "a", tmp_path / "backup")
    cluster.stop()
    with pytest.raises(BackupError, match="not empty"):
        restore(settings, "a", tmp_path / "backup")
    with open(tmp_path / "backup" / "data.mdb", "r+b") as file:
        file.seek(5000)
        file.write(b"\xff" * 64)
    with pytest.raises(BackupError, match="checksum"):
        restore(settings, "a", tmp_path / "backup", force=True)


def test_export_writes_one_record_per_completed_interaction_with_masked_numbers(node) -> None:
    _cluster, settings, _digest = node
    import datetime as dt

    out = io.StringIO()
    count = export(settings, "a", dt.date(2020, 1, 1), dt.date(2099, 1, 1), "csv", out, unmask=False)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert count == len(rows) == 12
    assert {row["outcome"] for row in rows} == {"completed", "abandoned"}
    assert all(row["caller"].endswith("5432") and "0109876" not in row["caller"] for row in rows)
    assert "01098765432" not in out.getvalue()
    completed = [row for row in rows if row["outcome"] == "completed"]
    assert all(row["disposition"] == "resolved" and row["survey"] == "5" and row["agent"] == "kim" for row in completed)
    lines = io.StringIO()
    export(settings, "a", dt.date(2020, 1, 1), dt.date(2099, 1, 1), "jsonl", lines, unmask=True)
    first = json.loads(lines.getvalue().splitlines()[0])
    assert "caller_hash" in first and "01098765432" not in lines.getvalue()


def test_export_unmask_needs_an_admin_token_when_tokens_are_configured(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "standalone.toml").read_text()
    token_hash = settings_module.hash_token("secret-admin")
    text += f'\n[[tokens]]\nname = "ops"\nrole = "admin"\nhash = "{token_hash}"\n'
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = subprocess.run([sys.executable, "-m", "acd", "export", "--config", str(config), "--from", "2026-01-01",
                             "--to", "2026-12-31", "--unmask", "--token", "wrong"], capture_output=True, text=True)
    assert result.returncode == 2 and "admin token" in result.stderr
