"""A client that always finds the writable primary, as a real PBX integration should.

`retry_decision` is the one rule for what a client does with an answer (the Locust client in
loadtest/locustfile_acd.py uses it too): no answer (refused, reset, timed out), `503`
(`not_primary`, which names the primary to follow, or `shutting_down`) and a load balancer's
`502`/`504` are repeated; every other answer is final. Commands are idempotent, so repeating one
that took effect succeeds again (docs/design.md, "safe retry across failover"); a `409` is a
conflict with the current state and is never repeated.

`Router` sends each request to the node it believes is primary and repeats it by that rule,
following the address a node names or trying the next node. It measures the outage a client
sees: from the first failed write to the next success.

Importing this module imports neither Trio nor httpx, so a gevent process (Locust) can share
`retry_decision`; `Router` brings them in when it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

# Answers that say "not here, not now": the node is not the primary or is shutting down (503),
# or a load balancer in front found no node to pass the request to (502, 504).
RETRIED_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one answer: repeat the request or not, and where the primary is when
    the node named it."""

    retry: bool
    primary: str | None = None


def retry_decision(status: int | None, body: Any = None) -> Decision:
    """The decision for an answer with HTTP `status` (None or 0: no answer at all) and its
    decoded JSON `body` (None when it had none)."""
    if not status:
        return Decision(retry=True)
    if status not in RETRIED_STATUSES:
        return Decision(retry=False)
    named = body.get("primary") if status == 503 and isinstance(body, dict) else None
    return Decision(retry=True, primary=named if isinstance(named, str) and named else None)


@dataclass
class Outage:
    """Windows in which writes failed, from the last success before to the first success after."""

    last_success: float | None = None
    failing_since: float | None = None
    longest: float = 0.0
    windows: list[tuple[float, float]] = field(default_factory=list)

    def failed(self, now: float) -> None:
        if self.failing_since is None:
            self.failing_since = self.last_success if self.last_success is not None else now

    def succeeded(self, now: float) -> None:
        if self.failing_since is not None:
            self.windows.append((self.failing_since, now))
            self.longest = max(self.longest, now - self.failing_since)
            self.failing_since = None
        self.last_success = now


class Router:
    """Sends each request to the primary; follows `not_primary` and retries across a failover."""

    def __init__(self, addresses: list[str], client: httpx.AsyncClient, started: float | None = None, scheme: str = "http") -> None:
        self.scheme = scheme
        self.addresses = list(addresses)
        self.current = self.addresses[0]
        self.client = client
        self.started = time.monotonic() if started is None else started
        self.outage = Outage()
        self.errors = 0
        self.requests = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None, deadline: float = 15.0) -> httpx.Response:
        import httpx
        import trio

        give_up = time.monotonic() + deadline
        while True:
            self.requests += 1
            try:
                response: httpx.Response | None = await self.client.request(
                    method, f"{self.scheme}://{self.current}{path}", json=body, timeout=2.0,
                )
            except httpx.HTTPError:
                response = None
            status = response.status_code if response is not None else None
            decision = retry_decision(status, _json(response) if response is not None and status in RETRIED_STATUSES else None)
            if response is not None and not decision.retry:
                if method != "GET":
                    self.outage.succeeded(self.elapsed())
                return response
            if method != "GET":
                self.outage.failed(self.elapsed())
            self.errors += 1
            if decision.primary and decision.primary != self.current:
                self.current = decision.primary
            else:
                self.current = self.addresses[(self.addresses.index(self.current) + 1) % len(self.addresses)]
                await trio.sleep(0.05)
            if time.monotonic() > give_up:
                raise TimeoutError(f"{method} {path}: no primary answered within {deadline} s")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
