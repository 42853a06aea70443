"""The canonical state of the routing core: what a snapshot holds and a replay rebuilds.

Everything in `State` is data (msgspec structs, dicts, lists) so that the whole state
encodes and decodes with msgspec. The records hold only scalars, tuples, lists and dicts of
records, never a reference back, so they cannot form cycles: they are kept out of Python's
cycle collector (`gc=False`), which otherwise walks every record of a large center. Indices that make routing fast (heaps of waiting
interactions and available agents, the timer heap) are *derived* from this state by
`acd.core.center.Center` and never stored: a restored snapshot rebuilds them.

Theory of operation of an interaction (the per-interaction machine):

    SCHEDULED --due--> WAITING --offer--> OFFERED --answer--> CONNECTED --hangup--> WRAPUP
        |                 ^                  |                    |                    |
        |                 +--reject/timeout--+                    +--transfer--> WAITING (new queue)
        |                                                                              v
        +--> ABANDONED   WAITING/OFFERED --abandon--> ABANDONED              wrap-up: COMPLETED

A transfer or overflow into an `external` queue (a district office) ends the interaction as
TRANSFERRED; a caller who arrives while the center is closed and may not leave a call-back
request, or whose call-back request merges into an earlier one, ends as CLOSED. The legal
(state, command) moves are the table `TRANSITIONS` in `acd.core.center`.
"""

from __future__ import annotations

import enum

import msgspec

from .config import Center as CenterConfig


class CallState(enum.Enum):
    SCHEDULED = "scheduled"      # a call-back waiting for its due time, not yet in a queue
    WAITING = "waiting"          # in a queue, at its place
    OFFERED = "offered"          # ringing at one agent, place kept
    CONNECTED = "connected"      # talking (voice) or in conversation (chat, SMS)
    WRAPUP = "wrapup"            # conversation over, the agent records the disposition
    COMPLETED = "completed"      # terminal: answered and wrapped up
    ABANDONED = "abandoned"      # terminal: the caller left before being answered
    TRANSFERRED = "transferred"  # terminal: sent out of the center (district office)
    CLOSED = "closed"            # terminal: closed hours, merged call-back, or removed


TERMINAL = frozenset({CallState.COMPLETED, CallState.ABANDONED, CallState.TRANSFERRED, CallState.CLOSED})


class Presence(enum.Enum):
    LOGGED_OUT = "logged_out"    # not working
    READY = "ready"              # wants work
    NOT_READY = "not_ready"      # logged in, wants no work (with a reason)


class AgentState(enum.Enum):
    """The state shown to supervisors, derived from presence and held work."""

    LOGGED_OUT = "logged_out"    # not working
    READY = "ready"              # waiting for work
    NOT_READY = "not_ready"      # on a break or other work (reason given)
    OFFERED = "offered"          # an offer is ringing
    BUSY = "busy"                # in at least one conversation
    WRAPUP = "wrapup"            # recording a disposition, no conversation
    RECOVERING = "recovering"    # recovery time after an abusive call (docs/domain.md)


class Interaction(msgspec.Struct, kw_only=True, gc=False):
    id: str
    queue: str
    channel: str
    caller_hash: str
    caller_masked: str
    caller: str | None = None        # kept in clear only while a call-back is pending (unsealed arrivals)
    caller_sealed: bytes | None = None  # the number sealed at the edge, while the interaction lives
    caller_key: str | None = None    # the id of the key that opens it (the store's, not the log's)
    priority: int = 0
    attributes: dict[str, bool | int | str] = {}
    fingerprint: str = ""
    state: CallState = CallState.WAITING
    order: int = 0                   # global arrival order, breaks ties deterministically
    arrived_at: float = 0.0          # first arrival at the center
    place_at: float = 0.0            # the place in line (kept through requeue and transfer)
    queued_at: float = 0.0           # entered the current queue (max wait counts from here)
    agent: str | None = None         # offered to, or connected with
    offer_expires_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    completed_at: float | None = None
    callback: bool = False           # the caller asked to be called back, or it is a call-back task
    due_at: float | None = None
    preferred_agent: str | None = None
    preferred_until: float | None = None
    origin: str | None = None        # the interaction whose wrap-up promised this call-back
    callback_source: str = ""        # "waiting" | "after_hours" | "promised": who asked for the call-back
    requested_at: float | None = None  # when the call-back was requested (its delay counts from here)
    after_hours: bool = False        # arrived while its queue was closed
    attempts: int = 0                # offers to an agent while a call-back (each one an attempt)
    sealed_for: str = ""             # the interaction the sealed number was sealed for ("": this one)
    warning: bool = False
    disposition: str | None = None
    abusive: bool = False
    survey: int | None = None
    reason: str = ""                 # why it ended when not completed
    last_offer_agent: str | None = None
    last_offer_outcome: str = ""
    transfers: int = 0
    counted: bool = False            # the center counted this interaction's outcome (once)
    queue_stats_key: tuple[str, int] = ("", 0)   # (day, interval) of arrival in the current queue
    center_stats_key: tuple[str, int] = ("", 0)  # (day, interval) of arrival at the center
    handled_queue: str = ""
    handled_key: tuple[str, int] = ("", 0)
    legs: list[Leg] = []             # one per agent who handled it, as each leg is wrapped up


class Leg(msgspec.Struct, kw_only=True, gc=False):
    """One agent's part of an interaction, recorded when its wrap-up ends (the export's leg rows)."""

    agent: str
    queue: str
    channel: str
    answered_at: float
    ended_at: float
    completed_at: float
    disposition: str
    callback: bool = False           # this leg reached a call-back (task or request)
    hold_seconds: float = 0.0


class Held(msgspec.Struct, kw_only=True, gc=False):
    """One interaction an agent is working on (conversation or wrap-up)."""

    channel: str
    phase: str                       # "connected" | "wrapup"
    queue: str
    since: float
    answered_at: float
    ended_at: float | None = None
    wrap_deadline: float | None = None
    transferred: bool = False
    stats_key: tuple[str, int] = ("", 0)  # (day, interval) the leg's queue counts it under
    callback: bool = False           # this leg answered a call-back (counted apart from callers)
    first: bool = False              # the interaction's first answer (FCR's first contact)
    hold_since: float | None = None  # on hold since (None: not on hold)
    hold_seconds: float = 0.0        # holds ended so far in this leg


class AgentRecord(msgspec.Struct, kw_only=True, gc=False):
    name: str
    presence: Presence = Presence.LOGGED_OUT
    reason: str = ""
    pending: str = ""                # deferred "not_ready" or "logout", applied after wrap-up
    pending_reason: str = ""
    offer: str | None = None
    held: dict[str, Held] = {}
    recovering_until: float | None = None
    available_since: float = 0.0
    handled: int = 0
    last_offer_order: int = 0
    order: int = 0                   # configuration order, breaks ties deterministically
    state: AgentState = AgentState.LOGGED_OUT
    state_since: float = 0.0
    shown_reason: str = ""


class Counters(msgspec.Struct, kw_only=True, gc=False):
    """Counts folded into the state, for one queue (or the center) and one interval or day."""

    offered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    wait_answered_seconds: float = 0.0
    wait_abandoned_seconds: float = 0.0
    handled: int = 0
    talk_seconds: float = 0.0
    wrapup_seconds: float = 0.0
    dispositions: int = 0
    resolved: int = 0
    surveys: int = 0
    survey_points: int = 0
    satisfied: int = 0
    callbacks_requested: int = 0     # call-back tasks created: waiting + after hours + promised
    callbacks_completed: int = 0     # call-backs reached and wrapped up
    callbacks_expired: int = 0       # call-backs ended unreached (attempts used up, wrong number)
    transfers_in: int = 0
    transfers_out: int = 0
    overflows: int = 0
    closed: int = 0
    # Added with docs/kpis.md (older snapshots decode with zeros):
    after_hours: int = 0             # callers who arrived while closed (call-back request or closed message)
    left_unanswered: int = 0         # callers whose wait ended without answer or abandon (call-back, overflow, sent out)
    callbacks_waiting: int = 0       # call-backs requested by callers waiting in line (or overflowed to one)
    callbacks_after_hours: int = 0   # call-backs requested by callers who arrived while closed
    callbacks_promised: int = 0      # call-backs promised by an agent at wrap-up
    callbacks_due: int = 0           # call-back tasks that came due and entered their queue
    callbacks_attempted: int = 0     # offers of a call-back to an agent (each attempt)
    callbacks_reached: int = 0       # call-backs answered (the citizen reached)
    callback_delay_seconds: float = 0.0  # request to completion, summed over callbacks_completed
    not_recorded: int = 0            # wrap-ups that timed out with no disposition recorded
    first_contacts: int = 0          # citizens' requests whose first leg has a recorded disposition
    first_resolved: int = 0          # ... of which the first leg was resolved
    hold_seconds: float = 0.0
    channel_handled: dict[str, int] = {}
    channel_handle_seconds: dict[str, float] = {}  # talk + hold + wrap-up, per channel


class QueueDay(msgspec.Struct, kw_only=True, gc=False):
    total: Counters = msgspec.field(default_factory=Counters)
    intervals: dict[int, Counters] = {}


class AgentDay(msgspec.Struct, kw_only=True, gc=False):
    seconds: dict[str, float] = {}
    handled: int = 0
    reasons: dict[str, float] = {}   # seconds not ready, per reason ("" when none was given)
    counters: Counters = msgspec.field(default_factory=Counters)  # the legs this agent wrapped up that day


class DayStats(msgspec.Struct, kw_only=True, gc=False):
    center: QueueDay = msgspec.field(default_factory=QueueDay)
    queues: dict[str, QueueDay] = {}
    agents: dict[str, AgentDay] = {}


class State(msgspec.Struct, kw_only=True):
    config: CenterConfig = msgspec.field(default_factory=CenterConfig)
    config_version: int = 0
    now: float = 0.0
    order: int = 0
    interactions: dict[str, Interaction] = {}
    agents: dict[str, AgentRecord] = {}
    stats: dict[str, DayStats] = {}
    abuse: dict[str, list[float]] = {}
    aht: dict[str, float] = {}       # moving average of handling time per queue (for EWT)
    queue_updates: dict[str, float] = {}  # when each queue's last `queue.updated` went out
    audit: list[tuple[float, str, str, str]] = []
    # The core version whose rules apply (acd.core.versions); older snapshots restore as 1.
    core_version: int = 1
