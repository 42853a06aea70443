"""Events: what the routing core says happened, in order, for each accepted command.

Events are the output side of the machine: the node publishes them on the event streams
(`/v1/events`, `/v1/agents/{id}/events`) with the LSN of the command that produced them.
They carry enough to drive an agent desktop or a wallboard without a second request.
"""

from __future__ import annotations

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    at: float


class ConfigApplied(Event, tag="config.applied", frozen=True):
    version: int
    queues: int
    agents: int
    actor: str = ""


class QueueUpdated(Event, tag="queue.updated", frozen=True):
    """The line of a queue moved (a caller joined or left it, an agent went on or came back
    from a break): what a PBX announces. At most one per queue every `queue_update_seconds`.

    `ewt[k]` is the estimated wait of the caller at position k + 1 (the first ten positions).
    """

    queue: str
    waiting: int
    available: int                   # agents serving the queue, logged in and not on a break
    ewt: list[float]


class CallQueued(Event, tag="call.queued", frozen=True):
    call: str
    queue: str
    channel: str
    priority: int
    position: int
    ewt: float
    warning: bool = False
    callback: bool = False


class CallClosed(Event, tag="call.closed", frozen=True):
    call: str
    queue: str
    reason: str
    message: str = ""


class CallScheduled(Event, tag="call.scheduled", frozen=True):
    """A call-back waits for its due time (requested, promised at wrap-up, or closed hours)."""

    call: str
    queue: str
    due_at: float
    agent: str | None = None


class CallOffered(Event, tag="call.offered", frozen=True):
    call: str
    agent: str
    queue: str
    channel: str
    expires_at: float
    callback: bool = False
    warning: bool = False


class OfferWithdrawn(Event, tag="call.offer_withdrawn", frozen=True):
    call: str
    agent: str
    reason: str  # "rejected" | "no_answer" | "agent_left" | "abandoned" | "transferred"


class CallAnswered(Event, tag="call.answered", frozen=True):
    call: str
    agent: str
    queue: str
    wait: float


class CallAbandoned(Event, tag="call.abandoned", frozen=True):
    call: str
    queue: str
    wait: float


class CallEnded(Event, tag="call.ended", frozen=True):
    call: str
    agent: str
    talk: float


class CallWrappedUp(Event, tag="call.wrapped_up", frozen=True):
    call: str
    agent: str
    disposition: str
    abusive: bool = False
    timed_out: bool = False


class CallHeld(Event, tag="call.held", frozen=True):
    call: str
    agent: str


class CallResumed(Event, tag="call.resumed", frozen=True):
    call: str
    agent: str
    hold: float  # seconds of this hold


class CallTransferred(Event, tag="call.transferred", frozen=True):
    call: str
    source: str
    target: str
    external: bool
    overflow: bool = False


class CallbackRequested(Event, tag="call.callback_requested", frozen=True):
    call: str
    queue: str
    merged_into: str | None = None


class CallbackAttempted(Event, tag="call.callback_attempted", frozen=True):
    call: str
    agent: str
    outcome: str
    attempt: int
    next_due_at: float | None = None  # due again then; None: reached or ended


class SurveyRecorded(Event, tag="call.survey", frozen=True):
    call: str
    agent: str | None
    score: int


class AgentChanged(Event, tag="agent.changed", frozen=True):
    agent: str
    state: str
    reason: str = ""
    pending: str = ""


class Audited(Event, tag="audit", frozen=True):
    actor: str
    action: str
    detail: str = ""


def event_agents(event: Event) -> tuple[str, ...]:
    """The agents an event concerns (for the per-agent event stream)."""
    agent = getattr(event, "agent", None)
    return (agent,) if agent else ()
