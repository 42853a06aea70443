"""No request, however malformed, gets a 5xx: Hypothesis-generated requests over the whole API.

Methods, paths (every endpoint of the route table with known, unknown and strange ids, and
made-up paths), query strings, headers and bodies (malformed JSON, wrong types, unknown and
missing fields, bodies past the size limit) are drawn at random and sent over a real socket
to a subprocess node, one with authentication off and one with tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from acd.api.app import ROUTES
from acd.settings import hash_token
from tests.helpers import NodeProcess

KNOWN_IDS = ["kim", "lee", "jung", "general", "transport", "text", "fuzz-call", "fuzz-chat", "district", "nobody"]
FIELDS = ["id", "queue", "caller", "channel", "priority", "attributes", "agent", "disposition", "abusive",
          "callback_at", "score", "reason", "to", "type", "extra"]
TOKENS = ["pbx-token", "kim-token", "boss-token", "root-token", "root-token", "root-token", "wrong-token", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(KNOWN_IDS + ["voice", "chat", "sms", "resolved", "0101234567"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "bytes", "json", "fields", "valid-ish", "huge"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "huge":
        return b'{"id": "' + b"x" * draw(st.integers(min_value=65_000, max_value=300_000)) + b'"}'
    fields = draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6))
    if kind == "valid-ish":
        base = {"id": draw(st.sampled_from(KNOWN_IDS)), "queue": draw(st.sampled_from(KNOWN_IDS)), "caller": "01012345678",
                "agent": draw(st.sampled_from(KNOWN_IDS)), "disposition": "resolved", "score": draw(st.integers(0, 6))}
        keep = draw(st.sets(st.sampled_from(sorted(base))))
        fields = {**{key: base[key] for key in keep}, **fields}
    return json.dumps(fields).encode()


segment = st.one_of(
    st.sampled_from(KNOWN_IDS),
    st.sampled_from(KNOWN_IDS),
    st.text(min_size=0, max_size=70),
    st.sampled_from(["..", ".", "%00", "a" * 200, "ü", "%2F", " ", "call:1", "-x"]),
)


def fill(draw: st.DrawFn, template: str) -> str:
    return "/".join(quote(draw(segment), safe="%") if part.startswith("{") else part for part in template.split("/"))


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    if draw(st.integers(0, 9)) < 8:  # mostly real endpoints with their own method
        route = draw(st.sampled_from(ROUTES))
        method, url = route.method, fill(draw, route.path)
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
        if draw(st.booleans()):
            url = fill(draw, draw(st.sampled_from([route.path for route in ROUTES])))
        else:
            url = "/" + "/".join(quote(part, safe="") for part in draw(st.lists(segment, max_size=5)))
            if url.startswith("//"):  # an HTTP client reads `//x` as a host, not a path
                url = "/%2F" + url[2:]
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["content-type"] = draw(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
    if draw(st.integers(0, 4)) == 0:
        headers["last-event-id"] = draw(st.sampled_from(["0", "-1", "abc", "99999999999999999999", "5", ""]))
    token = draw(st.sampled_from(TOKENS))
    if token:
        headers["authorization"] = f"Bearer {token}"
    query = draw(st.sampled_from(["", "", "after=0", "after=-5", "after=x", "day=2026-01-01", "day=nope", "a=1&b=2", "after=1e9"]))
    return {
        "method": method,
        "url": url + (f"?{query}" if query else ""),
        "content": draw(bodies()),
        "headers": headers,
        "secured": draw(st.integers(0, 3)) == 0,
    }


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, httpx.Client]]:
    tokens = [
        {"name": "pbx", "role": "pbx", "hash": hash_token("pbx-token")},
        {"name": "kim", "role": "agent", "agent": "kim", "hash": hash_token("kim-token")},
        {"name": "boss", "role": "supervisor", "hash": hash_token("boss-token")},
        {"name": "root", "role": "admin", "hash": hash_token("root-token")},
    ]
    open_node = NodeProcess(tmp_path_factory.mktemp("fuzz-open"), limits={"stream_heartbeat_seconds": 0.2})
    secured_node = NodeProcess(tmp_path_factory.mktemp("fuzz-secured"), tokens=tokens)
    with open_node, secured_node:
        timeout = httpx.Timeout(10, read=5)
        with httpx.Client(base_url=open_node.url, timeout=timeout) as plain, httpx.Client(base_url=secured_node.url, timeout=timeout) as secured:
            # Some state for the ids to hit: a waiting call, an offered chat, agents logged in.
            plain.post("/v1/calls", json={"id": "fuzz-call", "queue": "general", "caller": "01012345678"})
            plain.post("/v1/agents/jung/login")
            plain.post("/v1/agents/jung/ready")
            plain.post("/v1/calls", json={"id": "fuzz-chat", "queue": "text", "caller": "01012345678", "channel": "chat"})
            yield {False: plain, True: secured}
            for process in (open_node, secured_node):
                assert "Traceback" not in process.log_path.read_text(errors="replace")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
def test_no_request_gets_a_server_error(nodes: dict[bool, httpx.Client], request: dict[str, object]) -> None:
    client = nodes[bool(request["secured"])]
    with client.stream(
        str(request["method"]), str(request["url"]), content=request["content"],  # type: ignore[arg-type]
        headers=request["headers"],  # type: ignore[arg-type]
    ) as response:
        event(f"{request['method']} {response.status_code}")
        assert response.status_code < 500, (response.status_code, response.read())
        if not response.headers.get("content-type", "").startswith("text/event-stream") and request["method"] != "HEAD":
            body = response.read()
            if response.status_code >= 400:
                error = json.loads(body)
                assert isinstance(error["error"], str) and isinstance(error["message"], str)
