"""Caller numbers at rest: sealed before they reach the log, readable only while needed.

An arrival names the caller's number. The node seals it before the command enters the
pipeline (`Sealer.seal`):

- the keyed hash (repeat callers, abuse flags) and the masked form (`*******5678`) are
  computed here, with a key the log never holds (`Settings.caller_hash_key`), and so is the
  fingerprint that makes a retried create idempotent;
- the number itself is encrypted (AES-GCM, the interaction id as associated data) under a
  fresh key of its own. The command in the log holds only the ciphertext and the key's id;
  the key travels beside the record (`Record.secret`) into the store's secrets database, on
  both nodes, never into the log.

When the interaction is over the core releases its key and the node destroys it in the same
transaction as the batch that ended it: from then on the log, every snapshot and every backup
hold only a ciphertext nobody can open (crypto-shredding). While the interaction lives, the
node can open the number (`Sealer.open`) for whoever may dial it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from acd.core import commands
from acd.core.privacy import mask_caller
from acd.store.records import SECRET_ID_BYTES

_KEY_BYTES = 32
_NONCE_BYTES = 12


class Sealer:
    def __init__(self, hash_key: bytes, *, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._hash_key = hash_key
        self._fingerprint_key = hashlib.sha256(b"fingerprint:" + hash_key).digest()
        self._random = random_bytes

    def caller_hash(self, caller: str) -> str:
        """HMAC-SHA256 of the number, the first 32 hex digits (the core's own form)."""
        return hmac.new(self._hash_key, caller.encode(), hashlib.sha256).hexdigest()[:32]

    def seal(self, command: commands.Arrive, encoded: bytes | None = None) -> tuple[commands.Arrive, bytes]:
        """The arrival as the log holds it, and the secret that goes beside its record
        (`encoded`: the command's encoding as submitted, when the caller has it already)."""
        caller = command.caller
        if encoded is None:
            encoded = commands.encode_command(command)
        fingerprint = hashlib.blake2b(encoded, digest_size=12, key=self._fingerprint_key).hexdigest()
        key = self._random(_KEY_BYTES)
        key_id = self._random(SECRET_ID_BYTES // 2).hex()
        nonce = self._random(_NONCE_BYTES)
        sealed = nonce + AESGCM(key).encrypt(nonce, caller.encode(), command.id.encode())
        logged = msgspec.structs.replace(
            command, caller="", caller_hash=self.caller_hash(caller), caller_masked=mask_caller(caller),
            caller_sealed=sealed, caller_key=key_id, fingerprint=fingerprint,
        )
        return logged, key_id.encode() + key

    @staticmethod
    def open(call_id: str, sealed: bytes, key: bytes) -> str | None:
        """The number sealed for interaction `call_id`, or None if `key` does not open it."""
        try:
            return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], call_id.encode()).decode()
        except (InvalidTag, ValueError):
            return None
