"""Cluster subcommands of `acd`: witness, status, switchover, promote."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx
import trio

from acd import settings as settings_module

from .network import TcpNetwork
from .protocol import Channel, StatusRequest, WitnessStatus, handshake
from .witness import FileStateStore, Witness


def register(subparsers: Any) -> None:
    witness = subparsers.add_parser(
        "witness", help="run the cluster's witness (the third vote)",
        description="Run the witness of the cluster described in FILE. It holds no data of the center, only the highest epoch it "
        "promised, the current leader and whether a node is recorded behind; it serves /metrics over HTTP on the same port.",
        epilog="example: acd witness --config examples/busan-120.toml",
    )
    witness.add_argument("--config", required=True, metavar="FILE")
    witness.add_argument("--log-level", default="info")
    witness.set_defaults(run=_witness)

    status = subparsers.add_parser(
        "status", help="every node's role, epoch, LSNs, lag, mode, lease and the witness",
        description="Ask every node of the cluster (and the witness) how it is and print a table.",
        epilog="example: acd status --config examples/busan-120.toml --json",
    )
    status.add_argument("--config", required=True, metavar="FILE")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--token", default="", help="admin token when authentication is on")
    status.set_defaults(run=_status)

    switchover = subparsers.add_parser(
        "switchover", help="planned role swap with no lost writes",
        description="Ask the primary to hand over to the standby: it stops writing, waits until the standby has every record, "
        "releases its lease and steps down; the standby is elected at once.",
        epilog="example: acd switchover --config examples/busan-120.toml --to b",
    )
    switchover.add_argument("--config", required=True, metavar="FILE")
    switchover.add_argument("--to", default=None, metavar="NAME")
    switchover.add_argument("--token", default="")
    switchover.set_defaults(run=_switchover)

    promote = subparsers.add_parser(
        "promote", help="promote a standby by hand (when the witness is gone)",
        description="Promote NAME to primary. Refused when the node may lack acknowledged writes (it was not in sync with the "
        "last primary) or when no vote can be had, unless --force: then the operator vouches that the old primary is dead.",
        epilog="example: acd promote --config examples/busan-120.toml --node b",
    )
    promote.add_argument("--config", required=True, metavar="FILE")
    promote.add_argument("--node", required=True, metavar="NAME")
    promote.add_argument("--force", action="store_true", help="promote even if acknowledged writes could be lost")
    promote.add_argument("--token", default="")
    promote.set_defaults(run=_promote)


def _load(path: str) -> settings_module.Settings:
    try:
        return settings_module.load(path)
    except settings_module.SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None


def _witness(args: argparse.Namespace) -> int:
    from acd.logs import configure

    configure(args.log_level)
    settings = _load(args.config)
    if settings.witness is None:
        print(f"{args.config}: witness: this cluster has no [witness] section", file=sys.stderr)
        return 2
    section = settings.witness
    try:
        store = FileStateStore(settings.resolve(section.data_dir), settings.cluster.name)
        store.load()
        secret = settings.secret()
        server_tls, client_tls = settings.replication_tls(section.tls_cert, section.tls_key)
    except (ValueError, OSError) as error:
        print(f"witness: {error}", file=sys.stderr)
        return 2

    async def serve() -> None:
        witness = Witness(cluster=settings.cluster.name, address=section.address, store=store,
                          lease_seconds=settings.cluster.failover_timeout, secret=secret,
                          network=TcpNetwork(server_tls, client_tls))  # type: ignore[arg-type]
        await witness.run()

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"witness: cannot listen on {settings.witness.address}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _url(address: str) -> str:
    return f"http://{address}"


def cluster_status(settings: settings_module.Settings, token: str = "") -> dict[str, Any]:
    nodes = []
    for node in settings.nodes:
        try:
            response = httpx.get(_url(node.api) + "/v1/cluster", headers=_headers(token), timeout=2.0)
            view = response.json() if response.status_code == 200 else {"error": response.text[:200]}
        except httpx.HTTPError as error:
            view = {"error": f"unreachable: {error.__class__.__name__}"}
        nodes.append({"node": node.name, "api": node.api, **view})
    witness: dict[str, Any] | None = None
    if settings.witness is not None:
        witness = trio.run(_witness_status, settings)
    return {"cluster": settings.cluster.name, "mode": settings.cluster.mode, "nodes": nodes, "witness": witness}


async def _witness_status(settings: settings_module.Settings) -> dict[str, Any]:
    assert settings.witness is not None
    try:
        with trio.fail_after(2):
            _server, client_tls = settings.replication_tls("", "")
            stream = await TcpNetwork(None, client_tls).connect(settings.witness.address)  # type: ignore[arg-type]
            channel = Channel(stream, cluster=settings.cluster.name, secret=settings.secret())
            await handshake(channel, node="status", role="client", purpose="status", initiator=True)
            await channel.send(StatusRequest())
            reply = await channel.receive()
            await channel.aclose()
    except (OSError, trio.TooSlowError, trio.EndOfChannel, trio.BrokenResourceError) as error:
        return {"address": settings.witness.address, "error": f"unreachable: {error.__class__.__name__}"}
    if not isinstance(reply, WitnessStatus):
        return {"address": settings.witness.address, "error": "unexpected reply"}
    return {"address": settings.witness.address, "epoch": reply.promised_epoch, "leader": reply.leader,
            "lease_remaining": round(reply.lease_remaining, 3), "behind": reply.behind or None}


def _status(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    status = cluster_status(settings, args.token)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"cluster {status['cluster']} (mode {status['mode']})")
    columns = ("node", "role", "epoch", "lsn", "applied_lsn", "lag_records", "peer_connected", "lease_remaining", "api")
    rows = [[str(node.get(column, node.get("error", "-") if column == "role" else "-")) for column in columns] for node in status["nodes"]]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    witness = status["witness"]
    if witness is not None:
        if "error" in witness:
            print(f"witness {witness['address']}: {witness['error']}")
        else:
            print(f"witness {witness['address']}: epoch {witness['epoch']}, leader {witness['leader'] or '-'}, "
                  f"lease {witness['lease_remaining']} s, behind {witness['behind'] or '-'}")
    primaries = [node for node in status["nodes"] if node.get("role") == "primary"]
    return 0 if len(primaries) == 1 else 1


def _post(settings: settings_module.Settings, path: str, body: dict[str, Any], token: str, prefer: str | None = None) -> int:
    nodes = sorted(settings.nodes, key=lambda node: node.name != prefer)
    last_error = "no node answered"
    for node in nodes:
        try:
            response = httpx.post(_url(node.api) + path, json=body, headers=_headers(token), timeout=10.0)
        except httpx.HTTPError as error:
            last_error = f"{node.name}: unreachable ({error.__class__.__name__})"
            continue
        if response.status_code == 503 and prefer is None:
            last_error = f"{node.name}: {response.text}"
            continue
        print(json.dumps(response.json(), indent=2))
        return 0 if response.status_code < 300 else 1
    print(last_error, file=sys.stderr)
    return 1


def _switchover(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    return _post(settings, "/v1/cluster/switchover", {"to": args.to} if args.to else {}, args.token)


def _promote(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    settings.node(args.node)
    return _post(settings, "/v1/cluster/promote", {"force": args.force}, args.token, prefer=args.node)
