"""Schemathesis against the live OpenAPI document of a node with tokens on (issue 11).

Every operation, positive and negative cases, every check: no 5xx, every response conforms
to the document. A short run here (`make test`); `make fuzz` runs the long one
(`ACD_FUZZ_EXAMPLES`, default 500 examples per operation). Event streams are read up to one
event or the request timeout (`max-stream-events`), and their events are validated against
the document's description of a Server-Sent Event.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from acd.settings import hash_token
from tests.helpers.node_process import NodeProcess

ST = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
ADMIN = "fuzz-admin-token"

pytestmark = pytest.mark.skipif(ST is None, reason="schemathesis (`st`) is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tokens = [{"name": "fuzz", "role": "admin", "hash": hash_token(ADMIN)}]
    with NodeProcess(tmp_path_factory.mktemp("schemathesis"), tokens=tokens) as process:
        yield process


def test_schemathesis_finds_no_server_error_and_no_schema_violation(node: NodeProcess, tmp_path: Path) -> None:
    examples = os.environ.get("ACD_FUZZ_EXAMPLES", "10")
    config = tmp_path / "schemathesis.toml"
    config.write_text('[[operations]]\ninclude-path-regex = "events$"\nmax-stream-events = 1\n', encoding="utf-8")
    command = [
        ST, "--config-file", str(config), "--no-color", "run", f"{node.url}/openapi.json",
        "-H", f"Authorization: Bearer {ADMIN}", "--checks", "all", "--max-examples", examples,
        "--request-timeout", "2", "--workers", "1", "--seed", os.environ.get("ACD_FUZZ_SEED", "11"),
    ]
    timeout = 120 if examples == "10" else 3600
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)  # its cache stays out of the repo
    summary = [line for line in result.stdout.splitlines() if line.startswith("=") and " in " in line]
    print(result.stdout[-3000:])
    assert result.returncode == 0, f"{summary}\n{result.stdout[-12000:]}\n{result.stderr[-2000:]}\nnode log:\n{node.log_tail()}"
