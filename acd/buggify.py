"""Fault points for the disaster-recovery simulator (FoundationDB's BUGGIFY), inert elsewhere.

Production code marks the places where the simulator may make the world misbehave:

    await buggify.point("store.append", self.name)   # a disk write: slow, paused, crashed here

The points: `store.append` (`Node.append_records`: a slow disk, a crash or a pause in the
middle of a commit), `node.pipeline` (the top of the pipeline loop) and `member.timer` (the
lease watch and the election timer of `replication.cluster.ReplicationDriver`): where a paused process
stops. Outside a simulation `point()` returns at once without a checkpoint and `fire()` is
False, so the marks cost one function call. Inside one (`with buggify.simulation(hooks):`), the
simulator's hooks decide, from the run's seed, whether a point misbehaves this time: a slow
disk sleeps on the virtual clock, a paused (zombie) node blocks until it is resumed.

`sleep(seconds)` is `trio.sleep` outside a simulation; inside, the simulator's cheaper timer on
its virtual clock (replication's periodic waits use it: lease renewal, lease watch, backoffs).

`bug(name)` is the other half: a deliberately broken variant of the replication code that a
test switches on (`with buggify.bugs("ack_before_standby"):`) to prove that the simulator
catches it. Known bugs:

- `ack_before_standby`: the primary acknowledges a batch without waiting until the standby
  holds it durably (`replication.cluster.ReplicationDriver.replicate`); breaks invariant 1.
- `skip_lease_check`: the primary keeps acknowledging after its lease ran out (the simulator's
  member reports its lease valid while it has the primary role); breaks invariant 2.

Only the simulator (`sim.dr`) and tests switch either on; nothing here reads the
environment, so a production process can never enter a simulation by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import trio

KNOWN_BUGS = frozenset({"ack_before_standby", "skip_lease_check"})


class Hooks(Protocol):
    """What a simulator supplies: a decision for `fire` and an await for `point`."""

    def fire(self, name: str, node: str) -> bool: ...

    async def point(self, name: str, node: str) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


_hooks: Hooks | None = None
_bugs: frozenset[str] = frozenset()


def active() -> bool:
    """True only inside `simulation()`."""
    return _hooks is not None


def fire(name: str, node: str = "") -> bool:
    """Whether the fault point `name` misbehaves now on `node`; always False outside a simulation."""
    hooks = _hooks
    return hooks is not None and hooks.fire(name, node)


async def point(name: str, node: str = "") -> None:
    """An await point where the simulator may delay or block the caller; returns at once outside."""
    hooks = _hooks
    if hooks is not None:
        await hooks.point(name, node)


async def sleep(seconds: float) -> None:
    """`trio.sleep`; inside a simulation, the simulator's timer on its virtual clock.

    For the periodic waits of replication (lease renewal and watch, reconnect backoff): the
    simulator's timer wakes a task without trio's cancellation machinery, which is most of
    what a tick costs in a simulated run. Same semantics: cancellable, wakes at the time.
    """
    hooks = _hooks
    if hooks is None:
        await trio.sleep(seconds)
    else:
        await hooks.sleep(seconds)


def bug(name: str) -> bool:
    """Whether the deliberately broken variant `name` is switched on (never in production)."""
    return name in _bugs


@contextmanager
def simulation(hooks: Hooks) -> Iterator[None]:
    """Install the simulator's hooks for the duration of one run (runs do not nest)."""
    global _hooks
    if _hooks is not None:
        raise RuntimeError("a simulation is already running in this process")
    _hooks = hooks
    try:
        yield
    finally:
        _hooks = None


@contextmanager
def bugs(*names: str) -> Iterator[None]:
    """Switch deliberately broken variants on (tests of the simulator only)."""
    global _bugs
    unknown = set(names) - KNOWN_BUGS
    if unknown:
        raise ValueError(f"unknown bug(s) {sorted(unknown)}; known: {sorted(KNOWN_BUGS)}")
    previous = _bugs
    _bugs = previous | frozenset(names)
    try:
        yield
    finally:
        _bugs = previous
