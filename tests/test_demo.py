"""`make demo` cannot rot: a short run of `acd demo` (a subprocess), with its kill and rejoin.

The full demo replays 90 minutes of a morning at 90 times speed; this one replays 80 calls of
20 minutes (seed 2, whose callers ask for call-backs), kills the primary 8 seconds in and
restarts it 3 seconds later, and then checks what the demo itself reports: PASS, every
acknowledged call on both nodes in a terminal state, the failover and the rejoin measured, and
the tallies adding up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_refused_before_start

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_short_demo_fails_over_rejoins_and_loses_no_call(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    completed = subprocess.run(
        [sys.executable, "-m", "acd", "demo", "--window", "20", "--calls", "80", "--kill-at", "8",
         "--rejoin-after", "3", "--drain", "12", "--seed", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-3000:]
    assert "ACD demo: PASS" in completed.stdout
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["lost_calls"] == 0 and report["stranded_calls"] == 0
    assert report["killed"] in ("a", "b")
    assert report["failover_seconds"] is not None and 0 < report["failover_seconds"] < 5
    assert report["rejoin_seconds"] is not None
    created = report["calls_acknowledged"]
    assert created > 40
    # Both nodes hold every acknowledged call, in the same final states.
    states = [node["states"] for node in report["per_node"].values()]
    assert len(states) == 2 and states[0] == states[1]
    assert sum(states[0].values()) == created
    # What the demo's desks and callers did is what the nodes hold: each created call answered
    # once (answers of call-backs counted apart) or abandoned.
    assert states[0].get("abandoned", 0) == report["abandoned"]
    assert states[0].get("completed", 0) == report["answered"] > 0
    assert report["answered"] + report["abandoned"] == created
    # Seed 2's callers ask for call-backs (three in the runs measured): a call-back asked while
    # the call rings at a desk is offered to it again at once, and the desk must not answer twice.
    assert report["callbacks"] >= 1
    assert (out / "report.md").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speed", "0"], "argument --speed: '0' must be > 0"),
        (["--calls", "-3"], "argument --calls: '-3' must be >= 0"),
        (["--window", "x"], "argument --window: 'x' is not a number"),
        (["--config", "/nonexistent/cluster.toml"], "demo: /nonexistent/cluster.toml: no such file"),
        (["--scenario", "nope"], "demo: --scenario: 'nope' is neither a file nor a shipped scenario"),
        (["--config", "{bad}"], "bad.toml:2: cluster.name: Expected `str`, got `int`"),
    ],
)
def test_demo_refuses_bad_options_before_starting_anything(tmp_path: Path, args: list[str], message: str) -> None:
    assert_refused_before_start([sys.executable, "-m", "acd", "demo", *args], tmp_path, message)


@pytest.mark.slow
def test_demo_prints_where_to_look_and_keeps_the_cluster_until_ctrl_c(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import time

    import httpx

    out = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "acd", "demo", "--window", "5", "--calls", "10", "--no-kill", "--drain", "3", "--keep",
         "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        text = "".join(lines)
        assert "keeps running" in text, text[-3000:]
        wallboards = re.findall(r"wallboard (http://\S+/wallboard)", text)
        assert len(wallboards) >= 2, text[-3000:]
        time.sleep(3)  # the addresses follow; the cluster is still up after the summary
        assert demo.poll() is None, "the demo ended instead of keeping the cluster"
        assert httpx.get(wallboards[-1], timeout=5).status_code == 200
        os.kill(demo.pid, signal.SIGINT)
        assert demo.wait(timeout=60) == 0
        assert not any(out.glob("examples")), "nothing is written outside the run folder"
        assert (out / "data").is_dir() and (out / "report.json").is_file()
        try:
            httpx.get(wallboards[-1], timeout=2)
            raise AssertionError("the cluster still answers after Ctrl-C")
        except httpx.HTTPError:
            pass
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
