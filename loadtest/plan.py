"""What a load test does, decided before it starts: the center it runs on and the calls it makes.

The runner calls these functions and writes their results into the run's folder: the cluster
config (`source.toml`, then `cluster.toml` with free ports) and `plan.json`, which the Locust
process reads. Nothing here talks to the network or imports Locust.

Three shapes (loadtest/__init__.py has the reasoning):

* `day` — the simulator's 2,000-call weekday (sim/scenarios/busan-weekday.toml: the 120
  day profile by 15-minute intervals, topics, channels, vulnerable callers, patience,
  call-back requests, transfers, abusive callers, dispositions, surveys), every call drawn in
  advance and then compressed: a model second lasts `1 / factor` real seconds. The center's
  own durations (service-level threshold, ring timeout, wrap-up limit, recovery after an
  abusive call, max wait, ...) are divided by the same factor, so the compressed center
  keeps the same proportions and its service level means what it means for a real day.
* `stress` — a ramp of call rates through the full life cycle (create, offer, answer, hang
  up, wrap up) on a generated center with many agents who answer at once and talk briefly,
  so that the ACD pipeline, not the modelled people, is the limit.
* `soak` — the stress center at one steady rate for a long time.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "examples" / "busan-120.toml"

# Durations of the center (seconds) that a compressed day divides by its factor, and the
# smallest value each may take. A timer that fires sooner than an HTTP round trip plus a
# scheduler hiccup would turn noise into missed offers and cut wrap-ups, so the two timers
# that race the agents' requests keep at least a second; the measures (thresholds) keep
# their exact compressed value, because they only classify what happened.
SCALED_KEYS: dict[str, float] = {
    "service_level_threshold": 0.0,
    "short_abandon_seconds": 0.0,
    "priority_weight_seconds": 0.0,
    "callback_preferred_seconds": 0.0,
    "recovery_seconds": 0.0,
    "wrapup_seconds": 1.0,
    "ring_timeout": 1.0,
    "aht_seconds": 0.001,
    "max_wait": 0.0,
}
# Below this service-level threshold (real seconds), HTTP and scheduling noise of a few tens
# of milliseconds decide whether a call counts as answered in time: the service level of a
# more compressed day is reported but not checked.
SERVICE_LEVEL_THRESHOLD_MIN_SECONDS = 0.2

# Event streams: a short heartbeat lets a desk notice a silent (stopped) node within seconds,
# and every agent desk holds a stream of its own.
LIMITS = """
[limits]
stream_heartbeat_seconds = 2.0
streams_per_token_max = 2000
connections_max = 4096
"""


def _format(value: float) -> str:
    return repr(round(value, 6))


def compress_center(text: str, factor: float) -> str:
    """The config text with every center duration divided by `factor` (see SCALED_KEYS)."""

    def scale(match: re.Match[str]) -> str:
        key, value = match[1], float(match[2])
        if value == 0:
            return match[0]
        return f"{key} = {_format(max(SCALED_KEYS[key], value / factor))}"

    keys = "|".join(SCALED_KEYS)
    text = re.sub(rf"^({keys}) = ([0-9.]+)", scale, text, flags=re.MULTILINE)
    # Skill relaxation steps: `relaxation = [{ after = 30, min_level = 1 }]`.
    text = re.sub(r"\bafter = ([0-9.]+)", lambda m: f"after = {_format(float(m[1]) / factor)}", text)
    return text + LIMITS


def stress_center(text: str, agents: int, threshold_seconds: float) -> tuple[str, list[str]]:
    """The sample center with its agents replaced by `agents` generated voice agents.

    Each generated agent has every voice topic at level 3 (the queues' skill floors and the
    abuse queue's level-5 rule still apply: a few agents get level 5 everywhere), no
    recovery time after abusive calls, and the whole center a service-level threshold of
    `threshold_seconds`: with agents who answer at once, the wait is the pipeline's latency.
    """
    head = text.split("\n[[agents]]", 1)[0]
    head = re.sub(r"^(service_level_threshold) = ([0-9.]+)", f"\\1 = {_format(threshold_seconds)}", head, flags=re.MULTILINE)
    head = re.sub(r"^(recovery_seconds) = ([0-9.]+)", "\\1 = 0", head, flags=re.MULTILINE)
    # Not the text channel's skill, nor the drill queue's (no agent may serve `acd drill`'s queue).
    topics = sorted({skill for skill in re.findall(r'^skills = \["([a-z]+)"\]', head, flags=re.MULTILINE)} - {"text", "drill"})
    names = [f"desk-{number:04d}" for number in range(1, agents + 1)]
    blocks = []
    for index, name in enumerate(names):
        level = 5 if index % 10 == 0 else 3
        skills = ", ".join(f"{topic} = {level}" for topic in topics)
        blocks.append(f'[[agents]]\nname = "{name}"\nskills = {{ {skills} }}\ncapacity = {{ voice = 1 }}\n')
    return head.rstrip() + "\n\n" + "\n".join(blocks) + LIMITS, names


def agent_names(text: str) -> list[str]:
    return re.findall(r'^\[\[agents\]\]\s*\nname = "([^"]+)"', text, flags=re.MULTILINE)


def voice_topics(text: str) -> dict[str, float]:
    """Topic weights of docs/domain.md for the voice queues the config has (transport 38.7 %, ...)."""
    weights = {
        "transport": 0.387, "culture": 0.118, "welfare": 0.105, "passport": 0.092, "tax": 0.082,
        "water": 0.071, "parking": 0.060, "events": 0.047, "complaints": 0.038,
    }
    queues = set(re.findall(r'^\[\[queues\]\]\s*\nname = "([^"]+)"', text, flags=re.MULTILINE))
    return {topic: weight for topic, weight in weights.items() if topic in queues}


# ---------------------------------------------------------------------------------- the day


class DayPlan(msgspec.Struct, kw_only=True):
    factor: float
    model_start: float
    model_seconds: float
    plan: dict[str, Any]


def _rounded(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


def day_plan(
    *, scenario_name: str, minutes: float, calls: int, seed: int, agents: list[str], drain_seconds: float | None,
) -> DayPlan:
    """Draw the scenario's day and compress it into `minutes` of real time.

    The model window is the day profile's whole span (07:00-21:00 for the 120 weekday), so
    the factor does not depend on the draw. Agents staff the whole window: the compressed
    center is always open (a calendar works on the wall clock, not on model time), so the
    few callers before 08:30 and after 18:30 are served instead of being called back at
    the next opening. The scenario's breaks and lunch turns are kept.
    """
    from sim.workload import INTERVAL_SECONDS, CallFactory, agent_plan, load_scenario

    scenario = load_scenario(scenario_name)
    if calls != round(scenario.volume.weekday):
        scenario = msgspec.structs.replace(scenario, volume=msgspec.structs.replace(scenario.volume, weekday=float(calls)))
    day = dt.date.fromisoformat(scenario.scenario.start_date)
    drawn = CallFactory(scenario, random.Random(seed)).day(day)
    start_of_day = scenario.day_start(day)
    weights = scenario.weights_of(day)
    busy = [index for index, weight in enumerate(weights) if weight > 0]
    model_start = start_of_day + busy[0] * INTERVAL_SECONDS
    model_seconds = (busy[-1] + 1 - busy[0]) * INTERVAL_SECONDS
    duration = minutes * 60.0
    factor = model_seconds / duration
    ring = scenario.agents.ring_delay
    plan_calls = []
    for spec in drawn:
        plan_calls.append({
            "id": spec.id, "at": round((spec.arrival - model_start) / factor, 4), "queue": spec.queue,
            "channel": spec.channel, "topic": spec.topic, "caller": spec.caller, "vulnerable": spec.vulnerable,
            "talk": round(spec.talk / factor, 4), "wrapup": round(spec.wrapup / factor, 4),
            "patience": _rounded(spec.patience / factor), "callback_after": _rounded(spec.callback_after / factor),
            "transfer_to": spec.transfer_to, "talk_after_transfer": round(spec.talk_after_transfer / factor, 4),
            "abusive": spec.abusive, "disposition": spec.disposition,
            "callback_in": round(spec.callback_in / factor, 4), "survey": spec.survey,
        })
    breaks: dict[str, list[list[Any]]] = {name: [] for name in agents}
    for action in agent_plan(scenario, day):
        if action.action not in ("not_ready", "ready") or action.agent not in breaks:
            continue
        at = (action.at - model_start) / factor
        if 0 <= at <= duration:
            breaks[action.agent].append([round(at, 3), action.action, action.reason])
    for name in breaks:
        # A break's "ready" that falls before any "not_ready" (the shift start) is dropped.
        while breaks[name] and breaks[name][0][1] == "ready":
            breaks[name].pop(0)
    drain = drain_seconds if drain_seconds is not None else min(60.0, max(10.0, duration * 0.1))
    plan = {
        "shape": "day", "factor": factor, "duration": duration, "drain": drain, "seed": seed,
        "model_start": model_start, "scenario": scenario.scenario.name,
        "stream": "agent", "agents": agents, "breaks": breaks, "calls": plan_calls,
        # Call-backs the ACD creates on "callback" wrap-ups are talked for the mean talk time.
        "talk": round(scenario.durations.talk.expected() / factor, 4),
        "ring_delay": [ring.low / factor, ring.high / factor] if ring is not None and ring.distribution == "uniform" else [0.0, 0.0],
        "miss_probability": scenario.agents.miss_probability,
        "ready_after_miss": scenario.agents.ready_after_miss_seconds / factor,
        "supervisor_every": 1.0,
        "target_service_level": scenario.target.service_level,
        "threshold_seconds": scenario.target.threshold_seconds / factor,
    }
    return DayPlan(factor=factor, model_start=model_start, model_seconds=model_seconds, plan=plan)


# ---------------------------------------------------------------------------------- stress, soak


def ramp_steps(minutes: float, rates: list[float] | None, step_seconds: float | None) -> list[list[float]]:
    """[[rate, seconds], ...]: the given rates (or a default ladder) in equal steps filling `minutes`."""
    ladder = rates or [10, 25, 50, 75, 100, 125, 150, 175, 200, 250]
    seconds = step_seconds or max(5.0, minutes * 60.0 / len(ladder))
    return [[float(rate), float(seconds)] for rate in ladder]


def rate_plan(
    *, shape: str, steps: list[list[float]], agents: list[str], topics: dict[str, float], seed: int,
    talk_seconds: float, threshold_seconds: float, target_service_level: float, drain_seconds: float,
    p99_ms: float | None = None, step_repeats_max: int = 0,
) -> dict[str, Any]:
    """A plan of steady Poisson arrivals per step (the Locust process draws them from `seed`).

    `p99_ms` and `step_repeats_max`: a step whose p99 misses `p99_ms` runs once more at the
    same rate, up to `step_repeats_max` times a run (loadtest/locustfile_acd.py, `ramp`)."""
    return {
        "shape": shape, "factor": 1.0, "duration": sum(seconds for _rate, seconds in steps), "drain": drain_seconds,
        "seed": seed, "stream": "center", "agents": agents, "breaks": {}, "steps": steps, "topics": topics,
        "talk": talk_seconds, "ring_delay": [0.0, 0.0], "miss_probability": 0.0, "ready_after_miss": 0.0,
        "supervisor_every": 2.0, "target_service_level": target_service_level, "threshold_seconds": threshold_seconds,
        # Stop the ramp once callers pile up: this many seconds of arrivals unanswered.
        "backlog_seconds": 5.0,
        "p99_ms": p99_ms, "step_repeats_max": step_repeats_max,
    }
