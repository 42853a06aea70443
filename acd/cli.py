"""The `acd` command: run a node, check and reload configuration, hash tokens, verify a store.

    acd serve --config busan-120.toml --node a
    acd config check busan-120.toml
    acd config reload --config busan-120.toml --token "$ACD_ADMIN_TOKEN"
    acd token hash                      # reads the token from standard input
    acd verify --config busan-120.toml --node a
    acd upgrade status --config busan-120.toml

Errors an operator must fix (a config problem, a damaged or foreign data directory, a port in
use) print one message to stderr and exit 2, never a traceback. The replication layer adds its
subcommands (`status`, `switchover`, `promote`, `witness`) through `replication.cli.register`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from acd import logs
from acd import settings as settings_module
from acd.argtypes import non_negative
from acd.groups import find_exception

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="acd",
        formatter_class=Formatter,
        description="A high-availability automatic call distributor for 120 citizen call centers.",
        epilog=(
            "examples:\n"
            "  acd serve --config examples/standalone.toml --node a\n"
            "  acd config check examples/busan-120.toml\n"
            "  acd token hash < token.txt\n"
            "\nRun `acd COMMAND --help` for the options of each command."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = subparsers.add_parser(
        "serve", help="run one node (a one-node config runs a standalone primary)", formatter_class=Formatter,
        description=(
            "Run one node of the cluster described by the config file: recover its store, start the\n"
            "command pipeline and the HTTP API on the node's `api` address. SIGTERM or SIGINT shut it\n"
            "down cleanly; SIGHUP re-reads the config file (like `acd config reload`)."
        ),
        epilog="example:\n  acd serve --config examples/standalone.toml --node a --log-level info",
    )
    serve.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    serve.add_argument("--node", required=True, metavar="NAME", help="which [[nodes]] entry this process is")
    serve.add_argument("--log-level", default="info", choices=logs.LEVELS, help="default: info")
    serve.set_defaults(run=_serve)

    config = subparsers.add_parser(
        "config", help="check or reload the configuration", formatter_class=Formatter,
        description="Check a config file, or make the running primary apply it.",
        epilog="examples:\n  acd config check examples/busan-120.toml\n  acd config reload --config examples/busan-120.toml --token \"$ACD_TOKEN\"",
    )
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION")
    check = config_commands.add_parser(
        "check", help="validate a config file and list every problem", formatter_class=Formatter,
        description=(
            "Validate a config file without starting anything. Prints `ok: ...` and exits 0, or lists\n"
            "every problem as FILE:LINE: KEY: MESSAGE and exits 2."
        ),
        epilog="example:\n  acd config check examples/busan-120.toml",
    )
    check.add_argument("file", metavar="FILE", nargs="?", help="the config file to check (or --config FILE)")
    check.add_argument("--config", dest="config_file", metavar="FILE", help="the config file to check, as for the other commands")
    check.set_defaults(run=_config_check)
    reload = config_commands.add_parser(
        "reload", help="make the running primary re-read its config file", formatter_class=Formatter,
        description=(
            "Validate the config file here, then ask the primary (POST /v1/config/reload) to re-read its\n"
            "own copy and apply the center through the log (it replicates and replays). Tokens and\n"
            "limits apply at once; addresses and cluster settings need a restart (listed in the reply).\n"
            "The admin token comes from --token or the ACD_TOKEN environment variable."
        ),
        epilog="example:\n  ACD_TOKEN=... acd config reload --config busan-120.toml",
    )
    reload.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file (checked here first)")
    reload.add_argument("--token", default=None, help="an admin token (default: $ACD_TOKEN)")
    reload.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="default: 10")
    reload.set_defaults(run=_config_reload)
    config.set_defaults(run=lambda args: _usage(config))

    token = subparsers.add_parser(
        "token", help="token helpers", formatter_class=Formatter,
        description="Helpers for the [[tokens]] section.",
        epilog="example:\n  openssl rand -hex 24 | tee admin.token | acd token hash",
    )
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION")
    hash_parser = token_commands.add_parser(
        "hash", help="print the hash of a token for [[tokens]]", formatter_class=Formatter,
        description=(
            "Print the form a token takes in the config file (sha256:...). The config holds only the\n"
            "hash, so the file can be shared without giving tokens away. With no TOKEN argument the\n"
            "token is read from standard input (so it stays out of the shell history)."
        ),
        epilog=(
            "examples:\n"
            "  openssl rand -hex 24 | tee pbx.token | acd token hash\n"
            "  acd token hash s3cret-token\n"
            "\nthen in the config:\n"
            '  [[tokens]]\n  name = "pbx"\n  role = "pbx"        # pbx | agent | supervisor | admin\n'
            '  hash = "sha256:..."\n  # agent = "kim"     # for role = "agent"'
        ),
    )
    hash_parser.add_argument("token", nargs="?", metavar="TOKEN", help="the token (default: read from standard input)")
    hash_parser.set_defaults(run=_token_hash)
    token.set_defaults(run=lambda args: _usage(token))

    verify = subparsers.add_parser(
        "verify", help="check that a stopped node's state equals a replay of its log", formatter_class=Formatter,
        description=(
            "Open a stopped node's store, rebuild the state as start-up does (snapshot and tail) and,\n"
            "when the log still starts at LSN 1, by replaying the whole log into an empty center;\n"
            "compare the state hashes, check the snapshot against the replay and the core's\n"
            "invariants. Exits 0 when all agree, 1 when they differ, 2 when the store cannot be read.\n"
            "Compare the printed state_hash with GET /v1/admin/state of the restarted node."
        ),
        epilog="example:\n  acd verify --config examples/standalone.toml --node a --json",
    )
    verify.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    verify.add_argument("--node", required=True, metavar="NAME", help="the stopped node whose store to check")
    verify.add_argument("--json", action="store_true", help="print the report as one JSON object")
    verify.set_defaults(run=_verify)

    health = subparsers.add_parser(
        "health", help="wait until a node (or the witness) of this cluster answers on its address", formatter_class=Formatter,
        description=(
            "Ask one node's GET /healthz (or, with --witness, the witness's status) until it answers as that\n"
            "node of this cluster, or until --wait runs out. Exits 0 when it does, 1 when it does not answer\n"
            "in time, 2 when the address answers for another node or cluster. The systemd units run it as\n"
            "ExecStartPost, so a unit counts as started only once its process serves."
        ),
        epilog="examples:\n  acd health --config /etc/acd/cluster.toml --node a --wait 60\n  acd health --config /etc/acd/cluster.toml --witness",
    )
    health.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    which = health.add_mutually_exclusive_group(required=True)
    which.add_argument("--node", metavar="NAME", help="the node to ask")
    which.add_argument("--witness", action="store_true", help="ask the witness instead")
    health.add_argument("--wait", type=non_negative(float), default=0.0, metavar="SECONDS",
                        help="keep asking this long (default: %(default)s, ask once)")
    health.set_defaults(run=_health)

    upgrade = subparsers.add_parser(
        "upgrade", help="show or raise the cluster's core version after a rolling upgrade", formatter_class=Formatter,
        description=(
            "The log is applied with the rules of the cluster's active core version, whatever each node's\n"
            "binary (docs/operations.md, \"Rolling upgrade\"). `status` shows every node's binary, the core\n"
            "versions it supports and the active one; `finalize` raises the active version once every node\n"
            "runs a binary that supports it."
        ),
        epilog="examples:\n  acd upgrade status --config busan-120.toml\n  acd upgrade finalize --config busan-120.toml",
    )
    upgrade_commands = upgrade.add_subparsers(dest="upgrade_command", metavar="ACTION")
    upgrade_status = upgrade_commands.add_parser(
        "status", help="every node's binary version, supported core versions and the active one", formatter_class=Formatter,
        description=(
            "Ask every node (GET /v1/cluster) for its binary version, the core versions its binary supports\n"
            "and the core version its state runs, and print the version `finalize` would raise the cluster to.\n"
            "Exits 0 when every node answers, 1 when one does not, 2 when an address answers for another\n"
            "cluster or node, or none answers."
        ),
        epilog="example:\n  acd upgrade status --config busan-120.toml --json",
    )
    upgrade_status.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    upgrade_status.add_argument("--token", default="", help="supervisor or admin token when authentication is on (default: $ACD_TOKEN)")
    upgrade_status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    upgrade_status.set_defaults(run=_upgrade_status)
    finalize = upgrade_commands.add_parser(
        "finalize", help="raise the active core version (once every node's binary supports it)", formatter_class=Formatter,
        description=(
            "Ask the primary (POST /v1/cluster/upgrade) to record the new core version in the log: from that\n"
            "record on, both nodes apply the new rules. Refused, with nothing written, unless every node runs a\n"
            "binary that supports it (the primary asks its peer). Exits 0 when raised (or already active), 1\n"
            "when refused, 2 when an address answers for another cluster or node (nothing is sent)."
        ),
        epilog="example:\n  acd upgrade finalize --config busan-120.toml --version 2",
    )
    finalize.add_argument("--config", required=True, metavar="FILE", help="the cluster's TOML config file")
    finalize.add_argument("--version", type=int, default=None, metavar="N",
                          help="the core version to activate (default: the highest every node supports)")
    finalize.add_argument("--token", default="", help="admin token when authentication is on (default: $ACD_TOKEN)")
    finalize.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="default: 10")
    finalize.set_defaults(run=_upgrade_finalize)
    upgrade.set_defaults(run=lambda args: _usage(upgrade))

    return parser, subparsers


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _fail(message: str) -> int:
    print(f"acd: {message}", file=sys.stderr)
    return EXIT_USAGE


def _load(path: str) -> settings_module.Settings:
    return settings_module.load(path)


# ---------------------------------------------------------------------------- commands


def _serve(args: argparse.Namespace) -> int:
    from acd import server as serve_module
    from acd.store import StoreError

    logs.configure(args.log_level)
    settings = _load(args.config)
    settings.node(args.node)
    try:
        serve_module.run(settings, args.node)
    except BaseException as error:  # noqa: BLE001 - unwrap Trio's exception groups, once
        known = find_exception(error, (settings_module.SettingsError, StoreError, serve_module.ServeError))
        if known is not None:
            return _fail(str(known))
        if find_exception(error, (KeyboardInterrupt,)) is not None:
            return EXIT_OK
        raise
    return EXIT_OK


def _config_check(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.config_file):
        return _fail("config check: give the config file once, as FILE or --config FILE")
    args.file = args.file or args.config_file
    try:
        settings = _load(args.file)
    except settings_module.SettingsError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"{len(error.problems)} problem(s) in {args.file}", file=sys.stderr)
        return EXIT_USAGE
    center = settings.center
    warning = "" if settings.tokens else " (no [[tokens]]: authentication off)"
    print(
        f"ok: cluster {settings.cluster.name}, {len(settings.nodes)} node{'s' if len(settings.nodes) != 1 else ''}, "
        f"{len(center.queues)} queues, {len(center.agents)} agents{warning}"
    )
    return EXIT_OK


def _config_reload(args: argparse.Namespace) -> int:
    import httpx

    from acd.tools import identity

    settings = _load(args.config)
    token = args.token or os.environ.get("ACD_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        identity.require(settings, token or "")  # never reload another cluster's primary
    except identity.IdentityError as error:
        return _fail(f"config reload refused, nothing was sent: {error}")
    addresses = [node.api for node in settings.nodes]
    scheme = "https" if any(node.tls_cert for node in settings.nodes) else "http"
    tried: list[str] = []
    with httpx.Client(timeout=args.timeout, verify=identity.verify(settings)) as client:
        while addresses:
            address = addresses.pop(0)
            if address in tried:
                continue
            tried.append(address)
            try:
                response = client.post(f"{scheme}://{address}/v1/config/reload", headers=headers)
            except httpx.HTTPError as error:
                print(f"acd: {identity.reason(error, address, settings)}", file=sys.stderr)
                continue
            body = _json_or_text(response)
            if response.status_code == 200:
                print(json.dumps(body, indent=2))
                return EXIT_OK
            if response.status_code == 503 and isinstance(body, dict) and body.get("error") == "not_primary":
                primary = body.get("primary")
                if primary:
                    addresses.insert(0, primary)
                continue
            print(f"acd: {address}: HTTP {response.status_code}: {json.dumps(body)}", file=sys.stderr)
            return EXIT_FAILED
    return _fail(f"no primary answered (tried {', '.join(tried)})")


def _json_or_text(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _token_hash(args: argparse.Namespace) -> int:
    token = args.token
    if token is None:
        token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
    token = token.strip()
    if not token:
        return _fail("an empty token cannot be hashed")
    print(settings_module.hash_token(token))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from acd.core.versions import CoreVersionUnsupported
    from acd.node.verify import verify
    from acd.store import StoreError

    settings = _load(args.config)
    try:
        report = verify(settings, args.node)
    except (StoreError, CoreVersionUnsupported) as error:  # a store of a newer core version: this binary cannot replay it
        return _fail(str(error))
    if args.json:
        import msgspec

        print(msgspec.json.encode(report).decode())
    else:
        print(report.summary())
        for problem in report.problems:
            print(f"  problem: {problem}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _health(args: argparse.Namespace) -> int:
    import time

    import httpx

    from acd.tools import identity

    settings = _load(args.config)
    deadline = time.monotonic() + args.wait
    problem = ""
    while True:
        if args.witness:
            if settings.witness is None:
                return _fail(f"{args.config}: this cluster has no [witness] section")
            import trio

            from replication.cli import witness_status

            answer = trio.run(witness_status, settings)
            if "error" not in answer:
                print(f"witness {answer['address']} of cluster {settings.cluster.name}: up")
                return EXIT_OK
            if answer.get("mismatch"):
                return _fail(answer["error"])
            problem = answer["error"]
        else:
            node = settings.node(args.node)
            try:
                with identity.client(settings) as client:
                    response = client.get(identity.base_url(settings, node.api) + "/healthz")
                body = response.json() if response.status_code == 200 else {}
                if body.get("node") == node.name:
                    print(f"node {node.name} ({node.api}) of cluster {settings.cluster.name}: {body.get('role')}, LSN {body.get('lsn')}")
                    return EXIT_OK
                if body:
                    return _fail(f"{node.api} answers as node {body.get('node')!r}, not {node.name!r}")
                problem = f"{node.api}: HTTP {response.status_code} to /healthz"
            except httpx.HTTPError as error:
                problem = identity.reason(error, node.api, settings)
            except ValueError:
                problem = f"{node.api}: /healthz did not answer JSON"
        if time.monotonic() >= deadline:
            print(f"acd: {problem}", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(0.2)


def upgrade_status(settings: settings_module.Settings, token: str = "") -> dict[str, Any]:
    """Every node's versions as it answers /v1/cluster, the active core version and the next one."""
    from acd.tools import identity

    answers = identity.ask_all(settings, token)
    nodes: list[dict[str, Any]] = []
    problems: list[str] = []
    mismatch = False
    for answer in answers:
        row: dict[str, Any] = {"node": answer.node, "api": answer.address}
        if answer.mismatch:
            mismatch = True
            problems.append(answer.mismatch)
            row["error"] = answer.mismatch
        elif answer.view is None:
            problems.append(answer.problem)
            row["error"] = answer.problem
        else:
            view = answer.view
            row.update(role=view.get("role"), lsn=view.get("lsn"), binary_version=view.get("binary_version"),
                       core_versions=view.get("core_versions"), active_core_version=view.get("active_core_version"))
        nodes.append(row)
    good = [row for row in nodes if "error" not in row]
    primary = next((row for row in good if row.get("role") == "primary"), None)
    active = primary["active_core_version"] if primary is not None else max((row["active_core_version"] or 0 for row in good), default=None)
    highest = None
    if good and len(good) == len(nodes) and all(row.get("core_versions") for row in good):
        highest = min(row["core_versions"][1] for row in good)
    code = EXIT_USAGE if mismatch or not good else (EXIT_FAILED if problems else EXIT_OK)
    return {"cluster": settings.cluster.name, "active_core_version": active, "finalize_to": highest,
            "nodes": nodes, "problems": problems, "exit": code}


def _upgrade_status(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    status = upgrade_status(settings, args.token)
    if args.json:
        print(json.dumps(status, indent=2))
        return int(status["exit"])
    print(f"cluster {status['cluster']}: active core version {status['active_core_version'] or '-'}")
    columns = ("node", "role", "binary_version", "core_versions", "active_core_version", "api")
    rows = []
    for row in status["nodes"]:
        if "error" in row:
            rows.append([row["node"], "unreachable", "-", "-", "-", row["api"]])
        else:
            supported = row.get("core_versions")
            rows.append([row["node"], str(row.get("role")), str(row.get("binary_version")),
                         f"{supported[0]}..{supported[1]}" if supported else "-", str(row.get("active_core_version")), row["api"]])
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    highest, active = status["finalize_to"], status["active_core_version"]
    if highest is not None and active is not None and highest > active:
        print(f"every node supports core version {highest}: `acd upgrade finalize` raises the cluster to it")
    elif highest is not None:
        print("the cluster runs the highest core version every node supports")
    for problem in status["problems"]:
        print(f"  {problem}")
    return int(status["exit"])


def _upgrade_finalize(args: argparse.Namespace) -> int:
    import httpx

    from acd.tools import identity

    settings = _load(args.config)
    try:
        identity.require(settings, args.token)  # never raise another cluster's version
    except identity.IdentityError as error:
        return _fail(f"upgrade finalize refused, nothing was sent: {error}")
    body = {"version": args.version} if args.version is not None else {}
    addresses = [node.api for node in settings.nodes]
    tried: list[str] = []
    with identity.client(settings, timeout=args.timeout) as client:
        while addresses:
            address = addresses.pop(0)
            if address in tried:
                continue
            tried.append(address)
            try:
                response = client.post(identity.base_url(settings, address) + "/v1/cluster/upgrade", json=body,
                                       headers=identity.headers(args.token))
            except httpx.HTTPError as error:
                print(f"acd: {identity.reason(error, address, settings)}", file=sys.stderr)
                continue
            answer = _json_or_text(response)
            if response.status_code == 200:
                print(json.dumps(answer, indent=2))
                return EXIT_OK
            if response.status_code == 503 and isinstance(answer, dict) and answer.get("error") == "not_primary":
                if answer.get("primary"):
                    addresses.insert(0, answer["primary"])
                continue
            if isinstance(answer, dict) and "message" in answer:
                print(f"acd: upgrade finalize refused ({answer.get('error')}): {answer['message']}", file=sys.stderr)
            else:
                print(f"acd: {address}: HTTP {response.status_code}: {json.dumps(answer)}", file=sys.stderr)
            return EXIT_FAILED
    print(f"acd: no primary answered (tried {', '.join(tried)})", file=sys.stderr)
    return EXIT_FAILED


# ---------------------------------------------------------------------------- entry point


OWN_COMMANDS = ("serve", "config", "token", "verify", "health", "upgrade")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = _parser()
    # The replication layer's subcommands import its whole stack; `acd serve` (started and
    # restarted by supervisors and tests) and the other commands here do not need them.
    if not argv or argv[0] not in OWN_COMMANDS:
        from acd.tools.backup import add_parsers as add_backup
        from acd.tools.demo import add_parser as add_demo
        from acd.tools.drill import add_parser as add_drill
        from replication.cli import register

        register(subparsers)
        add_demo(subparsers)
        add_drill(subparsers)
        add_backup(subparsers)
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        return _usage(parser)
    try:
        return int(run(args) or 0)
    except settings_module.SettingsError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
