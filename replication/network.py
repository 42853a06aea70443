"""How replication reaches its peers: real TCP, or an in-memory network in the simulator.

Replication code never opens sockets itself; it asks a `Network` to connect or to serve, so
the disaster-recovery simulator can run the very same code over memory streams with faults.
"""

from __future__ import annotations

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
    async def connect(self, address: str) -> trio.abc.Stream:
        host, port = split_address(address)
        stream = await trio.open_tcp_stream(host, port)
        return stream

    async def serve(self, address: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = split_address(address)
        listeners = await trio.open_tcp_listeners(port, host=host)

        async def wrapped(stream: trio.SocketStream) -> None:
            await handler(stream)

        task_status.started()
        await trio.serve_listeners(wrapped, listeners)
