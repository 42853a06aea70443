"""API connections against a hostile or careless client (issue 20, "The HTTP API"), on real
node processes: connection floods under a descriptor limit, connections that never send a
request, event-stream readers that stop reading, and HTTP/2 over cleartext.

The node runs with the descriptor limit of a small unit file (`LimitedNode`, 1,024), so a
flood that used to exhaust its descriptors shows as requests that time out.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from acd.settings import hash_token
from tests.helpers import NodeProcess, wait_until

DESCRIPTORS = 1024
FLOOD = 1100
PBX = {"authorization": "Bearer pbx-token"}
TOKENS = [{"name": "pbx", "role": "pbx", "hash": hash_token("pbx-token")}]

_WITH_DESCRIPTOR_LIMIT = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
    "sys.argv[0] = 'acd'; runpy.run_module('acd', run_name='__main__', alter_sys=True)"
)


class LimitedNode(NodeProcess):
    """A node process that may hold at most `DESCRIPTORS` open files (systemd's LimitNOFILE)."""

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", _WITH_DESCRIPTOR_LIMIT.format(limit=DESCRIPTORS), *args]


def descriptors(node: NodeProcess) -> int:
    assert node.process is not None
    return len(os.listdir(f"/proc/{node.process.pid}/fd"))


def create_call(node: NodeProcess, call: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> int:
    """POST /v1/calls from 127.0.0.1 on a new connection; its status (a timeout fails the test)."""
    body = {"id": call, "queue": "general", "caller": "01012345678"}
    return httpx.post(node.url + "/v1/calls", json=body, headers=headers or {}, timeout=timeout).status_code


@contextmanager
def idle_connections(node: NodeProcess, count: int, sources: list[str]) -> Iterator[list[socket.socket]]:
    """`count` connections that send nothing, spread over the source addresses `sources`."""
    with ExitStack() as stack:
        held = []
        for index in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((sources[index % len(sources)], 0))
            try:
                sock.connect(("127.0.0.1", node.port))
            except (ConnectionResetError, ConnectionRefusedError):
                continue  # reset by the node before connect() returned: refused, as meant
            held.append(sock)
        yield held


def test_a_flood_of_connect_and_close_leaves_the_api_answering(tmp_path: Path) -> None:
    """1,100 connect-and-close in about a second at a limit of 1,024 descriptors: every one is
    released at once (each used to stay for the idle timeout and every request timed out)."""
    with LimitedNode(tmp_path) as node:
        baseline = descriptors(node)
        started = time.monotonic()
        for _ in range(FLOOD):
            with socket.create_connection(("127.0.0.1", node.port)):
                pass
        assert time.monotonic() - started < 5
        wait_until(lambda: descriptors(node) <= baseline + 5, timeout=3, what="the flood's descriptors released")
        assert create_call(node, "after-flood") == 201


def test_idle_connections_from_one_address_are_capped_and_the_others_are_served(tmp_path: Path) -> None:
    limits = {"connections_per_address_max": 50, "request_head_seconds": 1.0}
    with LimitedNode(tmp_path, limits=limits) as node:
        baseline = descriptors(node)
        with idle_connections(node, FLOOD, ["127.0.0.2"]) as held:
            # Past 50 the node resets them as they come: it keeps answering everyone else.
            assert create_call(node, "during-flood") == 201
            assert descriptors(node) <= baseline + 50 + 5
            # The 50 it kept never sent a request: dropped after request_head_seconds.
            wait_until(lambda: descriptors(node) <= baseline + 5, timeout=5, what="idle connections dropped")
            held[0].settimeout(2)
            assert held[0].recv(1) == b""


def test_connections_past_the_total_cap_are_reset_and_free_again_soon(tmp_path: Path) -> None:
    limits = {"connections_max": 300, "connections_per_address_max": 0, "request_head_seconds": 2.0}
    with LimitedNode(tmp_path, limits=limits) as node:
        baseline = descriptors(node)
        sources = [f"127.0.0.{index}" for index in range(2, 13)]
        with idle_connections(node, FLOOD, sources):
            most = max(descriptors(node) for _ in range(20) if time.sleep(0.05) is None)
            assert most <= baseline + 300 + 5
            # Once the idle ones are dropped (request_head_seconds), calls are accepted again.
            wait_until(lambda: create_call(node, "after-cap") == 201, timeout=6, interval=0.2, what="a call accepted again")


def test_the_connection_cap_is_lowered_to_fit_the_descriptor_limit(tmp_path: Path) -> None:
    limits = {"connections_max": 5000, "connections_per_address_max": 0, "request_head_seconds": 1.0}
    with LimitedNode(tmp_path, limits=limits) as node:
        with idle_connections(node, 1200, ["127.0.0.2"]):
            assert descriptors(node) <= DESCRIPTORS - 32
            wait_until(lambda: create_call(node, "after-cap") == 201, timeout=5, interval=0.2, what="a call accepted again")
    assert "limits.connections_max=5000 lowered to" in node.log_path.read_text()


def _open_silent_stream(node: NodeProcess, after: int = 0) -> socket.socket:
    """GET /v1/events on a socket with a tiny receive buffer that is never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", node.port))
    sock.sendall(b"GET /v1/events?after=%d HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer pbx-token\r\n\r\n" % after)
    sock.settimeout(5)
    assert sock.recv(16).startswith(b"HTTP/1.1 200")  # the stream holds its slot from here
    return sock


def _stream_status(client: httpx.Client) -> int:
    with client.stream("GET", "/v1/events", params={"after": 10**9}) as response:
        return response.status_code


def test_a_reader_that_stops_reading_is_cut_after_the_write_timeout_and_frees_its_slot(tmp_path: Path) -> None:
    limits = {"streams_per_token_max": 1, "write_timeout_seconds": 1.0}
    with NodeProcess(tmp_path, tokens=TOKENS, limits=limits) as node, httpx.Client(base_url=node.url, headers=PBX, timeout=5) as client:
        for index in range(600):  # a backlog of events bigger than the socket buffers
            assert client.post("/v1/calls", json={"id": f"c{index}", "queue": "general", "caller": "01012345678"}).status_code == 201
        with _open_silent_stream(node) as silent:
            assert _stream_status(client) == 429
            # Its writes make no progress: after write_timeout_seconds the node resets it.
            wait_until(lambda: _stream_status(client) == 200, timeout=6, interval=0.2, what="the slot free again")
            silent.settimeout(2)
            try:
                while silent.recv(65536):
                    pass
            except ConnectionResetError:
                pass


def test_a_stream_cut_off_by_the_broker_frees_its_slot_while_its_write_waits(tmp_path: Path) -> None:
    """A reader that fell behind is cut off (`stream.behind`): its slot is free at once, even
    while the write to its full socket still waits (here for a long write timeout)."""
    limits = {"streams_per_token_max": 1, "write_timeout_seconds": 120.0}
    with NodeProcess(tmp_path, tokens=TOKENS, limits=limits) as node, httpx.Client(base_url=node.url, headers=PBX, timeout=5) as client:
        for index in range(300):
            client.post("/v1/calls", json={"id": f"early-{index}", "queue": "general", "caller": "01012345678"})
        with _open_silent_stream(node):
            assert _stream_status(client) == 429
            freed = threading.Event()

            def arrivals(worker: int) -> None:  # together: commits shared, events come fast
                with httpx.Client(base_url=node.url, headers=PBX, timeout=5) as own:
                    for index in range(500):  # 4,000 in all, past the reader's queue of 2,000 events
                        if freed.is_set():
                            return
                        own.post("/v1/calls", json={"id": f"late-{worker}-{index}", "queue": "general", "caller": "01012345678"})

            workers = [threading.Thread(target=arrivals, args=(worker,)) for worker in range(8)]
            for thread in workers:
                thread.start()
            try:
                wait_until(lambda: _stream_status(client) == 200, timeout=30, interval=0.2, what="the cut-off stream's slot free")
            finally:
                freed.set()
                for thread in workers:
                    thread.join()


def _exchange(node: NodeProcess, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(4096)


H2C_UPGRADE = (
    b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_http2_cleartext_is_off_unless_configured(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "default") as node:
        upgraded = _exchange(node, H2C_UPGRADE)
        assert upgraded.startswith(b"HTTP/1.1 200"), upgraded[:40]
        preface = _exchange(node, H2_PREFACE)
        assert preface.startswith(b"HTTP/1.1 505"), preface[:40]
    with NodeProcess(tmp_path / "enabled", limits={"http2_cleartext": True}) as node:
        assert _exchange(node, H2C_UPGRADE).startswith(b"HTTP/1.1 101")


def test_a_request_refused_before_its_body_was_read_gets_its_answer_and_the_client_goes_on(tmp_path: Path) -> None:
    """A 401 sent before a large body was read: the client reads it (no reset destroys it on
    its way) and is told the connection ends (`Connection: close`), so its next request goes
    on a new connection instead of meeting a closed one."""
    limits = {"unauthorized_per_second_per_address": 0}
    body = b'{"id": "' + b"x" * 200_000 + b'"}'
    with NodeProcess(tmp_path, tokens=TOKENS, limits=limits) as node, httpx.Client(base_url=node.url, timeout=5) as client:
        for _ in range(30):
            refused = client.post("/v1/calls", content=body, headers={"authorization": "Bearer wrong", "content-type": "application/json"})
            assert refused.status_code == 401
            assert client.get("/healthz").status_code == 200
            assert refused.headers.get("connection") == "close"
