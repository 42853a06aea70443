"""How replication reaches its peers: real TCP, or an in-memory network in the simulator.

Replication code never opens sockets itself; it asks a `Network` to connect or to serve, so
the disaster-recovery simulator can run the very same code over memory streams with faults.

A listening `TcpNetwork` guards its port with a `Gate` (`PortLimits`), because anyone who can
reach the port can open connections before proving anything:

- the handshake (TLS, then the Hello, see `protocol.handshake`) must end within
  `handshake_seconds` (about the cluster's `failover_timeout`), else the connection is closed;
- at most `connections_max` connections at once, and `connections_per_address_max` from one
  source address. When a limit is reached, the oldest connection still in its handshake
  (from that address, or from any for the total) is closed to make room; a connection whose
  Hello was verified is never closed for a newcomer. Both limits stay below the process's
  descriptor limit, so a flood can neither exhaust descriptors nor starve a peer for long;
- optionally only addresses in `allow_from` are served;
- every failed handshake is logged (one line: reason, peer address; rate-limited) and counted,
  by reason: `bad_hello` (no Hello, a wrong secret, garbage), `protocol_version` (the peer
  speaks no wire protocol version this binary speaks; the line names both sides' versions),
  `tls`, `timeout`, `evicted`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from acd.settings import descriptor_limit

from .protocol import Channel, Hello, admission

if TYPE_CHECKING:
    from acd.settings import Settings

Handler = Callable[[trio.abc.Stream], Awaitable[None]]

DESCRIPTORS_RESERVED = 32   # kept out of the connection limits: listeners, logs, the store, ...
LOG_LINES_PER_SECOND = 5    # failed handshakes logged, at most; the rest are counted


class Network(Protocol):
    async def connect(self, address: str) -> trio.abc.Stream: ...

    async def serve(self, address: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, kw_only=True)
class PortLimits:
    """What a listening port accepts from connections that have not proved anything yet."""

    name: str = "replication"                  # in log lines and metrics
    handshake_seconds: float = 2.0             # TLS and Hello, from accept
    connections_max: int = 64
    connections_per_address_max: int = 16
    allow_from: tuple[str, ...] = ()           # IP addresses or networks; empty: any address
    # A shipping connection (primary to standby) carries a heartbeat every renew interval:
    # silent this long, its primary is taken as gone and the connection closed.
    shipping_idle_seconds: float | None = None


def replication_limits(settings: Settings) -> PortLimits:
    """The limits of a node's replication port, from the cluster's settings."""
    cluster = settings.cluster
    return PortLimits(
        name="replication", handshake_seconds=max(1.0, cluster.failover_timeout),
        connections_max=cluster.replication_connections_max,
        connections_per_address_max=cluster.replication_connections_per_address_max,
        allow_from=tuple(cluster.replication_allow_from),
        shipping_idle_seconds=max(30.0, 20 * cluster.failover_timeout),
    )


def witness_limits(settings: Settings) -> PortLimits:
    """The limits of the witness's port, from the cluster's settings."""
    cluster = settings.cluster
    assert settings.witness is not None
    return PortLimits(
        name="witness", handshake_seconds=max(1.0, cluster.failover_timeout),
        connections_max=settings.witness.connections_max,
        connections_per_address_max=settings.witness.connections_per_address_max,
        allow_from=tuple(cluster.replication_allow_from),
    )


class _Connection:
    """One accepted connection as its gate sees it; the `protocol.Admission` of its task."""

    __slots__ = ("authenticated_", "evicted", "gate", "host", "peer", "released", "reported", "scope")

    def __init__(self, gate: Gate, host: str, peer: str, scope: trio.CancelScope) -> None:
        self.gate = gate
        self.host = host
        self.peer = peer
        self.scope = scope
        self.authenticated_ = False
        self.evicted = False
        self.reported = False   # its failure is already counted
        self.released = False   # its slot is already given back

    def authenticated(self, channel: Channel, hello: Hello) -> None:
        self.authenticated_ = True
        self.scope.deadline = math.inf
        self.gate._authenticated(self)
        if hello.purpose == "ship" and self.gate.limits.shipping_idle_seconds is not None:
            channel.idle_timeout = self.gate.limits.shipping_idle_seconds

    def refused(self, reason: str, kind: str = "bad_hello") -> None:
        self.reported = True
        self.gate.failed(self, kind, reason)


class Gate:
    """Admission to one listening port: deadlines, limits, the allow list, counts."""

    def __init__(self, limits: PortLimits) -> None:
        self.limits = limits
        self.log = logging.getLogger(f"acd.{limits.name}")
        usable = max(4, (descriptor_limit() or 1 << 20) - DESCRIPTORS_RESERVED)
        self.connections_max = max(1, min(limits.connections_max, usable))
        self.per_address_max = max(1, min(limits.connections_per_address_max, self.connections_max))
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in limits.allow_from]
        self.open = 0
        self.per_host: Counter[str] = Counter()
        self.pending: dict[_Connection, None] = {}   # in their handshake, oldest first
        self.handshakes_failed: Counter[str] = Counter()  # by reason
        self.connections_refused: Counter[str] = Counter()  # by reason
        self.evictions = 0
        self._log_second = -1
        self._log_lines = 0
        self._log_suppressed = 0

    def allowed(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def admit(self, host: str, peer: str, scope: trio.CancelScope) -> _Connection | None:
        """Take a new connection in, closing the oldest pending one to make room; None: refused."""
        if not self.allowed(host):
            self._refuse("not_allowed", peer)
            return None
        if self.per_host[host] >= self.per_address_max:
            victim = next((c for c in self.pending if c.host == host), None)
            if victim is None:
                self._refuse("address_limit", peer)
                return None
            self._evict(victim)
        if self.open >= self.connections_max:
            victim = next(iter(self.pending), None)
            if victim is None:
                self._refuse("limit", peer)
                return None
            self._evict(victim)
        connection = _Connection(self, host, peer, scope)
        self.open += 1
        self.per_host[host] += 1
        self.pending[connection] = None
        return connection

    def _evict(self, victim: _Connection) -> None:
        victim.evicted = True
        victim.scope.cancel()
        self.evictions += 1
        self.release(victim)

    def _authenticated(self, connection: _Connection) -> None:
        self.pending.pop(connection, None)

    def release(self, connection: _Connection) -> None:
        if connection.released:
            return
        connection.released = True
        self.pending.pop(connection, None)
        self.open -= 1
        self.per_host[connection.host] -= 1
        if self.per_host[connection.host] <= 0:
            del self.per_host[connection.host]

    def failed(self, connection: _Connection, reason: str, detail: str = "") -> None:
        self.handshakes_failed[reason] += 1
        self._line(f"{self.limits.name} handshake failed", detail, reason, connection.peer)

    def _refuse(self, reason: str, peer: str) -> None:
        self.connections_refused[reason] += 1
        self._line(f"{self.limits.name} connection refused", "", reason, peer)

    def _line(self, what: str, detail: str, reason: str, peer: str) -> None:
        """One warning line, at most LOG_LINES_PER_SECOND a second (a flood is counted, not logged)."""
        second = int(trio.current_time())
        if second != self._log_second:
            self._log_second = second
            self._log_lines = 0
        if self._log_lines >= LOG_LINES_PER_SECOND:
            self._log_suppressed += 1
            return
        self._log_lines += 1
        suppressed, self._log_suppressed = self._log_suppressed, 0
        text = f"{what}: {detail}" if detail else what
        if suppressed:
            self.log.warning("%s reason=%s peer=%s suppressed=%d", text, reason, peer, suppressed)
        else:
            self.log.warning("%s reason=%s peer=%s", text, reason, peer)

    async def serve(self, stream: trio.SocketStream, tls: ssl.SSLContext | None, handler: Handler) -> None:
        """Serve one accepted connection under the gate's rules."""
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        scope = trio.CancelScope(deadline=trio.current_time() + self.limits.handshake_seconds)
        connection = self.admit(host, peer, scope)
        if connection is None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        token = admission.set(connection)
        served: trio.abc.Stream = stream
        try:
            with scope:
                if tls is not None:
                    served = trio.SSLStream(stream, tls, server_side=True)
                    try:
                        await served.do_handshake()
                    except trio.BrokenResourceError as error:
                        connection.reported = True
                        self.failed(connection, "tls", str(error.__cause__ or error))
                        return
                await handler(served)
            if scope.cancelled_caught and not connection.authenticated_ and not connection.reported:
                self.failed(connection, "evicted" if connection.evicted else "timeout",
                            "" if connection.evicted else f"no verified Hello within {self.limits.handshake_seconds:g} s")
        finally:
            admission.reset(token)
            self.release(connection)
            with trio.CancelScope(shield=True):
                try:
                    await served.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass


class TcpNetwork:
    """TCP, optionally wrapped in TLS (server context for listening, client context to connect)."""

    def __init__(self, server_tls: ssl.SSLContext | None = None, client_tls: ssl.SSLContext | None = None,
                 *, limits: PortLimits | None = None) -> None:
        self.server_tls = server_tls
        self.client_tls = client_tls
        self.gate = Gate(limits or PortLimits())

    async def connect(self, address: str) -> trio.abc.Stream:
        host, port = split_address(address)
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if self.client_tls is not None:
            tls = trio.SSLStream(stream, self.client_tls, server_hostname=host)
            try:
                await tls.do_handshake()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.aclose()  # a failed or abandoned handshake keeps no socket open
                raise
            stream = tls
        return stream

    async def serve(self, address: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = split_address(address)
        listeners = await trio.open_tcp_listeners(port, host=host)

        async def wrapped(stream: trio.SocketStream) -> None:
            await self.gate.serve(stream, self.server_tls, handler)

        task_status.started()
        await trio.serve_listeners(wrapped, listeners)
