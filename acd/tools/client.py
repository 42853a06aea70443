"""A client that always finds the writable primary, as a real PBX integration should.

`Router` sends each request to the node it believes is primary; on a connection error or a
`503 not_primary` it follows the address the node names, or tries the next node, and retries
the same request (commands are idempotent: repeating one that took effect succeeds again).
It measures the outage a client sees: from the first failed write to the next success.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio


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
        give_up = time.monotonic() + deadline
        while True:
            self.requests += 1
            try:
                response = await self.client.request(method, f"{self.scheme}://{self.current}{path}", json=body, timeout=2.0)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code != 503:
                if method != "GET":
                    self.outage.succeeded(self.elapsed())
                return response
            if method != "GET":
                self.outage.failed(self.elapsed())
            self.errors += 1
            named = None
            if response is not None:
                try:
                    named = response.json().get("primary")
                except ValueError:
                    named = None
            if named and named != self.current:
                self.current = named
            else:
                self.current = self.addresses[(self.addresses.index(self.current) + 1) % len(self.addresses)]
                await trio.sleep(0.05)
            if time.monotonic() > give_up:
                raise TimeoutError(f"{method} {path}: no primary answered within {deadline} s")
