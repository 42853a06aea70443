"""The node's HTTP connections: Hypercorn's settings, the connection gate and Hypercorn's
connection and HTTP/1.1 classes as the node runs them (docs/operations.md, "Security").

Every accepted connection passes a gate first (`limits.connections_max` in total and
`limits.connections_per_address_max`, by default half of that, from one source address; past
either it is reset at once), its first request head must arrive within
`limits.request_head_seconds`, a connection whose client closes is released at once, and a
write that makes no progress for `limits.write_timeout_seconds` (a reader that stopped reading)
resets the connection. HTTP/2 over cleartext is served only with `limits.http2_cleartext`.

Hypercorn has no public hooks for these: `_TCPServer` and `_H11Protocol` subclass its Trio
connection handler and HTTP/1.1 protocol, override private methods (`_read_data`, `_close`,
`_send_h11_event`, `_check_protocol`) and are swapped into its modules by `install()`. They are
written against the Hypercorn series in `TESTED_HYPERCORN` (pyproject.toml bounds the
dependency to it); `hypercorn_problems()` says what differs in another version, and
tests/test_keepalive.py fails on any difference. Where it differs the node serves with
Hypercorn's own classes, without the gate, and logs why.

Neither the API nor the node's pipeline is imported here (only the node's send lock without a
schedule point, `QuickLock`): the wiring (`acd.server`) passes the gate in through Hypercorn's
config.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import socket
import struct
import time
from importlib import metadata
from typing import Any

import h11
import hypercorn.config
import hypercorn.events
import hypercorn.protocol
import hypercorn.protocol.events
import hypercorn.protocol.h11
import hypercorn.trio
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import prometheus_client
import trio

from acd.locks import QuickLock
from acd.settings import Settings, descriptor_limit

log = logging.getLogger("acd.serve")

GRACEFUL_SECONDS = 5.0
# A PBX keeps one connection for hours; reconnecting every 1,000 requests (Hypercorn's default)
# only costs handshakes.
KEEP_ALIVE_MAX_REQUESTS = 100_000
# Descriptors kept for everything but API connections (the store, logs, replication, the
# snapshot child's pipe): the connection cap is lowered to fit the process's limit.
RESERVED_DESCRIPTORS = 64
# A write is timed per piece of this size, so a large response to a slow but live reader is
# not cut: only a write that makes no progress for the timeout is.
WRITE_PIECE = 64 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)


def hypercorn_config(settings: Settings, node_name: str, bind: str | None = None) -> hypercorn.config.Config:
    """Hypercorn's settings from the config file's `[limits]` and the node's `[[nodes]]` entry."""
    section = settings.node(node_name)
    limits = settings.limits
    config = hypercorn.config.Config()
    config.bind = [bind or section.api]
    config.h11_max_incomplete_size = limits.header_bytes_max
    config.h2_max_header_list_size = limits.header_bytes_max
    config.keep_alive_timeout = limits.idle_timeout_seconds
    config.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
    config.graceful_timeout = GRACEFUL_SECONDS
    config.backlog = min(limits.connections_max, 4096)
    # A TLS handshake is part of the first request's head: same deadline.
    config.ssl_handshake_timeout = limits.request_head_seconds
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    if section.tls_cert:
        config.certfile = str(settings.resolve(section.tls_cert))
        config.keyfile = str(settings.resolve(section.tls_key))
    # Read by the node's connection classes below (`_TCPServer`, `_IdleDeadline`, `_H11Protocol`).
    config.acd_first_request_timeout = limits.request_head_seconds  # type: ignore[attr-defined]
    config.acd_write_timeout = limits.write_timeout_seconds  # type: ignore[attr-defined]
    config.acd_h2c = limits.http2_cleartext  # type: ignore[attr-defined]
    return config


class ConnectionGate:
    """Admission of API connections at accept time, before Hypercorn sees them.

    At most `total` connections at once, and at most `per_address` from one source address
    (0: no per-address cap). A connection past either cap is reset at once (no response: it
    costs nothing but the accept), counted in `acd_api_connections_refused_total` and logged at
    most once every ten seconds.
    """

    def __init__(self, total: int, per_address: int, registry: Any = None) -> None:
        self.total = total
        self.per_address = per_address
        self.open = 0
        self.by_address: dict[str, int] = {}
        self._logged_at = -math.inf
        self._refused_since_log = 0
        self._refused: Any = None
        self._open_gauge: Any = None
        if registry is not None:
            self._refused = prometheus_client.Counter(
                "acd_api_connections_refused", "API connections reset at accept time, by the [limits] key that refused them",
                ["limit"], registry=registry,
            )
            self._open_gauge = prometheus_client.Gauge("acd_api_connections", "Open API connections", registry=registry)

    def admit(self, address: str) -> str | None:
        """Count the connection in, or the [limits] key that refuses it."""
        refused = None
        if self.open >= self.total:
            refused = "connections_max"
        elif self.per_address and self.by_address.get(address, 0) >= self.per_address:
            refused = "connections_per_address_max"
        if refused is not None:
            self._note_refusal(refused, address)
            return refused
        self.open += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        if self._open_gauge is not None:
            self._open_gauge.set(self.open)
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        left = self.by_address.get(address, 0) - 1
        if left > 0:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)
        if self._open_gauge is not None:
            self._open_gauge.set(self.open)

    def _note_refusal(self, limit: str, address: str) -> None:
        if self._refused is not None:
            self._refused.labels(limit).inc()
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._logged_at >= 10.0:
            log.warning(
                "API connections refused limit=%s address=%s refused=%d open=%d",
                limit, address, self._refused_since_log, self.open,
            )
            self._logged_at = now
            self._refused_since_log = 0


def connection_gate(settings: Settings, registry: Any = None) -> ConnectionGate:
    """The gate for `[limits]`; the total is lowered to fit the process's descriptor limit."""
    limits = settings.limits
    total = limits.connections_max
    descriptors = descriptor_limit()
    reserved = RESERVED_DESCRIPTORS
    if not settings.standalone:  # the replication port has connections of its own
        reserved += getattr(settings.cluster, "replication_connections_max", 0)
    if descriptors is not None and total > descriptors - reserved:
        lowered = max(1, descriptors - reserved)
        log.warning(
            "limits.connections_max=%d lowered to %d: the process may open %d descriptors (raise LimitNOFILE)",
            total, lowered, descriptors,
        )
        total = lowered
    per_address = limits.connections_per_address_max
    if per_address is None:
        per_address = max(1, limits.connections_max // 2)
    return ConnectionGate(total, per_address, registry)


def _reset(stream: Any) -> None:
    """Make the socket under `stream` close with a reset: its buffers are freed at once."""
    sock = _socket_of(stream)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass


class _IdleDeadline:
    """Hypercorn's keep-alive timer for one connection, as a deadline that moves.

    Hypercorn (`hypercorn.trio.tcp_server.TCPServer`) closes a connection that stays idle for
    `keep_alive_timeout` by running a timer task while it is idle: it cancels that task when a
    request starts and starts a new one when the response is done, two lock round trips, a
    task start and a cancellation for every request, about a tenth of the node's event-loop
    time at 100 calls/s. This keeps Hypercorn's behaviour (`restart`: idle from now, close
    after the timeout; `stop`: busy, no timeout; the close itself is Hypercorn's) with one task
    per connection whose deadline is moved instead.
    """

    def __init__(self, server: hypercorn.trio.tcp_server.TCPServer) -> None:
        self.server = server
        self.deadline = math.inf
        self.scope: trio.CancelScope | None = None
        self.idle: trio.Event | None = None
        self.closed = False

    async def restart(self, task_group: Any, action: Any) -> None:
        timeout = self.server.config.keep_alive_timeout
        if self.scope is None:
            # The connection's start: its first request head has `limits.request_head_seconds`.
            timeout = min(timeout, getattr(self.server.config, "acd_first_request_timeout", None) or timeout)
        self.deadline = trio.current_time() + timeout
        if self.scope is None:
            self.scope = trio.CancelScope(deadline=self.deadline)
            task_group.spawn(self._watch, self.scope)
        else:
            self.scope.deadline = self.deadline
        if self.idle is not None:
            self.idle.set()

    async def stop(self) -> None:
        self.deadline = math.inf
        if self.scope is not None:
            self.scope.deadline = math.inf

    def close(self) -> None:
        """The connection closed: nothing left to time (Hypercorn's timer is not running while
        a request is in progress, so a connection that ends busy must not wait for it here)."""
        self.closed = True
        if self.scope is not None:
            self.scope.cancel()

    async def _watch(self, scope: trio.CancelScope) -> None:
        with scope:
            await self.server.context.terminated.wait()
            # The server is stopping: as with Hypercorn's timer (which runs only while the
            # connection is idle), a request in progress is answered first.
            while self.deadline == math.inf:
                self.idle = trio.Event()
                await self.idle.wait()
        if self.closed:
            return
        # Idle past the timeout, or the server is stopping and the connection idle: close it.
        with trio.CancelScope(shield=True):
            await self.server._initiate_server_close()


class _TCPServer(hypercorn.trio.tcp_server.TCPServer):
    """Hypercorn's connection handler with a cheaper keep-alive timer, send lock and read loop.

    The send lock serialises the socket writes of each response (and each event-stream
    chunk); it is free nearly always, and `trio.Lock` yields to the scheduler even then.
    `QuickLock` is the same lock without that schedule point (the socket write has its own).
    The read loop opens no cancel scope per read when there is no read timeout (the node sets
    none: a PBX's connection may stay quiet between calls; the keep-alive timer closes it).

    Beyond Hypercorn: the connection first passes the config's `acd_gate` (a `ConnectionGate`);
    when the client closes, the keep-alive timer ends at once (Hypercorn's waits out the idle
    timeout, holding the descriptor: a flood of connect-and-close exhausted them); a write that
    makes no progress for `acd_write_timeout` seconds resets the connection (Hypercorn's writes
    wait forever, shielded, for a reader that stopped reading).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = _IdleDeadline(self)  # type: ignore[assignment]
        self.send_lock = QuickLock()  # type: ignore[assignment]
        self.write_timeout = getattr(self.config, "acd_write_timeout", None)

    async def run(self) -> None:
        gate: ConnectionGate | None = getattr(self.config, "acd_gate", None)
        if gate is None:
            return await super().run()
        address = _peer_address(self.stream)
        if gate.admit(address) is not None:
            _reset(self.stream)
            await trio.aclose_forcefully(self.stream)
            return
        try:
            await super().run()
        finally:
            gate.release(address)

    async def _read_data(self) -> None:
        try:
            if self.config.read_timeout is not None:
                return await super()._read_data()
            receive, handle = self.stream.receive_some, self.protocol.handle
            while True:
                try:
                    data = await receive(hypercorn.trio.tcp_server.MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                await handle(hypercorn.events.RawData(bytes(data)))
                if not data:
                    break
            await handle(hypercorn.events.Closed())
        finally:
            # Nothing more can arrive: the keep-alive timer has nothing left to wait for (a
            # request in progress still finishes; only the timer's own wait ends).
            self.idle_task.close()  # type: ignore[attr-defined]

    async def protocol_send(self, event: hypercorn.events.Event) -> None:
        if type(event) is not hypercorn.events.RawData or not self.write_timeout:
            return await super().protocol_send(event)
        data = event.data
        stalled = False
        async with self.send_lock:
            try:
                for start in range(0, len(data), WRITE_PIECE):
                    piece = data if len(data) <= WRITE_PIECE else memoryview(data)[start:start + WRITE_PIECE]
                    # Shielded as Hypercorn's write is (a cancelled write would corrupt the
                    # response), but with a deadline of its own.
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + self.write_timeout) as scope:
                        await self.stream.send_all(piece)
                    if scope.cancelled_caught:
                        stalled = True
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(hypercorn.events.Closed())
                return
            if stalled:
                log.info("API connection reset: no write progress address=%s timeout_s=%g", _peer_address(self.stream), self.write_timeout)
                _reset(self.stream)
                await trio.aclose_forcefully(self.stream)
                await self.protocol.handle(hypercorn.events.Closed())

    async def _close(self) -> None:
        self.idle_task.close()  # type: ignore[attr-defined]
        await super()._close()


def _socket_of(stream: Any) -> Any:
    """The socket under a plain or a TLS stream (None if neither)."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        sock = getattr(getattr(stream, "transport_stream", None), "socket", None)
    return sock


def _peer_address(stream: Any) -> str:
    sock: Any = _socket_of(stream)
    try:
        peer = sock.getpeername()
    except (AttributeError, OSError):
        return "-"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class _Refused(Exception):
    """A request the protocol answered itself and closed the connection on."""


class _H11Protocol(hypercorn.protocol.h11.H11Protocol):
    """Hypercorn's HTTP/1.1 protocol writing each response in one socket write.

    Hypercorn writes a response as three writes: the head, the body, and the end of the
    message (empty for a response with a Content-Length). Each write takes the connection's
    send lock and yields to the scheduler twice. Here the head waits for the first body bytes
    or the end of the message (an ASGI app sends them right after; the node's event streams
    send their opening lines at once) and an empty write is no write, so a response is one
    write and an event-stream chunk stays one write.
    """

    _head = b""

    async def handle(self, event: Any) -> None:
        try:
            await super().handle(event)
        except _Refused:
            pass  # answered and closed

    async def _check_protocol(self, event: Any) -> None:
        if getattr(self.config, "acd_h2c", True):
            return await super()._check_protocol(event)
        # HTTP/2 over cleartext is off (`limits.http2_cleartext`): an `Upgrade: h2c` header is
        # ignored and the request served as HTTP/1.1 (RFC 9110 lets a server ignore it); the
        # HTTP/2 preface (`PRI * HTTP/2.0`) gets 505 and the connection is closed.
        if event.method == b"PRI" and event.target == b"*":
            await self._send_error_response(505)
            await self.send(hypercorn.events.Closed())
            raise _Refused

    async def _send_h11_event(self, event: Any) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if type(event) is h11.Response:
            self._head += data
            return
        if self._head:
            data, self._head = self._head + data, b""
        if data:
            await self.send(hypercorn.events.RawData(data=data))

    async def stream_send(self, event: Any) -> None:
        if (
            type(event) is hypercorn.protocol.events.Response and event.status_code >= 200
            and self.connection.their_state is h11.SEND_BODY
            and not any(name.lower() == b"connection" for name, _ in event.headers)
        ):
            # Answered before the request's body was all in (an error, a refusal): the
            # connection cannot be reused, so the client is told (else its next request on it
            # would meet a closed connection).
            event = dataclasses.replace(event, headers=[*event.headers, (b"connection", b"close")])
        if self._head and isinstance(event, hypercorn.protocol.events.StreamClosed):
            # A stream that ends without its body (the app failed after starting the
            # response): the client gets the head it would have had from Hypercorn.
            head, self._head = self._head, b""
            await self.send(hypercorn.events.RawData(data=head))
        await super().stream_send(event)


# The Hypercorn series the classes above are written against; pyproject.toml bounds the
# dependency to it (`hypercorn>=0.18,<0.19`). A new series is taken in by checking every entry of
# `_EXPECTED` against it, running tests/test_keepalive.py and widening both.
TESTED_HYPERCORN = "0.18"

# Hypercorn's private and semi-private methods the classes above override or call, with the
# parameters they are written for (a renamed or added parameter is a changed contract).
_EXPECTED: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (hypercorn.trio.tcp_server.TCPServer, "__init__", ("self", "app", "config", "context", "state", "stream")),
    (hypercorn.trio.tcp_server.TCPServer, "run", ("self",)),
    (hypercorn.trio.tcp_server.TCPServer, "_read_data", ("self",)),
    (hypercorn.trio.tcp_server.TCPServer, "_close", ("self",)),
    (hypercorn.trio.tcp_server.TCPServer, "protocol_send", ("self", "event")),
    (hypercorn.trio.tcp_server.TCPServer, "_initiate_server_close", ("self",)),
    (hypercorn.protocol.h11.H11Protocol, "handle", ("self", "event")),
    (hypercorn.protocol.h11.H11Protocol, "_check_protocol", ("self", "event")),
    (hypercorn.protocol.h11.H11Protocol, "_send_h11_event", ("self", "event")),
    (hypercorn.protocol.h11.H11Protocol, "_send_error_response", ("self", "status_code")),
    (hypercorn.protocol.h11.H11Protocol, "stream_send", ("self", "event")),
)
# What `TCPServer.__init__` sets that `_TCPServer` replaces: the keep-alive timer (whose
# `restart(task_group, action)` and `stop()` `_IdleDeadline` provides) and the send lock.
_REPLACED_ATTRIBUTES = ("idle_task", "send_lock")


def hypercorn_version() -> str:
    try:
        return metadata.version("hypercorn")
    except metadata.PackageNotFoundError:
        return "unknown"


def hypercorn_problems() -> list[str]:
    """How the installed Hypercorn differs from the one the node's classes are written for
    (empty: it is the tested series, and every overridden method and swapped global is there
    with the expected parameters)."""
    problems = []
    version = hypercorn_version()
    if version.split(".")[:2] != TESTED_HYPERCORN.split("."):
        problems.append(f"hypercorn {version} is not of the tested series {TESTED_HYPERCORN}")
    for cls, name, parameters in _EXPECTED:
        method = cls.__dict__.get(name) or getattr(cls, name, None)
        if method is None:
            problems.append(f"{cls.__module__}.{cls.__qualname__}.{name} is missing")
            continue
        found = tuple(inspect.signature(method).parameters)
        if found != parameters:
            problems.append(f"{cls.__module__}.{cls.__qualname__}.{name}{found} is not ({', '.join(parameters)})")
    init_names = hypercorn.trio.tcp_server.TCPServer.__init__.__code__.co_names
    for attribute in _REPLACED_ATTRIBUTES:
        if attribute not in init_names:
            problems.append(f"hypercorn.trio.tcp_server.TCPServer no longer sets {attribute}")
    timer = getattr(hypercorn.trio.tcp_server, "TrioSingleTask", None)
    if timer is None or tuple(inspect.signature(timer.restart).parameters) != ("self", "task_group", "action") \
            or tuple(inspect.signature(timer.stop).parameters) != ("self",):
        problems.append("hypercorn.trio.tcp_server.TrioSingleTask (the keep-alive timer) has changed")
    for module, name in ((hypercorn.trio.run, "TCPServer"), (hypercorn.protocol, "H11Protocol"),
                         (hypercorn.trio.tcp_server, "MAX_RECV")):
        if not hasattr(module, name):
            problems.append(f"{module.__name__}.{name} is missing")
    if getattr(hypercorn.trio.run, "TCPServer", None) not in (hypercorn.trio.tcp_server.TCPServer, _TCPServer):
        problems.append("hypercorn.trio.run.TCPServer is not hypercorn.trio.tcp_server.TCPServer")
    if getattr(hypercorn.protocol, "H11Protocol", None) not in (hypercorn.protocol.h11.H11Protocol, _H11Protocol):
        problems.append("hypercorn.protocol.H11Protocol is not hypercorn.protocol.h11.H11Protocol")
    return problems


def install() -> bool:
    """Make Hypercorn's Trio worker serve connections with `_TCPServer` and `_H11Protocol`
    (idempotent); True when it does.

    The worker looks its connection class up in `hypercorn.trio.run` and the protocol wrapper
    the HTTP/1.1 protocol in `hypercorn.protocol`: both globals are swapped. With a Hypercorn
    that differs from the tested one (`hypercorn_problems()`) nothing is swapped: the node
    serves with Hypercorn's own classes, without the connection gate and write timeout, and
    says so in its log.
    """
    problems = hypercorn_problems()
    if problems:
        log.warning(
            "hypercorn %s is not the tested series %s: serving without the connection gate, "
            "the first-request deadline and the write timeout (%s)",
            hypercorn_version(), TESTED_HYPERCORN, "; ".join(problems),
        )
        return False
    setattr(hypercorn.trio.run, "TCPServer", _TCPServer)  # noqa: B010 (not a public attribute)
    setattr(hypercorn.protocol, "H11Protocol", _H11Protocol)  # noqa: B010 (not a public attribute)
    return True
