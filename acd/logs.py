"""Operator logs: one key=value line per event worth attention, with a level, never a caller's number.

A line looks like

    time=2026-11-23T12:00:00.123+09:00 level=info logger=acd.node msg=recovered node=a lsn=42

Messages written the project's way (`log.info("recovered node=%s lsn=%d", ...)`) keep their
key=value tail as fields; any other message is quoted whole as `msg="..."`. Fields passed as
`extra={"fields": {...}}` are appended. Timestamps are local time with their offset.

Caller numbers are personal data (docs/domain.md's centers are public services): the core keeps
them only hashed or masked, and the final line passes through `mask_numbers`, which masks any
phone-like run of digits left in free text (a repr in a traceback, a foreign library's
message) down to its last four digits, also as a path segment (`/v1/calls/01099998888/answer`)
and in the dotted form (`010.1234.5678`). Values of numeric fields written `key=123` are left
alone (LSNs, epochs, counts); a field whose key names a number (`caller=`, `phone=`) is masked.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from typing import Any, TextIO

# A phone-like run: 7 or more digits, maybe with +, spaces or dashes between them, not glued to
# a word, a decimal point or an `=` (numeric fields such as lsn=12345678 stay readable); a path
# segment (`/calls/01099998888/answer`) is such a run too. The dotted form (`010.1234.5678`,
# `+82.10.1234.5678`) is two or three groups of digits and a last group of four, which neither a
# decimal number (one dot) nor an IPv4 address (groups of at most three) can be; it may follow
# an `=`.
_PHONE = re.compile(
    r"(?<![\w.:\-])(?:(?<![\w.=:\-])(\+?\d(?:[\d\- ]{5,}\d))(?![\w.:\-])"
    r"|(\+?(?:\d{1,4}\.)?\d{2,4}\.\d{3,4}\.\d{4})(?![\w.:\-]))"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SENSITIVE_FIELD = re.compile(r"\b(caller|phone|number|msisdn)=(['\"]?)([+\d][\d.\- ]*\d)")
_KEY_VALUE_TAIL = re.compile(r"^(?P<message>[^=]*?)(?P<tail>(?:\s+[A-Za-z_][\w.]*=\S+)+)$")
_NEEDS_QUOTES = re.compile(r"[\s\"=]")


def _mask_digits(run: str) -> str:
    digits = [ch for ch in run if ch.isdigit()]
    keep = 4
    hidden = len(digits) - keep
    out = []
    for ch in run:
        if ch.isdigit() and hidden > 0:
            out.append("*")
            hidden -= 1
        else:
            out.append(ch)
    return "".join(out)


def mask_numbers(text: str) -> str:
    """Mask phone-like digit runs (all but the last four digits) in free text."""
    text = _SENSITIVE_FIELD.sub(lambda m: f"{m[1]}={m[2]}{_mask_digits(m[3])}", text)
    return _PHONE.sub(_mask_run, text)


def _mask_run(match: re.Match[str]) -> str:
    run = match[1] or match[2]
    if _DATE.fullmatch(run) or sum(ch.isdigit() for ch in run) < 7:
        return run
    return _mask_digits(run)


def quote(value: Any) -> str:
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        parts = [f"time={stamp}", f"level={record.levelname.lower()}", f"logger={record.name}"]
        message = record.getMessage()
        match = _KEY_VALUE_TAIL.match(message) if "\n" not in message else None
        if match:
            parts.append(f"msg={quote(match['message'].strip())}")
            parts.append(match["tail"].strip())
        else:
            parts.append(f"msg={quote(message)}")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts.extend(f"{key}={quote(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"error={quote(self.formatException(record.exc_info))}")
        return mask_numbers(" ".join(parts))


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every logger's records to one key=value handler on stderr at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Hypercorn logs each accepted connection at INFO through its own logger; keep its
    # start-up line and errors, not the chatter.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)


LEVELS = ("debug", "info", "warning", "error")
