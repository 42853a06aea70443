"""Every KPI the center reports, defined once (docs/kpis.md gives each formula with an example).

The core folds raw counts into `acd.core.state.Counters` (per queue and for the center, per
15-minute interval and per day); this module turns counts into figures. The API views,
`/metrics`, the wallboard (through `/v1/stats`), the simulator's report and the export's
recomputation all call these functions, so one day reads the same everywhere.

Callers and call-back tasks are counted apart. A *caller* is someone who reached the center
(phone, chat or SMS); a *call-back task* is work the center owes a citizen (requested by a
caller waiting in line, left by a caller after hours, or promised by an agent at wrap-up).
Service level, ASA and abandon rate count callers only; call-backs have their own figures.

A ratio whose denominator is zero is None, not 0: "no calls yet" is not "0 % service level".
Ratios are rounded to 4 digits, seconds to 2: the rounding every place shows.

Pure: no I/O, no clock; only the standard library and msgspec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from .state import Counters

CHANNELS = ("voice", "chat", "sms")
WORKING_STATES = ("offered", "busy", "wrapup")
AVAILABLE_STATES = ("ready", "offered", "busy", "wrapup")
SERVICE_LEVEL_BASES = {
    "answered": "answered within the threshold / callers answered",
    "offered": "answered within the threshold / (answered + abandoned - short abandons + left unanswered)",
}


class Kpis(msgspec.Struct, kw_only=True):
    # Callers (live: phone, chat, SMS), counted by arrival.
    offered: int
    after_hours: int
    answered: int
    answered_within_threshold: int
    abandoned: int
    short_abandoned: int
    left_unanswered: int
    service_level: float | None            # basis "answered"
    service_level_offered: float | None    # basis "offered"
    abandon_rate: float | None             # (abandoned - short) / the offered basis
    asa_seconds: float | None
    # Work (each agent's leg), all channels; AHT per channel.
    handled: int
    aht_seconds: float | None              # voice legs: talk + hold + wrap-up
    aht_by_channel: dict[str, float | None]
    hold_seconds: float
    fcr: float | None                      # first contacts resolved / first contacts recorded
    first_contacts: int
    not_recorded: int
    csat: float | None
    survey_mean: float | None
    surveys: int
    # Call-back tasks.
    callbacks_requested: int
    callbacks_waiting: int
    callbacks_after_hours: int
    callbacks_promised: int
    callbacks_due: int
    callbacks_attempted: int
    callbacks_reached: int
    callbacks_completed: int
    callbacks_expired: int                 # ended unreached: attempts used up, or a wrong number
    callback_delay_seconds: float | None   # mean, request to completion
    transfers_in: int
    transfers_out: int
    overflows: int
    closed: int


def ratio(numerator: float, denominator: float, digits: int = 4) -> float | None:
    """numerator / denominator rounded, or None when the denominator is zero."""
    return round(numerator / denominator, digits) if denominator else None


def offered_basis(counters: Counters) -> int:
    """Callers whose wait ended, short abandons excluded: the offered basis of SL and abandon rate."""
    return counters.answered + counters.abandoned - counters.short_abandoned + counters.left_unanswered


def service_level(counters: Counters, basis: str = "offered") -> float | None:
    """Callers answered within the threshold over the named basis ("offered" or "answered")."""
    if basis == "answered":
        return ratio(counters.answered_within, counters.answered)
    if basis == "offered":
        return ratio(counters.answered_within, offered_basis(counters))
    raise ValueError(f"no service-level basis {basis!r}; use one of {sorted(SERVICE_LEVEL_BASES)}")


def abandon_rate(counters: Counters) -> float | None:
    """Callers who hung up after the short-abandon threshold over the offered basis."""
    return ratio(counters.abandoned - counters.short_abandoned, offered_basis(counters))


def asa(counters: Counters) -> float | None:
    """Mean wait of the callers answered (call-backs reached are not callers answered)."""
    return ratio(counters.wait_answered_seconds, counters.answered, 2)


def aht(counters: Counters, channel: str = "voice") -> float | None:
    """(talk + hold + wrap-up) / legs handled, over one channel's legs."""
    return ratio(counters.channel_handle_seconds.get(channel, 0.0), counters.channel_handled.get(channel, 0), 2)


def fcr(counters: Counters) -> float | None:
    """First contacts resolved / first contacts with a recorded disposition."""
    return ratio(counters.first_resolved, counters.first_contacts)


def csat(counters: Counters) -> float | None:
    """Surveys scored 4 or 5 / surveys."""
    return ratio(counters.satisfied, counters.surveys)


def callback_delay(counters: Counters) -> float | None:
    """Mean seconds from a call-back's request to its completion (wrap-up of the reached call)."""
    return ratio(counters.callback_delay_seconds, counters.callbacks_completed, 2)


def occupancy(seconds: Mapping[str, float]) -> float | None:
    """Time offered, busy or in wrap-up / time ready, offered, busy or in wrap-up (agent seconds)."""
    working = sum(seconds.get(state, 0.0) for state in WORKING_STATES)
    available = sum(seconds.get(state, 0.0) for state in AVAILABLE_STATES)
    return ratio(working, available)


def kpis(counters: Counters) -> Kpis:
    """Every figure of one queue or the whole center from its counters."""
    return Kpis(
        offered=counters.offered,
        after_hours=counters.after_hours,
        answered=counters.answered,
        answered_within_threshold=counters.answered_within,
        abandoned=counters.abandoned,
        short_abandoned=counters.short_abandoned,
        left_unanswered=counters.left_unanswered,
        service_level=service_level(counters, "answered"),
        service_level_offered=service_level(counters, "offered"),
        abandon_rate=abandon_rate(counters),
        asa_seconds=asa(counters),
        handled=counters.handled,
        aht_seconds=aht(counters, "voice"),
        aht_by_channel={channel: aht(counters, channel) for channel in CHANNELS if counters.channel_handled.get(channel)},
        hold_seconds=round(counters.hold_seconds, 2),
        fcr=fcr(counters),
        first_contacts=counters.first_contacts,
        not_recorded=counters.not_recorded,
        csat=csat(counters),
        survey_mean=ratio(counters.survey_points, counters.surveys, 2),
        surveys=counters.surveys,
        callbacks_requested=counters.callbacks_requested,
        callbacks_waiting=counters.callbacks_waiting,
        callbacks_after_hours=counters.callbacks_after_hours,
        callbacks_promised=counters.callbacks_promised,
        callbacks_due=counters.callbacks_due,
        callbacks_attempted=counters.callbacks_attempted,
        callbacks_reached=counters.callbacks_reached,
        callbacks_completed=counters.callbacks_completed,
        callbacks_expired=counters.callbacks_expired,
        callback_delay_seconds=callback_delay(counters),
        transfers_in=counters.transfers_in,
        transfers_out=counters.transfers_out,
        overflows=counters.overflows,
        closed=counters.closed,
    )


def add(total: Counters, other: Counters) -> Counters:
    """`total` with `other`'s counts added in (for sums over days or queues); returns `total`."""
    for field in total.__struct_fields__:
        value = getattr(other, field)
        if isinstance(value, dict):
            mine = dict(getattr(total, field))
            for key, count in value.items():
                mine[key] = mine.get(key, 0) + count
            setattr(total, field, mine)
        else:
            setattr(total, field, getattr(total, field) + value)
    return total


def summed(counters: Iterable[Counters]) -> Counters:
    total = Counters()
    for item in counters:
        add(total, item)
    return total
