"""The HTTP API over real sockets: a subprocess node, httpx clients (docs/design.md, "HTTP API")."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from acd.api.app import ROUTES
from acd.settings import hash_token
from tests.helpers import NodeProcess, as_, wait_until

CALLER = "01012345678"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("api"), limits={"stream_heartbeat_seconds": 0.3})
    with process:
        yield process


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, timeout=10) as http:
        yield http


def create(client: httpx.Client, call: str, queue: str = "general", **extra: object) -> httpx.Response:
    return client.post("/v1/calls", json={"id": call, "queue": queue, "caller": CALLER, **extra})


# ------------------------------------------------------------------------- calls


def test_arrival_returns_201_with_state_position_and_ewt(client: httpx.Client) -> None:
    response = create(client, "arrival-1")
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": "arrival-1", "state": "waiting", "position": body["position"], "ewt": body["ewt"]}
    assert body["position"] >= 1 and body["ewt"] > 0


def test_repeated_create_with_the_same_body_returns_the_same_result(client: httpx.Client) -> None:
    first = create(client, "repeat-1", queue="protected")
    again = create(client, "repeat-1", queue="protected", channel="voice", priority=0)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()


def test_same_id_with_another_body_is_a_409_conflict(client: httpx.Client) -> None:
    assert create(client, "conflict-1").status_code == 201
    response = create(client, "conflict-1", queue="transport")
    assert response.status_code == 409
    assert response.json() == {"error": "id_conflict", "message": response.json()["message"], "field": "id"}


def test_a_call_goes_through_offer_answer_hangup_wrapup_and_survey(client: httpx.Client) -> None:
    assert client.post("/v1/agents/jung/login").json()["state"] == "not_ready"
    assert client.post("/v1/agents/jung/ready").json()["state"] == "ready"
    created = create(client, "chat-1", queue="text", channel="chat")
    assert created.json()["state"] == "offered"
    call = client.get("/v1/calls/chat-1").json()
    assert (call["state"], call["agent"], call["caller"]) == ("offered", "jung", "*******5678")
    assert "position" not in call
    answered = client.post("/v1/calls/chat-1/answer", json={"agent": "jung"})
    assert answered.status_code == 200 and answered.json()["state"] == "connected"
    # Retrying a command that already took effect succeeds with the current state.
    assert client.post("/v1/calls/chat-1/answer", json={"agent": "jung"}).json()["state"] == "connected"
    agent = client.get("/v1/agents/jung").json()
    assert agent["state"] == "busy" and [held["call"] for held in agent["interactions"]] == ["chat-1"]
    assert client.post("/v1/calls/chat-1/hangup").json()["state"] == "wrapup"
    wrapped = client.post("/v1/calls/chat-1/wrapup", json={"agent": "jung", "disposition": "resolved"})
    assert wrapped.json()["state"] == "completed" and wrapped.json()["disposition"] == "resolved"
    assert client.post("/v1/calls/chat-1/survey", json={"score": 5}).json()["survey"] == 5
    other = client.post("/v1/calls/chat-1/survey", json={"score": 2})
    assert other.status_code == 409 and other.json()["error"] == "survey_already_recorded"
    queue = client.get("/v1/queues/text").json()
    assert queue["today"]["answered"] >= 1 and queue["today"]["fcr"] == 1.0 and queue["today"]["csat"] == 1.0
    stats = client.get("/v1/stats").json()
    assert stats["center"]["answered"] >= 1 and stats["queues"]["text"]["handled"] >= 1
    assert client.post("/v1/agents/jung/logout").json()["state"] == "logged_out"


def test_reject_puts_the_call_back_and_transfer_callback_abandon_work(client: httpx.Client) -> None:
    # The highest priority goes first, ahead of calls left waiting by earlier tests.
    assert create(client, "reject-1", queue="transport", priority=9).json()["state"] == "waiting"
    client.post("/v1/agents/lee/login")
    assert client.post("/v1/agents/lee/ready").json()["offer"] == "reject-1"
    rejected = client.post("/v1/calls/reject-1/reject", json={"agent": "lee"})
    assert rejected.status_code == 200 and rejected.json()["state"] == "waiting"
    transferred = client.post("/v1/calls/reject-1/transfer", json={"queue": "general"})
    assert transferred.json()["queue"] == "general" and transferred.json()["transfers"] == 1
    assert client.post("/v1/calls/reject-1/callback").json()["callback"] is True
    abandoned = client.post("/v1/calls/reject-1/abandon", content=b"")
    assert abandoned.json()["state"] == "abandoned"
    assert client.post("/v1/calls/reject-1/abandon").status_code == 200  # a safe retry
    client.post("/v1/agents/lee/not-ready", json={"reason": "lunch"})
    assert client.get("/v1/agents/lee").json()["reason"] == "lunch"
    client.post("/v1/agents/lee/logout")


def test_views_of_agents_queues_and_stats(client: httpx.Client) -> None:
    agents = client.get("/v1/agents").json()
    assert {agent["id"] for agent in agents} == {"kim", "lee", "park", "choi", "jung"}
    assert set(agents[0]) >= {"state", "reason", "pending", "presence", "offer", "interactions", "skills", "capacity"}
    queues = client.get("/v1/queues").json()
    general = next(queue for queue in queues if queue["id"] == "general")
    assert general["waiting"] >= 1 and general["longest_wait_seconds"] > 0
    assert set(general["agents"]) >= {"ready", "busy", "logged_out"} and general["service_level_target"] == 0.8
    stats = client.get("/v1/stats").json()
    assert set(stats["center"]) >= {"offered", "answered", "abandoned", "service_level", "service_level_offered", "asa_seconds", "aht_seconds", "fcr", "csat"}
    assert "occupancy" in stats["agent_time"]
    empty = client.get("/v1/stats", params={"day": "2020-01-01"}).json()
    assert empty["day"] == "2020-01-01" and empty["center"]["offered"] == 0 and empty["center"]["service_level"] is None


# ------------------------------------------------------------------------- error contract


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"id": "x1", "queue": "general"', 400, "bad_json", None),
        (b"\xff\xfe", 400, "bad_json", None),
        (b"[]", 400, "invalid", None),
        (b'{"id": "x1", "queue": "general"}', 400, "invalid", "caller"),
        (b'{"id": "x1", "queue": "general", "caller": 5}', 400, "invalid", "caller"),
        (b'{"id": "x1", "queue": "general", "caller": "not a number"}', 400, "invalid", "caller"),
        (b'{"id": "x1", "queue": "general", "caller": "0101", "priority": 10}', 400, "invalid", "priority"),
        (b'{"id": "x1", "queue": "general", "caller": "0101", "prority": 1}', 400, "invalid", "prority"),
        (b'{"id": "x1", "queue": "general", "caller": "0101", "attributes": {"a": [1]}}', 400, "invalid", "attributes"),
        (b'{"id": "bad id!", "queue": "general", "caller": "0101"}', 400, "invalid", "id"),
        (b'{"id": "x1", "queue": "nowhere", "caller": "0101"}', 404, "unknown_queue", "queue"),
        (b'{"id": "x1", "queue": "text", "caller": "0101"}', 409, "channel_not_served", "channel"),
    ],
)
def test_bad_requests_get_the_error_contract(client: httpx.Client, body: bytes, status: int, code: str, field: str | None) -> None:
    response = client.post("/v1/calls", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    payload = response.json()
    assert payload["error"] == code and payload["message"]
    assert payload.get("field") == field


def test_unknown_ids_routes_and_methods(client: httpx.Client) -> None:
    assert client.get("/v1/calls/nobody").json()["error"] == "unknown_call"
    assert client.post("/v1/calls/nobody/abandon").status_code == 404
    assert client.post("/v1/agents/nobody/login").json() == {"error": "unknown_agent", "message": "no agent 'nobody'", "field": "agent"}
    assert client.get("/v1/queues/nowhere").status_code == 404
    assert client.get("/v1/agents/nobody/events").status_code == 404
    missing = client.get("/v2/everything")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.delete("/v1/calls")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST" and wrong.json()["error"] == "method_not_allowed"
    assert client.post("/v1/calls/nobody/answer", json={"agent": "kim", "extra": 1}).json()["field"] == "extra"
    assert client.get("/v1/stats", params={"day": "yesterday"}).json()["field"] == "day"


def test_bodies_over_the_limit_get_413(client: httpx.Client) -> None:
    huge = b'{"id": "x", "queue": "general", "caller": "0101", "attributes": {"a": "' + b"x" * 70_000 + b'"}}'
    response = client.post("/v1/calls", content=huge)
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"x" * 8192

    assert client.post("/v1/calls", content=chunks()).status_code == 413
    assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------- operations


def test_health_readiness_and_cluster_view(client: httpx.Client, node: NodeProcess) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json()["status"] == "ready"
    view = client.get("/v1/cluster").json()
    assert view["role"] == "primary" and view["peer"] is None and view["mode"] == "standalone" and view["epoch"] == 1
    switchover = client.post("/v1/cluster/switchover", json={})
    assert switchover.status_code == 409 and switchover.json()["error"] == "not_clustered"
    digest = client.get("/v1/admin/state").json()
    assert digest["lsn"] == view["lsn"] or digest["lsn"] >= view["lsn"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest["state_hash"])


def test_openapi_document_covers_every_endpoint(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
        if route.body is not None:
            assert "requestBody" in operation
    schemas = document["components"]["schemas"]
    references = re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', client.get("/openapi.json").text)
    assert references and all(name in schemas for name in references)
    arrival = schemas["CallArrival"]
    assert set(arrival["required"]) == {"id", "queue", "caller"} and arrival["additionalProperties"] is False


METRIC_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def test_metrics_follow_prometheus_conventions(client: httpx.Client) -> None:
    create(client, "metrics-1")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    for name in (
        "acd_queue_waiting", "acd_queue_longest_wait_seconds", "acd_queue_offered_today", "acd_queue_answered_today",
        "acd_queue_abandoned_today", "acd_queue_service_level_ratio", "acd_queue_asa_seconds", "acd_queue_aht_seconds",
        "acd_queue_fcr_ratio", "acd_queue_csat_ratio", "acd_agents", "acd_commands", "acd_command_latency_seconds",
        "acd_commit_latency_seconds", "acd_commit_batch_records", "acd_lsn", "acd_node_role", "acd_epoch",
        "acd_store_size_bytes", "acd_store_free_disk_bytes", "acd_gc_pause_seconds",
    ):
        assert name in families, name
    for family in families.values():
        assert METRIC_NAME.match(family.name) and family.documentation, family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            elif family.type == "gauge":
                assert not sample.name.endswith("_total"), sample.name
    commands = {(s.labels["command"], s.labels["result"]): s.value for s in families["acd_commands"].samples}
    assert commands[("Arrive", "accepted")] >= 1
    role = {s.labels["role"]: s.value for s in families["acd_node_role"].samples}
    assert role == {"primary": 1.0, "standby": 0.0}
    promtool = shutil.which("promtool")  # installed by `make system-deps` (scripts/system-deps.sh)
    if promtool:
        linted = subprocess.run([promtool, "check", "metrics"], input=response.text, capture_output=True, text=True, check=False)
        assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")


def test_config_reload_over_http_and_by_sighup(node: NodeProcess, client: httpx.Client) -> None:
    node.write_config(extra='\n[[queues]]\nname = "passports"\nchannels = ["voice"]\ncalendar = "always"\n')
    result = node.run_cli("config", "reload", "--config", str(node.config_path))
    assert result.returncode == 0, result.stderr
    assert '"changed": true' in result.stdout
    assert client.get("/v1/queues/passports").status_code == 200
    node.write_config(extra='\n[[queues]]\nname = "water"\nchannels = ["voice"]\ncalendar = "always"\n')
    assert node.process is not None
    node.process.send_signal(signal.SIGHUP)
    wait_until(lambda: client.get("/v1/queues/water").status_code == 200, what="SIGHUP reload")
    assert client.get("/v1/queues/passports").status_code == 404
    # A config with problems is refused whole, with every problem named.
    node.config_path.write_text(node.config_path.read_text() + '\n[[queues]]\nname = "x"\noverflow = "nowhere"\n')
    refused = client.post("/v1/config/reload")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_config"
    assert any("overflow" in problem for problem in refused.json()["problems"])
    node.write_config(extra="")
    assert client.post("/v1/config/reload").json()["changed"] is True


# ------------------------------------------------------------------------- authentication


TOKENS = {
    "pbx-token": ("pbx", ""), "kim-token": ("agent", "kim"), "lee-token": ("agent", "lee"),
    "boss-token": ("supervisor", ""), "root-token": ("admin", ""),
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tokens = [{"name": token.split("-")[0], "role": role, "hash": hash_token(token), **({"agent": agent} if agent else {})}
              for token, (role, agent) in TOKENS.items()]
    process = NodeProcess(tmp_path_factory.mktemp("secured"), tokens=tokens)
    with process:
        yield process


def test_requests_without_a_valid_token_get_401(secured: NodeProcess) -> None:
    with as_(secured, None) as anonymous:
        response = anonymous.get("/v1/stats")
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
    with as_(secured, "made-up") as stranger:
        assert stranger.get("/v1/stats").status_code == 401
    with httpx.Client(base_url=secured.url, headers={"authorization": "Basic a2ltOmtpbQ=="}) as basic:
        assert basic.get("/v1/stats").status_code == 401


def test_each_role_may_do_its_own_work_only(secured: NodeProcess) -> None:
    with as_(secured, "pbx-token") as pbx, as_(secured, "kim-token") as kim, as_(secured, "lee-token") as lee, \
            as_(secured, "boss-token") as boss, as_(secured, "root-token") as root:
        # Agents change only their own state; supervisors any agent's.
        assert kim.post("/v1/agents/kim/login").status_code == 200
        assert kim.post("/v1/agents/lee/login").status_code == 403
        assert boss.post("/v1/agents/lee/login").status_code == 200
        assert pbx.post("/v1/agents/kim/ready").status_code == 403
        assert kim.post("/v1/agents/kim/ready").json()["state"] == "ready"
        # The PBX brings calls; nobody else but the admin may.
        assert boss.post("/v1/calls", json={"id": "auth-1", "queue": "transport", "caller": CALLER}).status_code == 403
        assert kim.post("/v1/calls", json={"id": "auth-1", "queue": "transport", "caller": CALLER}).status_code == 403
        created = pbx.post("/v1/calls", json={"id": "auth-1", "queue": "transport", "caller": CALLER})
        assert created.status_code == 201 and created.json()["state"] == "offered"
        # The offer is kim's: lee may neither see nor answer it, nor answer in kim's name.
        assert lee.get("/v1/calls/auth-1").status_code == 403
        assert lee.post("/v1/calls/auth-1/answer", json={"agent": "kim"}).status_code == 403
        assert kim.get("/v1/calls/auth-1").status_code == 200
        assert kim.post("/v1/calls/auth-1/answer", json={"agent": "kim"}).json()["state"] == "connected"
        assert lee.post("/v1/calls/auth-1/hangup").status_code == 403
        assert kim.post("/v1/calls/auth-1/hangup").status_code == 200
        assert kim.post("/v1/calls/auth-1/wrapup", json={"agent": "kim", "disposition": "resolved"}).status_code == 200
        assert kim.post("/v1/calls/auth-1/survey", json={"score": 5}).status_code == 403
        assert pbx.post("/v1/calls/auth-1/survey", json={"score": 5}).status_code == 200
        # Reads: supervisors see everything, agents only themselves, the PBX only calls.
        assert boss.get("/v1/stats").status_code == 200 and boss.get("/v1/agents").status_code == 200
        assert kim.get("/v1/agents/kim").status_code == 200
        assert kim.get("/v1/agents/lee").status_code == 403 and kim.get("/v1/stats").status_code == 403
        assert pbx.get("/v1/queues").status_code == 403 and pbx.get("/v1/calls/auth-1").status_code == 200
        # Operations belong to the admin.
        assert boss.post("/v1/config/reload").status_code == 403
        assert root.post("/v1/config/reload").status_code == 200
        assert boss.get("/v1/admin/state").status_code == 403
        assert root.post("/v1/cluster/switchover").status_code == 409
        assert boss.get("/v1/cluster").status_code == 200


def test_token_hash_cli_prints_what_the_config_needs(tmp_path: Path) -> None:
    helper = NodeProcess(tmp_path)
    printed = helper.run_cli("token", "hash", "pbx-token")
    assert printed.stdout.strip() == hash_token("pbx-token")
    piped = helper.run_cli("token", "hash", input="pbx-token\n")
    assert piped.stdout.strip() == hash_token("pbx-token")
