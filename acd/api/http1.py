"""One socket write per HTTP/1.1 reply instead of two or three.

Hypercorn's HTTP/1.1 protocol writes a reply's head, its body and its end (empty for a reply
with Content-Length) each on its own: two `send` system calls, two TCP segments and three
passes through the event loop for every small JSON reply. `CoalescingH11Protocol` holds a
final response head until the first piece of body (or the end of the message) and writes
them together, and skips empty writes. Informational (1xx) responses and everything after
the head are written as before, so streaming replies (Server-Sent Events) keep flushing each
chunk at once.

`install()` makes Hypercorn use it for every HTTP/1.1 connection it accepts from then on.
"""

from __future__ import annotations

from typing import Any

import h11
import hypercorn.protocol
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol


class CoalescingH11Protocol(H11Protocol):
    _held = b""

    async def _send_h11_event(self, event: Any) -> None:
        try:
            data = self.connection.send(event) or b""
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if type(event) is h11.Response:
            self._held += data  # wait for the body or the end: one write for both
            return
        if self._held:
            data, self._held = self._held + data, b""
        if data:
            await self.send(RawData(data=data))


def install() -> None:
    """Use `CoalescingH11Protocol` for HTTP/1.1 (Hypercorn's protocol wrapper looks it up here)."""
    hypercorn.protocol.H11Protocol = CoalescingH11Protocol  # type: ignore[misc]
