"""Privacy: the caller's number hashed under the center's key, masked for display, and the
sealing keys released when no live interaction needs them (docs/design.md, privacy).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .commands import _encoder
from .statistics import Statistics

_encode_command = _encoder.encode  # commands.encode_command without its Python call
_SHA256_BLOCK = 64


def mask_caller(caller: str) -> str:
    return "*" * max(0, len(caller) - 4) + caller[-4:]



class Privacy(Statistics):
    """The keyed caller hash, and the reference counts of the sealing keys."""

    def _caller_hash(self, caller: str) -> str:
        """HMAC-SHA256 of the number under the center's key (RFC 2104), first 32 hex digits."""
        inner_pad, outer_pad = self._caller_pads
        inner = inner_pad.copy()
        inner.update(caller.encode())
        outer = outer_pad.copy()
        outer.update(inner.digest())
        digest: str = outer.hexdigest()
        return digest[:32]

    def _release_key(self, key: str) -> None:
        """One live holder of a sealing key fewer; the last one releases it (the node destroys it)."""
        refs = self._key_refs
        left = refs.get(key, 1) - 1
        if left > 0:
            refs[key] = left
        else:
            refs.pop(key, None)
            self._released_keys.append(key)


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the HMAC key's inner and outer pads (RFC 2104).

    Copying them per message is what `hmac` does without its one-shot OpenSSL path, and
    costs less than either that path or copying an `hmac.HMAC` object.
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return hashlib.sha256(bytes(byte ^ 0x36 for byte in key)), hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
