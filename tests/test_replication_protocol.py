"""Replication frames and the witness's rules: hostile input is refused, never crashes anything."""

from __future__ import annotations

import hashlib
import hmac
import struct

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.protocol import (
    Ack,
    Channel,
    ClearBehind,
    Envelope,
    FrameError,
    RecordBehind,
    Release,
    StatusRequest,
    VoteReply,
    VoteRequest,
    decode_frame,
    handshake,
)
from replication.witness import MemoryStateStore, Witness, WitnessCore, WitnessState

SECRET = b"cluster-secret"
KEY = b"n" * 32


def signed(body: bytes, secret: bytes = SECRET, key: bytes = KEY) -> bytes:
    return body + hmac.new(secret, key + body, hashlib.sha256).digest()


def envelope(message: object, cluster: str = "busan-120", sequence: int = 1) -> bytes:
    return msgspec.msgpack.encode(Envelope(cluster=cluster, sequence=sequence, message=message))  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_garbage_frames_raise_frame_error_and_nothing_else(body: bytes) -> None:
    for secret in (None, SECRET):
        with pytest.raises(FrameError):
            decode_frame(body, cluster="busan-120", secret=secret, key=KEY, expect=1)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=200))
def test_a_flipped_bit_anywhere_breaks_the_hmac(noise: bytes, position: int) -> None:
    frame = bytearray(signed(envelope(StatusRequest())))
    index = position % len(frame)
    frame[index] ^= noise[0] or 1
    with pytest.raises(FrameError):
        decode_frame(bytes(frame), cluster="busan-120", secret=SECRET, key=KEY, expect=1)


def test_a_valid_frame_decodes() -> None:
    message = decode_frame(signed(envelope(StatusRequest())), cluster="busan-120", secret=SECRET, key=KEY, expect=1)
    assert isinstance(message, StatusRequest)


def test_wrong_secret_other_cluster_replay_and_other_connection_are_refused() -> None:
    body = envelope(StatusRequest())
    with pytest.raises(FrameError, match="HMAC"):
        decode_frame(signed(body, secret=b"another"), cluster="busan-120", secret=SECRET, key=KEY, expect=1)
    with pytest.raises(FrameError, match="cluster"):
        decode_frame(signed(envelope(StatusRequest(), cluster="seoul-120")), cluster="busan-120", secret=SECRET, key=KEY, expect=1)
    # A captured frame replayed later on the same connection is out of sequence ...
    with pytest.raises(FrameError, match="sequence"):
        decode_frame(signed(body), cluster="busan-120", secret=SECRET, key=KEY, expect=2)
    # ... and on another connection its HMAC does not match that connection's nonces.
    with pytest.raises(FrameError, match="HMAC"):
        decode_frame(signed(body), cluster="busan-120", secret=SECRET, key=b"m" * 32, expect=1)


def vote(epoch: int, candidate: str, *, renew: bool = False, force: bool = False, peer_behind: str = "") -> VoteRequest:
    return VoteRequest(epoch=epoch, candidate=candidate, last_epoch=0, last_lsn=0, renew=renew, force=force, peer_behind=peer_behind)


def test_witness_grants_one_leader_per_epoch_and_holds_the_lease() -> None:
    core = WitnessCore(WitnessState(cluster="c"), lease_seconds=1.5, now=0.0)
    reply, changed = core.handle(vote(1, "a"), 0.0)
    assert isinstance(reply, VoteReply) and reply.granted and changed
    assert not core.handle(vote(1, "b"), 0.1)[0].granted  # type: ignore[union-attr]
    refused = core.handle(vote(2, "b"), 1.0)[0]
    assert isinstance(refused, VoteReply) and not refused.granted and refused.reason == "lease_held"
    assert core.handle(vote(1, "a", renew=True), 1.2)[0].granted  # type: ignore[union-attr]
    assert not core.handle(vote(2, "b"), 2.6)[0].granted  # type: ignore[union-attr]  # renewed at 1.2: held until 2.7
    granted = core.handle(vote(2, "b"), 2.8)[0]
    assert isinstance(granted, VoteReply) and granted.granted
    stale = core.handle(vote(1, "a", renew=True), 2.9)[0]
    assert isinstance(stale, VoteReply) and not stale.granted and stale.reason == "stale_epoch"


def test_witness_refuses_a_node_recorded_behind_until_cleared() -> None:
    core = WitnessCore(WitnessState(cluster="c"), lease_seconds=1.0, now=0.0)
    core.handle(vote(1, "a"), 0.0)
    assert core.handle(RecordBehind(epoch=1, primary="a", standby="b", lsn=10), 0.1)[0] == Ack(ok=True, epoch=1)
    refused = core.handle(vote(2, "b"), 5.0)[0]
    assert isinstance(refused, VoteReply) and refused.reason == "behind"
    assert core.handle(vote(1, "a", renew=True), 5.0)[0].granted  # type: ignore[union-attr]
    assert core.handle(ClearBehind(epoch=1, primary="a", standby="b"), 5.1)[0] == Ack(ok=True, epoch=1)
    assert core.handle(vote(2, "b"), 7.0)[0].granted  # type: ignore[union-attr]
    # Only the leader of the promised epoch, while its lease runs, may record or release.
    assert not core.handle(RecordBehind(epoch=1, primary="a", standby="b", lsn=1), 7.1)[0].ok  # type: ignore[union-attr]
    assert core.handle(Release(epoch=2, node="b"), 7.2)[0].ok  # type: ignore[union-attr]


def test_a_pre_vote_gets_the_election_answer_and_the_witness_records_nothing() -> None:
    core = WitnessCore(WitnessState(cluster="c"), lease_seconds=1.5, now=0.0)
    core.handle(vote(1, "a"), 0.0)
    before = msgspec.structs.asdict(core.state)
    held = core.handle(msgspec.structs.replace(vote(2, "b"), pre=True), 0.5)
    assert isinstance(held[0], VoteReply) and held[0].reason == "lease_held" and not held[1]
    would = core.handle(msgspec.structs.replace(vote(2, "b"), pre=True), 2.0)
    assert isinstance(would[0], VoteReply) and would[0].granted and not would[1]
    assert msgspec.structs.asdict(core.state) == before  # epoch 1, leader a: unchanged
    assert core.handle(vote(1, "a", renew=True), 2.1)[0].granted  # type: ignore[union-attr]  # a is still the leader


def test_a_restarted_witness_honours_the_lease_it_may_have_granted() -> None:
    store = MemoryStateStore("c")
    core = WitnessCore(store.load(), lease_seconds=1.5, now=0.0)
    core.handle(vote(1, "a"), 0.0)
    store.save(core.state)
    restarted = WitnessCore(store.load(), lease_seconds=1.5, now=10.0)
    assert not restarted.handle(vote(2, "b"), 11.0)[0].granted  # type: ignore[union-attr]
    assert restarted.handle(vote(2, "b"), 11.6)[0].granted  # type: ignore[union-attr]


def test_witness_closes_a_connection_that_sends_garbage_and_keeps_serving() -> None:
    async def garbage_then_good() -> None:
        class Network:
            def __init__(self) -> None:
                self.handler = None

            async def serve(self, address, handler, *, task_status=trio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
                self.handler = handler
                task_status.started()
                await trio.sleep_forever()

        network = Network()
        witness = Witness(cluster="c", address="x:1", store=MemoryStateStore("c"), lease_seconds=1.0, secret=SECRET, network=network)
        async with trio.open_nursery() as nursery:
            await nursery.start(witness.run)
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(network.handler, server)  # type: ignore[misc]
            await client.send_all(struct.pack(">I", 12) + b"not a frame!")
            assert await client.receive_some(100) == b""  # closed
            assert witness.frames_refused == 1
            good_client, good_server = trio.testing.memory_stream_pair()
            nursery.start_soon(network.handler, good_server)  # type: ignore[misc]
            channel = Channel(good_client, cluster="c", secret=SECRET)
            await handshake(channel, node="a", role="standby", purpose="witness", initiator=True)
            await channel.send(vote(1, "a"))
            reply = await channel.receive()
            assert isinstance(reply, VoteReply) and reply.granted
            nursery.cancel_scope.cancel()

    trio.run(garbage_then_good)


class _Reads(trio.abc.Stream):
    """A stream that hands out given chunks, one per read, then end-of-stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise AssertionError("not used")

    async def wait_send_all_might_not_block(self) -> None:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6), st.lists(st.integers(min_value=1, max_value=300), max_size=12))
def test_frames_split_or_joined_across_reads_arrive_whole_and_in_order(epochs: list[int], cuts: list[int]) -> None:
    # A read may hold part of a frame, exactly one frame (the fast path), or several.
    sender = Channel(_Reads([]), cluster="busan-120", secret=SECRET)
    sender.bind_nonces(b"m" * 16, b"t" * 16)
    messages = [Release(epoch=epoch, node="a" * (epoch % 7)) for epoch in epochs]
    data = b"".join(sender.encode(message) for message in messages)
    chunks: list[bytes] = []
    at = 0
    for cut in cuts:
        if at >= len(data):
            break
        chunks.append(data[at:at + cut])
        at += cut
    if at < len(data):
        chunks.append(data[at:])
    if len(cuts) % 2:  # then the same messages again, each frame in a read of its own
        chunks += [sender.encode(message) for message in messages]
    receiver = Channel(_Reads(chunks), cluster="busan-120", secret=SECRET)
    receiver.bind_nonces(b"t" * 16, b"m" * 16)
    expected = messages + messages if len(cuts) % 2 else messages

    async def main() -> list[object]:
        received = [await receiver.receive() for _ in expected]
        with pytest.raises(trio.EndOfChannel):
            await receiver.receive()
        return received

    assert trio.run(main) == expected
