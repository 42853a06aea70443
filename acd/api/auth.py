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
logs a warning at start-up. `/healthz`, `/readyz`, `/metrics` and `/openapi.json` need no token
(load balancers and Prometheus read them; they carry no personal data).
"""

from __future__ import annotations

import hashlib
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
