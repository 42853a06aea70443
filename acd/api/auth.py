"""Bearer-token authentication and the four roles.

Tokens live in the config file as `[[tokens]]` entries holding only a SHA-256 hash (`acd token
hash` prints it), so the file can be shared with every process of the cluster without giving
the tokens away. A request presents `Authorization: Bearer <token>`; the token is hashed and
looked up. The roles (docs/design.md, issue "Durable node"):

| role       | may                                                                          |
|------------|------------------------------------------------------------------------------|
| pbx        | everything about calls (arrive, answer, reject, abandon, hangup, transfer, call-back, wrap-up, survey, read), and the center's event stream (it learns offers from it) |
| agent      | only its own agent (state changes, view, event stream) and that agent's interactions (answer and reject its offers, hang up, transfer and wrap up its calls, read them) |
| supervisor | every read, and any agent's state changes                                    |
| admin      | everything, including configuration reload and cluster operations            |

With no `[[tokens]]` section authentication is off: every request acts as admin, and the node
logs a warning at start-up (protected mode refuses that beyond loopback, `acd.settings`).
`/healthz`, `/readyz`, `/metrics` and `/openapi.json` need no token (load balancers and
Prometheus read them; they carry no personal data).

A request with two `Authorization` headers is refused (400): which one counts would depend on
the server in front. Requests that fail authentication are limited per source address
(`FailureLimiter`, `limits.unauthorized_per_second_per_address`); a valid token never is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from acd.settings import TokenSection

from .errors import ApiError

ROLES = ("pbx", "agent", "supervisor", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    agent: str = ""

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise ApiError(403, "forbidden", f"token {self.name!r} (role {self.role}) may not do this")

    def require_agent(self, agent: str, *roles: str) -> None:
        """Allow `roles`, and an agent token acting for its own agent."""
        if self.role in roles:
            return
        if self.role == "agent" and self.agent == agent:
            return
        raise ApiError(403, "forbidden", f"token {self.name!r} (role {self.role}) may not act for agent {agent!r}")


ANONYMOUS = Principal(name="anonymous", role="admin")


class Authenticator:
    def __init__(self, tokens: list[TokenSection]) -> None:
        self._by_hash = {
            token.hash.removeprefix("sha256:"): Principal(name=token.name, role=token.role, agent=token.agent)
            for token in tokens
        }

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, authorization: bytes | None) -> Principal:
        if not self._by_hash:
            return ANONYMOUS
        if not authorization:
            raise ApiError(401, "unauthorized", "an Authorization: Bearer <token> header is needed")
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "use Authorization: Bearer <token>")
        principal = self._by_hash.get(hashlib.sha256(token.strip()).hexdigest())
        if principal is None:
            raise ApiError(401, "unauthorized", "unknown token")
        return principal


def single_authorization(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Refuse a request that carries the Authorization header more than once."""
    if sum(1 for name, _ in headers if name == b"authorization") > 1:
        raise ApiError(400, "bad_request", "the request has more than one Authorization header")


class FailureLimiter:
    """Requests that failed authentication, per source address: a token bucket of `rate` a
    second holding up to twice that (at least one). Past it such requests get 429 instead of
    401, with `Connection: close`. The table forgets addresses whose bucket has refilled, and
    is bounded (`MAX_ADDRESSES`), so many addresses cost a bounded amount of memory.
    """

    MAX_ADDRESSES = 10_000

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def failed(self, address: str, rate: float, now: float) -> None:
        """Count one failure from `address`; ApiError 429 when it is past the rate."""
        if not rate:
            return
        burst = max(1.0, 2 * rate)
        tokens, last = self._buckets.get(address, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            raise ApiError(
                429, "too_many_unauthorized",
                f"more than {rate:g} requests per second without a valid token from {address}",
                headers=[(b"retry-after", b"1"), (b"connection", b"close")],
            )
        if address not in self._buckets and len(self._buckets) >= self.MAX_ADDRESSES:
            self._forget(rate, burst, now)
        self._buckets[address] = (tokens - 1, now)

    def _forget(self, rate: float, burst: float, now: float) -> None:
        full = [key for key, (tokens, last) in self._buckets.items() if tokens + (now - last) * rate >= burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.MAX_ADDRESSES:
            self._buckets.clear()
