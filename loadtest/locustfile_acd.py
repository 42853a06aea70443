"""Locust users for the ACD: a PBX, agent desktops and a supervisor, over HTTP only.

Run through `python -m loadtest run SHAPE` (loadtest/runner.py), which writes the plan, starts
the cluster and runs this file headless in its own process. It can also run by hand against a
running cluster:

    LOADTEST_PLAN=out/x/plan.json LOADTEST_OUT=out/x LOADTEST_NODES=http://127.0.0.1:8120,http://127.0.0.1:8121 \
        python -m locust -f loadtest/locustfile_acd.py --headless -u 30 -r 30 -H http://127.0.0.1:8120

Theory of operation
-------------------
* `Pbx` (one user) paces the arrivals itself from the plan: a greenlet per caller sleeps until
  its arrival time, creates the interaction (voice, chat or SMS, with its topic's queue and
  `vulnerable` for elderly and disabled callers, docs/domain.md) and waits for an agent. When the
  caller's patience runs out first it abandons; a caller who asks for a call-back first does
  so (and keeps the place). After the last arrival the PBX lets the agents drain the queues,
  then closes the day: callers still waiting hang up, unreached call-backs are dropped, agents
  finish and log out, and the PBX stops Locust. Nothing is left in a non-terminal state.
* `AgentDesk` (one user per configured agent, `fixed_count`) logs in, goes ready and follows
  an event stream (Server-Sent Events, resumed with Last-Event-ID after a failover). Each
  offer is handled in its own greenlet, so chat and SMS agents hold several at once: ring
  delay, answer, talk, hang up (or transfer), wrap up with a disposition (sometimes abusive,
  sometimes a promised call-back), then the caller's survey. Sometimes the agent misses an
  offer: the ring timeout sets them not ready and they come back after a while. Breaks and
  lunch follow the scenario's plan. In the `stress` and `soak` shapes hundreds of desks share
  one center stream (`/v1/events`, like a CTI gateway) instead of one stream per agent,
  since each stream costs the node a connection and its own writes.
* `Supervisor` (one user) polls queues and stats.

Every request goes through `AcdClient`, which finds the primary by itself with the same retry
decision as the project's own client (`acd.tools.client.retry_decision`, a pure function: no
Trio comes into this process): on no answer, a `503 not_primary` (it follows the address the
node names) or `shutting_down`, or a load balancer's 502/504, it switches node and repeats the
same request until a deadline; commands are idempotent, so a repeat of one that took effect
succeeds again (docs/design.md). It also measures the outage each client sees (first failed
write to next success).

Records, in `LOADTEST_OUT`: `journal-<pid>.jsonl` (every interaction this process created, and
everything that happened to it as Locust saw it, with times), `timeline-<pid>.json` (requests,
failures and a latency histogram per second). The runner checks them against the ACD.

This file must not be imported by pytest or by a process that runs Trio (gevent patches the
standard library when Locust starts).
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool
from geventhttpclient import HTTPClient
from geventhttpclient.client import HTTPClientPool
from locust import FastHttpUser, constant, events, task

from acd.tools.client import retry_decision

PLAN: dict[str, Any] = json.loads(Path(os.environ["LOADTEST_PLAN"]).read_text(encoding="utf-8"))
OUT = Path(os.environ.get("LOADTEST_OUT", "."))
NODES = [base.rstrip("/") for base in os.environ["LOADTEST_NODES"].split(",") if base]
# Through a load balancer (HAProxy) there is one address; a node's `not_primary` names a node
# address behind it, which a client outside must not use.
VIA_PROXY = os.environ.get("LOADTEST_PROXY") == "1"
RETRY_DEADLINE_SECONDS = float(os.environ.get("LOADTEST_RETRY_DEADLINE", "30"))
TERMINAL = {"completed", "abandoned", "transferred", "closed"}
STILL_IN_LINE = {"waiting", "offered", "scheduled"}
RANDOM = random.Random(PLAN["seed"] * 7919 + os.getpid())

# ---------------------------------------------------------------------------------- records


class Journal:
    """Append-only JSON lines, flushed by a greenlet every second and at exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("a", encoding="utf-8")
        self.lines: list[str] = []

    def write(self, event: str, **fields: Any) -> None:
        fields["e"] = event
        fields.setdefault("t", round(time.time(), 4))
        self.lines.append(json.dumps(fields, separators=(",", ":")))

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            self.file.write("\n".join(lines) + "\n")
            self.file.flush()


class Timeline:
    """Per wall-clock second: requests, failures and a latency histogram (Locust's rounding)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[int, list[Any]] = {}

    @staticmethod
    def bucket(milliseconds: float) -> int:
        if milliseconds < 100:
            return int(round(milliseconds))
        if milliseconds < 1000:
            return int(round(milliseconds, -1))
        return int(round(milliseconds, -2))

    def record(self, second: int, milliseconds: float, failed: bool, write: bool) -> None:
        row = self.seconds.get(second)
        if row is None:
            row = self.seconds[second] = [0, 0, 0, defaultdict(int)]
        row[0] += 1
        row[1] += failed
        row[2] += write
        row[3][self.bucket(milliseconds)] += 1

    def flush(self) -> None:
        data = {str(second): {"requests": row[0], "failures": row[1], "writes": row[2], "latency_ms": dict(row[3])}
                for second, row in sorted(self.seconds.items())}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(self.path)


JOURNAL = Journal(OUT / f"journal-{os.getpid()}.jsonl")
TIMELINE = Timeline(OUT / f"timeline-{os.getpid()}.json")


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float, exception: Any, start_time: float | None = None, **_: Any) -> None:
    end = (start_time or time.time()) + (response_time or 0) / 1000
    TIMELINE.record(int(end), response_time or 0.0, exception is not None, request_type != "GET")


def _flusher() -> None:
    while True:
        gevent.sleep(1.0)
        JOURNAL.flush()
        TIMELINE.flush()


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    gevent.spawn(_flusher)
    # Locust, gevent and the plan live as long as the process: keep them out of the cyclic
    # collector's full passes, whose pauses would show as request latency.
    gc.collect()
    gc.freeze()


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    JOURNAL.flush()
    TIMELINE.flush()


# ---------------------------------------------------------------------------------- finding the primary


class Router:
    """The node this process believes is the writable primary (shared by all its users)."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.current = bases[0]

    def failed(self, base: str, named: str | None) -> None:
        """A request to `base` failed; `named` is the primary the node pointed to, if any.

        Only the first user to notice moves `current` (compare and set on `base`), so that
        a burst of failures on the dead node does not make the users chase each other.
        """
        if named and not VIA_PROXY:
            address = named if named.startswith("http") else f"http://{named}"
            if address != base:
                self.current = address.rstrip("/")
                return
        if self.current == base and len(self.bases) > 1:
            index = self.bases.index(base) if base in self.bases else -1
            self.current = self.bases[(index + 1) % len(self.bases)]


ROUTER = Router(NODES)


class Result:
    __slots__ = ("status", "data", "code", "sent", "at")

    def __init__(self, status: int, data: dict[str, Any], code: str, sent: float, at: float) -> None:
        self.status = status
        self.data = data
        self.code = code
        self.sent = sent
        self.at = at

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class AcdClient:
    """Requests that follow the primary and repeat across a failover, with outage tracking."""

    def __init__(self, session: Any, label: str) -> None:
        self.session = session
        self.label = label
        self.first_failure: float | None = None

    def send(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, name: str,
        conflicts: tuple[str, ...] = (), deadline: float = RETRY_DEADLINE_SECONDS,
    ) -> Result | None:
        """The final result, or None when no node accepted it before the deadline.

        A 4xx whose code is in `conflicts` is an expected business outcome (the caller hung up
        while the agent answered, ...): Locust counts it as a success. Any other 4xx or 5xx is
        a failure in Locust's statistics; what `retry_decision` repeats is also retried.
        """
        give_up = time.monotonic() + deadline
        write = method != "GET"
        pause = 0.05
        while True:
            base = ROUTER.current
            sent = time.time()
            with self.session.request(method, base + path, json=body, name=name, catch_response=True) as response:
                status = response.status_code or 0
                data: dict[str, Any] = {}
                if status:
                    try:
                        parsed = response.json()
                        data = parsed if isinstance(parsed, dict) else {"items": parsed}
                    except Exception:
                        data = {}
                code = str(data.get("error", "")) if status >= 400 else ""
                if 200 <= status < 300 or (400 <= status < 500 and code in conflicts):
                    response.success()
                elif status == 0:
                    response.failure(f"no response from {base}: {getattr(response, 'error', '') or 'connection failed'}")
                else:
                    response.failure(f"{status} {code}: {data.get('message', '')}"[:200])
            decision = retry_decision(status, data if status else None)
            now = time.time()
            if not decision.retry:
                if write:
                    self._succeeded(now)
                return Result(status, data, code, sent, now)
            if write:
                self._failed(now)
            ROUTER.failed(base, decision.primary)
            if time.monotonic() > give_up:
                JOURNAL.write("gave_up", client=self.label, method=method, path=path, status=status)
                return None
            gevent.sleep(pause)
            pause = min(0.2, pause * 1.5)

    def _failed(self, now: float) -> None:
        if self.first_failure is None:
            self.first_failure = now

    def _succeeded(self, now: float) -> None:
        if self.first_failure is not None:
            JOURNAL.write("outage", client=self.label, start=round(self.first_failure, 4), end=round(now, 4))
            self.first_failure = None


# ---------------------------------------------------------------------------------- shared state


class Call:
    """What this process knows about one interaction it created or an agent was offered."""

    __slots__ = ("spec", "settled", "done", "transferred")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.settled = gevent.event.Event()  # answered, or ended: the caller stops waiting
        self.done = False                    # known to be terminal
        self.transferred = False             # already transferred once by an agent


CALLS: dict[str, Call] = {}
PROMISED: set[str] = set()        # call-backs the ACD creates on "callback" wrap-ups: "<id>:cb1"
DESKS: dict[str, AgentDesk] = {}
AGENT_NAMES = iter(PLAN["agents"])
CLOSING = gevent.event.Event()    # the day is over: callers hang up, agents finish quickly
LOGOUT = gevent.event.Event()     # agents log out
STARTED = gevent.event.Event()    # the PBX has set t0
READY_DESKS: set[str] = set()
LOGGED_OUT: set[str] = set()
COUNTS: dict[str, int] = defaultdict(int)
T0 = [0.0]


def _default_spec(call_id: str) -> dict[str, Any]:
    """An interaction this process did not create: a call-back the ACD made on a wrap-up."""
    return {
        "id": call_id, "talk": PLAN.get("talk", 1.0), "talk_after_transfer": PLAN.get("talk", 1.0), "wrapup": 0.0,
        "disposition": "resolved", "transfer_to": "", "abusive": False, "survey": 0, "callback_in": 0.0,
    }


def _p99_since(before: dict[int, int], now: dict[int, int]) -> float | None:
    """The p99 (ms) of the requests Locust recorded since `before` (its response-time counts)."""
    counts = sorted((ms, count - before.get(ms, 0)) for ms, count in now.items() if count > before.get(ms, 0))
    total = sum(count for _ms, count in counts)
    if not total:
        return None
    seen = 0
    for ms, count in counts:
        seen += count
        if seen >= 0.99 * total:
            return float(ms)
    return float(counts[-1][0])


def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        gevent.sleep(delay)


def _wait_or_closing(seconds: float) -> None:
    """Sleep `seconds`, cut short when the day closes (agents finish their work quickly)."""
    if seconds > 0:
        CLOSING.wait(timeout=seconds)


# ---------------------------------------------------------------------------------- event streams


class EventStream:
    """Follows one SSE endpoint on whichever node answers, resuming with Last-Event-ID."""

    def __init__(self, path: str, label: str, on_event: Any, on_connect: Any) -> None:
        self.path = path
        self.label = label
        self.on_event = on_event
        self.on_connect = on_connect
        self.last_id = 0
        self.reconnects = 0

    def run(self) -> None:
        base = ROUTER.current
        while not LOGOUT.is_set():
            client = None
            try:
                host = base.split("://", 1)[-1]
                client = HTTPClient.from_url(f"http://{host}/", connection_timeout=1.0, network_timeout=6.0, concurrency=1)
                headers = {"Accept": "text/event-stream"}
                if self.last_id:
                    headers["Last-Event-ID"] = str(self.last_id)
                response = client.get(self.path, headers=headers)
                if response.status_code != 200:
                    raise ConnectionError(f"status {response.status_code}")
                JOURNAL.write("stream", client=self.label, what="connected", base=base, after=self.last_id)
                self.on_connect()
                self._read(response, base)
            except Exception as error:  # a dead node, a reset, a timeout: try again
                JOURNAL.write("stream", client=self.label, what="lost", base=base, error=str(error)[:120])
            finally:
                if client is not None:
                    client.close()
            if LOGOUT.is_set():
                return
            self.reconnects += 1
            gevent.sleep(0.1)
            # Follow the router once a request found the new primary; else try the other node.
            if ROUTER.current != base:
                base = ROUTER.current
            elif len(NODES) > 1:
                base = NODES[(NODES.index(base) + 1) % len(NODES)] if base in NODES else NODES[0]

    def _read(self, response: Any, base: str) -> None:
        event_type, data, event_id = "", "", None
        while not LOGOUT.is_set():
            line = response.readline(b"\n")
            if not line:
                raise ConnectionError("stream ended")
            text = line.decode("utf-8").rstrip("\r\n")
            if not text:
                if data:
                    if event_id is not None:
                        self.last_id = event_id
                    if event_type in ("stream.closed",):
                        raise ConnectionError("stream closed by the node")
                    self.on_event(event_type, json.loads(data))
                event_type, data, event_id = "", "", None
                # A heartbeat (every 2 s) or an event: a moment to follow a new primary.
                if ROUTER.current != base and len(NODES) > 1:
                    raise ConnectionError("the primary moved")
                continue
            if text.startswith(":"):
                if ROUTER.current != base and len(NODES) > 1:
                    raise ConnectionError("the primary moved")
                continue
            field, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = int(value or 0)
            elif field == "event":
                event_type = value
            elif field == "data":
                data = value if not data else data + "\n" + value


def _center_event(event_type: str, data: dict[str, Any]) -> None:
    if event_type == "stream.reset":
        _center_connected()
        return
    agent = data.get("agent")
    desk = DESKS.get(agent) if agent else None
    if desk is not None:
        desk.on_event(event_type, data)


def _center_connected() -> None:
    for desk in list(DESKS.values()):
        gevent.spawn(desk.resync)


CENTER_STREAM = EventStream("/v1/events", "center", _center_event, _center_connected)


# ---------------------------------------------------------------------------------- users


SHARED_POOL = HTTPClientPool(concurrency=128, connection_timeout=2.0, network_timeout=10.0) if PLAN["stream"] == "center" else None


class AgentDesk(FastHttpUser):
    """One agent's desktop (see the module docstring)."""

    fixed_count = len(PLAN["agents"])
    wait_time = constant(0)
    connection_timeout = 2.0
    network_timeout = 10.0
    client_pool = SHARED_POOL

    def on_start(self) -> None:
        self.name = next(AGENT_NAMES)
        self.acd = AcdClient(self.client, f"agent:{self.name}")
        self.handling: set[str] = set()
        self.on_break = False
        self.work = gevent.pool.Group()
        DESKS[self.name] = self
        agent = f"/v1/agents/{self.name}"
        for step in ("login", "ready"):
            while self.acd.send("POST", f"{agent}/{step}", {}, name=f"POST /v1/agents/[id]/{step}") is None:
                pass
        READY_DESKS.add(self.name)
        if PLAN["stream"] == "agent":
            stream = EventStream(f"{agent}/events", f"agent:{self.name}", self.on_event, lambda: self.work.spawn(self.resync))
            self.work.spawn(stream.run)
        elif len(READY_DESKS) == 1:
            gevent.spawn(CENTER_STREAM.run)
        self.work.spawn(self.follow_breaks)
        self.work.spawn(self.end_of_day)

    @task
    def desk(self) -> None:
        LOGOUT.wait(timeout=5.0)
        if self.name in LOGGED_OUT:
            gevent.sleep(1.0)

    # -------------------------------------------------------------- events

    def on_event(self, event_type: str, data: dict[str, Any]) -> None:
        if event_type == "stream.reset":
            # The node's buffer no longer holds what we missed: read our state instead.
            self.work.spawn(self.resync)
            return
        if data.get("agent") != self.name:
            return
        if event_type == "call.offered":
            self.offered(data["call"])
        elif event_type == "agent.changed":
            if data.get("state") == "not_ready" and data.get("reason") == "no_answer":
                self.work.spawn(self.back_after_miss)

    def resync(self) -> None:
        """After (re)connecting a stream: pick up an offer or a missed-offer state we did not see."""
        result = self.acd.send("GET", f"/v1/agents/{self.name}", name="GET /v1/agents/[id]")
        if result is None or not result.ok:
            return
        offer = result.data.get("offer")
        if offer:
            self.offered(offer)
        if result.data.get("state") == "not_ready" and result.data.get("reason") == "no_answer":
            self.work.spawn(self.back_after_miss)

    def offered(self, call_id: str) -> None:
        if call_id in self.handling or LOGOUT.is_set():
            return
        self.handling.add(call_id)
        self.work.spawn(self.handle, call_id)

    # -------------------------------------------------------------- one interaction

    def handle(self, call_id: str) -> None:
        try:
            self._handle(call_id)
        finally:
            self.handling.discard(call_id)

    def _handle(self, call_id: str) -> None:
        call = CALLS.get(call_id)
        if call is None:
            # A call-back the ACD created on a "callback" wrap-up (or one from another process).
            call = CALLS[call_id] = Call(_default_spec(call_id))
            if ":cb" in call_id:
                JOURNAL.write("acd_created", id=call_id)
        spec = call.spec
        if PLAN["miss_probability"] and RANDOM.random() < PLAN["miss_probability"] and not CLOSING.is_set():
            JOURNAL.write("missed", id=call_id, agent=self.name)
            return  # it rings out; the ACD sets us not ready (agent.changed no_answer)
        low, high = PLAN["ring_delay"]
        if high > 0:
            gevent.sleep(RANDOM.uniform(low, high))
        answered = self.acd.send(
            "POST", f"/v1/calls/{call_id}/answer", {"agent": self.name}, name="POST /v1/calls/[id]/answer",
            conflicts=("call_finished", "call_not_offered", "not_offered_to_agent"),
        )
        if answered is None or not answered.ok:
            JOURNAL.write("answer_refused", id=call_id, agent=self.name, code=answered.code if answered else "gave_up")
            return
        JOURNAL.write("answered", id=call_id, agent=self.name, sent=round(answered.sent, 4), at=round(answered.at, 4))
        call.settled.set()
        transfer = spec.get("transfer_to") if not call.transferred else ""
        _wait_or_closing(spec["talk_after_transfer"] if call.transferred and "talk_after_transfer" in spec else spec["talk"])
        disposition = spec["disposition"]
        if transfer and not CLOSING.is_set():
            call.transferred = True
            moved = self.acd.send(
                "POST", f"/v1/calls/{call_id}/transfer", {"queue": transfer}, name="POST /v1/calls/[id]/transfer",
                conflicts=("call_finished",),
            )
            if moved is not None and moved.ok:
                JOURNAL.write("transferred", id=call_id, agent=self.name, queue=transfer, state=moved.data.get("state"))
                if moved.data.get("state") in TERMINAL:
                    call.done = True
                disposition = "transferred"
            else:
                transfer = ""
        if not transfer:
            ended = self.acd.send("POST", f"/v1/calls/{call_id}/hangup", {}, name="POST /v1/calls/[id]/hangup", conflicts=("call_finished",))
            if ended is not None and ended.ok:
                JOURNAL.write("hangup", id=call_id, agent=self.name)
            if disposition == "transferred":
                disposition = "resolved"
        _wait_or_closing(spec.get("wrapup", 0.0))
        body: dict[str, Any] = {"agent": self.name, "disposition": disposition, "abusive": bool(spec.get("abusive"))}
        if disposition == "callback":
            body["callback_at"] = round(time.time() + spec.get("callback_in", 30.0), 3)
        wrapped = self.acd.send(
            "POST", f"/v1/calls/{call_id}/wrapup", body, name="POST /v1/calls/[id]/wrapup",
            conflicts=("already_wrapped_up", "not_handled_by_agent"),
        )
        if wrapped is None:
            return
        if wrapped.ok:
            JOURNAL.write("wrapped", id=call_id, agent=self.name, disposition=disposition, abusive=body["abusive"])
            if disposition == "callback":
                PROMISED.add(f"{call_id}:cb1")
        else:
            JOURNAL.write("wrapup_timed_out", id=call_id, agent=self.name, code=wrapped.code)
        if not transfer:
            call.done = True
        if spec.get("survey") and not transfer and wrapped.ok:
            # The PBX's IVR plays the survey after the conversation; this greenlet stands in for it.
            scored = self.acd.send("POST", f"/v1/calls/{call_id}/survey", {"score": spec["survey"]}, name="POST /v1/calls/[id]/survey")
            if scored is not None and scored.ok:
                JOURNAL.write("survey", id=call_id, score=spec["survey"])

    # -------------------------------------------------------------- presence

    def back_after_miss(self) -> None:
        """The offer rang out and the ACD set us not ready: come back after a while."""
        gevent.sleep(PLAN["ready_after_miss"])
        if not self.on_break and not CLOSING.is_set():
            self.acd.send("POST", f"/v1/agents/{self.name}/ready", {}, name="POST /v1/agents/[id]/ready")

    def follow_breaks(self) -> None:
        STARTED.wait()
        for at, action, reason in PLAN["breaks"].get(self.name, []):
            _sleep_until(T0[0] + at)
            if CLOSING.is_set():
                return
            if action == "not_ready":
                self.on_break = True
                self.acd.send("POST", f"/v1/agents/{self.name}/not-ready", {"reason": reason or "break"}, name="POST /v1/agents/[id]/not-ready")
            else:
                self.on_break = False
                self.acd.send("POST", f"/v1/agents/{self.name}/ready", {}, name="POST /v1/agents/[id]/ready")
        # Back from the last break for the rest of the day.

    def end_of_day(self) -> None:
        CLOSING.wait()
        if self.on_break:
            self.on_break = False
            self.acd.send("POST", f"/v1/agents/{self.name}/ready", {}, name="POST /v1/agents/[id]/ready")
        LOGOUT.wait()
        deadline = time.time() + 20
        while self.handling and time.time() < deadline:
            gevent.sleep(0.1)
        result = self.acd.send("POST", f"/v1/agents/{self.name}/logout", {}, name="POST /v1/agents/[id]/logout")
        if result is not None and result.ok:
            LOGGED_OUT.add(self.name)


class Supervisor(FastHttpUser):
    """A supervisor's wallboard: queues and center statistics."""

    fixed_count = 1
    connection_timeout = 2.0
    network_timeout = 10.0

    def wait_time(self) -> float:
        return float(PLAN["supervisor_every"])

    def on_start(self) -> None:
        self.acd = AcdClient(self.client, "supervisor")

    @task
    def wallboard(self) -> None:
        if LOGOUT.is_set():
            return
        self.acd.send("GET", "/v1/queues", name="GET /v1/queues")
        self.acd.send("GET", "/v1/stats", name="GET /v1/stats")


class Pbx(FastHttpUser):
    """The PBX and chat/SMS gateway: arrivals, callers' patience, the end of the day."""

    fixed_count = 1
    wait_time = constant(3600)
    connection_timeout = 2.0
    network_timeout = 10.0
    concurrency = 200

    def on_start(self) -> None:
        self.acd = AcdClient(self.client, "pbx")
        self.callers = gevent.pool.Group()
        self.stop_arrivals = gevent.event.Event()
        self.rate = 0.0  # the ramp's current step, calls per second

    @task
    def day(self) -> None:
        deadline = time.time() + 60
        while len(READY_DESKS) < len(PLAN["agents"]) and time.time() < deadline:
            gevent.sleep(0.1)
        gevent.sleep(0.5)  # the streams connect
        T0[0] = time.time() + 0.2
        STARTED.set()
        JOURNAL.write("start", t0=round(T0[0], 4), pid=os.getpid(), desks=len(READY_DESKS), shape=PLAN["shape"], factor=PLAN["factor"])
        JOURNAL.flush()
        (OUT / "started.json").write_text(json.dumps({"t0": T0[0]}), encoding="utf-8")
        if PLAN["shape"] == "day":
            self.replay_schedule()
        else:
            self.ramp()
        JOURNAL.write("phase", name="arrivals_done")
        self.drain()
        self.close_day()
        JOURNAL.write("end", created=COUNTS["created"], answered=COUNTS["answered"], abandoned=COUNTS["abandoned"])
        JOURNAL.flush()
        TIMELINE.flush()
        gevent.spawn(self.environment.runner.quit)
        gevent.sleep(3600)

    # -------------------------------------------------------------- arrivals

    def replay_schedule(self) -> None:
        for spec in PLAN["calls"]:
            _sleep_until(T0[0] + spec["at"])
            self.callers.spawn(self.caller, spec)  # each caller keeps waiting for an agent on its own

    def ramp(self) -> None:
        """Poisson arrivals at each step's rate; stop early once callers pile up.

        A step whose requests' p99 (Locust's own figures) misses the limit is run once more at
        the same rate before the ramp goes on, up to `step_repeats_max` times a run and not
        after a step has missed it twice (the breaking point is found): a shared machine's
        disk can stall for tens of seconds (fsync twice as slow), and a limit of the pair shows
        in both runs. The runner judges every run of a step; the journal has them all.
        """
        rng = random.Random(PLAN["seed"])
        topics = PLAN["topics"]
        names, weights = list(topics), list(topics.values())
        monitor = gevent.spawn(self.watch_backlog)
        moment = T0[0]
        steps = [(float(rate), float(seconds)) for rate, seconds in PLAN["steps"]]
        repeats_left = int(PLAN.get("step_repeats_max", 0))
        p99_limit = PLAN.get("p99_ms")
        position, number, repeated, confirmed = 0, 0, False, False
        while position < len(steps):
            rate, seconds = steps[position]
            step_start, step_end = moment, moment + seconds
            JOURNAL.write("step", index=number, rate=rate, start=round(step_start, 4), end=round(step_end, 4), again=repeated)
            self.rate = rate
            before = dict(self.environment.stats.total.response_times)
            serial = 0
            while True:
                moment += rng.expovariate(rate)
                if moment >= step_end:
                    moment = step_end
                    break
                serial += 1
                _sleep_until(moment)
                if self.stop_arrivals.is_set():
                    break
                topic = rng.choices(names, weights)[0]
                self.callers.spawn(self.caller, {
                    "id": f"r{number:02d}-{serial:06d}", "queue": topic, "channel": "voice", "topic": topic,
                    "caller": f"010{rng.randrange(10**8):08d}", "vulnerable": rng.random() < 0.08,
                    "talk": PLAN["talk"], "wrapup": 0.0, "patience": None, "callback_after": None,
                    "transfer_to": "", "abusive": False, "disposition": "resolved", "survey": 0, "due": moment,
                })
            if self.stop_arrivals.is_set():
                JOURNAL.write("step_cut", index=number, at=round(time.time(), 4))
                break
            _sleep_until(step_end)
            p99 = _p99_since(before, self.environment.stats.total.response_times)
            number += 1
            missed = p99_limit is not None and p99 is not None and p99 >= p99_limit
            if missed and repeated:
                confirmed = True
            if missed and not repeated and not confirmed and repeats_left > 0:
                repeats_left -= 1
                repeated = True  # the same rate once more
            else:
                repeated = False
                position += 1
        monitor.kill()

    def watch_backlog(self) -> None:
        limit_checks = 0
        while True:
            gevent.sleep(0.5)
            waiting = COUNTS["created"] - COUNTS["answered"]
            limit = max(20.0, self.rate * PLAN.get("backlog_seconds", 5.0))
            limit_checks = limit_checks + 1 if waiting > limit else 0
            if limit_checks >= 4:
                JOURNAL.write("ramp_stopped", at=round(time.time(), 4), rate=self.rate, backlog=waiting)
                self.stop_arrivals.set()
                return

    def caller(self, spec: dict[str, Any]) -> None:
        call_id = spec["id"]
        call = CALLS[call_id] = Call(spec)
        body: dict[str, Any] = {"id": call_id, "queue": spec["queue"], "caller": spec["caller"], "channel": spec["channel"]}
        if spec.get("vulnerable"):
            body["attributes"] = {"vulnerable": True}
        first_sent = time.time()
        created = self.acd.send("POST", "/v1/calls", body, name="POST /v1/calls")
        if created is None or created.status != 201:
            JOURNAL.write("create_refused", id=call_id, status=created.status if created else 0, code=created.code if created else "gave_up")
            call.done = True
            return
        state = created.data.get("state", "")
        COUNTS["created"] += 1
        # `late`: how long after its planned arrival the create left Locust (first attempt);
        # a Locust process short of CPU shows here first.
        due = spec.get("due") or T0[0] + spec.get("at", 0.0)
        JOURNAL.write("created", id=call_id, sent=round(created.sent, 4), at=round(created.at, 4), state=state,
                      queue=spec["queue"], channel=spec["channel"], position=created.data.get("position"),
                      late=round(first_sent - due, 4))
        if state in TERMINAL:
            call.done = True
            call.settled.set()
            return
        patience = spec.get("patience")
        callback_after = spec.get("callback_after")
        limits = [value for value in (patience, callback_after) if value is not None]
        timeout = min(limits) if limits else None
        gevent.wait([call.settled, CLOSING], timeout=timeout, count=1)
        if call.settled.is_set():
            COUNTS["answered"] += 1
            return
        if CLOSING.is_set():
            return  # close_day() ends whoever is still in line
        if callback_after is not None and (patience is None or callback_after < patience):
            result = self.acd.send("POST", f"/v1/calls/{call_id}/callback", {}, name="POST /v1/calls/[id]/callback",
                                   conflicts=("call_finished", "call_not_waiting"))
            if result is not None and result.ok:
                JOURNAL.write("callback_requested", id=call_id)
            return
        self.abandon(call_id, "patience")

    def abandon(self, call_id: str, why: str) -> None:
        result = self.acd.send("POST", f"/v1/calls/{call_id}/abandon", {}, name="POST /v1/calls/[id]/abandon",
                               conflicts=("call_connected", "call_finished"))
        call = CALLS.get(call_id)
        if result is None:
            return
        if result.ok:
            COUNTS["abandoned"] += 1
            JOURNAL.write("abandoned", id=call_id, why=why, state_was=result.data.get("state"))
            if call is not None:
                call.done = True
                call.settled.set()
        else:
            JOURNAL.write("abandon_refused", id=call_id, code=result.code)
            if call is not None and result.code == "call_finished":
                call.done = True
                call.settled.set()

    # -------------------------------------------------------------- the end of the day

    def center_idle(self, count_scheduled: bool) -> bool:
        queues = self.acd.send("GET", "/v1/queues", name="GET /v1/queues")
        agents = self.acd.send("GET", "/v1/agents", name="GET /v1/agents")
        if queues is None or agents is None or not queues.ok or not agents.ok:
            return False
        in_line = sum(q["waiting"] + q["offered_now"] + (q["scheduled_callbacks"] if count_scheduled else 0) for q in queues.data["items"])
        working = sum(1 for agent in agents.data["items"] if agent["state"] in ("offered", "busy", "wrapup"))
        return in_line == 0 and working == 0

    def drain(self) -> None:
        """Let the agents empty the queues (call-backs due soon included), up to the drain time."""
        JOURNAL.write("phase", name="draining")
        deadline = time.time() + PLAN["drain"]
        while time.time() < deadline and not self.center_idle(count_scheduled=True):
            gevent.sleep(0.5)

    def close_day(self) -> None:
        """Callers still in line hang up, unreached call-backs are dropped, agents finish, log out."""
        JOURNAL.write("phase", name="closing")
        CLOSING.set()
        for round_number in range(3):
            sweep = gevent.pool.Pool(50)
            for call_id, call in list(CALLS.items()):
                if not call.done and not call.settled.is_set():
                    sweep.spawn(self.abandon, call_id, "closing")
            for promised in list(PROMISED):
                sweep.spawn(self.close_promised, promised)
            sweep.join()
            deadline = time.time() + 30
            while time.time() < deadline and not self.center_idle(count_scheduled=True):
                gevent.sleep(0.25)
            if self.center_idle(count_scheduled=True):
                break
            JOURNAL.write("phase", name=f"closing_again_{round_number + 1}")
        JOURNAL.write("phase", name="logout")
        LOGOUT.set()
        deadline = time.time() + 30
        while len(LOGGED_OUT) < len(DESKS) and time.time() < deadline:
            gevent.sleep(0.2)
        JOURNAL.write("phase", name="closed", logged_out=len(LOGGED_OUT))

    def close_promised(self, call_id: str) -> None:
        """A call-back the ACD created on a wrap-up: record it; drop it if nobody reached the caller."""
        PROMISED.discard(call_id)
        known = CALLS.get(call_id)
        if known is not None and known.done:
            return  # an agent already handled it to the end (journalled as acd_created then)
        found = self.acd.send("GET", f"/v1/calls/{call_id}", name="GET /v1/calls/[id]", conflicts=("unknown_call", "not_found"))
        if found is None or not found.ok:
            return  # merged into an earlier call-back of the same caller: no new interaction
        if call_id not in CALLS:
            CALLS[call_id] = Call(_default_spec(call_id))
            JOURNAL.write("acd_created", id=call_id)
        state = found.data.get("state")
        if state in STILL_IN_LINE:
            self.abandon(call_id, "closing")
        elif state in TERMINAL:
            CALLS[call_id].done = True
        else:
            PROMISED.add(call_id)  # an agent is on it: look again in the next round

