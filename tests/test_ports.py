"""The witness's and the replication ports against hostile connections, on real processes.

- An idle-connection flood against the witness (at a low descriptor limit) and both
  replication ports does not stop a failover: the primary is killed and the standby is
  primary within 3 s.
- Frames claiming 64 MiB before any Hello grow the witness's memory by less than 10 MiB.
- A vote for a candidate that is not one of the cluster's [[nodes]] is refused and not saved.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from acd.store import Snapshot
from acd.tools.launcher import LocalCluster, prepare_config, wait_for
from replication.network import Gate, PortLimits, TcpNetwork
from replication.protocol import (
    FRAME_BYTES_MAX,
    PREAUTH_FRAME_BYTES_MAX,
    SNAPSHOT_PART_BYTES,
    Ack,
    Channel,
    ClearBehind,
    FrameError,
    InstallSnapshot,
    Message,
    PeerSilent,
    RecordBehind,
    Release,
    StatusRequest,
    Truncate,
    VoteReply,
    VoteRequest,
    handshake,
)
from replication.witness import MemoryStateStore, Witness, WitnessCore, WitnessState

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "busan-120.toml"
WITNESS_DESCRIPTORS = 256


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (WITNESS_DESCRIPTORS, WITNESS_DESCRIPTORS))


class LimitedWitnessCluster(LocalCluster):
    """A local cluster whose witness runs with only WITNESS_DESCRIPTORS file descriptors."""

    def start_witness(self) -> None:
        assert self.settings.witness is not None
        self._spawn("witness", ["witness", "--config", str(self.config), "--log-level", self.log_level],
                    preexec_fn=_low_descriptor_limit)


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _witness_metrics(address: str) -> str:
    return httpx.get(f"http://{address}/metrics", timeout=2.0).text


@pytest.fixture
def witness_only(tmp_path: Path) -> Iterator[LocalCluster]:
    """Only the witness of the sample cluster (its nodes are never started)."""
    cluster = LocalCluster(prepare_config(SAMPLE, tmp_path, always_open=True), tmp_path)
    try:
        cluster.start_witness()
        assert cluster.settings.witness is not None
        wait_for(lambda: _port_open(cluster.settings.witness.address), 15, what="the witness to listen")  # type: ignore[union-attr]
        yield cluster
    finally:
        cluster.close()


def test_an_idle_connection_flood_does_not_stop_a_failover(tmp_path: Path) -> None:
    cluster = LimitedWitnessCluster(prepare_config(SAMPLE, tmp_path, always_open=True), tmp_path)
    flood: subprocess.Popen[str] | None = None
    try:
        primary = cluster.start()
        standby = cluster.standby_of(primary)
        witness = cluster.settings.witness
        assert witness is not None
        targets = [witness.address, *(node.replication for node in cluster.settings.nodes)]
        # More idle connections to each port than the witness has descriptors, from the nodes'
        # own address and seven others.
        flood = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.flood", "--seconds", "30", "--connections", str(WITNESS_DESCRIPTORS + 150),
             "--sources", "8", *targets],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert flood.stdout is not None
        assert flood.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the flood in full swing: every port at its limit
        started = time.monotonic()
        cluster.kill(primary)
        assert cluster.wait_primary(10, other_than=primary) == standby
        seconds = time.monotonic() - started
        print(f"new primary {seconds:.2f} s after the kill, under an idle-connection flood")
        assert seconds < 3.0
        assert cluster.alive("witness")
        # The witness closed the idle connections (it did not just outlast them).
        metrics = _witness_metrics(witness.address)
        failed = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("acd_witness_handshakes_failed_total{"))
        assert failed > 0, metrics
        print([line for line in metrics.splitlines() if not line.startswith("#") and ("handshakes_failed" in line or "connections" in line)])
        # So did the new primary's replication port, and its metrics say so.
        node_metrics = httpx.get(cluster.api(standby) + "/metrics", timeout=5).text
        lines = [line for line in node_metrics.splitlines() if line.startswith(("acd_replication_handshakes_failed_total{", "acd_replication_connections "))]
        print(lines)
        assert any(line.startswith("acd_replication_handshakes_failed_total{") and float(line.split()[-1]) > 0 for line in lines), lines
    finally:
        if flood is not None:
            flood.send_signal(signal.SIGTERM)
            flood.wait(10)
            if flood.stdout is not None:
                flood.stdout.close()
        cluster.close()


def test_a_64_mib_frame_before_the_hello_does_not_grow_the_witness(witness_only: LocalCluster) -> None:
    witness = witness_only.settings.witness
    assert witness is not None
    pid = witness_only.processes["witness"].pid
    host, _, port = witness.address.rpartition(":")
    _witness_metrics(witness.address)  # the HTTP path once, so that it costs nothing later
    before = _memory_kib(pid)["VmRSS"]
    # Two frames claiming 64 MiB, and two claiming as much as a frame may hold after the Hello.
    claims = [64 * 2**20, 64 * 2**20, FRAME_BYTES_MAX, FRAME_BYTES_MAX]
    chunk = b"\x00" * 2**20
    sockets = [socket.create_connection((host, int(port)), timeout=5) for _ in claims]
    sent = [0] * len(sockets)
    try:
        for sock, claimed in zip(sockets, claims, strict=True):
            sock.sendall(struct.pack(">I", claimed))
        deadline = time.monotonic() + 60
        live = list(range(len(sockets)))
        while live and time.monotonic() < deadline:
            for index in list(live):
                try:
                    sockets[index].sendall(chunk)
                    sent[index] += len(chunk)
                except OSError:  # the witness closed it: the point of the test
                    live.remove(index)
                    continue
                if sent[index] >= claims[index]:
                    live.remove(index)
        time.sleep(0.5)  # let it take in whatever it was going to
    finally:
        for sock in sockets:
            sock.close()
    memory = _memory_kib(pid)
    grown_mib = (max(memory["VmHWM"], memory["VmRSS"]) - before) / 1024
    print(f"witness RSS before {before / 1024:.1f} MiB, peak after {memory['VmHWM'] / 1024:.1f} MiB: "
          f"grew {grown_mib:.1f} MiB; bytes sent per connection before it was closed: {sent}")
    assert grown_mib < 10
    assert witness_only.alive("witness")
    assert "acd_witness_up 1" in _witness_metrics(witness.address)


async def _ask(cluster: LocalCluster, node: str, message: Message, purpose: str = "witness") -> Message | None:
    """Send one message to the witness as `node`; its reply, or None if it closed the connection."""
    assert cluster.settings.witness is not None
    with trio.fail_after(10):
        stream = await TcpNetwork().connect(cluster.settings.witness.address)
        channel = Channel(stream, cluster=cluster.settings.cluster.name, secret=cluster.settings.secret())
        try:
            await handshake(channel, node=node, role="standby", purpose=purpose, initiator=True)
            await channel.send(message)
            return await channel.receive()
        except (trio.EndOfChannel, trio.BrokenResourceError):
            return None
        finally:
            await channel.aclose()


def test_the_witness_refuses_a_candidate_that_is_not_a_node_and_saves_nothing(witness_only: LocalCluster) -> None:
    state_file = witness_only.settings.resolve(witness_only.settings.witness.data_dir) / "witness.json"  # type: ignore[union-attr]

    def vote(candidate: str, epoch: int, peer_behind: str = "") -> VoteRequest:
        return VoteRequest(epoch=epoch, candidate=candidate, last_epoch=0, last_lsn=0, peer_behind=peer_behind)

    # The issue's reproduction: a stranger asks for an epoch that would block every later election.
    reply = trio.run(_ask, witness_only, "mallory", vote("mallory", 10**12))
    assert not (isinstance(reply, VoteReply) and reply.granted), reply
    # A stranger posing as the status client, and a node asking for a stranger, get nowhere either.
    reply = trio.run(_ask, witness_only, "status", vote("mallory", 10**12), "status")
    assert not (isinstance(reply, VoteReply) and reply.granted), reply
    reply = trio.run(_ask, witness_only, "a", vote("mallory", 10**12))
    assert not (isinstance(reply, VoteReply) and reply.granted), reply
    reply = trio.run(_ask, witness_only, "a", vote("a", 10**12, peer_behind="mallory"))
    assert isinstance(reply, VoteReply) and not reply.granted and reply.reason == "unknown_node", reply
    saved = json.loads(state_file.read_text()) if state_file.exists() else {}
    assert saved.get("promised_epoch", 0) == 0 and saved.get("leader", "") == "", saved
    # A configured node is still elected, and `acd status` still reads the witness.
    granted = trio.run(_ask, witness_only, "a", vote("a", 1))
    assert isinstance(granted, VoteReply) and granted.granted, granted
    assert json.loads(state_file.read_text())["leader"] == "a"
    status = trio.run(_ask, witness_only, "status", StatusRequest(), "status")
    assert status is not None and getattr(status, "leader", None) == "a"


# ---------------------------------------------------------------------- the gate, in process


async def _serve_witness(limits: PortLimits, nursery: trio.Nursery, nodes: list[str] | None = None) -> tuple[Witness, str]:
    """A witness on a free loopback port of this process, guarded by `limits`."""
    from acd.tools.launcher import free_port

    address = f"127.0.0.1:{free_port()}"
    witness = Witness(cluster="c", address=address, store=MemoryStateStore("c"), lease_seconds=1.0, secret=b"s",
                      network=TcpNetwork(limits=limits), nodes=nodes)
    await nursery.start(witness.run)
    return witness, address


async def _closed(stream: trio.abc.Stream) -> bool:
    try:
        return await stream.receive_some(100) == b""
    except trio.BrokenResourceError:
        return True


async def _vote_as(address: str, node: str, epoch: int) -> Message:
    stream = await TcpNetwork().connect(address)
    channel = Channel(stream, cluster="c", secret=b"s")
    await handshake(channel, node=node, role="standby", purpose="witness", initiator=True)
    await channel.send(VoteRequest(epoch=epoch, candidate=node, last_epoch=0, last_lsn=0))
    reply = await channel.receive()
    await channel.aclose()
    return reply


def test_a_connection_without_a_hello_is_closed_at_the_handshake_deadline_and_counted() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            witness, address = await _serve_witness(PortLimits(name="witness", handshake_seconds=0.3), nursery)
            gate = witness.network.gate  # type: ignore[attr-defined]
            host, _, port = address.rpartition(":")
            idle = await trio.open_tcp_stream(host, int(port))
            half = await trio.open_tcp_stream(host, int(port))
            await half.send_all(struct.pack(">I", 100) + b"x" * 10)  # a frame begun, never finished
            started = trio.current_time()
            with trio.fail_after(3):
                assert await _closed(idle) and await _closed(half)
            assert 0.25 < trio.current_time() - started < 1.5
            with trio.fail_after(3):  # counted once the witness has closed its side
                while gate.handshakes_failed["timeout"] < 2:
                    await trio.sleep(0.01)
            await idle.aclose()
            await half.aclose()
            # A peer that says Hello in time is served, and its connection outlives the deadline.
            stream = await TcpNetwork().connect(address)
            channel = Channel(stream, cluster="c", secret=b"s")
            await handshake(channel, node="a", role="standby", purpose="witness", initiator=True)
            await trio.sleep(0.5)
            await channel.send(VoteRequest(epoch=1, candidate="a", last_epoch=0, last_lsn=0))
            reply = await channel.receive()
            assert isinstance(reply, VoteReply) and reply.granted
            await channel.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_full_port_makes_room_for_a_newcomer_by_closing_the_oldest_connection_still_in_its_handshake() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            limits = PortLimits(name="witness", handshake_seconds=30, connections_max=8, connections_per_address_max=4)
            witness, address = await _serve_witness(limits, nursery)
            gate = witness.network.gate  # type: ignore[attr-defined]
            host, _, port = address.rpartition(":")
            # An authenticated peer first: never closed to make room.
            stream = await TcpNetwork().connect(address)
            peer = Channel(stream, cluster="c", secret=b"s")
            await handshake(peer, node="a", role="primary", purpose="witness", initiator=True)
            idle = [await trio.open_tcp_stream(host, int(port)) for _ in range(10)]
            with trio.fail_after(3):
                while gate.open > 4:  # one address: at most 4 at once
                    await trio.sleep(0.01)
                for stream in idle[:7]:  # the oldest went first
                    assert await _closed(stream)
            assert gate.evictions >= 7
            await peer.send(VoteRequest(epoch=1, candidate="a", last_epoch=0, last_lsn=0))
            assert isinstance(await peer.receive(), VoteReply)
            assert isinstance(await _vote_as(address, "b", 1), VoteReply)  # a newcomer still gets in
            for stream in idle:
                await stream.aclose()
            await peer.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_addresses_outside_the_allow_list_are_refused_at_accept() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            witness, address = await _serve_witness(PortLimits(name="witness", allow_from=("10.0.0.0/8",)), nursery)
            host, _, port = address.rpartition(":")
            stream = await trio.open_tcp_stream(host, int(port))
            with trio.fail_after(3):
                assert await _closed(stream)
            assert witness.network.gate.connections_refused["not_allowed"] == 1  # type: ignore[attr-defined]
            await stream.aclose()
            nursery.cancel_scope.cancel()
        gate = Gate(PortLimits(allow_from=("127.0.0.1", "2001:db8::/32")))
        assert gate.allowed("127.0.0.1") and gate.allowed("::ffff:127.0.0.1") and gate.allowed("2001:db8::5")
        assert not gate.allowed("127.0.0.2") and not gate.allowed("not an address")

    trio.run(main)


def test_before_the_hello_a_frame_may_not_exceed_a_few_kib_and_the_read_is_bounded() -> None:
    class Reads(trio.abc.Stream):
        def __init__(self, data: bytes) -> None:
            self.data = data
            self.largest_read = 0

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            assert max_bytes is not None
            self.largest_read = max(self.largest_read, max_bytes)
            chunk, self.data = self.data[:max_bytes], self.data[max_bytes:]
            return chunk

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            pass

        async def wait_send_all_might_not_block(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    stream = Reads(struct.pack(">I", 64 * 2**20) + b"\0" * 100_000)
    channel = Channel(stream, cluster="c", secret=b"s")
    with pytest.raises(FrameError, match="out of range"):
        trio.run(channel.receive)
    assert stream.largest_read <= 4 + PREAUTH_FRAME_BYTES_MAX
    channel.bind_nonces(b"m" * 16, b"t" * 16)
    assert channel.frame_limit == FRAME_BYTES_MAX


def test_a_large_snapshot_travels_in_parts_and_arrives_whole_between_other_messages() -> None:
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        sender = Channel(left, cluster="c", secret=b"s")
        receiver = Channel(right, cluster="c", secret=b"s")
        sender.bind_nonces(b"m" * 16, b"t" * 16)
        receiver.bind_nonces(b"t" * 16, b"m" * 16)
        snapshot = Snapshot.make(lsn=10, epoch=2, at=1.0, state=os.urandom(3 * SNAPSHOT_PART_BYTES + 12345))
        secrets = {"k1": (7, b"\x01" * 32)}
        history = {1: 1, 2: 6}
        frames: list[int] = []
        original = right.receive_some

        async def counting(max_bytes: int | None = None) -> bytes | bytearray:
            data = await original(max_bytes)
            frames.append(len(data))
            return data

        right.receive_some = counting  # type: ignore[method-assign]
        received: list[Message] = []

        async def receive_three() -> None:
            for _ in range(3):
                received.append(await receiver.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_three)
            await sender.send(Truncate(epoch=2, after_lsn=1))
            # Another task's message sent while the parts go out follows them, in sequence.
            async with trio.open_nursery() as senders:
                senders.start_soon(sender.send, InstallSnapshot(epoch=2, snapshot=snapshot, secrets=secrets, epoch_history=history))
                await trio.sleep(0)
                senders.start_soon(sender.send, Truncate(epoch=2, after_lsn=3))
        assert isinstance(received[0], Truncate) and received[0].after_lsn == 1
        assert isinstance(received[1], InstallSnapshot) and received[1].snapshot == snapshot
        # The rest of the message comes too: without the keys the standby could not read the
        # caller numbers of live calls after a failover.
        assert (received[1].secrets, received[1].epoch_history) == (secrets, history)
        assert isinstance(received[2], Truncate) and received[2].after_lsn == 3
        assert max(frames) <= FRAME_BYTES_MAX

    trio.run(main)


def test_a_silent_shipping_connection_is_given_up() -> None:
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        receiver = Channel(right, cluster="c", secret=b"s")
        receiver.idle_timeout = 5.0
        started = trio.current_time()
        with pytest.raises(PeerSilent):
            await receiver.receive()
        assert trio.current_time() - started == pytest.approx(5.0)
        await left.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_witness_core_refuses_every_message_naming_a_stranger() -> None:
    core = WitnessCore(WitnessState(cluster="c"), lease_seconds=1.0, now=0.0, nodes=["a", "b"])
    for message in (
        VoteRequest(epoch=10**12, candidate="mallory", last_epoch=0, last_lsn=0),
        VoteRequest(epoch=10**12, candidate="mallory", last_epoch=0, last_lsn=0, pre=True),
        VoteRequest(epoch=5, candidate="a", last_epoch=0, last_lsn=0, peer_behind="mallory"),
    ):
        reply, changed = core.handle(message, 0.0)
        assert isinstance(reply, VoteReply) and not reply.granted and reply.reason == "unknown_node" and not changed
    assert core.handle(VoteRequest(epoch=1, candidate="a", last_epoch=0, last_lsn=0, peer_behind="b"), 0.0)[0].granted  # type: ignore[union-attr]
    for other in (RecordBehind(epoch=1, primary="a", standby="mallory", lsn=1), ClearBehind(epoch=1, primary="mallory", standby="b"),
                  Release(epoch=1, node="mallory")):
        reply, changed = core.handle(other, 0.1)
        assert reply == Ack(ok=False, reason="unknown_node", epoch=1) and not changed
    assert core.state.promised_epoch == 1 and core.state.leader == "a" and core.state.behind == "b"


def test_over_tls_one_deadline_covers_the_tls_handshake_and_the_hello(tmp_path: Path) -> None:
    import ssl

    import trustme

    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    authority.configure_trust(client)
    stranger = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trustme.CA().configure_trust(stranger)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            from acd.tools.launcher import free_port

            address = f"127.0.0.1:{free_port()}"
            network = TcpNetwork(server, client, limits=PortLimits(name="witness", handshake_seconds=0.5))
            witness = Witness(cluster="c", address=address, store=MemoryStateStore("c"), lease_seconds=1.0, secret=b"s", network=network)
            await nursery.start(witness.run)
            host, _, port = address.rpartition(":")
            silent = await trio.open_tcp_stream(host, int(port))  # not even a TLS ClientHello
            tls_only = await TcpNetwork(None, client).connect(address)  # TLS, then no Hello
            started = trio.current_time()
            with trio.fail_after(3):
                assert await _closed(silent) and await _closed(tls_only)
            assert 0.4 < trio.current_time() - started < 2.0
            with trio.fail_after(3):  # counted once the witness has closed its side
                while network.gate.handshakes_failed["timeout"] < 2:
                    await trio.sleep(0.01)
            with pytest.raises(trio.BrokenResourceError):
                await TcpNetwork(None, stranger).connect(address)  # a certificate of another authority
            with trio.fail_after(3):
                while network.gate.handshakes_failed["tls"] < 1:
                    await trio.sleep(0.01)
            assert isinstance(await _vote_as_over(TcpNetwork(None, client), address), VoteReply)
            await silent.aclose()
            await tls_only.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _vote_as_over(network: TcpNetwork, address: str) -> Message:
    channel = Channel(await network.connect(address), cluster="c", secret=b"s")
    await handshake(channel, node="a", role="standby", purpose="witness", initiator=True)
    await channel.send(VoteRequest(epoch=1, candidate="a", last_epoch=0, last_lsn=0))
    reply = await channel.receive()
    await channel.aclose()
    return reply
