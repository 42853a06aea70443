"""The event broker: fans the pipeline's events out to event-stream readers.

The pipeline publishes each committed command's events with its LSN. Readers subscribe from an
LSN; the broker replays what it still holds after that LSN, then streams live events. It keeps
the newest `buffer_events` events in memory (on start-up the node refills it while replaying
the log tail), so a reader that resumes with `Last-Event-ID` after a restart or a failover
misses nothing as long as its LSN is still in the buffer; otherwise it gets a `stream.reset`
event and must reload the state by GET.

Slow readers never slow the pipeline: each subscriber has a bounded queue, and a reader that
falls behind by more than it can hold is cut off with a `stream.behind` event naming the last
LSN it received, from which it may resume.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from acd.core.events import Event, event_agents


@dataclass(frozen=True, slots=True)
class Published:
    lsn: int
    event: Event


@dataclass(frozen=True, slots=True)
class Control:
    """A message of the stream itself, not of the center: reset, behind, shutdown."""

    kind: str
    lsn: int
    message: str


@dataclass(eq=False, slots=True)
class Subscription:
    agent: str | None
    send: trio.MemorySendChannel[Published | Control]
    receive: trio.MemoryReceiveChannel[Published | Control]
    last_lsn: int = 0
    closed: bool = False


@dataclass(slots=True)
class BrokerStatistics:
    subscribers: int
    buffered: int
    oldest_lsn: int
    newest_lsn: int
    cut_off: int


@dataclass(slots=True)
class Broker:
    buffer_events: int = 10_000
    queue_events: int = 2_000
    _buffer: collections.deque[Published] = field(default_factory=collections.deque)
    _everything: dict[Subscription, None] = field(default_factory=dict)   # readers of all events
    _by_agent: dict[str, dict[Subscription, None]] = field(default_factory=dict)
    _newest_lsn: int = 0
    _floor_lsn: int = 0   # events at or below this LSN may be missing from the buffer
    _cut_off: int = 0

    def reset(self, lsn: int) -> None:
        """Forget everything: the next events start after `lsn` (e.g. after a snapshot install).

        Open streams are ended first with `stream.behind` at what each fully received: the log
        is being rebuilt from `lsn` (a standby's truncated tail or installed snapshot), and
        the replay that refills the buffer must not reach them as new events, nor may events
        of a tail now gone stand for the records that replace it. Each resumes from its last
        id: the refilled buffer after it, or `stream.reset` if it saw events past the new end.
        """
        for subscription in self._readers():
            self._close(subscription, Control("stream.behind", subscription.last_lsn,
                                              "this node's log was rebuilt; resume from this LSN"))
        self._buffer.clear()
        self._newest_lsn = lsn
        self._floor_lsn = lsn

    def publish(self, lsn: int, events: Iterable[Event]) -> None:
        # Each event goes to the readers of everything and to the readers of the agents it
        # concerns, looked up by name: a center with hundreds of agent desks open costs the
        # pipeline per event what its readers receive, not one check per reader.
        everything, by_agent = self._everything, self._by_agent
        for event in events:
            item = Published(lsn, event)
            self._buffer.append(item)
            if everything:
                for subscription in list(everything):
                    self._deliver(subscription, item)
            if by_agent:
                for agent in event_agents(event):
                    readers = by_agent.get(agent)
                    if readers:
                        for subscription in list(readers):
                            self._deliver(subscription, item)
        while len(self._buffer) > self.buffer_events:
            dropped = self._buffer.popleft()
            self._floor_lsn = max(self._floor_lsn, dropped.lsn)
        self._newest_lsn = max(self._newest_lsn, lsn)

    def _deliver(self, subscription: Subscription, item: Published | Control) -> None:
        if subscription.closed:
            return
        try:
            if subscription.send.statistics().current_buffer_used >= self.queue_events:
                raise trio.WouldBlock
            subscription.send.send_nowait(item)
        except trio.WouldBlock:
            # The reader fell behind: cut it off rather than buffer without bound or block
            # the pipeline. It resumes from the last LSN it fully received.
            self._cut_off += 1
            self._close(subscription, Control("stream.behind", subscription.last_lsn, "reader fell behind; resume from this LSN"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._close(subscription, None)

    def _add(self, subscription: Subscription) -> None:
        if subscription.agent is None:
            self._everything[subscription] = None
        else:
            self._by_agent.setdefault(subscription.agent, {})[subscription] = None

    def _remove(self, subscription: Subscription) -> None:
        if subscription.agent is None:
            self._everything.pop(subscription, None)
            return
        readers = self._by_agent.get(subscription.agent)
        if readers is not None:
            readers.pop(subscription, None)
            if not readers:
                del self._by_agent[subscription.agent]

    def _readers(self) -> list[Subscription]:
        return [*self._everything, *(reader for readers in self._by_agent.values() for reader in readers)]

    def _reader_count(self) -> int:
        return len(self._everything) + sum(len(readers) for readers in self._by_agent.values())

    def _close(self, subscription: Subscription, final: Control | None) -> None:
        subscription.closed = True
        self._remove(subscription)
        if final is not None:
            # One slot is always kept free for the final message (see subscribe()).
            try:
                subscription.send.send_nowait(final)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        subscription.send.close()

    def subscribe(self, after: int, agent: str | None = None) -> Subscription:
        send, receive = trio.open_memory_channel[Published | Control](self.queue_events + 1)
        subscription = Subscription(agent=agent, send=send, receive=receive, last_lsn=after)
        if after < self._floor_lsn:
            send.send_nowait(Control("stream.reset", self._floor_lsn, "events after this LSN are no longer held; reload state and resume from here"))
            after = self._floor_lsn
        backlog = [item for item in self._buffer if item.lsn > after and (agent is None or agent in event_agents(item.event))]
        if len(backlog) > self.queue_events:
            send.send_nowait(Control("stream.behind", after, "too many events to replay at once; resume from this LSN"))
            send.close()
            return subscription
        for item in backlog:
            send.send_nowait(item)
        self._add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._remove(subscription)
        subscription.closed = True
        subscription.send.close()

    def close_all(self, message: str = "node shutting down") -> None:
        for subscription in self._readers():
            self._close(subscription, Control("stream.closed", subscription.last_lsn, message))

    def statistics(self) -> BrokerStatistics:
        oldest = self._buffer[0].lsn if self._buffer else self._newest_lsn
        return BrokerStatistics(self._reader_count(), len(self._buffer), oldest, self._newest_lsn, self._cut_off)
