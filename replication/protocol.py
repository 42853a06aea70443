"""Messages between nodes and the witness, and how they travel (framing, HMAC, nonces).

Frame: a 4-byte big-endian length, then the body: msgpack of `Envelope` (the message, the
sender's cluster name, a per-connection sequence number) followed, when the cluster has a
secret, by a 32-byte HMAC-SHA256 over the body prefixed with the connection's two nonces.
Each side sends a fresh random nonce in its `Hello` when the connection opens; a frame is
valid only on the connection whose nonces it was signed with and only in sequence, so a
captured frame cannot be replayed on another connection or twice on the same one.

Anything that does not decode, is too large, is signed wrongly, is out of sequence or comes
from another cluster raises `FrameError`; the receiver logs the reason and closes the
connection.

Until the peer's `Hello` is verified a connection accepts frames of at most
`PREAUTH_FRAME_BYTES_MAX` bytes (a Hello is a few dozen), and reads no more than that at a
time: an unauthenticated peer cannot make the receiver buffer more. After it, frames of up to
`FRAME_BYTES_MAX`. A snapshot larger than `SNAPSHOT_PART_BYTES` travels as a series of
`SnapshotPart` frames, which the receiving `Channel` puts back together: `receive()` returns
the whole `InstallSnapshot`, so neither side's code sees the parts.

On a listening side (`network.TcpNetwork.serve`) the connection's task carries an
`Admission` (`admission` context variable): the handshake tells it when the Hello is
verified (which lifts the handshake deadline) or why it failed.

Protocol versions: each `Hello` lists the wire protocol versions its sender speaks
(`acd.versions.PROTOCOL_VERSIONS`) and names its release. Both sides then use the highest
version they have in common (`Channel.protocol`). A Hello from a binary that predates the list
carries none and is read as speaking version 1 (msgspec fills the field's default; an older
binary ignores the fields it does not know). Without a common version the connection is
refused (`VersionMismatch`): the listening side still sends its Hello, so the connecting side
learns why too, and each side logs both sides' versions; the listening side counts it among
its failed handshakes (reason `protocol_version`).
"""

from __future__ import annotations

import hmac
import logging
import os
import struct
from contextvars import ContextVar
from typing import Any, Protocol

import msgspec
import trio

from acd.locks import QuickLock
from acd.store import Record, Snapshot
from acd.versions import (
    LEGACY_PROTOCOL_VERSIONS,
    PROTOCOL_VERSIONS,
    RELEASE,
    describe,
    highest_common,
)

# After the handshake. The largest ordinary frame is an `Append` of 256 records of at most
# a request body each (64 KiB by default); snapshots travel in parts (SNAPSHOT_PART_BYTES).
FRAME_BYTES_MAX = 32 * 2**20
PREAUTH_FRAME_BYTES_MAX = 4096      # until the peer's Hello is verified
SNAPSHOT_PART_BYTES = 2**20         # a snapshot larger than this is sent in parts of this size
SNAPSHOT_BYTES_MAX = 64 * 2**30     # a snapshot put back together from parts, at most
MAC_BYTES = 32
_LENGTH = struct.Struct(">I")  # each frame: its body's length, then the body


log = logging.getLogger("acd.replication")


class FrameError(Exception):
    """A frame that must not be processed; the connection is closed."""


class HandshakeError(FrameError):
    """The peer's Hello did not arrive, decode or verify; the connection is closed."""


class VersionMismatch(HandshakeError):
    """The two sides of a connection speak no wire protocol version in common."""


class PeerSilent(trio.EndOfChannel):
    """An authenticated peer sent nothing for the channel's `idle_timeout`: taken as gone."""


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class Hello(Message, tag="hello", frozen=True):
    """First frame on every connection, both ways: who I am, my nonce, what I speak."""

    node: str
    role: str
    nonce: bytes
    purpose: str = ""     # "ship" (primary to standby), "vote", "witness", "status"
    # The wire protocol versions the sender speaks; absent (an older binary): version 1.
    protocols: tuple[int, ...] = LEGACY_PROTOCOL_VERSIONS
    release: str = ""     # the sender's release (acd.versions.RELEASE); "" from an older binary


class VoteRequest(Message, tag="vote", frozen=True):
    """A candidate asks for the lease of `epoch`; a primary renews it (renew=True)."""

    epoch: int
    candidate: str
    last_epoch: int
    last_lsn: int
    renew: bool = False
    force: bool = False
    peer_behind: str = ""   # sync mode: on grant, record this peer as behind (it must catch up)
    pre: bool = False       # a pre-vote: would you grant `epoch`? Nothing is recorded either way


class VoteReply(Message, tag="vote_reply", frozen=True):
    epoch: int
    granted: bool
    reason: str = ""
    lease_seconds: float = 0.0
    promised_epoch: int = 0
    leader: str = ""


class RecordBehind(Message, tag="record_behind", frozen=True):
    """Sync mode: the primary goes on alone; the witness records the standby as behind."""

    epoch: int
    primary: str
    standby: str
    lsn: int
    # Orders the primary's behind requests within its epoch (`core.BehindRecord.next_sequence`):
    # the witness applies one only if (epoch, sequence) is not older than the last it applied,
    # so a request the primary gave up on cannot undo a later one. 0: an older primary (unordered).
    sequence: int = 0


class ClearBehind(Message, tag="clear_behind", frozen=True):
    """The standby caught up: it may be promoted again."""

    epoch: int
    primary: str
    standby: str
    sequence: int = 0       # as in RecordBehind


class Release(Message, tag="release", frozen=True):
    """Switchover: the primary gives up its lease early so the standby may be elected now."""

    epoch: int
    node: str


class Ack(Message, tag="ack", frozen=True):
    ok: bool
    reason: str = ""
    epoch: int = 0


class StatusRequest(Message, tag="status", frozen=True):
    pass


class WitnessStatus(Message, tag="witness_status", frozen=True):
    cluster: str
    promised_epoch: int
    leader: str
    lease_remaining: float
    behind: str
    behind_since_epoch: int


class Sync(Message, tag="sync", frozen=True):
    """Standby to primary after Hello: where my log ends and how it got there."""

    last_lsn: int
    last_epoch: int
    epoch: int
    epoch_history: dict[int, int]
    snapshot_lsn: int


class Truncate(Message, tag="truncate", frozen=True):
    """Primary to standby: drop records after `after_lsn` (a tail never acknowledged)."""

    epoch: int
    after_lsn: int


class Append(Message, tag="append", frozen=True):
    """Primary to standby: records (possibly none: a heartbeat that also renews the lease)."""

    epoch: int
    records: list[Record]
    commit_lsn: int
    lease: bool = True
    sync: bool = True       # the primary waits for this standby's acknowledgements
    # The epoch of the record just before records[0] in the primary's log (-1: not checked).
    # A standby whose own record there has another epoch holds a divergent tail: it refuses
    # ("diverged") and the primary reconciles (Raft's consistency check on prevLogTerm).
    prev_epoch: int = -1


class AppendReply(Message, tag="append_reply", frozen=True):
    epoch: int
    ok: bool
    last_lsn: int
    lease_granted: bool = False
    reason: str = ""
    # The standby's state hashes (LSN, hex SHA-256) computed since its last reply, for the
    # divergence alarm (`replication.core.StateCheck`); an older standby sends none.
    state_hashes: list[tuple[int, str]] = []


class InstallSnapshot(Message, tag="snapshot", frozen=True):
    epoch: int
    snapshot: Snapshot
    # The keys that seal caller numbers of live interactions: {key id: (LSN, key)}.
    secrets: dict[str, tuple[int, bytes]] = {}
    # The primary's epoch history ({epoch: first LSN}); the standby keeps what reaches up to
    # the snapshot's LSN: which epoch wrote the LSNs the snapshot covers. The standby's own history says nothing of them once
    # its log is replaced, and a wrong one would let a later divergence check keep a
    # divergent tail. Empty from a release before it (the standby keeps its own then).
    epoch_history: dict[int, int] = {}


class SnapshotPart(Message, tag="snapshot_part", frozen=True):
    """One piece of a large `InstallSnapshot`: the msgpack encoding of its snapshot, cut in
    order; the piece with `last` completes it and carries the rest of the message, its
    secrets and epoch history (see `Channel.send`)."""

    epoch: int
    data: bytes
    last: bool = False
    secrets: dict[str, tuple[int, bytes]] = {}
    epoch_history: dict[int, int] = {}


class Handover(Message, tag="handover", frozen=True):
    """Switchover: the primary stopped writing at `lsn`; the standby should stand for election."""

    epoch: int
    lsn: int


AnyMessage = (
    Hello | VoteRequest | VoteReply | RecordBehind | ClearBehind | Release | Ack | StatusRequest
    | WitnessStatus | Sync | Truncate | Append | AppendReply | InstallSnapshot | SnapshotPart | Handover
)


class Envelope(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    cluster: str
    sequence: int
    message: AnyMessage


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


class Admission(Protocol):
    """The listening side's watch over one accepted connection (see `network.TcpNetwork`)."""

    peer: str  # the peer's address, for log lines

    def authenticated(self, channel: Channel, hello: Hello) -> None:
        """The peer's Hello is verified: lift the handshake deadline, count it as a peer."""

    def refused(self, reason: str, kind: str = "bad_hello") -> None:
        """The handshake failed for `reason` (logged and counted under `kind`; the caller
        closes the connection)."""


# Set by the listening side for each accepted connection's task; None on connections this
# process opens and in the simulator.
admission: ContextVar[Admission | None] = ContextVar("replication_admission", default=None)


def new_nonce() -> bytes:
    return os.urandom(16)


class Channel:
    """One framed, authenticated connection over any Trio stream."""

    def __init__(self, stream: trio.abc.Stream, *, cluster: str, secret: bytes | None) -> None:
        self.stream = stream
        self.cluster = cluster
        self.secret = secret
        self._buffer = bytearray()
        self._send_sequence = 0
        self._receive_sequence = 0
        self._send_key = b""
        self._receive_key = b""
        self._send_lock = QuickLock()
        self.peer: Hello | None = None
        # The wire protocol version both sides speak, agreed in the handshake; 0 until then.
        self.protocol = 0
        self.frame_limit = PREAUTH_FRAME_BYTES_MAX  # raised once the nonces are bound
        # Seconds an authenticated peer may stay silent before `receive` gives up on it
        # (PeerSilent); None: no limit. Set on shipping connections, which carry heartbeats.
        self.idle_timeout: float | None = None
        self._parts: bytearray | None = None  # a snapshot arriving in parts

    def feed(self, data: bytes) -> None:
        """Bytes already read from the stream (e.g. while sniffing the protocol)."""
        self._buffer += data

    def bind_nonces(self, mine: bytes, theirs: bytes) -> None:
        """After the Hello exchange: frames are signed with both nonces, in each direction."""
        self._send_key = mine + theirs
        self._receive_key = theirs + mine
        self.frame_limit = FRAME_BYTES_MAX

    def encode(self, message: Message, sequence: int | None = None) -> bytes:
        if sequence is None:
            self._send_sequence += 1
            sequence = self._send_sequence
        body = _encoder.encode(Envelope(cluster=self.cluster, sequence=sequence, message=message))  # type: ignore[arg-type]
        if self.secret is not None:
            body += hmac.digest(self.secret, self._send_key + body, "sha256")  # one-shot: no HMAC object
        if len(body) > FRAME_BYTES_MAX:
            raise FrameError(f"frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX}")
        return _LENGTH.pack(len(body)) + body

    def decode(self, body: bytes) -> Message:
        return decode_frame(body, cluster=self.cluster, secret=self.secret, key=self._receive_key, expect=self._next_sequence())

    def _next_sequence(self) -> int:
        self._receive_sequence += 1
        return self._receive_sequence

    async def send(self, message: Message) -> None:
        if isinstance(message, InstallSnapshot):
            encoded = msgspec.msgpack.encode(message.snapshot)
            if len(encoded) > SNAPSHOT_PART_BYTES:
                await self._send_parts(message, encoded)
                return
        data = self.encode(message)
        async with self._send_lock:
            await self.stream.send_all(data)

    async def _send_parts(self, message: InstallSnapshot, encoded: bytes) -> None:
        view = memoryview(encoded)
        starts = range(0, len(view), SNAPSHOT_PART_BYTES)
        # The parts' sequence numbers are taken now, as one frame's would be: a message sent
        # meanwhile by another task waits for the lock and follows the last part.
        first = self._send_sequence + 1
        self._send_sequence += len(starts)
        async with self._send_lock:  # the parts go out back to back, nothing in between
            for index, start in enumerate(starts):
                end = start + SNAPSHOT_PART_BYTES
                last = end >= len(view)
                part = SnapshotPart(epoch=message.epoch, data=bytes(view[start:end]), last=last,
                                    secrets=message.secrets if last else {},
                                    epoch_history=message.epoch_history if last else {})
                await self.stream.send_all(self.encode(part, first + index))

    async def receive(self) -> Message:
        """The next message; a snapshot sent in parts comes back whole, as `InstallSnapshot`."""
        while True:
            message = await self._receive_frame()
            if not isinstance(message, SnapshotPart):
                if self._parts is not None:
                    raise FrameError(f"{type(message).__name__} in the middle of a snapshot's parts")
                return message
            parts = self._parts if self._parts is not None else bytearray()
            if len(parts) + len(message.data) > SNAPSHOT_BYTES_MAX:
                raise FrameError(f"snapshot larger than {SNAPSHOT_BYTES_MAX} bytes")
            parts += message.data
            self._parts = parts
            if message.last:
                self._parts = None
                try:
                    snapshot = _snapshot_decoder.decode(parts)
                except (msgspec.DecodeError, msgspec.ValidationError) as error:
                    raise FrameError(f"snapshot parts do not decode: {error}") from None
                return InstallSnapshot(epoch=message.epoch, snapshot=snapshot, secrets=message.secrets,
                                       epoch_history=message.epoch_history)

    async def _receive_frame(self) -> Message:
        buffer = self._buffer
        while True:
            limit = self.frame_limit
            if len(buffer) >= 4:
                (length,) = _LENGTH.unpack_from(buffer)
                if length > limit or length == 0:
                    raise FrameError(f"frame length {length} out of range (at most {limit} here)")
                if len(buffer) >= 4 + length:
                    body = bytes(buffer[4 : 4 + length])
                    del buffer[: 4 + length]
                    return self.decode(body)
            # Before the Hello is verified, read no more than one largest allowed frame.
            size = 65536 if limit > PREAUTH_FRAME_BYTES_MAX else 4 + limit
            chunk: bytes | bytearray | None = None
            if self.idle_timeout is None:
                chunk = await self.stream.receive_some(size)
            else:
                with trio.move_on_after(self.idle_timeout):
                    chunk = await self.stream.receive_some(size)
                if chunk is None:
                    log.info("closing a connection silent for %.1f s peer=%s", self.idle_timeout, self.peer.node if self.peer else "-")
                    raise PeerSilent
            if not chunk:
                raise trio.EndOfChannel
            if not buffer and len(chunk) > 4 and 0 < _LENGTH.unpack_from(chunk)[0] == len(chunk) - 4 <= limit:
                return self.decode(bytes(chunk[4:]))  # the usual case: one whole frame in one read
            buffer += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


def decode_frame(body: bytes, *, cluster: str, secret: bytes | None, key: bytes, expect: int) -> Message:
    """Check and decode one frame body (without its length prefix). Pure, for fuzzing."""
    if secret is not None:
        if len(body) < MAC_BYTES:
            raise FrameError("frame shorter than its HMAC")
        body, mac = body[:-MAC_BYTES], body[-MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.digest(secret, key + body, "sha256")):
            raise FrameError("wrong HMAC (another cluster's secret, a replayed or altered frame)")
    try:
        envelope = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:  # msgpack str that is not UTF-8
        raise FrameError(f"frame does not decode: {error}") from None
    if envelope.cluster != cluster:
        raise FrameError(f"frame from cluster {envelope.cluster!r}, this is {cluster!r}")
    if envelope.sequence != expect:
        raise FrameError(f"frame out of sequence (got {envelope.sequence}, expected {expect}): replayed or lost")
    message: Any = envelope.message
    return message  # type: ignore[no-any-return]


# When a connecting side last logged a refusal for want of a common version, by peer and
# versions: a peer retried every few hundred milliseconds is named once a minute.
_MISMATCH_LOG_SECONDS = 60.0
_mismatch_logged: dict[tuple[str, tuple[int, ...], tuple[int, ...]], float] = {}


def _mismatch_reason(node: str, mine: tuple[int, ...], theirs: Hello) -> str:
    return (f"no common protocol version: peer {theirs.node!r} (release {theirs.release or 'unknown'}) speaks "
            f"{describe(theirs.protocols)}, {node!r} (release {RELEASE}) speaks {describe(mine)}")


def _log_mismatch(reason: str, key: tuple[str, tuple[int, ...], tuple[int, ...]]) -> None:
    now = trio.current_time()
    last = _mismatch_logged.get(key)
    if last is not None and 0 <= now - last < _MISMATCH_LOG_SECONDS:
        return
    if len(_mismatch_logged) > 1024:
        _mismatch_logged.clear()
    _mismatch_logged[key] = now
    log.warning("connection refused: %s; upgrade one side to a release that speaks a version of the other", reason)


async def handshake(channel: Channel, *, node: str, role: str, purpose: str, initiator: bool,
                    protocols: tuple[int, ...] = PROTOCOL_VERSIONS) -> Hello:
    """Exchange Hello frames (unsigned by nonce yet, but signed by the secret), agree on the
    protocol version (`channel.protocol`) and bind nonces.

    `protocols` are the wire protocol versions this side speaks. Without a version in common
    with the peer's, raises `VersionMismatch` naming both sides' versions.
    On the listening side, a failure raises `HandshakeError` naming the peer's address, and the
    connection's `Admission` hears of the outcome either way.
    """
    watch = None if initiator else admission.get()
    mine = new_nonce()
    hello = Hello(node=node, role=role, nonce=mine, purpose=purpose, protocols=tuple(protocols), release=RELEASE)
    kind = "bad_hello"
    try:
        if initiator:
            await channel.send(hello)
            theirs = await channel.receive()
        else:
            theirs = await channel.receive()
        if not isinstance(theirs, Hello) or len(theirs.nonce) != 16:
            raise FrameError("expected a Hello frame first")
        agreed = highest_common(hello.protocols, theirs.protocols)
        if agreed is None:
            kind = "protocol_version"
            reason = _mismatch_reason(node, hello.protocols, theirs)
            if not initiator:
                # The peer proved the cluster's secret; tell it what this side speaks, so that
                # it can name the reason too, then close.
                with trio.move_on_after(1.0):
                    try:
                        await channel.send(hello)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
            if watch is None:
                _log_mismatch(reason, (theirs.node, hello.protocols, theirs.protocols))
            raise VersionMismatch(reason)
    except FrameError as error:
        if watch is None:
            raise
        reason = str(error)
        watch.refused(reason, kind)
        failure = VersionMismatch if isinstance(error, VersionMismatch) else HandshakeError
        raise failure(f"handshake failed: {reason} peer={watch.peer}") from None
    if not initiator:
        await channel.send(hello)  # signed before the nonces are bound, as the peer's was
    channel.bind_nonces(mine, theirs.nonce)
    channel.peer = theirs
    channel.protocol = agreed
    if watch is not None:
        watch.authenticated(channel, theirs)
    return theirs
