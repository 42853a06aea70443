"""A small harness for the routing-core tests: a desk that drives one `Center` on a clock.

It holds no tests itself. Every test goes through the core's public inputs (commands and
ticks) and looks only at its public outputs (events, rejections, snapshot, statistics).
`Desk.do` applies a command that must be accepted and checks every invariant the core can
see after it; `Desk.refuse` applies one that must be refused and checks that the refusal
left the state byte-for-byte as it was. Both log what they applied, so a test can replay the
log on a fresh center and compare state hashes (invariant 7).
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable
from typing import Any, TypeVar

from acd.core import Center, CenterConfig, Rejection
from acd.core.commands import Answer, Arrive, Command, Configure, Hangup, Login, Ready, Tick, WrapUp
from acd.core.config import Agent, Capacity, Queue
from acd.core.events import CallOffered, Event
from acd.core.rejections import Code

SEOUL = dt.timezone(dt.timedelta(hours=9))
# Monday 4 March 2024, 09:00 in Seoul: a working day, inside every calendar the tests use.
MONDAY_9AM = dt.datetime(2024, 3, 4, 9, 0, tzinfo=SEOUL).timestamp()

EventType = TypeVar("EventType", bound=Event)


def seoul(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """The timestamp of a wall-clock time in Seoul (UTC+9 all year, no daylight saving)."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=SEOUL).timestamp()


def one_queue_center(agents: int = 1, **queue_options: Any) -> CenterConfig:
    """A center with queue `q` (every channel) and agents a1..aN who take voice."""
    return CenterConfig(
        queues=[Queue(name="q", **queue_options)],
        agents=[Agent(name=f"a{index}") for index in range(1, agents + 1)],
    )


def chat_agent(name: str, chats: int = 3, **options: Any) -> Agent:
    return Agent(name=name, capacity=Capacity(voice=0, chat=chats, sms=chats), **options)


def of_type(events: Iterable[Event], kind: type[EventType]) -> list[EventType]:
    return [event for event in events if isinstance(event, kind)]


def only(events: Iterable[Event], kind: type[EventType]) -> EventType:
    found = of_type(events, kind)
    assert len(found) == 1, f"expected one {kind.__name__}, got {found}"
    return found[0]


def offers(events: Iterable[Event]) -> list[tuple[str, str]]:
    """(call, agent) of every offer, in order."""
    return [(event.call, event.agent) for event in of_type(events, CallOffered)]


class Desk:
    """One center driven through commands on a clock that the test moves forward."""

    def __init__(self, config: CenterConfig, start: float = MONDAY_9AM) -> None:
        self.center = Center()
        self.now = start
        self.log: list[tuple[Command, float]] = []
        self.events: list[Event] = []
        self.do(Configure(center=config))

    # -- driving ----------------------------------------------------------------------

    def do(self, command: Command, after: float = 0.0) -> list[Event]:
        """Apply an accepted command `after` seconds from now; its events."""
        self.now += after
        result = self.center.apply(command, self.now)
        assert not isinstance(result, Rejection), f"{command!r} refused: {result}"
        self.log.append((command, self.now))
        self.events.extend(result)
        self.center.check_invariants()
        return result

    def refuse(self, command: Command, code: Code) -> Rejection:
        """Apply a command that must be refused with `code`, leaving the state unchanged."""
        before = self.center.state_hash()
        result = self.center.apply(command, self.now)
        assert isinstance(result, Rejection), f"{command!r} accepted: {result}"
        assert (result.code, result.status) == code.value, result
        assert self.center.state_hash() == before, f"{command!r} was refused but changed the state"
        return result

    def wait(self, seconds: float) -> list[Event]:
        """Let time pass: one tick `seconds` from now."""
        return self.do(Tick(), after=seconds)

    def wait_until(self, at: float) -> list[Event]:
        return self.do(Tick(), after=at - self.now)

    # -- shorthands -------------------------------------------------------------------

    def ready(self, *agents: str) -> list[Event]:
        produced: list[Event] = []
        for agent in agents:
            produced += self.do(Login(agent=agent))
            produced += self.do(Ready(agent=agent))
        return produced

    def arrive(self, call: str, queue: str = "q", caller: str | None = None, after: float = 0.0, **options: Any) -> list[Event]:
        number = caller if caller is not None else "010" + str(zlib.crc32(call.encode()) % 10**8).zfill(8)
        return self.do(Arrive(id=call, queue=queue, caller=number, **options), after=after)

    def answer(self, call: str, agent: str | None = None, after: float = 0.0) -> list[Event]:
        return self.do(Answer(call=call, agent=agent or self.agent_of(call)), after=after)

    def hangup(self, call: str, after: float = 0.0) -> list[Event]:
        return self.do(Hangup(call=call), after=after)

    def wrapup(self, call: str, agent: str | None = None, disposition: str = "resolved", after: float = 0.0, **options: Any) -> list[Event]:
        return self.do(WrapUp(call=call, agent=agent or self.held_by(call), disposition=disposition, **options), after=after)  # type: ignore[arg-type]

    def serve(self, call: str, talk: float = 60.0, wrap: float = 10.0, disposition: str = "resolved") -> str:
        """Answer the offered call, talk, hang up and wrap up; the agent who served it."""
        agent = self.agent_of(call)
        self.answer(call, agent)
        self.hangup(call, after=talk)
        self.wrapup(call, agent, disposition, after=wrap)
        return agent

    # -- looking ----------------------------------------------------------------------

    def call(self, call: str) -> Any:
        return self.center.state.interactions[call]

    def agent(self, agent: str) -> Any:
        return self.center.state.agents[agent]

    def state_of(self, call: str) -> str:
        return str(self.call(call).state.value)

    def agent_state(self, agent: str) -> str:
        return str(self.agent(agent).state.value)

    def agent_of(self, call: str) -> str:
        agent = self.call(call).agent
        assert agent is not None, f"{call} is {self.state_of(call)}, with no agent"
        return str(agent)

    def held_by(self, call: str) -> str:
        for name, record in self.center.state.agents.items():
            if call in record.held:
                return str(name)
        raise AssertionError(f"nobody holds {call}")

    def offer_of(self, agent: str) -> str | None:
        offer = self.agent(agent).offer
        return None if offer is None else str(offer)

    def day(self, at: float | None = None) -> Any:
        moment = dt.datetime.fromtimestamp(self.now if at is None else at, SEOUL)
        return self.center.state.stats[moment.date().isoformat()]

    def replayed(self) -> Center:
        """A fresh center that applied this desk's log: it must equal the live one."""
        fresh = Center()
        for command, at in self.log:
            result = fresh.apply(command, at)
            assert not isinstance(result, Rejection), f"replay refused {command!r}: {result}"
        return fresh
