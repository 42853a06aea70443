"""Server-Sent Events framing for the event streams (`/v1/events`, `/v1/agents/{id}/events`).

Each core event is one SSE event whose `id:` is the LSN of the command that produced it:

    id: 42
    event: call.offered
    data: {"type":"call.offered","at":1763900000.5,"call":"c-1","agent":"kim",...}

One command may produce several events, all with the same LSN. A reader resumes with
`Last-Event-ID: 42` (or `?after=42`) and gets everything after LSN 42, so the stream only
ever hands out *whole* LSN groups: a group is written in one piece and `last_lsn` moves only
past complete groups. Stream messages that are not center events (`stream.reset`,
`stream.behind`, `stream.closed`) use the same framing with the LSN to resume from.
"""

from __future__ import annotations

import msgspec

from acd.node.broker import Control, Published

_encoder = msgspec.json.Encoder()

RETRY_MILLISECONDS = 1000


def preamble(after: int) -> bytes:
    """The first bytes of a stream: the reconnect delay and a comment naming the start."""
    return f"retry: {RETRY_MILLISECONDS}\n: stream after {after}\n\n".encode()


def heartbeat() -> bytes:
    return b": heartbeat\n\n"


def frame_event(item: Published) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (item.lsn, item.event.__struct_config__.tag.encode(), _encoder.encode(item.event))  # type: ignore[union-attr]


def frame_control(control: Control, lsn: int) -> bytes:
    data = _encoder.encode({"type": control.kind, "lsn": lsn, "message": control.message})
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (lsn, control.kind.encode(), data)


class Framer:
    """Turns what a subscription delivers into bytes, a whole LSN group at a time.

    `feed(items)` takes everything the subscription held at one moment. The broker publishes
    all events of one LSN in one synchronous call, so when the channel is drained every group
    in hand is complete, except possibly the one cut short by a `stream.behind` or
    `stream.closed`: that group is dropped (the reader gets it again when it resumes).
    """

    def __init__(self, after: int) -> None:
        self.last_lsn = after
        self.ended = False

    def feed(self, items: list[Published | Control]) -> bytes:
        out: list[bytes] = []
        group: list[bytes] = []
        group_lsn = -1
        for item in items:
            if isinstance(item, Published):
                if item.lsn != group_lsn:
                    self._flush(out, group, group_lsn)
                    group, group_lsn = [], item.lsn
                group.append(frame_event(item))
                continue
            if item.kind == "stream.reset":
                # Events up to item.lsn are gone from the buffer; the reader reloads its state
                # by GET and carries on from here (the subscription stays open).
                self._flush(out, group, group_lsn)
                group, group_lsn = [], -1
                self.last_lsn = item.lsn
                out.append(frame_control(item, item.lsn))
                continue
            # The stream ends here; a group cut short by the cut-off is not sent.
            out.append(frame_control(item, self.last_lsn))
            self.ended = True
            return b"".join(out)
        self._flush(out, group, group_lsn)
        return b"".join(out)

    def _flush(self, out: list[bytes], group: list[bytes], lsn: int) -> None:
        if group:
            out.extend(group)
            self.last_lsn = lsn
