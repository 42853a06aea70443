"""The node's keep-alive timer for Hypercorn connections (`acd.node.serve._IdleDeadline`).

It replaces Hypercorn's per-request timer task with one deadline per connection that moves;
these tests hold it to Hypercorn's behaviour: idle for the timeout closes, a request in
progress is never timed out, a stopping server answers the request in progress first.
"""

from __future__ import annotations

import math
from typing import Any

import hypercorn.config
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import trio
import trio.testing

from acd.node.locks import QuickLock
from acd.node.serve import _IdleDeadline, _TCPServer, _use_moving_idle_deadline


class _Config:
    keep_alive_timeout = 5.0


class _Context:
    def __init__(self) -> None:
        self.terminated = trio.Event()


class _FakeServer:
    """What `_IdleDeadline` uses of Hypercorn's TCPServer: its config, context and close."""

    def __init__(self) -> None:
        self.config = _Config()
        self.context = _Context()
        self.closed_at: float | None = None
        self.ended_at: float | None = None  # when the connection's tasks (the timer's) ended

    async def _initiate_server_close(self) -> None:
        self.closed_at = trio.current_time()


class _TaskGroup:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    def spawn(self, func: Any, *args: Any) -> None:
        self.nursery.start_soon(func, *args)


def _run(scenario: Any) -> _FakeServer:
    server = _FakeServer()

    async def main() -> None:
        with trio.move_on_after(7200):  # a timer that never ends shows as an end at 7,200 s
            async with trio.open_nursery() as nursery:
                timer = _IdleDeadline(server)  # type: ignore[arg-type]
                await scenario(timer, server, _TaskGroup(nursery))
        server.ended_at = trio.current_time()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return server


def test_an_idle_connection_is_closed_after_the_timeout_and_each_response_restarts_it() -> None:
    async def scenario(timer: _IdleDeadline, server: _FakeServer, group: _TaskGroup) -> None:
        await timer.restart(group, None)  # connected: idle
        for _ in range(4):  # a request every 3 s, each answered in 1 s: never idle for 5 s
            await trio.sleep(2.0)
            await timer.stop()
            await trio.sleep(1.0)
            await timer.restart(group, None)
        assert server.closed_at is None
        await trio.sleep(10.0)

    server = _run(scenario)
    assert server.closed_at == 12.0 + 5.0


def test_a_request_in_progress_is_never_timed_out() -> None:
    async def scenario(timer: _IdleDeadline, server: _FakeServer, group: _TaskGroup) -> None:
        await timer.restart(group, None)
        await trio.sleep(1.0)
        await timer.stop()  # an event stream: busy for an hour
        await trio.sleep(3600.0)
        assert server.closed_at is None and timer.deadline == math.inf
        await timer.restart(group, None)

    assert _run(scenario).closed_at == 3601.0 + 5.0


def test_a_stopping_server_answers_the_request_in_progress_then_closes() -> None:
    async def scenario(timer: _IdleDeadline, server: _FakeServer, group: _TaskGroup) -> None:
        await timer.restart(group, None)
        await timer.stop()
        server.context.terminated.set()
        await trio.sleep(2.0)
        assert server.closed_at is None, "closed in the middle of a request"
        await timer.restart(group, None)  # the response went out

    assert _run(scenario).closed_at == 2.0


def test_an_idle_connection_of_a_stopping_server_is_closed_at_once() -> None:
    async def scenario(timer: _IdleDeadline, server: _FakeServer, group: _TaskGroup) -> None:
        await timer.restart(group, None)
        await trio.sleep(1.0)
        server.context.terminated.set()

    assert _run(scenario).closed_at == 1.0


def test_a_connection_closed_in_the_middle_of_a_request_ends_its_timer_at_once() -> None:
    # Hypercorn's timer does not run while a request is in progress; ours must not keep the
    # connection's task group (and so the connection) waiting after it closed.
    async def scenario(timer: _IdleDeadline, server: _FakeServer, group: _TaskGroup) -> None:
        await timer.restart(group, None)
        await timer.stop()  # an event stream
        await trio.sleep(1.0)
        timer.close()  # the client went away

    server = _run(scenario)
    assert server.ended_at == 1.0, "the timer kept the connection's tasks waiting after it closed"
    assert server.closed_at is None, "a closed connection is not closed again"


def test_an_idle_connection_closed_by_the_client_ends_its_timer_at_once() -> None:
    async def scenario(timer: _IdleDeadline, server: _FakeServer, group: _TaskGroup) -> None:
        await timer.restart(group, None)
        await trio.sleep(1.0)
        timer.close()

    server = _run(scenario)
    assert server.ended_at == 1.0 and server.closed_at is None


def test_hypercorn_serves_with_the_moving_deadline() -> None:
    _use_moving_idle_deadline()
    assert hypercorn.trio.run.TCPServer is _TCPServer
    assert issubclass(_TCPServer, hypercorn.trio.tcp_server.TCPServer)
    server = _TCPServer(None, hypercorn.config.Config(), None, None, None)
    assert isinstance(server.idle_task, _IdleDeadline) and isinstance(server.send_lock, QuickLock)
