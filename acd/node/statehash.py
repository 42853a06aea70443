"""The node's state hash at regular LSNs, for the primary and the standby to compare.

Every `cluster.compare_state_every_records` records, right after applying the record at an
LSN that is a multiple of it, a node hashes its state (`Center.state_hash`: SHA-256 of the
snapshot encoding). The primary does it in its pipeline, the standby where it applies what
was shipped, so both hash the state after the same record; replication compares the two
(`replication.core.StateCheck`). Replay at start-up hashes nothing: what a node hashed before
a restart is of no use to the comparison after it.

Encoding the state takes the GIL for tens of milliseconds on a large center (a state of 8.5 MB,
20 queues, 500 agents, about a thousand waiting calls: 27 ms on a two-core host, more under
load), so with a worker thread for the store the node forks and a child encodes and hashes
the state as it was at that moment (the fork: 1-3 ms in the event loop, as for the periodic
snapshot: `acd.node.snapshots`; `python -m bench.state_hash`). The simulator hashes inline.

A hash becomes available (`take`) only once its record is durable here (at or below the
node's last applied LSN); a batch that failed or a tail that was truncated takes its hashes
back (`forget_after`).
"""

from __future__ import annotations

import gc
import os
import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import trio

from acd.core import Center

from .snapshots import _stay_out_of_the_way

_DIGEST_BYTES = 64      # hex SHA-256
_KEPT = 256             # hashes waiting to be taken, at most (the oldest go first)


@dataclass
class _Child:
    pid: int
    read_fd: int

    def collect(self) -> str | None:
        """The child's digest once it has exited (blocking: call from a worker thread)."""
        data = b""
        try:
            while len(data) < _DIGEST_BYTES:
                chunk = os.read(self.read_fd, _DIGEST_BYTES - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(self.read_fd)
            _pid, status = os.waitpid(self.pid, 0)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or len(data) != _DIGEST_BYTES:
            return None
        return data.decode("ascii")


def _fork_hasher(center: Center) -> _Child:
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # as in acd.node.snapshots
            pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # the child: hash, write 64 bytes, leave
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            os.close(read_fd)
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
            gc.disable()
            _stay_out_of_the_way()
            os.write(write_fd, center.state_hash().encode("ascii"))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return _Child(pid, read_fd)


class StateHashes:
    """The state hashes a node computed and replication has not taken yet."""

    def __init__(self, every: int, *, fork: bool) -> None:
        self.every = every   # 0: never
        self.fork = fork
        self.ready: dict[int, str] = {}
        self.generation = 0  # moves on when hashes are taken back: a child still running is dropped
        self.computed = 0

    def due(self, lsn: int) -> bool:
        return self.every > 0 and lsn % self.every == 0

    def hash_now(self, lsn: int, center: Center, background: trio.Nursery | None) -> None:
        """Hash `center`'s state, the state right after the record at `lsn`."""
        if self.fork and background is not None:
            try:
                child = _fork_hasher(center)
            except OSError:
                pass  # cannot fork now: hash here
            else:
                background.start_soon(self._collect, lsn, child, self.generation)
                return
        self._add(lsn, center.state_hash())

    async def _collect(self, lsn: int, child: _Child, generation: int) -> None:
        digest = await trio.to_thread.run_sync(child.collect)
        if digest is not None and generation == self.generation:
            self._add(lsn, digest)

    def _add(self, lsn: int, digest: str) -> None:
        self.ready[lsn] = digest
        self.computed += 1
        while len(self.ready) > _KEPT:
            del self.ready[min(self.ready)]

    def take(self, upto: int) -> list[tuple[int, str]]:
        """The hashes of records up to `upto` (durable), oldest first; they are handed over once."""
        taken = sorted((lsn, digest) for lsn, digest in self.ready.items() if lsn <= upto)
        for lsn, _digest in taken:
            del self.ready[lsn]
        return taken

    def forget_after(self, lsn: int) -> None:
        """Records after `lsn` are gone (a failed batch, a truncated tail): so are their hashes."""
        self.generation += 1
        for key in [key for key in self.ready if key > lsn]:
            del self.ready[key]

    def forget_all(self) -> None:
        self.generation += 1
        self.ready.clear()


def perturbation_hook() -> Callable[[int], bool]:
    """TEST HOOK, never set in production: `ACD_TEST_DIVERGE_AT_LSN=<lsn>` makes a standby
    change its state once, right after applying the record at that LSN, by an extra audit
    entry that is in no log: its state then differs from the primary's, and the divergence
    alarm must fire (tests/test_divergence.py). Returns whether to perturb after `lsn`."""
    wanted = int(os.environ.get("ACD_TEST_DIVERGE_AT_LSN", "0") or 0)
    fired = False

    def due(lsn: int) -> bool:
        nonlocal fired
        if wanted and not fired and lsn == wanted:
            fired = True
            return True
        return False

    return due
