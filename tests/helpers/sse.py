"""A small Server-Sent Events reader for tests: parse events off an httpx streaming response."""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    id: str | None = None
    event: str = "message"
    data: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def lsn(self) -> int:
        assert self.id is not None
        return int(self.id)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


_lines: weakref.WeakKeyDictionary[httpx.Response, Iterator[str]] = weakref.WeakKeyDictionary()


def events(response: httpx.Response) -> Iterator[Event]:
    """Every event (and comment-only block) of the stream, in order; callable again to go on."""
    lines = _lines.get(response)
    if lines is None:
        lines = _lines[response] = response.iter_lines()
    current = Event()
    for line in lines:
        if line == "":
            if current.id is not None or current.data or current.comments:
                yield current
            current = Event()
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value


def collect(response: httpx.Response, until: Callable[[list[Event]], bool], timeout: float = 10.0) -> list[Event]:
    """Read events (not comments) until `until(events)` holds; fail after `timeout` seconds."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    for event in events(response):
        if event.id is not None or event.data:
            seen.append(event)
            if until(seen):
                return seen
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"stream ended or timed out; saw {[(e.id, e.event) for e in seen]}")
