"""Which cluster and node an address answers for, and readable reasons when it does not answer.

Every command that reports on a cluster, writes to it or signals its processes (`acd status`,
`drill`, `switchover`, `promote`, `backup`) first asks each configured API address for
`GET /v1/cluster` and compares the `cluster` and `name` it answers with the config file. An
address that answers for another cluster or another node is a mismatch: the command stops
and names both, before it writes or signals anything. Another process can hold a configured
address (a standalone node started on the same port, a test cluster, a stale config file).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from acd import settings as settings_module


class IdentityError(Exception):
    """An address answers for another cluster or node, or cannot be asked."""


@dataclass
class Answer:
    """What one configured node's API address answered."""

    node: str
    address: str
    view: dict[str, Any] | None = None
    problem: str = ""  # why there is no view, in words
    mismatch: str = ""  # set when the address answers for another cluster or node

    @property
    def ok(self) -> bool:
        return self.view is not None and not self.mismatch


def scheme(settings: settings_module.Settings) -> str:
    return "https" if any(node.tls_cert for node in settings.nodes) else "http"


def verify(settings: settings_module.Settings) -> ssl.SSLContext | bool:
    """How to check the API's certificate: the cluster's CA when configured, else the system's."""
    if settings.cluster.tls_ca:
        return ssl.create_default_context(cafile=str(settings.resolve(settings.cluster.tls_ca)))
    return True


def base_url(settings: settings_module.Settings, address: str) -> str:
    return f"{scheme(settings)}://{address}"


def client(settings: settings_module.Settings, timeout: float = 2.0) -> httpx.Client:
    return httpx.Client(timeout=timeout, verify=verify(settings))


def async_client(settings: settings_module.Settings, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=verify(settings), **options)


def headers(token: str) -> dict[str, str]:
    token = token or os.environ.get("ACD_TOKEN", "")
    return {"authorization": f"Bearer {token}"} if token else {}


def reason(error: BaseException, address: str, settings: settings_module.Settings | None = None) -> str:
    """A failed request in words an operator can act on (not the exception's class name)."""
    text = str(error)
    if isinstance(error, httpx.TimeoutException):
        return f"{address}: no answer in time (host down, firewall, or the process is stopped)"
    if isinstance(error, httpx.ConnectError):
        lowered = text.lower()
        if "refused" in lowered:
            return f"{address}: connection refused (nothing listens there: the process is not running)"
        if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
            return f"{address}: TLS handshake failed ({text}); check cluster.tls_ca and the node's certificate"
        if "name or service" in lowered or "nodename" in lowered or "resolve" in lowered:
            return f"{address}: the host name does not resolve"
        if "unreachable" in lowered or "no route" in lowered:
            return f"{address}: the network cannot reach the host"
        return f"{address}: cannot connect ({text or 'connection failed'})"
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        served = scheme(settings) if settings is not None else "http"
        return (f"{address}: the connection was closed without an HTTP answer (the config says the API is served over "
                f"{served.upper()}; is the node's tls_cert set to match?)")
    if isinstance(error, OSError) and "all attempts to connect" in text:
        causes = error.__cause__.exceptions if isinstance(error.__cause__, BaseExceptionGroup) else [error.__cause__]
        if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
            error = ConnectionRefusedError()
        elif causes and isinstance(causes[0], OSError):
            error = causes[0]
    if isinstance(error, ConnectionRefusedError):
        return f"{address}: connection refused (nothing listens there: the process is not running)"
    if isinstance(error, OSError):
        return f"{address}: {error.strerror or text}"
    return f"{address}: {text or error.__class__.__name__}"


def mismatch(settings: settings_module.Settings, node: str, view: dict[str, Any]) -> str:
    """The reason an answer is not from `node` of this config's cluster, or ''."""
    cluster = view.get("cluster")
    name = view.get("name")
    if cluster == settings.cluster.name and name == node:
        return ""
    address = settings.node(node).api
    return (f"{address} answers as node {name!r} of cluster {cluster!r}, but {settings.path or 'the config'} "
            f"gives that address to node {node!r} of cluster {settings.cluster.name!r}")


def ask(settings: settings_module.Settings, http: httpx.Client, node: str, token: str = "") -> Answer:
    address = settings.node(node).api
    answer = Answer(node=node, address=address)
    try:
        response = http.get(base_url(settings, address) + "/v1/cluster", headers=headers(token))
    except httpx.HTTPError as error:
        answer.problem = reason(error, address, settings)
        return answer
    if response.status_code in (401, 403):
        answer.problem = f"{address}: /v1/cluster needs a supervisor or admin token (--token or ACD_TOKEN)"
        return answer
    try:
        view = response.json()
    except ValueError:
        view = None
    if response.status_code != 200 or not isinstance(view, dict):
        answer.problem = f"{address}: HTTP {response.status_code} to /v1/cluster, not an ACD node's answer"
        return answer
    answer.view = view
    answer.mismatch = mismatch(settings, node, view)
    return answer


def ask_all(settings: settings_module.Settings, token: str = "", timeout: float = 2.0) -> list[Answer]:
    with client(settings, timeout) as http:
        return [ask(settings, http, node.name, token) for node in settings.nodes]


def require(settings: settings_module.Settings, token: str = "", *, reachable: bool = False) -> list[Answer]:
    """Every configured address: a mismatch raises; with `reachable`, so does any node not answering."""
    answers = ask_all(settings, token)
    problems = [answer.mismatch for answer in answers if answer.mismatch]
    if reachable:
        problems += [answer.problem for answer in answers if answer.problem]
    if problems:
        raise IdentityError("; ".join(problems))
    return answers


def local_pid(view: dict[str, Any], address: str) -> int:
    """The pid a node reported, checked to be a process on this host that listens on `address`.

    A node reports its own pid in /v1/cluster. The pid is trusted only when that process on
    this host holds the listening socket of the address it was asked at, so a pid from another
    host, or a pid reused since, is never signalled.
    """
    pid = view.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        raise IdentityError(f"{address} does not report its process id (an older version?); it cannot be signalled safely")
    if pid not in listening_pids(address):
        raise IdentityError(f"{address} reports pid {pid}, which is not a process on this host listening on {address}")
    return pid


def listening_pids(address: str) -> set[int]:
    """The processes on this host that hold a listening TCP socket on `address`'s port."""
    port = int(address.rsplit(":", 1)[1])
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    pids: set[int] = set()
    if not inodes:
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.add(int(entry))
                    break
        except OSError:
            continue
    return pids
