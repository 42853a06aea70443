"""Debian tools some tests need (prometheus, haproxy, chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def system_tool(tool: str, package: str) -> str:
    """The path of a Debian tool, installed by scripts/system-deps.sh when missing and root.

    With CI=true a tool that is still missing fails the test; elsewhere the test is skipped.
    """
    found = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "system-deps.sh")], env=dict(os.environ, ACD_SYSTEM_DEPS=f"{tool}:{package}"),
            check=False, timeout=600,
        )
        found = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if found is None:
        message = f"{tool} is not installed: `make system-deps` or `apt-get install {package}`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found
