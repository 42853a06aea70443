"""One retry decision for every client that follows the primary (`acd.tools.client`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from acd.tools.client import Decision, Router, retry_decision

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile_acd.py"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (None, None, Decision(retry=True)),                                   # refused, reset, timed out
        (0, None, Decision(retry=True)),                                      # Locust's "no response"
        (503, {"error": "not_primary", "primary": "10.0.0.2:8120"}, Decision(retry=True, primary="10.0.0.2:8120")),
        (503, {"error": "not_primary", "primary": None}, Decision(retry=True)),  # no primary known yet
        (503, {"error": "shutting_down"}, Decision(retry=True)),
        (503, None, Decision(retry=True)),                                    # a load balancer's own 503
        (502, None, Decision(retry=True)),
        (504, {"primary": "ignored"}, Decision(retry=True)),                  # only a node's 503 names a primary
        (200, {"primary": "x"}, Decision(retry=False)),
        (201, None, Decision(retry=False)),
        (404, {"error": "not_found"}, Decision(retry=False)),
        (409, {"error": "not_primary"}, Decision(retry=False)),               # the API never sends it: not a failover
        (409, {"error": "id_conflict"}, Decision(retry=False)),
        (422, {"error": "invalid"}, Decision(retry=False)),
        (507, {"error": "storage_full"}, Decision(retry=False)),              # retrying cannot help; the operator must
    ],
)
def test_retry_decision(status: int | None, body: Any, expected: Decision) -> None:
    assert retry_decision(status, body) == expected


def test_the_client_module_can_be_imported_without_trio_or_httpx() -> None:
    probe = "import sys, acd.tools.client; print(sorted({'trio', 'httpx'} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert completed.stdout.strip() == "[]"


def test_the_locust_client_decides_with_the_same_function_and_imports_no_trio() -> None:
    tree = ast.parse(LOCUSTFILE.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}:{alias.name}" for alias in node.names} | {str(node.module).split(".")[0]}
    assert "acd.tools.client:retry_decision" in imported
    assert not {"trio", "httpx"} & imported
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "retry_decision"]
    assert calls, "AcdClient.send decides with retry_decision"
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert "not_primary" not in constants, "no retry rule of its own for a not_primary code"


def _route(answers: dict[str, list[tuple[int, dict[str, Any]]]], seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        seen.append(host)
        queue = answers[host]
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_the_router_follows_the_named_primary_and_counts_the_outage() -> None:
    seen: list[str] = []
    answers = {
        "a:1": [(503, {"error": "not_primary", "primary": "b:2"})],
        "b:2": [(201, {"id": "x"})],
    }

    async def main() -> None:
        async with httpx.AsyncClient(transport=_route(answers, seen)) as client:
            router = Router(["a:1", "b:2"], client)
            response = await router.request("POST", "/v1/calls", {"id": "x"})
            assert response.status_code == 201
            assert router.current == "b:2" and router.errors == 1
            assert len(router.outage.windows) == 1

    trio.run(main)
    assert seen == ["a:1", "b:2"]


def test_the_router_tries_the_next_node_after_no_answer_and_returns_a_conflict_at_once() -> None:
    seen: list[str] = []
    answers = {
        "a:1": [(0, {})],
        "b:2": [(409, {"error": "id_conflict"})],
    }

    async def main() -> None:
        async with httpx.AsyncClient(transport=_route(answers, seen)) as client:
            router = Router(["a:1", "b:2"], client)
            response = await router.request("POST", "/v1/calls", {"id": "x"})
            assert response.status_code == 409
            assert router.errors == 1

    trio.run(main)
    assert seen == ["a:1", "b:2"], "the 409 is final: not sent again"
