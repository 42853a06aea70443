"""The HTTP API: a plain ASGI application over one node (docs/design.md, "HTTP API").

Theory of operation
-------------------
Hypercorn's Trio worker runs this app inside the node's nursery. A request is matched against
`ROUTES` (method and path), authenticated (`acd.api.auth`), its body read up to
`limits.body_bytes_max` and decoded by msgspec into the route's body type; a write becomes a
core command and waits in `node.submit()` until it is durable, then the reply shows the
current view of the call or agent (`acd.api.views`). Reads never touch the pipeline: they read
the core's state between two batches, so they keep working while the store is full.

Errors are translated once, here, into docs/design.md's contract: `{"error", "message"}` plus
`"field"` for validation errors and `"primary"` for `not_primary`. Bad input never reaches the
last-resort handler (a logged 500 `internal`); the API tests send Hypothesis-generated
requests to prove it.

Retries are safe (docs/design.md, "safe retry across failover"): the core accepts a command that
already took effect as a no-op, so a repeat gets 2xx with the current state. A repeated create
with the same body gets 201 with the call's current state, position and EWT (identical to the
first reply while the call has not moved); the same id with another body is a 409
`id_conflict`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import prometheus_client
import trio

from acd import settings as settings_module
from acd.core import Rejection, commands, events
from acd.core.state import CallState
from acd.node import upgrade
from acd.node.broker import Control, Subscription
from acd.node.node import (
    Accepted,
    CommandFailed,
    InvalidCommand,
    NodeClosed,
    NotPrimary,
    StorageFullError,
)

from . import schemas, sse, views
from .auth import ANONYMOUS, Authenticator, FailureLimiter, Principal, single_authorization
from .errors import ApiError, validation_field
from .metrics import CenterCollector
from .openapi import document

if TYPE_CHECKING:
    from acd.node.node import Node

log = logging.getLogger("acd.api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
_encoder = msgspec.json.Encoder()
# A body past the limit is still read (and dropped) up to this many times the limit, so that
# the client, still sending, reads the 413 instead of a reset connection.
_DRAIN_FACTOR = 16
_DAY = r"^\d{4}-\d{2}-\d{2}$"
LSN_MAX = 2**63 - 1
_DIGITS = re.compile(rb"[0-9]{1,19}")


class Cluster(Protocol):
    """What the replication layer provides to the API (None for a standalone node)."""

    def view(self) -> dict[str, Any]: ...

    async def switchover(self, to: str | None, actor: str = ...) -> dict[str, Any]: ...


class ClientGone(Exception):
    """The client disconnected while we read its request."""


@dataclass(slots=True)
class Request:
    method: str
    params: tuple[str, ...]
    query: bytes
    headers: dict[bytes, bytes]
    receive: Receive
    send: Send
    principal: Principal = ANONYMOUS
    started: bool = False  # a streaming reply has sent its head; errors can no longer be replied


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


Handler = Callable[["Api", Request], Awaitable[Reply | None]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type | None = None
    response: Any = None
    status: int = 200
    roles: str = ""
    media: str = "application/json"
    public: bool = False
    errors: tuple[int, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))


# Request bodies are flat (an object of scalars and one object of attributes); anything
# nested deeper is refused before it is walked.
_BODY_DEPTH_MAX = 8


def _integral(value: Any, depth: int = 0) -> Any:
    """`value` (decoded JSON) with every float that is a whole number made an int."""
    if depth > _BODY_DEPTH_MAX:
        raise ApiError(400, "invalid", f"the body is nested deeper than {_BODY_DEPTH_MAX} levels")
    if type(value) is float:
        return int(value) if value.is_integer() else value
    if type(value) is dict:
        return {key: _integral(item, depth + 1) for key, item in value.items()}
    if type(value) is list:
        return [_integral(item, depth + 1) for item in value]
    return value


def _may_act_on_calls(request: Request, *roles: str) -> None:
    """The principal's role allows the action (an agent's own calls are checked after the body)."""
    if request.principal.role not in roles and request.principal.role != "agent":
        request.principal.require(*roles)


def _json(status: int, value: Any) -> Reply:
    return Reply(status, _encoder.encode(value))


class Api:
    """The ASGI application. `build_app(node)` makes one; `cluster` plugs in replication."""

    def __init__(
        self, node: Node, *, cluster: Cluster | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.cluster = cluster
        self.clock = clock
        self.settings = node.settings
        self.auth = Authenticator(self.settings.tokens)
        self.shutting_down = False
        # Each token's event streams. A stream counts until it ends: its task returns, or the
        # broker cuts it off (`closed`) while its task may still wait on a reader's socket.
        self._streams: dict[str, dict[Subscription, None]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._failures = FailureLimiter()
        self._reload_lock = trio.Lock()
        self.peer_versions: dict[str, Any] | None = None  # the peer's versions, as last asked (acd.node.upgrade)
        self._collector = CenterCollector(node, clock)
        refused = getattr(node.metrics, "api_limited", None)
        if refused is None:
            refused = prometheus_client.Counter(
                "acd_api_limited", "Requests refused by a [limits] key (body size, rate, streams, slow body)",
                ["limit"], registry=node.metrics.registry,
            )
            node.metrics.api_limited = refused  # type: ignore[attr-defined]
        self._limited = refused
        if not getattr(node.metrics, "center_collector", None):
            node.metrics.registry.register(self._collector)
            node.metrics.center_collector = self._collector  # type: ignore[attr-defined]
        else:
            self._collector = node.metrics.center_collector  # type: ignore[attr-defined]
        # Routes by path; a path with ids is keyed with "*" in place of each id, and the
        # request's path is tried once per distinct set of id positions (one, today).
        self._exact: dict[str, dict[str, Route]] = {}
        self._patterns: dict[tuple[str, ...], dict[str, Route]] = {}
        self._id_positions: list[tuple[int, ...]] = []
        for route in ROUTES:
            if "{" in route.path:
                positions = tuple(index for index, part in enumerate(route.parts) if part.startswith("{"))
                key = tuple("*" if index in positions else part for index, part in enumerate(route.parts))
                self._patterns.setdefault(key, {})[route.method] = route
                if positions not in self._id_positions:
                    self._id_positions.append(positions)
            else:
                self._exact.setdefault(route.path, {})[route.method] = route

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # Anything else (websocket) is refused by returning without accepting.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _match(self, method: str, path: str) -> tuple[Route, tuple[str, ...]]:
        methods = self._exact.get(path)
        params: tuple[str, ...] = ()
        if methods is None:
            parts = path.strip("/").split("/")
            for positions in self._id_positions:
                if positions[-1] >= len(parts) or not all(parts[index] for index in positions):
                    continue
                key = tuple("*" if index in positions else part for index, part in enumerate(parts))
                methods = self._patterns.get(key)
                if methods is not None:
                    params = tuple(parts[index] for index in positions)
                    break
        if methods is None:
            raise ApiError(404, "not_found", f"no endpoint {path}")
        route = methods.get(method)
        if route is None:
            allowed = ", ".join(sorted(methods))
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed here; use {allowed}", headers=[(b"allow", allowed.encode())])
        return route, params

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        request = Request(
            method=scope["method"], params=(), query=scope.get("query_string", b""), headers=headers,
            receive=receive, send=send,
        )
        try:
            try:
                # Hypercorn (h11) bounds only a head that arrives in pieces; one that arrives
                # whole in a single read (up to 64 KiB) gets here, so the bound is checked again.
                if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > self.settings.limits.header_bytes_max:
                    raise ApiError(431, "headers_too_large", f"the request's headers are larger than {self.settings.limits.header_bytes_max} bytes", headers=[(b"connection", b"close")])
                if len(headers) != len(scope["headers"]):  # a header given twice
                    single_authorization(scope["headers"])
                route, request.params = self._match(request.method, scope["path"])
                if not route.public:
                    try:
                        request.principal = self.auth.authenticate(headers.get(b"authorization"))
                    except ApiError:
                        client = scope.get("client")
                        self._failures.failed(client[0] if client else "-", self.settings.limits.unauthorized_per_second_per_address, time.monotonic())
                        raise
                    self._rate_limit(request.principal)
                reply = await route.handler(self, request)
            except ApiError:
                raise
            except ClientGone:
                return
            except NotPrimary as error:
                raise ApiError(503, "not_primary", str(error), primary=error.primary) from None
            except StorageFullError as error:
                raise ApiError(507, "storage_full", f"the store is full; nothing was written: {error}") from None
            except NodeClosed:
                raise ApiError(503, "shutting_down", "the node is shutting down; retry on the primary") from None
            except InvalidCommand as error:
                raise ApiError(400, "invalid", str(error)) from None
            except CommandFailed as error:
                raise ApiError(422, "command_failed", str(error), error_id=error.error_id) from None
            except Exception:
                log.exception("request failed method=%s path=%s", request.method, scope["path"])
                raise ApiError(500, "internal", "internal error; the operator's log has the details") from None
        except ApiError as error:
            limit = _LIMIT_OF.get(error.code)
            if limit is not None:
                self._limited.labels(limit).inc()
            if request.started:
                return
            reply = Reply(
                error.status,
                _encoder.encode(schemas.Error(error=error.code, message=error.message, field=error.field, primary=error.primary, problems=error.problems, error_id=error.error_id)),
                headers=tuple(error.headers),
            )
        if reply is not None:
            await send({
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(b"content-type", reply.content_type), (b"content-length", b"%d" % len(reply.body)), *reply.headers],
            })
            await send({"type": "http.response.body", "body": reply.body})

    # ------------------------------------------------------------------ request helpers

    def _rate_limit(self, principal: Principal) -> None:
        rate = self.settings.limits.requests_per_second_per_token
        if not rate:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(principal.name, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[principal.name] = (tokens, now)
            raise ApiError(429, "rate_limited", f"more than {rate:g} requests per second with token {principal.name!r}", headers=[(b"retry-after", b"1")])
        self._buckets[principal.name] = (tokens - 1, now)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.limits.body_bytes_max
        declared = request.headers.get(b"content-length")
        too_large = False
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        chunks: list[bytes] = []
        size = 0
        # A body trickled in slowly (slowloris) may not hold the connection: Hypercorn times out
        # an idle or half-sent request head (keep_alive_timeout = limits.idle_timeout_seconds),
        # but not a body, so the whole body must arrive within that time too.
        deadline = trio.current_time() + self.settings.limits.idle_timeout_seconds
        while True:
            with trio.move_on_at(deadline) as waiting:
                message = await request.receive()
            if waiting.cancelled_caught:
                raise ApiError(408, "body_timeout", f"the body did not arrive within {self.settings.limits.idle_timeout_seconds:g} s", headers=[(b"connection", b"close")])
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large = True
            if too_large:
                if size > limit * _DRAIN_FACTOR:
                    break
            elif chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if too_large:
            raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
        return b"".join(chunks)

    async def _body(self, request: Request, decoder: msgspec.json.Decoder[Any], empty_ok: bool = False, command: bool = True) -> Any:
        refusal = self.node.writable_error() if command else None
        if refusal is not None:
            raise refusal  # a write goes to the primary: a standby refuses it before reading the body
        raw = await self._read_body(request)
        if empty_ok and not raw.strip():
            raw = b"{}"
        try:
            try:
                return decoder.decode(raw)
            except msgspec.ValidationError as error:
                if "got `float`" not in str(error):
                    raise
                # JSON has one number type: `5.0` is the integer 5 (JSON Schema, and so the
                # OpenAPI document, says so too). msgspec's strict decoder wants `5`, so
                # integral floats are made ints and the body is validated again.
                return msgspec.convert(_integral(msgspec.json.decode(raw)), decoder.type)
        except msgspec.ValidationError as error:
            field, message = validation_field(error)
            raise ApiError(400, "invalid", message, field=field) from None
        except msgspec.DecodeError as error:
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {error}") from None
        except RecursionError:
            raise ApiError(400, "invalid", f"the body is nested deeper than {_BODY_DEPTH_MAX} levels") from None

    def _query(self, request: Request) -> dict[str, str]:
        from urllib.parse import parse_qsl

        try:
            return dict(parse_qsl(request.query.decode("latin-1"), keep_blank_values=True, max_num_fields=20))
        except ValueError:
            raise ApiError(400, "invalid", "too many query parameters") from None

    async def _submit(self, command: commands.Command) -> Accepted:
        if self.shutting_down:
            raise NodeClosed("shutting down")
        result = await self.node.submit(command)
        if isinstance(result, Rejection):
            raise ApiError(result.status, result.code, result.message, field=result.field)
        return result

    def _call_reply(self, call_id: str, status: int = 200) -> Reply:
        view = views.call_view(self.node.center, call_id)
        if view is None:  # pruned by retention between the command and the reply
            raise ApiError(404, "unknown_call", f"no interaction {call_id!r}", field="call")
        return _json(status, view)

    def _agent_reply(self, agent: str) -> Reply:
        view = views.agent_view(self.node.center, agent)
        if view is None:
            raise ApiError(404, "unknown_agent", f"no agent {agent!r}", field="agent")
        return _json(200, view)

    def _allow_call(self, request: Request, call_id: str, *roles: str, body_agent: str | None = None) -> None:
        """Call commands: `roles` may; an agent token only for its own offers and calls."""
        principal = request.principal
        if principal.role in roles:
            return
        if principal.role != "agent":
            principal.require(*roles)
        if body_agent is not None:
            principal.require_agent(body_agent)
            return
        call = self.node.center.state.interactions.get(call_id)
        agent = self.node.center.state.agents.get(principal.agent)
        if call is None:
            return  # the core answers unknown_call
        if call.agent == principal.agent or (agent is not None and (agent.offer == call_id or call_id in agent.held)):
            return
        raise ApiError(403, "forbidden", f"interaction {call_id!r} is not handled by agent {principal.agent!r}")

    # ------------------------------------------------------------------ calls

    async def create_call(self, request: Request) -> Reply:
        request.principal.require("pbx", "admin")
        body: schemas.CallArrival = await self._body(request, _decoders[schemas.CallArrival])
        accepted = await self._submit(commands.Arrive(
            id=body.id, queue=body.queue, caller=body.caller, channel=body.channel,
            priority=body.priority, attributes=body.attributes,
        ))
        position = ewt = None
        for event in accepted.events:
            if type(event) is events.CallQueued and event.call == body.id:
                position, ewt = event.position, event.ewt
                break
        center = self.node.center
        if body.id not in center.state.interactions:
            raise ApiError(404, "unknown_call", f"no interaction {body.id!r}", field="id")
        return _json(201, views.call_created(center, body.id, position, ewt))

    async def get_call(self, request: Request) -> Reply:
        call_id = request.params[0]
        self._allow_call(request, call_id, "pbx", "supervisor", "admin")
        return self._call_reply(call_id)

    async def answer(self, request: Request) -> Reply:
        _may_act_on_calls(request, "pbx", "admin")
        body: schemas.AgentAction = await self._body(request, _decoders[schemas.AgentAction])
        self._allow_call(request, request.params[0], "pbx", "admin", body_agent=body.agent)
        await self._submit(commands.Answer(call=request.params[0], agent=body.agent))
        return self._call_reply(request.params[0])

    async def reject(self, request: Request) -> Reply:
        _may_act_on_calls(request, "pbx", "admin")
        body: schemas.AgentAction = await self._body(request, _decoders[schemas.AgentAction])
        self._allow_call(request, request.params[0], "pbx", "admin", body_agent=body.agent)
        await self._submit(commands.Reject(call=request.params[0], agent=body.agent))
        return self._call_reply(request.params[0])

    async def abandon(self, request: Request) -> Reply:
        request.principal.require("pbx", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        await self._submit(commands.Abandon(call=request.params[0]))
        return self._call_reply(request.params[0])

    async def hangup(self, request: Request) -> Reply:
        self._allow_call(request, request.params[0], "pbx", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        await self._submit(commands.Hangup(call=request.params[0]))
        return self._call_reply(request.params[0])

    async def hold(self, request: Request) -> Reply:
        self._allow_call(request, request.params[0], "pbx", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        await self._submit(commands.Hold(call=request.params[0]))
        return self._call_reply(request.params[0])

    async def unhold(self, request: Request) -> Reply:
        self._allow_call(request, request.params[0], "pbx", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        await self._submit(commands.Unhold(call=request.params[0]))
        return self._call_reply(request.params[0])

    async def list_callbacks(self, request: Request) -> Reply:
        request.principal.require("pbx", "dialer", "supervisor", "admin")
        return _json(200, views.callbacks_view(self.node.center))

    async def dial(self, request: Request) -> Reply:
        """The number of a due call-back, for the role that dials it; every read is in the log."""
        request.principal.require("pbx", "dialer", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        call_id = request.params[0]
        call = self.node.center.state.interactions.get(call_id)
        if call is None:
            raise ApiError(404, "unknown_call", f"no interaction {call_id!r}", field="id")
        if not call.callback or call.state not in (CallState.WAITING, CallState.OFFERED):
            raise ApiError(409, "call_not_offered", f"interaction {call_id!r} is not a call-back due for dialling")
        await self._submit(commands.Audit(actor=request.principal.name, action="callback.dial", detail=call_id))
        call = self.node.center.state.interactions[call_id]
        number = self.node.caller_number(call_id)
        if not number:
            raise ApiError(409, "number_unavailable", f"no number is kept for interaction {call_id!r}")
        return _json(200, views.DialView(id=call_id, number=number, attempt=call.attempts))

    async def attempt(self, request: Request) -> Reply:
        request.principal.require("pbx", "dialer", "admin")
        body: views.AttemptBody = await self._body(request, _decoders[views.AttemptBody])
        await self._submit(commands.CallbackAttempt(call=request.params[0], outcome=body.outcome))
        return self._call_reply(request.params[0])

    async def transfer(self, request: Request) -> Reply:
        self._allow_call(request, request.params[0], "pbx", "admin")
        body: schemas.TransferTo = await self._body(request, _decoders[schemas.TransferTo])
        await self._submit(commands.Transfer(call=request.params[0], queue=body.queue))
        return self._call_reply(request.params[0])

    async def callback(self, request: Request) -> Reply:
        request.principal.require("pbx", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        await self._submit(commands.RequestCallback(call=request.params[0]))
        return self._call_reply(request.params[0])

    async def wrapup(self, request: Request) -> Reply:
        _may_act_on_calls(request, "pbx", "admin")
        body: schemas.WrapUpBody = await self._body(request, _decoders[schemas.WrapUpBody])
        self._allow_call(request, request.params[0], "pbx", "admin", body_agent=body.agent)
        await self._submit(commands.WrapUp(
            call=request.params[0], agent=body.agent, disposition=body.disposition,
            abusive=body.abusive, callback_at=body.callback_at,
        ))
        return self._call_reply(request.params[0])

    async def survey(self, request: Request) -> Reply:
        request.principal.require("pbx", "admin")
        body: schemas.SurveyBody = await self._body(request, _decoders[schemas.SurveyBody])
        await self._submit(commands.Survey(call=request.params[0], score=body.score))
        return self._call_reply(request.params[0])

    # ------------------------------------------------------------------ agents

    async def _agent_command(self, request: Request, command: commands.Command) -> Reply:
        await self._submit(command)
        return self._agent_reply(request.params[0])

    async def login(self, request: Request) -> Reply:
        request.principal.require_agent(request.params[0], "supervisor", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        return await self._agent_command(request, commands.Login(agent=request.params[0]))

    async def ready(self, request: Request) -> Reply:
        request.principal.require_agent(request.params[0], "supervisor", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        return await self._agent_command(request, commands.Ready(agent=request.params[0]))

    async def not_ready(self, request: Request) -> Reply:
        request.principal.require_agent(request.params[0], "supervisor", "admin")
        body: schemas.NotReadyBody = await self._body(request, _decoders[schemas.NotReadyBody], empty_ok=True)
        return await self._agent_command(request, commands.NotReady(agent=request.params[0], reason=body.reason))

    async def logout(self, request: Request) -> Reply:
        request.principal.require_agent(request.params[0], "supervisor", "admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True)
        return await self._agent_command(request, commands.Logout(agent=request.params[0]))

    async def list_agents(self, request: Request) -> Reply:
        request.principal.require("supervisor", "admin")
        return _json(200, views.agents_view(self.node.center))

    async def get_agent(self, request: Request) -> Reply:
        request.principal.require_agent(request.params[0], "supervisor", "admin")
        return self._agent_reply(request.params[0])

    # ------------------------------------------------------------------ queues and stats

    async def list_queues(self, request: Request) -> Reply:
        request.principal.require("supervisor", "admin")
        return _json(200, views.queues_view(self.node.center, self.clock()))

    async def get_queue(self, request: Request) -> Reply:
        request.principal.require("supervisor", "admin")
        view = views.queue_view(self.node.center, request.params[0], self.clock())
        if view is None:
            raise ApiError(404, "unknown_queue", f"no queue named {request.params[0]!r}", field="queue")
        return _json(200, view)

    async def stats(self, request: Request) -> Reply:
        request.principal.require("supervisor", "admin")
        query = self._query(request)
        day = query.get("day")
        if day is not None:
            import datetime as dt

            try:
                day = dt.date.fromisoformat(day).isoformat() if len(day) == 10 else ""
            except ValueError:
                day = ""
            if not day:
                raise ApiError(400, "invalid", "day must be a date YYYY-MM-DD", field="day")
        return _json(200, views.stats_view(self.node.center, self.clock(), day))

    def _day_param(self, query: dict[str, str], name: str) -> str | None:
        import datetime as dt

        text = query.get(name)
        if text is None:
            return None
        try:
            return dt.date.fromisoformat(text).isoformat() if len(text) == 10 else ""
        except ValueError:
            return ""

    async def stats_intervals(self, request: Request) -> Reply:
        request.principal.require("supervisor", "admin")
        query = self._query(request)
        today = views.local_day(self.node.center, self.clock())
        first, last = self._day_param(query, "from"), self._day_param(query, "to")
        for name, value in (("from", first), ("to", last)):
            if value == "":
                raise ApiError(400, "invalid", f"{name} must be a date YYYY-MM-DD", field=name)
        queue = query.get("queue")
        if queue is not None and self.node.center.queue(queue) is None:
            raise ApiError(404, "unknown_queue", f"no queue named {queue!r}", field="queue")
        return _json(200, views.intervals_view(self.node.center, first or last or today, last or first or today, queue))

    async def stats_agents(self, request: Request) -> Reply:
        request.principal.require("supervisor", "admin")
        day = self._day_param(self._query(request), "day")
        if day == "":
            raise ApiError(400, "invalid", "day must be a date YYYY-MM-DD", field="day")
        return _json(200, views.agent_stats_view(self.node.center, self.clock(), day))

    # ------------------------------------------------------------------ event streams

    async def center_events(self, request: Request) -> None:
        request.principal.require("pbx", "supervisor", "admin")
        await self._stream(request, None)

    async def agent_events(self, request: Request) -> None:
        agent = request.params[0]
        request.principal.require_agent(agent, "supervisor", "admin")
        if agent not in self.node.center.state.agents:
            raise ApiError(404, "unknown_agent", f"no agent {agent!r}", field="agent")
        await self._stream(request, agent)

    def _after(self, request: Request) -> int:
        """The LSN to resume after: Last-Event-ID wins over `?after=`; both are checked."""
        after = self._lsn(self._query(request).get("after", "0").encode(), "after")
        raw = request.headers.get(b"last-event-id")
        return after if raw is None else self._lsn(raw, "Last-Event-ID")

    @staticmethod
    def _lsn(raw: bytes, field: str) -> int:
        digits = raw.strip()
        value = int(digits) if _DIGITS.fullmatch(digits) else -1
        if not 0 <= value <= LSN_MAX:
            raise ApiError(400, "invalid", f"{field} must be an LSN (a whole number from 0 to {LSN_MAX})", field=field)
        return value

    async def _stream(self, request: Request, agent: str | None) -> None:
        after = self._after(request)
        if self.shutting_down:
            raise NodeClosed("shutting down")
        name = request.principal.name
        held = self._streams.setdefault(name, {})
        for ended in [other for other in held if other.closed]:
            del held[ended]
        if len(held) >= self.settings.limits.streams_per_token_max:
            raise ApiError(429, "too_many_streams", f"token {name!r} already holds {len(held)} event streams")
        send = request.send
        framer = sse.Framer(after)
        node = self.node
        subscription = node.broker.subscribe(after, agent)
        held[subscription] = None
        heartbeat = self.settings.limits.stream_heartbeat_seconds
        released = False

        def release() -> None:
            """The stream has ended: its token's slot is free, whether or not the last bytes
            ever reach a reader that stopped reading."""
            nonlocal released
            if not released:
                released = True
                node.broker.unsubscribe(subscription)
                held.pop(subscription, None)
                if not held and self._streams.get(name) is held:
                    del self._streams[name]

        try:
            request.started = True
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            })
            opening = sse.preamble(after)
            if after > node.lsn:
                # A reader from the future (a node that lost its tail, or a made-up LSN): it must
                # reload, since events between our LSN and its LSN will carry LSNs it has seen.
                opening += sse.frame_control(Control("stream.reset", node.lsn, "this node's log ends before that LSN; reload state and resume from here"), node.lsn)
                framer.last_lsn = node.lsn
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_disconnect, request.receive, nursery.cancel_scope)
                while not framer.ended:
                    with trio.move_on_after(heartbeat) as waited:
                        try:
                            items = [await subscription.receive.receive()]
                        except trio.EndOfChannel:
                            break
                    if waited.cancelled_caught:
                        await send({"type": "http.response.body", "body": sse.heartbeat(), "more_body": True})
                        continue
                    while True:
                        try:
                            items.append(subscription.receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    chunk = framer.feed(items)
                    subscription.last_lsn = framer.last_lsn
                    if framer.ended:
                        release()
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                nursery.cancel_scope.cancel()
            release()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            release()

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    # ------------------------------------------------------------------ operations

    async def health(self, request: Request) -> Reply:
        return _json(200, schemas.Health(status="ok", node=self.node.name, role=self.node.role, lsn=self.node.lsn))

    def ready_now(self) -> bool:
        node = self.node
        # Ready means configured: at a cluster's first start the config's center is applied
        # through the log just after the first election; until then the primary has no queues
        # and would refuse every call a load balancer sent it.
        return (
            node.role == "primary" and not node.closed and not self.shutting_down
            and bool(node.center.state.config_version)
            and node.replicator.can_accept() and node.replicator.lease_valid()
        )

    async def ready_check(self, request: Request) -> Reply:
        node = self.node
        if self.ready_now():
            return _json(200, schemas.Health(status="ready", node=node.name, role=node.role, lsn=node.lsn))
        return _json(503, schemas.Health(status="not_ready", node=node.name, role=node.role, lsn=node.lsn))

    async def metrics(self, request: Request) -> Reply:
        node = self.node
        try:
            self._collector.store_statistics = await trio.to_thread.run_sync(node.store.statistics)
        except Exception:  # a closed or unreadable store: report the rest
            self._collector.store_statistics = None
        node.metrics.lsn.set(node.lsn)
        body = prometheus_client.generate_latest(node.metrics.registry)
        return Reply(200, body, content_type=prometheus_client.CONTENT_TYPE_LATEST.encode())

    async def openapi(self, request: Request) -> Reply:
        # A node without [[tokens]] asks no operation for a token: its document says so.
        authenticated = self.auth.enabled
        key = "authenticated" if authenticated else "open"
        return Reply(200, _openapi_cache.setdefault(key, _encoder.encode(document(ROUTES, authenticated=authenticated))))

    async def cluster_view(self, request: Request) -> Reply:
        request.principal.require("supervisor", "admin")
        # The pid lets `acd drill` signal this very process, never one found by name.
        versions = self._versions()
        if self.cluster is not None:
            return _json(200, {**versions, **self.cluster.view(), "pid": os.getpid()})
        node = self.node
        return _json(200, schemas.ClusterView(
            name=node.name, cluster=self.settings.cluster.name, role=node.role, epoch=node.store.epoch(),
            lsn=node.lsn, mode="standalone", peer=None, lag=None, witness=None, pid=os.getpid(), **versions,
        ))

    def _versions(self) -> dict[str, Any]:
        """This node's binary and core versions for /v1/cluster, and the peer's when known."""
        mine = upgrade.local_versions(self.node)
        return {
            "binary_version": mine["binary_version"], "core_versions": mine["core_versions"],
            "active_core_version": mine["active_core_version"], "peer_versions": self.peer_versions,
        }

    async def version(self, request: Request) -> Reply:
        return _json(200, upgrade.local_versions(self.node))

    async def finalize_upgrade(self, request: Request) -> Reply:
        request.principal.require("admin")
        body: schemas.UpgradeBody = await self._body(request, _decoders[schemas.UpgradeBody], command=False)
        result = await self._cluster_operation(upgrade.finalize(self.node, body.version, actor=f"api:{request.principal.name}"))
        self.peer_versions = next((view for view in result["nodes"] if view["name"] != self.node.name), self.peer_versions)
        return _json(200, result)

    async def switchover(self, request: Request) -> Reply:
        request.principal.require("admin")
        body: schemas.SwitchoverBody = await self._body(request, _decoders[schemas.SwitchoverBody], empty_ok=True, command=False)
        if self.cluster is None:
            raise ApiError(409, "not_clustered", "this node runs standalone: there is no standby to switch over to")
        return _json(200, await self._cluster_operation(self.cluster.switchover(body.to, actor=f"api:{request.principal.name}")))

    async def promote(self, request: Request) -> Reply:
        request.principal.require("admin")
        body: schemas.PromoteBody = await self._body(request, _decoders[schemas.PromoteBody], empty_ok=True, command=False)
        if self.cluster is None or not hasattr(self.cluster, "promote"):
            raise ApiError(409, "not_clustered", "this node runs standalone: it is always the primary")
        return _json(200, await self._cluster_operation(self.cluster.promote(body.force, actor=f"api:{request.principal.name}")))

    async def _cluster_operation(self, operation: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Run a cluster operation; its refusals (an exception with a string `code`) become errors."""
        try:
            return await operation
        except Exception as error:
            code = getattr(error, "code", None)
            if not isinstance(code, str):
                raise
            message = str(getattr(error, "message", "") or error)
            if code == "not_primary":
                raise ApiError(503, code, message, primary=self.node.replicator.primary_api()) from None
            raise ApiError(404 if code == "unknown_node" else 409, code, message) from None

    async def reload(self, request: Request) -> Reply:
        request.principal.require("admin")
        await self._body(request, _decoders[schemas.NoFields], empty_ok=True, command=False)
        return _json(200, await self.reload_config(actor=f"api:{request.principal.name}"))

    async def reload_config(self, actor: str, *, apply_center: bool = True) -> schemas.ConfigReloaded:
        """Re-read the node's config file; apply the center through the log, tokens and limits here.

        The center goes through the log as a `Configure` command, so it replicates and replays
        like any other change (only the primary can submit it: elsewhere `NotPrimary`, unless
        `apply_center` is false, as for SIGHUP on a standby). Tokens, stream and body limits and the store's map limit apply at
        once on this node; anything else (addresses, cluster, pipeline sizes) needs a restart and
        is listed in `restart_needed`.
        """
        async with self._reload_lock:
            try:
                fresh = settings_module.load(self.settings.path)
            except settings_module.SettingsError as error:
                raise ApiError(400, "invalid_config", "the config file has problems; nothing was applied", problems=error.problems) from None
            restart_needed = _restart_needed(self.settings, fresh)
            node = self.node
            # The map limit first: it may be what makes room for the Configure record.
            node.store.set_map_size_max_bytes(fresh.store.map_size_max_bytes)
            center = node.center
            changed = not (center.state.config_version and center.config == fresh.center)
            if changed and apply_center:
                await self._submit(commands.Configure(center=fresh.center, actor=actor))
            changed = changed and apply_center
            # Only now the rest: a refused center leaves tokens and limits as they were. The
            # cluster's shape (nodes, witness, cluster) stays as started; it needs a restart.
            current = self.settings
            merged = msgspec.structs.replace(fresh, path=current.path, cluster=current.cluster, nodes=current.nodes, witness=current.witness)
            node.settings = merged
            self.settings = merged
            self.auth = Authenticator(merged.tokens)
            center = node.center
            log.info(
                "config reloaded actor=%s changed=%s version=%d tokens=%d restart_needed=%s",
                actor, changed, center.state.config_version, len(self.auth), ",".join(restart_needed) or "-",
            )
            return schemas.ConfigReloaded(
                changed=changed, version=center.state.config_version, lsn=node.lsn,
                queues=len(center.config.queues), agents=len(center.config.agents), tokens=len(self.auth),
                restart_needed=restart_needed,
            )

    async def state_digest(self, request: Request) -> Reply:
        request.principal.require("admin")
        node = self.node
        center = node.center
        # The LSN of the state hashed: on a primary that is committing a batch, the core already
        # holds it (node.lsn follows once it is durable).
        return _json(200, schemas.StateDigest(
            node=node.name, lsn=node.state_lsn, state_hash=center.state_hash(),
            config_version=center.state.config_version, interactions=len(center.state.interactions),
        ))

    def begin_shutdown(self, message: str = "node shutting down") -> None:
        """Refuse new writes and streams, and end every stream with a final `stream.closed`."""
        self.shutting_down = True
        self.node.broker.close_all(message)


_openapi_cache: dict[str, bytes] = {}

# Error codes that mean a [limits] key refused the request, and the metric label for each.
_LIMIT_OF = {
    "body_too_large": "body_bytes_max", "rate_limited": "requests_per_second_per_token",
    "too_many_streams": "streams_per_token_max", "body_timeout": "idle_timeout_seconds",
    "headers_too_large": "header_bytes_max", "too_many_unauthorized": "unauthorized_per_second_per_address",
}

# Settings that apply without a restart (see Api.reload_config).
_LIVE = {
    "tokens", "center", "path",
    "store.map_size_max_bytes", "store.snapshot_every_records", "store.retention_records",
    "limits.body_bytes_max", "limits.stream_heartbeat_seconds", "limits.streams_per_token_max",
    "limits.requests_per_second_per_token", "limits.unauthorized_per_second_per_address",
}


def _restart_needed(old: settings_module.Settings, new: settings_module.Settings) -> list[str]:
    changed: list[str] = []
    old_raw = msgspec.to_builtins(old)
    new_raw = msgspec.to_builtins(new)
    for section, value in new_raw.items():
        before = old_raw.get(section)
        if isinstance(value, dict) and isinstance(before, dict):
            changed += [f"{section}.{key}" for key in value if value[key] != before.get(key)]
        elif value != before:
            changed.append(section)
    return [key for key in changed if key not in _LIVE and key.split(".")[0] not in _LIVE]


_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    body: msgspec.json.Decoder(body)
    for body in (
        schemas.CallArrival, schemas.AgentAction, schemas.NoFields, schemas.TransferTo, schemas.WrapUpBody,
        schemas.SurveyBody, schemas.NotReadyBody, schemas.SwitchoverBody, schemas.PromoteBody, views.AttemptBody,
        schemas.UpgradeBody,
    )
}

_CALL_ERRORS = (400, 401, 403, 404, 408, 409, 413, 422, 429, 503, 507)

_wallboard_cache: dict[str, bytes] = {}
_WALLBOARD_HEADERS = (
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"),
)


async def _wallboard(api: Api, request: Request) -> Reply:
    """The supervisors' wall display (acd/api/wallboard.html), public like /healthz: the page
    holds no data. Its script reads /v1/* from the same origin, with the supervisor token given
    in the URL fragment (`/wallboard#token=...`, never sent to the server) when auth is on."""
    body = _wallboard_cache.get("body")
    if body is None:
        from pathlib import Path

        body = _wallboard_cache.setdefault("body", (Path(__file__).parent / "wallboard.html").read_bytes())
    return Reply(200, body, content_type=b"text/html; charset=utf-8", headers=_WALLBOARD_HEADERS)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/calls", Api.create_call, "An interaction arrives", schemas.CallArrival, views.CallCreated, 201, "pbx, admin", errors=_CALL_ERRORS),
    Route("GET", "/v1/calls/{id}", Api.get_call, "An interaction: state, agent, timestamps (caller masked)", None, views.CallView, roles="pbx, supervisor, admin, its agent", errors=(401, 403, 404)),
    Route("POST", "/v1/calls/{id}/answer", Api.answer, "The offered agent answered", schemas.AgentAction, views.CallView, roles="pbx, admin, the agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/reject", Api.reject, "The offered agent declined; the call goes back to its place", schemas.AgentAction, views.CallView, roles="pbx, admin, the agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/abandon", Api.abandon, "The caller hung up before being answered", schemas.NoFields, views.CallView, roles="pbx, admin", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/hangup", Api.hangup, "The conversation ended; the agent goes to wrap-up", schemas.NoFields, views.CallView, roles="pbx, admin, its agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/hold", Api.hold, "The caller is put on hold (hold time counts in AHT, apart from talk)", schemas.NoFields, views.CallView, roles="pbx, admin, its agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/unhold", Api.unhold, "The caller is taken off hold", schemas.NoFields, views.CallView, roles="pbx, admin, its agent", errors=_CALL_ERRORS),
    Route("GET", "/v1/callbacks", Api.list_callbacks, "The call-backs owed: scheduled, due and being dialled (numbers masked)", None, list[views.CallbackTask], roles="pbx, dialer, supervisor, admin", errors=(401, 403)),
    Route("POST", "/v1/calls/{id}/dial", Api.dial, "The number of a due call-back, to dial it (audited in the log; kept only until the call-back ends)", schemas.NoFields, views.DialView, roles="pbx, dialer, admin", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/attempt", Api.attempt, "The outcome of dialling a call-back: reached, no_answer, busy, wrong_number (retry policy: callback_attempts, callback_retry_seconds, callback_calendar)", views.AttemptBody, views.CallView, roles="pbx, dialer, admin", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/transfer", Api.transfer, "Transfer to another queue", schemas.TransferTo, views.CallView, roles="pbx, admin, its agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/callback", Api.callback, "The waiting caller asks to be called back, keeping the place", schemas.NoFields, views.CallView, roles="pbx, admin", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/wrapup", Api.wrapup, "The agent records the disposition", schemas.WrapUpBody, views.CallView, roles="pbx, admin, the agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/calls/{id}/survey", Api.survey, "The caller's satisfaction score", schemas.SurveyBody, views.CallView, roles="pbx, admin", errors=_CALL_ERRORS),
    Route("POST", "/v1/agents/{id}/login", Api.login, "The agent logs in (not ready)", schemas.NoFields, views.AgentView, roles="supervisor, admin, the agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/agents/{id}/ready", Api.ready, "The agent is ready for work", schemas.NoFields, views.AgentView, roles="supervisor, admin, the agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/agents/{id}/not-ready", Api.not_ready, "The agent takes a break (after wrap-up if busy)", schemas.NotReadyBody, views.AgentView, roles="supervisor, admin, the agent", errors=_CALL_ERRORS),
    Route("POST", "/v1/agents/{id}/logout", Api.logout, "The agent logs out (after wrap-up if busy)", schemas.NoFields, views.AgentView, roles="supervisor, admin, the agent", errors=_CALL_ERRORS),
    Route("GET", "/v1/agents", Api.list_agents, "Every agent with state, interactions and pending offer", None, list[views.AgentView], roles="supervisor, admin", errors=(401, 403)),
    Route("GET", "/v1/agents/{id}", Api.get_agent, "One agent", None, views.AgentView, roles="supervisor, admin, the agent", errors=(401, 403, 404)),
    Route("GET", "/v1/agents/{id}/events", Api.agent_events, "Server-Sent Events of one agent's offers and changes (resumable with Last-Event-ID)", None, None, roles="supervisor, admin, the agent", media="text/event-stream", errors=(400, 401, 403, 404, 429, 503)),
    Route("GET", "/v1/queues", Api.list_queues, "Every queue: waiting, longest wait, agents by state, today's KPIs", None, list[views.QueueView], roles="supervisor, admin", errors=(401, 403)),
    Route("GET", "/v1/queues/{id}", Api.get_queue, "One queue", None, views.QueueView, roles="supervisor, admin", errors=(401, 403, 404)),
    Route("GET", "/v1/stats", Api.stats, "Center KPIs for today (or ?day=YYYY-MM-DD)", None, views.StatsView, roles="supervisor, admin", errors=(400, 401, 403)),
    Route("GET", "/v1/stats/intervals", Api.stats_intervals, "15-minute KPI rows of the center or ?queue= for local days ?from=..&to= (default today)", None, views.IntervalsView, roles="supervisor, admin", errors=(400, 401, 403, 404)),
    Route("GET", "/v1/stats/agents", Api.stats_agents, "Per-agent figures for today (or ?day=): handled, AHT, hold, FCR, CSAT, time per state and not-ready reason", None, views.AgentStatsView, roles="supervisor, admin", errors=(400, 401, 403)),
    Route("GET", "/v1/events", Api.center_events, "Server-Sent Events of the whole center, id = LSN, resumable with Last-Event-ID or ?after=LSN", None, None, roles="pbx, supervisor, admin", media="text/event-stream", errors=(400, 401, 403, 429, 503)),
    Route("GET", "/v1/cluster", Api.cluster_view, "This node's view of the cluster", None, schemas.ClusterView, roles="supervisor, admin", errors=(401, 403)),
    Route("POST", "/v1/cluster/switchover", Api.switchover, "Planned role swap (409 not_clustered on a standalone node)", schemas.SwitchoverBody, None, roles="admin", errors=(400, 401, 403, 409, 503)),
    Route("POST", "/v1/cluster/promote", Api.promote, "Manual promotion of a standby when the witness is gone (`force` may lose writes)", schemas.PromoteBody, None, roles="admin", errors=(400, 401, 403, 409)),
    Route("POST", "/v1/cluster/upgrade", Api.finalize_upgrade, "Raise the cluster's active core version (default: the highest every node supports); refused unless every node's binary supports it (409 version_unsupported, peer_unsupported, peer_unreachable, core_version_downgrade; 503 not_primary)", schemas.UpgradeBody, schemas.UpgradeResult, roles="admin", errors=(400, 401, 403, 409, 503)),
    Route("POST", "/v1/config/reload", Api.reload, "Re-read the node's config file and apply the center through the log", schemas.NoFields, schemas.ConfigReloaded, roles="admin", errors=(400, 401, 403, 503, 507)),
    Route("GET", "/v1/admin/state", Api.state_digest, "LSN and hash of the node's state (compare with `acd verify`)", None, schemas.StateDigest, roles="admin", errors=(401, 403)),
    Route("GET", "/v1/version", Api.version, "This node's binary version, the core versions it supports and the active one (what `acd upgrade finalize` checks on every node)", None, schemas.VersionView, public=True),
    Route("GET", "/healthz", Api.health, "200 while the process works", None, schemas.Health, public=True),
    Route("GET", "/readyz", Api.ready_check, "200 only on the writable primary (load balancer check)", None, schemas.Health, public=True, errors=(503,)),
    Route("GET", "/metrics", Api.metrics, "Prometheus exposition", None, None, media="text/plain", public=True),
    Route("GET", "/openapi.json", Api.openapi, "This document", None, None, public=True),
    Route("GET", "/wallboard", _wallboard, "The supervisors' wallboard: one HTML page, live from /v1/events (give a supervisor token as #token=... when auth is on)", None, None, media="text/html", public=True),
)


def build_app(node: Node, *, cluster: Cluster | None = None, clock: Callable[[], float] = time.time) -> Api:
    """The ASGI app for `node` (used by `acd serve`, the tests and the benchmark)."""
    return Api(node, cluster=cluster, clock=clock)
