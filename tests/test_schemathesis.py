"""Schemathesis against the live OpenAPI document: a two-node cluster with a witness and tokens
on, and a standalone node with tokens off (issue 20).

Every phase runs (examples, coverage, fuzzing, and the stateful phase, which chains operations
through the document's OpenAPI links: create a call, read it, answer it, hang up, wrap up)
with Schemathesis's default checks, which are all of them. What must hold: 0 server errors and
0 crashed processes. After a run every process of the target is alive and its log holds no
traceback, the target still takes a normal write, and the cluster's two nodes converge to the
same state.

- The cluster (tokens on, an admin token): the primary is fuzzed, then the standby. A standby
  refuses every write with 503 `not_primary` (the documented redirect to the primary) and
  answers /readyz with 503 (the load balancers' check); on the standby those two are allowed,
  every other 5xx fails. The two role-changing operations (switchover, promote) are left out:
  a fuzzer swapping the roles mid-run would turn the rest of the run into 503s (the failover
  tests drive them). The limit on requests without a valid token is off for this cluster:
  the checks about authentication send bursts of them and look for 401, not the limiter's 429.
- The standalone node (tokens off): every operation, switchover and promote included (409
  `not_clustered`), against the document of a node without tokens
  (`document(ROUTES, authenticated=False)`: no operation asks for a token), which is what
  such a node serves at /openapi.json.

Request bodies draw queue and agent names from the node's own config part of the time (a
Schemathesis dictionary), so that calls are really created and the chains reach the core.
The figures of each run (test cases, requests, answers by status) are printed; the requests
are in each run's HAR file.

A short run is part of `make test` (10 examples per operation, well under two minutes for
both targets); `make fuzz` runs the long one (`ACD_FUZZ_EXAMPLES` examples per operation,
default 500; `ACD_FUZZ_SEED`). With CI=true a missing `st` fails the test instead of skipping.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from acd import settings as settings_module
from acd.api.app import ROUTES
from acd.api.openapi import document
from acd.settings import hash_token
from acd.tools.launcher import LocalCluster, prepare_config, wait_for
from tests.helpers.node_process import NodeProcess

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "busan-120.toml"
ST = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
ADMIN = "fuzz-admin-token"
EXAMPLES = int(os.environ.get("ACD_FUZZ_EXAMPLES", "10"))
SEED = os.environ.get("ACD_FUZZ_SEED", "11")
SHORT = EXAMPLES <= 10
# The short run stays well under two minutes for both targets together; a long run is bounded too.
RUN_TIMEOUT = 75 if SHORT else 3 * 3600
ROLE_CHANGES = r"^/v1/cluster/(switchover|promote)$"


def require_st() -> str:
    if ST is None:
        message = "schemathesis (`st`) is not installed: pip install -e '.[dev]'"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"{message}; in CI the fuzzing acceptance may not be skipped")
        pytest.skip(message)
    return ST


@dataclass
class FuzzRun:
    """One `st run` and what it sent and got, read from its HAR report."""

    target: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx other than an allowed one
    allowed_5xx: int = 0  # a standby's 503 not_primary and 503 /readyz

    @property
    def generated(self) -> str:
        found = re.search(r"^\s*(\d+) generated", self.stdout, re.MULTILINE)
        return found[1] if found else "?"

    def phase(self, name: str) -> str:
        found = re.search(rf"^\s*(\S+)\s+{name}\b", self.stdout, re.MULTILINE)
        return found[1] if found else "?"

    def summary(self) -> str:
        errors = sum(count for status, count in self.statuses.items() if status >= 500)
        return (
            f"{self.target}: exit {self.returncode}, {self.seconds:.1f} s, {self.generated} test cases, "
            f"{self.requests} requests, 5xx {errors} ({self.allowed_5xx} allowed 503 of a standby), "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(value) for value in values) + "]"


def st_config(directory: Path, config: Path, *, standby: bool) -> Path:
    """The Schemathesis config of one run: event streams read up to one event, body fields
    `queue` and `agent` and agents' path ids drawn from the node's config part of the time."""
    center = settings_module.load(config).center
    queues = [queue.name for queue in center.queues]
    agents = [agent.name for agent in center.agents]
    text = f"""
# A write is durable (on the standby too, in sync mode) before it is answered.
request-timeout = 5

[dictionaries.queues]
values = {_toml_list(queues)}

[dictionaries.agents]
values = {_toml_list(agents)}

[parameters]
"body.queue" = {{ dictionary = "queues", probability = 0.7 }}
"body.agent" = {{ dictionary = "agents", probability = 0.7 }}

# An event stream is read up to its first event; a quiet one for a second.
[[operations]]
include-path-regex = "events$"
max-stream-events = 1
request-timeout = 1

[[operations]]
include-path-regex = "^/v1/agents/"
parameters = {{ "path.id" = {{ dictionary = "agents", probability = 0.7 }} }}
"""
    if standby:
        text += '\n[checks.not_a_server_error]\nexpected-statuses = ["2xx", "3xx", "4xx", "503"]\n'
    path = directory / "schemathesis.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_schemathesis(
    url: str, directory: Path, config: Path, *, target: str, token: str | None = None, standby: bool = False,
    exclude_path_regex: str | None = None, document: Path | None = None,
) -> FuzzRun:
    """`st run` against `url` (its served document, or `document`), every phase, default checks."""
    directory.mkdir(parents=True, exist_ok=True)
    har = directory / "requests.har.json"
    location = [str(document), "--url", url] if document else [f"{url}/openapi.json"]
    command = [
        require_st(), "--config-file", str(st_config(directory, config, standby=standby)), "--no-color",
        "run", *location, "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES), "--workers", "1", "--seed", SEED,
        "--generation-database", "none", "--report", "har", "--report-har-path", str(har),
    ]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    if exclude_path_regex:
        command += ["--exclude-path-regex", exclude_path_regex]
    started = time.monotonic()
    # Run in its own folder: Schemathesis's cache stays out of the repository.
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=directory)
    run = FuzzRun(target, result.returncode, result.stdout, result.stderr, time.monotonic() - started)
    (directory / "st.out").write_text(result.stdout + result.stderr, encoding="utf-8")
    if har.exists():
        for entry in json.loads(har.read_text(encoding="utf-8"))["log"]["entries"]:
            status = entry["response"]["status"]
            run.requests += 1
            run.statuses[status] += 1
            if status < 500:
                continue
            text = entry["response"].get("content", {}).get("text", "") or ""
            try:
                code = json.loads(text).get("error")
            except (ValueError, AttributeError):
                code = None
            # A standby's two 503s by design: a write's `not_primary` (with the primary's
            # address) and the load balancers' /readyz.
            readyz = entry["request"]["url"].split("?")[0].endswith("/readyz")
            if standby and status == 503 and (code == "not_primary" or readyz):
                run.allowed_5xx += 1
            else:
                request = entry["request"]
                body = (request.get("postData") or {}).get("text", "")
                run.server_errors.append(f"{request['method']} {request['url']} {body[:300]!r} -> {status} {text[:300]}")
    print(run.summary())
    print("\n".join(line for line in run.stdout.splitlines() if re.match(r"\s+(Scenarios|API Links|✅ \d|❌ \d|⏭ +\d)", line)))
    return run


def assert_clean(run: FuzzRun, logs: dict[str, str]) -> None:
    failures = [line for line in run.stdout.splitlines() if re.match(r"\s*❌", line)]
    detail = f"{run.summary()}\n{failures}\n{run.stdout[-12000:]}\n{run.stderr[-2000:]}"
    assert run.server_errors == [], "server errors:\n" + "\n".join(run.server_errors[:20]) + "\n" + detail
    assert run.returncode == 0, detail
    assert run.phase("Stateful") == "✅", f"the stateful phase did not run and pass:\n{detail}"
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}'s log has a traceback:\n{text[-6000:]}"


# ----------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_st()  # before starting anything
    directory = tmp_path_factory.mktemp("fuzz-cluster")
    overrides = {}
    if "unauthorized_per_second_per_address" in settings_module.LimitsSection.__struct_fields__:
        # The auth checks send bursts without a valid token from one address; past the limit
        # they would get the limiter's 429 instead of the 401 they check for.
        overrides["limits.unauthorized_per_second_per_address"] = "0"
    config = prepare_config(SAMPLE, directory, always_open=True, overrides=overrides)
    with config.open("a", encoding="utf-8") as file:
        file.write(f'\n[[tokens]]\nname = "fuzz"\nrole = "admin"\nhash = "{hash_token(ADMIN)}"\n')
    settings_module.load(config)
    cluster = LocalCluster(config, directory)
    cluster.client.headers["authorization"] = f"Bearer {ADMIN}"  # its own reads (start-up checks) need the token
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def cluster_logs(cluster: LocalCluster) -> dict[str, str]:
    return {path.stem: path.read_text(errors="replace") for path in sorted(cluster.logs.glob("*.log"))}


def test_schemathesis_on_a_cluster_with_tokens_finds_no_server_error_and_crashes_nothing(
    cluster: LocalCluster, tmp_path: Path,
) -> None:
    require_st()
    primary = cluster.wait_primary()
    standby = cluster.standby_of(primary)
    runs = [
        run_schemathesis(cluster.api(primary), tmp_path / "primary", cluster.config, target=f"primary {primary}",
                         token=ADMIN, exclude_path_regex=ROLE_CHANGES),
    ]
    # The roles did not move (nothing above may change them), so the standby is still one.
    assert cluster.primary() == primary
    runs.append(run_schemathesis(cluster.api(standby), tmp_path / "standby", cluster.config, target=f"standby {standby}",
                                 token=ADMIN, standby=True, exclude_path_regex=ROLE_CHANGES))
    for name in ("witness", "a", "b"):
        assert cluster.alive(name), f"{name} exited:\n{cluster_logs(cluster).get(name, '')[-6000:]}"
    for run in runs:
        assert_clean(run, cluster_logs(cluster))
    assert cluster.primary() == primary

    headers = {"authorization": f"Bearer {ADMIN}"}
    with httpx.Client(timeout=5, headers=headers) as client:
        # Still serving a normal write, and both nodes hold the same state.
        created = client.post(f"{cluster.api(primary)}/v1/calls", json={"id": "after-fuzz", "queue": "transport", "caller": "01012345678"})
        assert created.status_code == 201, created.text

        def converged() -> bool:
            digests = [client.get(f"{cluster.api(name)}/v1/admin/state").json() for name in (primary, standby)]
            return digests[0]["lsn"] == digests[1]["lsn"] and digests[0]["state_hash"] == digests[1]["state_hash"]

        wait_for(converged, 15, interval=0.1, what="the standby to converge after the fuzzing")


# -------------------------------------------------------------------------- standalone


def test_schemathesis_on_a_standalone_node_without_tokens_finds_no_server_error_and_crashes_nothing(tmp_path: Path) -> None:
    require_st()
    unauthenticated = tmp_path / "openapi.json"
    with NodeProcess(tmp_path / "node") as node:
        # The node serves the document of a node without tokens: no operation asks for one.
        served = httpx.get(f"{node.url}/openapi.json", timeout=5).json()
        assert served == json.loads(json.dumps(document(ROUTES, authenticated=False)))
        unauthenticated.write_text(json.dumps(served), encoding="utf-8")
        run = run_schemathesis(node.url, tmp_path / "st", node.config_path, target="standalone", document=unauthenticated)
        assert node.process is not None and node.process.poll() is None, f"the node exited:\n{node.log_tail(80)}"
        assert_clean(run, {"standalone": node.log_path.read_text(errors="replace")})
        created = httpx.post(f"{node.url}/v1/calls", json={"id": "after-fuzz", "queue": "transport", "caller": "01012345678"}, timeout=5)
        assert created.status_code == 201, created.text
