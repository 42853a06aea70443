"""Workload models: who calls when, about what, for how long, and who answers.

A scenario is a TOML file (`sim/scenarios/*.toml`); this module reads it into frozen msgspec
structs and turns it into what the engine needs:

* a center configuration for the routing core (the referenced sample center, with the
  scenario's calendar, skill and agent overrides applied);
* for every simulated day, the list of calls (`CallSpec`), each one *pre-drawn*: arrival time,
  queue, channel, topic, vulnerable or not, handling time, patience, and what the caller and
  the agent will do (ask for a call-back, transfer, flag abuse, answer the survey);
* the agents' day plan: shifts, breaks (not ready) and the desk behaviour (ring delay, missed
  offers, rest when occupancy runs high).

Facts the defaults come from (docs/domain.md): about 2,000 calls a day at a 28-agent center,
weekends at 8-10 % of a weekday (Gwangju: 117-147 a day), transport the largest topic at
38.7 %, first-contact resolution 78 %, satisfaction around 94 / 100, voice plus SMS and chat.
The day profile (morning peak 10-11, lunch dip, afternoon peak) is a typical city-hall call
pattern, not a measured one: replace it with the center's own interval history when known.

Randomness: every draw comes from one `random.Random` per purpose, seeded from the run's
integer seed, so that one seed reproduces a run exactly. Calls are drawn from their own stream
in a fixed order, so that two runs that differ only in staffing see the very same calls
(common random numbers: the difference in results is the staffing, not the luck).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import random
import tomllib
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec

from acd.core.config import Agent, CenterConfig

INTERVAL_SECONDS = 900  # the core's statistics interval (state.py: 96 per day)
INTERVALS_PER_DAY = 96
SCENARIO_DIR = Path(__file__).parent / "scenarios"
REPO_ROOT = Path(__file__).resolve().parent.parent
DayType = Literal["weekday", "weekend", "holiday"]
DAY_TYPES: tuple[str, ...] = ("weekday", "weekend", "holiday")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Clock = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")]


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the key at fault."""


# ---------------------------------------------------------------------------------- durations


class Distribution(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A duration in seconds: exponential, lognormal, uniform, fixed, or an empirical table.

    `empirical` takes `table = [[seconds, cumulative probability], ...]`, starting at
    probability 0 and ending at 1; a draw interpolates the inverse distribution function
    linearly between the rows (so a table of a center's own handling-time percentiles works
    as it is). `low`/`high` clip any draw (the lognormal's tail is long).
    """

    distribution: Literal["exponential", "lognormal", "uniform", "fixed", "empirical"]
    mean: NonNegative | None = None
    sd: NonNegative | None = None
    low: NonNegative | None = None
    high: NonNegative | None = None
    table: list[tuple[float, float]] = []

    def check(self, key: str) -> None:
        kind = self.distribution
        if kind in ("exponential", "fixed") and self.mean is None:
            raise ScenarioError(f"{key}: {kind} needs mean")
        if kind == "lognormal" and (self.mean is None or self.sd is None or self.mean <= 0):
            raise ScenarioError(f"{key}: lognormal needs mean > 0 and sd")
        if kind == "uniform" and (self.low is None or self.high is None or self.low > self.high):
            raise ScenarioError(f"{key}: uniform needs low <= high")
        if kind == "empirical":
            probabilities = [p for _v, p in self.table]
            values = [v for v, _p in self.table]
            if (
                len(self.table) < 2 or probabilities[0] != 0 or probabilities[-1] != 1
                or probabilities != sorted(probabilities) or values != sorted(values)
            ):
                raise ScenarioError(f"{key}: empirical needs a table of [seconds, cumulative probability] rows, increasing from 0 to 1")

    def sampler(self, stream: random.Random) -> Callable[[], float]:
        """A function that draws one duration from `stream`.

        The draws are the standard library's (`expovariate`, `lognormvariate`, `uniform`),
        written out inline: the same arithmetic on the same `stream.random()` values, so the
        same numbers, without two or three Python calls per draw (tests/test_sim.py checks
        that they agree).
        """
        kind = self.distribution
        low = self.low if self.low is not None else 0.0
        high = self.high if self.high is not None else math.inf
        draw = stream.random
        log = math.log
        if kind == "fixed":
            value = float(self.mean or 0.0)
            return lambda: value
        if kind == "exponential":
            mean = float(self.mean or 0.0)
            if mean == 0:
                return lambda: 0.0
            rate = 1.0 / mean
            if self.low is None and self.high is None:
                return lambda: -log(1.0 - draw()) / rate
            return lambda: min(high, max(low, -log(1.0 - draw()) / rate))
        if kind == "lognormal":
            mean = float(self.mean or 1.0)
            sd = float(self.sd or 0.0)
            sigma = math.sqrt(math.log1p((sd / mean) ** 2))
            mu = math.log(mean) - sigma * sigma / 2
            exp = math.exp
            magic = random.NV_MAGICCONST  # type: ignore[attr-defined]  # not in typeshed

            def lognormal() -> float:
                # random.Random.normalvariate (Kinderman and Monahan), then exp.
                while True:
                    u1 = draw()
                    u2 = 1.0 - draw()
                    z = magic * (u1 - 0.5) / u2
                    if z * z / 4.0 <= -log(u2):
                        break
                value = exp(mu + z * sigma)
                return min(high, max(low, value))

            return lognormal
        if kind == "uniform":
            lower, upper = float(self.low or 0.0), float(self.high or 0.0)
            width = upper - lower
            return lambda: lower + width * draw()
        values = [float(v) for v, _p in self.table]
        probabilities = [float(p) for _v, p in self.table]

        def empirical() -> float:
            u = draw()
            index = min(len(values) - 1, max(1, bisect.bisect_right(probabilities, u)))
            p0, p1 = probabilities[index - 1], probabilities[index]
            v0, v1 = values[index - 1], values[index]
            fraction = 0.0 if p1 == p0 else (u - p0) / (p1 - p0)
            return min(high, max(low, v0 + fraction * (v1 - v0)))

        return empirical

    def expected(self, samples: int = 20_000) -> float:
        """The mean, exact where known, otherwise by a fixed-seed Monte Carlo estimate."""
        clipped = self.low is not None or self.high is not None
        if self.distribution in ("fixed", "exponential") and not clipped:
            return float(self.mean or 0.0)
        if self.distribution == "lognormal" and not clipped:
            return float(self.mean or 0.0)
        if self.distribution == "uniform":
            return (float(self.low or 0.0) + float(self.high or 0.0)) / 2
        draw = self.sampler(random.Random(12345))
        return sum(draw() for _ in range(samples)) / samples


def exponential(mean: float) -> Distribution:
    return Distribution(distribution="exponential", mean=mean)


# ---------------------------------------------------------------------------------- profiles

# Relative arrival rate at a few clock times; linear in between, zero outside. Evaluated at
# each 15-minute interval's midpoint. The shape of a city "120" line: a few callers before
# opening (they get the closed message and a call-back), a morning peak around 10-11, a dip
# over lunch, a second, lower peak after 14:00, and a tail after closing.
BUILTIN_PROFILES: dict[str, list[tuple[str, float]]] = {
    "120-weekday": [
        ("07:00", 0.0), ("07:30", 0.5), ("08:00", 1.0), ("08:30", 3.5), ("09:00", 7.5),
        ("09:30", 9.5), ("10:00", 11.5), ("10:30", 12.0), ("11:00", 11.5), ("11:30", 9.5),
        ("12:00", 6.5), ("12:30", 5.5), ("13:00", 7.5), ("13:30", 9.5), ("14:00", 10.5),
        ("14:30", 10.8), ("15:00", 10.2), ("15:30", 9.5), ("16:00", 8.8), ("16:30", 8.0),
        ("17:00", 7.0), ("17:30", 5.8), ("18:00", 4.2), ("18:30", 1.5), ("19:00", 0.6),
        ("20:00", 0.3), ("21:00", 0.0),
    ],
    "120-weekend": [
        ("08:00", 0.0), ("08:30", 0.6), ("09:00", 4.5), ("10:00", 8.0), ("11:00", 9.0),
        ("12:00", 7.0), ("13:00", 6.5), ("14:00", 8.0), ("15:00", 7.5), ("16:00", 6.5),
        ("17:00", 5.0), ("18:00", 2.0), ("19:00", 0.6), ("21:00", 0.0),
    ],
    "flat": [("00:00", 1.0), ("24:00", 1.0)],
}


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def profile_weights(points: list[tuple[str, float]]) -> list[float]:
    """96 interval weights from (HH:MM, relative rate) points, linear between points."""
    anchors = sorted((_minutes(clock), float(rate)) for clock, rate in points)
    weights = []
    for interval in range(INTERVALS_PER_DAY):
        middle = interval * 15 + 7.5
        weight = 0.0
        for (m0, r0), (m1, r1) in zip(anchors, anchors[1:], strict=False):
            if m0 <= middle <= m1:
                weight = r0 if m1 == m0 else r0 + (r1 - r0) * (middle - m0) / (m1 - m0)
                break
        weights.append(max(0.0, weight))
    return weights


# ---------------------------------------------------------------------------------- scenario


class ScenarioSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = "scenario"
    description: str = ""
    center: str = "busan-120"       # a TOML path (relative to the scenario) or a sample's name
    start_date: str = "2026-11-23"  # the first simulated local date (a Monday)
    days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 1
    seed: int = 1


class TargetSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    service_level: Share = 0.8
    threshold_seconds: NonNegative = 20.0


class VolumeSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Calls per day by day type; `scale` multiplies all (a storm day is scale = 3)."""

    weekday: NonNegative = 2000.0
    weekend: NonNegative = 180.0     # docs/domain.md: weekends carry about 8-10 % of a weekday
    holiday: NonNegative = 180.0
    scale: NonNegative = 1.0
    after_holiday: NonNegative = 1.0  # the first weekday after days off that include a holiday, e.g. 1.3
    weekday_factors: dict[str, NonNegative] = {}  # e.g. {mon = 1.15, fri = 0.95}
    exact_total: bool = False        # True: exactly the day's total; False: Poisson around it


class ProfileSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The day's shape by day type: a built-in name or [["HH:MM", rate], ...] points."""

    weekday: str | list[tuple[Clock, NonNegative]] = "120-weekday"
    weekend: str | list[tuple[Clock, NonNegative]] = "120-weekend"
    holiday: str | list[tuple[Clock, NonNegative]] = "120-weekend"


class MixSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the calls are: topics, channels and the callers' and agents' choices."""

    # docs/domain.md: transport 38.7 %, the largest; the others in the order docs/domain.md lists them.
    topics: dict[str, NonNegative] = msgspec.field(default_factory=lambda: {
        "transport": 0.387, "culture": 0.118, "welfare": 0.105, "passport": 0.092, "tax": 0.082,
        "water": 0.071, "parking": 0.060, "events": 0.047, "complaints": 0.038,
    })
    topic_queues: dict[str, str] = {}          # topic -> queue (default: the queue named after it)
    channels: dict[str, NonNegative] = msgspec.field(default_factory=lambda: {"voice": 0.92, "chat": 0.05, "sms": 0.03})
    channel_queues: dict[str, str] = msgspec.field(default_factory=lambda: {"chat": "text", "sms": "text"})  # channels with their own queue
    vulnerable: Share = 0.08                    # elderly, disabled: served first (docs/domain.md)
    callback_request: Share = 0.10              # share of callers who ask for a call-back if kept waiting
    callback_request_after: Distribution = exponential(90.0)
    transfer: Share = 0.05                      # share of answered voice calls the agent transfers
    transfer_targets: dict[str, NonNegative] = msgspec.field(default_factory=lambda: {"district": 0.6, "welfare": 0.2, "tax": 0.2})
    abusive: Share = 0.004                      # "insults and threats several times a day"
    abusive_repeat_callers: Annotated[int, msgspec.Meta(ge=0)] = 5  # a few callers do it again and again
    abusive_repeat_share: Share = 0.5
    resolved: Share = 0.78                      # first-contact resolution (Busan: 25 % -> 78 %)
    callback_promised: Share = 0.05             # the agent promises to call back later
    callback_promised_after: Distribution = Distribution(distribution="uniform", low=1800, high=7200)
    survey: Share = 0.3                         # share of completed calls that answer the survey
    survey_scores: dict[str, NonNegative] = msgspec.field(default_factory=lambda: {"5": 0.62, "4": 0.30, "3": 0.05, "2": 0.02, "1": 0.01})
    survey_after_seconds: NonNegative = 60.0


class DurationSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    talk: Distribution | None = None
    wrapup: Distribution | None = None
    patience: Distribution | None = None


class DurationsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Handling (talk) time, after-call work and patience; per-channel overrides."""

    talk: Distribution = Distribution(distribution="lognormal", mean=170.0, sd=110.0, high=3600.0)
    wrapup: Distribution = Distribution(distribution="lognormal", mean=25.0, sd=15.0, high=600.0)
    patience: Distribution | None = exponential(240.0)  # none: callers never hang up
    channels: dict[str, DurationSet] = {}

    def pick(self, channel: str, which: str) -> Distribution | None:
        override = self.channels.get(channel)
        value = getattr(override, which) if override is not None else None
        chosen: Distribution | None = value if value is not None else getattr(self, which)
        return chosen


class BreakSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A not-ready period. With `stagger` = k, agents take it in k turns, one after another."""

    at: Clock
    minutes: Annotated[float, msgspec.Meta(gt=0)]
    reason: str = "break"
    stagger: Annotated[int, msgspec.Meta(ge=1)] = 1


class ShiftSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who works when: `agents` is "all", "voice", "text", a list of names, or a count of
    voice agents (the first ones in the center's list)."""

    agents: str | list[str] | int = "all"
    start: Clock = "08:30"
    end: Clock = "18:30"
    login_minutes_before: NonNegative = 5.0
    days: list[Literal["weekday", "weekend", "holiday"]] = msgspec.field(default_factory=lambda: ["weekday", "weekend", "holiday"])
    breaks: list[BreakSection] = []


class AgentsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How agents behave at the desk, and changes to the center's agents for this scenario."""

    ring_delay: Distribution | None = Distribution(distribution="uniform", low=1.0, high=5.0)
    miss_probability: Share = 0.01              # an offer rings out (the core sets not-ready)
    ready_after_miss_seconds: NonNegative = 30.0
    max_occupancy: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0  # above: a short rest
    occupancy_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1800.0
    rest_seconds: NonNegative = 120.0
    skills: dict[str, dict[str, Annotated[int, msgspec.Meta(ge=1, le=5)]]] = {}
    extra: list[Agent] = []


class CalendarOverride(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Changes to one of the center's calendars (weekend hours, one more holiday)."""

    name: str
    hours: dict[str, list[str]] = {}
    holidays: dict[str, list[str]] = {}
    replace_hours: bool = False
    always_open: bool | None = None
    closed_action: Literal["reject", "callback"] | None = None


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, dict=True):
    scenario: ScenarioSection = ScenarioSection()
    target: TargetSection = TargetSection()
    volume: VolumeSection = VolumeSection()
    profile: ProfileSection = ProfileSection()
    mix: MixSection = MixSection()
    durations: DurationsSection = DurationsSection()
    agents: AgentsSection = AgentsSection()
    shifts: list[ShiftSection] = msgspec.field(default_factory=lambda: [ShiftSection()])
    calendars: list[CalendarOverride] = []
    path: str = ""   # where it was read from (for relative center paths); not in the file

    # ------------------------------------------------------------------ derived

    @cached_property
    def base_center(self) -> CenterConfig:
        return load_center(self.scenario.center, Path(self.path).parent if self.path else None)

    @cached_property
    def center(self) -> CenterConfig:
        """The center the core runs: the sample with this scenario's overrides."""
        return apply_overrides(self.base_center, self)

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.center.time_zone)

    def dates(self, days: int | None = None, start: str | None = None) -> list[dt.date]:
        first = dt.date.fromisoformat(start or self.scenario.start_date)
        return [first + dt.timedelta(days=offset) for offset in range(days or self.scenario.days)]

    def day_start(self, day: dt.date) -> float:
        """Epoch seconds of local midnight (what the core's statistics call the day)."""
        return dt.datetime.combine(day, dt.time(0), self.zone).timestamp()

    def holidays(self) -> set[str]:
        days: set[str] = set()
        for calendar in self.center.calendars:
            days.update(calendar.holidays)
        return days

    def day_type(self, day: dt.date) -> str:
        if day.isoformat() in self.holidays():
            return "holiday"
        return "weekend" if day.weekday() >= 5 else "weekday"

    def volume_of(self, day: dt.date) -> float:
        volume = self.volume
        kind = self.day_type(day)
        total = float(getattr(volume, kind)) * volume.scale
        if kind == "weekday":
            total *= volume.weekday_factors.get(WEEKDAYS[day.weekday()], 1.0)
            if self.after_holiday(day):
                total *= volume.after_holiday
        return total

    def after_holiday(self, day: dt.date) -> bool:
        """Whether the days off just before `day` (a weekend, say) include a holiday."""
        previous = day - dt.timedelta(days=1)
        for _ in range(14):
            kind = self.day_type(previous)
            if kind == "holiday":
                return True
            if kind == "weekday":
                return False
            previous -= dt.timedelta(days=1)
        return False

    def weights_of(self, day: dt.date) -> list[float]:
        spec = getattr(self.profile, self.day_type(day))
        if isinstance(spec, str):
            if spec not in BUILTIN_PROFILES:
                raise ScenarioError(f"profile: unknown built-in profile {spec!r} (known: {', '.join(BUILTIN_PROFILES)})")
            spec = BUILTIN_PROFILES[spec]
        return profile_weights(list(spec))

    def expected_arrivals(self, day: dt.date) -> list[float]:
        """Expected calls per interval (all channels)."""
        weights = self.weights_of(day)
        total = sum(weights)
        volume = self.volume_of(day)
        return [volume * w / total if total else 0.0 for w in weights]

    def queue_for(self, channel: str, topic: str) -> str:
        if channel in self.mix.channel_queues:
            return self.mix.channel_queues[channel]
        return self.mix.topic_queues.get(topic, topic)

    def handling_seconds(self, channel: str = "voice") -> float:
        """Expected talk plus after-call work (capped by the queues' wrap-up limit)."""
        talk = self.durations.pick(channel, "talk")
        wrapup = self.durations.pick(channel, "wrapup")
        assert talk is not None and wrapup is not None
        limits = [q.wrapup_seconds for q in self.center.queues if not q.external and channel in q.channels and q.wrapup_seconds]
        if limits and wrapup is not None:
            cap = min(limits)
            draw = wrapup.sampler(random.Random(54321))
            mean_wrapup = sum(min(cap, draw()) for _ in range(20_000)) / 20_000
        else:
            mean_wrapup = wrapup.expected()
        return talk.expected() + mean_wrapup

    def check(self) -> None:
        """Cross-check the scenario against its center; raise ScenarioError naming the key."""
        center = self.center
        queues = {q.name: q for q in center.queues}
        for topic in self.mix.topics:
            for channel in self.mix.channels:
                queue = self.queue_for(channel, topic)
                if queue not in queues:
                    raise ScenarioError(f"mix.topics.{topic}: no queue {queue!r} in center {center.name!r} (set mix.topic_queues)")
                if channel not in queues[queue].channels:
                    raise ScenarioError(f"mix.channels.{channel}: queue {queue!r} does not take {channel} (set mix.channel_queues)")
        for target in self.mix.transfer_targets:
            if target not in queues:
                raise ScenarioError(f"mix.transfer_targets.{target}: no such queue")
        if not sum(self.mix.topics.values()) > 0 or not sum(self.mix.channels.values()) > 0:
            raise ScenarioError("mix: topics and channels need positive shares")
        for score in self.mix.survey_scores:
            if score not in {"1", "2", "3", "4", "5"}:
                raise ScenarioError(f"mix.survey_scores.{score}: scores are 1 to 5")
        if self.mix.resolved + self.mix.callback_promised > 1:
            raise ScenarioError("mix: resolved + callback_promised must not exceed 1")
        for key, dist in [
            ("durations.talk", self.durations.talk), ("durations.wrapup", self.durations.wrapup),
            ("durations.patience", self.durations.patience), ("agents.ring_delay", self.agents.ring_delay),
            ("mix.callback_request_after", self.mix.callback_request_after),
            ("mix.callback_promised_after", self.mix.callback_promised_after),
        ]:
            if dist is not None:
                dist.check(key)
        for channel, overrides in self.durations.channels.items():
            for which in ("talk", "wrapup", "patience"):
                dist = getattr(overrides, which)
                if dist is not None:
                    dist.check(f"durations.channels.{channel}.{which}")
        names = {a.name for a in center.agents}
        for index, shift in enumerate(self.shifts):
            for name in shift_agents(shift, center):
                if name not in names:
                    raise ScenarioError(f"shifts[{index}].agents: no agent {name!r}")
            if _minutes(shift.end) <= _minutes(shift.start):
                raise ScenarioError(f"shifts[{index}]: end must be after start")
        for day in self.dates():
            self.weights_of(day)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: {error}") from error


def scenario_path(name_or_path: str | Path) -> Path:
    """A path as given, or a shipped scenario's name (`busan-weekday`, `storm`, `weekend`)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise ScenarioError(f"{path}: no such scenario file")
        return path
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if not shipped.exists():
        names = ", ".join(shipped_scenarios())
        raise ScenarioError(f"{name_or_path!r} is neither a file nor a shipped scenario ({names})")
    return shipped


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml") if not p.stem.endswith(".center"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    path = scenario_path(name_or_path)
    return loads_scenario(path.read_text(encoding="utf-8"), path)


def loads_scenario(text: str, path: Path | str = "<scenario>") -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: {error}") from error
    raw["path"] = str(path)
    try:
        scenario = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as error:
        raise ScenarioError(f"{path}: {error}") from error
    scenario.check()
    return scenario


def load_center(reference: str, base: Path | None = None) -> CenterConfig:
    """The center a scenario names: a TOML path, or a sample (`busan-120`).

    A sample is looked up in the repository's `examples/` (the one the cluster runs), and
    falls back to the copy shipped with the simulator (`sim/scenarios/<name>.center.toml`, for
    an installed package); a test checks that the two agree.
    """
    from acd.settings import loads as load_settings

    candidates = []
    path = Path(reference)
    if path.suffix == ".toml":
        candidates.append(path if path.is_absolute() or base is None else base / path)
        candidates.append(path)
    else:
        candidates.append(REPO_ROOT / "examples" / f"{reference}.toml")
        candidates.append(SCENARIO_DIR / f"{reference}.center.toml")
    for candidate in candidates:
        if candidate.exists():
            return load_settings(candidate.read_text(encoding="utf-8"), str(candidate)).center
    raise ScenarioError(f"scenario.center: cannot find center {reference!r} (tried {', '.join(map(str, candidates))})")


def apply_overrides(center: CenterConfig, scenario: Scenario) -> CenterConfig:
    calendars = {c.name: c for c in center.calendars}
    for index, override in enumerate(scenario.calendars):
        calendar = calendars.get(override.name)
        if calendar is None:
            raise ScenarioError(f"calendars[{index}].name: the center has no calendar {override.name!r}")
        hours = dict(override.hours) if override.replace_hours else {**calendar.hours, **override.hours}
        changes: dict[str, object] = {"hours": hours, "holidays": {**calendar.holidays, **override.holidays}}
        if override.always_open is not None:
            changes["always_open"] = override.always_open
        if override.closed_action is not None:
            changes["closed_action"] = override.closed_action
        calendars[override.name] = msgspec.structs.replace(calendar, **changes)
    agents = []
    for agent in center.agents:
        skills = scenario.agents.skills.get(agent.name)
        agents.append(msgspec.structs.replace(agent, skills=skills) if skills is not None else agent)
    agents.extend(scenario.agents.extra)
    return msgspec.structs.replace(center, calendars=[calendars[c.name] for c in center.calendars], agents=agents)


def shift_agents(shift: ShiftSection, center: CenterConfig) -> list[str]:
    voice = [a.name for a in center.agents if a.capacity.voice > 0]
    text = [a.name for a in center.agents if a.capacity.voice == 0 and (a.capacity.chat or a.capacity.sms)]
    if isinstance(shift.agents, int):
        return voice[: shift.agents]
    if isinstance(shift.agents, list):
        return list(shift.agents)
    if shift.agents == "voice":
        return voice
    if shift.agents == "text":
        return text
    if shift.agents == "all":
        return [a.name for a in center.agents]
    raise ScenarioError(f"shifts.agents: {shift.agents!r} is not all, voice, text, a list or a count")


# ---------------------------------------------------------------------------------- calls


class CallSpec:
    """One pre-drawn call: when it comes, where it goes, and everything its people will do.

    Times are virtual epoch seconds; durations are seconds. `patience` is inf for a caller
    who never hangs up. The engine fills the outcome fields as the core reports them.
    """

    __slots__ = (
        "id", "arrival", "queue", "channel", "topic", "caller", "vulnerable", "talk", "wrapup",
        "patience", "callback_after", "transfer_to", "talk_after_transfer", "abusive",
        "disposition", "callback_in", "survey",
        # outcome, filled by the engine
        "outcome", "answered_at", "wait", "agent", "final_queue", "ended_at", "after_hours",
        "callback", "legs", "transfers", "connected_at", "wrapups", "wrapped_as",
    )

    def __init__(self, id: str, arrival: float, queue: str, talk: float, patience: float = math.inf,
                 channel: str = "voice", topic: str = "", caller: str = "01000000000", vulnerable: bool = False,
                 wrapup: float = 0.0, callback_after: float = math.inf, transfer_to: str = "",
                 talk_after_transfer: float = 0.0, abusive: bool = False, disposition: str = "resolved",
                 callback_in: float = 0.0, survey: int = 0) -> None:
        self.id = id
        self.arrival = arrival
        self.queue = queue
        self.channel = channel
        self.topic = topic
        self.caller = caller
        self.vulnerable = vulnerable
        self.talk = talk
        self.wrapup = wrapup
        self.patience = patience
        self.callback_after = callback_after
        self.transfer_to = transfer_to
        self.talk_after_transfer = talk_after_transfer
        self.abusive = abusive
        self.disposition = disposition
        self.callback_in = callback_in
        self.survey = survey
        self.outcome = ""
        self.answered_at: float | None = None
        self.wait: float | None = None
        self.agent = ""
        self.final_queue = queue
        self.ended_at: float | None = None
        self.after_hours = False
        self.callback = False
        self.legs = 0
        self.transfers = 0
        self.connected_at = 0.0  # when the current leg was answered
        self.wrapups = 0
        self.wrapped_as = ""     # the disposition the core recorded (a wrap-up limit may cut it short)


def _chooser(weights: dict[str, float], stream: random.Random) -> Callable[[], str]:
    names = list(weights)
    cumulative = []
    total = 0.0
    for name in names:
        total += float(weights[name])
        cumulative.append(total)
    draw = stream.random
    last = len(names) - 1
    bisect_right = bisect.bisect_right

    def choose() -> str:
        index = bisect_right(cumulative, draw() * total)
        return names[index if index < last else last]

    return choose


class CallFactory:
    """Draws calls for a scenario from one random stream, always in the same order."""

    def __init__(self, scenario: Scenario, stream: random.Random) -> None:
        self.scenario = scenario
        self.stream = stream
        mix = scenario.mix
        self.channel = _chooser(mix.channels, stream)
        self.topic = _chooser(mix.topics, stream)
        self.transfer_target = _chooser(mix.transfer_targets, stream) if mix.transfer_targets else (lambda: "")
        self.score = _chooser(mix.survey_scores, stream)
        self.callback_after = mix.callback_request_after.sampler(stream)
        self.callback_in = mix.callback_promised_after.sampler(stream)
        durations = scenario.durations
        self.talk: dict[str, Callable[[], float]] = {}
        self.wrapup: dict[str, Callable[[], float]] = {}
        self.patience: dict[str, Callable[[], float]] = {}
        for channel in mix.channels:
            talk = durations.pick(channel, "talk")
            wrapup = durations.pick(channel, "wrapup")
            patience = durations.pick(channel, "patience")
            assert talk is not None and wrapup is not None
            self.talk[channel] = talk.sampler(stream)
            self.wrapup[channel] = wrapup.sampler(stream)
            self.patience[channel] = patience.sampler(stream) if patience is not None else (lambda: math.inf)
        self.abusers = [f"0109{n:07d}" for n in range(mix.abusive_repeat_callers)]
        queues = {q.name: q for q in scenario.center.queues}
        self.voice_queues = {name for name, q in queues.items() if "voice" in q.channels}
        self.serial = 0
        # Per channel, its three samplers; per (channel, topic), its queue: one lookup per call.
        self._durations = {channel: (self.talk[channel], self.wrapup[channel], self.patience[channel]) for channel in mix.channels}
        self._queue_for: dict[tuple[str, str], str] = {}

    def call(self, arrival: float, day_tag: str) -> CallSpec:
        """One call; every draw is made whether used or not, to keep the stream aligned."""
        mix = self.scenario.mix
        random_draw = self.stream.random
        getrandbits = self.stream.getrandbits
        channel = self.channel()
        topic = self.topic()
        queue = self._queue_for.get((channel, topic))
        if queue is None:
            queue = self._queue_for[(channel, topic)] = self.scenario.queue_for(channel, topic)
        vulnerable = random_draw() < mix.vulnerable
        abusive = random_draw() < mix.abusive
        repeat = random_draw() < mix.abusive_repeat_share
        # stream.randrange(10**8), as the standard library draws it: 27 bits until below 10**8.
        number = getrandbits(27)
        while number >= 100_000_000:
            number = getrandbits(27)
        caller = self.abusers[number % len(self.abusers)] if abusive and repeat and self.abusers else f"010{number:08d}"
        talk_draw, wrapup_draw, patience_draw = self._durations[channel]
        talk = talk_draw()
        wrapup = wrapup_draw()
        patience = patience_draw()
        asks_callback = random_draw() < mix.callback_request
        callback_after = self.callback_after()
        transfers = random_draw() < mix.transfer
        target = self.transfer_target()
        talk_after_transfer = talk_draw()
        outcome = random_draw()
        callback_in = self.callback_in()
        surveyed = random_draw() < mix.survey
        score = int(self.score())
        if transfers and (channel != "voice" or target not in self.voice_queues or target == queue):
            transfers = False
        if outcome < mix.resolved:
            disposition = "resolved"
        elif outcome < mix.resolved + mix.callback_promised:
            disposition = "callback"
        else:
            disposition = "unresolved"
        self.serial += 1
        return CallSpec(
            f"{day_tag}-{self.serial:05d}", arrival, queue, talk, patience, channel, topic, caller, vulnerable,
            wrapup, callback_after if asks_callback else math.inf, target if transfers else "",
            talk_after_transfer, abusive, "transferred" if transfers else disposition, callback_in,
            score if surveyed else 0,
        )

    def day(self, day: dt.date) -> list[CallSpec]:
        """The day's calls in arrival order (Poisson by interval, or exactly the total)."""
        scenario = self.scenario
        start = scenario.day_start(day)
        expected = scenario.expected_arrivals(day)
        stream = self.stream
        times: list[float] = []
        if scenario.volume.exact_total:
            total = round(sum(expected))
            cumulative = []
            running = 0.0
            for value in expected:
                running += value
                cumulative.append(running)
            for _ in range(total):
                interval = min(len(expected) - 1, bisect.bisect_right(cumulative, stream.random() * running))
                times.append(start + (interval + stream.random()) * INTERVAL_SECONDS)
            times.sort()
        else:
            # A Poisson process with a rate constant within each interval: exponential gaps,
            # restarted at each interval's start (memoryless, so this is exact).
            for interval, count in enumerate(expected):
                if count <= 0:
                    continue
                rate = count / INTERVAL_SECONDS
                begin = start + interval * INTERVAL_SECONDS
                end = begin + INTERVAL_SECONDS
                at = begin + stream.expovariate(rate)
                while at < end:
                    times.append(at)
                    at += stream.expovariate(rate)
        tag = day.strftime("%m%d")
        return [self.call(at, tag) for at in times]


# ---------------------------------------------------------------------------------- agents


class AgentAction(msgspec.Struct, frozen=True):
    """One planned change of an agent's presence: login, ready, not_ready (with reason), logout."""

    at: float
    agent: str
    action: str
    reason: str = ""


def agent_plan(scenario: Scenario, day: dt.date) -> list[AgentAction]:
    """The day's logins, breaks and logouts, from the scenario's shifts."""
    center = scenario.center
    kind = scenario.day_type(day)
    start = scenario.day_start(day)
    actions: list[AgentAction] = []
    for shift in scenario.shifts:
        if kind not in shift.days:
            continue
        begin = start + _minutes(shift.start) * 60
        end = start + _minutes(shift.end) * 60
        for position, name in enumerate(shift_agents(shift, center)):
            actions.append(AgentAction(begin - shift.login_minutes_before * 60, name, "login"))
            actions.append(AgentAction(begin, name, "ready"))
            for pause in shift.breaks:
                turn = position % pause.stagger
                at = start + _minutes(pause.at) * 60 + turn * pause.minutes * 60
                if begin <= at < end:
                    actions.append(AgentAction(at, name, "not_ready", pause.reason))
                    actions.append(AgentAction(min(end, at + pause.minutes * 60), name, "ready"))
            actions.append(AgentAction(end, name, "logout"))
    # Stable by time: an agent's own steps keep their order (a break that ends as the shift
    # ends is followed by the logout, not preceded by it).
    actions.sort(key=lambda action: action.at)
    return actions
