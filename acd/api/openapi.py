"""The OpenAPI 3.1 document of the API, generated from the route table and the msgspec types.

msgspec writes JSON Schema 2020-12, which is what OpenAPI 3.1 uses, so the request and
response types in `acd.api.schemas` and `acd.api.views` are the single source of truth: the
document cannot drift from what the decoder accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from acd.core import events
from acd.core.config import Name

from . import schemas


class Route(Protocol):
    """What the document reads of a route (`acd.api.app.Route`, which imports this module)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def handler(self) -> Callable[..., Any]: ...
    @property
    def summary(self) -> str: ...
    @property
    def body(self) -> type | None: ...
    @property
    def response(self) -> Any: ...
    @property
    def status(self) -> int: ...
    @property
    def roles(self) -> str: ...
    @property
    def media(self) -> str: ...
    @property
    def public(self) -> bool: ...
    @property
    def errors(self) -> tuple[int, ...]: ...
    @property
    def parts(self) -> tuple[str, ...]: ...

_REF = "#/components/schemas/{name}"
_LSN = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
# A path id is a name like any other (a call, agent or queue id): a write with an id outside
# it is a 400 `invalid`, a read a 404.
_ID = msgspec.json.schema(Name)

# OpenAPI links: how the reply of one operation feeds the next (the id of the call just
# created, the agent a call is offered to), so that a client generator or a stateful test
# can chain them: POST /v1/calls -> GET /v1/calls/{id} -> answer -> hangup -> wrapup.
# (source operationId, response status) -> {link name: (target operationId, parameters, requestBody)}.
_REPLY_ID = {"id": "$response.body#/id"}
_AGENT_OF_CALL = {"agent": "$response.body#/agent"}
_LIST_HEAD = {"id": "$response.body#/0/id"}
_Link = tuple[str, dict[str, str], dict[str, str] | None]
_LINKS: dict[str, dict[str, _Link]] = {
    "create_call": {
        "GetCall": ("get_call", _REPLY_ID, None),
        "AnswerCall": ("answer", _REPLY_ID, None),
        "RejectCall": ("reject", _REPLY_ID, None),
        "AbandonCall": ("abandon", _REPLY_ID, None),
        "HangUpCall": ("hangup", _REPLY_ID, None),
        "TransferCall": ("transfer", _REPLY_ID, None),
        "RequestCallback": ("callback", _REPLY_ID, None),
        "WrapUpCall": ("wrapup", _REPLY_ID, None),
        "SurveyCall": ("survey", _REPLY_ID, None),
    },
    "get_call": {
        "AnswerCall": ("answer", _REPLY_ID, _AGENT_OF_CALL),
        "RejectCall": ("reject", _REPLY_ID, _AGENT_OF_CALL),
        "AbandonCall": ("abandon", _REPLY_ID, None),
        "HangUpCall": ("hangup", _REPLY_ID, None),
    },
    "answer": {
        "GetCall": ("get_call", _REPLY_ID, None),
        "HangUpCall": ("hangup", _REPLY_ID, None),
        "TransferCall": ("transfer", _REPLY_ID, None),
    },
    "reject": {"GetCall": ("get_call", _REPLY_ID, None)},
    "transfer": {"GetCall": ("get_call", _REPLY_ID, None)},
    "callback": {"GetCall": ("get_call", _REPLY_ID, None)},
    "hangup": {
        "WrapUpCall": ("wrapup", _REPLY_ID, _AGENT_OF_CALL),
        "SurveyCall": ("survey", _REPLY_ID, None),
    },
    "wrapup": {
        "GetCall": ("get_call", _REPLY_ID, None),
        "SurveyCall": ("survey", _REPLY_ID, None),
    },
    "list_agents": {
        "GetAgent": ("get_agent", _LIST_HEAD, None),
        "LogIn": ("login", _LIST_HEAD, None),
    },
    "get_agent": {
        "LogIn": ("login", _REPLY_ID, None),
        "Ready": ("ready", _REPLY_ID, None),
        "NotReady": ("not_ready", _REPLY_ID, None),
        "LogOut": ("logout", _REPLY_ID, None),
        "AnswerOffer": ("answer", {"id": "$response.body#/offer"}, {"agent": "$response.body#/id"}),
        "RejectOffer": ("reject", {"id": "$response.body#/offer"}, {"agent": "$response.body#/id"}),
    },
    "login": {"Ready": ("ready", _REPLY_ID, None), "LogOut": ("logout", _REPLY_ID, None)},
    "ready": {"GetAgent": ("get_agent", _REPLY_ID, None), "NotReady": ("not_ready", _REPLY_ID, None)},
    "not_ready": {"Ready": ("ready", _REPLY_ID, None), "LogOut": ("logout", _REPLY_ID, None)},
    "logout": {"LogIn": ("login", _REPLY_ID, None)},
    "list_queues": {"GetQueue": ("get_queue", _LIST_HEAD, None)},
    "get_queue": {"CreateCall": ("create_call", {}, {"queue": "$response.body#/id"})},
}


def _links(source: str, operation_ids: set[str]) -> dict[str, Any]:
    links: dict[str, Any] = {}
    for name, (target, parameters, body) in _LINKS.get(source, {}).items():
        if target not in operation_ids:
            raise ValueError(f"OpenAPI link {source} -> {name}: no operation {target!r}")
        link: dict[str, Any] = {"operationId": target}
        if parameters:
            link["parameters"] = dict(parameters)
        if body is not None:
            link["requestBody"] = dict(body)
        links[name] = link
    return links

_ERROR_TEXT = {
    400: "Bad JSON (`bad_json`) or an invalid field (`invalid`, with `field`)",
    401: "No or unknown token (`unauthorized`)",
    403: "The token's role may not do this (`forbidden`)",
    404: "Unknown id (`unknown_call`, `unknown_agent`, `unknown_queue`, `not_found`)",
    408: "The body did not arrive within limits.idle_timeout_seconds (`body_timeout`)",
    409: "Conflicts with the current state (the code names it, e.g. `id_conflict`, `call_not_offered`)",
    413: "Body larger than limits.body_bytes_max (`body_too_large`)",
    431: "Request headers larger than limits.header_bytes_max (`headers_too_large`)",
    429: "Too many event streams (`too_many_streams`) or requests (`rate_limited`, with Retry-After) for this token",
    503: "Not the writable primary (`not_primary`, with `primary`), or `shutting_down`",
    507: "The store is full (`storage_full`); nothing was written, reads keep working",
}


def _event_types() -> list[type]:
    """Every tagged core event (the `data:` of a stream's center events)."""
    found: list[type] = []
    pending = list(events.Event.__subclasses__())
    while pending:
        kind = pending.pop(0)
        pending.extend(kind.__subclasses__())
        if isinstance(kind.__struct_config__.tag, str):
            found.append(kind)
    return found


def _sse_event_schema(event_refs: list[dict[str, Any]], control_ref: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event as a reader parses it (OpenAPI 3.1: `schema` describes each event).

    `data` is JSON text: a core event (tagged by `type`) or a stream message (`stream.reset`,
    `stream.behind`, `stream.closed`). `id` is the LSN to resume after.
    """
    return {
        "type": "object",
        "required": ["data", "event"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The LSN (resume with Last-Event-ID)"},
            "event": {"type": "string", "description": "The event type, as `type` in `data`"},
            "retry": {"type": "integer", "minimum": 0},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"anyOf": [*event_refs, control_ref]},
            },
        },
    }


def document(routes: Iterable[Route], *, authenticated: bool = True) -> dict[str, Any]:
    """The document; `authenticated=False` describes a node without `[[tokens]]`, where no
    operation asks for a token (every request acts as admin)."""
    routes = list(routes)
    event_types = _event_types()
    types: list[Any] = [schemas.Error, schemas.StreamMessage, *event_types]
    for route in routes:
        if route.body is not None:
            types.append(route.body)
        if route.response is not None:
            types.append(route.response)
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref_of = {id(kind): ref for kind, ref in zip(types, refs, strict=True)}
    sse_event = _sse_event_schema([ref_of[id(kind)] for kind in event_types], ref_of[id(schemas.StreamMessage)])

    operation_ids = {route.handler.__name__.strip("_") for route in routes}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation_id = route.handler.__name__.strip("_")
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": route.summary,
            "responses": {},
        }
        if route.roles:
            operation["description"] = f"Roles: {route.roles}."
        if route.public:
            operation["security"] = []
        parameters = [
            {"name": part.strip("{}"), "in": "path", "required": True, "schema": dict(_ID)}
            for part in route.parts if part.startswith("{")
        ]
        if route.path == "/v1/events" or route.path.endswith("/events"):
            parameters.append({"name": "after", "in": "query", "required": False, "schema": _LSN, "description": "Resume after this LSN"})
            parameters.append({"name": "Last-Event-ID", "in": "header", "required": False, "schema": _LSN, "description": "Resume after this LSN (wins over `after`)"})
        if route.path in ("/v1/stats", "/v1/stats/agents"):
            parameters.append({"name": "day", "in": "query", "required": False, "schema": {"type": "string", "format": "date"}, "description": "Local day (default: today)"})
        if route.path == "/v1/stats/intervals":
            date = {"type": "string", "format": "date"}
            parameters.append({"name": "from", "in": "query", "required": False, "schema": date, "description": "First local day (default: today, or `to`)"})
            parameters.append({"name": "to", "in": "query", "required": False, "schema": date, "description": "Last local day, included (default: `from`)"})
            parameters.append({"name": "queue", "in": "query", "required": False, "schema": dict(_ID), "description": "One queue's rows (default: the center's)"})
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": route.body is not schemas.NoFields,
                "content": {"application/json": {"schema": ref_of[id(route.body)]}},
            }
        success: dict[str, Any] = {"description": "OK" if route.status == 200 else "Created"}
        if route.media == "text/event-stream":
            success["description"] = "A Server-Sent Events stream: `id:` is the LSN, `event:` the event type, `data:` the event as JSON; `stream.reset`, `stream.behind` and `stream.closed` are stream messages"
            success["content"] = {"text/event-stream": {"schema": sse_event}}
        elif route.media in ("text/plain", "text/html"):
            success["content"] = {route.media: {"schema": {"type": "string"}}}
        elif route.response is not None:
            success["content"] = {"application/json": {"schema": ref_of[id(route.response)]}}
        else:
            success["content"] = {"application/json": {"schema": {"type": "object"}}}
        links = _links(operation_id, operation_ids)
        if links:
            success["links"] = links
        operation["responses"][str(route.status)] = success
        implied = {431} | (set() if route.public else {401, 429})  # headers; auth and rate
        if route.body is not None:
            implied |= {400, 408, 413}  # every body: bad JSON, slow, too large
        for status in sorted(set(route.errors) | implied):
            if status == 503 and route.path == "/readyz":
                operation["responses"]["503"] = {
                    "description": "Not the writable primary",
                    "content": {"application/json": {"schema": ref_of[id(route.response)]}},
                }
                continue
            operation["responses"][str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": ref_of[id(schemas.Error)]}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ACD HA: automatic call distributor for 120 citizen call centers",
            "version": "1",
            "description": (
                "Writes are acknowledged only once durable. Errors are `{\"error\", \"message\"}` plus "
                "`field` for validation errors and `primary` for `not_primary`. Repeating a command that "
                "already took effect succeeds with the current state. Timestamps are Unix seconds."
            ),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token from [[tokens]] (config file)"}},
        },
        "security": [{"bearer": []}] if authenticated else [],
        "paths": paths,
    }
