"""The node's classes for Hypercorn connections (`acd.connections`).

The keep-alive timer (`_IdleDeadline`) replaces Hypercorn's per-request timer task with one
deadline per connection that moves; these tests hold it to Hypercorn's behaviour: idle for the
timeout closes, a request in progress is never timed out, a stopping server answers the request
in progress first. The HTTP/1.1 protocol (`_H11Protocol`) writes a response in one socket
write; its tests check the writes and what the client reads.

Both override Hypercorn's private methods: the first tests fail, never skip, when the installed
Hypercorn is not the series they are written for or any overridden method has changed.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import hypercorn.config
import hypercorn.events
import hypercorn.protocol
import hypercorn.protocol.h11
import hypercorn.trio
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import pytest
import trio
import trio.testing
from packaging.requirements import Requirement

from acd import connections
from acd.connections import _H11Protocol, _IdleDeadline, _TCPServer, hypercorn_problems, install
from acd.locks import QuickLock

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- the Hypercorn they extend


def test_the_installed_hypercorn_is_the_series_the_node_classes_are_written_for() -> None:
    problems = hypercorn_problems()
    assert problems == [], (
        "the node's Hypercorn classes (acd.connections) are not written for the installed Hypercorn "
        f"{connections.hypercorn_version()}: " + "; ".join(problems)
        + ". Check every override against it, then widen TESTED_HYPERCORN and the bound in pyproject.toml"
    )
    assert install() is True


def test_the_dependency_is_bounded_to_the_tested_series() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [hypercorn] = [Requirement(line.split("#")[0]) for line in dependencies if line.lower().startswith("hypercorn")]
    major, minor = (int(part) for part in connections.TESTED_HYPERCORN.split("."))
    assert hypercorn.specifier.contains(f"{major}.{minor}.0") and hypercorn.specifier.contains(f"{major}.{minor}.9")
    assert not hypercorn.specifier.contains(f"{major}.{minor + 1}.0"), f"{hypercorn} has no upper bound below the next series"
    assert not hypercorn.specifier.contains(f"{major}.{minor - 1}.9"), f"{hypercorn} admits an older, untested series"
    pinned = [line.partition("==")[2] for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("hypercorn==")]
    assert len(pinned) == 1 and hypercorn.specifier.contains(pinned[0])


def test_a_changed_or_missing_override_is_reported_and_nothing_is_swapped(monkeypatch: pytest.MonkeyPatch) -> None:
    async def changed(self: Any, event: Any, extra: int) -> None: ...

    monkeypatch.setattr(hypercorn.protocol.h11.H11Protocol, "_send_h11_event", changed)
    monkeypatch.delattr(hypercorn.trio.tcp_server.TCPServer, "_close")
    monkeypatch.setattr(connections, "hypercorn_version", lambda: "0.99.1")
    monkeypatch.setattr(hypercorn.trio.run, "TCPServer", hypercorn.trio.tcp_server.TCPServer)
    monkeypatch.setattr(hypercorn.protocol, "H11Protocol", hypercorn.protocol.h11.H11Protocol)
    problems = "\n".join(hypercorn_problems())
    assert "0.99.1 is not of the tested series" in problems
    assert "H11Protocol._send_h11_event('self', 'event', 'extra') is not (self, event)" in problems
    assert "TCPServer._close is missing" in problems
    assert install() is False
    assert hypercorn.trio.run.TCPServer is hypercorn.trio.tcp_server.TCPServer
    assert hypercorn.protocol.H11Protocol is hypercorn.protocol.h11.H11Protocol


def test_a_hypercorn_that_no_longer_sets_the_replaced_timer_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: Any, app: Any, config: Any, context: Any, state: Any, stream: Any) -> None:
        self.timer = None

    monkeypatch.setattr(hypercorn.trio.tcp_server.TCPServer, "__init__", init)
    problems = hypercorn_problems()
    assert problems == ["hypercorn.trio.tcp_server.TCPServer no longer sets idle_task",
                        "hypercorn.trio.tcp_server.TCPServer no longer sets send_lock"]


# ---------------------------------------------------------------------- the keep-alive timer


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
    install()
    assert hypercorn.trio.run.TCPServer is _TCPServer
    assert issubclass(_TCPServer, hypercorn.trio.tcp_server.TCPServer)
    server = _TCPServer(None, hypercorn.config.Config(), None, None, None)
    assert isinstance(server.idle_task, _IdleDeadline) and isinstance(server.send_lock, QuickLock)


def test_hypercorn_serves_http1_with_one_write_per_response() -> None:
    install()
    assert hypercorn.protocol.H11Protocol is _H11Protocol


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/json":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
    elif scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"retry: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:  # an app that fails after starting its response
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        raise RuntimeError("the app failed half-way")


def _serve_and_ask(exchanges: list[tuple[bytes, bytes]], monkeypatch: pytest.MonkeyPatch) -> tuple[list[bytes], bytes]:
    """Serve `_asgi` with the node's classes; on one connection, send each request and read
    until what it ends with has arrived (or the server closes); the server's socket writes and
    what the client read."""
    install()
    writes: list[bytes] = []
    original = _TCPServer.protocol_send

    async def recording_send(self: _TCPServer, event: Any) -> None:
        if isinstance(event, hypercorn.events.RawData):
            writes.append(event.data)
        await original(self, event)

    monkeypatch.setattr(_TCPServer, "protocol_send", recording_send)
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    received = b""

    async def main() -> None:
        nonlocal received
        stop = trio.Event()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(lambda task_status: hypercorn.trio.serve(_asgi, config, shutdown_trigger=stop.wait, task_status=task_status))
                port = int(binds[0].rsplit(":", 1)[1])
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                for request, until in exchanges:
                    await stream.send_all(request)
                    start = len(received)
                    while until not in received[start:]:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        received += chunk
                await stream.aclose()
                stop.set()

    trio.run(main)
    return writes, received


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode()


def test_a_response_goes_out_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    writes, received = _serve_and_ask([(_get("/json"), b'{"ok":true}'), (_get("/json"), b'{"ok":true}')], monkeypatch)
    assert received.count(b"HTTP/1.1 200") == 2 and received.count(b'{"ok":true}') == 2
    assert len(writes) == 2, writes  # head and body together, no empty write for the message end
    assert all(w.startswith(b"HTTP/1.1 200") and w.endswith(b'\r\n\r\n{"ok":true}') for w in writes)


def test_an_event_stream_sends_its_head_with_the_first_chunk_then_one_write_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    writes, received = _serve_and_ask([(_get("/stream"), b"0\r\n\r\n")], monkeypatch)
    assert received.startswith(b"HTTP/1.1 200") and b"retry: 1" in received and b"data: 1" in received
    assert received.endswith(b"0\r\n\r\n")
    assert len(writes) == 3, writes
    assert writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(b"retry: 1\n\n\r\n")
    assert writes[1].endswith(b"data: 1\n\n\r\n") and writes[2] == b"0\r\n\r\n"


def test_a_response_whose_app_fails_after_the_start_still_sends_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    writes, received = _serve_and_ask([(_get("/fail"), b"never")], monkeypatch)
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"\r\n\r\n")  # head, then the close
    assert writes == [received]
