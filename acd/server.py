"""`acd serve`: the one module that wires a node, its HTTP API and replication together.

The layers below do not know each other's wiring: `acd.node` (the pipeline over the core and
the store) imports neither the API nor replication; `acd.api` serves any node it is given;
`replication` drives a node it is handed; `acd.connections` is Hypercorn as the node runs it.
Here they meet, in one Trio nursery.

Start-up: open the store and recover (snapshot, tail replay, verification; a store of another
cluster, a damaged record or a gap stops here with a `StoreError` naming the problem), start
the pipeline, join the cluster when the config has two nodes, apply the config file's center
on a primary (once, through the log), then listen, every connection passing the gate of
`acd.connections` (docs/operations.md, "Security").

Shutdown (SIGTERM or SIGINT): refuse new writes, end every event stream with a final
`stream.closed` event, let Hypercorn finish the requests in flight, stop the pipeline, close
the store. A second signal cuts the wait short. SIGHUP re-reads the config file (`acd config
reload` does the same over HTTP).
"""

from __future__ import annotations

import gc
import inspect
import logging
import signal
import sys
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from acd.api.app import Api, build_app
from acd.api.errors import ApiError
from acd.connections import connection_gate, hypercorn_config, install
from acd.core import versions
from acd.node.metrics import GcPauses
from acd.node.node import Node, NodeError
from acd.settings import Settings

log = logging.getLogger("acd.serve")


class ServeError(Exception):
    """The node cannot start for a reason the operator must fix (printed without a traceback)."""



def _check_bind(config: hypercorn.config.Config) -> None:
    """Fail with a plain message when the API address cannot be bound (in use, not local).

    Hypercorn binds again right after (its sockets set SO_REUSEADDR), so this costs one bind.
    """
    try:
        sockets = config.create_sockets()
    except OSError as error:
        raise ServeError(f"cannot listen on {', '.join(config.bind)}: {error.strerror or error}") from None
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.close()


async def _join_cluster(node: Node, nursery: trio.Nursery, settings: Settings) -> Any:
    if settings.standalone:
        return None
    try:
        from replication import cluster as replication_cluster
    except ImportError as error:
        raise ServeError(
            f"{settings.path}: this config describes a two-node cluster, but this build has no "
            f"replication layer ({error}); run a one-node config (no [witness]) for a standalone node"
        ) from None
    result: Any = replication_cluster.run(node, nursery, settings)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _handle_signals(api: Api, shutdown: trio.Event, cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                # A standby reloads tokens and limits; the center reaches it through the log.
                try:
                    await api.reload_config(actor="sighup", apply_center=api.node.role == "primary")
                except ApiError as error:
                    log.error("config reload refused: %s problems=%s", error.message, "; ".join(error.problems or []))
                except NodeError as error:
                    log.error("config reload not applied: %s", error)
                continue
            if shutdown.is_set():
                log.warning("second signal: stopping now signal=%s", signal.Signals(signum).name)
                cancel.cancel()
                return
            log.info("shutting down signal=%s", signal.Signals(signum).name)
            api.begin_shutdown()
            shutdown.set()


async def serve(
    settings: Settings,
    node_name: str,
    *,
    bind: str | None = None,
    handle_signals: bool = True,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run node `node_name` of `settings` until a signal (or `shutdown`) stops it.

    `task_status.started()` reports the addresses Hypercorn listens on (useful with port 0).
    """
    config = hypercorn_config(settings, node_name, bind)
    _check_bind(config)
    node = Node(settings, node_name)
    for key, allowed in (("allow_unauthenticated_api", settings.cluster.allow_unauthenticated_api),
                         ("allow_unauthenticated_replication", settings.cluster.allow_unauthenticated_replication)):
        if allowed:
            log.warning("protected mode relaxed by cluster.%s = true: check that something else authenticates every client", key)
    if not settings.tokens:
        log.warning(
            "AUTHENTICATION IS OFF: the config has no [[tokens]]; anyone who reaches %s may do "
            "anything. Add tokens (acd token hash) before exposing this node",
            bind or settings.node(node_name).api,
        )
    shutdown = shutdown or trio.Event()
    gc_pauses = GcPauses(node.metrics)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_pipeline)
            cluster = await _join_cluster(node, nursery, settings)
            if node.role == "primary":
                result = await node.apply_settings_center()
                if result is not None:
                    log.info("center configured from file node=%s lsn=%d version=%d", node.name, node.lsn, node.center.state.config_version)
            api = build_app(node, cluster=cluster)
            config.acd_gate = connection_gate(settings, node.metrics.registry)  # type: ignore[attr-defined]

            async def run_http(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
                install()
                try:
                    await hypercorn.trio.serve(api, config, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]
                finally:
                    # The HTTP server is done (or failed): nothing may submit any more.
                    nursery.cancel_scope.cancel()

            async def watch_shutdown() -> None:
                await shutdown.wait()
                api.begin_shutdown()

            binds = await nursery.start(run_http)
            nursery.start_soon(watch_shutdown)
            if handle_signals:
                nursery.start_soon(_handle_signals, api, shutdown, nursery.cancel_scope)
            # What exists now (modules, the recovered state) lives as long as the process: out
            # of the cyclic collector's sight, a full collection walks only what came later,
            # which keeps its pauses (every request waits for them) short.
            gc.collect()
            gc.freeze()
            # A full collection walks every object made since (the day's state grows all day:
            # 18 ms at 20,000 calls); with the default threshold one ran every ~10 s under
            # load, a pause every request in flight waits for. One in ten times fewer.
            gc.set_threshold(700, 10, 100)
            gc_pauses.install()
            # The commit's worker thread needs the GIL back after each fsync; while the event
            # loop is busy it would wait up to the default 5 ms switch interval every time.
            sys.setswitchinterval(0.001)
            if versions.gate_removed():
                log.warning("TEST HOOK: %s=1: this binary applies core version %d's rule whatever the active version "
                            "(a planted bug, for the divergence alarm's test only)", versions.NO_GATE_ENV, versions.CORE_VERSION_NEXT)
            log.info(
                "serving node=%s role=%s lsn=%d epoch=%d listen=%s queues=%d agents=%d",
                node.name, node.role, node.lsn, node.store.epoch(), ",".join(binds),
                len(node.center.config.queues), len(node.center.config.agents),
            )
            task_status.started(binds)
    finally:
        gc_pauses.remove()
        node.close()
        log.info("stopped node=%s lsn=%d", node.name, node.lsn)


def run(settings: Settings, node_name: str) -> None:
    """Blocking entry point of `acd serve`."""
    trio.run(partial(serve, settings, node_name))
