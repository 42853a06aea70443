"""The center's configuration as data: queues, agents, calendars and center-wide rules.

The configuration is part of the replicated state: a change arrives as a `Configure`
command through the log, so that both nodes and every replay see the same center at the
same LSN. Everything here is plain, frozen msgspec structs, validated in two steps: msgspec
checks types and ranges while decoding; `validate_center` checks the cross references
(a queue's calendar exists, an overflow target exists, ...) and names the key at fault.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Level = Annotated[int, msgspec.Meta(ge=1, le=5)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]

Channel = Literal["voice", "chat", "sms"]
CHANNELS: tuple[str, ...] = ("voice", "chat", "sms")
Strategy = Literal["longest-idle", "fewest-handled", "best-skill-level", "round-robin"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class RelaxationStep(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """After a caller has waited `after` seconds, agents with `min_level` are accepted too."""

    after: PositiveSeconds
    min_level: Level


class Capacity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many interactions of each channel an agent holds at once (0: not on that channel)."""

    voice: Annotated[int, msgspec.Meta(ge=0, le=1)] = 1
    chat: Annotated[int, msgspec.Meta(ge=0, le=20)] = 0
    sms: Annotated[int, msgspec.Meta(ge=0, le=20)] = 0

    def of(self, channel: str) -> int:
        return int(getattr(self, channel))


class Calendar(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Opening hours in a time zone; what happens to callers who arrive while closed.

    `hours` maps a weekday (`mon` .. `sun`) to spans "HH:MM-HH:MM"; a day that is missing is
    closed. `holidays` maps an ISO date to its own spans ([] for closed all day), so a
    holiday may open shorter hours (Gwangju 120 opens 09:00-18:00 on holidays, docs/domain.md).
    """

    name: Name
    time_zone: str = "Asia/Seoul"
    hours: dict[str, list[str]] = {}
    holidays: dict[str, list[str]] = {}
    always_open: bool = False
    closed_action: Literal["reject", "callback"] = "reject"
    closed_message: str = "The center is closed now."


class Queue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One queue: a topic, the skills it needs and the rules for its callers."""

    name: Name
    topic: str = ""
    skills: list[Name] = []
    min_level: Level = 1
    relaxation: list[RelaxationStep] = []
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["voice", "chat", "sms"])
    strategy: Strategy = "longest-idle"
    service_level_threshold: PositiveSeconds = 20.0
    service_level_target: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.8
    max_wait: Seconds = 0.0
    max_length: Annotated[int, msgspec.Meta(ge=0)] = 0
    overflow: str = ""
    calendar: str = ""
    wrapup_seconds: Seconds = 60.0
    ring_timeout: PositiveSeconds = 15.0
    aht_seconds: PositiveSeconds = 180.0
    external: bool = False


class Agent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One agent: skills with levels 1-5 and a capacity per channel."""

    name: Name
    display_name: str = ""
    skills: dict[Name, Level] = {}
    capacity: Capacity = Capacity()


class Abuse(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The agent-protection programme (docs/domain.md, "Protecting agents")."""

    recovery_seconds: Seconds = 300.0
    flags: Annotated[int, msgspec.Meta(ge=1)] = 3
    window_days: Annotated[int, msgspec.Meta(ge=1)] = 30
    route_to: str = ""
    hash_key: str = "change-me"


class CenterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole center: the configuration the routing core runs on."""

    name: str = "acd"
    time_zone: str = "Asia/Seoul"
    service_level_threshold: PositiveSeconds = 20.0
    short_abandon_seconds: Seconds = 5.0
    priority_weight_seconds: Seconds = 60.0
    vulnerable_priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 5
    no_answer_not_ready: bool = True
    callback_preferred_seconds: Seconds = 1800.0
    # The call-back retry policy (docs/kpis.md): a task whose dialled citizen does not answer
    # (or is busy) is due again `callback_retry_seconds` later, at most `callback_attempts`
    # dials in all; dials happen only while `callback_calendar` is open (default: the queue's).
    callback_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    callback_retry_seconds: Seconds = 900.0
    callback_calendar: str = ""
    # A queue's position and EWT update (`queue.updated`) goes out at most this often (0: never).
    queue_update_seconds: Seconds = 10.0
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 35
    abuse: Abuse = Abuse()
    calendars: list[Calendar] = []
    queues: list[Queue] = []
    agents: list[Agent] = []


class ConfigError(ValueError):
    """A configuration that cannot be used; `key` names the offending key (dotted path)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def parse_span(span: str) -> tuple[int, int]:
    """"08:30-18:30" -> (510, 1110) minutes after midnight."""
    match = _SPAN.match(span)
    if not match:
        raise ValueError(f"{span!r} is not a span HH:MM-HH:MM")
    start = int(match[1]) * 60 + int(match[2])
    end = int(match[3]) * 60 + int(match[4])
    if not 0 <= start < end <= 24 * 60:
        raise ValueError(f"{span!r} must start before it ends, within one day")
    return start, end


def load_zone(name: str) -> ZoneInfo:
    """The time zone `name`; ValueError naming it when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error


def validate_center(center: CenterConfig) -> list[ConfigError]:
    """Every cross-reference problem of `center`, each naming its key; [] when usable."""
    problems: list[ConfigError] = []
    try:
        load_zone(center.time_zone)
    except ValueError as error:
        problems.append(ConfigError("center.time_zone", str(error)))

    def unique(kind: str, names: list[str]) -> set[str]:
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                problems.append(ConfigError(f"{kind}[{index}].name", f"duplicate name {name!r}"))
            seen.add(name)
        return seen

    calendars = unique("calendars", [c.name for c in center.calendars])
    if center.callback_calendar and center.callback_calendar not in calendars:
        problems.append(ConfigError("center.callback_calendar", f"no calendar named {center.callback_calendar!r}"))
    queues = unique("queues", [q.name for q in center.queues])
    unique("agents", [a.name for a in center.agents])
    for index, calendar in enumerate(center.calendars):
        key = f"calendars[{index}]"
        try:
            load_zone(calendar.time_zone)
        except ValueError as error:
            problems.append(ConfigError(f"{key}.time_zone", str(error)))
        for day, spans in calendar.hours.items():
            if day not in WEEKDAYS:
                problems.append(ConfigError(f"{key}.hours.{day}", f"unknown weekday; use one of {', '.join(WEEKDAYS)}"))
            for span in spans:
                try:
                    parse_span(span)
                except ValueError as error:
                    problems.append(ConfigError(f"{key}.hours.{day}", str(error)))
        for date, spans in calendar.holidays.items():
            if not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
                problems.append(ConfigError(f"{key}.holidays.{date}", "holiday keys are ISO dates YYYY-MM-DD"))
            for span in spans:
                try:
                    parse_span(span)
                except ValueError as error:
                    problems.append(ConfigError(f"{key}.holidays.{date}", str(error)))
    for index, queue in enumerate(center.queues):
        key = f"queues[{index}]"
        if queue.calendar and queue.calendar not in calendars:
            problems.append(ConfigError(f"{key}.calendar", f"no calendar named {queue.calendar!r}"))
        if queue.overflow and queue.overflow != "callback" and queue.overflow not in queues:
            problems.append(ConfigError(f"{key}.overflow", f"no queue named {queue.overflow!r} (or use \"callback\")"))
        if queue.overflow == queue.name:
            problems.append(ConfigError(f"{key}.overflow", "a queue cannot overflow into itself"))
        if (queue.max_wait or queue.max_length) and not queue.overflow:
            problems.append(ConfigError(f"{key}.overflow", "max_wait/max_length need an overflow target"))
        previous = 0.0
        for step_index, step in enumerate(queue.relaxation):
            if step.after <= previous:
                problems.append(ConfigError(f"{key}.relaxation[{step_index}].after", "steps must be in increasing order of wait"))
            if step.min_level >= queue.min_level and step_index == 0:
                problems.append(ConfigError(f"{key}.relaxation[{step_index}].min_level", "a relaxation step must lower min_level"))
            previous = step.after
        if not queue.channels:
            problems.append(ConfigError(f"{key}.channels", "a queue needs at least one channel"))
    if center.abuse.route_to and center.abuse.route_to not in queues:
        problems.append(ConfigError("center.abuse.route_to", f"no queue named {center.abuse.route_to!r}"))
    return problems
