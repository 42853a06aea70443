"""The one TOML file that every process of a cluster reads (docs/design.md, "Processes and configuration").

Shape:

    [cluster]       name, mode, failover_timeout, secret_file, production
    [[nodes]]       name, api, replication, data_dir, tls_cert, tls_key
    [witness]       address, data_dir
    [store]         map size, snapshot and retention settings
    [limits]        request and stream limits
    [[tokens]]      name, role, hash (see `acd token hash`), agent
    [center]        center-wide rules (time zone, service level, priority weight, ...)
    [abuse]         agent protection
    [[calendars]], [[queues]], [[agents]]   the center itself

Every error names its key (dotted path) and, when it can be found, its line in the file.
Relative paths are relative to the config file.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from acd.core.config import Center, validate_center

Address = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")]


class ClusterSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "acd"
    mode: Literal["sync", "async"] = "sync"
    failover_timeout: Annotated[float, msgspec.Meta(ge=0.2, le=60)] = 0.8
    secret_file: str = ""
    production: bool = False
    # Protected mode (docs/operations.md, "Security"): an API bound beyond loopback needs
    # [[tokens]], and replication or witness traffic beyond loopback needs secret_file. Each
    # key below, set to true, allows that one exposure anyway (a firewall or an authenticating
    # proxy does the job): an explicit, logged choice.
    allow_unauthenticated_api: bool = False
    allow_unauthenticated_replication: bool = False
    # The queue `acd drill` writes its calls to: a queue of its own, with no agents serving
    # it, so drill calls never touch a real topic's queue or statistics. No drill without it.
    drill_queue: str = ""
    # TLS for replication and witness traffic: the CA that signed every node's and the
    # witness's certificate. When set, nodes and the witness speak TLS to each other.
    tls_ca: str = ""
    # A node's replication port: connections at once, in total and from one source address
    # (the oldest still in its handshake makes room for a newcomer; see replication/network.py).
    replication_connections_max: Annotated[int, msgspec.Meta(ge=4, le=65536)] = 64
    replication_connections_per_address_max: Annotated[int, msgspec.Meta(ge=2, le=65536)] = 16
    # IP addresses or networks (CIDR) allowed to connect to the replication ports and the
    # witness; empty: any address.
    replication_allow_from: list[str] = []
    # Primary and standby compare their state hashes after every record whose LSN is a
    # multiple of this (docs/replication.md, "Divergence alarm"); 0: never.
    compare_state_every_records: Annotated[int, msgspec.Meta(ge=0)] = 5000


class NodeSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
    api: Address
    replication: Address = "127.0.0.1:0"
    # Where the node listens for replication, when peers reach it through another address
    # (NAT, a proxy): peers connect to `replication`. Defaults to `replication`.
    replication_bind: str = ""
    data_dir: str = ""
    tls_cert: str = ""
    tls_key: str = ""


class WitnessSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address: Address
    data_dir: str = "data/witness"
    tls_cert: str = ""
    tls_key: str = ""
    # Connections at once, in total and from one source address (both kept below the
    # process's descriptor limit).
    connections_max: Annotated[int, msgspec.Meta(ge=4, le=65536)] = 256
    connections_per_address_max: Annotated[int, msgspec.Meta(ge=2, le=65536)] = 64


class StoreSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    map_size_bytes: Annotated[int, msgspec.Meta(ge=2**20)] = 256 * 2**20
    map_size_max_bytes: Annotated[int, msgspec.Meta(ge=2**20)] = 16 * 2**30
    snapshot_every_records: Annotated[int, msgspec.Meta(ge=10)] = 10_000
    retention_records: Annotated[int, msgspec.Meta(ge=0)] = 100_000
    batch_records_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 512


class LimitsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    body_bytes_max: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    header_bytes_max: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024
    connections_max: Annotated[int, msgspec.Meta(ge=1)] = 1000
    stream_buffer_events: Annotated[int, msgspec.Meta(ge=16)] = 10_000
    stream_heartbeat_seconds: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    streams_per_token_max: Annotated[int, msgspec.Meta(ge=1)] = 50
    requests_per_second_per_token: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    idle_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # Connections from one source address, enforced with connections_max when accepted (past
    # either the connection is reset). Default: half of connections_max; 0: no cap of its own.
    connections_per_address_max: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # A new connection's first request head (and TLS handshake) must arrive within this.
    request_head_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # A write (a response, an event-stream chunk) that makes no progress for this long resets
    # the connection: a reader that stopped reading gives its descriptor and stream slot back.
    write_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    # Requests that fail authentication (401), per source address and second (bursts of twice
    # as many); past it they get 429. A valid token is never refused by it. 0: no limit.
    unauthorized_per_second_per_address: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # HTTP/2 over cleartext (h2c upgrade or prior knowledge). HTTP/2 over TLS is negotiated
    # by ALPN whatever this says.
    http2_cleartext: bool = False


Role = Literal["pbx", "agent", "supervisor", "admin", "dialer"]  # dialer: takes due call-backs and their numbers


class TokenSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    role: Role
    hash: Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}$")]
    agent: str = ""


# `[center]` holds the scalar keys of the core's `acd.core.config.Center`, with the core's
# defaults and types (defined there only); its tables come from the top-level sections.
CENTER_TABLES = ("abuse", "calendars", "queues", "agents")
CENTER_KEYS = tuple(name for name in Center.__struct_fields__ if name not in CENTER_TABLES)


class FileShape(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cluster: ClusterSection = ClusterSection()
    nodes: list[NodeSection] = []
    witness: WitnessSection | None = None
    store: StoreSection = StoreSection()
    limits: LimitsSection = LimitsSection()
    tokens: list[TokenSection] = []
    center: dict[str, Any] = {}
    abuse: dict[str, Any] = {}
    calendars: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    agents: list[dict[str, Any]] = []


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    cluster: ClusterSection
    nodes: list[NodeSection]
    witness: WitnessSection | None
    store: StoreSection
    limits: LimitsSection
    tokens: list[TokenSection]
    center: Center
    hash_key_file: str = ""  # [abuse] hash_key_file: the key of caller hashes, kept out of the log
    inline_hash_key: str = ""  # [abuse] hash_key, taken out of the center so the log never holds it

    def caller_hash_key(self) -> bytes:
        """The key of the caller hash and fingerprint, which the log never holds.

        From `abuse.hash_key_file` if set; else derived from the cluster's `secret_file`; else
        the config file's own `abuse.hash_key` (a sample or a lab: anyone holding the config
        can then reverse a caller hash by trying every number). Both nodes must agree.
        """
        if self.hash_key_file:
            return self.resolve(self.hash_key_file).read_bytes().strip()
        secret = self.secret()
        if secret:
            return hashlib.sha256(b"acd caller hash\0" + secret).digest()
        return self.inline_hash_key.encode()

    def node(self, name: str) -> NodeSection:
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes) or "none"
        raise SettingsError([f"nodes: no node named {name!r} (configured: {names})"])

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else Path(self.path).parent / path

    def data_dir(self, node: str) -> Path:
        return self.resolve(self.node(node).data_dir or f"data/{node}")

    def replication_tls(self, cert: str, key: str) -> tuple[object | None, object | None]:
        """(server context, client context) for replication/witness traffic, or (None, None)."""
        if not self.cluster.tls_ca:
            return None, None
        import ssl

        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.resolve(self.cluster.tls_ca)))
        server = None
        if cert and key:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server.load_cert_chain(str(self.resolve(cert)), str(self.resolve(key)))
        return server, client

    def secret(self) -> bytes | None:
        if not self.cluster.secret_file:
            return None
        return self.resolve(self.cluster.secret_file).read_bytes().strip()

    @property
    def standalone(self) -> bool:
        return len(self.nodes) == 1 and self.witness is None


class SettingsError(Exception):
    """Every problem found in a config file, one line each, naming key and line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def hash_token(token: str) -> str:
    """The form a token takes in the config file (`acd token hash`)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _line_of(text: str, key: str) -> int | None:
    """Best-effort line number of a dotted key like `queues[2].overflow` in TOML text."""
    parts = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?", key)
    lines = text.splitlines()
    start = 0
    for table, index in parts[:-1] or parts:
        if index:
            seen = -1
            for number, line in enumerate(lines[start:], start):
                if re.match(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]", line):
                    seen += 1
                    if seen == int(index):
                        start = number
                        break
            else:
                return None
        else:
            for number, line in enumerate(lines[start:], start):
                if re.match(rf"^\s*\[\s*{re.escape(table)}\s*\]", line):
                    start = number
                    break
    leaf = parts[-1][0] if parts else ""
    for number, line in enumerate(lines[start:], start):
        if number > start and re.match(r"^\s*\[", line):
            break
        if re.match(rf"^\s*{re.escape(leaf)}\s*=", line):
            return number + 1
    return start + 1 if start else None


def _msgspec_path(error: msgspec.ValidationError) -> tuple[str, str]:
    message = str(error)
    match = re.search(r"at `\$(.*)`", message)
    path = match[1].lstrip(".") if match else ""
    return path, re.sub(r"\s*- at `\$.*`", "", message)


def _with_line(text: str, file: str, key: str, message: str) -> str:
    line = _line_of(text, key) if key else None
    where = f"{file}:{line}" if line else file
    return f"{where}: {key or 'file'}: {message}"


def descriptor_limit() -> int | None:
    """How many descriptors this process may open (its soft RLIMIT_NOFILE, `LimitNOFILE` under
    systemd), which the connection caps stay under; None when unlimited or unknown."""
    import resource

    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def load(path: str | Path) -> Settings:
    """Read and validate a config file; SettingsError lists every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError([f"{file}: cannot read: {error.strerror or error}"]) from None
    return loads(text, file)


def loads(text: str, file: str = "<config>") -> Settings:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError([f"{file}: not valid TOML: {error}"]) from None
    try:
        shape = msgspec.convert(raw, FileShape)
    except msgspec.ValidationError as error:
        key, message = _msgspec_path(error)
        raise SettingsError([_with_line(text, file, key, message)]) from None
    center_raw = dict(shape.center)
    # The key of caller hashes is the node's, not the center's: kept out of the Configure
    # command, and so out of the log, the snapshots and every backup.
    abuse = dict(shape.abuse)
    hash_key_file = abuse.pop("hash_key_file", "")
    inline_hash_key = abuse.pop("hash_key", "")
    center_raw["abuse"] = abuse
    center_raw["calendars"] = shape.calendars
    center_raw["queues"] = shape.queues
    center_raw["agents"] = shape.agents
    unknown = [key for key in shape.center if key not in CENTER_KEYS]
    if unknown:
        raise SettingsError([
            _with_line(text, file, f"center.{key}", f"unknown key; [center] takes {', '.join(CENTER_KEYS)}") for key in unknown
        ])
    try:
        center = msgspec.convert(center_raw, Center)
    except msgspec.ValidationError as error:
        key, message = _msgspec_path(error)
        if key.startswith(("abuse", "calendars", "queues", "agents")):
            pass
        elif key:
            key = f"center.{key}"
        raise SettingsError([_with_line(text, file, key, message)]) from None
    problems = [_with_line(text, file, p.key.replace("center.abuse", "abuse"), p.message) for p in validate_center(center)]
    if not isinstance(hash_key_file, str) or not isinstance(inline_hash_key, str):
        problems.append(_with_line(text, file, "abuse.hash_key_file" if not isinstance(hash_key_file, str) else "abuse.hash_key", "Expected `str`"))
    elif hash_key_file:
        key_path = Path(hash_key_file) if Path(hash_key_file).is_absolute() else Path(file).parent / hash_key_file
        try:
            if not key_path.read_bytes().strip():
                problems.append(_with_line(text, file, "abuse.hash_key_file", f"{key_path} is empty"))
        except OSError as error:
            problems.append(_with_line(text, file, "abuse.hash_key_file", f"cannot read {key_path}: {error.strerror or error}"))
    problems += [_with_line(text, file, key, message) for key, message in _check_cluster(shape)]
    if problems:
        raise SettingsError(problems)
    return Settings(
        path=file, cluster=shape.cluster, nodes=shape.nodes, witness=shape.witness, store=shape.store,
        limits=shape.limits, tokens=shape.tokens, center=center,
        hash_key_file=hash_key_file, inline_hash_key=inline_hash_key,
    )


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_cluster(shape: FileShape) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not shape.nodes:
        problems.append(("nodes", "at least one [[nodes]] entry is needed"))
    if len(shape.nodes) > 2:
        problems.append(("nodes", "a cluster has one node (standalone) or two (primary and standby)"))
    if len(shape.nodes) == 2 and shape.witness is None:
        problems.append(("witness", "a two-node cluster needs a [witness] to fail over safely"))
    names = set()
    for index, node in enumerate(shape.nodes):
        if node.name in names:
            problems.append((f"nodes[{index}].name", f"duplicate node name {node.name!r}"))
        names.add(node.name)
        if bool(node.tls_cert) != bool(node.tls_key):
            problems.append((f"nodes[{index}].tls_key", "tls_cert and tls_key go together"))
    addresses: dict[str, str] = {}
    for index, node in enumerate(shape.nodes):
        for field in ("api", "replication"):
            address = getattr(node, field)
            if address.endswith(":0"):
                continue
            if address in addresses:
                problems.append((f"nodes[{index}].{field}", f"address {address} is also used by {addresses[address]}"))
            addresses[address] = f"nodes[{index}].{field}"
    if shape.cluster.tls_ca:
        for index, node in enumerate(shape.nodes):
            if not (node.tls_cert and node.tls_key):
                problems.append((f"nodes[{index}].tls_cert", "cluster.tls_ca is set: every node needs tls_cert and tls_key"))
        if shape.witness is not None and not (shape.witness.tls_cert and shape.witness.tls_key):
            problems.append(("witness.tls_cert", "cluster.tls_ca is set: the witness needs tls_cert and tls_key"))
    if shape.cluster.drill_queue:
        queue = next((q for q in shape.queues if q.get("name") == shape.cluster.drill_queue), None)
        if queue is None:
            problems.append(("cluster.drill_queue", f"no [[queues]] entry named {shape.cluster.drill_queue!r}"))
        elif queue.get("external") or "voice" not in queue.get("channels", ["voice"]):
            problems.append(("cluster.drill_queue", "the drill queue must be an internal queue with the voice channel"))
        elif queue.get("overflow") or any(q.get("overflow") == shape.cluster.drill_queue for q in shape.queues):
            problems.append(("cluster.drill_queue", "the drill queue overflows nowhere and no queue overflows into it"))
        elif not queue.get("skills") or any(set(queue["skills"]) <= set(agent.get("skills", {})) for agent in shape.agents):
            problems.append(("cluster.drill_queue", "no agent may serve the drill queue: give it a skill no agent has"))
    for index, entry in enumerate(shape.cluster.replication_allow_from):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append((f"cluster.replication_allow_from[{index}]", f"not an IP address or network: {entry!r}"))
    agents = {agent.get("name") for agent in shape.agents}
    for index, token in enumerate(shape.tokens):
        if token.role == "agent" and token.agent not in agents:
            problems.append((f"tokens[{index}].agent", f"an agent token needs an existing agent (got {token.agent!r})"))
    problems += _check_tokens_unique(shape)
    problems += _check_protected_mode(shape)
    return problems


def _check_tokens_unique(shape: FileShape) -> list[tuple[str, str]]:
    """One name and one hash per token: a shared hash would make one token act under two
    names and roles (the last one read would win), a shared name would merge two in the logs
    and in the per-token limits."""
    problems: list[tuple[str, str]] = []
    names: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for index, token in enumerate(shape.tokens):
        if token.name in names:
            problems.append((f"tokens[{index}].name", f"duplicate token name {token.name!r} (also tokens[{names[token.name]}])"))
        else:
            names[token.name] = index
        if token.hash in hashes:
            first = hashes[token.hash]
            problems.append((f"tokens[{index}].hash", f"the same hash as tokens[{first}] ({shape.tokens[first].name!r}): every token needs its own secret"))
        else:
            hashes[token.hash] = index
    return problems


def _check_protected_mode(shape: FileShape) -> list[tuple[str, str]]:
    """Protected mode: nothing that grants control listens beyond loopback unauthenticated.

    An API beyond loopback needs [[tokens]] (else anyone who reaches it may do anything),
    unless `cluster.allow_unauthenticated_api`. Replication and witness traffic beyond
    loopback needs `cluster.secret_file` (else anyone who reaches the ports could join the
    cluster or take the witness's vote), unless `cluster.allow_unauthenticated_replication`.
    """
    problems: list[tuple[str, str]] = []
    cluster = shape.cluster
    if not shape.tokens and not cluster.allow_unauthenticated_api:
        for index, node in enumerate(shape.nodes):
            if not _is_loopback(node.api):
                problems.append((
                    f"nodes[{index}].api",
                    f"protected mode: the API listens beyond loopback ({node.api}) and the config has no "
                    "[[tokens]], so anyone who reaches it may do anything; add [[tokens]] (acd token hash), "
                    "listen on 127.0.0.1, or set cluster.allow_unauthenticated_api = true",
                ))
    clustered = len(shape.nodes) > 1 or shape.witness is not None
    if clustered and not cluster.secret_file and not cluster.allow_unauthenticated_replication:
        remedy = "set cluster.secret_file, or cluster.allow_unauthenticated_replication = true"
        for index, node in enumerate(shape.nodes):
            for field in ("replication", "replication_bind"):
                address = getattr(node, field)
                if address and not _is_loopback(address):
                    problems.append((
                        f"nodes[{index}].{field}",
                        f"protected mode: replication beyond loopback ({address}) needs cluster.secret_file "
                        f"(anyone who reaches the port could join the cluster); {remedy}",
                    ))
                    break
        if shape.witness is not None and not _is_loopback(shape.witness.address):
            problems.append((
                "witness.address",
                f"protected mode: a witness beyond loopback ({shape.witness.address}) needs cluster.secret_file "
                f"(anyone who reaches it could take its vote); {remedy}",
            ))
    return problems
