"""The event broker: every reader gets exactly the events it asked for, in order."""

from __future__ import annotations

import trio

from acd.core.events import AgentChanged, CallQueued, ConfigApplied
from acd.node.broker import Broker, Control, Published


def drain(subscription) -> list[Published | Control]:  # type: ignore[no-untyped-def]
    items = []
    while True:
        try:
            items.append(subscription.receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


def changed(agent: str, at: float) -> AgentChanged:
    return AgentChanged(at=at, agent=agent, state="ready")


def test_agent_readers_get_only_their_agent_and_everything_readers_get_all() -> None:
    broker = Broker()
    everything = broker.subscribe(0)
    kim = broker.subscribe(0, agent="kim")
    lee = broker.subscribe(0, agent="lee")
    kim2 = broker.subscribe(0, agent="kim")
    broker.publish(1, [changed("kim", 1.0), ConfigApplied(at=1.0, version=1, queues=1, agents=2)])
    broker.publish(2, [changed("lee", 2.0), CallQueued(at=2.0, call="c1", queue="q", channel="voice", priority=0, position=1, ewt=0.0)])
    broker.publish(3, [changed("kim", 3.0)])
    assert [(i.lsn, type(i.event).__name__) for i in drain(everything)] == [
        (1, "AgentChanged"), (1, "ConfigApplied"), (2, "AgentChanged"), (2, "CallQueued"), (3, "AgentChanged")]
    assert [(i.lsn, i.event.agent) for i in drain(kim)] == [(1, "kim"), (3, "kim")]
    assert [(i.lsn, i.event.agent) for i in drain(kim2)] == [(1, "kim"), (3, "kim")]
    assert [(i.lsn, i.event.agent) for i in drain(lee)] == [(2, "lee")]
    assert broker.statistics().subscribers == 4


def test_unsubscribed_and_cut_off_readers_get_nothing_more() -> None:
    broker = Broker(queue_events=2)
    kim = broker.subscribe(0, agent="kim")
    lee = broker.subscribe(0, agent="lee")
    broker.unsubscribe(lee)
    for lsn in range(1, 5):   # kim never reads: cut off after two
        broker.publish(lsn, [changed("kim", float(lsn)), changed("lee", float(lsn))])
    items = drain(kim)
    assert [i.lsn for i in items if isinstance(i, Published)] == [1, 2]
    assert isinstance(items[-1], Control) and items[-1].kind == "stream.behind"
    assert drain(lee) == []
    assert broker.statistics().subscribers == 0 and broker.statistics().cut_off == 1
    # A new reader of the same agent after the cut-off is indexed afresh and replays the buffer.
    again = broker.subscribe(3, agent="kim")
    broker.publish(5, [changed("kim", 5.0), changed("lee", 5.0)])
    assert [(i.lsn, i.event.agent) for i in drain(again)] == [(4, "kim"), (5, "kim")]


def test_a_rebuilt_log_ends_open_streams_instead_of_replaying_into_them() -> None:
    # A standby that truncates its tail or installs a snapshot replays its log into the
    # broker: a reader still attached would get old events again as new ones, and would have
    # seen events of the truncated tail that the replacing records never produce.
    broker = Broker()
    reader = broker.subscribe(0)
    broker.publish(1, [changed("kim", 1.0)])
    broker.publish(2, [changed("lee", 2.0)])       # a tail the primary never acknowledged
    for item in drain(reader):
        reader.last_lsn = item.lsn                 # as the stream does once a group is sent
    broker.reset(0)
    broker.publish(1, [changed("kim", 1.0)])       # the replay
    items = drain(reader)
    assert [(type(i).__name__, getattr(i, "kind", ""), i.lsn) for i in items] == [("Control", "stream.behind", 2)]
    assert broker.statistics().subscribers == 0
    # A reader that comes now gets the rebuilt events once (one past the new end is told to
    # reload by the stream itself: `after > node.lsn`).
    again = broker.subscribe(0)
    assert [(i.lsn, i.event.agent) for i in drain(again)] == [(1, "kim")]
