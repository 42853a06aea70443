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

import fcntl
import gc
import mmap
import os
import signal
import sys
import warnings
from dataclasses import dataclass

from acd.core import Center
from acd.store.records import Snapshot, encode

CAN_FORK = hasattr(os, "fork") and sys.platform != "win32"
_READ_BYTES = 1 << 20
_LENGTH_BYTES = 8


class ChildFailed(Exception):
    """The child that encoded the snapshot did not finish (it was killed or failed)."""


@dataclass
class EncodingChild:
    pid: int
    read_fd: int

    def collect(self) -> memoryview:
        """The snapshot as the store keeps it (`records.encode(Snapshot)`), once the child has
        written all of it and exited (blocking: call it from a worker thread).

        The child sends the length first, so the bytes are read straight into one buffer: no
        joining of pieces, a copy of tens of megabytes that would hold the GIL. The buffer is
        an anonymous mapping, whose pages the kernel zeroes as the reads fill them (also
        without the GIL), where a `bytearray` of that size is zeroed up front, holding it."""
        received = 0
        try:
            header = bytearray(_LENGTH_BYTES)
            self._read_into(memoryview(header))
            length = int.from_bytes(header, "big")
            data = memoryview(mmap.mmap(-1, length)) if length else memoryview(b"")
            received = self._read_into(data)
        finally:
            os.close(self.read_fd)
            _pid, status = os.waitpid(self.pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            how = f"exit code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"
            raise ChildFailed(f"the child encoding the snapshot (pid {self.pid}) ended with {how}")
        if received != len(data):
            raise ChildFailed(f"the child encoding the snapshot (pid {self.pid}) sent {received} of {len(data)} bytes")
        return data

    def _read_into(self, view: memoryview) -> int:
        """Fill `view` from the pipe; how many bytes came before the end of the pipe."""
        filled = 0
        while filled < len(view):
            count = os.readv(self.read_fd, [view[filled:]])
            if count == 0:
                break
            filled += count
        return filled


def _widen(fd: int) -> None:
    """A pipe of 1 MiB rather than 64 KiB: 16 times fewer reads, each of which takes the GIL
    back from the event loop."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _READ_BYTES)
    except (AttributeError, OSError):  # not Linux, or over /proc/sys/fs/pipe-max-size
        pass


def fork_encoder(center: Center, *, lsn: int, epoch: int, at: float) -> EncodingChild:
    """Fork a child that encodes `center`'s state as it is now, as the snapshot at `lsn` (of
    `epoch`, last command at `at`) that the store keeps; raises OSError if it cannot."""
    read_fd, write_fd = os.pipe()
    _widen(read_fd)
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
        _encode_and_exit(center, read_fd, write_fd, lsn=lsn, epoch=epoch, at=at)
    os.close(write_fd)
    return EncodingChild(pid, read_fd)


def _stay_out_of_the_way() -> None:
    """Lower the child's priority and, when the node is pinned to some cores and others exist,
    run it on the others: sharing the node's core, it would take its time slices."""
    os.nice(10)
    try:
        mine = os.sched_getaffinity(0)
        others = set(range(os.cpu_count() or 1)) - mine
        if others:
            os.sched_setaffinity(0, others)
    except (AttributeError, OSError):  # not Linux, or a cpuset that forbids the others
        pass


def detach_child(read_fd: int, write_fd: int) -> None:
    """The start of a forked child that works on the state and writes its result to `write_fd`
    (a snapshot, a state hash): deaf to signals, holding no descriptor of the parent's but
    `write_fd`, no garbage collection, and out of the node's way."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    # Let go of the parent's descriptors first, before the priority drops: among them is
    # the store's lock, and a node killed now must be able to start again at once. Niced
    # on a busy machine, the child could otherwise hold that lock for a long while.
    os.close(read_fd)
    os.closerange(3, write_fd)
    os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
    gc.disable()
    _stay_out_of_the_way()


def _encode_and_exit(center: Center, read_fd: int, write_fd: int, *, lsn: int, epoch: int, at: float) -> None:
    code = 1
    try:
        detach_child(read_fd, write_fd)
        data = encode(Snapshot.make(lsn=lsn, epoch=epoch, at=at, state=center.snapshot()))
        os.write(write_fd, len(data).to_bytes(_LENGTH_BYTES, "big"))
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
        code = 0
    finally:
        os._exit(code)
