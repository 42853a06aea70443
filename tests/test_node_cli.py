"""The `acd` command line: config check, token hash, verify, and plain errors instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from acd.cli import main
from acd.core import commands
from acd.settings import hash_token
from tests.helpers import NodeProcess
from tests.helpers.inprocess import running_node, write_settings
from tests.helpers.node_process import ROOT

EXAMPLES = ROOT / "examples"


def test_config_check_summarises_a_good_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLES / "busan-120.toml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: cluster busan-120, 2 nodes, ") and " queues, " in out and out.rstrip().endswith(("agents", "authentication off)"))


def test_config_check_lists_every_problem_with_file_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    text = (EXAMPLES / "standalone.toml").read_text()
    text = text.replace('overflow = "district"', 'overflow = "nowhere"').replace('calendar = "always"\nwrapup_seconds = 30', 'calendar = "sometimes"\nwrapup_seconds = 30')
    bad.write_text(text)
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith(str(bad))]
    assert len(problems) == 2
    assert any(":" in line.split(str(bad))[1][:6] and "overflow" in line for line in problems)
    assert any("calendar" in line and "sometimes" in line for line in problems)
    assert all(line.split(":")[1].isdigit() for line in problems)  # file:line: key: message


def test_every_scalar_key_of_the_core_center_is_a_center_key_with_the_core_default(tmp_path: Path) -> None:
    from acd import settings as settings_module
    from acd.core.config import CenterConfig

    text = (EXAMPLES / "standalone.toml").read_text()
    plain = settings_module.loads(text, "plain.toml")
    defaults = CenterConfig()
    for key in settings_module.CENTER_KEYS:
        if f"\n{key} =" not in text.split("[center]", 1)[1].split("\n[", 1)[0]:
            assert getattr(plain.center, key) == getattr(defaults, key), f"[center] {key}: not the core's default"
    changed = text.replace("[center]\n", "[center]\ncallback_attempts = 5\ncallback_retry_seconds = 120\nqueue_update_seconds = 0\n", 1)
    center = settings_module.loads(changed, "changed.toml").center
    assert (center.callback_attempts, center.callback_retry_seconds, center.queue_update_seconds) == (5, 120.0, 0.0)
    with pytest.raises(settings_module.SettingsError) as refused:
        settings_module.loads(text.replace("[center]\n", "[center]\ncolour = 5\n", 1), "bad.toml")
    assert refused.value.problems[0].startswith("bad.toml:") and "center.colour: unknown key" in refused.value.problems[0]


def test_config_check_of_a_missing_or_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "none.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("[cluster\nname = 1")
    assert main(["config", "check", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_token_hash_from_argument_and_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["token", "hash", "s3cret"]) == 0
    assert capsys.readouterr().out.strip() == hash_token("s3cret")
    monkeypatch.setattr(sys, "stdin", _Lines("s3cret\n"))
    assert main(["token", "hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_token("s3cret")
    monkeypatch.setattr(sys, "stdin", _Lines("\n"))
    assert main(["token", "hash"]) == 2


class _Lines:
    def __init__(self, text: str) -> None:
        self.text = text

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        return self.text


@pytest.mark.parametrize("command", [[], ["serve"], ["config"], ["config", "check"], ["token"], ["token", "hash"], ["verify"]])
def test_every_command_has_help_with_an_example(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: acd" in out and ("example" in out or not command)


def test_verify_reports_agreement_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = write_settings(tmp_path, store={"snapshot_every_records": 10})

    async def write() -> None:
        async with running_node(settings) as running:
            for number in range(25):
                await running.node.submit(commands.Arrive(id=f"v-{number}", queue="general", caller="0101234567"))
            # The snapshot is written in the background; stopping before it lands would
            # leave none to verify against (as on a loaded machine).
            await running.node.snapshot_settled()

    trio.run(write)
    assert main(["verify", "--config", settings.path, "--node", "a", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and report["full_replay"] is True
    assert report["snapshot_lsn"] > 0 and report["lsn"] >= 25
    assert main(["verify", "--config", settings.path, "--node", "a"]) == 0
    assert capsys.readouterr().out.startswith("ok: node a lsn ")


def test_verify_of_a_running_nodes_store_is_refused_plainly(tmp_path: Path) -> None:
    with NodeProcess(tmp_path) as node:
        result = node.run_cli("verify", "--config", str(node.config_path), "--node", "a")
    assert result.returncode == 2 and "already open" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_an_unknown_node_or_a_bad_config_without_a_traceback(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path)
    unknown = node.run_cli("serve", "--config", str(node.config_path), "--node", "zz")
    assert unknown.returncode == 2 and "no node named 'zz'" in unknown.stderr and "Traceback" not in unknown.stderr
    node.config_path.write_text(node.config_path.read_text().replace('name = "general"', 'name = "bad name!"', 1))
    bad = node.run_cli("serve", "--config", str(node.config_path), "--node", "a")
    assert bad.returncode == 2 and "queues[1].name" in bad.stderr and "Traceback" not in bad.stderr


def test_python_dash_m_acd_is_the_acd_command() -> None:
    result = subprocess.run([sys.executable, "-m", "acd", "token", "hash", "x"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == hash_token("x")
