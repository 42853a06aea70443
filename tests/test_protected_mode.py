"""Protected mode (issue 20, "Unsafe configurations pass `acd config check`"): an API beyond
loopback without [[tokens]], and replication or a witness beyond loopback without
`cluster.secret_file`, are config errors naming key and line, so `acd config check` reports
them and neither a node nor the witness starts, unless the documented opt-in key says so.
Two tokens with one hash or one name are errors too.

The refused addresses are TEST-NET ones (192.0.2.0/24): nothing here ever listens beyond
loopback, on any version of the code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from acd.cli import main
from acd.settings import hash_token
from tests.helpers import NodeProcess, free_port
from tests.helpers.node_process import ROOT, child_environment

CLUSTER = (ROOT / "examples" / "busan-120.toml").read_text(encoding="utf-8")
OUTSIDE = "192.0.2.10"


def _cluster(tmp_path: Path, *, cluster_keys: str = "", replace: dict[str, str] | None = None, extra: str = "") -> Path:
    """examples/busan-120.toml with some addresses replaced and keys added to [cluster]."""
    text = CLUSTER
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new, 1)
    text = text.replace('[cluster]\nname = "busan-120"\n', f'[cluster]\nname = "busan-120"\n{cluster_keys}', 1)
    path = tmp_path / "cluster.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def _line(path: Path, needle: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["config", "check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


TOKEN = f'\n[[tokens]]\nname = "root"\nrole = "admin"\nhash = "{hash_token("root-token")}"\n'


def test_an_api_beyond_loopback_without_tokens_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path, replace={'api = "127.0.0.1:8121"': f'api = "{OUTSIDE}:8121"'})
    code, output = _check(path, capsys)
    assert code == 2
    assert f"{path}:{_line(path, OUTSIDE)}: nodes[1].api: protected mode" in output
    assert "cluster.allow_unauthenticated_api" in output
    # With tokens, or with the explicit opt-in, it passes.
    assert _check(_cluster(tmp_path, replace={'api = "127.0.0.1:8121"': f'api = "{OUTSIDE}:8121"'}, extra=TOKEN), capsys)[0] == 0
    opted = _cluster(tmp_path, cluster_keys="allow_unauthenticated_api = true\n", replace={'api = "127.0.0.1:8121"': f'api = "{OUTSIDE}:8121"'})
    assert _check(opted, capsys)[0] == 0


@pytest.mark.parametrize(("old", "new", "key"), [
    ('address = "127.0.0.1:9129"', 'address = "0.0.0.0:9129"', "witness.address"),
    ('replication = "127.0.0.1:9120"', 'replication = "127.0.0.1:9120"\nreplication_bind = "0.0.0.0:9120"', "nodes[0].replication_bind"),
    ('replication = "127.0.0.1:9121"', f'replication = "{OUTSIDE}:9121"', "nodes[1].replication"),
])
def test_replication_or_a_witness_beyond_loopback_without_a_secret_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, key: str,
) -> None:
    path = _cluster(tmp_path, replace={old: new})
    code, output = _check(path, capsys)
    assert code == 2
    address = re.findall(r'"([^"]+)"', new)[-1]
    assert f"{path}:{_line(path, address)}: {key}: protected mode" in output, output
    assert "cluster.secret_file" in output and "cluster.allow_unauthenticated_replication" in output
    (tmp_path / "cluster.secret").write_text("s3cret-s3cret-s3cret\n")
    assert _check(_cluster(tmp_path, cluster_keys='secret_file = "cluster.secret"\n', replace={old: new}), capsys)[0] == 0
    assert _check(_cluster(tmp_path, cluster_keys="allow_unauthenticated_replication = true\n", replace={old: new}), capsys)[0] == 0


def test_two_tokens_with_one_hash_or_one_name_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same_hash = f'\n[[tokens]]\nname = "pbx"\nrole = "pbx"\nhash = "{hash_token("root-token")}"\n'
    same_name = f'\n[[tokens]]\nname = "root"\nrole = "supervisor"\nhash = "{hash_token("other-token")}"\n'
    path = _cluster(tmp_path, extra=TOKEN + same_hash + same_name)
    code, output = _check(path, capsys)
    assert code == 2
    lines = path.read_text().splitlines()
    hash_line = max(number for number, line in enumerate(lines, 1) if line == f'hash = "{hash_token("root-token")}"')
    name_line = max(number for number, line in enumerate(lines, 1) if line == 'name = "root"')
    assert f"{path}:{hash_line}: tokens[1].hash: the same hash as tokens[0] ('root')" in output
    assert f"{path}:{name_line}: tokens[2].name: duplicate token name 'root'" in output


def test_a_node_refuses_to_start_with_an_open_api_beyond_loopback(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path)
    text = node.config_path.read_text()
    node.config_path.write_text(text.replace(f'api = "127.0.0.1:{node.port}"', f'api = "{OUTSIDE}:{node.port}"'))
    completed = node.serve_once()
    assert completed.returncode != 0
    assert "nodes[0].api: protected mode" in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_witness_refuses_to_start_beyond_loopback_without_a_secret(tmp_path: Path) -> None:
    port = free_port()
    path = _cluster(tmp_path, replace={'address = "127.0.0.1:9129"': f'address = "{OUTSIDE}:{port}"'})
    completed = subprocess.run(
        [sys.executable, "-m", "acd", "witness", "--config", str(path)], cwd=ROOT, capture_output=True, text=True,
        timeout=30, env=child_environment(),
    )
    assert completed.returncode != 0
    assert "witness.address: protected mode" in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr


def test_no_shipped_config_is_refused_by_protected_mode(capsys: pytest.CaptureFixture[str]) -> None:
    for path in sorted((ROOT / "examples").glob("*.toml")):
        assert main(["config", "check", str(path)]) == 0, capsys.readouterr().err
    # The production shape names files of its hosts (/etc/acd/...): only protected mode is checked.
    main(["config", "check", str(ROOT / "deploy" / "cluster-3hosts.toml")])
    assert "protected mode" not in capsys.readouterr().err
