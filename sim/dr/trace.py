"""The event log of one run: what happened, when (virtual seconds), to whom.

Every line is one event, readable at a glance:

       12.345600  a        role     primary epoch 3 (votes: witness)
       14.000000  b        fault    crash
       14.002100  client   ack      a e3 lsn 118 call.answer c17 kim

The trace hash (sha256 over the lines) is the run's fingerprint: the same seed must give
the same hash, in this process or another (`tests/test_dr.py` runs seeds twice).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from dataclasses import dataclass

import trio

# Kinds, for the reader of an event log:
#   phase    the run moved on (warm-up, faults, healed, drained, converged)
#   fault    a fault injected by the schedule; heal: its end
#   role     a node became primary or stepped down (with the reason)
#   ack      a write acknowledged to the client: node, epoch, LSN, command
#   client   a client-visible failure worth seeing (storage full, timeouts are counted only)
#   probe    the failover probe's first acknowledged write after a fault
#   death    a node process died of an exception (a real process would exit)
#   log      a warning or notice from the replication, witness or node code
#   check    a checker's verdict at the end


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    node: str
    kind: str
    text: str

    def line(self) -> str:
        return f"{self.at:12.6f}  {self.node:<8} {self.kind:<8} {self.text}"


class Trace:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, kind: str, node: str, text: str) -> None:
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio.run: the checks at the end
            now = self.events[-1].at if self.events else 0.0
        self.events.append(Event(now, node, kind, text))

    def lines(self) -> list[str]:
        return [event.line() for event in self.events]

    def digest(self) -> str:
        hasher = hashlib.sha256()
        for event in self.events:
            hasher.update(event.line().encode())
            hasher.update(b"\n")
        return hasher.hexdigest()


# Which simulated process the running task belongs to (trio tasks inherit it from the task
# that spawned them; the simulated network sets it for the handlers it starts for a listener).
CURRENT_PROCESS: contextvars.ContextVar[str] = contextvars.ContextVar("sim_dr_process", default="-")


class TraceHandler(logging.Handler):
    """Copies log records of the node, replication and witness code into the trace.

    A message a process repeats (a retry loop logging each attempt) is written once, and
    the number of repeats when it changes.
    """

    def __init__(self, trace: Trace) -> None:
        super().__init__(logging.INFO)
        self.trace = trace
        self.last: dict[str, tuple[str, int]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call must not end the run
            message = str(record.msg)
        node = CURRENT_PROCESS.get()
        text = f"{record.levelname.lower()} {message}"
        previous, repeats = self.last.get(node, ("", 0))
        if text == previous:
            self.last[node] = (text, repeats + 1)
            return
        if repeats:
            self.trace.add("log", node, f"(the message before repeated {repeats} more times)")
        self.last[node] = (text, 0)
        self.trace.add("log", node, text)
