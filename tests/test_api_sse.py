"""Event streams: Server-Sent Events with LSN ids, resume, heartbeats, cut-off, shutdown, restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from acd.core import commands
from tests.helpers import NodeProcess
from tests.helpers.inprocess import running_node, write_settings
from tests.helpers.sse import Event, collect, events

CALLER = "01012345678"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("sse"), limits={"stream_heartbeat_seconds": 0.2}) as process:
        yield process


def client_for(node: NodeProcess) -> httpx.Client:
    return httpx.Client(base_url=node.url, timeout=httpx.Timeout(10, read=5))


def lsn_of(client: httpx.Client) -> int:
    return int(client.get("/v1/admin/state").json()["lsn"])


def arrive(client: httpx.Client, call: str, queue: str = "general") -> None:
    assert client.post("/v1/calls", json={"id": call, "queue": queue, "caller": CALLER}).status_code == 201


def queued(call: str) -> Any:
    return lambda seen: any(event.event == "call.queued" and event.json["call"] == call for event in seen)


def test_center_stream_carries_each_event_with_its_lsn(node: NodeProcess) -> None:
    with client_for(node) as client:
        start = lsn_of(client)
        with client.stream("GET", "/v1/events", params={"after": start}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            arrive(client, "sse-1")
            seen = collect(stream, queued("sse-1"))
        event = seen[-1]
        assert event.lsn == lsn_of(client) > start
        assert event.json["type"] == "call.queued" and event.json["queue"] == "general"
        assert [e.lsn for e in seen] == sorted(e.lsn for e in seen)


def test_stream_resumes_after_last_event_id_or_after(node: NodeProcess) -> None:
    with client_for(node) as client:
        start = lsn_of(client)
        for call in ("resume-1", "resume-2", "resume-3"):
            arrive(client, call)
        with client.stream("GET", "/v1/events", params={"after": start}) as stream:
            first = collect(stream, queued("resume-3"))
        resume_from = next(e for e in first if e.event == "call.queued" and e.json["call"] == "resume-1").lsn
        # Last-Event-ID wins over ?after (a reconnecting EventSource sends both).
        with client.stream("GET", "/v1/events", params={"after": 0}, headers={"Last-Event-ID": str(resume_from)}) as stream:
            again = collect(stream, queued("resume-3"))
        assert again[0].lsn == resume_from + 1
        assert [(e.lsn, e.data) for e in again] == [(e.lsn, e.data) for e in first if e.lsn > resume_from]
        bad = client.get("/v1/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400 and bad.json()["field"] == "Last-Event-ID"
        assert client.get("/v1/events", params={"after": "-1"}).status_code == 400


def test_idle_stream_gets_heartbeats(node: NodeProcess) -> None:
    with client_for(node) as client, client.stream("GET", "/v1/events", params={"after": lsn_of(client)}) as stream:
        comments: list[str] = []
        for block in events(stream):
            comments += block.comments
            if "heartbeat" in comments:
                break
        assert "heartbeat" in comments


def test_agent_stream_carries_only_that_agents_events(node: NodeProcess) -> None:
    with client_for(node) as client:
        start = lsn_of(client)
        with client.stream("GET", "/v1/agents/choi/events", params={"after": start}) as stream:
            client.post("/v1/agents/park/login")
            client.post("/v1/agents/choi/login")
            client.post("/v1/agents/choi/not-ready", json={"reason": "training"})
            seen = collect(stream, lambda seen: any(e.json.get("reason") == "training" for e in seen))
        assert {e.json["agent"] for e in seen} == {"choi"}
        assert all(e.event == "agent.changed" for e in seen)


def test_stream_resumes_across_a_crash_and_restart(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path)
    node.start()
    try:
        with client_for(node) as client:
            start = lsn_of(client)
            with client.stream("GET", "/v1/events", params={"after": start}) as stream:
                arrive(client, "before-crash")
                seen = collect(stream, queued("before-crash"))
            last_read = seen[-1].lsn
            # Written and acknowledged while the reader was away, then the node dies.
            for call in ("missed-1", "missed-2"):
                arrive(client, call)
            node.kill()
            node.start()
            with client.stream("GET", "/v1/events", headers={"Last-Event-ID": str(last_read)}) as stream:
                resumed = collect(stream, queued("missed-2"))
        assert resumed[0].lsn == last_read + 1
        calls = [e.json["call"] for e in resumed if e.event == "call.queued"]
        assert calls == ["missed-1", "missed-2"]
    finally:
        node.kill()


def test_shutdown_ends_streams_with_a_final_event(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path)
    node.start()
    try:
        with client_for(node) as client:
            arrive(client, "last-call")
            lsn = lsn_of(client)
            with client.stream("GET", "/v1/events", params={"after": lsn - 1}) as stream:
                collect(stream, queued("last-call"))
                assert node.process is not None
                node.process.terminate()
                rest = list(events(stream))  # the stream ends: the iterator finishes
            final = [e for e in rest if e.id is not None][-1]
            assert final.event == "stream.closed" and final.lsn == lsn
        assert node.wait() == 0  # a clean exit after the one SIGTERM
    finally:
        node.kill()


# ------------------------------------------------------------------------- in-process


class BlockedReader:
    """An ASGI client that sends its request, then stops reading until released."""

    def __init__(self) -> None:
        self.released = trio.Event()
        self.chunks: list[bytes] = []
        self.headers_sent = trio.Event()

    async def receive(self) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.headers_sent.set()
            return
        if self.chunks:  # the first chunk (preamble) passes, then the reader stalls
            await self.released.wait()
        self.chunks.append(message.get("body", b""))

    def parsed(self) -> list[Event]:
        blocks = b"".join(self.chunks).decode().split("\n\n")
        out = []
        for block in blocks:
            event = Event()
            for line in block.splitlines():
                name, _, value = line.partition(": ")
                if name == "id":
                    event.id = value
                elif name == "event":
                    event.event = value
                elif name == "data":
                    event.data = value
            if event.id is not None:
                out.append(event)
        return out


def scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": [], "http_version": "1.1"}


def test_a_slow_reader_is_cut_off_and_never_slows_the_pipeline(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            node, api = running.node, running.api
            node.broker.queue_events = 8
            reader = BlockedReader()
            start = node.lsn
            running.nursery.start_soon(api, scope("/v1/events", b"after=%d" % start), reader.receive, reader.send)
            await reader.headers_sent.wait()
            with trio.fail_after(10):  # the pipeline keeps acknowledging while the reader stalls
                for number in range(40):
                    await node.submit(commands.Arrive(id=f"slow-{number}", queue="general", caller=CALLER))
            assert node.broker.statistics().cut_off == 1
            reader.released.set()
            with trio.fail_after(10):
                while not reader.chunks or not reader.chunks[-1] == b"":
                    await trio.sleep(0.01)
            parsed = reader.parsed()
            final = parsed[-1]
            assert final.event == "stream.behind"
            delivered = [int(e.id or 0) for e in parsed[:-1]]
            assert int(final.id or 0) == (max(delivered) if delivered else start)
            assert int(final.id or 0) < node.lsn  # the reader resumes from there

    trio.run(main)


def test_resuming_from_an_lsn_no_longer_held_starts_with_a_reset(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, limits={"stream_buffer_events": 16})

    async def main() -> None:
        async with running_node(settings) as running:
            node = running.node
            for number in range(20):
                await node.submit(commands.Arrive(id=f"old-{number}", queue="general", caller=CALLER))
            reader = BlockedReader()
            reader.released.set()
            with trio.move_on_after(1):
                await running.api(scope("/v1/events", b"after=1"), reader.receive, reader.send)
            parsed = reader.parsed()
            assert parsed[0].event == "stream.reset"
            floor = int(parsed[0].id or 0)
            assert 1 < floor < node.lsn
            assert [int(e.id or 0) for e in parsed[1:]] == sorted(int(e.id or 0) for e in parsed[1:])
            assert int(parsed[1].id or 0) > floor

    trio.run(main)
