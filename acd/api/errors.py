"""The API's own error: an HTTP status, a stable code and a message (docs/design.md's error contract).

Foreign errors (msgspec's, the node's, the core's rejections) are translated into `ApiError`
once, in `acd.api.app`, and nowhere else.
"""

from __future__ import annotations

import re

import msgspec

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"(?:unknown|required) field `(?P<name>[^`]+)`")


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None,
        primary: str | None = None, problems: list[str] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None, error_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.primary = primary
        self.problems = problems
        self.error_id = error_id
        self.headers = headers or []


def validation_field(error: msgspec.ValidationError) -> tuple[str | None, str]:
    """The dotted field a msgspec validation error is about, and the message without the path.

    msgspec says `Expected `int`, got `str` - at `$.attributes.vip`` or `Object contains unknown
    field `x`` (at `$` or deeper); the field becomes `attributes.vip` or `x`.
    """
    message = str(error)
    path = ""
    match = _PATH.search(message)
    if match:
        path = match["path"].lstrip(".")
        message = message[: match.start()]
    named = _NAMED.search(message)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
    path = path.replace("[...]", "")
    return (path or None), message
