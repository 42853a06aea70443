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

from acd.launcher import LocalCluster, prepare_config, wait_for
from replication.network import TcpNetwork
from replication.protocol import Channel, Message, StatusRequest, VoteReply, VoteRequest, handshake

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "busan-120.toml"
WITNESS_DESCRIPTORS = 256


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (WITNESS_DESCRIPTORS, WITNESS_DESCRIPTORS))


class LimitedWitnessCluster(LocalCluster):
    """A local cluster whose witness runs with only WITNESS_DESCRIPTORS file descriptors."""

    def start_witness(self) -> None:
        assert self.settings.witness is not None
        log = open(self.logs / "witness.log", "ab")  # noqa: SIM115 - the child keeps it
        self.processes["witness"] = subprocess.Popen(
            [self.python, "-m", "acd", "witness", "--config", str(self.config), "--log-level", self.log_level],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True, preexec_fn=_low_descriptor_limit,
        )
        log.close()


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
        # More idle connections to each port than the witness has descriptors.
        flood = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.flood", "--seconds", "30", "--connections", str(WITNESS_DESCRIPTORS + 150), *targets],
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
        print([line for line in metrics.splitlines() if "handshakes_failed" in line or "connections" in line and not line.startswith("#")])
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
    claimed = 64 * 2**20
    chunk = b"\x00" * 2**20
    sockets = [socket.create_connection((host, int(port)), timeout=5) for _ in range(4)]
    sent = [0] * len(sockets)
    try:
        for sock in sockets:
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
                if sent[index] >= claimed:
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

    # The reproduction: a stranger asks for an epoch that would block every later election.
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
