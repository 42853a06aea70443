"""Encoding a snapshot of the state in a forked child, off the node's event loop.

A snapshot must be the state between two batches, and encoding it holds the GIL for as long
as it takes (35-53 ms at 25,000 interactions, 17 MB; it grows with the day's interactions).
Done in the event loop, every request in flight waits that long. Here the node forks at that
moment instead (as Redis does for its background saves): the child has a copy-on-write image
of the state as it was, encodes it and writes the bytes into a pipe, and the parent, which
went on serving as soon as the fork returned (about a millisecond), reads them in a worker
thread and stores them. The child only encodes, writes and exits: it blocks every signal,
closes every other descriptor it inherited (sockets, the store, the loop's wakeup pipe), and
leaves with `os._exit`, so nothing of the parent's (atexit hooks, buffers, the store) runs
in it.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import warnings
from dataclasses import dataclass

from acd.core import Center

CAN_FORK = hasattr(os, "fork") and sys.platform != "win32"
_READ_BYTES = 1 << 20


class ChildFailed(Exception):
    """The child that encoded the snapshot did not finish (it was killed or failed)."""


@dataclass
class EncodingChild:
    pid: int
    read_fd: int

    def collect(self) -> bytes:
        """The encoded state, once the child has written all of it and exited (blocking: call
        it from a worker thread)."""
        parts = []
        try:
            while chunk := os.read(self.read_fd, _READ_BYTES):
                parts.append(chunk)
        finally:
            os.close(self.read_fd)
            _pid, status = os.waitpid(self.pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            how = f"exit code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"
            raise ChildFailed(f"the child encoding the snapshot (pid {self.pid}) ended with {how}")
        return b"".join(parts)


def fork_encoder(center: Center) -> EncodingChild:
    """Fork a child that encodes `center`'s state as it is now; raises OSError if it cannot."""
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads; the child runs no
            # thread's code and touches no lock but the allocator's (reset by the fork).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # the child
        _encode_and_exit(center, read_fd, write_fd)
    os.close(write_fd)
    return EncodingChild(pid, read_fd)


def _encode_and_exit(center: Center, read_fd: int, write_fd: int) -> None:
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        gc.disable()
        os.close(read_fd)
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
        view = memoryview(center.snapshot())
        while view:
            view = view[os.write(write_fd, view):]
        code = 0
    finally:
        os._exit(code)
