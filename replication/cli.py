"""Cluster subcommands of `acd`: witness, status, switchover, promote.

`status`, `switchover` and `promote` check first that every configured address answers as the
node and cluster the config names (`acd.tools.identity`); a mismatch is an error naming both.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx
import trio

from acd import settings as settings_module
from acd.argtypes import non_negative
from acd.logs import LEVELS
from acd.tools import identity

from .network import TcpNetwork, witness_limits
from .protocol import Channel, FrameError, StatusRequest, WitnessStatus, handshake
from .witness import FileStateStore, Witness


def register(subparsers: Any) -> None:
    witness = subparsers.add_parser(
        "witness", help="run the cluster's witness (the third vote)",
        description="Run the witness of the cluster described in FILE. It holds no data of the center, only the highest epoch it "
        "promised, the current leader and whether a node is recorded behind; it serves /metrics over HTTP on the same port.",
        epilog="example: acd witness --config examples/busan-120.toml",
    )
    witness.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    witness.add_argument("--log-level", default="info", choices=LEVELS, help="default: info")
    witness.set_defaults(run=_witness)

    status = subparsers.add_parser(
        "status", help="every node's role, epoch, LSNs, lag, mode, lease and the witness",
        description=(
            "Ask every node of the cluster (GET /v1/cluster) and the witness how they are and print a table.\n"
            "Every address must answer as the node and cluster the config names; a mismatch is reported\n"
            "with both names and nothing it answered is shown as this cluster's.\n\n"
            "exit status:\n"
            "  0  healthy: one primary, its standby connected, the witness up, lag within the limits\n"
            "  1  degraded: no connected standby, a node or the witness down, or lag past a limit\n"
            "  2  unreachable or mismatch: no node answers, no single primary, or an address answers\n"
            "     for another cluster or node"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: acd status --config examples/busan-120.toml --json",
    )
    status.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--token", default="", help="supervisor or admin token when authentication is on (default: $ACD_TOKEN)")
    status.add_argument("--max-lag", type=non_negative(int), default=1000, metavar="RECORDS",
                        help="standby lag in records past which the cluster counts as degraded (default: %(default)s)")
    status.add_argument("--max-lag-seconds", type=non_negative(float), default=5.0, metavar="SECONDS",
                        help="standby lag in seconds past which the cluster counts as degraded (default: %(default)s)")
    status.set_defaults(run=_status)

    switchover = subparsers.add_parser(
        "switchover", help="planned role swap with no lost writes",
        description="Ask the primary to hand over to the standby: it stops writing, waits until the standby has every record, "
        "releases its lease and steps down; the standby is elected at once. Refused before anything is sent when an "
        "address answers for another cluster or node.",
        epilog="example: acd switchover --config examples/busan-120.toml --to b",
    )
    switchover.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    switchover.add_argument("--to", default=None, metavar="NAME", help="the node to hand over to (default: the standby)")
    switchover.add_argument("--token", default="", help="admin token when authentication is on (default: $ACD_TOKEN)")
    switchover.set_defaults(run=_switchover)

    promote = subparsers.add_parser(
        "promote", help="promote a standby by hand (when the witness is gone)",
        description="Promote NAME to primary. Refused when the node may lack acknowledged writes (it was not in sync with the "
        "last primary) or when no vote can be had, unless --force: then the operator vouches that the old primary is dead. "
        "Refused before anything is sent when an address answers for another cluster or node.",
        epilog="example: acd promote --config examples/busan-120.toml --node b",
    )
    promote.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    promote.add_argument("--node", required=True, metavar="NAME", help="the standby to promote")
    promote.add_argument("--force", action="store_true", help="promote even if acknowledged writes could be lost")
    promote.add_argument("--token", default="", help="admin token when authentication is on (default: $ACD_TOKEN)")
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
                          network=TcpNetwork(server_tls, client_tls, limits=witness_limits(settings)),  # type: ignore[arg-type]
                          nodes=[node.name for node in settings.nodes])
        await witness.run()

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"witness: cannot listen on {settings.witness.address}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0


HEALTHY, DEGRADED, UNREACHABLE = 0, 1, 2


def cluster_status(settings: settings_module.Settings, token: str = "", *, max_lag: int = 1000,
                   max_lag_seconds: float = 5.0) -> dict[str, Any]:
    """Every node's and the witness's answer, checked against the config, with a verdict and its reasons."""
    answers = identity.ask_all(settings, token)
    nodes = []
    unreachable: list[str] = []
    mismatches: list[str] = []
    degraded: list[str] = []
    for answer in answers:
        row: dict[str, Any] = {"node": answer.node, "api": answer.address}
        if answer.mismatch:
            assert answer.view is not None
            mismatches.append(answer.mismatch)
            row.update(error=answer.mismatch, answered_as={"cluster": answer.view.get("cluster"), "node": answer.view.get("name")})
        elif answer.view is None:
            unreachable.append(answer.problem)
            row["error"] = answer.problem
        else:
            row.update(answer.view)
            row["node"], row["api"] = answer.node, answer.address
        nodes.append(row)
    witness: dict[str, Any] | None = None
    if settings.witness is not None:
        witness = trio.run(witness_status, settings)
        if "error" in witness:
            (mismatches if witness.get("mismatch") else degraded).append(f"witness {witness['error']}")
    good = [row for row in nodes if "error" not in row]
    primaries = [row for row in good if row.get("role") == "primary"]
    reasons = mismatches + [f"node {row['node']} unreachable: {row['error']}" for row in nodes if row.get("error") and "answered_as" not in row]
    reasons += degraded  # the witness, when it is down
    degraded = []
    if mismatches or not good:
        verdict = "mismatch" if mismatches else "unreachable"
        code = UNREACHABLE
    elif len(primaries) != 1:
        verdict, code = "unreachable", UNREACHABLE
        reasons.append("no writable primary" if not primaries else f"{len(primaries)} nodes claim to be primary")
    else:
        primary = primaries[0]
        if len(settings.nodes) > 1:
            if not primary.get("peer_connected"):
                degraded.append(f"no standby connected to the primary {primary['node']}")
            lag = primary.get("lag_records") or 0
            if lag > max_lag:
                degraded.append(f"the standby is {lag} records behind (limit {max_lag})")
            lag_seconds = primary.get("lag_seconds") or 0.0
            if lag_seconds > max_lag_seconds:
                degraded.append(f"the standby is {lag_seconds:.1f} s behind (limit {max_lag_seconds:g} s)")
            diverged_at = primary.get("standby_diverged_at_lsn")
            if diverged_at is not None:
                degraded.append(f"the standby {primary.get('peer')}'s state differs from the primary's at LSN {diverged_at} "
                                f"(state hashes differ): it is not electable until it is rebuilt from the primary's snapshot and agrees")
        reasons += degraded
        verdict, code = ("degraded", DEGRADED) if reasons else ("healthy", HEALTHY)
    return {"cluster": settings.cluster.name, "mode": settings.cluster.mode, "health": verdict, "exit": code,
            "reasons": reasons, "nodes": nodes, "witness": witness}


async def witness_status(settings: settings_module.Settings) -> dict[str, Any]:
    """The witness's status over its protocol; `error` (and `mismatch`) when it does not answer for this cluster."""
    assert settings.witness is not None
    address = settings.witness.address
    try:
        with trio.fail_after(2):
            _server, client_tls = settings.replication_tls("", "")
            stream = await TcpNetwork(None, client_tls).connect(address)  # type: ignore[arg-type]
            channel = Channel(stream, cluster=settings.cluster.name, secret=settings.secret())
            try:
                await handshake(channel, node="status", role="client", purpose="status", initiator=True)
                await channel.send(StatusRequest())
                reply = await channel.receive()
            finally:
                await channel.aclose()
    except trio.TooSlowError:
        return {"address": address, "error": f"{address}: no answer in time (host down, or the process is stopped)"}
    except FrameError as error:
        return {"address": address, "mismatch": True, "error": f"{address} answers for another cluster or with another secret ({error})"}
    except (trio.EndOfChannel, trio.BrokenResourceError):
        return {"address": address, "error": f"{address}: closed the connection (a witness of another cluster, another "
                                            f"cluster secret, or not a witness at all)"}
    except OSError as error:
        return {"address": address, "error": identity.reason(error, address)}
    if not isinstance(reply, WitnessStatus):
        return {"address": address, "error": f"{address}: unexpected reply"}
    if reply.cluster != settings.cluster.name:
        return {"address": address, "mismatch": True,
                "error": f"{address} answers as the witness of cluster {reply.cluster!r}, but {settings.path} names cluster "
                         f"{settings.cluster.name!r}"}
    return {"address": address, "cluster": reply.cluster, "epoch": reply.promised_epoch, "leader": reply.leader,
            "lease_remaining": round(reply.lease_remaining, 3), "behind": reply.behind or None}


def _status(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    status = cluster_status(settings, args.token, max_lag=args.max_lag, max_lag_seconds=args.max_lag_seconds)
    if args.json:
        print(json.dumps(status, indent=2))
        return int(status["exit"])
    print(f"cluster {status['cluster']} (mode {status['mode']}): {status['health']}")
    columns = ("node", "role", "epoch", "lsn", "applied_lsn", "lag_records", "peer_connected", "lease_remaining", "binary", "core", "api")
    rows = []
    for node in status["nodes"]:
        if "error" in node:
            role = "MISMATCH" if "answered_as" in node else "unreachable"
            rows.append([node["node"], role, *(["-"] * (len(columns) - 3)), node["api"]])
        else:
            # core: the active core version, then the range this node's binary supports.
            supported = node.get("core_versions") or ["-", "-"]
            node = {**node, "binary": node.get("binary_version", "-"),
                    "core": f"{node.get('active_core_version', '-')} ({supported[0]}..{supported[1]})"}
            rows.append([str(node.get(column, "-")) for column in columns])
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    witness = status["witness"]
    if witness is not None and "error" not in witness:
        print(f"witness {witness['address']}: epoch {witness['epoch']}, leader {witness['leader'] or '-'}, "
              f"lease {witness['lease_remaining']} s, behind {witness['behind'] or '-'}")
    for node in status["nodes"]:
        if node.get("role") == "primary" and node.get("rejoins"):
            print(f"standby {node.get('peer')}: in sync {node['last_rejoin_seconds']} s after it last (re)connected "
                  f"({node['rejoins']} rejoins since the node started)")
    for reason in status["reasons"]:
        print(f"  {reason}")
    return int(status["exit"])


def _checked(settings: settings_module.Settings, token: str) -> list[identity.Answer] | None:
    try:
        return identity.require(settings, token)
    except identity.IdentityError as error:
        print(f"acd: refused, nothing was sent: {error}", file=sys.stderr)
        return None


def _post(settings: settings_module.Settings, path: str, body: dict[str, Any], token: str, prefer: str | None = None) -> int:
    answers = _checked(settings, token)
    if answers is None:
        return 2
    nodes = sorted(settings.nodes, key=lambda node: node.name != prefer)
    last_error = "no node answered: " + "; ".join(answer.problem for answer in answers if answer.problem)
    with identity.client(settings, timeout=10.0) as http:
        for node in nodes:
            try:
                response = http.post(identity.base_url(settings, node.api) + path, json=body, headers=identity.headers(token))
            except httpx.HTTPError as error:
                last_error = f"node {node.name}: {identity.reason(error, node.api, settings)}"
                continue
            if response.status_code == 503 and prefer is None:
                last_error = f"node {node.name}: {response.text}"
                continue
            try:
                print(json.dumps(response.json(), indent=2))
            except ValueError:
                print(response.text)
            return 0 if response.status_code < 300 else 1
    print(f"acd: {last_error}", file=sys.stderr)
    return 1


def _switchover(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if args.to is not None:
        settings.node(args.to)
    return _post(settings, "/v1/cluster/switchover", {"to": args.to} if args.to else {}, args.token)


def _promote(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    settings.node(args.node)
    return _post(settings, "/v1/cluster/promote", {"force": args.force}, args.token, prefer=args.node)
