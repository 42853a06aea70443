"""Opening hours: is a calendar open at an instant, and when does it open next.

Pure functions of (calendar, timestamp). Time zones come from the standard `zoneinfo`
database (the `tzdata` package supplies it where the system has none); the tables are read
once and cached, so the core stays free of I/O on its hot path.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from .config import WEEKDAYS, Calendar, load_zone, parse_span


@lru_cache(maxsize=64)
class DayClock:
    """Maps timestamps to the local day and 15-minute interval, cached per day.

    Statistics are kept per local day and interval (docs/domain.md's centers report by day and
    staff by interval). Converting every timestamp through zoneinfo costs microseconds; the
    cache makes the common case (same day as the last call) two comparisons.
    """

    __slots__ = ("zone", "_start", "_end", "_day", "_key", "_key_start", "_key_end")

    def __init__(self, time_zone: str) -> None:
        self.zone = load_zone(time_zone)
        self._start = 1.0
        self._end = 0.0
        self._day = ""
        # The last (day, interval) answered, and a range of instants that surely map to it.
        self._key = ("", 0)
        self._key_start = 1.0
        self._key_end = 0.0

    def locate(self, at: float) -> tuple[str, int]:
        """(ISO local date, interval index 0..95) of the timestamp `at`."""
        if self._key_start <= at < self._key_end:
            return self._key
        if not self._start <= at < self._end:
            local = dt.datetime.fromtimestamp(at, self.zone)
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            self._start = midnight.timestamp()
            self._end = (midnight + dt.timedelta(days=1)).timestamp()
            self._day = midnight.date().isoformat()
        start = self._start
        interval = min(95, int((at - start) // 900))
        key = (self._day, interval)
        # Within a millisecond of the interval's edges the formula above decides (float
        # rounding); inside them every instant maps to this same key.
        low = start + interval * 900 + 0.001
        high = (start + (interval + 1) * 900 if interval < 95 else self._end) - 0.001
        if low <= at < high:
            self._key, self._key_start, self._key_end = key, low, high
        return key

    def bounds(self, at: float) -> tuple[str, float, float]:
        """(ISO local date, start, end) of the local day that holds `at`."""
        if not self._start <= at < self._end:
            self._key_end = 0.0  # recomputes the day
        self.locate(at)
        return self._day, self._start, self._end


def _spans_for(calendar: Calendar, day: dt.date) -> list[tuple[int, int]]:
    iso = day.isoformat()
    if iso in calendar.holidays:
        spans = calendar.holidays[iso]
    else:
        spans = calendar.hours.get(WEEKDAYS[day.weekday()], [])
    return sorted(parse_span(span) for span in spans)


def is_open(calendar: Calendar | None, at: float) -> bool:
    if calendar is None or calendar.always_open:
        return True
    local = dt.datetime.fromtimestamp(at, load_zone(calendar.time_zone))
    minute = local.hour * 60 + local.minute + local.second / 60
    return any(start <= minute < end for start, end in _spans_for(calendar, local.date()))


# How far from a span's boundary `open_between` still vouches for its answer: closer than
# this, `is_open` (which reads the local time rounded to microseconds) decides.
_MARGIN_SECONDS = 0.001


def open_between(calendar: Calendar | None, at: float) -> tuple[bool, float, float]:
    """`is_open(calendar, at)`, and a range [start, end) around `at` with that same answer.

    The range stops short of the next opening or closing (and of the local day's ends); it
    is empty when `at` is within a millisecond of one, or on a day whose UTC offset
    changes (daylight saving), where wall-clock minutes and instants do not map one to one.
    """
    result = is_open(calendar, at)
    if calendar is None or calendar.always_open:
        return result, float("-inf"), float("inf")
    zone = load_zone(calendar.time_zone)
    day = dt.datetime.fromtimestamp(at, zone).date()
    midnight = dt.datetime.combine(day, dt.time(0), zone)
    following = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), zone)
    start = midnight.timestamp()
    end = following.timestamp()
    last = dt.datetime.fromtimestamp(end - 1, zone)
    if end - start != 86400 or midnight.utcoffset() != last.utcoffset():
        return result, at, at
    low, high = start, end
    for span_start, span_end in _spans_for(calendar, day):
        for minute in (span_start, span_end):
            boundary = start + minute * 60
            if boundary <= at:
                low = max(low, boundary)
            else:
                high = min(high, boundary)
    low += _MARGIN_SECONDS
    high -= _MARGIN_SECONDS
    if not low <= at < high:
        return result, at, at
    return result, low, high


def next_opening(calendar: Calendar | None, at: float, horizon_days: int = 31) -> float | None:
    """The first instant >= `at` at which the calendar is open; None if closed for the horizon."""
    if calendar is None or calendar.always_open or is_open(calendar, at):
        return at
    zone = load_zone(calendar.time_zone)
    local = dt.datetime.fromtimestamp(at, zone)
    for offset in range(horizon_days + 1):
        day = local.date() + dt.timedelta(days=offset)
        for start, _end in _spans_for(calendar, day):
            opening = dt.datetime.combine(day, dt.time(0), zone) + dt.timedelta(minutes=start)
            if opening.timestamp() >= at:
                return opening.timestamp()
    return None
