"""Run `acd` processes locally: the demo, drills, load tests, benchmarks and process tests use it.

`spawn` is the one way a tool or a test starts a long-running `python -m acd ...` process (its
output appended to a log file, in a session of its own) and `stop` the one way it ends one
(SIGCONT, SIGTERM, then SIGKILL after a timeout). `LocalCluster` copies a cluster config into a
work folder, moves every address to a free loopback port and every data directory into the
folder, then spawns the witness and the nodes with their logs in `logs/`. It can kill, stop
(SIGSTOP), continue and restart any of them, and find the primary through `/v1/cluster`. The
tests' `NodeProcess` (tests/helpers) spawns a single standalone node the same way.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from acd import settings as settings_module


def free_port(hold: list[socket.socket] | None = None) -> int:
    """A free loopback port. Pass `hold` to keep it bound (so the next call cannot draw it
    again) until the caller closes the sockets."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    if hold is None:
        sock.close()
    else:
        hold.append(sock)
    return port


def child_environment(**changes: str) -> dict[str, str]:
    """The environment of an `acd` child: this process's, with unbuffered output (a log shows
    each line as it is written) and `changes`."""
    return dict(os.environ, PYTHONUNBUFFERED="1", **changes)


def acd_command(arguments: list[str], python: str = sys.executable) -> list[str]:
    """`python -m acd ARGUMENTS`."""
    return [python, "-m", "acd", *arguments]


def spawn(
    command: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None,
    preexec_fn: Callable[[], Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` (an `acd_command`) with its output appended to `log`, in a session of its
    own (a signal to the caller's process group does not reach it); returns at once."""
    with open(log, "ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env if env is not None else child_environment(),
            cwd=cwd, start_new_session=True, preexec_fn=preexec_fn,
        )


def ask_to_stop(process: subprocess.Popen[bytes]) -> None:
    """SIGCONT (in case it was paused), then SIGTERM, unless it has exited."""
    if process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        except ProcessLookupError:
            pass


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """End `process` cleanly (SIGCONT, in case it was paused, then SIGTERM) and wait for it;
    SIGKILL when it has not exited after `timeout` seconds. Its exit code (negative: the signal)."""
    ask_to_stop(process)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def haproxy_config(shipped: Path, port: int, servers: dict[str, str], target: Path) -> Path:
    """The shipped HAProxy config (deploy/haproxy.cfg) for a local cluster: its `bind` moved to
    127.0.0.1:`port` and its `server` lines replaced by one per entry of `servers` (name ->
    host:port of that node's API), every other line (checks, timeouts) as shipped."""
    lines: list[str] = []
    placed = False
    for line in shipped.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("bind "):
            line = f"    bind 127.0.0.1:{port}"
        elif stripped.startswith("server "):
            if placed:
                continue
            line = "\n".join(f"    server {name} {address} check" for name, address in servers.items())
            placed = True
        lines.append(line)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def config_problem(path: Path, scenario: str | None = None) -> str | None:
    """Why the cluster config at `path` (and the simulator `scenario`, when one is named) cannot
    be used, one problem a line; None when they can.

    Checked before a local cluster is started, so a bad file stops a command with the key and
    line at fault instead of a node failing to start later."""
    if not path.is_file():
        return f"{path}: no such file"
    try:
        settings_module.load(path)
    except settings_module.SettingsError as error:
        return str(error)
    except (OSError, UnicodeDecodeError) as error:
        return f"{path}: {error}"
    if scenario is not None:
        from sim.workload import ScenarioError, load_scenario

        try:
            load_scenario(scenario)
        except ScenarioError as error:
            return f"--scenario: {error}"
    return None


def prepare_config(
    source: Path, workdir: Path, *, always_open: bool = False, overrides: dict[str, str] | None = None,
    proxied: bool = False,
) -> Path:
    """Write `workdir/cluster.toml`: free loopback ports, data under `workdir/data`.

    `proxied`: each node listens for replication on a private port (`replication_bind`) and
    peers reach it through `replication`, where a test puts a `LinkProxy` that can cut it.
    """
    text = source.read_text(encoding="utf-8")
    if proxied:
        text = re.sub(r'^(replication = "[^"]*")$', r'\1\nreplication_bind = "127.0.0.1:0"', text, flags=re.MULTILINE)

    held: list[socket.socket] = []

    def port_for(match: re.Match[str]) -> str:
        return f'{match[1]} = "127.0.0.1:{free_port(held)}"'

    text = re.sub(r'^(api|replication|replication_bind|address) = "[^"]*"', port_for, text, flags=re.MULTILINE)
    for sock in held:
        sock.close()
    text = re.sub(r'^data_dir = "([^"]*)"', lambda m: f'data_dir = "data/{Path(m[1]).name}"', text, flags=re.MULTILINE)
    if always_open:
        text = re.sub(r"^\[\[calendars\]\]\n", "[[calendars]]\nalways_open = true\n", text, flags=re.MULTILINE)
    for key, value in (overrides or {}).items():
        text = _override(text, key, value)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "cluster.toml"
    target.write_text(text, encoding="utf-8")
    settings_module.load(target)  # fail early, with the key and line, if the result is invalid
    return target


def _override(text: str, key: str, value: str) -> str:
    """Set `section.name = value` in TOML text, keeping everything else as it is."""
    section, _, name = key.rpartition(".")
    lines = text.splitlines()
    header = f"[{section}]"
    if header not in lines:
        first_table = next(i for i, line in enumerate(lines) if line.startswith("["))
        lines[first_table:first_table] = [header, f"{name} = {value}", ""]
        return "\n".join(lines) + "\n"
    begin = lines.index(header) + 1
    end = next((i for i in range(begin, len(lines)) if lines[i].startswith("[")), len(lines))
    for index in range(begin, end):
        if re.match(rf"^{re.escape(name)}\s*=", lines[index]):
            lines[index] = f"{name} = {value}"
            break
    else:
        lines.insert(begin, f"{name} = {value}")
    return "\n".join(lines) + "\n"


class LocalCluster:
    def __init__(self, config: Path, workdir: Path, *, python: str = sys.executable, log_level: str = "info") -> None:
        self.config = config
        self.workdir = workdir
        self.settings = settings_module.load(config)
        self.python = python
        self.log_level = log_level
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        ca = self.settings.resolve(self.settings.cluster.tls_ca) if self.settings.cluster.tls_ca else None
        self.scheme = "https" if any(node.tls_cert for node in self.settings.nodes) else "http"
        self.client = httpx.Client(timeout=2.0, verify=ssl.create_default_context(cafile=str(ca)) if ca else True)

    # ------------------------------------------------------------------ processes

    def _spawn(
        self, name: str, arguments: list[str], preexec_fn: Callable[[], Any] | None = None, env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        process = spawn(acd_command(arguments, self.python), self.logs / f"{name}.log", preexec_fn=preexec_fn,
                        env=child_environment(**(env or {})))
        self.processes[name] = process
        return process

    def start_witness(self) -> None:
        if self.settings.witness is not None:
            self._spawn("witness", ["witness", "--config", str(self.config), "--log-level", self.log_level])

    def start_node(self, name: str, env: dict[str, str] | None = None) -> None:
        """Start node `name`; `env`: variables set in its environment besides this process's
        (a rolling upgrade starts the "new binary" with `ACD_ENABLE_NEXT_CORE=1`)."""
        self._spawn(name, ["serve", "--config", str(self.config), "--node", name, "--log-level", self.log_level], env=env)

    def restart(self, name: str) -> None:
        if name == "witness":
            self.start_witness()
        else:
            self.start_node(name)

    def start(self, wait: float = 20.0) -> str:
        self.start_witness()
        for node in self.settings.nodes:
            self.start_node(node.name)
        for node in self.settings.nodes:
            wait_for(functools.partial(self.healthy, node.api), wait, what=f"node at {node.api} to answer /healthz")
        primary = self.wait_primary(wait)
        wait_for(lambda: self.configured(primary), wait, what="the first primary to apply the center's configuration")
        return primary

    def configured(self, name: str) -> bool:
        try:
            response = self.client.get(self.api(name) + "/v1/queues", timeout=1.0)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        body = response.json()
        queues = body.get("queues", body) if isinstance(body, dict) else body
        return bool(queues)

    def signal(self, name: str, sig: int) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.kill(process.pid, sig)
        if sig == signal.SIGKILL:
            process.wait(timeout=10)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)

    def pause(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def close(self) -> None:
        self.stop()
        self.client.close()

    def stop(self) -> None:
        """Terminate every process (they can be started again)."""
        for process in self.processes.values():
            ask_to_stop(process)   # all at once, then each waited for
        for process in self.processes.values():
            stop(process)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP

    def api(self, name: str) -> str:
        return f"{self.scheme}://" + self.settings.node(name).api

    def healthy(self, address: str) -> bool:
        try:
            return self.client.get(f"{self.scheme}://{address}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def view(self, name: str) -> dict[str, Any] | None:
        try:
            response = self.client.get(self.api(name) + "/v1/cluster", timeout=1.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def primary(self) -> str | None:
        """The node that answers /readyz with 200 (the writable primary), if exactly one does."""
        ready = []
        for node in self.settings.nodes:
            try:
                if self.client.get(self.api(node.name) + "/readyz", timeout=1.0).status_code == 200:
                    ready.append(node.name)
            except httpx.HTTPError:
                continue
        return ready[0] if len(ready) == 1 else None

    def wait_primary(self, timeout: float = 20.0, other_than: str | None = None) -> str:
        def found() -> str | None:
            name = self.primary()
            return name if name is not None and name != other_than else None

        return str(wait_for(found, timeout, what="a writable primary"))

    def proxies(self) -> dict[str, Any]:
        """A cuttable link proxy in front of every node's replication listener (see `proxied`)."""
        from acd.tools.proxy import LinkProxy

        return {
            node.name: LinkProxy(node.replication, node.replication_bind)
            for node in self.settings.nodes if node.replication_bind and node.replication_bind != node.replication
        }

    def standby_of(self, primary: str) -> str:
        return next(node.name for node in self.settings.nodes if node.name != primary)
