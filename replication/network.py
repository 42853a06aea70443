"""How replication reaches its peers: real TCP, or an in-memory network in the simulator.

Replication code never opens sockets itself; it asks a `Network` to connect or to serve, so
the disaster-recovery simulator can run the very same code over memory streams with faults.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


class Network(Protocol):
    async def connect(self, address: str) -> trio.abc.Stream: ...

    async def serve(self, address: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class TcpNetwork:
    """TCP, optionally wrapped in TLS (server context for listening, client context to connect)."""

    def __init__(self, server_tls: ssl.SSLContext | None = None, client_tls: ssl.SSLContext | None = None) -> None:
        self.server_tls = server_tls
        self.client_tls = client_tls

    async def connect(self, address: str) -> trio.abc.Stream:
        host, port = split_address(address)
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if self.client_tls is not None:
            tls = trio.SSLStream(stream, self.client_tls, server_hostname=host)
            await tls.do_handshake()
            stream = tls
        return stream

    async def serve(self, address: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = split_address(address)
        listeners = await trio.open_tcp_listeners(port, host=host)

        async def wrapped(stream: trio.SocketStream) -> None:
            if self.server_tls is not None:
                tls = trio.SSLStream(stream, self.server_tls, server_side=True)
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError:
                    return  # a failed handshake: nothing to serve (the peer's TLS is wrong)
                await handler(tls)
            else:
                await handler(stream)

        task_status.started()
        await trio.serve_listeners(wrapped, listeners)
